//! Model (+ optimiser) state <-> bytes in the safetensors format.
//!
//! Model variables keep their VarMap names (BatchNorm running statistics included), so a
//! checkpoint can be fed to `load_into` directly; SGD momentum buffers are stored as
//! `__sgd.momentum.<name>`. Bytes are deterministic: safetensors orders tensors by dtype and
//! name, and no metadata map is written.

use crate::model::sgd::Sgd;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use std::collections::{BTreeMap, HashMap};

pub const MOMENTUM_PREFIX: &str = "__sgd.momentum.";

fn names_by_id(varmap: &VarMap) -> HashMap<candle_core::TensorId, String> {
    varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (v.as_tensor().id(), k.clone()))
        .collect()
}

/// Serialises every variable of `varmap` and, if given, the optimiser's momentum buffers.
pub fn save_checkpoint(varmap: &VarMap, opt: Option<&Sgd>) -> Result<Vec<u8>> {
    let mut all: BTreeMap<String, Tensor> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    if let Some(opt) = opt {
        let ids = names_by_id(varmap);
        for (var, buf) in opt.vars().iter().zip(opt.momentum_buffers()) {
            let Some(buf) = buf else { continue };
            let Some(name) = ids.get(&var.as_tensor().id()) else {
                bail!("save_checkpoint: an optimiser variable is not in the VarMap");
            };
            all.insert(format!("{MOMENTUM_PREFIX}{name}"), buf.clone());
        }
    }
    let bytes = safetensors::serialize(all.iter().map(|(k, v)| (k.as_str(), v)), None)
        .context("save_checkpoint: safetensors serialisation")?;
    Ok(bytes)
}

/// Reads every tensor of a checkpoint (model variables and momentum buffers).
pub fn read_checkpoint(bytes: &[u8], device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load_buffer(bytes, device).context("reading checkpoint")
}

/// Restores `varmap` (every variable must be present with its shape) and, if given, the
/// optimiser's momentum buffers (absent buffers are reset).
pub fn load_checkpoint(bytes: &[u8], varmap: &VarMap, opt: Option<&mut Sgd>) -> Result<()> {
    let data = {
        let vm = varmap.data().lock().unwrap();
        vm.values().next().map(|v| v.device().clone())
    };
    let device = data.unwrap_or(Device::Cpu);
    let tensors = read_checkpoint(bytes, &device)?;
    {
        let vm = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = vm.keys().collect();
        names.sort();
        for name in names {
            let t = tensors
                .get(name)
                .with_context(|| format!("load_checkpoint: {name} missing from checkpoint"))?;
            vm[name]
                .set(t)
                .with_context(|| format!("load_checkpoint: setting {name}"))?;
        }
    }
    if let Some(opt) = opt {
        let ids = names_by_id(varmap);
        let keys: Vec<Option<String>> = opt
            .vars()
            .iter()
            .map(|v| ids.get(&v.as_tensor().id()).cloned())
            .collect();
        for (i, name) in keys.into_iter().enumerate() {
            let name = name.context("load_checkpoint: optimiser variable not in the VarMap")?;
            let buf = tensors.get(&format!("{MOMENTUM_PREFIX}{name}")).cloned();
            opt.set_momentum_buffer(i, buf)
                .with_context(|| format!("load_checkpoint: momentum of {name}"))?;
        }
    }
    Ok(())
}

/// blake3 digest (hex) of the model state (the checkpoint bytes without optimiser).
pub fn weights_digest(varmap: &VarMap) -> Result<String> {
    Ok(blake3::hash(&save_checkpoint(varmap, None)?)
        .to_hex()
        .to_string())
}
