//! The pipelines shipped under `pipelines/`: every file loads and validates against the real
//! stage registry; the ablations share the demo's cached nodes (identical parameters for every
//! stage they inherit); the paper pipelines carry the paper's hyper-parameters (paper Sec. 3.3-3.5, 7); and a
//! mistyped parameter is reported at the line where it was written.

use std::path::{Path, PathBuf};

use mpfnet::pipeline::{load, Pipeline};
use mpfnet::ConfigError;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines")
}

fn tomls(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            tomls(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

fn load_ok(path: &Path) -> Pipeline {
    load(path, &flownet2_weights(path), &mpfnet_stages::registry())
        .unwrap_or_else(|e| panic!("{} does not validate: {e:#}", path.display()))
}

/// A pipeline with the FlowNet2 flow backend names flownet2-pytorch's checkpoint, which these
/// machines cannot fetch: it validates with a stand-in of the same parameter names and shapes.
fn flownet2_weights(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if !text.contains("flow_backend = \"flownet2\"") {
        return Vec::new();
    }
    let ck = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("stages/tests/fixtures/flownet2/shapes_full.pth.tar");
    ["features", "features_mag"]
        .iter()
        .map(|s| format!("stages.{s}.flownet2.weights={}", ck.display()))
        .collect()
}

fn demo() -> Pipeline {
    load_ok(&root().join("demo.toml"))
}

/// The stages an ablation inherits from the demo and whose cached nodes it must reuse.
const SHARED: [&str; 7] = [
    "dataset",
    "folds",
    "features",
    "balance",
    "features_mag",
    "gfe",
    "afe",
];

fn params<'a>(p: &'a Pipeline, stage: &str) -> &'a Value {
    &p.stages
        .get(stage)
        .unwrap_or_else(|| panic!("{}: no stage `{stage}`", p.path.display()))
        .params
}

fn of_kind<'a>(p: &'a Pipeline, kind: &str) -> Vec<&'a str> {
    p.stages
        .values()
        .filter(|s| s.kind == kind)
        .map(|s| s.name.as_str())
        .collect()
}

/// A copy of `v` without the top-level key `k`.
fn without(v: &Value, k: &str) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove(k);
    v
}

#[test]
fn every_pipeline_validates() {
    let mut files = Vec::new();
    tomls(&root(), &mut files);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    for want in [
        "base.toml",
        "demo.toml",
        "paper/casme2_sde.toml",
        "paper/casme2_cde.toml",
        "paper/samm_sde.toml",
        "paper/samm_cde.toml",
        "paper/smic_sde.toml",
        "paper/megc2019_cde.toml",
        "ablations/prior_learning.toml",
        "ablations/features.toml",
        "ablations/gamma_sweep.toml",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "pipelines/{want} is missing; found {names:?}"
        );
    }
    for f in &files {
        let p = load_ok(f);
        // every evaluation a pipeline declares ends up in its report
        for r in &p.report {
            assert!(
                ["report", "bundle"].contains(&p.stages[r].kind.as_str()),
                "{}: run-folder node `{r}` is neither a report nor a bundle",
                f.display()
            );
        }
        let reported: Vec<&str> = p
            .report
            .iter()
            .filter(|r| p.stages[*r].kind == "report")
            .flat_map(|r| {
                p.stages[r].inputs["evaluations"]
                    .stages
                    .iter()
                    .map(|s| s.as_str())
            })
            .collect();
        for e in of_kind(&p, "evaluate") {
            // an ablation also inherits the demo's own evaluations, reported by the demo
            let inherited =
                f.parent().unwrap().ends_with("ablations") && (e == "eval_p" || e == "eval_c");
            assert!(
                inherited || reported.contains(&e),
                "{}: evaluate stage `{e}` is in no report",
                f.display()
            );
        }
    }
}

fn ablation(name: &str) -> Pipeline {
    load_ok(&root().join("ablations").join(name))
}

/// What every ablation must keep from the demo: seed (node seeds and keys depend on it), the
/// shared stages' kind, axis, inputs and parameters, and the same model and training settings
/// for its own gfe/afe/meta/evaluate stages, so only the ablated factor differs.
fn assert_shares_demo(p: &Pipeline) {
    let d = demo();
    let f = p.path.display();
    assert_eq!(p.seed, d.seed, "{f}: seed differs from demo's");
    for s in SHARED {
        let (a, b) = (&p.stages[s], &d.stages[s]);
        assert_eq!(a.kind, b.kind, "{f}: stages.{s}.kind");
        assert_eq!(a.over, b.over, "{f}: stages.{s}.over");
        assert_eq!(a.inputs, b.inputs, "{f}: stages.{s}.inputs");
        assert_eq!(
            a.params, b.params,
            "{f}: stages.{s} parameters differ from demo.toml's, so its cache would not be shared"
        );
    }
    for kind in ["gfe", "afe"] {
        for s in of_kind(p, kind) {
            let skip = |v: &Value| without(&without(v, "channels"), "final_model");
            assert_eq!(
                skip(params(p, s)),
                skip(params(&d, kind)),
                "{f}: stages.{s} differs from demo's {kind} in more than its channels"
            );
            // only the demo's own encoders feed a bundle; the ablation's skip the final split
            if s != kind {
                assert_eq!(
                    params(p, s)["final_model"],
                    false,
                    "{f}: stages.{s} trains a final model nobody reads"
                );
            }
            assert_eq!(
                p.stages[s].over.as_deref(),
                Some("folds"),
                "{f}: stages.{s}.over"
            );
        }
    }
    let meta_p = params(&d, "meta_p");
    for s in of_kind(p, "meta") {
        let m = params(p, s);
        for k in ["train", "bridge_channels", "gradcam_samples"] {
            // what meta-learning does to the encoders is chosen per variant (P frozen, C
            // fine-tuned): the rest of the schedule is shared
            let skip = |v: &Value| match v.is_object() {
                true => without(&without(v, "encoders"), "encoder_lr"),
                false => v.clone(),
            };
            assert_eq!(
                skip(&m[k]),
                skip(&meta_p[k]),
                "{f}: stages.{s}.{k} differs from demo's meta_p"
            );
        }
        assert_eq!(
            p.stages[s].over.as_deref(),
            Some("folds"),
            "{f}: stages.{s}.over"
        );
    }
    let mut labels = std::collections::BTreeSet::new();
    for s in of_kind(p, "evaluate") {
        // same evaluation as the demo's; only the row label (which gamma) differs
        let mut m = params(p, s).clone();
        let label = m["label"].take();
        if let Some(l) = label.as_str().filter(|l| !l.is_empty()) {
            assert!(labels.insert(l.to_string()), "{f}: label {l:?} used twice");
        }
        m["label"] = params(&d, "eval_p")["label"].clone();
        assert_eq!(
            &m,
            params(&d, "eval_p"),
            "{f}: stages.{s} must report like demo's eval_p"
        );
    }
    // the demo's own meta/evaluate stages are untouched (their cache is reused too)
    for s in ["meta_p", "meta_c", "eval_p", "eval_c"] {
        assert_eq!(
            params(p, s),
            params(&d, s),
            "{f}: stages.{s} differs from demo's"
        );
    }
}

/// The evaluate stages in the (single) report, in order.
fn report_evaluations(p: &Pipeline) -> Vec<String> {
    let reports: Vec<&String> = p
        .report
        .iter()
        .filter(|r| p.stages[*r].kind == "report")
        .collect();
    assert_eq!(reports.len(), 1, "{}: one report", p.path.display());
    p.stages[reports[0]].inputs["evaluations"].stages.clone()
}

/// The meta stage an evaluate stage reads.
fn meta_of<'a>(p: &'a Pipeline, eval: &str) -> &'a str {
    let r = &p.stages[eval].inputs["predictions"];
    assert!(r.gather, "{eval}: predictions must gather meta[*]");
    r.stage()
}

#[test]
fn prior_learning_ablation_shares_demo() {
    let p = ablation("prior_learning.toml");
    assert_shares_demo(&p);
    let evals = report_evaluations(&p);
    let mut got: Vec<(String, bool, String)> = evals
        .iter()
        .map(|e| {
            let m = params(&p, meta_of(&p, e));
            (
                m["variant"].as_str().unwrap().to_string(),
                m["pretrained"].as_bool().unwrap(),
                meta_of(&p, e).to_string(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, bool)> = [
        ("afe", true),
        ("c", true),
        ("gfe", true),
        ("p", false),
        ("p", true),
    ]
    .iter()
    .map(|(v, b)| (v.to_string(), *b))
    .collect();
    assert_eq!(
        got.iter()
            .map(|(v, b, _)| (v.clone(), *b))
            .collect::<Vec<_>>(),
        want
    );
    // the demo's P and C are the very stages (and cache entries) of the demo
    assert!(evals.contains(&"eval_p".to_string()) && evals.contains(&"eval_c".to_string()));
    // w/o prior learning is MPFNet-P with random encoders, same gamma
    let wopl = got.iter().find(|(v, b, _)| v == "p" && !b).unwrap();
    assert_eq!(params(&p, &wopl.2)["gamma"], params(&p, "meta_p")["gamma"]);
}

#[test]
fn feature_ablation_shares_demo() {
    let p = ablation("features.toml");
    assert_shares_demo(&p);
    let mut got: Vec<(String, String, String)> = report_evaluations(&p)
        .iter()
        .map(|e| {
            let m = meta_of(&p, e);
            let g = p.stages[m].inputs["gfe"].stage().to_string();
            let a = p.stages[m].inputs["afe"].stage().to_string();
            assert_eq!(
                params(&p, m)["variant"],
                "c",
                "{m}: the feature ablation uses MPFNet-C"
            );
            let (gc, ac) = (
                params(&p, &g)["channels"].as_str().unwrap(),
                params(&p, &a)["channels"].as_str().unwrap(),
            );
            assert_eq!(gc, ac, "{m}: gfe and afe on different channels");
            (gc.to_string(), g, a)
        })
        .collect();
    got.sort();
    let channels: Vec<&str> = got.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(channels, ["both", "diff", "flow"]);
    // both channels: the demo's own gfe/afe; the others are separate stages
    assert_eq!((got[0].1.as_str(), got[0].2.as_str()), ("gfe", "afe"));
    assert_ne!(got[1].1, got[2].1);
}

#[test]
fn gamma_sweep_shares_demo() {
    let p = ablation("gamma_sweep.toml");
    assert_shares_demo(&p);
    let d = demo();
    let added: Vec<&str> = of_kind(&p, "meta")
        .into_iter()
        .filter(|s| !d.stages.contains_key(*s))
        .collect();
    assert_eq!(added.len(), 6, "six meta stages: {added:?}");
    let added_eval = of_kind(&p, "evaluate")
        .into_iter()
        .filter(|s| !d.stages.contains_key(*s))
        .count();
    assert_eq!(added_eval, 6);
    let gammas: Vec<f64> = report_evaluations(&p)
        .iter()
        .map(|e| {
            let m = params(&p, meta_of(&p, e));
            assert_eq!(m["variant"], "p");
            assert_eq!(m["pretrained"], true);
            let g = m["gamma"].as_f64().unwrap();
            // each row says its gamma, so rows and PNG names don't collide
            assert_eq!(
                params(&p, e)["label"],
                format!("MPFNet-P gamma={g:.1}"),
                "{e}"
            );
            g
        })
        .collect();
    assert_eq!(gammas.len(), 6);
    for (k, g) in gammas.iter().enumerate() {
        assert!((g - 0.2 * k as f64).abs() < 1e-9, "gamma {k}: {g}");
    }
}

/// (file, dataset format, root, task, gamma, evaluate dataset key)
const PAPER: [(&str, &str, &str, &str, f64, &str); 6] = [
    (
        "casme2_sde.toml",
        "casme2",
        "data/CASME2",
        "sde",
        0.7,
        "casme2",
    ),
    (
        "casme2_cde.toml",
        "casme2",
        "data/CASME2",
        "cde",
        0.7,
        "casme2",
    ),
    ("samm_sde.toml", "samm", "data/SAMM", "sde", 0.6, "samm"),
    ("samm_cde.toml", "samm", "data/SAMM", "cde", 0.6, "samm"),
    ("smic_sde.toml", "smic", "data/SMIC/HS", "sde", 0.8, "smic"),
    (
        "megc2019_cde.toml",
        "megc2019",
        "data/MEGC2019/combined_3class_gt.csv",
        "cde",
        0.7,
        "megc2019",
    ),
];

#[test]
fn paper_pipelines_carry_the_papers_settings() {
    for (file, format, root_dir, task, gamma, eval_key) in PAPER {
        let path = root().join("paper").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with('#'),
            "{file}: starts with a comment saying what it needs"
        );
        assert!(
            text.contains("cuda:0"),
            "{file}: says it is meant for `--device cuda:0`"
        );
        assert!(
            text.contains("extends = \"../base.toml\""),
            "{file}: extends ../base.toml"
        );
        let p = load_ok(&path);
        let ds = params(&p, "dataset");
        assert_eq!(
            (
                ds["format"].as_str().unwrap(),
                ds["root"].as_str().unwrap(),
                ds["task"].as_str().unwrap()
            ),
            (format, root_dir, task),
            "{file}"
        );
        if format == "megc2019" {
            assert_eq!(ds["casme2_root"], "data/CASME2");
            assert_eq!(ds["samm_root"], "data/SAMM");
            assert_eq!(ds["smic_root"], "data/SMIC/HS");
        }
        // section 2: 128 x 128, L = 11; the magnified copies pre-processed exactly alike
        let fe = params(&p, "features");
        assert_eq!(
            (fe["size"].as_u64(), fe["frames"].as_u64()),
            (Some(128), Some(11)),
            "{file}"
        );
        assert_eq!(
            fe,
            params(&p, "features_mag"),
            "{file}: features and features_mag differ"
        );
        // section 4.2: phi capped at 14
        assert_eq!(params(&p, "balance")["cap"], 14, "{file}");
        // section 3: I3D widths; 4.1, 4.2: the optimisers
        for s in ["gfe", "afe"] {
            let m = &params(&p, s)["model"];
            assert_eq!(m["stem_channels"], 64, "{file}: {s}");
            assert_eq!(
                m["mixed"],
                serde_json::json!([[64, 96, 128, 16, 32, 32], [128, 128, 192, 32, 96, 64]]),
                "{file}: {s}"
            );
            assert_eq!(params(&p, s)["channels"], "both", "{file}: {s}");
        }
        let g = &params(&p, "gfe")["train"];
        assert_eq!(
            (g["epochs"].as_u64(), g["batch"].as_u64()),
            (Some(60), Some(128)),
            "{file}"
        );
        assert_eq!(
            (
                g["lr"].as_f64(),
                g["momentum"].as_f64(),
                g["weight_decay"].as_f64()
            ),
            (Some(0.01), Some(0.9), Some(5e-4)),
            "{file}"
        );
        let a = &params(&p, "afe")["train"];
        assert_eq!(
            (a["epochs"].as_u64(), a["lr_step"].as_u64()),
            (Some(80), Some(10)),
            "{file}"
        );
        assert_eq!(
            (
                a["lr"].as_f64(),
                a["gamma"].as_f64(),
                a["momentum"].as_f64(),
                a["weight_decay"].as_f64()
            ),
            (Some(0.001), Some(0.1), Some(0.9), Some(5e-4)),
            "{file}"
        );
        // section 4.3: 5-shot episodes over all classes, 4 per batch, SGD 0.05 / 0.9; gamma per dataset
        for s in ["meta_p", "meta_c"] {
            let m = params(&p, s);
            let t = &m["train"];
            assert!(t["n_way"].is_null(), "{file}: {s}: N-way over all classes");
            assert_eq!(
                (t["k_shot"].as_u64(), t["episodes_per_step"].as_u64()),
                (Some(5), Some(4)),
                "{file}: {s}"
            );
            assert_eq!(
                (t["lr"].as_f64(), t["momentum"].as_f64()),
                (Some(0.05), Some(0.9)),
                "{file}: {s}"
            );
            assert_eq!(t["distance"], "Cosine", "{file}: {s}");
            assert_eq!(m["pretrained"], true);
        }
        assert_eq!(params(&p, "meta_p")["variant"], "p");
        assert_eq!(params(&p, "meta_c")["variant"], "c");
        assert_eq!(
            params(&p, "meta_p")["gamma"].as_f64(),
            Some(gamma),
            "{file}: paper Sec. 3.4-3.5 gamma"
        );
        // P and C trained alike, but for what meta-learning does to their encoders (README:
        // P frozen, C fine-tuned at a tenth of the rate)
        let enc = |v: &Value| without(&without(v, "encoders"), "encoder_lr");
        assert_eq!(
            enc(&params(&p, "meta_p")["train"]),
            enc(&params(&p, "meta_c")["train"]),
            "{file}: P and C trained alike"
        );
        assert_eq!(params(&p, "meta_p")["train"]["encoders"], "frozen");
        assert_eq!(params(&p, "meta_c")["train"]["encoders"], "finetune");
        assert_eq!(
            params(&p, "folds")["n_val"],
            0,
            "{file}: every non-test subject trains"
        );
        // the report shows the paper's figures for this dataset and task
        let evals = report_evaluations(&p);
        for e in ["eval_p", "eval_c"] {
            assert!(evals.contains(&e.to_string()), "{file}: {e} not reported");
            let ev = params(&p, e);
            assert_eq!(
                (
                    ev["dataset"].as_str().unwrap(),
                    ev["task"].as_str().unwrap()
                ),
                (eval_key, task),
                "{file}: {e}"
            );
        }
        assert_eq!(p.seed, 2024, "{file}: base's seed");
    }
}

/// Loads a copy of demo.toml (beside a copy of base.toml) in which, on the first line starting
/// with `line_start`, `from` is replaced by `to`. Returns the error, the line (1-based) of the
/// change, the `[stages.NAME]` table it is in, and the copy's path.
fn mistyped_demo(
    line_start: &str,
    from: &str,
    to: &str,
) -> (ConfigError, usize, String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("base.toml"), dir.path().join("base.toml")).unwrap();
    let text = std::fs::read_to_string(root().join("demo.toml")).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let k = lines
        .iter()
        .position(|l| l.trim_start().starts_with(line_start) && l.contains(from))
        .unwrap_or_else(|| {
            panic!("demo.toml has no line starting with `{line_start}` holding `{from}`")
        });
    lines[k] = lines[k].replacen(from, to, 1);
    let table = lines[..k]
        .iter()
        .rev()
        .find_map(|l| {
            l.trim()
                .strip_prefix("[stages.")
                .and_then(|r| r.strip_suffix(']'))
                .map(String::from)
        })
        .expect("the change is inside a [stages.NAME] table");
    let path = dir.path().join("demo.toml");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let e = load(&path, &[], &mpfnet_stages::registry())
        .err()
        .unwrap_or_else(|| panic!("`{to}` was accepted"));
    let ce = e
        .downcast_ref::<ConfigError>()
        .unwrap_or_else(|| panic!("not a ConfigError: {e:#}"))
        .clone();
    (ce, k + 1, table, path, dir)
}

#[test]
fn mistyped_parameter_names_its_line() {
    // a parameter on its own line
    let (e, line, table, path, _dir) = mistyped_demo("n_val", "n_val", "n_vals");
    assert_eq!(e.loc.line, line, "{e}");
    assert_eq!(e.loc.file, path.display().to_string(), "{e}");
    assert_eq!(e.key, format!("stages.{table}.n_vals"), "{e}");
    assert!(e.message.contains("unknown parameter `n_vals`"), "{e}");
    // a key inside an inline table (the README's example: `stages.gfe.train.epoch`)
    let (e, line, table, _, _dir) = mistyped_demo("train = {", "epochs =", "epoch =");
    assert_eq!(e.loc.line, line, "{e}");
    assert_eq!(e.key, format!("stages.{table}.train.epoch"), "{e}");
    assert!(e.message.contains("unknown parameter `epoch`"), "{e}");
}
