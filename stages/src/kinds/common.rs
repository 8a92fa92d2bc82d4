//! Helpers shared by the stage kinds: typed parameters, array conversions, seeds.

use anyhow::{Context, Result};
use mpfnet_api::{Array, Artifact, Input};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A stage's defaults from its typed parameter struct (the schema the engine checks against).
pub fn defaults_of<P: Serialize + Default>() -> Value {
    serde_json::to_value(P::default()).expect("parameters serialise")
}

/// Deep validation: the merged parameters must deserialise into the typed struct.
pub fn validate_as<P: DeserializeOwned>(v: &Value) -> Result<()> {
    serde_json::from_value::<P>(v.clone())
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// blake3 of several strings, length-prefixed (item keys).
pub fn key_of(parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// All artifacts of a gathered input, loaded lazily, keyed by item id.
pub fn gathered(input: &Input) -> Result<std::collections::BTreeMap<&str, &mpfnet_api::Handle>> {
    Ok(input
        .many()?
        .iter()
        .map(|(id, h)| (id.as_str(), h))
        .collect())
}

pub fn f32_array(shape: Vec<usize>, data: Vec<f32>) -> Result<Array> {
    Array::f32(shape, data)
}

pub fn i64_array(data: Vec<i64>) -> Array {
    let n = data.len();
    Array::I64 {
        shape: vec![n],
        data,
    }
}

/// Reads a JSON field of an artifact's meta into a typed value.
pub fn meta_field<T: DeserializeOwned>(art: &Artifact, field: &str) -> Result<T> {
    serde_json::from_value(art.meta.get(field).cloned().unwrap_or(Value::Null))
        .with_context(|| format!("artifact meta field `{field}`"))
}
