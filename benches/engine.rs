//! Engine and cache benchmark: a plain `fn main()` (no criterion).
//!
//! Builds a generated pipeline with the *shape* of CASME II (256 samples, 3 per-sample stages, a
//! (sample, phi) axis of 768 pairs, 26 LOSO folds x 3 per-fold stages that gather every sample,
//! two global stages: 1,619 nodes) out of toy stages doing trivial arithmetic on 8-value tensors,
//! and times, median of 5 each:
//!
//! - the first full run (fresh cache each repetition),
//! - `plan` on the fully cached pipeline (open + prepare + plan),
//! - a no-op rerun (open + run, everything cached; target < 0.3 s), with a breakdown,
//! - a rerun after `--set stages.afe.lr=...` (one parameter of one per-fold stage),
//! - reverting it (everything restored from the cache),
//!
//! then the cache's throughput: blake3, put_blob / get_blob on 64 MiB, and `file_digest` on 2,000
//! unchanged small files.
//!
//! Run: `cargo bench --bench engine` (set `MPFNET_BENCH_REPS` to change the repetitions).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use mpfnet::engine::{Engine, Options};
use mpfnet::plan::{self, Status};
use mpfnet::session::{self, Workspace};
use mpfnet_api::{Array, Artifact, Handle, Input, InputDecl, Registry};
use mpfnet_cache::{Digest, Store};
use serde_json::{json, Value};

#[path = "../tests/common/toy.rs"]
mod toy;
use toy::{axis_from_lines, Toy};

// ---------------------------------------------------------------------------------------------
// Shape

const SAMPLES: usize = 256;
const PHIS: usize = 3;
const FOLDS: usize = 26;
const PER_SAMPLE: [&str; 3] = ["prep", "flow", "features"];
const PER_FOLD: [&str; 3] = ["gfe", "afe", "meta"];
const AXIS_SOURCES: usize = 3; // dataset, folds, balance
const GLOBALS: usize = 2; // eval, report
const TOTAL_NODES: usize =
    AXIS_SOURCES + SAMPLES * PER_SAMPLE.len() + SAMPLES * PHIS + FOLDS * PER_FOLD.len() + GLOBALS;
/// Nodes recomputed when a parameter of `afe` changes: afe[*], meta[*], eval, report.
const AFE_DOWNSTREAM: usize = FOLDS * 2 + GLOBALS;
const WIDTH: usize = 8;

// ---------------------------------------------------------------------------------------------
// Toy stages

fn vec_of(art: &Artifact) -> Result<Vec<f32>> {
    Ok(art.tensor("x")?.as_f32()?.to_vec())
}

fn out(x: Vec<f32>, meta: Value) -> Artifact {
    let mut a = Artifact::with_meta(meta);
    a.insert("x", Array::f32(vec![x.len()], x).unwrap());
    a
}

/// Volatile: reads `path` (lines "id value") and declares one axis item per line.
fn axis_source() -> Toy {
    const I: &[InputDecl] = &[InputDecl::optional(
        "after",
        "ordering only (e.g. folds after the dataset)",
    )];
    Toy::new("axis", "bench: axis from a text file", |ctx| {
        let path = ctx.params["path"].as_str().unwrap();
        let digest = ctx.services.file_digest(Path::new(path))?;
        let axis = axis_from_lines(&std::fs::read_to_string(path)?)?;
        let mut a = out(vec![axis.len() as f32], json!({"file": digest}));
        a.axis = Some(axis);
        Ok(a)
    })
    .code("bench-axis")
    .defaults(json!({"path": ""}))
    .inputs(I)
    .volatile()
}

/// x += the input's x, elementwise.
fn add_input(x: &mut [f32], h: &Handle) -> Result<()> {
    for (a, b) in x.iter_mut().zip(vec_of(&h.load()?)?) {
        *a += b;
    }
    Ok(())
}

/// Per item: x[i] = scale * (item value + i) + offset + prev.x[i].
fn per_item() -> Toy {
    const I: &[InputDecl] = &[InputDecl::optional(
        "prev",
        "the same item's previous stage",
    )];
    Toy::new("item", "bench: per-item arithmetic", |ctx| {
        let v = ctx.item()?.attrs["value"].as_f64().unwrap_or(0.0) as f32;
        let scale = ctx.params["scale"].as_f64().unwrap() as f32;
        let offset = ctx.params["offset"].as_f64().unwrap() as f32;
        let mut x: Vec<f32> = (0..WIDTH)
            .map(|i| scale * (v + i as f32) + offset)
            .collect();
        if let Some(p) = ctx.inputs.get("prev") {
            add_input(&mut x, p.one()?)?;
        }
        Ok(out(x, Value::Null))
    })
    .code("bench-item")
    .defaults(json!({"scale": 1.0, "offset": 0.0}))
    .inputs(I)
}

/// Per fold: gathers all items (`stage[*]`); x = lr * sum of the training items (those not held
/// out, i % FOLDS != fold) + prev.x.
fn per_fold() -> Toy {
    const I: &[InputDecl] = &[
        InputDecl::required("items", "all per-sample outputs"),
        InputDecl::optional("extra", "more gathered outputs"),
        InputDecl::optional("prev", "the same fold's previous stage"),
    ];
    Toy::new("fold", "bench: per-fold gather", |ctx| {
        let fold = ctx.item()?.attrs["value"].as_f64().unwrap() as usize;
        let lr = ctx.params["lr"].as_f64().unwrap() as f32;
        let mut x = vec![0f32; WIDTH];
        let mut n = 0usize;
        for name in ["items", "extra"] {
            let Some(inp) = ctx.inputs.get(name) else {
                continue;
            };
            for (i, (_, h)) in inp.many()?.iter().enumerate() {
                if i % FOLDS != fold {
                    add_input(&mut x, h)?;
                    n += 1;
                }
            }
        }
        for a in x.iter_mut() {
            *a *= lr / n.max(1) as f32;
        }
        if let Some(p) = ctx.inputs.get("prev") {
            add_input(&mut x, p.one()?)?;
        }
        Ok(out(x, json!({"train": n})))
    })
    .code("bench-fold")
    .defaults(json!({"lr": 0.1, "epochs": 1}))
    .inputs(I)
}

/// Global: mean of whatever it is given.
fn summary() -> Toy {
    const I: &[InputDecl] = &[InputDecl::required("ins", "anything with a tensor x")];
    Toy::new("summary", "bench: mean", |ctx| {
        let handles: Vec<_> = match ctx.input("ins")? {
            Input::One(h) => vec![h.clone()],
            Input::Many(v) => v.iter().map(|(_, h)| h.clone()).collect(),
        };
        let mut x = vec![0f32; WIDTH];
        for h in &handles {
            for (a, b) in x.iter_mut().zip(vec_of(&h.load()?)?) {
                *a += b / handles.len() as f32;
            }
        }
        let mean = x.iter().sum::<f32>() / WIDTH as f32;
        Ok(out(
            x,
            json!({"summary": format!("mean {mean:.4}"), "metrics": {"mean": mean}}),
        ))
    })
    .code("bench-summary")
    .inputs(I)
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.add(axis_source())
        .add(per_item())
        .add(per_fold())
        .add(summary());
    r
}

// ---------------------------------------------------------------------------------------------
// The generated pipeline

struct Bench {
    _dir: tempfile::TempDir,
    ws: Workspace,
    pipeline: PathBuf,
}

fn setup() -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_axis_files(root);
    let pipeline = root.join("casme2_shape.toml");
    std::fs::write(&pipeline, pipeline_toml(root)).unwrap();
    let ws = Workspace {
        cache_dir: root.join("cache"),
        runs_dir: root.join("runs"),
    };
    Bench {
        _dir: dir,
        ws,
        pipeline,
    }
}

/// The axes, as the axis sources read them: samples, folds and (sample, phi) pairs.
fn write_axis_files(root: &Path) {
    let samples: String = (0..SAMPLES)
        .map(|i| format!("sub{:02}_EP{i:03} {}\n", i % 26, i as f64 * 0.01))
        .collect();
    let folds: String = (0..FOLDS).map(|f| format!("sub{f:02} {f}\n")).collect();
    let pairs: String = (0..SAMPLES)
        .flat_map(|i| {
            (0..PHIS).map(move |p| {
                format!(
                    "sub{:02}_EP{i:03}@phi{p} {}\n",
                    i % 26,
                    i as f64 * 0.01 + p as f64
                )
            })
        })
        .collect();
    std::fs::write(root.join("samples.txt"), samples).unwrap();
    std::fs::write(root.join("folds.txt"), folds).unwrap();
    std::fs::write(root.join("pairs.txt"), pairs).unwrap();
}

/// The pipeline: three axis sources, per-sample stages, per-fold stages, two globals.
fn pipeline_toml(root: &Path) -> String {
    let p = |n: &str| root.join(n).display().to_string();
    include_str!("casme2_shape.toml")
        .replace("{samples}", &p("samples.txt"))
        .replace("{folds}", &p("folds.txt"))
        .replace("{pairs}", &p("pairs.txt"))
}

impl Bench {
    fn open(&self, sets: &[String]) -> Result<Engine> {
        session::open(
            &self.pipeline,
            sets,
            &registry(),
            &self.ws,
            Options {
                jobs: 2,
                ..Default::default()
            },
        )
    }
    /// open + run (+ drop, as a process exit would): (seconds, nodes, computed, cached).
    fn run(&self, sets: &[String]) -> Result<(f64, usize, usize, usize)> {
        let t = Instant::now();
        let mut e = self.open(sets)?;
        let o = session::run(&mut e, &self.ws, &[])?;
        drop(e);
        let secs = t.elapsed().as_secs_f64();
        if !o.summary.ok() {
            bail!("run failed: {:?}", o.summary.failed);
        }
        Ok((
            secs,
            o.record.nodes.len(),
            o.summary.computed,
            o.summary.cached,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement helpers

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_s(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:8.3} s ")
    } else {
        format!("{:8.1} ms", s * 1e3)
    }
}

struct Row {
    what: String,
    times: Vec<f64>,
    nodes: usize,
    computed: usize,
    note: String,
}

fn print_rows(rows: &[Row]) {
    println!(
        "{:<47} {:>11} {:>11} {:>11} {:>6} {:>8}  ",
        "case", "median", "min", "max", "nodes", "computed"
    );
    for r in rows {
        let min = r.times.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = r.times.iter().cloned().fold(0.0, f64::max);
        println!(
            "{:<47} {:>11} {:>11} {:>11} {:>6} {:>8}  {}",
            r.what,
            fmt_s(median(r.times.clone())),
            fmt_s(min),
            fmt_s(max),
            r.nodes,
            r.computed,
            r.note
        );
    }
}

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

// ---------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let reps: usize = std::env::var("MPFNET_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!("mpfnet engine benchmark: {TOTAL_NODES} nodes ({SAMPLES} samples x {} per-sample stages, {} (sample, phi) pairs, {FOLDS} folds x {} per-fold stages, {AXIS_SOURCES} axis sources, {GLOBALS} globals); median of {reps}", PER_SAMPLE.len(), SAMPLES * PHIS, PER_FOLD.len());
    println!();

    // profiling aid: `MPFNET_BENCH_NOOP_ONLY=N` runs the pipeline once, then N no-op reruns, and
    // exits (e.g. under `perf record`)
    if let Some(n) = std::env::var("MPFNET_BENCH_NOOP_ONLY")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    {
        return noop_only(n);
    }
    let (b, first) = first_runs(reps)?;
    let mut rows = vec![first, plan_row(&b, reps)?, noop_row(&b, reps)?];
    rows.extend(change_rows(&b, reps)?);
    rows.extend(noop_breakdown(&b, reps)?);
    print_rows(&rows);
    print_record_sizes(&b)?;
    println!();
    cache_throughput(reps)
}

fn noop_only(n: usize) -> Result<()> {
    let b = setup();
    b.run(&[])?;
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(b.run(&[])?.2, 0);
    }
    println!(
        "{n} no-op reruns: {} each",
        fmt_s(t.elapsed().as_secs_f64() / n.max(1) as f64).trim()
    );
    Ok(())
}

/// A row of the whole pipeline, nothing computed.
fn cached_row(what: &str, times: Vec<f64>, note: String) -> Row {
    Row {
        what: what.into(),
        times,
        nodes: TOTAL_NODES,
        computed: 0,
        note,
    }
}

/// Case 1: the first full run, on a fresh cache each time; the last one's setup is kept.
fn first_runs(reps: usize) -> Result<(Bench, Row)> {
    let mut firsts = Vec::new();
    let mut bench = None;
    for _ in 0..reps {
        let b = setup();
        let (s, nodes, computed, _) = b.run(&[])?;
        assert_eq!(nodes, TOTAL_NODES, "node count");
        assert_eq!(computed, TOTAL_NODES, "a first run computes every node");
        firsts.push(s);
        bench = Some(b);
    }
    let row = Row {
        what: "first full run (fresh cache)".into(),
        times: firsts,
        nodes: TOTAL_NODES,
        computed: TOTAL_NODES,
        note: String::new(),
    };
    Ok((bench.unwrap(), row))
}

/// Case 2: `plan` on the fully cached pipeline: open + prepare + plan (with the previous run
/// record, as `mpfnet plan` loads it).
fn plan_row(b: &Bench, reps: usize) -> Result<Row> {
    let mut plans = Vec::new();
    let mut plan_note = String::new();
    for _ in 0..reps {
        let t = Instant::now();
        let mut e = b.open(&[])?;
        e.prepare()?;
        let prev = mpfnet::runs::latest(&b.ws.runs_dir, &e.pipeline().name);
        let p = plan::plan(&e, prev.as_ref())?;
        drop(e);
        plans.push(t.elapsed().as_secs_f64());
        assert_eq!(p.entries.len(), TOTAL_NODES);
        assert_eq!(p.to_run().count(), 0, "fully cached: nothing to run");
        assert_eq!(p.count(&Status::Cached), TOTAL_NODES - AXIS_SOURCES);
        assert_eq!(p.count(&Status::RanDuringPlanning), AXIS_SOURCES);
        plan_note = format!(
            "{} cached, {} axis sources checked",
            p.count(&Status::Cached),
            AXIS_SOURCES
        );
    }
    Ok(cached_row(
        "plan, fully cached (open+prepare+plan)",
        plans,
        plan_note,
    ))
}

/// Case 3: a no-op rerun.
fn noop_row(b: &Bench, reps: usize) -> Result<Row> {
    let mut noops = Vec::new();
    for _ in 0..reps {
        let (s, nodes, computed, cached) = b.run(&[])?;
        assert_eq!(nodes, TOTAL_NODES);
        assert_eq!(computed, 0, "a no-op rerun computes nothing");
        assert_eq!(cached, TOTAL_NODES);
        noops.push(s);
    }
    let noop_median = median(noops.clone());
    let verdict = if noop_median < 0.3 { "OK" } else { "MISSED" };
    Ok(cached_row(
        "no-op rerun (open+run, all cached)",
        noops,
        format!("target < 300 ms: {verdict}"),
    ))
}

/// Cases 4 and 5: change one parameter of one per-fold stage, then revert (a new value each
/// repetition, else the second repetition would find the change cached).
fn change_rows(b: &Bench, reps: usize) -> Result<[Row; 2]> {
    let mut changes = Vec::new();
    let mut reverts = Vec::new();
    for r in 0..reps {
        let set = vec![format!("stages.afe.lr={:.1}", 0.2 + 0.1 * r as f64)];
        if r == 0 {
            check_change_plan(b, &set)?;
        }
        let (s, nodes, computed, _) = b.run(&set)?;
        assert_eq!(nodes, TOTAL_NODES);
        assert_eq!(
            computed, AFE_DOWNSTREAM,
            "afe[*] and what is downstream of it"
        );
        changes.push(s);
        let (s, _, computed, _) = b.run(&[])?;
        assert_eq!(computed, 0, "reverting restores everything from the cache");
        reverts.push(s);
    }
    Ok([
        Row {
            what: "rerun after --set stages.afe.lr=<new>".into(),
            times: changes,
            nodes: TOTAL_NODES,
            computed: AFE_DOWNSTREAM,
            note: format!("afe[{FOLDS}] + meta[{FOLDS}] + eval + report"),
        },
        cached_row("revert (restored from cache)", reverts, String::new()),
    ])
}

/// What plan says about a changed `afe` parameter.
fn check_change_plan(b: &Bench, set: &[String]) -> Result<()> {
    let mut e = b.open(set)?;
    e.prepare()?;
    let p = plan::plan(
        &e,
        mpfnet::runs::latest(&b.ws.runs_dir, "casme2_shape").as_ref(),
    )?;
    assert_eq!(p.count(&Status::Run), FOLDS, "afe[*] runs");
    assert_eq!(
        p.count(&Status::RunIfInputsChange),
        AFE_DOWNSTREAM - FOLDS,
        "meta[*], eval, report below it"
    );
    Ok(())
}

/// Where the no-op time goes: open, prepare, run_all, the whole session, and the run record
/// (loading the previous one, as plan does, and writing one, as every run does).
fn noop_breakdown(b: &Bench, reps: usize) -> Result<Vec<Row>> {
    let (mut t_open, mut t_prep, mut t_runall, mut t_session) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let mut e = b.open(&[])?;
        t_open.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        e.prepare()?;
        t_prep.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let s = e.run_all()?;
        t_runall.push(t.elapsed().as_secs_f64());
        assert_eq!(s.computed, 0);
        drop(e);
        let mut e = b.open(&[])?;
        let t = Instant::now();
        session::run(&mut e, &b.ws, &[])?;
        t_session.push(t.elapsed().as_secs_f64());
    }
    let (mut t_latest, mut t_write) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let rec = mpfnet::runs::latest(&b.ws.runs_dir, "casme2_shape").expect("a run record");
        t_latest.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        mpfnet::runs::write(&b.ws.runs_dir, &rec, &Default::default())?;
        t_write.push(t.elapsed().as_secs_f64());
    }
    let (mp, mr, ms) = (
        median(t_prep.clone()),
        median(t_runall.clone()),
        median(t_session.clone()),
    );
    let mw = median(t_write.clone());
    let session_note = format!(
        "so record() ~ {}, runs::write ~ {}",
        fmt_s(ms - mp - mr - mw).trim(),
        fmt_s(mw).trim()
    );
    Ok(vec![
        cached_row(
            "  no-op: session::open",
            t_open,
            "load TOML + Store::open + Engine::new".into(),
        ),
        cached_row(
            "  no-op: engine.prepare()",
            t_prep,
            "expand + run 3 volatile axis sources".into(),
        ),
        cached_row(
            "  no-op: engine.run_all()",
            t_runall,
            "key + action lookup per node".into(),
        ),
        cached_row(
            "  no-op: session::run (prepare+run_all+record)",
            t_session,
            session_note,
        ),
        cached_row("  runs::write (the run record)", t_write, String::new()),
        cached_row(
            "  runs::latest (read previous record, plan)",
            t_latest,
            String::new(),
        ),
    ])
}

/// How many run records were written and how large they and the action records are.
fn print_record_sizes(b: &Bench) -> Result<()> {
    let runs = std::fs::read_dir(b.ws.runs_dir.join("casme2_shape"))?.count();
    let run_json = mpfnet::runs::latest(&b.ws.runs_dir, "casme2_shape")
        .map(|r| serde_json::to_string_pretty(&r).unwrap().len())
        .unwrap_or(0);
    println!(
        "(run records written: {runs}; run.json {:.1} KiB each)",
        run_json as f64 / 1024.0
    );
    let (mut n_act, mut act_bytes, mut act_max, mut max_name) = (0usize, 0u64, 0u64, String::new());
    for shard in std::fs::read_dir(b.ws.cache_dir.join("actions"))? {
        for f in std::fs::read_dir(shard?.path())? {
            let f = f?;
            let len = f.metadata()?.len();
            n_act += 1;
            act_bytes += len;
            if len > act_max {
                act_max = len;
                let text = std::fs::read_to_string(f.path())?;
                let v: Value = serde_json::from_str(&text)?;
                max_name = v["provenance"]["node"].as_str().unwrap_or("?").to_string();
            }
        }
    }
    println!(
        "(action records: {n_act} files, {:.1} MiB in all, largest {:.1} KiB ({max_name}); each lookup parses and re-hashes one)",
        act_bytes as f64 / (1 << 20) as f64,
        act_max as f64 / 1024.0
    );
    Ok(())
}

/// Median seconds of `reps` calls of `f` (given the repetition's index).
fn median_time(reps: usize, f: &mut dyn FnMut(usize)) -> f64 {
    let mut v = Vec::new();
    for r in 0..reps {
        let t = Instant::now();
        f(r);
        v.push(t.elapsed().as_secs_f64());
    }
    median(v)
}

/// A throughput row: GB/s and the time.
fn rate(what: &str, bytes: usize, secs: f64) -> (String, String) {
    (
        what.into(),
        format!("{:6.2} GB/s  ({})", gbps(bytes, secs), fmt_s(secs).trim()),
    )
}

/// A per-file row: microseconds per file and the time.
fn per_file(what: String, files: usize, secs: f64) -> (String, String) {
    (
        what,
        format!(
            "{:8.1} us/file ({})",
            secs * 1e6 / files as f64,
            fmt_s(secs).trim()
        ),
    )
}

fn cache_throughput(reps: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("cache"))?;
    let mut rows = blob_rows(&store, reps);
    let (file_rows, st) = file_digest_rows(
        store,
        &dir.path().join("cache"),
        &dir.path().join("files"),
        reps,
    )?;
    rows.extend(file_rows);
    println!("{:<46} throughput (median)", "cache");
    for (a, b) in rows {
        println!("{a:<46} {b}");
    }
    println!(
        "(stat cache after the in-process passes: {} hits, {} misses, {} entries)",
        st.hits, st.misses, st.entries
    );
    Ok(())
}

/// Hashing, put_blob and get_blob on 64 MiB.
fn blob_rows(store: &Store, reps: usize) -> Vec<(String, String)> {
    const SIZE: usize = 64 << 20;
    let mut buf = vec![0u8; SIZE];
    let mut state = 0x9e3779b97f4a7c15u64;
    for chunk in buf.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let mut rows = Vec::new();
    let h1 = median_time(reps, &mut |_| {
        std::hint::black_box(blake3::hash(std::hint::black_box(&buf)));
    });
    rows.push(rate("blake3::hash, 1 thread", SIZE, h1));
    let h2 = median_time(reps, &mut |_| {
        std::hint::black_box(Digest::of(std::hint::black_box(&buf)));
    });
    rows.push(rate("Digest::of (rayon above threshold)", SIZE, h2));
    // new blobs: change the first bytes so each repetition writes a new file (fsync + rename)
    let mut digests = Vec::new();
    let put_new = median_time(reps, &mut |r| {
        buf[..8].copy_from_slice(&(r as u64 + 1).to_le_bytes());
        digests.push(store.put_blob(&buf).unwrap());
    });
    rows.push(rate(
        "put_blob 64 MiB, new (hash+write+fsync)",
        SIZE,
        put_new,
    ));
    let put_again = median_time(reps, &mut |_| {
        store.put_blob(&buf).unwrap();
    });
    rows.push(rate("put_blob 64 MiB, already stored", SIZE, put_again));
    let get = median_time(reps, &mut |r| {
        let bytes = store.get_blob(&digests[r]).unwrap().unwrap();
        assert_eq!(bytes.len(), SIZE);
    });
    rows.push(rate(
        "get_blob 64 MiB (read + re-hash, page cache)",
        SIZE,
        get,
    ));
    rows
}

/// `file_digest` on 2,000 unchanged small files: first time, again, batched, and from a new
/// `Store` (which `store` becomes, saving its stat cache). Also the stat cache's counters.
fn file_digest_rows(
    store: Store,
    cache: &Path,
    fdir: &Path,
    reps: usize,
) -> Result<(Vec<(String, String)>, mpfnet_cache::StatCacheStats)> {
    const FILES: usize = 2000;
    std::fs::create_dir_all(fdir)?;
    let paths: Vec<PathBuf> = (0..FILES)
        .map(|i| {
            let p = fdir.join(format!("img{i:05}.jpg"));
            std::fs::write(&p, vec![(i % 251) as u8; 2048 + i % 512]).unwrap();
            p
        })
        .collect();
    // beyond the stat cache's racy window (2 s): the files are then "unchanged" and cacheable
    std::thread::sleep(Duration::from_millis(2200));
    let t = Instant::now();
    for p in &paths {
        store.file_digest(p)?;
    }
    let cold = t.elapsed().as_secs_f64();
    let mut rows = vec![per_file(
        format!("file_digest x{FILES}, first time (hash)"),
        FILES,
        cold,
    )];
    let warm = median_time(reps, &mut |_| {
        for p in &paths {
            store.file_digest(p).unwrap();
        }
    });
    rows.push(per_file(
        format!("file_digest x{FILES}, unchanged (same Store)"),
        FILES,
        warm,
    ));
    let batch = median_time(reps, &mut |_| {
        store.file_digests(&paths).unwrap();
    });
    rows.push(per_file(
        format!("file_digests x{FILES} batch, unchanged"),
        FILES,
        batch,
    ));
    let st = store.stat_cache_stats();
    drop(store); // saves the stat cache
    let reopen = median_time(reps, &mut |_| {
        let s = Store::open(cache).unwrap();
        for p in &paths {
            s.file_digest(p).unwrap();
        }
        let st = s.stat_cache_stats();
        assert_eq!(
            st.misses, 0,
            "unchanged files are answered from the saved stat cache"
        );
    });
    rows.push(per_file(
        format!("open Store + file_digest x{FILES} (new process)"),
        FILES,
        reopen,
    ));
    Ok((rows, st))
}
