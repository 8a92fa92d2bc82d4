//! The scheduler: runs a set of target nodes and the pending nodes they depend on, on tokio.
//! Light nodes share a semaphore of `--jobs`; heavy nodes (training) hold the device one at a
//! time. A failure skips what depends on it and, without `--keep-going`, stops scheduling;
//! Ctrl-C stops scheduling (running nodes finish), a second Ctrl-C exits at once.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::store_io::NodeOutput;
use super::{ExecSummary, Node, NodeState, Shared};

/// How a scheduled node ended.
enum Outcome {
    /// Never started: the run was stopping when its turn came.
    NotStarted,
    Done(NodeOutput),
    Failed(anyhow::Error),
}

/// The pending closure of the targets, with what waits on what.
struct Wave {
    nodes: Vec<Node>,
    members: BTreeSet<usize>,
    /// Per node, how many of its inputs in the wave are not done yet.
    waiting: HashMap<usize, usize>,
    dependents: HashMap<usize, Vec<usize>>,
    ready: VecDeque<usize>,
}

impl Wave {
    fn new(shared: &Shared, targets: Vec<usize>) -> Wave {
        let nodes = shared.nodes.read().unwrap().clone();
        let mut members = BTreeSet::new();
        let mut stack = targets;
        {
            let states = shared.states.lock().unwrap();
            while let Some(n) = stack.pop() {
                if !matches!(states[n], NodeState::Pending) || !members.insert(n) {
                    continue;
                }
                stack.extend(nodes[n].deps());
            }
        }
        let mut waiting = HashMap::new();
        let mut dependents: HashMap<usize, Vec<usize>> = HashMap::new();
        for &n in &members {
            let deps: BTreeSet<usize> = nodes[n]
                .deps()
                .into_iter()
                .filter(|d| members.contains(d))
                .collect();
            waiting.insert(n, deps.len());
            for d in deps {
                dependents.entry(d).or_default().push(n);
            }
        }
        let ready = members
            .iter()
            .copied()
            .filter(|n| waiting[n] == 0)
            .collect();
        Wave {
            nodes,
            members,
            waiting,
            dependents,
            ready,
        }
    }

    fn dependents_of(&self, n: usize) -> &[usize] {
        self.dependents.get(&n).map(|v| v.as_slice()).unwrap_or(&[])
    }
}

struct Scheduler {
    shared: Arc<Shared>,
    light: Arc<Semaphore>,
    heavy: Arc<Semaphore>,
    /// Set on a failure (without `--keep-going`) or on Ctrl-C: start nothing more.
    stop: Arc<AtomicBool>,
    tasks: JoinSet<(usize, Outcome)>,
    running: usize,
    summary: ExecSummary,
}

pub(super) async fn execute(shared: Arc<Shared>, targets: Vec<usize>) -> Result<ExecSummary> {
    let mut wave = Wave::new(&shared, targets);
    let mut run = Scheduler {
        light: Arc::new(Semaphore::new(shared.opts.jobs.max(1))),
        heavy: Arc::new(Semaphore::new(1)),
        stop: Arc::new(AtomicBool::new(false)),
        tasks: JoinSet::new(),
        running: 0,
        summary: ExecSummary::default(),
        shared,
    };
    run.shared.progress.begin(wave.members.len() as u64);
    loop {
        while let Some(n) = wave.ready.pop_front() {
            run.spawn(n, &wave.nodes[n]);
        }
        if run.running == 0 {
            break;
        }
        let joined = tokio::select! {
            j = run.tasks.join_next() => j,
            _ = tokio::signal::ctrl_c() => {
                run.interrupted();
                continue;
            }
        };
        let Some(joined) = joined else { break };
        run.running -= 1;
        match joined.expect("task panicked") {
            (n, Outcome::NotStarted) => run.not_started(n),
            (n, Outcome::Done(out)) => run.done(n, out, &mut wave),
            (n, Outcome::Failed(e)) => run.failed(n, e, &wave),
        }
    }
    Ok(run.finish(&wave))
}

impl Scheduler {
    fn spawn(&mut self, n: usize, node: &Node) {
        let permits = if self.shared.stage(node).heavy() {
            self.heavy.clone()
        } else {
            self.light.clone()
        };
        let (shared, stop) = (self.shared.clone(), self.stop.clone());
        self.running += 1;
        self.tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            if stop.load(Ordering::Relaxed) || shared.cancel.load(Ordering::Relaxed) {
                return (n, Outcome::NotStarted);
            }
            let outcome = match tokio::task::spawn_blocking(move || shared.run_node(n)).await {
                Ok(Ok(out)) => Outcome::Done(out),
                Ok(Err(e)) => Outcome::Failed(e),
                Err(e) => Outcome::Failed(anyhow!("worker thread failed: {e}")),
            };
            (n, outcome)
        });
    }

    fn interrupted(&self) {
        if self.shared.cancel.swap(true, Ordering::Relaxed) {
            // second Ctrl-C: leave now; finished nodes and checkpoints are on disk
            self.shared
                .progress
                .println("interrupted again: exiting; run the same command to resume");
            std::process::exit(130);
        }
        self.stop.store(true, Ordering::Relaxed);
        self.shared.progress.println("interrupted: letting running nodes finish (Ctrl-C again to exit now; training resumes from its last checkpoint)");
    }

    fn set_state(&self, n: usize, state: NodeState) {
        self.shared.states.lock().unwrap()[n] = state;
    }

    fn not_started(&mut self, n: usize) {
        self.set_state(
            n,
            NodeState::Skipped {
                reason: "run stopped".into(),
            },
        );
        self.summary.skipped += 1;
    }

    /// Records the output and readies the dependents whose inputs are now all done.
    fn done(&mut self, n: usize, out: NodeOutput, wave: &mut Wave) {
        let name = &wave.nodes[n].name;
        if out.cached {
            self.summary.cached += 1;
        } else {
            self.summary.computed += 1;
            tracing::info!("computed {name} in {:.2}s", out.secs);
        }
        self.set_state(
            n,
            NodeState::Done {
                key: out.key.to_string(),
                digest: out.digest.to_string(),
                cached: out.cached,
                duration_s: out.secs,
            },
        );
        self.shared.progress.done(name, out.cached);
        for d in wave.dependents_of(n).to_vec() {
            let w = wave.waiting.get_mut(&d).unwrap();
            *w -= 1;
            if *w == 0 && matches!(self.shared.states.lock().unwrap()[d], NodeState::Pending) {
                wave.ready.push_back(d);
            }
        }
    }

    /// Records the failure and skips everything downstream, naming the cause.
    fn failed(&mut self, n: usize, e: anyhow::Error, wave: &Wave) {
        let name = &wave.nodes[n].name;
        let msg = format!("{e:#}");
        if !self.shared.cancel.load(Ordering::Relaxed) {
            self.shared
                .progress
                .println(&format!("FAILED {name}: {msg}"));
        }
        tracing::error!("node {name} failed: {msg}");
        self.summary.failed.push((name.clone(), msg.clone()));
        self.summary.failed_on_input += mpfnet_api::is_bad_input(&e) as usize;
        self.set_state(n, NodeState::Failed { error: msg });
        let mut stack = wave.dependents_of(n).to_vec();
        let mut states = self.shared.states.lock().unwrap();
        while let Some(d) = stack.pop() {
            if matches!(states[d], NodeState::Pending) {
                states[d] = NodeState::Skipped {
                    reason: format!("upstream `{name}` failed"),
                };
                self.summary.skipped += 1;
                stack.extend_from_slice(wave.dependents_of(d));
            }
        }
        if !self.shared.opts.keep_going {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    /// The summary, once nothing runs: counts corrected for outputs recomputed on load, and
    /// the nodes never reached because the run stopped marked skipped.
    fn finish(mut self, wave: &Wave) -> ExecSummary {
        let shared = &self.shared;
        let summary = &mut self.summary;
        summary.cancelled = shared.cancel.load(Ordering::Relaxed);
        let again = shared.recomputed_on_load.swap(0, Ordering::Relaxed);
        summary.cached = summary.cached.saturating_sub(again);
        summary.computed += again;
        let stopped = self.stop.load(Ordering::Relaxed) || summary.cancelled;
        let mut states = shared.states.lock().unwrap();
        for &n in &wave.members {
            if stopped && matches!(states[n], NodeState::Pending) {
                states[n] = NodeState::Skipped {
                    reason: "run stopped before it".into(),
                };
                summary.skipped += 1;
            }
        }
        drop(states);
        shared.progress.end();
        self.summary
    }
}
