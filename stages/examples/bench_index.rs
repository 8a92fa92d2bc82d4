//! Re-indexing and generation timings.
//!
//! cargo run --release --example bench_index [-- --no-synth]
//!
//! 1. Writes a CASME II-layout fixture of 2,000 samples (40 subjects x 50, 6 tiny JPEG frames
//!    each, `.xlsx` sheet) and times `casme2::load` when nothing changed (target < 0.2 s: the
//!    loader stats the onset/apex files, it does not read them).
//! 2. Times `synth::generate` for the default config and reports the motion baseline.

use mpfnet_stages::data::casme2::{self, Layout};
use mpfnet_stages::data::fixtures::casme2_tree;
use mpfnet_stages::data::sheet::locate;
use mpfnet_stages::data::synth::{baseline_report, generate, SynthConfig};
use mpfnet_stages::data::Task;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let no_synth = std::env::args().any(|a| a == "--no-synth");
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    let sheet = casme2_tree(dir.path(), Layout::Cropped, 40, 50, 6)?;
    println!(
        "fixture: 2000 samples x 6 frames written in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let opts = casme2::Options::new(dir.path(), Layout::Cropped);
    let first = Instant::now();
    let idx = casme2::load(&opts)?;
    let first = first.elapsed().as_secs_f64();
    anyhow::ensure!(
        idx.samples.len() == 2000 && idx.faults.is_empty(),
        "fixture did not load cleanly"
    );
    let mut loads = Vec::new();
    let mut sheets = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let i = casme2::load(&opts)?;
        loads.push(t.elapsed().as_secs_f64());
        assert_eq!(i.samples.len(), 2000);
        let t = Instant::now();
        locate(&sheet, &["Subject", "Filename"])?;
        sheets.push(t.elapsed().as_secs_f64());
    }
    println!(
        "casme2::load, 2000 samples: first {:.1} ms; unchanged re-index median {:.1} ms, min {:.1} ms \
         (of which reading the .xlsx: median {:.1} ms) [target < 200 ms]",
        first * 1e3,
        median(loads.clone()) * 1e3,
        loads.iter().cloned().fold(f64::MAX, f64::min) * 1e3,
        median(sheets) * 1e3
    );
    if no_synth {
        return Ok(());
    }
    let out = tempfile::tempdir()?;
    let cfg = SynthConfig::default();
    let t = Instant::now();
    let sum = generate(&cfg, out.path())?;
    let gen = t.elapsed().as_secs_f64();
    println!(
        "synth::generate default config ({} threads): {:.1} s for {} samples, {} frames ({:.2} ms/frame), {:.1} MB",
        rayon::current_num_threads(),
        gen,
        sum.samples,
        sum.frames,
        gen * 1e3 / sum.frames as f64,
        sum.bytes as f64 / 1e6
    );
    for task in [Task::Sde, Task::Cde] {
        let mut o = casme2::Options::new(out.path(), Layout::Cropped);
        o.task = task;
        let idx = casme2::load(&o)?;
        let r = baseline_report(&idx)?;
        println!(
            "baseline {task:?} ({} classes, {} samples, counts {:?}): acc {:.3}, UAR {:.3}, majority {:.3}, chance {:.3}",
            idx.classes.len(),
            idx.samples.len(),
            idx.class_counts(),
            r.accuracy,
            r.uar,
            r.majority,
            1.0 / idx.classes.len() as f64
        );
    }
    Ok(())
}
