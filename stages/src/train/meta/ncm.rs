//! The nearest-class-mean baseline on the networks' own input, so that a benchmark can put
//! every variant beside a trivial classifier on the same folds and the same pre-processed data.
//!
//! Descriptor of a sample [C, T, H, W]: per channel, |x| summed over T and averaged over the
//! cells of a `grid` x `grid` partition of H x W, concatenated and L2-normalised. Class means
//! come from the prototype pool (the fold's training subjects); each query goes to the class
//! whose mean is nearest (Euclidean). No parameter is learned and nothing is random.
use crate::train::data::SampleSet;
use crate::train::meta::proto::Prediction;
use anyhow::{bail, Result};

/// The descriptor of sample `i` of `set`.
pub fn descriptor(set: &SampleSet, i: usize, grid: usize) -> Vec<f32> {
    let [c, t, h, w] = set.shape;
    let g = grid.clamp(1, h.min(w));
    let x = &set.data[i * set.sample_len()..(i + 1) * set.sample_len()];
    let mut d = vec![0f32; c * g * g];
    let mut n = vec![0f32; c * g * g];
    for ci in 0..c {
        for ti in 0..t {
            let base = (ci * t + ti) * h * w;
            for y in 0..h {
                for xx in 0..w {
                    let k = ci * g * g + (y * g / h) * g + xx * g / w;
                    d[k] += x[base + y * w + xx].abs();
                    if ti == 0 {
                        n[k] += 1.0;
                    }
                }
            }
        }
    }
    d.iter_mut().zip(&n).for_each(|(v, c)| *v /= c.max(1.0));
    let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    d.iter_mut().for_each(|v| *v /= norm);
    d
}

/// Classifies `query` by the nearest class mean of `proto_pool`'s descriptors.
pub fn predict_ncm(
    set: &SampleSet,
    proto_pool: &[usize],
    query: &[usize],
    grid: usize,
) -> Result<Prediction> {
    if let Some(i) = query.iter().find(|i| proto_pool.contains(i)) {
        bail!(
            "ncm: sample {} is both a prototype and a query",
            set.ids[*i]
        );
    }
    let k = set.n_classes;
    let mut means: Vec<Option<Vec<f32>>> = vec![None; k];
    let mut counts = vec![0usize; k];
    for &i in proto_pool {
        let d = descriptor(set, i, grid);
        let m = means[set.labels[i]].get_or_insert_with(|| vec![0.0; d.len()]);
        m.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        counts[set.labels[i]] += 1;
    }
    for (m, c) in means.iter_mut().zip(&counts) {
        if let Some(m) = m {
            m.iter_mut().for_each(|v| *v /= *c as f32);
        }
    }
    let (mut y_pred, mut probs, mut embeddings) = (Vec::new(), Vec::new(), Vec::new());
    for &q in query {
        let d = descriptor(set, q, grid);
        let dist: Vec<Option<f32>> = means
            .iter()
            .map(|m| {
                m.as_ref()
                    .map(|m| m.iter().zip(&d).map(|(a, b)| (a - b).powi(2)).sum())
            })
            .collect();
        let best = (0..k)
            .filter(|&c| dist[c].is_some())
            .min_by(|&a, &b| dist[a].unwrap().total_cmp(&dist[b].unwrap()))
            .unwrap_or(0);
        // softmax of -distance (for the report's probabilities only)
        let z: Vec<f32> = dist.iter().map(|v| v.map_or(0.0, |v| (-v).exp())).collect();
        let s: f32 = z.iter().sum::<f32>().max(1e-12);
        probs.push(z.iter().map(|v| v / s).collect());
        y_pred.push(best);
        embeddings.push(d);
    }
    Ok(Prediction {
        indices: query.to_vec(),
        ids: query.iter().map(|&i| set.ids[i].clone()).collect(),
        y_true: set.labels_of(query),
        y_pred,
        probs,
        embeddings,
    })
}
