//! Engine behaviour with toy stages: fan-out, caching, invalidation, early cutoff, corruption,
//! failures, configuration errors, resume after kill -9, concurrent processes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Env;
use mpfnet::plan::{self, Status};
use mpfnet::ConfigError;

const FAN: &str = r#"
seed = 3
report = ["total"]
[stages.src]
kind = "source"
path = "items.txt"
[stages.sq]
kind = "num"
over = "src"
value = 1.0
[stages.total]
kind = "num"
inputs = { ins = "sq[*]" }
[stages.other]
kind = "num"
value = 5.0
"#;

/// A new environment holding one pipeline file.
fn env_with(name: &str, pipeline: &str) -> (Env, std::path::PathBuf) {
    let env = Env::new();
    let p = env.write(name, pipeline);
    (env, p)
}

fn fan_env() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    let items = env.write("items.txt", "a 1\nb 2\nc 3\n");
    let p = env.write(
        "fan.toml",
        &FAN.replace("items.txt", &items.display().to_string()),
    );
    (env, p)
}

#[test]
fn fan_out_gather_and_values() {
    let (env, p) = fan_env();
    let out = env.run(&p, &[]).unwrap();
    assert!(out.summary.ok());
    // sq[x] = 1 + item value; total = sum = 2 + 3 + 4
    assert_eq!(env.value(&p, &[], "total"), 9.0);
    assert_eq!(env.value(&p, &[], "sq[b]"), 3.0);
}

#[test]
fn noop_rerun_computes_nothing_and_revert_restores() {
    let (env, p) = fan_env();
    let first = env.run(&p, &[]).unwrap();
    assert_eq!(first.summary.computed, 6, "src + 3 sq + total + other");
    let again = env.run(&p, &[]).unwrap();
    assert_eq!(
        again.summary.computed, 0,
        "no-op rerun must compute nothing"
    );
    // change one parameter: only sq[*] and total depend on it
    let changed = env.run(&p, &["stages.sq.value=2.0"]).unwrap();
    assert_eq!(changed.summary.computed, 4);
    assert_eq!(env.value(&p, &["stages.sq.value=2.0"], "total"), 12.0);
    // revert: everything comes back from the cache
    let reverted = env.run(&p, &[]).unwrap();
    assert_eq!(reverted.summary.computed, 0);
    assert_eq!(env.value(&p, &[], "total"), 9.0);
}

#[test]
fn early_cutoff_on_one_changed_item() {
    let (env, p) = fan_env();
    env.run(&p, &[]).unwrap();
    let items = env.dir.path().join("items.txt");
    std::fs::write(&items, "a 1\nb 20\nc 3\n").unwrap();
    let out = env.run(&p, &[]).unwrap();
    // src re-read (changed), sq[b] and total recomputed; sq[a], sq[c], other cached
    assert_eq!(out.summary.computed, 3);
    let by_name = |n: &str| {
        out.record
            .nodes
            .iter()
            .find(|r| r.name == n)
            .unwrap()
            .status
            .clone()
    };
    assert_eq!(by_name("sq[a]"), "cached");
    assert_eq!(by_name("sq[b]"), "computed");
    assert_eq!(by_name("other"), "cached");
}

#[test]
fn plan_says_what_runs_and_why() {
    let (env, p) = fan_env();
    env.run(&p, &[]).unwrap();
    let mut e = env.engine(&p, &["stages.sq.value=4.0"]).unwrap();
    e.prepare().unwrap();
    let prev = mpfnet::runs::latest(&env.ws.runs_dir, "fan");
    let plan = plan::plan(&e, prev.as_ref()).unwrap();
    let st = |n: &str| plan.entries.iter().find(|x| x.node == n).unwrap().clone();
    assert_eq!(st("sq[a]").status, Status::Run);
    assert!(
        st("sq[a]").reason.contains("param value: 1.0 -> 4.0"),
        "{}",
        st("sq[a]").reason
    );
    assert_eq!(st("total").status, Status::RunIfInputsChange);
    assert_eq!(st("other").status, Status::Cached);
    assert_eq!(st("src").status, Status::RanDuringPlanning);
}

#[test]
fn corrupt_blob_is_detected_and_recomputed() {
    let (env, p) = fan_env();
    let out = env.run(&p, &[]).unwrap();
    let rec = out.record.nodes.iter().find(|n| n.name == "sq[a]").unwrap();
    let store = mpfnet_cache::Store::open(&env.ws.cache_dir).unwrap();
    let digest: mpfnet_cache::Digest = rec.digest.as_ref().unwrap().parse().unwrap();
    let path = store.blob_path(&digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    // `total` must re-run (param change) and load sq[a]: the corrupt blob is a miss, recomputed
    let sets = ["stages.total.value=1.0"];
    let out = env.run(&p, &sets).unwrap();
    assert!(out.summary.ok());
    assert_eq!(env.value(&p, &sets, "total"), 10.0);
    assert!(
        store.verify().unwrap().is_clean(),
        "recomputed blob restored"
    );
}

#[test]
fn failure_stops_dependents_and_keep_going_finishes_the_rest() {
    let (env, p) = env_with(
        "f.toml",
        r#"
[stages.bad]
kind = "num"
fail = true
[stages.after]
kind = "num"
inputs = { ins = "bad" }
[stages.fine]
kind = "num"
value = 2.0
sleep_ms = 50
"#,
    );
    let mut e = mpfnet::session::open(
        &p,
        &[],
        &common::registry(),
        &env.ws,
        mpfnet::Options {
            keep_going: true,
            ..Default::default()
        },
    )
    .unwrap();
    let out = mpfnet::session::run(&mut e, &env.ws, &[]).unwrap();
    assert_eq!(out.summary.failed.len(), 1);
    assert_eq!(out.summary.failed[0].0, "bad");
    assert!(out.summary.failed[0].1.contains("asked to fail"));
    let st = |n: &str| {
        out.record
            .nodes
            .iter()
            .find(|r| r.name == n)
            .unwrap()
            .clone()
    };
    assert_eq!(st("after").status, "skipped");
    assert!(st("after").error.unwrap().contains("upstream `bad` failed"));
    assert_eq!(st("fine").status, "computed");
}

fn config_error(env: &Env, text: &str) -> ConfigError {
    let p = env.write("bad.toml", text);
    let e = env.engine(&p, &[]).err().expect("must fail");
    e.downcast_ref::<ConfigError>()
        .cloned()
        .unwrap_or_else(|| panic!("not a config error: {e:#}"))
}

#[test]
fn configuration_errors_name_file_line_and_key_and_leave_cache_untouched() {
    let env = Env::new();
    let e = config_error(&env, "[stages.a]\nkind = \"num\"\nvalue = [1,\n");
    assert!(e.loc.file.ends_with("bad.toml") && e.loc.line >= 3, "{e}");
    assert!(e.message.contains("malformed TOML"), "{e}");

    let e = config_error(&env, "[stages.a]\nkind = \"num\"\n\nvalu = 1.0\n");
    assert_eq!(e.loc.line, 4, "{e}");
    assert_eq!(e.key, "stages.a.valu");
    assert!(e.message.contains("unknown parameter"), "{e}");

    let e = config_error(&env, "[stages.a]\nkind = \"num\"\nvalue = \"high\"\n");
    assert_eq!(e.loc.line, 3, "{e}");
    assert!(e.message.contains("expected a float"), "{e}");

    let e = config_error(&env, "[stages.a]\nkind = \"nope\"\n");
    assert_eq!(e.loc.line, 2, "{e}");
    assert!(e.message.contains("unknown stage kind"), "{e}");

    let e = config_error(&env, "[stages.a]\nkind = \"num\"\ninputs = { ins = \"b\" }\n[stages.b]\nkind = \"num\"\ninputs = { ins = \"a\" }\n");
    assert!(e.message.contains("cycle"), "{e}");
    assert!(e.loc.line == 3 || e.loc.line == 6, "{e}");

    let e = config_error(
        &env,
        "[stages.a]\nkind = \"num\"\ninputs = { ins = \"ghost\" }\n",
    );
    assert_eq!(e.loc.line, 3);
    assert!(e.message.contains("no stage named `ghost`"), "{e}");

    let e = config_error(&env, "bogus = 1\n[stages.a]\nkind = \"num\"\n");
    assert_eq!((e.loc.line, e.key.as_str()), (1, "bogus"), "{e}");

    assert!(
        !env.ws.cache_dir.exists(),
        "a bad pipeline must not create or touch the cache"
    );
}

#[test]
fn extends_and_set_overrides() {
    let env = Env::new();
    env.write("base.toml", "seed = 1\n[stages.a]\nkind = \"num\"\nvalue = 1.0\n[stages.b]\nkind = \"num\"\nvalue = 10.0\ninputs = { ins = \"a\" }\n");
    let child = env.write(
        "child.toml",
        "extends = \"base.toml\"\n[stages.a]\nvalue = 2.0\n",
    );
    assert_eq!(env.value(&child, &[], "b"), 12.0);
    assert_eq!(env.value(&child, &["stages.a.value=5"], "b"), 15.0);
    // the error for a bad key in the child names the child file
    let bad = env.write(
        "child2.toml",
        "extends = \"base.toml\"\n[stages.a]\nvalue = 2.0\nwrong = 1\n",
    );
    let e = env.engine(&bad, &[]).err().unwrap();
    let ce = e.downcast_ref::<ConfigError>().unwrap();
    assert!(
        ce.loc.file.ends_with("child2.toml") && ce.loc.line == 4,
        "{ce}"
    );
}

#[test]
fn seeds_are_per_node_and_reproducible() {
    const SEEDED: &str =
        "seed = 11\n[stages.n1]\nkind = \"noise\"\n[stages.n2]\nkind = \"noise\"\n";
    let (env, p) = env_with("s.toml", SEEDED);
    let a = env.value(&p, &[], "n1");
    let b = env.value(&p, &[], "n2");
    assert_ne!(a, b, "different nodes draw different seeds");
    let (env2, p2) = env_with("s.toml", SEEDED);
    assert_eq!(env2.value(&p2, &[], "n1"), a, "same pipeline, same numbers");
    assert_ne!(env2.value(&p2, &["seed=12"], "n1"), a);
}

const STEPS: &str = "[stages.long]\nkind = \"steps\"\nsteps = 60\nsleep_ms = 50\n[stages.after]\nkind = \"num\"\ninputs = { ins = \"long\" }\n";

/// Runs a pipeline in a child process (this test binary, re-entered through an ignored test).
fn child(env: &Env, pipeline: &std::path::Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--ignored",
        "--exact",
        "child_run",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("MPFNET_CHILD_PIPELINE", pipeline)
    .env("MPFNET_CHILD_CACHE", &env.ws.cache_dir)
    .env("MPFNET_CHILD_RUNS", &env.ws.runs_dir);
    c
}

#[test]
#[ignore = "entry point for child processes of other tests"]
fn child_run() {
    let pipeline = std::env::var("MPFNET_CHILD_PIPELINE").unwrap();
    let ws = mpfnet::Workspace {
        cache_dir: std::env::var("MPFNET_CHILD_CACHE").unwrap().into(),
        runs_dir: std::env::var("MPFNET_CHILD_RUNS").unwrap().into(),
    };
    let mut e = mpfnet::session::open(
        pipeline.as_ref(),
        &[],
        &common::registry(),
        &ws,
        Default::default(),
    )
    .unwrap();
    let out = mpfnet::session::run(&mut e, &ws, &[]).unwrap();
    assert!(out.summary.ok(), "failed: {:?}", out.summary.failed);
}

#[test]
fn killed_run_resumes_from_checkpoint_with_same_result() {
    let (env, p) = env_with("steps.toml", STEPS);
    let mut c = child(&env, &p).spawn().unwrap();
    // wait until a few checkpoints exist, then kill -9
    let ck = env.ws.cache_dir.join("checkpoints");
    let t0 = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if walk_count(&ck) >= 1 || t0.elapsed() > Duration::from_secs(60) {
            // a checkpoint exists: let a few more steps pass, then kill mid-way
            std::thread::sleep(Duration::from_millis(400));
            break;
        }
    }
    c.kill().unwrap();
    c.wait().unwrap();
    let out = env.run(&p, &[]).unwrap();
    assert!(out.summary.ok());
    let mut e = env.engine(&p, &[]).unwrap();
    e.prepare().unwrap();
    e.run_all().unwrap();
    let long = e.load(e.node_id("long").unwrap()).unwrap();
    assert!(
        long.meta["resumed_from"].as_u64().unwrap() > 0,
        "resumed from a checkpoint: {}",
        long.meta
    );
    let uninterrupted: f32 = (0..60u64).map(|s| (s * s) as f32).sum();
    assert_eq!(
        long.tensor("v").unwrap().as_f32().unwrap()[0],
        uninterrupted
    );
    assert!(mpfnet_cache::Store::open(&env.ws.cache_dir)
        .unwrap()
        .verify()
        .unwrap()
        .is_clean());
}

/// A write that fails half-way (here: over the file-size limit, as on a full disk) fails only
/// its node, with an error naming the blob and the OS's reason; it leaves no temp file and no
/// record, keeps what other nodes stored, and the rerun computes only what is missing.
#[test]
#[cfg(unix)]
fn failed_cache_write_fails_the_node_and_keeps_the_cache_sound() {
    // `small` stores a few hundred bytes; `big` a 4 MB tensor, over the limit below (1 MiB in
    // 512-byte blocks, 2 MiB where a shell counts KiB).
    let (env, p) = env_with(
        "big.toml",
        "[stages.small]\nkind = \"num\"\nvalue = 2\n\
         [stages.big]\nkind = \"num\"\nwidth = 1000000\ninputs = { ins = \"small\" }\n",
    );
    let c = child(&env, &p);
    // POSIX sh: ignore SIGXFSZ so that an over-limit write fails with EFBIG instead of killing
    // the process; `ulimit -f` counts 512-byte blocks.
    let mut limited = Command::new("sh");
    limited
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 2048; exec \"$0\" \"$@\"")
        .arg(c.get_program())
        .args(c.get_args())
        .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    let res = limited.output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(!res.status.success(), "the limited run succeeded: {said}");
    assert!(
        said.contains("\"big\"") && said.contains("storing blob") && said.contains("too large"),
        "the failure names the node, the blob and the reason: {said}"
    );
    let tmp = env.ws.cache_dir.join("tmp");
    assert_eq!(walk_count(&tmp), 0, "temp files left in {}", tmp.display());
    let store = mpfnet_cache::Store::open(&env.ws.cache_dir).unwrap();
    assert!(store.verify().unwrap().is_clean());

    let out = env.run(&p, &[]).unwrap();
    assert!(out.summary.ok(), "{:?}", out.summary.failed);
    assert_eq!((out.summary.computed, out.summary.cached), (1, 1));
    let e = {
        let mut e = env.engine(&p, &[]).unwrap();
        e.prepare().unwrap();
        e.run_all().unwrap();
        e
    };
    let big = e.load(e.node_id("big").unwrap()).unwrap();
    let v = big.tensor("v").unwrap().as_f32().unwrap();
    assert_eq!((v.len(), v[0], v[999_999]), (1_000_000, 2.0, 2.0));
    assert!(store.verify().unwrap().is_clean());
}

fn walk_count(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk_count(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn two_processes_share_one_cache() {
    let env = Env::new();
    let items = env.write(
        "items.txt",
        &(0..40).map(|i| format!("i{i} {i}\n")).collect::<String>(),
    );
    let text = FAN
        .replace("items.txt", &items.display().to_string())
        .replace("value = 1.0", "value = 1.0\nsleep_ms = 20");
    let p = env.write("fan.toml", &text);
    let mut a = child(&env, &p).spawn().unwrap();
    let mut b = child(&env, &p).spawn().unwrap();
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let store = mpfnet_cache::Store::open(&env.ws.cache_dir).unwrap();
    assert!(store.verify().unwrap().is_clean());
    let expect: f32 = (0..40).map(|i| 1.0 + i as f32).sum();
    assert_eq!(env.value(&p, &[], "total"), expect);
    assert_eq!(env.run(&p, &[]).unwrap().summary.computed, 0);
}
