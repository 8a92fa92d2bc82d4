//! The `mpfnet` command line: wires the domain's stage registry into the engine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mpfnet::engine::Options;
use mpfnet::select::Selection;
use mpfnet::session::{self, Workspace};
use mpfnet::{inspect, plan, runs, slurm, ConfigError};

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
    Run {
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
    },
    /// Submit a pipeline to a cluster: a shared job, an array over the folds, a final pooling job
    Submit {
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
    },
    /// Per fold, how many nodes are cached or missing; the last submission's Slurm jobs
    Status {
        #[command(flatten)]
        p: PipelineArgs,
        #[arg(long, value_name = "STAGE", default_value = "folds")]
        axis: String,
    },
    /// Say what a run would compute and why, without computing it (axis sources excepted)
    Plan {
        #[command(flatten)]
        p: PipelineArgs,
        #[arg(long)]
        json: bool,
        /// List cached nodes too
        #[arg(long)]
        all: bool,
    },
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
        Cmd::Run {
            p,
            jobs,
            device,
            keep_going,
            quiet,
            fold,
            shared_only,
            axis,
        } => {
            mpfnet_stages::check_device(&device)?;
            let progress = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let opts = Options {
                jobs,
                device,
                keep_going,
                progress,
            };
            let mut engine = session::open(&p.pipeline, &p.sets, &registry, &ws, opts)?;
            let args: Vec<String> = std::env::args().collect();
            let selection = match (fold, shared_only) {
                (Some(id), _) => Selection::Item { axis, id },
                (None, true) => Selection::Shared { axis },
                (None, false) => Selection::All,
            };
            let out = session::run_selected(&mut engine, &ws, &args, &selection)?;
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
            if s.cancelled {
                eprintln!("interrupted: run the same command again to resume from the cache");
                return Ok(ExitCode::from(130));
            }
            Ok(if s.ok() {
                ExitCode::SUCCESS
            } else if !s.failed.is_empty() && s.failed_on_input == s.failed.len() {
                ExitCode::from(2) // every failure was the input's (a sheet row, a frame file)
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Submit {
            p,
            slurm: _,
            sbatch,
            dry_run,
            sbatch_dir,
            device,
            axis,
        } => {
            mpfnet_stages::check_device(&device)?;
            let mut engine =
                session::open(&p.pipeline, &p.sets, &registry, &ws, Options::default())?;
            engine.prepare()?;
            let abs = |p: &std::path::Path| {
                std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
            };
            let inv = slurm::Invocation {
                exe: std::env::current_exe().context("locating the mpfnet executable")?,
                cwd: std::env::current_dir()?,
                cache: abs(&ws.cache_dir)?,
                runs: abs(&ws.runs_dir)?,
                pipeline: abs(&p.pipeline)?,
                sets: p.sets.clone(),
                device,
                axis,
            };
            let opts = slurm::SubmitOptions {
                resources: slurm::Resources {
                    partition: sbatch.partition,
                    gres: sbatch.gres,
                    time: sbatch.time,
                    cpus_per_task: sbatch.cpus_per_task,
                    mem: sbatch.mem,
                },
                dry_run,
                sbatch_dir,
            };
            let name = engine.pipeline().name.clone();
            match slurm::submit(&engine, &ws, &inv, &opts)? {
                None => println!("{name}: nothing to run, every node is cached; submitted nothing"),
                Some((dir, sub)) => {
                    let parts = ["shared", "array", "final"];
                    for (part, path) in parts.iter().filter_map(|p| Some((p, sub.scripts.get(*p)?)))
                    {
                        println!("{part:<7} script {}", path.display());
                    }
                    if dry_run {
                        println!("would run:");
                        for c in &sub.commands {
                            println!("  {c}");
                        }
                    } else {
                        for (part, id) in parts.iter().filter_map(|p| Some((p, sub.jobs.get(*p)?)))
                        {
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
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { p, axis } => {
            let mut engine =
                session::open(&p.pipeline, &p.sets, &registry, &ws, Options::default())?;
            engine.prepare()?;
            print!("{}", slurm::status(&engine, &ws, &axis)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plan { p, json, all } => {
            let mut engine =
                session::open(&p.pipeline, &p.sets, &registry, &ws, Options::default())?;
            engine.prepare()?;
            let prev = runs::latest(&ws.runs_dir, &engine.pipeline().name);
            let plan = plan::plan(&engine, prev.as_ref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", plan::render(&plan, all));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cache { cmd } => {
            let mut store = mpfnet_cache::Store::open(&ws.cache_dir)
                .with_context(|| format!("opening cache {}", ws.cache_dir.display()))?;
            match cmd {
                CacheCmd::Share { group: _ } => {
                    let n = store.share_with_group()?;
                    println!(
                        "{}: shared with its group ({n} files and folders set; new ones follow)",
                        ws.cache_dir.display()
                    );
                }
                CacheCmd::Ls { stage } => {
                    for (k, p) in inspect::list(&store, stage.as_deref())? {
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
                }
                CacheCmd::Show { what } => {
                    let t = inspect::resolve(&store, &ws.runs_dir, &what)?;
                    print!("{}", inspect::show(&store, &t)?);
                }
                CacheCmd::Export { what, to } => {
                    let t = inspect::resolve(&store, &ws.runs_dir, &what)?;
                    for p in inspect::export(&store, &registry, &t, &to)? {
                        println!("{}", p.display());
                    }
                }
                CacheCmd::Verify => {
                    let r = store.verify()?;
                    println!(
                        "{} blobs ok ({} bytes), {} corrupt (quarantined); {} actions ok, {} missing output, {} corrupt; {} checkpoints ok, {} corrupt",
                        r.blobs_ok, r.bytes_checked, r.blobs_corrupt.len(), r.actions_ok, r.actions_missing_output.len(),
                        r.actions_corrupt.len(), r.checkpoints_ok, r.checkpoints_corrupt.len()
                    );
                    for d in &r.blobs_corrupt {
                        println!("  corrupt blob {d}");
                    }
                    if !r.is_clean() {
                        return Ok(ExitCode::from(1));
                    }
                }
                CacheCmd::Gc { keep, grace_secs } => {
                    if grace_secs < 600 {
                        eprintln!("warning: a grace of {grace_secs} s: temp files, checkpoints and fresh results of mpfnet processes writing to this cache right now may be deleted (the default, 3600 s, spares them)");
                    }
                    let mut keys = std::collections::HashSet::new();
                    for p in &keep {
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
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Runs { cmd } => {
            match cmd {
                RunsCmd::Ls => {
                    for (pipeline, dir) in runs::list(&ws.runs_dir) {
                        if let Some(r) = runs::load(&dir) {
                            let computed =
                                r.nodes.iter().filter(|n| n.status == "computed").count();
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
                }
                RunsCmd::Diff { a, b } => {
                    let ra = runs::load(&runs::resolve(&ws.runs_dir, &a)?)
                        .context("unreadable run record")?;
                    let rb = runs::load(&runs::resolve(&ws.runs_dir, &b)?)
                        .context("unreadable run record")?;
                    let lines = runs::diff(&ra, &rb);
                    if lines.is_empty() {
                        println!("no differences in parameters or metrics");
                    }
                    for l in lines {
                        println!("{l}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Stages => {
            for s in registry.iter() {
                println!("{:<14} v{:<4} {}", s.kind(), s.version(), s.about());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Synth(args) => {
            mpfnet_stages::cli::synth(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Predict(args) => {
            // the pre-processing the user asks for: that pipeline's `features` stage
            let expect = match &args.pipeline {
                Some(path) => {
                    let p = mpfnet::pipeline::load(path, &[], &registry)?;
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
            mpfnet_stages::cli::predict(&args, expect.as_ref())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Folds { p } => {
            let mut engine =
                session::open(&p.pipeline, &p.sets, &registry, &ws, Options::default())?;
            engine.prepare()?;
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
    }
}
