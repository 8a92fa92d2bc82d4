use crate::data::casme2::{self, Layout};
use crate::data::synth::face::Face;
use crate::data::synth::motion::{class_action, field};
use crate::data::synth::{generate, SynthConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        seed,
        subjects: 3,
        samples_per_subject: (2, 3),
        size: 64,
        onset_apex_frames: (3, 5),
        apex_offset_frames: (2, 3),
        ..Default::default()
    }
}

/// blake3 over every file's relative path and bytes, in sorted order.
fn tree_hash(root: &Path) -> String {
    fn walk(d: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out)
            } else {
                out.push(p)
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files.sort();
    let mut h = blake3::Hasher::new();
    for f in files {
        h.update(f.strip_prefix(root).unwrap().to_string_lossy().as_bytes());
        h.update(&std::fs::read(&f).unwrap());
    }
    h.finalize().to_hex().to_string()
}

#[test]
fn synth_loads_and_is_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let sum = generate(&small(11), a.path()).unwrap();
    assert_eq!(sum.subjects, 3);
    assert!((6..=9).contains(&sum.samples));
    let idx = casme2::load(&casme2::Options::new(a.path(), Layout::Cropped)).unwrap();
    assert!(idx.faults.is_empty(), "{:?}", idx.faults);
    assert_eq!(idx.samples.len(), sum.samples);
    assert_eq!(idx.subjects(), ["sub01", "sub02", "sub03"]);
    let counts: Vec<usize> = idx.class_counts();
    assert_eq!(counts, sum.class_counts.to_vec());
    for s in &idx.samples {
        let n = std::fs::read_dir(&s.frame_dir).unwrap().count() as u32;
        assert_eq!(n, s.offset_frame.unwrap() - s.onset_frame + 1);
        assert!(s.onset_frame < s.apex_frame && s.apex_frame < s.offset_frame.unwrap());
        let img = image::open(&s.apex_path).unwrap();
        assert_eq!((img.width(), img.height()), (64, 64));
    }
    generate(&small(11), b.path()).unwrap();
    assert_eq!(tree_hash(a.path()), tree_hash(b.path()));
    generate(&small(12), c.path()).unwrap();
    assert_ne!(tree_hash(a.path()), tree_hash(c.path()));
}

#[test]
fn actions_are_localised_and_sized() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let f = Face::random(&mut rng, 128, 3);
    let amp = 1.0;
    // (class, region where the largest displacement must lie: y range)
    let cases = [
        (0, f.nose_y, f.chin_y),        // happiness: cheeks to mouth corners
        (1, 0.0, f.eye_y),              // surprise: brows above the eyes are among the largest
        (2, f.brow_y - 5.0, f.mouth_y), // disgust: nose / upper lip / inner brows
        (3, f.nose_y, 128.0),           // repression: lips and chin
    ];
    for (class, y0, y1) in cases {
        let (blobs, aus) = class_action(&f, class, amp, &mut rng);
        assert!(!aus.is_empty());
        let d = field(&blobs, 128);
        let mag = |k: usize| (d[k][0].powi(2) + d[k][1].powi(2)).sqrt();
        let peak = (0..d.len()).map(mag).fold(0f32, f32::max);
        assert!(
            peak > 0.5 * amp && peak < 2.5 * amp,
            "class {class}: peak {peak}"
        );
        let in_region = (0..d.len())
            .filter(|k| {
                let y = (k / 128) as f32 + 0.5;
                y >= y0 && y <= y1
            })
            .map(mag)
            .fold(0f32, f32::max);
        assert!(
            in_region > 0.6 * peak,
            "class {class}: {in_region} vs {peak}"
        );
        // Localised: most of the face barely moves.
        let moving = (0..d.len()).filter(|&k| mag(k) > 0.1 * amp).count();
        assert!(moving < d.len() / 4, "class {class}: {moving} pixels move");
    }
}

#[test]
fn synth_without_nuisance_moves_only_the_face() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        seed: 4,
        subjects: 1,
        samples_per_subject: (3, 3),
        size: 64,
        onset_apex_frames: (3, 4),
        apex_offset_frames: (1, 2),
        amplitude_px: (2.0, 2.0),
        ..Default::default()
    }
    .without_nuisance();
    generate(&cfg, dir.path()).unwrap();
    let idx = casme2::load(&casme2::Options::new(dir.path(), Layout::Cropped)).unwrap();
    assert_eq!(idx.samples.len(), 3);
    for s in &idx.samples {
        let a = image::open(&s.onset_path).unwrap().into_rgb8();
        let b = image::open(&s.apex_path).unwrap().into_rgb8();
        let total: u64 = a
            .pixels()
            .zip(b.pixels())
            .map(|(p, q)| (0..3).map(|k| p[k].abs_diff(q[k]) as u64).sum::<u64>())
            .sum();
        assert!(total > 0, "{}: apex identical to onset", s.id);
        // Background corner blocks (whole JPEG MCUs) do not move at all.
        for (x0, y0) in [(0, 0), (48, 0)] {
            for y in y0..y0 + 16 {
                for x in x0..x0 + 16 {
                    assert_eq!(
                        a.get_pixel(x, y),
                        b.get_pixel(x, y),
                        "{} moved at ({x},{y})",
                        s.id
                    );
                }
            }
        }
    }
}
