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
    let no_files = BTreeMap::new();
    let prev_files = previous.map(|r| &r.code_files).unwrap_or(&no_files);
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
                                &CodeFiles {
                                    old: prev_files.get(&decl.kind),
                                    new: &stage.code_files(),
                                },
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

/// A stage kind's source files (path -> digest) in the previous run's record and now.
struct CodeFiles<'a> {
    old: Option<&'a BTreeMap<String, String>>,
    new: &'a [(String, String)],
}

impl CodeFiles<'_> {
    /// "stage source code changed", naming the files edited, added or removed when the previous
    /// record lists them.
    fn describe(&self) -> String {
        let base = "stage source code changed";
        let Some(old) = self.old.filter(|o| !o.is_empty()) else {
            return base.into();
        };
        let new: BTreeMap<&str, &str> = self
            .new
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_str()))
            .collect();
        let mut changed: Vec<String> = Vec::new();
        for (p, d) in &new {
            match old.get(*p) {
                Some(o) if o == d => {}
                Some(_) => changed.push(p.to_string()),
                None => changed.push(format!("{p} (new)")),
            }
        }
        for p in old.keys() {
            if !new.contains_key(p.as_str()) {
                changed.push(format!("{p} (gone)"));
            }
        }
        const SHOWN: usize = 4;
        match changed.len() {
            0 => base.into(),
            n if n <= SHOWN => format!("{base}: {}", changed.join(", ")),
            n => format!(
                "{base}: {} (+{} more)",
                changed[..SHOWN].join(", "),
                n - SHOWN
            ),
        }
    }
}

fn why(
    prev: Option<&NodeRecord>,
    key: &str,
    recipe: &Value,
    params: &Value,
    code: &CodeFiles,
) -> String {
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
        reasons.push(code.describe());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn files(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(p, d)| (p.to_string(), d.to_string()))
            .collect()
    }

    fn describe(old: Option<&BTreeMap<String, String>>, new: &[(String, String)]) -> String {
        CodeFiles { old, new }.describe()
    }

    #[test]
    fn code_change_names_edited_added_and_removed_files() {
        let old: BTreeMap<String, String> = files(&[("a.rs", "1"), ("b.rs", "2"), ("c.rs", "3")])
            .into_iter()
            .collect();
        let new = files(&[("a.rs", "1"), ("b.rs", "9"), ("d.rs", "4")]);
        assert_eq!(
            describe(Some(&old), &new),
            "stage source code changed: b.rs, d.rs (new), c.rs (gone)"
        );
        // A record from before files were recorded: the plain reason.
        assert_eq!(describe(None, &new), "stage source code changed");
        // Many files: the first four and a count.
        let many_old: BTreeMap<String, String> =
            (0..7).map(|i| (format!("f{i}.rs"), "0".into())).collect();
        let many_new: Vec<(String, String)> =
            (0..7).map(|i| (format!("f{i}.rs"), "1".into())).collect();
        assert_eq!(
            describe(Some(&many_old), &many_new),
            "stage source code changed: f0.rs, f1.rs, f2.rs, f3.rs (+3 more)"
        );
    }
}
