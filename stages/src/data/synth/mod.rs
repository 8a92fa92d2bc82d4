//! A synthetic micro-expression dataset in CASME II's registered-crop layout.
//!
//! Each subject is a procedural face; each sample is a clip from onset to offset in which a
//! subtle, localised, class-specific facial action (FACS-like) rises from onset to apex and
//! decays to offset, over nuisance motion common to every class (head drift/rotation,
//! registration jitter, blinks), per-frame sensor noise and JPEG. Motion is real sub-pixel
//! motion: a smooth displacement field applied by backward-warping the rendered face.
//!
//! Output: `Cropped/subNN/EPxx_yy/reg_imgN.jpg` (absolute frame numbers) and
//! `CASME2-coding-synth.xlsx` in CASME II's column layout; it loads with
//! `casme2::load` (layout `Cropped`). Same config and seed -> byte-identical files.

pub mod baseline;
pub mod face;
pub mod motion;

pub use baseline::{baseline_mean_motion, baseline_report, BaselineReport};

use anyhow::{ensure, Context, Result};
use face::Face;
use motion::{blink_blobs, class_action, field, warp, Pose, WarpSource};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// CASME II's five SDE emotions, as the sheet writes them.
pub const EMOTIONS: [&str; 5] = ["happiness", "surprise", "disgust", "repression", "others"];

pub const SHEET_NAME: &str = "CASME2-coding-synth.xlsx";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    pub seed: u64,
    pub subjects: usize,
    /// Samples per subject, drawn uniformly in this inclusive range.
    pub samples_per_subject: (usize, usize),
    /// Frame side in pixels (square registered crops).
    pub size: u32,
    /// Relative frequency of [`EMOTIONS`]; default CASME II's 5-class counts (32, 25, 63, 27, 99).
    pub class_weights: [f64; 5],
    /// Peak displacement of the action at apex, px at 128x128 (scaled with `size`), drawn
    /// log-uniformly per sample.
    pub amplitude_px: (f32, f32),
    /// Onset->apex length in frames (inclusive range).
    pub onset_apex_frames: (u32, u32),
    /// Apex->offset decay length in frames (inclusive range).
    pub apex_offset_frames: (u32, u32),
    /// Peak global head translation over a clip, px at 128.
    pub head_motion_px: f32,
    /// Peak head rotation over a clip, degrees.
    pub head_rotation_deg: f32,
    /// Per-frame registration jitter (std, px at 128).
    pub jitter_px: f32,
    /// Probability that a clip contains a blink.
    pub blink_prob: f64,
    /// Sensor noise std in grey levels (0..255), per pixel and frame.
    pub noise_sigma: f32,
    pub jpeg_quality: u8,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            subjects: 10,
            samples_per_subject: (6, 14),
            size: 128,
            class_weights: [32.0, 25.0, 63.0, 27.0, 99.0],
            amplitude_px: (0.5, 2.0),
            onset_apex_frames: (9, 60),
            apex_offset_frames: (8, 40),
            head_motion_px: 0.25,
            head_rotation_deg: 0.15,
            jitter_px: 0.05,
            blink_prob: 0.25,
            noise_sigma: 1.5,
            jpeg_quality: 90,
        }
    }
}

impl SynthConfig {
    /// The same configuration with every nuisance (head drift and rotation, jitter, blinks,
    /// sensor noise) switched off: only the facial action moves.
    pub fn without_nuisance(self) -> Self {
        Self {
            head_motion_px: 0.0,
            head_rotation_deg: 0.0,
            jitter_px: 0.0,
            blink_prob: 0.0,
            noise_sigma: 0.0,
            ..self
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthSummary {
    pub root: PathBuf,
    pub sheet: PathBuf,
    pub subjects: usize,
    pub samples: usize,
    pub frames: usize,
    pub bytes: u64,
    /// Samples per emotion, in [`EMOTIONS`] order.
    pub class_counts: [usize; 5],
}

/// A face rendered at twice the output size: (side, RGB samples).
type Raster = (usize, Vec<[f32; 3]>);

/// One planned clip (all its random choices are derived from `seed`).
#[derive(Debug, Clone)]
struct Plan {
    subject: usize,
    filename: String,
    class: usize,
    onset: u32,
    apex: u32,
    offset: u32,
    seed: u64,
}

/// SplitMix64 step, to derive independent seeds from (seed, subject, sample).
pub fn mix_seed(a: u64, b: u64) -> u64 {
    let mut z = a
        .wrapping_add(b.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn subject_name(s: usize) -> String {
    format!("sub{:02}", s + 1)
}

fn plan(cfg: &SynthConfig) -> Vec<Plan> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(cfg.seed, 0x5EED));
    let total: f64 = cfg.class_weights.iter().sum();
    let mut out = Vec::new();
    for s in 0..cfg.subjects {
        let n = rng.random_range(cfg.samples_per_subject.0..=cfg.samples_per_subject.1);
        for k in 0..n {
            let mut r = rng.random_range(0.0..total);
            let mut class = EMOTIONS.len() - 1;
            for (c, w) in cfg.class_weights.iter().enumerate() {
                if r < *w {
                    class = c;
                    break;
                }
                r -= w;
            }
            let la = rng.random_range(cfg.onset_apex_frames.0..=cfg.onset_apex_frames.1);
            let lo = rng.random_range(cfg.apex_offset_frames.0..=cfg.apex_offset_frames.1);
            let onset = rng.random_range(1..=300);
            let clip = rng.random_range(1..=3);
            out.push(Plan {
                subject: s,
                filename: format!("EP{:02}_{:02}", k + 1, clip),
                class,
                onset,
                apex: onset + la,
                offset: onset + la + lo,
                seed: mix_seed(mix_seed(cfg.seed, s as u64 + 1), k as u64 + 1),
            });
        }
    }
    out
}

/// Standard normal from two uniforms (Box-Muller).
fn gauss(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Two independent standard normals (both halves of Box-Muller).
fn gauss2(rng: &mut ChaCha8Rng) -> (f32, f32) {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random_range(0.0..1.0);
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
    (r * c, r * s)
}

fn smoothstep(t: f32) -> f32 {
    let t = t.clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A clip's nuisance motion (common to every class): linear head drift plus a slow wobble, a
/// slow rotation, an optional blink, and a sensor gain.
struct Nuisance {
    drift: [f32; 2],
    wob: Vec<(f32, f32, f32)>,
    rot: f32,
    rot_w: f32,
    rot_p: f32,
    /// (start frame, duration) of the blink.
    blink_at: Option<(f32, f32)>,
    gain: f32,
}

impl Nuisance {
    /// Draws the motion of an `n`-frame clip (`u`: px per px at 128).
    fn draw(cfg: &SynthConfig, u: f32, n: usize, rng: &mut ChaCha8Rng) -> Self {
        let hm = cfg.head_motion_px * u;
        let drift = [
            hm * rng.random_range(-1.0..1.0f32),
            hm * rng.random_range(-1.0..1.0f32),
        ];
        let wob: Vec<(f32, f32, f32)> = (0..3)
            .map(|_| {
                (
                    rng.random_range(-0.5..0.5) * hm,
                    std::f32::consts::TAU / rng.random_range(20.0..90.0f32),
                    rng.random_range(0.0..std::f32::consts::TAU),
                )
            })
            .collect();
        let rot = cfg.head_rotation_deg.to_radians() * rng.random_range(-1.0..1.0f32);
        let rot_w = std::f32::consts::TAU / rng.random_range(40.0..160.0f32);
        let rot_p = rng.random_range(0.0..std::f32::consts::TAU);
        let blink_at = if rng.random_bool(cfg.blink_prob) {
            let dur = rng.random_range(14..=30) as f32;
            Some((rng.random_range(0.0..(n as f32).max(1.0)) - dur * 0.5, dur))
        } else {
            None
        };
        let gain = rng.random_range(0.95..1.05f32);
        Self {
            drift,
            wob,
            rot,
            rot_w,
            rot_p,
            blink_at,
            gain,
        }
    }

    /// Head pose at frame `tf`, `frac` of the way through the clip (before jitter).
    fn pose(&self, tf: f32, frac: f32) -> Pose {
        let (rot_w, rot_p) = (self.rot_w, self.rot_p);
        let mut pose = Pose {
            angle: self.rot * ((rot_w * tf + rot_p).sin() - rot_p.sin()),
            tx: self.drift[0] * frac,
            ty: self.drift[1] * frac,
        };
        for (a, w, ph) in &self.wob {
            pose.tx += a * ((w * tf + ph).sin() - ph.sin());
            pose.ty += a * ((w * tf + ph + 1.3).cos() - (ph + 1.3).cos());
        }
        pose
    }

    /// Eyelid closure (0..1) at frame `tf`.
    fn blink(&self, tf: f32) -> f32 {
        match self.blink_at {
            Some((t0, dur)) if tf >= t0 && tf <= t0 + dur => {
                (std::f32::consts::PI * (tf - t0) / dur).sin().powi(2)
            }
            _ => 0.0,
        }
    }
}

/// Action strength at frame `tf`: rises from onset to apex (`la` frames), decays by 90% to
/// offset (`ld` frames later).
fn envelope(tf: f32, la: f32, ld: f32) -> f32 {
    if tf <= la {
        smoothstep(tf / la.max(1.0))
    } else {
        1.0 - 0.9 * smoothstep((tf - la) / ld.max(1.0))
    }
}

/// Quantises a frame to 8-bit RGB with gain and per-pixel sensor noise, then JPEG-encodes it.
fn encode_frame(
    cfg: &SynthConfig,
    img: &[[f32; 3]],
    gain: f32,
    pixels: &mut [u8],
    rng: &mut ChaCha8Rng,
) -> Result<Vec<u8>> {
    let mut spare = (0f32, 0f32);
    let flat = img.iter().flat_map(|p| p.iter());
    for (k, v) in flat.enumerate() {
        if k % 2 == 0 {
            spare = gauss2(rng);
        }
        let z = if k % 2 == 0 { spare.0 } else { spare.1 };
        let v = v * gain * 255.0 + cfg.noise_sigma * z;
        pixels[k] = v.round().clamp(0.0, 255.0) as u8;
    }
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, cfg.jpeg_quality)
        .encode(pixels, cfg.size, cfg.size, image::ExtendedColorType::Rgb8)
        .context("encoding JPEG")?;
    Ok(buf)
}

/// Renders and writes one clip; returns (frames, bytes, action units).
fn write_clip(
    cfg: &SynthConfig,
    face: &Face,
    raster: &Raster,
    p: &Plan,
    dir: &Path,
) -> Result<(usize, u64, String)> {
    let size = cfg.size as usize;
    let u = cfg.size as f32 / 128.0;
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let (lo, hi) = cfg.amplitude_px;
    let amp = (lo.ln() + rng.random_range(0.0..1.0f32) * (hi.ln() - lo.ln())).exp() * u;
    let (blobs, aus) = class_action(face, p.class, amp, &mut rng);
    let local = field(&blobs, size);
    let blink = field(&blink_blobs(face), size);
    let src = WarpSource {
        raster: &raster.1,
        factor: 2,
        size,
        centre: (face.cx, face.cy),
        local: &local,
        blink: &blink,
    };
    let n = (p.offset - p.onset + 1) as usize;
    let la = (p.apex - p.onset) as f32;
    let ld = (p.offset - p.apex) as f32;
    let nuisance = Nuisance::draw(cfg, u, n, &mut rng);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut bytes = 0u64;
    let mut pixels = vec![0u8; size * size * 3];
    for t in 0..n {
        let tf = t as f32;
        let mut pose = nuisance.pose(tf, tf / (n as f32 - 1.0).max(1.0));
        if t > 0 {
            pose.tx += cfg.jitter_px * u * gauss(&mut rng);
            pose.ty += cfg.jitter_px * u * gauss(&mut rng);
        }
        let img = warp(&src, pose, envelope(tf, la, ld), nuisance.blink(tf));
        let buf = encode_frame(cfg, &img, nuisance.gain, &mut pixels, &mut rng)?;
        let path = dir.join(format!("reg_img{}.jpg", p.onset + t as u32));
        std::fs::write(&path, &buf).with_context(|| format!("writing {}", path.display()))?;
        bytes += buf.len() as u64;
    }
    Ok((n, bytes, aus))
}

/// Writes the dataset under `out_dir` (created if needed; existing files are overwritten).
pub fn generate(cfg: &SynthConfig, out_dir: &Path) -> Result<SynthSummary> {
    ensure!(cfg.subjects > 0, "subjects must be > 0");
    ensure!(
        cfg.samples_per_subject.0 <= cfg.samples_per_subject.1 && cfg.samples_per_subject.1 > 0,
        "bad samples_per_subject {:?}",
        cfg.samples_per_subject
    );
    ensure!(cfg.size >= 32, "size must be >= 32");
    ensure!(
        cfg.onset_apex_frames.0 >= 1 && cfg.onset_apex_frames.0 <= cfg.onset_apex_frames.1,
        "bad onset_apex_frames"
    );
    ensure!(
        cfg.apex_offset_frames.0 <= cfg.apex_offset_frames.1,
        "bad apex_offset_frames"
    );
    ensure!(
        cfg.amplitude_px.0 > 0.0 && cfg.amplitude_px.0 <= cfg.amplitude_px.1,
        "bad amplitude_px"
    );
    ensure!(
        cfg.class_weights.iter().sum::<f64>() > 0.0,
        "class weights sum to 0"
    );
    let plans = plan(cfg);
    let faces: Vec<(Face, Raster)> = (0..cfg.subjects)
        .into_par_iter()
        .map(|s| {
            let fseed = mix_seed(cfg.seed ^ 0xFACE, s as u64 + 1);
            let mut rng = ChaCha8Rng::seed_from_u64(fseed);
            let face = Face::random(&mut rng, cfg.size, fseed);
            let (n, raster) = face.render(2);
            (face, (n, motion::prefilter(&raster, n)))
        })
        .collect();
    let frames_root = out_dir.join("Cropped");
    let results: Vec<(usize, u64, String)> = plans
        .par_iter()
        .map(|p| {
            let dir = frames_root.join(subject_name(p.subject)).join(&p.filename);
            let (face, raster) = &faces[p.subject];
            write_clip(cfg, face, raster, p, &dir)
        })
        .collect::<Result<_>>()?;
    let sheet = out_dir.join(SHEET_NAME);
    write_sheet(&sheet, &plans, &results)?;
    let mut class_counts = [0usize; 5];
    for p in &plans {
        class_counts[p.class] += 1;
    }
    Ok(SynthSummary {
        root: out_dir.to_path_buf(),
        sheet,
        subjects: cfg.subjects,
        samples: plans.len(),
        frames: results.iter().map(|r| r.0).sum(),
        bytes: results.iter().map(|r| r.1).sum(),
        class_counts,
    })
}

/// CASME II's column layout: Subject, Filename, (blank), OnsetFrame, ApexFrame, OffsetFrame,
/// (blank), Action Units, Estimated Emotion.
fn write_sheet(path: &Path, plans: &[Plan], results: &[(usize, u64, String)]) -> Result<()> {
    use crate::data::fixtures::{casme2_header, write_xlsx, Cell};
    let mut rows = vec![casme2_header()];
    for (p, r) in plans.iter().zip(results) {
        rows.push(vec![
            ((p.subject + 1) as f64).into(),
            p.filename.as_str().into(),
            Cell::Empty,
            p.onset.into(),
            p.apex.into(),
            p.offset.into(),
            Cell::Empty,
            r.2.as_str().into(),
            EMOTIONS[p.class].into(),
        ]);
    }
    write_xlsx(path, "Sheet1", &rows)
}
