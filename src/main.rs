//! The `mpfnet` command line: wires the domain's stage registry into the engine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use mpfnet::session::Workspace;
use mpfnet::ConfigError;

mod commands;

#[derive(Parser)]
#[command(
    name = "mpfnet",
    version,
    about = "MPFNet micro-expression recognition as a cached, resumable pipeline"
)]
struct Cli {
    /// Cache folder (default: $MPFNET_CACHE or .mpfnet/cache)
    #[arg(long, global = true)]
    cache: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct PipelineArgs {
    /// The pipeline file (TOML)
    pipeline: PathBuf,
    /// Override a value: --set stages.meta.gamma=0.7
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a pipeline: compute what the cache lacks, print the results table, write a run record
    Run(RunArgs),
    /// Submit a pipeline to a cluster: a shared job, an array over the folds, a final pooling job
    Submit(SubmitArgs),
    /// Per fold, how many nodes are cached or missing; the last submission's Slurm jobs
    Status(StatusArgs),
    /// Say what a run would compute and why, without computing it (axis sources excepted)
    Plan(PlanArgs),
    /// Inspect and maintain the cache
    Cache {
        #[command(subcommand)]
        cmd: CacheCmd,
    },
    /// Run records
    Runs {
        #[command(subcommand)]
        cmd: RunsCmd,
    },
    /// List the stage kinds this build knows
    Stages,
    /// Write a synthetic micro-expression dataset (CASME II layout and coding sheet)
    Synth(mpfnet_stages::cli::SynthArgs),
    /// Classify new clips with a model bundle (a pipeline's `bundle` stage output)
    Predict(mpfnet_stages::cli::PredictArgs),
    /// Print a pipeline's LOSO folds with class counts per split
    Folds {
        #[command(flatten)]
        p: PipelineArgs,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    p: PipelineArgs,
    /// Light nodes run in parallel up to this many; heavy (training) nodes one per device
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// cpu or cuda:N (cuda needs a build with --features cuda)
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Keep running independent branches after a node fails
    #[arg(long)]
    keep_going: bool,
    /// No progress bars
    #[arg(long)]
    quiet: bool,
    /// Only the nodes of this item (a LOSO fold) among the stages fanned out over --axis, and what they need
    #[arg(long, value_name = "ID")]
    fold: Option<String>,
    /// Only the nodes that depend on no stage fanned out over --axis (dataset, per-sample work)
    #[arg(long, conflicts_with = "fold")]
    shared_only: bool,
    /// The stage whose axis items --fold names
    #[arg(long, value_name = "STAGE", default_value = "folds")]
    axis: String,
}

#[derive(clap::Args)]
struct SubmitArgs {
    #[command(flatten)]
    p: PipelineArgs,
    /// Submit to Slurm with sbatch (the only scheduler so far)
    #[arg(long, required = true)]
    slurm: bool,
    #[command(flatten)]
    sbatch: SbatchArgs,
    /// Write the sbatch scripts and print the commands, submit nothing
    #[arg(long)]
    dry_run: bool,
    /// Where the scripts and job logs go (default: runs/<pipeline>/slurm/<time>/)
    #[arg(long, value_name = "DIR")]
    sbatch_dir: Option<PathBuf>,
    /// cpu or cuda:N, for the jobs' `mpfnet run`
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The stage whose axis items become array tasks
    #[arg(long, value_name = "STAGE", default_value = "folds")]
    axis: String,
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    p: PipelineArgs,
    #[arg(long, value_name = "STAGE", default_value = "folds")]
    axis: String,
}

#[derive(clap::Args)]
struct PlanArgs {
    #[command(flatten)]
    p: PipelineArgs,
    #[arg(long)]
    json: bool,
    /// List cached nodes too
    #[arg(long)]
    all: bool,
}

#[derive(clap::Args, Clone)]
struct SbatchArgs {
    #[arg(long)]
    partition: Option<String>,
    /// e.g. gpu:1
    #[arg(long)]
    gres: Option<String>,
    /// Time limit per job, e.g. 4:00:00
    #[arg(long)]
    time: Option<String>,
    /// Also the jobs' --jobs
    #[arg(long)]
    cpus_per_task: Option<usize>,
    /// e.g. 16G
    #[arg(long)]
    mem: Option<String>,
}

#[derive(Subcommand)]
enum CacheCmd {
    /// List cached node outputs
    Ls {
        #[arg(long)]
        stage: Option<String>,
    },
    /// Tensors (name, shape, dtype, min/max/mean) and provenance of a node or blob
    Show { what: String },
    /// Write a node's output as safetensors (with provenance), its files and PNG renderings
    Export {
        what: String,
        #[arg(long)]
        to: PathBuf,
    },
    /// Re-hash every blob; corrupt ones are quarantined (and recomputed when next needed)
    Verify,
    /// Delete what the named pipelines' latest runs do not use
    Gc {
        #[arg(long = "keep", value_name = "PIPELINE")]
        keep: Vec<String>,
        /// Never delete files younger than this (concurrent writers)
        #[arg(long, default_value_t = 3600)]
        grace_secs: u64,
    },
    /// Share the cache with your group from now on (as git's core.sharedRepository = group):
    /// folders group-writable and setgid, files group-readable; run `chgrp -R GROUP` on it first
    Share {
        /// The only mode there is; say it so the command reads as what it does
        #[arg(long, required = true)]
        group: bool,
    },
}

#[derive(Subcommand)]
enum RunsCmd {
    Ls,
    /// Compare the parameters and metrics of two runs (folders, PIPELINE for its latest)
    Diff {
        a: String,
        b: String,
    },
}

/// Training allocates and frees buffers of tens to hundreds of MiB every step. glibc maps each
/// one fresh and mimalloc, by default, hands freed memory back to the kernel 10 ms later, so
/// every step page-faults its buffers in again and the kernel zeroes them: 15-18% of a CA-I3D
/// training step at 128 px (perf: `clear_page_erms`; 55,800 page faults in 5 steps, 1,100 with
/// purging off). Peak memory is what it was; it is simply kept for the next step.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3); libmimalloc-sys 0.1.49 has no constant.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn keep_freed_memory() {
    // SAFETY: sets a plain integer option; mimalloc reads it at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

fn main() -> ExitCode {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            // 2: the user's input (pipeline, data, bundle, clip, arguments) is wrong; 1: the run failed
            if e.downcast_ref::<ConfigError>().is_some() {
                eprintln!("error: {e}");
                ExitCode::from(2)
            } else if mpfnet_api::is_bad_input(&e) {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    let registry = mpfnet_stages::registry();
    let ws = Workspace::from_env(cli.cache.clone());
    match cli.cmd {
        Cmd::Run(args) => commands::run(&registry, &ws, args),
        Cmd::Submit(args) => commands::submit(&registry, &ws, args),
        Cmd::Status(args) => commands::status(&registry, &ws, args),
        Cmd::Plan(args) => commands::plan(&registry, &ws, args),
        Cmd::Cache { cmd } => commands::cache(&registry, &ws, cmd),
        Cmd::Runs { cmd } => commands::runs(&ws, cmd),
        Cmd::Stages => commands::stages(&registry),
        Cmd::Synth(args) => {
            mpfnet_stages::cli::synth(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Predict(args) => commands::predict(&registry, &args),
        Cmd::Folds { p } => commands::folds(&registry, &ws, &p),
    }
}
