//! 2-D projections of embeddings for scatter plots: PCA by power iteration (deterministic start,
//! deflation), no external linear-algebra crate.
use anyhow::{bail, Result};

/// Projects rows of `x` (N x D) onto their first two principal components.
pub fn pca2(x: &[Vec<f32>]) -> Result<Vec<[f32; 2]>> {
    let n = x.len();
    if n == 0 {
        bail!("pca2: no points");
    }
    let d = x[0].len();
    if x.iter().any(|r| r.len() != d) {
        bail!("pca2: rows of unequal length");
    }
    let mean: Vec<f64> = (0..d)
        .map(|j| x.iter().map(|r| r[j] as f64).sum::<f64>() / n as f64)
        .collect();
    let xc: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect())
        .collect();
    let mut cov = vec![vec![0f64; d]; d];
    for r in &xc {
        for i in 0..d {
            for j in 0..d {
                cov[i][j] += r[i] * r[j];
            }
        }
    }
    let v1 = power_iter(&cov, d);
    let l1 = rayleigh(&cov, &v1);
    for i in 0..d {
        for j in 0..d {
            cov[i][j] -= l1 * v1[i] * v1[j];
        }
    }
    let v2 = power_iter(&cov, d);
    Ok(xc
        .iter()
        .map(|r| [dot(r, &v1) as f32, dot(r, &v2) as f32])
        .collect())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn matvec(m: &[Vec<f64>], v: &[f64]) -> Vec<f64> {
    m.iter().map(|r| dot(r, v)).collect()
}

fn rayleigh(m: &[Vec<f64>], v: &[f64]) -> f64 {
    dot(v, &matvec(m, v))
}

fn power_iter(m: &[Vec<f64>], d: usize) -> Vec<f64> {
    // a fixed, non-symmetric start avoids being orthogonal to the top component by construction
    let mut v: Vec<f64> = (0..d).map(|i| 1.0 + (i as f64 * 0.618).fract()).collect();
    for _ in 0..500 {
        let w = matvec(m, &v);
        let norm = dot(&w, &w).sqrt();
        if norm < 1e-30 {
            return vec![0.0; d];
        }
        v = w.iter().map(|x| x / norm).collect();
    }
    v
}

/// Exact t-SNE (van der Maaten & Hinton 2008), O(N^2) per iteration: fine for a few thousand points.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TsneConfig {
    /// clamped to (N - 1) / 3
    pub perplexity: f64,
    pub iterations: usize,
    pub learning_rate: f64,
    /// early exaggeration factor, applied for the first 100 iterations
    pub exaggeration: f64,
    pub seed: u64,
}

impl Default for TsneConfig {
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            iterations: 500,
            learning_rate: 200.0,
            exaggeration: 12.0,
            seed: 0,
        }
    }
}

fn sq_dists(x: &[Vec<f32>]) -> Vec<Vec<f64>> {
    x.iter()
        .map(|a| {
            x.iter()
                .map(|b| {
                    a.iter()
                        .zip(b)
                        .map(|(u, v)| (*u as f64 - *v as f64).powi(2))
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// Row i of the conditional affinities, with beta found by bisection to match `log(perplexity)`.
fn affinity_row(d: &[f64], i: usize, target_entropy: f64) -> Vec<f64> {
    let (mut lo, mut hi, mut beta) = (0.0f64, f64::INFINITY, 1.0f64);
    let mut p = vec![0.0; d.len()];
    for _ in 0..64 {
        let mut sum = 0.0;
        for (j, pj) in p.iter_mut().enumerate() {
            *pj = if j == i { 0.0 } else { (-beta * d[j]).exp() };
            sum += *pj;
        }
        let sum = sum.max(1e-300);
        let h: f64 = sum.ln() + beta * p.iter().zip(d).map(|(pj, dj)| pj * dj).sum::<f64>() / sum;
        p.iter_mut().for_each(|v| *v /= sum);
        if (h - target_entropy).abs() < 1e-5 {
            break;
        }
        if h > target_entropy {
            lo = beta;
            beta = if hi.is_finite() {
                (beta + hi) / 2.0
            } else {
                beta * 2.0
            };
        } else {
            hi = beta;
            beta = (beta + lo) / 2.0;
        }
    }
    p
}

pub fn tsne2(x: &[Vec<f32>], cfg: &TsneConfig) -> Result<Vec<[f32; 2]>> {
    use rand::Rng;
    let n = x.len();
    if n < 4 {
        bail!("tsne2: need at least 4 points, got {n}");
    }
    let d = sq_dists(x);
    let perp = cfg.perplexity.min((n - 1) as f64 / 3.0).max(1.0);
    let rows: Vec<Vec<f64>> = (0..n).map(|i| affinity_row(&d[i], i, perp.ln())).collect();
    let p: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| ((rows[i][j] + rows[j][i]) / (2.0 * n as f64)).max(1e-12))
                .collect()
        })
        .collect();
    let mut rng = crate::train::rng::rng_for(cfg.seed, &[0x75_6e_65]);
    let mut y: Vec<[f64; 2]> = (0..n)
        .map(|_| {
            [
                rng.random::<f64>() * 1e-2 - 5e-3,
                rng.random::<f64>() * 1e-2 - 5e-3,
            ]
        })
        .collect();
    let mut vel = vec![[0.0f64; 2]; n];
    let mut gains = vec![[1.0f64; 2]; n];
    for it in 0..cfg.iterations {
        let exag = if it < 100 { cfg.exaggeration } else { 1.0 };
        let mom = if it < 250 { 0.5 } else { 0.8 };
        let num: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        if i == j {
                            0.0
                        } else {
                            1.0 / (1.0 + (y[i][0] - y[j][0]).powi(2) + (y[i][1] - y[j][1]).powi(2))
                        }
                    })
                    .collect()
            })
            .collect();
        let z: f64 = num.iter().flatten().sum::<f64>().max(1e-300);
        for i in 0..n {
            let mut g = [0.0f64; 2];
            for j in 0..n {
                let m = 4.0 * (exag * p[i][j] - num[i][j] / z) * num[i][j];
                g[0] += m * (y[i][0] - y[j][0]);
                g[1] += m * (y[i][1] - y[j][1]);
            }
            for k in 0..2 {
                gains[i][k] = if (g[k] > 0.0) != (vel[i][k] > 0.0) {
                    gains[i][k] + 0.2
                } else {
                    (gains[i][k] * 0.8).max(0.01)
                };
                vel[i][k] = mom * vel[i][k] - cfg.learning_rate * gains[i][k] * g[k];
            }
        }
        for i in 0..n {
            y[i][0] += vel[i][0];
            y[i][1] += vel[i][1];
        }
    }
    Ok(y.iter().map(|v| [v[0] as f32, v[1] as f32]).collect())
}

/// How a scatter plot projects embeddings to 2-D.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Projection {
    Pca,
    Tsne(TsneConfig),
}

pub fn project(x: &[Vec<f32>], how: &Projection) -> Result<Vec<[f32; 2]>> {
    match how {
        Projection::Pca => pca2(x),
        Projection::Tsne(c) => tsne2(x, c),
    }
}
