//! `[sweeps.NAME]`: one pipeline, many rows of an experiment. A sweep copies a set of stages once
//! per row, renames the copies `STAGE_ROW`, points the copies' inputs at each other, applies the
//! row's assignments, and inserts the copied evaluations into a report. It runs after `extends`
//! and `--set`, so a setting made on a stage (a smaller size, another seed) reaches every row's
//! copy, and a copy whose parameters equal its original's is the same cached node.
//!
//! ```toml
//! [sweeps.features]                        # rows by name, each a table of STAGE.KEY = value
//! stages = ["gfe", "afe", "meta_p", "eval_p"]
//! report = "report"                        # copies of its evaluations go before each original
//! rows.flow = { "gfe.channels" = "flow", "afe.channels" = "flow", "eval_p.label" = "P, flow" }
//!
//! [sweeps.gamma]                           # or one value per row for every key of `set`
//! stages = ["meta_p", "eval_p"]
//! set = ["meta_p.gamma"]
//! values = [0.0, 0.5, 1.0]                 # rows gamma0_0, gamma0_5, gamma1_0
//! labels = { eval_p = "MPFNet-P, gamma = {}" }   # {} is the row's value (or name)
//! each = { "meta_p.final_model" = false }  # assignments every row makes (before its own)
//! ```

use serde_json::{Map, Value};

use super::{err, Loc, Merged};

/// One row: its name (the copies' suffix), the text that replaces `{}` in labels, and its
/// assignments (stage, key path inside the stage, value).
struct Row {
    name: String,
    label: String,
    assignments: Vec<Assignment>,
}

struct Sweep {
    name: String,
    stages: Vec<String>,
    rows: Vec<Row>,
    labels: Map<String, Value>,
    report: Option<String>,
}

/// Expands every `[sweeps.NAME]` table of the merged document into stage copies, then removes
/// `sweeps`. Errors name the sweep's key and where it was written.
pub(super) fn expand(m: &mut Merged) -> anyhow::Result<()> {
    let Some(sweeps) = m.value.as_object_mut().and_then(|o| o.remove("sweeps")) else {
        return Ok(());
    };
    let Value::Object(sweeps) = sweeps else {
        return Err(err(m.loc("sweeps"), "sweeps", "must be a table of sweeps"));
    };
    for (name, table) in sweeps {
        let sweep = parse(m, &name, table)?;
        apply(m, &sweep)?;
    }
    Ok(())
}

const KEYS: [&str; 7] = [
    "stages", "rows", "set", "values", "each", "labels", "report",
];

fn parse(m: &Merged, name: &str, table: Value) -> anyhow::Result<Sweep> {
    let mut p = Parser {
        m,
        base: format!("sweeps.{name}"),
        stages: Vec::new(),
    };
    check_row_name(name).map_err(|why| p.fail("", format!("sweep name {name:?} {why}")))?;
    let Value::Object(t) = table else {
        return Err(p.fail("", "a sweep must be a table".into()));
    };
    if let Some(k) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(p.fail(k, format!("unknown key; expected one of {KEYS:?}")));
    }
    p.stages = p.stage_list(t.get("stages"))?;
    let each = p.assignments(t.get("each"), "each")?;
    let rows = match (t.get("rows"), t.get("values")) {
        (Some(Value::Object(named)), None) => named
            .iter()
            .map(|(row, assigns)| p.row(row, assigns, &each))
            .collect::<anyhow::Result<Vec<_>>>()?,
        (Some(Value::Array(list)), None) => p.listed_rows(list, &each)?,
        (None, Some(Value::Array(values))) => p.value_rows(name, values, t.get("set"), &each)?,
        _ => {
            let msg = "give either `rows` (a table or an array of rows) or `values` (an array) with `set`";
            return Err(p.fail("", msg.into()));
        }
    };
    if rows.is_empty() {
        return Err(p.fail("", "a sweep needs at least one row".into()));
    }
    let labels = match t.get("labels") {
        None => Map::new(),
        Some(Value::Object(l)) if l.iter().all(|(k, v)| p.stages.contains(k) && v.is_string()) => {
            l.clone()
        }
        Some(_) => {
            let msg = "must map this sweep's stages to label templates";
            return Err(p.fail("labels", msg.into()));
        }
    };
    let report = match t.get("report") {
        None => None,
        Some(Value::String(r)) if m.value["stages"].get(r).is_some() => Some(r.clone()),
        Some(_) => return Err(p.fail("report", "must name a stage of this pipeline".into())),
    };
    Ok(Sweep {
        name: name.to_string(),
        stages: p.stages,
        rows,
        labels,
        report,
    })
}

type Assignment = (String, Vec<String>, Value);

/// Reads one sweep table; every error names `sweeps.NAME.KEY` and where it was written.
struct Parser<'a> {
    m: &'a Merged,
    base: String,
    stages: Vec<String>,
}

impl Parser<'_> {
    fn fail(&self, key: &str, msg: String) -> anyhow::Error {
        let path = match key.is_empty() {
            true => self.base.clone(),
            false => format!("{}.{key}", self.base),
        };
        err(self.m.loc(&path), path, msg)
    }

    fn stage_list(&self, v: Option<&Value>) -> anyhow::Result<Vec<String>> {
        let stages = string_list(v).filter(|s| !s.is_empty()).ok_or_else(|| {
            self.fail("stages", "must be a non-empty array of stage names".into())
        })?;
        match stages
            .iter()
            .find(|s| self.m.value["stages"].get(s).is_none())
        {
            Some(s) => Err(self.fail("stages", format!("no stage `{s}` in this pipeline"))),
            None => Ok(stages),
        }
    }

    /// `STAGE.KEY.SUBKEY` -> (stage, [KEY, SUBKEY]), STAGE one of the sweep's stages.
    fn split(&self, key: &str, at: &str) -> anyhow::Result<(String, Vec<String>)> {
        let mut parts = key.split('.').map(str::to_string);
        let stage = parts.next().unwrap_or_default();
        let path: Vec<String> = parts.collect();
        if path.is_empty() || path.iter().any(|p| p.is_empty()) || !self.stages.contains(&stage) {
            let msg = format!(
                "`{key}`: expected STAGE.KEY with STAGE one of this sweep's stages {:?}",
                self.stages
            );
            return Err(self.fail(at, msg));
        }
        Ok((stage, path))
    }

    /// A table of `STAGE.KEY = value` (absent: none).
    fn assignments(&self, v: Option<&Value>, at: &str) -> anyhow::Result<Vec<Assignment>> {
        match v {
            None => Ok(Vec::new()),
            Some(Value::Object(assigns)) => assigns
                .iter()
                .map(|(key, v)| self.split(key, at).map(|(s, p)| (s, p, v.clone())))
                .collect(),
            Some(_) => Err(self.fail(at, "must be a table of STAGE.KEY = value".into())),
        }
    }

    fn row(&self, name: &str, assigns: &Value, each: &[Assignment]) -> anyhow::Result<Row> {
        let at = format!("rows.{name}");
        check_row_name(name).map_err(|why| self.fail(&at, format!("row name {name:?} {why}")))?;
        let mut assignments = each.to_vec();
        assignments.extend(self.assignments(Some(assigns), &at)?);
        Ok(Row {
            name: name.to_string(),
            label: name.to_string(),
            assignments,
        })
    }

    /// An array keeps the file's row order: `[{ name = "a", "STAGE.KEY" = v }, ...]`.
    fn listed_rows(&self, list: &[Value], each: &[Assignment]) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::new();
        for (i, r) in list.iter().enumerate() {
            let mut r = r.clone();
            let Some(Value::String(name)) = r.as_object_mut().and_then(|o| o.remove("name")) else {
                let msg = "a row needs `name` (a string)";
                return Err(self.fail(&format!("rows[{i}]"), msg.into()));
            };
            rows.push(self.row(&name, &r, each)?);
        }
        Ok(rows)
    }

    /// One row per value, the value going to every key of `set`; rows named NAME + value.
    fn value_rows(
        &self,
        name: &str,
        values: &[Value],
        set: Option<&Value>,
        each: &[Assignment],
    ) -> anyhow::Result<Vec<Row>> {
        let keys = string_list(set).filter(|s| !s.is_empty()).ok_or_else(|| {
            let msg = "with `values`, `set` lists the STAGE.KEY each value goes to";
            self.fail("set", msg.into())
        })?;
        let keys = keys
            .iter()
            .map(|k| self.split(k, "set"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut rows = Vec::new();
        for v in values {
            let label = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let row = format!("{name}{}", label.replace('.', "_").replace('-', "m"));
            check_row_name(&row)
                .map_err(|why| self.fail("values", format!("value {label:?} {why}")))?;
            let mut assignments = each.to_vec();
            assignments.extend(keys.iter().map(|(s, p)| (s.clone(), p.clone(), v.clone())));
            rows.push(Row {
                name: row,
                label,
                assignments,
            });
        }
        Ok(rows)
    }
}

fn apply(m: &mut Merged, sw: &Sweep) -> anyhow::Result<()> {
    let loc = m.loc(&format!("sweeps.{}", sw.name));
    for row in &sw.rows {
        for s in &sw.stages {
            let copy_name = format!("{s}_{}", row.name);
            let copy_key = format!("stages.{copy_name}");
            if m.value["stages"].get(&copy_name).is_some() {
                return Err(err(
                    loc.clone(),
                    format!("sweeps.{}", sw.name),
                    format!(
                        "row `{}` would create stage `{copy_name}`, which exists already",
                        row.name
                    ),
                ));
            }
            let mut copy = m.value["stages"][s].clone();
            rename_refs(&mut copy, &sw.stages, &row.name);
            for (_, path, v) in row.assignments.iter().filter(|(st, _, _)| st == s) {
                set(&mut copy, path, v.clone());
                m.origin
                    .insert(format!("{copy_key}.{}", path.join(".")), loc.clone());
            }
            if let Some(Value::String(t)) = sw.labels.get(s) {
                copy["label"] = Value::String(t.replace("{}", &row.label));
            }
            // a copy's keys were written where its original's were
            let prefix = format!("stages.{s}");
            let inherited: Vec<_> = m
                .origin
                .iter()
                .filter(|(k, _)| *k == &prefix || k.starts_with(&format!("{prefix}.")))
                .map(|(k, l)| (format!("{copy_key}{}", &k[prefix.len()..]), l.clone()))
                .collect();
            for (k, l) in inherited {
                m.origin.entry(k).or_insert(l);
            }
            m.value["stages"][&copy_name] = copy;
        }
    }
    if let Some(r) = &sw.report {
        insert_into_report(m, sw, r, &loc)?;
    }
    Ok(())
}

/// The report's `evaluations`: each original that the sweep copies is preceded by its copies,
/// in row order.
fn insert_into_report(m: &mut Merged, sw: &Sweep, report: &str, loc: &Loc) -> anyhow::Result<()> {
    let evals = &mut m.value["stages"][report]["inputs"]["evaluations"];
    let Some(list) = string_list(Some(evals)) else {
        return Err(err(
            loc.clone(),
            format!("sweeps.{}.report", sw.name),
            format!("stage `{report}` has no `inputs.evaluations` list to add the rows to"),
        ));
    };
    let mut out = Vec::new();
    for e in list {
        if sw.stages.contains(&e) {
            out.extend(
                sw.rows
                    .iter()
                    .map(|r| Value::String(format!("{e}_{}", r.name))),
            );
        }
        out.push(Value::String(e));
    }
    *evals = Value::Array(out);
    Ok(())
}

/// Points `over` and `inputs` references to swept stages at the row's copies.
fn rename_refs(stage: &mut Value, swept: &[String], row: &str) {
    let rename = |r: &str| -> String {
        let (name, rest) = r.split_at(r.find('[').unwrap_or(r.len()));
        if swept.iter().any(|s| s == name) {
            format!("{name}_{row}{rest}")
        } else {
            r.to_string()
        }
    };
    if let Some(Value::String(o)) = stage.get_mut("over") {
        *o = rename(o);
    }
    if let Some(Value::Object(inputs)) = stage.get_mut("inputs") {
        for v in inputs.values_mut() {
            match v {
                Value::String(r) => *r = rename(r),
                Value::Array(a) => {
                    for x in a.iter_mut() {
                        if let Value::String(r) = x {
                            *r = rename(r);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn set(v: &mut Value, path: &[String], value: Value) {
    let mut cur = v;
    for p in &path[..path.len() - 1] {
        if !cur.get(p).is_some_and(Value::is_object) {
            cur[p.as_str()] = Value::Object(Map::new());
        }
        cur = &mut cur[p.as_str()];
    }
    cur[path[path.len() - 1].as_str()] = value;
}

fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

/// Row names become parts of stage names (and of node ids and `--set` keys).
fn check_row_name(name: &str) -> Result<(), &'static str> {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err("must be letters, digits and `_` (it names stage copies)")
    }
}
