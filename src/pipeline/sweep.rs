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

fn parse(m: &Merged, name: &str, table: Value) -> anyhow::Result<Sweep> {
    let base = format!("sweeps.{name}");
    let fail = |key: &str, msg: String| {
        let path = if key.is_empty() {
            base.clone()
        } else {
            format!("{base}.{key}")
        };
        err(m.loc(&path), path, msg)
    };
    check_row_name(name).map_err(|why| fail("", format!("sweep name {name:?} {why}")))?;
    let Value::Object(t) = table else {
        return Err(fail("", "a sweep must be a table".into()));
    };
    for k in t.keys() {
        if ![
            "stages", "rows", "set", "values", "labels", "report", "each",
        ]
        .contains(&k.as_str())
        {
            return Err(fail(
                k,
                "unknown key; expected stages, rows, set, values, each, labels or report".into(),
            ));
        }
    }
    let stages = string_list(t.get("stages"))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| fail("stages", "must be a non-empty array of stage names".into()))?;
    for s in &stages {
        if m.value["stages"].get(s).is_none() {
            return Err(fail("stages", format!("no stage `{s}` in this pipeline")));
        }
    }
    let split = |key: &str, at: &str| -> anyhow::Result<(String, Vec<String>)> {
        let mut parts = key.split('.').map(str::to_string);
        let stage = parts.next().unwrap_or_default();
        let path: Vec<String> = parts.collect();
        if path.is_empty() || path.iter().any(|p| p.is_empty()) || !stages.contains(&stage) {
            return Err(fail(
                at,
                format!(
                    "`{key}`: expected STAGE.KEY with STAGE one of this sweep's stages {stages:?}"
                ),
            ));
        }
        Ok((stage, path))
    };
    let mut each = Vec::new();
    match t.get("each") {
        None => {}
        Some(Value::Object(assigns)) => {
            for (key, v) in assigns {
                let (stage, path) = split(key, "each")?;
                each.push((stage, path, v.clone()));
            }
        }
        Some(_) => return Err(fail("each", "must be a table of STAGE.KEY = value".into())),
    }
    let mut rows = Vec::new();
    match (t.get("rows"), t.get("values")) {
        (Some(Value::Object(named)), None) => {
            for (row, assigns) in named {
                rows.push(parse_row(row, assigns, &each, &split, &fail)?);
            }
        }
        // an array keeps the file's row order: [{ name = "a", "STAGE.KEY" = v }, ...]
        (Some(Value::Array(list)), None) => {
            for (i, r) in list.iter().enumerate() {
                let mut r = r.clone();
                let name = match r.as_object_mut().and_then(|o| o.remove("name")) {
                    Some(Value::String(n)) => n,
                    _ => {
                        return Err(fail(
                            &format!("rows[{i}]"),
                            "a row needs `name` (a string)".into(),
                        ))
                    }
                };
                rows.push(parse_row(&name, &r, &each, &split, &fail)?);
            }
        }
        (None, Some(Value::Array(values))) => {
            let keys = string_list(t.get("set"))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    fail(
                        "set",
                        "with `values`, `set` lists the STAGE.KEY each value goes to".into(),
                    )
                })?;
            let keys = keys
                .iter()
                .map(|k| split(k, "set"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for v in values {
                let label = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let row = format!("{name}{}", label.replace('.', "_").replace('-', "m"));
                check_row_name(&row)
                    .map_err(|why| fail("values", format!("value {label:?} {why}")))?;
                let assignments = keys
                    .iter()
                    .map(|(s, p)| (s.clone(), p.clone(), v.clone()))
                    .collect();
                rows.push(Row {
                    name: row,
                    label,
                    assignments,
                });
            }
        }
        _ => return Err(fail(
            "",
            "give either `rows` (a table or an array of rows) or `values` (an array) with `set`"
                .into(),
        )),
    }
    if rows.is_empty() {
        return Err(fail("", "a sweep needs at least one row".into()));
    }
    let labels = match t.get("labels") {
        None => Map::new(),
        Some(Value::Object(l)) if l.iter().all(|(k, v)| stages.contains(k) && v.is_string()) => {
            l.clone()
        }
        Some(_) => {
            return Err(fail(
                "labels",
                "must map this sweep's stages to label templates".into(),
            ))
        }
    };
    let report = match t.get("report") {
        None => None,
        Some(Value::String(r)) if m.value["stages"].get(r).is_some() => Some(r.clone()),
        Some(_) => return Err(fail("report", "must name a stage of this pipeline".into())),
    };
    Ok(Sweep {
        name: name.to_string(),
        stages,
        rows,
        labels,
        report,
    })
}

type Assignment = (String, Vec<String>, Value);

fn parse_row(
    row: &str,
    assigns: &Value,
    each: &[Assignment],
    split: &dyn Fn(&str, &str) -> anyhow::Result<(String, Vec<String>)>,
    fail: &dyn Fn(&str, String) -> anyhow::Error,
) -> anyhow::Result<Row> {
    let at = format!("rows.{row}");
    check_row_name(row).map_err(|why| fail(&at, format!("row name {row:?} {why}")))?;
    let Value::Object(assigns) = assigns else {
        return Err(fail(
            &at,
            "a row must be a table of STAGE.KEY = value".into(),
        ));
    };
    let mut assignments = each.to_vec();
    for (key, v) in assigns {
        let (stage, path) = split(key, &at)?;
        assignments.push((stage, path, v.clone()));
    }
    Ok(Row {
        name: row.to_string(),
        label: row.to_string(),
        assignments,
    })
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
