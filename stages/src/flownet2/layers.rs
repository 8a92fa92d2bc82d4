//! The building blocks of flownet2-pytorch's `networks/submodules.py` (without batch norm:
//! FlowNet2 builds every sub-network with `batchNorm=False`). Each keeps the original's
//! parameter names: `conv`, `i_conv` and `deconv` are `nn.Sequential`s, so their convolution
//! sits at index 0 (`<name>.0.weight`, `<name>.0.bias`); `predict_flow` and the flow
//! up-samplers are bare modules (`<name>.weight`, `<name>.bias`).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, VarBuilder};

/// The LeakyReLU(0.1) that follows every `conv` and `deconv` (and FlowNetC's correlation).
pub fn leaky(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::leaky_relu(x, 0.1)
}

/// A 3x3 convolution with bias, padding 1 (`i_conv`'s and `predict_flow`'s).
fn conv3x3(vb: VarBuilder, cin: usize, cout: usize) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    candle_nn::conv2d(cin, cout, 3, cfg, vb)
}

/// `conv(batchNorm=False, ...)`: convolution with bias, padding (k - 1) / 2, LeakyReLU(0.1).
#[derive(Clone, Debug)]
pub struct ConvLeaky {
    conv: Conv2d,
}

impl ConvLeaky {
    pub fn new(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: (k - 1) / 2,
            stride,
            ..Default::default()
        };
        Ok(Self {
            conv: candle_nn::conv2d(cin, cout, k, cfg, vb.pp("0"))?,
        })
    }
}

impl Module for ConvLeaky {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        leaky(&self.conv.forward(x)?)
    }
}

/// `i_conv(batchNorm=False, ...)`: 3x3 convolution with bias, no activation.
pub fn i_conv(vb: VarBuilder, cin: usize, cout: usize) -> Result<Conv2d> {
    conv3x3(vb.pp("0"), cin, cout)
}

/// `deconv(in, out)`: 4x4 transposed convolution, stride 2, padding 1, with bias; LeakyReLU(0.1).
#[derive(Clone, Debug)]
pub struct DeconvLeaky {
    deconv: ConvTranspose2d,
}

fn up_cfg() -> ConvTranspose2dConfig {
    ConvTranspose2dConfig {
        padding: 1,
        stride: 2,
        ..Default::default()
    }
}

impl DeconvLeaky {
    pub fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            deconv: candle_nn::conv_transpose2d(cin, cout, 4, up_cfg(), vb.pp("0"))?,
        })
    }
}

impl Module for DeconvLeaky {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        leaky(&self.deconv.forward(x)?)
    }
}

/// `predict_flow(in)`: 3x3 convolution to 2 channels, with bias.
pub fn predict_flow(vb: VarBuilder, cin: usize) -> Result<Conv2d> {
    conv3x3(vb, cin, 2)
}

/// `nn.ConvTranspose2d(2, 2, 4, 2, 1)`: doubles a flow's resolution (learned). FlowNetS builds
/// it without bias, FlowNetC, FlowNetSD and FlowNetFusion with one.
pub fn upsample_flow(vb: VarBuilder, bias: bool) -> Result<ConvTranspose2d> {
    if bias {
        candle_nn::conv_transpose2d(2, 2, 4, up_cfg(), vb)
    } else {
        candle_nn::conv_transpose2d_no_bias(2, 2, 4, up_cfg(), vb)
    }
}
