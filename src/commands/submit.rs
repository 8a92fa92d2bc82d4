//! `mpfnet submit --slurm`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use mpfnet::session::Workspace;
use mpfnet::slurm;
use mpfnet_api::Registry;

use crate::SubmitArgs;

/// The jobs' parts, in the order they run.
const PARTS: [&str; 3] = ["shared", "array", "final"];

pub fn submit(registry: &Registry, ws: &Workspace, args: SubmitArgs) -> Result<ExitCode> {
    mpfnet_stages::check_device(&args.device)?;
    let engine = super::open_expanded(registry, ws, &args.p)?;
    let abs =
        |p: &Path| std::path::absolute(p).with_context(|| format!("resolving {}", p.display()));
    let inv = slurm::Invocation {
        exe: std::env::current_exe().context("locating the mpfnet executable")?,
        cwd: std::env::current_dir()?,
        cache: abs(&ws.cache_dir)?,
        runs: abs(&ws.runs_dir)?,
        pipeline: abs(&args.p.pipeline)?,
        sets: args.p.sets.clone(),
        device: args.device,
        axis: args.axis,
    };
    let sbatch = args.sbatch;
    let opts = slurm::SubmitOptions {
        resources: slurm::Resources {
            partition: sbatch.partition,
            gres: sbatch.gres,
            time: sbatch.time,
            cpus_per_task: sbatch.cpus_per_task,
            mem: sbatch.mem,
        },
        dry_run: args.dry_run,
        sbatch_dir: args.sbatch_dir,
    };
    let name = engine.pipeline().name.clone();
    match slurm::submit(&engine, ws, &inv, &opts)? {
        None => println!("{name}: nothing to run, every node is cached; submitted nothing"),
        Some((dir, sub)) => print_submission(&dir, &sub, args.dry_run),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_submission(dir: &Path, sub: &slurm::Submission, dry_run: bool) {
    for (part, path) in PARTS.iter().filter_map(|p| Some((p, sub.scripts.get(*p)?))) {
        println!("{part:<7} script {}", path.display());
    }
    if dry_run {
        println!("would run:");
        for c in &sub.commands {
            println!("  {c}");
        }
    } else {
        for (part, id) in PARTS.iter().filter_map(|p| Some((p, sub.jobs.get(*p)?))) {
            println!("{part:<7} job    {id}");
        }
    }
    println!(
        "array over {} of {} {}: {:?}",
        sub.array_items.len(),
        sub.items.len(),
        sub.axis,
        sub.array_items
    );
    println!("record  {}", dir.join("submission.json").display());
}
