//! Grad-CAM (Selvaraju et al.) over the encoder's last feature map: the detached feature map A is
//! made a `Var`, passed through `head`, and the class score is differentiated with respect to it;
//! channel weights = mean of the gradients over (T', H', W'); CAM = ReLU(sum_k w_k A_k), scaled
//! to [0, 1] by its maximum (all zero when nothing is positive).
use crate::train::encoder::Encoder;
use anyhow::{bail, Context, Result};
use candle_core::{Tensor, Var};

/// A class-activation volume [T', H', W'] with values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Cam {
    pub t: usize,
    pub h: usize,
    pub w: usize,
    pub values: Vec<f32>,
}

/// Grad-CAM of `score(embedding)` (a scalar) for one input `x` [1, C, T, H, W].
pub fn grad_cam(
    enc: &dyn Encoder,
    x: &Tensor,
    score: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Cam> {
    if x.dim(0)? != 1 {
        bail!("grad_cam: one sample at a time, got batch {}", x.dim(0)?);
    }
    let fm = enc.feature_map(x, false)?.detach();
    let (_, c, t, h, w) = fm
        .dims5()
        .context("grad_cam: feature map must be [1, C, T, H, W]")?;
    let a = Var::from_tensor(&fm)?;
    let s = score(&enc.head(a.as_tensor())?)?;
    if s.elem_count() != 1 {
        bail!(
            "grad_cam: score must be a scalar, got shape {:?}",
            s.shape()
        );
    }
    let grads = s.sum_all()?.backward()?;
    let g = grads
        .get(a.as_tensor())
        .context("grad_cam: the score does not depend on the feature map")?;
    let weights = g.mean_keepdim((2, 3, 4))?; // [1, C, 1, 1, 1]
    let cam = fm
        .broadcast_mul(&weights)?
        .sum(1)?
        .relu()?
        .reshape((t, h, w))?;
    let mut values = cam.flatten_all()?.to_vec1::<f32>()?;
    let max = values.iter().cloned().fold(0f32, f32::max);
    if max > 0.0 {
        values.iter_mut().for_each(|v| *v /= max);
    }
    let _ = c;
    Ok(Cam { t, h, w, values })
}

/// Score: the logit of class `c` from a linear classifier on the embedding.
pub fn linear_class_score(
    head: &candle_nn::Linear,
    c: usize,
) -> impl Fn(&Tensor) -> candle_core::Result<Tensor> + '_ {
    move |e: &Tensor| {
        candle_nn::Module::forward(head, e)?
            .narrow(1, c, 1)?
            .sum_all()
    }
}

/// Score: scaled cosine similarity of the embedding to a prototype [D] (meta-learning's logit).
pub fn prototype_score(
    proto: Tensor,
    scale: f64,
) -> impl Fn(&Tensor) -> candle_core::Result<Tensor> {
    move |e: &Tensor| {
        let p = proto.unsqueeze(0)?;
        let en = e.broadcast_div(&(e.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?)?;
        let pn = p.broadcast_div(&(p.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?)?;
        (en * pn)?.sum_all()? * scale
    }
}

impl Cam {
    /// The CAM slice for input frame `frame` of `frames` (nearest in time), bilinearly resized to
    /// `h` x `w` (half-pixel centres): row-major values in [0, 1].
    pub fn frame(&self, frame: usize, frames: usize, h: usize, w: usize) -> Vec<f32> {
        let ti = ((frame * self.t) / frames.max(1)).min(self.t - 1);
        let src = &self.values[ti * self.h * self.w..(ti + 1) * self.h * self.w];
        let mut out = Vec::with_capacity(h * w);
        for y in 0..h {
            let (y0, y1, fy) = coord(y, h, self.h);
            for x in 0..w {
                let (x0, x1, fx) = coord(x, w, self.w);
                let at = |yy: usize, xx: usize| src[yy * self.w + xx];
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bot = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out.push(top * (1.0 - fy) + bot * fy);
            }
        }
        out
    }
}

/// Source cells and weight for output coordinate `i` of `n_out` over `n_in` cells.
fn coord(i: usize, n_out: usize, n_in: usize) -> (usize, usize, f32) {
    let s = ((i as f32 + 0.5) * n_in as f32 / n_out as f32 - 0.5).max(0.0);
    let i0 = (s.floor() as usize).min(n_in - 1);
    let i1 = (i0 + 1).min(n_in - 1);
    (i0, i1, s - i0 as f32)
}

/// Which Grad-CAM of a meta-learned model to compute: sample `sample` (an index into the sample
/// set), class `class`, with that class's prototype over `proto_pool` (embedded `chunk` samples
/// at a time) and the scaled cosine similarity's `scale`.
#[derive(Clone, Copy, Debug)]
pub struct MetaCam<'a> {
    pub proto_pool: &'a [usize],
    pub sample: usize,
    pub class: usize,
    pub scale: f64,
    pub chunk: usize,
}

/// Grad-CAM of a meta-learned model: the score is the scaled cosine similarity of the
/// visualised branch (the AFE for P and C, the only encoder otherwise) to that branch's
/// prototype of `q.class` over `q.proto_pool` (eval-mode embeddings).
pub fn meta_cam(
    model: &crate::train::meta::model::MetaModel,
    set: &crate::train::data::SampleSet,
    q: &MetaCam,
    dev: &candle_core::Device,
) -> Result<Cam> {
    let class = q.class;
    let members: Vec<usize> = q
        .proto_pool
        .iter()
        .copied()
        .filter(|&i| set.labels[i] == class)
        .collect();
    if members.is_empty() {
        bail!("meta_grad_cam: class {class} has no sample in the prototype pool");
    }
    let emb = crate::train::meta::proto::embed_pool(model, set, &members, q.chunk, dev)?;
    let proto = emb.last().context("meta_grad_cam: no branch")?.mean(0)?;
    let x = set.batch(&[q.sample], dev)?;
    let (enc, input) = model.cam_encoder(&x)?;
    grad_cam(enc, &input.detach(), &prototype_score(proto, q.scale))
}

/// The middle frame pair's flow magnitude (or first channel) of an input [C, T, H, W] beside
/// that frame overlaid with the heat map, as a PNG at `path`.
pub fn overlay_png(
    shape: &[usize],
    input: &[f32],
    cam: &Cam,
    title: &str,
    path: &std::path::Path,
) -> Result<()> {
    let (c, t, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let k = t / 2;
    let plane = |ch: usize| &input[(ch * t + k) * h * w..(ch * t + k + 1) * h * w];
    let values: Vec<f32> = if c >= 2 {
        plane(0)
            .iter()
            .zip(plane(1))
            .map(|(u, v)| (u * u + v * v).sqrt())
            .collect()
    } else {
        plane(0).to_vec()
    };
    let fr = crate::eval::plots::Frame {
        values: &values,
        h,
        w,
        index: k,
        frames: t,
    };
    crate::eval::plots::gradcam_png(&fr, cam, title, 4, path)
}
