//! AFE prior learning on the sample-balanced, motion-amplified set (paper Sec. 3.3.3). The paper does not
//! state the objective; this is the natural reading: a Linear(D -> n_classes) head on the
//! embedding, cross-entropy, SGD with a step schedule lr * gamma^(epoch / lr_step).
//! The head's variables live in the same VarMap under `HEAD_PREFIX`; the meta stage ignores them.

use crate::train::data::SampleSet;
use crate::train::driver::{self, EpochRounds, EpochStep, SgdPart, TrainCtx};
use crate::train::encoder::{Encoder, EncoderFactory};
use crate::train::host::{DeviceSums, PendingLog};
use crate::train::init::var_builder;
use crate::train::progress::TrainLog;
use crate::train::rng::{sub_seed, STREAM_AFE};
use crate::train::sgd::SgdConfig;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Linear, Module, VarMap};
use serde::{Deserialize, Serialize};

pub const HEAD_PREFIX: &str = "afe_cls";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AfeConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// divide the learning rate by 1/gamma every `lr_step` epochs
    pub lr_step: usize,
    pub gamma: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub checkpoint_every: usize,
}

impl Default for AfeConfig {
    fn default() -> Self {
        Self {
            epochs: 80,
            batch: 16,
            lr: 0.001,
            lr_step: 10,
            gamma: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            checkpoint_every: 5,
        }
    }
}

impl AfeConfig {
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let k = epoch.checked_div(self.lr_step).unwrap_or(0);
        self.lr * self.gamma.powi(k as i32)
    }
}

/// An encoder with a linear classification head.
pub struct Classifier {
    pub encoder: Box<dyn Encoder>,
    pub head: Linear,
}

impl Classifier {
    /// Builds (or reuses) the encoder and head in `varmap`; D is found by a probe forward.
    pub fn new(
        factory: &EncoderFactory,
        varmap: &VarMap,
        n_classes: usize,
        shape: [usize; 4],
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let vb = var_builder(varmap, seed, dev);
        let encoder = factory(vb.clone(), 0).context("building the AFE encoder")?;
        let [c, t, h, w] = shape;
        let probe = encoder.embed(
            &Tensor::zeros((1, c, t, h, w), candle_core::DType::F32, dev)?,
            false,
        )?;
        let d = probe.dim(D::Minus1)?;
        let head = candle_nn::linear(d, n_classes, vb.pp(HEAD_PREFIX))?;
        Ok(Self { encoder, head })
    }

    pub fn logits(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.head.forward(&self.encoder.embed(x, train)?)
    }
}

/// Trains encoder + head in `varmap` on the (amplified, balanced) `set`.
pub fn train_classifier(
    factory: &EncoderFactory,
    varmap: &VarMap,
    set: &SampleSet,
    cfg: &AfeConfig,
    cx: &mut TrainCtx,
) -> Result<TrainLog> {
    if set.is_empty() {
        bail!("train_afe: empty training set");
    }
    let model = Classifier::new(
        factory,
        varmap,
        set.n_classes,
        set.shape,
        sub_seed(cx.seed, STREAM_AFE),
        cx.dev,
    )?;
    let sgd = SgdConfig::new(cfg.lr, cfg.momentum, cfg.weight_decay);
    let mut rounds = EpochRounds {
        part: SgdPart::new("afe", (varmap, set), sgd, (cx.seed, cx.dev))?,
        schedule: (cfg.epochs, cfg.checkpoint_every),
        step: AfeStep { model: &model, cfg },
    };
    let log = driver::run(&mut rounds, cx)?;
    rounds
        .part
        .recalibrate(model.encoder.as_ref(), cfg.batch, |x| model.logits(x, true))?;
    Ok(log)
}

/// AFE epochs: cross-entropy over shuffled batches at the epoch's step-schedule rate.
struct AfeStep<'a> {
    model: &'a Classifier,
    cfg: &'a AfeConfig,
}

impl EpochStep for AfeStep<'_> {
    const NAME: &'static str = "AFE";
    fn epoch(&mut self, part: &mut SgdPart, epoch: usize) -> Result<PendingLog> {
        part.opt.set_lr(self.cfg.lr_at(epoch));
        let (batches, _) = part.batches(STREAM_AFE, epoch, self.cfg.batch);
        let mut sums = DeviceSums::default();
        let mut seen = 0usize;
        for (bi, b) in batches.iter().enumerate() {
            sums.add(
                self.step(part, b)
                    .with_context(|| format!("AFE epoch {epoch} batch {bi}"))?,
            )?;
            seen += b.len();
        }
        Ok(sums.pending(epoch, seen, part.opt.lr()))
    }
}

impl AfeStep<'_> {
    /// One step; returns, on the device, the batch's summed loss and its number of correct
    /// predictions (read once per epoch: see `train/host.rs`).
    fn step(&self, part: &mut SgdPart, b: &[usize]) -> Result<Tensor> {
        let (set, dev) = (part.set, part.dev);
        let logits = self.model.logits(&set.batch(b, dev)?, true)?;
        let y = set.labels_tensor(b, dev)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let correct = logits
            .argmax(D::Minus1)?
            .eq(&y)?
            .to_dtype(DType::F32)?
            .sum_all()?;
        let stats = Tensor::stack(&[(loss.detach() * b.len() as f64)?, correct], 0)?;
        part.opt.backward_step(&loss)?;
        Ok(stats)
    }
}
