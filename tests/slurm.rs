//! `mpfnet submit --slurm` on a real (one-node) Slurm, started by `scripts/slurm-up.sh`: the
//! array over the folds writes one cache concurrently and yields the same report as a plain local
//! run; after a cancelled array task, resubmitting runs only the missing fold.
//!
//! Without `sbatch` on PATH the test is skipped, unless MPFNET_REQUIRE_SLURM=1 (as in `.ci/run`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mpfnet::slurm::Submission;

// the pipeline of tests/method_e2e.rs: 4 subjects, a minuscule network
const TINY: &str = include_str!("tiny_pipeline.toml");

/// Nodes that pool the folds.
const POOLED: [&str; 3] = ["eval_p", "eval_c", "report"];

struct Env {
    dir: PathBuf,
}

impl Env {
    fn mpfnet(&self, space: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mpfnet"));
        c.current_dir(&self.dir)
            .env("MPFNET_CACHE", self.dir.join(space).join("cache"))
            .env("MPFNET_RUNS", self.dir.join(space).join("runs"));
        c
    }

    fn ok(&self, space: &str, args: &[&str]) -> String {
        let out = self.mpfnet(space).args(args).output().unwrap();
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "mpfnet {args:?} in {space}: {}\n{so}\n{se}",
            out.status
        );
        so.into_owned()
    }

    /// The stages fanned out over the folds; their nodes are `stage[fold]`.
    fn per_fold_stages(&self) -> Vec<String> {
        let reg = mpfnet_stages::registry();
        let p = mpfnet::pipeline::load(&self.dir.join("tiny.toml"), &[], &reg).unwrap();
        p.stages
            .values()
            .filter(|s| s.over.as_deref() == Some("folds"))
            .map(|s| s.name.clone())
            .collect()
    }

    fn runs(&self, space: &str) -> PathBuf {
        self.dir.join(space).join("runs")
    }

    fn submit(&self, space: &str) -> Submission {
        self.ok(
            space,
            &["submit", "tiny.toml", "--slurm", "--cpus-per-task", "1"],
        );
        let slurm = self.runs(space).join("tiny/slurm");
        let latest = std::fs::read_to_string(slurm.join("latest")).unwrap();
        let text =
            std::fs::read_to_string(slurm.join(latest.trim()).join("submission.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The report node's output digest in the space's latest full run.
    fn report_digest(&self, space: &str) -> String {
        let rec = mpfnet::runs::latest(&self.runs(space), "tiny")
            .unwrap_or_else(|| panic!("{space}: no full run recorded"));
        let node = rec.nodes.iter().find(|n| n.name == "report").unwrap();
        node.digest.clone().expect("report computed")
    }
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Jobs still queued or running (squeue forgets finished jobs; an unknown id counts as gone).
fn queued(ids: &[&str]) -> String {
    sh("squeue", &["-h", "-j", &ids.join(","), "-o", "%i %T %r"])
}

fn wait_gone(sub: &Submission, ids: &[&str], limit: Duration) {
    let t0 = Instant::now();
    loop {
        let q = queued(ids);
        if q.trim().is_empty() {
            return;
        }
        if t0.elapsed() > limit {
            for id in ids {
                sh("scancel", &[id]);
            }
            panic!("jobs still queued after {limit:?}:\n{q}\n{}", logs(sub));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The jobs' output files, for failure messages.
fn logs(sub: &Submission) -> String {
    let dir = sub.scripts.values().next().unwrap().parent().unwrap();
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "out") {
            out += &format!(
                "--- {}\n{}\n",
                e.path().display(),
                std::fs::read_to_string(e.path()).unwrap_or_default()
            );
        }
    }
    out
}

fn job_state(id: &str) -> String {
    let text = sh("scontrol", &["-o", "show", "job", id]);
    mpfnet::slurm::parse_scontrol(&text)
        .into_iter()
        .map(|s| s.state)
        .collect::<Vec<_>>()
        .join(",")
}

fn all_jobs(sub: &Submission) -> Vec<&str> {
    sub.jobs.values().map(|s| s.as_str()).collect()
}

fn record_dirs(runs: &Path) -> BTreeSet<PathBuf> {
    mpfnet::runs::list(runs)
        .into_iter()
        .map(|(_, d)| d)
        .collect()
}

fn tiny_env(tmp: &Path) -> Env {
    let pipelines = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let text = TINY
        .replace("PIPELINES", &pipelines.display().to_string())
        .replace("DATA", &tmp.join("synth").display().to_string());
    std::fs::write(tmp.join("tiny.toml"), text).unwrap();
    Env {
        dir: tmp.to_path_buf(),
    }
}

/// The pieces the jobs run, without Slurm: one fold, the shared part, and a bad fold id.
#[test]
fn run_fold_and_shared_only_select_their_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let env = tiny_env(tmp.path());
    let out = env
        .mpfnet("a")
        .args(["run", "tiny.toml", "--fold", "sub99"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no item `sub99` on the axis of `folds`; known: "),
        "{err}"
    );
    for f in ["sub01", "sub02", "sub03", "sub04"] {
        assert!(err.contains(f), "{f} not listed: {err}");
    }

    env.ok("a", &["run", "tiny.toml", "--shared-only", "--quiet"]);
    env.ok("a", &["run", "tiny.toml", "--fold", "sub02", "--quiet"]);
    assert!(
        mpfnet::runs::latest(&env.runs("a"), "tiny").is_none(),
        "partial runs never become `latest`"
    );
    let mut by_selection = std::collections::BTreeMap::new();
    for dir in record_dirs(&env.runs("a")) {
        let rec = mpfnet::runs::load(&dir).unwrap();
        let computed: BTreeSet<String> = rec
            .nodes
            .into_iter()
            .filter(|n| n.status == "computed")
            .map(|n| n.stage + n.name.find('[').map_or("", |i| &n.name[i..]))
            .collect();
        by_selection.insert(rec.selection.unwrap(), computed);
    }
    let per_fold = env.per_fold_stages();
    let shared = &by_selection["shared-folds"];
    // (dataset, folds and balance ran while the bad --fold above expanded the graph)
    for prefix in ["features[", "features_mag["] {
        assert!(
            shared.iter().any(|n| n.starts_with(prefix)),
            "{prefix} not in {shared:?}"
        );
    }
    assert!(
        !shared.iter().any(|n| per_fold
            .iter()
            .map(|s| s.as_str())
            .chain(POOLED)
            .any(|s| n.starts_with(s))),
        "{shared:?}"
    );
    let fold: BTreeSet<String> = per_fold.iter().map(|s| format!("{s}[sub02]")).collect();
    assert_eq!(by_selection["folds=sub02"], fold);
}

#[test]
fn fold_array_matches_a_local_run_and_resubmission_runs_only_missing_folds() {
    if !on_path("sbatch") {
        if std::env::var("MPFNET_REQUIRE_SLURM").as_deref() == Ok("1") {
            panic!("MPFNET_REQUIRE_SLURM=1 but `sbatch` is not on PATH: run scripts/slurm-up.sh");
        }
        eprintln!("skipped: no `sbatch` on PATH (scripts/slurm-up.sh starts a one-node Slurm)");
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let env = tiny_env(tmp.path());
    let limit = Duration::from_secs(300);

    // (i) a plain local run
    env.ok("a", &["run", "tiny.toml", "--quiet"]);
    let local = env.report_digest("a");

    // (ii) the same pipeline as shared job + array + final job, against another cache
    let sub = env.submit("b");
    let folds = sub.items.clone();
    for f in ["sub01", "sub02", "sub03", "sub04"] {
        assert!(
            folds.contains(&f.to_string()),
            "one LOSO fold per subject: {folds:?}"
        );
    }
    assert_eq!(sub.array_items, folds, "a fresh cache needs every fold");
    assert_eq!(
        sub.jobs.keys().map(|s| s.as_str()).collect::<Vec<_>>(),
        ["array", "final", "shared"]
    );
    wait_gone(&sub, &all_jobs(&sub), limit);
    assert_eq!(job_state(&sub.jobs["final"]), "COMPLETED", "{}", logs(&sub));
    assert_eq!(
        env.report_digest("b"),
        local,
        "the array's report differs from the local one"
    );
    // array tasks wrote cache b at the same time: nothing torn or lost
    env.ok("b", &["cache", "verify"]);
    let status = env.ok("b", &["status", "tiny.toml"]);
    assert!(status.contains("0 node(s) missing"), "{status}");

    // (iii) a fresh cache: cancel one array task (pending behind the shared job), let the rest run
    let sub = env.submit("c");
    let k = 2;
    let cancelled = sub.items[k].clone();
    let task = format!("{}_{k}", sub.jobs["array"]);
    let out = Command::new("scancel").arg(&task).output().unwrap();
    assert!(out.status.success(), "scancel {task}: {out:?}");
    // the final job can never start (afterok); --kill-on-invalid-dep cancels it, else we do
    wait_gone(&sub, &[&sub.jobs["shared"], &sub.jobs["array"]], limit);
    let t_final = Instant::now();
    while !queued(&[&sub.jobs["final"]]).trim().is_empty() {
        if t_final.elapsed() > Duration::from_secs(5) {
            sh("scancel", &[&sub.jobs["final"]]);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        mpfnet::runs::latest(&env.runs("c"), "tiny").is_none(),
        "the final job must not have run: {}",
        logs(&sub)
    );
    let status = env.ok("c", &["status", "tiny.toml"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with(&format!("folds={cancelled} ")) && !l.ends_with("done")),
        "{status}"
    );

    // what the plan says is missing: the cancelled fold's nodes and the pooled ones
    let plan = env.ok("c", &["plan", "tiny.toml", "--json"]);
    let plan: serde_json::Value =
        serde_json::from_str(&plan[..plan.rfind('}').unwrap() + 1]).unwrap();
    let missing: BTreeSet<String> = plan["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] != "cached" && e["status"] != "ran_during_planning")
        .map(|e| e["node"].as_str().unwrap().to_string())
        .collect();
    let per_fold = env.per_fold_stages();
    for n in &missing {
        if let Some((stage, item)) = n.trim_end_matches(']').split_once('[') {
            if per_fold.iter().any(|s| s == stage) {
                assert_eq!(
                    item, cancelled,
                    "only the cancelled fold is missing: {missing:?}"
                );
            }
        }
    }
    for s in per_fold.iter().map(|s| s.as_str()).chain(POOLED) {
        let node = if POOLED.contains(&s) {
            s.to_string()
        } else {
            format!("{s}[{cancelled}]")
        };
        assert!(missing.contains(&node), "{node} not missing: {missing:?}");
    }

    let before = record_dirs(&env.runs("c"));
    let again = env.submit("c");
    assert_eq!(
        again.array_items,
        vec![cancelled.clone()],
        "only the cancelled fold"
    );
    assert_eq!(again.array_indices, k.to_string());
    assert!(
        !again.jobs.contains_key("shared"),
        "the shared part is cached: no shared job"
    );
    wait_gone(&again, &all_jobs(&again), limit);
    assert_eq!(
        job_state(&again.jobs["final"]),
        "COMPLETED",
        "{}",
        logs(&again)
    );

    // the resubmission computed exactly what was missing: no other fold's node ran again
    let mut computed = BTreeSet::new();
    for dir in record_dirs(&env.runs("c")).difference(&before) {
        let rec = mpfnet::runs::load(dir).unwrap();
        computed.extend(
            rec.nodes
                .into_iter()
                .filter(|n| n.status == "computed")
                .map(|n| n.name),
        );
    }
    assert_eq!(computed, missing, "{}", logs(&again));
    assert_eq!(env.report_digest("c"), local);
    env.ok("c", &["cache", "verify"]);
    eprintln!("slurm test took {:.1}s", t0.elapsed().as_secs_f64());
}
