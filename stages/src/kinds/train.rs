//! `gfe`, `afe`, `meta`: the progressive training of MPFNet inside one LOSO fold (SPEC 4).
//! Heavy stages: the engine runs them one at a time per device. None of them ever sees the
//! fold's test subject except `meta`, which only classifies it after training.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use mpfnet_api::{Array, Artifact, Ctx, Input, InputDecl, Services, Stage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::common::{defaults_of, i64_array, validate_as};
use super::dataset::{fold_phi, FoldInfo, IndexInfo};
use crate::model::{CaI3d, CaI3dConfig};
use crate::train::ckpt::Checkpointer;
use crate::train::data::SampleSet;
use crate::train::encoder::{Encoder, EncoderFactory};
use crate::train::progress::Progress;

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

impl Encoder for CaI3d {
    fn feature_map(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        CaI3d::feature_map(self, x, train)
    }
    fn head(&self, fm: &Tensor) -> candle_core::Result<Tensor> {
        CaI3d::head(self, fm)
    }
}

pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        d if d.starts_with("cuda") => {
            let n: usize = d
                .strip_prefix("cuda:")
                .unwrap_or("0")
                .parse()
                .context("device cuda:N")?;
            Ok(Device::new_cuda(n)?)
        }
        d => bail!("unknown device {d}"),
    }
}

/// The CA-I3D factory for a config whose input channels follow `channels`.
pub fn factory(
    cfg: &CaI3dConfig,
) -> impl Fn(candle_nn::VarBuilder, usize) -> candle_core::Result<Box<dyn Encoder>> + '_ {
    move |vb, extra| {
        let mut c = cfg.clone();
        c.extra_in_channels = extra;
        Ok(Box::new(CaI3d::new(vb, &c)?) as Box<dyn Encoder>)
    }
}

/// Checkpoints through the engine's services (keyed by the node's key).
pub struct ServiceCheckpoints<'a>(pub &'a dyn Services);

impl Checkpointer for ServiceCheckpoints<'_> {
    fn save(&mut self, epoch: usize, bytes: Vec<u8>) -> Result<()> {
        self.0.save_checkpoint(epoch as u64, &bytes)
    }
    fn load_latest(&mut self) -> Result<Option<(usize, Vec<u8>)>> {
        Ok(self.0.load_checkpoint()?.map(|(s, b)| (s as usize, b)))
    }
}

/// Forwards training progress to the engine's bars; stops at an epoch boundary on Ctrl-C.
pub fn progress_fn<'a>(ctx: &'a Ctx) -> impl FnMut(Progress) + 'a {
    move |p: Progress| {
        let acc = p.acc.map(|a| format!(" acc {a:.3}")).unwrap_or_default();
        ctx.services.progress(
            p.epoch as u64,
            p.epochs as u64,
            &format!("loss {:.4}{acc}", p.loss),
        );
    }
}

/// Builds a sample set from gathered `features` artifacts (`ids` in order; `rename` maps the
/// gathered item id to the sample whose label and subject it carries).
pub fn load_set(
    input: &Input,
    wanted: &[(String, String)],
    info: &IndexInfo,
    channels: Channels,
    ctx: &Ctx,
) -> Result<SampleSet> {
    let handles: BTreeMap<&str, _> = input
        .many()?
        .iter()
        .map(|(id, h)| (id.as_str(), h))
        .collect();
    let by_id: BTreeMap<&str, (usize, &str)> = info
        .samples
        .iter()
        .map(|s| (s.id.as_str(), (s.class, s.subject.as_str())))
        .collect();
    let mut data = Vec::new();
    let mut shape = None;
    let (mut labels, mut subjects, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for (k, (item, sample)) in wanted.iter().enumerate() {
        if ctx.services.cancelled() {
            bail!("cancelled");
        }
        let h = handles
            .get(item.as_str())
            .with_context(|| format!("no features for {item}"))?;
        let art = h.load()?;
        let x = art.tensor("x")?;
        let s = x.shape();
        let r = channels.range();
        let per = s[1] * s[2] * s[3];
        data.extend_from_slice(&x.as_f32()?[r.start * per..r.end * per]);
        let sh = [r.len(), s[1], s[2], s[3]];
        if *shape.get_or_insert(sh) != sh {
            bail!("{item}: features of shape {s:?} differ from the others");
        }
        let (class, subject) = by_id
            .get(sample.as_str())
            .with_context(|| format!("{sample} not in the dataset index"))?;
        labels.push(*class);
        subjects.push(subject.to_string());
        ids.push(item.clone());
        if k % 16 == 0 {
            ctx.services
                .progress(k as u64, wanted.len() as u64, "loading features");
        }
    }
    let shape = shape.context("no samples")?;
    SampleSet::new(data, shape, labels, subjects, ids, info.classes.len())
}

/// VarMap -> artifact tensors (sorted names).
pub fn weights_to_artifact(map: &VarMap, prefix: &str, art: &mut Artifact) -> Result<()> {
    let data = map.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for n in names {
        let t = data[n]
            .as_tensor()
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?;
        art.insert(
            format!("{prefix}{n}"),
            Array::f32(data[n].dims().to_vec(), t.to_vec1::<f32>()?)?,
        );
    }
    Ok(())
}

/// Artifact tensors with `prefix` -> name -> Tensor.
pub fn weights_from_artifact(
    art: &Artifact,
    prefix: &str,
    dev: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, a) in &art.tensors {
        if let Some(n) = name.strip_prefix(prefix) {
            out.insert(
                n.to_string(),
                Tensor::from_slice(a.as_f32()?, a.shape(), dev)?,
            );
        }
    }
    if out.is_empty() {
        bail!("artifact has no weights under `{prefix}`");
    }
    Ok(out)
}

/// A VarMap holding a trained encoder's weights (built, then overwritten from the artifact).
pub fn restore_encoder(
    art: &Artifact,
    prefix: &str,
    cfg: &CaI3dConfig,
    dev: &Device,
) -> Result<VarMap> {
    let map = VarMap::new();
    let vb = crate::train::init::var_builder(&map, 0, dev);
    CaI3d::new(vb, cfg)?;
    crate::model::load_into(&map, &weights_from_artifact(art, prefix, dev)?)?;
    Ok(map)
}

fn curve_png(log: &crate::train::progress::TrainLog, title: &str) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("curve.png");
    crate::eval::plots::curve_png(log, title, &p)?;
    Ok(std::fs::read(p)?)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GfeParams {
    pub model: CaI3dConfig,
    pub channels: Channels,
    pub train: crate::train::triplet::GfeConfig,
    /// Train on the `final` split too (folds.final_model). Encoders that only ablation
    /// variants read, which train no final model, set false and skip it.
    pub final_model: bool,
}

impl Default for GfeParams {
    fn default() -> Self {
        GfeParams {
            model: CaI3dConfig::paper(),
            channels: Channels::Both,
            train: Default::default(),
            final_model: true,
        }
    }
}

fn model_cfg(model: &CaI3dConfig, ch: Channels) -> CaI3dConfig {
    let mut m = model.clone();
    m.in_channels = ch.range().len();
    m
}

/// What a gfe/afe node writes for the `final` split when its `final_model` is false.
fn skipped_final(fold: &FoldInfo) -> Artifact {
    Artifact::with_meta(json!({
        "fold": fold.test_subject, "final_model": false, "skipped": "final_model = false",
    }))
}

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

fn fold_of(ctx: &Ctx) -> Result<FoldInfo> {
    FoldInfo::from_item(ctx.item()?)
}

pub struct Gfe;

impl Stage for Gfe {
    fn kind(&self) -> &'static str {
        "gfe"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn code(&self) -> String {
        super::code_of("gfe")
    }
    fn about(&self) -> &'static str {
        "GFE prior learning: CA-I3D trained with a triplet loss on the fold's training subjects"
    }
    fn defaults(&self) -> Value {
        defaults_of::<GfeParams>()
    }
    fn validate(&self, p: &Value) -> Result<()> {
        validate_as::<GfeParams>(p)
    }
    fn inputs(&self) -> &'static [InputDecl] {
        const I: &[InputDecl] = &[
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
        let p: GfeParams = ctx.params_as()?;
        let fold = fold_of(ctx)?;
        if fold.test.is_empty() && !p.final_model {
            return Ok(skipped_final(&fold));
        }
        let info = IndexInfo::from_artifact(&ctx.input("dataset")?.one()?.load()?)?;
        let wanted: Vec<(String, String)> =
            fold.train.iter().map(|i| (i.clone(), i.clone())).collect();
        let set = load_set(ctx.input("features")?, &wanted, &info, p.channels, ctx)?;
        let dev = device(ctx.device)?;
        let cfg = model_cfg(&p.model, p.channels);
        let map = VarMap::new();
        let log = crate::train::triplet::train_gfe(
            &factory(&cfg) as &EncoderFactory,
            &map,
            &set,
            &p.train,
            ctx.seed,
            &dev,
            &mut progress_fn(ctx),
            &mut ServiceCheckpoints(ctx.services),
        )?;
        let mut art = Artifact::with_meta(
            json!({ "model": cfg, "channels": p.channels, "log": log, "fold": fold.test_subject, "train_samples": set.len() }),
        );
        weights_to_artifact(&map, "gfe.", &mut art)?;
        art.files.insert(
            "gfe_curve.png".into(),
            curve_png(&log, &format!("GFE triplet, fold {}", fold.test_subject))?,
        );
        Ok(art)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AfeParams {
    pub model: CaI3dConfig,
    pub channels: Channels,
    pub train: crate::train::afe::AfeConfig,
    /// Train on the `final` split too (folds.final_model). Encoders that only ablation
    /// variants read, which train no final model, set false and skip it.
    pub final_model: bool,
}

impl Default for AfeParams {
    fn default() -> Self {
        AfeParams {
            model: CaI3dConfig::paper(),
            channels: Channels::Both,
            train: Default::default(),
            final_model: true,
        }
    }
}

pub struct Afe;

impl Stage for Afe {
    fn kind(&self) -> &'static str {
        "afe"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn code(&self) -> String {
        super::code_of("afe")
    }
    fn about(&self) -> &'static str {
        "AFE prior learning: CA-I3D classifier on the fold's motion-magnified, class-balanced training set"
    }
    fn defaults(&self) -> Value {
        defaults_of::<AfeParams>()
    }
    fn validate(&self, p: &Value) -> Result<()> {
        validate_as::<AfeParams>(p)
    }
    fn inputs(&self) -> &'static [InputDecl] {
        const I: &[InputDecl] = &[
            InputDecl::required("features", "features[*] of every sample (phi = 0)"),
            InputDecl::required(
                "magnified",
                "features[*] over the balance axis (sample@phi)",
            ),
            InputDecl::required("balance", "the balance stage (per-fold phi ranges)"),
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
        let p: AfeParams = ctx.params_as()?;
        let fold = fold_of(ctx)?;
        if fold.test.is_empty() && !p.final_model {
            return Ok(skipped_final(&fold));
        }
        let info = IndexInfo::from_artifact(&ctx.input("dataset")?.one()?.load()?)?;
        let balance = ctx.input("balance")?.one()?.load()?;
        let phi = fold_phi(&balance, &fold.test_subject)?;
        let class_of = info.class_of();
        // the original plus one magnified copy per phi in 1..=phi_max of its class (SPEC 4.2)
        let mut originals = Vec::new();
        let mut magnified = Vec::new();
        for id in &fold.train {
            originals.push((id.clone(), id.clone()));
            for f in 1..=phi[class_of[id.as_str()]] {
                magnified.push((format!("{id}@{f}"), id.clone()));
            }
        }
        let a = load_set(ctx.input("features")?, &originals, &info, p.channels, ctx)?;
        let b = load_set(ctx.input("magnified")?, &magnified, &info, p.channels, ctx)?;
        let set = SampleSet::new(
            [a.data, b.data].concat(),
            a.shape,
            [a.labels, b.labels].concat(),
            [a.subjects, b.subjects].concat(),
            [a.ids, b.ids].concat(),
            info.classes.len(),
        )?;
        let counts = set.class_counts(&set.all_indices());
        let dev = device(ctx.device)?;
        let cfg = model_cfg(&p.model, p.channels);
        let map = VarMap::new();
        let log = crate::train::afe::train_afe(
            &factory(&cfg) as &EncoderFactory,
            &map,
            &set,
            &p.train,
            ctx.seed,
            &dev,
            &mut progress_fn(ctx),
            &mut ServiceCheckpoints(ctx.services),
        )?;
        let mut art = Artifact::with_meta(json!({
            "model": cfg, "channels": p.channels, "log": log, "fold": fold.test_subject,
            "phi_max": phi, "class_counts_after_balancing": counts, "train_samples": set.len(),
        }));
        // the classification head is not part of the AFE encoder the meta stage reuses
        weights_to_artifact(&map, "afe.", &mut art)?;
        art.files.insert(
            "afe_curve.png".into(),
            curve_png(&log, &format!("AFE, fold {}", fold.test_subject))?,
        );
        Ok(art)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaParams {
    /// p (parallel, weighted similarities), c (cascade), gfe (PLTN only), afe (PLSM only)
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
        if !["p", "c", "gfe", "afe"].contains(&self.variant.as_str()) {
            bail!("`variant` = {:?}: expected p, c, gfe or afe", self.variant);
        }
        Ok(())
    }
    /// The name the paper's tables use.
    pub fn label(&self) -> &'static str {
        match (self.variant.as_str(), self.pretrained) {
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
        "1"
    }
    fn code(&self) -> String {
        super::code_of("meta")
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
        let log = crate::train::meta::train_meta(
            &model,
            &set,
            &train_pool,
            &val_pool,
            &p.train,
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
        let mut art = Artifact::with_meta(json!({
            "variant": p.variant, "label": p.label(), "channels": channels, "fold": fold.test_subject,
            "ids": pred.ids, "log": log, "classes": info.classes,
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
