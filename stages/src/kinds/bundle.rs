//! `bundle`: the final model (the meta stage's `final` split: every subject trains) as one
//! self-contained safetensors file for `mpfnet predict` (see `crate::bundle`).

use anyhow::{bail, Context, Result};
use mpfnet_api::{Artifact, Ctx, InputDecl, ReportMeta, StageParams, TypedStage};
use serde::{Deserialize, Serialize};

use super::artifacts::{BundleOutput, MetaOutput};
use super::preprocess::FeaturesMeta;
use crate::bundle::{Bundle, BundleMeta, FORMAT};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundleParams {
    /// File name of the bundle among the node's files (and in the run folder).
    pub file: String,
}

impl Default for BundleParams {
    fn default() -> Self {
        BundleParams {
            file: "model.safetensors".into(),
        }
    }
}

impl StageParams for BundleParams {
    fn validate(&self) -> Result<()> {
        // the file lands in the run folder: one plain file name, never a path out of it
        let f = &self.file;
        let ok = !f.is_empty()
            && f.len() <= 100
            && !f.starts_with('.')
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            bail!("`file` = {:?} must be one file name (letters, digits, `.`, `_`, `-`; not starting with `.`), not a path", f);
        }
        Ok(())
    }
}

pub struct BundleStage;

impl TypedStage for BundleStage {
    const KIND: &'static str = "bundle";
    // 2: format mpfnet-bundle/2 (checksum over the metadata), the flow estimator recorded
    const VERSION: &'static str = "2";
    const ABOUT: &'static str = "the final model (trained on every subject) as one safetensors bundle with its pre-processing, for `mpfnet predict`";
    const INPUTS: &'static [InputDecl] = &[
        InputDecl::required(
            "model",
            "meta[*]: one instance must be the `final` split (folds.final_model = true)",
        ),
        InputDecl::required(
            "features",
            "features[*]: the pre-processing the model was trained on",
        ),
    ];
    type Params = BundleParams;
    type Claims = super::Claims;
    fn compute(&self, p: &BundleParams, ctx: &Ctx) -> Result<Artifact> {
        let (m, tensors) = final_model(ctx)?;
        let (_, first) = ctx
            .input("features")?
            .many()?
            .first()
            .context("no features")?;
        let f: FeaturesMeta = serde_json::from_value(first.load()?.meta)
            .context("the features artifact does not record its parameters")?;
        let fm = m
            .model
            .context("the final model's artifact records no model")?;
        let meta = BundleMeta {
            format: FORMAT.into(),
            classes: m.classes.context("the final model records no classes")?,
            variant: m.variant.as_str().into(),
            label: m.label,
            gamma: fm.gamma,
            bridge_channels: fm.bridge_channels,
            model: fm.model,
            channels: m.channels.unwrap_or_default(),
            input_shape: fm.input_shape,
            predict: fm.predict,
            preprocess: f.params,
            recipe: ctx.key.to_string(),
            train_subjects: fm.train_subjects,
            train_samples: fm.train_samples,
            flow_estimator: f.flow_estimator,
            tensors_blake3: String::new(),
        };
        let b = Bundle { meta, tensors };
        let bytes = b.to_bytes()?;
        // refuse to write a bundle that `predict` could not load
        crate::bundle::Predictor::new(
            &Bundle::from_bytes(&bytes, &p.file)?,
            &candle_core::Device::Cpu,
        )?;
        let summary = format!(
            "Model bundle: {} ({} classes: {}), trained on {} subjects / {} samples -> {} ({} KiB); `mpfnet predict` it",
            b.meta.label,
            b.meta.classes.len(),
            b.meta.classes.join(", "),
            b.meta.train_subjects,
            b.meta.train_samples,
            p.file,
            bytes.len() / 1024
        );
        let out = BundleOutput {
            report: ReportMeta {
                summary: Some(summary),
                metrics: None,
            },
            label: b.meta.label.clone(),
            classes: b.meta.classes.clone(),
            recipe: ctx.key.to_string(),
            bytes: bytes.len(),
        };
        let mut art = Artifact::with_meta(serde_json::to_value(out)?);
        art.files.insert(p.file.clone(), bytes);
        Ok(art)
    }
}

/// The `final` split's meta and its weights and prototypes among the `model` inputs.
fn final_model(
    ctx: &Ctx,
) -> Result<(
    MetaOutput,
    std::collections::BTreeMap<String, mpfnet_api::Array>,
)> {
    for (_, h) in ctx.input("model")?.many()? {
        let a = h.load()?;
        let m: MetaOutput = serde_json::from_value(a.meta)?;
        if m.final_model == Some(true) {
            let tensors = a
                .tensors
                .into_iter()
                .filter(|(n, _)| {
                    n.starts_with("p/") || n.starts_with("s/") || n.starts_with("proto")
                })
                .collect();
            return Ok((m, tensors));
        }
    }
    bail!("no final model among the `model` inputs: set `final_model = true` in the folds stage")
}
