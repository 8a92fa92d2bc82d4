//! The whole method at toy size (`tests/tiny_pipeline.toml`), for the tests that run the real
//! stages.

use std::path::{Path, PathBuf};

use mpfnet::session::{self, Workspace};
use mpfnet::{Engine, Options};
use mpfnet_api::Registry;

/// The tiny pipeline's text: this checkout's `pipelines/`, the synthetic data under `data`.
pub fn text(data: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    include_str!("../tiny_pipeline.toml")
        .replace("PIPELINES", &root.join("pipelines").display().to_string())
        .replace("DATA", &data.display().to_string())
}

/// Writes `dir/tiny.toml`, its data under `dir/synth`.
pub fn write(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.toml");
    std::fs::write(&p, text(&dir.join("synth"))).unwrap();
    p
}

/// A temporary folder with the tiny pipeline, its cache and its runs, and the real stages.
pub struct Tiny {
    pub dir: tempfile::TempDir,
    pub ws: Workspace,
    pub pipeline: PathBuf,
    pub registry: Registry,
}

impl Tiny {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = write(dir.path());
        let ws = Workspace {
            cache_dir: dir.path().join("cache"),
            runs_dir: dir.path().join("runs"),
        };
        Tiny {
            dir,
            ws,
            pipeline,
            registry: mpfnet_stages::registry(),
        }
    }

    /// The engine for the pipeline with these `--set` values.
    pub fn open(&self, sets: &[&str]) -> Engine {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        session::open(
            &self.pipeline,
            &sets,
            &self.registry,
            &self.ws,
            Options::default(),
        )
        .unwrap()
    }
}
