//! Motion magnification of the onset -> apex motion (paper Sec. 3.3.3) and the per-class ranges of the
//! magnification factor phi that balance the classes.
//!
//! Lagrangian (default): `w = flow(apex -> onset)`, `I_mag(x) = I_onset(x + (1 + phi) w(x))`
//! (bilinear backward warp): a magnified apex, the weight-free reading of Eq. 9.
//! Eulerian (Wu et al. 2012): Laplacian pyramids of both frames,
//! `I_mag = collapse(L_k(apex) + phi_k (L_k(apex) - L_k(onset)))`, with phi_k attenuated for fine
//! levels so that `(1 + phi_k) delta < lambda_k / 8` and the finest band and the low-pass residual
//! left unamplified, as in Wu et al.'s code. First-order only: it breaks down at large phi.

use crate::prep::flow::{warp_scaled, FlowEstimator, FlowField};
use crate::prep::image::{resize, Frame};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum MagnifyMethod {
    #[default]
    Lagrangian,
    Eulerian {
        /// Pyramid levels including the low-pass residual.
        levels: usize,
        /// Cut-off wavelength lambda_c in pixels (Wu et al.: 16 for faces).
        lambda_c: f32,
        /// Wu et al.'s "exaggeration factor" over the bound (their code: 2).
        exaggeration: f32,
    },
}

impl MagnifyMethod {
    /// Wu et al.'s settings for face videos.
    pub fn eulerian_default() -> Self {
        MagnifyMethod::Eulerian {
            levels: 5,
            lambda_c: 16.0,
            exaggeration: 2.0,
        }
    }
}

/// Produces magnified apex frames for a sample; the flow (Lagrangian) is computed once per call.
#[derive(Clone)]
pub struct Magnifier {
    pub method: MagnifyMethod,
    pub estimator: Arc<dyn FlowEstimator>,
}

impl Magnifier {
    pub fn new(method: MagnifyMethod, estimator: Arc<dyn FlowEstimator>) -> Self {
        Self { method, estimator }
    }

    /// One magnified apex for `phi`.
    pub fn magnify(&self, onset: &Frame, apex: &Frame, phi: f32) -> Result<Frame> {
        Ok(self.magnify_many(onset, apex, &[phi])?.remove(0))
    }

    /// Magnified apex frames, one per `phi` (in order).
    pub fn magnify_many(&self, onset: &Frame, apex: &Frame, phis: &[f32]) -> Result<Vec<Frame>> {
        if !onset.same_shape(apex) {
            bail!(
                "magnify: onset {}x{}x{} and apex {}x{}x{} differ",
                onset.width,
                onset.height,
                onset.channels,
                apex.width,
                apex.height,
                apex.channels
            );
        }
        match &self.method {
            MagnifyMethod::Lagrangian => {
                let w = self
                    .estimator
                    .flow(apex, onset)
                    .context("magnify: flow apex -> onset")?;
                phis.par_iter()
                    .map(|&phi| magnify_lagrangian(onset, &w, phi))
                    .collect()
            }
            MagnifyMethod::Eulerian {
                levels,
                lambda_c,
                exaggeration,
            } => {
                let po = laplacian_pyramid(onset, *levels);
                let pa = laplacian_pyramid(apex, *levels);
                Ok(phis
                    .par_iter()
                    .map(|&phi| magnify_eulerian_pyr(apex, &po, &pa, phi, *lambda_c, *exaggeration))
                    .collect())
            }
        }
    }

    pub fn name(&self) -> String {
        match &self.method {
            MagnifyMethod::Lagrangian => format!("lagrangian(flow={})", self.estimator.name()),
            MagnifyMethod::Eulerian {
                levels,
                lambda_c,
                exaggeration,
            } => {
                format!("eulerian(levels={levels},lambda_c={lambda_c},exaggeration={exaggeration})")
            }
        }
    }
}

/// `I_mag(x) = onset(x + (1 + phi) w(x))` with `w = flow(apex -> onset)`.
pub fn magnify_lagrangian(onset: &Frame, w: &FlowField, phi: f32) -> Result<Frame> {
    warp_scaled(onset, w, 1.0 + phi)
}

/// 5-tap binomial blur (separable, border clamped) then decimation by 2.
fn blur_down(f: &Frame) -> Frame {
    const K: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];
    let (w, h, c) = (f.width, f.height, f.channels);
    let mut tmp = Frame::new(w, h, c);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let s: f32 = (0..5)
                    .map(|k| K[k] * f.get_clamped(x as isize + k as isize - 2, y as isize, ch))
                    .sum();
                tmp.set(x, y, ch, s);
            }
        }
    }
    let (w2, h2) = (w.div_ceil(2), h.div_ceil(2));
    let mut out = Frame::new(w2, h2, c);
    for y in 0..h2 {
        for x in 0..w2 {
            for ch in 0..c {
                let s: f32 = (0..5)
                    .map(|k| {
                        K[k] * tmp.get_clamped(2 * x as isize, 2 * y as isize + k as isize - 2, ch)
                    })
                    .sum();
                out.set(x, y, ch, s);
            }
        }
    }
    out
}

/// Laplacian pyramid, finest band first, the low-pass residual last. Reconstruction is exact:
/// `G_k = L_k + up(G_k+1)` with `up` the bilinear enlargement.
pub fn laplacian_pyramid(f: &Frame, levels: usize) -> Vec<Frame> {
    let mut bands = Vec::new();
    let mut g = f.clone();
    for _ in 1..levels.max(1) {
        if g.width < 4 || g.height < 4 {
            break;
        }
        let down = blur_down(&g);
        let up = resize(&down, g.width, g.height);
        let mut band = g.clone();
        band.data
            .iter_mut()
            .zip(&up.data)
            .for_each(|(b, u)| *b -= u);
        bands.push(band);
        g = down;
    }
    bands.push(g);
    bands
}

/// Sums a Laplacian pyramid back into an image.
pub fn collapse(bands: &[Frame]) -> Frame {
    let mut g = bands.last().expect("non-empty pyramid").clone();
    for band in bands[..bands.len() - 1].iter().rev() {
        let mut up = resize(&g, band.width, band.height);
        up.data
            .iter_mut()
            .zip(&band.data)
            .for_each(|(u, b)| *u += b);
        g = up;
    }
    g
}

/// Amplification of each band (finest first), after Wu et al.'s code: the representative
/// wavelength of the residual is `diag / 3`, halving per finer level; `phi_k = min(phi,
/// exaggeration (lambda_k / (8 delta) - 1))` with `delta = lambda_c / (8 (1 + phi))`; the
/// finest band and the residual get 0.
pub fn eulerian_band_gains(
    width: usize,
    height: usize,
    n_bands: usize,
    phi: f32,
    lambda_c: f32,
    exaggeration: f32,
) -> Vec<f32> {
    let delta = lambda_c / 8.0 / (1.0 + phi);
    let mut lambda = ((width * width + height * height) as f32).sqrt() / 3.0;
    let mut gains = vec![0.0; n_bands];
    for k in (0..n_bands).rev() {
        let cur = (lambda / delta / 8.0 - 1.0) * exaggeration;
        gains[k] = if k == 0 || k == n_bands - 1 {
            0.0
        } else {
            phi.min(cur.max(0.0))
        };
        lambda /= 2.0;
    }
    gains
}

fn magnify_eulerian_pyr(
    apex: &Frame,
    po: &[Frame],
    pa: &[Frame],
    phi: f32,
    lambda_c: f32,
    exaggeration: f32,
) -> Frame {
    let gains = eulerian_band_gains(
        apex.width,
        apex.height,
        pa.len(),
        phi,
        lambda_c,
        exaggeration,
    );
    let bands: Vec<Frame> = pa
        .iter()
        .zip(po)
        .zip(&gains)
        .map(|((a, o), &g)| {
            let mut b = a.clone();
            b.data
                .iter_mut()
                .zip(&o.data)
                .for_each(|(x, y)| *x += g * (*x - y));
            b
        })
        .collect();
    let mut out = collapse(&bands);
    out.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    out
}

/// Eulerian magnification of the onset -> apex change (a magnified apex).
pub fn magnify_eulerian(
    onset: &Frame,
    apex: &Frame,
    phi: f32,
    levels: usize,
    lambda_c: f32,
    exaggeration: f32,
) -> Result<Frame> {
    if !onset.same_shape(apex) {
        bail!("magnify_eulerian: onset and apex differ in shape");
    }
    let po = laplacian_pyramid(onset, levels);
    let pa = laplacian_pyramid(apex, levels);
    Ok(magnify_eulerian_pyr(
        apex,
        &po,
        &pa,
        phi,
        lambda_c,
        exaggeration,
    ))
}

/// How the ratio `N_max (base + 1) / N_c` becomes an integer number of copies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PhiRounding {
    /// Round up: every class reaches at least the majority's count (the paper's SMIC-HS row, Sec. 3.3.3).
    #[default]
    Ceil,
    /// Round down: no class exceeds the majority's count (the paper's CASME II row, Sec. 3.3.3).
    Floor,
}

/// phi_max per class with `PhiRounding::Ceil`: the majority class gets `base_phi`; class c gets
/// `min(cap, max(base_phi, ceil(N_max (base_phi + 1) / N_c) - 1))`, so that
/// `N_c (phi_c + 1)` (original + one copy per integer phi in 1..=phi_c) matches the majority's
/// `N_max (base_phi + 1)`. An empty class gets 0.
///
/// Against paper Sec. 3.3.3's table: reproduces SMIC-HS (70, 51, 43, base 8 -> 8, 12, 14) and CASME II's
/// majority and surprise rows (88 -> 4, 25 -> 14) but gives 13 instead of 12 for CASME II positive
/// (32; `Floor` gives 12 there but 11 and 13 on SMIC), and 14 instead of 9 for SAMM positive (26,
/// base 3: the paper's 9 fits no rounding). No single rule reproduces all three rows.
pub fn phi_max_per_class(counts: &[usize], base_phi: usize, cap: usize) -> Vec<usize> {
    phi_max_per_class_with(counts, base_phi, cap, PhiRounding::Ceil)
}

/// `phi_max_per_class` with an explicit rounding rule.
pub fn phi_max_per_class_with(
    counts: &[usize],
    base_phi: usize,
    cap: usize,
    rounding: PhiRounding,
) -> Vec<usize> {
    let n_max = counts.iter().copied().max().unwrap_or(0);
    let target = n_max * (base_phi + 1);
    counts
        .iter()
        .map(|&n| {
            if n == 0 {
                return 0;
            }
            if n == n_max {
                return base_phi.min(cap);
            }
            let copies = match rounding {
                PhiRounding::Ceil => target.div_ceil(n),
                PhiRounding::Floor => target / n,
            };
            (copies.saturating_sub(1)).max(base_phi).min(cap)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_max_reproduces_smic_row() {
        assert_eq!(phi_max_per_class(&[70, 51, 43], 8, 14), vec![8, 12, 14]);
        // Order does not matter; counts follow N_c (phi_c + 1).
        assert_eq!(phi_max_per_class(&[43, 70, 51], 8, 14), vec![14, 8, 12]);
    }

    #[test]
    fn phi_max_casme2_and_samm_rows() {
        // Ceil: CASME II positive 13 (paper: 12); Floor gives the paper's row.
        assert_eq!(phi_max_per_class(&[88, 32, 25], 4, 14), vec![4, 13, 14]);
        assert_eq!(
            phi_max_per_class_with(&[88, 32, 25], 4, 14, PhiRounding::Floor),
            vec![4, 12, 14]
        );
        assert_eq!(phi_max_per_class(&[92, 26, 15], 3, 14), vec![3, 14, 14]);
        assert_eq!(phi_max_per_class(&[10, 0, 10], 2, 14), vec![2, 0, 2]);
    }

    #[test]
    fn laplacian_pyramid_reconstructs_exactly() {
        let mut f = Frame::new(37, 29, 3);
        for (i, v) in f.data.iter_mut().enumerate() {
            *v = ((i * 7919) % 256) as f32 / 255.0;
        }
        let p = laplacian_pyramid(&f, 5);
        assert_eq!(p.len(), 5);
        let r = collapse(&p);
        for (a, b) in r.data.iter().zip(&f.data) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn eulerian_gains_attenuate_fine_levels() {
        let g = eulerian_band_gains(128, 128, 5, 10.0, 16.0, 2.0);
        assert_eq!(g[0], 0.0);
        assert_eq!(g[4], 0.0);
        assert!(g[1] <= g[2] && g[2] <= g[3] && g[3] <= 10.0);
        assert!(g[1] < 10.0);
    }
}
