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

/// Who may write the store's files: the owner only (the umask decides), or the owner's group
/// too, in the manner of git's `core.sharedRepository = group` (see `Store::share_with_group`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sharing {
    /// Files and folders as the umask makes them.
    #[default]
    Private,
    /// Folders group-writable and setgid, files group-readable (and -writable unless read-only).
    Group,
}

impl Sharing {
    /// Group mode: files group-readable (and group-writable unless read-only).
    pub(crate) fn fix_file(self, f: &File, readonly: bool) -> io::Result<()> {
        if self == Sharing::Group {
            use std::os::unix::fs::PermissionsExt;
            let mode = if readonly { 0o444 } else { 0o664 };
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    /// Group mode: folders group-writable and setgid, so that what any member creates in them
    /// belongs to the group.
    pub(crate) fn fix_dir(self, dir: &Path) -> io::Result<()> {
        if self == Sharing::Group {
            use std::os::unix::fs::PermissionsExt;
            let m = fs::metadata(dir)?.permissions().mode();
            if m & 0o2070 != 0o2070 {
                fs::set_permissions(dir, fs::Permissions::from_mode(m | 0o2070))?;
            }
        }
        Ok(())
    }

    /// `create_dir_all`, then [`Self::fix_dir`] on the folder.
    pub(crate) fn create_dir_all(self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
        self.fix_dir(dir)
            .with_context(|| format!("making {} group-writable", dir.display()))
    }
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
        // Removed meanwhile by another process (a checkpoint folder cleared because the node's
        // output is stored): what was renamed into it went with it, which is what they wanted.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("fsync of directory {}", dir.display())),
    }
}

/// Writes `data` to `dest` atomically: a unique file in `tmp_dir` (same
/// filesystem), fsync, optional read-only bit, rename over `dest`, fsync of
/// `dest`'s directory. Readers see the old file or the whole new one, never a
/// torn one; a killed writer leaves only a temp file for `gc` to reclaim.
pub(crate) fn write_atomic(
    tmp_dir: &Path,
    dest: &Path,
    data: &[u8],
    readonly: bool,
    sharing: Sharing,
) -> Result<()> {
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
        sharing
            .fix_file(&f, readonly)
            .with_context(|| format!("setting group permissions of {}", tmp.display()))?;
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
        sharing.create_dir_all(parent)?;
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

/// Removes a folder tree that other processes may still be writing into or removing: files
/// or folders that vanish meanwhile are fine, and a folder that refills while we empty it is
/// emptied again (a few rounds; what is left then is a stray temp folder for `gc`).
pub(crate) fn remove_tree_racy(dir: &Path) -> Result<()> {
    for _ in 0..8 {
        match fs::remove_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => continue,
            Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
        }
    }
    tracing::warn!(dir = %dir.display(), "folder kept refilling while being removed: left for gc");
    Ok(())
}

/// Age of a file's mtime relative to `now` (zero if in the future).
pub(crate) fn age(meta: &fs::Metadata, now: SystemTime) -> std::time::Duration {
    meta.modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .unwrap_or_default()
}
