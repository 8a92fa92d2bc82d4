//! Pipelines declared in TOML: parsing, `extends`, `--set` overrides, and validation against the
//! stage registry. Every error names the file, line and key (exit status 2 in the CLI).
//!
//! ```toml
//! name = "demo"                  # defaults to the file stem
//! extends = "base.toml"          # relative to this file; tables merge key by key
//!                                # (or a list, merged left to right: ["paper.toml", "cpu.toml"])
//! seed = 7
//! report = ["evaluate"]          # nodes whose files/summary form the run's report
//! [stages.features]
//! kind = "features"              # a stage kind from the registry
//! over = "dataset"               # fan out over the axis that stage `dataset` declares
//! inputs = { magnified = "magnify[*]" }   # `[*]` gathers every instance of a fanned stage
//! flow = "tvl1"                  # every other key is a parameter of the stage
//! [stages.bundle]                # ... or `stages.bundle = false`: drop a stage a base declares
//! [sweeps.gamma]                 # copies of stages, one per row (see `sweep.rs`)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use mpfnet_api::{Registry, Stage};
use serde_json::{Map, Value};

mod sweep;

/// Where a key was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// A configuration error: the CLI exits with status 2 on it, before touching the cache.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub loc: Loc,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.loc, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.loc, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(loc: Loc, key: impl Into<String>, message: impl Into<String>) -> anyhow::Error {
    ConfigError {
        loc,
        key: key.into(),
        message: message.into(),
    }
    .into()
}

/// A reference to other stages' outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRef {
    /// The referenced stages: one, or several for a list input (`["eval_p", "eval_c"]`).
    pub stages: Vec<String>,
    /// `stage[*]`: all instances of a fanned-out stage.
    pub gather: bool,
    /// A list input: the stages' (global) outputs gathered, each under its stage name.
    pub list: bool,
}

impl InputRef {
    pub fn stage(&self) -> &str {
        &self.stages[0]
    }
}

#[derive(Clone, Debug)]
pub struct StageDecl {
    pub name: String,
    pub kind: String,
    pub over: Option<String>,
    pub inputs: BTreeMap<String, InputRef>,
    /// The user's parameters merged over the stage's defaults.
    pub params: Value,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub struct Pipeline {
    pub name: String,
    pub path: PathBuf,
    pub seed: u64,
    pub report: Vec<String>,
    pub stages: BTreeMap<String, StageDecl>,
    /// The resolved document (after extends and --set), as recorded in run records.
    pub resolved: Value,
}

/// Parsed TOML with the line of every dotted key.
struct Doc {
    file: String,
    value: Value,
    lines: HashMap<String, usize>,
}

fn parse_doc(path: &Path) -> anyhow::Result<Doc> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(
            Loc {
                file: file.clone(),
                line: 0,
            },
            "",
            format!("cannot read pipeline: {e}"),
        )
    })?;
    parse_text(&file, &text)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

fn parse_text(file: &str, text: &str) -> anyhow::Result<Doc> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        err(
            Loc {
                file: file.into(),
                line,
            },
            "",
            format!("malformed TOML: {}", e.message()),
        )
    })?;
    let mut lines = HashMap::new();
    if let Ok(spanned) = toml::de::DeTable::parse(text) {
        collect_lines(text, "", spanned.get_ref(), &mut lines);
    }
    Ok(Doc {
        file: file.into(),
        value: toml_to_json(toml::Value::Table(table)),
        lines,
    })
}

fn collect_lines(
    text: &str,
    prefix: &str,
    t: &toml::de::DeTable,
    out: &mut HashMap<String, usize>,
) {
    for (k, v) in t.iter() {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        out.entry(path.clone())
            .or_insert_with(|| line_of(text, k.span().start));
        if let toml::de::DeValue::Table(inner) = v.get_ref() {
            collect_lines(text, &path, inner, out);
        }
    }
}

pub fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// The merged document with, for every dotted key, where its value came from.
struct Merged {
    value: Value,
    origin: HashMap<String, Loc>,
}

impl Merged {
    fn loc(&self, key: &str) -> Loc {
        // the most specific known location: the key, else its closest parent
        let mut k = key.to_string();
        loop {
            if let Some(l) = self.origin.get(&k) {
                return l.clone();
            }
            match k.rfind('.') {
                Some(i) => k.truncate(i),
                None => {
                    return self.origin.get("").cloned().unwrap_or(Loc {
                        file: "?".into(),
                        line: 0,
                    })
                }
            }
        }
    }
}

fn merge_into(
    dst: &mut Value,
    src: Value,
    prefix: &str,
    loc_of: &dyn Fn(&str) -> Loc,
    origin: &mut HashMap<String, Loc>,
) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                origin.insert(path.clone(), loc_of(&path));
                match d.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_into(existing, v, &path, loc_of, origin)
                    }
                    _ => {
                        record_origins(&v, &path, loc_of, origin);
                        d.insert(k, v);
                    }
                }
            }
        }
        (d, s) => *d = s,
    }
}

fn record_origins(
    v: &Value,
    prefix: &str,
    loc_of: &dyn Fn(&str) -> Loc,
    origin: &mut HashMap<String, Loc>,
) {
    if let Value::Object(m) = v {
        for (k, v) in m {
            let path = format!("{prefix}.{k}");
            origin.insert(path.clone(), loc_of(&path));
            record_origins(v, &path, loc_of, origin);
        }
    }
}

fn load_merged(path: &Path, depth: usize) -> anyhow::Result<Merged> {
    let doc = parse_doc(path)?;
    let file_loc = |key: &str| Loc {
        file: doc.file.clone(),
        line: doc.lines.get(key).copied().unwrap_or(0),
    };
    if depth > 16 {
        return Err(err(
            file_loc("extends"),
            "extends",
            "`extends` chain deeper than 16 (a loop?)",
        ));
    }
    let mut merged = match doc.value.get("extends") {
        None => Merged {
            value: Value::Object(Map::new()),
            origin: HashMap::new(),
        },
        Some(Value::String(base)) => load_base(path, base, depth, &file_loc)?,
        // several bases merge left to right: a paper configuration, then an overlay that
        // resizes it for a CPU, for example
        Some(Value::Array(bases)) if bases.iter().all(Value::is_string) => {
            let mut merged = Merged {
                value: Value::Object(Map::new()),
                origin: HashMap::new(),
            };
            for base in bases {
                let b = load_base(path, base.as_str().unwrap(), depth, &file_loc)?;
                let origins = b.origin;
                merge_into(
                    &mut merged.value,
                    b.value,
                    "",
                    &|_: &str| Loc {
                        file: String::new(),
                        line: 0,
                    },
                    &mut HashMap::new(),
                );
                merged.origin.extend(origins);
            }
            merged
        }
        Some(_) => {
            return Err(err(
                file_loc("extends"),
                "extends",
                "must be a path or an array of paths",
            ))
        }
    };
    let mut value = doc.value.clone();
    value.as_object_mut().unwrap().remove("extends");
    // `name` is per file: a child does not inherit its base's name
    merged.value.as_object_mut().unwrap().remove("name");
    merged.origin.insert(
        String::new(),
        Loc {
            file: doc.file.clone(),
            line: 0,
        },
    );
    merge_into(&mut merged.value, value, "", &file_loc, &mut merged.origin);
    Ok(merged)
}

fn load_base(
    path: &Path,
    base: &str,
    depth: usize,
    file_loc: &dyn Fn(&str) -> Loc,
) -> anyhow::Result<Merged> {
    let base_path = path.parent().unwrap_or(Path::new(".")).join(base);
    if !base_path.exists() {
        return Err(err(
            file_loc("extends"),
            "extends",
            format!("no such file {}", base_path.display()),
        ));
    }
    load_merged(&base_path, depth + 1)
}

/// Applies `--set a.b.c=value` (value parsed as TOML, else taken as a string).
fn apply_set(m: &mut Merged, assignment: &str) -> anyhow::Result<()> {
    let loc = Loc {
        file: format!("--set {assignment}"),
        line: 0,
    };
    let (key, raw) = assignment.split_once('=').ok_or_else(|| {
        err(
            loc.clone(),
            "",
            "expected KEY=VALUE, e.g. stages.meta.gamma=0.7",
        )
    })?;
    let key = key.trim();
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => toml_to_json(t.remove("v").unwrap()),
        Err(_) => Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err(loc, key, "empty key segment"));
    }
    set_path(&mut m.value, &parts, value)
        .map_err(|at| err(loc.clone(), key, format!("`{at}` is not a table")))?;
    m.origin.insert(key.to_string(), loc);
    Ok(())
}

fn set_path(v: &mut Value, parts: &[&str], value: Value) -> Result<(), String> {
    let obj = v.as_object_mut().ok_or_else(String::new)?;
    if parts.len() == 1 {
        obj.insert(parts[0].to_string(), value);
        return Ok(());
    }
    let child = obj
        .entry(parts[0].to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    set_path(child, &parts[1..], value).map_err(|at| {
        if at.is_empty() {
            parts[0].to_string()
        } else {
            format!("{}.{at}", parts[0])
        }
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

/// Merges user parameters over a stage's defaults, rejecting unknown keys and mistyped values.
fn merge_params(
    defaults: &Value,
    user: &Map<String, Value>,
    prefix: &str,
    m: &Merged,
    kind: &str,
) -> anyhow::Result<Value> {
    let mut out = defaults.clone();
    let dmap = out
        .as_object_mut()
        .expect("stage defaults must be a JSON object");
    for (k, v) in user {
        let path = format!("{prefix}.{k}");
        let Some(d) = dmap.get(k) else {
            let known: Vec<&String> = dmap.keys().collect();
            return Err(err(
                m.loc(&path),
                &path,
                format!("unknown parameter `{k}` for stage kind `{kind}`; known: {known:?}"),
            ));
        };
        let merged = match (d, v) {
            (Value::Null, v) => v.clone(),
            // an empty default table is an open map (e.g. `class_map`): its keys are the user's,
            // and the stage's typed parse checks them
            (Value::Object(dm), Value::Object(_)) if dm.is_empty() => v.clone(),
            (Value::Object(_), Value::Object(um)) => merge_params(d, um, &path, m, kind)?,
            (Value::Number(dn), Value::Number(un)) if dn.is_f64() || !un.is_f64() => {
                if dn.is_f64() {
                    Value::from(un.as_f64().unwrap())
                } else {
                    v.clone()
                }
            }
            (Value::Bool(_), Value::Bool(_))
            | (Value::String(_), Value::String(_))
            | (Value::Array(_), Value::Array(_)) => v.clone(),
            _ => {
                return Err(err(
                    m.loc(&path),
                    &path,
                    format!(
                        "expected {} (default {d}), found {} {v}",
                        json_type(d),
                        json_type(v)
                    ),
                ))
            }
        };
        dmap.insert(k.clone(), merged);
    }
    Ok(out)
}

fn parse_input_ref(s: &str) -> InputRef {
    match s.strip_suffix("[*]") {
        Some(stage) => InputRef {
            stages: vec![stage.to_string()],
            gather: true,
            list: false,
        },
        None => InputRef {
            stages: vec![s.to_string()],
            gather: false,
            list: false,
        },
    }
}

/// Loads, merges and validates a pipeline.
pub fn load(path: &Path, sets: &[String], registry: &Registry) -> anyhow::Result<Pipeline> {
    let mut m = load_merged(path, 0)?;
    for s in sets {
        apply_set(&mut m, s)?;
    }
    sweep::expand(&mut m)?;
    let top = m.value.as_object().cloned().unwrap_or_default();
    check_top_keys(&top, &m)?;
    let name = pipeline_name(&top, path, &m)?;
    let seed = match top.get("seed") {
        None => 0,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap(),
        Some(_) => return Err(err(m.loc("seed"), "seed", "must be a non-negative integer")),
    };
    let report = match top.get("report") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.iter().all(|v| v.is_string()) => {
            a.iter().map(|v| v.as_str().unwrap().to_string()).collect()
        }
        Some(_) => {
            return Err(err(
                m.loc("report"),
                "report",
                "must be an array of stage names",
            ))
        }
    };
    let stage_tables = match top.get("stages") {
        None => {
            return Err(err(
                m.loc(""),
                "stages",
                "a pipeline needs a [stages.NAME] table",
            ))
        }
        Some(Value::Object(s)) => s.clone(),
        Some(_) => return Err(err(m.loc("stages"), "stages", "must be a table of stages")),
    };
    let mut stages = BTreeMap::new();
    for (sname, sval) in &stage_tables {
        // `stages.NAME = false` in an overlay (or `--set`) drops a stage its base declares
        if sval == &Value::Bool(false) {
            continue;
        }
        stages.insert(sname.clone(), stage_decl(sname, sval, &m, registry)?);
    }
    check_references(&stages, &m)?;
    for r in &report {
        if !stages.contains_key(r) {
            return Err(err(
                m.loc("report"),
                "report",
                format!("no stage named `{r}`"),
            ));
        }
    }
    check_cycles(&stages, &m)?;
    Ok(Pipeline {
        name,
        path: path.to_path_buf(),
        seed,
        report,
        stages,
        resolved: m.value,
    })
}

fn check_top_keys(top: &Map<String, Value>, m: &Merged) -> anyhow::Result<()> {
    const TOP_KEYS: [&str; 5] = ["name", "seed", "report", "stages", "description"];
    for k in top.keys() {
        if !TOP_KEYS.contains(&k.as_str()) {
            return Err(err(
                m.loc(k),
                k,
                format!("unknown top-level key; expected one of {TOP_KEYS:?}"),
            ));
        }
    }
    Ok(())
}

/// `name`, else the file's stem.
fn pipeline_name(top: &Map<String, Value>, path: &Path, m: &Merged) -> anyhow::Result<String> {
    let name = match top.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(err(m.loc("name"), "name", "must be a string")),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into()),
    };
    // The name becomes a folder under runs/: a shared pipeline file must not write elsewhere.
    if let Err(why) = check_file_name(&name) {
        return Err(err(
            m.loc("name"),
            "name",
            format!("pipeline name {name:?} {why}"),
        ));
    }
    Ok(name)
}

/// One `[stages.NAME]` table: its kind, axis, inputs, and parameters merged over the kind's
/// defaults and validated by the stage.
fn stage_decl(
    sname: &str,
    sval: &Value,
    m: &Merged,
    registry: &Registry,
) -> anyhow::Result<StageDecl> {
    let base = format!("stages.{sname}");
    let Value::Object(t) = sval else {
        return Err(err(m.loc(&base), &base, "a stage must be a table"));
    };
    let kind = match t.get("kind") {
        Some(Value::String(k)) => k.clone(),
        _ => {
            return Err(err(
                m.loc(&base),
                format!("{base}.kind"),
                "missing `kind` (a string naming a stage kind)",
            ))
        }
    };
    let Some(stage) = registry.get(&kind) else {
        let known: Vec<_> = registry.kinds().collect();
        return Err(err(
            m.loc(&format!("{base}.kind")),
            format!("{base}.kind"),
            format!("unknown stage kind `{kind}`; known kinds: {known:?}"),
        ));
    };
    let over = match t.get("over") {
        None => None,
        Some(Value::String(o)) => Some(o.clone()),
        Some(_) => {
            return Err(err(
                m.loc(&format!("{base}.over")),
                format!("{base}.over"),
                "must be a stage name",
            ))
        }
    };
    let inputs = stage_inputs(t, &base, &**stage, &kind, m)?;
    let mut user = t.clone();
    for k in ["kind", "over", "inputs"] {
        user.remove(k);
    }
    let params = stage_params(&**stage, &user, &base, &kind, m)?;
    Ok(StageDecl {
        name: sname.to_string(),
        kind,
        over,
        inputs,
        params,
        loc: m.loc(&base),
    })
}

/// The stage's `inputs` table, checked against the inputs its kind declares.
fn stage_inputs(
    t: &Map<String, Value>,
    base: &str,
    stage: &dyn Stage,
    kind: &str,
    m: &Merged,
) -> anyhow::Result<BTreeMap<String, InputRef>> {
    let mut inputs = BTreeMap::new();
    match t.get("inputs") {
        None => {}
        Some(Value::Object(im)) => {
            for (iname, iv) in im {
                let key = format!("{base}.inputs.{iname}");
                let r = match iv {
                    Value::String(r) => parse_input_ref(r),
                    Value::Array(a) if !a.is_empty() && a.iter().all(|v| v.is_string()) => {
                        InputRef {
                            stages: a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
                            gather: false,
                            list: true,
                        }
                    }
                    _ => return Err(err(
                        m.loc(&key),
                        &key,
                        "an input names a stage: \"stage\", \"stage[*]\" or a list [\"a\", \"b\"]",
                    )),
                };
                if !stage.inputs().iter().any(|d| d.name == iname) {
                    let known: Vec<_> = stage.inputs().iter().map(|d| d.name).collect();
                    return Err(err(
                        m.loc(&key),
                        &key,
                        format!(
                            "stage kind `{kind}` has no input `{iname}`; its inputs: {known:?}"
                        ),
                    ));
                }
                inputs.insert(iname.clone(), r);
            }
        }
        Some(_) => {
            return Err(err(
                m.loc(&format!("{base}.inputs")),
                format!("{base}.inputs"),
                "must be a table",
            ))
        }
    }
    for d in stage.inputs() {
        if d.required && !inputs.contains_key(d.name) {
            return Err(err(
                m.loc(base),
                format!("{base}.inputs.{}", d.name),
                format!(
                    "missing required input `{}` of stage kind `{kind}` ({})",
                    d.name, d.doc
                ),
            ));
        }
    }
    Ok(inputs)
}

/// The user's parameters merged over the kind's defaults, then validated by the stage.
fn stage_params(
    stage: &dyn Stage,
    user: &Map<String, Value>,
    base: &str,
    kind: &str,
    m: &Merged,
) -> anyhow::Result<Value> {
    let params = merge_params(&stage.defaults(), user, base, m, kind)?;
    if let Err(e) = stage.validate(&params) {
        // point at the parameter the message names in backticks, where the user set it
        let msg = format!("{e:#}");
        let key = user
            .keys()
            .find(|k| msg.contains(&format!("`{k}`")))
            .map(|k| format!("{base}.{k}"))
            .unwrap_or_else(|| base.to_string());
        return Err(err(
            m.loc(&key),
            &key,
            format!("invalid parameters for `{kind}`: {msg}"),
        ));
    }
    Ok(params)
}

/// Every `over` and input names an existing stage whose fan-out fits the reference.
fn check_references(stages: &BTreeMap<String, StageDecl>, m: &Merged) -> anyhow::Result<()> {
    for s in stages.values() {
        if let Some(o) = &s.over {
            let key = format!("stages.{}.over", s.name);
            match stages.get(o) {
                None => return Err(err(m.loc(&key), &key, format!("no stage named `{o}`"))),
                Some(src) if src.over.is_some() => {
                    return Err(err(
                        m.loc(&key),
                        &key,
                        format!(
                            "`{o}` is itself fanned out; an axis must come from a global stage"
                        ),
                    ))
                }
                _ => {}
            }
        }
        for (iname, r) in &s.inputs {
            let key = format!("stages.{}.inputs.{iname}", s.name);
            for st in &r.stages {
                check_input_source(stages, s, r, st, &key, m)?;
            }
        }
    }
    Ok(())
}

/// Input `key` of stage `s` reads stage `st` (one of `r`'s).
fn check_input_source(
    stages: &BTreeMap<String, StageDecl>,
    s: &StageDecl,
    r: &InputRef,
    st: &str,
    key: &str,
    m: &Merged,
) -> anyhow::Result<()> {
    let Some(src) = stages.get(st) else {
        return Err(err(m.loc(key), key, format!("no stage named `{st}`")));
    };
    if r.list && src.over.is_some() {
        return Err(err(
            m.loc(key),
            key,
            format!("`{st}` fans out; a list input takes global stages only"),
        ));
    }
    if !r.gather && src.over.is_some() && src.over != s.over {
        return Err(err(m.loc(key), key, format!(
            "`{st}` fans out over `{}` but this stage does not: write \"{st}[*]\" to gather all its instances",
            src.over.as_deref().unwrap_or("")
        )));
    }
    Ok(())
}

fn check_cycles(stages: &BTreeMap<String, StageDecl>, m: &Merged) -> anyhow::Result<()> {
    use petgraph::graph::DiGraph;
    let mut g = DiGraph::<&str, ()>::new();
    let idx: BTreeMap<&str, _> = stages
        .keys()
        .map(|k| (k.as_str(), g.add_node(k.as_str())))
        .collect();
    for s in stages.values() {
        for dep in s
            .inputs
            .values()
            .flat_map(|r| r.stages.iter().map(|x| x.as_str()))
            .chain(s.over.as_deref())
        {
            g.add_edge(idx[dep], idx[s.name.as_str()], ());
        }
    }
    if let Err(cycle) = petgraph::algo::toposort(&g, None) {
        let name = g[cycle.node_id()];
        // name the whole cycle: the strongly connected component holding the offending stage
        let members: BTreeSet<&str> = petgraph::algo::tarjan_scc(&g)
            .into_iter()
            .find(|c| c.contains(&cycle.node_id()))
            .map(|c| c.into_iter().map(|n| g[n]).collect())
            .unwrap_or_default();
        let key = format!("stages.{name}.inputs");
        return Err(err(
            m.loc(&key),
            key,
            format!("dependency cycle through stages {members:?}"),
        ));
    }
    Ok(())
}

/// A name that becomes one file or folder name: ASCII letters, digits, `.`, `_`, `-`, not
/// starting with a dot (so never `.`, `..` or hidden), at most 100 characters.
pub fn check_file_name(name: &str) -> std::result::Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 100 || name.starts_with('.') || !ok_chars {
        return Err("must be one file name (letters, digits, `.`, `_`, `-`; not starting with `.`; at most 100 characters), not a path".into());
    }
    Ok(())
}

/// Stage names in a dependency order (inputs and axes first).
pub fn topo_order(p: &Pipeline) -> Vec<String> {
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(n: &str, p: &Pipeline, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(n.to_string()) {
            return;
        }
        let s = &p.stages[n];
        for dep in s
            .inputs
            .values()
            .flat_map(|r| r.stages.iter().map(|x| x.as_str()))
            .chain(s.over.as_deref())
        {
            visit(dep, p, seen, order);
        }
        order.push(n.to_string());
    }
    for n in p.stages.keys() {
        visit(n, p, &mut seen, &mut order);
    }
    order
}
