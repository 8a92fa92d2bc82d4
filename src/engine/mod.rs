//! The engine: expands a pipeline into a DAG of nodes (one per stage, or one per axis item for
//! fanned-out stages), keys every node, and executes what the cache lacks on tokio.
//!
//! Keys hash the *output digests* of a node's inputs (early cutoff: an upstream node that re-runs
//! and yields the same bytes stops the wave). Axis sources (the dataset index, the folds) are
//! materialised during expansion, in `plan` as in `run`, so both see the same graph.
//!
//! Parts: `expand.rs` (stages -> nodes), `keys.rs` (what a node's key hashes), `store_io.rs`
//! (cache lookup, running a stage, storing its output), `schedule.rs` (the tokio scheduler).

mod expand;
mod keys;
mod schedule;
mod store_io;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{anyhow, bail, Result};
use mpfnet_api::{Artifact, Registry, Stage};
use mpfnet_cache::{Digest, Store};
use serde::Serialize;
use serde_json::Value;

use crate::pipeline::Pipeline;
use crate::progress::Progress;

pub use expand::{Bind, Node};
pub use keys::KEY_FORMAT;

#[derive(Clone, Debug)]
pub struct Options {
    pub jobs: usize,
    pub device: String,
    pub keep_going: bool,
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: 2,
            device: "cpu".into(),
            keep_going: false,
            progress: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NodeState {
    Pending,
    Done {
        key: String,
        digest: String,
        cached: bool,
        duration_s: f64,
    },
    Failed {
        error: String,
    },
    Skipped {
        reason: String,
    },
}

/// What the engine's threads share: the graph so far, every node's state, and the services.
pub(crate) struct Shared {
    pub pipeline: Pipeline,
    pub registry: Registry,
    pub store: Arc<Store>,
    pub opts: Options,
    pub nodes: RwLock<Vec<Node>>,
    pub states: Mutex<Vec<NodeState>>,
    pub cancel: Arc<AtomicBool>,
    pub progress: Progress,
    /// Cached nodes whose blob proved missing or corrupt when a dependent loaded it, so they
    /// ran after all (counted as computed, not cached).
    pub recomputed_on_load: AtomicUsize,
}

impl Shared {
    fn stage(&self, node: &Node) -> Arc<dyn Stage> {
        let kind = &self.pipeline.stages[&node.stage].kind;
        self.registry
            .get(kind)
            .expect("kind validated at load")
            .clone()
    }

    /// The output digest of a finished node.
    fn done_digest(&self, id: usize) -> Option<String> {
        match &self.states.lock().unwrap()[id] {
            NodeState::Done { digest, .. } => Some(digest.clone()),
            _ => None,
        }
    }
}

/// A pipeline bound to a registry and a cache.
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
    expanded: BTreeSet<String>,
    by_name: HashMap<String, usize>,
    /// Node ids per stage name, in axis order.
    instances: BTreeMap<String, Vec<usize>>,
    rt: tokio::runtime::Runtime,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ExecSummary {
    pub computed: usize,
    pub cached: usize,
    pub failed: Vec<(String, String)>,
    /// How many of `failed` failed on the user's input (`mpfnet_api::BadInput`: a sheet row, a
    /// frame file), not on the run itself.
    #[serde(default)]
    pub failed_on_input: usize,
    pub skipped: usize,
    pub cancelled: bool,
}

impl ExecSummary {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && !self.cancelled && self.skipped == 0
    }

    /// Adds another wave's counts to these.
    fn absorb(&mut self, other: &ExecSummary) {
        self.computed += other.computed;
        self.cached += other.cached;
        self.skipped += other.skipped;
        self.failed.extend(other.failed.clone());
        self.failed_on_input += other.failed_on_input;
    }
}

impl Engine {
    pub fn new(
        pipeline: Pipeline,
        registry: Registry,
        store: Arc<Store>,
        opts: Options,
    ) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(opts.jobs.max(1) + 2)
            .enable_all()
            .build()?;
        let progress = Progress::new(opts.progress);
        Ok(Engine {
            shared: Arc::new(Shared {
                pipeline,
                registry,
                store,
                opts,
                nodes: RwLock::new(Vec::new()),
                states: Mutex::new(Vec::new()),
                cancel: Arc::new(AtomicBool::new(false)),
                progress,
                recomputed_on_load: Default::default(),
            }),
            expanded: BTreeSet::new(),
            by_name: HashMap::new(),
            instances: BTreeMap::new(),
            rt,
        })
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.shared.pipeline
    }
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.shared.cancel.clone()
    }
    pub fn nodes(&self) -> Vec<Node> {
        self.shared.nodes.read().unwrap().clone()
    }
    pub fn states(&self) -> Vec<NodeState> {
        self.shared.states.lock().unwrap().clone()
    }
    pub fn state(&self, id: usize) -> NodeState {
        self.shared.states.lock().unwrap()[id].clone()
    }
    pub fn node_id(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
    pub fn instances(&self, stage: &str) -> &[usize] {
        self.instances
            .get(stage)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    /// Expands the whole graph, materialising axis sources as needed.
    pub fn prepare(&mut self) -> Result<ExecSummary> {
        let mut total = ExecSummary::default();
        loop {
            let progressed = self.expand_ready()?;
            if self.expanded.len() == self.shared.pipeline.stages.len() {
                return Ok(total);
            }
            let needed = self.pending_axis_sources();
            if needed.is_empty() && !progressed {
                bail!(
                    "could not expand stages {:?}: their axis sources did not complete",
                    self.shared
                        .pipeline
                        .stages
                        .keys()
                        .filter(|k| !self.expanded.contains(*k))
                        .collect::<Vec<_>>()
                );
            }
            if !needed.is_empty() {
                let wave = self.execute(&needed)?;
                total.absorb(&wave);
                if !wave.failed.is_empty() || wave.cancelled {
                    total.cancelled |= wave.cancelled;
                    return Err(discovery_error(&wave));
                }
            }
        }
    }

    /// Axis sources that must run before their dependents can be expanded (sorted, unique).
    fn pending_axis_sources(&self) -> Vec<usize> {
        let mut needed = Vec::new();
        for s in self.shared.pipeline.stages.values() {
            if self.expanded.contains(&s.name) {
                continue;
            }
            let Some(over) = s.over.as_ref().filter(|o| self.expanded.contains(*o)) else {
                continue;
            };
            let id = self.instances[over][0];
            if matches!(self.shared.states.lock().unwrap()[id], NodeState::Pending) {
                needed.push(id);
            }
        }
        needed.sort();
        needed.dedup();
        needed
    }

    /// Runs everything (after `prepare`).
    pub fn run_all(&mut self) -> Result<ExecSummary> {
        let n = self.shared.nodes.read().unwrap().len();
        let all: Vec<usize> = (0..n).collect();
        self.execute(&all)
    }

    /// Runs the given nodes and whatever they depend on that is not done yet.
    pub fn execute(&mut self, targets: &[usize]) -> Result<ExecSummary> {
        let shared = self.shared.clone();
        let targets = targets.to_vec();
        self.rt
            .block_on(async move { schedule::execute(shared, targets).await })
    }

    /// The key a node would have, if all its inputs' digests are known now.
    pub fn key_if_known(&self, id: usize) -> Option<(Digest, Value)> {
        let states = self.shared.states.lock().unwrap();
        let nodes = self.shared.nodes.read().unwrap();
        let mut digests = HashMap::new();
        for d in nodes[id].deps() {
            match &states[d] {
                NodeState::Done { digest, .. } => digests.insert(d, digest.clone()),
                _ => return None,
            };
        }
        Some(self.shared.key(&nodes[id], &digests))
    }

    /// Marks a node done from a cache lookup without running it (used by `plan`).
    pub fn mark_cached(&self, id: usize, key: &Digest, digest: &Digest) {
        self.shared.states.lock().unwrap()[id] = NodeState::Done {
            key: key.to_string(),
            digest: digest.to_string(),
            cached: true,
            duration_s: 0.0,
        };
    }

    pub fn stage_of(&self, id: usize) -> Arc<dyn Stage> {
        let nodes = self.shared.nodes.read().unwrap();
        self.shared.stage(&nodes[id])
    }

    /// Loads a finished node's artifact (recomputing it if its blob went missing or corrupt).
    pub fn load(&self, id: usize) -> Result<Artifact> {
        let digest = match &self.shared.states.lock().unwrap()[id] {
            NodeState::Done { digest, .. } => digest.clone(),
            s => bail!("node is not done: {s:?}"),
        };
        self.shared.load(id, &digest)
    }
}

/// The error of an axis source that failed during expansion; exit 2 when only the user's
/// input (the data) is at fault.
fn discovery_error(wave: &ExecSummary) -> anyhow::Error {
    let e = anyhow!(
        "discovery failed: {}",
        wave.failed
            .iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    if !wave.failed.is_empty() && wave.failed_on_input == wave.failed.len() {
        return mpfnet_api::BadInput(e).into();
    }
    e
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into()))
}
