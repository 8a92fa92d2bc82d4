//! A cheap LOSO baseline to show that a dataset is learnable: nearest class mean of the
//! onset->apex absolute grey difference pooled on an 8x8 grid (L2-normalised).

use crate::data::DatasetIndex;
use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const GRID: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineReport {
    pub samples: usize,
    pub accuracy: f64,
    /// Unweighted average recall (mean over classes of per-class accuracy).
    pub uar: f64,
    /// Accuracy of always predicting the most frequent class.
    pub majority: f64,
    /// Rows: true class; columns: predicted class.
    pub confusion: Vec<Vec<usize>>,
}

fn grey(path: &Path) -> Result<image::GrayImage> {
    Ok(image::open(path)
        .with_context(|| format!("reading {}", path.display()))?
        .into_luma8())
}

/// The 64-d descriptor of one sample.
pub fn descriptor(onset: &Path, apex: &Path) -> Result<Vec<f32>> {
    let (a, b) = (grey(onset)?, grey(apex)?);
    anyhow::ensure!(
        a.dimensions() == b.dimensions(),
        "{} and {} differ in size",
        onset.display(),
        apex.display()
    );
    let (w, h) = (a.width() as usize, a.height() as usize);
    let mut d = vec![0f32; GRID * GRID];
    let mut n = vec![0f32; GRID * GRID];
    for y in 0..h {
        for x in 0..w {
            let k = (y * GRID / h) * GRID + x * GRID / w;
            d[k] += (a.as_raw()[y * w + x] as f32 - b.as_raw()[y * w + x] as f32).abs();
            n[k] += 1.0;
        }
    }
    for (v, c) in d.iter_mut().zip(&n) {
        *v /= c.max(1.0);
    }
    let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
    d.iter_mut().for_each(|v| *v /= norm);
    Ok(d)
}

/// LOSO nearest-class-mean on [`descriptor`]s.
pub fn baseline_report(index: &DatasetIndex) -> Result<BaselineReport> {
    let descs: Vec<Vec<f32>> = index
        .samples
        .par_iter()
        .map(|s| descriptor(&s.onset_path, &s.apex_path))
        .collect::<Result<_>>()?;
    let k = index.classes.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for subj in index.subjects() {
        let mut means = vec![vec![0f32; GRID * GRID]; k];
        let mut counts = vec![0usize; k];
        for (s, d) in index.samples.iter().zip(&descs) {
            if s.subject != subj {
                counts[s.class] += 1;
                means[s.class].iter_mut().zip(d).for_each(|(m, v)| *m += v);
            }
        }
        for (m, c) in means.iter_mut().zip(&counts) {
            m.iter_mut().for_each(|v| *v /= (*c).max(1) as f32);
        }
        for (s, d) in index.samples.iter().zip(&descs) {
            if s.subject != subj {
                continue;
            }
            let pred = (0..k)
                .filter(|&c| counts[c] > 0)
                .min_by(|&a, &b| {
                    let da: f32 = means[a].iter().zip(d).map(|(m, v)| (m - v).powi(2)).sum();
                    let db: f32 = means[b].iter().zip(d).map(|(m, v)| (m - v).powi(2)).sum();
                    da.total_cmp(&db)
                })
                .unwrap_or(0);
            confusion[s.class][pred] += 1;
        }
    }
    let n = index.samples.len();
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let recalls: Vec<f64> = (0..k)
        .filter(|&c| confusion[c].iter().sum::<usize>() > 0)
        .map(|c| confusion[c][c] as f64 / confusion[c].iter().sum::<usize>() as f64)
        .collect();
    let counts = index.class_counts();
    Ok(BaselineReport {
        samples: n,
        accuracy: correct as f64 / n.max(1) as f64,
        uar: recalls.iter().sum::<f64>() / recalls.len().max(1) as f64,
        majority: *counts.iter().max().unwrap_or(&0) as f64 / n.max(1) as f64,
        confusion,
    })
}

/// LOSO accuracy of the nearest-class-mean motion baseline.
pub fn baseline_mean_motion(index: &DatasetIndex) -> Result<f64> {
    Ok(baseline_report(index)?.accuracy)
}
