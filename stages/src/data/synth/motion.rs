//! Facial actions as smooth displacement fields (sums of anisotropic Gaussian blobs), nuisance
//! motion, and the backward warp that turns them into real sub-pixel motion of the rendered face.

use super::face::Face;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Content near (x, y) moves by (dx, dy) px, weighted by a Gaussian of widths (sx, sy).
#[derive(Debug, Clone, Copy)]
pub struct Blob {
    pub x: f32,
    pub y: f32,
    pub sx: f32,
    pub sy: f32,
    pub dx: f32,
    pub dy: f32,
}

/// Builds blobs with per-blob jitter of position and strength, so that two samples of a class
/// share the action's layout but not its exact shape.
struct Builder<'a> {
    rng: &'a mut ChaCha8Rng,
    u: f32,
    amp: f32,
    /// Left/right strength, for asymmetric actions.
    side_gain: [f32; 2],
    blobs: Vec<Blob>,
}

impl Builder<'_> {
    /// A blob at `at` (px) of widths `sigma` (px at 128) moving by `d` (in units of the
    /// amplitude); `side` (-1 left, 1 right, 0 centre) picks the side gain.
    fn add(&mut self, at: (f32, f32), sigma: (f32, f32), d: (f32, f32), side: f32) {
        let j = 1.5 * self.u;
        let g = self.rng.random_range(0.7..1.3)
            * if side < 0.0 {
                self.side_gain[0]
            } else if side > 0.0 {
                self.side_gain[1]
            } else {
                1.0
            };
        self.blobs.push(Blob {
            x: at.0 + self.rng.random_range(-j..j),
            y: at.1 + self.rng.random_range(-j..j),
            sx: sigma.0 * self.u * self.rng.random_range(0.85..1.15),
            sy: sigma.1 * self.u * self.rng.random_range(0.85..1.15),
            dx: d.0 * self.amp * g,
            dy: d.1 * self.amp * g,
        });
    }
}

pub const AU_POOL: [&str; 6] = ["4", "14", "15", "7", "2", "10"];

fn others_action(b: &mut Builder, f: &Face, au: &str) {
    let (cx, u) = (f.cx, b.u);
    let side = if b.rng.random_bool(0.5) { -1.0 } else { 1.0 };
    match au {
        // Brow lowerer: inner brows down and together.
        "4" => {
            for s in [-1.0, 1.0] {
                let at = (cx + s * f.eye_dx * 0.55, f.brow_y);
                b.add(at, (5.0, 4.0), (-s * 0.45, 0.85), s);
            }
        }
        // Dimpler, one-sided: a mouth corner pulled straight outwards.
        "14" => b.add(
            (cx + side * f.mouth_w, f.mouth_y),
            (4.0, 3.5),
            (side * 1.0, 0.1),
            side,
        ),
        // Lip corner depressor.
        "15" => {
            for s in [-1.0, 1.0] {
                let at = (cx + s * f.mouth_w, f.mouth_y + 1.0 * u);
                b.add(at, (4.0, 4.0), (s * 0.2, 1.0), s);
            }
        }
        // Lid tightener: lower lids up.
        "7" => {
            for s in [-1.0, 1.0] {
                let at = (cx + s * f.eye_dx, f.eye_y + f.eye_h * 1.1);
                b.add(at, (4.0, 2.5), (0.0, -0.9), s);
            }
        }
        // Outer brow raise, one side.
        "2" => b.add(
            (cx + side * f.eye_dx * 1.35, f.brow_y),
            (5.0, 4.0),
            (0.0, -1.0),
            side,
        ),
        // Weak upper-lip raise.
        _ => b.add((cx, f.mouth_y - 2.0 * u), (6.0, 3.0), (0.0, -0.8), 0.0),
    }
}

/// AU12 lip-corner pull (up and out) + AU6 cheek raise.
fn happiness(b: &mut Builder, f: &Face) -> String {
    let cx = f.cx;
    for s in [-1.0, 1.0] {
        b.add(
            (cx + s * f.mouth_w, f.mouth_y),
            (5.0, 4.5),
            (s * 0.55, -0.85),
            s,
        );
        let cheek = (cx + s * f.ax * 0.45, f.eye_y + f.ay * 0.28);
        b.add(cheek, (8.0, 7.0), (0.0, -0.55), s);
        let lid = (cx + s * f.eye_dx, f.eye_y + f.eye_h * 1.3);
        b.add(lid, (4.0, 2.5), (0.0, -0.35), s);
    }
    "6+12".to_string()
}

/// AU1+2 brow raise (with the forehead) + AU26 jaw drop.
fn surprise(b: &mut Builder, f: &Face) -> String {
    let (cx, u) = (f.cx, b.u);
    for s in [-1.0, 1.0] {
        b.add(
            (cx + s * f.eye_dx * 0.55, f.brow_y),
            (5.0, 4.5),
            (0.0, -1.0),
            s,
        );
        b.add(
            (cx + s * f.eye_dx * 1.35, f.brow_y),
            (5.0, 4.5),
            (0.0, -0.9),
            s,
        );
    }
    b.add((cx, f.brow_y - 9.0 * u), (14.0, 6.0), (0.0, -0.4), 0.0);
    b.add(
        (cx, f.mouth_y + f.lip_lo + 2.0 * u),
        (9.0, 5.0),
        (0.0, 0.9),
        0.0,
    );
    b.add((cx, f.chin_y), (13.0, 8.0), (0.0, 0.8), 0.0);
    "1+2+26".to_string()
}

/// AU9 nose wrinkle (+ slight inner brow lowering) + AU10 upper-lip raise.
fn disgust(b: &mut Builder, f: &Face) -> String {
    let (cx, u) = (f.cx, b.u);
    for s in [-1.0, 1.0] {
        let ridge = (cx + s * f.nose_w * 0.7, f.nose_y - f.ay * 0.12);
        b.add(ridge, (3.5, 5.0), (0.0, -0.8), s);
        b.add(
            (cx + s * f.nose_w * 0.8, f.nose_y),
            (3.0, 3.0),
            (0.0, -0.5),
            s,
        );
        let brow = (cx + s * f.eye_dx * 0.5, f.brow_y + 1.0 * u);
        b.add(brow, (4.0, 3.5), (-s * 0.15, 0.4), s);
    }
    b.add((cx, f.mouth_y - 2.0 * u), (6.0, 3.0), (0.0, -1.0), 0.0);
    "9+10".to_string()
}

/// AU24 lip press (lips towards each other, corners in) + AU17 chin raise.
fn repression(b: &mut Builder, f: &Face) -> String {
    let (cx, u, my, mw) = (f.cx, b.u, f.mouth_y, f.mouth_w);
    b.add((cx, my - 2.5 * u), (mw / u * 0.8, 2.5), (0.0, 0.7), 0.0);
    b.add((cx, my + 3.0 * u), (mw / u * 0.8, 3.0), (0.0, -0.75), 0.0);
    for s in [-1.0, 1.0] {
        b.add((cx + s * mw, my), (3.5, 3.0), (-s * 0.35, 0.0), s);
    }
    b.add((cx, f.chin_y - 4.0 * u), (10.0, 6.0), (0.0, -1.0), 0.0);
    "17+24".to_string()
}

/// Others: one or two weak actions from a pool that none of the classes above uses as is.
fn others(b: &mut Builder, f: &Face) -> String {
    b.amp *= 0.75;
    let n = b.rng.random_range(1..=2);
    let mut chosen: Vec<&str> = Vec::new();
    while chosen.len() < n {
        let au = AU_POOL[b.rng.random_range(0..AU_POOL.len())];
        if !chosen.contains(&au) {
            chosen.push(au);
        }
    }
    chosen.sort();
    for au in &chosen {
        others_action(b, f, au);
    }
    chosen.join("+")
}

/// The onset->apex displacement blobs of a class (0 happiness, 1 surprise, 2 disgust,
/// 3 repression, 4 others) at peak amplitude `amp` px, and the FACS codes for the sheet.
pub fn class_action(f: &Face, class: usize, amp: f32, rng: &mut ChaCha8Rng) -> (Vec<Blob>, String) {
    let u = f.size / 128.0;
    let asym = rng.random_range(-0.25..0.25);
    let mut b = Builder {
        rng,
        u,
        amp,
        side_gain: [1.0 + asym, 1.0 - asym],
        blobs: Vec::new(),
    };
    let aus = match class {
        0 => happiness(&mut b, f),
        1 => surprise(&mut b, f),
        2 => disgust(&mut b, f),
        3 => repression(&mut b, f),
        _ => others(&mut b, f),
    };
    (b.blobs, aus)
}

/// The blink field: content above each eye moves down over it (the upper lid closing).
pub fn blink_blobs(f: &Face) -> Vec<Blob> {
    [-1.0f32, 1.0]
        .iter()
        .map(|s| Blob {
            x: f.cx + s * f.eye_dx,
            y: f.eye_y - f.eye_h * 0.3,
            sx: f.eye_w * 1.1,
            sy: f.eye_h * 1.2,
            dx: 0.0,
            dy: f.eye_h * 1.8,
        })
        .collect()
}

/// Displacement (dx, dy) per output pixel of a set of blobs.
pub fn field(blobs: &[Blob], size: usize) -> Vec<[f32; 2]> {
    let mut out = vec![[0f32; 2]; size * size];
    for b in blobs {
        let (r_x, r_y) = ((4.0 * b.sx) as i64, (4.0 * b.sy) as i64);
        let (x0, y0) = ((b.x as i64 - r_x).max(0), (b.y as i64 - r_y).max(0));
        let (x1, y1) = (
            (b.x as i64 + r_x).min(size as i64 - 1),
            (b.y as i64 + r_y).min(size as i64 - 1),
        );
        for i in y0..=y1 {
            for j in x0..=x1 {
                let (px, py) = (j as f32 + 0.5, i as f32 + 0.5);
                let w = (-((px - b.x).powi(2) / (2.0 * b.sx * b.sx)
                    + (py - b.y).powi(2) / (2.0 * b.sy * b.sy)))
                    .exp();
                let o = &mut out[i as usize * size + j as usize];
                o[0] += w * b.dx;
                o[1] += w * b.dy;
            }
        }
    }
    out
}

/// Bilinear sample of a raster (clamped at the border), raster coordinates in pixels.
#[inline]
fn bilinear(r: &[[f32; 3]], n: usize, x: f32, y: f32) -> [f32; 3] {
    let x = x.clamp(0.0, (n - 1) as f32);
    let y = y.clamp(0.0, (n - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(n - 1), (y0 + 1).min(n - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let (a, b, c, d) = (
        r[y0 * n + x0],
        r[y0 * n + x1],
        r[y1 * n + x0],
        r[y1 * n + x1],
    );
    let mut o = [0f32; 3];
    for k in 0..3 {
        let top = a[k] + (b[k] - a[k]) * fx;
        let bot = c[k] + (d[k] - c[k]) * fx;
        o[k] = top + (bot - top) * fy;
    }
    o
}

/// Global pose of one frame: rotation (radians) about `centre` and translation (px).
#[derive(Debug, Clone, Copy)]
pub struct Pose {
    pub angle: f32,
    pub tx: f32,
    pub ty: f32,
}

/// Blurs a raster with a separable [1 2 1] / 4 kernel (clamped border): the footprint filter
/// of one output pixel when the raster is twice the output size, so that a single bilinear
/// sample per output pixel does not alias.
pub fn prefilter(r: &[[f32; 3]], n: usize) -> Vec<[f32; 3]> {
    let pass = |src: &[[f32; 3]], horizontal: bool| -> Vec<[f32; 3]> {
        let mut out = vec![[0f32; 3]; n * n];
        for i in 0..n {
            for j in 0..n {
                let at = |d: isize| {
                    let (ii, jj) = if horizontal {
                        (i, (j as isize + d).clamp(0, n as isize - 1) as usize)
                    } else {
                        ((i as isize + d).clamp(0, n as isize - 1) as usize, j)
                    };
                    src[ii * n + jj]
                };
                let (a, b, c) = (at(-1), at(0), at(1));
                for k in 0..3 {
                    out[i * n + j][k] = 0.25 * a[k] + 0.5 * b[k] + 0.25 * c[k];
                }
            }
        }
        out
    };
    pass(&pass(r, true), false)
}

/// What every frame of a clip is warped from: the face raster (`factor` times the output
/// size, already [`prefilter`]ed), the head's centre and the two displacement fields.
pub struct WarpSource<'a> {
    pub raster: &'a [[f32; 3]],
    pub factor: usize,
    pub size: usize,
    pub centre: (f32, f32),
    pub local: &'a [[f32; 2]],
    pub blink: &'a [[f32; 2]],
}

/// Backward warp: output pixel p shows the raster at the point whose content moved to p,
/// i.e. `q = R(-angle) (p - t - c) + c - d(p)` with `d = local_scale * local +
/// blink_scale * blink` (first order); one bilinear sample per output pixel.
pub fn warp(src: &WarpSource, pose: Pose, local_scale: f32, blink_scale: f32) -> Vec<[f32; 3]> {
    let WarpSource {
        raster,
        factor,
        size,
        centre,
        local,
        blink,
    } = *src;
    let n = size * factor;
    let f = factor as f32;
    let (s, c) = (-pose.angle).sin_cos();
    let mut out = Vec::with_capacity(size * size);
    for i in 0..size {
        for j in 0..size {
            let k = i * size + j;
            let (px, py) = (j as f32 + 0.5, i as f32 + 0.5);
            let (rx, ry) = (px - pose.tx - centre.0, py - pose.ty - centre.1);
            let mut qx = c * rx - s * ry + centre.0;
            let mut qy = s * rx + c * ry + centre.1;
            qx -= local_scale * local[k][0] + blink_scale * blink[k][0];
            qy -= local_scale * local[k][1] + blink_scale * blink[k][1];
            out.push(bilinear(raster, n, qx * f - 0.5, qy * f - 0.5));
        }
    }
    out
}
