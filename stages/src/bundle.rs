//! Model bundles: one safetensors file holding a trained MPFNet (encoder weights, variant, class
//! prototypes, class names) and, in its metadata, everything needed to prepare new clips exactly
//! as the training data were (crop size, L, flow and its normalisation), plus the recipe digest
//! of the pipeline node that made it. [`Predictor`] classifies prepared clips with it.
//!
//! Layout: tensors `p/<var>` (GFE or the single encoder) and `s/<var>` (AFE for P, the cascade AFE
//! with its bridge for C), as [`MetaModel::maps`] names them; `proto.<branch>` [classes present,
//! D] and `proto_classes` [classes present] (i64). Metadata: one entry, `mpfnet.bundle` (JSON
//! [`BundleMeta`]; one entry because safetensors writes its metadata map in hash order), whose
//! `tensors_blake3` is a digest over every tensor's name, dtype, shape and bytes, so a flipped
//! byte anywhere in the data is caught on load (safetensors itself only checks the header and
//! the lengths).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use mpfnet_api::Array;
use mpfnet_cache::{tensors, PartsHasher};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::eval::gradcam::{grad_cam, prototype_score, Cam};
use crate::kinds::features::FeatureParams;
use crate::kinds::train::{factory, Channels};
use crate::model::CaI3dConfig;
use crate::train::encoder::EncoderFactory;
use crate::train::init::sorted_vars;
use crate::train::meta::model::{MetaModel, Variant};
use crate::train::meta::proto::{class_probs, PredictConfig};

/// 2: the checksum covers the metadata too.
pub const FORMAT: &str = "mpfnet-bundle/2";
const META_KEY: &str = "mpfnet.bundle";

/// What a bundle says about itself (the `mpfnet.bundle` metadata entry).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleMeta {
    pub format: String,
    pub classes: Vec<String>,
    /// p, c, gfe or afe (the meta stage's `variant`)
    pub variant: String,
    /// the paper's name for it: MPFNet-P, MPFNet-C, PLTN, PLSM
    pub label: String,
    pub gamma: f64,
    pub bridge_channels: usize,
    pub model: CaI3dConfig,
    pub channels: Channels,
    /// the model's input [C, T, H, W] (C after channel selection)
    pub input_shape: [usize; 4],
    pub predict: PredictConfig,
    /// the `features` stage's parameters: new clips must be prepared with exactly these
    pub preprocess: FeatureParams,
    /// the bundle node's cache key: blake3 over its whole upstream recipe (data, parameters,
    /// seeds, code); `mpfnet cache show <recipe>` finds it
    pub recipe: String,
    pub train_subjects: usize,
    pub train_samples: usize,
    /// the flow estimator that made the training data (`FlowEstimator::name`: for FlowNet2 the
    /// checkpoint's digest); `predict` refuses other weights at the recorded path
    #[serde(default)]
    pub flow_estimator: String,
    /// set when writing: see the module docs
    #[serde(default)]
    pub tensors_blake3: String,
}

/// Limits on what a bundle's metadata may ask for: generous for any CA-I3D this project trains
/// (the paper's: widths <= 480, 10 x 128 x 128 inputs), far below what would exhaust memory.
const MAX_WIDTH: usize = 4096;
const MAX_CLASSES: usize = 256;
const MAX_SIDE: usize = 1024;
const MAX_FRAMES: usize = 128;
/// Largest activation the forward pass may hold: widest layer x T x H x W scalars (1 GiB of f32).
const MAX_ACTIVATION: u128 = 1 << 28;

impl BundleMeta {
    /// Checks every number that sizes an allocation (network widths, input shape, the
    /// pre-processing's frame size and count) against fixed limits, and the network's variables
    /// against the file's size: `file_len` bytes cannot hold more than `file_len / 4` scalars.
    pub fn check_limits(&self, file_len: usize) -> Result<()> {
        let m = &self.model;
        let widths = [
            m.stem_channels,
            m.embed_dim,
            self.bridge_channels,
            m.in_channels,
            m.extra_in_channels,
        ]
        .into_iter()
        .chain(m.mixed.iter().flatten().copied());
        for w in widths {
            ensure!(
                w <= MAX_WIDTH,
                "a network width of {w} exceeds the limit of {MAX_WIDTH}"
            );
        }
        ensure!(
            m.pool.iter().all(|&p| (1..=64).contains(&p)),
            "pool {:?}: each side must be 1..=64",
            m.pool
        );
        ensure!(
            (2..=MAX_CLASSES).contains(&self.classes.len()),
            "{} classes: must be 2..={MAX_CLASSES}",
            self.classes.len()
        );
        let [c, t, h, w] = self.input_shape;
        ensure!(
            (1..=5).contains(&c)
                && (1..MAX_FRAMES).contains(&t)
                && (1..=MAX_SIDE).contains(&h)
                && (1..=MAX_SIDE).contains(&w),
            "input shape {:?} is outside [1..=5, 1..{MAX_FRAMES}, 1..={MAX_SIDE}, 1..={MAX_SIDE}]",
            self.input_shape
        );
        let pp = &self.preprocess;
        ensure!(
            pp.size <= MAX_SIDE && pp.frames <= MAX_FRAMES,
            "pre-processing size {} / frames {} exceed the limits ({MAX_SIDE} px, {MAX_FRAMES} frames)",
            pp.size,
            pp.frames
        );
        ensure!(
            [h, w] == [pp.size, pp.size] && t + 1 == pp.frames,
            "input shape {:?} does not follow from the pre-processing (size {}, {} frames)",
            self.input_shape,
            pp.size,
            pp.frames
        );
        let widest = [
            m.stem_channels,
            m.mixed_out(0),
            m.mixed_out(1),
            c + self.bridge_channels,
        ]
        .into_iter()
        .max()
        .unwrap_or(0) as u128;
        let act = widest * (t * h * w) as u128;
        ensure!(
            act <= MAX_ACTIVATION,
            "the network would hold activations of {act} scalars (widest layer {widest} x {t} x {h} x {w}); the limit is {MAX_ACTIVATION}"
        );
        let mut vars = m.variable_count();
        if !matches!(self.variant()?, Variant::Single) {
            let mut second = m.clone();
            if let Variant::C { bridge_channels } = self.variant()? {
                second.extra_in_channels = bridge_channels;
            }
            vars += second.variable_count();
        }
        let room = (file_len / 4) as u128;
        ensure!(
            vars <= room,
            "the network it describes has {vars} variables, more than the {file_len}-byte file can hold"
        );
        Ok(())
    }

    pub fn variant(&self) -> Result<Variant> {
        Ok(match self.variant.as_str() {
            "p" => Variant::P { gamma: self.gamma },
            "c" => Variant::C {
                bridge_channels: self.bridge_channels,
            },
            "gfe" | "afe" => Variant::Single,
            v => bail!("unknown variant {v:?}"),
        })
    }
}

#[derive(Clone, Debug)]
pub struct Bundle {
    pub meta: BundleMeta,
    pub tensors: BTreeMap<String, Array>,
}

/// blake3 over every tensor (name, dtype, shape, bytes) and the metadata (with this field
/// blank): a bundle's metadata is as much a part of it as its weights.
fn checksum(tensors: &BTreeMap<String, Array>, meta: &BundleMeta) -> String {
    let mut m = meta.clone();
    m.tensors_blake3.clear();
    let mut h = PartsHasher::new();
    h.part(&serde_json::to_vec(&m).expect("bundle metadata serialises"));
    for (name, a) in tensors {
        h.part(name.as_bytes()).part(a.dtype().as_bytes());
        for d in a.shape() {
            h.raw(&(*d as u64).to_le_bytes());
        }
        h.raw(&le_bytes(a));
    }
    h.finalize().to_hex().to_string()
}

fn le_bytes(a: &Array) -> Vec<u8> {
    match a {
        Array::F32 { data, .. } => tensors::to_le_bytes(data),
        Array::I64 { data, .. } => tensors::to_le_bytes(data),
        Array::U8 { data, .. } => data.clone(),
    }
}

impl Bundle {
    /// The safetensors bytes (deterministic: tensors sorted by name, metadata in a BTreeMap).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes: Vec<(String, Vec<u8>, safetensors::Dtype, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(n, a)| {
                let dt = match a {
                    Array::F32 { .. } => safetensors::Dtype::F32,
                    Array::I64 { .. } => safetensors::Dtype::I64,
                    Array::U8 { .. } => safetensors::Dtype::U8,
                };
                (n.clone(), le_bytes(a), dt, a.shape().to_vec())
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, b, dt, s)| {
                Ok((
                    n.clone(),
                    safetensors::tensor::TensorView::new(*dt, s.clone(), b)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut m = self.meta.clone();
        m.tensors_blake3 = checksum(&self.tensors, &m);
        let meta =
            std::collections::HashMap::from([(META_KEY.to_string(), serde_json::to_string(&m)?)]);
        Ok(safetensors::serialize(views, Some(meta))?)
    }

    /// Parses and checks bundle bytes; `source` names the file in errors.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
            anyhow::anyhow!(
                "{source}: not a readable safetensors file ({e}): truncated, or not a model bundle"
            )
        })?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow::anyhow!("{source}: corrupt safetensors file ({e}): truncated?"))?;
        let md = header.metadata().clone().unwrap_or_default();
        let text = md.get(META_KEY).with_context(|| {
            format!("{source}: no `{META_KEY}` metadata: not an mpfnet model bundle")
        })?;
        let probe: Value = serde_json::from_str(text)
            .with_context(|| format!("{source}: `{META_KEY}` metadata is not JSON"))?;
        if probe["format"] != FORMAT {
            bail!(
                "{source}: bundle format {} is not the one this build reads ({FORMAT})",
                probe["format"]
            );
        }
        let meta: BundleMeta = serde_json::from_value(probe)
            .with_context(|| format!("{source}: `{META_KEY}` metadata"))?;
        // Nothing is sized by the metadata before it is checked against sane limits and
        // against the file itself: bundles are shared, and a crafted one must be refused, not
        // abort the process on an allocation.
        meta.check_limits(bytes.len())
            .with_context(|| format!("{source}: `{META_KEY}` metadata refused"))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let data = view.data();
            let a = match view.dtype() {
                safetensors::Dtype::F32 => Array::f32(shape, tensors::from_le_bytes(data))?,
                safetensors::Dtype::I64 => Array::i64(shape, tensors::from_le_bytes(data))?,
                safetensors::Dtype::U8 => Array::u8(shape, data.to_vec())?,
                d => bail!("{source}: tensor `{name}` has dtype {d:?}, not one a bundle holds"),
            };
            tensors.insert(name, a);
        }
        if checksum(&tensors, &meta) != meta.tensors_blake3 {
            bail!("{source}: the tensors' checksum does not match the one recorded: the file was modified or corrupted");
        }
        Ok(Bundle { meta, tensors })
    }

    pub fn read(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading bundle {}", path.display()))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Refuses clips prepared otherwise than the model was trained on: `asked` are `features`
    /// parameters (JSON); every one that differs from the bundle's is named.
    /// Refuses a flow estimator other than the one that made the training data: for FlowNet2,
    /// a checkpoint at the recorded path whose content is not the one trained with.
    pub fn check_flow_estimator(&self) -> Result<()> {
        if self.meta.flow_estimator.is_empty() {
            return Ok(());
        }
        let got = self.meta.preprocess.estimator()?.name();
        ensure!(
            got == self.meta.flow_estimator,
            "the model was trained on flows from {}, but this machine's is {got}: point `flownet2.weights` at the same checkpoint",
            self.meta.flow_estimator
        );
        Ok(())
    }

    pub fn check_preprocess(&self, asked: &Value) -> Result<()> {
        let mine = serde_json::to_value(&self.meta.preprocess)?;
        let mut diffs = Vec::new();
        json_diff("", &mine, asked, &mut diffs);
        if !diffs.is_empty() {
            bail!(
                "the bundle was made with other pre-processing than asked for:\n  {}",
                diffs.join("\n  ")
            );
        }
        Ok(())
    }
}

fn json_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                json_diff(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{path}: bundle {a}, asked {b}")),
        _ => {}
    }
}

/// A bundle's model on a device, ready to classify prepared clips.
pub struct Predictor {
    pub meta: BundleMeta,
    model: MetaModel,
    /// class index of each prototype row
    proto_classes: Vec<usize>,
    protos: Vec<Tensor>,
    dev: Device,
}

impl Predictor {
    /// Builds the network the metadata describes and fills every variable from the bundle: a
    /// missing, extra or wrongly shaped tensor is an error naming it.
    pub fn new(b: &Bundle, dev: &Device) -> Result<Self> {
        let m = &b.meta;
        let variant = m.variant()?;
        let fac = factory(&m.model);
        let secondary = (!matches!(variant, Variant::Single)).then(VarMap::new);
        let model = MetaModel::new(
            &fac as &EncoderFactory,
            variant,
            VarMap::new(),
            secondary,
            m.input_shape,
            0,
            dev,
        )
        .context("building the bundle's network from its metadata")?;
        let mut used = BTreeSet::new();
        for (tag, map) in model.maps() {
            for (name, var) in sorted_vars(map) {
                let key = format!("{tag}/{name}");
                let a = b.tensors.get(&key).with_context(|| {
                    format!("bundle lacks tensor `{key}`, which {} needs", m.label)
                })?;
                ensure!(
                    a.shape() == var.dims(),
                    "bundle tensor `{key}` has shape {:?}; the network needs {:?}",
                    a.shape(),
                    var.dims()
                );
                var.set(&Tensor::from_slice(a.as_f32()?, a.shape(), dev)?)?;
                used.insert(key);
            }
        }
        if let Some(k) = b
            .tensors
            .keys()
            .find(|k| (k.starts_with("p/") || k.starts_with("s/")) && !used.contains(*k))
        {
            bail!(
                "bundle tensor `{k}` is not part of the {} network its metadata describes",
                m.label
            );
        }
        let pc = b
            .tensors
            .get("proto_classes")
            .context("bundle lacks `proto_classes`")?;
        let proto_classes: Vec<usize> = pc.as_i64()?.iter().map(|&c| c as usize).collect();
        ensure!(
            proto_classes.len() >= 2 && proto_classes.iter().all(|&c| c < m.classes.len()),
            "bundle `proto_classes` {proto_classes:?} does not fit its {} classes",
            m.classes.len()
        );
        // one forward pass tells each branch's embedding width
        let [c, t, h, w] = m.input_shape;
        let probe = model.embed(
            &Tensor::zeros((1, c, t, h, w), candle_core::DType::F32, dev)?,
            false,
        )?;
        let mut protos = Vec::new();
        for (k, (e, _)) in probe.iter().enumerate() {
            let name = format!("proto.{k}");
            let a = b
                .tensors
                .get(&name)
                .with_context(|| format!("bundle lacks `{name}`"))?;
            let want = [proto_classes.len(), e.dim(1)?];
            ensure!(
                a.shape() == want,
                "bundle tensor `{name}` has shape {:?}; expected {want:?} (classes x embedding)",
                a.shape()
            );
            protos.push(Tensor::from_slice(a.as_f32()?, a.shape(), dev)?);
        }
        Ok(Predictor {
            meta: m.clone(),
            model,
            proto_classes,
            protos,
            dev: dev.clone(),
        })
    }

    /// The model's input [1, C, T, H, W] from a `features` tensor [5, T, H, W].
    pub fn input(&self, x: &[f32], shape: &[usize]) -> Result<Tensor> {
        let [c, t, h, w] = self.meta.input_shape;
        ensure!(
            shape.len() == 4 && shape[0] == 5 && shape[1..] == [t, h, w],
            "prepared clip has shape {shape:?}; the bundle needs [5, {t}, {h}, {w}]"
        );
        let per = t * h * w;
        let r = self.meta.channels.range();
        ensure!(
            r.len() == c,
            "bundle channels {:?} do not give {c} input channels",
            self.meta.channels
        );
        Ok(Tensor::from_slice(
            &x[r.start * per..r.end * per],
            (1, c, t, h, w),
            &self.dev,
        )?)
    }

    /// Class probabilities (all classes, in `meta.classes` order) of one model input.
    pub fn classify(&self, input: &Tensor) -> Result<Vec<f32>> {
        let e: Vec<Tensor> = self
            .model
            .embed(input, false)?
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let probs = class_probs(
            &self.model,
            &e,
            &self.proto_classes,
            &self.protos,
            &self.meta.predict,
            self.meta.classes.len(),
        )?;
        Ok(probs.into_iter().next().unwrap_or_default())
    }

    /// Grad-CAM of one model input towards the prototype of `class`, on the encoder whose
    /// embedding the prediction uses last (the AFE for P and C).
    pub fn grad_cam(&self, input: &Tensor, class: usize) -> Result<Cam> {
        let row = self
            .proto_classes
            .iter()
            .position(|&c| c == class)
            .with_context(|| format!("class {class} has no prototype"))?;
        let proto = self.protos.last().context("no prototypes")?.get(row)?;
        let (enc, x) = self.model.cam_encoder(input)?;
        grad_cam(
            enc,
            &x.detach(),
            &prototype_score(proto, self.meta.predict.scale),
        )
    }
}

/// A bundle of a seeded, untrained tiny MPFNet (P or C), 3 classes, 16 px, L = 3: what the
/// tests (here and the CLI's hostile-input tests) start from.
pub fn tiny_example(variant: &str) -> Bundle {
    use crate::train::meta::MetaConfig;
    use serde_json::json;
    let model: CaI3dConfig = serde_json::from_value(json!({
        "stem_channels": 4, "mixed": [[4, 4, 4, 2, 2, 2], [4, 4, 4, 2, 2, 2]],
        "pool": [1, 1, 1], "embed_dim": 8
    }))
    .unwrap();
    let preprocess = FeatureParams {
        size: 16,
        frames: 3,
        ..Default::default()
    };
    let meta = BundleMeta {
        format: FORMAT.into(),
        classes: vec!["negative".into(), "positive".into(), "surprise".into()],
        variant: variant.into(),
        label: "test".into(),
        gamma: 0.7,
        bridge_channels: 2,
        model: model.clone(),
        channels: Channels::Both,
        input_shape: [5, 2, 16, 16],
        predict: MetaConfig::default().predict_config(),
        preprocess,
        recipe: "0".repeat(64),
        train_subjects: 3,
        train_samples: 30,
        flow_estimator: String::new(),
        tensors_blake3: String::new(),
    };
    let dev = Device::Cpu;
    let fac = factory(&model);
    let v = meta.variant().unwrap();
    let m = MetaModel::new(
        &fac as &EncoderFactory,
        v,
        VarMap::new(),
        Some(VarMap::new()),
        meta.input_shape,
        3,
        &dev,
    )
    .unwrap();
    let mut tensors = BTreeMap::new();
    for (tag, map) in m.maps() {
        for (n, var) in sorted_vars(map) {
            let t = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            tensors.insert(
                format!("{tag}/{n}"),
                Array::f32(var.dims().to_vec(), t).unwrap(),
            );
        }
    }
    for k in 0..m.embed_weights().len() {
        let p: Vec<f32> = (0..24).map(|i| ((i * 7 + k) % 5) as f32 - 2.0).collect();
        tensors.insert(format!("proto.{k}"), Array::f32(vec![3, 8], p).unwrap());
    }
    tensors.insert(
        "proto_classes".into(),
        Array::i64(vec![3], vec![0, 1, 2]).unwrap(),
    );
    Bundle { meta, tensors }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn err_of<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn round_trips_and_classifies_deterministically() {
        for v in ["p", "c"] {
            let b = tiny_example(v);
            let bytes = b.to_bytes().unwrap();
            assert_eq!(
                bytes,
                b.to_bytes().unwrap(),
                "serialisation is deterministic"
            );
            let back = Bundle::from_bytes(&bytes, "t").unwrap();
            assert_eq!(back.tensors, b.tensors);
            let p = Predictor::new(&back, &Device::Cpu).unwrap();
            let x: Vec<f32> = (0..5 * 2 * 16 * 16)
                .map(|i| ((i * 31 % 97) as f32 / 97.0) - 0.5)
                .collect();
            let input = p.input(&x, &[5, 2, 16, 16]).unwrap();
            let a = p.classify(&input).unwrap();
            assert_eq!(a.len(), 3);
            assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{a:?}");
            assert_eq!(a, p.classify(&input).unwrap(), "same clip, same output");
            let cam = p.grad_cam(&input, 1).unwrap();
            assert!(cam.values.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn metadata_edits_break_the_checksum_and_crafted_sizes_hit_the_limits() {
        // an edit of the metadata alone (the checksum left as it was) is caught
        let b = tiny_example("p");
        let mut bytes = b.to_bytes().unwrap();
        // train_samples 30 -> 31, in place (same length, so the file stays well-formed)
        let pat = br#"train_samples\":30"#;
        let at = bytes
            .windows(pat.len())
            .position(|w| w == pat)
            .expect("the metadata holds train_samples");
        bytes[at + pat.len() - 1] = b'1';
        let e = err_of(Bundle::from_bytes(&bytes, "m.safetensors"));
        assert!(e.contains("checksum"), "{e}");
        // crafted numbers with a recomputed checksum are refused by the limits, not allocated
        let crafted = |edit: &dyn Fn(&mut Bundle)| {
            let mut b = tiny_example("c");
            edit(&mut b);
            err_of(Bundle::from_bytes(&b.to_bytes().unwrap(), "m.safetensors"))
        };
        let e = crafted(&|b| b.meta.model.stem_channels = 1 << 20);
        assert!(e.contains("width of 1048576"), "{e}");
        let e = crafted(&|b| b.meta.preprocess.size = 200_000);
        assert!(e.contains("size 200000"), "{e}");
        let e = crafted(&|b| b.meta.model.mixed = [[2048; 6], [2048; 6]]);
        assert!(e.contains("more than the"), "{e}");
        // the honest bundle is within every limit, with its variables counted exactly
        let m = &b.meta.model;
        let vars: usize = b
            .tensors
            .iter()
            .filter(|(k, _)| k.starts_with("p/"))
            .map(|(_, a)| a.len())
            .sum();
        assert_eq!(
            m.variable_count(),
            vars as u128,
            "variable_count matches the built network"
        );
    }

    #[test]
    fn truncated_or_flipped_files_are_refused() {
        let bytes = tiny_example("c").to_bytes().unwrap();
        let e = err_of(Bundle::from_bytes(
            &bytes[..bytes.len() - 100],
            "m.safetensors",
        ));
        assert!(
            e.contains("m.safetensors") && e.contains("truncated"),
            "{e}"
        );
        let e = err_of(Bundle::from_bytes(&bytes[..5], "m.safetensors"));
        assert!(e.contains("truncated"), "{e}");
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 9] ^= 0x40;
        let e = err_of(Bundle::from_bytes(&flipped, "m.safetensors"));
        assert!(e.contains("checksum"), "{e}");
        let plain = safetensors::serialize(
            Vec::<(String, safetensors::tensor::TensorView)>::new(),
            None,
        )
        .unwrap();
        let e = err_of(Bundle::from_bytes(&plain, "x"));
        assert!(e.contains("not an mpfnet model bundle"), "{e}");
    }

    #[test]
    fn wrong_or_missing_tensors_are_named() {
        let mut b = tiny_example("p");
        let name = b
            .tensors
            .keys()
            .find(|k| k.starts_with("s/"))
            .unwrap()
            .clone();
        b.tensors
            .insert(name.clone(), Array::f32(vec![1], vec![0.0]).unwrap());
        let b = Bundle::from_bytes(&b.to_bytes().unwrap(), "t").unwrap();
        let e = err_of(Predictor::new(&b, &Device::Cpu));
        assert!(e.contains(&name) && e.contains("shape"), "{e}");

        let mut b = tiny_example("p");
        b.tensors.remove(&name);
        let e = err_of(Predictor::new(&b, &Device::Cpu));
        assert!(e.contains(&name) && e.contains("lacks"), "{e}");

        let mut b = tiny_example("p");
        b.tensors.insert(
            "proto.1".into(),
            Array::f32(vec![3, 4], vec![0.0; 12]).unwrap(),
        );
        let e = err_of(Predictor::new(&b, &Device::Cpu));
        assert!(e.contains("proto.1"), "{e}");

        let mut b = tiny_example("p");
        b.tensors
            .insert("s/extra".into(), Array::f32(vec![1], vec![0.0]).unwrap());
        let e = err_of(Predictor::new(&b, &Device::Cpu));
        assert!(e.contains("s/extra"), "{e}");
    }

    #[test]
    fn other_preprocessing_than_asked_is_refused_by_name() {
        let b = tiny_example("c");
        let same = serde_json::to_value(&b.meta.preprocess).unwrap();
        b.check_preprocess(&same).unwrap();
        let mut other = same.clone();
        other["size"] = json!(128);
        other["flow"]["lambda"] = json!(0.3);
        let e = err_of(b.check_preprocess(&other));
        assert!(e.contains("size: bundle 16, asked 128"), "{e}");
        assert!(e.contains("flow.lambda"), "{e}");
    }
}
