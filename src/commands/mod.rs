//! One function per `mpfnet` command; `main.rs` parses the command line and dispatches here.

mod cache;
mod runs;
mod submit;

use std::process::ExitCode;

use anyhow::Result;
use mpfnet::engine::{ExecSummary, Options};
use mpfnet::select::Selection;
use mpfnet::session::{self, Workspace};
use mpfnet::{plan as planner, slurm, Engine};
use mpfnet_api::Registry;

use crate::{PipelineArgs, PlanArgs, RunArgs, StatusArgs};

pub use cache::cache;
pub use runs::runs;
pub use submit::submit;

/// The pipeline's engine with the graph expanded (axis sources run), for the commands that
/// only look.
fn open_expanded(registry: &Registry, ws: &Workspace, p: &PipelineArgs) -> Result<Engine> {
    let mut engine = session::open(&p.pipeline, &p.sets, registry, ws, Options::default())?;
    engine.prepare()?;
    Ok(engine)
}

pub fn run(registry: &Registry, ws: &Workspace, args: RunArgs) -> Result<ExitCode> {
    mpfnet_stages::check_device(&args.device)?;
    let progress = !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let opts = Options {
        jobs: args.jobs,
        device: args.device,
        keep_going: args.keep_going,
        progress,
    };
    let mut engine = session::open(&args.p.pipeline, &args.p.sets, registry, ws, opts)?;
    let argv: Vec<String> = std::env::args().collect();
    let axis = args.axis;
    let selection = match (args.fold, args.shared_only) {
        (Some(id), _) => Selection::Item { axis, id },
        (None, true) => Selection::Shared { axis },
        (None, false) => Selection::All,
    };
    let out = session::run_selected(&mut engine, ws, &argv, &selection)?;
    print!("{}", out.report_text);
    let s = &out.summary;
    eprintln!(
        "{}: {} computed, {} cached, {} failed, {} skipped in {:.1}s; record {}",
        engine.pipeline().name,
        s.computed,
        s.cached,
        s.failed.len(),
        s.skipped,
        out.record.wall_s,
        out.run_dir.display()
    );
    for (n, e) in &s.failed {
        eprintln!("  failed {n}: {e}");
    }
    Ok(run_exit_code(s))
}

/// 130 when interrupted, 2 when every failure was the input's (a sheet row, a frame file).
fn run_exit_code(s: &ExecSummary) -> ExitCode {
    if s.cancelled {
        eprintln!("interrupted: run the same command again to resume from the cache");
        return ExitCode::from(130);
    }
    if s.ok() {
        ExitCode::SUCCESS
    } else if !s.failed.is_empty() && s.failed_on_input == s.failed.len() {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

pub fn status(registry: &Registry, ws: &Workspace, args: StatusArgs) -> Result<ExitCode> {
    let engine = open_expanded(registry, ws, &args.p)?;
    print!("{}", slurm::status(&engine, ws, &args.axis)?);
    Ok(ExitCode::SUCCESS)
}

pub fn plan(registry: &Registry, ws: &Workspace, args: PlanArgs) -> Result<ExitCode> {
    let engine = open_expanded(registry, ws, &args.p)?;
    let prev = mpfnet::runs::latest(&ws.runs_dir, &engine.pipeline().name);
    let plan = planner::plan(&engine, prev.as_ref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", planner::render(&plan, args.all));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stages(registry: &Registry) -> Result<ExitCode> {
    for s in registry.iter() {
        println!("{:<14} v{:<4} {}", s.kind(), s.version(), s.about());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn predict(registry: &Registry, args: &mpfnet_stages::cli::PredictArgs) -> Result<ExitCode> {
    // the pre-processing the user asks for: that pipeline's `features` stage
    let expect = match &args.pipeline {
        Some(path) => {
            let p = mpfnet::pipeline::load(path, &[], registry)?;
            let decl = p
                .stages
                .get("features")
                .or_else(|| p.stages.values().find(|d| d.kind == "features"))
                .ok_or_else(|| {
                    anyhow::anyhow!("{}: no stage of kind `features`", path.display())
                })?;
            Some(decl.params.clone())
        }
        None => None,
    };
    mpfnet_stages::cli::predict(args, expect.as_ref())?;
    Ok(ExitCode::SUCCESS)
}

pub fn folds(registry: &Registry, ws: &Workspace, p: &PipelineArgs) -> Result<ExitCode> {
    let engine = open_expanded(registry, ws, p)?;
    let mut printed = false;
    for (name, decl) in engine.pipeline().stages.clone() {
        if decl.kind == "folds" {
            let id = engine.instances(&name)[0];
            let art = engine.load(id)?;
            print!(
                "{}",
                art.meta.get("table").and_then(|t| t.as_str()).unwrap_or("")
            );
            printed = true;
        }
    }
    if !printed {
        anyhow::bail!("pipeline has no stage of kind `folds`");
    }
    Ok(ExitCode::SUCCESS)
}
