//! Motion features of an interpolated sequence (paper Sec. 3.2.2): optical flow between consecutive
//! frames (u, v) and per-RGB-channel absolute frame differences, fused along channels into a
//! `[C, L-1, H, W]` tensor (C x T x H x W, row-major).

use crate::prep::flow::{FlowEstimator, FlowField};
use crate::prep::image::Frame;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Which priors go into the tensor: both (C = 5: u, v, dR, dG, dB), flow only (C = 2) or
/// differences only (C = 3). The ablations of the paper's Table 4 use the last two.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum FeatureMode {
    #[default]
    Both,
    FlowOnly,
    DiffOnly,
}

impl FeatureMode {
    pub fn channels(self) -> usize {
        match self {
            FeatureMode::Both => 5,
            FeatureMode::FlowOnly => 2,
            FeatureMode::DiffOnly => 3,
        }
    }
}

/// How flow (in pixels) is put on the scale of the difference channels (in [0, 1]).
///
/// `Scaled { scale, clip }` (default `scale = 3 px`, `clip = 1`): `u' = clamp(u / scale, -clip,
/// clip)`. Why: after interpolation to L = 11 frames, the step between consecutive frames of a
/// raw micro-expression is ~0.05-0.2 px and of a phi = 14 magnified one up to ~3 px, so 3 px maps
/// the whole useful range into [-1, 1] linearly, like the differences' [0, 1]; the clip bounds
/// the rare wild vectors (borders, occlusions) that would otherwise dominate batch statistics.
/// `Raw` keeps pixels (what FlowNet-style pipelines feed).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum FlowNorm {
    Raw,
    Scaled { scale: f32, clip: f32 },
}

impl Default for FlowNorm {
    fn default() -> Self {
        FlowNorm::Scaled {
            scale: 3.0,
            clip: 1.0,
        }
    }
}

impl FlowNorm {
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            FlowNorm::Raw => v,
            FlowNorm::Scaled { scale, clip } => (v / scale).clamp(-clip, clip),
        }
    }
}

/// Fuses flow and differences of consecutive frames into a `[C, L-1, H, W]` tensor (returned as
/// shape and row-major data). Channels: u, v (flow from frame t to t+1), then |I_t+1 - I_t| for
/// R, G, B (grey frames count as RGB). Frame pairs are processed in parallel.
pub fn fuse(
    frames: &[Frame],
    est: &dyn FlowEstimator,
    mode: FeatureMode,
    norm: FlowNorm,
) -> Result<(Vec<usize>, Vec<f32>)> {
    if frames.len() < 2 {
        bail!("fuse needs at least 2 frames, got {}", frames.len());
    }
    let (w, h) = (frames[0].width, frames[0].height);
    for (k, f) in frames.iter().enumerate() {
        if f.width != w || f.height != h {
            bail!(
                "fuse: frame {k} is {}x{}, frame 0 is {w}x{h}",
                f.width,
                f.height
            );
        }
    }
    let t = frames.len() - 1;
    let hw = w * h;
    let want_flow = mode != FeatureMode::DiffOnly;
    let want_diff = mode != FeatureMode::FlowOnly;
    let flows: Vec<Option<FlowField>> = (0..t)
        .into_par_iter()
        .map(|k| {
            if want_flow {
                est.flow(&frames[k], &frames[k + 1])
                    .with_context(|| format!("fuse: flow from frame {k} to frame {}", k + 1))
                    .map(Some)
            } else {
                Ok(None)
            }
        })
        .collect::<Result<_>>()?;
    let c = mode.channels();
    let mut data = vec![0.0f32; c * t * hw];
    // Slot of channel `ch`, time `k` in the [C, T, H, W] layout.
    let slot = |ch: usize, k: usize| (ch * t + k) * hw;
    let mut ch0 = 0;
    if want_flow {
        for (k, fl) in flows.iter().enumerate() {
            let fl = fl.as_ref().expect("flow computed");
            let s = slot(0, k);
            for (d, &u) in data[s..s + hw].iter_mut().zip(&fl.u) {
                *d = norm.apply(u);
            }
            let s = slot(1, k);
            for (d, &v) in data[s..s + hw].iter_mut().zip(&fl.v) {
                *d = norm.apply(v);
            }
        }
        ch0 = 2;
    }
    if want_diff {
        let rgb: Vec<Frame> = frames.iter().map(|f| f.to_rgb()).collect();
        for k in 0..t {
            let (a, b) = (&rgb[k].data, &rgb[k + 1].data);
            for col in 0..3 {
                let s = slot(ch0 + col, k);
                for (i, d) in data[s..s + hw].iter_mut().enumerate() {
                    *d = (b[i * 3 + col] - a[i * 3 + col]).abs();
                }
            }
        }
    }
    Ok((vec![c, t, h, w], data))
}
