//! FlowNet2 beside TV-L1 on one 128x128 pair, run with
//!   cargo run --release -p mpfnet-stages --example bench_flownet2 [-- --runs 3 --width 1.0]
//! FlowNet2 at full width with random weights (the published checkpoint cannot be fetched here;
//! the cost does not depend on the weights), TV-L1 with the pipeline's default settings, on the
//! same procedural-texture pair (2 px smooth motion). Median wall time of `--runs` after one
//! warm-up, on the rayon pool (all cores). Also FlowNet2 by parts (each sub-network, and
//! FlowNetC's correlation alone, custom op vs stock ops).
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use mpfnet_stages::flownet2::ops::{self, Correlation};
use mpfnet_stages::flownet2::{FlowNet2, FlowNet2Config, FlowNet2Flow, FlowNetC};
use mpfnet_stages::prep::flow::{FlowEstimator, TvL1};
use mpfnet_stages::prep::pattern::{smooth_field, warp_lanczos3, Texture};

mod common;
use common::median;

fn time<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    f()?;
    let mut v = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(v))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str, d: &str| -> String {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| d.to_string())
    };
    let runs: usize = arg("--runs", "3").parse()?;
    let width: f64 = arg("--width", "1.0").parse()?;
    let size = 128;
    let b = Texture::new(size, size, 11).render(size, size, None);
    let truth = smooth_field(size, size, 2.0, 100);
    let a = warp_lanczos3(&b, &truth);
    println!(
        "one {size}x{size} pair, {} rayon threads, median of {runs} after a warm-up",
        rayon::current_num_threads()
    );

    let tvl1 = TvL1::default();
    let ms = time(runs, || tvl1.flow(&a, &b))?;
    let f = tvl1.flow(&a, &b)?;
    println!(
        "TV-L1 (defaults)                 {ms:9.1} ms   EPE {:.3} px",
        f.epe(&truth)
    );

    let cfg = FlowNet2Config::with_width(width);
    let vm = VarMap::new();
    let net = FlowNet2::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &cfg)?;
    let n: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
    let est = FlowNet2Flow::new(net.clone(), Device::Cpu, "random");
    let ms = time(runs, || est.flow(&a, &b))?;
    println!("FlowNet2 (width {width}, {n} params, random weights) {ms:9.1} ms");
    let ms_ref = ops::with_reference(|| time(runs, || est.flow(&a, &b)))?;
    println!("FlowNet2, stock-op path           {ms_ref:9.1} ms");

    // by parts, on the normalised 128x128 input
    let img = |f: &mpfnet_stages::prep::image::Frame| -> Result<Tensor> {
        let rgb = f.to_rgb();
        let mut chw = vec![0f32; 3 * size * size];
        for (p, px) in rgb.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                chw[c * size * size + p] = px[c] - 0.5;
            }
        }
        Ok(Tensor::from_vec(chw, (1, 3, size, size), &Device::Cpu)?)
    };
    let x = Tensor::cat(&[img(&a)?, img(&b)?], 1)?;
    let vm2 = VarMap::new();
    let c = FlowNetC::new(
        VarBuilder::from_varmap(&vm2, DType::F32, &Device::Cpu).pp("flownetc"),
        &cfg,
    )?;
    let ms = time(runs, || Ok(c.forward(&x)?))?;
    println!("  FlowNetC alone                  {ms:9.1} ms");
    // two random feature maps of FlowNetC's correlation input
    let features = || {
        Tensor::randn(
            0f32,
            1.0,
            (1, cfg.ch(256), size / 8, size / 8),
            &Device::Cpu,
        )
    };
    let (f, g) = (features()?, features()?);
    let corr = Correlation::FLOWNETC;
    let ms = time(runs.max(5), || Ok(corr.forward(&f, &g)?))?;
    let ms_ref = time(runs.max(5), || Ok(corr.reference(&f, &g)?))?;
    println!(
        "  correlation {:?}: custom {ms:.2} ms, stock ops {ms_ref:.2} ms",
        f.dims()
    );
    let inputs = Tensor::stack(
        &[
            img(&a)?.affine(255.0, 127.5)?,
            img(&b)?.affine(255.0, 127.5)?,
        ],
        2,
    )?;
    let ms = time(runs, || Ok(net.forward_all(&inputs)?))?;
    println!("  FlowNet2 forward_all (no pad)   {ms:9.1} ms");
    Ok(())
}
