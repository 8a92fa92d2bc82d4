//! Subsets of an expanded graph, for running a pipeline in pieces (one piece per cluster job):
//! the instances of one axis item (every node of the stages fanned out over stage `S` whose item
//! is `X`), or the shared part (the nodes that depend on no such instance). The engine runs a
//! subset's targets plus whatever they depend on, so the pieces together are the whole run.

use anyhow::Result;

use crate::engine::Engine;
use crate::pipeline::{ConfigError, Loc};

/// Which nodes a run targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    All,
    /// The instances of item `id` among the stages fanned out over stage `axis`.
    Item {
        axis: String,
        id: String,
    },
    /// The nodes that depend on no instance of a stage fanned out over `axis`.
    Shared {
        axis: String,
    },
}

impl Selection {
    /// A short name for run records and folder names; None for a whole run.
    pub fn label(&self) -> Option<String> {
        match self {
            Selection::All => None,
            Selection::Item { axis, id } => Some(format!("{axis}={id}")),
            Selection::Shared { axis } => Some(format!("shared-{axis}")),
        }
    }

    /// The target nodes (the graph must be expanded). An unknown item is a configuration error
    /// listing the valid ones.
    pub fn targets(&self, engine: &Engine) -> Result<Vec<usize>> {
        match self {
            Selection::All => Ok((0..engine.nodes().len()).collect()),
            Selection::Item { axis, id } => {
                let items = per_item(engine, axis)?;
                match items.iter().find(|(i, _)| i == id) {
                    Some((_, nodes)) => Ok(nodes.clone()),
                    None => Err(config_error(
                        engine,
                        &format!(
                            "no item `{id}` on the axis of `{axis}`; known: {}",
                            items
                                .iter()
                                .map(|(i, _)| i.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )),
                }
            }
            Selection::Shared { axis } => {
                per_item(engine, axis)?;
                Ok(shared_nodes(engine, axis))
            }
        }
    }
}

fn config_error(engine: &Engine, message: &str) -> anyhow::Error {
    ConfigError {
        loc: Loc {
            file: engine.pipeline().path.display().to_string(),
            line: 0,
        },
        key: String::new(),
        message: message.to_string(),
    }
    .into()
}

fn fanned_over(engine: &Engine, axis: &str, stage: &str) -> bool {
    engine.pipeline().stages[stage].over.as_deref() == Some(axis)
}

/// Per item of `axis` (in axis order): the nodes of the stages fanned out over it with that item.
pub fn per_item(engine: &Engine, axis: &str) -> Result<Vec<(String, Vec<usize>)>> {
    let fanned: Vec<&str> = engine
        .pipeline()
        .stages
        .values()
        .filter(|s| s.over.as_deref() == Some(axis))
        .map(|s| s.name.as_str())
        .collect();
    if fanned.is_empty() {
        let overs: Vec<String> = engine
            .pipeline()
            .stages
            .values()
            .filter_map(|s| s.over.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        return Err(config_error(
            engine,
            &format!(
                "no stage fans out over `{axis}`; stages fan out over: {}",
                overs.join(", ")
            ),
        ));
    }
    let nodes = engine.nodes();
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for stage in fanned {
        for &n in engine.instances(stage) {
            let id = nodes[n]
                .item
                .as_ref()
                .map(|i| i.id.clone())
                .unwrap_or_default();
            match out.iter_mut().find(|(i, _)| *i == id) {
                Some((_, v)) => v.push(n),
                None => out.push((id, vec![n])),
            }
        }
    }
    for (_, v) in &mut out {
        v.sort();
    }
    Ok(out)
}

/// The nodes that do not depend, even transitively, on an instance of a stage over `axis`.
pub fn shared_nodes(engine: &Engine, axis: &str) -> Vec<usize> {
    let nodes = engine.nodes();
    let mut tainted = vec![false; nodes.len()];
    // nodes are created after their inputs, so one pass in id order sees every input first
    for (i, n) in nodes.iter().enumerate() {
        tainted[i] = fanned_over(engine, axis, &n.stage) || n.deps().iter().any(|&d| tainted[d]);
    }
    (0..nodes.len()).filter(|&i| !tainted[i]).collect()
}
