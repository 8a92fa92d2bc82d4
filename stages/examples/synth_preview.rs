//! Generates a synthetic dataset, reloads it through the CASME II loader, reports the motion
//! baseline (5-class SDE, 3-class CDE) and saves onset / apex / 10x difference PNGs per class.
//!
//! cargo run --release --example synth_preview -- OUT_DIR [SEED] [clean]

use mpfnet_stages::data::casme2::{self, Layout};
use mpfnet_stages::data::synth::{baseline_report, generate, SynthConfig, EMOTIONS};
use mpfnet_stages::data::Task;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).map(|s| s.as_str()).unwrap_or("/tmp/synth"));
    let seed: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let mut cfg = SynthConfig {
        seed,
        ..Default::default()
    };
    if args.get(3).map(|s| s.as_str()) == Some("clean") {
        // Actions only: to look at where each class moves, and bound the baseline.
        cfg.head_motion_px = 0.0;
        cfg.head_rotation_deg = 0.0;
        cfg.jitter_px = 0.0;
        cfg.blink_prob = 0.0;
        cfg.noise_sigma = 0.0;
    }
    let t = Instant::now();
    let sum = generate(&cfg, &out)?;
    println!("generate: {:.2} s, {sum:?}", t.elapsed().as_secs_f64());
    for task in [Task::Sde, Task::Cde] {
        let mut o = casme2::Options::new(&out, Layout::Cropped);
        o.task = task;
        let idx = casme2::load(&o)?;
        let r = baseline_report(&idx)?;
        println!(
            "{task:?}: {} samples, classes {:?} counts {:?}: baseline acc {:.3} uar {:.3} (majority {:.3}, chance {:.3})",
            idx.samples.len(), idx.classes, idx.class_counts(), r.accuracy, r.uar, r.majority,
            1.0 / idx.classes.len() as f64
        );
        println!("  confusion {:?}", r.confusion);
        if task == Task::Sde {
            let prev = out.join("preview");
            std::fs::create_dir_all(&prev)?;
            // One onset frame per subject, side by side.
            let subs = idx.subjects();
            let mut m = image::RgbImage::new(cfg.size * subs.len() as u32, cfg.size);
            for (k, subj) in subs.iter().enumerate() {
                let s = idx.samples.iter().find(|s| &s.subject == subj).unwrap();
                let a = image::open(&s.onset_path)?.into_rgb8();
                image::imageops::replace(&mut m, &a, (k as u32 * cfg.size) as i64, 0);
            }
            m.save(prev.join("subjects.png"))?;
            for (c, e) in EMOTIONS.iter().enumerate() {
                let Some(s) = idx.samples.iter().find(|s| s.class == c) else {
                    continue;
                };
                let a = image::open(&s.onset_path)?.into_rgb8();
                let b = image::open(&s.apex_path)?.into_rgb8();
                let mut d = a.clone();
                for (p, (x, y)) in d.pixels_mut().zip(a.pixels().zip(b.pixels())) {
                    for k in 0..3 {
                        let v = (y[k] as f32 - x[k] as f32) * 10.0 + 128.0;
                        p[k] = v.clamp(0.0, 255.0) as u8;
                    }
                }
                // Side by side, upscaled 2x: onset | apex | 10x difference.
                let (w, h) = a.dimensions();
                let mut m = image::RgbImage::new(w * 3, h);
                image::imageops::replace(&mut m, &a, 0, 0);
                image::imageops::replace(&mut m, &b, w as i64, 0);
                image::imageops::replace(&mut m, &d, 2 * w as i64, 0);
                let m =
                    image::imageops::resize(&m, w * 6, h * 2, image::imageops::FilterType::Nearest);
                m.save(prev.join(format!("{c}_{e}.png")))?;
            }
        }
    }
    Ok(())
}
