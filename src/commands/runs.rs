//! `mpfnet runs ...`: the run records.

use std::process::ExitCode;

use anyhow::{Context, Result};
use mpfnet::runs;
use mpfnet::session::Workspace;

use crate::RunsCmd;

pub fn runs(ws: &Workspace, cmd: RunsCmd) -> Result<ExitCode> {
    match cmd {
        RunsCmd::Ls => list(ws),
        RunsCmd::Diff { a, b } => diff(ws, &a, &b)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn list(ws: &Workspace) {
    for (pipeline, dir) in runs::list(&ws.runs_dir) {
        let Some(r) = runs::load(&dir) else {
            continue;
        };
        let computed = r.nodes.iter().filter(|n| n.status == "computed").count();
        println!(
            "{:<16} {:<24} {:<4} {:>6.1}s {:>5} nodes {:>5} computed  {}",
            pipeline,
            dir.file_name().unwrap().to_string_lossy(),
            if r.ok { "ok" } else { "FAIL" },
            r.wall_s,
            r.nodes.len(),
            computed,
            runs::headline(&r.metrics)
        );
    }
}

fn diff(ws: &Workspace, a: &str, b: &str) -> Result<()> {
    let ra = runs::load(&runs::resolve(&ws.runs_dir, a)?).context("unreadable run record")?;
    let rb = runs::load(&runs::resolve(&ws.runs_dir, b)?).context("unreadable run record")?;
    let lines = runs::diff(&ra, &rb);
    if lines.is_empty() {
        println!("no differences in parameters or metrics");
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
