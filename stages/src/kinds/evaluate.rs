//! `evaluate` (one variant's LOSO predictions -> pooled metrics, confusion matrix, embedding plot,
//! Grad-CAM) and `report` (several evaluations -> report.md / report.json in the paper's shape).

use anyhow::{bail, Context, Result};
use mpfnet_api::{Artifact, Ctx, InputDecl, Stage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::common::{defaults_of, validate_as};
use crate::eval::metrics::{summarize, Summary};
use crate::eval::report::{self, Report, RunResult, Task};
use crate::train::progress::TrainLog;

fn png_of(f: impl FnOnce(&std::path::Path) -> Result<()>) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("fig.png");
    f(&p)?;
    Ok(std::fs::read(p)?)
}

fn slug(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluateParams {
    /// Dataset key for the paper's figures: casme2, samm, smic, megc2019 (or anything else).
    pub dataset: String,
    /// sde | cde
    pub task: String,
    /// t-SNE instead of PCA for the embedding plot.
    pub tsne: bool,
    /// Row name in reports and PNG file names; empty: the meta stage's (MPFNet-P, PLTN, ...).
    /// Set it where several evaluations share one variant (a gamma sweep).
    pub label: String,
}

impl Default for EvaluateParams {
    fn default() -> Self {
        EvaluateParams {
            dataset: "synthetic".into(),
            label: String::new(),
            task: "cde".into(),
            tsne: false,
        }
    }
}

pub struct Evaluate;

impl Stage for Evaluate {
    fn kind(&self) -> &'static str {
        "evaluate"
    }
    fn version(&self) -> &'static str {
        // 2: learning curves per training stage, a line per fold
        "2"
    }
    fn code(&self) -> String {
        super::code_of("evaluate")
    }
    fn code_files(&self) -> Vec<(String, String)> {
        super::code_files_for("evaluate")
    }
    fn about(&self) -> &'static str {
        "pooled LOSO metrics (Acc, F1, UF1, UAR, per-class), per-fold means, confusion matrix, embeddings and Grad-CAM PNGs"
    }
    fn defaults(&self) -> Value {
        defaults_of::<EvaluateParams>()
    }
    fn validate(&self, p: &Value) -> Result<()> {
        validate_as::<EvaluateParams>(p)?;
        let p: EvaluateParams = serde_json::from_value(p.clone())?;
        if p.task != "sde" && p.task != "cde" {
            bail!("`task` = {:?}: expected sde or cde", p.task);
        }
        Ok(())
    }
    fn inputs(&self) -> &'static [InputDecl] {
        const I: &[InputDecl] = &[InputDecl::required(
            "predictions",
            "meta[*]: the folds' test predictions",
        )];
        I
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact> {
        let p: EvaluateParams = ctx.params_as()?;
        let mut folds = Vec::new();
        let mut subjects = Vec::new();
        let (mut emb, mut emb_labels) = (Vec::new(), Vec::new());
        let mut classes: Vec<String> = Vec::new();
        let (mut label, mut channels) = (String::new(), String::new());
        let mut cams = Vec::new();
        // per training stage, (fold, log)
        let mut curves: [(&str, &str, Vec<(String, TrainLog)>); 3] = [
            ("gfe", "GFE triplet prior learning", Vec::new()),
            (
                "afe",
                "AFE prior learning (magnified, balanced)",
                Vec::new(),
            ),
            (
                "meta",
                "meta-learning (query loss; val acc dots)",
                Vec::new(),
            ),
        ];
        for (fold, h) in ctx.input("predictions")?.many()? {
            let a = h.load()?;
            let yt: Vec<usize> = a
                .tensor("y_true")?
                .as_i64()?
                .iter()
                .map(|&v| v as usize)
                .collect();
            if yt.is_empty() {
                continue; // the final-model split tests no one
            }
            classes = serde_json::from_value(a.meta["classes"].clone())?;
            label = a.meta["label"].as_str().unwrap_or("?").to_string();
            channels = a.meta["channels"].as_str().unwrap_or("both").to_string();
            let yp: Vec<usize> = a
                .tensor("y_pred")?
                .as_i64()?
                .iter()
                .map(|&v| v as usize)
                .collect();
            let e = a.tensor("embeddings")?;
            if e.shape()[0] > 0 {
                for row in e.as_f32()?.chunks(e.shape()[1]) {
                    emb.push(row.to_vec());
                }
                emb_labels.extend(&yt);
            }
            if cams.is_empty() {
                if let (Ok(cam), Ok(input)) = (a.tensor("cam.0"), a.tensor("cam_input.0")) {
                    cams.push((
                        fold.clone(),
                        cam.clone(),
                        input.clone(),
                        a.meta["ids"][0].as_str().unwrap_or("").to_string(),
                    ));
                }
            }
            for (key, (_, _, list)) in ["gfe_log", "afe_log", "log"].iter().zip(curves.iter_mut()) {
                if let Some(l) = a.meta.get(*key).filter(|v| !v.is_null()) {
                    if let Ok(log) = serde_json::from_value::<TrainLog>(l.clone()) {
                        list.push((fold.clone(), log));
                    }
                }
            }
            folds.push((yt, yp));
            subjects.push(fold.clone());
        }
        if !p.label.is_empty() {
            label = p.label.clone();
        }
        let summary: Summary = summarize(&folds, classes.len())?;
        let features = match channels.as_str() {
            "flow" => "flow",
            "diff" => "diff",
            _ => "flow+diff",
        };
        let run = RunResult {
            dataset: p.dataset.clone(),
            task: if p.task == "sde" {
                Task::Sde
            } else {
                Task::Cde
            },
            variant: label.clone(),
            features: features.into(),
            class_names: classes.clone(),
            fold_subjects: subjects,
            summary: summary.clone(),
        };
        let name = slug(&format!("{label}_{features}"));
        let mut art = Artifact::with_meta(
            json!({ "run": run, "metrics": metrics_json(&summary, &label, features) }),
        );
        art.files.insert(
            format!("confusion_{name}.png"),
            png_of(|path| {
                crate::eval::plots::confusion_png(
                    &summary.confusion,
                    &classes,
                    &format!("{label} ({features}), pooled LOSO"),
                    path,
                )
            })?,
        );
        for (stage, what, list) in &curves {
            if list.iter().any(|(_, l)| !l.entries.is_empty()) {
                art.files.insert(
                    format!("curves_{stage}_{name}.png"),
                    png_of(|path| {
                        crate::eval::plots::fold_curves_png(
                            list,
                            &format!("{label}: {what}, a line per fold"),
                            path,
                        )
                    })?,
                );
            }
        }
        if emb.len() >= 3 {
            let proj = if p.tsne {
                crate::eval::embed2d::Projection::Tsne(Default::default())
            } else {
                crate::eval::embed2d::Projection::Pca
            };
            art.files.insert(
                format!("embeddings_{name}.png"),
                png_of(|path| {
                    crate::eval::plots::embedding_png(
                        &emb,
                        &proj,
                        &emb_labels,
                        &classes,
                        &format!("{label}: test embeddings"),
                        path,
                    )
                })?,
            );
        }
        if let Some((fold, cam, input, id)) = cams.first() {
            let cs = cam.shape();
            let c = crate::eval::gradcam::Cam {
                t: cs[0],
                h: cs[1],
                w: cs[2],
                values: cam.as_f32()?.to_vec(),
            };
            let title = format!("Grad-CAM {label}, {id} (fold {fold})");
            art.files.insert(
                format!("gradcam_{name}.png"),
                png_of(|path| {
                    crate::eval::gradcam::overlay_png(
                        input.shape(),
                        input.as_f32()?,
                        &c,
                        &title,
                        path,
                    )
                })?,
            );
        }
        Ok(art)
    }
}

fn metrics_json(s: &Summary, label: &str, features: &str) -> Value {
    let m = &s.pooled;
    json!({
        "variant": label, "features": features, "n": m.n, "acc": m.acc, "f1": m.f1_macro, "uf1": m.uf1, "uar": m.uar,
        "class_acc_std": m.class_acc_std,
        "per_class_acc": m.per_class.iter().map(|c| c.recall).collect::<Vec<_>>(),
        "fold_mean_acc": s.fold_means.acc, "fold_mean_uf1": s.fold_means.uf1,
    })
}

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

pub struct ReportStage;

impl Stage for ReportStage {
    fn kind(&self) -> &'static str {
        "report"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn code(&self) -> String {
        super::code_of("report")
    }
    fn code_files(&self) -> Vec<(String, String)> {
        super::code_files_for("report")
    }
    fn about(&self) -> &'static str {
        "report.md / report.json in the shape of the paper's tables (the paper's figures beside ours), and the results table"
    }
    fn defaults(&self) -> Value {
        defaults_of::<ReportParams>()
    }
    fn validate(&self, p: &Value) -> Result<()> {
        validate_as::<ReportParams>(p)
    }
    fn inputs(&self) -> &'static [InputDecl] {
        const I: &[InputDecl] = &[InputDecl::required(
            "evaluations",
            "a list of evaluate stages: [\"eval_p\", \"eval_c\"]",
        )];
        I
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact> {
        let p: ReportParams = ctx.params_as()?;
        let mut runs = Vec::new();
        let mut art = Artifact::new();
        let mut figures = Vec::new();
        let mut metrics = serde_json::Map::new();
        for (stage, h) in ctx.input("evaluations")?.many()? {
            let a = h.load()?;
            let run: RunResult = serde_json::from_value(a.meta["run"].clone())
                .with_context(|| format!("{stage}: not an evaluate artifact"))?;
            for (name, bytes) in a.files {
                figures.push((
                    format!("{} ({})", run.variant, name.trim_end_matches(".png")),
                    name.clone(),
                ));
                art.files.insert(name, bytes);
            }
            metrics.insert(stage.clone(), a.meta["metrics"].clone());
            runs.push(run);
        }
        let r = Report {
            title: p.title,
            data_note: p.data_note,
            runs,
            figures,
            notes: p.notes,
        };
        art.files
            .insert("report.md".into(), report::markdown(&r).into_bytes());
        art.files
            .insert("report.json".into(), serde_json::to_vec_pretty(&r)?);
        art.meta = json!({ "summary": summary_table(&r), "metrics": metrics });
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
