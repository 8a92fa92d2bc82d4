//! Toy stages for engine tests: arithmetic on small tensors, so expected outputs are known.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use mpfnet::engine::{Engine, Options};
use mpfnet::session::{self, Workspace};
use mpfnet_api::{Array, Artifact, Ctx, Input, InputDecl, Registry};
use serde_json::json;

pub mod tiny;
pub mod toy;

use toy::{axis_from_lines, Toy};

fn scalar(art: &Artifact) -> Result<f32> {
    Ok(art.tensor("v")?.as_f32()?[0])
}

fn out(v: f32) -> Artifact {
    out_wide(v, 1)
}

/// `v` repeated `width` times (a large artifact on demand; readers use element 0).
fn out_wide(v: f32, width: usize) -> Artifact {
    let mut a = Artifact::new();
    a.insert("v", Array::f32(vec![width], vec![v; width]).unwrap());
    a
}

fn sum_inputs(ctx: &Ctx) -> Result<f32> {
    let mut s = 0.0;
    for input in ctx.inputs.values() {
        match input {
            Input::One(h) => s += scalar(&h.load()?)?,
            Input::Many(v) => {
                for (_, h) in v {
                    s += scalar(&h.load()?)?;
                }
            }
        }
    }
    Ok(s)
}

/// v = value + sum of inputs; optional sleep and failure.
pub fn num() -> Toy {
    const I: &[InputDecl] = &[
        InputDecl::optional("ins", "anything with a tensor v"),
        InputDecl::optional("more", "more"),
    ];
    Toy::new("num", "toy: value + sum of inputs", |ctx| {
        let p = ctx.params;
        let ms = p["sleep_ms"].as_u64().unwrap();
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if p["fail"].as_bool().unwrap() {
            bail!("asked to fail");
        }
        let item = ctx
            .item
            .and_then(|i| i.attrs["value"].as_f64())
            .unwrap_or(0.0) as f32;
        let v = p["value"].as_f64().unwrap() as f32 + item + sum_inputs(ctx)?;
        Ok(out_wide(v, p["width"].as_u64().unwrap() as usize))
    })
    .code("num-code")
    .defaults(json!({"value": 0.0, "sleep_ms": 0, "fail": false, "label": "", "width": 1}))
    .inputs(I)
}

/// Volatile: reads `path` (lines "id value") and declares one axis item per line.
pub fn source() -> Toy {
    Toy::new("source", "toy: axis from a text file", |ctx| {
        let path = ctx.params["path"].as_str().unwrap();
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        let axis = axis_from_lines(&text)?;
        let mut a = out(axis.len() as f32);
        a.axis = Some(axis);
        Ok(a)
    })
    .code("source-code")
    .defaults(json!({"path": ""}))
    .volatile()
}

/// Seeded: v = a pseudo-random number from the node seed (tests seed derivation).
pub fn noise() -> Toy {
    Toy::new("noise", "toy: seeded value", |ctx| {
        Ok(out((ctx.seed % 1000) as f32))
    })
    .code("noise-code")
    .seeded()
}

/// A long node that checkpoints each step and resumes from its last checkpoint.
pub fn steps() -> Toy {
    Toy::new("steps", "toy: checkpointed loop", |ctx| {
        let steps = ctx.params["steps"].as_u64().unwrap();
        let ms = ctx.params["sleep_ms"].as_u64().unwrap();
        let (mut start, mut acc) = (0u64, 0u64);
        if let Some((s, bytes)) = ctx.services.load_checkpoint()? {
            start = s;
            acc = u64::from_le_bytes(bytes[..8].try_into()?);
        }
        let resumed_from = start;
        for s in start..steps {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            acc += s * s;
            ctx.services.save_checkpoint(s + 1, &acc.to_le_bytes())?;
            ctx.services.progress(s + 1, steps, "step");
        }
        let mut a = out(acc as f32);
        a.meta = json!({"resumed_from": resumed_from});
        Ok(a)
    })
    .code("steps-code")
    .defaults(json!({"steps": 5, "sleep_ms": 0}))
    .heavy()
}

pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.add(num()).add(source()).add(noise()).add(steps());
    r
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub ws: Workspace,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace {
            cache_dir: dir.path().join("cache"),
            runs_dir: dir.path().join("runs"),
        };
        Env { dir, ws }
    }
    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    pub fn engine(&self, pipeline: &Path, sets: &[&str]) -> Result<Engine> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        session::open(
            pipeline,
            &sets,
            &registry(),
            &self.ws,
            Options {
                jobs: 2,
                ..Default::default()
            },
        )
    }
    /// Runs and returns (computed, cached, outcome).
    pub fn run(&self, pipeline: &Path, sets: &[&str]) -> Result<session::RunOutcome> {
        let mut e = self.engine(pipeline, sets)?;
        session::run(&mut e, &self.ws, &[])
    }
    pub fn value(&self, pipeline: &Path, sets: &[&str], node: &str) -> f32 {
        let mut e = self.engine(pipeline, sets).unwrap();
        e.prepare().unwrap();
        e.run_all().unwrap();
        let id = e.node_id(node).unwrap();
        scalar(&e.load(id).unwrap()).unwrap()
    }
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
