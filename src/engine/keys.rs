//! Node keys: blake3 over everything a node's output may depend on. The recipe must not change
//! without bumping [`KEY_FORMAT`]: every cached result would otherwise be silently orphaned
//! (or worse, reused for a different computation).

use std::collections::HashMap;

use anyhow::{bail, Result};
use mpfnet_api::Stage;
use mpfnet_cache::{Digest, PartsHasher};
use serde_json::{json, Value};

use super::{Bind, Node, NodeState, Shared};

/// Bumped when the key recipe or artifact layout changes: old cache entries then never match.
pub const KEY_FORMAT: &str = "mpfnet-node-key/1";

/// The seed of one node: a function of the pipeline's seed, the stage and the axis item only.
pub(super) fn node_seed(pipeline_seed: u64, stage: &str, item_id: &str) -> u64 {
    PartsHasher::new()
        .part(b"node-seed")
        .part(&pipeline_seed.to_le_bytes())
        .part(stage.as_bytes())
        .part(item_id.as_bytes())
        .finalize_u64()
}

impl Shared {
    /// blake3 over everything the node's output may depend on; also the recipe itself (its
    /// fields go into the node's provenance).
    pub fn key(&self, node: &Node, digests: &HashMap<usize, String>) -> (Digest, Value) {
        let decl = &self.pipeline.stages[&node.stage];
        let stage = self.stage(node);
        let mut inputs = serde_json::Map::new();
        for (input, b) in &node.inputs {
            let v = match b {
                Bind::One(i) => json!(digests[i]),
                Bind::Many(v) => json!(v
                    .iter()
                    .map(|(id, i)| json!([id, digests[i]]))
                    .collect::<Vec<_>>()),
            };
            inputs.insert(input.clone(), v);
        }
        let recipe = json!({
            "format": KEY_FORMAT,
            "kind": decl.kind,
            "version": stage.version(),
            "code": stage.code(),
            "params": self.keyed_params(&*stage, &decl.params),
            "item": node.item.as_ref().map(|i| json!([i.id, i.key])),
            "seed": if stage.uses_seed() { json!(node.seed) } else { Value::Null },
            "inputs": inputs,
        });
        // serde_json maps are sorted: this string is canonical
        let text = serde_json::to_string(&recipe).unwrap();
        (Digest::of(text.as_bytes()), recipe)
    }

    /// The parameters as they enter the key: each file parameter ([`Stage::file_params`])
    /// replaced by the file's content digest (memoised by the stat cache). An unreadable file
    /// keys on its path; the node then fails when it runs, naming the file.
    fn keyed_params(&self, stage: &dyn Stage, params: &Value) -> Value {
        let files = stage.file_params(params);
        if files.is_empty() {
            return params.clone();
        }
        let mut p = params.clone();
        for ptr in files {
            let Some(v) = p.pointer_mut(&ptr) else {
                continue;
            };
            if let Some(path) = v.as_str().filter(|s| !s.is_empty()) {
                *v = match self.store.file_digest(std::path::Path::new(path)) {
                    Ok(d) => json!({ "blake3": d.to_string() }),
                    Err(_) => json!({ "unreadable": path }),
                };
            }
        }
        p
    }

    /// The output digests of the node's inputs, which must all be done.
    pub(super) fn input_digests(&self, node: &Node) -> Result<HashMap<usize, String>> {
        let states = self.states.lock().unwrap();
        let mut out = HashMap::new();
        for d in node.deps() {
            match &states[d] {
                NodeState::Done { digest, .. } => out.insert(d, digest.clone()),
                s => bail!("input node {d} not done: {s:?}"),
            };
        }
        Ok(out)
    }

    /// The node's key now that its inputs are done.
    pub(super) fn current_key(&self, node: &Node) -> Result<Digest> {
        Ok(self.key(node, &self.input_digests(node)?).0)
    }
}

#[cfg(test)]
mod tests {
    /// The node seed's recipe, written out: a change would reseed every node (and so change
    /// every seeded stage's key).
    #[test]
    fn node_seed_recipe_is_pinned() {
        let mut h = blake3::Hasher::new();
        for p in [b"node-seed".as_slice(), &7u64.to_le_bytes(), b"gfe", b"s01"] {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let expected = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap());
        assert_eq!(super::node_seed(7, "gfe", "s01"), expected);
    }
}
