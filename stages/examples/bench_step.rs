//! One CA-I3D training step (forward, backward, SGD-momentum update), median wall time and
//! peak RSS. Run one configuration per process (VmHWM is a process-lifetime peak):
//!
//! `cargo run --release [--features mimalloc] --example bench_step -- --batch 4 --size 128`
//! options: `--frames T` (10), `--steps N` (3), `--reference` (stock candle ops),
//! `--mallopt` (glibc: no mmap for big buffers, no trimming), `--counts` (param counts only).

// The allocator set-up of the `mpfnet` binary (src/main.rs says why purging is off).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3); libmimalloc-sys 0.1.49 has no constant.
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use mpfnet_stages::model::ops;
use mpfnet_stages::model::{CaI3d, CaI3dConfig};
use mpfnet_stages::train::init::var_builder;
use std::time::Instant;

mod common;
use common::{arg, trainer};

extern "C" {
    fn mallopt(param: i32, value: i32) -> i32;
}

fn vm_hwm_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// User + system CPU time of this process, ms (robust to other processes sharing the cores).
fn cpu_ms() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" of the command name: utime is the 12th, stime the 13th.
    let rest = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) * 10.0
}

fn count(cfg: &CaI3dConfig) -> anyhow::Result<usize> {
    let vm = VarMap::new();
    Ok(CaI3d::new(var_builder(&vm, 0, &Device::Cpu), cfg)?.param_count())
}

/// Wall times of one training step and of its forward pass, and CPU time, in ms.
#[derive(Default)]
struct StepTimes {
    step: Vec<f64>,
    fwd: Vec<f64>,
    cpu: Vec<f64>,
}

impl StepTimes {
    /// Drops the warm-up step and sorts each series.
    fn finish(&mut self) {
        for v in [&mut self.step, &mut self.fwd, &mut self.cpu] {
            v.remove(0);
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        }
    }
}

/// Runs `steps + 1` training steps of the bench network on `x` (the first is the warm-up).
fn run_steps(x: &Tensor, steps: usize, reference: bool) -> anyhow::Result<StepTimes> {
    let (model, mut opt) = trainer(&CaI3dConfig::bench(), x.device())?;
    let mut t = StepTimes::default();
    for _ in 0..steps + 1 {
        let c0 = cpu_ms();
        let t0 = Instant::now();
        let (loss, tf) = {
            let run = || -> candle_core::Result<(Tensor, f64)> {
                let e = model.forward(x, true)?;
                let tf = t0.elapsed().as_secs_f64() * 1e3;
                Ok((e.sqr()?.mean_all()?, tf))
            };
            if reference {
                ops::with_reference(run)?
            } else {
                run()?
            }
        };
        let grads = if reference {
            ops::with_reference(|| loss.backward())?
        } else {
            loss.backward()?
        };
        opt.step(&grads)?;
        drop(grads);
        t.step.push(t0.elapsed().as_secs_f64() * 1e3);
        t.fwd.push(tf);
        t.cpu.push(cpu_ms() - c0);
    }
    t.finish();
    Ok(t)
}

fn main() -> anyhow::Result<()> {
    #[cfg(feature = "mimalloc")]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc reads it at each purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--counts") {
        for (name, cfg) in [
            ("paper", CaI3dConfig::paper()),
            ("demo", CaI3dConfig::demo()),
            ("bench", CaI3dConfig::bench()),
        ] {
            println!("params {name}: {}", count(&cfg)?);
        }
        return Ok(());
    }
    let (b, size, frames, steps) = (
        arg(&args, "--batch", 4),
        arg(&args, "--size", 128),
        arg(&args, "--frames", 10),
        arg(&args, "--steps", 3),
    );
    let reference = args.iter().any(|a| a == "--reference");
    let use_mallopt = args.iter().any(|a| a == "--mallopt");
    if use_mallopt {
        // M_MMAP_MAX = 0: never mmap (big buffers come from the heap and are reused);
        // M_TRIM_THRESHOLD huge: never give the heap back.
        unsafe {
            mallopt(-4, 0);
            mallopt(-1, i32::MAX);
        }
    }
    let dev = Device::Cpu;
    let channels = CaI3dConfig::bench().in_channels;
    let x = Tensor::randn(0f32, 1.0, (b, channels, frames, size, size), &dev)?;
    let StepTimes {
        step: times,
        fwd: fwd_times,
        cpu,
    } = run_steps(&x, steps, reference)?;
    let alloc = if cfg!(feature = "mimalloc") {
        "mimalloc"
    } else if use_mallopt {
        "glibc+mallopt"
    } else {
        "glibc"
    };
    println!(
        "{} b{b} {frames}x{size}x{size} [{alloc}] threads={}: step median {:.0} ms (fwd {:.0} ms, min {:.0}, max {:.0}, n={}), cpu {:.0} ms/step, peak RSS {:.0} MiB, load {}",
        if reference { "stock-ops" } else { "custom" },
        rayon::current_num_threads(),
        times[times.len() / 2],
        fwd_times[fwd_times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len(),
        cpu[cpu.len() / 2],
        vm_hwm_mib(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    Ok(())
}
