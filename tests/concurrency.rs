//! The store under interruption and concurrency, through the real binary and the whole method
//! at toy size:
//! - SIGKILL during each training kind (GFE, AFE, meta-learning), then rerun: every node's
//!   digest, the model bundle's included, equals an uninterrupted run's;
//! - several processes on one cache at once (identical runs, other `--set` values, a fresh
//!   synthetic data folder they all materialise, `cache gc` with its default grace): no failed
//!   node, every digest equal to a serial run's, `cache verify` clean, no temporary leftovers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// The tiny pipeline with training long enough to be caught in the act: a checkpoint after
/// every epoch and meta step.
fn slow_pipeline(dir: &Path, data: &Path, epochs: usize) -> PathBuf {
    let mut text = common::tiny::text(data);
    let (enc, meta) = (
        &format!("train = {{ epochs = {epochs}, batch = 8, checkpoint_every = 1 }}"),
        &format!("train = {{ steps = {epochs}, eval_every = 2, checkpoint_every = 1, k_shot = 1, n_query = 1 }}"),
    );
    text = text
        .replace("train = { epochs = 1, batch = 8 }", enc)
        .replace(
            "train = { steps = 2, eval_every = 1, k_shot = 1, n_query = 1 }",
            meta,
        );
    assert_eq!(text.matches("checkpoint_every = 1").count(), 4, "{text}");
    let p = dir.join("slow.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn mpfnet(cache: &Path, runs: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpfnet"));
    c.args(args)
        .env("MPFNET_CACHE", cache)
        .env("MPFNET_RUNS", runs)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn run_ok(cache: &Path, runs: &Path, args: &[&str]) {
    let o = mpfnet(cache, runs, args).output().unwrap();
    assert!(
        o.status.success(),
        "mpfnet {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Node name -> output digest of the newest full run of `pipeline` under `runs`.
fn digests(runs: &Path, pipeline: &str) -> BTreeMap<String, String> {
    let base = runs.join(pipeline);
    let latest = std::fs::read_to_string(base.join("latest")).unwrap();
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.join(latest.trim()).join("run.json")).unwrap())
            .unwrap();
    rec["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert!(
                matches!(n["status"].as_str(), Some("cached" | "computed")),
                "node {} is {}",
                n["name"],
                n["status"]
            );
            (
                n["name"].as_str().unwrap().to_string(),
                n["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every node has the same digest in both runs; names the nodes that differ.
fn assert_same(want: &BTreeMap<String, String>, got: &BTreeMap<String, String>, what: &str) {
    let differ: Vec<&String> = want
        .keys()
        .chain(got.keys())
        .filter(|n| want.get(*n) != got.get(*n))
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: {} of {} nodes differ from the reference: {differ:?}",
        differ.len(),
        want.len()
    );
}

/// Action key (hex) -> stage kind, from a finished cache's action records.
fn kinds_by_key(cache: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for shard in std::fs::read_dir(cache.join("actions")).unwrap().flatten() {
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
            let name = f
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_string();
            let key = format!("{}{name}", shard.file_name().to_string_lossy());
            out.insert(
                key,
                v["provenance"]["kind"].as_str().unwrap_or("").to_string(),
            );
        }
    }
    out
}

/// The kind of a training node that has written a checkpoint into `cache` right now.
fn training_now(cache: &Path, kinds: &BTreeMap<String, String>) -> Option<String> {
    for d in std::fs::read_dir(cache.join("checkpoints")).ok()?.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        let has_ckpt = std::fs::read_dir(d.path())
            .map(|r| {
                r.flatten()
                    .any(|f| f.file_name().to_string_lossy().ends_with(".ckpt"))
            })
            .unwrap_or(false);
        if has_ckpt {
            if let Some(k) = kinds.get(&name) {
                return Some(k.clone());
            }
        }
    }
    None
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}

#[test]
fn sigkill_during_each_training_kind_then_resume_gives_identical_digests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("synth");
    let p = slow_pipeline(d, &data, 12);
    let p = p.to_str().unwrap();
    let (ref_cache, ref_runs) = (d.join("ref-cache"), d.join("ref-runs"));
    run_ok(&ref_cache, &ref_runs, &["run", p, "--quiet", "--jobs", "1"]);
    let reference = digests(&ref_runs, "slow");
    let kinds = kinds_by_key(&ref_cache);

    let (cache, runs) = (d.join("cache"), d.join("runs"));
    let mut killed = BTreeSet::new();
    for _attempt in 0..20 {
        if killed.len() == 3 {
            break;
        }
        let mut child = mpfnet(&cache, &runs, &["run", p, "--quiet", "--jobs", "2"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if let Some(k) = training_now(&cache, &kinds) {
                if !killed.contains(&k) {
                    sigkill(&mut child);
                    killed.insert(k);
                    break;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(600), "run hangs");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert_eq!(
        killed,
        BTreeSet::from(["afe".to_string(), "gfe".into(), "meta".into()]),
        "killed during each training kind"
    );
    run_ok(&cache, &runs, &["run", p, "--quiet"]);
    let resumed = digests(&runs, "slow");
    assert_same(&reference, &resumed, "resumed after SIGKILL");
    assert!(reference.keys().any(|n| n == "bundle"));
}

fn leftovers(cache: &Path, data_parent: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(cache.join("tmp")).unwrap().flatten() {
        out.push(e.path().display().to_string());
    }
    for e in std::fs::read_dir(data_parent).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.contains(".tmp-") || n.contains(".stale-") {
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[test]
fn concurrent_writers_never_fail_a_node_and_agree_with_a_serial_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    for round in 0..5 {
        // a fresh data folder every round: all processes race to materialise it
        let data_parent = d.join(format!("data{round}"));
        std::fs::create_dir_all(&data_parent).unwrap();
        let data = data_parent.join("synth");
        // short trainings, a checkpoint after each epoch: many checkpoint writes and clears race
        let p = slow_pipeline(&d.join(format!("data{round}")), &data, 4);
        let p = p.to_str().unwrap().to_string();
        let runs: Vec<PathBuf> = (0..3).map(|k| d.join(format!("runs{round}-{k}"))).collect();
        let sets: [&[&str]; 3] = [
            &[],
            &[],
            &[
                "--set",
                "stages.meta_p.gamma=0.4",
                "--set",
                "stages.gfe.train.lr=0.02",
            ],
        ];
        let children: Vec<Child> = (0..3)
            .map(|k| {
                let mut args = vec![
                    "run",
                    p.as_str(),
                    "--quiet",
                    "--jobs",
                    if k == 0 { "1" } else { "2" },
                ];
                args.extend_from_slice(sets[k]);
                mpfnet(&cache, &runs[k], &args).spawn().unwrap()
            })
            .collect();
        // gc with its default grace, while they write
        let gc_runs = d.join("gc-runs");
        let mut gcs = 0;
        while gcs < 3 {
            std::thread::sleep(Duration::from_millis(300));
            run_ok(&cache, &gc_runs, &["cache", "gc"]);
            gcs += 1;
        }
        for (k, c) in children.into_iter().enumerate() {
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "round {round}, process {k}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        // the serial reference: one process at a time, on a cache of its own
        for k in [0, 2] {
            let (rc, rr) = (
                d.join(format!("ref-cache{round}-{k}")),
                d.join(format!("ref-runs{round}-{k}")),
            );
            let mut args = vec!["run", p.as_str(), "--quiet", "--jobs", "1"];
            args.extend_from_slice(sets[k]);
            run_ok(&rc, &rr, &args);
            let want = digests(&rr, "slow");
            for j in if k == 0 { vec![0, 1] } else { vec![2] } {
                assert_same(
                    &want,
                    &digests(&runs[j], "slow"),
                    &format!("round {round}, process {j}"),
                );
            }
            std::fs::remove_dir_all(&rc).unwrap();
        }
        assert_eq!(
            leftovers(&cache, &data_parent),
            Vec::<String>::new(),
            "round {round}"
        );
    }
    let o = mpfnet(&cache, &d.join("r"), &["cache", "verify"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cache verify: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
