//! FlowNet2 in candle: the ops against naive references, the parameter table against the
//! official one, checkpoint refusal, and parity with the PyTorch twin
//! (`stages/bench/flownet2_twin.py`, fixtures in `tests/fixtures/flownet2/`).

use candle_core::{Device, Tensor};
use mpfnet_stages::flownet2::ops::{self, Correlation};
use mpfnet_stages::flownet2::{self as fnet, Checkpoint, FlowNet2Config};
use mpfnet_stages::prep::flow::FlowEstimator;

const WIDTH: f64 = 1.0 / 64.0;

/// Why `check` refuses the fixture `name` as the full-width network.
fn refusal(name: &str) -> String {
    let specs = fnet::param_specs(&FlowNet2Config::default()).unwrap();
    Checkpoint::open(fixture(name))
        .unwrap()
        .check(&specs)
        .unwrap_err()
        .to_string()
}

/// Why `fnet::load` refuses the checkpoint `name` as the full network.
fn load_refusal(name: &str) -> String {
    fnet::load(fixture(name), &FlowNet2Config::default(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string()
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/flownet2")
        .join(name)
}

/// Deterministic pseudo-random values in [-1, 1).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn t4(dims: [usize; 4], seed: u64, scale: f32) -> Tensor {
    let v: Vec<f32> = noise(dims.iter().product(), seed)
        .iter()
        .map(|x| x * scale)
        .collect();
    Tensor::from_vec(v, &dims, &Device::Cpu).unwrap()
}

fn v4(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The correlation as its definition reads, one output at a time.
fn correlation_naive(f1: &Tensor, f2: &Tensor, c: Correlation) -> Vec<f32> {
    let (b, ch, h, w) = f1.dims4().unwrap();
    let (a, bb) = (v4(f1), v4(f2));
    let r = c.radius() as isize;
    let d = 2 * r + 1;
    let s = c.stride2 as isize;
    let mut out = vec![0f32; b * (d * d) as usize * h * w];
    for n in 0..b {
        for j in -r..=r {
            for i in -r..=r {
                let t = ((j + r) * d + (i + r)) as usize;
                for y in 0..h as isize {
                    for x in 0..w as isize {
                        let (y2, x2) = (y + j * s, x + i * s);
                        let mut acc = 0f64;
                        if y2 >= 0 && y2 < h as isize && x2 >= 0 && x2 < w as isize {
                            for k in 0..ch {
                                let p = ((n * ch + k) * h + y as usize) * w + x as usize;
                                let q = ((n * ch + k) * h + y2 as usize) * w + x2 as usize;
                                acc += a[p] as f64 * bb[q] as f64;
                            }
                        }
                        let o = ((n * (d * d) as usize + t) * h + y as usize) * w + x as usize;
                        out[o] = (acc / ch as f64) as f32;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn correlation_matches_naive_on_odd_sizes_and_borders() {
    let cases = [
        // (b, c, h, w, max displacement, stride2)
        (2, 5, 7, 9, 4, 2),
        (1, 3, 11, 13, 20, 2), // FlowNetC's: most displacements leave the map
        (1, 17, 5, 3, 3, 1),
        (1, 256, 9, 8, 20, 2),
    ];
    for (k, &(b, c, h, w, md, s2)) in cases.iter().enumerate() {
        let corr = Correlation {
            max_displacement: md,
            stride2: s2,
        };
        let f1 = t4([b, c, h, w], 10 + k as u64, 1.0);
        let f2 = t4([b, c, h, w], 20 + k as u64, 1.0);
        let want = correlation_naive(&f1, &f2, corr);
        let got = corr.forward(&f1, &f2).unwrap();
        assert_eq!(got.dims(), &[b, corr.out_channels(), h, w]);
        let e = max_abs_diff(&v4(&got), &want);
        assert!(e < 1e-5, "custom op, case {k}: max diff {e}");
        let reference = ops::with_reference(|| corr.forward(&f1, &f2).unwrap());
        let e = max_abs_diff(&v4(&reference), &want);
        assert!(e < 1e-5, "stock-op path, case {k}: max diff {e}");
    }
    assert_eq!(Correlation::FLOWNETC.out_channels(), 441);
}

/// resample2d as its kernel reads, one output at a time.
fn resample_naive(img: &Tensor, flow: &Tensor) -> Vec<f32> {
    let (b, c, h, w) = img.dims4().unwrap();
    let (im, fl) = (v4(img), v4(flow));
    let mut out = vec![0f32; b * c * h * w];
    for n in 0..b {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let dx = fl[((n * 2) * h + y) * w + x];
                    let dy = fl[((n * 2 + 1) * h + y) * w + x];
                    let (xf, yf) = (x as f32 + dx, y as f32 + dy);
                    let (al, be) = (xf - xf.floor(), yf - yf.floor());
                    let cl = |v: f32, n: usize| (v as i64).clamp(0, n as i64 - 1) as usize;
                    let (xl, xr) = (cl(xf.floor(), w), cl(xf.floor() + 1.0, w));
                    let (yt, yb) = (cl(yf.floor(), h), cl(yf.floor() + 1.0, h));
                    let px = |yy: usize, xx: usize| im[((n * c + ch) * h + yy) * w + xx];
                    out[((n * c + ch) * h + y) * w + x] = (1.0 - al) * (1.0 - be) * px(yt, xl)
                        + al * (1.0 - be) * px(yt, xr)
                        + (1.0 - al) * be * px(yb, xl)
                        + al * be * px(yb, xr);
                }
            }
        }
    }
    out
}

#[test]
fn resample2d_matches_naive_inside_and_past_the_borders() {
    for (k, &(b, c, h, w, reach)) in [(1, 3, 7, 9, 3.0f32), (2, 2, 5, 11, 12.0), (1, 1, 1, 4, 2.5)]
        .iter()
        .enumerate()
    {
        let img = t4([b, c, h, w], 30 + k as u64, 100.0);
        let mut fl = v4(&t4([b, 2, h, w], 40 + k as u64, reach));
        // whole-pixel and exactly-at-the-border displacements too
        fl[0] = -(w as f32);
        fl[1] = 1.0;
        fl[2] = w as f32 - 1.0;
        let flow = Tensor::from_vec(fl, (b, 2, h, w), &Device::Cpu).unwrap();
        let want = resample_naive(&img, &flow);
        let got = ops::resample2d(&img, &flow).unwrap();
        let e = max_abs_diff(&v4(&got), &want);
        assert!(e < 1e-3, "custom op, case {k}: max diff {e}");
        let reference = ops::with_reference(|| ops::resample2d(&img, &flow).unwrap());
        let e = max_abs_diff(&v4(&reference), &want);
        assert!(e < 1e-3, "stock-op path, case {k}: max diff {e}");
    }
    // zero flow is the identity
    let img = t4([1, 3, 6, 5], 7, 1.0);
    let zero = Tensor::zeros((1, 2, 6, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(v4(&ops::resample2d(&img, &zero).unwrap()), v4(&img));
}

#[test]
fn channel_norm_matches_its_definition() {
    let x = t4([2, 3, 5, 7], 3, 2.0);
    let v = v4(&x);
    let mut want = vec![0f32; 2 * 35];
    for n in 0..2 {
        for p in 0..35 {
            want[n * 35 + p] = (0..3)
                .map(|c| v[(n * 3 + c) * 35 + p].powi(2))
                .sum::<f32>()
                .sqrt();
        }
    }
    let got = ops::channel_norm(&x).unwrap();
    assert_eq!(got.dims(), &[2, 1, 5, 7]);
    assert!(max_abs_diff(&v4(&got), &want) < 1e-6);
    let reference = ops::with_reference(|| ops::channel_norm(&x).unwrap());
    assert!(max_abs_diff(&v4(&reference), &want) < 1e-6);
}

fn official_list() -> Vec<(String, Vec<usize>)> {
    std::fs::read_to_string(fixture("params_full_width.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next().unwrap().to_string();
            (name, it.map(|d| d.parse().unwrap()).collect())
        })
        .collect()
}

#[test]
fn full_width_parameters_equal_the_official_state_dict() {
    let want = official_list();
    assert_eq!(want.len(), 220);
    let got = fnet::param_specs(&FlowNet2Config::default()).unwrap();
    assert_eq!(
        got, want,
        "names, shapes and order of the official state dict"
    );
    let n: usize = got.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(n, 162_518_834, "models.py: 'Parameter count = 162,518,834'");
    // and as candle's own VarMap records them
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu);
    fnet::FlowNet2::new(vb, &FlowNet2Config::with_width(WIDTH)).unwrap();
    let mut from_varmap: Vec<(String, Vec<usize>)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    from_varmap.sort();
    let mut reduced = fnet::param_specs(&FlowNet2Config::with_width(WIDTH)).unwrap();
    reduced.sort();
    assert_eq!(from_varmap, reduced);
}

#[test]
fn checkpoints_of_the_official_layout_are_accepted_and_others_refused_by_key() {
    let specs = fnet::param_specs(&FlowNet2Config::default()).unwrap();
    Checkpoint::open(fixture("shapes_full.pth.tar"))
        .unwrap()
        .check(&specs)
        .unwrap();
    let e = refusal("shapes_missing_key.pth.tar");
    assert!(
        e.contains("missing parameter `flownets_2.conv4_1.0.weight`"),
        "{e}"
    );
    assert!(e.contains("shapes_missing_key.pth.tar"), "{e}");
    let e = refusal("shapes_wrong_shape.pth.tar");
    assert!(
        e.contains("`flownetfusion.predict_flow1.bias` has shape [3], expected [2]"),
        "{e}"
    );
    // load() refuses before reading any weight
    let e = load_refusal("shapes_wrong_shape.pth.tar");
    assert!(e.contains("flownetfusion.predict_flow1.bias"), "{e}");
    // a reduced checkpoint is not the full network
    let e = load_refusal("twin.pth.tar");
    assert!(
        e.contains("flownetc.conv1.0.weight") && e.contains("expected [64, 3, 7, 7]"),
        "{e}"
    );
    // not a checkpoint at all
    let e = Checkpoint::open(fixture("params_full_width.txt"))
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("params_full_width.txt"), "{e:#}");
}

#[test]
fn a_checkpoint_of_strided_views_loads_whole() {
    // Every tensor of the stand-in is `torch.zeros(1).expand(shape)`: stride 0 over one stored
    // element, the layout candle's own reader refuses. It must load as the model at full width.
    let specs = fnet::param_specs(&FlowNet2Config::default()).unwrap();
    let ck = Checkpoint::open(fixture("shapes_full.pth.tar")).unwrap();
    let w = ck.tensors(&specs[..3], &Device::Cpu).unwrap();
    let first = &w[&specs[0].0];
    assert_eq!(first.dims(), specs[0].1.as_slice());
    let values: Vec<f32> = first.flatten_all().unwrap().to_vec1().unwrap();
    assert!(values.iter().all(|v| *v == 0.0));
    fnet::load(
        fixture("shapes_full.pth.tar"),
        &FlowNet2Config::default(),
        &Device::Cpu,
    )
    .unwrap();
    // the same names and shapes, one view reaching past its storage (stages/bench/
    // flownet2_hostile.py): refused by the check, before any weight is read
    let e = refusal("shapes_past_storage.pth.tar");
    assert!(
        e.contains("`flownetfusion.predict_flow1.bias` reaches byte 8 of its storage")
            && e.contains("which holds 4"),
        "{e}"
    );
}

fn parity(file: &str, reference: bool) {
    let want =
        candle_core::safetensors::load(fixture("twin_outputs.safetensors"), &Device::Cpu).unwrap();
    let cfg = FlowNet2Config::with_width(WIDTH);
    let net = fnet::load(fixture(file), &cfg, &Device::Cpu).unwrap();
    let run = || net.forward_all(&want["inputs"]).unwrap();
    let out = if reference {
        ops::with_reference(run)
    } else {
        run()
    };
    let got = [
        ("flownetc", &out.flownetc),
        ("flownets_1", &out.flownets_1),
        ("flownets_2", &out.flownets_2),
        ("flownets_d", &out.flownets_d),
        ("flownetfusion", &out.flownetfusion),
    ];
    for (name, t) in got {
        let w = &want[name];
        assert_eq!(t.dims(), w.dims(), "{name}");
        let (a, b) = (v4(t), v4(w));
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let rel = max_abs_diff(&a, &b) / scale;
        eprintln!("{file} {name:14} max |ref| {scale:.4} max rel diff {rel:.2e} (reference ops: {reference})");
        assert!(
            rel < 1e-4,
            "{file}: {name} differs from the twin: relative {rel:.2e}"
        );
    }
}

#[test]
fn parity_with_the_pytorch_twin_zip_checkpoint() {
    parity("twin.pth.tar", false);
}

#[test]
fn parity_with_the_pytorch_twin_legacy_checkpoint_and_stock_ops() {
    parity("twin_legacy.pth.tar", true);
}

#[test]
fn any_size_is_padded_to_64_and_cropped_back() {
    let cfg = FlowNet2Config::with_width(WIDTH);
    let net = fnet::load(fixture("twin.pth.tar"), &cfg, &Device::Cpu).unwrap();
    let a = t4([1, 3, 50, 70], 1, 100.0).affine(1.0, 128.0).unwrap();
    let b = t4([1, 3, 50, 70], 2, 100.0).affine(1.0, 128.0).unwrap();
    let f = net.flow(&a, &b).unwrap();
    assert_eq!(f.dims(), &[1, 2, 50, 70]);
    // at a multiple of 64 `flow` is the plain forward pass
    let want =
        candle_core::safetensors::load(fixture("twin_outputs.safetensors"), &Device::Cpu).unwrap();
    let x = &want["inputs"];
    let f = net
        .flow(
            &x.narrow(2, 0, 1).unwrap().squeeze(2).unwrap(),
            &x.narrow(2, 1, 1).unwrap().squeeze(2).unwrap(),
        )
        .unwrap();
    assert!(max_abs_diff(&v4(&f), &v4(&want["flownetfusion"])) < 1e-6);
}

#[test]
fn the_estimator_gives_a_flow_field_of_the_frame_size() {
    use mpfnet_stages::prep::image::Frame;
    let cfg = FlowNet2Config::with_width(WIDTH);
    let net = fnet::load(fixture("twin.pth.tar"), &cfg, &Device::Cpu).unwrap();
    let est = fnet::FlowNet2Flow::new(net, Device::Cpu, "twin");
    let (w, h) = (40, 30);
    let a = Frame::from_vec(
        w,
        h,
        1,
        noise(w * h, 5).iter().map(|v| v * 0.5 + 0.5).collect(),
    )
    .unwrap();
    let b = Frame::from_vec(
        w,
        h,
        1,
        noise(w * h, 6).iter().map(|v| v * 0.5 + 0.5).collect(),
    )
    .unwrap();
    let f = est.flow(&a, &b).unwrap();
    assert_eq!(
        (f.width, f.height, f.u.len(), f.v.len()),
        (w, h, w * h, w * h)
    );
    assert!(f.u.iter().chain(&f.v).all(|v| v.is_finite()));
    assert_eq!(est.name(), "flownet2(weights=twin)");
}

#[test]
fn features_refuses_a_missing_or_wrong_checkpoint_naming_it() {
    use mpfnet_api::Stage;
    use serde_json::json;
    let st = mpfnet_stages::kinds::features::Features;
    let mut p = st.defaults();
    p["flow_backend"] = json!("flownet2");
    p["flownet2"]["weights"] = json!("/nonexistent/FlowNet2_checkpoint.pth.tar");
    let e = format!("{:#}", st.validate(&p).unwrap_err());
    assert!(
        e.contains("/nonexistent/FlowNet2_checkpoint.pth.tar"),
        "{e}"
    );
    let twin = fixture("twin.pth.tar").display().to_string();
    p["flownet2"]["weights"] = json!(twin);
    let e = format!("{:#}", st.validate(&p).unwrap_err());
    assert!(
        e.contains(&twin) && e.contains("flownetc.conv1.0.weight"),
        "{e}"
    );
    p["flownet2"]["weights"] = json!(fixture("shapes_full.pth.tar").display().to_string());
    st.validate(&p).unwrap();
    assert_eq!(st.file_params(&p), vec!["/flownet2/weights".to_string()]);
    p["flow_backend"] = json!("tvl1");
    assert!(st.file_params(&p).is_empty());
    p["flow_backend"] = json!("raft");
    assert!(st.validate(&p).is_err());
}
