//! The `mpfnet` binary: configuration errors exit with status 2, name file and line, and leave
//! the cache untouched; `stages` lists the domain's kinds.

use std::process::Command;

fn mpfnet(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpfnet"));
    c.current_dir(dir)
        .env("MPFNET_CACHE", dir.join("cache"))
        .env("MPFNET_RUNS", dir.join("runs"));
    c
}

#[test]
fn bad_pipelines_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("malformed.toml", "[stages.a]\nkind = \"folds\"\nn_val = [1,\n", "malformed.toml:3"),
        ("unknown.toml", "[stages.ds]\nkind = \"dataset\"\nformatt = \"casme2\"\n", "unknown.toml:3"),
        ("kind.toml", "[stages.ds]\nkind = \"datasett\"\n", "kind.toml:2"),
        ("mistyped.toml", "[stages.ds]\nkind = \"dataset\"\n[stages.f]\nkind = \"folds\"\ninputs = { dataset = \"ds\" }\nn_val = \"two\"\n", "mistyped.toml:6"),
        ("cycle.toml", "[stages.f]\nkind = \"folds\"\ninputs = { dataset = \"g\" }\n[stages.g]\nkind = \"folds\"\ninputs = { dataset = \"f\" }\n", "cycle"),
    ];
    for (name, text, expect) in cases {
        std::fs::write(dir.path().join(name), text).unwrap();
        for cmd in ["run", "plan"] {
            let out = mpfnet(dir.path()).args([cmd, name]).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {name}: {err}");
            assert!(
                err.contains(expect),
                "{cmd} {name}: expected `{expect}` in: {err}"
            );
        }
    }
    assert!(
        !dir.path().join("cache").exists(),
        "config errors must not create the cache"
    );
}

#[test]
fn stages_lists_the_method() {
    let dir = tempfile::tempdir().unwrap();
    let out = mpfnet(dir.path()).arg("stages").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for k in [
        "dataset", "folds", "balance", "features", "gfe", "afe", "meta", "evaluate", "report",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(k)),
            "{k} missing from:\n{text}"
        );
    }
}
