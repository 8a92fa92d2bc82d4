//! AFE prior learning on the sample-balanced, motion-amplified set (paper Sec. 3.3.3). The paper does not
//! state the objective; this is the natural reading: a Linear(D -> n_classes) head on the
//! embedding, cross-entropy, SGD with a step schedule lr * gamma^(epoch / lr_step).
//! The head's variables live in the same VarMap under `HEAD_PREFIX`; the meta stage ignores them.
use crate::train::ckpt::{Checkpointer, StateWriter};
use crate::train::data::{shuffled_batches, SampleSet};
use crate::train::encoder::{Encoder, EncoderFactory};
use crate::train::init::{sorted_vars, var_builder};
use crate::train::progress::{EpochLog, Progress, TrainLog};
use crate::train::rng::{rng_for, sub_seed, STREAM_AFE};
use crate::train::sgd::{SgdConfig, SgdMomentum};
use crate::train::state;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, D};
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

#[derive(Serialize, Deserialize)]
struct AfeState {
    log: TrainLog,
}

/// Trains encoder + head in `varmap` on the (amplified, balanced) `set`.
#[allow(clippy::too_many_arguments)]
pub fn train_afe(
    factory: &EncoderFactory,
    varmap: &VarMap,
    set: &SampleSet,
    cfg: &AfeConfig,
    seed: u64,
    dev: &Device,
    progress: &mut dyn FnMut(Progress),
    ckpt: &mut dyn Checkpointer,
) -> Result<TrainLog> {
    if set.is_empty() {
        bail!("train_afe: empty training set");
    }
    let model = Classifier::new(
        factory,
        varmap,
        set.n_classes,
        set.shape,
        sub_seed(seed, STREAM_AFE),
        dev,
    )?;
    let sgd = SgdConfig {
        lr: cfg.lr,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
    };
    let mut opt = SgdMomentum::new(sorted_vars(varmap), sgd)?;
    let mut log = TrainLog::default();
    let mut start = 0;
    if let Some((e, st, t)) = state::load::<AfeState>(ckpt, dev)? {
        state::read_part(&t, "afe", varmap, &mut opt)
            .with_context(|| format!("resuming at {e}"))?;
        (start, log) = (e, st.log);
        // logged, not stored: a resumed node's artifact must equal an uninterrupted run's
        tracing::info!("AFE: resuming from the checkpoint at epoch {e}");
    }
    let pool = set.all_indices();
    for epoch in start..cfg.epochs {
        opt.set_lr(cfg.lr_at(epoch));
        let mut rng = rng_for(seed, &[STREAM_AFE, epoch as u64]);
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        for (bi, b) in shuffled_batches(&pool, cfg.batch, &mut rng)
            .iter()
            .enumerate()
        {
            let (l, c) = afe_step(&model, &mut opt, set, b, dev)
                .with_context(|| format!("AFE epoch {epoch} batch {bi}"))?;
            (loss_sum, correct, seen) =
                (loss_sum + l * b.len() as f64, correct + c, seen + b.len());
        }
        let entry = EpochLog {
            epoch,
            loss: loss_sum / seen as f64,
            acc: Some(correct as f64 / seen as f64),
            lr: opt.lr(),
            val_acc: None,
        };
        log.push(entry, progress, cfg.epochs);
        if state::due(cfg.checkpoint_every, epoch + 1, cfg.epochs) {
            let mut w = StateWriter::default();
            state::write_part(&mut w, "afe", varmap, &opt)?;
            state::save(ckpt, epoch + 1, &w, &AfeState { log: log.clone() })?;
        }
    }
    crate::train::recalibrate(set, &pool, cfg.batch, dev, |x| model.logits(x, true))?;
    Ok(log)
}

/// One step; returns the mean loss and the number of correct predictions in the batch.
fn afe_step(
    model: &Classifier,
    opt: &mut SgdMomentum,
    set: &SampleSet,
    b: &[usize],
    dev: &Device,
) -> Result<(f64, usize)> {
    let logits = model.logits(&set.batch(b, dev)?, true)?;
    let y = set.labels_tensor(b, dev)?;
    let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
    let l = loss.to_scalar::<f32>()? as f64;
    if !l.is_finite() {
        bail!("cross-entropy is {l} (diverged)");
    }
    let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let correct = pred
        .iter()
        .zip(set.labels_of(b))
        .filter(|(p, l)| **p as usize == *l)
        .count();
    opt.backward_step(&loss)?;
    Ok((l, correct))
}
