//! Stage kinds: each wraps domain algorithms as a pure `mpfnet_api::Stage`.

use mpfnet_api::Registry;

pub mod bundle;
pub mod common;
pub mod dataset;
pub mod evaluate;
pub mod features;
pub mod train;

mod source {
    include!(concat!(env!("OUT_DIR"), "/source_digests.rs"));
}

/// The source files (prefixes of paths under `src/`) each kind's output depends on. A stage's
/// cache key includes the digests of these files, so editing them never reuses stale results.
pub const SOURCES: &[(&str, &[&str])] = &[
    ("dataset", &["data/", "kinds/dataset.rs"]),
    (
        "folds",
        &["data/folds.rs", "data/index.rs", "kinds/dataset.rs"],
    ),
    ("balance", &["prep/magnify.rs", "kinds/dataset.rs"]),
    ("features", &["prep/", "kinds/features.rs"]),
    (
        "gfe",
        &["model/", "train/", "eval/plots.rs", "kinds/train.rs"],
    ),
    (
        "afe",
        &[
            "model/",
            "train/",
            "eval/plots.rs",
            "kinds/train.rs",
            "kinds/dataset.rs",
        ],
    ),
    (
        "meta",
        &[
            "model/",
            "train/",
            "eval/gradcam.rs",
            "kinds/train.rs",
            "kinds/dataset.rs",
        ],
    ),
    ("evaluate", &["eval/", "kinds/evaluate.rs"]),
    (
        "bundle",
        &[
            "bundle.rs",
            "kinds/bundle.rs",
            "kinds/train.rs",
            "kinds/features.rs",
            "model/",
            "train/",
            "eval/gradcam.rs",
        ],
    ),
    (
        "report",
        &["eval/report.rs", "eval/metrics.rs", "kinds/evaluate.rs"],
    ),
];

/// Files that no stage output depends on (the CLI, the crate root, this table).
pub const NOT_STAGE_CODE: &[&str] = &["cli.rs", "lib.rs", "kinds/mod.rs"];

/// Files every kind depends on.
const SHARED: &[&str] = &["kinds/common.rs"];

/// Fingerprint of a kind's source files.
pub fn code_of(kind: &str) -> String {
    let prefixes = SOURCES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("no SOURCES entry for {kind}"));
    let all: Vec<&str> = SHARED.iter().chain(prefixes).copied().collect();
    mpfnet_api::code_fingerprint(source::SOURCE_DIGESTS, &all)
}

pub fn source_files() -> impl Iterator<Item = &'static str> {
    source::SOURCE_DIGESTS.iter().map(|(p, _)| *p)
}

/// Every stage kind of the MPFNet domain.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.add(dataset::Dataset)
        .add(dataset::Folds)
        .add(dataset::Balance)
        .add(features::Features)
        .add(train::Gfe)
        .add(train::Afe)
        .add(train::Meta)
        .add(evaluate::Evaluate)
        .add(evaluate::ReportStage)
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
                || SHARED.contains(&f)
                || SOURCES
                    .iter()
                    .any(|(_, ps)| ps.iter().any(|p| f.starts_with(p)))
        };
        let orphans: Vec<&str> = source_files().filter(|f| !claimed(f)).collect();
        assert!(
            orphans.is_empty(),
            "add these files to kinds::SOURCES (or NOT_STAGE_CODE): {orphans:?}"
        );
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
