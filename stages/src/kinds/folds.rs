//! `folds`: leave-one-subject-out (or subject-wise k-fold) splits of a dataset index; declares
//! the fold axis that the training stages fan out over.

use std::path::PathBuf;

use anyhow::{bail, Result};
use mpfnet_api::{Artifact, AxisItem, Ctx, InputDecl, StageParams, TypedStage};
use serde::{Deserialize, Serialize};

use super::artifacts::{meta_artifact, FoldInfo, IndexInfo};
use super::common::key_of;
use crate::data::{self, DatasetIndex};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FoldParams {
    /// Training subjects held out per fold for model selection (never the test subject).
    pub n_val: usize,
    /// 0: leave-one-subject-out; k > 0: subject-wise k-fold (`data::folds::kfold_folds`)
    pub k_folds: usize,
    /// Also emit the `final` split (every subject trains, none is tested) so the fold stages
    /// train a final model for `bundle`; evaluation ignores it.
    pub final_model: bool,
}

impl Default for FoldParams {
    fn default() -> Self {
        FoldParams {
            n_val: 2,
            k_folds: 0,
            final_model: false,
        }
    }
}

impl StageParams for FoldParams {}

/// What `folds` writes besides its axis.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoldsMeta {
    /// the folds as a text table (subjects and class counts)
    pub table: String,
    pub folds: usize,
}

pub struct Folds;

impl TypedStage for Folds {
    const KIND: &'static str = "folds";
    const VERSION: &'static str = "1";
    const ABOUT: &'static str =
        "leave-one-subject-out folds with a seeded validation split of training subjects";
    const INPUTS: &'static [InputDecl] = &[InputDecl::required("dataset", "a `dataset` stage")];
    const USES_SEED: bool = true;
    type Params = FoldParams;
    type Claims = super::Claims;
    fn compute(&self, p: &FoldParams, ctx: &Ctx) -> Result<Artifact> {
        let ds = ctx.input("dataset")?.one()?.load()?;
        let info = IndexInfo::from_artifact(&ds)?;
        // rebuild a minimal index for the fold logic (it needs subjects and classes only)
        let index = DatasetIndex {
            name: String::new(),
            classes: info.classes.clone(),
            samples: info
                .samples
                .iter()
                .map(|s| data::Sample {
                    id: s.id.clone(),
                    dataset: String::new(),
                    subject: s.subject.clone(),
                    filename: String::new(),
                    emotion: String::new(),
                    class: s.class,
                    onset_frame: 0,
                    apex_frame: 0,
                    offset_frame: None,
                    onset_path: PathBuf::new(),
                    apex_path: PathBuf::new(),
                    frame_dir: PathBuf::new(),
                })
                .collect(),
            faults: Vec::new(),
        };
        let mut folds = match p.k_folds {
            0 => data::loso_folds(&index, p.n_val, ctx.seed),
            k => data::folds::kfold_folds(&index, k, p.n_val, ctx.seed),
        };
        if p.final_model {
            if index
                .subjects()
                .iter()
                .any(|s| s == data::folds::FINAL_FOLD)
            {
                bail!("a subject is named `{}`, the id of the final-model split: rename it or set final_model = false", data::folds::FINAL_FOLD);
            }
            folds.push(data::folds::final_split(&index, p.n_val, ctx.seed));
        }
        let ids = |v: &[usize]| {
            v.iter()
                .map(|&i| index.samples[i].id.clone())
                .collect::<Vec<_>>()
        };
        let mut axis = Vec::new();
        for f in &folds {
            let fi = FoldInfo {
                index: f.index,
                test_subject: f.test_subject.clone(),
                train: ids(&f.train),
                val: ids(&f.val),
                test: ids(&f.test),
            };
            let attrs = serde_json::to_value(&fi)?;
            axis.push(AxisItem {
                id: f.test_subject.clone(),
                key: key_of(&[&attrs.to_string()]),
                attrs,
            });
        }
        let mut art = meta_artifact(&FoldsMeta {
            table: data::folds::fold_table(&index, &folds),
            folds: folds.len(),
        })?;
        art.axis = Some(axis);
        Ok(art)
    }
}
