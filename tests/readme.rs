//! Every pipeline snippet of the README (its ```toml blocks) is a valid pipeline: loaded as a
//! file in `pipelines/` would be (its `extends` resolved from there) and checked against the
//! real stage registry, so the README cannot drift from what the code accepts.

use std::path::Path;

fn toml_blocks(md: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, line) in md.lines().enumerate() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => cur = Some((i + 1, String::new())),
            (Some(_), l) if l.starts_with("```") => out.push(cur.take().unwrap()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_readme_pipeline_snippet_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let md = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = toml_blocks(&md);
    assert!(!blocks.is_empty(), "the README shows at least one pipeline");
    let reg = mpfnet_stages::registry();
    let dir = tempfile::tempdir().unwrap();
    for (line, text) in blocks {
        // as if saved in pipelines/: `extends` is relative to that folder
        let pipelines = root.join("pipelines");
        let text: String = text
            .lines()
            .map(|l| match l.starts_with("extends") {
                // every quoted path of the line (one, or a list)
                true => l
                    .split('"')
                    .enumerate()
                    .map(|(i, part)| match i % 2 {
                        1 => format!("{}/{part}", pipelines.display()),
                        _ => part.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\""),
                false => l.to_string(),
            })
            .map(|l| l + "\n")
            .collect();
        let path = dir.path().join(format!("readme_line_{line}.toml"));
        std::fs::write(&path, &text).unwrap();
        // FlowNet2's checkpoint cannot be fetched here: a stand-in of the same names and shapes
        let sets: Vec<String> = if text.contains("flow_backend = \"flownet2\"") {
            let ck = root.join("stages/tests/fixtures/flownet2/shapes_full.pth.tar");
            ["features", "features_mag"]
                .iter()
                .map(|s| format!("stages.{s}.flownet2.weights={}", ck.display()))
                .collect()
        } else {
            Vec::new()
        };
        if let Err(e) = mpfnet::pipeline::load(&path, &sets, &reg) {
            panic!("README.md:{line}: the pipeline snippet does not load: {e:#}\n{text}");
        }
    }
}
