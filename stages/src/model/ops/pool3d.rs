//! 3D max pooling (any kernel/stride/padding, padding counts as -inf, floor mode) and adaptive
//! average pooling (PyTorch's bins), as candle `CustomOp1`s with backward.
//! Max-pool backward recomputes the argmax (first maximum in scan order) instead of storing
//! indices: one cheap pass over the input, no extra memory held by the graph.

use super::{cpu_slice, dims5, uninit_vec, use_custom, with_cpu_data, SendPtr};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct PoolGeo {
    pub planes: usize,
    pub i: [usize; 3],
    pub o: [usize; 3],
    pub k: [usize; 3],
    pub s: [usize; 3],
    pub p: [usize; 3],
}

impl PoolGeo {
    pub fn new(x: [usize; 5], k: [usize; 3], s: [usize; 3], p: [usize; 3]) -> Result<Self> {
        let mut o = [0; 3];
        for d in 0..3 {
            let n = x[d + 2];
            if s[d] == 0 || k[d] == 0 {
                bail!("max_pool3d: zero kernel or stride {k:?} {s:?}");
            }
            if 2 * p[d] > k[d] {
                bail!("max_pool3d: padding {p:?} must be at most half the kernel {k:?}");
            }
            if n + 2 * p[d] < k[d] {
                bail!("max_pool3d: kernel {k:?} larger than padded input {x:?}");
            }
            o[d] = (n + 2 * p[d] - k[d]) / s[d] + 1;
        }
        Ok(Self {
            planes: x[0] * x[1],
            i: [x[2], x[3], x[4]],
            o,
            k,
            s,
            p,
        })
    }
    fn ivol(&self) -> usize {
        self.i.iter().product()
    }
    fn ovol(&self) -> usize {
        self.o.iter().product()
    }
}

/// 1D max over windows along the middle axis of a `[outer, n, inner]` array (window
/// `k`, stride `s`, padding `p`, `no` outputs), carrying the flat input index of each maximum
/// when `idx` is given. Strict `>` keeps the first maximum, so chaining the W, H, T passes picks
/// the first maximum in (t, h, w) scan order, as a direct scan would.
#[allow(clippy::too_many_arguments)]
fn pool_axis(
    v: &[f32],
    idx: Option<&[u32]>,
    outer: usize,
    n: usize,
    inner: usize,
    (k, s, p): (usize, usize, usize),
    no: usize,
    out_v: &mut Vec<f32>,
    out_i: &mut Vec<u32>,
) {
    out_v.clear();
    out_v.resize(outer * no * inner, f32::NEG_INFINITY);
    if idx.is_some() {
        out_i.clear();
        out_i.resize(outer * no * inner, 0);
    }
    if inner == 1 {
        // Contiguous windows (the W pass): a plain scan per output.
        for o in 0..outer {
            let row = &v[o * n..][..n];
            for oi in 0..no {
                let start = (oi * s) as isize - p as isize;
                let lo = start.max(0) as usize;
                let hi = ((start + k as isize).min(n as isize)).max(lo as isize + 1) as usize;
                let (mut best, mut arg) = (row[lo], lo);
                for (j, &x) in row.iter().enumerate().take(hi).skip(lo + 1) {
                    if x > best {
                        best = x;
                        arg = j;
                    }
                }
                out_v[o * no + oi] = best;
                if let Some(ix) = idx {
                    out_i[o * no + oi] = ix[o * n + arg];
                }
            }
        }
        return;
    }
    for o in 0..outer {
        for oi in 0..no {
            let start = (oi * s) as isize - p as isize;
            let lo = start.max(0) as usize;
            let hi = ((start + k as isize).min(n as isize)).max(0) as usize;
            let dst = (o * no + oi) * inner;
            // First valid tap initialises (also gives a valid index if all are -inf).
            let src0 = (o * n + lo) * inner;
            out_v[dst..dst + inner].copy_from_slice(&v[src0..src0 + inner]);
            if let Some(ix) = idx {
                out_i[dst..dst + inner].copy_from_slice(&ix[src0..src0 + inner]);
            }
            for j in lo + 1..hi {
                let src = (o * n + j) * inner;
                if let Some(ix) = idx {
                    let (dv, di) = (&mut out_v[dst..dst + inner], &mut out_i[dst..dst + inner]);
                    let (sv, si) = (&v[src..src + inner], &ix[src..src + inner]);
                    for (((d, i), &x), &xi) in dv.iter_mut().zip(di.iter_mut()).zip(sv).zip(si) {
                        let take = x > *d;
                        *d = if take { x } else { *d };
                        *i = if take { xi } else { *i };
                    }
                } else {
                    for (d, &x) in out_v[dst..dst + inner].iter_mut().zip(&v[src..src + inner]) {
                        *d = if x > *d { x } else { *d };
                    }
                }
            }
        }
    }
}

/// Output positions `o < n_out` whose input index `o*s + d - p` lies in `[0, n_in)`.
fn valid_range(n_out: usize, s: usize, d: usize, p: usize, n_in: usize) -> (usize, usize) {
    let lo = if d >= p { 0 } else { (p - d).div_ceil(s) };
    let hi = if n_in + p > d {
        ((n_in - 1 + p - d) / s + 1).min(n_out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// The W pass (contiguous windows along rows of length `n`), without the index array the
/// general [`pool_axis`] needs (the flat input index is `row * n + column`). Values only
/// (forward): branchless and tap-major, so it vectorises. With `with_idx` (backward): a scan
/// of each output's window, as [`pool_axis`] does (a tap-major form with index blends was 1.6x
/// slower). Either way the first maximum of a window wins.
#[allow(clippy::too_many_arguments)]
fn pool_w(
    v: &[f32],
    rows: usize,
    n: usize,
    (k, s, p): (usize, usize, usize),
    no: usize,
    with_idx: bool,
    out_v: &mut Vec<f32>,
    out_i: &mut Vec<u32>,
) {
    out_v.clear();
    out_v.resize(rows * no, 0.0);
    if with_idx {
        out_i.clear();
        out_i.resize(rows * no, 0);
    }
    let first: Vec<usize> = (0..no)
        .map(|o| ((o * s) as isize - p as isize).max(0) as usize)
        .collect();
    let taps: Vec<(usize, usize)> = (0..k).map(|j| valid_range(no, s, j, p, n)).collect();
    for r in 0..rows {
        let row = &v[r * n..][..n];
        let ov = &mut out_v[r * no..][..no];
        for (d, &f) in ov.iter_mut().zip(&first) {
            *d = row[f];
        }
        if with_idx {
            // Per output, a scan of its window (branchy but short; the tap-major form with
            // index blends was 1.6x slower here).
            let base = (r * n) as u32;
            let oi = &mut out_i[r * no..][..no];
            for o in 0..no {
                let start = (o * s) as isize - p as isize;
                let lo = start.max(0) as usize;
                let hi = ((start + k as isize).min(n as isize)).max(lo as isize + 1) as usize;
                let (mut best, mut arg) = (row[lo], lo);
                for (j, &x) in row.iter().enumerate().take(hi).skip(lo + 1) {
                    if x > best {
                        best = x;
                        arg = j;
                    }
                }
                ov[o] = best;
                oi[o] = base + arg as u32;
            }
        } else {
            for (j, &(lo, hi)) in taps.iter().enumerate() {
                if lo >= hi {
                    continue;
                }
                if s == 1 {
                    let src = &row[lo + j - p..hi + j - p];
                    for (d, &x) in ov[lo..hi].iter_mut().zip(src) {
                        *d = if x > *d { x } else { *d };
                    }
                } else {
                    for o in lo..hi {
                        let x = row[o * s + j - p];
                        ov[o] = if x > ov[o] { x } else { ov[o] };
                    }
                }
            }
        }
    }
}

impl PoolGeo {
    /// Separable max pooling of one plane: W pass, then H, then T (skipped when it is the
    /// identity, e.g. the 1x3x3 spatial pools). Returns values and (when `with_idx`) the flat
    /// input index of each output's maximum.
    fn pool_plane(&self, xp: &[f32], with_idx: bool) -> (Vec<f32>, Vec<u32>) {
        let [it, ih, iw] = self.i;
        let [ot, oh, ow] = self.o;
        let axis = |d: usize| (self.k[d], self.s[d], self.p[d]);
        let (mut v1, mut i1, mut v2, mut i2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        pool_w(xp, it * ih, iw, axis(2), ow, with_idx, &mut v1, &mut i1);
        pool_axis(
            &v1,
            with_idx.then_some(&i1[..]),
            it,
            ih,
            ow,
            axis(1),
            oh,
            &mut v2,
            &mut i2,
        );
        if axis(0) == (1, 1, 0) {
            return (v2, i2);
        }
        let (mut v3, mut i3) = (Vec::new(), Vec::new());
        pool_axis(
            &v2,
            with_idx.then_some(&i2[..]),
            1,
            it,
            oh * ow,
            axis(0),
            ot,
            &mut v3,
            &mut i3,
        );
        (v3, i3)
    }
}

pub fn max_pool3d_fwd_cpu(g: &PoolGeo, x: &[f32]) -> Vec<f32> {
    let (iv, ov) = (g.ivol(), g.ovol());
    let mut out = uninit_vec(g.planes * ov);
    out.par_chunks_mut(ov).enumerate().for_each(|(pl, o)| {
        o.copy_from_slice(&g.pool_plane(&x[pl * iv..][..iv], false).0);
    });
    out
}

pub fn max_pool3d_bwd_cpu(g: &PoolGeo, x: &[f32], gout: &[f32]) -> Vec<f32> {
    let (iv, ov) = (g.ivol(), g.ovol());
    let mut gx = vec![0f32; g.planes * iv];
    gx.par_chunks_mut(iv).enumerate().for_each(|(pl, gxp)| {
        let go = &gout[pl * ov..][..ov];
        let (_, idx) = g.pool_plane(&x[pl * iv..][..iv], true);
        for (&i, &gv) in idx.iter().zip(go) {
            gxp[i as usize] += gv;
        }
    });
    gx
}

#[derive(Clone, Copy, Debug)]
pub struct MaxPool3dOp {
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
}

impl MaxPool3dOp {
    fn geo(&self, shape: &Shape) -> Result<PoolGeo> {
        PoolGeo::new(
            dims5(shape, "max_pool3d")?,
            self.kernel,
            self.stride,
            self.padding,
        )
    }
}

impl CustomOp1 for MaxPool3dOp {
    fn name(&self) -> &'static str {
        "mpf-max-pool3d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.geo(l.shape())?;
        let d = l.shape().dims();
        let out = max_pool3d_fwd_cpu(&g, cpu_slice(s, l)?);
        Ok((
            CpuStorage::F32(out),
            Shape::from((d[0], d[1], g.o[0], g.o[1], g.o[2])),
        ))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = self.geo(x.shape())?;
        let gx = with_cpu_data(x, |xs| {
            with_cpu_data(grad, |gs| Ok(max_pool3d_bwd_cpu(&g, xs, gs)))
        })?;
        Ok(Some(Tensor::from_vec(gx, x.shape(), x.device())?))
    }
}

/// 3D max pooling, `x [B, C, T, H, W]`; padding is -inf (never selected), floor mode.
pub fn max_pool3d(
    x: &Tensor,
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
) -> Result<Tensor> {
    if use_custom(x) {
        x.contiguous()?.apply_op1(MaxPool3dOp {
            kernel,
            stride,
            padding,
        })
    } else {
        super::reference::max_pool3d(x, kernel, stride, padding)
    }
}

/// PyTorch's adaptive pooling bin `[start, end)` of output `i` (of `o`) over `n` inputs.
pub fn adaptive_bin(i: usize, o: usize, n: usize) -> (usize, usize) {
    (i * n / o, ((i + 1) * n).div_ceil(o))
}

#[derive(Clone, Copy, Debug)]
pub struct AdaptiveAvgPool3dOp {
    pub out: [usize; 3],
}

impl AdaptiveAvgPool3dOp {
    /// Calls `f(out_index, input_row_start, w0, w1, scale)` for every input row of every bin.
    fn bins(&self, i: [usize; 3], mut f: impl FnMut(usize, usize, usize, usize, f32)) {
        let [_, ih, iw] = i;
        let mut oi = 0;
        for a in 0..self.out[0] {
            let (t0, t1) = adaptive_bin(a, self.out[0], i[0]);
            for b in 0..self.out[1] {
                let (h0, h1) = adaptive_bin(b, self.out[1], i[1]);
                for c in 0..self.out[2] {
                    let (w0, w1) = adaptive_bin(c, self.out[2], i[2]);
                    let scale = 1.0 / ((t1 - t0) * (h1 - h0) * (w1 - w0)) as f32;
                    for t in t0..t1 {
                        for h in h0..h1 {
                            f(oi, (t * ih + h) * iw, w0, w1, scale);
                        }
                    }
                    oi += 1;
                }
            }
        }
    }
    fn check(&self, d: [usize; 5]) -> Result<()> {
        if (0..3).any(|k| self.out[k] == 0 || self.out[k] > d[k + 2]) {
            bail!(
                "adaptive_avg_pool3d: output {:?} must be in 1..=input {:?}",
                self.out,
                &d[2..]
            );
        }
        Ok(())
    }
}

impl CustomOp1 for AdaptiveAvgPool3dOp {
    fn name(&self) -> &'static str {
        "mpf-adaptive-avg-pool3d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = dims5(l.shape(), "adaptive_avg_pool3d")?;
        self.check(d)?;
        let x = cpu_slice(s, l)?;
        let iv = d[2] * d[3] * d[4];
        let ov: usize = self.out.iter().product();
        let mut out = vec![0f32; d[0] * d[1] * ov];
        out.par_chunks_mut(ov).enumerate().for_each(|(pl, o)| {
            let xp = &x[pl * iv..][..iv];
            self.bins([d[2], d[3], d[4]], |oi, row, w0, w1, scale| {
                o[oi] += xp[row + w0..row + w1].iter().sum::<f32>() * scale;
            });
        });
        let [ot, oh, ow] = self.out;
        Ok((CpuStorage::F32(out), Shape::from((d[0], d[1], ot, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let d = dims5(x.shape(), "adaptive_avg_pool3d")?;
        let iv = d[2] * d[3] * d[4];
        let ov: usize = self.out.iter().product();
        let mut gx = vec![0f32; d[0] * d[1] * iv];
        let gxp = SendPtr(gx.as_mut_ptr());
        with_cpu_data(grad, |go| {
            (0..d[0] * d[1]).into_par_iter().for_each(|pl| {
                // SAFETY: plane pl is written by this task only.
                let gxs = unsafe { gxp.slice(pl * iv, iv) };
                let gop = &go[pl * ov..][..ov];
                self.bins([d[2], d[3], d[4]], |oi, row, w0, w1, scale| {
                    let v = gop[oi] * scale;
                    gxs[row + w0..row + w1].iter_mut().for_each(|g| *g += v);
                });
            });
            Ok(())
        })?;
        Ok(Some(Tensor::from_vec(gx, x.shape(), x.device())?))
    }
}

/// Adaptive average pooling of `x [B, C, T, H, W]` to `[B, C, out[0], out[1], out[2]]`.
pub fn adaptive_avg_pool3d(x: &Tensor, out: [usize; 3]) -> Result<Tensor> {
    if use_custom(x) {
        x.contiguous()?.apply_op1(AdaptiveAvgPool3dOp { out })
    } else {
        super::reference::adaptive_avg_pool3d(x, out)
    }
}
