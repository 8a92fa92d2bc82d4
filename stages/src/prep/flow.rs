//! Dense optical flow: the `FlowEstimator` trait, TV-L1 (Zach, Pock & Bischof 2007, as detailed
//! by Sanchez, Meinhardt-Llopis & Facciolo, IPOL 2013, and as OpenCV's `DualTVL1OpticalFlow`
//! runs it), and the bilinear backward `warp` every other stage uses.

use crate::prep::image::{resize, to_gray, Frame};
use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// A dense flow field in pixels: pixel `x` of the first frame moves to `x + (u, v)` in the second.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowField {
    pub width: usize,
    pub height: usize,
    pub u: Vec<f32>,
    pub v: Vec<f32>,
}

impl FlowField {
    pub fn zeros(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            u: vec![0.0; width * height],
            v: vec![0.0; width * height],
        }
    }

    /// The field multiplied by `s`.
    pub fn scaled(&self, s: f32) -> FlowField {
        FlowField {
            width: self.width,
            height: self.height,
            u: self.u.iter().map(|a| a * s).collect(),
            v: self.v.iter().map(|a| a * s).collect(),
        }
    }

    /// `a * self + b * other` (same size).
    pub fn combine(&self, a: f32, other: &FlowField, b: f32) -> FlowField {
        assert_eq!((self.width, self.height), (other.width, other.height));
        FlowField {
            width: self.width,
            height: self.height,
            u: self
                .u
                .iter()
                .zip(&other.u)
                .map(|(x, y)| a * x + b * y)
                .collect(),
            v: self
                .v
                .iter()
                .zip(&other.v)
                .map(|(x, y)| a * x + b * y)
                .collect(),
        }
    }

    /// Largest vector length.
    pub fn max_magnitude(&self) -> f32 {
        self.u
            .iter()
            .zip(&self.v)
            .map(|(u, v)| u.hypot(*v))
            .fold(0.0, f32::max)
    }

    /// Mean end-point error against `truth` (same size).
    pub fn epe(&self, truth: &FlowField) -> f32 {
        assert_eq!((self.width, self.height), (truth.width, truth.height));
        let s: f64 = (0..self.u.len())
            .map(|i| ((self.u[i] - truth.u[i]).hypot(self.v[i] - truth.v[i])) as f64)
            .sum();
        (s / self.u.len() as f64) as f32
    }

    /// Bilinear sample of both components at a real position (clamped to the border).
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> (f32, f32) {
        let (i0, i1, j0, j1, fx, fy) = bilinear_taps(x, y, self.width, self.height);
        let w = self.width;
        let s = |a: &[f32]| {
            let top = a[j0 * w + i0] * (1.0 - fx) + a[j0 * w + i1] * fx;
            let bot = a[j1 * w + i0] * (1.0 - fx) + a[j1 * w + i1] * fx;
            top * (1.0 - fy) + bot * fy
        };
        (s(&self.u), s(&self.v))
    }
}

/// Anything that estimates dense flow from frame `a` to frame `b` (same size, any channels).
pub trait FlowEstimator: Send + Sync {
    fn flow(&self, a: &Frame, b: &Frame) -> Result<FlowField>;
    /// A name that identifies the estimator and its parameters (for cache keys and reports).
    fn name(&self) -> String;
}

/// Refuses a pair of frames of different sizes (`who` names the estimator).
pub fn check_same_size(who: &str, a: &Frame, b: &Frame) -> Result<()> {
    if a.width != b.width || a.height != b.height {
        bail!(
            "{who} needs frames of one size, got {}x{} and {}x{}",
            a.width,
            a.height,
            b.width,
            b.height
        );
    }
    Ok(())
}

/// TV-L1 parameters. Defaults follow OpenCV's `DualTVL1OpticalFlow` (median filtering 5,
/// 30 inner x 10 outer = at most 300 iterations per warp) except `scale_step` (OpenCV: 0.8;
/// 0.5 here: ~25% faster, ~20% higher EPE on 128x128 faces, see examples/bench_prep.rs) and
/// `interpolation` (B-spline; OpenCV and IPOL: bicubic, ~15% higher EPE here).
/// Intensities are scaled to [0, 255] internally, the range `lambda` is tuned for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TvL1Params {
    /// Time step of the dual (ROF) update; stable for tau <= 0.25.
    pub tau: f32,
    /// Weight of the data term (smaller: smoother flow).
    pub lambda: f32,
    /// Coupling between the flow `u` and its auxiliary copy `v`.
    pub theta: f32,
    /// Pyramid levels (fewer when a level would drop below `min_size` pixels).
    pub nscales: usize,
    /// Re-linearisations (warps) per level.
    pub warps: usize,
    /// Stop when the mean squared flow update per pixel falls below epsilon^2.
    pub epsilon: f32,
    /// Iterations between median filterings of the flow.
    pub inner_iterations: usize,
    /// Median filterings per warp; at most inner x outer (300 by default) iterations per warp.
    pub outer_iterations: usize,
    /// Size ratio between pyramid levels.
    pub scale_step: f32,
    /// Median filter size applied to the flow every `inner_iterations` (1: off; OpenCV: 5).
    pub median_filtering: usize,
    /// Smallest side a pyramid level may have.
    pub min_size: usize,
    /// How the second image is sampled at the warped positions.
    pub interpolation: WarpInterpolation,
}

/// Sampling of the second image at warped positions inside TV-L1.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WarpInterpolation {
    /// Catmull-Rom bicubic of the image and of its central-difference gradient (IPOL, OpenCV).
    Bicubic,
    /// Prefiltered cubic B-spline (Unser 1999): value and exact gradient of one smooth
    /// interpolant; less sub-pixel bias towards half-pixel positions than Catmull-Rom.
    #[default]
    Bspline,
}

impl Default for TvL1Params {
    fn default() -> Self {
        Self {
            tau: 0.25,
            lambda: 0.15,
            theta: 0.3,
            nscales: 5,
            warps: 5,
            epsilon: 0.01,
            inner_iterations: 30,
            outer_iterations: 10,
            scale_step: 0.5,
            median_filtering: 5,
            min_size: 8,
            interpolation: WarpInterpolation::default(),
        }
    }
}

/// TV-L1 optical flow on the grey version of the input frames.
#[derive(Clone, Debug, Default)]
pub struct TvL1 {
    pub params: TvL1Params,
}

/// Rows per parallel band. Fixed (not derived from the thread count) so the per-band error sums,
/// and thus the stopping iteration, are the same on any machine.
const BAND: usize = 8;
/// Levels with fewer pixels than this run on one thread (rayon overhead dominates below).
const PAR_MIN_PIXELS: usize = 64 * 64;

/// Runs `f(first_row, band)` over bands of `BAND` rows of `buf` (`per_row` items per row), in
/// parallel for large images, and sums what it returns in band order.
fn over_bands<T: Send>(
    buf: &mut [T],
    per_row: usize,
    f: impl Fn(usize, &mut [T]) -> f64 + Sync + Send,
) -> f64 {
    let chunk = BAND * per_row;
    let parts: Vec<f64> = if buf.len() >= PAR_MIN_PIXELS {
        buf.par_chunks_mut(chunk)
            .enumerate()
            .map(|(b, band)| f(b * BAND, band))
            .collect()
    } else {
        buf.chunks_mut(chunk)
            .enumerate()
            .map(|(b, band)| f(b * BAND, band))
            .collect()
    };
    parts.iter().sum()
}

impl TvL1 {
    pub fn new(params: TvL1Params) -> Self {
        Self { params }
    }

    /// Flow between two single-channel images of intensities in [0, 255].
    pub fn flow_gray(&self, w: usize, h: usize, i0: &[f32], i1: &[f32]) -> FlowField {
        let p = &self.params;
        // Pyramid: each level resized from the previous one (area averaging), as OpenCV.
        let mut levels: Vec<(usize, usize, Vec<f32>, Vec<f32>)> =
            vec![(w, h, i0.to_vec(), i1.to_vec())];
        for s in 1..p.nscales.max(1) {
            let f = (p.scale_step as f64).powi(s as i32);
            let (ws, hs) = (
                (w as f64 * f).round() as usize,
                (h as f64 * f).round() as usize,
            );
            if ws.min(hs) < p.min_size.max(2) {
                break;
            }
            let prev = levels.last().unwrap();
            let down = |img: &[f32]| {
                let fr = Frame {
                    width: prev.0,
                    height: prev.1,
                    channels: 1,
                    data: img.to_vec(),
                };
                resize(&fr, ws, hs).data
            };
            let (a, b) = (down(&prev.2), down(&prev.3));
            levels.push((ws, hs, a, b));
        }
        let mut flow: Option<FlowField> = None;
        for (lw, lh, a, b) in levels.iter().rev() {
            let mut u = match flow.take() {
                None => FlowField::zeros(*lw, *lh),
                Some(c) => upsample_flow(&c, *lw, *lh),
            };
            self.solve_level(*lw, *lh, a, b, &mut u);
            flow = Some(u);
        }
        flow.unwrap()
    }

    /// The warps and primal-dual iterations of one pyramid level, refining `flow` in place.
    fn solve_level(&self, w: usize, h: usize, i0: &[f32], i1: &[f32], flow: &mut FlowField) {
        let p = &self.params;
        let n = w * h;
        let bspline = p.interpolation == WarpInterpolation::Bspline;
        let (i1x, i1y) = if bspline {
            (bspline_prefilter(w, h, i1), Vec::new())
        } else {
            centered_gradient(w, h, i1)
        };
        let target = Target {
            w,
            h,
            i0,
            i1,
            i1x: &i1x,
            i1y: &i1y,
            bspline,
        };
        let step = Step {
            w,
            h,
            lt: p.lambda * p.theta,
            taut: p.tau / p.theta,
            theta: p.theta,
        };
        let eps = (p.epsilon as f64).powi(2) * n as f64;
        // Interleaved state: u = (u1, u2), dual p = (p11, p12, p21, p22).
        let mut u: Vec<[f32; 2]> = (0..n).map(|i| [flow.u[i], flow.v[i]]).collect();
        let mut dual = vec![[0.0f32; 4]; n];
        // Per warp: (I1x, I1y, |grad|^2, rho_c) at the warped positions.
        let mut data = vec![[0.0f32; 4]; n];
        for _warp in 0..p.warps {
            over_bands(&mut data, w, |y0, band| target.linearise(&u, y0, band));
            let mut error = f64::MAX;
            let mut outer = 0;
            while error > eps && outer < p.outer_iterations {
                outer += 1;
                if p.median_filtering > 1 {
                    u = median_filter(w, h, &u, p.median_filtering);
                }
                let mut inner = 0;
                while error > eps && inner < p.inner_iterations {
                    inner += 1;
                    // (a) thresholding step for v, then u = v + theta div p.
                    error = over_bands(&mut u, w, |y0, band| step.primal(&dual, &data, y0, band));
                    // (b) dual (ROF) step: p = (p + taut grad u) / (1 + taut |grad u|).
                    over_bands(&mut dual, w, |y0, band| step.dual(&u, y0, band));
                }
            }
        }
        for (i, [a, b]) in u.into_iter().enumerate() {
            flow.u[i] = a;
            flow.v[i] = b;
        }
    }
}

/// The second frame of a level (and its interpolation tables) that the first is matched to.
struct Target<'a> {
    w: usize,
    h: usize,
    i0: &'a [f32],
    i1: &'a [f32],
    /// B-spline coefficients, or the x gradient for bicubic warping.
    i1x: &'a [f32],
    /// The y gradient for bicubic warping (empty for B-spline).
    i1y: &'a [f32],
    bspline: bool,
}

impl Target<'_> {
    /// The data term linearised at flow `u` for rows `y0..` (`band`): (I1x, I1y, |grad|^2,
    /// rho_c) at the warped positions.
    fn linearise(&self, u: &[[f32; 2]], y0: usize, band: &mut [[f32; 4]]) -> f64 {
        let (w, h) = (self.w, self.h);
        for (r, row) in band.chunks_mut(w).enumerate() {
            let y = y0 + r;
            for (x, d) in row.iter_mut().enumerate() {
                let i = y * w + x;
                let [u1, u2] = u[i];
                let (wx, wy) = (x as f32 + u1, y as f32 + u2);
                let [iw, ix, iy] = if self.bspline {
                    bspline_sample(w, h, self.i1x, wx, wy)
                } else {
                    bicubic3(w, h, self.i1, self.i1x, self.i1y, wx, wy)
                };
                let grad = ix * ix + iy * iy;
                *d = [ix, iy, grad, iw - ix * u1 - iy * u2 - self.i0[i]];
            }
        }
        0.0
    }
}

/// The primal-dual iteration's constants on one level: `lt` = lambda theta, `taut` = tau / theta.
struct Step {
    w: usize,
    h: usize,
    lt: f32,
    taut: f32,
    theta: f32,
}

impl Step {
    /// Thresholding step for v, then u = v + theta div p, over rows `y0..` of `u` (`band`);
    /// returns the band's squared change of u.
    fn primal(
        &self,
        dual: &[[f32; 4]],
        data: &[[f32; 4]],
        y0: usize,
        band: &mut [[f32; 2]],
    ) -> f64 {
        let (w, lt, theta) = (self.w, self.lt, self.theta);
        let mut err = 0.0f64;
        for (r, row) in band.chunks_mut(w).enumerate() {
            let y = y0 + r;
            for (x, uu) in row.iter_mut().enumerate() {
                let i = y * w + x;
                let [ix, iy, grad, rhoc] = data[i];
                let [u1, u2] = *uu;
                let rho = rhoc + ix * u1 + iy * u2;
                let (d1, d2) = if rho < -lt * grad {
                    (lt * ix, lt * iy)
                } else if rho > lt * grad {
                    (-lt * ix, -lt * iy)
                } else if grad > 1e-10 {
                    let f = -rho / grad;
                    (f * ix, f * iy)
                } else {
                    (0.0, 0.0)
                };
                let pc = dual[i];
                let pl = if x > 0 { dual[i - 1] } else { [0.0; 4] };
                let pu = if y > 0 { dual[i - w] } else { [0.0; 4] };
                let div1 = pc[0] - pl[0] + pc[1] - pu[1];
                let div2 = pc[2] - pl[2] + pc[3] - pu[3];
                let n1 = u1 + d1 + theta * div1;
                let n2 = u2 + d2 + theta * div2;
                err += ((n1 - u1) * (n1 - u1) + (n2 - u2) * (n2 - u2)) as f64;
                *uu = [n1, n2];
            }
        }
        err
    }

    /// Dual (ROF) step p = (p + taut grad u) / (1 + taut |grad u|) over rows `y0..` of the
    /// dual (`band`).
    fn dual(&self, u: &[[f32; 2]], y0: usize, band: &mut [[f32; 4]]) -> f64 {
        let (w, h, taut) = (self.w, self.h, self.taut);
        for (r, row) in band.chunks_mut(w).enumerate() {
            let y = y0 + r;
            for (x, pp) in row.iter_mut().enumerate() {
                let i = y * w + x;
                let c = u[i];
                let r = if x + 1 < w { u[i + 1] } else { c };
                let d = if y + 1 < h { u[i + w] } else { c };
                let (u1x, u1y) = (r[0] - c[0], d[0] - c[0]);
                let (u2x, u2y) = (r[1] - c[1], d[1] - c[1]);
                let ng1 = 1.0 + taut * (u1x * u1x + u1y * u1y).sqrt();
                let ng2 = 1.0 + taut * (u2x * u2x + u2y * u2y).sqrt();
                *pp = [
                    (pp[0] + taut * u1x) / ng1,
                    (pp[1] + taut * u1y) / ng1,
                    (pp[2] + taut * u2x) / ng2,
                    (pp[3] + taut * u2y) / ng2,
                ];
            }
        }
        0.0
    }
}

impl FlowEstimator for TvL1 {
    fn flow(&self, a: &Frame, b: &Frame) -> Result<FlowField> {
        check_same_size("TV-L1", a, b)?;
        if a.width < 2 || a.height < 2 {
            bail!(
                "TV-L1 needs frames of at least 2x2, got {}x{}",
                a.width,
                a.height
            );
        }
        let g = |f: &Frame| -> Vec<f32> { to_gray(f).data.iter().map(|v| v * 255.0).collect() };
        Ok(self.flow_gray(a.width, a.height, &g(a), &g(b)))
    }

    fn name(&self) -> String {
        let p = &self.params;
        format!(
            "tvl1(tau={},lambda={},theta={},nscales={},warps={},epsilon={},inner={},outer={},scale_step={},median={},min_size={},interp={:?})",
            p.tau,
            p.lambda,
            p.theta,
            p.nscales,
            p.warps,
            p.epsilon,
            p.inner_iterations,
            p.outer_iterations,
            p.scale_step,
            p.median_filtering,
            p.min_size,
            p.interpolation
        )
    }
}

/// Bilinear resize of a coarse flow to `w` x `h`, rescaling the vectors by the size ratio.
fn upsample_flow(c: &FlowField, w: usize, h: usize) -> FlowField {
    let up = |d: &[f32], s: f32| -> Vec<f32> {
        let fr = Frame {
            width: c.width,
            height: c.height,
            channels: 1,
            data: d.to_vec(),
        };
        resize(&fr, w, h).data.into_iter().map(|v| v * s).collect()
    };
    FlowField {
        width: w,
        height: h,
        u: up(&c.u, w as f32 / c.width as f32),
        v: up(&c.v, h as f32 / c.height as f32),
    }
}

/// Central differences, one-sided at the borders.
fn centered_gradient(w: usize, h: usize, img: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut gx = vec![0.0; w * h];
    let mut gy = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            let (xl, xr) = (x.saturating_sub(1), (x + 1).min(w - 1));
            let (yu, yd) = (y.saturating_sub(1), (y + 1).min(h - 1));
            gx[y * w + x] = (img[y * w + xr] - img[y * w + xl]) / (xr - xl).max(1) as f32;
            gy[y * w + x] = (img[yd * w + x] - img[yu * w + x]) / (yd - yu).max(1) as f32;
        }
    }
    (gx, gy)
}

/// Cubic B-spline coefficients of an image (separable recursive prefilter, pole sqrt(3) - 2,
/// mirror boundaries), so that the B-spline through them interpolates the samples.
fn bspline_prefilter(w: usize, h: usize, img: &[f32]) -> Vec<f32> {
    fn line(c: &mut [f32]) {
        let n = c.len();
        if n < 2 {
            return;
        }
        let z = 3.0f32.sqrt() - 2.0;
        c.iter_mut().for_each(|v| *v *= 6.0);
        // Causal init: truncated sum for mirror-symmetric extension.
        let horizon = n.min(24);
        let (mut zk, mut sum) = (z, c[0]);
        for v in c.iter().take(horizon).skip(1) {
            sum += zk * v;
            zk *= z;
        }
        c[0] = sum;
        for k in 1..n {
            c[k] += z * c[k - 1];
        }
        c[n - 1] = (z / (z * z - 1.0)) * (c[n - 1] + z * c[n - 2]);
        for k in (0..n - 1).rev() {
            c[k] = z * (c[k + 1] - c[k]);
        }
    }
    let mut c = img.to_vec();
    for row in c.chunks_mut(w) {
        line(row);
    }
    let mut col = vec![0.0f32; h];
    for x in 0..w {
        for y in 0..h {
            col[y] = c[y * w + x];
        }
        line(&mut col);
        for y in 0..h {
            c[y * w + x] = col[y];
        }
    }
    c
}

/// Whole-sample mirror of index `i` into 0..n (the prefilter's boundary condition).
#[inline]
fn mirror(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let i = i.abs();
    (if i >= n { (2 * n - 2 - i).max(0) } else { i }) as usize
}

/// Value and gradient of the cubic B-spline with coefficients `c` at (x, y), clamped.
#[inline]
fn bspline_sample(w: usize, h: usize, c: &[f32], x: f32, y: f32) -> [f32; 3] {
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (xf, yf) = (x.floor(), y.floor());
    let wts = |t: f32| {
        let (t2, t3, s) = (t * t, t * t * t, 1.0 - t);
        (
            [
                s * s * s / 6.0,
                (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
                (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
                t3 / 6.0,
            ],
            [
                -0.5 * s * s,
                1.5 * t2 - 2.0 * t,
                -1.5 * t2 + t + 0.5,
                0.5 * t2,
            ],
        )
    };
    let ((wx, dwx), (wy, dwy)) = (wts(x - xf), wts(y - yf));
    let (xi, yi) = (xf as isize, yf as isize);
    let mut out = [0.0f32; 3];
    for j in 0..4 {
        let yy = mirror(yi + j as isize - 1, h) * w;
        let (mut v, mut d) = (0.0f32, 0.0f32);
        for i in 0..4 {
            let cv = c[yy + mirror(xi + i as isize - 1, w)];
            v += wx[i] * cv;
            d += dwx[i] * cv;
        }
        out[0] += wy[j] * v;
        out[1] += wy[j] * d;
        out[2] += dwy[j] * v;
    }
    out
}

/// Catmull-Rom weights for the 4 taps around a fractional offset `t` in [0, 1).
#[inline]
fn cubic_weights(t: f32) -> [f32; 4] {
    let t2 = t * t;
    let t3 = t2 * t;
    [
        0.5 * (-t3 + 2.0 * t2 - t),
        0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
        0.5 * (-3.0 * t3 + 4.0 * t2 + t),
        0.5 * (t3 - t2),
    ]
}

/// Bicubic (Catmull-Rom) samples of three same-size images at one position, border clamped.
#[inline]
fn bicubic3(w: usize, h: usize, a: &[f32], b: &[f32], c: &[f32], x: f32, y: f32) -> [f32; 3] {
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (xf, yf) = (x.floor(), y.floor());
    let (wx, wy) = (cubic_weights(x - xf), cubic_weights(y - yf));
    let (xi, yi) = (xf as isize, yf as isize);
    let mut out = [0.0f32; 3];
    for (j, wyj) in wy.iter().enumerate() {
        let yy = (yi + j as isize - 1).clamp(0, h as isize - 1) as usize * w;
        let mut row = [0.0f32; 3];
        for (i, wxi) in wx.iter().enumerate() {
            let k = yy + (xi + i as isize - 1).clamp(0, w as isize - 1) as usize;
            row[0] += wxi * a[k];
            row[1] += wxi * b[k];
            row[2] += wxi * c[k];
        }
        for q in 0..3 {
            out[q] += wyj * row[q];
        }
    }
    out
}

/// Devillard's 99-comparator network whose element 12 is the median of 25 ("Fast median
/// search", 1998, after Paeth); checked exhaustively with the 0-1 principle.
const MED25: [(u8, u8); 99] = [
    (0, 1),
    (3, 4),
    (2, 4),
    (2, 3),
    (6, 7),
    (5, 7),
    (5, 6),
    (9, 10),
    (8, 10),
    (8, 9),
    (12, 13),
    (11, 13),
    (11, 12),
    (15, 16),
    (14, 16),
    (14, 15),
    (18, 19),
    (17, 19),
    (17, 18),
    (21, 22),
    (20, 22),
    (20, 21),
    (23, 24),
    (2, 5),
    (3, 6),
    (0, 6),
    (0, 3),
    (4, 7),
    (1, 7),
    (1, 4),
    (11, 14),
    (8, 14),
    (8, 11),
    (12, 15),
    (9, 15),
    (9, 12),
    (13, 16),
    (10, 16),
    (10, 13),
    (20, 23),
    (17, 23),
    (17, 20),
    (21, 24),
    (18, 24),
    (18, 21),
    (19, 22),
    (8, 17),
    (9, 18),
    (0, 18),
    (0, 9),
    (10, 19),
    (1, 19),
    (1, 10),
    (11, 20),
    (2, 20),
    (2, 11),
    (12, 21),
    (3, 21),
    (3, 12),
    (13, 22),
    (4, 22),
    (4, 13),
    (14, 23),
    (5, 23),
    (5, 14),
    (15, 24),
    (6, 24),
    (6, 15),
    (7, 16),
    (7, 19),
    (13, 21),
    (15, 23),
    (7, 13),
    (7, 15),
    (1, 9),
    (3, 11),
    (5, 17),
    (11, 17),
    (9, 17),
    (4, 10),
    (6, 12),
    (7, 14),
    (4, 6),
    (4, 7),
    (12, 14),
    (10, 14),
    (6, 7),
    (10, 12),
    (6, 10),
    (6, 17),
    (12, 17),
    (7, 17),
    (7, 10),
    (12, 18),
    (7, 12),
    (10, 18),
    (12, 20),
    (10, 20),
    (10, 12),
];

/// Pixels per vector of the lane-parallel 5x5 median (both flow components: 2 x LANES lanes).
const LANES: usize = 8;

/// 5x5 median of row `y` of both flow components, border replicated: the network runs on
/// 2 x 8 lanes at once (8 pixels, 2 components), which the compiler turns into SIMD min/max.
fn median5_row(w: usize, h: usize, u: &[[f32; 2]], y: usize, out: &mut [[f32; 2]]) {
    // The 5 source rows, border-replicated and padded so each window tap is a plain slice.
    let pw = w + 4 + LANES;
    let mut pad = vec![0.0f32; 2 * 5 * pw];
    for dy in 0..5 {
        let yy = (y as isize + dy as isize - 2).clamp(0, h as isize - 1) as usize * w;
        for xi in 0..pw {
            let q = u[yy + (xi as isize - 2).clamp(0, w as isize - 1) as usize];
            pad[dy * pw + xi] = q[0];
            pad[(5 + dy) * pw + xi] = q[1];
        }
    }
    let mut p = [[0.0f32; 2 * LANES]; 25];
    let mut x0 = 0;
    while x0 < w {
        let n = LANES.min(w - x0);
        for dy in 0..5 {
            for dx in 0..5 {
                let slot = &mut p[dy * 5 + dx];
                let s0 = dy * pw + x0 + dx;
                let s1 = (5 + dy) * pw + x0 + dx;
                slot[..LANES].copy_from_slice(&pad[s0..s0 + LANES]);
                slot[LANES..].copy_from_slice(&pad[s1..s1 + LANES]);
            }
        }
        for &(a, b) in MED25.iter() {
            let (a, b) = (a as usize, b as usize);
            let (lo, hi) = if a < b {
                let (l, r) = p.split_at_mut(b);
                (&mut l[a], &mut r[0])
            } else {
                let (l, r) = p.split_at_mut(a);
                (&mut r[0], &mut l[b])
            };
            for l in 0..2 * LANES {
                let (x, y) = (lo[l], hi[l]);
                lo[l] = x.min(y);
                hi[l] = x.max(y);
            }
        }
        for l in 0..n {
            out[x0 + l] = [p[12][l], p[12][LANES + l]];
        }
        x0 += LANES;
    }
}

#[cfg(test)]
fn median25(p: &mut [f32; 25]) -> f32 {
    for &(a, b) in MED25.iter() {
        let (x, y) = (p[a as usize], p[b as usize]);
        p[a as usize] = x.min(y);
        p[b as usize] = x.max(y);
    }
    p[12]
}

/// `k` x `k` median of each flow component, border replicated (OpenCV `medianBlur`).
fn median_filter(w: usize, h: usize, u: &[[f32; 2]], k: usize) -> Vec<[f32; 2]> {
    let r = (k / 2) as isize;
    let mut out = vec![[0.0f32; 2]; w * h];
    if k == 5 {
        over_bands(&mut out, w, |y0, band| {
            for (j, row) in band.chunks_mut(w).enumerate() {
                median5_row(w, h, u, y0 + j, row);
            }
            0.0
        });
        return out;
    }
    over_bands(&mut out, w, |y0, band| {
        let mut win = Vec::with_capacity(k * k);
        for (q, o) in band.iter_mut().enumerate() {
            let i = y0 * w + q;
            let (x, y) = ((i % w) as isize, (i / w) as isize);
            for c in 0..2 {
                win.clear();
                for dy in -r..=r {
                    let yy = (y + dy).clamp(0, h as isize - 1) as usize;
                    for dx in -r..=r {
                        let xx = (x + dx).clamp(0, w as isize - 1) as usize;
                        win.push(u[yy * w + xx][c]);
                    }
                }
                let mid = win.len() / 2;
                let (_, m, _) = win.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
                o[c] = *m;
            }
        }
        0.0
    });
    out
}

/// Bilinear tap indices and fractions at (x, y), clamped to the image.
#[inline]
fn bilinear_taps(x: f32, y: f32, w: usize, h: usize) -> (usize, usize, usize, usize, f32, f32) {
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (i0, j0) = (x.floor() as usize, y.floor() as usize);
    let (i1, j1) = ((i0 + 1).min(w - 1), (j0 + 1).min(h - 1));
    (i0, i1, j0, j1, x - i0 as f32, y - j0 as f32)
}

/// Bilinear sample of every channel of `frame` at (x, y), border clamped.
#[inline]
pub fn sample_bilinear(frame: &Frame, x: f32, y: f32, out: &mut [f32]) {
    let (i0, i1, j0, j1, fx, fy) = bilinear_taps(x, y, frame.width, frame.height);
    let c = frame.channels;
    let w = frame.width;
    let d = &frame.data;
    for ch in 0..c {
        let top = d[(j0 * w + i0) * c + ch] * (1.0 - fx) + d[(j0 * w + i1) * c + ch] * fx;
        let bot = d[(j1 * w + i0) * c + ch] * (1.0 - fx) + d[(j1 * w + i1) * c + ch] * fx;
        out[ch] = top * (1.0 - fy) + bot * fy;
    }
}

/// Backward warp: `out(x) = frame(x + flow(x))`, bilinear, border clamped.
pub fn warp(frame: &Frame, flow: &FlowField) -> Result<Frame> {
    warp_scaled(frame, flow, 1.0)
}

/// Backward warp by `s * flow`: `out(x) = frame(x + s flow(x))`, bilinear, border clamped.
pub fn warp_scaled(frame: &Frame, flow: &FlowField, s: f32) -> Result<Frame> {
    if frame.width != flow.width || frame.height != flow.height {
        bail!(
            "warp: frame is {}x{} but flow is {}x{}",
            frame.width,
            frame.height,
            flow.width,
            flow.height
        );
    }
    let (w, c) = (frame.width, frame.channels);
    let mut out = Frame::new(w, frame.height, c);
    out.data
        .par_chunks_mut(w * c * BAND)
        .enumerate()
        .for_each(|(b, band)| {
            for (k, px) in band.chunks_exact_mut(c).enumerate() {
                let i = b * BAND * w + k;
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                sample_bilinear(frame, x + s * flow.u[i], y + s * flow.v[i], px);
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warp_by_integer_translation() {
        let mut f = Frame::new(6, 5, 1);
        for (i, v) in f.data.iter_mut().enumerate() {
            *v = i as f32 / 30.0;
        }
        let mut fl = FlowField::zeros(6, 5);
        fl.u.iter_mut().for_each(|u| *u = 1.0);
        fl.v.iter_mut().for_each(|v| *v = 0.5);
        let o = warp(&f, &fl).unwrap();
        // out(x, y) = f(x + 1, y + 0.5) = mean of rows y and y+1 at column x+1.
        for y in 0..4 {
            for x in 0..5 {
                let e = 0.5 * (f.get(x + 1, y, 0) + f.get(x + 1, y + 1, 0));
                assert!((o.get(x, y, 0) - e).abs() < 1e-6);
            }
        }
        // Border clamp: the last column samples the last column.
        assert!((o.get(5, 0, 0) - 0.5 * (f.get(5, 0, 0) + f.get(5, 1, 0))).abs() < 1e-6);
    }

    #[test]
    fn median25_network_matches_selection() {
        let mut state = 12345u64;
        for _ in 0..2000 {
            let mut p = [0.0f32; 25];
            for v in p.iter_mut() {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *v = ((state >> 33) % 7) as f32; // many ties
            }
            let mut q = p.to_vec();
            q.sort_by(|a, b| a.total_cmp(b));
            assert_eq!(median25(&mut p), q[12]);
        }
    }

    #[test]
    fn median5_matches_generic_median() {
        let (w, h) = (19, 11);
        let u: Vec<[f32; 2]> = (0..w * h)
            .map(|i| [((i * 37) % 23) as f32, ((i * 11) % 7) as f32 - 3.0])
            .collect();
        let fast = median_filter(w, h, &u, 5);
        for y in 0..h {
            for x in 0..w {
                for c in 0..2 {
                    let mut win = Vec::new();
                    for dy in -2..=2isize {
                        for dx in -2..=2isize {
                            let yy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
                            let xx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
                            win.push(u[yy * w + xx][c]);
                        }
                    }
                    win.sort_by(|a, b| a.total_cmp(b));
                    assert_eq!(fast[y * w + x][c], win[12]);
                }
            }
        }
    }

    #[test]
    fn bspline_interpolates_and_differentiates() {
        let (w, h) = (12, 30);
        let img: Vec<f32> = (0..w * h)
            .map(|i| ((i % w) as f32 * 0.7).sin() * 20.0 + (i / w) as f32 * 3.0)
            .collect();
        let c = bspline_prefilter(w, h, &img);
        for y in 0..h {
            for x in 0..w {
                let [v, _, gy] = bspline_sample(w, h, &c, x as f32, y as f32);
                let want = img[y * w + x];
                assert!((v - want).abs() < 1e-3, "{v} vs {want} at {x},{y}");
                // A linear ramp in y: exact slope away from the borders.
                if (6..h - 6).contains(&y) {
                    assert!((gy - 3.0).abs() < 1e-2, "gy {gy} at {x},{y}");
                }
            }
        }
        // The gradient is the derivative of the sampled surface.
        let e = 1e-2;
        let [_, gx, _] = bspline_sample(w, h, &c, 5.3, 4.6);
        let [a, _, _] = bspline_sample(w, h, &c, 5.3 + e, 4.6);
        let [b, _, _] = bspline_sample(w, h, &c, 5.3 - e, 4.6);
        assert!((gx - (a - b) / (2.0 * e)).abs() < 1e-2);
    }

    #[test]
    fn median_removes_outlier() {
        let mut u = vec![[1.0f32, -1.0]; 49];
        u[24] = [50.0, 50.0];
        let m = median_filter(7, 7, &u, 5);
        assert_eq!(m[24], [1.0, -1.0]);
    }

    #[test]
    fn params_serde_round_trip() {
        let p = TvL1Params::default();
        let s = serde_json::to_string(&p).unwrap();
        let q: TvL1Params = serde_json::from_str(&s).unwrap();
        assert_eq!(p, q);
        let partial: TvL1Params = serde_json::from_str(r#"{"nscales": 6}"#).unwrap();
        assert_eq!(partial.nscales, 6);
        assert_eq!(partial.lambda, 0.15);
    }
}
