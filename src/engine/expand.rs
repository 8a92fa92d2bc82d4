//! Expansion: pipeline stages -> nodes. A stage with `over = "S"` becomes one node per axis
//! item of `S`'s output, so `S` must have run first (`Engine::prepare` sees to that).

use std::collections::BTreeSet;

use anyhow::{anyhow, bail, Result};
use mpfnet_api::AxisItem;

use super::{keys, Engine, NodeState};
use crate::pipeline::{InputRef, StageDecl};

/// How an input binds to upstream nodes.
#[derive(Clone, Debug)]
pub enum Bind {
    One(usize),
    /// Several nodes, each under a label: the axis item id (`stage[*]`) or the stage name (a
    /// list input).
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

impl Engine {
    /// Expands every stage whose inputs and axis source are expanded (and, for a fanned-out
    /// stage, whose axis source has run). True if any stage was expanded.
    pub(super) fn expand_ready(&mut self) -> Result<bool> {
        let order = crate::pipeline::topo_order(&self.shared.pipeline);
        let mut progressed = false;
        for stage in order {
            if self.expanded.contains(&stage) {
                continue;
            }
            let decl = self.shared.pipeline.stages[&stage].clone();
            if !self.upstream_expanded(&decl) {
                continue;
            }
            let Some(items) = self.axis_items(&decl)? else {
                continue;
            };
            let mut ids = Vec::with_capacity(items.len());
            for item in items {
                ids.push(self.add_node(&decl, item)?);
            }
            self.instances.insert(stage.clone(), ids);
            self.expanded.insert(stage);
            progressed = true;
        }
        Ok(progressed)
    }

    fn upstream_expanded(&self, decl: &StageDecl) -> bool {
        decl.inputs
            .values()
            .all(|r| r.stages.iter().all(|x| self.expanded.contains(x)))
            && decl.over.as_ref().is_none_or(|o| self.expanded.contains(o))
    }

    /// The items the stage fans out over: `[None]` for a global stage; `None` while its axis
    /// source has not run yet.
    fn axis_items(&self, decl: &StageDecl) -> Result<Option<Vec<Option<AxisItem>>>> {
        let Some(over) = &decl.over else {
            return Ok(Some(vec![None]));
        };
        let source = self.instances[over][0];
        let Some(digest) = self.shared.done_digest(source) else {
            return Ok(None);
        };
        let art = self.shared.load(source, &digest)?;
        let axis = art.axis.ok_or_else(|| {
            anyhow!(
                "stage `{}` fans out over `{over}`, but `{over}` (kind `{}`) declares no axis",
                decl.name,
                self.shared.pipeline.stages[over].kind
            )
        })?;
        let mut seen = BTreeSet::new();
        for it in &axis {
            if !seen.insert(it.id.clone()) {
                bail!("axis of `{over}` repeats item id `{}`", it.id);
            }
        }
        Ok(Some(axis.into_iter().map(Some).collect()))
    }

    /// Adds the node of `decl` for `item`, bound to its inputs; returns its id.
    fn add_node(&mut self, decl: &StageDecl, item: Option<AxisItem>) -> Result<usize> {
        let name = match &item {
            None => decl.name.clone(),
            Some(it) => format!("{}[{}]", decl.name, it.id),
        };
        let mut inputs = Vec::new();
        for (input, r) in &decl.inputs {
            inputs.push((input.clone(), self.bind(r, &name, item.as_ref())?));
        }
        let item_id = item.as_ref().map(|i| i.id.as_str()).unwrap_or("");
        let node = super::Node {
            name: name.clone(),
            stage: decl.name.clone(),
            seed: keys::node_seed(self.shared.pipeline.seed, &decl.name, item_id),
            item,
            inputs,
        };
        let id = {
            let mut nodes = self.shared.nodes.write().unwrap();
            nodes.push(node);
            self.shared.states.lock().unwrap().push(NodeState::Pending);
            nodes.len() - 1
        };
        self.by_name.insert(name, id);
        Ok(id)
    }

    /// The upstream node(s) input `r` of node `name` (on `item`) reads.
    fn bind(&self, r: &InputRef, name: &str, item: Option<&AxisItem>) -> Result<Bind> {
        let source = &self.instances[r.stage()];
        if r.list {
            return Ok(Bind::Many(
                r.stages
                    .iter()
                    .map(|st| (st.clone(), self.instances[st][0]))
                    .collect(),
            ));
        }
        if r.gather {
            let nodes = self.shared.nodes.read().unwrap();
            let item_id = |i: usize| nodes[i].item.as_ref().map(|t| t.id.clone());
            return Ok(Bind::Many(
                source
                    .iter()
                    .map(|&i| (item_id(i).unwrap_or_default(), i))
                    .collect(),
            ));
        }
        if self.shared.pipeline.stages[r.stage()].over.is_none() {
            return Ok(Bind::One(source[0]));
        }
        // same axis (checked at load): the matching instance
        let key = format!("{}[{}]", r.stage(), item.unwrap().id);
        let id = self
            .by_name
            .get(&key)
            .ok_or_else(|| anyhow!("{name}: no node {key}"))?;
        Ok(Bind::One(*id))
    }
}
