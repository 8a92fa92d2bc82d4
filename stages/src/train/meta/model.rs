//! The meta-learning network: one encoder (Single), two in parallel (P) or a cascade (C).
//!
//! Cascade (MPFNet-C), the reading chosen for the paper's open point (section 3.5): the GFE's last
//! feature map [B, C', T', H', W'] goes through a 1x1x1 projection to `k` channels (the "bridge",
//! seeded fan-in init, zero bias), a per-sample RMS normalisation to the input's RMS, and nearest-neighbour upsampling to x's T, H, W grid (PyTorch's
//! `nearest`: src = floor(dst * in / out)); `concat(x, bridge)` along channels feeds an AFE built
//! with `extra_in_channels = k`. The AFE's variables are copied from the pretrained AFE; a variable
//! whose input-channel dimension (dim 1) grew gets the pretrained values in its first channels and
//! zeros in the new ones, so the cascade starts out exactly as the pretrained AFE. Only the AFE side
//! starts at zero: were the bridge zero as well, both gradients would vanish and neither could move.
use crate::train::encoder::{Encoder, EncoderFactory};
use crate::train::init::{sorted_vars, var_builder};
use crate::train::rng::{sub_seed, STREAM_META};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Variant {
    /// one encoder (ablations: PLTN, PLSM, w/o prior learning)
    Single,
    /// MPFNet-P: s = cos_G + gamma * cos_A
    P { gamma: f64 },
    /// MPFNet-C: f_A = AFE(concat(x, bridge(GFE feature map)))
    C { bridge_channels: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distance {
    /// cosine similarity (the paper's main reading)
    Cosine,
    /// negative squared Euclidean distance
    Euclidean,
}

pub const BRIDGE_PREFIX: &str = "cascade_bridge";

/// 1x1x1 projection + nearest upsampling of a feature map onto the input grid.
pub struct Bridge {
    weight: Tensor,
    bias: Tensor,
}

impl Bridge {
    pub fn new(vb: candle_nn::VarBuilder, in_channels: usize, out_channels: usize) -> Result<Self> {
        let w = vb.get_with_hints(
            (out_channels, in_channels),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_UNIFORM,
        )?;
        let b = vb.get_with_hints(out_channels, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight: w, bias: b })
    }

    /// fm [B, C', T', H', W'] -> [B, k, T, H, W]
    pub fn forward(&self, fm: &Tensor, grid: (usize, usize, usize)) -> candle_core::Result<Tensor> {
        let (b, c, t, h, w) = fm.dims5()?;
        let k = self.weight.dim(0)?;
        let rows = fm
            .permute((0, 2, 3, 4, 1))?
            .contiguous()?
            .reshape((b * t * h * w, c))?;
        let y = rows.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?; // [B*T'*H'*W', k]
                                                                            // per-sample RMS normalisation: the GFE's feature maps are orders of magnitude larger
                                                                            // than the flow/difference channels beside which the bridge is concatenated; unnormalised,
                                                                            // the first updates of the AFE's new input weights swamped its pretrained path and the
                                                                            // cascade collapsed (query loss pinned at ln N)
        let y = y.reshape((b, t * h * w * k))?;
        let rms = (y.sqr()?.mean_keepdim(1)? + 1e-6)?.sqrt()?;
        let y = y.broadcast_div(&rms)?;
        let mut y = y.reshape((b, t, h, w, k))?.permute((0, 4, 1, 2, 3))?;
        for (dim, out) in [(2, grid.0), (3, grid.1), (4, grid.2)] {
            y = nearest(&y, dim, out)?;
        }
        y.contiguous()
    }
}

/// Nearest-neighbour resampling of dimension `dim` to `out` entries (differentiable).
pub fn nearest(x: &Tensor, dim: usize, out: usize) -> candle_core::Result<Tensor> {
    let n = x.dim(dim)?;
    if n == out {
        return Ok(x.clone());
    }
    let idx: Vec<u32> = (0..out)
        .map(|i| ((i * n) / out).min(n - 1) as u32)
        .collect();
    x.contiguous()?
        .index_select(&Tensor::new(idx, x.device())?, dim)
}

/// What meta-learning does to the pretrained encoders (the paper's "frozen parameters" is open:
/// frozen encoders, or encoders initialised from the frozen priors and trained on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderMode {
    /// the GFE and AFE weights and BatchNorm statistics stay as pretrained (BatchNorm in eval
    /// mode during episodes); MPFNet-C trains only its bridge and the AFE's new input weights
    Frozen,
    /// every weight trains; the pretrained ones at `encoder_lr` x the meta learning rate
    Finetune,
}

pub struct MetaModel {
    pub variant: Variant,
    /// GFE (or the single encoder)
    pub primary: VarMap,
    /// AFE (P) or the widened cascade AFE with the bridge (C)
    pub secondary: Option<VarMap>,
    enc1: Box<dyn Encoder>,
    enc2: Option<Box<dyn Encoder>>,
    bridge: Option<Bridge>,
    /// cascade variables widened from the pretrained AFE: (name, pretrained input channels)
    widened: Vec<(String, usize)>,
    /// set by the meta-learner with frozen encoders: BatchNorm in eval mode in train passes too
    frozen_bn: std::cell::Cell<bool>,
}

impl MetaModel {
    /// `primary`: the GFE's (or single encoder's) variables; `secondary`: the pretrained AFE's
    /// (P, C). Empty maps give seeded random weights ("without prior learning"). Meta-training
    /// updates `primary` and (P) `secondary` in place: pass `init::deep_copy`s to keep the
    /// pretrained maps; for C a new widened map replaces `secondary` and the given one is unchanged.
    pub fn new(
        factory: &EncoderFactory,
        variant: Variant,
        primary: VarMap,
        secondary: Option<VarMap>,
        shape: [usize; 4],
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let s1 = sub_seed(seed, STREAM_META * 16 + 1);
        let s2 = sub_seed(seed, STREAM_META * 16 + 2);
        let enc1 =
            factory(var_builder(&primary, s1, dev), 0).context("building the primary encoder")?;
        let mut widened = Vec::new();
        let (secondary, enc2, bridge) = match variant {
            Variant::Single => (None, None, None),
            Variant::P { .. } => {
                let m = secondary.context("MPFNet-P needs the AFE's variables")?;
                let e = factory(var_builder(&m, s2, dev), 0).context("building the AFE")?;
                (Some(m), Some(e), None)
            }
            Variant::C { bridge_channels: k } => {
                let afe = secondary.context("MPFNet-C needs the AFE's variables")?;
                let [c, t, h, w] = shape;
                let fm =
                    enc1.feature_map(&Tensor::zeros((1, c, t, h, w), DType::F32, dev)?, false)?;
                let cascade = VarMap::new();
                let vb = var_builder(&cascade, s2, dev);
                let e = factory(vb.clone(), k).context("building the widened cascade AFE")?;
                let b = Bridge::new(vb.pp(BRIDGE_PREFIX), fm.dim(1)?, k)?;
                widened = widen_from(&afe, &cascade)
                    .context("copying the pretrained AFE into the cascade")?;
                (Some(cascade), Some(e), Some(b))
            }
        };
        Ok(Self {
            variant,
            primary,
            secondary,
            enc1,
            enc2,
            bridge,
            widened,
            frozen_bn: std::cell::Cell::new(false),
        })
    }

    /// Its encoders (the GFE or single one, then the AFE or cascade AFE).
    pub fn encoders(&self) -> Vec<&dyn Encoder> {
        std::iter::once(self.enc1.as_ref())
            .chain(self.enc2.as_deref())
            .collect()
    }

    /// BatchNorm in eval mode even in training passes (frozen encoders keep their statistics).
    pub fn set_frozen_bn(&self, on: bool) {
        self.frozen_bn.set(on)
    }

    /// The variables meta-learning updates and their learning-rate multipliers (see
    /// [`EncoderMode`]): the pretrained encoders' at `encoder_lr` (none when frozen), MPFNet-C's
    /// bridge at 1, and a widened cascade weight at 1 on its new input channels and `encoder_lr`
    /// (0 when frozen) on the pretrained ones. Names as in [`Self::vars`].
    pub fn param_groups(
        &self,
        mode: EncoderMode,
        encoder_lr: f64,
    ) -> candle_core::Result<Vec<(String, Var, Option<Tensor>)>> {
        let enc = match mode {
            EncoderMode::Frozen => 0.0,
            EncoderMode::Finetune => encoder_lr,
        };
        let mut out = Vec::new();
        for (name, var) in self.vars() {
            let local = &name[2..];
            let is_new = name.starts_with("s/") && local.starts_with(BRIDGE_PREFIX);
            let widened = name.starts_with("s/")
                && matches!(self.variant, Variant::C { .. })
                && self.widened.iter().any(|(n, _)| n == local);
            if widened {
                let old = self.widened.iter().find(|(n, _)| n == local).unwrap().1;
                let dims = var.dims().to_vec();
                let mut a = dims.clone();
                a[1] = old;
                let mut b = dims.clone();
                b[1] = dims[1] - old;
                let dev = var.device();
                let scale = Tensor::cat(
                    &[
                        (Tensor::ones(a, DType::F32, dev)? * enc)?,
                        Tensor::ones(b, DType::F32, dev)?,
                    ],
                    1,
                )?;
                out.push((name, var, Some(scale)));
            } else if is_new {
                out.push((name, var, None));
            } else if enc > 0.0 {
                let scale = (enc != 1.0)
                    .then(|| Tensor::ones(var.dims(), DType::F32, var.device())? * enc)
                    .transpose()?;
                out.push((name, var, scale));
            }
        }
        Ok(out)
    }

    fn bn_train(&self, train: bool) -> bool {
        train && !self.frozen_bn.get()
    }

    /// Per-branch embeddings and their weights in the combined similarity.
    pub fn embed(&self, x: &Tensor, train: bool) -> candle_core::Result<Vec<(Tensor, f64)>> {
        let train = self.bn_train(train);
        match (self.variant, &self.enc2, &self.bridge) {
            (Variant::P { gamma }, Some(e2), _) => Ok(vec![
                (self.enc1.embed(x, train)?, 1.0),
                (e2.embed(x, train)?, gamma),
            ]),
            (Variant::C { .. }, Some(e2), Some(_)) => Ok(vec![(
                e2.embed(&self.cascade_input(x, train)?, train)?,
                1.0,
            )]),
            _ => Ok(vec![(self.enc1.embed(x, train)?, 1.0)]),
        }
    }

    /// Weights of the branches in the combined similarity (P: [1, gamma]; otherwise [1]).
    pub fn embed_weights(&self) -> Vec<f64> {
        match (self.variant, &self.enc2) {
            (Variant::P { gamma }, Some(_)) => vec![1.0, gamma],
            _ => vec![1.0],
        }
    }

    /// C: concat(x, bridge(GFE feature map)); otherwise x.
    pub fn cascade_input(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let train = self.bn_train(train);
        match &self.bridge {
            Some(b) => {
                let (n, c, t, h, w) = x.dims5()?;
                let fm = self.enc1.feature_map(x, train)?;
                // the bridge (RMS 1) brought to the input's own scale, per sample: flow and
                // difference channels are small, the AFE's first BatchNorm statistics reflect
                // that, and anything larger is amplified by 1/std there
                let rms = (x.reshape((n, c * t * h * w))?.sqr()?.mean_keepdim(1)? + 1e-12)?
                    .sqrt()?
                    .reshape((n, 1, 1, 1, 1))?;
                let br = b.forward(&fm, (t, h, w))?.broadcast_mul(&rms)?;
                Tensor::cat(&[x, &br], 1)
            }
            None => Ok(x.clone()),
        }
    }

    /// The encoder whose feature map Grad-CAM shows (the AFE for P and C) and its input for `x`.
    pub fn cam_encoder(&self, x: &Tensor) -> candle_core::Result<(&dyn Encoder, Tensor)> {
        match &self.enc2 {
            Some(e2) => Ok((e2.as_ref(), self.cascade_input(x, false)?)),
            None => Ok((self.enc1.as_ref(), x.clone())),
        }
    }

    /// Trainable variables, prefixed `p/` and `s/`.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = sorted_vars(&self.primary)
            .into_iter()
            .map(|(k, x)| (format!("p/{k}"), x))
            .collect();
        if let Some(s) = &self.secondary {
            v.extend(
                sorted_vars(s)
                    .into_iter()
                    .map(|(k, x)| (format!("s/{k}"), x)),
            );
        }
        v
    }

    /// (tag, map) pairs for checkpoints and snapshots.
    pub fn maps(&self) -> Vec<(&'static str, &VarMap)> {
        let mut v = vec![("p", &self.primary)];
        if let Some(s) = &self.secondary {
            v.push(("s", s));
        }
        v
    }
}

/// Copies `from` into the variables of `to` that `from` has: same shape, or `to` wider in dim 1
/// (input channels: pretrained values first, zeros after). Variables only in `to` keep their init.
/// Returns the widened variables and their pretrained input-channel counts.
pub fn widen_from(from: &VarMap, to: &VarMap) -> Result<Vec<(String, usize)>> {
    let mut widened = Vec::new();
    let src = from.data().lock().unwrap();
    for (name, var) in sorted_vars(to) {
        let Some(old) = src.get(&name) else { continue };
        let (od, nd) = (old.dims().to_vec(), var.dims().to_vec());
        if od == nd {
            var.set(old.as_tensor())?;
        } else if od.len() == nd.len()
            && od.len() >= 2
            && od[0] == nd[0]
            && od[2..] == nd[2..]
            && nd[1] > od[1]
        {
            let mut zshape = nd.clone();
            zshape[1] = nd[1] - od[1];
            let z = Tensor::zeros(zshape, var.dtype(), var.device())?;
            var.set(&Tensor::cat(&[old.as_tensor(), &z], 1)?)?;
            widened.push((name.clone(), od[1]));
        } else {
            bail!("variable {name}: pretrained shape {od:?} cannot widen to {nd:?}");
        }
    }
    Ok(widened)
}
