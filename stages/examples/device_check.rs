//! Every op of CA-I3D on a device against the custom CPU op, forward and backward, then one
//! CA-I3D training step timed there. The GPU check (`scripts/gpu-check.sh`) runs it with
//! `--device cuda:0`; on this CPU, `--device cpu` compares the stock-op path (what a GPU runs without cuDNN)
//! with the custom CPU kernels, as `stages/tests/ops.rs` does.
//!
//! `cargo run --release -p mpfnet-stages --example device_check -- --device cpu [--tol 1e-4]
//!  [--step-batch 4 --step-size 128 --step-frames 10 --steps 3 --widths bench|paper]`
//!
//! Prints one line per op (max relative error of the output, of every gradient, and of the
//! BatchNorm running statistics) and exits 1 if any exceeds `--tol`.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use mpfnet_stages::model::ops::{self, BnMode};
use mpfnet_stages::model::{CaI3d, CaI3dConfig};
use mpfnet_stages::train::init::{sorted_vars, var_builder};
use mpfnet_stages::train::sgd::{SgdConfig, SgdMomentum};
use std::time::Instant;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn device(spec: &str) -> Result<Device> {
    Ok(match spec.strip_prefix("cuda:") {
        Some(n) => Device::new_cuda(n.parse()?)?,
        None => Device::Cpu,
    })
}

/// max |a - b| / max(max |b|, 1e-6), both moved to the CPU.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
    let a = a.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    let b = b.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    anyhow::ensure!(a.len() == b.len(), "lengths {} and {}", a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    Ok(diff / scale)
}

/// One op applied to its input tensors; `state` are extra Vars it updates (BN statistics).
type OpFn = dyn Fn(&[Tensor], &[Var]) -> candle_core::Result<Tensor>;

struct Case {
    name: &'static str,
    inputs: Vec<Vec<usize>>,
    /// initial values of the op's state Vars (running mean, running var), by length
    state: Vec<(usize, f32)>,
    op: Box<OpFn>,
}

/// Output, the gradient of every input, and the state after the op, on `dev`. On the CPU the
/// custom kernels run unless `reference` (the stock-op path that every other device takes).
fn run_case(
    c: &Case,
    xs: &[Tensor],
    r: &Tensor,
    dev: &Device,
    reference: bool,
) -> Result<Vec<Tensor>> {
    let vars: Vec<Var> = xs
        .iter()
        .map(|x| Var::from_tensor(&x.to_device(dev)?))
        .collect::<candle_core::Result<_>>()?;
    let state: Vec<Var> = c
        .state
        .iter()
        .map(|&(n, v)| Var::from_tensor(&Tensor::full(v, n, dev)?))
        .collect::<candle_core::Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let go = || -> candle_core::Result<(Tensor, candle_core::backprop::GradStore)> {
        let y = (c.op)(&ts, &state)?;
        let loss = (&y * r.to_device(dev)?)?.sum_all()?;
        Ok((y.clone(), loss.backward()?))
    };
    let (y, grads) = if reference {
        ops::with_reference(go)?
    } else {
        go()?
    };
    let mut out = vec![y];
    for v in &vars {
        out.push(grads.get(v.as_tensor()).cloned().unwrap_or(v.zeros_like()?));
    }
    out.extend(state.iter().map(|s| s.as_tensor().clone()));
    Ok(out)
}

fn cases() -> Vec<Case> {
    let bn = |mode: BnMode, relu: bool| -> Box<OpFn> {
        Box::new(move |t: &[Tensor], s: &[Var]| {
            let args = ops::BnArgs {
                running_mean: &s[0],
                running_var: &s[1],
                eps: 1e-3,
                momentum: 0.1,
                mode,
                relu,
            };
            ops::batch_norm(&t[0], &t[1], &t[2], &args)
        })
    };
    vec![
        Case {
            name: "conv3d 3x3x3 s1 p1",
            inputs: vec![vec![2, 5, 4, 12, 12], vec![8, 5, 3, 3, 3]],
            state: vec![],
            op: Box::new(|t, _| ops::conv3d(&t[0], &t[1], [1, 1, 1], [1, 1, 1])),
        },
        Case {
            name: "conv3d 1x1x1",
            inputs: vec![vec![2, 8, 3, 9, 7], vec![6, 8, 1, 1, 1]],
            state: vec![],
            op: Box::new(|t, _| ops::conv3d(&t[0], &t[1], [1, 1, 1], [0, 0, 0])),
        },
        Case {
            name: "max pool 1x3x3 s(1,2,2)",
            inputs: vec![vec![2, 4, 3, 11, 13]],
            state: vec![],
            op: Box::new(|t, _| ops::max_pool3d(&t[0], [1, 3, 3], [1, 2, 2], [0, 1, 1])),
        },
        Case {
            name: "max pool 3x3x3 s1",
            inputs: vec![vec![2, 4, 5, 8, 8]],
            state: vec![],
            op: Box::new(|t, _| ops::max_pool3d(&t[0], [3, 3, 3], [1, 1, 1], [1, 1, 1])),
        },
        Case {
            name: "adaptive avg pool 1x2x2",
            inputs: vec![vec![2, 6, 3, 9, 7]],
            state: vec![],
            op: Box::new(|t, _| ops::adaptive_avg_pool3d(&t[0], [1, 2, 2])),
        },
        Case {
            name: "BatchNorm+ReLU train",
            inputs: vec![vec![3, 6, 3, 7, 5], vec![6], vec![6]],
            state: vec![(6, 0.0), (6, 1.0)],
            op: bn(BnMode::Train, true),
        },
        Case {
            name: "BatchNorm eval",
            inputs: vec![vec![3, 6, 3, 7, 5], vec![6], vec![6]],
            state: vec![(6, 0.1), (6, 1.5)],
            op: bn(BnMode::Eval, false),
        },
        Case {
            name: "CA pool",
            inputs: vec![vec![2, 5, 4, 6, 7]],
            state: vec![],
            op: Box::new(|t, _| ops::ca_pool(&t[0])),
        },
        Case {
            name: "CA apply",
            inputs: vec![vec![2, 5, 4, 6, 7], vec![2, 5, 17]],
            state: vec![],
            op: Box::new(|t, _| ops::ca_apply(&t[0], &t[1])),
        },
    ]
}

fn parity(dev: &Device, tol: f32) -> Result<bool> {
    let mut ok = true;
    let conv = if dev.is_cuda() && cfg!(feature = "cudnn") {
        "cuDNN"
    } else {
        "stock candle ops"
    };
    println!("{dev:?}: conv3d through {conv}, the other ops through stock candle ops");
    println!(
        "{:<26} {:>12} {:>12} {:>12}",
        "op", "output", "max grad", "max state"
    );
    for c in cases() {
        let xs: Vec<Tensor> = c
            .inputs
            .iter()
            .map(|s| Tensor::randn(0f32, 1.0, s.as_slice(), &Device::Cpu))
            .collect::<candle_core::Result<_>>()?;
        let y_shape = (c.op)(
            &xs,
            &c.state
                .iter()
                .map(|&(n, v)| Var::from_tensor(&Tensor::full(v, n, &Device::Cpu)?))
                .collect::<candle_core::Result<Vec<_>>>()?,
        )?
        .shape()
        .clone();
        let r = Tensor::randn(0f32, 1.0, &y_shape, &Device::Cpu)?;
        let want = run_case(&c, &xs, &r, &Device::Cpu, false)?;
        // the device's own path: on the CPU the stock ops a GPU would run; on CUDA whatever
        // the build dispatches there (cuDNN for conv3d with the `cudnn` feature)
        let got = run_case(&c, &xs, &r, dev, dev.is_cpu())?;
        let n_in = c.inputs.len();
        let e_out = rel_err(&got[0], &want[0])?;
        let mut e_grad = 0f32;
        for k in 1..=n_in {
            e_grad = e_grad.max(rel_err(&got[k], &want[k])?);
        }
        let mut e_state = 0f32;
        for k in n_in + 1..want.len() {
            e_state = e_state.max(rel_err(&got[k], &want[k])?);
        }
        let bad = e_out > tol || e_grad > tol || e_state > tol;
        ok &= !bad;
        println!(
            "{:<26} {e_out:>12.2e} {e_grad:>12.2e} {e_state:>12.2e}{}",
            c.name,
            if bad { "  FAIL" } else { "" }
        );
    }
    Ok(ok)
}

/// Median ms of `steps` CA-I3D training steps (forward, backward, SGD with momentum) on `dev`.
fn step_time(
    dev: &Device,
    cfg: &CaI3dConfig,
    shape: (usize, usize, usize),
    steps: usize,
) -> Result<f64> {
    let (b, frames, size) = shape;
    let vm = VarMap::new();
    let model = CaI3d::new(var_builder(&vm, 1, dev), cfg)?;
    let sgd = SgdConfig {
        lr: 1e-3,
        momentum: 0.9,
        weight_decay: 5e-4,
    };
    let mut opt = SgdMomentum::new(sorted_vars(&vm), sgd)?;
    let x = Tensor::randn(0f32, 1.0, (b, cfg.in_channels, frames, size, size), dev)?;
    let mut times = Vec::new();
    for _ in 0..steps + 1 {
        let t0 = Instant::now();
        let loss = model.forward(&x, true)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        // wait for the device: reading one scalar back synchronises
        loss.to_dtype(DType::F32)?.to_vec0::<f32>()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dev = device(&arg(&args, "--device", "cpu".to_string()))?;
    let tol: f32 = arg(&args, "--tol", 1e-4);
    let ok = parity(&dev, tol)?;
    let steps: usize = arg(&args, "--steps", 3);
    if steps > 0 {
        let cfg = match arg(&args, "--widths", "bench".to_string()).as_str() {
            "paper" => CaI3dConfig::paper(),
            _ => CaI3dConfig::bench(),
        };
        let shape = (
            arg(&args, "--step-batch", 4),
            arg(&args, "--step-frames", 10),
            arg(&args, "--step-size", 128),
        );
        let ms = step_time(&dev, &cfg, shape, steps)?;
        println!(
            "training step, batch {} x 5 x {} x {} x {}: {ms:.1} ms (median of {steps})",
            shape.0, shape.1, shape.2, shape.2
        );
    }
    if !ok {
        anyhow::bail!("parity above {tol:e}");
    }
    Ok(())
}
