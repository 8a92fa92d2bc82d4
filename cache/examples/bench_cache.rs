//! Throughput of the store's hot paths.
//!
//! `cargo run --release --example bench_cache [-- DIR]` (DIR: where to put the
//! temporary store, default the system temp dir; use the filesystem you care about).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mpfnet_cache::{Digest, Store, StoreOptions};

const MIB: usize = 1 << 20;

fn gbs(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e9
}

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..runs).map(|_| f()).collect();
    v.sort();
    v[runs / 2]
}

/// Deterministic filler (content does not matter to blake3's speed).
fn buffer(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let base = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base)?;
    println!(
        "store under {} ({} rayon threads)",
        dir.path().display(),
        rayon::current_num_threads()
    );
    hashing();
    let root = dir.path().join("store");
    let store = Store::open(&root)?;
    blobs(&store)?;
    file_digests(&store, &root, &dir.path().join("files"))
}

/// blake3 on one thread and `Digest::of` (rayon).
fn hashing() {
    let big = buffer(256 * MIB, 1);
    let t1 = median(5, || {
        let t = Instant::now();
        std::hint::black_box(blake3::hash(&big));
        t.elapsed()
    });
    let tn = median(5, || {
        let t = Instant::now();
        std::hint::black_box(Digest::of(&big));
        t.elapsed()
    });
    println!(
        "blake3 256 MiB: 1 thread {:.2} GB/s, Digest::of (rayon) {:.2} GB/s",
        gbs(big.len(), t1),
        gbs(big.len(), tn)
    );
}

/// put_blob and get_blob (fsync included), on 1 MiB and 64 MiB blobs.
fn blobs(store: &Store) -> anyhow::Result<()> {
    for (size, count) in [(MIB, 64usize), (64 * MIB, 4)] {
        let blobs: Vec<Vec<u8>> = (0..count).map(|i| buffer(size, 100 + i as u64)).collect();
        let t = Instant::now();
        let ds: Vec<Digest> = blobs
            .iter()
            .map(|b| store.put_blob(b))
            .collect::<Result<_, _>>()?;
        let put = t.elapsed();
        let t = Instant::now();
        for b in &blobs {
            store.put_blob(b)?;
        }
        let reput = t.elapsed();
        let t = Instant::now();
        for d in &ds {
            std::hint::black_box(store.get_blob(d)?.expect("blob present"));
        }
        let get = t.elapsed();
        // For comparison: the plain read (page cache to a fresh Vec), no hashing.
        let t = Instant::now();
        for d in &ds {
            std::hint::black_box(std::fs::read(store.blob_path(d))?);
        }
        let read = t.elapsed();
        println!(
            "{:>3} MiB blobs x{count}: put {:.2} GB/s ({:.1} ms each), re-put (present) {:.2} GB/s, get+verify {:.2} GB/s (plain fs::read {:.2} GB/s)",
            size / MIB,
            gbs(size * count, put),
            put.as_secs_f64() * 1e3 / count as f64,
            gbs(size * count, reput),
            gbs(size * count, get),
            gbs(size * count, read),
        );
    }
    Ok(())
}

/// `file_digest` on 2,000 unchanged small files: cold, warm, and from a fresh `Store`.
fn file_digests(store: &Store, root: &Path, files_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(files_dir)?;
    let files: Vec<PathBuf> = (0..2000)
        .map(|i| {
            let p = files_dir.join(format!("f{i:04}.bin"));
            std::fs::write(&p, buffer(4096, i as u64 + 7)).map(|_| p)
        })
        .collect::<Result<_, _>>()?;
    // Past the racy window, so the files are cacheable.
    std::thread::sleep(StoreOptions::default().stat_racy_window + Duration::from_millis(100));
    let t = Instant::now();
    store.file_digests(&files)?;
    let cold = t.elapsed();
    store.flush()?;
    let warm_batch = median(5, || {
        let t = Instant::now();
        store.file_digests(&files).unwrap();
        t.elapsed()
    });
    let warm_loop = median(5, || {
        let t = Instant::now();
        for f in &files {
            store.file_digest(f).unwrap();
        }
        t.elapsed()
    });
    // A fresh process: open, load the snapshot, check all files.
    let fresh = median(5, || {
        let t = Instant::now();
        let s = Store::open(root).unwrap();
        s.file_digests(&files).unwrap();
        let e = t.elapsed();
        assert_eq!(s.stat_cache_stats().misses, 0);
        e
    });
    println!(
        "file_digest, 2000 files of 4 KiB: cold (hash all) {:.1} ms; unchanged: batch {:.1} ms, one by one {:.1} ms, fresh Store (open + load cache + batch) {:.1} ms",
        cold.as_secs_f64() * 1e3,
        warm_batch.as_secs_f64() * 1e3,
        warm_loop.as_secs_f64() * 1e3,
        fresh.as_secs_f64() * 1e3
    );
    Ok(())
}
