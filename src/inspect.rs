//! `cache ls/show/export`: reading artifacts back out of the store for people and for Python.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mpfnet_api::{Array, Registry};
use mpfnet_cache::{tensors, ActionRecord, Digest, Store};
use serde_json::Value;

use crate::artifact_codec;
use crate::runs;

/// What a CLI argument named: an action (node key) or a bare blob.
pub struct Target {
    pub key: Option<Digest>,
    pub record: Option<ActionRecord>,
    pub blob: Digest,
}

/// Resolves a node key, a blob digest (or a unique prefix of either), or a node name recorded
/// in the latest run of any pipeline.
pub fn resolve(store: &Store, runs_root: &Path, what: &str) -> Result<Target> {
    let looks_hex = what.len() >= 4 && what.chars().all(|c| c.is_ascii_hexdigit());
    if looks_hex {
        let d = store.resolve_prefix(what)?;
        if let Some(rec) = store.get_action(&d)? {
            return Ok(Target {
                key: Some(d),
                blob: rec.output,
                record: Some(rec),
            });
        }
        return Ok(Target {
            key: None,
            record: None,
            blob: d,
        });
    }
    let mut found = Vec::new();
    for (pipeline, _) in runs::list(runs_root) {
        if let Some(r) = runs::latest(runs_root, &pipeline) {
            for n in r.nodes.iter().filter(|n| n.name == what) {
                if let Some(k) = &n.key {
                    found.push((pipeline.clone(), k.clone()));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    match found.as_slice() {
        [] => bail!("`{what}` is neither a digest prefix nor a node of any recorded run (see `mpfnet cache ls`)"),
        [(_, k)] | [(_, k), ..] if found.iter().all(|(_, k2)| k2 == k) => {
            let d: Digest = k.parse()?;
            let rec = store.get_action(&d)?.with_context(|| format!("node `{what}` (key {}) is no longer in the cache", d.short()))?;
            Ok(Target { key: Some(d), blob: rec.output, record: Some(rec) })
        }
        many => bail!(
            "`{what}` names different nodes in several pipelines: {}; give a key instead",
            many.iter().map(|(p, k)| format!("{p}:{}", &k[..12])).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn stats(a: &Array) -> String {
    let v = a.to_f64();
    if v.is_empty() {
        return "empty".into();
    }
    let (mut lo, mut hi, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for &x in &v {
        lo = lo.min(x);
        hi = hi.max(x);
        sum += x;
    }
    format!("min {lo:.4} max {hi:.4} mean {:.4}", sum / v.len() as f64)
}

/// Human-readable description of an artifact and its provenance.
pub fn show(store: &Store, t: &Target) -> Result<String> {
    let bytes = store
        .get_blob(&t.blob)?
        .with_context(|| format!("blob {} missing or corrupt", t.blob.short()))?;
    let art = artifact_codec::decode(&bytes)?;
    let mut out = String::new();
    if let Some(k) = &t.key {
        out.push_str(&format!("node key  {k}\n"));
    }
    out.push_str(&format!("blob      {} ({} bytes)\n", t.blob, bytes.len()));
    if let Some(rec) = &t.record {
        out.push_str("provenance\n");
        for line in serde_json::to_string_pretty(&rec.provenance)?.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str("tensors\n");
    for (name, a) in &art.tensors {
        out.push_str(&format!(
            "  {name:<24} {:<4} {:?}  {}\n",
            a.dtype(),
            a.shape(),
            stats(a)
        ));
    }
    for (name, b) in &art.files {
        out.push_str(&format!("  file {name} ({} bytes)\n", b.len()));
    }
    if let Some(axis) = &art.axis {
        out.push_str(&format!(
            "axis      {} items (first: {})\n",
            axis.len(),
            axis.first().map(|i| i.id.as_str()).unwrap_or("-")
        ));
    }
    if !art.meta.is_null() {
        let text = serde_json::to_string_pretty(&art.meta)?;
        let lines: Vec<&str> = text.lines().collect();
        out.push_str("meta\n");
        for l in lines.iter().take(40) {
            out.push_str(&format!("  {l}\n"));
        }
        if lines.len() > 40 {
            out.push_str(&format!("  ... ({} more lines)\n", lines.len() - 40));
        }
    }
    Ok(out)
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes the artifact as safetensors with its provenance in the header metadata
/// (`mpfnet.provenance`), its files, and the stage's PNG renderings. Returns the paths.
pub fn export(store: &Store, registry: &Registry, t: &Target, dir: &Path) -> Result<Vec<PathBuf>> {
    let bytes = store
        .get_blob(&t.blob)?
        .with_context(|| format!("blob {} missing or corrupt", t.blob.short()))?;
    let (entries, mut meta) = tensors::decode(&bytes)?;
    let base = match &t.record {
        Some(r) => sanitize(r.provenance["node"].as_str().unwrap_or("artifact")),
        None => t.blob.short(),
    };
    if let Some(r) = &t.record {
        meta.insert(
            "mpfnet.provenance".into(),
            serde_json::to_string(&r.provenance)?,
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let st = dir.join(format!("{base}.safetensors"));
    std::fs::write(&st, tensors::encode(&entries, &meta)?)?;
    written.push(st);
    let art = artifact_codec::decode(&bytes)?;
    for (name, b) in &art.files {
        let p = dir.join(format!("{base}.{}", sanitize(name)));
        std::fs::write(&p, b)?;
        written.push(p);
    }
    let kind = t
        .record
        .as_ref()
        .and_then(|r| r.provenance["kind"].as_str().map(String::from));
    if let Some(stage) = kind.as_deref().and_then(|k| registry.get(k)) {
        for (name, png) in stage.render_png(&art)? {
            let p = dir.join(format!("{base}.{}", sanitize(&name)));
            std::fs::write(&p, png)?;
            written.push(p);
        }
    }
    Ok(written)
}

/// One line per action: key, kind, node, pipeline, created, size.
pub fn list(store: &Store, stage: Option<&str>) -> Result<Vec<(Digest, Value)>> {
    let mut rows: Vec<(Digest, Value)> = store
        .list_actions()?
        .into_iter()
        .filter_map(|k| store.get_action(&k).ok().flatten().map(|r| (k, r)))
        .filter(|(_, r)| {
            stage.is_none_or(|s| {
                r.provenance["stage"].as_str() == Some(s)
                    || r.provenance["kind"].as_str() == Some(s)
            })
        })
        .map(|(k, r)| (k, r.provenance))
        .collect();
    rows.sort_by(|a, b| {
        let ka = (
            a.1["created"].as_str().unwrap_or(""),
            a.1["node"].as_str().unwrap_or(""),
        );
        let kb = (
            b.1["created"].as_str().unwrap_or(""),
            b.1["node"].as_str().unwrap_or(""),
        );
        ka.cmp(&kb)
    });
    Ok(rows)
}

/// Keys to keep for `gc --keep PIPELINE`: those in the pipeline's latest run record.
pub fn keys_of_latest(runs_root: &Path, pipeline: &str) -> Result<BTreeMap<Digest, String>> {
    let rec = runs::latest(runs_root, pipeline).with_context(|| {
        format!(
            "no recorded run of pipeline `{pipeline}` under {}",
            runs_root.display()
        )
    })?;
    let mut out = BTreeMap::new();
    for n in rec.nodes {
        if let Some(k) = n.key {
            out.insert(k.parse()?, n.name);
        }
    }
    Ok(out)
}
