//! Store behaviour: atomicity under concurrency (threads and processes),
//! corruption handling, stat cache, checkpoints, gc.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use mpfnet_cache::{ActionRecord, CacheError, Digest, GcOptions, KeyHasher, Store, StoreOptions};
use serde_json::json;

/// Deterministic pseudo-random bytes (xorshift64*), `len` of them.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// A store in a new temporary folder (kept while the folder lives).
fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    (dir, s)
}

fn no_racy() -> StoreOptions {
    StoreOptions {
        stat_racy_window: Duration::ZERO,
    }
}

fn set_mtime(path: &Path, ago: Duration) {
    let f = File::open(path).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

fn make_writable(path: &Path) {
    let mut p = fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    p.set_readonly(false);
    fs::set_permissions(path, p).unwrap();
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

#[test]
fn open_creates_layout_and_refuses_newer_format() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    drop(Store::open(&root).unwrap());
    for sub in mpfnet_cache::AREAS {
        assert!(root.join(sub).is_dir(), "{sub} missing");
    }
    assert_eq!(
        fs::read_to_string(root.join("FORMAT")).unwrap().trim(),
        "mpfnet-cache-format 1"
    );
    drop(Store::open(&root).unwrap()); // reopen fine

    fs::write(root.join("FORMAT"), "mpfnet-cache-format 7\n").unwrap();
    let err = Store::open(&root)
        .err()
        .expect("newer format must be refused");
    assert!(matches!(
        err.downcast_ref::<CacheError>(),
        Some(CacheError::NewerFormat {
            found: 7,
            supported: 1,
            ..
        })
    ));
    assert!(err.to_string().contains("format version 7"), "{err}");

    fs::write(root.join("FORMAT"), "something else").unwrap();
    let err = Store::open(&root).err().unwrap();
    assert!(matches!(
        err.downcast_ref::<CacheError>(),
        Some(CacheError::BadFormatFile { .. })
    ));
}

#[test]
fn blob_round_trip_is_idempotent_and_read_only() {
    let (dir, s) = fresh_store();
    let data = bytes(1, 100_000);
    let d = s.put_blob(&data).unwrap();
    assert_eq!(d, Digest::of(&data));
    assert_eq!(d.to_hex(), blake3::hash(&data).to_hex().as_str());
    let p = s.blob_path(&d);
    assert!(p.starts_with(dir.path().join("blobs").join(&d.to_hex()[..2])));
    assert!(fs::metadata(&p).unwrap().permissions().readonly());
    // Second put: same digest, existing file kept, mtime refreshed.
    set_mtime(&p, Duration::from_secs(7200));
    let ino_before = fs::metadata(&p).unwrap();
    assert_eq!(s.put_blob(&data).unwrap(), d);
    let after = fs::metadata(&p).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(ino_before.ino(), after.ino(), "existing blob was rewritten");
    }
    let age = SystemTime::now()
        .duration_since(after.modified().unwrap())
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(60),
        "mtime not refreshed: {age:?}"
    );
    assert!(s.has_blob(&d));
    assert_eq!(s.get_blob(&d).unwrap().unwrap(), data);
    let empty = s.put_blob(b"").unwrap();
    assert_eq!(s.get_blob(&empty).unwrap().unwrap(), b"");
    let missing = Digest::of(b"never stored");
    assert!(!s.has_blob(&missing));
    assert_eq!(s.get_blob(&missing).unwrap(), None);
    assert_eq!(count_files(&dir.path().join("tmp")), 0);
}

#[test]
fn corrupt_blob_is_a_miss_and_quarantined() {
    let (dir, s) = fresh_store();
    let data = bytes(2, 5000);
    let d = s.put_blob(&data).unwrap();
    let p = s.blob_path(&d);
    make_writable(&p);
    let mut bad = data.clone();
    bad[1234] ^= 0x10; // one bit flip, same size
    fs::write(&p, &bad).unwrap();
    assert_eq!(s.get_blob(&d).unwrap(), None, "corrupt bytes returned");
    assert!(!p.exists(), "corrupt blob left in place");
    assert!(!s.has_blob(&d));
    assert_eq!(s.verified_blob_path(&d).unwrap(), None);
    let q: Vec<_> = fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(q.len(), 1);
    assert_eq!(fs::read(&q[0]).unwrap(), bad);
    // Storing again heals it.
    assert_eq!(s.put_blob(&data).unwrap(), d);
    assert_eq!(s.get_blob(&d).unwrap().unwrap(), data);
    assert_eq!(s.verified_blob_path(&d).unwrap(), Some(p.clone()));

    // A truncated blob (size differs) is rewritten by put_blob, not trusted.
    make_writable(&p);
    fs::write(&p, &data[..100]).unwrap();
    assert_eq!(s.put_blob(&data).unwrap(), d);
    assert_eq!(s.get_blob(&d).unwrap().unwrap(), data);

    // verified_blob_path detects corruption in place too.
    make_writable(&p);
    fs::write(&p, &bad).unwrap();
    assert_eq!(s.verified_blob_path(&d).unwrap(), None);
    assert!(!p.exists());
    assert_eq!(count_files(&dir.path().join("quarantine")), 2);
}

#[test]
fn actions_round_trip_and_damage_is_a_miss() {
    let (dir, s) = fresh_store();
    let out = s.put_blob(b"result").unwrap();
    let key = KeyHasher::new("test-action").str("node").u64(1).digest();
    let rec = ActionRecord {
        output: out,
        provenance: json!({"node": "fold-3", "params": {"lr": 0.01, "z": [1, 2]}, "a": null}),
    };
    assert_eq!(s.get_action(&key).unwrap(), None);
    s.put_action(&key, &rec).unwrap();
    assert_eq!(s.get_action(&key).unwrap(), Some(rec.clone()));
    assert_eq!(s.list_actions().unwrap(), vec![key]);

    // Output not stored: refused.
    let ghost = ActionRecord {
        output: Digest::of(b"ghost"),
        provenance: json!({}),
    };
    assert!(s.put_action(&Digest::of(b"k2"), &ghost).is_err());

    // Output blob deleted: miss, record untouched.
    let key2 = KeyHasher::new("test-action").u64(2).digest();
    let out2 = s.put_blob(b"second").unwrap();
    s.put_action(
        &key2,
        &ActionRecord {
            output: out2,
            provenance: json!("p"),
        },
    )
    .unwrap();
    fs::remove_file(s.blob_path(&out2)).unwrap();
    assert_eq!(s.get_action(&key2).unwrap(), None);
    assert_eq!(s.list_actions().unwrap().len(), 2);

    // Truncated action file: miss + quarantined.
    let apath = dir
        .path()
        .join("actions")
        .join(&key.to_hex()[..2])
        .join(format!("{}.json", &key.to_hex()[2..]));
    let text = fs::read(&apath).unwrap();
    fs::write(&apath, &text[..text.len() / 2]).unwrap();
    assert_eq!(s.get_action(&key).unwrap(), None);
    assert!(!apath.exists());
    assert_eq!(count_files(&dir.path().join("quarantine")), 1);

    // Valid JSON with a tampered provenance: self-check fails, miss.
    s.put_action(&key, &rec).unwrap();
    let text = fs::read_to_string(&apath).unwrap();
    fs::write(&apath, text.replace("fold-3", "fold-4")).unwrap();
    assert_eq!(s.get_action(&key).unwrap(), None);

    // Replace and remove.
    s.put_action(&key, &rec).unwrap();
    assert!(s.remove_action(&key).unwrap());
    assert!(!s.remove_action(&key).unwrap());
    assert_eq!(s.get_action(&key).unwrap(), None);
}

#[test]
fn resolve_prefix_unique_ambiguous_missing() {
    let (_dir, s) = fresh_store();
    let digests: Vec<Digest> = (0..40)
        .map(|i| s.put_blob(&bytes(100 + i, 10)).unwrap())
        .collect();
    let key = KeyHasher::new("x").digest();
    s.put_action(
        &key,
        &ActionRecord {
            output: digests[0],
            provenance: json!(null),
        },
    )
    .unwrap();
    for d in digests.iter().chain([&key]) {
        assert_eq!(s.resolve_prefix(&d.to_hex()[..12]).unwrap(), *d);
        assert_eq!(s.resolve_prefix(&d.to_hex().to_uppercase()).unwrap(), *d);
    }
    // 41 digests over 16 first digits: some digit is shared.
    let mut counts = [0; 16];
    for d in digests.iter().chain([&key]) {
        counts[(d.0[0] >> 4) as usize] += 1;
    }
    let shared = counts.iter().position(|&c| c > 1).unwrap();
    let err = s.resolve_prefix(&format!("{shared:x}")).unwrap_err();
    assert!(matches!(
        err.downcast_ref::<CacheError>(),
        Some(CacheError::PrefixAmbiguous { count, .. }) if *count == counts[shared]
    ));
    let unused = (0..=255u8)
        .map(|b| format!("{b:02x}"))
        .find(|p| {
            !digests
                .iter()
                .chain([&key])
                .any(|d| d.to_hex().starts_with(p))
        })
        .unwrap();
    assert!(matches!(
        s.resolve_prefix(&unused)
            .unwrap_err()
            .downcast_ref::<CacheError>(),
        Some(CacheError::PrefixNotFound(_))
    ));
    for bad in ["", "xyz", &"a".repeat(65)] {
        assert!(matches!(
            s.resolve_prefix(bad)
                .unwrap_err()
                .downcast_ref::<CacheError>(),
            Some(CacheError::BadPrefix(_))
        ));
    }
}

#[test]
fn checkpoints_latest_skips_corrupt_and_keeps_two() {
    let (dir, s) = fresh_store();
    let node = KeyHasher::new("node").str("train").digest();
    assert_eq!(s.latest_checkpoint(&node).unwrap(), None);
    for step in [1u64, 5, 10] {
        s.put_checkpoint(&node, step, &bytes(step, 3000)).unwrap();
    }
    assert_eq!(
        s.latest_checkpoint(&node).unwrap(),
        Some((10, bytes(10, 3000)))
    );
    let cdir = dir.path().join("checkpoints").join(node.to_hex());
    assert_eq!(count_files(&cdir), 2, "only the two newest are kept");

    // Damage the newest: falls back to step 5, damaged one quarantined.
    let newest = cdir.join(format!("{:020}.ckpt", 10));
    let mut b = fs::read(&newest).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    fs::write(&newest, &b).unwrap();
    assert_eq!(
        s.latest_checkpoint(&node).unwrap(),
        Some((5, bytes(5, 3000)))
    );
    assert!(!newest.exists());
    // A truncated one too.
    let five = cdir.join(format!("{:020}.ckpt", 5));
    let b = fs::read(&five).unwrap();
    fs::write(&five, &b[..20]).unwrap();
    assert_eq!(s.latest_checkpoint(&node).unwrap(), None);
    assert_eq!(count_files(&dir.path().join("quarantine")), 2);

    s.put_checkpoint(&node, 11, b"x").unwrap();
    let other = Digest::of(b"other node");
    s.put_checkpoint(&other, 3, b"y").unwrap();
    s.clear_checkpoints(&node).unwrap();
    assert_eq!(s.latest_checkpoint(&node).unwrap(), None);
    assert_eq!(
        s.latest_checkpoint(&other).unwrap(),
        Some((3, b"y".to_vec()))
    );
    s.clear_checkpoints(&node).unwrap(); // idempotent
}

#[test]
fn stat_cache_rehashes_only_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let f = dir.path().join("input.bin");
    fs::write(&f, bytes(7, 50_000)).unwrap();
    set_mtime(&f, Duration::from_secs(100));
    let d0 = Digest::of(&bytes(7, 50_000));
    {
        let s = Store::open_with(&root, no_racy()).unwrap();
        assert_eq!(s.file_digest(&f).unwrap(), d0);
        assert_eq!(s.stat_cache_stats().misses, 1);
        // Unchanged, also through another spelling of the same path.
        let other = dir.path().join(".").join("input.bin");
        assert_eq!(s.file_digest(&other).unwrap(), d0);
        assert_eq!(s.file_digest(&f).unwrap(), d0);
        let st = s.stat_cache_stats();
        assert_eq!((st.hits, st.misses, st.entries), (2, 1, 1));
    }
    // Persisted: a new store handle (new process) does not re-read.
    {
        let s = Store::open_with(&root, no_racy()).unwrap();
        assert_eq!(s.file_digest(&f).unwrap(), d0);
        assert_eq!(
            (s.stat_cache_stats().hits, s.stat_cache_stats().misses),
            (1, 0)
        );

        // Same size, new content, different mtime: re-hashed.
        fs::write(&f, bytes(8, 50_000)).unwrap();
        set_mtime(&f, Duration::from_secs(50));
        let d1 = s.file_digest(&f).unwrap();
        assert_eq!(d1, Digest::of(&bytes(8, 50_000)));
        assert_eq!(s.stat_cache_stats().misses, 1);

        // Content changed and mtime restored to the cached one (as `touch -r`
        // or `rsync -t` do): ctime still moves, so it is re-hashed.
        let before = fs::metadata(&f).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&f, bytes(9, 50_000)).unwrap();
        File::open(&f).unwrap().set_modified(before).unwrap();
        assert_eq!(s.file_digest(&f).unwrap(), Digest::of(&bytes(9, 50_000)));
        assert_eq!(s.stat_cache_stats().misses, 2);

        // A copy: new inode, re-hashed once, same digest (no false rerun).
        let copy = dir.path().join("copy.bin");
        fs::copy(&f, &copy).unwrap();
        assert_eq!(s.file_digest(&copy).unwrap(), Digest::of(&bytes(9, 50_000)));
        assert_eq!(s.stat_cache_stats().misses, 3);

        // Batch form, in order, errors name the file.
        let ds = s
            .file_digests(&[copy.clone(), f.clone(), copy.clone()])
            .unwrap();
        assert_eq!(ds, vec![Digest::of(&bytes(9, 50_000)); 3]);
        let err = s.file_digest(&dir.path().join("nope")).unwrap_err();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
        assert!(
            s.file_digest(dir.path()).is_err(),
            "a directory has no digest"
        );
    }
}

#[test]
fn stat_cache_does_not_trust_racy_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("store")).unwrap(); // default 2 s window
    let f = dir.path().join("fresh.txt");
    fs::write(&f, b"aaaa").unwrap();
    assert_eq!(s.file_digest(&f).unwrap(), Digest::of(b"aaaa"));
    // Rewritten within the same instant, same size: must not be a stale hit.
    fs::write(&f, b"bbbb").unwrap();
    assert_eq!(s.file_digest(&f).unwrap(), Digest::of(b"bbbb"));
    assert_eq!(s.stat_cache_stats().hits, 0);
    assert_eq!(s.stat_cache_stats().entries, 0);
}

#[test]
fn gc_keeps_what_is_asked_and_respects_grace() {
    let (dir, s) = fresh_store();
    let mut keys = Vec::new();
    let mut outs = Vec::new();
    for i in 0..6u64 {
        let out = s.put_blob(&bytes(200 + i, 1000)).unwrap();
        let key = KeyHasher::new("gc").u64(i).digest();
        s.put_action(
            &key,
            &ActionRecord {
                output: out,
                provenance: json!(i),
            },
        )
        .unwrap();
        s.put_checkpoint(&key, 1, b"ckpt").unwrap();
        keys.push(key);
        outs.push(out);
    }
    let loose = s.put_blob(&bytes(300, 4096)).unwrap();
    let pinned = s.put_blob(&bytes(301, 10)).unwrap();
    fs::write(dir.path().join("tmp").join("w-killed-writer"), b"half").unwrap();
    let keep: HashSet<Digest> = keys[..2].iter().copied().collect();

    // Everything is young: nothing is removed under the default 1 h grace.
    let rep = s.gc(&keep, &GcOptions::default()).unwrap();
    assert_eq!(rep.actions_removed + rep.blobs_removed + rep.tmp_removed, 0);
    assert_eq!(rep.checkpoints_removed, 0);
    assert_eq!(rep.actions_kept, 2);
    // 4 actions, 4 checkpoint dirs, 2 loose blobs, 1 temp file.
    assert_eq!(rep.young_spared, 11, "{rep:?}");
    assert_eq!(s.list_actions().unwrap().len(), 6);

    // Age everything past the grace period except action 5 and its blob.
    let old = Duration::from_secs(7200);
    for sub in ["blobs", "actions", "checkpoints"] {
        for shard in fs::read_dir(dir.path().join(sub)).unwrap() {
            let shard = shard.unwrap().path();
            for f in fs::read_dir(&shard).unwrap() {
                set_mtime(&f.unwrap().path(), old);
            }
            set_mtime(&shard, old);
        }
    }
    set_mtime(&dir.path().join("tmp").join("w-killed-writer"), old);
    s.put_blob(&bytes(205, 1000)).unwrap(); // refresh: a concurrent writer's re-put
    let a5 = dir
        .path()
        .join("actions")
        .join(&keys[5].to_hex()[..2])
        .join(format!("{}.json", &keys[5].to_hex()[2..]));
    set_mtime(&a5, Duration::ZERO);

    let opts = GcOptions {
        keep_blobs: [pinned].into_iter().collect(),
        ..GcOptions::default()
    };
    let dry = s
        .gc(
            &keep,
            &GcOptions {
                dry_run: true,
                ..opts.clone()
            },
        )
        .unwrap();
    assert_eq!(s.list_actions().unwrap().len(), 6, "dry run deleted");
    let rep = s.gc(&keep, &opts).unwrap();
    assert_eq!(dry.bytes_freed, rep.bytes_freed);
    assert_eq!(rep.actions_removed, 3, "{rep:?}");
    assert_eq!(rep.blobs_removed, 4, "{rep:?}"); // outs 2,3,4 + loose
    assert_eq!(rep.tmp_removed, 1);
    assert_eq!(rep.checkpoints_removed, 4); // keys 2..=5: old, not kept
    assert!(rep.bytes_freed >= 3 * 1000 + 4096);
    let mut left = s.list_actions().unwrap();
    left.sort();
    let mut want = vec![keys[0], keys[1], keys[5]];
    want.sort();
    assert_eq!(left, want);
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(s.has_blob(out), [0, 1, 5].contains(&i), "blob {i}");
    }
    assert!(!s.has_blob(&loose));
    assert!(s.has_blob(&pinned));
    for k in &keep {
        assert!(s.get_action(k).unwrap().is_some());
        assert!(s.latest_checkpoint(k).unwrap().is_some());
    }
    assert!(s.latest_checkpoint(&keys[3]).unwrap().is_none());
    assert!(s.verify().unwrap().is_clean());
    let du = s.du().unwrap();
    assert_eq!(du.blobs.files, 4); // outs 0, 1, 5 + pinned
    assert_eq!(du.actions.files, 3);
    assert_eq!(du.tmp.files, 0);
    assert!(du.total_bytes() >= du.blobs.bytes);
}

#[test]
fn verify_reports_and_quarantines_damage() {
    let (_dir, s) = fresh_store();
    let good = s.put_blob(&bytes(400, 3_000_000)).unwrap();
    let bad = s.put_blob(&bytes(401, 2000)).unwrap();
    let k_good = Digest::of(b"kg");
    let k_bad = Digest::of(b"kb");
    s.put_action(
        &k_good,
        &ActionRecord {
            output: good,
            provenance: json!(1),
        },
    )
    .unwrap();
    s.put_action(
        &k_bad,
        &ActionRecord {
            output: bad,
            provenance: json!(2),
        },
    )
    .unwrap();
    s.put_checkpoint(&k_good, 1, b"ok").unwrap();
    let clean = s.verify().unwrap();
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(
        (clean.blobs_ok, clean.actions_ok, clean.checkpoints_ok),
        (2, 2, 1)
    );
    assert_eq!(clean.bytes_checked, 3_002_000);

    let p = s.blob_path(&bad);
    make_writable(&p);
    fs::write(&p, bytes(999, 2000)).unwrap();
    let rep = s.verify().unwrap();
    assert!(!rep.is_clean());
    assert_eq!(rep.blobs_corrupt, vec![bad]);
    assert_eq!(rep.actions_missing_output, vec![k_bad]);
    assert_eq!(rep.blobs_ok, 1);
    assert!(!p.exists());
    assert_eq!(s.get_action(&k_bad).unwrap(), None);
    assert!(s.get_action(&k_good).unwrap().is_some());
}

/// The workload each writer (thread or process) runs against one store:
/// shared blobs and actions that every writer writes (same content), plus
/// its own. Returns what it wrote.
fn workload(s: &Store, worker: u64) -> Vec<(Digest, Digest, Vec<u8>)> {
    let mut written = Vec::new();
    for i in 0..30u64 {
        // Shared: sizes from 1 B to ~600 kB so renames race on real writes.
        let data = bytes(10_000 + i, 1 + (i as usize * 20_011) % 600_000);
        let key = KeyHasher::new("shared").u64(i).digest();
        let out = s.put_blob(&data).unwrap();
        s.put_action(
            &key,
            &ActionRecord {
                output: out,
                provenance: json!({"i": i}),
            },
        )
        .unwrap();
        assert_eq!(s.get_blob(&out).unwrap().as_deref(), Some(&data[..]));
        written.push((key, out, data));
        // Own.
        let data = bytes(worker * 1000 + i, 1000 + i as usize * 3000);
        let key = KeyHasher::new("own").u64(worker).u64(i).digest();
        let out = s.put_blob(&data).unwrap();
        s.put_action(
            &key,
            &ActionRecord {
                output: out,
                provenance: json!(worker),
            },
        )
        .unwrap();
        written.push((key, out, data));
        let node = KeyHasher::new("shared-node").digest();
        s.put_checkpoint(&node, worker * 100 + i, &bytes(i, 777))
            .unwrap();
        assert!(s.latest_checkpoint(&node).unwrap().is_some());
    }
    written
}

fn check_all_present(s: &Store, written: &[(Digest, Digest, Vec<u8>)]) {
    for (key, out, data) in written {
        let rec = s.get_action(key).unwrap().expect("action lost");
        assert_eq!(rec.output, *out);
        assert_eq!(
            s.get_blob(out).unwrap().as_deref(),
            Some(&data[..]),
            "blob lost"
        );
    }
}

#[test]
fn concurrent_threads_lose_nothing() {
    let (dir, s) = fresh_store();
    let written: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8u64)
            .map(|w| {
                let s = &s;
                sc.spawn(move || workload(s, w))
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    check_all_present(&s, &written);
    let rep = s.verify().unwrap();
    assert!(rep.is_clean(), "{rep:?}");
    assert_eq!(rep.actions_ok, 30 + 8 * 30);
    assert_eq!(rep.blobs_ok, 30 + 8 * 30);
    assert_eq!(count_files(&dir.path().join("tmp")), 0);
    assert_eq!(count_files(&dir.path().join("quarantine")), 0);
}

const CHILD_ROOT: &str = "MPFNET_CACHE_TEST_CHILD_ROOT";
const CHILD_ID: &str = "MPFNET_CACHE_TEST_CHILD_ID";
const CHILD_FILES: &str = "MPFNET_CACHE_TEST_CHILD_FILES";

fn input_files(dir: &Path) -> Vec<PathBuf> {
    (0..50).map(|i| dir.join(format!("in{i:03}.dat"))).collect()
}

/// This test binary, set to run only the ignored test `name` as worker `id` on the store at
/// `root` (the child's side reads CHILD_ROOT and CHILD_ID).
fn child_test(name: &str, root: &Path, id: u64) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", name, "--test-threads=1"])
        .env(CHILD_ROOT, root)
        .env(CHILD_ID, id.to_string());
    cmd
}

/// The store folder and id that the test `parent` gave this child process; `None` (saying so)
/// when run on its own.
fn child_env(parent: &str) -> Option<(String, u64)> {
    let Ok(root) = std::env::var(CHILD_ROOT) else {
        eprintln!("helper: does nothing unless spawned by {parent}");
        return None;
    };
    Some((root, std::env::var(CHILD_ID).unwrap().parse().unwrap()))
}

/// Not a test by itself: the body of each child process spawned by
/// `concurrent_processes_lose_nothing` (it needs the child's environment).
#[test]
#[ignore = "child-process helper for concurrent_processes_lose_nothing"]
fn child_writer_process() {
    let Some((root, id)) = child_env("concurrent_processes_lose_nothing") else {
        return;
    };
    let files = PathBuf::from(std::env::var(CHILD_FILES).unwrap());
    let s = Store::open_with(Path::new(&root), no_racy()).unwrap();
    let written: Vec<_> = std::thread::scope(|sc| {
        let a = sc.spawn(|| workload(&s, 100 + 2 * id));
        let b = sc.spawn(|| workload(&s, 101 + 2 * id));
        let mut w = a.join().unwrap();
        w.extend(b.join().unwrap());
        w
    });
    check_all_present(&s, &written);
    // Each process hashes a different half of the inputs into the shared stat cache.
    let inputs = input_files(&files);
    let mine: Vec<PathBuf> = inputs
        .iter()
        .skip(id as usize % 2)
        .step_by(2)
        .cloned()
        .collect();
    s.file_digests(&mine).unwrap();
    s.flush().unwrap();
}

#[test]
fn concurrent_processes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let files = dir.path().join("inputs");
    fs::create_dir_all(&files).unwrap();
    for (i, f) in input_files(&files).iter().enumerate() {
        fs::write(f, bytes(5000 + i as u64, 2000)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20)); // ctime strictly in the past
    let procs: Vec<_> = (0..4u64)
        .map(|id| {
            child_test("child_writer_process", &root, id)
                .env(CHILD_FILES, &files)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // The parent writes at the same time.
    let s = Store::open_with(&root, no_racy()).unwrap();
    let mut written = workload(&s, 7);
    for p in procs {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "child ran no test"
        );
    }
    for id in 0..4u64 {
        for w in [100 + 2 * id, 101 + 2 * id] {
            written.extend(workload_expected(w));
        }
    }
    check_all_present(&s, &written);
    let rep = s.verify().unwrap();
    assert!(rep.is_clean(), "{rep:?}");
    assert_eq!(rep.actions_ok, 30 + 9 * 30);
    assert_eq!(rep.blobs_ok, 30 + 9 * 30);
    assert_eq!(count_files(&root.join("tmp")), 0, "temp files left behind");

    // The stat cache snapshots of all children merged: a fresh handle hashes nothing.
    let s2 = Store::open_with(&root, no_racy()).unwrap();
    let inputs = input_files(&files);
    let ds = s2.file_digests(&inputs).unwrap();
    for (i, d) in ds.iter().enumerate() {
        assert_eq!(*d, Digest::of(&bytes(5000 + i as u64, 2000)));
    }
    let st = s2.stat_cache_stats();
    assert_eq!((st.hits, st.misses), (50, 0), "{st:?}");
    assert!(count_files(&root.join("stat")) <= 8);
}

/// What `workload(_, worker)` writes, without writing it.
fn workload_expected(worker: u64) -> Vec<(Digest, Digest, Vec<u8>)> {
    (0..30u64)
        .map(|i| {
            let data = bytes(worker * 1000 + i, 1000 + i as usize * 3000);
            (
                KeyHasher::new("own").u64(worker).u64(i).digest(),
                Digest::of(&data),
                data,
            )
        })
        .collect()
}

#[test]
fn put_file_streams_into_a_blob() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("store")).unwrap();
    let f = dir.path().join("big.bin");
    let data = bytes(77, 3 * 1024 * 1024 + 17);
    fs::write(&f, &data).unwrap();
    let d = s.put_file(&f).unwrap();
    assert_eq!(d, Digest::of(&data));
    assert_eq!(s.get_blob(&d).unwrap().unwrap(), data);
    assert_eq!(s.put_file(&f).unwrap(), d); // present: no second copy
    assert_eq!(s.put_blob(&data).unwrap(), d);
    assert_eq!(count_files(&dir.path().join("store").join("tmp")), 0);
    assert!(s.put_file(&dir.path().join("missing")).is_err());
}

/// Not a test by itself: a writer that runs until `killed_writer_leaves_no_torn_files` kills it.
#[test]
#[ignore = "child-process helper for killed_writer_leaves_no_torn_files"]
fn child_endless_writer() {
    let Some((root, seed)) = child_env("killed_writer_leaves_no_torn_files") else {
        return;
    };
    let s = Store::open(Path::new(&root)).unwrap();
    // Large writes dominate the loop, so a kill most likely lands mid-write.
    let mut buf = bytes(seed, 8 << 20);
    for i in 0u64.. {
        buf[..8].copy_from_slice(&(seed * 1_000_000 + i).to_le_bytes());
        let out = s.put_blob(&buf).unwrap();
        if i % 8 == 1 {
            s.put_checkpoint(&Digest::of(b"long node"), i, &buf)
                .unwrap();
        }
        if i % 4 == 0 {
            let key = KeyHasher::new("killed").u64(seed).u64(i).digest();
            let rec = ActionRecord {
                output: out,
                provenance: json!(i),
            };
            s.put_action(&key, &rec).unwrap();
        }
    }
}

#[test]
fn killed_writer_leaves_no_torn_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let s = Store::open(&root).unwrap();
    // Five writers, each SIGKILLed mid-flight at a different moment.
    for (seed, delay_ms) in [(1u64, 3u64), (2, 11), (3, 23), (4, 41), (5, 61)] {
        let mut child = child_test("child_endless_writer", &root, seed)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t = std::time::Instant::now();
        let before = s.du().unwrap().blobs.files;
        while s.du().unwrap().blobs.files < before + 3 && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    let rep = s.verify().unwrap();
    assert!(rep.is_clean(), "torn or missing data after a kill: {rep:?}");
    assert!(rep.blobs_ok >= 15 && rep.actions_ok >= 5, "{rep:?}");
    let (step, payload) = s
        .latest_checkpoint(&Digest::of(b"long node"))
        .unwrap()
        .expect("checkpoint lost");
    let tag = u64::from_le_bytes(payload[..8].try_into().unwrap());
    assert_eq!(tag % 1_000_000, step);
    assert_eq!(
        &payload[8..],
        &bytes(tag / 1_000_000, 8 << 20)[8..],
        "step {step}"
    );
    for key in s.list_actions().unwrap() {
        let rec = s
            .get_action(&key)
            .unwrap()
            .expect("action without intact output");
        let blob = s.get_blob(&rec.output).unwrap().unwrap();
        let i = rec.provenance.as_u64().unwrap();
        assert_eq!(
            u64::from_le_bytes(blob[..8].try_into().unwrap()) % 1_000_000,
            i
        );
    }
    // Whatever half-written temp file a kill left is reclaimed by gc.
    let keep: HashSet<Digest> = s.list_actions().unwrap().into_iter().collect();
    let opts = GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    };
    s.gc(&keep, &opts).unwrap();
    assert_eq!(count_files(&root.join("tmp")), 0);
    assert_eq!(s.list_actions().unwrap().len(), keep.len());
}

/// Group-shared mode (as git's `core.sharedRepository = group`): folders group-writable and
/// setgid, files group-readable, group-writable unless read-only; every later opener follows.
#[test]
fn group_shared_store_gives_the_group_its_files_and_folders() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    {
        let mut s = Store::open(&root).unwrap();
        s.put_blob(&bytes(1, 100)).unwrap(); // written before sharing: fixed by share
        assert_eq!(s.sharing(), mpfnet_cache::Sharing::Private);
        assert!(s.share_with_group().unwrap() > 5);
    }
    // a later process (a fresh open) follows the SHARING file
    let s = Store::open(&root).unwrap();
    assert_eq!(s.sharing(), mpfnet_cache::Sharing::Group);
    let d = s.put_blob(&bytes(2, 100)).unwrap();
    let key = Digest::of(b"node");
    s.put_action(
        &key,
        &ActionRecord {
            output: d,
            provenance: json!({}),
        },
    )
    .unwrap();
    s.put_checkpoint(&key, 3, b"state").unwrap();
    let mut dirs = 0;
    let mut files = 0;
    let mut stack = vec![root.clone()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).unwrap().flatten() {
            let m = mode(&e.path());
            if e.file_type().unwrap().is_dir() {
                assert_eq!(m & 0o2070, 0o2070, "{}: {m:o}", e.path().display());
                stack.push(e.path());
                dirs += 1;
            } else {
                assert_eq!(m & 0o040, 0o040, "{}: {m:o}", e.path().display());
                let ro = m & 0o200 == 0;
                if !ro {
                    assert_eq!(m & 0o060, 0o060, "{}: {m:o}", e.path().display());
                }
                files += 1;
            }
        }
    }
    assert!(dirs >= 8 && files >= 4, "{dirs} folders, {files} files");
    let blob = s.blob_path(&d);
    assert_eq!(mode(&blob), 0o444, "blobs stay read-only");
}

/// A store area replaced by a symbolic link is refused: it would redirect writes and gc.
#[test]
fn a_symlinked_store_area_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    Store::open(&root).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::remove_dir_all(root.join("blobs")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("blobs")).unwrap();
    let e = format!("{:#}", Store::open(&root).err().expect("refused"));
    assert!(e.contains("symbolic link") && e.contains("blobs"), "{e}");
}
