//! Saving and resuming a training loop's state through a `Checkpointer`.
use crate::train::ckpt::{decode, encode, restore_vars, section, Checkpointer, StateWriter};
use crate::train::sgd::SgdMomentum;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;

/// Serialises the collected tensors plus the JSON state and hands them to `ckpt`.
pub fn save<S: Serialize>(
    ckpt: &mut dyn Checkpointer,
    epoch: usize,
    w: &StateWriter,
    state: &S,
) -> Result<()> {
    let json = serde_json::to_string(state).context("serialising training state")?;
    let bytes = encode(&w.tensors, &json)?;
    ckpt.save(epoch, bytes)
        .with_context(|| format!("saving checkpoint at {epoch}"))
}

/// A loaded checkpoint: epoch, state, tensors.
pub type Loaded<S> = (usize, S, HashMap<String, Tensor>);

/// The latest checkpoint: its epoch, state and tensors.
pub fn load<S: DeserializeOwned>(
    ckpt: &mut dyn Checkpointer,
    dev: &Device,
) -> Result<Option<Loaded<S>>> {
    let Some((epoch, bytes)) = ckpt.load_latest().context("loading latest checkpoint")? else {
        return Ok(None);
    };
    // The store verified the file's own hash, but a checkpoint is a file from a shared folder:
    // one that does not parse is ignored (training starts over), never a failed node.
    let parsed = decode(&bytes, dev).and_then(|(tensors, json)| {
        let state: S = serde_json::from_str(&json).context("checkpoint state")?;
        Ok((state, tensors))
    });
    match parsed {
        Ok((state, tensors)) => Ok(Some((epoch, state, tensors))),
        Err(e) => {
            tracing::warn!("checkpoint at {epoch} unusable, training from the start: {e:#}");
            Ok(None)
        }
    }
}

/// Writes one VarMap and its optimiser under `tag`.
pub fn write_part(w: &mut StateWriter, tag: &str, map: &VarMap, opt: &SgdMomentum) -> Result<()> {
    w.vars(tag, map)?;
    w.momentum(tag, opt);
    Ok(())
}

/// Restores one VarMap and its optimiser from `tag`.
pub fn read_part(
    t: &HashMap<String, Tensor>,
    tag: &str,
    map: &VarMap,
    opt: &mut SgdMomentum,
) -> Result<()> {
    restore_vars(t, tag, map)?;
    opt.load_buffers(&section(t, tag, "mom"))
        .with_context(|| format!("restoring {tag} momentum"))
}

/// Saves when `done` (epochs or steps completed) is a multiple of `every` or the last one.
pub fn due(every: usize, done: usize, total: usize) -> bool {
    every > 0 && (done.is_multiple_of(every) || done == total)
}
