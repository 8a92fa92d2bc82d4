//! Custom CPU ops against the stock-op reference computed in f64 (outputs and gradients),
//! plus finite-difference checks.

use candle_core::{DType, Device, Result, Tensor, Var};
use mpfnet_stages::model::ops::{self, reference, BnMode};

/// (input or shape, a, b, c) test case.
type Case<A> = (A, [usize; 3], [usize; 3], [usize; 3]);
type ConvCase = ([usize; 5], [usize; 5], [usize; 3], [usize; 3]);

mod common;
use common::{rand_t, rel_err};

fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let e = rel_err(a, b);
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}

/// Runs `custom` on `inputs` as f32 and `refr` on them as f64; compares the outputs and the
/// gradients of `sum(y * r)` (`r` random from `r_seed`) for each input, `names[i]` naming input
/// `i`'s gradient.
fn compare(
    what: &str,
    inputs: &[Tensor],
    names: &[&str],
    r_seed: u64,
    custom: impl Fn(&[&Tensor]) -> Result<Tensor>,
    refr: impl Fn(&[&Tensor]) -> Result<Tensor>,
) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let vars64: Vec<Var> = vars
        .iter()
        .map(|v| Var::from_tensor(&v.to_dtype(DType::F64).unwrap()).unwrap())
        .collect();
    let ts = |vs: &[Var]| -> Vec<Tensor> { vs.iter().map(|v| v.as_tensor().clone()).collect() };
    let (t32, t64) = (ts(&vars), ts(&vars64));
    let y = custom(&t32.iter().collect::<Vec<_>>()).unwrap();
    let r = rand_t(y.dims(), r_seed);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let y64 = refr(&t64.iter().collect::<Vec<_>>()).unwrap();
    let g64 = (&y64 * r.to_dtype(DType::F64).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_close(&format!("{what} forward"), &y, &y64, 1e-5);
    for ((v, v64), name) in vars.iter().zip(&vars64).zip(names) {
        assert_close(
            &format!("{what} {name}"),
            g.get(v).unwrap(),
            g64.get(v64).unwrap(),
            1e-5,
        );
    }
}

/// Runs `f` on (x, w) as f32 through the custom op and as f64 through the reference; compares
/// the outputs and the gradients of `sum(y * r)`.
fn check2(
    what: &str,
    xs: &[usize],
    ws: &[usize],
    custom: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    refr: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
) {
    compare(
        what,
        &[rand_t(xs, 1), rand_t(ws, 2)],
        &["grad x", "grad w"],
        3,
        |t| custom(t[0], t[1]),
        |t| refr(t[0], t[1]),
    );
}

#[test]
fn conv3d_matches_reference() {
    // (input, weight, stride, padding)
    let cases: &[ConvCase] = &[
        ([2, 3, 4, 9, 11], [5, 3, 3, 3, 3], [1, 1, 1], [1, 1, 1]),
        ([2, 4, 5, 8, 8], [6, 4, 1, 1, 1], [1, 1, 1], [0, 0, 0]),
        ([1, 3, 6, 10, 9], [4, 3, 3, 3, 3], [2, 2, 2], [1, 1, 1]),
        ([2, 2, 5, 7, 7], [3, 2, 1, 3, 3], [1, 2, 2], [0, 1, 1]),
        ([1, 3, 4, 6, 7], [2, 3, 2, 3, 1], [2, 1, 1], [0, 0, 0]),
        ([3, 5, 3, 40, 37], [7, 5, 3, 3, 3], [1, 1, 1], [1, 1, 1]),
        ([1, 2, 3, 5, 5], [3, 2, 3, 5, 5], [1, 3, 3], [2, 2, 2]),
        // Stride 1 (grad-input as a flipped-kernel forward conv): uneven kernels and paddings,
        // no padding, padding up to k-1, and several row tiles (W = 300 > the tile width).
        ([2, 3, 5, 9, 8], [4, 3, 3, 5, 1], [1, 1, 1], [0, 2, 0]),
        ([1, 2, 4, 6, 7], [3, 2, 2, 2, 3], [1, 1, 1], [1, 0, 2]),
        ([1, 2, 3, 6, 5], [2, 2, 3, 3, 3], [1, 1, 1], [0, 0, 0]),
        ([1, 4, 3, 7, 300], [5, 4, 3, 3, 3], [1, 1, 1], [1, 1, 1]),
    ];
    for (i, (xs, ws, s, p)) in cases.iter().enumerate() {
        let (s, p) = (*s, *p);
        check2(
            &format!("conv3d case {i}"),
            xs,
            ws,
            |x, w| ops::conv3d(x, w, s, p),
            |x, w| reference::conv3d(x, w, s, p),
        );
    }
}

#[test]
fn conv3d_reference_path_is_used_when_forced() {
    let x = rand_t(&[1, 2, 3, 6, 6], 4);
    let w = rand_t(&[3, 2, 3, 3, 3], 5);
    let a = ops::conv3d(&x, &w, [1, 1, 1], [1, 1, 1]).unwrap();
    let b = ops::with_reference(|| ops::conv3d(&x, &w, [1, 1, 1], [1, 1, 1])).unwrap();
    assert_close("forced reference", &a, &b, 1e-5);
}

/// Central finite differences of `L = sum(f(x, w) * r)` (accumulated in f64) at a few
/// coordinates of w and x against the custom-op gradients.
fn finite_diff_check(what: &str, x: Tensor, w: Tensor, f: impl Fn(&Tensor, &Tensor) -> Tensor) {
    let xv = Var::from_tensor(&x).unwrap();
    let wv = Var::from_tensor(&w).unwrap();
    let y = f(xv.as_tensor(), wv.as_tensor());
    let r = rand_t(y.dims(), 99);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let loss = |x: &Tensor, w: &Tensor| -> f64 {
        (f(x, w).to_dtype(DType::F64).unwrap() * r.to_dtype(DType::F64).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let eps = 1e-2f32;
    for (which, t, grad) in [
        ("x", &x, g.get(&xv).unwrap().clone()),
        ("w", &w, g.get(&wv).unwrap().clone()),
    ] {
        let flat = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gflat = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gmax = gflat.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        for k in (0..flat.len()).step_by((flat.len() / 7).max(1)) {
            let mut plus = flat.clone();
            plus[k] += eps;
            let mut minus = flat.clone();
            minus[k] -= eps;
            let tp = Tensor::from_vec(plus, t.shape(), t.device()).unwrap();
            let tm = Tensor::from_vec(minus, t.shape(), t.device()).unwrap();
            let (lp, lm) = if which == "x" {
                (loss(&tp, &w), loss(&tm, &w))
            } else {
                (loss(&x, &tp), loss(&x, &tm))
            };
            let fd = (lp - lm) / (2.0 * eps as f64);
            let err = (fd - gflat[k] as f64).abs() / gmax;
            assert!(
                err < 2e-3,
                "{what} d/d{which}[{k}]: fd {fd} vs analytic {} (rel {err:e})",
                gflat[k]
            );
        }
    }
}

#[test]
fn conv3d_finite_differences() {
    finite_diff_check(
        "conv3d",
        rand_t(&[1, 2, 3, 6, 5], 11),
        rand_t(&[3, 2, 3, 3, 3], 12),
        |x, w| ops::conv3d(x, w, [1, 2, 2], [1, 1, 1]).unwrap(),
    );
}

/// BatchNorm with eps 1e-3 and momentum 0.1.
fn bn_args<'a>(rm: &'a Var, rv: &'a Var, mode: BnMode, relu: bool) -> ops::BnArgs<'a> {
    ops::BnArgs {
        running_mean: rm,
        running_var: rv,
        eps: 1e-3,
        momentum: 0.1,
        mode,
        relu,
    }
}

#[test]
fn bn_finite_differences() {
    let rm = Var::zeros(4, DType::F32, &Device::Cpu).unwrap();
    let rv = Var::ones(4, DType::F32, &Device::Cpu).unwrap();
    let beta = rand_t(&[4], 13);
    finite_diff_check(
        "bn (train)",
        rand_t(&[3, 4, 2, 3, 3], 14),
        (rand_t(&[4], 15) + 1.5).unwrap(),
        |x, g| ops::batch_norm(x, g, &beta, &bn_args(&rm, &rv, BnMode::Train, false)).unwrap(),
    );
}

#[test]
fn max_pool3d_matches_reference() {
    let cases: &[Case<[usize; 5]>] = &[
        ([2, 3, 4, 9, 9], [1, 3, 3], [1, 2, 2], [0, 1, 1]),
        ([2, 3, 4, 8, 8], [1, 3, 3], [1, 2, 2], [0, 1, 1]),
        ([2, 2, 5, 7, 6], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        ([1, 2, 6, 8, 8], [2, 2, 2], [2, 2, 2], [0, 0, 0]),
        ([1, 3, 7, 9, 10], [3, 3, 3], [2, 2, 2], [1, 1, 1]),
        // Stride 3 and padding 2 along W (the strided branch of the W pass), T pass identity.
        ([1, 2, 3, 7, 11], [1, 2, 4], [1, 2, 3], [0, 1, 2]),
        ([2, 1, 2, 5, 5], [1, 1, 1], [1, 1, 1], [0, 0, 0]),
    ];
    for (i, (xs, k, s, p)) in cases.iter().enumerate() {
        let (k, s, p) = (*k, *s, *p);
        // The weight argument is unused: pass a dummy to reuse the harness.
        check2_unary(
            &format!("max_pool3d case {i}"),
            xs,
            |x| ops::max_pool3d(x, k, s, p),
            |x| reference::max_pool3d(x, k, s, p),
        );
    }
}

fn check2_unary(
    what: &str,
    xs: &[usize],
    custom: impl Fn(&Tensor) -> Result<Tensor>,
    refr: impl Fn(&Tensor) -> Result<Tensor>,
) {
    compare(
        what,
        &[rand_t(xs, 21)],
        &["grad"],
        22,
        |t| custom(t[0]),
        |t| refr(t[0]),
    );
}

#[test]
fn max_pool3d_known_values() {
    // 1x1x1x1x4 row [1, 5, 2, 7]: kernel 3 stride 2 pad 1 -> windows {1,5}, {5,2,7} -> [5, 7].
    let x = Tensor::new(&[1f32, 5., 2., 7.], &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 1, 1, 4))
        .unwrap();
    let y = ops::max_pool3d(&x, [1, 1, 3], [1, 1, 2], [0, 0, 1]).unwrap();
    assert_eq!(
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![5., 7.]
    );
}

#[test]
fn adaptive_avg_pool3d_matches_reference() {
    for (i, (xs, o)) in [
        ([2usize, 3, 5, 7, 9], [2usize, 3, 4]),
        ([1, 2, 10, 32, 32], [1, 4, 4]),
        ([2, 2, 3, 5, 5], [3, 5, 5]),
        ([1, 4, 6, 8, 8], [1, 1, 1]),
    ]
    .iter()
    .enumerate()
    {
        let o = *o;
        check2_unary(
            &format!("adaptive pool case {i}"),
            xs,
            |x| ops::adaptive_avg_pool3d(x, o),
            |x| reference::adaptive_avg_pool3d(x, o),
        );
    }
    // Known value: mean of 0..8 over a 2x2x2 volume is 3.5.
    let x = Tensor::arange(0f32, 8., &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 2, 2, 2))
        .unwrap();
    let y = ops::adaptive_avg_pool3d(&x, [1, 1, 1]).unwrap();
    assert_eq!(
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![3.5]
    );
}

#[test]
fn batch_norm3d_matches_reference() {
    let c = 5;
    for (mode, relu) in [
        (BnMode::Train, true),
        (BnMode::Train, false),
        (BnMode::Eval, true),
        (BnMode::Eval, false),
    ] {
        let x = Var::from_tensor(&rand_t(&[3, c, 2, 4, 5], 31)).unwrap();
        let gamma = Var::from_tensor(&(rand_t(&[c], 32) + 1.0).unwrap()).unwrap();
        let beta = Var::from_tensor(&rand_t(&[c], 33)).unwrap();
        let rm0 = rand_t(&[c], 34);
        let rv0 = (rand_t(&[c], 35) + 1.5).unwrap();
        let (rm, rv) = (
            Var::from_tensor(&rm0).unwrap(),
            Var::from_tensor(&rv0).unwrap(),
        );
        let y = ops::batch_norm(&x, &gamma, &beta, &bn_args(&rm, &rv, mode, relu)).unwrap();
        let r = rand_t(y.dims(), 36);
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();

        let f64v = |t: &Tensor| Var::from_tensor(&t.to_dtype(DType::F64).unwrap()).unwrap();
        let (x6, g6, b6) = (f64v(&x), f64v(&gamma), f64v(&beta));
        let (rm6, rv6) = (f64v(&rm0), f64v(&rv0));
        let y6 = reference::batch_norm3d(&x6, &g6, &b6, &bn_args(&rm6, &rv6, mode, relu)).unwrap();
        let gr = (&y6 * r.to_dtype(DType::F64).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let tag = format!("bn {mode:?} relu={relu}");
        assert_close(&format!("{tag} forward"), &y, &y6, 1e-5);
        assert_close(
            &format!("{tag} dx"),
            g.get(&x).unwrap(),
            gr.get(&x6).unwrap(),
            1e-5,
        );
        assert_close(
            &format!("{tag} dgamma"),
            g.get(&gamma).unwrap(),
            gr.get(&g6).unwrap(),
            1e-5,
        );
        assert_close(
            &format!("{tag} dbeta"),
            g.get(&beta).unwrap(),
            gr.get(&b6).unwrap(),
            1e-5,
        );
        assert_close(&format!("{tag} running mean"), &rm, &rm6, 1e-5);
        assert_close(&format!("{tag} running var"), &rv, &rv6, 1e-5);
        if mode == BnMode::Train {
            assert!(rel_err(&rm, &rm0) > 1e-3, "running mean was not updated");
        }
    }
}

#[test]
fn coord_attention_fused_ops_match_reference() {
    let xs = [2usize, 3, 4, 5, 6];
    check2_unary("ca_pool", &xs, ops::ca_pool, |x| {
        ops::with_reference(|| ops::ca_pool(x))
    });
    check2(
        "ca_apply",
        &xs,
        &[2, 3, 4 + 5 + 6],
        ops::ca_apply,
        |x, a| ops::with_reference(|| ops::ca_apply(x, a)),
    );
}

/// d(sum of max_pool3d(x))/dx, flattened.
fn max_pool_grad(x: &Var, k: [usize; 3], s: [usize; 3], p: [usize; 3]) -> Vec<f32> {
    let y = ops::max_pool3d(x, k, s, p).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    g.get(x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Gradient of max pooling by a direct scan of each window (first maximum in (t, h, w) order).
fn first_max_grad(
    x: &[f32],
    i: [usize; 3],
    k: [usize; 3],
    s: [usize; 3],
    p: [usize; 3],
) -> Vec<f32> {
    let o: Vec<usize> = (0..3)
        .map(|d| (i[d] + 2 * p[d] - k[d]) / s[d] + 1)
        .collect();
    let mut g = vec![0f32; x.len()];
    for a in 0..o[0] {
        for b in 0..o[1] {
            for c in 0..o[2] {
                let mut best: Option<(f32, usize)> = None;
                for (dt, dh, dw) in (0..k[0]).flat_map(|dt| {
                    (0..k[1]).flat_map(move |dh| (0..k[2]).map(move |dw| (dt, dh, dw)))
                }) {
                    let pos = [a * s[0] + dt, b * s[1] + dh, c * s[2] + dw];
                    if (0..3).any(|d| pos[d] < p[d] || pos[d] - p[d] >= i[d]) {
                        continue;
                    }
                    let at = ((pos[0] - p[0]) * i[1] + pos[1] - p[1]) * i[2] + pos[2] - p[2];
                    if best.is_none_or(|(v, _)| x[at] > v) {
                        best = Some((x[at], at));
                    }
                }
                g[best.unwrap().1] += 1.0;
            }
        }
    }
    g
}

#[test]
fn max_pool3d_ties_route_like_a_direct_scan() {
    // Values on a coarse grid (many ties, as after a ReLU or on flat image regions), pools of the
    // network and odd strides: the gradient lands where a direct first-maximum scan puts it.
    let cases: &[Case<[usize; 3]>] = &[
        ([4, 9, 11], [1, 3, 3], [1, 2, 2], [0, 1, 1]),
        ([5, 8, 8], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        ([6, 7, 13], [3, 2, 4], [2, 1, 3], [1, 1, 2]),
    ];
    for (n, &(i, k, s, p)) in cases.iter().enumerate() {
        let vol = i.iter().product::<usize>();
        let vals: Vec<f32> = rand_t(&[vol], 40 + n as u64)
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| (v * 2.0).round().max(0.0))
            .collect();
        let x = Var::from_tensor(
            &Tensor::from_vec(vals.clone(), (1, 1, i[0], i[1], i[2]), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let gx = max_pool_grad(&x, k, s, p);
        assert_eq!(
            gx,
            first_max_grad(&vals, i, k, s, p),
            "case {n}: {i:?} k{k:?} s{s:?} p{p:?}"
        );
    }
}

#[test]
fn max_pool3d_ties_route_to_first_max() {
    // All-zero input (as after a ReLU): every window ties. Each output's gradient must go to its
    // window's first element in (t, h, w) order, and the total gradient is conserved.
    let (t, h, w) = (3usize, 4usize, 5usize);
    let x = Var::zeros((1, 1, t, h, w), DType::F32, &Device::Cpu).unwrap();
    let gx = max_pool_grad(&x, [3, 3, 3], [1, 1, 1], [1, 1, 1]);
    let mut expect = vec![0f32; t * h * w];
    for a in 0..t {
        for b in 0..h {
            for c in 0..w {
                let (ta, hb, wc) = (
                    a.saturating_sub(1),
                    b.saturating_sub(1),
                    c.saturating_sub(1),
                );
                expect[(ta * h + hb) * w + wc] += 1.0;
            }
        }
    }
    assert_eq!(gx, expect);
    assert_eq!(gx.iter().sum::<f32>(), (t * h * w) as f32);
}
