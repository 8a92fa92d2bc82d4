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

use crate::train::ckpt::{section_sorted, Checkpointer, StateWriter};
use crate::train::data::SampleSet;
use crate::train::init::{restore, snapshot};
use crate::train::progress::{EpochLog, Progress, TrainLog};
use crate::train::rng::{rng_for, STREAM_META};
use crate::train::sgd::{GradAccum, SgdConfig, SgdMomentum};
use crate::train::state;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, D};
use episode::{sample_episode, Episode};
use model::{Distance, EncoderMode, MetaModel};
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
    /// the pretrained encoders: frozen, or fine-tuned (see [`EncoderMode`])
    pub encoders: EncoderMode,
    /// fine-tuned encoders' learning rate as a multiple of `lr`
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
            encoders: EncoderMode::Finetune,
            encoder_lr: 1.0,
            eval_every: 25,
            checkpoint_every: 50,
            eval_batch: 16,
            prototypes: PrototypeMode::All,
        }
    }
}

impl MetaConfig {
    pub fn predict_config(&self) -> PredictConfig {
        PredictConfig {
            distance: self.distance,
            scale: self.scale,
            prototypes: self.prototypes,
            chunk: self.eval_batch,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct MetaState {
    log: TrainLog,
}

/// Loss and query accuracy of one episode (support and queries embedded in one pass).
pub fn episode_loss(
    model: &MetaModel,
    set: &SampleSet,
    ep: &Episode,
    cfg: &MetaConfig,
    dev: &Device,
) -> Result<(Tensor, f64)> {
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
    let pred = lg.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let acc = pred.iter().zip(&qy).filter(|(a, b)| a == b).count() as f64 / qy.len().max(1) as f64;
    Ok((loss, acc))
}

/// One optimisation step over `episodes_per_step` episodes; returns mean loss and accuracy.
#[allow(clippy::too_many_arguments)]
fn meta_step(
    model: &MetaModel,
    opt: &mut SgdMomentum,
    set: &SampleSet,
    by_class: &[Vec<usize>],
    step: usize,
    cfg: &MetaConfig,
    seed: u64,
    dev: &Device,
) -> Result<(f64, f64)> {
    let n = cfg.episodes_per_step.max(1);
    let vars = opt.vars();
    let mut acc_g = GradAccum::default();
    let (mut loss_sum, mut acc_sum) = (0.0, 0.0);
    for e in 0..n {
        let mut rng = rng_for(seed, &[STREAM_META, step as u64, e as u64]);
        let ep = sample_episode(by_class, cfg.n_way, cfg.k_shot, cfg.n_query, &mut rng)?;
        let (loss, acc) =
            episode_loss(model, set, &ep, cfg, dev).with_context(|| format!("episode {e}"))?;
        let l = loss.to_scalar::<f32>()? as f64;
        if !l.is_finite() {
            bail!("episode loss is {l} (diverged)");
        }
        if !vars.is_empty() {
            acc_g.add(&(loss / n as f64)?.backward()?, vars)?;
        }
        (loss_sum, acc_sum) = (loss_sum + l, acc_sum + acc);
    }
    opt.step_with(|v| acc_g.get(v))?;
    Ok((loss_sum / n as f64, acc_sum / n as f64))
}

/// Validation accuracy, or None without validation samples.
fn validate(
    model: &MetaModel,
    set: &SampleSet,
    train_pool: &[usize],
    val_pool: &[usize],
    cfg: &MetaConfig,
    seed: u64,
    dev: &Device,
) -> Result<Option<f64>> {
    if val_pool.is_empty() {
        return Ok(None);
    }
    recalibrate(model, set, train_pool, cfg, dev)?;
    let p = predict(
        model,
        set,
        train_pool,
        val_pool,
        &cfg.predict_config(),
        seed,
        dev,
    )
    .context("validation")?;
    Ok(Some(p.accuracy()))
}

/// Precise BN on the training pool, unless the encoders are frozen (their statistics stay).
fn recalibrate(
    model: &MetaModel,
    set: &SampleSet,
    pool: &[usize],
    cfg: &MetaConfig,
    dev: &Device,
) -> Result<()> {
    if cfg.encoders == EncoderMode::Frozen {
        return Ok(());
    }
    crate::train::recalibrate(set, pool, cfg.eval_batch, dev, |x| {
        Ok(model.embed(x, true)?.remove(0).0)
    })
}

type Snapshot = Vec<(String, Vec<(String, Tensor)>)>;

fn take_snapshot(model: &MetaModel) -> Result<Snapshot> {
    model
        .maps()
        .into_iter()
        .map(|(t, m)| Ok((t.to_string(), snapshot(m)?)))
        .collect()
}

fn write_state(model: &MetaModel, opt: &SgdMomentum, best: &Snapshot) -> Result<StateWriter> {
    let mut w = StateWriter::default();
    for (tag, map) in model.maps() {
        w.vars(tag, map)?;
    }
    w.momentum("opt", opt);
    for (tag, vals) in best {
        w.values(&format!("best_{tag}"), vals);
    }
    Ok(w)
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

/// Meta-trains `model` in place; on return it holds the selected (best validation) state.
#[allow(clippy::too_many_arguments)]
pub fn train_meta(
    model: &MetaModel,
    set: &SampleSet,
    train_pool: &[usize],
    val_pool: &[usize],
    cfg: &MetaConfig,
    seed: u64,
    dev: &Device,
    progress: &mut dyn FnMut(Progress),
    ckpt: &mut dyn Checkpointer,
) -> Result<TrainLog> {
    check_pools(set, train_pool, val_pool)?;
    let by_class = set.by_class(train_pool);
    let sgd = SgdConfig {
        lr: cfg.lr,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
    };
    let groups = model.param_groups(cfg.encoders, cfg.encoder_lr)?;
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
    model.set_frozen_bn(cfg.encoders == EncoderMode::Frozen);
    let mut log = TrainLog::default();
    let mut best: Snapshot = Vec::new();
    let mut start = 0;
    if let Some((e, st, t)) = state::load::<MetaState>(ckpt, dev)? {
        for (tag, map) in model.maps() {
            crate::train::ckpt::restore_vars(&t, tag, map)
                .with_context(|| format!("resuming at step {e}"))?;
            let b = section_sorted(&t, &format!("best_{tag}"), "var");
            if !b.is_empty() {
                best.push((tag.to_string(), b));
            }
        }
        opt.load_buffers(&crate::train::ckpt::section(&t, "opt", "mom"))?;
        (start, log) = (e, st.log);
        // logged, not stored: a resumed node's artifact must equal an uninterrupted run's
        tracing::info!("meta: resuming from the checkpoint at step {e}");
    } else if let Some(a) = validate(model, set, train_pool, val_pool, cfg, seed, dev)? {
        (log.best_step, log.best_val_acc, best) = (Some(0), Some(a), take_snapshot(model)?);
    }
    for step in start..cfg.steps {
        let (loss, acc) = meta_step(model, &mut opt, set, &by_class, step, cfg, seed, dev)
            .with_context(|| format!("meta step {step}"))?;
        let done = step + 1;
        let val = if state::due(cfg.eval_every, done, cfg.steps) {
            validate(model, set, train_pool, val_pool, cfg, seed, dev)?
        } else {
            None
        };
        if let Some(a) = val {
            if log.best_val_acc.is_none_or(|b| a > b) {
                (log.best_step, log.best_val_acc, best) =
                    (Some(done), Some(a), take_snapshot(model)?);
            }
        }
        log.push(
            EpochLog {
                epoch: step,
                loss,
                acc: Some(acc),
                lr: cfg.lr,
                val_acc: val,
            },
            progress,
            cfg.steps,
        );
        if state::due(cfg.checkpoint_every, done, cfg.steps) {
            state::save(
                ckpt,
                done,
                &write_state(model, &opt, &best)?,
                &MetaState { log: log.clone() },
            )?;
        }
    }
    if best.is_empty() {
        // no validation subjects: the last state, with recalibrated statistics
        recalibrate(model, set, train_pool, cfg, dev)?;
    }
    for (tag, vals) in &best {
        if let Some((_, map)) = model.maps().into_iter().find(|(t, _)| t == tag) {
            restore(map, vals).with_context(|| format!("restoring the best {tag} state"))?;
        }
    }
    model.set_frozen_bn(false);
    Ok(log)
}
