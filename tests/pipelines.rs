//! The pipelines shipped under `pipelines/`: every file loads and validates against the real
//! stage registry; the ablations are their paper configuration plus row copies (every stage of
//! the base unchanged, so its cached nodes are shared); the paper pipelines carry the paper's hyper-parameters (paper Sec. 3.3-3.5, 7); and a
//! mistyped parameter is reported at the line where it was written.

use std::path::{Path, PathBuf};

use mpfnet::pipeline::{load, Pipeline};
use mpfnet::ConfigError;
use serde_json::{json, Value};

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
        // an overlay is no pipeline of its own (tested through the files that extend it)
        if p.is_dir() && !p.ends_with("overlays") {
            tomls(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

/// A user's one-line pipeline, `extends = [...]` of files under `pipelines/`, loaded.
fn extending(files: &[&str]) -> Pipeline {
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("mine.toml");
    let paths: Vec<String> = files
        .iter()
        .map(|f| root().join(f).display().to_string())
        .collect();
    std::fs::write(&mine, format!("extends = {paths:?}\n")).unwrap();
    load_ok(&mine)
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

fn paper_cde() -> Pipeline {
    load_ok(&root().join("paper/casme2_cde.toml"))
}

/// Each key of `expect` has that value in `table`: whole numbers compared as integers (so a
/// float in the file fails), others as f64.
fn assert_has(table: &Value, expect: Value, what: &str) {
    for (k, want) in expect.as_object().unwrap() {
        let got = &table[k];
        let same = match want.as_u64() {
            Some(n) => got.as_u64() == Some(n),
            None => got.as_f64() == want.as_f64(),
        };
        assert!(same, "{what}: `{k}` is {got}, expected {want}");
    }
}

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
        "ablations/frames.toml",
        "bench/learning.toml",
        "bench/ablations.toml",
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

/// An ablation is its paper configuration plus row copies: every stage of the base is there
/// unchanged (so its cached nodes are the base's), every other stage is `ORIGINAL_ROW`, a copy
/// of a base stage of the same kind whose parameters differ from the original's only in
/// `row_keys(copy)`.
fn assert_rows_of(p: &Pipeline, base: &Pipeline, row_keys: &dyn Fn(&str) -> Vec<&'static str>) {
    let f = p.path.display();
    assert_eq!(p.seed, base.seed, "{f}: seed differs from its base's");
    for (s, b) in &base.stages {
        let a = &p.stages[s];
        assert_eq!((&a.kind, &a.over), (&b.kind, &b.over), "{f}: stages.{s}");
        if s != "report" {
            assert_eq!(a.inputs, b.inputs, "{f}: stages.{s}.inputs");
            assert_eq!(
                a.params, b.params,
                "{f}: stages.{s} differs from its base's"
            );
        }
    }
    for (s, a) in p
        .stages
        .iter()
        .filter(|(s, _)| !base.stages.contains_key(*s))
    {
        let orig = base
            .stages
            .keys()
            .filter(|o| s.starts_with(&format!("{o}_")))
            .max_by_key(|o| o.len())
            .unwrap_or_else(|| panic!("{f}: stage {s} is no copy of a base stage"));
        let o = &base.stages[orig];
        assert_eq!((&a.kind, &a.over), (&o.kind, &o.over), "{f}: {s}");
        let mut got = a.params.clone();
        let mut want = o.params.clone();
        for k in row_keys(s) {
            let ptr = format!("/{}", k.replace('.', "/"));
            got.pointer_mut(&ptr).map(Value::take);
            want.pointer_mut(&ptr).map(Value::take);
        }
        assert_eq!(
            got, want,
            "{f}: {s} differs from {orig} beyond its row's keys"
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
fn prior_learning_ablation_is_table_iv_on_the_paper_configuration() {
    let p = ablation("prior_learning.toml");
    assert_rows_of(&p, &paper_cde(), &|s| match s {
        "meta_p_wopl" => vec!["pretrained", "train.encoders", "train.encoder_lr"],
        "meta_p_pltn" | "meta_p_plsm" => vec!["variant"],
        _ => vec!["label"],
    });
    let rows: Vec<(String, String, bool, String)> = report_evaluations(&p)
        .iter()
        .map(|e| {
            let m = params(&p, meta_of(&p, e));
            (
                params(&p, e)["label"].as_str().unwrap().to_string(),
                m["variant"].as_str().unwrap().to_string(),
                m["pretrained"].as_bool().unwrap(),
                m["train"]["encoders"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("w/o PL", "p", false, "finetune"),
        ("PLTN", "gfe", true, "frozen"),
        ("PLSM", "afe", true, "frozen"),
        ("", "p", true, "frozen"),
        ("", "c", true, "finetune"),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(l, v, p, e)| (l.to_string(), v.to_string(), *p, e.to_string()))
        .collect();
    assert_eq!(rows, want, "Table IV's rows, in the paper's order");
    // every row reads the fold's own encoders: nothing retrains GFE or AFE
    for e in report_evaluations(&p) {
        let m = &p.stages[meta_of(&p, &e)];
        assert_eq!(
            (m.inputs["gfe"].stage(), m.inputs["afe"].stage()),
            ("gfe", "afe")
        );
    }
}

#[test]
fn feature_ablation_is_table_v_for_p_and_c() {
    let p = ablation("features.toml");
    assert_rows_of(&p, &paper_cde(), &|s| match s {
        s if s.starts_with("gfe_") || s.starts_with("afe_") => vec!["channels", "final_model"],
        s if s.starts_with("meta_c_") => vec!["final_model"],
        _ => vec!["label"],
    });
    let rows: Vec<(String, String)> = report_evaluations(&p)
        .iter()
        .map(|e| {
            let m = &p.stages[meta_of(&p, e)];
            let (g, a) = (m.inputs["gfe"].stage(), m.inputs["afe"].stage());
            let channels = params(&p, g)["channels"].as_str().unwrap().to_string();
            assert_eq!(
                params(&p, a)["channels"],
                channels,
                "{e}: gfe and afe on other inputs"
            );
            if channels != "both" {
                // the copies train no final model: no bundle reads them
                assert_eq!(params(&p, g)["final_model"], false);
            }
            (m.params["variant"].as_str().unwrap().to_string(), channels)
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("p", "flow"),
        ("p", "diff"),
        ("p", "both"),
        ("c", "flow"),
        ("c", "diff"),
        ("c", "both"),
    ]
    .iter()
    .map(|(v, c)| (v.to_string(), c.to_string()))
    .collect();
    assert_eq!(rows, want);
    // P and C of one input share that input's encoders (one gfe/afe node per fold and input)
    for row in ["flow", "diff"] {
        let (mp, mc) = (
            &p.stages[&format!("meta_p_{row}")],
            &p.stages[&format!("meta_c_{row}")],
        );
        assert_eq!(mp.inputs["gfe"], mc.inputs["gfe"]);
        assert_eq!(mp.inputs["afe"], mc.inputs["afe"]);
        assert_eq!(mp.inputs["gfe"].stage(), format!("gfe_{row}"));
    }
}

#[test]
fn gamma_sweep_steps_by_a_tenth() {
    let p = ablation("gamma_sweep.toml");
    assert_rows_of(&p, &paper_cde(), &|s| match s {
        s if s.starts_with("meta_p_") => vec!["gamma"],
        _ => vec!["label"],
    });
    let evals = report_evaluations(&p);
    assert_eq!(
        evals.len(),
        13,
        "11 gammas, then the base's P and C: {evals:?}"
    );
    for (k, e) in evals[..11].iter().enumerate() {
        let g = params(&p, meta_of(&p, e))["gamma"].as_f64().unwrap();
        assert!((g - 0.1 * k as f64).abs() < 1e-9, "row {k}: gamma {g}");
        assert_eq!(params(&p, e)["label"], format!("MPFNet-P, gamma = {g:.1}"));
    }
    // gamma 0.7 is the configuration's own meta_p: equal parameters, one cached node
    assert_eq!(params(&p, "meta_p_gamma0_7"), params(&p, "meta_p"));
}

#[test]
fn frame_sweep_runs_the_whole_method_per_length() {
    let p = ablation("frames.toml");
    let base = paper_cde();
    assert_rows_of(&p, &base, &|s| match s {
        s if s.starts_with("features") => vec!["frames"],
        s if s.starts_with("gfe_") || s.starts_with("afe_") || s.starts_with("meta_c_") => {
            vec!["final_model"]
        }
        _ => vec!["label"],
    });
    let lengths: Vec<u64> = (3..=20).collect();
    for l in &lengths {
        let s = |n: &str| format!("{n}_L{l}");
        assert_eq!(params(&p, &s("features"))["frames"], *l);
        assert_eq!(params(&p, &s("features_mag"))["frames"], *l);
        // the copies read each other, and share the dataset, folds and class balancing
        assert_eq!(
            p.stages[&s("gfe")].inputs["features"].stage(),
            s("features")
        );
        assert_eq!(
            p.stages[&s("afe")].inputs["magnified"].stage(),
            s("features_mag")
        );
        assert_eq!(
            p.stages[&s("features_mag")].over.as_deref(),
            Some("balance")
        );
        assert_eq!(p.stages[&s("meta_c")].inputs["gfe"].stage(), s("gfe"));
        assert_eq!(
            p.stages[&s("eval_c")].inputs["predictions"].stage(),
            s("meta_c")
        );
        // `each`: no row trains a final model nobody reads
        for st in ["gfe", "afe", "meta_c"] {
            assert_eq!(params(&p, &s(st))["final_model"], false, "{}", s(st));
        }
    }
    assert_eq!(report_evaluations(&p).len(), 2 * lengths.len() + 2);
}

/// The CPU overlay makes each ablation runnable at the learning benchmark's size with one
/// `extends` line, and the benchmark's own nodes are shared by the ablations' run.
#[test]
fn one_extends_line_runs_an_ablation_at_the_benchmarks_size() {
    let learning = load_ok(&root().join("bench/learning.toml"));
    let both = load_ok(&root().join("bench/ablations.toml"));
    for (s, l) in &learning.stages {
        if s != "report" {
            assert_eq!(both.stages[s].params, l.params, "bench/ablations.toml: {s}");
            assert_eq!(both.stages[s].inputs, l.inputs, "bench/ablations.toml: {s}");
        }
    }
    let p = extending(&["ablations/frames.toml", "overlays/cpu_size.toml"]);
    for l in [3, 20] {
        let f = params(&p, &format!("features_L{l}"));
        assert_eq!(
            (f["size"].as_u64(), f["frames"].as_u64()),
            (Some(32), Some(l))
        );
        let g = params(&p, &format!("gfe_L{l}"));
        assert_eq!(
            g["model"],
            params(&learning, "gfe")["model"],
            "the overlay sizes every copy"
        );
    }
    assert_eq!(params(&p, "dataset"), params(&learning, "dataset"));
    assert!(
        !p.stages.contains_key("bundle"),
        "`stages.bundle = false` drops the bundle"
    );
}

/// The TF32 overlay reaches every training stage, sweep copies included, and nothing else:
/// pre-processing nodes keep their parameters (and so their cache keys).
#[test]
fn the_tf32_overlay_sets_every_training_stage_and_only_those() {
    let p = extending(&["ablations/prior_learning.toml", "overlays/tf32.toml"]);
    let plain = ablation("prior_learning.toml");
    let mut training = 0;
    for (name, stage) in &p.stages {
        let training_kind = ["gfe", "afe", "meta"].contains(&stage.kind.as_str());
        assert_eq!(
            stage.params.get("tf32") == Some(&Value::Bool(true)),
            training_kind,
            "{name}"
        );
        if training_kind {
            training += 1;
            assert_eq!(
                without(&stage.params, "tf32"),
                without(params(&plain, name), "tf32"),
                "{name}"
            );
        } else {
            assert_eq!(&stage.params, params(&plain, name), "{name}");
        }
    }
    assert!(
        training >= 7,
        "gfe, afe, meta_p, meta_c and the sweep rows: {training}"
    );
}

#[test]
fn a_bad_sweep_is_refused_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let base = root().join("paper/casme2_cde.toml");
    for (body, key, says) in [
        (
            "stages = [\"nope\"]\nset = [\"nope.x\"]\nvalues = [1]",
            "sweeps.s.stages",
            "no stage `nope`",
        ),
        (
            "stages = [\"meta_p\"]\nset = [\"meta_c.gamma\"]\nvalues = [1]",
            "sweeps.s.set",
            "STAGE.KEY",
        ),
        (
            "stages = [\"meta_p\"]\nrows = { \"a-b\" = { \"meta_p.gamma\" = 1 } }",
            "sweeps.s.rows.a-b",
            "row name",
        ),
        (
            "stages = [\"meta_p\"]\nset = [\"meta_p.gamma\"]",
            "sweeps.s",
            "either `rows`",
        ),
        (
            "stages = [\"meta_p\"]\nrows = [{ \"meta_p.gamma\" = 1 }]",
            "sweeps.s.rows[0]",
            "needs `name`",
        ),
        (
            "stages = [\"features\"]\nrows = { mag = {} }",
            "sweeps.s",
            "exists already",
        ),
    ] {
        let path = dir.path().join("sweep.toml");
        std::fs::write(
            &path,
            format!(
                "extends = {:?}\n\n[sweeps.s]\n{body}\n",
                base.display().to_string()
            ),
        )
        .unwrap();
        let e = load(&path, &[], &mpfnet_stages::registry()).unwrap_err();
        let c = e
            .downcast_ref::<ConfigError>()
            .unwrap_or_else(|| panic!("{body}: not a config error: {e:#}"));
        assert_eq!(c.key, key, "{body}: {c}");
        assert!(c.message.contains(says), "{body}: {c}");
        assert!(
            c.to_string().contains("sweep.toml"),
            "{body}: names the file: {c}"
        );
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
        assert_has(fe, json!({"size": 128, "frames": 11}), file);
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
        assert_has(
            &params(&p, "gfe")["train"],
            json!({"epochs": 60, "batch": 128, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}),
            file,
        );
        assert_has(
            &params(&p, "afe")["train"],
            json!({"epochs": 80, "lr_step": 10, "lr": 0.001, "gamma": 0.1, "momentum": 0.9,
                   "weight_decay": 5e-4}),
            file,
        );
        // section 4.3: 5-shot episodes over all classes, 4 per batch, SGD 0.05 / 0.9; gamma per dataset
        for s in ["meta_p", "meta_c"] {
            let m = params(&p, s);
            let t = &m["train"];
            assert!(t["n_way"].is_null(), "{file}: {s}: N-way over all classes");
            assert_has(
                t,
                json!({"k_shot": 5, "episodes_per_step": 4, "lr": 0.05, "momentum": 0.9}),
                &format!("{file}: {s}"),
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
