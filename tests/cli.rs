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

#[test]
fn data_and_argument_errors_exit_2_run_failures_1() {
    let dir = tempfile::tempdir().unwrap();
    // data that is not there: the user's input, exit 2, naming the folder
    std::fs::write(
        dir.path().join("nodata.toml"),
        "[stages.ds]\nkind = \"dataset\"\nformat = \"casme2\"\nroot = \"no/such/folder\"\n",
    )
    .unwrap();
    let out = mpfnet(dir.path())
        .args(["run", "nodata.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no/such/folder"), "{err}");
    // a bundle that is not one
    std::fs::write(dir.path().join("fake.safetensors"), b"not a bundle").unwrap();
    let out = mpfnet(dir.path())
        .args(["predict", "fake.safetensors", "clip"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fake.safetensors"), "{err}");
}
