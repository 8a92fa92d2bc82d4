//! Progress bars (indicatif): one bar over the nodes of a run, one per long node that reports
//! progress (training epochs). Hidden when disabled or when stderr is not a terminal.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    multi: Option<MultiProgress>,
    main: Mutex<Option<ProgressBar>>,
    nodes: Mutex<HashMap<usize, ProgressBar>>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        let multi =
            enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Progress {
            multi,
            main: Mutex::new(None),
            nodes: Mutex::new(HashMap::new()),
        }
    }

    pub fn begin(&self, total: u64) {
        let Some(m) = &self.multi else { return };
        let bar = m.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} nodes {bar:30} {pos}/{len} [{elapsed_precise} eta {eta}] {msg}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        *self.main.lock().unwrap() = Some(bar);
    }

    pub fn done(&self, name: &str, cached: bool) {
        if let Some(b) = self.main.lock().unwrap().as_ref() {
            b.inc(1);
            b.set_message(format!("{} {name}", if cached { "cached" } else { "done" }));
        }
    }

    pub fn node(&self, id: usize, name: &str, done: u64, total: u64, msg: &str) {
        let Some(m) = &self.multi else {
            tracing::debug!("{name}: {done}/{total} {msg}");
            return;
        };
        let mut nodes = self.nodes.lock().unwrap();
        let bar = nodes.entry(id).or_insert_with(|| {
            let b = m.add(ProgressBar::new(total));
            b.set_style(
                ProgressStyle::with_template("  {prefix:30!} {bar:20} {pos}/{len} eta {eta} {msg}")
                    .unwrap()
                    .progress_chars("=> "),
            );
            b.set_prefix(name.to_string());
            b
        });
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(msg.to_string());
    }

    pub fn finish_node(&self, id: usize) {
        if let Some(b) = self.nodes.lock().unwrap().remove(&id) {
            b.finish_and_clear();
        }
    }

    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    pub fn end(&self) {
        if let Some(b) = self.main.lock().unwrap().take() {
            b.finish_and_clear();
        }
    }
}
