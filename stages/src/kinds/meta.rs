//! `meta`: multi-prior fusion meta-learning (paper Sec. 3.4-3.5): MPFNet-P / -C, or one prior for the
//! ablations, trained episodically on the fold's training subjects; then classifies the held-out
//! subject (or, on the `final` split, keeps the model and class prototypes for `bundle`).

use anyhow::{bail, Result};
use candle_core::Device;
use candle_nn::VarMap;
use mpfnet_api::{Array, Artifact, Ctx, InputDecl, Stage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::common::{defaults_of, i64_array, validate_as};
use super::dataset::IndexInfo;
use super::train::{
    device, factory, fold_of, load_set, progress_fn, restore_encoder, weights_to_artifact,
    Channels, ServiceCheckpoints,
};
use crate::model::CaI3dConfig;
use crate::train::data::SampleSet;
use crate::train::encoder::EncoderFactory;

/// Loads a gfe/afe input of meta, refusing one that skipped the final split.
fn load_encoder(ctx: &Ctx, input: &str) -> Result<Artifact> {
    let a = ctx.input(input)?.one()?.load()?;
    if a.meta.get("skipped").is_some() {
        bail!(
            "input `{input}` skipped the final split (its stage has final_model = false): \
             set final_model = true there, or final_model = false on this meta stage"
        );
    }
    Ok(a)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaParams {
    /// p (parallel, weighted similarities), c (cascade), gfe (PLTN only), afe (PLSM only), ncm
    /// (the nearest-class-mean baseline on the same input and folds: nothing is trained)
    pub variant: String,
    /// false: encoders start from random weights ("without prior learning")
    pub pretrained: bool,
    /// MPFNet-P: s = cos_G + gamma * cos_A
    pub gamma: f64,
    /// MPFNet-C: channels of the 1x1x1 bridge from the GFE feature map to the AFE input
    pub bridge_channels: usize,
    pub train: crate::train::meta::MetaConfig,
    /// Grad-CAM heat maps for this many test samples of the fold
    pub gradcam_samples: usize,
    /// Train on the `final` split too (folds.final_model); only a `bundle` reads that model,
    /// so variants no bundle uses set false and skip it.
    pub final_model: bool,
}

impl Default for MetaParams {
    fn default() -> Self {
        MetaParams {
            variant: "c".into(),
            pretrained: true,
            gamma: 0.7,
            bridge_channels: 4,
            train: Default::default(),
            gradcam_samples: 1,
            final_model: true,
        }
    }
}

impl MetaParams {
    fn check(&self) -> Result<()> {
        if !["p", "c", "gfe", "afe", "ncm"].contains(&self.variant.as_str()) {
            bail!(
                "`variant` = {:?}: expected p, c, gfe, afe or ncm",
                self.variant
            );
        }
        Ok(())
    }
    /// The name the paper's tables use.
    pub fn label(&self) -> &'static str {
        match (self.variant.as_str(), self.pretrained) {
            ("ncm", _) => "NCM",
            (_, false) => "w/o PL",
            ("gfe", _) => "PLTN",
            ("afe", _) => "PLSM",
            ("p", _) => "MPFNet-P",
            _ => "MPFNet-C",
        }
    }
}

pub struct Meta;

impl Stage for Meta {
    fn kind(&self) -> &'static str {
        "meta"
    }
    fn version(&self) -> &'static str {
        // 2: frozen/fine-tuned encoders, no `resumed_from` in the log
        "2"
    }
    fn code(&self) -> String {
        super::code_of("meta")
    }
    fn code_files(&self) -> Vec<(String, String)> {
        super::code_files_for("meta")
    }
    fn about(&self) -> &'static str {
        "multi-prior fusion meta-learning (MPFNet-P / -C, or one prior for ablations); classifies the held-out subject"
    }
    fn defaults(&self) -> Value {
        defaults_of::<MetaParams>()
    }
    fn validate(&self, p: &Value) -> Result<()> {
        validate_as::<MetaParams>(p)?;
        serde_json::from_value::<MetaParams>(p.clone())?.check()
    }
    fn inputs(&self) -> &'static [InputDecl] {
        const I: &[InputDecl] = &[
            InputDecl::required("gfe", "the fold's gfe (same axis)"),
            InputDecl::required("afe", "the fold's afe (same axis)"),
            InputDecl::required("features", "features[*] of every sample"),
            InputDecl::required("dataset", "the dataset index"),
        ];
        I
    }
    fn heavy(&self) -> bool {
        true
    }
    fn uses_seed(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact> {
        use crate::train::meta::model::{MetaModel, Variant};
        let p: MetaParams = ctx.params_as()?;
        p.check()?;
        let fold = fold_of(ctx)?;
        if fold.test.is_empty() && !p.final_model {
            let mut art = Artifact::with_meta(json!({
                "variant": p.variant, "label": p.label(), "fold": fold.test_subject,
                "final_model": false, "skipped": "final_model = false",
            }));
            art.insert("y_true", i64_array(Vec::new()));
            art.insert("y_pred", i64_array(Vec::new()));
            return Ok(art);
        }
        let info = IndexInfo::from_artifact(&ctx.input("dataset")?.one()?.load()?)?;
        if p.variant == "ncm" {
            return ncm_artifact(ctx, &p, &fold, &info);
        }
        let gfe = load_encoder(ctx, "gfe")?;
        let afe = load_encoder(ctx, "afe")?;
        let g_cfg: CaI3dConfig = serde_json::from_value(gfe.meta["model"].clone())?;
        let a_cfg: CaI3dConfig = serde_json::from_value(afe.meta["model"].clone())?;
        let channels: Channels = serde_json::from_value(gfe.meta["channels"].clone())?;
        let a_channels: Channels = serde_json::from_value(afe.meta["channels"].clone())?;
        if channels != a_channels || g_cfg.in_channels != a_cfg.in_channels {
            bail!("gfe and afe were trained on different input channels ({channels:?} vs {a_channels:?})");
        }
        let dev = device(ctx.device)?;
        // one sample set: train, then validation, then test samples
        let mut wanted = Vec::new();
        for id in fold.train.iter().chain(&fold.val).chain(&fold.test) {
            wanted.push((id.clone(), id.clone()));
        }
        let set = load_set(ctx.input("features")?, &wanted, &info, channels, ctx)?;
        let (nt, nv) = (fold.train.len(), fold.val.len());
        let train_pool: Vec<usize> = (0..nt).collect();
        let val_pool: Vec<usize> = (nt..nt + nv).collect();
        let test_pool: Vec<usize> = (nt + nv..set.len()).collect();

        let load = |art: &Artifact, prefix: &str, cfg: &CaI3dConfig| -> Result<VarMap> {
            if p.pretrained {
                restore_encoder(art, prefix, cfg, &dev)
            } else {
                Ok(VarMap::new()) // seeded random init: "without prior learning"
            }
        };
        let (variant, primary, secondary, cfg) = match p.variant.as_str() {
            "gfe" => (
                Variant::Single,
                load(&gfe, "gfe.", &g_cfg)?,
                None,
                g_cfg.clone(),
            ),
            "afe" => (
                Variant::Single,
                load(&afe, "afe.", &a_cfg)?,
                None,
                a_cfg.clone(),
            ),
            "p" => (
                Variant::P { gamma: p.gamma },
                load(&gfe, "gfe.", &g_cfg)?,
                Some(load(&afe, "afe.", &a_cfg)?),
                g_cfg.clone(),
            ),
            _ => (
                Variant::C {
                    bridge_channels: p.bridge_channels,
                },
                load(&gfe, "gfe.", &g_cfg)?,
                Some(load(&afe, "afe.", &a_cfg)?),
                g_cfg.clone(),
            ),
        };
        if g_cfg != a_cfg && matches!(variant, Variant::P { .. } | Variant::C { .. }) {
            bail!("MPFNet-P/C need the GFE and AFE to share one CA-I3D configuration");
        }
        let model = MetaModel::new(
            &factory(&cfg) as &EncoderFactory,
            variant,
            primary,
            secondary,
            set.shape,
            ctx.seed,
            &dev,
        )?;
        // without prior learning there is no prior to keep: the random encoders always train
        let mut tcfg = p.train.clone();
        if !p.pretrained {
            tcfg.encoders = crate::train::meta::model::EncoderMode::Finetune;
            tcfg.encoder_lr = 1.0;
        }
        let log = crate::train::meta::train_meta(
            &model,
            &set,
            &train_pool,
            &val_pool,
            &tcfg,
            ctx.seed,
            &dev,
            &mut progress_fn(ctx),
            &mut ServiceCheckpoints(ctx.services),
        )?;
        // prototypes from all training subjects (train + validation), never the test subject
        let proto_pool: Vec<usize> = (0..nt + nv).collect();
        if test_pool.is_empty() {
            return final_model_artifact(
                ctx,
                &p,
                &model,
                &set,
                &proto_pool,
                &info,
                channels,
                &cfg,
                &log,
                &dev,
            );
        }
        let pred = crate::train::meta::proto::predict(
            &model,
            &set,
            &proto_pool,
            &test_pool,
            &p.train.predict_config(),
            ctx.seed,
            &dev,
        )?;
        let n = pred.y_true.len();
        let c = info.classes.len();
        let d = pred.embeddings.first().map(|e| e.len()).unwrap_or(0);
        // the encoders' curves travel with the fold's predictions, so that `evaluate` can plot
        // every training stage per fold
        let mut art = Artifact::with_meta(json!({
            "variant": p.variant, "label": p.label(), "channels": channels, "fold": fold.test_subject,
            "ids": pred.ids, "log": log, "classes": info.classes,
            "gfe_log": gfe.meta.get("log"), "afe_log": afe.meta.get("log"),
            "trained_subjects": super::train::subjects_of(&set, &proto_pool),
        }));
        art.insert(
            "y_true",
            i64_array(pred.y_true.iter().map(|&v| v as i64).collect()),
        );
        art.insert(
            "y_pred",
            i64_array(pred.y_pred.iter().map(|&v| v as i64).collect()),
        );
        art.insert("probs", Array::f32(vec![n, c], pred.probs.concat())?);
        art.insert(
            "embeddings",
            Array::f32(vec![n, d], pred.embeddings.concat())?,
        );
        // Grad-CAM of the first test samples, for their predicted class
        for (k, &q) in test_pool.iter().take(p.gradcam_samples).enumerate() {
            let cam = crate::eval::gradcam::meta_grad_cam(
                &model,
                &set,
                &proto_pool,
                q,
                pred.y_pred[k],
                p.train.scale,
                p.train.eval_batch,
                &dev,
            )?;
            art.insert(
                format!("cam.{k}"),
                Array::f32(vec![cam.t, cam.h, cam.w], cam.values)?,
            );
            let x = &set.data[q * set.sample_len()..(q + 1) * set.sample_len()];
            art.insert(
                format!("cam_input.{k}"),
                Array::f32(set.shape.to_vec(), x.to_vec())?,
            );
        }
        Ok(art)
    }
}

/// The nearest-class-mean baseline of the fold (see `train::meta::ncm`), on the input channels
/// of the fold's gfe.
fn ncm_artifact(
    ctx: &Ctx,
    p: &MetaParams,
    fold: &super::dataset::FoldInfo,
    info: &IndexInfo,
) -> Result<Artifact> {
    let gfe = ctx.input("gfe")?.one()?.load()?;
    let channels: Channels =
        serde_json::from_value(gfe.meta.get("channels").cloned().unwrap_or(json!("both")))?;
    let mut art = Artifact::with_meta(json!({
        "variant": p.variant, "label": p.label(), "channels": channels, "fold": fold.test_subject,
        "classes": info.classes,
    }));
    if fold.test.is_empty() {
        art.meta["skipped"] = json!("the nearest-class-mean baseline has no final model");
        art.insert("y_true", i64_array(Vec::new()));
        art.insert("y_pred", i64_array(Vec::new()));
        return Ok(art);
    }
    let wanted: Vec<(String, String)> = fold
        .train
        .iter()
        .chain(&fold.val)
        .chain(&fold.test)
        .map(|id| (id.clone(), id.clone()))
        .collect();
    let set = load_set(ctx.input("features")?, &wanted, info, channels, ctx)?;
    let nt = fold.train.len() + fold.val.len();
    let proto_pool: Vec<usize> = (0..nt).collect();
    let test_pool: Vec<usize> = (nt..set.len()).collect();
    let pred = crate::train::meta::ncm::predict_ncm(&set, &proto_pool, &test_pool, 8)?;
    art.meta["trained_subjects"] = json!(super::train::subjects_of(&set, &proto_pool));
    let (n, c) = (pred.y_true.len(), info.classes.len());
    let d = pred.embeddings.first().map(|e| e.len()).unwrap_or(0);
    art.meta["ids"] = json!(pred.ids);
    art.insert(
        "y_true",
        i64_array(pred.y_true.iter().map(|&v| v as i64).collect()),
    );
    art.insert(
        "y_pred",
        i64_array(pred.y_pred.iter().map(|&v| v as i64).collect()),
    );
    art.insert("probs", Array::f32(vec![n, c], pred.probs.concat())?);
    art.insert(
        "embeddings",
        Array::f32(vec![n, d], pred.embeddings.concat())?,
    );
    Ok(art)
}

/// The final-model split (no test subject): the trained weights (`p/…`, `s/…` as in
/// [`MetaModel::maps`]) and the class prototypes from every training sample, for `bundle`.
#[allow(clippy::too_many_arguments)]
fn final_model_artifact(
    ctx: &Ctx,
    p: &MetaParams,
    model: &crate::train::meta::model::MetaModel,
    set: &SampleSet,
    proto_pool: &[usize],
    info: &IndexInfo,
    channels: Channels,
    cfg: &CaI3dConfig,
    log: &crate::train::progress::TrainLog,
    dev: &Device,
) -> Result<Artifact> {
    let pc = p.train.predict_config();
    let (classes, protos) =
        crate::train::meta::proto::class_prototypes(model, set, proto_pool, &pc, ctx.seed, dev)?;
    let fold = fold_of(ctx)?;
    let mut art = Artifact::with_meta(json!({
        "variant": p.variant, "label": p.label(), "channels": channels, "fold": fold.test_subject,
        "classes": info.classes, "log": log, "model": cfg, "gamma": p.gamma,
        "bridge_channels": p.bridge_channels, "predict": pc, "input_shape": set.shape,
        "train_subjects": set.subjects.iter().collect::<std::collections::BTreeSet<_>>().len(),
        "trained_subjects": super::train::subjects_of(set, proto_pool),
        "train_samples": set.len(),
        "final_model": true,
    }));
    art.insert("y_true", i64_array(Vec::new()));
    art.insert("y_pred", i64_array(Vec::new()));
    for (tag, map) in model.maps() {
        weights_to_artifact(map, &format!("{tag}/"), &mut art)?;
    }
    for (b, t) in protos.iter().enumerate() {
        let (n, d) = t.dims2()?;
        art.insert(
            format!("proto.{b}"),
            Array::f32(vec![n, d], t.flatten_all()?.to_vec1::<f32>()?)?,
        );
    }
    art.insert(
        "proto_classes",
        i64_array(classes.iter().map(|&c| c as i64).collect()),
    );
    Ok(art)
}
