//! One paper-scale LOSO fold on this CPU, measured by parts and extrapolated (issue 6): a full
//! fold (60 GFE epochs, 80 AFE epochs, 500 meta steps at 128x128, L = 11) takes hours here, so
//! this times the units the fold is made of and multiplies by the paper's schedule:
//!
//! - pre-processing of one clip (crop 128, interpolation to L = 11, 10 TV-L1 flows + differences);
//! - one CA-I3D (paper widths) training step per sample (forward, backward, SGD-momentum update),
//!   at `--batch` (default 8; the paper's GFE batch of 128 would need ~40 GiB here);
//! - one eval-mode forward pass per sample (prototypes, validation).
//!
//! The workload is CASME II's (SDE: 246 samples, 26 subjects, class counts 32/25/63/27/99; per
//! fold ~236 training samples of which 2 subjects (~19 samples) validate; AFE on the magnified,
//! class-balanced set, phi ranges from `prep::magnify::phi_max_per_class` with base 4, cap 14).
//!
//! `cargo run --release --example bench_fold [-- --batch 8 --steps 2 --device cuda:0]`
use anyhow::Result;
use candle_core::{Device, Tensor};
use mpfnet_stages::kinds::features::FeatureParams;
use mpfnet_stages::model::CaI3dConfig;
use mpfnet_stages::prep::pattern::{smooth_field, warp_lanczos3, Texture};
use mpfnet_stages::train::afe::AfeConfig;
use mpfnet_stages::train::meta::MetaConfig;
use mpfnet_stages::train::triplet::GfeConfig;
use std::time::Instant;

mod common;
use common::{arg, median, trainer};

fn hms(s: f64) -> String {
    let h = (s / 3600.0).floor();
    let m = ((s - h * 3600.0) / 60.0).round();
    format!("{h:.0} h {m:02.0} min")
}

/// Median seconds to pre-process one clip at the paper's settings (crop 128, L = 11, flows).
fn time_prep() -> Result<f64> {
    let prep = FeatureParams::default();
    let onset = Texture::new(160, 160, 3).render(160, 160, None);
    let apex = warp_lanczos3(&onset, &smooth_field(160, 160, 1.5, 4));
    let mut t_prep = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let (o, a) = prep.crop_pair(
            onset.clone(),
            apex.clone(),
            &["onset".into(), "apex".into()],
        )?;
        let p = prep.prepare(o, a, 0)?;
        assert_eq!(p.shape, vec![5, prep.frames - 1, prep.size, prep.size]);
        t_prep.push(t0.elapsed().as_secs_f64());
    }
    Ok(median(t_prep))
}

/// What the paper's CA-I3D costs here on 5 x 10 x 128 x 128 inputs, per sample.
struct ModelTimes {
    params: usize,
    /// One training step (forward, backward, update), at the given batch.
    step_s: f64,
    /// One eval-mode forward pass.
    fwd_s: f64,
}

fn time_model(batch: usize, steps: usize, dev: &Device) -> Result<ModelTimes> {
    let (model, mut opt) = trainer(&CaI3dConfig::paper(), dev)?;
    let x = Tensor::randn(0f32, 1.0, (batch, 5, 10, 128, 128), dev)?;
    let mut t_step = Vec::new();
    for _ in 0..steps + 1 {
        let t0 = Instant::now();
        let loss = model.forward(&x, true)?.sqr()?.mean_all()?;
        opt.step(&loss.backward()?)?;
        loss.to_scalar::<f32>()?; // on a GPU: wait for the step to finish
        t_step.push(t0.elapsed().as_secs_f64());
    }
    t_step.remove(0); // warm-up
    let xe = Tensor::randn(0f32, 1.0, (16, 5, 10, 128, 128), dev)?;
    let mut t_fwd = Vec::new();
    for _ in 0..2 {
        let t0 = Instant::now();
        model.forward(&xe, false)?.sum_all()?.to_scalar::<f32>()?;
        t_fwd.push(t0.elapsed().as_secs_f64());
    }
    Ok(ModelTimes {
        params: model.param_count(),
        step_s: median(t_step) / batch as f64,
        fwd_s: median(t_fwd) / 16.0,
    })
}

/// CASME II's per-fold workload under the paper's schedule, extrapolated and printed.
fn report(prep_s: f64, m_t: &ModelTimes, batch: usize) {
    let ModelTimes {
        params,
        step_s,
        fwd_s,
    } = *m_t;
    let counts = [32usize, 25, 63, 27, 99];
    let n: usize = counts.iter().sum();
    let per_fold = |c: usize| c * 25 / 26; // one subject out
    let train: usize = counts.iter().map(|&c| per_fold(c)).sum::<usize>() - 19;
    let val = 19usize;
    let phi = mpfnet_stages::prep::magnify::phi_max_per_class(&counts.map(per_fold), 4, 14);
    let balanced: usize = counts
        .iter()
        .zip(&phi)
        .map(|(&c, &p)| per_fold(c) * (p + 1))
        .sum::<usize>()
        * train
        / (train + val);
    let magnified_copies: usize = counts.iter().zip(&phi).map(|(&c, &p)| c * p).sum();
    let (g, a, m) = (
        GfeConfig::default(),
        AfeConfig::default(),
        MetaConfig::default(),
    );
    let gfe_s = (g.epochs * train) as f64 * step_s;
    let afe_s = (a.epochs * balanced) as f64 * step_s;
    let per_step = m.episodes_per_step * counts.len() * (m.k_shot + m.n_query);
    // two encoders (P: side by side; C: GFE then the cascade AFE)
    let meta_train_s = (m.steps * per_step * 2) as f64 * step_s;
    let meta_val_s = ((m.steps / m.eval_every + 1) * (train + val) * 2) as f64 * fwd_s;
    let meta_s = meta_train_s + meta_val_s;
    let fold_s = gfe_s + afe_s + 2.0 * meta_s; // MPFNet-P and MPFNet-C share GFE and AFE
    let prep_all_s = (n + magnified_copies) as f64 * prep_s;

    println!("CPU: {} threads (rayon)", rayon::current_num_threads());
    println!("measured: pre-processing {prep_s:.2} s/clip (128 px, L = 11); CA-I3D paper widths ({params} params): train {step_s:.2} s/sample (batch {batch}), eval forward {fwd_s:.3} s/sample");
    println!("CASME II SDE per fold: {train} training samples, {val} validation, {balanced} after balancing (phi_max {phi:?})");
    println!(
        "  GFE  {:>3} epochs x {train:>4} samples              {}",
        g.epochs,
        hms(gfe_s)
    );
    println!(
        "  AFE  {:>3} epochs x {balanced:>4} samples              {}",
        a.epochs,
        hms(afe_s)
    );
    println!(
        "  meta {:>3} steps x {per_step} samples x 2 encoders (+val) {} per variant, P and C",
        m.steps,
        hms(meta_s)
    );
    println!(
        "one fold (GFE + AFE + MPFNet-P + MPFNet-C): {}",
        hms(fold_s)
    );
    println!(
        "pre-processing, once for all folds ({n} clips + {magnified_copies} magnified copies): {}",
        hms(prep_all_s)
    );
    println!(
        "26-fold CASME II run on this CPU: {} ({:.1} days)",
        hms(26.0 * fold_s + prep_all_s),
        (26.0 * fold_s + prep_all_s) / 86400.0
    );
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (batch, steps) = (arg(&args, "--batch", 8), arg(&args, "--steps", 2));
    // `--device cuda:0` (a build with --features cuda) times the training on a GPU
    let dev = match args
        .iter()
        .position(|a| a == "--device")
        .and_then(|i| args.get(i + 1))
    {
        Some(d) if d.starts_with("cuda:") => Device::new_cuda(d[5..].parse()?)?,
        _ => Device::Cpu,
    };
    let prep_s = time_prep()?;
    let times = time_model(batch, steps, &dev)?;
    report(prep_s, &times, batch);
    Ok(())
}
