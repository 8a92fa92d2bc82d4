//! What one stage writes and the next reads: the artifacts' metadata and the axis items'
//! attributes as typed structs, shared by producer and consumer, so that a mistyped key between
//! two stages does not compile. No kind claims this file: every kind's fingerprint covers it.
//!
//! Every struct serialises to the JSON the stages wrote before they were typed (serde_json
//! objects keep their keys sorted, so field order does not matter; optional keys are left out,
//! not written as `null`, where they were absent).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use mpfnet_api::{Artifact, AxisItem};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::eval::report::RunResult;
use crate::model::CaI3dConfig;
use crate::train::meta::model::Variant;
use crate::train::meta::proto::PredictConfig;
use crate::train::progress::TrainLog;

/// An artifact's meta as the typed struct `T` (`what` names the artifact in errors).
pub fn read_meta<T: DeserializeOwned>(art: &Artifact, what: &str) -> Result<T> {
    serde_json::from_value(art.meta.clone()).with_context(|| format!("{what} artifact meta"))
}

/// `T` as an artifact's meta.
pub fn meta_artifact<T: Serialize>(meta: &T) -> Result<Artifact> {
    Ok(Artifact::with_meta(serde_json::to_value(meta)?))
}

/// Which input channels a model sees (the paper's feature ablation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// optical flow (u, v) + RGB frame difference: 5 channels
    #[default]
    Both,
    /// optical flow only: 2 channels
    Flow,
    /// frame difference only: 3 channels
    Diff,
}

impl Channels {
    pub fn range(self) -> std::ops::Range<usize> {
        match self {
            Channels::Both => 0..5,
            Channels::Flow => 0..2,
            Channels::Diff => 2..5,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Channels::Both => "flow+diff",
            Channels::Flow => "flow",
            Channels::Diff => "diff",
        }
    }
}

/// The `dataset` artifact's meta: the index as every later stage reads it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexInfo {
    pub name: String,
    pub classes: Vec<String>,
    pub class_counts: Vec<usize>,
    pub subjects: Vec<String>,
    pub samples: Vec<SampleInfo>,
    pub faults: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleInfo {
    pub id: String,
    pub subject: String,
    pub class: usize,
    pub emotion: String,
}

impl IndexInfo {
    pub fn from_artifact(a: &Artifact) -> Result<Self> {
        serde_json::from_value(a.meta.clone()).context("dataset artifact meta")
    }
    pub fn class_of(&self) -> BTreeMap<&str, usize> {
        self.samples
            .iter()
            .map(|s| (s.id.as_str(), s.class))
            .collect()
    }
}

/// The attributes of a `dataset` axis item (one sample), and of a `balance` item (one
/// magnified copy of a sample: the sample's attributes plus `phi` and `sample`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClipAttrs {
    pub subject: String,
    pub class: usize,
    pub emotion: String,
    pub onset: PathBuf,
    pub apex: PathBuf,
    /// the magnification factor (paper Sec. 3.3.3); 0: the clip as recorded
    #[serde(default, skip_serializing_if = "is_zero")]
    pub phi: usize,
    /// the sample a magnified copy was made from
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

impl ClipAttrs {
    pub fn of(item: &AxisItem) -> Result<Self> {
        serde_json::from_value(item.attrs.clone())
            .with_context(|| format!("axis item {}: not a clip", item.id))
    }
}

/// A fold as carried in axis item attrs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoldInfo {
    pub index: usize,
    pub test_subject: String,
    pub train: Vec<String>,
    pub val: Vec<String>,
    pub test: Vec<String>,
}

impl FoldInfo {
    pub fn from_item(item: &AxisItem) -> Result<Self> {
        serde_json::from_value(item.attrs.clone()).context("fold axis item")
    }
}

/// The `balance` artifact's meta.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BalanceMeta {
    /// test subject -> that fold's balancing
    pub folds: BTreeMap<String, FoldBalance>,
    pub classes: Vec<String>,
    pub items: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoldBalance {
    pub counts: Vec<usize>,
    /// class -> largest magnification factor
    pub phi_max: Vec<usize>,
    pub produced: Vec<usize>,
}

/// Per-fold phi ranges from a `balance` artifact: class -> phi_max.
pub fn fold_phi(balance: &Artifact, fold: &str) -> Result<Vec<usize>> {
    let b: BalanceMeta = read_meta(balance, "balance")?;
    b.folds
        .get(fold)
        .map(|f| f.phi_max.clone())
        .with_context(|| format!("balance has no fold {fold}"))
}

/// What a training node (gfe, afe, meta) writes for the `final` split when its
/// `final_model` is false.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SkippedMeta {
    pub fold: String,
    pub final_model: bool,
    pub skipped: String,
}

/// A trained encoder (`gfe`, `afe`) artifact's meta; the weights are its tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncoderMeta {
    pub model: CaI3dConfig,
    pub channels: Channels,
    pub log: TrainLog,
    pub fold: String,
    pub train_samples: usize,
    pub trained_subjects: Vec<String>,
    /// afe only
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub balancing: Option<Balancing>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Balancing {
    pub phi_max: Vec<usize>,
    pub class_counts_after_balancing: Vec<usize>,
}

/// A `gfe` or `afe` output: trained, or skipped on the final split.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EncoderOutput {
    Skipped(SkippedMeta),
    Trained(Box<EncoderMeta>),
}

/// The meta-learning variant (`meta.variant`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetaVariant {
    /// MPFNet-P: parallel, weighted similarities
    P,
    /// MPFNet-C: cascade
    #[default]
    C,
    /// PLTN: the GFE prior only
    Gfe,
    /// PLSM: the AFE prior only
    Afe,
    /// the nearest-class-mean baseline (nothing is trained)
    Ncm,
}

impl MetaVariant {
    /// The name the paper's tables use.
    pub fn label(self, pretrained: bool) -> &'static str {
        match (self, pretrained) {
            (MetaVariant::Ncm, _) => "NCM",
            (_, false) => "w/o PL",
            (MetaVariant::Gfe, _) => "PLTN",
            (MetaVariant::Afe, _) => "PLSM",
            (MetaVariant::P, _) => "MPFNet-P",
            (MetaVariant::C, _) => "MPFNet-C",
        }
    }
    /// The network of this variant (None for the baseline, which has none).
    pub fn model(self, gamma: f64, bridge_channels: usize) -> Option<Variant> {
        match self {
            MetaVariant::Gfe | MetaVariant::Afe => Some(Variant::Single),
            MetaVariant::P => Some(Variant::P { gamma }),
            MetaVariant::C => Some(Variant::C { bridge_channels }),
            MetaVariant::Ncm => None,
        }
    }
    /// Two priors (P, C) or one.
    pub fn fuses(self) -> bool {
        matches!(self, MetaVariant::P | MetaVariant::C)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            MetaVariant::P => "p",
            MetaVariant::C => "c",
            MetaVariant::Gfe => "gfe",
            MetaVariant::Afe => "afe",
            MetaVariant::Ncm => "ncm",
        }
    }
}

/// A `meta` artifact's meta: a fold's test predictions (tensors `y_true`, `y_pred`, `probs`,
/// `embeddings`, Grad-CAMs), the final model (weights and prototypes), or a skipped split.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MetaOutput {
    pub variant: MetaVariant,
    pub label: String,
    pub fold: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Channels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// the test samples, in prediction order
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<TrainLog>,
    /// the encoders' curves travel with the fold's predictions, so that `evaluate` can plot
    /// every training stage per fold
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gfe_log: Option<TrainLog>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub afe_log: Option<TrainLog>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_subjects: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_model: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// the final split's model, for `bundle`
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub model: Option<FinalModel>,
}

/// What `bundle` needs of the final model besides its tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinalModel {
    pub model: CaI3dConfig,
    pub gamma: f64,
    pub bridge_channels: usize,
    pub predict: PredictConfig,
    pub input_shape: [usize; 4],
    pub train_subjects: usize,
    pub train_samples: usize,
}

/// The headline metrics of one evaluation (what run records and `runs ls` show).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    pub variant: String,
    pub features: String,
    pub n: usize,
    pub acc: f64,
    pub f1: Option<f64>,
    pub uf1: Option<f64>,
    pub uar: Option<f64>,
    pub class_acc_std: Option<f64>,
    pub per_class_acc: Vec<Option<f64>>,
    pub fold_mean_acc: Option<f64>,
    pub fold_mean_uf1: Option<f64>,
}

/// An `evaluate` artifact's meta (its files are the figures).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvaluateMeta {
    pub run: RunResult,
    pub metrics: Headline,
}

/// A `bundle` artifact's meta (the bundle itself is its file).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BundleOutput {
    #[serde(flatten)]
    pub report: mpfnet_api::ReportMeta,
    pub label: String,
    pub classes: Vec<String>,
    pub recipe: String,
    pub bytes: usize,
}
