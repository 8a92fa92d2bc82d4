//! Content digests of external files with a persistent stat cache.
//!
//! A file is re-read only when its (canonical path, size, mtime, ctime,
//! inode, device) changed: a copy or `touch` re-hashes but still yields the
//! same digest (no false rerun), a same-size rewrite changes mtime/ctime and
//! is re-hashed (no stale hit). Files modified within `racy window` of being
//! hashed are not cached, since a second write in the same timestamp tick
//! would be invisible.
//!
//! On disk: `stat/*.stc` files, each a complete binary snapshot with its own
//! blake3. Each process loads them all once, and on save merges what is on
//! disk with its own entries into one new snapshot written atomically, then
//! deletes the snapshots it merged. Concurrent savers never lose each other's
//! entries (a snapshot is only deleted by someone who merged it), and since
//! this is a cache, a damaged snapshot only costs re-hashing.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;

use crate::blobs::{hash_file, hash_file_st};
use crate::{fsutil, Digest, Store};

const MAGIC: &[u8; 8] = b"MPFSTAT1";

/// Counters of the stat cache since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatCacheStats {
    /// Digests answered from the cache (file not read).
    pub hits: u64,
    /// Files read and hashed.
    pub misses: u64,
    /// Entries in memory.
    pub entries: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
}

impl Fingerprint {
    #[cfg(unix)]
    fn of(m: &fs::Metadata) -> Fingerprint {
        use std::os::unix::fs::MetadataExt;
        Fingerprint {
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
        }
    }

    #[cfg(not(unix))]
    fn of(m: &fs::Metadata) -> Fingerprint {
        let ns = |t: std::io::Result<SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0)
        };
        Fingerprint {
            size: m.len(),
            mtime_ns: ns(m.modified()),
            ctime_ns: ns(m.created()),
            ino: 0,
            dev: 0,
        }
    }

    fn newest_ns(&self) -> i64 {
        self.mtime_ns.max(self.ctime_ns)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    fp: Fingerprint,
    digest: Digest,
}

/// A digest, plus the entry to cache when the file was settled.
type Looked = (Digest, Option<(PathBuf, Entry)>);

#[derive(Default)]
struct Inner {
    loaded: bool,
    map: HashMap<PathBuf, Entry>,
    dirty: bool,
    /// Snapshot files whose entries are in `map` (deleted at next save).
    merged: Vec<PathBuf>,
}

pub(crate) struct StatCache {
    dir: PathBuf,
    racy: Duration,
    inner: RwLock<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[cfg(unix)]
fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

#[cfg(unix)]
fn path_from_bytes(b: &[u8]) -> Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(b)))
}

#[cfg(not(unix))]
fn path_bytes(p: &Path) -> Vec<u8> {
    p.to_string_lossy().into_owned().into_bytes()
}

#[cfg(not(unix))]
fn path_from_bytes(b: &[u8]) -> Result<PathBuf> {
    Ok(PathBuf::from(String::from_utf8(b.to_vec())?))
}

fn encode(map: &HashMap<PathBuf, Entry>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + map.len() * 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(map.len() as u64).to_le_bytes());
    for (p, e) in map {
        let pb = path_bytes(p);
        out.extend_from_slice(&(pb.len() as u32).to_le_bytes());
        out.extend_from_slice(&pb);
        for v in [
            e.fp.size,
            e.fp.mtime_ns as u64,
            e.fp.ctime_ns as u64,
            e.fp.ino,
            e.fp.dev,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(e.digest.as_bytes());
    }
    let check = Digest::of(&out);
    out.extend_from_slice(check.as_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<Vec<(PathBuf, Entry)>> {
    ensure!(bytes.len() >= 48, "truncated ({} bytes)", bytes.len());
    let (body, check) = bytes.split_at(bytes.len() - 32);
    ensure!(
        Digest::of(body).as_bytes()[..] == *check,
        "checksum mismatch"
    );
    ensure!(&body[..8] == MAGIC, "bad magic");
    let n = u64::from_le_bytes(body[8..16].try_into().unwrap());
    let mut pos = 16;
    let mut take = |k: usize| -> Result<&[u8]> {
        ensure!(pos + k <= body.len(), "truncated entry");
        pos += k;
        Ok(&body[pos - k..pos])
    };
    let mut out = Vec::new();
    for _ in 0..n {
        let plen = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
        let path = path_from_bytes(take(plen)?)?;
        let mut v = [0u64; 5];
        for x in &mut v {
            *x = u64::from_le_bytes(take(8)?.try_into().unwrap());
        }
        let digest = Digest(take(32)?.try_into().unwrap());
        let fp = Fingerprint {
            size: v[0],
            mtime_ns: v[1] as i64,
            ctime_ns: v[2] as i64,
            ino: v[3],
            dev: v[4],
        };
        out.push((path, Entry { fp, digest }));
    }
    if pos != body.len() {
        bail!("{} trailing bytes", body.len() - pos);
    }
    Ok(out)
}

/// Keeps the entry describing the most recent state of the file.
fn merge(map: &mut HashMap<PathBuf, Entry>, path: PathBuf, e: Entry) {
    match map.get(&path) {
        Some(cur) if cur.fp.newest_ns() >= e.fp.newest_ns() => {}
        _ => {
            map.insert(path, e);
        }
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl StatCache {
    pub(crate) fn new(dir: PathBuf, racy: Duration) -> StatCache {
        StatCache {
            dir,
            racy,
            inner: RwLock::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn snapshots(&self) -> Result<Vec<PathBuf>> {
        Ok(fsutil::list_dir(&self.dir)?
            .into_iter()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "stc"))
            .collect())
    }

    /// Merges snapshot files not merged yet into `inner`.
    fn merge_from_disk(&self, inner: &mut Inner) -> Result<()> {
        for f in self.snapshots()? {
            if inner.merged.contains(&f) {
                continue;
            }
            let Some(bytes) = fsutil::read_opt(&f)? else {
                continue;
            };
            match decode(&bytes) {
                Ok(entries) => {
                    for (p, e) in entries {
                        merge(&mut inner.map, p, e);
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %f.display(), "ignoring damaged stat cache snapshot: {e:#}")
                }
            }
            inner.merged.push(f);
        }
        Ok(())
    }

    fn ensure_loaded(&self) -> Result<()> {
        if self.inner.read().unwrap().loaded {
            return Ok(());
        }
        let mut w = self.inner.write().unwrap();
        if !w.loaded {
            self.merge_from_disk(&mut w)?;
            w.loaded = true;
        }
        Ok(())
    }

    fn lookup(&self, path: &Path, fp: &Fingerprint) -> Option<Digest> {
        let r = self.inner.read().unwrap();
        r.map.get(path).filter(|e| e.fp == *fp).map(|e| e.digest)
    }

    /// Digest of one file: from the cache or by hashing it (`parallel_hash`:
    /// use blake3's own threads for this file).
    fn digest_one(&self, path: &Path, parallel_hash: bool) -> Result<Looked> {
        let canon = fs::canonicalize(path)
            .with_context(|| format!("resolving input file {}", path.display()))?;
        let stat = |p: &Path| -> Result<Fingerprint> {
            let m = fs::metadata(p).with_context(|| format!("stat of {}", p.display()))?;
            ensure!(m.is_file(), "{} is not a regular file", p.display());
            Ok(Fingerprint::of(&m))
        };
        let mut fp = stat(&canon)?;
        if let Some(d) = self.lookup(&canon, &fp) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((d, None));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        for _ in 0..3 {
            let started = now_ns();
            let d = if parallel_hash {
                hash_file(&canon)?
            } else {
                hash_file_st(&canon)?
            };
            let after = stat(&canon)?;
            if after != fp {
                // Written while we read it: the digest may match no version.
                fp = after;
                continue;
            }
            let settled = fp.newest_ns().saturating_add(self.racy.as_nanos() as i64) < started;
            let entry = settled.then_some((canon, Entry { fp, digest: d }));
            return Ok((d, entry));
        }
        bail!("{} kept changing while being hashed", path.display())
    }

    pub(crate) fn digests(&self, paths: &[PathBuf]) -> Result<Vec<Digest>> {
        self.ensure_loaded()?;
        let results: Vec<Result<Looked>> = if paths.len() == 1 {
            vec![self.digest_one(&paths[0], true)]
        } else {
            paths
                .par_iter()
                .map(|p| self.digest_one(p, false))
                .collect()
        };
        let mut out = Vec::with_capacity(paths.len());
        let mut new = Vec::new();
        for r in results {
            let (d, e) = r?;
            out.push(d);
            new.extend(e);
        }
        if !new.is_empty() {
            let mut w = self.inner.write().unwrap();
            for (p, e) in new {
                w.map.insert(p, e);
            }
            w.dirty = true;
        }
        Ok(out)
    }

    pub(crate) fn save(&self, tmp_dir: &Path, sharing: fsutil::Sharing) -> Result<()> {
        let mut w = self.inner.write().unwrap();
        if !w.dirty {
            return Ok(());
        }
        self.merge_from_disk(&mut w)?;
        let dest = self.dir.join(format!("{}.stc", fsutil::unique_name("")));
        fsutil::write_atomic(tmp_dir, &dest, &encode(&w.map), false, sharing)
            .context("saving the stat cache")?;
        for old in std::mem::take(&mut w.merged) {
            fsutil::remove_file_opt(&old)?;
        }
        w.merged.push(dest);
        w.dirty = false;
        Ok(())
    }

    /// Drops entries whose file is gone or changed; returns how many.
    pub(crate) fn prune(&self) -> Result<usize> {
        self.ensure_loaded()?;
        let mut w = self.inner.write().unwrap();
        let before = w.map.len();
        w.map.retain(|p, e| {
            fs::metadata(p)
                .map(|m| Fingerprint::of(&m) == e.fp)
                .unwrap_or(false)
        });
        let removed = before - w.map.len();
        if removed > 0 {
            w.dirty = true;
        }
        Ok(removed)
    }

    fn stats(&self) -> StatCacheStats {
        StatCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.inner.read().unwrap().map.len(),
        }
    }
}

impl Store {
    /// Content digest (blake3) of an external file, answered from the stat
    /// cache when the file is unchanged.
    pub fn file_digest(&self, path: &Path) -> Result<Digest> {
        Ok(self.stat.digests(&[path.to_path_buf()])?[0])
    }

    /// [`Store::file_digest`] for many files at once (stat and hashing in
    /// parallel); digests in the order of `paths`.
    pub fn file_digests(&self, paths: &[PathBuf]) -> Result<Vec<Digest>> {
        self.stat.digests(paths)
    }

    /// Stat cache counters since this store was opened.
    pub fn stat_cache_stats(&self) -> StatCacheStats {
        self.stat.stats()
    }

    pub(crate) fn prune_stat_cache(&self) -> Result<usize> {
        self.stat.prune()
    }
}
