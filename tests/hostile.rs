//! Files and pipelines from other people: nothing they say writes outside the run folder, and
//! nothing they claim sizes an allocation before it is checked. Each case must end in a clear
//! error and exit status 2, never an abort, also with the address space capped (`ulimit -v`),
//! where an allocation sized by a crafted number would fail loudly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mpfnet_stages::bundle::{tiny_example, Bundle};

mod common;

fn mpfnet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mpfnet")
}

/// `mpfnet ARGS` in `dir` with the address space capped at 2 GiB.
fn capped(dir: &Path, args: &[&str]) -> Output {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 2097152; exec '{}' {}",
            mpfnet_bin(),
            quoted.join(" ")
        ))
        .current_dir(dir)
        .env("MPFNET_CACHE", dir.join("cache"))
        .env("MPFNET_RUNS", dir.join("runs"))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A clip folder of three 16x16 PNG frames `{prefix}{k}.png`, pixel (x, y) of frame k
/// `rgb(x, y, k)`.
fn write_clip(dir: &Path, prefix: &str, rgb: impl Fn(u32, u32, u32) -> [u8; 3]) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..3 {
        let img = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb(rgb(x, y, k)));
        img.save(dir.join(format!("{prefix}{k}.png"))).unwrap();
    }
}

#[test]
fn paths_a_pipeline_controls_stay_below_the_runs_folder() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("a/b/c");
    std::fs::create_dir_all(&work).unwrap();
    let tiny = common::tiny::write(&work);
    let outside = dir.path().join("outside.safetensors");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--set".into(), "name=../../x".into()], "name"),
        (
            vec![
                "--set".into(),
                format!("name={}", dir.path().join("abs").display()),
            ],
            "name",
        ),
        (vec!["--set".into(), "name=..".into()], "name"),
        (
            vec![
                "--set".into(),
                "stages.bundle.file=../../../b.safetensors".into(),
            ],
            "stages.bundle",
        ),
        (
            vec![
                "--set".into(),
                format!("stages.bundle.file={}", outside.display()),
            ],
            "stages.bundle",
        ),
        (
            vec![
                "--set".into(),
                "stages.bundle.file=sub/model.safetensors".into(),
            ],
            "stages.bundle",
        ),
    ];
    for (sets, key) in cases {
        for cmd in ["plan", "run"] {
            let mut args = vec![cmd.to_string(), tiny.display().to_string()];
            args.extend(sets.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = capped(&work, &args);
            let t = text(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
            assert!(t.contains(key), "{args:?}: the error names `{key}`: {t}");
        }
    }
    // the same from the file itself: the error names file and line
    let named = work.join("named.toml");
    std::fs::write(
        &named,
        format!(
            "extends = \"{}\"\nname = \"../../escaped\"\n",
            tiny.display()
        ),
    )
    .unwrap();
    let o = capped(&work, &["plan", named.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("named.toml:2"), "{}", text(&o));
    // nothing was written anywhere: no cache, no runs, no data, nothing beside the work folder
    for p in ["cache", "runs", "synth"] {
        assert!(!work.join(p).exists(), "{p} created by a refused pipeline");
    }
    let mut beside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(beside, ["a"], "files written outside the work folder");
}

/// A bundle whose metadata was edited and whose checksum was then recomputed (anyone can: the
/// checksum catches accidents, not intent).
fn crafted(edit: impl Fn(&mut Bundle)) -> Vec<u8> {
    let mut b = tiny_example("c");
    edit(&mut b);
    b.to_bytes().unwrap()
}

/// A real clip to predict on (`d/clip`) and the untouched bundle (`d/good.safetensors`).
fn clip_and_bundle(d: &Path) -> (PathBuf, PathBuf) {
    let clip = d.join("clip");
    write_clip(&clip, "img", |x, y, k| {
        [(x * 16) as u8, (y * 16) as u8, (k * 40) as u8]
    });
    let bundle = d.join("good.safetensors");
    std::fs::write(&bundle, crafted(|_| {})).unwrap();
    (clip, bundle)
}

#[test]
fn crafted_bundles_are_refused_cleanly_under_a_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (clip, good) = clip_and_bundle(d);
    let o = capped(
        d,
        &["predict", good.to_str().unwrap(), clip.to_str().unwrap()],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "the untouched bundle predicts: {}",
        text(&o)
    );

    let mut header_lie = std::fs::read(&good).unwrap();
    header_lie[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let mut truncated = std::fs::read(&good).unwrap();
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "stem",
            crafted(|b| b.meta.model.stem_channels = 1 << 20),
            "width",
        ),
        (
            "embed",
            crafted(|b| b.meta.model.embed_dim = 1 << 40),
            "width",
        ),
        (
            "mixed",
            crafted(|b| b.meta.model.mixed[1][2] = 1 << 30),
            "width",
        ),
        (
            "pool",
            crafted(|b| b.meta.model.pool = [1 << 20, 1, 1]),
            "pool",
        ),
        (
            "input",
            crafted(|b| b.meta.input_shape = [5, 1 << 20, 1 << 20, 1 << 20]),
            "input shape",
        ),
        (
            "size",
            crafted(|b| b.meta.preprocess.size = 200_000),
            "size",
        ),
        (
            "frames",
            crafted(|b| b.meta.preprocess.frames = 1 << 30),
            "frames",
        ),
        (
            "classes",
            crafted(|b| b.meta.classes = (0..100_000).map(|i| i.to_string()).collect()),
            "classes",
        ),
        // within every limit, yet more variables than the file can hold
        (
            "big-but-legal",
            crafted(|b| {
                b.meta.model.stem_channels = 2048;
                b.meta.model.mixed = [[2048; 6], [2048; 6]];
            }),
            "more than the",
        ),
        (
            "bridge",
            crafted(|b| b.meta.bridge_channels = 1 << 33),
            "width",
        ),
        ("header", header_lie, "safetensors"),
        ("truncated", truncated, ""),
        ("empty", Vec::new(), ""),
    ];
    let mut tried = 0;
    for (name, bytes, expect) in cases {
        let f = d.join(format!("{name}.safetensors"));
        std::fs::write(&f, bytes).unwrap();
        let o = capped(d, &["predict", f.to_str().unwrap(), clip.to_str().unwrap()]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {t}");
        assert!(
            !t.contains("memory allocation") && !t.contains("panicked"),
            "{name}: {t}"
        );
        assert!(
            t.contains(f.to_str().unwrap()),
            "{name}: names the file: {t}"
        );
        assert!(t.contains(expect), "{name}: expected `{expect}` in: {t}");
        tried += 1;
    }
    assert_eq!(tried, 13);
}

#[test]
fn predict_reports_each_bad_clip_and_runs_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (good, bundle) = clip_and_bundle(d);
    let broken = d.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for k in 0..3 {
        std::fs::write(broken.join(format!("f{k}.png")), b"not a png").unwrap();
    }
    let (b, g, x, missing) = (
        bundle.to_str().unwrap(),
        good.to_str().unwrap(),
        broken.to_str().unwrap(),
        d.join("nope").display().to_string(),
    );
    let o = capped(d, &["predict", b, x, g, &missing]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(g), "the good clip is predicted: {t}");
    assert!(
        t.contains(&format!("{x}/f0.png")),
        "names the bad frame file: {t}"
    );
    assert!(t.contains(&missing), "names the missing clip: {t}");
    assert!(t.contains("2 of 3 clip(s) failed"), "{t}");

    // --explain pointed at a file
    let file = d.join("afile");
    std::fs::write(&file, b"x").unwrap();
    let o = capped(d, &["predict", b, g, "--explain", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not a folder"), "{}", text(&o));
}

/// A checkpoint file in the store's own framing (magic, step, length, blake3, payload), as
/// anyone who can write the cache folder could plant one.
fn framed_checkpoint(step: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = b"MPFCKPT1".to_vec();
    out.extend_from_slice(&step.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn crafted_checkpoints_and_action_records_are_refused_cleanly_under_a_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tiny = common::tiny::write(d);
    let tiny = tiny.to_str().unwrap();
    // the reference, and the keys of its training nodes
    let o = capped(d, &["run", tiny, "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let cache = d.join("cache");
    let mut training = Vec::new();
    let mut actions = Vec::new();
    for shard in std::fs::read_dir(cache.join("actions")).unwrap().flatten() {
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
            let key = format!(
                "{}{}",
                shard.file_name().to_string_lossy(),
                f.file_name().to_string_lossy().trim_end_matches(".json")
            );
            if matches!(
                v["provenance"]["kind"].as_str(),
                Some("gfe" | "afe" | "meta")
            ) {
                training.push(key);
            }
            actions.push(f.path());
        }
    }
    assert!(training.len() >= 10, "{training:?}");
    // every action record replaced by something hostile: a lie, deep nesting, garbage, nothing
    let hostile: [Vec<u8>; 4] = [
        br#"{"format":1,"output":"ff","provenance":{},"check":"x"}"#.to_vec(),
        "[".repeat(1 << 20).into_bytes(),
        vec![0xff; 4096],
        Vec::new(),
    ];
    for (k, p) in actions.iter().enumerate() {
        std::fs::write(p, &hostile[k % hostile.len()]).unwrap();
    }
    // and a checkpoint for every training node: well framed, its payload not a checkpoint
    for (k, key) in training.iter().enumerate() {
        let ck = cache.join("checkpoints").join(key);
        std::fs::create_dir_all(&ck).unwrap();
        let payload: Vec<u8> = if k % 2 == 0 {
            // a safetensors header claiming a tensor far larger than the file
            let h = br#"{"x":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}}"#;
            let mut v = (h.len() as u64).to_le_bytes().to_vec();
            v.extend_from_slice(h);
            v
        } else {
            b"not a checkpoint at all".to_vec()
        };
        std::fs::write(
            ck.join(format!("{:020}.ckpt", 1)),
            framed_checkpoint(1, &payload),
        )
        .unwrap();
    }
    let o = capped(d, &["run", tiny, "--quiet"]);
    let t = text(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "hostile records are misses, hostile checkpoints ignored: {t}"
    );
    assert!(
        !t.contains("memory allocation") && !t.contains("panicked"),
        "{t}"
    );
}
