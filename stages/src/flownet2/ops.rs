//! The three operations FlowNet2 adds to plain convolutions (Ilg et al. 2017; NVIDIA's
//! flownet2-pytorch, `networks/correlation_package`, `networks/resample2d_package`,
//! `networks/channelnorm_package`), each with two paths:
//!
//! - a CPU custom op (rayon) used whenever the tensors live on the CPU;
//! - a path built only from stock candle ops, used on other devices and as the tests' reference
//!   ([`with_reference`] forces it).
//!
//! Forward only: nothing in mpfnet trains through FlowNet2 (the custom ops have no backward and
//! say so if asked for one).
//!
//! Layouts are PyTorch's: `[B, C, H, W]`, f32.

use crate::model::ops::{f32_slice, Cpu2, F32In, F32Op2, F32Out};
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

thread_local! {
    static FORCE_REFERENCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the stock-op paths forced on the current thread (tests, benchmarks).
pub fn with_reference<R>(f: impl FnOnce() -> R) -> R {
    crate::model::ops::forcing(&FORCE_REFERENCE, f)
}

fn use_custom(x: &Tensor) -> bool {
    crate::model::ops::custom_on(&FORCE_REFERENCE, x)
}

fn dims4(s: &Shape, what: &str) -> Result<[usize; 4]> {
    match s.dims() {
        &[b, c, h, w] => Ok([b, c, h, w]),
        d => bail!("{what}: expected a [B, C, H, W] tensor, got {d:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Correlation
// ---------------------------------------------------------------------------------------------

/// The correlation layer of FlowNetC (Dosovitskiy et al. 2015), restricted to what FlowNet2
/// uses: kernel size 1, stride 1 over the first map, zero padding equal to the maximum
/// displacement (so the output keeps the input's height and width).
///
/// `out[b, (j + r) * (2r + 1) + (i + r), y, x] = sum_c f1[b, c, y, x] * f2[b, c, y + j s, x + i s] / C`
/// for `i, j` in `-r..=r`, `r = max_displacement / stride2`, `s = stride2`, and `f2` read as
/// zero outside the map (as `correlation_cuda_kernel.cu` computes it: `nelems` = C for kernel 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Correlation {
    pub max_displacement: usize,
    pub stride2: usize,
}

impl Correlation {
    /// FlowNetC's: max displacement 20, stride 2 (21 x 21 = 441 output channels).
    pub const FLOWNETC: Correlation = Correlation {
        max_displacement: 20,
        stride2: 2,
    };

    pub fn radius(&self) -> usize {
        self.max_displacement / self.stride2
    }

    /// Output channels: (2r + 1)^2.
    pub fn out_channels(&self) -> usize {
        let d = 2 * self.radius() + 1;
        d * d
    }

    pub fn forward(&self, f1: &Tensor, f2: &Tensor) -> Result<Tensor> {
        if f1.dims() != f2.dims() {
            bail!(
                "correlation: inputs differ in shape: {:?} vs {:?}",
                f1.dims(),
                f2.dims()
            );
        }
        dims4(f1.shape(), "correlation")?;
        if self.stride2 == 0 {
            bail!("correlation: stride2 must be positive");
        }
        if use_custom(f1) {
            f1.contiguous()?
                .apply_op2_no_bwd(&f2.contiguous()?, &Cpu2(*self))
        } else {
            self.reference(f1, f2)
        }
    }

    /// Stock candle ops only: one shifted product per displacement.
    pub fn reference(&self, f1: &Tensor, f2: &Tensor) -> Result<Tensor> {
        let [_, c, h, w] = dims4(f1.shape(), "correlation")?;
        let (r, s) = (self.radius() as isize, self.stride2 as isize);
        let p = self.max_displacement;
        let padded = f2.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
        let mut planes = Vec::with_capacity(self.out_channels());
        for j in -r..=r {
            for i in -r..=r {
                let y0 = (p as isize + j * s) as usize;
                let x0 = (p as isize + i * s) as usize;
                let shifted = padded.narrow(2, y0, h)?.narrow(3, x0, w)?;
                planes.push((f1 * shifted)?.sum_keepdim(1)?);
            }
        }
        Tensor::cat(&planes, 1)? / c as f64
    }
}

impl F32Op2 for Correlation {
    const NAME: &'static str = "flownet2-correlation";
    const WHAT: &'static str = "correlation";

    fn fwd(&self, (a, sa): F32In, (bb, _): F32In) -> F32Out {
        let [b, c, h, w] = dims4(sa, "correlation")?;
        let hw = h * w;
        // channels last, so that every product is a contiguous dot product over C
        let to_hwc = |src: &[f32]| -> Vec<f32> {
            let mut out = vec![0f32; src.len()];
            out.par_chunks_mut(hw * c).enumerate().for_each(|(n, o)| {
                let s = &src[n * c * hw..][..c * hw];
                for ch in 0..c {
                    let plane = &s[ch * hw..][..hw];
                    for (p, &v) in plane.iter().enumerate() {
                        o[p * c + ch] = v;
                    }
                }
            });
            out
        };
        let (a, bb) = (to_hwc(a), to_hwc(bb));
        let r = self.radius() as isize;
        let d = 2 * r + 1;
        let s = self.stride2 as isize;
        let planes = (d * d) as usize;
        let inv = 1.0 / c as f32;
        let mut out = vec![0f32; b * planes * hw];
        out.par_chunks_mut(hw).enumerate().for_each(|(k, o)| {
            let n = k / planes;
            let t = (k % planes) as isize;
            let (dy, dx) = ((t / d - r) * s, (t % d - r) * s);
            let a = &a[n * hw * c..][..hw * c];
            let bb = &bb[n * hw * c..][..hw * c];
            // rows and columns whose displaced partner lies inside the map; the rest stay zero
            let y_lo = (-dy).max(0) as usize;
            let y_hi = (h as isize - dy).min(h as isize).max(0) as usize;
            let x_lo = (-dx).max(0) as usize;
            let x_hi = (w as isize - dx).min(w as isize).max(0) as usize;
            for y in y_lo..y_hi.max(y_lo) {
                let y2 = (y as isize + dy) as usize;
                for x in x_lo..x_hi.max(x_lo) {
                    let x2 = (x as isize + dx) as usize;
                    let p = &a[(y * w + x) * c..][..c];
                    let q = &bb[(y2 * w + x2) * c..][..c];
                    o[y * w + x] = dot(p, q) * inv;
                }
            }
        });
        Ok((out, Shape::from((b, planes, h, w))))
    }
}

/// Dot product in 8 independent lanes (the compiler vectorises it).
#[inline]
fn dot(p: &[f32], q: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let n8 = p.len() / 8 * 8;
    for (pc, qc) in p[..n8].chunks_exact(8).zip(q[..n8].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += pc[l] * qc[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in p[n8..].iter().zip(&q[n8..]) {
        s += x * y;
    }
    s
}

/// The correlation of FlowNetC (max displacement 20, stride 2).
pub fn correlation(f1: &Tensor, f2: &Tensor) -> Result<Tensor> {
    Correlation::FLOWNETC.forward(f1, f2)
}

// ---------------------------------------------------------------------------------------------
// Resample2d (warping)
// ---------------------------------------------------------------------------------------------

/// Backward warping as `resample2d_kernel.cu` (bilinear, kernel size 1):
/// `out[b, c, y, x]` = `img[b, c]` sampled at `(x + flow[b, 0, y, x], y + flow[b, 1, y, x])`,
/// with the four taps' indices clamped to the image (the weights keep the unclamped fraction).
#[derive(Clone, Copy, Debug)]
struct Resample2d;

impl F32Op2 for Resample2d {
    const NAME: &'static str = "flownet2-resample2d";
    const WHAT: &'static str = "resample2d";

    fn fwd(&self, (img, si): F32In, (flow, _): F32In) -> F32Out {
        let [b, c, h, w] = dims4(si, "resample2d")?;
        let hw = h * w;
        let mut out = vec![0f32; b * c * hw];
        out.par_chunks_mut(w).enumerate().for_each(|(row, o)| {
            let y = row % h;
            let n = row / (c * h);
            let ch = (row / h) % c;
            let plane = &img[(n * c + ch) * hw..][..hw];
            let fu = &flow[(n * 2) * hw + y * w..][..w];
            let fv = &flow[(n * 2 + 1) * hw + y * w..][..w];
            for x in 0..w {
                let xf = x as f32 + fu[x];
                let yf = y as f32 + fv[x];
                let (x0, y0) = (xf.floor(), yf.floor());
                let (al, be) = (xf - x0, yf - y0);
                let cl = |v: f32, n: usize| (v.max(0.0) as usize).min(n - 1);
                let xl = cl(x0, w);
                let xr = cl(x0 + 1.0, w);
                let yt = cl(y0, h);
                let yb = cl(y0 + 1.0, h);
                o[x] = (1.0 - al) * (1.0 - be) * plane[yt * w + xl]
                    + al * (1.0 - be) * plane[yt * w + xr]
                    + (1.0 - al) * be * plane[yb * w + xl]
                    + al * be * plane[yb * w + xr];
            }
        });
        Ok((out, si.clone()))
    }
}

/// Warps `img` `[B, C, H, W]` by `flow` `[B, 2, H, W]` (pixels; channel 0 horizontal).
pub fn resample2d(img: &Tensor, flow: &Tensor) -> Result<Tensor> {
    let [b, _, h, w] = dims4(img.shape(), "resample2d")?;
    if flow.dims() != [b, 2, h, w] {
        bail!(
            "resample2d: flow {:?} does not match image {:?}",
            flow.dims(),
            img.dims()
        );
    }
    if use_custom(img) {
        img.contiguous()?
            .apply_op2_no_bwd(&flow.contiguous()?, &Cpu2(Resample2d))
    } else {
        resample2d_reference(img, flow)
    }
}

/// Stock candle ops: the four taps gathered from the flattened image.
pub fn resample2d_reference(img: &Tensor, flow: &Tensor) -> Result<Tensor> {
    let [b, c, h, w] = dims4(img.shape(), "resample2d")?;
    let dev = img.device();
    let xs = Tensor::arange(0f32, w as f32, dev)?.reshape((1, 1, w))?;
    let ys = Tensor::arange(0f32, h as f32, dev)?.reshape((1, h, 1))?;
    let xf = flow.narrow(1, 0, 1)?.squeeze(1)?.broadcast_add(&xs)?;
    let yf = flow.narrow(1, 1, 1)?.squeeze(1)?.broadcast_add(&ys)?;
    let (x0, y0) = (xf.floor()?, yf.floor()?);
    let (al, be) = ((&xf - &x0)?, (&yf - &y0)?);
    let clamp = |t: &Tensor, n: usize| t.clamp(0f32, (n - 1) as f32);
    let xl = clamp(&x0, w)?;
    let xr = clamp(&(&x0 + 1.0)?, w)?;
    let yt = clamp(&y0, h)?;
    let yb = clamp(&(&y0 + 1.0)?, h)?;
    let flat = img.reshape((b, c, h * w))?;
    let tap = |yy: &Tensor, xx: &Tensor| -> Result<Tensor> {
        let idx = ((yy * w as f64)? + xx)?
            .to_dtype(DType::U32)?
            .reshape((b, 1, h * w))?
            .broadcast_as((b, c, h * w))?
            .contiguous()?;
        flat.gather(&idx, 2)?.reshape((b, c, h, w))
    };
    let one = |t: &Tensor| t.affine(-1.0, 1.0);
    let wgt = |p: &Tensor, q: &Tensor| -> Result<Tensor> { (p * q)?.unsqueeze(1) };
    let v = tap(&yt, &xl)?.broadcast_mul(&wgt(&one(&al)?, &one(&be)?)?)?;
    let v = (v + tap(&yt, &xr)?.broadcast_mul(&wgt(&al, &one(&be)?)?)?)?;
    let v = (v + tap(&yb, &xl)?.broadcast_mul(&wgt(&one(&al)?, &be)?)?)?;
    v + tap(&yb, &xr)?.broadcast_mul(&wgt(&al, &be)?)?
}

// ---------------------------------------------------------------------------------------------
// Channel norm
// ---------------------------------------------------------------------------------------------

/// `channelnorm_kernel.cu` with norm degree 2: the L2 norm over channels, `[B, C, H, W]` ->
/// `[B, 1, H, W]` (no epsilon).
#[derive(Clone, Copy, Debug)]
struct ChannelNorm;

impl CustomOp1 for ChannelNorm {
    fn name(&self) -> &'static str {
        "flownet2-channelnorm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let [b, c, h, w] = dims4(l.shape(), "channelnorm")?;
        let x = f32_slice(s, l, "channelnorm")?;
        let hw = h * w;
        let mut out = vec![0f32; b * hw];
        out.par_chunks_mut(hw).enumerate().for_each(|(n, o)| {
            for ch in 0..c {
                let plane = &x[(n * c + ch) * hw..][..hw];
                for (acc, &v) in o.iter_mut().zip(plane) {
                    *acc += v * v;
                }
            }
            for v in o.iter_mut() {
                *v = v.sqrt();
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, 1, h, w))))
    }
}

/// L2 norm over the channel axis, keeping it (size 1).
pub fn channel_norm(x: &Tensor) -> Result<Tensor> {
    dims4(x.shape(), "channelnorm")?;
    if use_custom(x) {
        x.contiguous()?.apply_op1_no_bwd(&ChannelNorm)
    } else {
        channel_norm_reference(x)
    }
}

pub fn channel_norm_reference(x: &Tensor) -> Result<Tensor> {
    x.sqr()?.sum_keepdim(1)?.sqrt()
}
