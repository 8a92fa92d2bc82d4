//! GFE prior learning with a triplet network (paper Sec. 3.3.2).
//!
//! Triplets are formed inside each batch of `batch` samples (the batch is embedded once):
//! every sample with a same-class partner and an other-class sample in the batch is an anchor.
//! `Mining::Random`: positive and negative drawn at random (seeded). `Mining::SemiHard`
//! (FaceNet): random positive; the negative is the closest one farther than the positive
//! (d(a,n) > d(a,p)); when none is, the farthest negative (TensorFlow's convention).
//! Loss (paper): sum over anchors of max(d(a,p)^2 - d(a,n)^2 + margin, 0), squared Euclidean.

use crate::train::data::SampleSet;
use crate::train::driver::{self, EpochRounds, EpochStep, SgdPart, TrainCtx};
use crate::train::encoder::{Encoder, EncoderFactory};
use crate::train::host::{DeviceSums, PendingLog};
use crate::train::init::var_builder;
use crate::train::progress::TrainLog;
use crate::train::rng::{sub_seed, STREAM_GFE};
use crate::train::sgd::SgdConfig;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, D};
use candle_nn::VarMap;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mining {
    Random,
    SemiHard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reduction {
    /// the paper's L_t: sum over anchors
    Sum,
    Mean,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GfeConfig {
    pub epochs: usize,
    /// samples per batch (triplets are mined inside it)
    pub batch: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// alpha; the paper gives none (the authors' code uses 1 with plain L2); 0.2 is FaceNet's
    /// on normalised embeddings, the measured choice (README, "Choices where the paper is open")
    pub margin: f64,
    pub mining: Mining,
    pub reduction: Reduction,
    /// L2-normalise embeddings before distances (FaceNet; the measured choice); the paper's
    /// literal reading is off
    pub normalize: bool,
    /// save every N epochs (0: never)
    pub checkpoint_every: usize,
}

impl Default for GfeConfig {
    fn default() -> Self {
        Self {
            epochs: 60,
            batch: 128,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            margin: 0.2,
            mining: Mining::Random,
            reduction: Reduction::Mean,
            normalize: true,
            checkpoint_every: 5,
        }
    }
}

/// (anchor, positive, negative) positions inside a batch.
pub type Triplet = (usize, usize, usize);

/// Random triplets: for every usable anchor one random positive and one random negative.
pub fn random_triplets(labels: &[usize], rng: &mut impl Rng) -> Vec<Triplet> {
    let mut out = Vec::new();
    for (a, &la) in labels.iter().enumerate() {
        let pos: Vec<usize> = (0..labels.len())
            .filter(|&j| j != a && labels[j] == la)
            .collect();
        let neg: Vec<usize> = (0..labels.len()).filter(|&j| labels[j] != la).collect();
        if let (Some(&p), Some(&n)) = (pos.choose(rng), neg.choose(rng)) {
            out.push((a, p, n));
        }
    }
    out
}

/// Semi-hard triplets from the squared distance matrix `d2` of the batch (see module docs).
pub fn semi_hard_triplets(labels: &[usize], d2: &[Vec<f32>], rng: &mut impl Rng) -> Vec<Triplet> {
    let mut out = Vec::new();
    for (a, &la) in labels.iter().enumerate() {
        let pos: Vec<usize> = (0..labels.len())
            .filter(|&j| j != a && labels[j] == la)
            .collect();
        let Some(&p) = pos.choose(rng) else { continue };
        let dp = d2[a][p];
        let negs = (0..labels.len()).filter(|&j| labels[j] != la);
        let semi = negs
            .clone()
            .filter(|&j| d2[a][j] > dp)
            .min_by(|&x, &y| d2[a][x].total_cmp(&d2[a][y]));
        let n = semi.or_else(|| negs.max_by(|&x, &y| d2[a][x].total_cmp(&d2[a][y])));
        if let Some(n) = n {
            out.push((a, p, n));
        }
    }
    out
}

/// Squared Euclidean distances between all rows of `e` [B, D].
pub fn pairwise_sq_dist(e: &Tensor) -> candle_core::Result<Tensor> {
    let sq = e.sqr()?.sum_keepdim(1)?; // [B,1]
    let g = e.matmul(&e.t()?)?;
    sq.broadcast_add(&sq.t()?)?
        .broadcast_sub(&(g * 2.0)?)?
        .relu()
}

/// Per-triplet hinge terms max(|a-p|^2 - |a-n|^2 + margin, 0), each of `a`, `p`, `n` [N, D].
pub fn triplet_terms(
    a: &Tensor,
    p: &Tensor,
    n: &Tensor,
    margin: f64,
) -> candle_core::Result<Tensor> {
    let dap = (a - p)?.sqr()?.sum(D::Minus1)?;
    let dan = (a - n)?.sqr()?.sum(D::Minus1)?;
    ((dap - dan)? + margin)?.relu()
}

/// Loss over `trips` of embeddings `e` [B, D], and the fraction with d(a,p) < d(a,n) (both
/// scalar tensors on `e`'s device: nothing is read to the host).
pub fn triplet_loss(
    e: &Tensor,
    trips: &[Triplet],
    margin: f64,
    red: Reduction,
) -> Result<(Tensor, Tensor)> {
    if trips.is_empty() {
        bail!("triplet_loss: no triplets");
    }
    let dev = e.device();
    let idx = |f: fn(&Triplet) -> usize| {
        Tensor::new(trips.iter().map(|t| f(t) as u32).collect::<Vec<_>>(), dev)
    };
    let a = e.index_select(&idx(|t| t.0)?, 0)?;
    let p = e.index_select(&idx(|t| t.1)?, 0)?;
    let n = e.index_select(&idx(|t| t.2)?, 0)?;
    let dap = (&a - &p)?.sqr()?.sum(D::Minus1)?;
    let dan = (&a - &n)?.sqr()?.sum(D::Minus1)?;
    let ok = dap.lt(&dan)?.to_dtype(DType::F32)?.mean_all()?;
    let terms = triplet_terms(&a, &p, &n, margin)?;
    let loss = match red {
        Reduction::Sum => terms.sum_all()?,
        Reduction::Mean => terms.mean_all()?,
    };
    Ok((loss, ok))
}

pub fn l2_normalize(e: &Tensor) -> candle_core::Result<Tensor> {
    let n = (e.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
    e.broadcast_div(&n)
}

/// Trains the encoder in `varmap` (created there if empty, with seeded weights) on `set`.
pub fn train_gfe(
    factory: &EncoderFactory,
    varmap: &VarMap,
    set: &SampleSet,
    cfg: &GfeConfig,
    cx: &mut TrainCtx,
) -> Result<TrainLog> {
    let enc = factory(
        var_builder(varmap, sub_seed(cx.seed, STREAM_GFE), cx.dev),
        0,
    )
    .context("building the GFE encoder")?;
    let sgd = SgdConfig::new(cfg.lr, cfg.momentum, cfg.weight_decay);
    let mut rounds = EpochRounds {
        part: SgdPart::new("gfe", (varmap, set), sgd, (cx.seed, cx.dev))?,
        schedule: (cfg.epochs, cfg.checkpoint_every),
        step: GfeStep {
            enc: enc.as_ref(),
            cfg,
        },
    };
    let log = driver::run(&mut rounds, cx)?;
    rounds
        .part
        .recalibrate(enc.as_ref(), cfg.batch, |x| enc.embed(x, true))?;
    Ok(log)
}

/// GFE epochs: triplets mined inside shuffled batches.
struct GfeStep<'a> {
    enc: &'a dyn Encoder,
    cfg: &'a GfeConfig,
}

impl EpochStep for GfeStep<'_> {
    const NAME: &'static str = "GFE";
    fn epoch(&mut self, part: &mut SgdPart, epoch: usize) -> Result<PendingLog> {
        let (batches, mut rng) = part.batches(STREAM_GFE, epoch, self.cfg.batch);
        let mut sums = DeviceSums::default();
        let mut n = 0usize;
        for (bi, b) in batches.iter().enumerate() {
            let step = self
                .step(part, b, &mut rng)
                .with_context(|| format!("GFE epoch {epoch} batch {bi}"))?;
            if let Some(stats) = step {
                sums.add(stats)?;
                n += 1;
            }
        }
        Ok(sums.pending(epoch, n, self.cfg.lr))
    }
}

impl GfeStep<'_> {
    /// One optimisation step on batch `b`: its loss and triplet accuracy on the device (read
    /// once per epoch), or None when the batch yields no triplet. Semi-hard mining reads the
    /// batch's distances to choose triplets on the host; the default random mining reads nothing.
    fn step(&self, part: &mut SgdPart, b: &[usize], rng: &mut impl Rng) -> Result<Option<Tensor>> {
        let (set, cfg, dev) = (part.set, self.cfg, part.dev);
        let labels = set.labels_of(b);
        // random triplets are drawn before the forward pass so the RNG use does not depend on it
        let pre = matches!(cfg.mining, Mining::Random).then(|| random_triplets(&labels, rng));
        if pre.as_ref().is_some_and(|t| t.is_empty()) {
            return Ok(None);
        }
        let mut e = self.enc.embed(&set.batch(b, dev)?, true)?;
        if cfg.normalize {
            e = l2_normalize(&e)?;
        }
        let trips = match pre {
            Some(t) => t,
            None => semi_hard_triplets(
                &labels,
                &pairwise_sq_dist(&e.detach())?.to_vec2::<f32>()?,
                rng,
            ),
        };
        if trips.is_empty() {
            return Ok(None);
        }
        let (loss, acc) = triplet_loss(&e, &trips, cfg.margin, cfg.reduction)?;
        let stats = Tensor::stack(&[loss.detach(), acc], 0)?;
        part.opt.backward_step(&loss)?;
        Ok(Some(stats))
    }
}
