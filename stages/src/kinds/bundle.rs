//! `bundle`: the final model (the meta stage's `final` split: every subject trains) as one
//! self-contained safetensors file for `mpfnet predict` (see `crate::bundle`).

use anyhow::{bail, Context, Result};
use mpfnet_api::{Artifact, Ctx, InputDecl, Stage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::common::{defaults_of, validate_as};
use crate::bundle::{Bundle, BundleMeta, FORMAT};
use crate::kinds::features::FeatureParams;

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

pub struct BundleStage;

impl Stage for BundleStage {
    fn kind(&self) -> &'static str {
        "bundle"
    }
    fn version(&self) -> &'static str {
        // 2: format mpfnet-bundle/2 (checksum over the metadata), the flow estimator recorded
        "2"
    }
    fn code(&self) -> String {
        super::code_of("bundle")
    }
    fn code_files(&self) -> Vec<(String, String)> {
        super::code_files_for("bundle")
    }
    fn about(&self) -> &'static str {
        "the final model (trained on every subject) as one safetensors bundle with its pre-processing, for `mpfnet predict`"
    }
    fn defaults(&self) -> Value {
        defaults_of::<BundleParams>()
    }
    fn validate(&self, p: &Value) -> Result<()> {
        validate_as::<BundleParams>(p)?;
        let p: BundleParams = serde_json::from_value(p.clone())?;
        // the file lands in the run folder: one plain file name, never a path out of it
        let ok = !p.file.is_empty()
            && p.file.len() <= 100
            && !p.file.starts_with('.')
            && p.file
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            bail!("`file` = {:?} must be one file name (letters, digits, `.`, `_`, `-`; not starting with `.`), not a path", p.file);
        }
        Ok(())
    }
    fn inputs(&self) -> &'static [InputDecl] {
        const I: &[InputDecl] = &[
            InputDecl::required(
                "model",
                "meta[*]: one instance must be the `final` split (folds.final_model = true)",
            ),
            InputDecl::required(
                "features",
                "features[*]: the pre-processing the model was trained on",
            ),
        ];
        I
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact> {
        let p: BundleParams = ctx.params_as()?;
        let mut fin = None;
        for (_, h) in ctx.input("model")?.many()? {
            let a = h.load()?;
            if a.meta["final_model"] == true {
                fin = Some(a);
                break;
            }
        }
        let Some(m) = fin else {
            bail!("no final model among the `model` inputs: set `final_model = true` in the folds stage");
        };
        let (_, first) = ctx
            .input("features")?
            .many()?
            .first()
            .context("no features")?;
        let f = first.load()?;
        let preprocess: FeatureParams = serde_json::from_value(f.meta["params"].clone())
            .context("the features artifact does not record its parameters")?;
        let field = |k: &str| m.meta[k].clone();
        let meta = BundleMeta {
            format: FORMAT.into(),
            classes: serde_json::from_value(field("classes"))?,
            variant: serde_json::from_value(field("variant"))?,
            label: serde_json::from_value(field("label"))?,
            gamma: serde_json::from_value(field("gamma"))?,
            bridge_channels: serde_json::from_value(field("bridge_channels"))?,
            model: serde_json::from_value(field("model"))?,
            channels: serde_json::from_value(field("channels"))?,
            input_shape: serde_json::from_value(field("input_shape"))?,
            predict: serde_json::from_value(field("predict"))?,
            preprocess,
            recipe: ctx.key.to_string(),
            train_subjects: serde_json::from_value(field("train_subjects"))?,
            train_samples: serde_json::from_value(field("train_samples"))?,
            flow_estimator: f.meta["flow_estimator"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            tensors_blake3: String::new(),
        };
        let tensors = m
            .tensors
            .iter()
            .filter(|(n, _)| n.starts_with("p/") || n.starts_with("s/") || n.starts_with("proto"))
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
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
        let mut art = Artifact::with_meta(json!({
            "summary": summary, "label": b.meta.label, "classes": b.meta.classes, "recipe": ctx.key,
            "bytes": bytes.len(),
        }));
        art.files.insert(p.file, bytes);
        Ok(art)
    }
}
