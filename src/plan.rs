//! `plan`: for every node, cached or to run, and why.
//!
//! Keys hash input *digests*, so a node below one that will run can only be "runs if its input
//! changes": its key is unknown until the input has been recomputed. Axis sources (dataset index,
//! folds) are materialised while expanding, exactly as `run` does.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use crate::engine::{Engine, NodeState};
use crate::runs::{self, NodeRecord, RunRecord};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In the cache: nothing to do.
    Cached,
    /// Already computed while expanding the graph (axis sources, volatile stages).
    RanDuringPlanning,
    /// Will run.
    Run,
    /// Will run unless its recomputed inputs come out byte-identical (early cutoff).
    RunIfInputsChange,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlanEntry {
    pub node: String,
    pub stage: String,
    pub status: Status,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub pipeline: String,
    pub entries: Vec<PlanEntry>,
}

impl Plan {
    pub fn count(&self, s: &Status) -> usize {
        self.entries.iter().filter(|e| &e.status == s).count()
    }
    pub fn to_run(&self) -> impl Iterator<Item = &PlanEntry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.status, Status::Run | Status::RunIfInputsChange))
    }
}

/// Computes the plan. `engine` must be prepared (graph expanded).
pub fn plan(engine: &Engine, previous: Option<&RunRecord>) -> Result<Plan> {
    let prev: BTreeMap<&str, &NodeRecord> = previous
        .map(|r| r.nodes.iter().map(|n| (n.name.as_str(), n)).collect())
        .unwrap_or_default();
    let nodes = engine.nodes();
    let store = engine.store();
    let mut entries = Vec::with_capacity(nodes.len());
    // nodes are created in dependency order, so one pass suffices
    for (id, node) in nodes.iter().enumerate() {
        let state = engine.state(id);
        let stage = engine.stage_of(id);
        let decl = &engine.pipeline().stages[&node.stage];
        let (status, reason) = match state {
            NodeState::Done { cached, .. } => (
                Status::RanDuringPlanning,
                if cached {
                    "axis source, cached".to_string()
                } else {
                    "axis source, computed while expanding".to_string()
                },
            ),
            NodeState::Failed { error } => {
                (Status::Run, format!("failed while expanding: {error}"))
            }
            NodeState::Skipped { reason } => (Status::Run, reason),
            NodeState::Pending => match engine.key_if_known(id) {
                None => {
                    let changing: Vec<String> = node
                        .deps()
                        .iter()
                        .filter(|&&d| !matches!(engine.state(d), NodeState::Done { .. }))
                        .map(|&d| nodes[d].stage.clone())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    (
                        Status::RunIfInputsChange,
                        format!("inputs from {} will be recomputed", changing.join(", ")),
                    )
                }
                Some((key, recipe)) => {
                    let hit = if stage.volatile() {
                        None
                    } else {
                        store.get_action(&key)?
                    };
                    match hit.filter(|rec| store.has_blob(&rec.output)) {
                        Some(rec) => {
                            engine.mark_cached(id, &key, &rec.output);
                            (Status::Cached, String::new())
                        }
                        None if stage.volatile() => (
                            Status::Run,
                            "volatile: reads files outside the cache, always checked".into(),
                        ),
                        None => (
                            Status::Run,
                            why(
                                prev.get(node.name.as_str()).copied(),
                                &key.to_string(),
                                &recipe,
                                &decl.params,
                            ),
                        ),
                    }
                }
            },
        };
        entries.push(PlanEntry {
            node: node.name.clone(),
            stage: node.stage.clone(),
            status,
            reason,
        });
    }
    Ok(Plan {
        pipeline: engine.pipeline().name.clone(),
        entries,
    })
}

fn why(prev: Option<&NodeRecord>, key: &str, recipe: &Value, params: &Value) -> String {
    let Some(p) = prev else {
        return "not in cache (no earlier run of this pipeline has this node)".into();
    };
    if p.key.as_deref() == Some(key) {
        return "output missing from the cache (collected or corrupt)".into();
    }
    let mut reasons = Vec::new();
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    runs::flatten(&p.params, "", &mut a);
    runs::flatten(params, "", &mut b);
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if a.get(k) != b.get(k) {
            reasons.push(format!(
                "param {k}: {} -> {}",
                a.get(k).map(|s| s.as_str()).unwrap_or("(unset)"),
                b.get(k).map(|s| s.as_str()).unwrap_or("(unset)")
            ));
        }
    }
    if recipe["version"].as_str() != Some(p.version.as_str()) {
        reasons.push(format!(
            "stage version {} -> {}",
            p.version,
            recipe["version"].as_str().unwrap_or("?")
        ));
    } else if recipe["code"].as_str() != Some(p.code.as_str()) {
        reasons.push("stage source code changed".into());
    }
    if let (Value::Object(old), Value::Object(new)) = (
        &p.inputs,
        &crate::session::compact_inputs(&recipe["inputs"]),
    ) {
        for (k, v) in new {
            if old.get(k) != Some(v) {
                reasons.push(format!("input {k} changed"));
            }
        }
    }
    if reasons.is_empty() {
        reasons.push("key changed (seed or item)".into());
    }
    reasons.join("; ")
}

/// Renders a plan for the terminal: one line per node that runs, a summary of cached ones.
pub fn render(plan: &Plan, all: bool) -> String {
    let mut out = String::new();
    for e in &plan.entries {
        if !all && matches!(e.status, Status::Cached | Status::RanDuringPlanning) {
            continue;
        }
        let tag = match e.status {
            Status::Cached => "cached ",
            Status::RanDuringPlanning => "checked",
            Status::Run => "RUN    ",
            Status::RunIfInputsChange => "run?   ",
        };
        out.push_str(&format!("{tag} {:<44} {}\n", e.node, e.reason));
    }
    out.push_str(&format!(
        "{}: {} nodes: {} cached, {} checked while expanding, {} to run, {} to run if their inputs change\n",
        plan.pipeline,
        plan.entries.len(),
        plan.count(&Status::Cached),
        plan.count(&Status::RanDuringPlanning),
        plan.count(&Status::Run),
        plan.count(&Status::RunIfInputsChange)
    ));
    out
}
