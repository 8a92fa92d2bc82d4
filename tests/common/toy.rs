//! Toy stages as data: a kind's name, parameters, inputs, flags and a `run` function, so a test
//! or a benchmark declares a stage in a few lines. Used by `tests/common` and, through
//! `#[path]`, by `benches/engine.rs`.
#![allow(dead_code)]

use anyhow::Result;
use mpfnet_api::{Artifact, AxisItem, Ctx, InputDecl, Stage};
use serde_json::{json, Value};

/// A stage of version 1 whose code fingerprint is `code`.
pub struct Toy {
    kind: &'static str,
    code: &'static str,
    about: &'static str,
    defaults: Value,
    inputs: &'static [InputDecl],
    volatile: bool,
    heavy: bool,
    uses_seed: bool,
    run: fn(&Ctx) -> Result<Artifact>,
}

impl Toy {
    /// A light, deterministic, unseeded stage without parameters or inputs.
    pub fn new(kind: &'static str, about: &'static str, run: fn(&Ctx) -> Result<Artifact>) -> Toy {
        Toy {
            kind,
            code: kind,
            about,
            defaults: json!({}),
            inputs: &[],
            volatile: false,
            heavy: false,
            uses_seed: false,
            run,
        }
    }
    pub fn code(mut self, code: &'static str) -> Toy {
        self.code = code;
        self
    }
    pub fn defaults(mut self, defaults: Value) -> Toy {
        self.defaults = defaults;
        self
    }
    pub fn inputs(mut self, inputs: &'static [InputDecl]) -> Toy {
        self.inputs = inputs;
        self
    }
    /// Always runs (reads something outside the cache).
    pub fn volatile(mut self) -> Toy {
        self.volatile = true;
        self
    }
    /// Holds the device: one at a time.
    pub fn heavy(mut self) -> Toy {
        self.heavy = true;
        self
    }
    /// Its node seed enters its key.
    pub fn seeded(mut self) -> Toy {
        self.uses_seed = true;
        self
    }
}

impl Stage for Toy {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn code(&self) -> String {
        self.code.into()
    }
    fn about(&self) -> &'static str {
        self.about
    }
    fn defaults(&self) -> Value {
        self.defaults.clone()
    }
    fn inputs(&self) -> &'static [InputDecl] {
        self.inputs
    }
    fn heavy(&self) -> bool {
        self.heavy
    }
    fn volatile(&self) -> bool {
        self.volatile
    }
    fn uses_seed(&self) -> bool {
        self.uses_seed
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact> {
        (self.run)(ctx)
    }
}

/// Axis items from lines "id value" (blank lines skipped): key = the value, attrs.value = it.
pub fn axis_from_lines(text: &str) -> Result<Vec<AxisItem>> {
    let mut axis = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (id, v) = line.split_once(' ').unwrap();
        let v: f64 = v.trim().parse()?;
        axis.push(AxisItem {
            id: id.into(),
            key: format!("{v}"),
            attrs: json!({"value": v}),
        });
    }
    Ok(axis)
}
