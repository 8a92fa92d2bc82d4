//! Run records: `runs/<pipeline>/<time>/` holds the resolved pipeline, the node table (cached or
//! computed, duration, key, digest) and the report files. `latest` names the newest record;
//! `plan` compares against it to say *why* a node will run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub stage: String,
    pub kind: String,
    /// cached | computed | failed | skipped | pending
    pub status: String,
    pub key: Option<String>,
    pub digest: Option<String>,
    pub duration_s: f64,
    pub version: String,
    pub code: String,
    pub params: Value,
    /// input name -> digests (one, or item id -> digest for gathered inputs)
    pub inputs: Value,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub pipeline: String,
    pub pipeline_file: String,
    pub started: String,
    pub finished: String,
    pub wall_s: f64,
    pub host: String,
    pub args: Vec<String>,
    pub ok: bool,
    pub resolved: Value,
    /// The report nodes' `meta.metrics`, for `runs diff`.
    pub metrics: Value,
    pub nodes: Vec<NodeRecord>,
    /// Set for a partial run (`run --fold X`, `--shared-only`): such a record never becomes `latest`.
    #[serde(default)]
    pub selection: Option<String>,
    /// Per stage kind, the source files behind its code fingerprint (path -> digest), so that
    /// the next `plan` can name the files whose edit recomputes a node.
    #[serde(default)]
    pub code_files: BTreeMap<String, BTreeMap<String, String>>,
}

pub fn pipeline_dir(runs_root: &Path, pipeline: &str) -> PathBuf {
    runs_root.join(pipeline)
}

/// Writes the record (atomically) and points `latest` at it. Returns the run's folder.
pub fn write(
    runs_root: &Path,
    rec: &RunRecord,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<PathBuf> {
    let mut stamp = rec.started.replace([':', '-'], "");
    if let Some(sel) = &rec.selection {
        stamp.push('-');
        stamp.extend(sel.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        }));
    }
    crate::pipeline::check_file_name(&rec.pipeline)
        .map_err(|why| anyhow::anyhow!("pipeline name {:?} {why}", rec.pipeline))?;
    let base = pipeline_dir(runs_root, &rec.pipeline);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    // create_dir claims the folder: concurrent runs (array tasks) never share one
    let mut dir = base.join(&stamp);
    let mut n = 1;
    loop {
        match std::fs::create_dir(&dir) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                dir = base.join(format!("{stamp}-{n}"));
                n += 1;
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    for (name, bytes) in files {
        let p = confined(&dir, name)?;
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        atomic_write(&p, bytes)?;
    }
    atomic_write(
        &dir.join("run.json"),
        serde_json::to_string(rec)?.as_bytes(),
    )?;
    // `plan` and `cache gc --keep` read `latest` as the whole pipeline: partial runs stay out
    if rec.selection.is_none() {
        atomic_write(
            &base.join("latest"),
            dir.file_name().unwrap().to_string_lossy().as_bytes(),
        )?;
    }
    Ok(dir)
}

/// The headline metrics of a run record, one `variant UF1 x UAR y` column per evaluation
/// (the report nodes' `meta.metrics`: {report: {eval_p: {variant, uf1, uar, ...}, ...}}).
pub fn headline(metrics: &Value) -> String {
    let mut cols = Vec::new();
    for report in metrics.as_object().into_iter().flat_map(|m| m.values()) {
        for (name, m) in report.as_object().into_iter().flatten() {
            let (Some(uf1), Some(uar)) = (m["uf1"].as_f64(), m["uar"].as_f64()) else {
                continue;
            };
            let label = m["variant"].as_str().unwrap_or(name);
            cols.push(format!("{label:<9} UF1 {uf1:.3} UAR {uar:.3}"));
        }
    }
    cols.join("   ")
}

/// `dir/name` where `name` is a relative path of plain components (stages name their report
/// files, a pipeline names the bundle): nothing a stage or a pipeline says escapes `dir`.
fn confined(dir: &Path, name: &str) -> Result<PathBuf> {
    use std::path::Component;
    let rel = Path::new(name);
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    anyhow::ensure!(
        plain && !name.is_empty(),
        "refusing to write run file {name:?}: not a relative path below the run folder"
    );
    Ok(dir.join(rel))
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

pub fn latest(runs_root: &Path, pipeline: &str) -> Option<RunRecord> {
    let base = pipeline_dir(runs_root, pipeline);
    let name = std::fs::read_to_string(base.join("latest")).ok()?;
    load(&base.join(name.trim()))
}

pub fn load(dir: &Path) -> Option<RunRecord> {
    let text = std::fs::read_to_string(dir.join("run.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// All run folders, oldest first: (pipeline, folder).
pub fn list(runs_root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(pipes) = std::fs::read_dir(runs_root) else {
        return out;
    };
    for p in pipes.flatten() {
        let Ok(runs) = std::fs::read_dir(p.path()) else {
            continue;
        };
        for r in runs.flatten() {
            if r.path().join("run.json").exists() {
                out.push((p.file_name().to_string_lossy().into_owned(), r.path()));
            }
        }
    }
    out.sort_by(|a, b| a.1.file_name().cmp(&b.1.file_name()).then(a.0.cmp(&b.0)));
    out
}

/// Resolves a run argument: a folder, `PIPELINE` (its latest), or `PIPELINE/STAMP`.
pub fn resolve(runs_root: &Path, arg: &str) -> Result<PathBuf> {
    let p = Path::new(arg);
    if p.join("run.json").exists() {
        return Ok(p.to_path_buf());
    }
    let under = runs_root.join(arg);
    if under.join("run.json").exists() {
        return Ok(under);
    }
    if let Ok(name) = std::fs::read_to_string(under.join("latest")) {
        return Ok(under.join(name.trim()));
    }
    anyhow::bail!(
        "no run `{arg}` (looked for {0}/run.json and {0}/latest)",
        under.display()
    )
}

/// Flattens a JSON document into dotted keys (for diffs).
pub fn flatten(v: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &p, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Lines describing what differs between two runs' parameters and metrics.
pub fn diff(a: &RunRecord, b: &RunRecord) -> Vec<String> {
    let mut lines = Vec::new();
    for (title, va, vb) in [
        ("parameter", &a.resolved, &b.resolved),
        ("metric", &a.metrics, &b.metrics),
    ] {
        let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
        flatten(va, "", &mut fa);
        flatten(vb, "", &mut fb);
        let keys: std::collections::BTreeSet<_> = fa.keys().chain(fb.keys()).cloned().collect();
        for k in keys {
            let (x, y) = (fa.get(&k), fb.get(&k));
            if x != y {
                lines.push(format!(
                    "{title:9} {k}: {} -> {}",
                    x.map(|s| s.as_str()).unwrap_or("(none)"),
                    y.map(|s| s.as_str()).unwrap_or("(none)")
                ));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headline_shows_uf1_and_uar_per_variant() {
        let m = serde_json::json!({"report": {
            "eval_c": {"variant": "MPFNet-C", "uf1": 0.37, "uar": 0.4028, "acc": 0.45},
            "eval_p": {"variant": "MPFNet-P", "uf1": 0.4528, "uar": 0.5069},
            "notes": "not a metric"
        }});
        assert_eq!(
            headline(&m),
            "MPFNet-C  UF1 0.370 UAR 0.403   MPFNet-P  UF1 0.453 UAR 0.507"
        );
        assert_eq!(headline(&serde_json::json!(null)), "");
    }
}
