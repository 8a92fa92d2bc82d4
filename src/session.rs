//! One invocation: load a pipeline, open the cache, run (or plan), and write the run record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use mpfnet_api::Registry;
use mpfnet_cache::Store;
use serde_json::{json, Value};

use crate::engine::{Engine, ExecSummary, NodeState, Options};
use crate::runs::{self, NodeRecord, RunRecord};
use crate::select::Selection;

/// Where the cache and run records live.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub cache_dir: PathBuf,
    pub runs_dir: PathBuf,
}

impl Workspace {
    /// `$MPFNET_CACHE` or `.mpfnet/cache`, and `runs/`, relative to the current directory.
    pub fn from_env(cache: Option<PathBuf>) -> Self {
        let cache_dir = cache
            .or_else(|| std::env::var_os("MPFNET_CACHE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".mpfnet/cache"));
        let runs_dir = std::env::var_os("MPFNET_RUNS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("runs"));
        Workspace {
            cache_dir,
            runs_dir,
        }
    }
}

/// Loads and validates the pipeline first: a bad pipeline never opens (let alone touches) the cache.
pub fn open(
    path: &Path,
    sets: &[String],
    registry: &Registry,
    ws: &Workspace,
    opts: Options,
) -> Result<Engine> {
    let pipeline = crate::pipeline::load(path, sets, registry)?;
    let store = Store::open(&ws.cache_dir)
        .with_context(|| format!("opening cache {}", ws.cache_dir.display()))?;
    Engine::new(pipeline, registry.clone(), Arc::new(store), opts)
}

pub struct RunOutcome {
    pub summary: ExecSummary,
    pub record: RunRecord,
    pub run_dir: PathBuf,
    /// The report nodes' `meta.summary` texts (the results table).
    pub report_text: String,
}

pub fn run(engine: &mut Engine, ws: &Workspace, args: &[String]) -> Result<RunOutcome> {
    run_selected(engine, ws, args, &Selection::All)
}

/// Runs the selected nodes and what they need; a partial run's record does not become `latest`.
pub fn run_selected(
    engine: &mut Engine,
    ws: &Workspace,
    args: &[String],
    selection: &Selection,
) -> Result<RunOutcome> {
    let label = selection.label();
    let started_at = std::time::SystemTime::now();
    let t0 = Instant::now();
    let mut summary = match engine.prepare() {
        Ok(s) => s,
        Err(e) => {
            // still record what happened, then fail
            let rec = record(engine, started_at, t0, args, false, Value::Null, &label);
            let _ = runs::write(&ws.runs_dir, &rec, &BTreeMap::new());
            return Err(e);
        }
    };
    let targets = selection.targets(engine)?;
    let s = engine.execute(&targets)?;
    summary.computed += s.computed;
    summary.cached += s.cached;
    summary.skipped += s.skipped;
    summary.failed.extend(s.failed);
    summary.failed_on_input += s.failed_on_input;
    summary.cancelled |= s.cancelled;

    let mut files = BTreeMap::new();
    let mut metrics = serde_json::Map::new();
    let mut report_text = String::new();
    for r in engine.pipeline().report.clone() {
        for &id in engine.instances(&r).to_vec().iter() {
            if !matches!(engine.state(id), NodeState::Done { .. }) {
                continue;
            }
            let art = engine.load(id)?;
            let report = mpfnet_api::ReportMeta::of(&art);
            for (name, bytes) in art.files {
                files.insert(name, bytes);
            }
            if let Some(t) = report.summary {
                report_text.push_str(&t);
                report_text.push('\n');
            }
            if let Some(m) = report.metrics {
                metrics.insert(engine.nodes()[id].name.clone(), m);
            }
        }
    }
    let rec = record(
        engine,
        started_at,
        t0,
        args,
        summary.ok(),
        Value::Object(metrics),
        &label,
    );
    let run_dir = runs::write(&ws.runs_dir, &rec, &files)?;
    Ok(RunOutcome {
        summary,
        record: rec,
        run_dir,
        report_text,
    })
}

fn record(
    engine: &Engine,
    started_at: std::time::SystemTime,
    t0: Instant,
    args: &[String],
    ok: bool,
    metrics: Value,
    selection: &Option<String>,
) -> RunRecord {
    let nodes = engine.nodes();
    let mut out = Vec::with_capacity(nodes.len());
    let mut code_files = std::collections::BTreeMap::new();
    for (id, n) in nodes.iter().enumerate() {
        let stage = engine.stage_of(id);
        let decl = &engine.pipeline().stages[&n.stage];
        code_files
            .entry(decl.kind.clone())
            .or_insert_with(|| stage.code_files().into_iter().collect());
        let state = engine.state(id);
        let recipe = engine.key_if_known(id).map(|(_, r)| r);
        let (status, key, digest, dur, error) = match state {
            NodeState::Done {
                key,
                digest,
                cached,
                duration_s,
            } => (
                if cached { "cached" } else { "computed" },
                Some(key),
                Some(digest),
                duration_s,
                None,
            ),
            NodeState::Failed { error } => ("failed", None, None, 0.0, Some(error)),
            NodeState::Skipped { reason } => ("skipped", None, None, 0.0, Some(reason)),
            NodeState::Pending => ("pending", None, None, 0.0, None),
        };
        out.push(NodeRecord {
            name: n.name.clone(),
            stage: n.stage.clone(),
            kind: decl.kind.clone(),
            status: status.into(),
            key,
            digest,
            duration_s: dur,
            version: stage.version().into(),
            code: stage.code(),
            params: decl.params.clone(),
            inputs: recipe
                .map(|r| compact_inputs(&r["inputs"]))
                .unwrap_or(json!({})),
            error,
        });
    }
    RunRecord {
        pipeline: engine.pipeline().name.clone(),
        pipeline_file: engine.pipeline().path.display().to_string(),
        started: humantime::format_rfc3339_seconds(started_at).to_string(),
        finished: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        wall_s: t0.elapsed().as_secs_f64(),
        host: crate::engine::hostname(),
        args: args.to_vec(),
        ok,
        resolved: engine.pipeline().resolved.clone(),
        metrics,
        nodes: out,
        selection: selection.clone(),
        code_files,
    }
}

/// Gathered inputs list hundreds of digests: the record keeps one digest per input name,
/// enough for `plan` to say which input changed, and keeps run records small.
pub fn compact_inputs(inputs: &Value) -> Value {
    match inputs {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| match v {
                    Value::String(_) => (k.clone(), v.clone()),
                    other => (
                        k.clone(),
                        json!(blake3::hash(other.to_string().as_bytes())
                            .to_hex()
                            .to_string()),
                    ),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}
