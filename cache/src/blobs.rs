//! Immutable content blobs, addressed by the blake3 of their bytes.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::{fsutil, Digest, Store};

impl Store {
    /// Where the blob `d` lives (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.sharded("blobs", d, "")
    }

    /// Whether a blob file exists for `d` (content not checked).
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Stores `bytes`; returns their digest. Atomic and idempotent: an
    /// existing blob of the right size is not rewritten, only has its mtime
    /// refreshed so a concurrent `gc` inside its grace period spares it.
    /// Blob files are read-only.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        let path = self.blob_path(&d);
        if let Ok(meta) = fs::metadata(&path) {
            if meta.is_file() && meta.len() == bytes.len() as u64 && touch(&path).is_ok() {
                return Ok(d);
            }
            // Wrong size (a damaged copy) or not ours to touch: rewrite it.
        }
        fsutil::write_atomic(&self.tmp_dir(), &path, bytes, true, self.sharing)
            .with_context(|| format!("storing blob {d}"))?;
        Ok(d)
    }

    /// The bytes of blob `d`, re-hashed on read. A missing blob is `Ok(None)`;
    /// so is a corrupt one, which is moved to `quarantine/` with a warning.
    pub fn get_blob(&self, d: &Digest) -> Result<Option<Vec<u8>>> {
        let path = self.blob_path(d);
        let Some(bytes) = fsutil::read_opt(&path).with_context(|| format!("reading blob {d}"))?
        else {
            return Ok(None);
        };
        let actual = Digest::of(&bytes);
        if actual != *d {
            self.quarantine_blob(d, &path, &actual)?;
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// The path of blob `d` after re-hashing its file in place (memory-mapped,
    /// no copy): for consumers that mmap or hand paths to other programs.
    /// Blob files are immutable (renamed into place, read-only), so the path
    /// stays valid until `gc`. Missing or corrupt (then quarantined): `Ok(None)`.
    pub fn verified_blob_path(&self, d: &Digest) -> Result<Option<PathBuf>> {
        let path = self.blob_path(d);
        if !path.is_file() {
            return Ok(None);
        }
        let actual = match hash_file(&path) {
            Ok(a) => a,
            Err(_) if !path.exists() => return Ok(None),
            Err(e) => return Err(e),
        };
        if actual != *d {
            self.quarantine_blob(d, &path, &actual)?;
            return Ok(None);
        }
        Ok(Some(path))
    }

    /// Moves a blob whose content hashed to `actual` out of the way. If a
    /// concurrent writer replaced it with good content just before the move,
    /// the good file is linked back.
    pub(crate) fn quarantine_blob(&self, d: &Digest, path: &Path, actual: &Digest) -> Result<()> {
        let Some(q) = fsutil::quarantine(&self.quarantine_dir(), path, "blob")? else {
            return Ok(());
        };
        if hash_file(&q).ok() == Some(*d) {
            // We moved a good copy: put it back unless another is there already.
            // hard_link never clobbers: if a copy is back already, it fails.
            let _ = fs::hard_link(&q, path);
            let _ = fs::remove_file(&q);
            return Ok(());
        }
        tracing::warn!(
            digest = %d,
            path = %path.display(),
            quarantined = %q.display(),
            "corrupt blob: content hashes to {}, moved to quarantine", actual.short()
        );
        Ok(())
    }
}

/// blake3 of a file's content (memory-mapped, multi-threaded for large files).
pub(crate) fn hash_file(path: &Path) -> Result<Digest> {
    let mut h = blake3::Hasher::new();
    h.update_mmap_rayon(path)
        .with_context(|| format!("hashing {}", path.display()))?;
    Ok(h.finalize().into())
}

/// Single-threaded variant, for callers that already parallelise over files.
pub(crate) fn hash_file_st(path: &Path) -> Result<Digest> {
    let mut h = blake3::Hasher::new();
    h.update_mmap(path)
        .with_context(|| format!("hashing {}", path.display()))?;
    Ok(h.finalize().into())
}

/// Sets a file's mtime to now without opening it for writing.
fn touch(path: &Path) -> io::Result<()> {
    File::open(path)?.set_modified(SystemTime::now())
}

impl Store {
    /// Stores the content of an external file without loading it whole: one
    /// streaming pass copies it to a temp file while hashing, then renames it
    /// into place. Returns the content digest.
    pub fn put_file(&self, path: &Path) -> Result<Digest> {
        use std::io::{Read, Write};
        let mut src =
            File::open(path).with_context(|| format!("opening {} to store it", path.display()))?;
        let tmp = self.tmp_dir().join(fsutil::unique_name("f-"));
        let result = (|| -> Result<Digest> {
            let mut dst = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .with_context(|| format!("creating temp file {}", tmp.display()))?;
            let mut h = blake3::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                };
                h.update(&buf[..n]);
                dst.write_all(&buf[..n])
                    .with_context(|| format!("writing temp file {}", tmp.display()))?;
            }
            let d: Digest = h.finalize().into();
            let dest = self.blob_path(&d);
            if fs::metadata(&dest)
                .is_ok_and(|m| m.len() == dst.metadata().map(|t| t.len()).unwrap_or(u64::MAX))
                && touch(&dest).is_ok()
            {
                return Ok(d);
            }
            dst.sync_all()
                .with_context(|| format!("fsync of temp file {}", tmp.display()))?;
            let mut perm = dst.metadata()?.permissions();
            perm.set_readonly(true);
            dst.set_permissions(perm)?;
            self.sharing.fix_file(&dst, true)?;
            drop(dst);
            let parent = dest.parent().expect("blob path has a shard directory");
            self.sharing.create_dir_all(parent)?;
            fs::rename(&tmp, &dest)
                .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
            fsutil::fsync_dir(parent)?;
            Ok(d)
        })();
        // On success the temp file was renamed (or is a duplicate); either way
        // nothing should remain.
        let _ = fs::remove_file(&tmp);
        result.with_context(|| format!("storing file {}", path.display()))
    }
}
