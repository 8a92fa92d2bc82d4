//! What the training kinds (`gfe`, `afe`, `meta`; paper Sec. 3.3-3.5) share: input channels, devices, the
//! CA-I3D factory, engine checkpoints and progress, sample sets from gathered features, weights
//! in artifacts. Each kind lives in its own file, so that its code fingerprint (`kinds::SOURCES`)
//! covers its own code: editing `meta` does not retrain the encoders.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use mpfnet_api::{Array, Artifact, Ctx, Input, Services};
use serde::{Deserialize, Serialize};

use super::artifacts::{meta_artifact, Balancing, EncoderMeta, FoldInfo, IndexInfo, SkippedMeta};
use crate::model::{CaI3d, CaI3dConfig};
use crate::train::ckpt::Checkpointer;
use crate::train::data::SampleSet;
use crate::train::driver::TrainCtx;
use crate::train::encoder::{Encoder, EncoderFactory};
use crate::train::progress::{Progress, TrainLog};

pub use super::artifacts::Channels;

impl Encoder for CaI3d {
    fn feature_map(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        CaI3d::feature_map(self, x, train)
    }
    fn head(&self, fm: &Tensor) -> candle_core::Result<Tensor> {
        CaI3d::head(self, fm)
    }
    fn bn_momentum(&self) -> Option<crate::model::layers::BnMomentum> {
        Some(self.bn_momentum.clone())
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

/// Forwards training progress to the engine's bars.
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

/// Runs `f` with a training context over the engine's services: progress bars, checkpoints
/// keyed by the node, and Ctrl-C (training stops at an epoch or step boundary with an error).
pub fn with_train_ctx<T>(
    ctx: &Ctx,
    dev: &Device,
    tf32: bool,
    f: impl FnOnce(&mut TrainCtx) -> Result<T>,
) -> Result<T> {
    if tf32 && dev.is_cpu() {
        tracing::warn!("tf32 = true has no effect on the CPU (cuBLAS only)");
    }
    let _mode = crate::train::precision::Precision::hold(tf32);
    let mut progress = progress_fn(ctx);
    let mut ckpt = ServiceCheckpoints(ctx.services);
    let cancelled = || ctx.services.cancelled();
    f(&mut TrainCtx {
        seed: ctx.seed,
        dev,
        progress: &mut progress,
        ckpt: &mut ckpt,
        cancelled: &cancelled,
    })
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

pub(super) fn curve_png(log: &TrainLog, title: &str) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("curve.png");
    crate::eval::plots::curve_png(log, title, &p)?;
    Ok(std::fs::read(p)?)
}

/// The learning curves an artifact of a training kind carries in its meta (its own `log`;
/// a meta fold's also the `gfe_log` and `afe_log` of its encoders), as PNGs for
/// `cache export`, leaving out those the artifact already holds as files.
pub(super) fn curves_of(art: &Artifact, own: &str, what: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let fold = art.meta["fold"].as_str().unwrap_or("?");
    let mut out = Vec::new();
    for (key, stage, title) in [
        ("log", own, what),
        ("gfe_log", "gfe", GFE_CURVE),
        ("afe_log", "afe", AFE_CURVE),
    ] {
        let name = format!("{stage}_curve.png");
        let Some(log) = art.meta.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        if art.files.contains_key(&name) || out.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let log: TrainLog = serde_json::from_value(log.clone())?;
        out.push((name, curve_png(&log, &format!("{title}, fold {fold}"))?));
    }
    Ok(out)
}

pub(super) const GFE_CURVE: &str = "GFE triplet";
pub(super) const AFE_CURVE: &str = "AFE";

/// The parameters of a prior-learning encoder stage (`gfe`, `afe`): the network, its input
/// channels and the training loop's config `T`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderParams<T> {
    pub model: CaI3dConfig,
    pub channels: Channels,
    pub train: T,
    /// Train on the `final` split too (folds.final_model). Encoders that only ablation
    /// variants read, which train no final model, set false and skip it.
    pub final_model: bool,
    /// TF32 matmuls on a CUDA device (faster, about 1e-3 relative error); no effect on the CPU
    pub tf32: bool,
}

impl<T: Serialize + serde::de::DeserializeOwned + Default> mpfnet_api::StageParams
    for EncoderParams<T>
{
}

impl<T: Default> Default for EncoderParams<T> {
    fn default() -> Self {
        EncoderParams {
            model: CaI3dConfig::paper(),
            channels: Channels::Both,
            train: Default::default(),
            final_model: true,
            tf32: false,
        }
    }
}

pub(super) fn model_cfg(model: &CaI3dConfig, ch: Channels) -> CaI3dConfig {
    let mut m = model.clone();
    m.in_channels = ch.range().len();
    m
}

/// What a training node writes for the `final` split when its `final_model` is false.
pub(super) fn skipped_final(fold: &FoldInfo) -> SkippedMeta {
    SkippedMeta {
        fold: fold.test_subject.clone(),
        final_model: false,
        skipped: "final_model = false".into(),
    }
}

/// What a training node (gfe, afe, meta) works on: its fold and the dataset index, or only the
/// fold where it skips the `final` split (its `final_model` is false; see [`skipped_final`]).
pub(super) enum FoldWork {
    Train(FoldInfo, IndexInfo),
    Skip(FoldInfo),
}

pub(super) fn fold_work(ctx: &Ctx, final_model: bool) -> Result<FoldWork> {
    let fold = FoldInfo::from_item(ctx.item()?)?;
    if fold.test.is_empty() && !final_model {
        return Ok(FoldWork::Skip(fold));
    }
    let info = IndexInfo::from_artifact(&ctx.input("dataset")?.one()?.load()?)?;
    Ok(FoldWork::Train(fold, info))
}

/// How a prior-learning kind (gfe, afe) trains: its name (weights prefix, curve file), the
/// curve's title, the fold's training set (with the AFE's balancing) and the loop.
pub(super) struct EncoderJob {
    pub tag: &'static str,
    pub title: &'static str,
    pub set: SampleSet,
    pub balancing: Option<Balancing>,
}

/// A gfe/afe node: skips the `final` split where `final_model` is false; otherwise trains an
/// encoder on the set `job_of` gathers for the fold with `train` and packs the weights, log and
/// curve.
pub(super) fn train_encoder<T, J, F>(
    ctx: &Ctx,
    p: &EncoderParams<T>,
    job_of: J,
    train: F,
) -> Result<Artifact>
where
    J: FnOnce(&FoldInfo, &IndexInfo) -> Result<EncoderJob>,
    F: FnOnce(&EncoderFactory, &VarMap, &SampleSet, &mut TrainCtx) -> Result<TrainLog>,
{
    let (fold, info) = match fold_work(ctx, p.final_model)? {
        FoldWork::Train(fold, info) => (fold, info),
        FoldWork::Skip(fold) => return meta_artifact(&skipped_final(&fold)),
    };
    let job = job_of(&fold, &info)?;
    let dev = device(ctx.device)?;
    let cfg = model_cfg(&p.model, p.channels);
    let map = VarMap::new();
    let set = &job.set;
    let log = with_train_ctx(ctx, &dev, p.tf32, |cx| {
        train(&factory(&cfg) as &EncoderFactory, &map, set, cx)
    })?;
    let meta = EncoderMeta {
        model: cfg,
        channels: p.channels,
        log,
        fold: fold.test_subject.clone(),
        train_samples: set.len(),
        trained_subjects: subjects_of(set, &set.all_indices()),
        balancing: job.balancing,
    };
    let mut art = meta_artifact(&meta)?;
    // the classification head is not part of the AFE encoder the meta stage reuses
    weights_to_artifact(&map, &format!("{}.", job.tag), &mut art)?;
    art.files.insert(
        format!("{}_curve.png", job.tag),
        curve_png(
            &meta.log,
            &format!("{}, fold {}", job.title, fold.test_subject),
        )?,
    );
    Ok(art)
}

/// The distinct subjects of `idx` in `set`, sorted: what a training node trained on, recorded in
/// its artifact so that a test can check that no fold's test subject reaches its training.
pub fn subjects_of(set: &SampleSet, idx: &[usize]) -> Vec<String> {
    let s: std::collections::BTreeSet<&String> = idx.iter().map(|&i| &set.subjects[i]).collect();
    s.into_iter().cloned().collect()
}
