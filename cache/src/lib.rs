//! `mpfnet-cache`: a generic content-addressed store.
//!
//! Bytes and tensors go in, blake3 digests come out. On disk (all under one
//! root, safe to share between processes and hosts, e.g. over NFS):
//!
//! ```text
//! FORMAT                 store format version
//! blobs/ab/cdef…         immutable content, file name = blake3 of content
//! actions/ab/cdef….json  action key -> output digest + provenance
//! checkpoints/<key>/     resumable progress of long-running nodes
//! stat/                  persistent stat cache for external files
//! tmp/                   in-flight writes (renamed into place when complete)
//! quarantine/            corrupt files moved out of the way
//! ```
//!
//! Every write goes to a unique temp file, is fsynced and renamed into place,
//! so there is no global lock, no torn file and no lost entry with many
//! concurrent writers. Every read re-hashes: corrupt data is quarantined and
//! reported as a miss, never returned.
//!
//! ```
//! use mpfnet_cache::{ActionRecord, KeyHasher, Store};
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//! // The engine derives an action key from everything the result depends on.
//! let key = KeyHasher::new("my-node").str("params-v1").u64(3).digest();
//! if store.get_action(&key)?.is_none() {
//!     let output = store.put_blob(b"result")?;
//!     let provenance = serde_json::json!({"node": "my-node"});
//!     store.put_action(&key, &ActionRecord { output, provenance })?;
//! }
//! let rec = store.get_action(&key)?.expect("just stored");
//! assert_eq!(store.get_blob(&rec.output)?.as_deref(), Some(&b"result"[..]));
//! # Ok::<(), anyhow::Error>(())
//! ```

#![warn(missing_docs)]

mod actions;
mod blobs;
mod checkpoints;
mod digest;
mod fsutil;
mod maintenance;
mod stat;
pub mod tensors;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

pub use actions::ActionRecord;
pub use digest::{Digest, KeyHasher, ParseDigestError, PartsHasher};
pub use fsutil::Sharing;
pub use maintenance::{DuReport, GcOptions, GcReport, Usage, VerifyReport};
pub use stat::StatCacheStats;

/// The on-disk format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT_MAGIC: &str = "mpfnet-cache-format";

/// The store's areas: one folder each under the root.
pub const AREAS: [&str; 6] = [
    "blobs",
    "actions",
    "checkpoints",
    "stat",
    "tmp",
    "quarantine",
];

/// Errors callers may want to match on (via `anyhow::Error::downcast_ref`).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The store was written by a newer version of this crate.
    #[error("store {path} has format version {found}, newer than the {supported} this build supports: upgrade mpfnet-cache or use another store")]
    NewerFormat {
        /// Store root.
        path: PathBuf,
        /// Version found in its FORMAT file.
        found: u32,
        /// [`FORMAT_VERSION`].
        supported: u32,
    },
    /// The FORMAT file is not ours (wrong directory?).
    #[error("{path} is not an mpfnet-cache FORMAT file (content {content:?})")]
    BadFormatFile {
        /// The FORMAT file.
        path: PathBuf,
        /// Its first characters.
        content: String,
    },
    /// Not 1 to 64 hex digits.
    #[error("{0:?} is not a digest prefix (1 to 64 hex digits)")]
    BadPrefix(String),
    /// Nothing starts with the prefix.
    #[error("no action key or blob starts with {0:?}")]
    PrefixNotFound(String),
    /// Several digests start with the prefix.
    #[error("prefix {prefix:?} is ambiguous: {count} matches, e.g. {examples}")]
    PrefixAmbiguous {
        /// The prefix (lowercased).
        prefix: String,
        /// Number of matches.
        count: usize,
        /// A few matches (short form).
        examples: String,
    },
}

/// Tunables for [`Store::open_with`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// A file whose mtime or ctime is within this window of the moment it was
    /// hashed is not stat-cached: a second same-size write within one
    /// timestamp tick would otherwise go unnoticed ("racy clean" files).
    /// Default 2 s (covers coarse filesystem clocks and small NFS clock skew).
    pub stat_racy_window: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            stat_racy_window: Duration::from_secs(2),
        }
    }
}

/// A handle on a store directory. Cheap to share between threads (`&Store` is
/// all the API needs); open one per process. The stat cache is saved on
/// [`Store::flush`] and on drop.
pub struct Store {
    root: PathBuf,
    stat: stat::StatCache,
    sharing: fsutil::Sharing,
}

impl Store {
    /// Opens (creating if needed) the store at `root` with default options.
    pub fn open(root: &Path) -> Result<Store> {
        Store::open_with(root, StoreOptions::default())
    }

    /// Opens (creating if needed) the store at `root`. Refuses a store written
    /// by a newer format version ([`CacheError::NewerFormat`]).
    pub fn open_with(root: &Path, opts: StoreOptions) -> Result<Store> {
        fs::create_dir_all(root)
            .with_context(|| format!("creating store directory {}", root.display()))?;
        let sharing = read_sharing(root)?;
        sharing.fix_dir(root)?;
        for sub in AREAS {
            let d = root.join(sub);
            sharing.create_dir_all(&d)?;
            // A store's areas are its own folders: a symlink would let whoever planted it
            // redirect writes (and gc's deletions) anywhere the user can write.
            let meta =
                fs::symlink_metadata(&d).with_context(|| format!("inspecting {}", d.display()))?;
            if !meta.is_dir() {
                anyhow::bail!(
                    "{} is a symbolic link or not a folder: refusing to use it as part of the cache (point --cache at the real folder instead)",
                    d.display()
                );
            }
        }
        let fmt_path = root.join("FORMAT");
        match fsutil::read_opt(&fmt_path)? {
            Some(bytes) => {
                let content = String::from_utf8_lossy(&bytes).into_owned();
                let version = content
                    .trim()
                    .strip_prefix(FORMAT_MAGIC)
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .ok_or_else(|| CacheError::BadFormatFile {
                        path: fmt_path.clone(),
                        content: content.chars().take(80).collect(),
                    })?;
                if version > FORMAT_VERSION {
                    return Err(CacheError::NewerFormat {
                        path: root.to_path_buf(),
                        found: version,
                        supported: FORMAT_VERSION,
                    }
                    .into());
                }
            }
            None => {
                // Concurrent creators write identical content; last rename wins.
                let line = format!("{FORMAT_MAGIC} {FORMAT_VERSION}\n");
                fsutil::write_atomic(
                    &root.join("tmp"),
                    &fmt_path,
                    line.as_bytes(),
                    false,
                    sharing,
                )?;
            }
        }
        Ok(Store {
            stat: stat::StatCache::new(root.join("stat"), opts.stat_racy_window),
            root: root.to_path_buf(),
            sharing,
        })
    }

    /// Whether this store is shared with the owner's group (`SHARING` file at its root).
    pub fn sharing(&self) -> fsutil::Sharing {
        self.sharing
    }

    /// Makes the store shared with its group from now on, as git's
    /// `core.sharedRepository = group`: a `SHARING` file at the root says so to every process
    /// that opens it; every folder becomes group-writable and setgid (new files inherit the
    /// group) and every file group-readable, group-writable unless read-only (blobs). Run it
    /// once, as the owner, after `chgrp -R <group>` of the cache folder.
    pub fn share_with_group(&mut self) -> Result<usize> {
        use std::os::unix::fs::PermissionsExt;
        let g = fsutil::Sharing::Group;
        fsutil::write_atomic(
            &self.tmp_dir(),
            &self.root.join(SHARING_FILE),
            b"group\n",
            false,
            g,
        )?;
        self.sharing = g;
        let mut fixed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            g.fix_dir(&dir)
                .with_context(|| format!("sharing {}", dir.display()))?;
            fixed += 1;
            for e in fsutil::list_dir(&dir)? {
                let Ok(meta) = fs::symlink_metadata(e.path()) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(e.path());
                } else if meta.is_file() {
                    let ro = meta.permissions().mode() & 0o200 == 0;
                    let mode = if ro { 0o444 } else { 0o664 };
                    fs::set_permissions(e.path(), fs::Permissions::from_mode(mode))
                        .with_context(|| format!("sharing {}", e.path().display()))?;
                    fixed += 1;
                }
            }
        }
        Ok(fixed)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Saves the stat cache if it changed (also done on drop).
    pub fn flush(&self) -> Result<()> {
        self.stat.save(&self.tmp_dir(), self.sharing)
    }

    pub(crate) fn dir(&self, sub: &str) -> PathBuf {
        self.root.join(sub)
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// `base/ab/cdef…{ext}` for a digest.
    pub(crate) fn sharded(&self, sub: &str, d: &Digest, ext: &str) -> PathBuf {
        let hex = d.to_hex();
        self.root
            .join(sub)
            .join(&hex[..2])
            .join(format!("{}{ext}", &hex[2..]))
    }

    /// Digests named by the files of a sharded directory (`blobs` or
    /// `actions`), with each file's path; unrelated names are skipped.
    pub(crate) fn list_sharded(&self, sub: &str, ext: &str) -> Result<Vec<(Digest, PathBuf)>> {
        let mut out = Vec::new();
        for shard in fsutil::list_dir(&self.dir(sub))? {
            let sname = shard.file_name();
            let Some(sname) = sname.to_str() else {
                continue;
            };
            if sname.len() != 2 || !shard.path().is_dir() {
                continue;
            }
            for ent in fsutil::list_dir(&shard.path())? {
                let name = ent.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(ext)) else {
                    continue;
                };
                if let Ok(d) = format!("{sname}{stem}").parse::<Digest>() {
                    if d.to_hex()[2..] == *stem {
                        out.push((d, ent.path()));
                    }
                }
            }
        }
        out.sort_by_key(|e| e.0);
        Ok(out)
    }

    /// The unique action key or blob digest starting with `prefix` (hex, any
    /// case). Errors: [`CacheError::BadPrefix`], [`CacheError::PrefixNotFound`],
    /// [`CacheError::PrefixAmbiguous`].
    pub fn resolve_prefix(&self, prefix: &str) -> Result<Digest> {
        let p = prefix.trim().to_ascii_lowercase();
        if p.is_empty() || p.len() > 64 || !p.bytes().all(|c| digest::hex_val(c).is_some()) {
            return Err(CacheError::BadPrefix(prefix.to_string()).into());
        }
        let mut found = std::collections::BTreeSet::new();
        for (sub, ext) in [("blobs", ""), ("actions", ".json")] {
            for shard in fsutil::list_dir(&self.dir(sub))? {
                let sname = shard.file_name().to_string_lossy().into_owned();
                let n = p.len().min(2);
                if sname.len() != 2 || sname[..n] != p[..n] {
                    continue;
                }
                for ent in fsutil::list_dir(&shard.path())? {
                    let name = ent.file_name().to_string_lossy().into_owned();
                    let Some(stem) = name.strip_suffix(ext) else {
                        continue;
                    };
                    let full = format!("{sname}{stem}");
                    if full.starts_with(&p) {
                        if let Ok(d) = full.parse::<Digest>() {
                            found.insert(d);
                        }
                    }
                }
            }
        }
        match found.len() {
            0 => Err(CacheError::PrefixNotFound(p).into()),
            1 => Ok(*found.iter().next().unwrap()),
            count => Err(CacheError::PrefixAmbiguous {
                prefix: p,
                count,
                examples: found
                    .iter()
                    .take(4)
                    .map(|d| d.short())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
            .into()),
        }
    }
}

const SHARING_FILE: &str = "SHARING";

/// The store's sharing mode from its `SHARING` file (absent: private).
fn read_sharing(root: &Path) -> Result<fsutil::Sharing> {
    match fsutil::read_opt(&root.join(SHARING_FILE))? {
        None => Ok(fsutil::Sharing::Private),
        Some(b) if b.trim_ascii() == b"group" => Ok(fsutil::Sharing::Group),
        Some(b) => anyhow::bail!(
            "{}: unknown sharing mode {:?} (expected `group`)",
            root.join(SHARING_FILE).display(),
            String::from_utf8_lossy(&b[..b.len().min(40)])
        ),
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(store = %self.root.display(), "saving the stat cache failed: {e:#}");
        }
    }
}
