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
use candle_nn::{Conv2d, ConvTranspose2d, VarBuilder};
use serde::{Deserialize, Serialize};

use super::layers::{i_conv, leaky, predict_flow, upsample_flow, ConvLeaky, DeconvLeaky};
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

/// One decoder level's channel counts: the deconvolution's (in, out), the optional
/// `inter_conv`'s (in, out), and the flow prediction's input.
struct LevelSpec {
    level: usize,
    deconv: (usize, usize),
    inter: Option<(usize, usize)>,
    predict: usize,
}

/// One decoder level: the coarser features up-convolved and the coarser flow up-sampled are
/// concatenated with the encoder's map of this level, and this level's flow predicted from
/// them (through an `inter_conv` in FlowNetSD and FlowNetFusion).
#[derive(Clone, Debug)]
struct Level {
    deconv: DeconvLeaky,
    inter: Option<Conv2d>,
    predict: Conv2d,
    upsample: ConvTranspose2d,
}

/// FlowNet's decoder: a flow prediction from the coarsest encoder map, then one [`Level`] per
/// finer scale.
#[derive(Clone, Debug)]
struct Decoder {
    top: Conv2d,
    levels: Vec<Level>,
}

impl Decoder {
    /// Creates the parameters in the official state dict's order: deconvolutions,
    /// `inter_conv`s, flow predictions (coarsest first), flow up-samplings.
    fn new(
        vb: &VarBuilder,
        top: (usize, usize),
        specs: &[LevelSpec],
        up_bias: bool,
    ) -> Result<Self> {
        let at = |what: &str, l: &LevelSpec| vb.pp(format!("{what}{}", l.level));
        let deconvs = specs
            .iter()
            .map(|l| DeconvLeaky::new(at("deconv", l), l.deconv.0, l.deconv.1))
            .collect::<Result<Vec<_>>>()?;
        let inters = specs
            .iter()
            .map(|l| {
                l.inter
                    .map(|(i, o)| i_conv(at("inter_conv", l), i, o))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let top = predict_flow(vb.pp(format!("predict_flow{}", top.0)), top.1)?;
        let predicts = specs
            .iter()
            .map(|l| predict_flow(at("predict_flow", l), l.predict))
            .collect::<Result<Vec<_>>>()?;
        let ups = specs
            .iter()
            .map(|l| {
                let name = format!("upsampled_flow{}_to_{}", l.level + 1, l.level);
                upsample_flow(vb.pp(name), up_bias)
            })
            .collect::<Result<Vec<_>>>()?;
        let levels = deconvs
            .into_iter()
            .zip(inters)
            .zip(predicts.into_iter().zip(ups))
            .map(|((deconv, inter), (predict, upsample))| Level {
                deconv,
                inter,
                predict,
                upsample,
            })
            .collect();
        Ok(Self { top, levels })
    }

    /// The finest level's flow (in units of `div_flow` pixels) from the coarsest encoder map
    /// and the finer ones, coarsest first.
    fn forward(&self, coarsest: &Tensor, skips: &[&Tensor]) -> Result<Tensor> {
        let mut flow = self.top.forward(coarsest)?;
        let mut feats = coarsest.clone();
        for (l, skip) in self.levels.iter().zip(skips) {
            let flow_up = l.upsample.forward(&flow)?;
            let deconv = l.deconv.forward(&feats)?;
            let concat = cat(&[skip, &deconv, &flow_up])?;
            flow = match &l.inter {
                Some(inter) => l.predict.forward(&inter.forward(&concat)?)?,
                None => l.predict.forward(&concat)?,
            };
            feats = concat;
        }
        Ok(flow)
    }
}

/// The decoder from conv6 (1/64) to `flow2` (1/4) over conv5 ... conv2's maps: FlowNetC's and
/// FlowNetS's (`inter`: false), FlowNetSD's (`inter`: true).
fn decoder6(vb: &VarBuilder, cfg: &FlowNet2Config, up_bias: bool, inter: bool) -> Result<Decoder> {
    let c = |n| cfg.ch(n);
    // (level, the encoder map's channels, the deconvolution's output channels)
    let widths = [(5, 512, 512), (4, 512, 256), (3, 256, 128), (2, 128, 64)];
    let mut specs = Vec::new();
    let mut prev = c(1024);
    for (level, skip, out) in widths {
        let cat = c(skip) + c(out) + 2;
        specs.push(LevelSpec {
            level,
            deconv: (prev, c(out)),
            inter: inter.then_some((cat, c(out))),
            predict: if inter { c(out) } else { cat },
        });
        prev = cat;
    }
    Decoder::new(vb, (6, c(1024)), &specs, up_bias)
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
    refine: Decoder,
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
            refine: decoder6(&vb, cfg, true, false)?,
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
        let corr = leaky(&self.corr.forward(&c3a, &c3b)?)?;
        let redir = self.conv_redir.forward(&c3a)?;
        let c3_1 = self.conv3_1.forward(&cat(&[&redir, &corr])?)?;
        let (c4, c5, c6) = self.deep.forward(&c3_1)?;
        self.refine.forward(&c6, &[&c5, &c4, &c3_1, &c2a])
    }
}

/// How FlowNetS and FlowNetSD end alike: from the quarter-resolution map c2, conv3 and
/// conv3_1 (stride 2, then 3x3), the deep layers, and the decoder over (c6 ... c2).
#[derive(Clone, Debug)]
struct Tail {
    conv3: ConvLeaky,
    conv3_1: ConvLeaky,
    deep: Deep,
    decoder: Decoder,
}

impl Tail {
    /// `conv3_k`: conv3's kernel (FlowNetS 5, FlowNetSD 3); `sd`: FlowNetSD's decoder
    /// (up-samplers with bias, `inter_conv` layers).
    fn new(vb: &VarBuilder, cfg: &FlowNet2Config, conv3_k: usize, sd: bool) -> Result<Self> {
        let c = |n| cfg.ch(n);
        Ok(Self {
            conv3: ConvLeaky::new(vb.pp("conv3"), c(128), c(256), conv3_k, 2)?,
            conv3_1: ConvLeaky::new(vb.pp("conv3_1"), c(256), c(256), 3, 1)?,
            deep: Deep::new(vb, cfg)?,
            decoder: decoder6(vb, cfg, sd, sd)?,
        })
    }

    fn forward(&self, c2: &Tensor) -> Result<Tensor> {
        let c3 = self.conv3_1.forward(&self.conv3.forward(c2)?)?;
        let (c4, c5, c6) = self.deep.forward(&c3)?;
        self.decoder.forward(&c6, &[&c5, &c4, &c3, c2])
    }
}

/// FlowNetS (`networks/FlowNetS.py`) with FlowNet2's 12 input channels.
#[derive(Clone, Debug)]
pub struct FlowNetS {
    conv1: ConvLeaky,
    conv2: ConvLeaky,
    tail: Tail,
}

impl FlowNetS {
    pub fn new(vb: VarBuilder, cfg: &FlowNet2Config, input_channels: usize) -> Result<Self> {
        let c = |n| cfg.ch(n);
        Ok(Self {
            conv1: ConvLeaky::new(vb.pp("conv1"), input_channels, c(64), 7, 2)?,
            conv2: ConvLeaky::new(vb.pp("conv2"), c(64), c(128), 5, 2)?,
            tail: Tail::new(&vb, cfg, 5, false)?,
        })
    }
}

impl Module for FlowNetS {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.tail
            .forward(&self.conv2.forward(&self.conv1.forward(x)?)?)
    }
}

/// FlowNetSD (`networks/FlowNetSD.py`): small displacements, 3x3 kernels throughout, an extra
/// full-resolution conv0 and `inter_conv` layers before each flow prediction.
#[derive(Clone, Debug)]
pub struct FlowNetSD {
    fine: Fine,
    tail: Tail,
}

/// The full- and half-resolution 3x3 layers (conv0 ... conv2_1) FlowNetSD and FlowNetFusion
/// open with.
#[derive(Clone, Debug)]
struct Fine {
    conv0: ConvLeaky,
    conv1: ConvLeaky,
    conv1_1: ConvLeaky,
    conv2: ConvLeaky,
    conv2_1: ConvLeaky,
}

impl Fine {
    fn new(vb: &VarBuilder, cfg: &FlowNet2Config, input_channels: usize) -> Result<Self> {
        let c = |n| cfg.ch(n);
        let conv = |name: &str, i, o, s| ConvLeaky::new(vb.pp(name), i, o, 3, s);
        Ok(Self {
            conv0: conv("conv0", input_channels, c(64), 1)?,
            conv1: conv("conv1", c(64), c(64), 2)?,
            conv1_1: conv("conv1_1", c(64), c(128), 1)?,
            conv2: conv("conv2", c(128), c(128), 2)?,
            conv2_1: conv("conv2_1", c(128), c(128), 1)?,
        })
    }

    /// (conv0, conv1_1, conv2_1) outputs.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let c0 = self.conv0.forward(x)?;
        let c1 = self.conv1_1.forward(&self.conv1.forward(&c0)?)?;
        let c2 = self.conv2_1.forward(&self.conv2.forward(&c1)?)?;
        Ok((c0, c1, c2))
    }
}

impl FlowNetSD {
    pub fn new(vb: VarBuilder, cfg: &FlowNet2Config) -> Result<Self> {
        Ok(Self {
            fine: Fine::new(&vb, cfg, 6)?,
            tail: Tail::new(&vb, cfg, 3, true)?,
        })
    }
}

impl Module for FlowNetSD {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, c2) = self.fine.forward(x)?;
        self.tail.forward(&c2)
    }
}

/// FlowNetFusion (`networks/FlowNetFusion.py`): fuses FlowNetSD's and the stack's flows at
/// full resolution. Input `[B, 11, H, W]`, output the final flow in pixels.
#[derive(Clone, Debug)]
pub struct FlowNetFusion {
    fine: Fine,
    decoder: Decoder,
}

impl FlowNetFusion {
    pub fn new(vb: VarBuilder, cfg: &FlowNet2Config) -> Result<Self> {
        let c = |n| cfg.ch(n);
        let cat1 = c(128) + c(32) + 2;
        let cat0 = c(64) + c(16) + 2;
        let specs = [
            LevelSpec {
                level: 1,
                deconv: (c(128), c(32)),
                inter: Some((cat1, c(32))),
                predict: c(32),
            },
            LevelSpec {
                level: 0,
                deconv: (cat1, c(16)),
                inter: Some((cat0, c(16))),
                predict: c(16),
            },
        ];
        Ok(Self {
            fine: Fine::new(&vb, cfg, 11)?,
            decoder: Decoder::new(&vb, (2, c(128)), &specs, true)?,
        })
    }
}

impl Module for FlowNetFusion {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (c0, c1, c2) = self.fine.forward(x)?;
        self.decoder.forward(&c2, &[&c1, &c0])
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
