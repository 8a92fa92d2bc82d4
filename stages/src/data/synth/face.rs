//! Procedural faces: one per subject, rendered once at twice the output resolution and then
//! warped per frame (see `motion`). All lengths are in output pixels.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Landmarks and appearance of one synthetic subject.
#[derive(Debug, Clone)]
pub struct Face {
    pub size: f32,
    pub seed: u64,
    pub cx: f32,
    pub cy: f32,
    pub ax: f32,
    pub ay: f32,
    /// Eye centres' vertical position, horizontal offset from `cx`, half width, half height.
    pub eye_y: f32,
    pub eye_dx: f32,
    pub eye_w: f32,
    pub eye_h: f32,
    pub iris_r: f32,
    pub gaze: f32,
    pub brow_y: f32,
    pub brow_w: f32,
    pub brow_th: f32,
    pub brow_arch: f32,
    pub brow_tilt: f32,
    pub nose_y: f32,
    pub nose_w: f32,
    pub mouth_y: f32,
    pub mouth_w: f32,
    pub lip_up: f32,
    pub lip_lo: f32,
    pub smile: f32,
    pub chin_y: f32,
    pub hairline: f32,
    pub skin: [f32; 3],
    pub hair: [f32; 3],
    pub iris: [f32; 3],
    pub lip: [f32; 3],
    pub bg0: [f32; 3],
    pub bg1: [f32; 3],
    /// Light direction (in the image plane) and strength of the global gradient.
    pub light: [f32; 2],
    pub grad: [f32; 2],
    pub texture: f32,
    pub moles: Vec<(f32, f32, f32)>,
}

fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn smooth(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Coverage of a shape whose signed distance (px, negative inside) is `d`, with a one-pixel
/// anti-aliased edge.
fn cover(d: f32) -> f32 {
    1.0 - smooth(-0.6, 0.6, d)
}

/// Approximate signed distance to an ellipse, in px.
fn ellipse_d(x: f32, y: f32, cx: f32, cy: f32, a: f32, b: f32) -> f32 {
    let r = (((x - cx) / a).powi(2) + ((y - cy) / b).powi(2)).sqrt();
    (r - 1.0) * a.min(b)
}

fn scale3(c: [f32; 3], k: f32) -> [f32; 3] {
    [c[0] * k, c[1] * k, c[2] * k]
}

/// Darkens `c` by the fraction `a`.
fn dark(c: &mut [f32; 3], a: f32) {
    for v in c.iter_mut() {
        *v *= 1.0 - a;
    }
}

fn mix(c: &mut [f32; 3], with: [f32; 3], a: f32) {
    for k in 0..3 {
        c[k] += (with[k] - c[k]) * a;
    }
}

/// Integer lattice hash -> [-1, 1].
fn lattice(seed: u64, ix: i32, iy: i32, oct: u32) -> f32 {
    let mut h = seed
        ^ (ix as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (iy as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (oct as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^= h >> 33;
    (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// Smooth value noise with lattice spacing `cell` px.
pub fn value_noise(seed: u64, x: f32, y: f32, cell: f32, oct: u32) -> f32 {
    let (u, v) = (x / cell, y / cell);
    let (i, j) = (u.floor() as i32, v.floor() as i32);
    let (fu, fv) = (u - i as f32, v - j as f32);
    let (su, sv) = (fu * fu * (3.0 - 2.0 * fu), fv * fv * (3.0 - 2.0 * fv));
    let a = lattice(seed, i, j, oct);
    let b = lattice(seed, i + 1, j, oct);
    let c = lattice(seed, i, j + 1, oct);
    let d = lattice(seed, i + 1, j + 1, oct);
    (a + (b - a) * su) * (1.0 - sv) + (c + (d - c) * su) * sv
}

impl Face {
    /// A random face for an output of `size` x `size` pixels.
    pub fn random(rng: &mut ChaCha8Rng, size: u32, seed: u64) -> Self {
        let s = size as f32;
        let u = s / 128.0;
        let cx = s / 2.0 + rng.random_range(-2.0..2.0) * u;
        let cy = s / 2.0 + rng.random_range(1.0..5.0) * u;
        let ax = s * rng.random_range(0.33..0.38);
        let ay = s * rng.random_range(0.42..0.47);
        let eye_y = cy - ay * rng.random_range(0.16..0.23);
        let eye_dx = ax * rng.random_range(0.38..0.46);
        let eye_w = ax * rng.random_range(0.17..0.21);
        let eye_h = eye_w * rng.random_range(0.42..0.58);
        let brow_y = eye_y - eye_h - rng.random_range(4.0..7.0) * u;
        let nose_y = cy + ay * rng.random_range(0.12..0.19);
        let mouth_y = cy + ay * rng.random_range(0.40..0.48);
        let tone: f32 = rng.random_range(0.0..1.0);
        let skin = lerp3([0.93, 0.78, 0.68], [0.45, 0.30, 0.22], tone);
        let skin = [
            skin[0] * rng.random_range(0.97..1.03),
            skin[1] * rng.random_range(0.97..1.03),
            skin[2] * rng.random_range(0.95..1.05),
        ];
        let hair_t: f32 = rng.random_range(0.0..1.0);
        let hair = lerp3([0.06, 0.05, 0.05], [0.45, 0.32, 0.18], hair_t * hair_t);
        let iris = lerp3(
            [0.15, 0.09, 0.05],
            [0.30, 0.38, 0.45],
            rng.random_range(0.0..0.6),
        );
        let lip = lerp3(skin, [0.72, 0.30, 0.32], rng.random_range(0.35..0.55));
        let g: f32 = rng.random_range(0.25..0.6);
        let bg0 = [
            g,
            g * rng.random_range(0.9..1.1),
            g * rng.random_range(0.9..1.2),
        ];
        let bg1 = lerp3(bg0, [0.1, 0.1, 0.12], rng.random_range(0.2..0.7));
        let n_moles = rng.random_range(0..4);
        let moles = (0..n_moles)
            .map(|_| {
                (
                    cx + rng.random_range(-0.7..0.7) * ax,
                    cy + rng.random_range(-0.3..0.7) * ay,
                    rng.random_range(0.6..1.3) * u,
                )
            })
            .collect();
        Face {
            size: s,
            seed,
            cx,
            cy,
            ax,
            ay,
            eye_y,
            eye_dx,
            eye_w,
            eye_h,
            iris_r: eye_h * rng.random_range(0.8..0.95),
            gaze: rng.random_range(-0.15..0.15) * eye_w,
            brow_y,
            brow_w: eye_w * rng.random_range(1.2..1.5),
            brow_th: rng.random_range(1.6..3.0) * u,
            brow_arch: rng.random_range(1.0..3.0) * u,
            brow_tilt: rng.random_range(-1.5..1.5) * u,
            nose_y,
            nose_w: ax * rng.random_range(0.16..0.22),
            mouth_y,
            mouth_w: ax * rng.random_range(0.30..0.40),
            lip_up: rng.random_range(1.8..3.0) * u,
            lip_lo: rng.random_range(2.4..4.0) * u,
            smile: rng.random_range(-1.0..1.5) * u,
            chin_y: cy + ay * 0.82,
            hairline: rng.random_range(0.52..0.72),
            skin,
            hair,
            iris,
            lip,
            bg0,
            bg1,
            light: [rng.random_range(-0.5..0.5), rng.random_range(-0.6..0.1)],
            grad: [rng.random_range(-0.2..0.2), rng.random_range(-0.15..0.15)],
            texture: rng.random_range(0.8..1.3),
            moles,
        }
    }

    /// Colour (linear 0..1 RGB) at output-pixel coordinates (x, y).
    pub fn shade(&self, x: f32, y: f32) -> [f32; 3] {
        let mut c = self.backdrop(x, y);
        let head = self.head(&mut c, x, y);
        self.hair(&mut c, x, y);
        if head <= 0.0 {
            return self.lit(c, x, y);
        }
        // Moles.
        for &(mx, my, r) in &self.moles {
            let m = cover(((x - mx).powi(2) + (y - my).powi(2)).sqrt() - r);
            if m > 0.0 {
                mix(&mut c, [0.25, 0.15, 0.1], 0.6 * m * head);
            }
        }
        for side in [-1.0f32, 1.0] {
            self.brow(&mut c, x, y, side);
            self.eye(&mut c, x, y, side);
        }
        self.nose(&mut c, x, y);
        self.mouth(&mut c, x, y);
        self.lit(c, x, y)
    }

    /// Background (vertical gradient, faint blotches), then neck, shoulders and ears.
    fn backdrop(&self, x: f32, y: f32) -> [f32; 3] {
        let u = self.size / 128.0;
        let (cx, cy) = (self.cx, self.cy);
        let t = (y / self.size).clamp(0.0, 1.0);
        let mut c = lerp3(self.bg0, self.bg1, t);
        let b = 1.0 + 0.05 * value_noise(self.seed, x, y, 20.0 * u, 9);
        c = scale3(c, b);

        // Neck and shoulders behind the head.
        let neck_d = ((x - cx).abs() - self.ax * 0.55).max(cy + self.ay * 0.4 - y);
        let neck = cover(neck_d);
        if neck > 0.0 {
            mix(&mut c, scale3(self.skin, 0.72), neck);
        }
        // Ears.
        for side in [-1.0f32, 1.0] {
            let e = cover(ellipse_d(
                x,
                y,
                cx + side * self.ax * 0.98,
                self.eye_y + 5.0 * u,
                4.0 * u,
                9.0 * u,
            ));
            if e > 0.0 {
                mix(
                    &mut c,
                    [self.skin[0] * 0.85, self.skin[1] * 0.82, self.skin[2] * 0.8],
                    e,
                );
            }
        }
        c
    }

    /// Head: skin with texture, blush, ellipsoid shading. Returns the head's coverage.
    fn head(&self, c: &mut [f32; 3], x: f32, y: f32) -> f32 {
        let u = self.size / 128.0;
        let (cx, cy) = (self.cx, self.cy);
        let head = cover(ellipse_d(x, y, cx, cy, self.ax, self.ay));
        if head > 0.0 {
            let nx = (x - cx) / self.ax;
            let ny = (y - cy) / self.ay;
            let r2 = (nx * nx + ny * ny).min(1.0);
            let nz = (1.0 - r2).sqrt();
            let tex = self.texture
                * (0.045 * value_noise(self.seed, x, y, 9.0 * u, 1)
                    + 0.03 * value_noise(self.seed, x, y, 3.5 * u, 2)
                    + 0.035 * value_noise(self.seed, x, y, 1.3 * u, 3));
            let light = 0.72 + 0.28 * nz.sqrt() + 0.14 * (self.light[0] * nx + self.light[1] * ny);
            let mut s = self.skin;
            // Cheek blush.
            for side in [-1.0f32, 1.0] {
                let dx = x - (cx + side * self.ax * 0.48);
                let dy = y - (self.eye_y + self.ay * 0.3);
                let w = (-(dx * dx + dy * dy) / (2.0 * (7.0 * u).powi(2))).exp();
                s = lerp3(s, [0.85, 0.45, 0.45], 0.12 * w);
            }
            mix(c, scale3(s, light * (1.0 + tex)), head);
        }
        head
    }

    /// Hair above the hairline, inside a slightly larger ellipse than the head.
    fn hair(&self, c: &mut [f32; 3], x: f32, y: f32) {
        let u = self.size / 128.0;
        let (cx, cy) = (self.cx, self.cy);
        let hair_d = ellipse_d(x, y, cx, cy - 2.0 * u, self.ax * 1.07, self.ay * 1.06);
        let line = cy - self.ay * self.hairline + 3.0 * u * ((x - cx) / self.ax).powi(2) * 4.0;
        let hair = cover(hair_d) * cover(y - line);
        if hair > 0.0 {
            let streak = 1.0
                + 0.18 * value_noise(self.seed, x * 3.0, y * 0.4, 3.0 * u, 4)
                + 0.1 * value_noise(self.seed, x, y, 1.5 * u, 5);
            mix(c, scale3(self.hair, streak), hair);
        }
    }

    /// Brow on one side: an arch, thick in the middle, its inner end lower by `brow_tilt`.
    fn brow(&self, c: &mut [f32; 3], x: f32, y: f32, side: f32) {
        let u = self.size / 128.0;
        let ex = self.cx + side * self.eye_dx;
        let bx = ex + side * 1.0 * u;
        let q = (x - bx) / self.brow_w;
        if q.abs() < 1.3 {
            let inner = -side * q; // 1 at the inner end
            let yc = self.brow_y - self.brow_arch * (1.0 - q * q) + self.brow_tilt * inner;
            let th = self.brow_th * (1.0 - 0.45 * q * q).max(0.2);
            let d = ((y - yc).abs() - th / 2.0).max((q.abs() - 1.0) * self.brow_w);
            let m = cover(d);
            if m > 0.0 {
                let hv = 1.0 + 0.25 * value_noise(self.seed, x * 2.0, y, 1.2 * u, 6);
                mix(c, scale3(self.hair, hv), 0.9 * m);
            }
        }
    }

    /// Eye on one side: lid crease, almond-shaped sclera, iris, pupil, upper lid line.
    fn eye(&self, c: &mut [f32; 3], x: f32, y: f32, side: f32) {
        let u = self.size / 128.0;
        let ex = self.cx + side * self.eye_dx;
        let cq = (x - ex) / (self.eye_w * 1.05);
        if cq.abs() < 1.0 {
            let yc = self.eye_y - self.eye_h * 1.55 + self.eye_h * 0.5 * cq * cq;
            let m = cover((y - yc).abs() - 0.45 * u);
            dark(c, 0.10 * m * (1.0 - cq * cq));
        }
        let q = (x - ex) / self.eye_w;
        if q.abs() < 1.2 {
            let half = self.eye_h * (1.0 - q * q).max(0.0).powf(0.7);
            let dy = y - self.eye_y;
            let d = (dy.abs() - half).max((q.abs() - 1.0) * self.eye_w);
            let m = cover(d);
            if m > 0.0 {
                let mut e = [0.92, 0.9, 0.88];
                let ir = ((x - ex - self.gaze).powi(2) + dy * dy).sqrt();
                let irm = cover(ir - self.iris_r);
                let ring = 0.85 + 0.15 * (ir / self.iris_r).min(1.0);
                mix(&mut e, scale3(self.iris, ring), irm);
                mix(&mut e, [0.03, 0.03, 0.03], cover(ir - self.iris_r * 0.45));
                // Catch-light.
                let hl = ((x - ex - self.gaze + 0.35 * self.iris_r).powi(2)
                    + (dy + 0.35 * self.iris_r).powi(2))
                .sqrt();
                mix(
                    &mut e,
                    [1.0, 1.0, 1.0],
                    0.8 * cover(hl - 0.25 * self.iris_r),
                );
                // Shadow under the upper lid.
                let sh = smooth(-half, -half + 1.5 * u, dy);
                mix(c, scale3(e, 0.7 + 0.3 * sh), m);
            }
            // Upper lid line (lashes).
            let yl = self.eye_y - half;
            let lm = cover((y - yl + 0.3 * u).abs() - 0.55 * u) * (q.abs() < 1.05) as u8 as f32;
            mix(c, [0.08, 0.06, 0.06], 0.85 * lm);
        }
    }

    /// Nose: ridge highlight/shadow, tip highlight, wings, nostrils, nasolabial folds.
    fn nose(&self, c: &mut [f32; 3], x: f32, y: f32) {
        let u = self.size / 128.0;
        let cx = self.cx;
        let ny = self.nose_y;
        if y > self.eye_y && y < ny + 3.0 * u {
            let side = if self.light[0] > 0.0 { 1.0 } else { -1.0 };
            let t = smooth(self.eye_y, self.eye_y + 6.0 * u, y);
            let hx = x - (cx + side * 1.5 * u);
            let sx = x - (cx - side * 2.6 * u);
            let a = 0.07 * t * (-(hx * hx) / (2.0 * (1.2 * u).powi(2))).exp();
            let s = 0.08 * t * (-(sx * sx) / (2.0 * (1.4 * u).powi(2))).exp();
            *c = scale3(*c, 1.0 + a - s);
        }
        let tip = ((x - cx).powi(2) + (y - ny + 1.5 * u).powi(2)) / (2.0 * (2.2 * u).powi(2));
        *c = scale3(*c, 1.0 + 0.06 * (-tip).exp());
        for side in [-1.0f32, 1.0] {
            let wx = cx + side * self.nose_w * 0.8;
            let wing = ellipse_d(x, y, wx, ny, 2.8 * u, 2.4 * u);
            let ring = cover(wing.abs() - 0.5 * u) * (y > ny - 1.0 * u) as u8 as f32;
            dark(c, 0.12 * ring);
            let nos = cover(ellipse_d(
                x,
                y,
                cx + side * self.nose_w * 0.42,
                ny + 1.2 * u,
                1.7 * u,
                0.9 * u,
            ));
            mix(c, [0.18, 0.09, 0.07], 0.75 * nos);
            // Nasolabial fold: from the wing down and out towards the mouth corner.
            let (x0, y0) = (wx + side * 2.0 * u, ny + 1.0 * u);
            let (x1, y1) = (cx + side * (self.mouth_w + 3.0 * u), self.mouth_y + 2.0 * u);
            let (vx, vy) = (x1 - x0, y1 - y0);
            let tt = (((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy)).clamp(0.0, 1.0);
            let bulge = side * 1.5 * u * (std::f32::consts::PI * tt).sin();
            let d = ((x - x0 - tt * vx - bulge).powi(2) + (y - y0 - tt * vy).powi(2)).sqrt();
            dark(c, 0.07 * cover(d - 0.6 * u) * (1.0 - tt * 0.6));
        }
    }

    /// Mouth: lips and the line between them, curved by `smile`; chin shadow below.
    fn mouth(&self, c: &mut [f32; 3], x: f32, y: f32) {
        let u = self.size / 128.0;
        let cx = self.cx;
        let q = (x - cx) / self.mouth_w;
        if q.abs() < 1.15 {
            let ym = self.mouth_y - self.smile * q * q;
            let taper = (1.0 - q * q).max(0.0);
            let bow = 1.0 - 0.35 * (-(q * q) / 0.02).exp();
            let up = self.lip_up * taper.powf(0.5) * bow;
            let lo = self.lip_lo * taper.powf(0.6);
            let dy = y - ym;
            let in_up = cover((-dy - up).max(dy).max((q.abs() - 1.0) * self.mouth_w));
            let in_lo = cover((dy - lo).max(-dy).max((q.abs() - 1.0) * self.mouth_w));
            let lip_shade = 1.0 + 0.12 * (dy / self.lip_lo).clamp(-1.0, 1.0);
            mix(c, scale3(self.lip, lip_shade), in_up.max(in_lo));
            let lm = cover(dy.abs() - 0.5 * u) * smooth(1.12, 0.9, q.abs());
            mix(c, [0.22, 0.08, 0.08], 0.8 * lm);
        }
        // Chin shadow under the lower lip.
        let ch = (x - cx).powi(2) / (2.0 * (5.0 * u).powi(2))
            + (y - self.mouth_y - self.lip_lo - 3.0 * u).powi(2) / (2.0 * (1.6 * u).powi(2));
        dark(c, 0.06 * (-ch).exp());
    }

    /// Global lighting gradient over the whole frame.
    fn lit(&self, c: [f32; 3], x: f32, y: f32) -> [f32; 3] {
        let g = 1.0
            + self.grad[0] * (x / self.size - 0.5) * 2.0
            + self.grad[1] * (y / self.size - 0.5) * 2.0;
        [c[0] * g, c[1] * g, c[2] * g]
    }

    /// The face rendered at `factor` times the output size: (side, RGB f32 samples). Pixel
    /// (i, j) of the raster is centred on output coordinates ((j + 0.5) / factor, (i + 0.5) / factor).
    pub fn render(&self, factor: usize) -> (usize, Vec<[f32; 3]>) {
        let n = self.size as usize * factor;
        let f = factor as f32;
        let mut out = Vec::with_capacity(n * n);
        for i in 0..n {
            for j in 0..n {
                out.push(self.shade((j as f32 + 0.5) / f, (i as f32 + 0.5) / f));
            }
        }
        (n, out)
    }
}
