//! Crash- and race-safe file primitives: unique temp names, atomic
//! write-then-rename, directory fsync, quarantine.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unique across threads, processes and hosts sharing one directory:
/// pid, thread, a per-process counter and 64 random bits (std's `RandomState`
/// is seeded from the OS, so no RNG crate is needed; these names are never part
/// of any result, so determinism does not apply).
pub(crate) fn unique_name(prefix: &str) -> String {
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    let tid = format!("{:?}", std::thread::current().id());
    h.write(tid.as_bytes());
    let tid_num: String = tid.chars().filter(|c| c.is_ascii_digit()).collect();
    format!(
        "{prefix}{}-{}-{}-{:016x}",
        std::process::id(),
        tid_num,
        COUNTER.fetch_add(1, Ordering::Relaxed),
        h.finish()
    )
}

/// Removes the temp file on drop unless disarmed (write failed half-way).
struct TmpGuard<'a>(Option<&'a Path>);

impl Drop for TmpGuard<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

/// fsync a directory so a rename in it survives a crash. Filesystems that do
/// not support it (some network ones) are tolerated.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    match File::open(dir).and_then(|f| f.sync_all()) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(22) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("fsync of directory {}", dir.display())),
    }
}

/// Writes `data` to `dest` atomically: a unique file in `tmp_dir` (same
/// filesystem), fsync, optional read-only bit, rename over `dest`, fsync of
/// `dest`'s directory. Readers see the old file or the whole new one, never a
/// torn one; a killed writer leaves only a temp file for `gc` to reclaim.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, data: &[u8], readonly: bool) -> Result<()> {
    let tmp = tmp_dir.join(unique_name("w-"));
    let mut guard = TmpGuard(Some(&tmp));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating temp file {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("writing temp file {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync of temp file {}", tmp.display()))?;
        if readonly {
            let mut perm = f.metadata()?.permissions();
            perm.set_readonly(true);
            f.set_permissions(perm)
                .with_context(|| format!("making {} read-only", tmp.display()))?;
        }
    }
    let parent = dest
        .parent()
        .with_context(|| format!("{} has no parent directory", dest.display()))?;
    if let Err(e) = fs::rename(&tmp, dest) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(e)
                .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()));
        }
        // The shard directory does not exist yet (or was removed meanwhile).
        fs::create_dir_all(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
        fs::rename(&tmp, dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    }
    guard.0 = None;
    fsync_dir(parent)
}

/// Moves a bad file to `quarantine_dir` (kept for inspection, out of the
/// lookup path). Returns the new path. A file that vanished meanwhile is fine.
pub(crate) fn quarantine(
    quarantine_dir: &Path,
    path: &Path,
    kind: &str,
) -> Result<Option<PathBuf>> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest = quarantine_dir.join(format!("{kind}-{name}-{}", unique_name("")));
    match fs::rename(path, &dest) {
        Ok(()) => Ok(Some(dest)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e)
            .with_context(|| format!("moving {} to quarantine {}", path.display(), dest.display())),
    }
}

/// Reads a file; `Ok(None)` when it does not exist.
pub(crate) fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Entries of a directory; empty when it does not exist.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut out = Vec::new();
    for ent in rd {
        match ent {
            Ok(e) => out.push(e),
            // Entry removed while listing (concurrent gc).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        }
    }
    Ok(out)
}

/// Removes a file; `Ok(false)` if it was already gone.
pub(crate) fn remove_file_opt(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Age of a file's mtime relative to `now` (zero if in the future).
pub(crate) fn age(meta: &fs::Metadata, now: SystemTime) -> std::time::Duration {
    meta.modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .unwrap_or_default()
}
