//! Deterministic procedural material for tests and benchmarks: a continuous multi-octave noise
//! texture with smooth shapes, smooth known flow fields, and exact warps of both that give image
//! pairs whose true flow is known.

use crate::prep::flow::FlowField;
use crate::prep::image::Frame;

/// A continuous RGB texture: value noise over several octaves plus soft blobs and an ellipse
/// (face-like mix of fine texture and smooth shading), seeded.
#[derive(Clone, Debug)]
pub struct Texture {
    seed: u64,
    octaves: usize,
    /// Wavelength of the coarsest octave, in pixels.
    base_period: f32,
    blobs: Vec<(f32, f32, f32, [f32; 3])>,
    /// Ellipses with ~1 px soft edges (centre, radii, colour offset): the sharp structure
    /// (eyes, mouth, eyebrows) that makes a plain cross-fade ghost.
    ellipses: Vec<(f32, f32, f32, f32, [f32; 3])>,
}

fn hash(mut x: u64) -> u64 {
    // splitmix64 finaliser
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn unit(h: u64) -> f32 {
    (h >> 40) as f32 / (1u64 << 24) as f32
}

impl Texture {
    /// A texture for frames of about `w` x `h` pixels.
    pub fn new(w: usize, h: usize, seed: u64) -> Self {
        let mut blobs = Vec::new();
        for k in 0..6u64 {
            let r = |j: u64| unit(hash(seed ^ (k * 16 + j + 1000)));
            blobs.push((
                r(0) * w as f32,
                r(1) * h as f32,
                (0.08 + 0.15 * r(2)) * w.min(h) as f32,
                [r(3) - 0.5, r(4) - 0.5, r(5) - 0.5],
            ));
        }
        let mut ellipses = Vec::new();
        for k in 0..8u64 {
            let r = |j: u64| unit(hash(seed ^ (k * 16 + j + 5000)));
            let s = w.min(h) as f32;
            ellipses.push((
                r(0) * w as f32,
                r(1) * h as f32,
                (0.04 + 0.12 * r(2)) * s,
                (0.03 + 0.08 * r(3)) * s,
                [0.6 * (r(4) - 0.5), 0.6 * (r(5) - 0.5), 0.6 * (r(6) - 0.5)],
            ));
        }
        Self {
            seed,
            octaves: 5,
            base_period: 32.0,
            blobs,
            ellipses,
        }
    }

    fn lattice(&self, o: usize, i: i64, j: i64, c: usize) -> f32 {
        let k = (i as u64).wrapping_mul(0x1_0000_01B3)
            ^ (j as u64).wrapping_mul(0x9E37_79B1)
            ^ ((o * 4 + c) as u64) << 56;
        unit(hash(k ^ self.seed)) - 0.5
    }

    fn noise(&self, o: usize, x: f32, y: f32, c: usize) -> f32 {
        let (xf, yf) = (x.floor(), y.floor());
        let (i, j) = (xf as i64, yf as i64);
        let s = |t: f32| t * t * t * (t * (t * 6.0 - 15.0) + 10.0);
        let (fx, fy) = (s(x - xf), s(y - yf));
        let a = self.lattice(o, i, j, c) * (1.0 - fx) + self.lattice(o, i + 1, j, c) * fx;
        let b = self.lattice(o, i, j + 1, c) * (1.0 - fx) + self.lattice(o, i + 1, j + 1, c) * fx;
        a * (1.0 - fy) + b * fy
    }

    /// RGB value at a real position.
    pub fn at(&self, x: f32, y: f32) -> [f32; 3] {
        let mut out = [0.5f32; 3];
        for (c, o) in out.iter_mut().enumerate() {
            let mut period = self.base_period;
            let mut amp = 0.35;
            for oct in 0..self.octaves {
                // Channels share most of the structure (like a real photo).
                let shared = self.noise(oct, x / period, y / period, 0);
                let own = self.noise(oct, x / period, y / period, c + 1);
                *o += amp * (0.8 * shared + 0.2 * own);
                period /= 2.0;
                amp *= 0.65;
            }
            for &(bx, by, r, col) in &self.blobs {
                let d2 = ((x - bx).powi(2) + (y - by).powi(2)) / (r * r);
                *o += 0.5 * col[c] * (-d2).exp();
            }
            for &(ex, ey, rx, ry, col) in &self.ellipses {
                // Signed distance to the ellipse edge (approximate, in pixels).
                let q = ((x - ex) / rx).hypot((y - ey) / ry);
                let dist = (1.0 - q) * rx.min(ry);
                *o += col[c] / (1.0 + (-dist / 0.5).exp());
            }
        }
        out.map(|v| v.clamp(0.0, 1.0))
    }

    /// The texture integrated over pixels centred at `x + flow(x)` (`None`: no displacement):
    /// `out(x) = T(x + flow(x))`.
    pub fn render(&self, w: usize, h: usize, flow: Option<&FlowField>) -> Frame {
        let mut f = Frame::new(w, h, 3);
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let (dx, dy) = flow.map_or((0.0, 0.0), |f| (f.u[i], f.v[i]));
                // 3x3 samples over the pixel's area, as a camera integrates light (point
                // samples of the finest octaves would alias and bias sub-pixel motion).
                let mut acc = [0.0f32; 3];
                for sy in 0..3 {
                    for sx in 0..3 {
                        let (ox, oy) = ((sx as f32 - 1.0) / 3.0, (sy as f32 - 1.0) / 3.0);
                        let v = self.at(x as f32 + dx + ox, y as f32 + dy + oy);
                        acc.iter_mut().zip(v).for_each(|(a, b)| *a += b / 9.0);
                    }
                }
                f.data[i * 3..i * 3 + 3].copy_from_slice(&acc);
            }
        }
        f
    }
}

/// A smooth flow field whose vectors are at most `max_mag` pixels long (reached somewhere),
/// built from a few low-frequency sinusoids (seeded phases).
pub fn smooth_field(w: usize, h: usize, max_mag: f32, seed: u64) -> FlowField {
    let ph: Vec<f32> = (0..4)
        .map(|k| unit(hash(seed.wrapping_add(77 + k))) * std::f32::consts::TAU)
        .collect();
    let tau = std::f32::consts::TAU;
    let mut f = FlowField::zeros(w, h);
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f32 / w as f32, y as f32 / h as f32);
            let i = y * w + x;
            f.u[i] = (tau * 0.9 * xf + ph[0]).sin() * (tau * 0.6 * yf + ph[1]).cos();
            f.v[i] = (tau * 0.7 * yf + ph[2]).sin() * (tau * 0.8 * xf + ph[3]).cos();
        }
    }
    let m = f.max_magnitude().max(1e-6);
    f.scaled(max_mag / m)
}

/// Catmull-Rom bicubic sample of every channel of `frame` at (x, y), border clamped; used to
/// treat a real photo as a continuous image when building pairs with known motion.
pub fn sample_bicubic(frame: &Frame, x: f32, y: f32, out: &mut [f32]) {
    let (w, h, c) = (frame.width, frame.height, frame.channels);
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (xf, yf) = (x.floor(), y.floor());
    let cw = |t: f32| {
        let (t2, t3) = (t * t, t * t * t);
        [
            0.5 * (-t3 + 2.0 * t2 - t),
            0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
            0.5 * (-3.0 * t3 + 4.0 * t2 + t),
            0.5 * (t3 - t2),
        ]
    };
    let (wx, wy) = (cw(x - xf), cw(y - yf));
    out[..c].iter_mut().for_each(|o| *o = 0.0);
    for (j, wyj) in wy.iter().enumerate() {
        let yy = (yf as isize + j as isize - 1).clamp(0, h as isize - 1) as usize;
        for (i, wxi) in wx.iter().enumerate() {
            let xx = (xf as isize + i as isize - 1).clamp(0, w as isize - 1) as usize;
            for (ch, o) in out[..c].iter_mut().enumerate() {
                *o += wyj * wxi * frame.data[(yy * w + xx) * c + ch];
            }
        }
    }
}

/// `out(x) = frame(x + flow(x))` with bicubic sampling (values clipped to [0, 1]).
pub fn warp_bicubic(frame: &Frame, flow: &FlowField) -> Frame {
    let mut out = Frame::new(frame.width, frame.height, frame.channels);
    let c = frame.channels;
    for y in 0..frame.height {
        for x in 0..frame.width {
            let i = y * frame.width + x;
            let px = &mut out.data[i * c..i * c + c];
            sample_bicubic(frame, x as f32 + flow.u[i], y as f32 + flow.v[i], px);
            px.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        }
    }
    out
}

fn lanczos3(t: f32) -> f32 {
    let t = t.abs();
    if t < 1e-6 {
        1.0
    } else if t >= 3.0 {
        0.0
    } else {
        let pt = std::f32::consts::PI * t;
        3.0 * pt.sin() * (pt / 3.0).sin() / (pt * pt)
    }
}

/// `out(x) = frame(x + flow(x))` with Lanczos-3 (windowed sinc) sampling, normalised weights,
/// border clamped, values clipped to [0, 1]. A resampling model unlike the bicubic/bilinear
/// interpolation inside the flow estimators, so ground-truth pairs do not favour one of them.
pub fn warp_lanczos3(frame: &Frame, flow: &FlowField) -> Frame {
    let (w, h, c) = (frame.width, frame.height, frame.channels);
    let mut out = Frame::new(w, h, c);
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let (sx, sy) = (x as f32 + flow.u[i], y as f32 + flow.v[i]);
            let (fx, fy) = (sx.floor(), sy.floor());
            let mut acc = [0.0f32; 3];
            let mut wsum = 0.0f32;
            for j in -2..=3isize {
                let wy = lanczos3(sy - (fy + j as f32));
                let yy = (fy as isize + j).clamp(0, h as isize - 1) as usize;
                for k in -2..=3isize {
                    let wgt = wy * lanczos3(sx - (fx + k as f32));
                    let xx = (fx as isize + k).clamp(0, w as isize - 1) as usize;
                    for (ch, a) in acc[..c].iter_mut().enumerate() {
                        *a += wgt * frame.data[(yy * w + xx) * c + ch];
                    }
                    wsum += wgt;
                }
            }
            for (ch, a) in acc[..c].iter().enumerate() {
                out.data[i * c + ch] = (a / wsum).clamp(0.0, 1.0);
            }
        }
    }
    out
}

/// Removes coloured marks from a grey photo: pixels whose channels differ by more than 0.15
/// (e.g. the red face boxes drawn into rustface's `test.png`) are filled from their unmarked
/// neighbours, ring by ring, and the result is grey. For building clean real-image test pairs.
pub fn remove_colour_marks(frame: &Frame) -> Frame {
    let (w, h) = (frame.width, frame.height);
    let grey = crate::prep::image::to_gray(frame);
    let mut val = grey.data.clone();
    let mut known: Vec<bool> = if frame.channels == 3 {
        frame
            .data
            .chunks_exact(3)
            .map(|p| {
                let (lo, hi) = (p[0].min(p[1]).min(p[2]), p[0].max(p[1]).max(p[2]));
                hi - lo <= 0.15
            })
            .collect()
    } else {
        vec![true; w * h]
    };
    loop {
        let mut filled = Vec::new();
        for y in 0..h {
            for x in 0..w {
                if known[y * w + x] {
                    continue;
                }
                let (mut s, mut n) = (0.0f32, 0);
                for dy in -1..=1isize {
                    for dx in -1..=1isize {
                        let (xx, yy) = (x as isize + dx, y as isize + dy);
                        if xx < 0 || yy < 0 || xx >= w as isize || yy >= h as isize {
                            continue;
                        }
                        let j = yy as usize * w + xx as usize;
                        if known[j] {
                            s += val[j];
                            n += 1;
                        }
                    }
                }
                if n > 0 {
                    filled.push((y * w + x, s / n as f32));
                }
            }
        }
        if filled.is_empty() {
            break;
        }
        for (i, v) in filled {
            val[i] = v;
            known[i] = true;
        }
    }
    Frame {
        width: w,
        height: h,
        channels: 1,
        data: val,
    }
    .to_rgb()
}
