//! Helpers shared by the stage kinds: typed parameters, array conversions, seeds.

use anyhow::{Context, Result};
use mpfnet_api::{Array, Artifact, Input};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A stage's defaults from its typed parameter struct (the schema the engine checks against).
///
/// An `f32` field serialises as its exact binary value (`0.15` -> `0.15000000596046448`); such
/// numbers are written back as the shortest decimal that is the same `f32`, so defaults print
/// as a person wrote them (in `plan`, `cache show`, run records) and parse to the same value.
pub fn defaults_of<P: Serialize + Default>() -> Value {
    let mut v = serde_json::to_value(P::default()).expect("parameters serialise");
    shortest_f32(&mut v);
    v
}

fn shortest_f32(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            let g = f as f32;
            if g as f64 == f {
                if let Some(m) = g
                    .to_string()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    *n = m;
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(shortest_f32),
        Value::Object(o) => o.values_mut().for_each(shortest_f32),
        _ => {}
    }
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

#[cfg(test)]
mod defaults_tests {
    use super::*;

    #[test]
    fn f32_defaults_print_as_written_and_parse_to_the_same_value() {
        let d = defaults_of::<crate::kinds::features::FeatureParams>();
        let text = d.to_string();
        assert!(text.contains("\"lambda\":0.15"), "{text}");
        assert!(!text.contains("0.15000000596"), "{text}");
        let back: crate::kinds::features::FeatureParams = serde_json::from_value(d).unwrap();
        assert_eq!(
            back.flow.lambda,
            crate::kinds::features::FeatureParams::default().flow.lambda
        );
    }
}
