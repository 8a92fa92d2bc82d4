//! The building blocks of flownet2-pytorch's `networks/submodules.py` (without batch norm:
//! FlowNet2 builds every sub-network with `batchNorm=False`). Each keeps the original's
//! parameter names: `conv`, `i_conv` and `deconv` are `nn.Sequential`s, so their convolution
//! sits at index 0 (`<name>.0.weight`, `<name>.0.bias`); `predict_flow` and the flow
//! up-samplers are bare modules (`<name>.weight`, `<name>.bias`).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, VarBuilder};

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
        candle_nn::ops::leaky_relu(&self.conv.forward(x)?, 0.1)
    }
}

/// `i_conv(batchNorm=False, ...)`: 3x3 convolution with bias, no activation.
#[derive(Clone, Debug)]
pub struct IConv {
    conv: Conv2d,
}

impl IConv {
    pub fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv: candle_nn::conv2d(cin, cout, 3, cfg, vb.pp("0"))?,
        })
    }
}

impl Module for IConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(x)
    }
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
        candle_nn::ops::leaky_relu(&self.deconv.forward(x)?, 0.1)
    }
}

/// `predict_flow(in)`: 3x3 convolution to 2 channels, with bias.
#[derive(Clone, Debug)]
pub struct PredictFlow {
    conv: Conv2d,
}

impl PredictFlow {
    pub fn new(vb: VarBuilder, cin: usize) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv: candle_nn::conv2d(cin, 2, 3, cfg, vb)?,
        })
    }
}

impl Module for PredictFlow {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(x)
    }
}

/// `nn.ConvTranspose2d(2, 2, 4, 2, 1)`: doubles a flow's resolution (learned). FlowNetS builds
/// it without bias, FlowNetC, FlowNetSD and FlowNetFusion with one.
#[derive(Clone, Debug)]
pub struct UpsampleFlow {
    deconv: ConvTranspose2d,
}

impl UpsampleFlow {
    pub fn new(vb: VarBuilder, bias: bool) -> Result<Self> {
        let deconv = if bias {
            candle_nn::conv_transpose2d(2, 2, 4, up_cfg(), vb)?
        } else {
            candle_nn::conv_transpose2d_no_bias(2, 2, 4, up_cfg(), vb)?
        };
        Ok(Self { deconv })
    }
}

impl Module for UpsampleFlow {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.deconv.forward(x)
    }
}
