//! `report`: several evaluations -> report.md / report.json in the paper's shape, and the
//! results table printed at the end of a run.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use mpfnet_api::{Artifact, Ctx, InputDecl, ReportMeta, StageParams, TypedStage};
use serde::{Deserialize, Serialize};

use super::artifacts::EvaluateMeta;
use crate::eval::report::{self, Report};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportParams {
    pub title: String,
    /// What the data is, printed under the title.
    pub data_note: String,
    pub notes: Vec<String>,
}

impl Default for ReportParams {
    fn default() -> Self {
        ReportParams {
            title: "MPFNet results".into(),
            data_note: String::new(),
            notes: Vec::new(),
        }
    }
}

impl StageParams for ReportParams {}

pub struct ReportStage;

impl TypedStage for ReportStage {
    const KIND: &'static str = "report";
    const VERSION: &'static str = "1";
    const ABOUT: &'static str = "report.md / report.json in the shape of the paper's tables (the paper's figures beside ours), and the results table";
    const INPUTS: &'static [InputDecl] = &[InputDecl::required(
        "evaluations",
        "a list of evaluate stages: [\"eval_p\", \"eval_c\"]",
    )];
    type Params = ReportParams;
    type Claims = super::Claims;
    fn compute(&self, p: &ReportParams, ctx: &Ctx) -> Result<Artifact> {
        let mut runs = Vec::new();
        let mut art = Artifact::new();
        let mut figures = Vec::new();
        let mut metrics = BTreeMap::new();
        for (stage, h) in ctx.input("evaluations")?.many()? {
            let a = h.load()?;
            let e: EvaluateMeta = serde_json::from_value(a.meta.clone())
                .with_context(|| format!("{stage}: not an evaluate artifact"))?;
            for (name, bytes) in a.files {
                figures.push((
                    format!("{} ({})", e.run.variant, name.trim_end_matches(".png")),
                    name.clone(),
                ));
                art.files.insert(name, bytes);
            }
            metrics.insert(stage.clone(), e.metrics);
            runs.push(e.run);
        }
        let r = Report {
            title: p.title.clone(),
            data_note: p.data_note.clone(),
            runs,
            figures,
            notes: p.notes.clone(),
        };
        art.files
            .insert("report.md".into(), report::markdown(&r).into_bytes());
        art.files
            .insert("report.json".into(), serde_json::to_vec_pretty(&r)?);
        let meta = ReportMeta {
            summary: Some(summary_table(&r)),
            metrics: Some(serde_json::to_value(metrics)?),
        };
        art.meta = serde_json::to_value(meta)?;
        Ok(art)
    }
}

/// The table printed at the end of a run.
pub fn summary_table(r: &Report) -> String {
    let mut s = format!("{}\n", r.title);
    // the variant column fits the longest label (gamma-sweep rows are long)
    let w = r
        .runs
        .iter()
        .map(|x| x.variant.len())
        .max()
        .unwrap_or(0)
        .max(10);
    s.push_str(&format!(
        "{:<w$} {:<10} {:>5} {:>7} {:>7} {:>7} {:>7} {:>9}   {}\n",
        "variant", "features", "n", "Acc", "F1", "UF1", "UAR", "acc std", "per-fold mean Acc"
    ));
    let f = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
    for run in &r.runs {
        let m = &run.summary.pooled;
        s.push_str(&format!(
            "{:<w$} {:<10} {:>5} {:>7.3} {:>7} {:>7} {:>7} {:>9}   {}\n",
            run.variant,
            run.features,
            m.n,
            m.acc,
            f(m.f1_macro),
            f(m.uf1),
            f(m.uar),
            f(m.class_acc_std),
            f(run.summary.fold_means.acc)
        ));
    }
    s.push_str("(pooled over all LOSO folds; classes: ");
    s.push_str(
        &r.runs
            .first()
            .map(|r| r.class_names.join(", "))
            .unwrap_or_default(),
    );
    s.push_str(")\n");
    s
}
