//! The whole method end to end on a tiny synthetic dataset, through the real stage registry:
//! dataset -> folds -> features -> balance -> magnified features -> GFE -> AFE -> meta P and C ->
//! evaluation -> report. Then: a rerun computes nothing, and changing gamma re-plans only the
//! meta-learning and evaluation nodes of MPFNet-P.

use common::tiny::Tiny;
use mpfnet::plan::{self, Status};
use mpfnet::session;

mod common;

#[test]
fn whole_method_runs_caches_and_replans_only_downstream_of_gamma() {
    let tiny = Tiny::new();
    let (dir, ws, reg) = (&tiny.dir, &tiny.ws, &tiny.registry);
    let open = |sets: &[&str]| tiny.open(sets);

    let mut e = open(&[]);
    let out = session::run(&mut e, ws, &[]).unwrap();
    assert!(out.summary.ok(), "failed: {:?}", out.summary.failed);
    assert!(
        out.report_text.contains("MPFNet-P") && out.report_text.contains("MPFNet-C"),
        "{}",
        out.report_text
    );
    for f in ["report.md", "report.json"] {
        assert!(out.run_dir.join(f).exists(), "{f} written");
    }
    let pngs = std::fs::read_dir(&out.run_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(
        pngs >= 4,
        "confusion, embedding, Grad-CAM PNGs: found {pngs}"
    );
    let metrics = &out.record.metrics["report"];
    for v in ["eval_p", "eval_c"] {
        let acc = metrics[v]["acc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{v} acc {acc}");
        assert!(metrics[v]["n"].as_u64().unwrap() > 0);
    }
    let folds = e.instances("folds").len();
    assert_eq!(folds, 1);
    assert_eq!(
        e.instances("gfe").len(),
        5,
        "one GFE per LOSO fold (4 subjects) and one for the final model"
    );
    // no bundle reads MPFNet-P's final model: base.toml skips training it
    let p_final = e
        .instances("meta_p")
        .iter()
        .copied()
        .find(|&i| e.nodes()[i].name == "meta_p[final]")
        .unwrap();
    assert_eq!(e.load(p_final).unwrap().meta["final_model"], false);
    let loso_acc = metrics["eval_c"]["acc"].as_f64().unwrap();
    let loso_n = metrics["eval_c"]["n"].as_u64().unwrap() as f64;
    held_out_prediction_matches_loso(&out.run_dir, dir.path(), loso_acc, loso_n);

    // any intermediate artifact can be inspected and exported (safetensors + provenance, PNGs)
    let store = mpfnet_cache::Store::open(&ws.cache_dir).unwrap();
    let feat = e.nodes()[e.instances("features")[0]].name.clone();
    let target = mpfnet::inspect::resolve(&store, &ws.runs_dir, &feat).unwrap();
    let shown = mpfnet::inspect::show(&store, &target).unwrap();
    assert!(
        shown.contains("x ") && shown.contains("F32") && shown.contains("\"kind\": \"features\""),
        "{shown}"
    );
    let files = mpfnet::inspect::export(&store, reg, &target, &dir.path().join("export")).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for suffix in [".safetensors", "sheet.png", "flow_mid.png", "onset.png"] {
        assert!(
            names.iter().any(|n| n.ends_with(suffix)),
            "{suffix} not in {names:?}"
        );
    }
    let st = files
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .unwrap();
    let (tensors, meta) = mpfnet_cache::tensors::decode(&std::fs::read(st).unwrap()).unwrap();
    assert!(meta["mpfnet.provenance"].contains(&feat));
    let x = tensors.iter().find(|t| t.name == "x").unwrap();
    assert_eq!(x.shape, vec![5, 2, 16, 16], "5 channels x (L-1) x H x W");

    // the same command again: everything from the cache, same numbers
    let mut e2 = open(&[]);
    let again = session::run(&mut e2, ws, &[]).unwrap();
    let recomputed: Vec<&str> = again
        .record
        .nodes
        .iter()
        .filter(|n| n.status == "computed")
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(
        again.summary.computed, 0,
        "rerun must compute nothing, computed {recomputed:?}"
    );
    assert_eq!(again.report_text, out.report_text);

    // changing gamma: only meta_p, eval_p and report need to run
    let mut e3 = open(&["stages.meta_p.gamma=0.3"]);
    e3.prepare().unwrap();
    let prev = mpfnet::runs::latest(&ws.runs_dir, "tiny");
    let plan = plan::plan(&e3, prev.as_ref()).unwrap();
    let running: std::collections::BTreeSet<String> =
        plan.to_run().map(|e| e.stage.clone()).collect();
    assert_eq!(
        running,
        ["eval_p", "meta_p", "report"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "{}",
        plan::render(&plan, false)
    );
    let why = plan.entries.iter().find(|x| x.stage == "meta_p").unwrap();
    assert!(why.reason.contains("gamma"), "{}", why.reason);
    assert_eq!(
        plan.entries
            .iter()
            .filter(|x| x.status == Status::Cached && x.stage == "gfe")
            .count(),
        5
    );
}

/// The run's model bundle (MPFNet-C trained on all 4 subjects) classifies clips of subjects it
/// never saw (a synthetic dataset with another seed) about as well as the LOSO evaluation says
/// a model does on an unseen subject: within three binomial standard errors of both samples.
fn held_out_prediction_matches_loso(
    run_dir: &std::path::Path,
    tmp: &std::path::Path,
    loso_acc: f64,
    loso_n: f64,
) {
    use mpfnet_stages::data::{casme2, Task};
    let bundle = mpfnet_stages::bundle::Bundle::read(&run_dir.join("model.safetensors")).unwrap();
    assert_eq!(
        bundle.meta.preprocess.size, 16,
        "pre-processing travels with the bundle"
    );
    assert_eq!(bundle.meta.preprocess.frames, 3);
    let pred = mpfnet_stages::bundle::Predictor::new(&bundle, &candle_core::Device::Cpu).unwrap();
    let root = tmp.join("held_out");
    let sp = mpfnet_stages::kinds::dataset::SynthParams {
        subjects: 3,
        seed: 77,
        samples_min: 10,
        samples_max: 12,
        size: 64,
    };
    mpfnet_stages::kinds::dataset::ensure_synth(&root, &sp).unwrap();
    let mut o = casme2::Options::new(&root, casme2::Layout::Cropped);
    o.task = Task::Cde;
    let index = casme2::load(&o).unwrap();
    assert_eq!(index.classes, bundle.meta.classes);
    let clips: Vec<mpfnet_stages::cli::Clip> = index
        .samples
        .iter()
        .map(|s| mpfnet_stages::cli::Clip {
            name: s.id.clone(),
            onset: s.onset_path.clone(),
            apex: s.apex_path.clone(),
        })
        .collect();
    let res = mpfnet_stages::cli::predict_clips(&pred, &clips, false, None).unwrap();
    let ok = res
        .iter()
        .zip(&index.samples)
        .filter(|(r, s)| r.predicted == index.classes[s.class])
        .count();
    let n = res.len() as f64;
    let acc = ok as f64 / n;
    let se = (loso_acc * (1.0 - loso_acc) / loso_n + acc * (1.0 - acc) / n)
        .sqrt()
        .max(0.05);
    println!("held-out accuracy {acc:.3} on {n} clips; LOSO accuracy {loso_acc:.3} on {loso_n} samples; 3 SE = {:.3}", 3.0 * se);
    assert!(
        (acc - loso_acc).abs() <= 3.0 * se,
        "held-out accuracy {acc:.3} ({n} clips) vs LOSO {loso_acc:.3} ({loso_n}): more than 3 SE ({se:.3}) apart"
    );
}
