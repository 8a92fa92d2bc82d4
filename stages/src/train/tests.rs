use crate::train::afe::{train_classifier, AfeConfig};
use crate::train::ckpt::{Checkpointer, MemCheckpointer, NoCheckpoint};
use crate::train::data::{shuffled_batches, SampleSet};
use crate::train::driver::{self, TrainCtx};
use crate::train::init::{deep_copy, snapshot, sorted_vars, var_builder};
use crate::train::meta::episode::sample_episode;
use crate::train::meta::model::{widen_from, EncoderMode, MetaModel, Variant};
use crate::train::meta::proto::predict;
use crate::train::meta::{train_meta, MetaConfig, Pools};
use crate::train::progress::{Progress, TrainLog};
use crate::train::rng::rng_for;
use crate::train::sgd::{SgdConfig, SgdMomentum};
use crate::train::testing::{blobs, stand_in_factory, StandInConfig};
use crate::train::triplet::{
    random_triplets, semi_hard_triplets, train_gfe, triplet_loss, GfeConfig, Reduction,
};
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;

const CPU: Device = Device::Cpu;
const SHAPE: [usize; 4] = [2, 2, 6, 6];

fn cfg_small() -> StandInConfig {
    StandInConfig {
        in_channels: SHAPE[0],
        frames: SHAPE[1],
        features: 8,
        dim: 8,
    }
}

fn quiet() -> impl FnMut(Progress) {
    |_p: Progress| {}
}

/// Runs `f` with a context over `progress` and `ckpt`, never cancelled.
fn with_cx<T>(
    seed: u64,
    progress: &mut dyn FnMut(Progress),
    ckpt: &mut dyn Checkpointer,
    f: impl FnOnce(&mut TrainCtx) -> T,
) -> T {
    f(&mut TrainCtx {
        seed,
        dev: &CPU,
        progress,
        ckpt,
        cancelled: &|| false,
    })
}

/// A meta-learning model over the stand-in encoder (`secondary` for P and C).
fn meta_model(
    variant: Variant,
    primary: VarMap,
    secondary: Option<VarMap>,
    seed: u64,
) -> MetaModel {
    let f = stand_in_factory(cfg_small());
    MetaModel::new(f.as_ref(), variant, primary, secondary, SHAPE, seed, &CPU).unwrap()
}

/// Meta-trains `model` on the pools, quietly, without checkpoints.
fn meta_train(
    model: &MetaModel,
    set: &SampleSet,
    (train, val): (&[usize], &[usize]),
    cfg: &MetaConfig,
    seed: u64,
) -> TrainLog {
    let pools = Pools { set, train, val };
    driver::quiet(seed, &CPU, |cx| train_meta(model, pools, cfg, cx)).unwrap()
}

/// Accuracy of `model` on `queries` against prototypes from `protos`.
fn accuracy(
    model: &MetaModel,
    set: &SampleSet,
    (protos, queries): (&[usize], &[usize]),
    cfg: &MetaConfig,
    seed: u64,
) -> f64 {
    predict(
        model,
        set,
        protos,
        queries,
        &cfg.predict_config(),
        seed,
        &CPU,
    )
    .unwrap()
    .accuracy()
}

fn bits(map: &VarMap) -> Vec<(String, Vec<u32>)> {
    snapshot(map)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, tensor_bits(&t)))
        .collect()
}

/// The bit patterns of `t`'s elements (exact comparison, NaN included).
fn tensor_bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn triplet_loss_on_hand_made_embeddings() {
    // rows: a0=(0,0) p0=(1,0) n0=(0,2) | a1=(0,0) p1=(2,0) n1=(1,0)
    let e = Tensor::new(
        &[[0f32, 0.], [1., 0.], [0., 2.], [0., 0.], [2., 0.], [1., 0.]],
        &CPU,
    )
    .unwrap();
    let trips = [(0, 1, 2), (3, 4, 5)];
    // triplet 0: 1 - 4 + 1 -> 0; triplet 1: 4 - 1 + 1 = 4
    let (sum, acc) = triplet_loss(&e, &trips, 1.0, Reduction::Sum).unwrap();
    assert_eq!(sum.to_scalar::<f32>().unwrap(), 4.0);
    assert_eq!(acc.to_scalar::<f32>().unwrap(), 0.5);
    let (mean, _) = triplet_loss(&e, &trips, 1.0, Reduction::Mean).unwrap();
    assert_eq!(mean.to_scalar::<f32>().unwrap(), 2.0);
    let (m0, _) = triplet_loss(&e, &trips, 0.0, Reduction::Sum).unwrap();
    assert_eq!(m0.to_scalar::<f32>().unwrap(), 3.0);
}

#[test]
fn triplet_mining_respects_classes() {
    let labels = [0, 0, 1, 1, 2];
    let mut rng = rng_for(3, &[1]);
    let t = random_triplets(&labels, &mut rng);
    assert_eq!(t.len(), 4, "class 2 has no positive, so 4 anchors");
    for &(a, p, n) in &t {
        assert!(a != p && labels[a] == labels[p] && labels[a] != labels[n]);
    }
    // semi-hard: anchor 0, positive 1 at d=1; negatives at 0.5 (harder), 2 and 3 -> picks 2
    let d = vec![
        vec![0., 1., 0.5, 2., 3.],
        vec![1., 0., 9., 9., 9.],
        vec![0.5, 9., 0., 1., 9.],
        vec![2., 9., 1., 0., 9.],
        vec![3., 9., 9., 9., 0.],
    ];
    let s = semi_hard_triplets(&labels, &d, &mut rng);
    assert_eq!(s[0], (0, 1, 3));
    // anchor 2 (pos 3 at d=1): negatives 0 (0.5), 1 (9), 4 (9) -> closest farther than 1 is 9
    assert!(s
        .iter()
        .any(|&(a, p, n)| a == 2 && p == 3 && (n == 1 || n == 4)));
}

#[test]
fn sgd_momentum_matches_hand_computation() {
    let w = Var::new(&[1.0f32, -2.0], &CPU).unwrap();
    let mut opt = SgdMomentum::new(
        vec![("w".into(), w.clone())],
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.5,
        },
    )
    .unwrap();
    // loss = sum(3 w) -> g = 3
    for _ in 0..2 {
        let loss = (w.as_tensor() * 3.0).unwrap().sum_all().unwrap();
        opt.backward_step(&loss).unwrap();
    }
    // step 1: d = 3 + 0.5 w; buf = d; w -= 0.1 buf
    let mut wv = [1.0f32, -2.0];
    let mut b = [0f32; 2];
    for _ in 0..2 {
        for i in 0..2 {
            b[i] = 0.9 * b[i] + (3.0 + 0.5 * wv[i]);
            wv[i] -= 0.1 * b[i];
        }
    }
    assert_eq!(w.as_tensor().to_vec1::<f32>().unwrap(), wv.to_vec());
}

#[test]
fn seeded_init_is_deterministic() {
    let f = stand_in_factory(cfg_small());
    let (a, b, c) = (VarMap::new(), VarMap::new(), VarMap::new());
    f(var_builder(&a, 7, &CPU), 0).unwrap();
    f(var_builder(&b, 7, &CPU), 0).unwrap();
    f(var_builder(&c, 8, &CPU), 0).unwrap();
    assert_eq!(bits(&a), bits(&b));
    assert_ne!(bits(&a), bits(&c));
}

#[test]
fn batches_cover_the_pool_once() {
    let pool: Vec<usize> = (10..47).collect();
    let b = shuffled_batches(&pool, 8, &mut rng_for(1, &[]));
    let mut all: Vec<usize> = b.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(all, pool);
    assert!(b.iter().all(|x| x.len() >= 2));
}

#[test]
fn episodes_keep_support_and_query_apart_and_inside_the_pool() {
    let set = blobs(9, 3, SHAPE, 1.0, 4, 1).unwrap();
    // subject s3 is the test subject: never in the pool
    let pool = set.indices_where(|s| s != "s3");
    let by_class = set.by_class(&pool);
    for seed in 0..200 {
        let ep = sample_episode(&by_class, None, 5, 3, &mut rng_for(seed, &[])).unwrap();
        let (s, q, qy) = ep.flat();
        assert_eq!(ep.classes, vec![0, 1, 2]);
        assert!(s.iter().all(|i| !q.contains(i)), "query in support");
        let mut all: Vec<usize> = s.iter().chain(&q).copied().collect();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n, "duplicate index");
        assert!(all
            .iter()
            .all(|i| pool.contains(i) && set.subjects[*i] != "s3"));
        for (w, c) in ep.classes.iter().enumerate() {
            assert_eq!(ep.support[w].len(), 5.min(by_class[*c].len() - 1));
            assert!(ep.support[w]
                .iter()
                .chain(&ep.query[w])
                .all(|&i| set.labels[i] == *c));
            assert!(!ep.query[w].is_empty() && ep.query[w].len() <= 3);
        }
        assert_eq!(qy.len(), q.len());
    }
    // 2-way episodes pick two classes
    let ep = sample_episode(&by_class, Some(2), 2, 0, &mut rng_for(5, &[])).unwrap();
    assert_eq!(ep.classes.len(), 2);
}

fn fold(set: &SampleSet, test: &str, val: &str) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let train = set.indices_where(|s| s != test && s != val);
    let valp = set.indices_where(|s| s == val);
    let testp = set.indices_where(|s| s == test);
    (train, valp, testp)
}

fn meta_cfg(steps: usize) -> MetaConfig {
    MetaConfig {
        steps,
        episodes_per_step: 2,
        k_shot: 3,
        n_query: 3,
        lr: 0.05,
        eval_every: 5,
        checkpoint_every: 4,
        eval_batch: 8,
        // these tests train encoders from scratch: every weight trains at the meta rate
        encoders: Some(EncoderMode::Finetune),
        encoder_lr: 1.0,
        ..Default::default()
    }
}

#[test]
fn meta_learning_separates_blobs_for_every_variant_from_scratch() {
    let set = blobs(12, 3, SHAPE, 0.8, 4, 11).unwrap();
    let (train, val, test) = fold(&set, "s0", "s1");
    let cfg = meta_cfg(30);
    for variant in [
        Variant::Single,
        Variant::P { gamma: 0.7 },
        Variant::C { bridge_channels: 2 },
    ] {
        // no prior learning: fresh (empty) variable maps
        let model = meta_model(variant, VarMap::new(), Some(VarMap::new()), 5);
        let log = meta_train(&model, &set, (&train, &val), &cfg, 5);
        assert_eq!(log.entries.len(), 30);
        assert!(
            log.best_val_acc.unwrap() >= 0.9,
            "{variant:?}: val {:?}",
            log.best_val_acc
        );
        let all_train: Vec<usize> = train.iter().chain(&val).copied().collect();
        let p = predict(
            &model,
            &set,
            &all_train,
            &test,
            &cfg.predict_config(),
            5,
            &CPU,
        )
        .unwrap();
        // 8 of the 9 test clips at least (the cascade, whose bridge is scaled to the input's
        // RMS since the learning benchmark, gets 8 here; the others 9)
        assert!(
            p.accuracy() >= 0.85,
            "{variant:?}: test accuracy {}",
            p.accuracy()
        );
        assert!(p
            .probs
            .iter()
            .all(|r| (r.iter().sum::<f32>() - 1.0).abs() < 1e-4));
        assert_eq!(p.embeddings.len(), test.len());
        let query = crate::eval::gradcam::MetaCam {
            proto_pool: &all_train,
            sample: test[0],
            class: set.labels[test[0]],
            scale: 10.0,
            chunk: 8,
        };
        let cam = crate::eval::gradcam::meta_cam(&model, &set, &query, &CPU).unwrap();
        assert_eq!((cam.t, cam.h, cam.w), (1, SHAPE[2], SHAPE[3]));
        assert!(cam.values.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

#[test]
fn meta_learning_improves_over_random_features() {
    // harder blobs: random stand-in features are weak, training must help
    let set = blobs(30, 3, SHAPE, 0.4, 5, 12).unwrap();
    let (train, val, test) = fold(&set, "s0", "s1");
    let model = meta_model(Variant::Single, VarMap::new(), None, 9);
    let cfg = meta_cfg(60);
    let all_train: Vec<usize> = train.iter().chain(&val).copied().collect();
    let before = accuracy(&model, &set, (&all_train, &test), &cfg, 1);
    let log = meta_train(&model, &set, (&train, &val), &cfg, 9);
    let after = accuracy(&model, &set, (&all_train, &test), &cfg, 1);
    let first = log.entries[..5].iter().map(|e| e.loss).sum::<f64>();
    let last = log.entries[55..].iter().map(|e| e.loss).sum::<f64>();
    assert!(last < first, "loss did not fall: {first} -> {last}");
    assert!(
        after >= before + 0.1 && after >= 0.8,
        "accuracy {before} -> {after}"
    );
}

#[test]
fn cascade_starts_as_the_pretrained_afe() {
    let f = stand_in_factory(cfg_small());
    let afe = VarMap::new();
    let enc = f(var_builder(&afe, 3, &CPU), 0).unwrap();
    let set = blobs(2, 3, SHAPE, 1.0, 1, 2).unwrap();
    let x = set.batch(&[0, 1, 2], &CPU).unwrap();
    let plain = enc.embed(&x, false).unwrap();
    let model = MetaModel::new(
        f.as_ref(),
        Variant::C { bridge_channels: 3 },
        VarMap::new(),
        Some(afe),
        SHAPE,
        4,
        &CPU,
    )
    .unwrap();
    let casc = &model.embed(&x, false).unwrap()[0].0;
    let diff = (plain - casc)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        diff < 1e-5,
        "cascade differs from the pretrained AFE by {diff}"
    );
    // the zero-initialised new AFE weights get a gradient (the bridge output is not zero), so the
    // cascade can learn to use the GFE
    let (enc2, input) = model.cam_encoder(&x).unwrap();
    let loss = enc2.embed(&input, true).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let stem = sorted_vars(model.secondary.as_ref().unwrap())
        .into_iter()
        .find(|(k, _)| k == "conv.weight")
        .unwrap()
        .1;
    let gs = g
        .get(stem.as_tensor())
        .unwrap()
        .narrow(1, SHAPE[0] * SHAPE[1], 3 * SHAPE[1])
        .unwrap()
        .contiguous()
        .unwrap();
    assert!(
        gs.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
}

/// Saves into the inner store, then fails once at `crash_at` (a simulated kill).
struct CrashAt {
    inner: MemCheckpointer,
    crash_at: Option<usize>,
}

impl Checkpointer for CrashAt {
    fn save(&mut self, epoch: usize, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.inner.save(epoch, bytes)?;
        if self.crash_at == Some(epoch) {
            self.crash_at = None;
            anyhow::bail!("simulated crash at {epoch}");
        }
        Ok(())
    }
    fn load_latest(&mut self) -> anyhow::Result<Option<(usize, Vec<u8>)>> {
        self.inner.load_latest()
    }
}

/// A progress callback that counts its calls (a resumed run reports only the epochs it ran).
fn counting(n: &std::cell::Cell<usize>) -> impl FnMut(Progress) + '_ {
    move |_| n.set(n.get() + 1)
}

/// A training run from a checkpointer and a progress callback (for the resume tests).
type Run<'a> =
    Box<dyn Fn(&mut dyn Checkpointer, &mut dyn FnMut(Progress)) -> anyhow::Result<TrainLog> + 'a>;

/// Runs `run(k)` (k: a fresh model's index) whole, then crashing at `crash_at`, then resumed;
/// returns the whole and resumed logs and asserts that the resumed run ran `rounds_left` rounds.
fn crash_and_resume<'a>(
    run: &dyn Fn(usize) -> Run<'a>,
    crash_at: usize,
    rounds_left: usize,
) -> (TrainLog, TrainLog) {
    let log_whole = run(0)(&mut NoCheckpoint, &mut quiet()).unwrap();
    let mut ck = CrashAt {
        inner: MemCheckpointer::default(),
        crash_at: Some(crash_at),
    };
    assert!(run(1)(&mut ck, &mut quiet()).is_err());
    let ran = std::cell::Cell::new(0);
    let log_resumed = run(2)(&mut ck, &mut counting(&ran)).unwrap();
    assert_eq!(
        ran.get(),
        rounds_left,
        "the resumed run trains the rest only"
    );
    // the whole log (curves included) comes back from the checkpoint: same bytes
    assert_eq!(log_whole, log_resumed);
    assert_eq!(
        serde_json::to_vec(&log_whole).unwrap(),
        serde_json::to_vec(&log_resumed).unwrap()
    );
    (log_whole, log_resumed)
}

/// Six GFE epochs of 8-sample batches.
fn gfe_cfg(checkpoint_every: usize) -> GfeConfig {
    GfeConfig {
        epochs: 6,
        batch: 8,
        checkpoint_every,
        lr: 0.01,
        ..Default::default()
    }
}

#[test]
fn gfe_and_afe_resume_bit_identical() {
    let set = blobs(6, 3, SHAPE, 0.5, 3, 4).unwrap();
    let f = stand_in_factory(cfg_small());
    let gcfg = gfe_cfg(2);
    let acfg = AfeConfig {
        epochs: 6,
        batch: 8,
        lr_step: 2,
        lr: 0.05,
        checkpoint_every: 2,
        ..Default::default()
    };
    let maps = [VarMap::new(), VarMap::new(), VarMap::new()];
    let gfe = |k: usize| -> Run {
        let (f, set, gcfg, m) = (&f, &set, &gcfg, &maps[k]);
        Box::new(move |c, p| with_cx(21, p, c, |cx| train_gfe(f.as_ref(), m, set, gcfg, cx)))
    };
    crash_and_resume(&gfe, 4, 2);
    assert_eq!(bits(&maps[0]), bits(&maps[2]));
    let maps = [VarMap::new(), VarMap::new(), VarMap::new()];
    let afe = |k: usize| -> Run {
        let (f, set, acfg, m) = (&f, &set, &acfg, &maps[k]);
        Box::new(move |c, p| {
            with_cx(21, p, c, |cx| {
                train_classifier(f.as_ref(), m, set, acfg, cx)
            })
        })
    };
    crash_and_resume(&afe, 4, 2);
    assert_eq!(bits(&maps[0]), bits(&maps[2]));
}

#[test]
fn meta_resume_bit_identical() {
    let set = blobs(8, 3, SHAPE, 0.5, 4, 6).unwrap();
    let (train, val, _) = fold(&set, "s0", "s1");
    let cfg = meta_cfg(10);
    let models: Vec<MetaModel> = (0..3)
        .map(|_| {
            meta_model(
                Variant::P { gamma: 0.5 },
                VarMap::new(),
                Some(VarMap::new()),
                2,
            )
        })
        .collect();
    let run = |k: usize| -> Run {
        let (model, set, cfg) = (&models[k], &set, &cfg);
        let pools = Pools {
            set,
            train: &train,
            val: &val,
        };
        Box::new(move |c, p| with_cx(2, p, c, |cx| train_meta(model, pools, cfg, cx)))
    };
    crash_and_resume(&run, 8, 2);
    let (whole, resumed) = (&models[0], &models[2]);
    assert_eq!(bits(&whole.primary), bits(&resumed.primary));
    assert_eq!(
        bits(whole.secondary.as_ref().unwrap()),
        bits(resumed.secondary.as_ref().unwrap())
    );
}

#[test]
fn training_stops_at_a_round_boundary_when_cancelled() {
    let set = blobs(6, 3, SHAPE, 0.5, 3, 4).unwrap();
    let f = stand_in_factory(cfg_small());
    let cfg = gfe_cfg(1);
    let seen = std::cell::Cell::new(0);
    let mut ck = MemCheckpointer::default();
    let cancelled = || seen.get() >= 2;
    let r = train_gfe(
        f.as_ref(),
        &VarMap::new(),
        &set,
        &cfg,
        &mut TrainCtx {
            seed: 1,
            dev: &CPU,
            progress: &mut counting(&seen),
            ckpt: &mut ck,
            cancelled: &cancelled,
        },
    );
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("cancelled before epoch 3 of 6"), "{e}");
    // both finished epochs were checkpointed: a rerun resumes after them
    assert_eq!(ck.saved.iter().map(|(e, _)| *e).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn gfe_training_lowers_the_triplet_loss() {
    let set = blobs(10, 3, SHAPE, 0.5, 3, 8).unwrap();
    let f = stand_in_factory(cfg_small());
    let cfg = GfeConfig {
        epochs: 15,
        batch: 15,
        lr: 0.01,
        reduction: Reduction::Mean,
        // the loss this test was written for: margin 1 on raw embeddings
        margin: 1.0,
        normalize: false,
        checkpoint_every: 0,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut progress = |p: Progress| seen.push(p.epoch);
    let log = with_cx(1, &mut progress, &mut NoCheckpoint, |cx| {
        train_gfe(f.as_ref(), &VarMap::new(), &set, &cfg, cx)
    })
    .unwrap();
    assert_eq!(seen, (0..15).collect::<Vec<_>>());
    let l = &log.entries;
    assert!(
        l[12..].iter().map(|e| e.loss).sum::<f64>() < l[..3].iter().map(|e| e.loss).sum::<f64>()
    );
}

#[test]
fn sgd_inplace_and_tensor_paths_agree_bitwise() {
    let init: Vec<f32> = (0..257)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let mut out = Vec::new();
    for inplace in [true, false] {
        let w = Var::new(init.as_slice(), &CPU).unwrap();
        let mut opt = SgdMomentum::new(
            vec![("w".into(), w.clone())],
            SgdConfig {
                lr: 0.03,
                momentum: 0.9,
                weight_decay: 5e-4,
            },
        )
        .unwrap();
        opt.set_inplace(inplace);
        for _ in 0..5 {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
        }
        out.push(
            w.as_tensor()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(out[0], out[1]);
}

#[test]
fn configs_default_from_empty_json_to_the_paper_values() {
    let g: GfeConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(
        (g.epochs, g.batch, g.lr, g.momentum, g.weight_decay),
        (60, 128, 0.01, 0.9, 5e-4)
    );
    // the measured choices where the paper is open (README)
    assert_eq!(
        (g.reduction, g.normalize, g.margin),
        (Reduction::Mean, true, 0.2)
    );
    let a: AfeConfig = serde_json::from_str("{}").unwrap();
    assert_eq!((a.epochs, a.lr, a.lr_step, a.gamma), (80, 0.001, 10, 0.1));
    assert!((a.lr_at(25) - 1e-5).abs() < 1e-12);
    let m: MetaConfig = serde_json::from_str(r#"{"k_shot": 3}"#).unwrap();
    assert_eq!(
        (m.k_shot, m.lr, m.momentum, m.episodes_per_step),
        (3, 0.05, 0.9, 4)
    );
    // encoders per variant: MPFNet-C fine-tuned at a tenth of the rate, the others frozen
    assert_eq!((m.encoders, m.encoder_lr), (None, 0.1));
    let mode = |v| m.encoder_mode(v);
    assert_eq!(
        mode(Variant::C { bridge_channels: 4 }),
        EncoderMode::Finetune
    );
    assert_eq!(mode(Variant::P { gamma: 0.7 }), EncoderMode::Frozen);
    assert_eq!(mode(Variant::Single), EncoderMode::Frozen);
    let set: MetaConfig = serde_json::from_str(r#"{"encoders": "finetune"}"#).unwrap();
    assert_eq!(set.encoder_mode(Variant::Single), EncoderMode::Finetune);
}

#[test]
fn similarities_and_prototype_draws() {
    use crate::train::meta::model::Distance;
    use crate::train::meta::proto::{similarity, PrototypeMode};
    let q = Tensor::new(&[[1f32, 0.], [1., 1.]], &CPU).unwrap();
    let p = Tensor::new(&[[2f32, 0.], [0., 3.]], &CPU).unwrap();
    let c = similarity(&q, &p, Distance::Cosine)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let h = 1.0 / 2f32.sqrt();
    assert!(
        (c[0][0] - 1.0).abs() < 1e-6
            && c[0][1].abs() < 1e-6
            && (c[1][0] - h).abs() < 1e-6
            && (c[1][1] - h).abs() < 1e-6
    );
    let e = similarity(&q, &p, Distance::Euclidean)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(e, vec![vec![-1.0, -10.0], vec![-2.0, -5.0]]);
    // Draws mode and Euclidean distance run end to end on a trained model
    let set = blobs(10, 3, SHAPE, 1.0, 3, 13).unwrap();
    let (train, val, test) = fold(&set, "s0", "s1");
    let mut cfg = meta_cfg(15);
    cfg.distance = Distance::Euclidean;
    cfg.scale = 1.0;
    cfg.prototypes = PrototypeMode::Draws {
        draws: 4,
        k_shot: 3,
    };
    let model = meta_model(Variant::Single, VarMap::new(), None, 3);
    meta_train(&model, &set, (&train, &val), &cfg, 3);
    let pr = predict(&model, &set, &train, &test, &cfg.predict_config(), 3, &CPU).unwrap();
    assert!(pr.accuracy() >= 0.8, "{}", pr.accuracy());
    assert!(
        predict(
            &model,
            &set,
            &train,
            &train[..2],
            &cfg.predict_config(),
            3,
            &CPU
        )
        .is_err(),
        "overlap must fail"
    );
}

/// Pretrained stand-in encoders (a few AFE epochs), for the frozen/fine-tuned tests.
fn pretrained(set: &SampleSet, seed: u64) -> VarMap {
    let f = stand_in_factory(cfg_small());
    let m = VarMap::new();
    let acfg = AfeConfig {
        epochs: 2,
        batch: 8,
        lr: 0.05,
        ..Default::default()
    };
    driver::quiet(seed, &CPU, |cx| {
        train_classifier(f.as_ref(), &m, set, &acfg, cx)
    })
    .unwrap();
    // drop the classification head: the meta stage sees encoder weights only
    let enc = VarMap::new();
    f(var_builder(&enc, 0, &CPU), 0).unwrap();
    widen_from(&m, &enc).unwrap();
    enc
}

#[test]
fn frozen_encoders_stay_bit_identical_and_fine_tuned_ones_move() {
    let set = blobs(8, 3, SHAPE, 0.5, 4, 6).unwrap();
    // no validation subjects: the last state is kept (a best-step selection could restore the
    // initial state and hide whether the encoders moved)
    let (train, _, _) = fold(&set, "s0", "s1");
    let val: Vec<usize> = Vec::new();
    let (g0, a0) = (pretrained(&set, 1), pretrained(&set, 2));
    let (gb, ab) = (bits(&g0), bits(&a0));
    for mode in [EncoderMode::Frozen, EncoderMode::Finetune] {
        for variant in [Variant::P { gamma: 0.7 }, Variant::C { bridge_channels: 2 }] {
            let model = meta_model(
                variant,
                deep_copy(&g0).unwrap(),
                Some(deep_copy(&a0).unwrap()),
                3,
            );
            let cfg = MetaConfig {
                encoders: Some(mode),
                encoder_lr: 0.5,
                ..meta_cfg(6)
            };
            let before_s = bits(model.secondary.as_ref().unwrap());
            let log = meta_train(&model, &set, (&train, &val), &cfg, 3);
            assert_eq!(log.entries.len(), 6);
            let gfe_same = bits(&model.primary) == gb;
            let after_s = bits(model.secondary.as_ref().unwrap());
            match (mode, variant) {
                (EncoderMode::Frozen, Variant::P { .. }) => {
                    assert!(gfe_same, "frozen GFE changed");
                    assert_eq!(after_s, ab, "frozen AFE changed");
                }
                (EncoderMode::Frozen, _) => {
                    assert!(gfe_same, "frozen GFE changed (cascade)");
                    // every pretrained value of the cascade AFE is unchanged (widened weights:
                    // their pretrained input channels); the bridge and new channels move
                    let now = snapshot(model.secondary.as_ref().unwrap()).unwrap();
                    let old = snapshot(&a0).unwrap();
                    for (name, t) in &old {
                        let (_, n) = now.iter().find(|(k, _)| k == name).unwrap();
                        let n = if t.rank() >= 2 {
                            n.narrow(1, 0, t.dims()[1]).unwrap()
                        } else {
                            n.clone()
                        };
                        assert_eq!(
                            tensor_bits(&n),
                            tensor_bits(t),
                            "frozen cascade AFE {name} changed"
                        );
                    }
                    assert_ne!(
                        after_s, before_s,
                        "the cascade's bridge/new weights did not train"
                    );
                }
                (EncoderMode::Finetune, Variant::P { .. }) => {
                    assert!(!gfe_same, "fine-tuned GFE did not move");
                    assert_ne!(after_s, ab, "fine-tuned AFE did not move");
                }
                (EncoderMode::Finetune, _) => {
                    assert!(!gfe_same, "fine-tuned GFE did not move (cascade)");
                    assert_ne!(after_s, before_s);
                }
            }
        }
    }
}

#[test]
fn resident_batches_equal_host_batches_and_upload_once() {
    let set = blobs(2, 3, SHAPE, 1.0, 1, 2).unwrap();
    assert!(!set.is_resident());
    for idx in [vec![0, 1, 2], vec![5, 0, 5], vec![set.len() - 1]] {
        let host = set.batch(&idx, &CPU).unwrap();
        let dev = set.resident_batch(&idx, &CPU).unwrap();
        assert_eq!(host.dims(), dev.dims());
        let (h, d) = (
            host.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            dev.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(h.iter().zip(&d).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
    assert!(set.is_resident());
    let e = set
        .resident_batch(&[set.len()], &CPU)
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of"), "{e}");
}

/// The encoders' training steps read nothing to the host: an epoch of many small batches reads
/// as often as an epoch of one batch (once, its sums), and the epoch log still holds the loss
/// and accuracy.
#[test]
fn encoder_training_reads_the_host_once_per_epoch_not_per_step() {
    use crate::train::host::reads;
    let set = blobs(8, 3, SHAPE, 0.5, 3, 4).unwrap(); // 24 samples
    let f = stand_in_factory(cfg_small());
    // the reads one training makes, checking its log holds a loss and an accuracy per epoch
    let reads_of = |train: &dyn Fn(&mut TrainCtx) -> anyhow::Result<TrainLog>| {
        let before = reads();
        let log = driver::quiet(3, &CPU, |cx| train(cx)).unwrap();
        assert!(log
            .entries
            .iter()
            .all(|e| e.loss.is_finite() && e.acc.is_some()));
        reads() - before
    };
    let mut per_batch = Vec::new();
    for batch in [24, 4] {
        let acfg = AfeConfig {
            epochs: 2,
            batch,
            lr: 0.05,
            ..Default::default()
        };
        let gcfg = GfeConfig {
            epochs: 2,
            batch,
            checkpoint_every: 0,
            ..Default::default()
        };
        per_batch.push((
            reads_of(&|cx| train_classifier(f.as_ref(), &VarMap::new(), &set, &acfg, cx)),
            reads_of(&|cx| train_gfe(f.as_ref(), &VarMap::new(), &set, &gcfg, cx)),
        ));
    }
    // 1 batch per epoch against 6: the same number of reads, one per epoch
    assert_eq!(per_batch[0], per_batch[1]);
    assert_eq!(per_batch[0], (2, 2));
}

/// Meta-learning steps read nothing to the host either: their logs come back 25 steps at a
/// time, so 30 steps read once more than 5 (the per-step reads before made that 25 more).
#[test]
fn meta_training_reads_its_step_logs_in_batches() {
    use crate::train::host::reads;
    let set = blobs(6, 3, SHAPE, 0.8, 2, 3).unwrap();
    let train = set.all_indices();
    let reads_of = |steps: usize| {
        let cfg = MetaConfig {
            checkpoint_every: 0,
            ..meta_cfg(steps)
        };
        let model = meta_model(Variant::Single, VarMap::new(), None, 2);
        let before = reads();
        let log = meta_train(&model, &set, (&train, &[]), &cfg, 2);
        let n = reads() - before;
        assert_eq!(log.entries.len(), steps);
        assert!(log.entries.iter().enumerate().all(|(i, e)| e.epoch == i
            && e.loss.is_finite()
            && e.acc.is_some_and(|a| (0.0..=1.0).contains(&a))));
        n
    };
    assert_eq!(reads_of(30), reads_of(5) + 1);
}
