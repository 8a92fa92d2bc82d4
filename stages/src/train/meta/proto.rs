//! Prototypes, similarities and test-time prediction.
//!
//! Test time (paper Sec. 3.4-3.5 open point): by default the prototype of class c is the mean embedding of
//! ALL samples of class c in the prototype pool (the fold's training subjects), computed in eval
//! mode. `PrototypeMode::Draws` instead averages the class means of several seeded K-shot draws.
//! A class with no sample in the pool has no prototype and gets probability 0.
use crate::train::data::SampleSet;
use crate::train::meta::model::{Distance, MetaModel};
use crate::train::rng::{rng_for, STREAM_PREDICT};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, D};
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PrototypeMode {
    All,
    Draws { draws: usize, k_shot: usize },
}

/// Similarity of each query row to each prototype row: [Q, N].
pub fn similarity(q: &Tensor, protos: &Tensor, dist: Distance) -> candle_core::Result<Tensor> {
    match dist {
        Distance::Cosine => {
            let qn = q.broadcast_div(&(q.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?)?;
            let pn = protos.broadcast_div(&(protos.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?)?;
            qn.matmul(&pn.t()?)
        }
        Distance::Euclidean => {
            let q2 = q.sqr()?.sum_keepdim(1)?;
            let p2 = protos.sqr()?.sum_keepdim(1)?.t()?;
            let g = q.matmul(&protos.t()?)?;
            (q2.broadcast_add(&p2)? - (g * 2.0)?)?.neg()
        }
    }
}

/// Weighted sum of per-branch similarities, times `scale`: the logits [Q, N].
pub fn logits(
    q: &[(Tensor, f64)],
    protos: &[Tensor],
    dist: Distance,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for ((qb, w), pb) in q.iter().zip(protos) {
        let s = (similarity(qb, pb, dist)? * *w)?;
        acc = Some(match acc {
            Some(a) => (a + s)?,
            None => s,
        });
    }
    acc.ok_or_else(|| candle_core::Error::Msg("logits: no branch".into()))? * scale
}

/// Mean of consecutive row groups of `e` with sizes `counts`: [counts.len(), D].
pub fn group_means(e: &Tensor, counts: &[usize]) -> candle_core::Result<Tensor> {
    let mut rows = Vec::with_capacity(counts.len());
    let mut start = 0;
    for &n in counts {
        rows.push(e.narrow(0, start, n)?.mean(0)?);
        start += n;
    }
    Tensor::stack(&rows, 0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// indices into the sample set
    pub indices: Vec<usize>,
    pub ids: Vec<String>,
    pub y_true: Vec<usize>,
    pub y_pred: Vec<usize>,
    /// per sample, softmax probabilities over all classes
    pub probs: Vec<Vec<f32>>,
    /// per sample, the branch embeddings concatenated
    pub embeddings: Vec<Vec<f32>>,
}

impl Prediction {
    pub fn accuracy(&self) -> f64 {
        let ok = self
            .y_true
            .iter()
            .zip(&self.y_pred)
            .filter(|(a, b)| a == b)
            .count();
        ok as f64 / self.y_true.len().max(1) as f64
    }
}

/// Eval-mode branch embeddings of `idx`, computed in chunks of `chunk`, detached.
pub fn embed_pool(
    model: &MetaModel,
    set: &SampleSet,
    idx: &[usize],
    chunk: usize,
    dev: &Device,
) -> Result<Vec<Tensor>> {
    let mut parts: Vec<Vec<Tensor>> = Vec::new();
    for c in idx.chunks(chunk.max(1)) {
        let e = model.embed(&set.batch(c, dev)?, false)?;
        if parts.is_empty() {
            parts = vec![Vec::new(); e.len()];
        }
        for (p, (t, _)) in parts.iter_mut().zip(e) {
            p.push(t.detach());
        }
    }
    Ok(parts
        .iter()
        .map(|p| Tensor::cat(p, 0))
        .collect::<candle_core::Result<_>>()?)
}

/// Classes present in `pool` and, per branch, their prototypes [n_present, D].
fn prototypes(
    set: &SampleSet,
    pool: &[usize],
    emb: &[Tensor],
    mode: PrototypeMode,
    seed: u64,
) -> Result<(Vec<usize>, Vec<Tensor>)> {
    let mut pos: Vec<Vec<usize>> = vec![Vec::new(); set.n_classes];
    for (row, &i) in pool.iter().enumerate() {
        pos[set.labels[i]].push(row);
    }
    let classes: Vec<usize> = (0..set.n_classes).filter(|&c| !pos[c].is_empty()).collect();
    if classes.len() < 2 {
        bail!(
            "prototypes: the pool holds {} class(es), need 2",
            classes.len()
        );
    }
    let dev = emb[0].device();
    let mut out = Vec::new();
    for e in emb {
        let mut rows = Vec::new();
        for &c in &classes {
            rows.push(match mode {
                PrototypeMode::All => e.index_select(&idx_tensor(&pos[c], dev)?, 0)?.mean(0)?,
                PrototypeMode::Draws { draws, k_shot } => {
                    let mut rng = rng_for(seed, &[STREAM_PREDICT, c as u64]);
                    let mut means = Vec::new();
                    for _ in 0..draws.max(1) {
                        let pick: Vec<usize> = pos[c]
                            .choose_multiple(&mut rng, k_shot.max(1))
                            .copied()
                            .collect();
                        means.push(e.index_select(&idx_tensor(&pick, dev)?, 0)?.mean(0)?);
                    }
                    Tensor::stack(&means, 0)?.mean(0)?
                }
            });
        }
        out.push(Tensor::stack(&rows, 0)?);
    }
    Ok((classes, out))
}

fn idx_tensor(v: &[usize], dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::new(v.iter().map(|&i| i as u32).collect::<Vec<_>>(), dev)
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PredictConfig {
    pub distance: Distance,
    pub scale: f64,
    pub prototypes: PrototypeMode,
    /// samples per forward pass
    pub chunk: usize,
}

/// Classifies `query` against prototypes from `proto_pool` (never overlapping it).
pub fn predict(
    model: &MetaModel,
    set: &SampleSet,
    proto_pool: &[usize],
    query: &[usize],
    cfg: &PredictConfig,
    seed: u64,
    dev: &Device,
) -> Result<Prediction> {
    if let Some(i) = query.iter().find(|i| proto_pool.contains(i)) {
        bail!(
            "predict: sample {} is both a prototype and a query",
            set.ids[*i]
        );
    }
    let (classes, protos) = class_prototypes(model, set, proto_pool, cfg, seed, dev)?;
    let qe = embed_pool(model, set, query, cfg.chunk, dev)?;
    let full = class_probs(model, &qe, &classes, &protos, cfg, set.n_classes)?;
    let y_pred = full.iter().map(|p| argmax(p)).collect();
    let embeddings = Tensor::cat(&qe, 1)?.to_vec2::<f32>()?;
    Ok(Prediction {
        indices: query.to_vec(),
        ids: query.iter().map(|&i| set.ids[i].clone()).collect(),
        y_true: set.labels_of(query),
        y_pred,
        probs: full,
        embeddings,
    })
}

/// The classes present in `pool` and, per branch, their prototypes (see [`PrototypeMode`]).
pub fn class_prototypes(
    model: &MetaModel,
    set: &SampleSet,
    pool: &[usize],
    cfg: &PredictConfig,
    seed: u64,
    dev: &Device,
) -> Result<(Vec<usize>, Vec<Tensor>)> {
    let pe = embed_pool(model, set, pool, cfg.chunk, dev)?;
    prototypes(set, pool, &pe, cfg.prototypes, seed)
}

/// Softmax over the prototypes' classes of per-branch query embeddings, spread over all
/// `n_classes` (a class without prototype gets 0): one row per query.
pub fn class_probs(
    model: &MetaModel,
    query: &[Tensor],
    classes: &[usize],
    protos: &[Tensor],
    cfg: &PredictConfig,
    n_classes: usize,
) -> Result<Vec<Vec<f32>>> {
    let q: Vec<(Tensor, f64)> = query.iter().cloned().zip(model.embed_weights()).collect();
    let probs = candle_nn::ops::softmax(&logits(&q, protos, cfg.distance, cfg.scale)?, D::Minus1)?
        .to_vec2::<f32>()?;
    Ok(probs
        .iter()
        .map(|p| {
            let mut f = vec![0f32; n_classes];
            classes.iter().zip(p).for_each(|(&c, &v)| f[c] = v);
            f
        })
        .collect())
}

pub fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}
