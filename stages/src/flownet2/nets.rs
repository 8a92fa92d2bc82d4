//! FlowNet2 (Ilg et al., "FlowNet 2.0: Evolution of Optical Flow Estimation with Deep
//! Networks", CVPR 2017) as flownet2-pytorch builds it: `models.py` (`FlowNet2`) stacking
//! `networks/FlowNetC.py`, two `networks/FlowNetS.py`, `networks/FlowNetSD.py` and
//! `networks/FlowNetFusion.py`. Field names equal the original attribute names, so the
//! `VarBuilder` paths equal the keys of the official state dict (`flownetc.conv1.0.weight`, ...).
//!
//! `width` scales every internal channel count (1.0: the published network); the inputs (3 or 6
//! image channels, 12 and 11 stacked channels), the flows (2) and the correlation volume (441)
//! keep their sizes.

use candle_core::{IndexOp, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{ConvLeaky, DeconvLeaky, IConv, PredictFlow, UpsampleFlow};
use super::ops::{channel_norm, resample2d, Correlation};

/// FlowNet2's configuration (the defaults are the published network's).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FlowNet2Config {
    /// Multiplier of every internal channel count (each rounded, at least 1); 1.0 loads the
    /// official checkpoint.
    pub width: f64,
    /// `div_flow` of `models.py`: the sub-networks predict flow / 20.
    pub div_flow: f64,
    /// `args.rgb_max`: the input range (images in [0, 255]).
    pub rgb_max: f64,
}

impl Default for FlowNet2Config {
    fn default() -> Self {
        Self {
            width: 1.0,
            div_flow: 20.0,
            rgb_max: 255.0,
        }
    }
}

impl FlowNet2Config {
    /// A reduced network (tests, parity fixtures).
    pub fn with_width(width: f64) -> Self {
        Self {
            width,
            ..Self::default()
        }
    }

    /// The channel count `c` of the original at this width.
    pub fn ch(&self, c: usize) -> usize {
        ((c as f64 * self.width).round() as usize).max(1)
    }
}

fn cat(ts: &[&Tensor]) -> Result<Tensor> {
    Tensor::cat(ts, 1)
}

/// The decoder FlowNetC and FlowNetS share: deconvolutions, flow predictions at 1/64 ... 1/4,
/// and the learned 2x flow up-sampling between them.
#[derive(Clone, Debug)]
struct Refine {
    deconv5: DeconvLeaky,
    deconv4: DeconvLeaky,
    deconv3: DeconvLeaky,
    deconv2: DeconvLeaky,
    predict_flow6: PredictFlow,
    predict_flow5: PredictFlow,
    predict_flow4: PredictFlow,
    predict_flow3: PredictFlow,
    predict_flow2: PredictFlow,
    upsampled_flow6_to_5: UpsampleFlow,
    upsampled_flow5_to_4: UpsampleFlow,
    upsampled_flow4_to_3: UpsampleFlow,
    upsampled_flow3_to_2: UpsampleFlow,
}

impl Refine {
    fn new(vb: &VarBuilder, cfg: &FlowNet2Config, up_bias: bool) -> Result<Self> {
        let c = |n| cfg.ch(n);
        let cat5 = c(512) + c(512) + 2;
        let cat4 = c(512) + c(256) + 2;
        let cat3 = c(256) + c(128) + 2;
        let cat2 = c(128) + c(64) + 2;
        Ok(Self {
            deconv5: DeconvLeaky::new(vb.pp("deconv5"), c(1024), c(512))?,
            deconv4: DeconvLeaky::new(vb.pp("deconv4"), cat5, c(256))?,
            deconv3: DeconvLeaky::new(vb.pp("deconv3"), cat4, c(128))?,
            deconv2: DeconvLeaky::new(vb.pp("deconv2"), cat3, c(64))?,
            predict_flow6: PredictFlow::new(vb.pp("predict_flow6"), c(1024))?,
            predict_flow5: PredictFlow::new(vb.pp("predict_flow5"), cat5)?,
            predict_flow4: PredictFlow::new(vb.pp("predict_flow4"), cat4)?,
            predict_flow3: PredictFlow::new(vb.pp("predict_flow3"), cat3)?,
            predict_flow2: PredictFlow::new(vb.pp("predict_flow2"), cat2)?,
            upsampled_flow6_to_5: UpsampleFlow::new(vb.pp("upsampled_flow6_to_5"), up_bias)?,
            upsampled_flow5_to_4: UpsampleFlow::new(vb.pp("upsampled_flow5_to_4"), up_bias)?,
            upsampled_flow4_to_3: UpsampleFlow::new(vb.pp("upsampled_flow4_to_3"), up_bias)?,
            upsampled_flow3_to_2: UpsampleFlow::new(vb.pp("upsampled_flow3_to_2"), up_bias)?,
        })
    }

    /// `flow2` (1/4 resolution, in units of `div_flow` pixels) from the encoder's maps.
    fn forward(
        &self,
        c2: &Tensor,
        c3: &Tensor,
        c4: &Tensor,
        c5: &Tensor,
        c6: &Tensor,
    ) -> Result<Tensor> {
        let flow6 = self.predict_flow6.forward(c6)?;
        let flow6_up = self.upsampled_flow6_to_5.forward(&flow6)?;
        let deconv5 = self.deconv5.forward(c6)?;
        let concat5 = cat(&[c5, &deconv5, &flow6_up])?;
        let flow5 = self.predict_flow5.forward(&concat5)?;
        let flow5_up = self.upsampled_flow5_to_4.forward(&flow5)?;
        let deconv4 = self.deconv4.forward(&concat5)?;
        let concat4 = cat(&[c4, &deconv4, &flow5_up])?;
        let flow4 = self.predict_flow4.forward(&concat4)?;
        let flow4_up = self.upsampled_flow4_to_3.forward(&flow4)?;
        let deconv3 = self.deconv3.forward(&concat4)?;
        let concat3 = cat(&[c3, &deconv3, &flow4_up])?;
        let flow3 = self.predict_flow3.forward(&concat3)?;
        let flow3_up = self.upsampled_flow3_to_2.forward(&flow3)?;
        let deconv2 = self.deconv2.forward(&concat3)?;
        let concat2 = cat(&[c2, &deconv2, &flow3_up])?;
        self.predict_flow2.forward(&concat2)
    }
}

/// The encoder layers from conv4 on, shared by every sub-network but Fusion.
#[derive(Clone, Debug)]
struct Deep {
    conv4: ConvLeaky,
    conv4_1: ConvLeaky,
    conv5: ConvLeaky,
    conv5_1: ConvLeaky,
    conv6: ConvLeaky,
    conv6_1: ConvLeaky,
}

impl Deep {
    fn new(vb: &VarBuilder, cfg: &FlowNet2Config) -> Result<Self> {
        let c = |n| cfg.ch(n);
        Ok(Self {
            conv4: ConvLeaky::new(vb.pp("conv4"), c(256), c(512), 3, 2)?,
            conv4_1: ConvLeaky::new(vb.pp("conv4_1"), c(512), c(512), 3, 1)?,
            conv5: ConvLeaky::new(vb.pp("conv5"), c(512), c(512), 3, 2)?,
            conv5_1: ConvLeaky::new(vb.pp("conv5_1"), c(512), c(512), 3, 1)?,
            conv6: ConvLeaky::new(vb.pp("conv6"), c(512), c(1024), 3, 2)?,
            conv6_1: ConvLeaky::new(vb.pp("conv6_1"), c(1024), c(1024), 3, 1)?,
        })
    }

    /// (conv4, conv5, conv6) outputs from conv3's.
    fn forward(&self, c3: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let c4 = self.conv4_1.forward(&self.conv4.forward(c3)?)?;
        let c5 = self.conv5_1.forward(&self.conv5.forward(&c4)?)?;
        let c6 = self.conv6_1.forward(&self.conv6.forward(&c5)?)?;
        Ok((c4, c5, c6))
    }
}

/// FlowNetC (`networks/FlowNetC.py`): a siamese encoder, the correlation of the two conv3 maps,
/// then the FlowNetS-like decoder. Input `[B, 6, H, W]` (both images), output `flow2`.
#[derive(Clone, Debug)]
pub struct FlowNetC {
    conv1: ConvLeaky,
    conv2: ConvLeaky,
    conv3: ConvLeaky,
    conv_redir: ConvLeaky,
    corr: Correlation,
    conv3_1: ConvLeaky,
    deep: Deep,
    refine: Refine,
}

impl FlowNetC {
    pub fn new(vb: VarBuilder, cfg: &FlowNet2Config) -> Result<Self> {
        let c = |n| cfg.ch(n);
        let corr = Correlation::FLOWNETC;
        Ok(Self {
            conv1: ConvLeaky::new(vb.pp("conv1"), 3, c(64), 7, 2)?,
            conv2: ConvLeaky::new(vb.pp("conv2"), c(64), c(128), 5, 2)?,
            conv3: ConvLeaky::new(vb.pp("conv3"), c(128), c(256), 5, 2)?,
            conv_redir: ConvLeaky::new(vb.pp("conv_redir"), c(256), c(32), 1, 1)?,
            conv3_1: ConvLeaky::new(vb.pp("conv3_1"), c(32) + corr.out_channels(), c(256), 3, 1)?,
            corr,
            deep: Deep::new(&vb, cfg)?,
            refine: Refine::new(&vb, cfg, true)?,
        })
    }
}

impl Module for FlowNetC {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x1 = x.narrow(1, 0, 3)?;
        let x2 = x.narrow(1, 3, 3)?;
        // the two streams share weights: one pass over the batch of both
        let b = x1.dim(0)?;
        let both = Tensor::cat(&[&x1, &x2], 0)?;
        let c1 = self.conv1.forward(&both)?;
        let c2 = self.conv2.forward(&c1)?;
        let c3 = self.conv3.forward(&c2)?;
        let (c2a, c3a, c3b) = (
            c2.narrow(0, 0, b)?,
            c3.narrow(0, 0, b)?,
            c3.narrow(0, b, b)?,
        );
        let corr = candle_nn::ops::leaky_relu(&self.corr.forward(&c3a, &c3b)?, 0.1)?;
        let redir = self.conv_redir.forward(&c3a)?;
        let c3_1 = self.conv3_1.forward(&cat(&[&redir, &corr])?)?;
        let (c4, c5, c6) = self.deep.forward(&c3_1)?;
        self.refine.forward(&c2a, &c3_1, &c4, &c5, &c6)
    }
}

/// FlowNetS (`networks/FlowNetS.py`) with FlowNet2's 12 input channels.
#[derive(Clone, Debug)]
pub struct FlowNetS {
    conv1: ConvLeaky,
    conv2: ConvLeaky,
    conv3: ConvLeaky,
    conv3_1: ConvLeaky,
    deep: Deep,
    refine: Refine,
}

impl FlowNetS {
    pub fn new(vb: VarBuilder, cfg: &FlowNet2Config, input_channels: usize) -> Result<Self> {
        let c = |n| cfg.ch(n);
        Ok(Self {
            conv1: ConvLeaky::new(vb.pp("conv1"), input_channels, c(64), 7, 2)?,
            conv2: ConvLeaky::new(vb.pp("conv2"), c(64), c(128), 5, 2)?,
            conv3: ConvLeaky::new(vb.pp("conv3"), c(128), c(256), 5, 2)?,
            conv3_1: ConvLeaky::new(vb.pp("conv3_1"), c(256), c(256), 3, 1)?,
            deep: Deep::new(&vb, cfg)?,
            refine: Refine::new(&vb, cfg, false)?,
        })
    }
}

impl Module for FlowNetS {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c2 = self.conv2.forward(&self.conv1.forward(x)?)?;
        let c3 = self.conv3_1.forward(&self.conv3.forward(&c2)?)?;
        let (c4, c5, c6) = self.deep.forward(&c3)?;
        self.refine.forward(&c2, &c3, &c4, &c5, &c6)
    }
}

/// FlowNetSD (`networks/FlowNetSD.py`): small displacements, 3x3 kernels throughout, an extra
/// full-resolution conv0 and `inter_conv` layers before each flow prediction.
#[derive(Clone, Debug)]
pub struct FlowNetSD {
    conv0: ConvLeaky,
    conv1: ConvLeaky,
    conv1_1: ConvLeaky,
    conv2: ConvLeaky,
    conv2_1: ConvLeaky,
    conv3: ConvLeaky,
    conv3_1: ConvLeaky,
    deep: Deep,
    deconv5: DeconvLeaky,
    deconv4: DeconvLeaky,
    deconv3: DeconvLeaky,
    deconv2: DeconvLeaky,
    inter_conv5: IConv,
    inter_conv4: IConv,
    inter_conv3: IConv,
    inter_conv2: IConv,
    predict_flow6: PredictFlow,
    predict_flow5: PredictFlow,
    predict_flow4: PredictFlow,
    predict_flow3: PredictFlow,
    predict_flow2: PredictFlow,
    upsampled_flow6_to_5: UpsampleFlow,
    upsampled_flow5_to_4: UpsampleFlow,
    upsampled_flow4_to_3: UpsampleFlow,
    upsampled_flow3_to_2: UpsampleFlow,
}

impl FlowNetSD {
    pub fn new(vb: VarBuilder, cfg: &FlowNet2Config) -> Result<Self> {
        let c = |n| cfg.ch(n);
        let cat5 = c(512) + c(512) + 2;
        let cat4 = c(512) + c(256) + 2;
        let cat3 = c(256) + c(128) + 2;
        let cat2 = c(128) + c(64) + 2;
        let conv = |name: &str, i, o, s| ConvLeaky::new(vb.pp(name), i, o, 3, s);
        Ok(Self {
            conv0: conv("conv0", 6, c(64), 1)?,
            conv1: conv("conv1", c(64), c(64), 2)?,
            conv1_1: conv("conv1_1", c(64), c(128), 1)?,
            conv2: conv("conv2", c(128), c(128), 2)?,
            conv2_1: conv("conv2_1", c(128), c(128), 1)?,
            conv3: conv("conv3", c(128), c(256), 2)?,
            conv3_1: conv("conv3_1", c(256), c(256), 1)?,
            deep: Deep::new(&vb, cfg)?,
            deconv5: DeconvLeaky::new(vb.pp("deconv5"), c(1024), c(512))?,
            deconv4: DeconvLeaky::new(vb.pp("deconv4"), cat5, c(256))?,
            deconv3: DeconvLeaky::new(vb.pp("deconv3"), cat4, c(128))?,
            deconv2: DeconvLeaky::new(vb.pp("deconv2"), cat3, c(64))?,
            inter_conv5: IConv::new(vb.pp("inter_conv5"), cat5, c(512))?,
            inter_conv4: IConv::new(vb.pp("inter_conv4"), cat4, c(256))?,
            inter_conv3: IConv::new(vb.pp("inter_conv3"), cat3, c(128))?,
            inter_conv2: IConv::new(vb.pp("inter_conv2"), cat2, c(64))?,
            predict_flow6: PredictFlow::new(vb.pp("predict_flow6"), c(1024))?,
            predict_flow5: PredictFlow::new(vb.pp("predict_flow5"), c(512))?,
            predict_flow4: PredictFlow::new(vb.pp("predict_flow4"), c(256))?,
            predict_flow3: PredictFlow::new(vb.pp("predict_flow3"), c(128))?,
            predict_flow2: PredictFlow::new(vb.pp("predict_flow2"), c(64))?,
            upsampled_flow6_to_5: UpsampleFlow::new(vb.pp("upsampled_flow6_to_5"), true)?,
            upsampled_flow5_to_4: UpsampleFlow::new(vb.pp("upsampled_flow5_to_4"), true)?,
            upsampled_flow4_to_3: UpsampleFlow::new(vb.pp("upsampled_flow4_to_3"), true)?,
            upsampled_flow3_to_2: UpsampleFlow::new(vb.pp("upsampled_flow3_to_2"), true)?,
        })
    }
}

impl Module for FlowNetSD {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c0 = self.conv0.forward(x)?;
        let c1 = self.conv1_1.forward(&self.conv1.forward(&c0)?)?;
        let c2 = self.conv2_1.forward(&self.conv2.forward(&c1)?)?;
        let c3 = self.conv3_1.forward(&self.conv3.forward(&c2)?)?;
        let (c4, c5, c6) = self.deep.forward(&c3)?;
        let flow6 = self.predict_flow6.forward(&c6)?;
        let flow6_up = self.upsampled_flow6_to_5.forward(&flow6)?;
        let deconv5 = self.deconv5.forward(&c6)?;
        let concat5 = cat(&[&c5, &deconv5, &flow6_up])?;
        let flow5 = self
            .predict_flow5
            .forward(&self.inter_conv5.forward(&concat5)?)?;
        let flow5_up = self.upsampled_flow5_to_4.forward(&flow5)?;
        let deconv4 = self.deconv4.forward(&concat5)?;
        let concat4 = cat(&[&c4, &deconv4, &flow5_up])?;
        let flow4 = self
            .predict_flow4
            .forward(&self.inter_conv4.forward(&concat4)?)?;
        let flow4_up = self.upsampled_flow4_to_3.forward(&flow4)?;
        let deconv3 = self.deconv3.forward(&concat4)?;
        let concat3 = cat(&[&c3, &deconv3, &flow4_up])?;
        let flow3 = self
            .predict_flow3
            .forward(&self.inter_conv3.forward(&concat3)?)?;
        let flow3_up = self.upsampled_flow3_to_2.forward(&flow3)?;
        let deconv2 = self.deconv2.forward(&concat3)?;
        let concat2 = cat(&[&c2, &deconv2, &flow3_up])?;
        self.predict_flow2
            .forward(&self.inter_conv2.forward(&concat2)?)
    }
}

/// FlowNetFusion (`networks/FlowNetFusion.py`): fuses FlowNetSD's and the stack's flows at
/// full resolution. Input `[B, 11, H, W]`, output the final flow in pixels.
#[derive(Clone, Debug)]
pub struct FlowNetFusion {
    conv0: ConvLeaky,
    conv1: ConvLeaky,
    conv1_1: ConvLeaky,
    conv2: ConvLeaky,
    conv2_1: ConvLeaky,
    deconv1: DeconvLeaky,
    deconv0: DeconvLeaky,
    inter_conv1: IConv,
    inter_conv0: IConv,
    predict_flow2: PredictFlow,
    predict_flow1: PredictFlow,
    predict_flow0: PredictFlow,
    upsampled_flow2_to_1: UpsampleFlow,
    upsampled_flow1_to_0: UpsampleFlow,
}

impl FlowNetFusion {
    pub fn new(vb: VarBuilder, cfg: &FlowNet2Config) -> Result<Self> {
        let c = |n| cfg.ch(n);
        let cat1 = c(128) + c(32) + 2;
        let cat0 = c(64) + c(16) + 2;
        let conv = |name: &str, i, o, s| ConvLeaky::new(vb.pp(name), i, o, 3, s);
        Ok(Self {
            conv0: conv("conv0", 11, c(64), 1)?,
            conv1: conv("conv1", c(64), c(64), 2)?,
            conv1_1: conv("conv1_1", c(64), c(128), 1)?,
            conv2: conv("conv2", c(128), c(128), 2)?,
            conv2_1: conv("conv2_1", c(128), c(128), 1)?,
            deconv1: DeconvLeaky::new(vb.pp("deconv1"), c(128), c(32))?,
            deconv0: DeconvLeaky::new(vb.pp("deconv0"), cat1, c(16))?,
            inter_conv1: IConv::new(vb.pp("inter_conv1"), cat1, c(32))?,
            inter_conv0: IConv::new(vb.pp("inter_conv0"), cat0, c(16))?,
            predict_flow2: PredictFlow::new(vb.pp("predict_flow2"), c(128))?,
            predict_flow1: PredictFlow::new(vb.pp("predict_flow1"), c(32))?,
            predict_flow0: PredictFlow::new(vb.pp("predict_flow0"), c(16))?,
            upsampled_flow2_to_1: UpsampleFlow::new(vb.pp("upsampled_flow2_to_1"), true)?,
            upsampled_flow1_to_0: UpsampleFlow::new(vb.pp("upsampled_flow1_to_0"), true)?,
        })
    }
}

impl Module for FlowNetFusion {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c0 = self.conv0.forward(x)?;
        let c1 = self.conv1_1.forward(&self.conv1.forward(&c0)?)?;
        let c2 = self.conv2_1.forward(&self.conv2.forward(&c1)?)?;
        let flow2 = self.predict_flow2.forward(&c2)?;
        let flow2_up = self.upsampled_flow2_to_1.forward(&flow2)?;
        let deconv1 = self.deconv1.forward(&c2)?;
        let concat1 = cat(&[&c1, &deconv1, &flow2_up])?;
        let flow1 = self
            .predict_flow1
            .forward(&self.inter_conv1.forward(&concat1)?)?;
        let flow1_up = self.upsampled_flow1_to_0.forward(&flow1)?;
        let deconv0 = self.deconv0.forward(&concat1)?;
        let concat0 = cat(&[&c0, &deconv0, &flow1_up])?;
        self.predict_flow0
            .forward(&self.inter_conv0.forward(&concat0)?)
    }
}

/// Every sub-network's raw output (what the parity test compares), and the final flow.
#[derive(Clone, Debug)]
pub struct FlowNet2Outputs {
    /// FlowNetC's `flow2` (1/4 resolution, flow / `div_flow`).
    pub flownetc: Tensor,
    /// The first FlowNetS's `flow2`.
    pub flownets_1: Tensor,
    /// The second FlowNetS's `flow2`.
    pub flownets_2: Tensor,
    /// FlowNetSD's `flow2`.
    pub flownets_d: Tensor,
    /// FlowNetFusion's output: the final flow in pixels, full resolution.
    pub flownetfusion: Tensor,
}

/// FlowNet2 (`models.py`): FlowNetC -> FlowNetS -> FlowNetS (each later one sees the first
/// image, the second warped by the current flow, that flow and the brightness error) beside
/// FlowNetSD, fused by FlowNetFusion.
#[derive(Clone, Debug)]
pub struct FlowNet2 {
    cfg: FlowNet2Config,
    flownetc: FlowNetC,
    flownets_1: FlowNetS,
    flownets_2: FlowNetS,
    flownets_d: FlowNetSD,
    flownetfusion: FlowNetFusion,
}

impl FlowNet2 {
    pub fn new(vb: VarBuilder, cfg: &FlowNet2Config) -> Result<Self> {
        Ok(Self {
            cfg: cfg.clone(),
            flownetc: FlowNetC::new(vb.pp("flownetc"), cfg)?,
            flownets_1: FlowNetS::new(vb.pp("flownets_1"), cfg, 12)?,
            flownets_2: FlowNetS::new(vb.pp("flownets_2"), cfg, 12)?,
            flownets_d: FlowNetSD::new(vb.pp("flownets_d"), cfg)?,
            flownetfusion: FlowNetFusion::new(vb.pp("flownetfusion"), cfg)?,
        })
    }

    pub fn config(&self) -> &FlowNet2Config {
        &self.cfg
    }

    /// `models.py`'s `FlowNet2.forward` on `inputs` `[B, 3, 2, H, W]` (two RGB images in
    /// [0, rgb_max], H and W multiples of 64), with every sub-network's output.
    ///
    /// Bilinear up-sampling uses `align_corners = False` (PyTorch's `nn.Upsample` default
    /// since 0.4.0).
    pub fn forward_all(&self, inputs: &Tensor) -> Result<FlowNet2Outputs> {
        let (b, c, two, h, w) = inputs.dims5()?;
        if c != 3 || two != 2 {
            candle_core::bail!(
                "FlowNet2 wants [B, 3, 2, H, W] inputs, got {:?}",
                inputs.dims()
            );
        }
        if h % 64 != 0 || w % 64 != 0 || h == 0 || w == 0 {
            candle_core::bail!("FlowNet2 wants H and W multiples of 64, got {h}x{w} (use `flow`)");
        }
        let div = self.cfg.div_flow;
        let mean = inputs
            .reshape((b, 3, 2 * h * w))?
            .mean_keepdim(2)?
            .reshape((b, 3, 1, 1, 1))?;
        let x = (inputs.broadcast_sub(&mean)? / self.cfg.rgb_max)?;
        let x1 = x.i((.., .., 0))?;
        let x2 = x.i((.., .., 1))?;
        let x = Tensor::cat(&[&x1, &x2], 1)?.contiguous()?;
        let up_bilinear = |t: &Tensor| t.upsample_bilinear2d(h, w, false);
        let up_nearest = |t: &Tensor| t.upsample_nearest2d(h, w);
        // warp the second image by `flow`, and its brightness error against the first
        let warp = |flow: &Tensor| -> Result<(Tensor, Tensor)> {
            let warped = resample2d(&x2, flow)?;
            let err = channel_norm(&(&x1 - &warped)?)?;
            Ok((warped, err))
        };

        let flownetc = self.flownetc.forward(&x)?;
        let flow_c = up_bilinear(&(&flownetc * div)?)?;
        let (warped, err) = warp(&flow_c)?;
        let concat1 = cat(&[&x, &warped, &(&flow_c / div)?, &err])?;

        let flownets_1 = self.flownets_1.forward(&concat1)?;
        let flow_s1 = up_bilinear(&(&flownets_1 * div)?)?;
        let (warped, err) = warp(&flow_s1)?;
        let concat2 = cat(&[&x, &warped, &(&flow_s1 / div)?, &err])?;

        let flownets_2 = self.flownets_2.forward(&concat2)?;
        let flow_s2 = up_nearest(&(&flownets_2 * div)?)?;
        let norm_s2 = channel_norm(&flow_s2)?;
        let (_, err_s2) = warp(&flow_s2)?;

        let flownets_d = self.flownets_d.forward(&x)?;
        // `/ div_flow` here, not `*`: as models.py does (the checkpoint was trained so)
        let flow_sd = up_nearest(&(&flownets_d / div)?)?;
        let norm_sd = channel_norm(&flow_sd)?;
        let (_, err_sd) = warp(&flow_sd)?;

        let concat3 = cat(&[
            &x1, &flow_sd, &flow_s2, &norm_sd, &norm_s2, &err_sd, &err_s2,
        ])?;
        let flownetfusion = self.flownetfusion.forward(&concat3)?;
        Ok(FlowNet2Outputs {
            flownetc,
            flownets_1,
            flownets_2,
            flownets_d,
            flownetfusion,
        })
    }

    /// The final flow `[B, 2, H, W]` (pixels, channel 0 horizontal; pixel x of `img1` moves to
    /// x + flow in `img2`) between `img1` and `img2` `[B, 3, H, W]` in [0, rgb_max], of any
    /// size: both are padded (edge replicated) to multiples of 64 and the flow cropped back.
    pub fn flow(&self, img1: &Tensor, img2: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = img1.dims4()?;
        if img2.dims() != img1.dims() {
            candle_core::bail!(
                "FlowNet2: images differ in shape: {:?} vs {:?}",
                img1.dims(),
                img2.dims()
            );
        }
        let (ph, pw) = (h.div_ceil(64) * 64 - h, w.div_ceil(64) * 64 - w);
        let pad =
            |t: &Tensor| -> Result<Tensor> { t.pad_with_same(2, 0, ph)?.pad_with_same(3, 0, pw) };
        let inputs = Tensor::stack(&[&pad(img1)?, &pad(img2)?], 2)?;
        let flow = self.forward_all(&inputs)?.flownetfusion;
        flow.narrow(2, 0, h)?.narrow(3, 0, w)
    }
}

impl Module for FlowNet2 {
    /// `[B, 3, 2, H, W]` -> the final flow `[B, 2, H, W]`.
    fn forward(&self, inputs: &Tensor) -> Result<Tensor> {
        Ok(self.forward_all(inputs)?.flownetfusion)
    }
}
