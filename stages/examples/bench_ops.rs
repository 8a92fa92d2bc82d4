//! Per-op forward/backward times at the bench network's shapes (custom ops), to find hot spots.
use candle_core::{DType, Device, Tensor, Var};
use mpfnet_stages::model::ops::{self, BnMode};
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

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let b = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4usize);
    let s = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(48usize);
    for (cin, cout, k, hw) in [
        (5, 32, 3, s),
        (32, 32, 1, s / 2),
        (32, 64, 3, s / 2),
        (128, 48, 1, s / 4),
        (48, 64, 3, s / 4),
    ] {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (b, cin, 10, hw, hw), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (cout, cin, k, k, k), &dev)?)?;
        let p = k / 2;
        time(&format!("conv {cin}->{cout} k{k} {hw}x{hw} fwd"), || {
            ops::conv3d(&x, &w, [1, 1, 1], [p, p, p]).unwrap();
        });
        time(
            &format!("conv {cin}->{cout} k{k} {hw}x{hw} fwd+bwd"),
            || {
                ops::conv3d(&x, &w, [1, 1, 1], [p, p, p])
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
            },
        );
    }
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (b, 32, 10, s, s), &dev)?)?;
    let g = Var::ones(32, DType::F32, &dev)?;
    let be = Var::zeros(32, DType::F32, &dev)?;
    let (rm, rv) = (
        Var::zeros(32, DType::F32, &dev)?,
        Var::ones(32, DType::F32, &dev)?,
    );
    time("bn+relu 32ch fwd", || {
        ops::batch_norm3d(&x, &g, &be, &rm, &rv, 1e-3, 0.01, BnMode::Train, true).unwrap();
    });
    time("bn+relu 32ch fwd+bwd", || {
        ops::batch_norm3d(&x, &g, &be, &rm, &rv, 1e-3, 0.01, BnMode::Train, true)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
    });
    time("maxpool 1x3x3 s2 fwd+bwd", || {
        ops::max_pool3d(&x, [1, 3, 3], [1, 2, 2], [0, 1, 1])
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
    });
    // The max-pool kernels alone (no autograd): the two pools of the network.
    for (name, planes, hw, k, st, pd) in [
        (
            "1x3x3 s2 (32ch, s)",
            b * 32,
            s,
            [1, 3, 3],
            [1, 2, 2],
            [0, 1, 1],
        ),
        (
            "3x3x3 s1 (32ch, s/2)",
            b * 32,
            s / 2,
            [3, 3, 3],
            [1, 1, 1],
            [1, 1, 1],
        ),
    ] {
        use mpfnet_stages::model::ops::pool3d::{max_pool3d_bwd_cpu, max_pool3d_fwd_cpu, PoolGeo};
        let geo = PoolGeo::new([planes, 1, 10, hw, hw], k, st, pd)?;
        let xv: Vec<f32> = Tensor::randn(0f32, 1., planes * 10 * hw * hw, &dev)?.to_vec1()?;
        let y = max_pool3d_fwd_cpu(&geo, &xv);
        let go = vec![1f32; y.len()];
        time(&format!("maxpool {name} kernel fwd"), || {
            max_pool3d_fwd_cpu(&geo, &xv);
        });
        time(&format!("maxpool {name} kernel bwd"), || {
            max_pool3d_bwd_cpu(&geo, &xv, &y, &go);
        });
    }
    let x2 = Var::from_tensor(&Tensor::randn(0f32, 1., (b, 32, 10, s / 2, s / 2), &dev)?)?;
    time("maxpool 3x3x3 s1 (32ch, s/2) fwd", || {
        ops::max_pool3d(&x2, [3, 3, 3], [1, 1, 1], [1, 1, 1]).unwrap();
    });
    time("maxpool 3x3x3 s1 (32ch, s/2) fwd+bwd", || {
        ops::max_pool3d(&x2, [3, 3, 3], [1, 1, 1], [1, 1, 1])
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
    });
    let x3 = Var::from_tensor(&Tensor::randn(0f32, 1., (b, 128, 10, s / 2, s / 2), &dev)?)?;
    let a = Var::from_tensor(&Tensor::rand(0f32, 1., (b, 128, 10 + s), &dev)?)?;
    time("ca_pool 128ch s/2 fwd", || {
        ops::ca_pool(&x3).unwrap();
    });
    time("ca_apply 128ch s/2 fwd", || {
        ops::ca_apply(&x3, &a).unwrap();
    });
    time("ca_apply 128ch s/2 fwd+bwd", || {
        ops::ca_apply(&x3, &a)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
    });
    time("ca_pool+apply 128ch s/2 fwd+bwd", || {
        let z = ops::ca_pool(&x3).unwrap();
        (ops::ca_apply(&x3, &a).unwrap().sum_all().unwrap() + z.sum_all().unwrap())
            .unwrap()
            .backward()
            .unwrap();
    });
    time("plain add 128ch s/2 (candle)", || {
        (x3.as_tensor() + x3.as_tensor()).unwrap();
    });
    time("cat 4 x 32ch s/2 fwd", || {
        Tensor::cat(
            &[
                x2.as_tensor(),
                x2.as_tensor(),
                x2.as_tensor(),
                x2.as_tensor(),
            ],
            1,
        )
        .unwrap();
    });
    Ok(())
}
