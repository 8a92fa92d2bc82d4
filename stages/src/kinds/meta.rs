//! `meta`: multi-prior fusion meta-learning (paper Sec. 3.4-3.5): MPFNet-P / -C, or one prior for the
//! ablations, trained episodically on the fold's training subjects; then classifies the held-out
//! subject (or, on the `final` split, keeps the model and class prototypes for `bundle`).

use anyhow::{bail, Result};
use candle_core::Device;
use candle_nn::VarMap;
use mpfnet_api::{Array, Artifact, Ctx, InputDecl, StageParams, TypedStage};
use serde::{Deserialize, Serialize};

use super::artifacts::{
    Channels, EncoderMeta, EncoderOutput, FinalModel, FoldInfo, IndexInfo, MetaOutput, MetaVariant,
};
use super::common::i64_array;
use super::train::{
    curves_of, device, factory, fold_work, load_set, restore_encoder, skipped_final, subjects_of,
    weights_to_artifact, with_train_ctx, FoldWork,
};
use crate::model::CaI3dConfig;
use crate::train::data::SampleSet;
use crate::train::encoder::EncoderFactory;
use crate::train::meta::model::{EncoderMode, MetaModel};
use crate::train::meta::proto::Prediction;
use crate::train::meta::Pools;
use crate::train::progress::TrainLog;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaParams {
    /// p (parallel, weighted similarities), c (cascade), gfe (PLTN only), afe (PLSM only), ncm
    /// (the nearest-class-mean baseline on the same input and folds: nothing is trained)
    pub variant: MetaVariant,
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
    /// TF32 matmuls on a CUDA device (faster, about 1e-3 relative error); no effect on the CPU
    pub tf32: bool,
}

impl Default for MetaParams {
    fn default() -> Self {
        MetaParams {
            variant: MetaVariant::C,
            pretrained: true,
            gamma: 0.7,
            bridge_channels: 4,
            train: Default::default(),
            gradcam_samples: 1,
            final_model: true,
            tf32: false,
        }
    }
}

impl StageParams for MetaParams {}

impl MetaParams {
    /// The name the paper's tables use.
    pub fn label(&self) -> &'static str {
        self.variant.label(self.pretrained)
    }
    /// The meta artifact's fields every output of this node shares.
    fn output(&self, fold: &FoldInfo) -> MetaOutput {
        MetaOutput {
            variant: self.variant,
            label: self.label().into(),
            fold: fold.test_subject.clone(),
            ..Default::default()
        }
    }
}

pub struct Meta;

impl TypedStage for Meta {
    const KIND: &'static str = "meta";
    // 2: frozen/fine-tuned encoders, no `resumed_from` in the log
    const VERSION: &'static str = "2";
    const ABOUT: &'static str = "multi-prior fusion meta-learning (MPFNet-P / -C, or one prior for ablations); classifies the held-out subject";
    const INPUTS: &'static [InputDecl] = &[
        InputDecl::required("gfe", "the fold's gfe (same axis)"),
        InputDecl::required("afe", "the fold's afe (same axis)"),
        InputDecl::required("features", "features[*] of every sample"),
        InputDecl::required("dataset", "the dataset index"),
    ];
    const HEAVY: bool = true;
    const USES_SEED: bool = true;
    type Params = MetaParams;
    type Claims = super::Claims;
    fn compute(&self, p: &MetaParams, ctx: &Ctx) -> Result<Artifact> {
        let (fold, info) = match fold_work(ctx, p.final_model)? {
            FoldWork::Train(fold, info) => (fold, info),
            FoldWork::Skip(fold) => {
                let s = skipped_final(&fold);
                return no_predictions(&MetaOutput {
                    final_model: Some(s.final_model),
                    skipped: Some(s.skipped),
                    ..p.output(&fold)
                });
            }
        };
        if p.variant == MetaVariant::Ncm {
            return ncm_artifact(ctx, p, &fold, &info);
        }
        let fit = Fit::train(ctx, p, &fold, &info)?;
        if fit.test_pool.is_empty() {
            final_model_artifact(ctx, p, &fold, &fit)
        } else {
            predictions_artifact(ctx, p, &fold, &fit)
        }
    }
    fn pngs(&self, art: &Artifact) -> Result<Vec<(String, Vec<u8>)>> {
        curves_of(art, "meta", "meta-learning (query loss; val acc dots)")
    }
}

/// An artifact with `out` as its meta and no predictions (a split that tests no one).
fn no_predictions(out: &MetaOutput) -> Result<Artifact> {
    let mut art = Artifact::with_meta(serde_json::to_value(out)?);
    art.insert("y_true", i64_array(Vec::new()));
    art.insert("y_pred", i64_array(Vec::new()));
    Ok(art)
}

/// Loads a gfe/afe input of meta, refusing one that skipped the final split.
fn load_encoder(ctx: &Ctx, input: &str) -> Result<(Artifact, EncoderMeta)> {
    let a = ctx.input(input)?.one()?.load()?;
    match serde_json::from_value(a.meta.clone())? {
        EncoderOutput::Trained(m) => Ok((a, *m)),
        EncoderOutput::Skipped(_) => bail!(
            "input `{input}` skipped the final split (its stage has final_model = false): \
             set final_model = true there, or final_model = false on this meta stage"
        ),
    }
}

/// The fold's samples in one set: training, then validation, then test subjects.
fn fold_set(ctx: &Ctx, fold: &FoldInfo, info: &IndexInfo, channels: Channels) -> Result<SampleSet> {
    let wanted: Vec<(String, String)> = fold
        .train
        .iter()
        .chain(&fold.val)
        .chain(&fold.test)
        .map(|id| (id.clone(), id.clone()))
        .collect();
    load_set(ctx.input("features")?, &wanted, info, channels, ctx)
}

/// A trained meta-learner and the fold's samples: train, then validation, then test.
struct Fit {
    model: MetaModel,
    set: SampleSet,
    /// prototypes from all training subjects (train + validation), never the test subject
    proto_pool: Vec<usize>,
    test_pool: Vec<usize>,
    classes: Vec<String>,
    channels: Channels,
    cfg: CaI3dConfig,
    log: TrainLog,
    gfe_log: TrainLog,
    afe_log: TrainLog,
    dev: Device,
}

impl Fit {
    fn train(ctx: &Ctx, p: &MetaParams, fold: &FoldInfo, info: &IndexInfo) -> Result<Fit> {
        let (gfe_art, gfe) = load_encoder(ctx, "gfe")?;
        let (afe_art, afe) = load_encoder(ctx, "afe")?;
        let channels = gfe.channels;
        if channels != afe.channels || gfe.model.in_channels != afe.model.in_channels {
            bail!(
                "gfe and afe were trained on different input channels ({channels:?} vs {:?})",
                afe.channels
            );
        }
        let dev = device(ctx.device)?;
        let set = fold_set(ctx, fold, info, channels)?;
        let (nt, nv) = (fold.train.len(), fold.val.len());
        let load = |art: &Artifact, prefix: &str, cfg: &CaI3dConfig| -> Result<VarMap> {
            if p.pretrained {
                restore_encoder(art, prefix, cfg, &dev)
            } else {
                Ok(VarMap::new()) // seeded random init: "without prior learning"
            }
        };
        let Some(variant) = p.variant.model(p.gamma, p.bridge_channels) else {
            bail!("the {} baseline trains no model", p.label());
        };
        let (primary, secondary, cfg) = match p.variant {
            MetaVariant::Afe => (load(&afe_art, "afe.", &afe.model)?, None, afe.model.clone()),
            MetaVariant::Gfe => (load(&gfe_art, "gfe.", &gfe.model)?, None, gfe.model.clone()),
            _ => (
                load(&gfe_art, "gfe.", &gfe.model)?,
                Some(load(&afe_art, "afe.", &afe.model)?),
                gfe.model.clone(),
            ),
        };
        if gfe.model != afe.model && p.variant.fuses() {
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
            tcfg.encoders = Some(EncoderMode::Finetune);
            tcfg.encoder_lr = 1.0;
        }
        let train_pool: Vec<usize> = (0..nt).collect();
        let val_pool: Vec<usize> = (nt..nt + nv).collect();
        let pools = Pools {
            set: &set,
            train: &train_pool,
            val: &val_pool,
        };
        let log = with_train_ctx(ctx, &dev, p.tf32, |cx| {
            crate::train::meta::train_meta(&model, pools, &tcfg, cx)
        })?;
        Ok(Fit {
            proto_pool: (0..nt + nv).collect(),
            test_pool: (nt + nv..set.len()).collect(),
            model,
            set,
            classes: info.classes.clone(),
            channels,
            cfg,
            log,
            gfe_log: gfe.log,
            afe_log: afe.log,
            dev,
        })
    }

    /// The meta fields every output of the trained model shares.
    fn output(&self, p: &MetaParams, fold: &FoldInfo) -> MetaOutput {
        MetaOutput {
            channels: Some(self.channels),
            classes: Some(self.classes.clone()),
            log: Some(self.log.clone()),
            trained_subjects: Some(subjects_of(&self.set, &self.proto_pool)),
            ..p.output(fold)
        }
    }
}

/// The fold's test predictions, embeddings and Grad-CAMs.
fn predictions_artifact(ctx: &Ctx, p: &MetaParams, fold: &FoldInfo, fit: &Fit) -> Result<Artifact> {
    let pred = crate::train::meta::proto::predict(
        &fit.model,
        &fit.set,
        &fit.proto_pool,
        &fit.test_pool,
        &p.train.predict_config(),
        ctx.seed,
        &fit.dev,
    )?;
    let out = MetaOutput {
        ids: Some(pred.ids.clone()),
        gfe_log: Some(fit.gfe_log.clone()),
        afe_log: Some(fit.afe_log.clone()),
        ..fit.output(p, fold)
    };
    let mut art = Artifact::with_meta(serde_json::to_value(out)?);
    insert_predictions(&mut art, &pred, fit.classes.len())?;
    // Grad-CAM of the first test samples, for their predicted class
    let set = &fit.set;
    for (k, &q) in fit.test_pool.iter().take(p.gradcam_samples).enumerate() {
        let query = crate::eval::gradcam::MetaCam {
            proto_pool: &fit.proto_pool,
            sample: q,
            class: pred.y_pred[k],
            scale: p.train.scale,
            chunk: p.train.eval_batch,
        };
        let cam = crate::eval::gradcam::meta_cam(&fit.model, set, &query, &fit.dev)?;
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

/// `y_true`, `y_pred`, `probs` [n, classes] and `embeddings` [n, d] of a prediction.
fn insert_predictions(art: &mut Artifact, pred: &Prediction, classes: usize) -> Result<()> {
    let to_i64 = |v: &[usize]| i64_array(v.iter().map(|&v| v as i64).collect());
    let n = pred.y_true.len();
    let d = pred.embeddings.first().map(|e| e.len()).unwrap_or(0);
    art.insert("y_true", to_i64(&pred.y_true));
    art.insert("y_pred", to_i64(&pred.y_pred));
    art.insert("probs", Array::f32(vec![n, classes], pred.probs.concat())?);
    art.insert(
        "embeddings",
        Array::f32(vec![n, d], pred.embeddings.concat())?,
    );
    Ok(())
}

/// The nearest-class-mean baseline of the fold (see `train::meta::ncm`), on the input channels
/// of the fold's gfe.
fn ncm_artifact(ctx: &Ctx, p: &MetaParams, fold: &FoldInfo, info: &IndexInfo) -> Result<Artifact> {
    let gfe = ctx.input("gfe")?.one()?.load()?;
    let channels = match serde_json::from_value(gfe.meta.clone()) {
        Ok(EncoderOutput::Trained(m)) => m.channels,
        _ => Channels::default(),
    };
    let mut out = MetaOutput {
        channels: Some(channels),
        classes: Some(info.classes.clone()),
        ..p.output(fold)
    };
    if fold.test.is_empty() {
        out.skipped = Some("the nearest-class-mean baseline has no final model".into());
        return no_predictions(&out);
    }
    let set = fold_set(ctx, fold, info, channels)?;
    let nt = fold.train.len() + fold.val.len();
    let proto_pool: Vec<usize> = (0..nt).collect();
    let test_pool: Vec<usize> = (nt..set.len()).collect();
    let pred = crate::train::meta::ncm::predict_ncm(&set, &proto_pool, &test_pool, 8)?;
    out.trained_subjects = Some(subjects_of(&set, &proto_pool));
    out.ids = Some(pred.ids.clone());
    let mut art = Artifact::with_meta(serde_json::to_value(out)?);
    insert_predictions(&mut art, &pred, info.classes.len())?;
    Ok(art)
}

/// The final-model split (no test subject): the trained weights (`p/…`, `s/…` as in
/// [`MetaModel::maps`]) and the class prototypes from every training sample, for `bundle`.
fn final_model_artifact(ctx: &Ctx, p: &MetaParams, fold: &FoldInfo, fit: &Fit) -> Result<Artifact> {
    let pc = p.train.predict_config();
    let (model, set) = (&fit.model, &fit.set);
    let (classes, protos) = crate::train::meta::proto::class_prototypes(
        model,
        set,
        &fit.proto_pool,
        &pc,
        ctx.seed,
        &fit.dev,
    )?;
    let out = MetaOutput {
        final_model: Some(true),
        model: Some(FinalModel {
            model: fit.cfg.clone(),
            gamma: p.gamma,
            bridge_channels: p.bridge_channels,
            predict: pc,
            input_shape: set.shape,
            train_subjects: set
                .subjects
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            train_samples: set.len(),
        }),
        ..fit.output(p, fold)
    };
    let mut art = no_predictions(&out)?;
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
