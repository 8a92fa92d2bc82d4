//! 3D max pooling (any kernel/stride/padding, padding counts as -inf, floor mode) and adaptive
//! average pooling (PyTorch's bins), as candle `CustomOp1`s with backward.
//! Max-pool backward holds no argmax indices: it recomputes the separable passes' intermediate
//! maxima and routes each gradient back through the passes in reverse (T, then H, then W) to the
//! first tap equal to the pass's maximum. The first matching row, then the first matching
//! column in it, is the first maximum in (t, h, w) scan order, the input a direct scan picks.

use super::{cpu_slice, dims5, uninit_vec, use_custom, valid_range, with_cpu_data, SendPtr};
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

/// One separable pass along the middle axis of an `[outer, n, inner]` array: window `win`
/// (kernel, stride, padding), `no` outputs.
#[derive(Clone, Copy, Debug)]
struct Pass {
    outer: usize,
    n: usize,
    inner: usize,
    win: (usize, usize, usize),
    no: usize,
}

/// 1D max over the windows of pass `ps`.
fn pool_axis(v: &[f32], ps: Pass) -> Vec<f32> {
    let (outer, n, inner, no) = (ps.outer, ps.n, ps.inner, ps.no);
    let (k, s, p) = ps.win;
    let mut out_v = vec![f32::NEG_INFINITY; outer * no * inner];
    for o in 0..outer {
        for oi in 0..no {
            let start = (oi * s) as isize - p as isize;
            let lo = start.max(0) as usize;
            let hi = ((start + k as isize).min(n as isize)).max(lo as isize + 1) as usize;
            let dst = &mut out_v[(o * no + oi) * inner..][..inner];
            // The first valid tap initialises (padding never wins).
            dst.copy_from_slice(&v[(o * n + lo) * inner..][..inner]);
            for j in lo + 1..hi {
                for (d, &x) in dst.iter_mut().zip(&v[(o * n + j) * inner..][..inner]) {
                    *d = if x > *d { x } else { *d };
                }
            }
        }
    }
    out_v
}

/// Reverse of [`pool_axis`]: adds each output's gradient `g` to the first tap of its window
/// whose value in `v` equals the output `best`. Lanes run over `inner` (contiguous).
fn route_axis(v: &[f32], best: &[f32], g: &[f32], ps: Pass) -> Vec<f32> {
    let (outer, n, inner, no) = (ps.outer, ps.n, ps.inner, ps.no);
    let (k, s, p) = ps.win;
    let mut gin = vec![0f32; outer * n * inner];
    let mut done = vec![false; inner];
    for o in 0..outer {
        for oi in 0..no {
            let at = (o * no + oi) * inner;
            let (b, go) = (&best[at..][..inner], &g[at..][..inner]);
            done.fill(false);
            for j in 0..k {
                let Some(i) = (oi * s + j).checked_sub(p).filter(|&i| i < n) else {
                    continue;
                };
                let src = (o * n + i) * inner;
                let (vr, gr) = (&v[src..][..inner], &mut gin[src..][..inner]);
                for ((((gv, &x), &bv), &gov), d) in
                    gr.iter_mut().zip(vr).zip(b).zip(go).zip(done.iter_mut())
                {
                    let m = !*d & (x == bv);
                    *gv += if m { gov } else { 0.0 };
                    *d |= m;
                }
            }
        }
    }
    gin
}

/// The taps of a W pass (windows along rows of length `n`) in the row's phase split: column
/// `q*s + r` goes to phase `r`, index `q`, so tap `j` of output `o` (column `o*s + j - p`) sits
/// at a fixed offset from `o` in one phase and every tap is a contiguous slice. With `s == 1`
/// the split is the row itself.
struct WTaps {
    s: usize,
    /// Length of a phase.
    plen: usize,
    /// Per tap: the outputs `[lo, hi)` it reaches and where output `lo`'s input sits in the split.
    taps: Vec<(usize, usize, usize)>,
}

impl WTaps {
    fn new(n: usize, (k, s, p): (usize, usize, usize), no: usize) -> Self {
        let plen = n.div_ceil(s);
        let taps = (0..k)
            .filter_map(|j| {
                let (lo, hi) = valid_range(no, s, j, p, n);
                let c = j as isize - p as isize;
                let (phase, q) = (c.rem_euclid(s as isize), c.div_euclid(s as isize));
                // valid_range keeps lo + q >= 0 (q is negative only at the left border).
                (lo < hi).then(|| (lo, hi, phase as usize * plen + (lo as isize + q) as usize))
            })
            .collect();
        Self { s, plen, taps }
    }

    /// Scratch length for [`split`](Self::split) and [`merge`](Self::merge).
    fn buf_len(&self) -> usize {
        if self.s == 1 {
            0
        } else {
            self.s * self.plen
        }
    }

    fn split<'a>(&self, row: &'a [f32], buf: &'a mut [f32]) -> &'a [f32] {
        match self.s {
            1 => return row,
            2 => to_phases::<2>(row, buf, self.plen),
            s => to_phases_dyn(row, s, buf, self.plen),
        }
        buf
    }

    /// The inverse of [`split`](Self::split) (for `s > 1`).
    fn merge(&self, ph: &[f32], row: &mut [f32]) {
        match self.s {
            2 => from_phases::<2>(ph, self.plen, row),
            s => from_phases_dyn(ph, self.plen, s, row),
        }
    }
}

/// The W pass: per output, the max over its window (padding never wins). Tap-major and
/// branchless over contiguous slices, so it vectorises for any stride.
fn pool_w(v: &[f32], rows: usize, n: usize, axis: (usize, usize, usize), no: usize) -> Vec<f32> {
    let wt = WTaps::new(n, axis, no);
    let mut out_v = uninit_vec(rows * no);
    let mut buf = vec![0f32; wt.buf_len()];
    for r in 0..rows {
        let ph = wt.split(&v[r * n..][..n], &mut buf);
        let ov = &mut out_v[r * no..][..no];
        ov.fill(f32::NEG_INFINITY);
        for &(lo, hi, start) in &wt.taps {
            for (d, &x) in ov[lo..hi].iter_mut().zip(&ph[start..][..hi - lo]) {
                *d = if x > *d { x } else { *d };
            }
        }
    }
    out_v
}

/// `ph[phase * plen + q] = row[q * S + phase]` (a constant `S` lets the split vectorise).
fn to_phases<const S: usize>(row: &[f32], ph: &mut [f32], plen: usize) {
    let full = row.len() / S;
    for (q, cols) in row.chunks_exact(S).enumerate() {
        for phase in 0..S {
            ph[phase * plen + q] = cols[phase];
        }
    }
    for (phase, &x) in row[full * S..].iter().enumerate() {
        ph[phase * plen + full] = x;
    }
}

fn to_phases_dyn(row: &[f32], s: usize, ph: &mut [f32], plen: usize) {
    for (q, cols) in row.chunks(s).enumerate() {
        for (phase, &x) in cols.iter().enumerate() {
            ph[phase * plen + q] = x;
        }
    }
}

/// The inverse of [`to_phases`].
fn from_phases<const S: usize>(ph: &[f32], plen: usize, row: &mut [f32]) {
    let full = row.len() / S;
    for (q, cols) in row.chunks_exact_mut(S).enumerate() {
        for phase in 0..S {
            cols[phase] = ph[phase * plen + q];
        }
    }
    for (phase, x) in row[full * S..].iter_mut().enumerate() {
        *x = ph[phase * plen + full];
    }
}

fn from_phases_dyn(ph: &[f32], plen: usize, s: usize, row: &mut [f32]) {
    for (q, cols) in row.chunks_mut(s).enumerate() {
        for (phase, x) in cols.iter_mut().enumerate() {
            *x = ph[phase * plen + q];
        }
    }
}

/// Reverse of [`pool_w`]: adds each output's gradient to the first column of its window equal
/// to its maximum (taps in column order, a `done` flag per output).
fn route_w(
    v: &[f32],
    best: &[f32],
    g: &[f32],
    rows: usize,
    n: usize,
    axis: (usize, usize, usize),
    no: usize,
) -> Vec<f32> {
    let wt = WTaps::new(n, axis, no);
    let mut gin = vec![0f32; rows * n];
    let (mut buf, mut gbuf) = (vec![0f32; wt.buf_len()], vec![0f32; wt.buf_len()]);
    let mut done = vec![false; no];
    let route = |ph: &[f32], b: &[f32], go: &[f32], done: &mut [bool], gph: &mut [f32]| {
        for &(lo, hi, start) in &wt.taps {
            let len = hi - lo;
            for ((((gv, &x), &bv), &gov), d) in gph[start..][..len]
                .iter_mut()
                .zip(&ph[start..][..len])
                .zip(&b[lo..hi])
                .zip(&go[lo..hi])
                .zip(&mut done[lo..hi])
            {
                let m = !*d & (x == bv);
                *gv += if m { gov } else { 0.0 };
                *d |= m;
            }
        }
    };
    for r in 0..rows {
        let ph = wt.split(&v[r * n..][..n], &mut buf);
        let (b, go) = (&best[r * no..][..no], &g[r * no..][..no]);
        let gin_row = &mut gin[r * n..][..n];
        done.fill(false);
        if wt.s == 1 {
            route(ph, b, go, &mut done, gin_row);
        } else {
            gbuf.fill(0.0);
            route(ph, b, go, &mut done, &mut gbuf);
            wt.merge(&gbuf, gin_row);
        }
    }
    gin
}

impl PoolGeo {
    fn axis(&self, d: usize) -> (usize, usize, usize) {
        (self.k[d], self.s[d], self.p[d])
    }

    /// The H pass over a plane's W-pooled rows.
    fn h_pass(&self) -> Pass {
        Pass {
            outer: self.i[0],
            n: self.i[1],
            inner: self.o[2],
            win: self.axis(1),
            no: self.o[1],
        }
    }

    /// The T pass over a plane's W- and H-pooled frames.
    fn t_pass(&self) -> Pass {
        Pass {
            outer: 1,
            n: self.i[0],
            inner: self.o[1] * self.o[2],
            win: self.axis(0),
            no: self.o[0],
        }
    }

    /// Whether the T pass is the identity (the 1x3x3 spatial pools): then it is skipped.
    fn t_identity(&self) -> bool {
        self.axis(0) == (1, 1, 0)
    }

    /// The W and H passes of separable max pooling over one plane (their outputs).
    fn wh_passes(&self, xp: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let [it, ih, iw] = self.i;
        let ow = self.o[2];
        let v1 = pool_w(xp, it * ih, iw, self.axis(2), ow);
        let v2 = pool_axis(&v1, self.h_pass());
        (v1, v2)
    }

    /// Max pooling of one plane: W pass, then H, then T.
    fn pool_plane(&self, xp: &[f32]) -> Vec<f32> {
        let (_, v2) = self.wh_passes(xp);
        if self.t_identity() {
            v2
        } else {
            pool_axis(&v2, self.t_pass())
        }
    }

    /// Gradient of one plane (`y`, `g`: its pooled output and that output's gradient), routed
    /// back through the T, H and W passes in turn.
    fn route_plane(&self, xp: &[f32], y: &[f32], g: &[f32]) -> Vec<f32> {
        let [it, ih, iw] = self.i;
        let ow = self.o[2];
        let (v1, v2) = self.wh_passes(xp);
        let g2 = if self.t_identity() {
            std::borrow::Cow::Borrowed(g)
        } else {
            std::borrow::Cow::Owned(route_axis(&v2, y, g, self.t_pass()))
        };
        let g1 = route_axis(&v1, &v2, &g2, self.h_pass());
        route_w(xp, &v1, &g1, it * ih, iw, self.axis(2), ow)
    }
}

pub fn max_pool3d_fwd_cpu(g: &PoolGeo, x: &[f32]) -> Vec<f32> {
    let (iv, ov) = (g.ivol(), g.ovol());
    let mut out = uninit_vec(g.planes * ov);
    out.par_chunks_mut(ov).enumerate().for_each(|(pl, o)| {
        o.copy_from_slice(&g.pool_plane(&x[pl * iv..][..iv]));
    });
    out
}

/// Gradient of max pooling, from the input `x`, the pooled output `y` and its gradient `gout`.
pub fn max_pool3d_bwd_cpu(g: &PoolGeo, x: &[f32], y: &[f32], gout: &[f32]) -> Vec<f32> {
    let (iv, ov) = (g.ivol(), g.ovol());
    let mut gx = uninit_vec(g.planes * iv);
    gx.par_chunks_mut(iv).enumerate().for_each(|(pl, gxp)| {
        let (yp, gp) = (&y[pl * ov..][..ov], &gout[pl * ov..][..ov]);
        gxp.copy_from_slice(&g.route_plane(&x[pl * iv..][..iv], yp, gp));
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

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = self.geo(x.shape())?;
        let gx = with_cpu_data(x, |xs| {
            with_cpu_data(res, |ys| {
                with_cpu_data(grad, |gs| Ok(max_pool3d_bwd_cpu(&g, xs, ys, gs)))
            })
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
