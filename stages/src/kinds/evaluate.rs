//! `evaluate`: one variant's LOSO predictions -> pooled metrics, confusion matrix, learning
//! curves, embedding plot, Grad-CAM.

use anyhow::{bail, Result};
use mpfnet_api::{Array, Artifact, Ctx, InputDecl, StageParams, TypedStage};
use serde::{Deserialize, Serialize};

use super::artifacts::{EvaluateMeta, Headline, MetaOutput};
use crate::eval::metrics::{summarize, Summary};
use crate::eval::report::{RunResult, Task};
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

impl StageParams for EvaluateParams {
    fn validate(&self) -> Result<()> {
        if self.task != "sde" && self.task != "cde" {
            bail!("`task` = {:?}: expected sde or cde", self.task);
        }
        Ok(())
    }
}

/// The training stages whose curves `evaluate` plots, a line per fold: (file tag, title).
const CURVES: [(&str, &str); 3] = [
    ("gfe", "GFE triplet prior learning"),
    ("afe", "AFE prior learning (magnified, balanced)"),
    ("meta", "meta-learning (query loss; val acc dots)"),
];

/// What `evaluate` gathers from the folds' predictions.
#[derive(Default)]
struct Pooled {
    folds: Vec<(Vec<usize>, Vec<usize>)>,
    subjects: Vec<String>,
    emb: Vec<Vec<f32>>,
    emb_labels: Vec<usize>,
    /// the last tested fold's meta (classes, label, channels)
    last: MetaOutput,
    /// the first fold's Grad-CAM: (fold, cam, input, sample id)
    cam: Option<(String, Array, Array, String)>,
    /// per entry of [`CURVES`], (fold, log)
    curves: [Vec<(String, TrainLog)>; 3],
}

impl Pooled {
    fn gather(ctx: &Ctx) -> Result<Pooled> {
        let mut p = Pooled::default();
        for (fold, h) in ctx.input("predictions")?.many()? {
            let a = h.load()?;
            let labels = |name: &str| -> Result<Vec<usize>> {
                Ok(a.tensor(name)?
                    .as_i64()?
                    .iter()
                    .map(|&v| v as usize)
                    .collect())
            };
            let yt = labels("y_true")?;
            if yt.is_empty() {
                continue; // the final-model split tests no one
            }
            let m: MetaOutput = serde_json::from_value(a.meta.clone())?;
            let yp = labels("y_pred")?;
            let e = a.tensor("embeddings")?;
            if e.shape()[0] > 0 {
                for row in e.as_f32()?.chunks(e.shape()[1]) {
                    p.emb.push(row.to_vec());
                }
                p.emb_labels.extend(&yt);
            }
            if p.cam.is_none() {
                if let (Ok(cam), Ok(input)) = (a.tensor("cam.0"), a.tensor("cam_input.0")) {
                    let id = m.ids.as_ref().and_then(|v| v.first()).cloned();
                    p.cam = Some((
                        fold.clone(),
                        cam.clone(),
                        input.clone(),
                        id.unwrap_or_default(),
                    ));
                }
            }
            for (log, list) in [&m.gfe_log, &m.afe_log, &m.log]
                .into_iter()
                .zip(&mut p.curves)
            {
                if let Some(log) = log {
                    list.push((fold.clone(), log.clone()));
                }
            }
            p.folds.push((yt, yp));
            p.subjects.push(fold.clone());
            p.last = m;
        }
        Ok(p)
    }
}

pub struct Evaluate;

impl TypedStage for Evaluate {
    const KIND: &'static str = "evaluate";
    // 2: learning curves per training stage, a line per fold
    const VERSION: &'static str = "2";
    const ABOUT: &'static str = "pooled LOSO metrics (Acc, F1, UF1, UAR, per-class), per-fold means, confusion matrix, embeddings and Grad-CAM PNGs";
    const INPUTS: &'static [InputDecl] = &[InputDecl::required(
        "predictions",
        "meta[*]: the folds' test predictions",
    )];
    type Params = EvaluateParams;
    type Claims = super::Claims;
    fn compute(&self, p: &EvaluateParams, ctx: &Ctx) -> Result<Artifact> {
        let pooled = Pooled::gather(ctx)?;
        let classes = pooled.last.classes.clone().unwrap_or_default();
        let label = if p.label.is_empty() {
            pooled.last.label.clone()
        } else {
            p.label.clone()
        };
        let features = pooled.last.channels.unwrap_or_default().label();
        let summary: Summary = summarize(&pooled.folds, classes.len())?;
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
            fold_subjects: pooled.subjects.clone(),
            summary: summary.clone(),
        };
        let meta = EvaluateMeta {
            run,
            metrics: headline(&summary, &label, features),
        };
        let mut art = Artifact::with_meta(serde_json::to_value(meta)?);
        let fig = Figures {
            label: &label,
            features,
            classes: &classes,
            name: slug(&format!("{label}_{features}")),
        };
        fig.draw(&mut art, &summary, &pooled, p.tsne)?;
        Ok(art)
    }
}

/// The figures of one evaluation, named `<figure>_<name>.png`.
struct Figures<'a> {
    label: &'a str,
    features: &'a str,
    classes: &'a [String],
    name: String,
}

impl Figures<'_> {
    fn draw(
        &self,
        art: &mut Artifact,
        summary: &Summary,
        pooled: &Pooled,
        tsne: bool,
    ) -> Result<()> {
        let (label, features, name) = (self.label, self.features, &self.name);
        art.files.insert(
            format!("confusion_{name}.png"),
            png_of(|path| {
                crate::eval::plots::confusion_png(
                    &summary.confusion,
                    self.classes,
                    &format!("{label} ({features}), pooled LOSO"),
                    path,
                )
            })?,
        );
        for ((stage, what), list) in CURVES.iter().zip(&pooled.curves) {
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
        if pooled.emb.len() >= 3 {
            self.embeddings(art, pooled, tsne)?;
        }
        if let Some((fold, cam, input, id)) = &pooled.cam {
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
        Ok(())
    }

    fn embeddings(&self, art: &mut Artifact, pooled: &Pooled, tsne: bool) -> Result<()> {
        let proj = if tsne {
            crate::eval::embed2d::Projection::Tsne(Default::default())
        } else {
            crate::eval::embed2d::Projection::Pca
        };
        art.files.insert(
            format!("embeddings_{}.png", self.name),
            png_of(|path| {
                crate::eval::plots::embedding_png(
                    &pooled.emb,
                    &proj,
                    &pooled.emb_labels,
                    self.classes,
                    &format!("{}: test embeddings", self.label),
                    path,
                )
            })?,
        );
        Ok(())
    }
}

fn headline(s: &Summary, label: &str, features: &str) -> Headline {
    let m = &s.pooled;
    Headline {
        variant: label.into(),
        features: features.into(),
        n: m.n,
        acc: m.acc,
        f1: m.f1_macro,
        uf1: m.uf1,
        uar: m.uar,
        class_acc_std: m.class_acc_std,
        per_class_acc: m.per_class.iter().map(|c| c.recall).collect(),
        fold_mean_acc: s.fold_means.acc,
        fold_mean_uf1: s.fold_means.uf1,
    }
}
