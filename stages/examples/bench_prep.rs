//! Benchmarks of the pre-processing, run with
//!   cargo run --release --example bench_prep [-- --out bench/out]
//! 1. TV-L1 on 128x128 pairs with known motion (real photo crops and procedural texture, warps
//!    of at most 0.5 px and 2 px): EPE and time per pair, next to OpenCV's DualTVL1 when
//!    `bench/out/opencv.json` exists (made by `python3 bench/opencv_tvl1.py bench/out`, which
//!    reads the same PNG pairs this program writes). 2 rayon threads, as OpenCV's 2.
//! 2. The whole per-sample pre-processing: interpolation to L = 11 + 10 flows + differences.
use anyhow::{Context, Result};
use mpfnet_stages::prep::features::{fuse, FeatureMode, FlowNorm};
use mpfnet_stages::prep::flow::{FlowEstimator, FlowField, TvL1, TvL1Params, WarpInterpolation};
use mpfnet_stages::prep::image::{crop, load_frame, save_png, Frame};
use mpfnet_stages::prep::interp::{ConsistencyParams, FlowInterpolator, FrameInterpolator};
use mpfnet_stages::prep::pattern::{smooth_field, warp_lanczos3, Texture};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

mod common;
use common::median;

fn write_f32(path: &Path, data: &[f32]) -> Result<()> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// (name, a, b, truth) with a(x) = b(x + truth(x)); both written as 8-bit PNG and read back.
fn make_pairs(out: &Path) -> Result<Vec<Pair>> {
    let photo = mpfnet_stages::prep::pattern::remove_colour_marks(&load_frame(
        "tests/fixtures/rustface_test.png",
    )?);
    // 128x128 regions of the photo centred on two faces (boxes checked by eye).
    let bases = vec![
        ("face1", crop(&photo, 831, 218, 128, 128)?),
        ("face2", crop(&photo, 1130, 216, 128, 128)?),
        ("tex1", Texture::new(128, 128, 11).render(128, 128, None)),
    ];
    let mut pairs = Vec::new();
    for (name, b) in bases {
        for (k, mag) in [0.5f32, 2.0].into_iter().enumerate() {
            let truth = smooth_field(128, 128, mag, 100 + k as u64);
            let a = warp_lanczos3(&b, &truth);
            let id = format!("{name}_{mag}px");
            let (pa, pb) = (
                out.join(format!("{id}_a.png")),
                out.join(format!("{id}_b.png")),
            );
            save_png(&a, &pa)?;
            save_png(&b, &pb)?;
            let mut gt = truth.u.clone();
            gt.extend_from_slice(&truth.v);
            write_f32(&out.join(format!("{id}_flow.f32")), &gt)?;
            pairs.push((id, load_frame(&pa)?, load_frame(&pb)?, truth));
        }
    }
    Ok(pairs)
}

/// A test pair: (name, a, b, truth).
type Pair = (String, Frame, Frame, FlowField);

/// The TV-L1 settings compared, by name.
fn configs() -> [(&'static str, TvL1Params); 4] {
    [
        ("default (5 scales x0.5)", TvL1Params::default()),
        (
            "6 scales x0.5",
            TvL1Params {
                nscales: 6,
                ..Default::default()
            },
        ),
        (
            "Catmull-Rom (IPOL/OpenCV)",
            TvL1Params {
                interpolation: WarpInterpolation::Bicubic,
                ..Default::default()
            },
        ),
        (
            "OpenCV default (5 x0.8)",
            TvL1Params {
                scale_step: 0.8,
                ..Default::default()
            },
        ),
    ]
}

/// One table row: EPE and median time of each configuration on a pair, then OpenCV's figures;
/// adds them to `sums` (per column: EPE, ms).
fn tvl1_row(
    (id, a, b, truth): &Pair,
    configs: &[(&str, TvL1Params)],
    opencv: Option<&serde_json::Value>,
    sums: &mut [(f64, f64)],
) -> Result<String> {
    let zero = FlowField::zeros(128, 128).epe(truth);
    let mut line = format!("{id:<14} {zero:>7.3}");
    for (ci, (_, p)) in configs.iter().enumerate() {
        let est = TvL1::new(p.clone());
        let f = est.flow(a, b)?;
        let times: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                let _ = est.flow(a, b).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let (e, t) = (f.epe(truth) as f64, median(times));
        sums[ci].0 += e;
        sums[ci].1 += t;
        line += &format!(" | {:<30}", format!("{e:.4} / {t:.1}"));
    }
    for (k, key) in ["default", "nscales6"].iter().enumerate() {
        let r = opencv.and_then(|j| j[id.as_str()][key].as_object().cloned());
        match r {
            Some(o) => {
                let (e, t) = (o["epe"].as_f64().unwrap(), o["ms"].as_f64().unwrap());
                sums[configs.len() + k].0 += e;
                sums[configs.len() + k].1 += t;
                line += &format!(" | {:<16}", format!("{e:.4} / {t:.1}"));
            }
            None => line += &format!(" | {:<16}", "-"),
        }
    }
    Ok(line)
}

/// TV-L1's EPE and time on every pair and setting, beside OpenCV's when measured.
fn tvl1_table(pairs: &[Pair], out: &Path, threads: usize) -> Result<()> {
    let opencv: Option<serde_json::Value> = std::fs::read_to_string(out.join("opencv.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let configs = configs();
    println!("TV-L1, 128x128, {threads} threads; EPE px / median ms (of 7 runs)");
    let mut header = format!("{:<14} {:>7}", "pair", "zeroEPE");
    for (name, _) in &configs {
        header += &format!(" | {name:<30}");
    }
    header += &format!(" | {:<16} | {:<16}", "OpenCV default", "OpenCV 6 x0.5");
    println!("{header}");
    let mut sums = vec![(0.0f64, 0.0f64); configs.len() + 2];
    for pair in pairs {
        println!("{}", tvl1_row(pair, &configs, opencv.as_ref(), &mut sums)?);
    }
    let n = pairs.len() as f64;
    let mut line = format!("{:<14} {:>7}", "mean", "");
    for (k, (e, t)) in sums.iter().enumerate() {
        let w = if k < configs.len() { 30 } else { 16 };
        line += &format!(" | {:<w$}", format!("{:.4} / {:.1}", e / n, t / n));
    }
    println!("{line}");
    Ok(())
}

/// Whole per-sample pre-processing on a face pair with ~2 px motion.
fn per_sample((_, a, b, _): &Pair, threads: usize) -> Result<()> {
    let est: Arc<dyn FlowEstimator> = Arc::new(TvL1::default());
    let vfi = FlowInterpolator::new(est.clone(), ConsistencyParams::default());
    let mut t_interp = Vec::new();
    let mut t_fuse = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let frames = vfi.interpolate(b, a, 11)?;
        t_interp.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let (shape, _) = fuse(
            &frames,
            est.as_ref(),
            FeatureMode::Both,
            FlowNorm::default(),
        )?;
        t_fuse.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(shape, vec![5, 10, 128, 128]);
    }
    let (ti, tf) = (median(t_interp), median(t_fuse));
    println!("per sample (128x128, L = 11, {threads} threads): interpolation {ti:.0} ms + 10 flows & diffs {tf:.0} ms = {:.0} ms", ti + tf);
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .iter()
        .position(|a| a == "--out")
        .map(|i| args[i + 1].clone())
        .unwrap_or_else(|| "bench/out".into());
    let out = Path::new(&out);
    std::fs::create_dir_all(out)?;
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let pairs = make_pairs(out)?;
    tvl1_table(&pairs, out, threads)?;
    per_sample(&pairs[1], threads)
}
