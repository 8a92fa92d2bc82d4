//! No subject of a fold's test split reaches any of that fold's training stages, in any fold
//! configuration (leave-one-subject-out or subject-wise k-fold, with or without validation
//! subjects): checked over the expanded graph (every gfe / afe / meta node's fold item) and over
//! what each of those nodes records it trained on (`trained_subjects` in its artifact).

use std::collections::{BTreeMap, BTreeSet};

use common::tiny::Tiny;
use mpfnet::session;
use serde_json::Value;

mod common;

fn check(sets: &[&str]) {
    let tiny = Tiny::new();
    let mut e = tiny.open(sets);
    let out = session::run(&mut e, &tiny.ws, &[]).unwrap();
    assert!(out.summary.ok(), "failed: {:?}", out.summary.failed);
    let ds = e.load(e.instances("dataset")[0]).unwrap();
    let subject: BTreeMap<String, String> = ds.meta["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let subjects_of = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|id| subject[id.as_str().unwrap()].clone())
            .collect()
    };
    let mut checked = 0;
    for (id, node) in e.nodes().iter().enumerate() {
        let kind = &e.pipeline().stages[&node.stage].kind;
        if !["gfe", "afe", "meta"].contains(&kind.as_str()) {
            continue;
        }
        let item = node
            .item
            .as_ref()
            .expect("training nodes fan out over the folds");
        let test = subjects_of(&item.attrs["test"]);
        let train = subjects_of(&item.attrs["train"]);
        let val = subjects_of(&item.attrs["val"]);
        assert!(
            test.is_disjoint(&train) && test.is_disjoint(&val),
            "{}: test subjects {test:?} in the fold's training or validation split",
            node.name
        );
        let art = e.load(id).unwrap();
        if art.meta.get("skipped").is_some() {
            continue;
        }
        let trained: BTreeSet<String> = art.meta["trained_subjects"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no trained_subjects", node.name))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        assert!(!trained.is_empty(), "{}", node.name);
        assert!(
            trained.is_disjoint(&test),
            "{}: trained on test subjects {:?}",
            node.name,
            trained.intersection(&test).collect::<Vec<_>>()
        );
        assert!(trained.is_subset(&train.union(&val).cloned().collect()));
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} training nodes checked");
}

#[test]
fn no_test_subject_reaches_training_loso_with_validation() {
    check(&["stages.folds.n_val=1"]);
}

#[test]
fn no_test_subject_reaches_training_kfold_without_validation() {
    check(&["stages.folds.n_val=0", "stages.folds.k_folds=2"]);
}
