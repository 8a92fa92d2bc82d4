//! Multi-prior fusion meta-learning (paper Sec. 3.4-3.5): prototypical episodes, MPFNet-P and MPFNet-C.
//!
//! Pools: `train_pool` (episodes and validation prototypes) and `val_pool` (validation subjects of
//! the fold) are index lists into one `SampleSet`; the test subject must be in neither. Every
//! `eval_every` steps (and before the first step) the model classifies `val_pool` against
//! prototypes from `train_pool`; the state with the best validation accuracy is kept (first best
//! wins ties) and restored at the end. With an empty `val_pool` the final state is kept.
//! Each step averages the loss of `episodes_per_step` episodes; gradients are accumulated episode by
//! episode so only one episode's graph is alive at a time. Logits are `scale * similarity`.
pub mod episode;
pub mod model;
pub mod ncm;
pub mod proto;

use std::collections::HashMap;

use crate::train::ckpt::{section_sorted, StateWriter};
use crate::train::data::SampleSet;
use crate::train::driver::{self, Rounds, TrainCtx};
use crate::train::host::{DeviceSums, PendingLog};
use crate::train::init::{restore, snapshot};
use crate::train::progress::TrainLog;
use crate::train::rng::{rng_for, STREAM_META};
use crate::train::sgd::{GradAccum, SgdConfig, SgdMomentum};
use crate::train::state;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, D};
use episode::{sample_episode, Episode};
use model::{Distance, EncoderMode, MetaModel, Variant};
use proto::{group_means, logits, predict, PredictConfig, PrototypeMode};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetaConfig {
    /// optimisation steps (not given by the paper)
    pub steps: usize,
    pub episodes_per_step: usize,
    /// None: all classes (3-way for 3 classes, 5-way for 5)
    pub n_way: Option<usize>,
    pub k_shot: usize,
    /// queries per class (0: all remaining samples of the class)
    pub n_query: usize,
    pub lr: f64,
    pub momentum: f64,
    /// not given by the paper for this stage; the value of the other stages
    pub weight_decay: f64,
    /// logits = scale * similarity (temperature 1/scale)
    pub scale: f64,
    pub distance: Distance,
    /// the pretrained encoders: frozen, or fine-tuned (see [`EncoderMode`]); None: per variant
    /// as measured (README, "Choices where the paper is open"): MPFNet-C fine-tuned, MPFNet-P
    /// and the single-prior variants frozen
    pub encoders: Option<EncoderMode>,
    /// fine-tuned encoders' learning rate as a multiple of `lr` (0.1: the measured choice)
    pub encoder_lr: f64,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    /// samples per forward pass when embedding pools
    pub eval_batch: usize,
    /// prototypes for validation and test
    pub prototypes: PrototypeMode,
}

impl Default for MetaConfig {
    fn default() -> Self {
        Self {
            steps: 500,
            episodes_per_step: 4,
            n_way: None,
            k_shot: 5,
            n_query: 5,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            scale: 10.0,
            distance: Distance::Cosine,
            encoders: None,
            encoder_lr: 0.1,
            eval_every: 25,
            checkpoint_every: 50,
            eval_batch: 16,
            prototypes: PrototypeMode::All,
        }
    }
}

impl MetaConfig {
    /// What meta-learning does to the pretrained encoders of `variant`.
    pub fn encoder_mode(&self, variant: Variant) -> EncoderMode {
        self.encoders.unwrap_or(match variant {
            Variant::C { .. } => EncoderMode::Finetune,
            Variant::P { .. } | Variant::Single => EncoderMode::Frozen,
        })
    }
    pub fn predict_config(&self) -> PredictConfig {
        PredictConfig {
            distance: self.distance,
            scale: self.scale,
            prototypes: self.prototypes,
            chunk: self.eval_batch,
        }
    }
}

/// Loss and query accuracy of one episode (support and queries embedded in one pass), as
/// scalars on the device.
pub fn episode_loss(
    model: &MetaModel,
    set: &SampleSet,
    ep: &Episode,
    cfg: &MetaConfig,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let (s, q, qy) = ep.flat();
    let all: Vec<usize> = s.iter().chain(&q).copied().collect();
    let emb = model.embed(&set.batch(&all, dev)?, true)?;
    let counts: Vec<usize> = ep.support.iter().map(|v| v.len()).collect();
    let mut protos = Vec::new();
    let mut queries = Vec::new();
    for (e, w) in emb {
        protos.push(group_means(&e.narrow(0, 0, s.len())?, &counts)?);
        queries.push((e.narrow(0, s.len(), q.len())?, w));
    }
    let lg = logits(&queries, &protos, cfg.distance, cfg.scale)?;
    let y = Tensor::new(qy.clone(), dev)?;
    let loss = candle_nn::loss::cross_entropy(&lg, &y)?;
    // on the device: the step reads nothing back
    let acc = lg
        .argmax(D::Minus1)?
        .eq(&y)?
        .to_dtype(loss.dtype())?
        .mean_all()?;
    Ok((loss, acc))
}

type Snapshot = Vec<(String, Vec<(String, Tensor)>)>;

fn take_snapshot(model: &MetaModel) -> Result<Snapshot> {
    model
        .maps()
        .into_iter()
        .map(|(t, m)| Ok((t.to_string(), snapshot(m)?)))
        .collect()
}

fn check_pools(set: &SampleSet, train_pool: &[usize], val_pool: &[usize]) -> Result<()> {
    if let Some(i) = val_pool.iter().find(|i| train_pool.contains(i)) {
        bail!(
            "meta: sample {} is in both the training and the validation pool",
            set.ids[*i]
        );
    }
    if let Some(i) = train_pool.iter().chain(val_pool).find(|&&i| i >= set.len()) {
        bail!(
            "meta: pool index {i} outside the set of {} samples",
            set.len()
        );
    }
    Ok(())
}

/// The samples meta-learning sees: episodes and validation prototypes from `train`, validation
/// queries from `val` (index lists into `set`; the test subject in neither).
#[derive(Clone, Copy)]
pub struct Pools<'a> {
    pub set: &'a SampleSet,
    pub train: &'a [usize],
    pub val: &'a [usize],
}

/// Meta-trains `model` in place; on return it holds the selected (best validation) state.
pub fn train_meta(
    model: &MetaModel,
    pools: Pools,
    cfg: &MetaConfig,
    cx: &mut TrainCtx,
) -> Result<TrainLog> {
    check_pools(pools.set, pools.train, pools.val)?;
    let sgd = SgdConfig::new(cfg.lr, cfg.momentum, cfg.weight_decay);
    let mode = cfg.encoder_mode(model.variant);
    let groups = model.param_groups(mode, cfg.encoder_lr)?;
    let mut opt = SgdMomentum::new(
        groups
            .iter()
            .map(|(n, v, _)| (n.clone(), v.clone()))
            .collect(),
        sgd,
    )?;
    for (n, _, scale) in groups {
        if let Some(t) = scale {
            opt.set_lr_scale(&n, t)?;
        }
    }
    model.set_frozen_bn(mode == EncoderMode::Frozen);
    let mut rounds = MetaRounds {
        model,
        opt,
        pools,
        by_class: pools.set.by_class(pools.train),
        best: Vec::new(),
        frozen: mode == EncoderMode::Frozen,
        cfg,
        seed: cx.seed,
        dev: cx.dev,
    };
    let log = driver::run(&mut rounds, cx)?;
    if rounds.best.is_empty() {
        // no validation subjects: the last state, with recalibrated statistics
        rounds.recalibrate()?;
    }
    for (tag, vals) in &rounds.best {
        if let Some((_, map)) = model.maps().into_iter().find(|(t, _)| t == tag) {
            restore(map, vals).with_context(|| format!("restoring the best {tag} state"))?;
        }
    }
    model.set_frozen_bn(false);
    Ok(log)
}

/// Meta-learning steps, keeping the state of the best validation accuracy.
struct MetaRounds<'a> {
    model: &'a MetaModel,
    opt: SgdMomentum,
    pools: Pools<'a>,
    by_class: Vec<Vec<usize>>,
    /// the kept state (best validation accuracy so far)
    best: Snapshot,
    /// the encoders stay as pretrained (BatchNorm statistics included)
    frozen: bool,
    cfg: &'a MetaConfig,
    seed: u64,
    dev: &'a Device,
}

impl Rounds for MetaRounds<'_> {
    const NAME: &'static str = "meta";
    const UNIT: &'static str = "step";
    // a step is a few episodes: reading its loss each time would stall the GPU once a step
    const READ_EVERY: usize = 25;
    fn schedule(&self) -> (usize, usize) {
        (self.cfg.steps, self.cfg.checkpoint_every)
    }
    fn start(&mut self, log: &mut TrainLog) -> Result<()> {
        if let Some(a) = self.validate()? {
            (log.best_step, log.best_val_acc, self.best) =
                (Some(0), Some(a), take_snapshot(self.model)?);
        }
        Ok(())
    }
    fn round(&mut self, step: usize, log: &mut TrainLog) -> Result<PendingLog> {
        let mut entry = self
            .step(step)
            .with_context(|| format!("meta step {step}"))?;
        let done = step + 1;
        entry.val_acc = if state::due(self.cfg.eval_every, done, self.cfg.steps) {
            self.validate()?
        } else {
            None
        };
        if let Some(a) = entry.val_acc {
            if log.best_val_acc.is_none_or(|b| a > b) {
                (log.best_step, log.best_val_acc, self.best) =
                    (Some(done), Some(a), take_snapshot(self.model)?);
            }
        }
        Ok(entry)
    }
    fn save(&self, w: &mut StateWriter) -> Result<()> {
        for (tag, map) in self.model.maps() {
            w.vars(tag, map)?;
        }
        w.momentum("opt", &self.opt);
        for (tag, vals) in &self.best {
            w.values(&format!("best_{tag}"), vals);
        }
        Ok(())
    }
    fn restore(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        for (tag, map) in self.model.maps() {
            crate::train::ckpt::restore_vars(t, tag, map)?;
            let b = section_sorted(t, &format!("best_{tag}"), "var");
            if !b.is_empty() {
                self.best.push((tag.to_string(), b));
            }
        }
        self.opt
            .load_buffers(&crate::train::ckpt::section(t, "opt", "mom"))?;
        Ok(())
    }
}

impl MetaRounds<'_> {
    /// One optimisation step over `episodes_per_step` episodes; its log holds the summed loss
    /// and accuracy, still on the device.
    fn step(&mut self, step: usize) -> Result<PendingLog> {
        let cfg = self.cfg;
        let n = cfg.episodes_per_step.max(1);
        let vars = self.opt.vars();
        let mut acc_g = GradAccum::default();
        let mut sums = DeviceSums::default();
        for e in 0..n {
            let mut rng = rng_for(self.seed, &[STREAM_META, step as u64, e as u64]);
            let ep = sample_episode(&self.by_class, cfg.n_way, cfg.k_shot, cfg.n_query, &mut rng)?;
            let (loss, acc) = episode_loss(self.model, self.pools.set, &ep, cfg, self.dev)
                .with_context(|| format!("episode {e}"))?;
            if !vars.is_empty() {
                acc_g.add(&(&loss / n as f64)?.backward()?, vars)?;
            }
            sums.add(Tensor::stack(&[loss, acc], 0)?)?;
        }
        self.opt.step_with(|v| acc_g.get(v))?;
        Ok(sums.pending(step, n, cfg.lr))
    }

    /// Validation accuracy, or None without validation samples.
    fn validate(&self) -> Result<Option<f64>> {
        let Pools { set, train, val } = self.pools;
        if val.is_empty() {
            return Ok(None);
        }
        self.recalibrate()?;
        let p = predict(
            self.model,
            set,
            train,
            val,
            &self.cfg.predict_config(),
            self.seed,
            self.dev,
        )
        .context("validation")?;
        Ok(Some(p.accuracy()))
    }

    /// Precise BN on the training pool, unless the encoders are frozen (their statistics stay).
    fn recalibrate(&self) -> Result<()> {
        if self.frozen {
            return Ok(());
        }
        let model = self.model;
        crate::train::recalibrate(
            &model.encoders(),
            (self.pools.set, self.pools.train),
            self.cfg.eval_batch,
            self.dev,
            |x| Ok(model.embed(x, true)?.remove(0).0),
        )
    }
}
