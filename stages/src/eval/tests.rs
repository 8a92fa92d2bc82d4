use crate::eval::embed2d::{pca2, tsne2, Projection, TsneConfig};
use crate::eval::gradcam::{grad_cam, linear_class_score};
use crate::eval::metrics::{summarize, Confusion, Metrics};
use crate::eval::plots::{confusion_png, curve_png, embedding_png, gradcam_png, Frame};
use crate::eval::report::{markdown, Report, RunResult, Task};
use crate::train::afe::{train_classifier, AfeConfig, Classifier};
use crate::train::data::SampleSet;
use crate::train::driver::quiet;
use crate::train::progress::{EpochLog, TrainLog};
use crate::train::rng::rng_for;
use crate::train::testing::{stand_in_factory, StandInConfig};
use candle_core::Device;
use candle_nn::VarMap;
use rand::Rng;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn metrics_from_a_hand_computed_confusion_matrix() {
    // true 0: 3 samples -> 2 right, 1 as class 1; true 1: 2 -> 1 right, 1 as 2; true 2: 1 -> right
    let t = [0, 0, 0, 1, 1, 2];
    let p = [0, 0, 1, 1, 2, 2];
    let c = Confusion::from_labels(&t, &p, 3).unwrap();
    assert_eq!(c.m, vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]);
    let m = Metrics::from_confusion(&c);
    assert!(close(m.acc, 4.0 / 6.0));
    // F1: c0 = 4/(4+0+1) = 0.8; c1 = 2/(2+1+1) = 0.5; c2 = 2/(2+1+0) = 2/3
    let f1: Vec<f64> = m.per_class.iter().map(|x| x.f1.unwrap()).collect();
    assert!(close(f1[0], 0.8) && close(f1[1], 0.5) && close(f1[2], 2.0 / 3.0));
    assert!(close(m.uf1.unwrap(), (0.8 + 0.5 + 2.0 / 3.0) / 3.0));
    assert_eq!(m.f1_macro, m.uf1);
    // recall: 2/3, 1/2, 1
    assert!(close(m.uar.unwrap(), (2.0 / 3.0 + 0.5 + 1.0) / 3.0));
    let r = [2.0 / 3.0, 0.5, 1.0];
    let mu = r.iter().sum::<f64>() / 3.0;
    let sd = (r.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / 3.0).sqrt();
    assert!(close(m.class_acc_std.unwrap(), sd));
    assert!(close(
        m.f1_weighted.unwrap(),
        (3.0 * 0.8 + 2.0 * 0.5 + 2.0 / 3.0) / 6.0
    ));
}

#[test]
fn pooled_and_per_fold_differ_and_absent_classes_are_explicit() {
    // fold A: only class 0 present (4 samples, 3 right, 1 predicted as 1)
    // fold B: classes 0 and 1 (1 + 1), both right
    let folds = vec![
        (vec![0, 0, 0, 0], vec![0, 0, 0, 1]),
        (vec![0, 1], vec![0, 1]),
    ];
    let s = summarize(&folds, 2).unwrap();
    // pooled: [[4,1],[0,1]] -> recall 0.8, 1 -> UAR 0.9; F1_0 = 8/9, F1_1 = 2/3
    assert_eq!(s.confusion.m, vec![vec![4, 1], vec![0, 1]]);
    assert!(close(s.pooled.uar.unwrap(), 0.9));
    assert!(close(s.pooled.uf1.unwrap(), (8.0 / 9.0 + 2.0 / 3.0) / 2.0));
    assert!(close(s.pooled.acc, 5.0 / 6.0));
    // fold A: class 1 absent -> recall undefined, UAR = 0.75 (class 0 only); F1_1 = 0 (predicted
    // but absent) counts: UF1 = (6/7 + 0) / 2
    let a = &s.per_fold[0];
    assert_eq!(a.per_class[1].recall, None);
    assert_eq!(a.per_class[1].f1, Some(0.0));
    assert!(close(a.uar.unwrap(), 0.75));
    assert!(close(a.uf1.unwrap(), 3.0 / 7.0));
    // fold B perfect
    assert!(close(s.per_fold[1].uf1.unwrap(), 1.0));
    // per-fold means differ from pooled
    assert!(close(s.fold_means.uar.unwrap(), (0.75 + 1.0) / 2.0));
    assert!(close(s.fold_means.uf1.unwrap(), (3.0 / 7.0 + 1.0) / 2.0));
    assert!(close(s.fold_means.acc.unwrap(), (0.75 + 1.0) / 2.0));
    assert!((s.fold_means.uf1.unwrap() - s.pooled.uf1.unwrap()).abs() > 0.05);
    // a class neither present nor predicted has undefined F1 and is left out of UF1
    let m = Metrics::from_confusion(&Confusion::from_labels(&[0, 1], &[0, 1], 3).unwrap());
    assert_eq!(m.per_class[2].f1, None);
    assert!(close(m.uf1.unwrap(), 1.0));
    assert!(Confusion::from_labels(&[0, 3], &[0, 1], 3).is_err());
}

#[test]
fn pca_finds_the_main_direction() {
    let mut rng = rng_for(1, &[]);
    let pts: Vec<Vec<f32>> = (0..50)
        .map(|i| {
            let t = i as f32 - 25.0;
            vec![
                t,
                2.0 * t + rng.random::<f32>() * 0.1,
                rng.random::<f32>() * 0.1,
            ]
        })
        .collect();
    let p = pca2(&pts).unwrap();
    let var1: f32 = p.iter().map(|q| q[0] * q[0]).sum();
    let var2: f32 = p.iter().map(|q| q[1] * q[1]).sum();
    assert!(var1 > 100.0 * var2, "{var1} vs {var2}");
}

/// 60 points of `dims` uniform-noise coordinates in 3 classes (labels 0, 1, 2 in turn); class
/// `c` sits `gap` out along axis `c`.
fn three_clusters(seed: u64, dims: usize, gap: f32) -> (Vec<usize>, Vec<Vec<f32>>) {
    let mut rng = rng_for(seed, &[]);
    let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
    let x = labels
        .iter()
        .map(|&c| {
            (0..dims)
                .map(|j| if j == c { gap } else { 0.0 } + rng.random::<f32>())
                .collect()
        })
        .collect();
    (labels, x)
}

#[test]
fn tsne_keeps_clusters_apart() {
    let (labels, x) = three_clusters(4, 10, 5.0);
    let cfg = TsneConfig {
        perplexity: 10.0,
        iterations: 300,
        ..Default::default()
    };
    let y = tsne2(&x, &cfg).unwrap();
    assert_eq!(y, tsne2(&x, &cfg).unwrap(), "seeded, so repeatable");
    let d = |a: &[f32; 2], b: &[f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    let (mut within, mut between, mut nw, mut nb) = (0f32, 0f32, 0, 0);
    for i in 0..60 {
        for j in 0..i {
            if labels[i] == labels[j] {
                (within, nw) = (within + d(&y[i], &y[j]), nw + 1);
            } else {
                (between, nb) = (between + d(&y[i], &y[j]), nb + 1);
            }
        }
    }
    let (w, b) = (within / nw as f32, between / nb as f32);
    assert!(b > 3.0 * w, "within {w} between {b}");
}

/// Class 1: a bright 3x3 patch in the top-left corner of every frame; class 0: noise only.
fn patch_set(n: usize, seed: u64) -> SampleSet {
    let shape = [1, 2, 8, 8];
    let mut rng = rng_for(seed, &[]);
    let (mut data, mut labels) = (Vec::new(), Vec::new());
    for i in 0..n {
        let c = i % 2;
        for _t in 0..2 {
            for y in 0..8 {
                for x in 0..8 {
                    let base = rng.random::<f32>() - 0.5;
                    data.push(if c == 1 && y < 3 && x < 3 {
                        base + 2.0
                    } else {
                        base
                    });
                }
            }
        }
        labels.push(c);
    }
    let subj = (0..n).map(|i| format!("s{}", i % 3)).collect();
    let ids = (0..n).map(|i| format!("p{i}")).collect();
    SampleSet::new(data, shape, labels, subj, ids, 2).unwrap()
}

#[test]
fn gradcam_highlights_the_driving_region() {
    let dev = Device::Cpu;
    let set = patch_set(40, 3);
    let f = stand_in_factory(StandInConfig {
        in_channels: 1,
        frames: 2,
        features: 6,
        dim: 4,
    });
    let vm = VarMap::new();
    let cfg = AfeConfig {
        epochs: 30,
        batch: 10,
        lr: 0.05,
        lr_step: 100,
        checkpoint_every: 0,
        ..Default::default()
    };
    let log = quiet(2, &dev, |cx| {
        train_classifier(f.as_ref(), &vm, &set, &cfg, cx)
    })
    .unwrap();
    assert!(log.entries.last().unwrap().acc.unwrap() > 0.95);
    let model = Classifier::new(f.as_ref(), &vm, 2, set.shape, 0, &dev).unwrap();
    let x = set.batch(&[1], &dev).unwrap(); // a class-1 sample
    let cam = grad_cam(
        model.encoder.as_ref(),
        &x,
        &linear_class_score(&model.head, 1),
    )
    .unwrap();
    assert_eq!((cam.t, cam.h, cam.w), (1, 8, 8));
    assert!(cam.values.iter().all(|&v| (0.0..=1.0).contains(&v)));
    let frame = cam.frame(0, 2, 16, 16);
    assert_eq!(frame.len(), 256);
    assert!(frame.iter().all(|&v| v >= 0.0));
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for y in 0..8 {
        for x in 0..8 {
            let v = cam.values[y * 8 + x];
            if y < 3 && x < 3 {
                inside.push(v)
            } else {
                outside.push(v)
            }
        }
    }
    let mi = inside.iter().sum::<f32>() / inside.len() as f32;
    let mo = outside.iter().sum::<f32>() / outside.len() as f32;
    assert!(mi > 2.0 * mo, "patch {mi} vs rest {mo}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cam.png");
    let fr = Frame {
        values: &set.sample(1)[..64],
        h: 8,
        w: 8,
        index: 0,
        frames: 2,
    };
    gradcam_png(&fr, &cam, "Grad-CAM class 1", 12, &p).unwrap();
    assert!(std::fs::read(&p).unwrap().starts_with(b"\x89PNG"));
    if let Ok(keep) = std::env::var("MPF_KEEP_PNG") {
        std::fs::copy(&p, std::path::Path::new(&keep).join("gradcam.png")).unwrap();
    }
}

fn sample_run() -> RunResult {
    let folds = vec![
        (vec![0, 0, 1, 2], vec![0, 1, 1, 2]),
        (vec![1, 2, 2], vec![1, 2, 0]),
    ];
    RunResult {
        dataset: "casme2".into(),
        task: Task::Cde,
        variant: "MPFNet-C".into(),
        features: "flow+diff".into(),
        class_names: vec!["negative".into(), "positive".into(), "surprise".into()],
        fold_subjects: vec!["sub01".into(), "sub02".into()],
        summary: summarize(&folds, 3).unwrap(),
    }
}

#[test]
fn plots_write_png_files() {
    let dir = tempfile::tempdir().unwrap();
    let keep = std::env::var("MPF_KEEP_PNG").ok();
    let run = sample_run();
    let cm = dir.path().join("confusion.png");
    confusion_png(
        &run.summary.confusion,
        &run.class_names,
        "CASME II 3-class, MPFNet-C",
        &cm,
    )
    .unwrap();
    let log = TrainLog {
        entries: (0..20)
            .map(|e| EpochLog {
                epoch: e,
                loss: 2.0 / (1.0 + e as f64),
                acc: Some(0.4 + 0.02 * e as f64),
                lr: 0.01,
                val_acc: (e % 5 == 4).then_some(0.5 + 0.01 * e as f64),
            })
            .collect(),
        ..Default::default()
    };
    let cv = dir.path().join("curve.png");
    curve_png(&log, "meta-training", &cv).unwrap();
    let (labels, emb) = three_clusters(2, 6, 3.0);
    let em = dir.path().join("embedding.png");
    embedding_png(
        &emb,
        &Projection::Pca,
        &labels,
        &run.class_names,
        "embeddings (PCA)",
        &em,
    )
    .unwrap();
    let ts = dir.path().join("tsne.png");
    let tc = TsneConfig {
        perplexity: 15.0,
        iterations: 300,
        ..Default::default()
    };
    embedding_png(
        &emb,
        &Projection::Tsne(tc),
        &labels,
        &run.class_names,
        "embeddings (t-SNE)",
        &ts,
    )
    .unwrap();
    for p in [&cm, &cv, &em, &ts] {
        let b = std::fs::read(p).unwrap();
        assert!(
            b.starts_with(b"\x89PNG") && b.len() > 1000,
            "{}",
            p.display()
        );
        if let Some(k) = &keep {
            std::fs::copy(p, std::path::Path::new(k).join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn report_tables_carry_paper_figures() {
    let mut runs = vec![sample_run()];
    let mut p = sample_run();
    p.variant = "PLTN".into();
    runs.push(p);
    let r = Report {
        title: "demo".into(),
        data_note: "synthetic".into(),
        runs,
        figures: vec![("confusion".into(), "confusion.png".into())],
        notes: vec!["n".into()],
    };
    let md = markdown(&r);
    assert!(md.contains("![confusion](confusion.png)"));
    // paper Sec. 5 reference figures are always listed
    assert!(
        md.contains("0.719 / 0.718") && md.contains("0.840 / 0.846") && md.contains("diff 0.662")
    );
    assert!(md.contains("## CDE (UF1 / UAR)"));
    assert!(md.contains("| casme2 | MPFNet-C |"));
    assert!(
        md.contains("0.911") && md.contains("0.923"),
        "paper CDE figures"
    );
    assert!(
        md.contains("Ablation: prior learning") && md.contains("0.745") && md.contains("0.924")
    );
    assert!(md.contains("paper, on its data"));
    assert!(md.contains("![confusion](confusion.png)"));
    // paper Sec. 5 reference figures are always listed
    assert!(
        md.contains("0.719 / 0.718") && md.contains("0.840 / 0.846") && md.contains("diff 0.662")
    );
    let pooled = format!("{:.3}", r.runs[0].summary.pooled.uf1.unwrap());
    assert!(md.contains(&pooled));
    let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}
