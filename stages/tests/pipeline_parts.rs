//! Interpolation, magnification, fusion and face crop on material with known answers.
use mpfnet_stages::prep::face::FaceCropper;
use mpfnet_stages::prep::features::{fuse, FeatureMode, FlowNorm};
use mpfnet_stages::prep::flow::{FlowEstimator, FlowField, TvL1};
use mpfnet_stages::prep::image::{load_frame, Frame};
use mpfnet_stages::prep::interp::{
    ConsistencyParams, FlowInterpolator, FrameInterpolator, LinearBlend,
};
use mpfnet_stages::prep::magnify::{Magnifier, MagnifyMethod};
use mpfnet_stages::prep::pattern::Texture;
use std::sync::Arc;

fn translated(t: &Texture, n: usize, dx: f32, dy: f32) -> Frame {
    // Content moved by (dx, dy): out(x) = T(x - d).
    let mut f = FlowField::zeros(n, n);
    f.u.iter_mut().for_each(|u| *u = -dx);
    f.v.iter_mut().for_each(|v| *v = -dy);
    t.render(n, n, Some(&f))
}

fn psnr_interior(a: &Frame, b: &Frame, m: usize) -> f64 {
    let mut se = 0.0f64;
    let mut n = 0usize;
    for y in m..a.height - m {
        for x in m..a.width - m {
            for c in 0..a.channels {
                se += ((a.get(x, y, c) - b.get(x, y, c)) as f64).powi(2);
                n += 1;
            }
        }
    }
    10.0 * (1.0 / (se / n as f64)).log10()
}

fn mean_interior(f: &FlowField, m: usize) -> (f32, f32) {
    let (mut su, mut sv, mut n) = (0.0f64, 0.0f64, 0usize);
    for y in m..f.height - m {
        for x in m..f.width - m {
            su += f.u[y * f.width + x] as f64;
            sv += f.v[y * f.width + x] as f64;
            n += 1;
        }
    }
    ((su / n as f64) as f32, (sv / n as f64) as f32)
}

#[test]
fn interpolated_midframe_matches_half_shift() {
    let t = Texture::new(128, 128, 5);
    let f0 = translated(&t, 128, 0.0, 0.0);
    let f1 = translated(&t, 128, 2.0, -1.0);
    let truth = translated(&t, 128, 1.0, -0.5);
    let est = Arc::new(TvL1::default());
    let vfi = FlowInterpolator::new(est, ConsistencyParams::default());
    let frames = vfi.interpolate(&f0, &f1, 3).unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0], f0);
    assert_eq!(frames[2], f1);
    let p = psnr_interior(&frames[1], &truth, 8);
    let blend = LinearBlend.interpolate(&f0, &f1, 3).unwrap();
    let pb = psnr_interior(&blend[1], &truth, 8);
    eprintln!("mid-frame PSNR: flow {p:.2} dB, blend {pb:.2} dB");
    assert!(p > 35.0, "PSNR {p}");
    assert!(p > pb + 8.0, "flow {p} vs blend {pb}");
    // L = 11 frames: the k-th frame sits at shift k/10 of the motion.
    let frames = vfi.interpolate(&f0, &f1, 11).unwrap();
    assert_eq!(frames.len(), 11);
    let t3 = translated(&t, 128, 0.6, -0.3);
    let p3 = psnr_interior(&frames[3], &t3, 8);
    eprintln!("frame 3 of 11 PSNR {p3:.2} dB");
    assert!(p3 > 35.0, "PSNR {p3}");
}

/// The sub-pixel shift (px) both magnifiers are tested on.
const SMALL_MOTION: (f32, f32) = (0.3, -0.2);

/// A 128x128 texture and its copy shifted by [`SMALL_MOTION`].
fn small_motion_pair() -> (Frame, Frame) {
    let t = Texture::new(128, 128, 9);
    let (dx, dy) = SMALL_MOTION;
    (translated(&t, 128, 0.0, 0.0), translated(&t, 128, dx, dy))
}

#[test]
fn lagrangian_magnification_scales_displacement() {
    let (dx, dy) = SMALL_MOTION;
    let (onset, apex) = small_motion_pair();
    let est = Arc::new(TvL1::default());
    let mag = Magnifier::new(MagnifyMethod::Lagrangian, est.clone());
    let phis = [1.0f32, 4.0, 8.0, 14.0];
    let out = mag.magnify_many(&onset, &apex, &phis).unwrap();
    for (phi, m) in phis.iter().zip(&out) {
        let f = est.flow(&onset, m).unwrap();
        let (mu, mv) = mean_interior(&f, 16);
        let (eu, ev) = ((1.0 + phi) * dx, (1.0 + phi) * dy);
        let rel = (mu - eu).hypot(mv - ev) / eu.hypot(ev);
        eprintln!(
            "phi {phi}: measured ({mu:.3}, {mv:.3}) expected ({eu:.3}, {ev:.3}) rel {rel:.3}"
        );
        assert!(rel < 0.10, "phi {phi}: relative error {rel}");
    }
    // One-call form agrees with the batch form.
    assert_eq!(mag.magnify(&onset, &apex, 4.0).unwrap(), out[1]);
}

#[test]
fn eulerian_magnification_amplifies_small_motion() {
    let (dx, dy) = SMALL_MOTION;
    let (onset, apex) = small_motion_pair();
    let est = Arc::new(TvL1::default());
    let mag = Magnifier::new(MagnifyMethod::eulerian_default(), est.clone());
    for phi in [1.0f32, 4.0] {
        let m = mag.magnify(&onset, &apex, phi).unwrap();
        let f = est.flow(&onset, &m).unwrap();
        let (mu, mv) = mean_interior(&f, 16);
        let gain = (mu * dx + mv * dy) / (dx * dx + dy * dy);
        eprintln!("eulerian phi {phi}: measured ({mu:.3}, {mv:.3}) gain {gain:.2}");
        assert!(
            gain > 1.0 + 0.25 * phi && gain < 1.0 + 1.1 * phi,
            "gain {gain}"
        );
    }
}

/// A flow "estimator" that returns a constant field: isolates `fuse`'s layout from TV-L1.
struct Constant(f32, f32);
impl FlowEstimator for Constant {
    fn flow(&self, a: &Frame, _b: &Frame) -> anyhow::Result<FlowField> {
        let mut f = FlowField::zeros(a.width, a.height);
        f.u.iter_mut().for_each(|u| *u = self.0);
        f.v.iter_mut().for_each(|v| *v = self.1);
        Ok(f)
    }
    fn name(&self) -> String {
        "constant".into()
    }
}

#[test]
fn fuse_layout_and_values() {
    let (w, h) = (4usize, 3usize);
    let frames: Vec<Frame> = (0..3)
        .map(|k| {
            let mut f = Frame::new(w, h, 3);
            for (i, v) in f.data.iter_mut().enumerate() {
                *v = ((i * (k + 1) * 7) % 11) as f32 / 10.0;
            }
            f
        })
        .collect();
    let est = Constant(3.0, -1.0);
    let norm = FlowNorm::Scaled {
        scale: 2.0,
        clip: 1.0,
    };
    let (shape, data) = fuse(&frames, &est, FeatureMode::Both, norm).unwrap();
    assert_eq!(shape, vec![5, 2, h, w]);
    assert_eq!(data.len(), 5 * 2 * h * w);
    let at = |c: usize, t: usize, y: usize, x: usize| data[((c * 2 + t) * h + y) * w + x];
    for t in 0..2 {
        for y in 0..h {
            for x in 0..w {
                assert_eq!(at(0, t, y, x), 1.0); // 3 / 2 clipped to 1
                assert_eq!(at(1, t, y, x), -0.5);
                for c in 0..3 {
                    let d = (frames[t + 1].get(x, y, c) - frames[t].get(x, y, c)).abs();
                    assert_eq!(at(2 + c, t, y, x), d);
                }
            }
        }
    }
    let (s2, d2) = fuse(&frames, &est, FeatureMode::FlowOnly, FlowNorm::Raw).unwrap();
    assert_eq!(s2, vec![2, 2, h, w]);
    assert_eq!(d2[0], 3.0);
    let (s3, d3) = fuse(&frames, &est, FeatureMode::DiffOnly, norm).unwrap();
    assert_eq!(s3, vec![3, 2, h, w]);
    assert_eq!(&d3[..], &data[2 * 2 * h * w..]);
    assert!(fuse(&frames[..1], &est, FeatureMode::Both, norm).is_err());
    // serde names
    assert_eq!(
        serde_json::to_string(&FeatureMode::FlowOnly).unwrap(),
        "\"flowonly\""
    );
    let n: FlowNorm = serde_json::from_str(r#"{"kind":"scaled","scale":3,"clip":1}"#).unwrap();
    assert_eq!(n, FlowNorm::default());
}

#[test]
fn fuse_with_tvl1_sees_the_motion() {
    let t = Texture::new(64, 64, 3);
    let frames: Vec<Frame> = (0..3)
        .map(|k| translated(&t, 64, 0.5 * k as f32, 0.0))
        .collect();
    let (shape, data) = fuse(&frames, &TvL1::default(), FeatureMode::Both, FlowNorm::Raw).unwrap();
    assert_eq!(shape, vec![5, 2, 64, 64]);
    let hw = 64 * 64;
    let mean_u: f32 = data[..hw].iter().sum::<f32>() / hw as f32;
    assert!((mean_u - 0.5).abs() < 0.05, "mean u {mean_u}");
}

/// Boxes checked by eye on the fixture photo (x, y, side; see examples/face_boxes.rs).
const EYE_CHECKED: [(f32, f32, f32); 4] = [
    (863.0, 250.0, 64.0),
    (1162.0, 247.0, 65.0),
    (657.0, 257.0, 64.0),
    (107.0, 249.0, 55.0),
];

#[test]
fn face_detector_finds_real_faces() {
    let photo = mpfnet_stages::prep::pattern::remove_colour_marks(
        &load_frame("tests/fixtures/rustface_test.png").unwrap(),
    );
    let fc = FaceCropper {
        detect_max_side: 4096,
        min_face: 20,
        ..Default::default()
    };
    let faces = fc.detect(&photo);
    // The photo shows 29 people, all frontal.
    assert!(
        faces.len() >= 25 && faces.len() <= 32,
        "{} faces",
        faces.len()
    );
    for (x, y, s) in EYE_CHECKED {
        let hit = faces.iter().any(|f| {
            let (cx, cy) = (f.x + f.width / 2.0, f.y + f.height / 2.0);
            (cx - (x + s / 2.0)).abs() < 0.15 * s
                && (cy - (y + s / 2.0)).abs() < 0.15 * s
                && (f.width / s - 1.0).abs() < 0.2
        });
        assert!(hit, "no detection near the face at ({x}, {y}, {s})");
    }
    // Nothing in the caption area (text only below y = 860).
    assert!(faces.iter().all(|f| f.y < 860.0));
}

#[test]
fn face_crop_uses_one_box_and_names_failing_frame() {
    let photo = mpfnet_stages::prep::pattern::remove_colour_marks(
        &load_frame("tests/fixtures/rustface_test.png").unwrap(),
    );
    // A sample: a region around one face, and the same region one pixel lower.
    let onset = mpfnet_stages::prep::image::crop(&photo, 800, 190, 200, 200).unwrap();
    let next = mpfnet_stages::prep::image::crop(&photo, 800, 191, 200, 200).unwrap();
    let fc = FaceCropper {
        min_face: 30,
        ..Default::default()
    };
    let b = fc.face_box(&onset, "onset").unwrap();
    // Einstein's face sits at (63..127, 60..124) in this region; box side 64 * 1.2.
    assert!((b.x + b.side as isize / 2 - 95).abs() < 8, "{b:?}");
    assert!((b.y + b.side as isize / 2 - 92).abs() < 8, "{b:?}");
    let out = fc
        .crop_sample(&[onset.clone(), next.clone()], &["on".into(), "ap".into()])
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0].width, out[0].height, out[0].channels),
        (128, 128, 3)
    );
    assert_eq!(out[0], fc.crop(&onset, &b));
    assert_eq!(out[1], fc.crop(&next, &b));
    let no_face = Texture::new(96, 96, 1).render(96, 96, None);
    let err = fc
        .crop_sample(
            &[no_face.clone(), no_face],
            &["sub01/EP02/img046.jpg".into(), "b".into()],
        )
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("sub01/EP02/img046.jpg"),
        "{err:#}"
    );
}

#[test]
fn interpolation_of_real_photo_shift() {
    // Exact integer shifts of a real photo: f1 is f0 moved by (-4, +2) px, the truth at t = 0.5
    // is the crop halfway.
    let photo = mpfnet_stages::prep::pattern::remove_colour_marks(
        &load_frame("tests/fixtures/rustface_test.png").unwrap(),
    );
    let c = |x, y| mpfnet_stages::prep::image::crop(&photo, x, y, 128, 128).unwrap();
    let (f0, f1, mid) = (c(831, 218), c(835, 216), c(833, 217));
    let vfi = FlowInterpolator::new(Arc::new(TvL1::default()), ConsistencyParams::default());
    let frames = vfi.interpolate(&f0, &f1, 3).unwrap();
    let p = psnr_interior(&frames[1], &mid, 8);
    let pb = psnr_interior(&LinearBlend.interpolate(&f0, &f1, 3).unwrap()[1], &mid, 8);
    eprintln!("photo mid-frame PSNR: flow {p:.2} dB, blend {pb:.2} dB");
    assert!(p > 40.0 && p > pb + 20.0, "flow {p} blend {pb}");
}
