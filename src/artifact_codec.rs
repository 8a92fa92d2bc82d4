//! Artifacts <-> safetensors bytes. Deterministic: the same artifact always gives the same bytes,
//! so a blob's digest is a digest of its content (which is what gives early cutoff).
//!
//! Layout: every array is a tensor under its own name; every file is a U8 tensor named
//! `file:NAME`; the JSON document and the axis go in the header metadata under `mpfnet.meta` and
//! `mpfnet.axis`. Python reads it with `safetensors.safe_open(path, "np")`.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use mpfnet_api::{Array, Artifact};
use mpfnet_cache::tensors::{self, Dtype, TensorEntry};

pub const FORMAT: &str = "mpfnet-artifact/1";
const FILE_PREFIX: &str = "file:";

pub fn encode(art: &Artifact, extra_meta: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut entries = Vec::with_capacity(art.tensors.len() + art.files.len());
    for (name, a) in &art.tensors {
        if name.starts_with(FILE_PREFIX) {
            bail!("tensor name `{name}` uses the reserved prefix `{FILE_PREFIX}`");
        }
        let (dtype, data) = match a {
            Array::F32 { data, .. } => (Dtype::F32, tensors::to_le_bytes(data)),
            Array::I64 { data, .. } => (Dtype::I64, tensors::to_le_bytes(data)),
            Array::U8 { data, .. } => (Dtype::U8, data.clone()),
        };
        entries.push(TensorEntry {
            name: name.clone(),
            dtype,
            shape: a.shape().to_vec(),
            data,
        });
    }
    for (name, bytes) in &art.files {
        entries.push(TensorEntry {
            name: format!("{FILE_PREFIX}{name}"),
            dtype: Dtype::U8,
            shape: vec![bytes.len()],
            data: bytes.clone(),
        });
    }
    let mut meta = extra_meta.clone();
    meta.insert("mpfnet.format".into(), FORMAT.into());
    meta.insert("mpfnet.meta".into(), serde_json::to_string(&art.meta)?);
    if let Some(axis) = &art.axis {
        meta.insert("mpfnet.axis".into(), serde_json::to_string(axis)?);
    }
    tensors::encode(&entries, &meta)
}

pub fn decode(bytes: &[u8]) -> Result<Artifact> {
    let (entries, meta) = tensors::decode(bytes)?;
    let mut art = Artifact::new();
    for e in entries {
        if let Some(name) = e.name.strip_prefix(FILE_PREFIX) {
            art.files.insert(name.to_string(), e.data);
            continue;
        }
        let arr = match e.dtype {
            Dtype::F32 => Array::f32(e.shape, tensors::from_le_bytes(&e.data))?,
            Dtype::I64 => Array::i64(e.shape, tensors::from_le_bytes(&e.data))?,
            Dtype::U8 => Array::u8(e.shape, e.data)?,
            other => bail!(
                "tensor `{}` has dtype {other:?}, which artifacts do not use",
                e.name
            ),
        };
        art.tensors.insert(e.name, arr);
    }
    if let Some(m) = meta.get("mpfnet.meta") {
        art.meta = serde_json::from_str(m).context("artifact metadata `mpfnet.meta`")?;
    }
    if let Some(a) = meta.get("mpfnet.axis") {
        art.axis = Some(serde_json::from_str(a).context("artifact metadata `mpfnet.axis`")?);
    }
    Ok(art)
}

/// Header metadata of an encoded artifact (for `cache show`), without decoding the arrays.
pub fn metadata(bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    Ok(tensors::decode(bytes)?.1)
}
