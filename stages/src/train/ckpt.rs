//! Checkpoints: variables, momentum buffers and a JSON state in one safetensors buffer.
use crate::train::init::{restore, snapshot};
use crate::train::sgd::SgdMomentum;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use std::collections::HashMap;

pub trait Checkpointer {
    fn save(&mut self, epoch: usize, bytes: Vec<u8>) -> Result<()>;
    fn load_latest(&mut self) -> Result<Option<(usize, Vec<u8>)>>;
}

/// Never saves, never resumes.
pub struct NoCheckpoint;

impl Checkpointer for NoCheckpoint {
    fn save(&mut self, _: usize, _: Vec<u8>) -> Result<()> {
        Ok(())
    }
    fn load_latest(&mut self) -> Result<Option<(usize, Vec<u8>)>> {
        Ok(None)
    }
}

/// Keeps checkpoints in memory (tests, and callers that persist them elsewhere).
#[derive(Default, Clone)]
pub struct MemCheckpointer {
    pub saved: Vec<(usize, Vec<u8>)>,
}

impl Checkpointer for MemCheckpointer {
    fn save(&mut self, epoch: usize, bytes: Vec<u8>) -> Result<()> {
        self.saved.push((epoch, bytes));
        Ok(())
    }
    fn load_latest(&mut self) -> Result<Option<(usize, Vec<u8>)>> {
        Ok(self.saved.iter().max_by_key(|(e, _)| *e).cloned())
    }
}

const STATE_KEY: &str = "mpfnet_state";

/// Named tensors plus a JSON document, serialised as safetensors (JSON in the header metadata).
pub fn encode(tensors: &[(String, Tensor)], state_json: &str) -> Result<Vec<u8>> {
    let meta = HashMap::from([(STATE_KEY.to_string(), state_json.to_string())]);
    let data = tensors.iter().map(|(k, t)| (k.as_str(), t));
    safetensors::serialize(data, Some(meta)).context("encoding checkpoint")
}

pub fn decode(bytes: &[u8], dev: &Device) -> Result<(HashMap<String, Tensor>, String)> {
    let tensors =
        candle_core::safetensors::load_buffer(bytes, dev).context("decoding checkpoint tensors")?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(bytes).context("decoding checkpoint header")?;
    let state = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STATE_KEY).cloned())
        .context("checkpoint has no state document")?;
    Ok((tensors, state))
}

/// Collects the tensors of a training state under prefixes: `<tag>/var/<name>`, `<tag>/mom/<name>`.
#[derive(Default)]
pub struct StateWriter {
    pub tensors: Vec<(String, Tensor)>,
}

impl StateWriter {
    pub fn vars(&mut self, tag: &str, map: &VarMap) -> Result<()> {
        for (k, t) in snapshot(map)? {
            self.tensors.push((format!("{tag}/var/{k}"), t));
        }
        Ok(())
    }

    pub fn values(&mut self, tag: &str, values: &[(String, Tensor)]) {
        for (k, t) in values {
            self.tensors.push((format!("{tag}/var/{k}"), t.clone()));
        }
    }

    pub fn momentum(&mut self, tag: &str, opt: &SgdMomentum) {
        for (k, t) in opt.buffers() {
            self.tensors.push((format!("{tag}/mom/{k}"), t));
        }
    }
}

/// Tensors under `<tag>/<kind>/` with the prefix stripped.
pub fn section(all: &HashMap<String, Tensor>, tag: &str, kind: &str) -> HashMap<String, Tensor> {
    let p = format!("{tag}/{kind}/");
    all.iter()
        .filter_map(|(k, t)| k.strip_prefix(&p).map(|n| (n.to_string(), t.clone())))
        .collect()
}

pub fn section_sorted(
    all: &HashMap<String, Tensor>,
    tag: &str,
    kind: &str,
) -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = section(all, tag, kind).into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

pub fn restore_vars(all: &HashMap<String, Tensor>, tag: &str, map: &VarMap) -> Result<()> {
    restore(map, &section_sorted(all, tag, "var"))
        .with_context(|| format!("restoring {tag} variables"))
}
