//! 3D convolution (no bias) as a candle `CustomOp2` with an analytic backward.
//!
//! Forward, per output frame and tile of output rows: the input patch is unfolded into a
//! `[Cin*kt*kh*kw, P]` buffer (all temporal taps at once, so one GEMM with inner dimension
//! `27*Cin`) and multiplied by the `[Cout, K]` weight matrix straight into the output.
//! 1x1x1 convolutions skip the unfolding: plain matmuls over the whole volume.
//! Backward: grad-weight uses the same unfolding (partial sums over a fixed split, added in a
//! fixed order); grad-input works per *input* frame (race-free): for each temporal tap that
//! reaches it, `W_dt^T * grad_out` then a scatter-add (col2im) into that frame.

use super::{
    dims5, fixed_chunks, sgemm, uninit_vec, use_custom, valid_range, Cpu2, F32In, F32Op2, F32Out,
    SendPtr, Strided, REDUCE_PARTS,
};
use candle_core::{bail, Result, Shape, Tensor};
use rayon::prelude::*;

/// Output pixels per unfolded tile (keeps the column buffer in L2/L3: ~1k pixels x 27*Cin).
const TILE_PIX: usize = 1024;
/// Tile of the grad-weight pass: smaller tiles measured faster there (b4 at 10x64x64,
/// 48->64 channels, one thread: 472 -> 428 ms; the stem 148 -> 128 ms), while the forward
/// (stem 97 -> 118 ms) and grad-input passes prefer 1024.
const TILE_PIX_BWD_W: usize = 512;
/// Pixels per task for the 1x1x1 path.
const PW_TILE: usize = 4096;

/// Geometry of one conv3d call.
#[derive(Clone, Copy, Debug)]
pub struct Geo {
    pub b: usize,
    pub cin: usize,
    pub t: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub k: [usize; 3],
    pub s: [usize; 3],
    pub p: [usize; 3],
    pub to: usize,
    pub ho: usize,
    pub wo: usize,
}

fn out_len(n: usize, k: usize, s: usize, p: usize, what: &str) -> Result<usize> {
    if s == 0 {
        bail!("conv3d: stride 0 on {what}");
    }
    if n + 2 * p < k {
        bail!(
            "conv3d: kernel {k} larger than padded input {} on {what}",
            n + 2 * p
        );
    }
    Ok((n + 2 * p - k) / s + 1)
}

impl Geo {
    pub fn new(x: [usize; 5], w: [usize; 5], s: [usize; 3], p: [usize; 3]) -> Result<Self> {
        let [b, cin, t, h, wd] = x;
        let [cout, wcin, kt, kh, kw] = w;
        if wcin != cin {
            bail!("conv3d: input has {cin} channels, weight expects {wcin}");
        }
        Ok(Self {
            b,
            cin,
            t,
            h,
            w: wd,
            cout,
            k: [kt, kh, kw],
            s,
            p,
            to: out_len(t, kt, s[0], p[0], "T")?,
            ho: out_len(h, kh, s[1], p[1], "H")?,
            wo: out_len(wd, kw, s[2], p[2], "W")?,
        })
    }
    fn kvol(&self) -> usize {
        self.k[0] * self.k[1] * self.k[2]
    }
    fn kdim(&self) -> usize {
        self.cin * self.kvol()
    }
    fn pointwise(&self) -> bool {
        self.k == [1, 1, 1] && self.s == [1, 1, 1] && self.p == [0, 0, 0]
    }
    /// Column tiles of `PW_TILE` voxels per batch item (pointwise path).
    fn pw_tiles(&self) -> usize {
        self.in_vol().div_ceil(PW_TILE)
    }
    /// Pointwise task `task`'s (batch item, first voxel, voxel count).
    fn pw_tile(&self, task: usize) -> (usize, usize, usize) {
        let nt = self.pw_tiles();
        let (bi, tile) = (task / nt, task % nt);
        let p0 = tile * PW_TILE;
        (bi, p0, PW_TILE.min(self.in_vol() - p0))
    }
    fn hwo(&self) -> usize {
        self.ho * self.wo
    }
    fn in_vol(&self) -> usize {
        self.t * self.h * self.w
    }
    fn out_vol(&self) -> usize {
        self.to * self.hwo()
    }
    fn rows_per_tile(&self) -> usize {
        self.rows_per(TILE_PIX)
    }
    fn n_tiles(&self) -> usize {
        self.ho.div_ceil(self.rows_per_tile())
    }
    fn tile_rows(&self, tile: usize) -> (usize, usize) {
        self.rows_of(tile, self.rows_per_tile())
    }
    fn rows_per(&self, pix: usize) -> usize {
        (pix / self.wo.max(1)).clamp(1, self.ho.max(1))
    }
    fn rows_of(&self, tile: usize, r: usize) -> (usize, usize) {
        (tile * r, ((tile + 1) * r).min(self.ho))
    }
    pub fn out_shape(&self) -> Shape {
        Shape::from((self.b, self.cout, self.to, self.ho, self.wo))
    }
}

/// Unfolds rows `r0..r1` of output frame `oti` of one batch item into `col` ([K, P] row-major).
fn fill_col(g: &Geo, xb: &[f32], oti: usize, r0: usize, r1: usize, col: &mut [f32]) {
    let [kt, kh, kw] = g.k;
    let [st, sh, sw] = g.s;
    let [pt, ph, pw] = g.p;
    let np = (r1 - r0) * g.wo;
    let hw = g.h * g.w;
    let mut row = 0;
    for ci in 0..g.cin {
        for dt in 0..kt {
            let ti = (oti * st + dt) as isize - pt as isize;
            let tvalid = ti >= 0 && (ti as usize) < g.t;
            for dh in 0..kh {
                for dw in 0..kw {
                    let dst = &mut col[row * np..(row + 1) * np];
                    row += 1;
                    if !tvalid {
                        dst.fill(0.0);
                        continue;
                    }
                    let frame = &xb[(ci * g.t + ti as usize) * hw..][..hw];
                    let (lo, hi) = valid_range(g.wo, sw, dw, pw, g.w);
                    for (r, oh) in (r0..r1).enumerate() {
                        let d = &mut dst[r * g.wo..(r + 1) * g.wo];
                        let ih = (oh * sh + dh) as isize - ph as isize;
                        if ih < 0 || ih as usize >= g.h {
                            d.fill(0.0);
                            continue;
                        }
                        let src = &frame[ih as usize * g.w..][..g.w];
                        d[..lo].fill(0.0);
                        d[hi..].fill(0.0);
                        if sw == 1 && hi > lo {
                            let start = lo + dw - pw;
                            d[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                        } else {
                            for ow in lo..hi {
                                d[ow] = src[ow * sw + dw - pw];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Scatter-adds `colg` ([Cin*kh*kw, P], one temporal tap) into input frame `ti` of one batch
/// item (`gxb` points at the batch item's gradient).
fn add_col(g: &Geo, colg: &[f32], gxb: SendPtr, ti: usize, r0: usize, r1: usize) {
    let [_, kh, kw] = g.k;
    let [_, sh, sw] = g.s;
    let [_, ph, pw] = g.p;
    let np = (r1 - r0) * g.wo;
    let hw = g.h * g.w;
    let mut row = 0;
    for ci in 0..g.cin {
        // SAFETY: frame (ci, ti) of this batch item is written by this task only.
        let frame = unsafe { gxb.slice((ci * g.t + ti) * hw, hw) };
        for dh in 0..kh {
            for dw in 0..kw {
                let src = &colg[row * np..(row + 1) * np];
                row += 1;
                let (lo, hi) = valid_range(g.wo, sw, dw, pw, g.w);
                for (r, oh) in (r0..r1).enumerate() {
                    let ih = (oh * sh + dh) as isize - ph as isize;
                    if ih < 0 || ih as usize >= g.h {
                        continue;
                    }
                    let dst = &mut frame[ih as usize * g.w..][..g.w];
                    let s = &src[r * g.wo..(r + 1) * g.wo];
                    if sw == 1 && hi > lo {
                        let start = lo + dw - pw;
                        for (d, v) in dst[start..start + hi - lo].iter_mut().zip(&s[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for ow in lo..hi {
                            dst[ow * sw + dw - pw] += s[ow];
                        }
                    }
                }
            }
        }
    }
}

/// A pointwise conv (or its input gradient) as one GEMM per column tile: for each batch item,
/// `out (m x vol) = w (m x k) * src (k x vol)`, with `w` stored `[m, k]`, or `[k, m]` when
/// `transposed`. Writes every element of `out`.
fn pointwise_gemm(
    g: &Geo,
    out: &mut [f32],
    (m, k): (usize, usize),
    (w, transposed): (&[f32], bool),
    src: &[f32],
) {
    let vol = g.in_vol();
    let outp = SendPtr(out.as_mut_ptr());
    (0..g.b * g.pw_tiles()).into_par_iter().for_each(|task| {
        let (bi, p0, np) = g.pw_tile(task);
        let lhs = if transposed {
            Strided::cols(w.as_ptr(), m)
        } else {
            Strided::rows(w.as_ptr(), k)
        };
        // SAFETY: each task writes its own columns p0..p0+np of batch item bi.
        unsafe {
            sgemm(
                [m, np, k],
                Strided::rows(outp.ptr().add(bi * m * vol + p0), vol),
                false,
                lhs,
                Strided::rows(src.as_ptr().add(bi * k * vol + p0), vol),
            );
        }
    });
}

pub fn conv3d_fwd_cpu(g: &Geo, x: &[f32], w: &[f32]) -> Vec<f32> {
    // Every element is written by one GEMM (accumulate = false): no zero fill needed.
    let mut out = uninit_vec(g.b * g.cout * g.out_vol());
    let (cin, cout, kd) = (g.cin, g.cout, g.kdim());
    if g.pointwise() {
        pointwise_gemm(g, &mut out, (cout, cin), (w, false), x);
        return out;
    }
    let outp = SendPtr(out.as_mut_ptr());
    let nt = g.n_tiles();
    let (ovol, hwo, ivol) = (g.out_vol(), g.hwo(), g.in_vol());
    (0..g.b * g.to * nt).into_par_iter().for_each_init(
        || vec![0f32; kd * g.rows_per_tile() * g.wo],
        |col, task| {
            let (bi, rest) = (task / (g.to * nt), task % (g.to * nt));
            let (oti, tile) = (rest / nt, rest % nt);
            let (r0, r1) = g.tile_rows(tile);
            let np = (r1 - r0) * g.wo;
            fill_col(g, &x[bi * cin * ivol..][..cin * ivol], oti, r0, r1, col);
            // SAFETY: rows r0..r1 of frame oti of batch item bi belong to this task.
            unsafe {
                sgemm(
                    [cout, np, kd],
                    Strided::rows(
                        outp.ptr().add(bi * cout * ovol + oti * hwo + r0 * g.wo),
                        ovol,
                    ),
                    false,
                    Strided::rows(w.as_ptr(), kd),
                    Strided::rows(col.as_ptr(), np),
                );
            }
        },
    );
    out
}

pub fn conv3d_bwd_weight_cpu(g: &Geo, x: &[f32], gout: &[f32]) -> Vec<f32> {
    let (cin, cout, kd) = (g.cin, g.cout, g.kdim());
    let partials: Vec<Vec<f32>> = if g.pointwise() {
        let vol = g.in_vol();
        fixed_chunks(g.b * g.pw_tiles(), REDUCE_PARTS)
            .into_par_iter()
            .map(|range| {
                let mut acc = vec![0f32; cout * cin];
                for task in range {
                    let (bi, p0, np) = g.pw_tile(task);
                    unsafe {
                        sgemm(
                            [cout, cin, np],
                            Strided::rows(acc.as_mut_ptr(), cin),
                            true,
                            Strided::rows(gout.as_ptr().add(bi * cout * vol + p0), vol),
                            Strided::cols(x.as_ptr().add(bi * cin * vol + p0), vol),
                        );
                    }
                }
                acc
            })
            .collect()
    } else {
        let rpt = g.rows_per(TILE_PIX_BWD_W);
        let nt = g.ho.div_ceil(rpt);
        let (ovol, hwo, ivol) = (g.out_vol(), g.hwo(), g.in_vol());
        fixed_chunks(g.b * g.to * nt, REDUCE_PARTS)
            .into_par_iter()
            .map(|range| {
                let mut acc = vec![0f32; cout * kd];
                let mut col = vec![0f32; kd * rpt * g.wo];
                for task in range {
                    let (bi, rest) = (task / (g.to * nt), task % (g.to * nt));
                    let (oti, tile) = (rest / nt, rest % nt);
                    let (r0, r1) = g.rows_of(tile, rpt);
                    let np = (r1 - r0) * g.wo;
                    fill_col(
                        g,
                        &x[bi * cin * ivol..][..cin * ivol],
                        oti,
                        r0,
                        r1,
                        &mut col,
                    );
                    unsafe {
                        sgemm(
                            [cout, kd, np],
                            Strided::rows(acc.as_mut_ptr(), kd),
                            true,
                            Strided::rows(
                                gout.as_ptr().add(bi * cout * ovol + oti * hwo + r0 * g.wo),
                                ovol,
                            ),
                            Strided::cols(col.as_ptr(), np),
                        );
                    }
                }
                acc
            })
            .collect()
    };
    let mut it = partials.into_iter();
    let mut total = it.next().unwrap_or_else(|| vec![0f32; cout * kd]);
    for p in it {
        for (a, b) in total.iter_mut().zip(&p) {
            *a += b;
        }
    }
    total
}

pub fn conv3d_bwd_input_cpu(g: &Geo, gout: &[f32], w: &[f32]) -> Vec<f32> {
    let (cin, cout, kd) = (g.cin, g.cout, g.kdim());
    // The pointwise path writes every element (one GEMM per tile); col2im adds into zeros.
    let mut gx = if g.pointwise() {
        uninit_vec(g.b * cin * g.in_vol())
    } else {
        vec![0f32; g.b * cin * g.in_vol()]
    };
    if g.pointwise() {
        pointwise_gemm(g, &mut gx, (cin, cout), (w, true), gout);
        return gx;
    }
    let gxp = SendPtr(gx.as_mut_ptr());
    let [kt, kh, kw] = g.k;
    let khw = kh * kw;
    let ks = cin * khw;
    // wt[dt] = W[:, :, dt]^T as a contiguous [Cin*kh*kw, Cout] matrix.
    let mut wt = vec![0f32; kt * ks * cout];
    for co in 0..cout {
        for ci in 0..cin {
            for dt in 0..kt {
                for dhw in 0..khw {
                    wt[(dt * ks + ci * khw + dhw) * cout + co] =
                        w[co * kd + ci * g.kvol() + dt * khw + dhw];
                }
            }
        }
    }
    let nt = g.n_tiles();
    let (ovol, hwo, ivol) = (g.out_vol(), g.hwo(), g.in_vol());
    let (st, pt) = (g.s[0], g.p[0]);
    (0..g.b * g.t).into_par_iter().for_each_init(
        || vec![0f32; ks * g.rows_per_tile() * g.wo],
        |colg, task| {
            let (bi, ti) = (task / g.t, task % g.t);
            let gxb = SendPtr(unsafe { gxp.ptr().add(bi * cin * ivol) });
            for dt in 0..kt {
                let num = (ti + pt) as isize - dt as isize;
                if num < 0 || !(num as usize).is_multiple_of(st) || num as usize / st >= g.to {
                    continue;
                }
                let oti = num as usize / st;
                for tile in 0..nt {
                    let (r0, r1) = g.tile_rows(tile);
                    let np = (r1 - r0) * g.wo;
                    unsafe {
                        sgemm(
                            [ks, np, cout],
                            Strided::rows(colg.as_mut_ptr(), np),
                            false,
                            Strided::rows(wt.as_ptr().add(dt * ks * cout), cout),
                            Strided::rows(
                                gout.as_ptr().add(bi * cout * ovol + oti * hwo + r0 * g.wo),
                                ovol,
                            ),
                        );
                    }
                    add_col(g, &colg[..ks * np], gxb, ti, r0, r1);
                }
            }
        },
    );
    gx
}

/// The conv3d custom op (CPU only; CUDA uses [`super::cudnn`] or, like other devices,
/// [`super::reference::conv3d`]).
#[derive(Clone, Copy, Debug)]
pub struct Conv3dOp {
    pub stride: [usize; 3],
    pub padding: [usize; 3],
}

impl F32Op2 for Conv3dOp {
    const NAME: &'static str = "mpf-conv3d";
    const WHAT: &'static str = "model ops";

    fn fwd(&self, (x, xs): F32In, (w, ws): F32In) -> F32Out {
        let g = Geo::new(
            dims5(xs, "conv3d input")?,
            dims5(ws, "conv3d weight")?,
            self.stride,
            self.padding,
        )?;
        Ok((conv3d_fwd_cpu(&g, x, w), g.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geo::new(
            dims5(x.shape(), "conv3d input")?,
            dims5(w.shape(), "conv3d weight")?,
            self.stride,
            self.padding,
        )?;
        let dev = x.device();
        super::with_cpu_data(grad, |gout| {
            let gw = if w.track_op() {
                let gw = super::with_cpu_data(x, |xs| Ok(conv3d_bwd_weight_cpu(&g, xs, gout)))?;
                Some(Tensor::from_vec(gw, w.shape(), dev)?)
            } else {
                None
            };
            let gx = if x.track_op() {
                let gx = super::with_cpu_data(w, |ws| Ok(conv3d_bwd_input_cpu(&g, gout, ws)))?;
                Some(Tensor::from_vec(gx, x.shape(), dev)?)
            } else {
                None
            };
            Ok((gx, gw))
        })
    }
}

/// 3D convolution without bias: `x [B, Cin, T, H, W]`, `w [Cout, Cin, kt, kh, kw]`.
/// Custom gemm kernels on CPU, cuDNN on CUDA with the `cudnn` feature, stock candle ops
/// elsewhere.
pub fn conv3d(x: &Tensor, w: &Tensor, stride: [usize; 3], padding: [usize; 3]) -> Result<Tensor> {
    if use_custom(x) {
        return x
            .contiguous()?
            .apply_op2(&w.contiguous()?, Cpu2(Conv3dOp { stride, padding }));
    }
    #[cfg(feature = "cudnn")]
    if x.device().is_cuda() && !super::reference_forced() {
        let op = super::cudnn::CudnnConv3d::forward(stride, padding);
        return x.contiguous()?.apply_op2(&w.contiguous()?, op);
    }
    super::reference::conv3d(x, w, stride, padding)
}
