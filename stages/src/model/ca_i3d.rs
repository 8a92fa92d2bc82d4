//! CA-I3D backbone (paper Sec. 3.3.1, Fig. 5): Conv3d 3x3x3 stem -> MaxPool 1x3x3 s(1,2,2) ->
//! Inception+CA -> MaxPool 1x3x3 s(1,2,2) -> Inception+CA -> adaptive avg pool -> Linear.
//!
//! The paper flattens the last feature map into the Linear; over 480x10x32x32 that is hundreds of
//! millions of weights, so a small adaptive average pool (`pool`, configurable) comes first.

use crate::model::layers::{unit_params, BnCfg, BnMomentum, Inception3d, InitScheme, Unit3d};
use crate::model::ops;
use anyhow::{bail, Context};
use candle_core::{Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

fn d_in() -> usize {
    5
}
fn d_eps() -> f64 {
    1e-3
}
fn d_mom() -> f64 {
    0.01
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaI3dConfig {
    /// Input channels (flow u, v + RGB frame difference = 5).
    #[serde(default = "d_in")]
    pub in_channels: usize,
    /// Extra stem input channels (MPFNet-C cascade: GFE features concatenated to x).
    #[serde(default)]
    pub extra_in_channels: usize,
    pub stem_channels: usize,
    /// Inception branch widths `[b0, b1a, b1b, b2a, b2b, b3b]` of the two blocks.
    pub mixed: [[usize; 6]; 2],
    /// Adaptive average pool `[t, h, w]` before the Linear.
    pub pool: [usize; 3],
    pub embed_dim: usize,
    #[serde(default = "d_eps")]
    pub bn_eps: f64,
    /// PyTorch convention: `running = (1 - momentum) * running + momentum * batch`.
    #[serde(default = "d_mom")]
    pub bn_momentum: f64,
    /// Conv/Linear initialisation (default Kaiming normal, fan-in; the paper's N(0,1) diverges).
    #[serde(default)]
    pub init: InitScheme,
}

impl CaI3dConfig {
    /// A network of these widths on 5 input channels (BatchNorm eps 1e-3, momentum 0.01,
    /// Kaiming-normal init).
    fn widths(
        stem_channels: usize,
        mixed: [[usize; 6]; 2],
        pool: [usize; 3],
        embed_dim: usize,
    ) -> Self {
        Self {
            in_channels: 5,
            extra_in_channels: 0,
            stem_channels,
            mixed,
            pool,
            embed_dim,
            bn_eps: 1e-3,
            bn_momentum: 0.01,
            init: InitScheme::KaimingNormal,
        }
    }

    /// I3D widths: stem 64 (I3D's Conv3d_1a), Mixed_3b and Mixed_3c (480 output channels),
    /// pool 1x4x4 -> 7,680 features -> 512-d embedding.
    pub fn paper() -> Self {
        let mixed = [[64, 96, 128, 16, 32, 32], [128, 128, 192, 32, 96, 64]];
        Self::widths(64, mixed, [1, 4, 4], 512)
    }

    /// Small network for demos and CI: about a quarter of I3D's widths (64 then 120 channels),
    /// 64-d embedding; fits 5x6x32x32 inputs.
    pub fn demo() -> Self {
        let mixed = [[16, 24, 32, 4, 8, 8], [32, 32, 48, 8, 24, 16]];
        Self::widths(16, mixed, [1, 2, 2], 64)
    }

    /// The benchmark network of bench_step and stages/bench/pytorch_step.py (stem 5->32, two Inception+CA blocks of 128 channels).
    pub fn bench() -> Self {
        let mixed = [[32, 48, 64, 8, 16, 16], [32, 48, 64, 8, 16, 16]];
        Self::widths(32, mixed, [1, 4, 4], 128)
    }

    pub fn mixed_out(&self, i: usize) -> usize {
        let m = self.mixed[i];
        m[0] + m[2] + m[4] + m[5]
    }

    /// Channels of the feature map returned by `feature_map`.
    pub fn feature_channels(&self) -> usize {
        self.mixed_out(1)
    }

    /// Scalars the network's variables hold (weights, biases, BatchNorm statistics), computed
    /// from the config alone, saturating: lets a reader compare a file's claims with its size
    /// before anything is allocated.
    pub fn variable_count(&self) -> u128 {
        let unit = |cin: u128, cout: u128, k: u128| cout * cin * k + 4 * cout;
        let ca = |c: u128| {
            let mip = (c / 32).max(8);
            mip * c + mip + 4 * mip + 3 * (c * mip + c)
        };
        let inception = |cin: u128, w: [usize; 6]| {
            let w = w.map(|v| v as u128);
            unit(cin, w[0], 1)
                + unit(cin, w[1], 1)
                + unit(w[1], w[2], 27)
                + unit(cin, w[3], 1)
                + unit(w[3], w[4], 27)
                + unit(cin, w[5], 1)
                + ca(w[0] + w[2] + w[4] + w[5])
        };
        let cin = (self.in_channels + self.extra_in_channels) as u128;
        let stem = self.stem_channels as u128;
        let pool: u128 = self.pool.iter().map(|&v| v as u128).product();
        let embed = self.embed_dim as u128;
        unit(cin, stem, 27)
            + inception(stem, self.mixed[0])
            + inception(self.mixed_out(0) as u128, self.mixed[1])
            + embed * (self.feature_channels() as u128 * pool + 1)
    }
}

#[derive(Clone, Debug)]
pub struct CaI3d {
    pub stem: Unit3d,
    pub mixed_0: Inception3d,
    pub mixed_1: Inception3d,
    pub embed_w: Tensor,
    pub embed_b: Tensor,
    pub cfg: CaI3dConfig,
    /// shared by all its BatchNorm layers (precise BN sets their momentum through it)
    pub bn_momentum: BnMomentum,
}

/// Max pool 1x3x3, stride (1, 2, 2), 'same'-style padding (halves H and W).
fn spatial_pool(x: &Tensor) -> Result<Tensor> {
    ops::max_pool3d(x, [1, 3, 3], [1, 2, 2], [0, 1, 1])
}

impl CaI3d {
    pub fn new(vb: VarBuilder, cfg: &CaI3dConfig) -> Result<Self> {
        let bn = BnCfg {
            eps: cfg.bn_eps,
            momentum: cfg.bn_momentum,
            init: cfg.init,
        };
        let cin = cfg.in_channels + cfg.extra_in_channels;
        let stem = Unit3d::new(cin, cfg.stem_channels, [3, 3, 3], bn, vb.pp("stem"))?;
        let mixed_0 = Inception3d::new(cfg.stem_channels, cfg.mixed[0], bn, vb.pp("mixed_0"))?;
        let mixed_1 = Inception3d::new(mixed_0.out_channels, cfg.mixed[1], bn, vb.pp("mixed_1"))?;
        let feat = mixed_1.out_channels * cfg.pool.iter().product::<usize>();
        let e = vb.pp("embed");
        let embed_w = e.get_with_hints((cfg.embed_dim, feat), "weight", cfg.init.weight())?;
        let embed_b = e.get_with_hints(cfg.embed_dim, "bias", cfg.init.bias(feat))?;
        let mut net = Self {
            stem,
            mixed_0,
            mixed_1,
            embed_w,
            embed_b,
            cfg: cfg.clone(),
            bn_momentum: BnMomentum::default(),
        };
        net.share_bn_momentum();
        Ok(net)
    }

    /// Points every BatchNorm layer at the network's one momentum handle.
    fn share_bn_momentum(&mut self) {
        let h = self.bn_momentum.clone();
        self.stem.bn.recalibration = h.clone();
        for m in [&mut self.mixed_0, &mut self.mixed_1] {
            for bn in m.batch_norms_mut() {
                bn.recalibration = h.clone();
            }
        }
    }

    /// Output of the last Inception+CA block, `[B, C, T, H/4, W/4]`.
    pub fn feature_map(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.stem.forward(x, train)?;
        let y = self.mixed_0.forward(&spatial_pool(&y)?, train)?;
        self.mixed_1.forward(&spatial_pool(&y)?, train)
    }

    /// Adaptive average pool -> flatten -> Linear: `[B, embed_dim]`.
    pub fn head(&self, fm: &Tensor) -> Result<Tensor> {
        let p = ops::adaptive_avg_pool3d(fm, self.cfg.pool)?;
        let p = p.flatten_from(1)?;
        p.matmul(&self.embed_w.t()?)?.broadcast_add(&self.embed_b)
    }

    /// The embedding `f_theta(x)`, `[B, embed_dim]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.head(&self.feature_map(x, train)?)
    }

    /// Trainable tensors (BatchNorm running statistics excluded), in a fixed order.
    pub fn params(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        unit_params(&self.stem, &mut out);
        self.mixed_0.params(&mut out);
        self.mixed_1.params(&mut out);
        out.push(self.embed_w.clone());
        out.push(self.embed_b.clone());
        out
    }

    /// Number of trainable scalars.
    pub fn param_count(&self) -> usize {
        self.params().iter().map(|t| t.elem_count()).sum()
    }
}

/// Copies the same-named tensors of `src` into `varmap`. Where a destination has more input
/// channels on dim 1 than the source (the widened cascade stem), the source fills the leading
/// channels and the rest are set to ZERO, so the cascade starts out computing exactly the
/// pretrained model. Destination variables missing from `src` are left as they are.
pub fn load_into(varmap: &VarMap, src: &HashMap<String, Tensor>) -> anyhow::Result<()> {
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let Some(s) = src.get(name) else { continue };
        let var = &data[name];
        let (dd, sd) = (var.dims(), s.dims());
        let s = s.to_device(var.device())?.to_dtype(var.dtype())?;
        if dd == sd {
            var.set(&s)
                .with_context(|| format!("load_into: setting {name}"))?;
        } else if dd.len() == sd.len()
            && dd.len() >= 2
            && dd[1] > sd[1]
            && dd
                .iter()
                .zip(sd)
                .enumerate()
                .all(|(i, (a, b))| i == 1 || a == b)
        {
            let mut zshape = sd.to_vec();
            zshape[1] = dd[1] - sd[1];
            let z = Tensor::zeros(zshape, var.dtype(), var.device())?;
            let w = Tensor::cat(&[&s, &z], 1)?;
            var.set(&w)
                .with_context(|| format!("load_into: widening {name}"))?;
        } else {
            bail!("load_into: {name}: destination shape {dd:?} does not accept source {sd:?}");
        }
    }
    Ok(())
}
