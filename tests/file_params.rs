//! A stage parameter naming an external file (`Stage::file_params`, e.g. FlowNet2's weights)
//! keys the node on the file's content: the same file at another path is a cache hit, other
//! content recomputes.

use anyhow::Result;
use mpfnet::engine::Options;
use mpfnet::session::{self, Workspace};
use mpfnet_api::{Array, Artifact, Ctx, InputDecl, Registry, Stage};
use serde_json::{json, Value};

/// v = the number written in the file `weights`.
struct Weighted;
impl Stage for Weighted {
    fn kind(&self) -> &'static str {
        "weighted"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn code(&self) -> String {
        "weighted-code".into()
    }
    fn about(&self) -> &'static str {
        "toy: the number in a file"
    }
    fn defaults(&self) -> Value {
        json!({ "weights": "", "scale": 1.0 })
    }
    fn inputs(&self) -> &'static [InputDecl] {
        &[]
    }
    fn file_params(&self, _: &Value) -> Vec<String> {
        vec!["/weights".into()]
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact> {
        let path = ctx.params["weights"].as_str().unwrap();
        let v: f32 = std::fs::read_to_string(path)?.trim().parse()?;
        let s = ctx.params["scale"].as_f64().unwrap() as f32;
        let mut a = Artifact::new();
        a.insert("v", Array::f32(vec![1], vec![v * s])?);
        Ok(a)
    }
}

#[test]
fn a_file_parameter_keys_on_content_not_path() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace {
        cache_dir: dir.path().join("cache"),
        runs_dir: dir.path().join("runs"),
    };
    let mut reg = Registry::new();
    reg.add(Weighted);
    let a = dir.path().join("a.bin");
    let b = dir.path().join("moved/b.bin");
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    std::fs::write(&a, "2.5").unwrap();
    let p = dir.path().join("w.toml");
    std::fs::write(
        &p,
        format!(
            "report = [\"w\"]\n[stages.w]\nkind = \"weighted\"\nweights = \"{}\"\n",
            a.display()
        ),
    )
    .unwrap();
    let run = |sets: &[String]| -> (usize, f32) {
        let opts = Options {
            jobs: 1,
            ..Default::default()
        };
        let mut e = session::open(&p, sets, &reg, &ws, opts).unwrap();
        let out = session::run(&mut e, &ws, &[]).unwrap();
        assert!(out.summary.ok());
        let id = e.node_id("w").unwrap();
        let v = e.load(id).unwrap().tensor("v").unwrap().as_f32().unwrap()[0];
        (out.summary.computed, v)
    };
    assert_eq!(run(&[]), (1, 2.5));
    assert_eq!(run(&[]), (0, 2.5), "unchanged: cached");
    std::fs::copy(&a, &b).unwrap();
    let at_b = vec![format!("stages.w.weights={}", b.display())];
    assert_eq!(
        run(&at_b),
        (0, 2.5),
        "the same content at another path: cached"
    );
    std::fs::write(&b, "7").unwrap();
    assert_eq!(run(&at_b), (1, 7.0), "other content: recomputed");
    // other parameters still key as usual
    let mut scaled = at_b.clone();
    scaled.push("stages.w.scale=2.0".into());
    assert_eq!(run(&scaled), (1, 14.0));
}
