//! The contract between the mpfnet engine and its stages.
//!
//! A [`Stage`] is a pure function of its parameters and its input [`Artifact`]s. It knows nothing
//! of scheduling, caching or files in the cache: the engine hands it a [`Ctx`] with lazily loaded
//! inputs and a few [`Services`], and stores whatever [`Artifact`] it returns.
//!
//! This crate is deliberately tiny (serde only) so that the engine, its tests and the stages all
//! depend on it without pulling the domain's heavy dependencies into the engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use anyhow::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An error caused by what the user handed in (a data file, a sheet row, a model bundle, a
/// clip, an argument), as opposed to a failure of the run itself: the CLI exits with status 2
/// for these, 1 for the others. Wrap with [`BadInputExt::bad_input`]; the message is kept.
#[derive(Debug)]
pub struct BadInput(pub anyhow::Error);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for BadInput {}

/// Marks an error as the user's input's fault ([`BadInput`]).
pub trait BadInputExt<T> {
    fn bad_input(self) -> Result<T>;
}

impl<T, E: Into<anyhow::Error>> BadInputExt<T> for std::result::Result<T, E> {
    fn bad_input(self) -> Result<T> {
        self.map_err(|e| anyhow::Error::new(BadInput(e.into())))
    }
}

/// Whether any error in `e`'s chain is a [`BadInput`].
pub fn is_bad_input(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<BadInput>())
}

/// A dense little-endian array, the unit of data between stages.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    I64 { shape: Vec<usize>, data: Vec<i64> },
    U8 { shape: Vec<usize>, data: Vec<u8> },
}

impl Array {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        check_len(&shape, data.len())?;
        Ok(Array::F32 { shape, data })
    }
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Self> {
        check_len(&shape, data.len())?;
        Ok(Array::I64 { shape, data })
    }
    pub fn u8(shape: Vec<usize>, data: Vec<u8>) -> Result<Self> {
        check_len(&shape, data.len())?;
        Ok(Array::U8 { shape, data })
    }
    pub fn shape(&self) -> &[usize] {
        match self {
            Array::F32 { shape, .. } | Array::I64 { shape, .. } | Array::U8 { shape, .. } => shape,
        }
    }
    pub fn dtype(&self) -> &'static str {
        match self {
            Array::F32 { .. } => "F32",
            Array::I64 { .. } => "I64",
            Array::U8 { .. } => "U8",
        }
    }
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The values as f64, whatever the dtype (for summaries).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Array::F32 { data, .. } => data.iter().map(|&v| v as f64).collect(),
            Array::I64 { data, .. } => data.iter().map(|&v| v as f64).collect(),
            Array::U8 { data, .. } => data.iter().map(|&v| v as f64).collect(),
        }
    }
    pub fn as_f32(&self) -> Result<&[f32]> {
        match self {
            Array::F32 { data, .. } => Ok(data),
            other => anyhow::bail!("expected an F32 array, found {}", other.dtype()),
        }
    }
    pub fn as_i64(&self) -> Result<&[i64]> {
        match self {
            Array::I64 { data, .. } => Ok(data),
            other => anyhow::bail!("expected an I64 array, found {}", other.dtype()),
        }
    }
}

fn check_len(shape: &[usize], len: usize) -> Result<()> {
    let want: usize = shape.iter().product();
    anyhow::ensure!(
        want == len,
        "array of shape {shape:?} needs {want} values, got {len}"
    );
    Ok(())
}

/// One element of an axis that downstream stages fan out over (a sample, a fold...).
///
/// `key` is a content key of the item alone: a node fanned out over this item is keyed by it,
/// not by the whole artifact that declared the axis, so changing one sample re-runs only that
/// sample's nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AxisItem {
    pub id: String,
    pub key: String,
    #[serde(default)]
    pub attrs: Value,
}

/// What a stage returns: named arrays, a JSON document, named files (reports, PNGs), and
/// optionally an axis for downstream fan-out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Artifact {
    pub tensors: BTreeMap<String, Array>,
    pub meta: Value,
    pub files: BTreeMap<String, Vec<u8>>,
    pub axis: Option<Vec<AxisItem>>,
}

impl Artifact {
    pub fn new() -> Self {
        Artifact {
            meta: Value::Null,
            ..Default::default()
        }
    }
    pub fn with_meta(meta: Value) -> Self {
        Artifact {
            meta,
            ..Default::default()
        }
    }
    pub fn tensor(&self, name: &str) -> Result<&Array> {
        self.tensors.get(name).ok_or_else(|| {
            let have: Vec<_> = self.tensors.keys().collect();
            anyhow::anyhow!("artifact has no tensor `{name}` (it has {have:?})")
        })
    }
    pub fn insert(&mut self, name: impl Into<String>, a: Array) -> &mut Self {
        self.tensors.insert(name.into(), a);
        self
    }
}

/// A lazily loaded input artifact: stages that gather hundreds of inputs load them one at a time.
#[derive(Clone)]
pub struct Handle {
    pub digest: String,
    loader: Arc<dyn Fn() -> Result<Artifact> + Send + Sync>,
}

impl Handle {
    pub fn new(digest: String, loader: Arc<dyn Fn() -> Result<Artifact> + Send + Sync>) -> Self {
        Handle { digest, loader }
    }
    /// A handle over an artifact already in memory (tests, in-process use).
    pub fn ready(digest: impl Into<String>, art: Artifact) -> Self {
        let art = Arc::new(art);
        Handle {
            digest: digest.into(),
            loader: Arc::new(move || Ok((*art).clone())),
        }
    }
    pub fn load(&self) -> Result<Artifact> {
        (self.loader)()
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle({})", self.digest)
    }
}

/// An input as bound by the pipeline: one artifact, or all instances of a fanned-out stage
/// (`"stage[*]"`), with their axis item ids.
#[derive(Clone, Debug)]
pub enum Input {
    One(Handle),
    Many(Vec<(String, Handle)>),
}

impl Input {
    pub fn one(&self) -> Result<&Handle> {
        match self {
            Input::One(h) => Ok(h),
            Input::Many(_) => anyhow::bail!("expected one artifact, the pipeline bound several"),
        }
    }
    pub fn many(&self) -> Result<&[(String, Handle)]> {
        match self {
            Input::Many(v) => Ok(v),
            Input::One(_) => anyhow::bail!("expected a gathered input (`stage[*]`), got one"),
        }
    }
}

/// What the engine offers a running stage: none of it changes the stage's result.
pub trait Services: Send + Sync {
    /// Content digest of an external file (memoised on path, size, mtime and inode).
    fn file_digest(&self, path: &Path) -> Result<String>;
    fn file_digests(&self, paths: &[PathBuf]) -> Result<Vec<String>> {
        paths.iter().map(|p| self.file_digest(p)).collect()
    }
    /// Progress of long work; `msg` is shown beside the bar (e.g. "epoch 3/60 loss 0.41").
    fn progress(&self, done: u64, total: u64, msg: &str);
    /// Training checkpoints, stored under keys derived from the node's own key.
    fn save_checkpoint(&self, step: u64, bytes: &[u8]) -> Result<()>;
    fn load_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>>;
    /// True once the user asked to stop (Ctrl-C): long stages return an error at a safe point.
    fn cancelled(&self) -> bool;
}

/// Services that do nothing special: for tests and for running a stage outside the engine.
#[derive(Default)]
pub struct PlainServices {
    checkpoints: std::sync::Mutex<Option<(u64, Vec<u8>)>>,
}

impl Services for PlainServices {
    fn file_digest(&self, path: &Path) -> Result<String> {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Ok(format!("{:x}", simple_hash(&bytes)))
    }
    fn progress(&self, _done: u64, _total: u64, _msg: &str) {}
    fn save_checkpoint(&self, step: u64, bytes: &[u8]) -> Result<()> {
        *self.checkpoints.lock().unwrap() = Some((step, bytes.to_vec()));
        Ok(())
    }
    fn load_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>> {
        Ok(self.checkpoints.lock().unwrap().clone())
    }
    fn cancelled(&self) -> bool {
        false
    }
}

// FNV-1a: PlainServices is for tests only; the engine uses blake3 through the cache.
fn simple_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Everything a stage sees while it runs.
pub struct Ctx<'a> {
    /// The node's display name, e.g. `features[casme2/sub01/EP02_01f]`.
    pub node: &'a str,
    /// The node's cache key: blake3 over its whole recipe (kind, version, code, parameters, seed,
    /// and its inputs' output digests, hence transitively everything upstream). A stage may
    /// record it in its output (the key determines the output, so this keeps the stage pure).
    pub key: &'a str,
    /// The stage's parameters: the stage's defaults merged with the pipeline's values.
    pub params: &'a Value,
    /// The axis item this node was fanned out for, if any.
    pub item: Option<&'a AxisItem>,
    pub inputs: &'a BTreeMap<String, Input>,
    /// Derived from the pipeline seed and the node's identity, never from scheduling order.
    pub seed: u64,
    /// `cpu` or `cuda:N`.
    pub device: &'a str,
    pub services: &'a dyn Services,
}

impl<'a> Ctx<'a> {
    pub fn input(&self, name: &str) -> Result<&Input> {
        self.inputs
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("{}: input `{name}` not bound", self.node))
    }
    /// Parameters deserialised into the stage's own typed struct.
    pub fn params_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.params.clone())
            .map_err(|e| anyhow::anyhow!("{}: parameters: {e}", self.node))
    }
    pub fn item(&self) -> Result<&AxisItem> {
        self.item.ok_or_else(|| {
            anyhow::anyhow!(
                "{}: this stage must fan out over an axis (`over = ...`)",
                self.node
            )
        })
    }
}

/// An input a stage declares.
#[derive(Clone, Copy, Debug)]
pub struct InputDecl {
    pub name: &'static str,
    pub required: bool,
    pub doc: &'static str,
}

impl InputDecl {
    pub const fn required(name: &'static str, doc: &'static str) -> Self {
        InputDecl {
            name,
            required: true,
            doc,
        }
    }
    pub const fn optional(name: &'static str, doc: &'static str) -> Self {
        InputDecl {
            name,
            required: false,
            doc,
        }
    }
}

/// The unit of work. Implementations must be pure: the same parameters, item, seed and input
/// artifacts give the same artifact. Bump `version` whenever the output would change; the
/// engine also keys on `code`, a fingerprint of the stage's source, so a forgotten bump cannot
/// silently reuse stale results.
pub trait Stage: Send + Sync {
    fn kind(&self) -> &'static str;
    fn version(&self) -> &'static str;
    /// Fingerprint of the source this stage's output depends on.
    fn code(&self) -> String;
    /// The (source path, digest) pairs behind [`Stage::code`], so that `plan` can name the
    /// files whose change recomputes a node. Default: none (the plan then only says the code
    /// changed).
    fn code_files(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// One line for `mpfnet stages`.
    fn about(&self) -> &'static str;
    /// Default parameters as a JSON object: also the schema (unknown keys and mistyped values
    /// are rejected against it).
    fn defaults(&self) -> Value;
    /// Deeper checks once merged (enum values, ranges): return a message naming the key.
    fn validate(&self, _params: &Value) -> Result<()> {
        Ok(())
    }
    fn inputs(&self) -> &'static [InputDecl];
    /// Heavy stages (training) get a device slot: one at a time per device.
    fn heavy(&self) -> bool {
        false
    }
    /// Volatile stages read the outside world (a dataset folder): they run on every invocation
    /// and downstream nodes are keyed by their output digest, so an unchanged result stops there.
    fn volatile(&self) -> bool {
        false
    }
    /// Whether the node seed enters the node key.
    fn uses_seed(&self) -> bool {
        false
    }
    /// Parameters (JSON pointers into the merged parameters, e.g. `/flownet2/weights`) that
    /// name an external file the output depends on (model weights). The node key then holds
    /// that file's content digest in place of the path: another file recomputes the node, the
    /// same file at another path does not. Check such files in [`Stage::validate`].
    fn file_params(&self, _params: &Value) -> Vec<String> {
        Vec::new()
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact>;
    /// PNG renderings of an artifact of this stage for `cache export` (name, PNG bytes).
    fn render_png(&self, _art: &Artifact) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(Vec::new())
    }
}

/// A stage kind's typed parameters: serde gives the schema (its `Default` is the kind's
/// defaults), [`StageParams::validate`] the deeper checks (enum values, ranges, files) in one
/// place.
pub trait StageParams: Serialize + DeserializeOwned + Default {
    /// Checks once merged and parsed: return a message naming the key.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// Where a stage crate records which of its source files each of its kinds depends on (a
/// table its build script generates): the kinds' code fingerprints come from it.
pub trait SourceClaims {
    /// The (source path, digest) pairs `kind`'s output depends on (see [`Stage::code_files`]).
    fn files_of(kind: &str) -> Vec<(String, String)>;
}

/// A stage kind written against typed parameters. Every `TypedStage` is a [`Stage`] (the
/// blanket impl below does the JSON plumbing once: defaults, parsing, validation, the code
/// fingerprint from the files its crate's [`TypedStage::Claims`] claim for it).
pub trait TypedStage: Send + Sync {
    const KIND: &'static str;
    /// Bump whenever the output would change (see [`Stage`]).
    const VERSION: &'static str;
    /// One line for `mpfnet stages`.
    const ABOUT: &'static str;
    const INPUTS: &'static [InputDecl] = &[];
    /// See [`Stage::heavy`], [`Stage::uses_seed`], [`Stage::volatile`].
    const HEAVY: bool = false;
    const USES_SEED: bool = false;
    const VOLATILE: bool = false;
    type Params: StageParams;
    /// The claims table of the kind's crate, looked up by [`TypedStage::KIND`].
    type Claims: SourceClaims;
    /// See [`Stage::file_params`].
    fn files_in(&self, _params: &Self::Params) -> Vec<String> {
        Vec::new()
    }
    fn compute(&self, params: &Self::Params, ctx: &Ctx) -> Result<Artifact>;
    /// See [`Stage::render_png`].
    fn pngs(&self, _art: &Artifact) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(Vec::new())
    }
}

/// Merged parameters parsed into a kind's typed struct (the message is serde's, naming the key).
pub fn parse_params<P: DeserializeOwned>(v: &Value) -> Result<P> {
    serde_json::from_value(v.clone()).map_err(|e| anyhow::anyhow!("{e}"))
}

impl<T: TypedStage> Stage for T {
    fn kind(&self) -> &'static str {
        T::KIND
    }
    fn version(&self) -> &'static str {
        T::VERSION
    }
    fn code(&self) -> String {
        fingerprint_of(&self.code_files())
    }
    fn code_files(&self) -> Vec<(String, String)> {
        T::Claims::files_of(T::KIND)
    }
    fn about(&self) -> &'static str {
        T::ABOUT
    }
    fn defaults(&self) -> Value {
        defaults_json::<T::Params>()
    }
    fn validate(&self, params: &Value) -> Result<()> {
        parse_params::<T::Params>(params)?.validate()
    }
    fn inputs(&self) -> &'static [InputDecl] {
        T::INPUTS
    }
    fn heavy(&self) -> bool {
        T::HEAVY
    }
    fn volatile(&self) -> bool {
        T::VOLATILE
    }
    fn uses_seed(&self) -> bool {
        T::USES_SEED
    }
    fn file_params(&self, params: &Value) -> Vec<String> {
        parse_params::<T::Params>(params)
            .map(|p| self.files_in(&p))
            .unwrap_or_default()
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact> {
        // parsed once per node; the engine validated the merged parameters at load
        let p: T::Params = ctx.params_as()?;
        self.compute(&p, ctx)
    }
    fn render_png(&self, art: &Artifact) -> Result<Vec<(String, Vec<u8>)>> {
        self.pngs(art)
    }
}

/// A kind's defaults from its typed parameter struct (the schema the engine checks against).
///
/// An `f32` field serialises as its exact binary value (`0.15` -> `0.15000000596046448`); such
/// numbers are written back as the shortest decimal that is the same `f32`, so defaults print
/// as a person wrote them (in `plan`, `cache show`, run records) and parse to the same value.
pub fn defaults_json<P: Serialize + Default>() -> Value {
    let mut v = serde_json::to_value(P::default()).expect("parameters serialise");
    shortest_f32(&mut v);
    v
}

fn shortest_f32(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            let g = f as f32;
            if g as f64 == f {
                if let Some(m) = g
                    .to_string()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    *n = m;
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(shortest_f32),
        Value::Object(o) => o.values_mut().for_each(shortest_f32),
        _ => {}
    }
}

/// What a report node's meta carries to the end of a run: the text printed as the results
/// table (`summary`) and the headline metrics the run record keeps (`metrics`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
}

impl ReportMeta {
    /// The report fields of an artifact's meta (none when it has neither).
    pub fn of(art: &Artifact) -> Self {
        serde_json::from_value(art.meta.clone()).unwrap_or_default()
    }
}

/// Kind -> stage, the only way the engine finds stages.
#[derive(Default, Clone)]
pub struct Registry {
    stages: BTreeMap<&'static str, Arc<dyn Stage>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn add(&mut self, s: impl Stage + 'static) -> &mut Self {
        self.stages.insert(s.kind(), Arc::new(s));
        self
    }
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Stage>> {
        self.stages.get(kind)
    }
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.stages.keys().copied()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Stage>> {
        self.stages.values()
    }
}

/// The entries of `table` (source path, digest; generated by the stage crate's build script)
/// whose path starts with one of `prefixes`, in table order: what [`Stage::code_files`] returns.
pub fn code_files_of(table: &[(&str, &str)], prefixes: &[&str]) -> Vec<(String, String)> {
    table
        .iter()
        .filter(|(path, _)| prefixes.iter().any(|p| path.starts_with(p)))
        .map(|(p, d)| (p.to_string(), d.to_string()))
        .collect()
}

/// Fingerprint helper for [`Stage::code`]: combines the digests of the source files of `table`
/// that `prefixes` select (see [`code_files_of`]).
pub fn code_fingerprint(table: &[(&str, &str)], prefixes: &[&str]) -> String {
    let files = code_files_of(table, prefixes);
    assert!(
        !files.is_empty(),
        "code_fingerprint: no source file matches {prefixes:?}"
    );
    fingerprint_of(&files)
}

/// The fingerprint of (source path, digest) pairs, as [`code_fingerprint`] computes it.
pub fn fingerprint_of(files: &[(String, String)]) -> String {
    let parts: Vec<&str> = files
        .iter()
        .flat_map(|(p, d)| [p.as_str(), d.as_str()])
        .collect();
    format!("{:016x}", simple_hash(parts.join("\n").as_bytes()))
}
