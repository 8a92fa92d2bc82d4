//! Video frame interpolation (paper Sec. 3.2.1): `L` frames from onset to apex, both ends included.
//! The default is flow-based (Super-SloMo's intermediate-flow approximation with visibility
//! from forward-backward consistency), a weight-free stand-in for EMA-VFI.

use crate::prep::flow::{warp, FlowEstimator, FlowField};
use crate::prep::image::Frame;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Makes `n_frames` frames from `f0` to `f1`, `f0` and `f1` included (copied unchanged).
pub trait FrameInterpolator: Send + Sync {
    fn interpolate(&self, f0: &Frame, f1: &Frame, n_frames: usize) -> Result<Vec<Frame>>;
    /// Identifies the interpolator and its parameters (cache keys, reports).
    fn name(&self) -> String {
        std::any::type_name::<Self>().to_string()
    }
}

/// Forward-backward consistency test (Sundaram et al. 2010): a pixel is visible in the other
/// frame when `|w + w_back(x + w)|^2 <= alpha1 (|w|^2 + |w_back|^2) + alpha2`; the visibility is
/// a soft version of it, `exp(-excess / alpha2)`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsistencyParams {
    pub alpha1: f32,
    pub alpha2: f32,
    /// Floor of the visibility so the blend weights never vanish.
    pub min_visibility: f32,
}

impl Default for ConsistencyParams {
    fn default() -> Self {
        Self {
            alpha1: 0.01,
            alpha2: 0.5,
            min_visibility: 0.02,
        }
    }
}

/// Flow-based interpolation: `F01`, `F10` by the estimator; for each t,
/// `F_t0 = -(1-t) t F01 + t^2 F10`, `F_t1 = (1-t)^2 F01 - t (1-t) F10` (Jiang et al. 2018),
/// `g0 = warp(I0, F_t0)`, `g1 = warp(I1, F_t1)`,
/// `I_t = ((1-t) V_t0 g0 + t V_t1 g1) / ((1-t) V_t0 + t V_t1)`.
/// `V_t0` (is the pixel at time t seen in I0?) is 1 minus the occlusion of I1's pixels in I0,
/// looked up where the pixel lands in I1, and symmetrically for `V_t1`.
#[derive(Clone)]
pub struct FlowInterpolator {
    pub estimator: Arc<dyn FlowEstimator>,
    pub consistency: ConsistencyParams,
}

impl FlowInterpolator {
    pub fn new(estimator: Arc<dyn FlowEstimator>, consistency: ConsistencyParams) -> Self {
        Self {
            estimator,
            consistency,
        }
    }
}

/// Soft visibility of each pixel of the source frame in the target frame, from the flow
/// `fwd` (source -> target) and `bwd` (target -> source).
pub fn visibility(fwd: &FlowField, bwd: &FlowField, p: &ConsistencyParams) -> Vec<f32> {
    let w = fwd.width;
    (0..fwd.u.len())
        .map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let (u, v) = (fwd.u[i], fwd.v[i]);
            let (bu, bv) = bwd.sample(x + u, y + v);
            let d2 = (u + bu).powi(2) + (v + bv).powi(2);
            let bound = p.alpha1 * (u * u + v * v + bu * bu + bv * bv) + p.alpha2;
            let vis = if d2 <= bound {
                1.0
            } else {
                (-(d2 - bound) / p.alpha2).exp()
            };
            vis.max(p.min_visibility)
        })
        .collect()
}

fn sample_map(map: &[f32], w: usize, h: usize, x: f32, y: f32) -> f32 {
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (i0, j0) = (x.floor() as usize, y.floor() as usize);
    let (i1, j1) = ((i0 + 1).min(w - 1), (j0 + 1).min(h - 1));
    let (fx, fy) = (x - i0 as f32, y - j0 as f32);
    let top = map[j0 * w + i0] * (1.0 - fx) + map[j0 * w + i1] * fx;
    let bot = map[j1 * w + i0] * (1.0 - fx) + map[j1 * w + i1] * fx;
    top * (1.0 - fy) + bot * fy
}

impl FrameInterpolator for FlowInterpolator {
    fn interpolate(&self, f0: &Frame, f1: &Frame, n_frames: usize) -> Result<Vec<Frame>> {
        if n_frames < 2 {
            bail!("interpolation needs at least 2 frames (both ends), got {n_frames}");
        }
        if !f0.same_shape(f1) {
            bail!(
                "interpolation ends differ in shape: {}x{}x{} and {}x{}x{}",
                f0.width,
                f0.height,
                f0.channels,
                f1.width,
                f1.height,
                f1.channels
            );
        }
        if n_frames == 2 {
            return Ok(vec![f0.clone(), f1.clone()]);
        }
        let (r01, r10) = rayon::join(
            || self.estimator.flow(f0, f1),
            || self.estimator.flow(f1, f0),
        );
        let f01 = r01.context("interpolation: flow onset -> apex")?;
        let f10 = r10.context("interpolation: flow apex -> onset")?;
        let (w, h) = (f0.width, f0.height);
        // Occlusion-aware visibility of I0's pixels in I1 and of I1's pixels in I0.
        let vis0in1 = visibility(&f01, &f10, &self.consistency);
        let vis1in0 = visibility(&f10, &f01, &self.consistency);
        let last = (n_frames - 1) as f32;
        let mids: Vec<Result<Frame>> = (1..n_frames - 1)
            .into_par_iter()
            .map(|k| {
                let t = k as f32 / last;
                let ft0 = f01.combine(-(1.0 - t) * t, &f10, t * t);
                let ft1 = f01.combine((1.0 - t) * (1.0 - t), &f10, -t * (1.0 - t));
                let g0 = warp(f0, &ft0)?;
                let g1 = warp(f1, &ft1)?;
                let c = f0.channels;
                let mut out = Frame::new(w, h, c);
                for i in 0..w * h {
                    let (x, y) = ((i % w) as f32, (i / w) as f32);
                    // Seen in I0 unless the point (found in I1 at x + F_t1) is occluded in I0.
                    let v0 = sample_map(&vis1in0, w, h, x + ft1.u[i], y + ft1.v[i]);
                    let v1 = sample_map(&vis0in1, w, h, x + ft0.u[i], y + ft0.v[i]);
                    let (a, b) = ((1.0 - t) * v0, t * v1);
                    let norm = 1.0 / (a + b);
                    for ch in 0..c {
                        out.data[i * c + ch] =
                            (a * g0.data[i * c + ch] + b * g1.data[i * c + ch]) * norm;
                    }
                }
                Ok(out)
            })
            .collect();
        let mut frames = Vec::with_capacity(n_frames);
        frames.push(f0.clone());
        for m in mids {
            frames.push(m?);
        }
        frames.push(f1.clone());
        Ok(frames)
    }

    fn name(&self) -> String {
        let c = &self.consistency;
        format!(
            "flow_interp(flow={},alpha1={},alpha2={},min_vis={})",
            self.estimator.name(),
            c.alpha1,
            c.alpha2,
            c.min_visibility
        )
    }
}

/// Plain cross-fade `(1-t) I0 + t I1`: the no-motion baseline (for ablations and tests).
#[derive(Clone, Debug, Default)]
pub struct LinearBlend;

impl FrameInterpolator for LinearBlend {
    fn interpolate(&self, f0: &Frame, f1: &Frame, n_frames: usize) -> Result<Vec<Frame>> {
        if n_frames < 2 || !f0.same_shape(f1) {
            bail!("linear blend needs 2+ frames and ends of one shape");
        }
        let last = (n_frames - 1) as f32;
        Ok((0..n_frames)
            .map(|k| {
                let t = k as f32 / last;
                let mut f = f0.clone();
                for (o, b) in f.data.iter_mut().zip(&f1.data) {
                    *o = (1.0 - t) * *o + t * b;
                }
                f
            })
            .collect())
    }

    fn name(&self) -> String {
        "linear_blend".into()
    }
}
