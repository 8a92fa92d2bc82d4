use mpfnet_stages::prep::flow::{FlowEstimator, FlowField, TvL1, TvL1Params, WarpInterpolation};
use mpfnet_stages::prep::image::Frame;
use mpfnet_stages::prep::pattern::{smooth_field, Texture};

fn quantize(f: &Frame) -> Frame {
    let mut g = f.clone();
    g.data
        .iter_mut()
        .for_each(|v| *v = (*v * 255.0).round() / 255.0);
    g
}

/// (a, b, truth) with a(x) = b(x + truth(x)).
fn pair(max_mag: f32, seed: u64) -> (Frame, Frame, FlowField) {
    let t = Texture::new(128, 128, seed);
    let truth = smooth_field(128, 128, max_mag, seed);
    let a = quantize(&t.render(128, 128, Some(&truth)));
    let b = quantize(&t.render(128, 128, None));
    (a, b, truth)
}

#[test]
fn tvl1_recovers_known_subpixel_motion() {
    let cases = [(0.5f32, 0.04f32), (2.0, 0.12)];
    for interpolation in [WarpInterpolation::Bspline, WarpInterpolation::Bicubic] {
        let est = TvL1::new(TvL1Params {
            interpolation,
            ..Default::default()
        });
        for (seed, (mag, bound)) in [1u64, 2].into_iter().flat_map(|s| cases.map(|c| (s, c))) {
            let (a, b, truth) = pair(mag, seed);
            let t0 = std::time::Instant::now();
            let f = est.flow(&a, &b).unwrap();
            let epe = f.epe(&truth);
            let zero = FlowField::zeros(128, 128).epe(&truth);
            eprintln!(
                "{interpolation:?} mag {mag} seed {seed}: EPE {epe:.4} zero {zero:.4} in {:?}",
                t0.elapsed()
            );
            assert!(epe < bound, "EPE {epe} >= {bound}");
            assert!(
                epe < 0.3 * zero,
                "EPE {epe} not far below zero-flow EPE {zero}"
            );
        }
    }
}

#[test]
fn tvl1_is_deterministic_across_thread_counts() {
    let (a, b, _) = pair(2.0, 3);
    let est = TvL1::default();
    let run = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
            .install(|| est.flow(&a, &b).unwrap())
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

#[test]
fn tvl1_on_real_photo_crop() {
    use mpfnet_stages::prep::image::{crop, load_frame};
    use mpfnet_stages::prep::pattern::warp_lanczos3;
    let photo = mpfnet_stages::prep::pattern::remove_colour_marks(
        &load_frame("tests/fixtures/rustface_test.png").unwrap(),
    );
    let b = quantize(&crop(&photo, 831, 218, 128, 128).unwrap());
    let truth = smooth_field(128, 128, 2.0, 7);
    let a = quantize(&warp_lanczos3(&b, &truth));
    let f = TvL1::default().flow(&a, &b).unwrap();
    let (epe, zero) = (f.epe(&truth), FlowField::zeros(128, 128).epe(&truth));
    eprintln!("photo crop, 2 px: EPE {epe:.4} zero {zero:.4}");
    assert!(epe < 0.12 && epe < 0.1 * zero, "EPE {epe} zero {zero}");
}

#[test]
fn tvl1_rejects_mismatched_frames() {
    let est = TvL1::default();
    let err = est
        .flow(&Frame::new(8, 8, 1), &Frame::new(9, 8, 1))
        .unwrap_err();
    assert!(err.to_string().contains("8x8"));
    assert!(est.name().starts_with("tvl1(tau=0.25,lambda=0.15"));
}

#[test]
fn tvl1_handles_odd_and_tiny_sizes() {
    let est = TvL1::default();
    for (w, h) in [(37usize, 23usize), (2, 2), (129, 65)] {
        let t = Texture::new(w, h, 4);
        let mut truth = FlowField::zeros(w, h);
        truth.u.iter_mut().for_each(|u| *u = 0.4);
        let a = t.render(w, h, Some(&truth));
        let b = t.render(w, h, None);
        let f = est.flow(&a, &b).unwrap();
        assert_eq!((f.width, f.height, f.u.len()), (w, h, w * h));
        assert!(f.u.iter().chain(&f.v).all(|v| v.is_finite()));
        if w > 16 {
            let mean_u = f.u.iter().sum::<f32>() / f.u.len() as f32;
            assert!((mean_u - 0.4).abs() < 0.08, "{w}x{h}: mean u {mean_u}");
        }
    }
}
