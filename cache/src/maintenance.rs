//! Store maintenance: integrity check, garbage collection, disk usage.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use rayon::prelude::*;

use crate::actions::parse_action;
use crate::blobs::hash_file_st;
use crate::{fsutil, Digest, Store};

/// Outcome of [`Store::verify`].
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Blobs whose content matches their name.
    pub blobs_ok: usize,
    /// Bytes re-hashed.
    pub bytes_checked: u64,
    /// Blobs whose content did not match (now in `quarantine/`).
    pub blobs_corrupt: Vec<Digest>,
    /// Actions that parse and whose output blob is intact.
    pub actions_ok: usize,
    /// Actions whose output blob is missing or corrupt (a miss on lookup;
    /// `gc` drops them unless kept).
    pub actions_missing_output: Vec<Digest>,
    /// Action records that did not parse (now in `quarantine/`).
    pub actions_corrupt: Vec<Digest>,
    /// Intact checkpoint files.
    pub checkpoints_ok: usize,
    /// Damaged checkpoint files (now in `quarantine/`).
    pub checkpoints_corrupt: Vec<PathBuf>,
}

impl VerifyReport {
    /// True when nothing was corrupt or missing.
    pub fn is_clean(&self) -> bool {
        self.blobs_corrupt.is_empty()
            && self.actions_missing_output.is_empty()
            && self.actions_corrupt.is_empty()
            && self.checkpoints_corrupt.is_empty()
    }
}

/// Options of [`Store::gc`].
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Nothing (blob, action, checkpoint, temp file) modified more recently
    /// than this is deleted, so writers running concurrently with `gc` are
    /// safe. Default 1 hour.
    pub grace: Duration,
    /// Blobs to keep even if no kept action references them.
    pub keep_blobs: HashSet<Digest>,
    /// Also delete quarantined files older than `grace`. Default false.
    pub purge_quarantine: bool,
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
            keep_blobs: HashSet::new(),
            purge_quarantine: false,
            dry_run: false,
        }
    }
}

/// Outcome of [`Store::gc`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Action records in the keep set.
    pub actions_kept: usize,
    /// Action records deleted.
    pub actions_removed: usize,
    /// Blobs referenced by a remaining action or pinned.
    pub blobs_kept: usize,
    /// Blobs deleted.
    pub blobs_removed: usize,
    /// Checkpoint directories (one per node) removed.
    pub checkpoints_removed: usize,
    /// Leftover temp files (from killed writers) removed.
    pub tmp_removed: usize,
    /// Quarantined files deleted (with `purge_quarantine`).
    pub quarantine_removed: usize,
    /// Unreferenced items spared because they are younger than the grace period.
    pub young_spared: usize,
    /// Stat cache entries dropped because their file is gone or changed.
    pub stat_entries_pruned: usize,
    /// Bytes freed (or that would be, in a dry run).
    pub bytes_freed: u64,
}

/// Files and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Number of files.
    pub files: u64,
    /// Their total size (apparent, not allocated).
    pub bytes: u64,
}

/// Outcome of [`Store::du`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DuReport {
    /// `blobs/`.
    pub blobs: Usage,
    /// `actions/`.
    pub actions: Usage,
    /// `checkpoints/`.
    pub checkpoints: Usage,
    /// `stat/` (stat cache snapshots).
    pub stat: Usage,
    /// `tmp/` (in-flight or abandoned writes).
    pub tmp: Usage,
    /// `quarantine/`.
    pub quarantine: Usage,
}

impl DuReport {
    /// Bytes of everything.
    pub fn total_bytes(&self) -> u64 {
        [
            self.blobs,
            self.actions,
            self.checkpoints,
            self.stat,
            self.tmp,
            self.quarantine,
        ]
        .iter()
        .map(|u| u.bytes)
        .sum()
    }
}

fn usage(dir: &Path) -> Result<Usage> {
    let mut u = Usage::default();
    for e in fsutil::list_dir(dir)? {
        let Ok(m) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if m.is_dir() {
            let s = usage(&e.path())?;
            u.files += s.files;
            u.bytes += s.bytes;
        } else {
            u.files += 1;
            u.bytes += m.len();
        }
    }
    Ok(u)
}

/// Newest mtime under `dir` (its files and itself).
fn newest_mtime(dir: &Path) -> Result<Option<SystemTime>> {
    let mut newest = fs::metadata(dir).and_then(|m| m.modified()).ok();
    for e in fsutil::list_dir(dir)? {
        if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
            newest = newest.max(Some(t));
        }
    }
    Ok(newest)
}

impl Store {
    /// Re-hashes every blob (in parallel) and checks every action record and
    /// checkpoint. Corrupt files are quarantined; the report names them.
    pub fn verify(&self) -> Result<VerifyReport> {
        let blobs = self.list_sharded("blobs", "")?;
        let checked: Vec<Option<(Digest, u64)>> = blobs
            .par_iter()
            .map(|(_, p)| {
                // A blob deleted meanwhile (concurrent gc) is simply absent.
                let Ok(meta) = fs::metadata(p) else {
                    return Ok(None);
                };
                match hash_file_st(p) {
                    Ok(actual) => Ok(Some((actual, meta.len()))),
                    Err(_) if !p.exists() => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .collect::<Result<_>>()?;
        let mut rep = VerifyReport::default();
        let mut good = HashSet::new();
        for (checked, (d, path)) in checked.into_iter().zip(&blobs) {
            let d = *d;
            match checked {
                Some((a, len)) if a == d => {
                    rep.blobs_ok += 1;
                    rep.bytes_checked += len;
                    good.insert(d);
                }
                Some((a, len)) => {
                    rep.bytes_checked += len;
                    self.quarantine_blob(&d, path, &a)?;
                    // A concurrent writer may have restored a good copy.
                    if self.get_blob(&d)?.is_some() {
                        rep.blobs_ok += 1;
                        good.insert(d);
                    } else {
                        rep.blobs_corrupt.push(d);
                    }
                }
                None => {}
            }
        }
        for (key, path) in self.list_sharded("actions", ".json")? {
            let Some(bytes) = fsutil::read_opt(&path)? else {
                continue;
            };
            match parse_action(&bytes) {
                Ok(rec) => {
                    if good.contains(&rec.output) || self.get_blob(&rec.output)?.is_some() {
                        rep.actions_ok += 1;
                    } else {
                        rep.actions_missing_output.push(key);
                    }
                }
                Err(e) => {
                    self.quarantine_action(&key, &path, &e)?;
                    rep.actions_corrupt.push(key);
                }
            }
        }
        let (ok, bad) = self.verify_checkpoints()?;
        rep.checkpoints_ok = ok;
        rep.checkpoints_corrupt = bad;
        Ok(rep)
    }

    /// Deletes action records not in `keep`, checkpoints of nodes not in
    /// `keep`, blobs referenced by no remaining action (nor in
    /// `opts.keep_blobs`) and leftover temp files, sparing anything modified
    /// within `opts.grace` (concurrent writers are safe: `put_blob` refreshes
    /// the mtime of a blob it finds present). Also prunes the stat cache.
    pub fn gc(&self, keep: &HashSet<Digest>, opts: &GcOptions) -> Result<GcReport> {
        let mut sweep = Sweep {
            now: SystemTime::now(),
            opts,
            rep: GcReport::default(),
        };
        let referenced = self.gc_actions(keep, &mut sweep)?;
        self.gc_checkpoints(keep, &mut sweep)?;
        self.gc_blobs(&referenced, &mut sweep)?;
        self.gc_tmp(&mut sweep)?;
        if opts.purge_quarantine {
            for e in fsutil::list_dir(&self.quarantine_dir())? {
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_file() && !sweep.young(&meta) && sweep.remove(&e.path(), meta.len())? {
                    sweep.rep.quarantine_removed += 1;
                }
            }
        }
        if !opts.dry_run {
            sweep.rep.stat_entries_pruned = self.prune_stat_cache()?;
            self.flush()?;
        }
        Ok(sweep.rep)
    }

    /// Removes the old action records not in `keep`; returns the blobs the rest reference.
    fn gc_actions(&self, keep: &HashSet<Digest>, sweep: &mut Sweep) -> Result<HashSet<Digest>> {
        let mut referenced: HashSet<Digest> = sweep.opts.keep_blobs.clone();
        for (key, path) in self.list_sharded("actions", ".json")? {
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let output = fsutil::read_opt(&path)?
                .and_then(|b| parse_action(&b).ok())
                .map(|r| r.output);
            if keep.contains(&key) {
                sweep.rep.actions_kept += 1;
                referenced.extend(output);
            } else if sweep.young(&meta) {
                sweep.rep.young_spared += 1;
                referenced.extend(output);
            } else if sweep.remove(&path, meta.len())? {
                sweep.rep.actions_removed += 1;
            }
        }
        Ok(referenced)
    }

    /// Removes the checkpoint folders of nodes not in `keep` that saw no write lately.
    fn gc_checkpoints(&self, keep: &HashSet<Digest>, sweep: &mut Sweep) -> Result<()> {
        for dir in fsutil::list_dir(&self.dir("checkpoints"))? {
            let key = dir
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<Digest>().ok());
            if key.is_some_and(|k| keep.contains(&k)) {
                continue;
            }
            let newest = newest_mtime(&dir.path())?;
            let grace = sweep.opts.grace;
            if newest.is_some_and(|t| sweep.now.duration_since(t).unwrap_or_default() < grace) {
                sweep.rep.young_spared += 1;
                continue;
            }
            let u = usage(&dir.path())?;
            if !sweep.opts.dry_run {
                // Same dance as `clear_checkpoints`: out of the lookup path first.
                let doomed = self.tmp_dir().join(fsutil::unique_name("ckpt-gc-"));
                match fs::rename(dir.path(), &doomed) {
                    Ok(()) => fsutil::remove_tree_racy(&doomed)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("moving {} aside", dir.path().display())))
                    }
                }
            }
            sweep.rep.bytes_freed += u.bytes;
            sweep.rep.checkpoints_removed += 1;
        }
        Ok(())
    }

    /// Removes the old blobs no remaining action references.
    fn gc_blobs(&self, referenced: &HashSet<Digest>, sweep: &mut Sweep) -> Result<()> {
        for (d, path) in self.list_sharded("blobs", "")? {
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if referenced.contains(&d) {
                sweep.rep.blobs_kept += 1;
            } else if sweep.young(&meta) {
                sweep.rep.young_spared += 1;
            } else if sweep.remove(&path, meta.len())? {
                sweep.rep.blobs_removed += 1;
            }
        }
        Ok(())
    }

    /// Removes old temp files, and checkpoint folders set aside by a process that died before
    /// removing them.
    fn gc_tmp(&self, sweep: &mut Sweep) -> Result<()> {
        for e in fsutil::list_dir(&self.tmp_dir())? {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if !sweep.young(&meta) && !sweep.opts.dry_run {
                    fsutil::remove_tree_racy(&e.path())?;
                    sweep.rep.tmp_removed += 1;
                }
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            if sweep.young(&meta) {
                sweep.rep.young_spared += 1;
            } else if sweep.remove(&e.path(), meta.len())? {
                sweep.rep.tmp_removed += 1;
            }
        }
        Ok(())
    }

    /// Disk usage by area.
    pub fn du(&self) -> Result<DuReport> {
        Ok(DuReport {
            blobs: usage(&self.dir("blobs"))?,
            actions: usage(&self.dir("actions"))?,
            checkpoints: usage(&self.dir("checkpoints"))?,
            stat: usage(&self.dir("stat"))?,
            tmp: usage(&self.tmp_dir())?,
            quarantine: usage(&self.quarantine_dir())?,
        })
    }
}

/// One `gc` pass: its clock, options and tally.
struct Sweep<'a> {
    now: SystemTime,
    opts: &'a GcOptions,
    rep: GcReport,
}

impl Sweep<'_> {
    /// Modified within the grace period: a concurrent writer may still need it.
    fn young(&self, m: &fs::Metadata) -> bool {
        fsutil::age(m, self.now) < self.opts.grace
    }

    /// Removes the file (or, in a dry run, only counts it); false if it was already gone.
    fn remove(&mut self, path: &Path, len: u64) -> Result<bool> {
        if self.opts.dry_run {
            self.rep.bytes_freed += len;
            return Ok(true);
        }
        let gone = fsutil::remove_file_opt(path)?;
        if gone {
            self.rep.bytes_freed += len;
        }
        Ok(gone)
    }
}
