//! The engine: expands a pipeline into a DAG of nodes (one per stage, or one per axis item for
//! fanned-out stages), keys every node, and executes what the cache lacks on tokio.
//!
//! Keys hash the *output digests* of a node's inputs (early cutoff: an upstream node that re-runs
//! and yields the same bytes stops the wave). Axis sources (the dataset index, the folds) are
//! materialised during expansion, in `plan` as in `run`, so both see the same graph.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use mpfnet_api::{Artifact, AxisItem, Ctx, Handle, Input, Registry, Services, Stage};
use mpfnet_cache::{ActionRecord, Digest, Store};
use serde::Serialize;
use serde_json::{json, Value};

use crate::artifact_codec;
use crate::pipeline::Pipeline;
use crate::progress::Progress;

/// Bumped when the key recipe or artifact layout changes: old cache entries then never match.
pub const KEY_FORMAT: &str = "mpfnet-node-key/1";

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

#[derive(Clone, Debug)]
pub enum Bind {
    One(usize),
    Many(Vec<(String, usize)>),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    /// The declaring stage's name in the pipeline.
    pub stage: String,
    pub item: Option<AxisItem>,
    pub inputs: Vec<(String, Bind)>,
    pub seed: u64,
}

impl Node {
    pub fn deps(&self) -> Vec<usize> {
        let mut d = Vec::new();
        for (_, b) in &self.inputs {
            match b {
                Bind::One(i) => d.push(*i),
                Bind::Many(v) => d.extend(v.iter().map(|(_, i)| *i)),
            }
        }
        d
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
    pub recomputed_on_load: std::sync::atomic::AtomicUsize,
}

/// A pipeline bound to a registry and a cache.
pub struct Engine {
    pub(crate) sh: Arc<Shared>,
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
}

fn hash_u64(parts: &[&[u8]]) -> u64 {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap())
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
            sh: Arc::new(Shared {
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
        &self.sh.pipeline
    }
    pub fn store(&self) -> &Arc<Store> {
        &self.sh.store
    }
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.sh.cancel.clone()
    }
    pub fn nodes(&self) -> Vec<Node> {
        self.sh.nodes.read().unwrap().clone()
    }
    pub fn states(&self) -> Vec<NodeState> {
        self.sh.states.lock().unwrap().clone()
    }
    pub fn state(&self, id: usize) -> NodeState {
        self.sh.states.lock().unwrap()[id].clone()
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
            if self.expanded.len() == self.sh.pipeline.stages.len() {
                return Ok(total);
            }
            // axis sources that must run before their dependents can be expanded
            let mut needed = Vec::new();
            for s in self.sh.pipeline.stages.values() {
                if self.expanded.contains(&s.name) {
                    continue;
                }
                if let Some(o) = &s.over {
                    if self.expanded.contains(o) {
                        let id = self.instances[o][0];
                        if matches!(self.sh.states.lock().unwrap()[id], NodeState::Pending) {
                            needed.push(id);
                        }
                    }
                }
            }
            if needed.is_empty() && !progressed {
                bail!(
                    "could not expand stages {:?}: their axis sources did not complete",
                    self.sh
                        .pipeline
                        .stages
                        .keys()
                        .filter(|k| !self.expanded.contains(*k))
                        .collect::<Vec<_>>()
                );
            }
            if !needed.is_empty() {
                needed.sort();
                needed.dedup();
                let s = self.execute(&needed)?;
                total.computed += s.computed;
                total.cached += s.cached;
                total.skipped += s.skipped;
                total.failed.extend(s.failed.clone());
                total.failed_on_input += s.failed_on_input;
                if !s.failed.is_empty() || s.cancelled {
                    total.cancelled |= s.cancelled;
                    let e = anyhow!(
                        "discovery failed: {}",
                        s.failed
                            .iter()
                            .map(|(n, e)| format!("{n}: {e}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    );
                    // the data could not be read: the user's input, exit 2
                    if !s.failed.is_empty() && s.failed_on_input == s.failed.len() {
                        return Err(mpfnet_api::BadInput(e).into());
                    }
                    return Err(e);
                }
            }
        }
    }

    fn expand_ready(&mut self) -> Result<bool> {
        let order = crate::pipeline::topo_order(&self.sh.pipeline);
        let mut progressed = false;
        for sname in order {
            if self.expanded.contains(&sname) {
                continue;
            }
            let decl = self.sh.pipeline.stages[&sname].clone();
            let deps_ready = decl
                .inputs
                .values()
                .all(|r| r.stages.iter().all(|x| self.expanded.contains(x)))
                && decl.over.as_ref().is_none_or(|o| self.expanded.contains(o));
            if !deps_ready {
                continue;
            }
            let items: Vec<Option<AxisItem>> = match &decl.over {
                None => vec![None],
                Some(o) => {
                    let src = self.instances[o][0];
                    let digest = match &self.sh.states.lock().unwrap()[src] {
                        NodeState::Done { digest, .. } => digest.clone(),
                        _ => continue,
                    };
                    let art = self.sh.load(src, &digest)?;
                    let axis = art.axis.ok_or_else(|| {
                        anyhow!(
                        "stage `{}` fans out over `{o}`, but `{o}` (kind `{}`) declares no axis",
                        sname, self.sh.pipeline.stages[o].kind)
                    })?;
                    let mut seen = BTreeSet::new();
                    for it in &axis {
                        if !seen.insert(it.id.clone()) {
                            bail!("axis of `{o}` repeats item id `{}`", it.id);
                        }
                    }
                    axis.into_iter().map(Some).collect()
                }
            };
            let mut ids = Vec::with_capacity(items.len());
            for item in items {
                let name = match &item {
                    None => sname.clone(),
                    Some(it) => format!("{sname}[{}]", it.id),
                };
                let mut inputs = Vec::new();
                for (iname, r) in &decl.inputs {
                    let src = &self.instances[r.stage()];
                    let src_decl = &self.sh.pipeline.stages[r.stage()];
                    let bind = if r.list {
                        Bind::Many(
                            r.stages
                                .iter()
                                .map(|st| (st.clone(), self.instances[st][0]))
                                .collect(),
                        )
                    } else if r.gather {
                        let nodes = self.sh.nodes.read().unwrap();
                        Bind::Many(
                            src.iter()
                                .map(|&i| {
                                    (
                                        nodes[i]
                                            .item
                                            .as_ref()
                                            .map(|t| t.id.clone())
                                            .unwrap_or_default(),
                                        i,
                                    )
                                })
                                .collect(),
                        )
                    } else if src_decl.over.is_some() {
                        // same axis (checked at load): the matching instance
                        let it = item.as_ref().unwrap();
                        let key = format!("{}[{}]", r.stage(), it.id);
                        Bind::One(
                            *self
                                .by_name
                                .get(&key)
                                .ok_or_else(|| anyhow!("{name}: no node {key}"))?,
                        )
                    } else {
                        Bind::One(src[0])
                    };
                    inputs.push((iname.clone(), bind));
                }
                let item_id = item.as_ref().map(|i| i.id.as_str()).unwrap_or("");
                let seed = hash_u64(&[
                    b"node-seed",
                    &self.sh.pipeline.seed.to_le_bytes(),
                    sname.as_bytes(),
                    item_id.as_bytes(),
                ]);
                let node = Node {
                    name: name.clone(),
                    stage: sname.clone(),
                    item,
                    inputs,
                    seed,
                };
                let id = {
                    let mut nodes = self.sh.nodes.write().unwrap();
                    nodes.push(node);
                    self.sh.states.lock().unwrap().push(NodeState::Pending);
                    nodes.len() - 1
                };
                self.by_name.insert(name, id);
                ids.push(id);
            }
            self.instances.insert(sname.clone(), ids);
            self.expanded.insert(sname);
            progressed = true;
        }
        Ok(progressed)
    }

    /// Runs everything (after `prepare`).
    pub fn run_all(&mut self) -> Result<ExecSummary> {
        let n = self.sh.nodes.read().unwrap().len();
        let all: Vec<usize> = (0..n).collect();
        self.execute(&all)
    }

    /// Runs the given nodes and whatever they depend on that is not done yet.
    pub fn execute(&mut self, targets: &[usize]) -> Result<ExecSummary> {
        let sh = self.sh.clone();
        let targets = targets.to_vec();
        self.rt.block_on(async move { execute(sh, targets).await })
    }

    /// The key a node would have, if all its inputs' digests are known now.
    pub fn key_if_known(&self, id: usize) -> Option<(Digest, Value)> {
        let states = self.sh.states.lock().unwrap();
        let nodes = self.sh.nodes.read().unwrap();
        let mut digests = Vec::new();
        for d in nodes[id].deps() {
            match &states[d] {
                NodeState::Done { digest, .. } => digests.push((d, digest.clone())),
                _ => return None,
            }
        }
        let dmap: HashMap<usize, String> = digests.into_iter().collect();
        Some(self.sh.key(&nodes[id], &dmap))
    }

    /// Marks a node done from a cache lookup without running it (used by `plan`).
    pub fn mark_cached(&self, id: usize, key: &Digest, digest: &Digest) {
        self.sh.states.lock().unwrap()[id] = NodeState::Done {
            key: key.to_string(),
            digest: digest.to_string(),
            cached: true,
            duration_s: 0.0,
        };
    }

    pub fn stage_of(&self, id: usize) -> Arc<dyn Stage> {
        let nodes = self.sh.nodes.read().unwrap();
        self.sh.stage(&nodes[id])
    }

    /// Loads a finished node's artifact (recomputing it if its blob went missing or corrupt).
    pub fn load(&self, id: usize) -> Result<Artifact> {
        let digest = match &self.sh.states.lock().unwrap()[id] {
            NodeState::Done { digest, .. } => digest.clone(),
            s => bail!("node is not done: {s:?}"),
        };
        self.sh.load(id, &digest)
    }
}

impl Shared {
    fn stage(&self, node: &Node) -> Arc<dyn Stage> {
        let kind = &self.pipeline.stages[&node.stage].kind;
        self.registry
            .get(kind)
            .expect("kind validated at load")
            .clone()
    }

    /// blake3 over everything the node's output may depend on.
    pub fn key(&self, node: &Node, digests: &HashMap<usize, String>) -> (Digest, Value) {
        let decl = &self.pipeline.stages[&node.stage];
        let stage = self.stage(node);
        let mut inputs = serde_json::Map::new();
        for (iname, b) in &node.inputs {
            let v = match b {
                Bind::One(i) => json!(digests[i]),
                Bind::Many(v) => json!(v
                    .iter()
                    .map(|(id, i)| json!([id, digests[i]]))
                    .collect::<Vec<_>>()),
            };
            inputs.insert(iname.clone(), v);
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
            if let Some(v) = p.pointer_mut(&ptr) {
                if let Some(path) = v.as_str().filter(|s| !s.is_empty()) {
                    *v = match self.store.file_digest(std::path::Path::new(path)) {
                        Ok(d) => json!({ "blake3": d.to_string() }),
                        Err(_) => json!({ "unreadable": path }),
                    };
                }
            }
        }
        p
    }

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
        let (_key, art, new_digest, _) = self.compute(id, true)?;
        self.recomputed_on_load.fetch_add(1, Ordering::Relaxed);
        if new_digest.to_string() != digest {
            tracing::warn!("`{name}` recomputed to a different digest ({} vs {}): the stage is not deterministic", new_digest.short(), &digest[..12]);
        }
        Ok(art)
    }

    fn handle(self: &Arc<Self>, id: usize, digest: String) -> Handle {
        let sh = self.clone();
        let d = digest.clone();
        Handle::new(digest, Arc::new(move || sh.load(id, &d)))
    }

    fn input_digests(&self, node: &Node) -> Result<HashMap<usize, String>> {
        let states = self.states.lock().unwrap();
        let mut out = HashMap::new();
        for d in node.deps() {
            match &states[d] {
                NodeState::Done { digest, .. } => {
                    out.insert(d, digest.clone());
                }
                s => bail!("input node {d} not done: {s:?}"),
            }
        }
        Ok(out)
    }

    /// Looks the node up in the cache, or runs it. Returns (key, digest, cached, seconds).
    fn run_node(self: &Arc<Self>, id: usize) -> Result<(Digest, Digest, bool, f64)> {
        let node = self.nodes.read().unwrap()[id].clone();
        let stage = self.stage(&node);
        if !stage.volatile() {
            let digests = self.input_digests(&node)?;
            let (key, _) = self.key(&node, &digests);
            if let Some(rec) = self.store.get_action(&key)? {
                if self.store.has_blob(&rec.output) {
                    return Ok((key, rec.output, true, 0.0));
                }
            }
        }
        // a volatile node always runs; if it reproduced its previous output it counts as cached
        let before = if stage.volatile() {
            let digests = self.input_digests(&node)?;
            self.store
                .get_action(&self.key(&node, &digests).0)?
                .map(|r| r.output)
        } else {
            None
        };
        let (key, _art, digest, secs) = self.compute(id, false)?;
        Ok((key, digest, before == Some(digest), secs))
    }

    /// Runs the stage and stores its output (no cache lookup).
    fn compute(
        self: &Arc<Self>,
        id: usize,
        recompute: bool,
    ) -> Result<(Digest, Artifact, Digest, f64)> {
        let node = self.nodes.read().unwrap()[id].clone();
        let decl = self.pipeline.stages[&node.stage].clone();
        let stage = self.stage(&node);
        let digests = self.input_digests(&node)?;
        let (key, recipe) = self.key(&node, &digests);
        let mut inputs = BTreeMap::new();
        for (iname, b) in &node.inputs {
            let input = match b {
                Bind::One(i) => Input::One(self.handle(*i, digests[i].clone())),
                Bind::Many(v) => Input::Many(
                    v.iter()
                        .map(|(item, i)| (item.clone(), self.handle(*i, digests[i].clone())))
                        .collect(),
                ),
            };
            inputs.insert(iname.clone(), input);
        }
        let key_hex = key.to_string();
        let services = NodeServices {
            sh: self.clone(),
            node: id,
            name: node.name.clone(),
            key,
        };
        let ctx = Ctx {
            node: &node.name,
            key: &key_hex,
            params: &decl.params,
            item: node.item.as_ref(),
            inputs: &inputs,
            seed: node.seed,
            device: &self.opts.device,
            services: &services,
        };
        let started = Instant::now();
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let art = match std::panic::catch_unwind(AssertUnwindSafe(|| stage.run(&ctx))) {
            Ok(r) => r?,
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
        };
        let secs = started.elapsed().as_secs_f64();
        self.progress.finish_node(id);
        let bytes = artifact_codec::encode(&art, &BTreeMap::new())?;
        let digest = self.store.put_blob(&bytes)?;
        let provenance = json!({
            "pipeline": self.pipeline.name,
            "node": node.name,
            "stage": node.stage,
            "kind": decl.kind,
            "version": recipe["version"],
            "code": recipe["code"],
            "params": decl.params,
            "item": node.item.as_ref().map(|i| &i.id),
            "seed": recipe["seed"],
            "inputs": recipe["inputs"],
            "created": created,
            "duration_s": secs,
            "host": hostname(),
            "bytes": bytes.len(),
            "recomputed": recompute,
        });
        self.store.put_action(
            &key,
            &ActionRecord {
                output: digest,
                provenance,
            },
        )?;
        // The output is stored: the node has succeeded whatever happens to its checkpoints
        // (another process may be clearing the same folder); a leftover is gc's to reclaim.
        if let Err(e) = self.store.clear_checkpoints(&key) {
            tracing::warn!(node = %node.name, "could not remove checkpoints: {e:#}");
        }
        Ok((key, art, digest, secs))
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into()))
}

struct NodeServices {
    sh: Arc<Shared>,
    node: usize,
    name: String,
    key: Digest,
}

impl Services for NodeServices {
    fn file_digest(&self, path: &Path) -> Result<String> {
        Ok(self.sh.store.file_digest(path)?.to_string())
    }
    fn file_digests(&self, paths: &[PathBuf]) -> Result<Vec<String>> {
        Ok(self
            .sh
            .store
            .file_digests(paths)?
            .into_iter()
            .map(|d| d.to_string())
            .collect())
    }
    fn progress(&self, done: u64, total: u64, msg: &str) {
        self.sh
            .progress
            .node(self.node, &self.name, done, total, msg);
    }
    fn save_checkpoint(&self, step: u64, bytes: &[u8]) -> Result<()> {
        self.sh.store.put_checkpoint(&self.key, step, bytes)
    }
    fn load_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>> {
        self.sh.store.latest_checkpoint(&self.key)
    }
    fn cancelled(&self) -> bool {
        self.sh.cancel.load(Ordering::Relaxed)
    }
}

async fn execute(sh: Arc<Shared>, targets: Vec<usize>) -> Result<ExecSummary> {
    let nodes = sh.nodes.read().unwrap().clone();
    // the pending closure of the targets
    let mut set = BTreeSet::new();
    let mut stack = targets.clone();
    {
        let states = sh.states.lock().unwrap();
        while let Some(n) = stack.pop() {
            if !matches!(states[n], NodeState::Pending) || !set.insert(n) {
                continue;
            }
            stack.extend(nodes[n].deps());
        }
    }
    let mut waiting: HashMap<usize, usize> = HashMap::new();
    let mut dependents: HashMap<usize, Vec<usize>> = HashMap::new();
    for &n in &set {
        let deps: BTreeSet<usize> = nodes[n]
            .deps()
            .into_iter()
            .filter(|d| set.contains(d))
            .collect();
        waiting.insert(n, deps.len());
        for d in deps {
            dependents.entry(d).or_default().push(n);
        }
    }
    let mut ready: VecDeque<usize> = set.iter().copied().filter(|n| waiting[n] == 0).collect();
    let light = Arc::new(tokio::sync::Semaphore::new(sh.opts.jobs.max(1)));
    // heavy nodes (training) hold the device: one at a time
    let heavy = Arc::new(tokio::sync::Semaphore::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut summary = ExecSummary::default();
    sh.progress.begin(set.len() as u64);
    let mut js = tokio::task::JoinSet::new();
    let mut running = 0usize;
    loop {
        while let Some(n) = ready.pop_front() {
            let is_heavy = sh.stage(&nodes[n]).heavy();
            let sem = if is_heavy {
                heavy.clone()
            } else {
                light.clone()
            };
            let (sh2, stop2) = (sh.clone(), stop.clone());
            running += 1;
            js.spawn(async move {
                let _permit = sem.acquire_owned().await.unwrap();
                if stop2.load(Ordering::Relaxed) || sh2.cancel.load(Ordering::Relaxed) {
                    return (n, None);
                }
                let sh3 = sh2.clone();
                let r = tokio::task::spawn_blocking(move || sh3.run_node(n)).await;
                let r = match r {
                    Ok(r) => r,
                    Err(e) => Err(anyhow!("worker thread failed: {e}")),
                };
                (n, Some(r))
            });
        }
        if running == 0 {
            break;
        }
        let joined = tokio::select! {
            j = js.join_next() => j,
            _ = tokio::signal::ctrl_c() => {
                if sh.cancel.swap(true, Ordering::Relaxed) {
                    // second Ctrl-C: leave now; finished nodes and checkpoints are on disk
                    sh.progress.println("interrupted again: exiting; run the same command to resume");
                    std::process::exit(130);
                }
                stop.store(true, Ordering::Relaxed);
                sh.progress.println("interrupted: letting running nodes finish (Ctrl-C again to exit now; training resumes from its last checkpoint)");
                continue;
            }
        };
        let Some(joined) = joined else { break };
        running -= 1;
        let (n, outcome) = joined.expect("task panicked");
        let name = &nodes[n].name;
        match outcome {
            None => {
                sh.states.lock().unwrap()[n] = NodeState::Skipped {
                    reason: "run stopped".into(),
                };
                summary.skipped += 1;
            }
            Some(Ok((key, digest, cached, secs))) => {
                if cached {
                    summary.cached += 1;
                } else {
                    summary.computed += 1;
                    tracing::info!("computed {name} in {secs:.2}s");
                }
                sh.states.lock().unwrap()[n] = NodeState::Done {
                    key: key.to_string(),
                    digest: digest.to_string(),
                    cached,
                    duration_s: secs,
                };
                sh.progress.done(name, cached);
                for &d in dependents.get(&n).map(|v| v.as_slice()).unwrap_or(&[]) {
                    let w = waiting.get_mut(&d).unwrap();
                    *w -= 1;
                    if *w == 0 && matches!(sh.states.lock().unwrap()[d], NodeState::Pending) {
                        ready.push_back(d);
                    }
                }
            }
            Some(Err(e)) => {
                let msg = format!("{e:#}");
                let cancelled = sh.cancel.load(Ordering::Relaxed);
                if !cancelled {
                    sh.progress.println(&format!("FAILED {name}: {msg}"));
                }
                tracing::error!("node {name} failed: {msg}");
                summary.failed.push((name.clone(), msg.clone()));
                summary.failed_on_input += mpfnet_api::is_bad_input(&e) as usize;
                sh.states.lock().unwrap()[n] = NodeState::Failed { error: msg };
                // everything downstream is skipped, naming the cause
                let mut stack = dependents.get(&n).cloned().unwrap_or_default();
                let mut states = sh.states.lock().unwrap();
                while let Some(d) = stack.pop() {
                    if matches!(states[d], NodeState::Pending) {
                        states[d] = NodeState::Skipped {
                            reason: format!("upstream `{name}` failed"),
                        };
                        summary.skipped += 1;
                        stack.extend(dependents.get(&d).cloned().unwrap_or_default());
                    }
                }
                if !sh.opts.keep_going {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
    }
    summary.cancelled = sh.cancel.load(Ordering::Relaxed);
    let again = sh.recomputed_on_load.swap(0, Ordering::Relaxed);
    summary.cached = summary.cached.saturating_sub(again);
    summary.computed += again;
    // nodes never reached because the run stopped
    let mut states = sh.states.lock().unwrap();
    for &n in &set {
        if matches!(states[n], NodeState::Pending)
            && (stop.load(Ordering::Relaxed) || summary.cancelled)
        {
            states[n] = NodeState::Skipped {
                reason: "run stopped before it".into(),
            };
            summary.skipped += 1;
        }
    }
    drop(states);
    sh.progress.end();
    Ok(summary)
}
