//! Stage kinds: each wraps domain algorithms as a pure `mpfnet_api::Stage`.

use mpfnet_api::Registry;

pub mod afe;
pub mod artifacts;
pub mod balance;
pub mod bundle;
pub mod common;
pub mod dataset;
pub mod evaluate;
pub mod features;
pub mod folds;
pub mod gfe;
pub mod meta;
pub mod preprocess;
pub mod report;
pub mod train;

mod source {
    include!(concat!(env!("OUT_DIR"), "/source_digests.rs"));
}

/// What every training kind runs: the network, seeded init, SGD, checkpoints, sample sets,
/// progress, and the kinds' shared glue. Not `train/meta/`, `train/triplet.rs`, `train/afe.rs`:
/// each belongs to one kind, so editing the meta-learner never retrains the encoders.
const TRAIN_CORE: &[&str] = &[
    "model/",
    "train/mod.rs",
    "train/ckpt.rs",
    "train/data.rs",
    "train/driver.rs",
    "train/encoder.rs",
    "train/host.rs",
    "train/init.rs",
    "train/precision.rs",
    "train/progress.rs",
    "train/rng.rs",
    "train/sgd.rs",
    "train/state.rs",
    "kinds/train.rs",
];

/// The source files (prefixes of paths under `src/`, in groups) each kind's output depends on.
/// A stage's cache key includes the digests of these files, so editing them never reuses stale
/// results; files in [`TEST_ONLY`] never count.
pub const SOURCES: &[(&str, &[&[&str]])] = &[
    ("dataset", &[&["data/", "kinds/dataset.rs"]]),
    (
        "folds",
        &[&["data/folds.rs", "data/index.rs", "kinds/folds.rs"]],
    ),
    ("balance", &[&["prep/magnify.rs", "kinds/balance.rs"]]),
    (
        "features",
        &[&[
            "prep/",
            "flownet2/",
            "kinds/preprocess.rs",
            "kinds/features.rs",
        ]],
    ),
    (
        "gfe",
        &[
            TRAIN_CORE,
            &["train/triplet.rs", "eval/plots.rs", "kinds/gfe.rs"],
        ],
    ),
    (
        "afe",
        &[
            TRAIN_CORE,
            &["train/afe.rs", "eval/plots.rs", "kinds/afe.rs"],
        ],
    ),
    (
        "meta",
        &[
            TRAIN_CORE,
            &[
                "train/meta/",
                "eval/gradcam.rs",
                "eval/plots.rs",
                "kinds/meta.rs",
            ],
        ],
    ),
    ("evaluate", &[&["eval/", "kinds/evaluate.rs"]]),
    (
        "bundle",
        &[
            TRAIN_CORE,
            &[
                "train/meta/",
                "bundle.rs",
                "kinds/bundle.rs",
                "kinds/preprocess.rs",
                "eval/gradcam.rs",
                "eval/plots.rs",
            ],
        ],
    ),
    (
        "report",
        &[&["eval/report.rs", "eval/metrics.rs", "kinds/report.rs"]],
    ),
];

/// Files compiled only into unit tests (declared under `#[cfg(test)]`, checked below): no stage
/// output depends on them, so editing a test never recomputes a node.
pub const TEST_ONLY: &[&str] = &[
    "data/tests/",
    "eval/tests.rs",
    "train/tests.rs",
    "train/testing.rs",
];

fn is_test_only(path: &str) -> bool {
    TEST_ONLY.iter().any(|p| path.starts_with(p))
}

/// Files that no stage output depends on (the CLI, the crate root, this table).
pub const NOT_STAGE_CODE: &[&str] = &["cli.rs", "lib.rs", "kinds/mod.rs"];

/// Files every kind depends on: no kind's own code (see [`OWN_FILES`]).
const SHARED: &[&str] = &["kinds/common.rs", "kinds/artifacts.rs"];

/// Each kind's own files: an edit there recomputes that kind and what depends on it, never
/// another kind (checked by a test below).
pub const OWN_FILES: &[(&str, &[&str])] = &[
    ("dataset", &["kinds/dataset.rs"]),
    ("folds", &["kinds/folds.rs"]),
    ("balance", &["kinds/balance.rs"]),
    ("features", &["kinds/features.rs"]),
    ("gfe", &["kinds/gfe.rs", "train/triplet.rs"]),
    ("afe", &["kinds/afe.rs", "train/afe.rs"]),
    ("meta", &["kinds/meta.rs"]),
    ("evaluate", &["kinds/evaluate.rs"]),
    ("report", &["kinds/report.rs"]),
    ("bundle", &["kinds/bundle.rs"]),
];

/// Fingerprint of a kind's source files.
pub fn code_of(kind: &str) -> String {
    mpfnet_api::code_fingerprint(&stage_table(), &prefixes_of(kind))
}

/// The (path, digest) pairs behind [`code_of`] (for `plan` to name changed files).
pub fn code_files_for(kind: &str) -> Vec<(String, String)> {
    mpfnet_api::code_files_of(&stage_table(), &prefixes_of(kind))
}

/// This crate's [`mpfnet_api::SourceClaims`]: every kind's `TypedStage::Claims`.
pub struct Claims;

impl mpfnet_api::SourceClaims for Claims {
    fn files_of(kind: &str) -> Vec<(String, String)> {
        code_files_for(kind)
    }
}

/// The digest table without the test-only files.
fn stage_table() -> Vec<(&'static str, &'static str)> {
    source::SOURCE_DIGESTS
        .iter()
        .filter(|(p, _)| !is_test_only(p))
        .copied()
        .collect()
}

/// The shared files plus every prefix `SOURCES` lists for `kind`.
fn prefixes_of(kind: &str) -> Vec<&'static str> {
    let groups = SOURCES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, g)| *g)
        .unwrap_or_else(|| panic!("no SOURCES entry for {kind}"));
    SHARED
        .iter()
        .chain(groups.iter().flat_map(|g| g.iter()))
        .copied()
        .collect()
}

/// The source files (under `src/`) whose digests go into `kind`'s code fingerprint.
pub fn files_of(kind: &str) -> Vec<&'static str> {
    let prefixes = prefixes_of(kind);
    source_files()
        .filter(|f| !is_test_only(f) && prefixes.iter().any(|p| f.starts_with(p)))
        .collect()
}

pub fn source_files() -> impl Iterator<Item = &'static str> {
    source::SOURCE_DIGESTS.iter().map(|(p, _)| *p)
}

/// Every stage kind of the MPFNet domain.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.add(dataset::Dataset)
        .add(folds::Folds)
        .add(balance::Balance)
        .add(features::Features)
        .add(gfe::Gfe)
        .add(afe::Afe)
        .add(meta::Meta)
        .add(evaluate::Evaluate)
        .add(report::ReportStage)
        .add(bundle::BundleStage);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source file that no kind claims would change outputs without changing any key.
    #[test]
    fn every_source_file_is_claimed_by_a_stage_kind() {
        let claimed = |f: &str| {
            NOT_STAGE_CODE.contains(&f)
                || is_test_only(f)
                || SOURCES.iter().any(|(k, _)| files_of(k).contains(&f))
        };
        let orphans: Vec<&str> = source_files().filter(|f| !claimed(f)).collect();
        assert!(
            orphans.is_empty(),
            "add these files to kinds::SOURCES (or NOT_STAGE_CODE): {orphans:?}"
        );
    }

    /// A file listed as test-only must be declared under `#[cfg(test)]` by its parent module,
    /// or an edit to code the stages run would go unnoticed by the cache.
    #[test]
    fn test_only_files_are_compiled_only_for_tests() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for entry in TEST_ONLY {
            let path = entry.trim_end_matches('/');
            let (parent, file) = path.rsplit_once('/').unwrap_or(("", path));
            let name = file.trim_end_matches(".rs");
            let parent_file = src.join(parent).join("mod.rs");
            let text = std::fs::read_to_string(&parent_file).unwrap();
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            let decl = lines
                .iter()
                .position(|l| *l == format!("mod {name};") || *l == format!("pub mod {name};"))
                .unwrap_or_else(|| panic!("{} declares no module {name}", parent_file.display()));
            assert!(
                decl > 0 && lines[decl - 1] == "#[cfg(test)]",
                "{entry} is in TEST_ONLY but {} does not declare it under #[cfg(test)]",
                parent_file.display()
            );
        }
    }

    /// Each training kind's fingerprint covers its own code and the shared core, not the
    /// other kinds' code, and never a test file.
    #[test]
    fn training_kinds_fingerprint_their_own_code_only() {
        let (gfe, afe, meta) = (files_of("gfe"), files_of("afe"), files_of("meta"));
        for f in ["train/sgd.rs", "model/ca_i3d.rs", "kinds/train.rs"] {
            assert!(
                gfe.contains(&f) && afe.contains(&f) && meta.contains(&f),
                "{f}"
            );
        }
        assert!(gfe.contains(&"train/triplet.rs") && !afe.contains(&"train/triplet.rs"));
        assert!(afe.contains(&"train/afe.rs") && !gfe.contains(&"train/afe.rs"));
        for f in ["train/meta/mod.rs", "train/meta/proto.rs", "kinds/meta.rs"] {
            assert!(
                meta.contains(&f) && !gfe.contains(&f) && !afe.contains(&f),
                "{f}"
            );
        }
        for k in ["dataset", "gfe", "meta", "evaluate"] {
            assert!(
                !files_of(k).iter().any(|f| is_test_only(f)),
                "{k} fingerprints a test file"
            );
        }
    }

    /// An edit to one kind's own file recomputes that kind only (and, through its output,
    /// what depends on it): no other kind fingerprints it.
    #[test]
    fn no_kind_fingerprints_another_kinds_own_file() {
        for (kind, own) in OWN_FILES {
            for f in *own {
                assert!(files_of(kind).contains(f), "{kind} does not claim {f}");
                for (other, _) in SOURCES.iter().filter(|(k, _)| k != kind) {
                    assert!(
                        !files_of(other).contains(f),
                        "{other} fingerprints {f}, the own file of {kind}: move what it shares into a shared file"
                    );
                }
            }
        }
        for s in registry().iter() {
            assert!(
                OWN_FILES.iter().any(|(k, _)| *k == s.kind()),
                "{} has no entry in OWN_FILES",
                s.kind()
            );
        }
    }

    /// `cache export` renders the learning curves a training artifact carries: a meta fold's
    /// own and its encoders'; a gfe artifact's curve is one of its files already.
    #[test]
    fn training_kinds_render_their_learning_curves() {
        use crate::train::progress::{EpochLog, TrainLog};
        let entry = |epoch| EpochLog {
            epoch,
            loss: 1.0 / (epoch + 1) as f64,
            acc: Some(0.5),
            lr: 0.01,
            val_acc: None,
        };
        let log = TrainLog {
            entries: vec![entry(0), entry(1), entry(2)],
            ..Default::default()
        };
        let meta = serde_json::json!({ "fold": "s1", "log": log, "gfe_log": log });
        let art = mpfnet_api::Artifact::with_meta(meta);
        let reg = registry();
        let pngs = reg.get("meta").unwrap().render_png(&art).unwrap();
        let names: Vec<&str> = pngs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["meta_curve.png", "gfe_curve.png"]);
        assert!(pngs.iter().all(|(_, b)| b.starts_with(b"\x89PNG")));
        let mut gfe = art.clone();
        gfe.meta["gfe_log"] = serde_json::Value::Null;
        gfe.files.insert("gfe_curve.png".into(), Vec::new());
        assert!(reg.get("gfe").unwrap().render_png(&gfe).unwrap().is_empty());
        gfe.files.clear();
        let pngs = reg.get("gfe").unwrap().render_png(&gfe).unwrap();
        assert_eq!(pngs.len(), 1);
        assert_eq!(pngs[0].0, "gfe_curve.png");
    }

    #[test]
    fn every_registered_kind_has_sources_and_a_fingerprint() {
        for s in registry().iter() {
            assert!(
                SOURCES.iter().any(|(k, _)| *k == s.kind()),
                "{} missing from SOURCES",
                s.kind()
            );
            assert_eq!(s.code().len(), 16);
        }
        assert_ne!(code_of("features"), code_of("gfe"));
    }
}
