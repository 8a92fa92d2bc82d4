//! Per-op forward/backward times at the bench network's shapes (custom ops), to find hot spots.
use candle_core::{DType, Device, Tensor, Var};
use mpfnet_stages::model::ops::{self, BnArgs, BnMode};
use std::time::Instant;

fn time<F: FnMut()>(name: &str, mut f: F) {
    f();
    let n = 3;
    let t0 = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{name:40} {:8.1} ms",
        t0.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}

/// Times `{name} fwd+bwd`: `op`, then the backward pass of the sum of its output.
fn time_bwd(name: &str, op: impl Fn() -> candle_core::Result<Tensor>) {
    time(&format!("{name} fwd+bwd"), || {
        op().unwrap().sum_all().unwrap().backward().unwrap();
    });
}

/// Times `{name} fwd` (the op alone), then `{name} fwd+bwd`.
fn time_fwd_bwd(name: &str, op: impl Fn() -> candle_core::Result<Tensor>) {
    time(&format!("{name} fwd"), || {
        op().unwrap();
    });
    time_bwd(name, op);
}

fn randn(shape: (usize, usize, usize, usize, usize), dev: &Device) -> anyhow::Result<Var> {
    Ok(Var::from_tensor(&Tensor::randn(0f32, 1., shape, dev)?)?)
}

fn bench_convs(b: usize, s: usize, dev: &Device) -> anyhow::Result<()> {
    for (cin, cout, k, hw) in [
        (5, 32, 3, s),
        (32, 32, 1, s / 2),
        (32, 64, 3, s / 2),
        (128, 48, 1, s / 4),
        (48, 64, 3, s / 4),
    ] {
        let x = randn((b, cin, 10, hw, hw), dev)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (cout, cin, k, k, k), dev)?)?;
        let p = k / 2;
        time_fwd_bwd(&format!("conv {cin}->{cout} k{k} {hw}x{hw}"), || {
            ops::conv3d(&x, &w, [1, 1, 1], [p, p, p])
        });
    }
    Ok(())
}

/// BatchNorm+ReLU and the first max pool, on `x` (32 channels at `s`).
fn bench_bn_pool(x: &Var, dev: &Device) -> anyhow::Result<()> {
    let g = Var::ones(32, DType::F32, dev)?;
    let be = Var::zeros(32, DType::F32, dev)?;
    let (rm, rv) = (
        Var::zeros(32, DType::F32, dev)?,
        Var::ones(32, DType::F32, dev)?,
    );
    let args = BnArgs {
        running_mean: &rm,
        running_var: &rv,
        eps: 1e-3,
        momentum: 0.01,
        mode: BnMode::Train,
        relu: true,
    };
    time_fwd_bwd("bn+relu 32ch", || ops::batch_norm(x, &g, &be, &args));
    time_bwd("maxpool 1x3x3 s2", || {
        ops::max_pool3d(x, [1, 3, 3], [1, 2, 2], [0, 1, 1])
    });
    Ok(())
}

/// The max-pool kernels alone (no autograd): the two pools of the network.
fn bench_pool_kernels(b: usize, s: usize, dev: &Device) -> anyhow::Result<()> {
    use mpfnet_stages::model::ops::pool3d::{max_pool3d_bwd_cpu, max_pool3d_fwd_cpu, PoolGeo};
    for (name, hw, k, st, pd) in [
        ("1x3x3 s2 (32ch, s)", s, [1, 3, 3], [1, 2, 2], [0, 1, 1]),
        (
            "3x3x3 s1 (32ch, s/2)",
            s / 2,
            [3, 3, 3],
            [1, 1, 1],
            [1, 1, 1],
        ),
    ] {
        let planes = b * 32;
        let geo = PoolGeo::new([planes, 1, 10, hw, hw], k, st, pd)?;
        let xv: Vec<f32> = Tensor::randn(0f32, 1., planes * 10 * hw * hw, dev)?.to_vec1()?;
        let y = max_pool3d_fwd_cpu(&geo, &xv);
        let go = vec![1f32; y.len()];
        time(&format!("maxpool {name} kernel fwd"), || {
            max_pool3d_fwd_cpu(&geo, &xv);
        });
        time(&format!("maxpool {name} kernel bwd"), || {
            max_pool3d_bwd_cpu(&geo, &xv, &y, &go);
        });
    }
    Ok(())
}

/// Coordinate attention (pool, apply) at 128 channels, and plain candle ops for scale.
fn bench_ca(x2: &Var, b: usize, s: usize, dev: &Device) -> anyhow::Result<()> {
    let x3 = randn((b, 128, 10, s / 2, s / 2), dev)?;
    let a = Var::from_tensor(&Tensor::rand(0f32, 1., (b, 128, 10 + s), dev)?)?;
    time("ca_pool 128ch s/2 fwd", || {
        ops::ca_pool(&x3).unwrap();
    });
    time_fwd_bwd("ca_apply 128ch s/2", || ops::ca_apply(&x3, &a));
    time_bwd("ca_pool+apply 128ch s/2", || {
        let z = ops::ca_pool(&x3)?;
        ops::ca_apply(&x3, &a)?.sum_all()? + z.sum_all()?
    });
    time("plain add 128ch s/2 (candle)", || {
        (x3.as_tensor() + x3.as_tensor()).unwrap();
    });
    time("cat 4 x 32ch s/2 fwd", || {
        let x2 = x2.as_tensor();
        Tensor::cat(&[x2, x2, x2, x2], 1).unwrap();
    });
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (b, s) = (arg(1, 4), arg(2, 48));
    bench_convs(b, s, &dev)?;
    bench_bn_pool(&randn((b, 32, 10, s, s), &dev)?, &dev)?;
    bench_pool_kernels(b, s, &dev)?;
    let x2 = randn((b, 32, 10, s / 2, s / 2), &dev)?;
    time_fwd_bwd("maxpool 3x3x3 s1 (32ch, s/2)", || {
        ops::max_pool3d(&x2, [3, 3, 3], [1, 1, 1], [1, 1, 1])
    });
    bench_ca(&x2, b, s, &dev)
}
