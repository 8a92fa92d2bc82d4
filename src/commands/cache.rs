//! `mpfnet cache ...`: inspect and maintain the store.

use std::collections::HashSet;
use std::process::ExitCode;

use anyhow::{Context, Result};
use mpfnet::inspect;
use mpfnet::session::Workspace;
use mpfnet_api::Registry;
use mpfnet_cache::Store;

use crate::CacheCmd;

pub fn cache(registry: &Registry, ws: &Workspace, cmd: CacheCmd) -> Result<ExitCode> {
    let mut store = Store::open(&ws.cache_dir)
        .with_context(|| format!("opening cache {}", ws.cache_dir.display()))?;
    match cmd {
        CacheCmd::Share { group: _ } => {
            let n = store.share_with_group()?;
            println!(
                "{}: shared with its group ({n} files and folders set; new ones follow)",
                ws.cache_dir.display()
            );
        }
        CacheCmd::Ls { stage } => list(&store, stage.as_deref())?,
        CacheCmd::Show { what } => {
            let t = inspect::resolve(&store, &ws.runs_dir, &what)?;
            print!("{}", inspect::show(&store, &t)?);
        }
        CacheCmd::Export { what, to } => {
            let t = inspect::resolve(&store, &ws.runs_dir, &what)?;
            for p in inspect::export(&store, registry, &t, &to)? {
                println!("{}", p.display());
            }
        }
        CacheCmd::Verify => return verify(&store),
        CacheCmd::Gc { keep, grace_secs } => gc(&store, ws, &keep, grace_secs)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn list(store: &Store, stage: Option<&str>) -> Result<()> {
    for (k, p) in inspect::list(store, stage)? {
        println!(
            "{}  {:<12} {:<48} {:<12} {}  {} B",
            k.short(),
            p["kind"].as_str().unwrap_or("?"),
            p["node"].as_str().unwrap_or("?"),
            p["pipeline"].as_str().unwrap_or("?"),
            p["created"].as_str().unwrap_or("?"),
            p["bytes"]
        );
    }
    Ok(())
}

/// Exit 1 when anything was corrupt.
fn verify(store: &Store) -> Result<ExitCode> {
    let r = store.verify()?;
    println!(
        "{} blobs ok ({} bytes), {} corrupt (quarantined); {} actions ok, {} missing output, {} corrupt; {} checkpoints ok, {} corrupt",
        r.blobs_ok, r.bytes_checked, r.blobs_corrupt.len(), r.actions_ok, r.actions_missing_output.len(),
        r.actions_corrupt.len(), r.checkpoints_ok, r.checkpoints_corrupt.len()
    );
    for d in &r.blobs_corrupt {
        println!("  corrupt blob {d}");
    }
    Ok(if r.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn gc(store: &Store, ws: &Workspace, keep: &[String], grace_secs: u64) -> Result<()> {
    if grace_secs < 600 {
        eprintln!("warning: a grace of {grace_secs} s: temp files, checkpoints and fresh results of mpfnet processes writing to this cache right now may be deleted (the default, 3600 s, spares them)");
    }
    let mut keys = HashSet::new();
    for p in keep {
        keys.extend(inspect::keys_of_latest(&ws.runs_dir, p)?.into_keys());
    }
    let opts = mpfnet_cache::GcOptions {
        grace: std::time::Duration::from_secs(grace_secs),
        ..Default::default()
    };
    let r = store.gc(&keys, &opts)?;
    println!(
        "removed {} actions, {} blobs, {} checkpoint sets, {} temp files; kept {} actions, {} blobs; spared {} young files; freed {} bytes",
        r.actions_removed, r.blobs_removed, r.checkpoints_removed, r.tmp_removed, r.actions_kept, r.blobs_kept, r.young_spared, r.bytes_freed
    );
    Ok(())
}
