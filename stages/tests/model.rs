//! CA-I3D: coordinate attention vs a naive implementation, overfitting, seeded determinism,
//! checkpoints, cascade widening. The model is driven by the training stages' own tools
//! (`train::init`, `train::sgd`, `train::ckpt`), the ones the pipeline runs.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use mpfnet_stages::model::layers::{BnCfg, CoordAttention3d};
use mpfnet_stages::model::{load_into, CaI3d, CaI3dConfig, InitScheme};
use mpfnet_stages::train::ckpt::{decode, encode, StateWriter};
use mpfnet_stages::train::init::{snapshot, sorted_vars, var_builder, weights_digest};
use mpfnet_stages::train::sgd::{SgdConfig, SgdMomentum};
use mpfnet_stages::train::state::{read_part, write_part};
use std::collections::HashMap;

mod common;
use common::{rand_t, rel_err};

fn tiny_cfg() -> CaI3dConfig {
    CaI3dConfig {
        stem_channels: 8,
        mixed: [[4, 4, 8, 2, 4, 4], [8, 4, 8, 2, 4, 4]],
        pool: [1, 2, 2],
        embed_dim: 16,
        ..CaI3dConfig::demo()
    }
}

/// Plain-loop CA3d with training-mode BatchNorm, straight from the definition.
fn naive_ca(ca: &CoordAttention3d, x: &Tensor) -> Vec<f32> {
    let (b, c, t, h, w) = x.dims5().unwrap();
    let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let at = |bi: usize, ci: usize, ti: usize, hi: usize, wi: usize| {
        xv[(((bi * c + ci) * t + ti) * h + hi) * w + wi] as f64
    };
    let l = t + h + w;
    // z[b][c][pos]
    let mut z = vec![0f64; b * c * l];
    for bi in 0..b {
        for ci in 0..c {
            for ti in 0..t {
                for hi in 0..h {
                    for wi in 0..w {
                        let v = at(bi, ci, ti, hi, wi);
                        z[(bi * c + ci) * l + ti] += v / (h * w) as f64;
                        z[(bi * c + ci) * l + t + hi] += v / (t * w) as f64;
                        z[(bi * c + ci) * l + t + h + wi] += v / (t * h) as f64;
                    }
                }
            }
        }
    }
    let get = |t: &Tensor| -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect()
    };
    let mip = ca.mip;
    let (w1, b1) = (get(&ca.conv1_w), get(&ca.conv1_b));
    let mut y = vec![0f64; b * mip * l];
    for bi in 0..b {
        for m in 0..mip {
            for p in 0..l {
                let mut s = b1[m];
                for ci in 0..c {
                    s += w1[m * c + ci] * z[(bi * c + ci) * l + p];
                }
                y[(bi * mip + m) * l + p] = s;
            }
        }
    }
    let (g, be) = (get(&ca.bn.weight), get(&ca.bn.bias));
    for m in 0..mip {
        let n = (b * l) as f64;
        let mean: f64 = (0..b)
            .flat_map(|bi| (0..l).map(move |p| (bi, p)))
            .map(|(bi, p)| y[(bi * mip + m) * l + p])
            .sum::<f64>()
            / n;
        let var: f64 = (0..b)
            .flat_map(|bi| (0..l).map(move |p| (bi, p)))
            .map(|(bi, p)| (y[(bi * mip + m) * l + p] - mean).powi(2))
            .sum::<f64>()
            / n;
        for bi in 0..b {
            for p in 0..l {
                let v = &mut y[(bi * mip + m) * l + p];
                let u = (*v - mean) / (var + ca.bn.eps).sqrt() * g[m] + be[m];
                *v = u * (u + 3.0).clamp(0.0, 6.0) / 6.0;
            }
        }
    }
    // attention maps a[axis][b][c][i]
    let ranges = [(0, t), (t, h), (t + h, w)];
    let mut a: Vec<Vec<f64>> = Vec::new();
    for (axis, &(off, len)) in ranges.iter().enumerate() {
        let (cw, cb) = (get(&ca.conv_axis[axis].0), get(&ca.conv_axis[axis].1));
        let mut m_ = vec![0f64; b * c * len];
        for bi in 0..b {
            for ci in 0..c {
                for i in 0..len {
                    let mut s = cb[ci];
                    for m in 0..mip {
                        s += cw[ci * mip + m] * y[(bi * mip + m) * l + off + i];
                    }
                    m_[(bi * c + ci) * len + i] = 1.0 / (1.0 + (-s).exp());
                }
            }
        }
        a.push(m_);
    }
    let mut out = Vec::with_capacity(xv.len());
    for bi in 0..b {
        for ci in 0..c {
            for ti in 0..t {
                for hi in 0..h {
                    for wi in 0..w {
                        let k = bi * c + ci;
                        out.push(
                            (at(bi, ci, ti, hi, wi)
                                * a[0][k * t + ti]
                                * a[1][k * h + hi]
                                * a[2][k * w + wi]) as f32,
                        );
                    }
                }
            }
        }
    }
    out
}

#[test]
fn coord_attention3d_matches_naive() {
    let vm = VarMap::new();
    let vb = var_builder(&vm, 5, &Device::Cpu);
    let cfg = BnCfg {
        eps: 1e-3,
        momentum: 0.01,
        init: InitScheme::KaimingNormal,
    };
    let ca = CoordAttention3d::new(40, cfg, vb.pp("ca")).unwrap();
    assert_eq!(ca.mip, 8);
    let x = rand_t(&[2, 40, 3, 5, 6], 8);
    let y = ca
        .forward(&x, true)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let n = naive_ca(&ca, &x);
    let maxref = n.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = y
        .iter()
        .zip(&n)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / maxref;
    assert!(err < 1e-5, "CA3d vs naive: relative error {err:e}");
    // The attention is not trivial (gates differ from a constant).
    let ratio: Vec<f32> = y
        .iter()
        .zip(x.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .map(|(a, b)| a / b)
        .collect();
    let spread = ratio.iter().cloned().fold(f32::MIN, f32::max)
        - ratio.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 1e-2);
}

#[test]
fn same_seed_same_weights() {
    let cfg = CaI3dConfig::demo();
    let digest = |seed| {
        let vm = VarMap::new();
        let _m = CaI3d::new(var_builder(&vm, seed, &Device::Cpu), &cfg).unwrap();
        weights_digest(&vm).unwrap()
    };
    let (a, b, c) = (digest(7), digest(7), digest(8));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn shapes_and_param_counts() {
    let vm = VarMap::new();
    let cfg = tiny_cfg();
    let m = CaI3d::new(var_builder(&vm, 1, &Device::Cpu), &cfg).unwrap();
    let x = rand_t(&[2, 5, 4, 16, 16], 3);
    let fm = m.feature_map(&x, false).unwrap();
    assert_eq!(fm.dims(), &[2, cfg.feature_channels(), 4, 4, 4]);
    assert_eq!(m.forward(&x, false).unwrap().dims(), &[2, 16]);
    // trainable = everything in the VarMap except the BN running statistics
    let all: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
    let running: usize = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.ends_with("running_mean") || k.ends_with("running_var"))
        .map(|(_, v)| v.elem_count())
        .sum();
    assert_eq!(m.param_count(), all - running);
}

#[test]
fn small_network_overfits() {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = var_builder(&vm, 11, &dev);
    let cfg = tiny_cfg();
    let m = CaI3d::new(vb.clone(), &cfg).unwrap();
    let cls_w = vb
        .pp("cls")
        .get_with_hints((3, 16), "weight", candle_nn::init::DEFAULT_KAIMING_UNIFORM)
        .unwrap();
    // The VarMap holds the encoder and the classifier; BN running statistics get no gradient,
    // so the optimiser leaves them alone.
    let mut opt = SgdMomentum::new(
        sorted_vars(&vm),
        SgdConfig {
            lr: 0.02,
            momentum: 0.9,
            weight_decay: 0.0,
        },
    )
    .unwrap();
    let x = rand_t(&[6, 5, 4, 16, 16], 21);
    let y = Tensor::new(&[0u32, 1, 2, 0, 1, 2], &dev).unwrap();
    let mut first = 0f32;
    let mut last = f32::MAX;
    for step in 0..80 {
        let logits = m
            .forward(&x, true)
            .unwrap()
            .matmul(&cls_w.t().unwrap())
            .unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
        last = loss.to_scalar::<f32>().unwrap();
        if step == 0 {
            first = last;
        }
        if last < 0.02 {
            break;
        }
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    eprintln!("overfit: loss {first} -> {last}");
    assert!(first > 0.5, "initial loss {first} suspiciously low");
    assert!(last < 0.05, "did not overfit: loss {first} -> {last}");
    // The running statistics moved away from their initial values.
    let rv = vm.data().lock().unwrap()["stem.bn.running_var"]
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap();
    assert!(rv.iter().any(|v| (v - 1.0).abs() > 1e-3));
}

/// The bytes a training stage checkpoints for one model and its optimiser.
/// Gradients of the sum of squared training-mode embeddings.
fn sq_loss_grads(m: &CaI3d, x: &Tensor) -> candle_core::backprop::GradStore {
    let y = m.forward(x, true).unwrap();
    y.sqr().unwrap().sum_all().unwrap().backward().unwrap()
}

fn ckpt_bytes(vm: &VarMap, opt: &SgdMomentum) -> Vec<u8> {
    let mut w = StateWriter::default();
    write_part(&mut w, "enc", vm, opt).unwrap();
    encode(&w.tensors, "{}").unwrap()
}

#[test]
fn checkpoint_roundtrip_with_momentum() {
    let dev = Device::Cpu;
    let cfg = tiny_cfg();
    let x = rand_t(&[2, 5, 3, 8, 8], 2);
    let make = |seed| {
        let vm = VarMap::new();
        let m = CaI3d::new(var_builder(&vm, seed, &dev), &cfg).unwrap();
        let opt = SgdMomentum::new(
            sorted_vars(&vm),
            SgdConfig {
                lr: 0.01,
                momentum: 0.9,
                weight_decay: 5e-4,
            },
        )
        .unwrap();
        (vm, m, opt)
    };
    let (vm, m, mut opt) = make(1);
    opt.step(&sq_loss_grads(&m, &x)).unwrap();
    let bytes = ckpt_bytes(&vm, &opt);
    assert_eq!(bytes, ckpt_bytes(&vm, &opt), "bytes not deterministic");
    let (names, _) = decode(&bytes, &dev).unwrap();
    assert!(names.contains_key("enc/var/stem.bn.running_mean"));
    assert!(names.keys().any(|k| k.starts_with("enc/mom/")));

    let (vm2, m2, mut opt2) = make(2);
    assert_ne!(weights_digest(&vm).unwrap(), weights_digest(&vm2).unwrap());
    read_part(&names, "enc", &vm2, &mut opt2).unwrap();
    assert_eq!(ckpt_bytes(&vm2, &opt2), bytes);
    // One more identical step on both gives identical states (momentum restored).
    for (mm, o) in [(&m, &mut opt), (&m2, &mut opt2)] {
        o.step(&sq_loss_grads(mm, &x)).unwrap();
    }
    assert_eq!(ckpt_bytes(&vm, &opt), ckpt_bytes(&vm2, &opt2));
}

/// Sum of |t| over every element.
fn abs_sum(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn load_into_widens_with_zeros_and_cascade_starts_as_source() {
    let dev = Device::Cpu;
    let cfg = tiny_cfg();
    let vm = VarMap::new();
    let src = CaI3d::new(var_builder(&vm, 3, &dev), &cfg).unwrap();
    // Give the running statistics non-trivial values.
    src.forward(&rand_t(&[3, 5, 3, 8, 8], 4), true).unwrap();
    let tensors: HashMap<String, Tensor> = snapshot(&vm).unwrap().into_iter().collect();

    let ccfg = CaI3dConfig {
        extra_in_channels: 4,
        ..cfg.clone()
    };
    let vm2 = VarMap::new();
    let cas = CaI3d::new(var_builder(&vm2, 99, &dev), &ccfg).unwrap();
    load_into(&vm2, &tensors).unwrap();
    let w = cas.stem.weight.clone();
    assert_eq!(w.dims(), &[8, 9, 3, 3, 3]);
    assert_eq!(abs_sum(&w.narrow(1, 5, 4).unwrap()), 0.0);
    let lead = w.narrow(1, 0, 5).unwrap();
    assert_eq!(abs_sum(&(lead - &src.stem.weight).unwrap()), 0.0);

    let x = rand_t(&[2, 5, 3, 8, 8], 5);
    let f = rand_t(&[2, 4, 3, 8, 8], 6);
    let xc = Tensor::cat(&[&x, &f], 1).unwrap();
    let a = src.forward(&x, false).unwrap();
    let b = cas.forward(&xc, false).unwrap();
    let d = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-5, "cascade differs from source at start: {d}");
    // A shape the rule does not cover is an error naming the tensor.
    let mut bad = tensors.clone();
    bad.insert(
        "embed.bias".into(),
        Tensor::zeros(3, DType::F32, &dev).unwrap(),
    );
    let err = load_into(&vm2, &bad).unwrap_err().to_string();
    assert!(err.contains("embed.bias"), "{err}");
}

#[test]
fn reference_path_model_matches_custom() {
    // The whole network through the stock-op path (what a CUDA build runs) equals the CPU kernels.
    let dev = Device::Cpu;
    let cfg = tiny_cfg();
    let x = rand_t(&[2, 5, 3, 8, 8], 9);
    let run = |reference: bool| {
        let vm = VarMap::new();
        let m = CaI3d::new(var_builder(&vm, 4, &dev), &cfg).unwrap();
        let f = || {
            let y = m.forward(&x, true).unwrap();
            let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let gw = g.get(&m.mixed_0.b1b.weight).unwrap().clone();
            (y, gw)
        };
        if reference {
            mpfnet_stages::model::ops::with_reference(f)
        } else {
            f()
        }
    };
    let (y1, g1) = run(false);
    let (y2, g2) = run(true);
    assert!(rel_err(&y1, &y2) < 1e-4, "embedding {}", rel_err(&y1, &y2));
    assert!(rel_err(&g1, &g2) < 1e-3, "grad {}", rel_err(&g1, &g2));
    let _ = VarBuilder::zeros(DType::F32, &dev);
}
