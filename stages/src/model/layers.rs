//! Building blocks of CA-I3D: `BatchNorm3d`, `Unit3d`, `CoordAttention3d`, `Inception3d`.

use crate::model::ops::{self, BnMode};
use candle_core::{Result, Tensor, Var};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// Weight initialisation of convolutions and linear layers.
///
/// The paper draws weights from N(0, 1); with 3x3x3 kernels over 32+ channels that scales every
/// layer's activations by ~sqrt(27*C) and training diverges, so the default is He (Kaiming)
/// normal with fan-in, std = sqrt(2 / fan_in), as I3D implementations use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// N(0, 2 / fan_in) (default).
    #[default]
    KaimingNormal,
    /// U(-b, b), b = sqrt(6 / fan_in).
    KaimingUniform,
    /// The paper's N(0, 1) (diverges; kept to reproduce the claim).
    PaperNormal,
}

impl InitScheme {
    /// Hint for a weight followed by a ReLU-like non-linearity.
    pub fn weight(self) -> Init {
        match self {
            Self::KaimingNormal => Init::Kaiming {
                dist: NormalOrUniform::Normal,
                fan: FanInOut::FanIn,
                non_linearity: NonLinearity::ReLU,
            },
            Self::KaimingUniform => Init::Kaiming {
                dist: NormalOrUniform::Uniform,
                fan: FanInOut::FanIn,
                non_linearity: NonLinearity::ReLU,
            },
            Self::PaperNormal => Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        }
    }
    /// Hint for a bias (PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
    pub fn bias(self, fan_in: usize) -> Init {
        match self {
            Self::PaperNormal => Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
            _ => {
                let b = 1.0 / (fan_in.max(1) as f64).sqrt();
                Init::Uniform { lo: -b, up: b }
            }
        }
    }
}

/// The momentum override of a model's BatchNorm layers: one handle per model, shared by all its
/// [`BatchNorm3d`]s (and by clones of the model); set only by [`recalibrate_bn`].
#[derive(Clone, Debug, Default)]
pub struct BnMomentum(Arc<Mutex<Option<f64>>>);

impl BnMomentum {
    fn get(&self) -> Option<f64> {
        *self.0.lock().unwrap()
    }
    fn set(&self, m: Option<f64>) {
        *self.0.lock().unwrap() = m;
    }
}

/// Precise BatchNorm: runs `forward(k)` for k in 0..n (train-mode passes, no optimiser step)
/// with the momentum of every BatchNorm3d behind `models` at 1/(k+1), so the running statistics
/// end as the plain mean of the n batches' statistics. Why: a short training leaves
/// momentum-averaged statistics near their initial values (momentum 0.01 over 24 steps keeps
/// 79% of the init), and in eval mode the small-magnitude flow inputs are then scaled to almost
/// nothing: every clip embeds alike and the prototypes cannot tell classes apart.
pub fn recalibrate_bn(
    models: &[BnMomentum],
    n: usize,
    mut forward: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let set = |m: Option<f64>| models.iter().for_each(|h| h.set(m));
    for k in 0..n {
        set(Some(1.0 / (k + 1) as f64));
        let r = forward(k);
        set(None);
        r?;
    }
    Ok(())
}

/// BatchNorm over channels of a 5D tensor. The running statistics are variables of the
/// VarMap (`running_mean`, `running_var`), so they are saved and loaded with the weights; they
/// get no gradient, so the optimiser (which skips variables without one) never moves them.
#[derive(Clone, Debug)]
pub struct BatchNorm3d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Var,
    pub running_var: Var,
    pub eps: f64,
    pub momentum: f64,
    /// replaces `momentum` while set (precise BN); see [`CaI3d::share_bn_momentum`]
    ///
    /// [`CaI3d::share_bn_momentum`]: crate::model::CaI3d::share_bn_momentum
    pub recalibration: BnMomentum,
}

impl BatchNorm3d {
    pub fn new(c: usize, eps: f64, momentum: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(c, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(c, "bias", Init::Const(0.0))?;
        let rm = vb.get_with_hints(c, "running_mean", Init::Const(0.0))?;
        let rv = vb.get_with_hints(c, "running_var", Init::Const(1.0))?;
        Ok(Self {
            weight,
            bias,
            running_mean: Var::from_tensor(&rm)?,
            running_var: Var::from_tensor(&rv)?,
            eps,
            momentum,
            recalibration: BnMomentum::default(),
        })
    }

    /// `train`: batch statistics (and running-statistics update); else running statistics.
    pub fn forward(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let mode = if train { BnMode::Train } else { BnMode::Eval };
        let args = ops::BnArgs {
            running_mean: &self.running_mean,
            running_var: &self.running_var,
            eps: self.eps,
            momentum: self.recalibration.get().unwrap_or(self.momentum),
            mode,
            relu,
        };
        ops::batch_norm(x, &self.weight, &self.bias, &args)
    }

    fn params(&self, out: &mut Vec<Tensor>) {
        out.push(self.weight.clone());
        out.push(self.bias.clone());
    }
}

/// I3D's Unit3D: Conv3d (no bias, 'same' padding for odd kernels) -> BatchNorm -> ReLU.
#[derive(Clone, Debug)]
pub struct Unit3d {
    pub weight: Tensor,
    pub bn: BatchNorm3d,
    pub stride: [usize; 3],
    pub padding: [usize; 3],
}

#[derive(Clone, Copy, Debug)]
pub struct BnCfg {
    pub eps: f64,
    pub momentum: f64,
    pub init: InitScheme,
}

impl Unit3d {
    pub fn new(cin: usize, cout: usize, k: [usize; 3], cfg: BnCfg, vb: VarBuilder) -> Result<Self> {
        let weight = vb.pp("conv3d").get_with_hints(
            (cout, cin, k[0], k[1], k[2]),
            "weight",
            cfg.init.weight(),
        )?;
        Ok(Self {
            weight,
            bn: BatchNorm3d::new(cout, cfg.eps, cfg.momentum, vb.pp("bn"))?,
            stride: [1, 1, 1],
            padding: [k[0] / 2, k[1] / 2, k[2] / 2],
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = ops::conv3d(x, &self.weight, self.stride, self.padding)?;
        self.bn.forward(&y, train, true)
    }

    fn params(&self, out: &mut Vec<Tensor>) {
        out.push(self.weight.clone());
        self.bn.params(out);
    }
}

/// Coordinate Attention (Hou et al., CVPR 2021) extended from (H, W) to (T, H, W).
///
/// 2D CA pools along W (giving C x H) and along H (giving C x W). In 3D each axis is described
/// by pooling over the *other two*: `z_t = mean_{h,w} x` (C x T), `z_h = mean_{t,w} x` (C x H),
/// `z_w = mean_{t,h} x` (C x W). The three are concatenated along the position axis
/// (C x (T+H+W)), mixed by one shared 1x1x1 conv to `mip = max(8, C/32)` channels (with bias, as
/// in the authors' code), BatchNorm, h-swish (`x * ReLU6(x + 3) / 6`), split back into the three
/// parts, and each part gets its own 1x1x1 conv back to C (with bias) and a sigmoid:
/// `y = x * a_t[c,t] * a_h[c,h] * a_w[c,w]`. For T = 1 this is exactly 2D CA times a
/// per-channel gate `a_t` (SE-like).
#[derive(Clone, Debug)]
pub struct CoordAttention3d {
    pub conv1_w: Tensor,
    pub conv1_b: Tensor,
    pub bn: BatchNorm3d,
    /// Per-axis (T, H, W) conv weights `[C, mip, 1, 1, 1]` and biases `[C]`.
    pub conv_axis: [(Tensor, Tensor); 3],
    pub mip: usize,
}

impl CoordAttention3d {
    pub fn mip_for(c: usize) -> usize {
        (c / 32).max(8)
    }

    pub fn new(c: usize, cfg: BnCfg, vb: VarBuilder) -> Result<Self> {
        let mip = Self::mip_for(c);
        let conv1 = vb.pp("conv1");
        let conv1_w = conv1.get_with_hints((mip, c, 1, 1, 1), "weight", cfg.init.weight())?;
        let conv1_b = conv1.get_with_hints(mip, "bias", cfg.init.bias(c))?;
        let axis = |name: &str| -> Result<(Tensor, Tensor)> {
            let v = vb.pp(name);
            Ok((
                v.get_with_hints((c, mip, 1, 1, 1), "weight", cfg.init.weight())?,
                v.get_with_hints(c, "bias", cfg.init.bias(mip))?,
            ))
        };
        Ok(Self {
            conv1_w,
            conv1_b,
            bn: BatchNorm3d::new(mip, cfg.eps, cfg.momentum, vb.pp("bn"))?,
            conv_axis: [axis("conv_t")?, axis("conv_h")?, axis("conv_w")?],
            mip,
        })
    }

    /// 1x1 conv on `[B, Cin, L]` with weight `[Cout, Cin, 1, 1, 1]` and bias `[Cout]`.
    fn pointwise(z: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (cout, cin) = (w.dim(0)?, w.dim(1)?);
        w.reshape((cout, cin))?
            .broadcast_matmul(z)?
            .broadcast_add(&b.reshape((1, cout, 1))?)
    }

    /// The attention maps `[a_t | a_h | a_w]`, `[B, C, T+H+W]`.
    pub fn attention(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, _, t, h, w) = x.dims5()?;
        let z = ops::ca_pool(x)?; // [B, C, T+H+W]
        let y = Self::pointwise(&z, &self.conv1_w, &self.conv1_b)?;
        let y = self
            .bn
            .forward(&y.reshape((b, self.mip, t + h + w, 1, 1))?, train, false)?
            .reshape((b, self.mip, t + h + w))?;
        // h-swish: x * ReLU6(x + 3) / 6
        let y = (&y
            * (y.affine(1.0, 3.0)?
                .relu()?
                .minimum(6.0)?
                .affine(1.0 / 6.0, 0.0))?)?;
        let parts = [
            y.narrow(2, 0, t)?,
            y.narrow(2, t, h)?,
            y.narrow(2, t + h, w)?,
        ];
        let mut out = Vec::with_capacity(3);
        for (p, (cw, cb)) in parts.iter().zip(&self.conv_axis) {
            out.push(candle_nn::ops::sigmoid(&Self::pointwise(p, cw, cb)?)?);
        }
        Tensor::cat(&out, 2)
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        ops::ca_apply(x, &self.attention(x, train)?)
    }

    fn params(&self, out: &mut Vec<Tensor>) {
        out.push(self.conv1_w.clone());
        out.push(self.conv1_b.clone());
        self.bn.params(out);
        for (w, b) in &self.conv_axis {
            out.push(w.clone());
            out.push(b.clone());
        }
    }
}

/// I3D's Inception module (Mixed_*) followed by 3D Coordinate Attention.
/// Widths `[b0, b1a, b1b, b2a, b2b, b3b]`; output channels `b0 + b1b + b2b + b3b`.
#[derive(Clone, Debug)]
pub struct Inception3d {
    pub b0: Unit3d,
    pub b1a: Unit3d,
    pub b1b: Unit3d,
    pub b2a: Unit3d,
    pub b2b: Unit3d,
    pub b3b: Unit3d,
    pub ca: CoordAttention3d,
    pub out_channels: usize,
}

impl Inception3d {
    pub fn new(cin: usize, wd: [usize; 6], cfg: BnCfg, vb: VarBuilder) -> Result<Self> {
        let out_channels = wd[0] + wd[2] + wd[4] + wd[5];
        Ok(Self {
            b0: Unit3d::new(cin, wd[0], [1, 1, 1], cfg, vb.pp("b0"))?,
            b1a: Unit3d::new(cin, wd[1], [1, 1, 1], cfg, vb.pp("b1a"))?,
            b1b: Unit3d::new(wd[1], wd[2], [3, 3, 3], cfg, vb.pp("b1b"))?,
            b2a: Unit3d::new(cin, wd[3], [1, 1, 1], cfg, vb.pp("b2a"))?,
            b2b: Unit3d::new(wd[3], wd[4], [3, 3, 3], cfg, vb.pp("b2b"))?,
            b3b: Unit3d::new(cin, wd[5], [1, 1, 1], cfg, vb.pp("b3b"))?,
            ca: CoordAttention3d::new(out_channels, cfg, vb.pp("ca"))?,
            out_channels,
        })
    }

    /// Concatenated branches, before the attention.
    pub fn branches(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y0 = self.b0.forward(x, train)?;
        let y1 = self.b1b.forward(&self.b1a.forward(x, train)?, train)?;
        let y2 = self.b2b.forward(&self.b2a.forward(x, train)?, train)?;
        let p = ops::max_pool3d(x, [3, 3, 3], [1, 1, 1], [1, 1, 1])?;
        let y3 = self.b3b.forward(&p, train)?;
        Tensor::cat(&[&y0, &y1, &y2, &y3], 1)
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.ca.forward(&self.branches(x, train)?, train)
    }

    pub(crate) fn params(&self, out: &mut Vec<Tensor>) {
        for u in [
            &self.b0, &self.b1a, &self.b1b, &self.b2a, &self.b2b, &self.b3b,
        ] {
            u.params(out);
        }
        self.ca.params(out);
    }

    /// Its BatchNorm layers (branches, then the attention's).
    pub(crate) fn batch_norms_mut(&mut self) -> [&mut BatchNorm3d; 7] {
        [
            &mut self.b0.bn,
            &mut self.b1a.bn,
            &mut self.b1b.bn,
            &mut self.b2a.bn,
            &mut self.b2b.bn,
            &mut self.b3b.bn,
            &mut self.ca.bn,
        ]
    }
}

pub(crate) fn unit_params(u: &Unit3d, out: &mut Vec<Tensor>) {
    u.params(out)
}
