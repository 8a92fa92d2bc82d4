//! A node against the store: look its key up, or run its stage and store the output (blob,
//! action record with provenance), and load inputs lazily for the stage.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mpfnet_api::{Artifact, Ctx, Handle, Input, Services, Stage};
use mpfnet_cache::{ActionRecord, Digest};
use serde_json::{json, Value};

use super::{hostname, Bind, Node, Shared};
use crate::artifact_codec;

/// What a finished node yields.
#[derive(Clone, Debug)]
pub(super) struct NodeOutput {
    pub key: Digest,
    /// The digest of the output blob.
    pub digest: Digest,
    /// Found in the cache (or, for a volatile node, reproduced its previous output).
    pub cached: bool,
    pub secs: f64,
}

/// A stage that has just run, its output stored.
struct Computed {
    key: Digest,
    artifact: Artifact,
    digest: Digest,
    secs: f64,
}

impl Shared {
    /// The artifact behind `digest` (the output of node `id`), recomputed if the blob is
    /// missing or corrupt.
    pub fn load(self: &Arc<Self>, id: usize, digest: &str) -> Result<Artifact> {
        let d: Digest = digest.parse()?;
        if let Some(bytes) = self.store.get_blob(&d)? {
            return artifact_codec::decode(&bytes)
                .with_context(|| format!("decoding blob {digest}"));
        }
        let name = self.nodes.read().unwrap()[id].name.clone();
        tracing::warn!(
            "blob {} of `{name}` is missing or corrupt: recomputing it",
            d.short()
        );
        self.progress.println(&format!(
            "warning: cached output of `{name}` missing or corrupt, recomputing"
        ));
        let again = self.compute(id, true)?;
        self.recomputed_on_load.fetch_add(1, Ordering::Relaxed);
        if again.digest.to_string() != digest {
            tracing::warn!(
                "`{name}` recomputed to a different digest ({} vs {}): the stage is not deterministic",
                again.digest.short(),
                &digest[..12]
            );
        }
        Ok(again.artifact)
    }

    fn handle(self: &Arc<Self>, id: usize, digest: String) -> Handle {
        let shared = self.clone();
        let d = digest.clone();
        Handle::new(digest, Arc::new(move || shared.load(id, &d)))
    }

    /// Looks the node up in the cache, or runs it.
    pub(super) fn run_node(self: &Arc<Self>, id: usize) -> Result<NodeOutput> {
        let node = self.nodes.read().unwrap()[id].clone();
        let stage = self.stage(&node);
        if !stage.volatile() {
            let key = self.current_key(&node)?;
            if let Some(rec) = self.store.get_action(&key)? {
                if self.store.has_blob(&rec.output) {
                    return Ok(NodeOutput {
                        key,
                        digest: rec.output,
                        cached: true,
                        secs: 0.0,
                    });
                }
            }
        }
        // a volatile node always runs; if it reproduced its previous output it counts as cached
        let before = if stage.volatile() {
            let key = self.current_key(&node)?;
            self.store.get_action(&key)?.map(|r| r.output)
        } else {
            None
        };
        let done = self.compute(id, false)?;
        Ok(NodeOutput {
            key: done.key,
            digest: done.digest,
            cached: before == Some(done.digest),
            secs: done.secs,
        })
    }

    /// Runs the stage and stores its output (no cache lookup).
    fn compute(self: &Arc<Self>, id: usize, recompute: bool) -> Result<Computed> {
        let node = self.nodes.read().unwrap()[id].clone();
        let params = &self.pipeline.stages[&node.stage].params;
        let digests = self.input_digests(&node)?;
        let (key, recipe) = self.key(&node, &digests);
        let inputs = self.input_handles(&node, &digests);
        let key_hex = key.to_string();
        let services = NodeServices {
            shared: self.clone(),
            node: id,
            name: node.name.clone(),
            key,
        };
        let ctx = Ctx {
            node: &node.name,
            key: &key_hex,
            params,
            item: node.item.as_ref(),
            inputs: &inputs,
            seed: node.seed,
            device: &self.opts.device,
            services: &services,
        };
        let started = Instant::now();
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let artifact = run_catching_panics(&*self.stage(&node), &ctx)?;
        let secs = started.elapsed().as_secs_f64();
        self.progress.finish_node(id);
        let bytes = artifact_codec::encode(&artifact, &BTreeMap::new())?;
        let digest = self.store.put_blob(&bytes)?;
        let provenance = json!({
            "pipeline": self.pipeline.name,
            "node": node.name,
            "stage": node.stage,
            "kind": self.pipeline.stages[&node.stage].kind,
            "version": recipe["version"],
            "code": recipe["code"],
            "params": params,
            "item": node.item.as_ref().map(|i| &i.id),
            "seed": recipe["seed"],
            "inputs": recipe["inputs"],
            "created": created,
            "duration_s": secs,
            "host": hostname(),
            "bytes": bytes.len(),
            "recomputed": recompute,
        });
        self.record(&node, &key, digest, provenance)?;
        Ok(Computed {
            key,
            artifact,
            digest,
            secs,
        })
    }

    /// The stage's inputs: lazily loaded handles on the upstream outputs.
    fn input_handles(
        self: &Arc<Self>,
        node: &Node,
        digests: &HashMap<usize, String>,
    ) -> BTreeMap<String, Input> {
        let mut inputs = BTreeMap::new();
        for (input, b) in &node.inputs {
            let bound = match b {
                Bind::One(i) => Input::One(self.handle(*i, digests[i].clone())),
                Bind::Many(v) => Input::Many(
                    v.iter()
                        .map(|(item, i)| (item.clone(), self.handle(*i, digests[i].clone())))
                        .collect(),
                ),
            };
            inputs.insert(input.clone(), bound);
        }
        inputs
    }

    /// Writes the action record (key -> output) and clears the node's checkpoints.
    fn record(&self, node: &Node, key: &Digest, output: Digest, provenance: Value) -> Result<()> {
        self.store
            .put_action(key, &ActionRecord { output, provenance })?;
        // The output is stored: the node has succeeded whatever happens to its checkpoints
        // (another process may be clearing the same folder); a leftover is gc's to reclaim.
        if let Err(e) = self.store.clear_checkpoints(key) {
            tracing::warn!(node = %node.name, "could not remove checkpoints: {e:#}");
        }
        Ok(())
    }
}

/// Runs the stage; a panic becomes the node's error instead of taking the process down.
fn run_catching_panics(stage: &dyn Stage, ctx: &Ctx) -> Result<Artifact> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| stage.run(ctx))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            bail!(
                "stage panicked: {}",
                msg.unwrap_or_else(|| "(no message)".into())
            )
        }
    }
}

/// What a running stage may ask of the engine (checkpoints, file digests, progress).
struct NodeServices {
    shared: Arc<Shared>,
    node: usize,
    name: String,
    key: Digest,
}

impl Services for NodeServices {
    fn file_digest(&self, path: &Path) -> Result<String> {
        Ok(self.shared.store.file_digest(path)?.to_string())
    }
    fn file_digests(&self, paths: &[PathBuf]) -> Result<Vec<String>> {
        Ok(self
            .shared
            .store
            .file_digests(paths)?
            .into_iter()
            .map(|d| d.to_string())
            .collect())
    }
    fn progress(&self, done: u64, total: u64, msg: &str) {
        self.shared
            .progress
            .node(self.node, &self.name, done, total, msg);
    }
    fn save_checkpoint(&self, step: u64, bytes: &[u8]) -> Result<()> {
        self.shared.store.put_checkpoint(&self.key, step, bytes)
    }
    fn load_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>> {
        self.shared.store.latest_checkpoint(&self.key)
    }
    fn cancelled(&self) -> bool {
        self.shared.cancel.load(Ordering::Relaxed)
    }
}
