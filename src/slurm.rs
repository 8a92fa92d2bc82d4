//! Running a pipeline on a Slurm cluster, with Slurm as the scheduler and the shared cache as the
//! only channel between jobs: a job for the shared part (`run --shared-only`), an array with one
//! task per axis item that still has work (`run --fold ID`, after the shared job), and a final
//! full run that finds everything cached but the pooled nodes (after the array).
//!
//! What to submit comes from the plan, so resubmitting after a failure or `scancel` runs only
//! what is missing. Job states come from `scontrol` (it also knows recently finished jobs),
//! never `sacct`, which needs slurmdbd.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::plan::{self, Status};
use crate::select;
use crate::session::Workspace;

/// Cached and missing node counts of one part of the graph.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub cached: usize,
    pub missing: usize,
}

/// Where the graph stands in the cache, split as the jobs split it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub shared: Counts,
    /// Per axis item, in axis order.
    pub items: Vec<(String, Counts)>,
    /// The nodes after the items (pooled evaluation, report).
    pub rest: Counts,
}

impl Progress {
    pub fn missing(&self) -> usize {
        self.shared.missing
            + self.rest.missing
            + self.items.iter().map(|(_, c)| c.missing).sum::<usize>()
    }
}

/// Splits per-node "missing" flags into the shared part, the items and the rest.
pub fn tally(missing: &[bool], shared: &[usize], items: &[(String, Vec<usize>)]) -> Progress {
    let count = |ids: &mut dyn Iterator<Item = usize>| {
        let mut c = Counts::default();
        for i in ids {
            if missing[i] {
                c.missing += 1;
            } else {
                c.cached += 1;
            }
        }
        c
    };
    let mut placed = vec![false; missing.len()];
    for &i in shared {
        placed[i] = true;
    }
    for (_, ids) in items {
        for &i in ids {
            placed[i] = true;
        }
    }
    Progress {
        shared: count(&mut shared.iter().copied()),
        items: items
            .iter()
            .map(|(id, ids)| (id.clone(), count(&mut ids.iter().copied())))
            .collect(),
        rest: count(&mut (0..missing.len()).filter(|&i| !placed[i])),
    }
}

/// Which jobs a submission needs besides the final run (which pools the items and is cheap when
/// all else is cached). None when nothing is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSet {
    pub shared: bool,
    /// Indices (into the axis items) of the array tasks.
    pub array: Vec<usize>,
}

pub fn jobs_for(p: &Progress) -> Option<JobSet> {
    if p.missing() == 0 {
        return None;
    }
    Some(JobSet {
        shared: p.shared.missing > 0,
        array: p
            .items
            .iter()
            .enumerate()
            .filter(|(_, (_, c))| c.missing > 0)
            .map(|(i, _)| i)
            .collect(),
    })
}

/// Slurm's `--array` syntax: `0-2,5`.
pub fn array_spec(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            indices[i].to_string()
        } else {
            format!("{}-{}", indices[i], indices[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Single-quotes a word for bash.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `sbatch` options the user chose; they go into every script's header.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub partition: Option<String>,
    pub gres: Option<String>,
    pub time: Option<String>,
    pub cpus_per_task: Option<usize>,
    pub mem: Option<String>,
}

/// How the jobs call mpfnet: absolute paths, so jobs on other nodes of a shared file system see
/// the same cache, runs and pipeline.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub exe: PathBuf,
    pub cwd: PathBuf,
    pub cache: PathBuf,
    pub runs: PathBuf,
    pub pipeline: PathBuf,
    pub sets: Vec<String>,
    pub device: String,
    pub axis: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Shared,
    Array,
    Final,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Shared => "shared",
            Part::Array => "array",
            Part::Final => "final",
        }
    }
}

/// The sbatch script of one part. For the array, `items` is the whole axis and `indices` the
/// tasks: an index names the same item in every submission of the pipeline.
pub fn script(
    part: Part,
    pipeline_name: &str,
    inv: &Invocation,
    res: &Resources,
    log_dir: &Path,
    items: &[String],
    indices: &[usize],
) -> String {
    let q = |p: &Path| sh_quote(&p.display().to_string());
    let mut s = String::from("#!/bin/bash\n");
    s += &format!(
        "#SBATCH --job-name=mpfnet-{pipeline_name}-{}\n",
        part.name()
    );
    let log = match part {
        Part::Array => format!("{}-%A_%a.out", part.name()),
        _ => format!("{}-%j.out", part.name()),
    };
    s += &format!("#SBATCH --output={}\n", log_dir.join(log).display());
    if part == Part::Array {
        s += &format!("#SBATCH --array={}\n", array_spec(indices));
    }
    for (flag, v) in [
        ("partition", res.partition.clone()),
        ("gres", res.gres.clone()),
        ("time", res.time.clone()),
        ("cpus-per-task", res.cpus_per_task.map(|n| n.to_string())),
        ("mem", res.mem.clone()),
    ] {
        if let Some(v) = v {
            s += &format!("#SBATCH --{flag}={v}\n");
        }
    }
    s += &format!(
        "# mpfnet {}: {}\n",
        part.name(),
        match part {
            Part::Shared => "the nodes no axis item depends on",
            Part::Array => "one task per axis item that has nodes to run",
            Part::Final => "the whole pipeline: pools the items' outputs, writes the report",
        }
    );
    s += "set -euo pipefail\n";
    s += &format!("cd {}\n", q(&inv.cwd));
    s += &format!(
        "export MPFNET_CACHE={} MPFNET_RUNS={}\n",
        q(&inv.cache),
        q(&inv.runs)
    );
    if part == Part::Array {
        s += &format!(
            "ITEMS=({})\nITEM=\"${{ITEMS[$SLURM_ARRAY_TASK_ID]}}\"\n",
            items
                .iter()
                .map(|i| sh_quote(i))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let mut cmd = format!(
        "exec {} --cache {} run {}",
        q(&inv.exe),
        q(&inv.cache),
        q(&inv.pipeline)
    );
    for set in &inv.sets {
        cmd += &format!(" --set {}", sh_quote(set));
    }
    cmd += &format!(" --quiet --device {}", sh_quote(&inv.device));
    if let Some(n) = res.cpus_per_task {
        cmd += &format!(" --jobs {n}");
    }
    match part {
        Part::Shared => cmd += &format!(" --axis {} --shared-only", sh_quote(&inv.axis)),
        Part::Array => cmd += &format!(" --axis {} --fold \"$ITEM\"", sh_quote(&inv.axis)),
        Part::Final => {}
    }
    s += &cmd;
    s.push('\n');
    s
}

/// What `submit` did, kept as `runs/<pipeline>/slurm/<stamp>/submission.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Submission {
    pub pipeline: String,
    pub created: String,
    pub dry_run: bool,
    pub axis: String,
    /// The whole axis; array task `i` runs `items[i]`.
    pub items: Vec<String>,
    /// The items this submission's array runs.
    pub array_items: Vec<String>,
    pub array_indices: String,
    /// Job ids by part (`shared`, `array`, `final`); absent parts had nothing to run.
    pub jobs: BTreeMap<String, String>,
    pub scripts: BTreeMap<String, PathBuf>,
    pub commands: Vec<String>,
    pub cache: PathBuf,
    pub runs: PathBuf,
}

fn slurm_dir(ws: &Workspace, pipeline: &str) -> PathBuf {
    crate::runs::pipeline_dir(&ws.runs_dir, pipeline).join("slurm")
}

/// The newest submission that was not a dry run.
pub fn last_submission(ws: &Workspace, pipeline: &str) -> Option<Submission> {
    let dir = slurm_dir(ws, pipeline);
    let name = std::fs::read_to_string(dir.join("latest")).ok()?;
    let text = std::fs::read_to_string(dir.join(name.trim()).join("submission.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Where the graph stands (the engine must be prepared).
pub fn progress(engine: &Engine, axis: &str) -> Result<Progress> {
    let items = select::per_item(engine, axis)?;
    let shared = select::shared_nodes(engine, axis);
    let plan = plan::plan(engine, None)?;
    let missing: Vec<bool> = plan
        .entries
        .iter()
        .map(|e| matches!(e.status, Status::Run | Status::RunIfInputsChange))
        .collect();
    Ok(tally(&missing, &shared, &items))
}

pub struct SubmitOptions {
    pub resources: Resources,
    pub dry_run: bool,
    pub sbatch_dir: Option<PathBuf>,
}

/// Writes the scripts and submits them (the engine must be prepared). None: nothing to run.
pub fn submit(
    engine: &Engine,
    ws: &Workspace,
    inv: &Invocation,
    opts: &SubmitOptions,
) -> Result<Option<(PathBuf, Submission)>> {
    let name = engine.pipeline().name.clone();
    let prog = progress(engine, &inv.axis)?;
    let Some(jobs) = jobs_for(&prog) else {
        return Ok(None);
    };
    if !opts.dry_run {
        check_can_submit(ws, &name)?;
    }
    let items: Vec<String> = prog.items.iter().map(|(i, _)| i.clone()).collect();
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let record_dir = claim_dir(&slurm_dir(ws, &name), &created.replace([':', '-'], ""))?;
    let script_dir = match &opts.sbatch_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            std::path::absolute(d)?
        }
        None => record_dir.clone(),
    };
    let mut parts = Vec::new();
    if jobs.shared {
        parts.push(Part::Shared);
    }
    if !jobs.array.is_empty() {
        parts.push(Part::Array);
    }
    parts.push(Part::Final);
    let mut scripts = BTreeMap::new();
    for &part in &parts {
        let path = script_dir.join(format!("{}.sbatch", part.name()));
        let text = script(
            part,
            &name,
            inv,
            &opts.resources,
            &script_dir,
            &items,
            &jobs.array,
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        scripts.insert(part.name().to_string(), path);
    }
    let (ids, commands) = submit_chain(&parts, &scripts, opts.dry_run)?;
    let sub = Submission {
        pipeline: name.clone(),
        created,
        dry_run: opts.dry_run,
        axis: inv.axis.clone(),
        array_items: jobs.array.iter().map(|&i| items[i].clone()).collect(),
        array_indices: array_spec(&jobs.array),
        items,
        jobs: ids,
        scripts,
        commands,
        cache: inv.cache.clone(),
        runs: inv.runs.clone(),
    };
    write_record(ws, &record_dir, &sub)?;
    Ok(Some((record_dir, sub)))
}

/// Refuses to submit without `sbatch`, or while the last submission still has live jobs.
fn check_can_submit(ws: &Workspace, name: &str) -> Result<()> {
    if which("sbatch").is_none() {
        bail!("`sbatch` is not on PATH: is this a Slurm login node? (--dry-run writes the scripts anyway)");
    }
    // the plan cannot see work in flight: submitting now would run those folds twice
    if let Some(last) = last_submission(ws, name) {
        let live = live_jobs(&last);
        if !live.is_empty() {
            bail!(
                "the last submission ({}) still has jobs queued or running: {}; wait for them or scancel them, then submit again",
                last.created,
                live.join(", ")
            );
        }
    }
    Ok(())
}

/// Submits the parts in order (unless `dry_run`): each waits for the one before it, and a
/// part whose dependency can never be met is cancelled by Slurm instead of pending forever.
/// Returns the job ids by part and the sbatch command lines.
fn submit_chain(
    parts: &[Part],
    scripts: &BTreeMap<String, PathBuf>,
    dry_run: bool,
) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut commands = Vec::new();
    let mut prev: Option<String> = None;
    for &part in parts {
        let mut args = vec!["--parsable".to_string()];
        if let Some(p) = &prev {
            let id = ids
                .get(p)
                .cloned()
                .unwrap_or_else(|| format!("<{p} job id>"));
            args.push(format!("--dependency=afterok:{id}"));
            args.push("--kill-on-invalid-dep=yes".into());
        }
        args.push(scripts[part.name()].display().to_string());
        commands.push(format!("sbatch {}", args.join(" ")));
        if !dry_run {
            let id = sbatch(&args).with_context(|| {
                format!(
                    "submitting the {} job (already submitted: {ids:?}; scancel them before retrying)",
                    part.name()
                )
            })?;
            ids.insert(part.name().to_string(), id);
        }
        prev = Some(part.name().to_string());
    }
    Ok((ids, commands))
}

/// `submission.json` in the record folder; a real submission also becomes `latest`.
fn write_record(ws: &Workspace, record_dir: &Path, sub: &Submission) -> Result<()> {
    std::fs::write(
        record_dir.join("submission.json"),
        serde_json::to_string_pretty(sub)?,
    )?;
    if !sub.dry_run {
        std::fs::write(
            slurm_dir(ws, &sub.pipeline).join("latest"),
            record_dir.file_name().unwrap().to_string_lossy().as_bytes(),
        )?;
    }
    Ok(())
}

fn claim_dir(base: &Path, stamp: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    let base = std::path::absolute(base)?;
    let mut dir = base.join(stamp);
    let mut n = 1;
    loop {
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                dir = base.join(format!("{stamp}-{n}"));
                n += 1;
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn sbatch(args: &[String]) -> Result<String> {
    let out = Command::new("sbatch")
        .args(args)
        .output()
        .context("running sbatch")?;
    if !out.status.success() {
        bail!(
            "sbatch {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // --parsable prints `id` or `id;cluster`
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() {
        bail!("sbatch printed no job id");
    }
    Ok(id)
}

/// One line of `scontrol -o show job`: a job, or an array task (or the pending rest of an array).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobState {
    pub job_id: String,
    pub array_task: Option<String>,
    pub state: String,
    pub reason: String,
}

pub fn parse_scontrol(text: &str) -> Vec<JobState> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("JobId=")) {
        let mut f: BTreeMap<&str, &str> = BTreeMap::new();
        for tok in line.split_whitespace() {
            if let Some((k, v)) = tok.split_once('=') {
                f.entry(k).or_insert(v);
            }
        }
        out.push(JobState {
            job_id: f.get("JobId").unwrap_or(&"?").to_string(),
            array_task: f.get("ArrayTaskId").map(|s| s.to_string()),
            state: f.get("JobState").unwrap_or(&"?").to_string(),
            reason: f.get("Reason").unwrap_or(&"").to_string(),
        });
    }
    out
}

/// The jobs' states; None when Slurm's commands are not installed.
fn query(job: &str) -> Option<Result<Vec<JobState>, String>> {
    which("scontrol")?;
    let out = Command::new("scontrol")
        .args(["-o", "show", "job", job])
        .output()
        .ok()?;
    if !out.status.success() {
        return Some(Err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Some(Ok(parse_scontrol(&String::from_utf8_lossy(&out.stdout))))
}

/// The submission's jobs (or array tasks) that Slurm has not finished with.
fn live_jobs(sub: &Submission) -> Vec<String> {
    let mut out = Vec::new();
    for id in sub.jobs.values() {
        if let Some(Ok(states)) = query(id) {
            for st in states {
                if !FINAL_STATES.contains(&st.state.as_str()) {
                    let task = st.array_task.map(|t| format!("_{t}")).unwrap_or_default();
                    out.push(format!("{id}{task} {}", st.state));
                }
            }
        }
    }
    out
}

/// Slurm's job states after which a job does nothing more.
const FINAL_STATES: [&str; 9] = [
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
];

/// `mpfnet status`: the cache's view per part, then the last submission's jobs.
pub fn status(engine: &Engine, ws: &Workspace, axis: &str) -> Result<String> {
    let name = engine.pipeline().name.clone();
    let prog = progress(engine, axis)?;
    let mut s = format!(
        "{name}: {} items on the axis of `{axis}`\n",
        prog.items.len()
    );
    s += &format!("{:<24} {:>7} {:>8}\n", "part", "cached", "missing");
    let mut line = |label: &str, c: &Counts| {
        s += &format!(
            "{label:<24} {:>7} {:>8}{}\n",
            c.cached,
            c.missing,
            if c.missing == 0 { "  done" } else { "" }
        );
    };
    line("shared", &prog.shared);
    for (id, c) in &prog.items {
        line(&format!("{axis}={id}"), c);
    }
    line("pooled (final)", &prog.rest);
    s += &format!("{} node(s) missing\n", prog.missing());
    let Some(sub) = last_submission(ws, &name) else {
        s += "no Slurm submission recorded\n";
        return Ok(s);
    };
    s += &format!(
        "last submission {}: array over {:?}\n",
        sub.created, sub.array_items
    );
    for part in ["shared", "array", "final"] {
        let Some(id) = sub.jobs.get(part) else {
            continue;
        };
        match query(id) {
            None => {
                s += "Slurm is not installed here: job states unknown\n";
                break;
            }
            Some(Err(e)) => s += &format!("  {part:<7} job {id}: not known to Slurm ({e})\n"),
            Some(Ok(mut states)) => {
                states
                    .sort_by_key(|st| st.array_task.as_ref().and_then(|t| t.parse::<usize>().ok()));
                for st in states {
                    let what = match (&st.array_task, part) {
                        (Some(t), "array") => {
                            match t.parse::<usize>().ok().and_then(|i| sub.items.get(i)) {
                                Some(item) => format!("task {t} ({axis}={item})"),
                                None => format!("tasks {t}"),
                            }
                        }
                        _ => format!("job {}", st.job_id),
                    };
                    s += &format!("  {part:<7} {what:<32} {:<10} {}\n", st.state, st.reason);
                }
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(cached: usize, missing: usize) -> Counts {
        Counts { cached, missing }
    }

    #[test]
    fn tally_splits_shared_items_and_rest() {
        // 0,1 shared; 2,3 item a; 4,5 item b; 6 pooled
        let missing = [false, false, false, false, true, false, true];
        let items = vec![("a".to_string(), vec![2, 3]), ("b".to_string(), vec![4, 5])];
        let p = tally(&missing, &[0, 1], &items);
        assert_eq!(p.shared, counts(2, 0));
        assert_eq!(p.items[0].1, counts(2, 0));
        assert_eq!(p.items[1].1, counts(1, 1));
        assert_eq!(p.rest, counts(0, 1));
        assert_eq!(p.missing(), 2);
    }

    #[test]
    fn resubmission_runs_only_items_with_missing_nodes() {
        let p = Progress {
            shared: counts(5, 0),
            items: vec![
                ("s1".into(), counts(4, 0)),
                ("s2".into(), counts(0, 4)),
                ("s3".into(), counts(4, 0)),
                ("s4".into(), counts(2, 2)),
            ],
            rest: counts(0, 3),
        };
        assert_eq!(
            jobs_for(&p),
            Some(JobSet {
                shared: false,
                array: vec![1, 3],
            })
        );
        // only the pooled part left: no shared job, no array
        let p2 = Progress {
            items: p
                .items
                .iter()
                .map(|(i, _)| (i.clone(), counts(4, 0)))
                .collect(),
            ..p.clone()
        };
        assert_eq!(
            jobs_for(&p2),
            Some(JobSet {
                shared: false,
                array: vec![],
            })
        );
        let done = Progress {
            rest: counts(3, 0),
            ..p2
        };
        assert_eq!(jobs_for(&done), None);
        let fresh = Progress {
            shared: counts(0, 5),
            ..p
        };
        assert!(jobs_for(&fresh).unwrap().shared);
    }

    #[test]
    fn array_specs_compress_runs() {
        assert_eq!(array_spec(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(array_spec(&[3]), "3");
        assert_eq!(array_spec(&[]), "");
    }

    fn inv() -> Invocation {
        Invocation {
            exe: "/opt/mpfnet/bin/mpfnet".into(),
            cwd: "/home/me/study".into(),
            cache: "/shared/cache".into(),
            runs: "/home/me/study/runs".into(),
            pipeline: "/home/me/study/p.toml".into(),
            sets: vec!["stages.meta_p.gamma=0.3".into()],
            device: "cuda:0".into(),
            axis: "folds".into(),
        }
    }

    #[test]
    fn array_script_maps_task_ids_to_items() {
        let res = Resources {
            partition: Some("gpu".into()),
            gres: Some("gpu:1".into()),
            cpus_per_task: Some(4),
            ..Default::default()
        };
        let items: Vec<String> = ["sub01", "sub02", "it's"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = script(
            Part::Array,
            "p",
            &inv(),
            &res,
            Path::new("/logs"),
            &items,
            &[0, 2],
        );
        for want in [
            "#SBATCH --array=0,2\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --gres=gpu:1\n",
            "#SBATCH --cpus-per-task=4\n",
            "#SBATCH --output=/logs/array-%A_%a.out\n",
            "ITEMS=('sub01' 'sub02' 'it'\\''s')\n",
            "ITEM=\"${ITEMS[$SLURM_ARRAY_TASK_ID]}\"\n",
            "cd '/home/me/study'\n",
            "export MPFNET_CACHE='/shared/cache' MPFNET_RUNS='/home/me/study/runs'\n",
            "exec '/opt/mpfnet/bin/mpfnet' --cache '/shared/cache' run '/home/me/study/p.toml' --set 'stages.meta_p.gamma=0.3' --quiet --device 'cuda:0' --jobs 4 --axis 'folds' --fold \"$ITEM\"\n",
        ] {
            assert!(s.contains(want), "missing {want:?} in:\n{s}");
        }
        assert!(!s.contains("--time") && !s.contains("--mem"));
    }

    #[test]
    fn shared_and_final_scripts() {
        let res = Resources::default();
        let shared = script(Part::Shared, "p", &inv(), &res, Path::new("/l"), &[], &[]);
        assert!(
            shared.contains("--axis 'folds' --shared-only\n"),
            "{shared}"
        );
        assert!(shared.contains("#SBATCH --output=/l/shared-%j.out\n"));
        assert!(!shared.contains("--array"));
        let last = script(Part::Final, "p", &inv(), &res, Path::new("/l"), &[], &[]);
        assert!(last.ends_with("--quiet --device 'cuda:0'\n"), "{last}");
        assert!(last.contains("#SBATCH --job-name=mpfnet-p-final\n"));
    }

    #[test]
    fn scontrol_lines_parse() {
        let text = "JobId=12 ArrayJobId=10 ArrayTaskId=0 JobName=mpfnet-p-array UserId=root(0) JobState=COMPLETED Reason=None Dependency=(null)\n\
                    JobId=10 ArrayJobId=10 ArrayTaskId=1-3 JobName=x JobState=PENDING Reason=Dependency\n\
                    JobId=15 JobName=mpfnet-p-final JobState=CANCELLED Reason=DependencyNeverSatisfied\n";
        let s = parse_scontrol(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].array_task.as_deref(), Some("0"));
        assert_eq!(s[1].array_task.as_deref(), Some("1-3"));
        assert_eq!(s[1].state, "PENDING");
        assert_eq!(s[2].array_task, None);
        assert_eq!(s[2].reason, "DependencyNeverSatisfied");
    }
}
