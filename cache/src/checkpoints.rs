//! Checkpoints of long-running nodes, so a killed job resumes instead of
//! restarting. Each checkpoint file carries its own blake3; damaged ones are
//! skipped (and quarantined) in favour of the previous one.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Result};

use crate::{fsutil, Digest, Store};

const MAGIC: &[u8; 8] = b"MPFCKPT1";
const HEADER: usize = 8 + 8 + 8 + 32;
/// `put_checkpoint` keeps this many most recent steps per node (the previous
/// one is the fallback should the newest be damaged).
const KEEP: usize = 2;

fn encode(step: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&step.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(Digest::of(payload).as_bytes());
    out.extend_from_slice(payload);
    out
}

fn decode(step: u64, mut bytes: Vec<u8>) -> Result<Vec<u8>> {
    ensure!(
        bytes.len() >= HEADER,
        "truncated header ({} bytes)",
        bytes.len()
    );
    ensure!(&bytes[..8] == MAGIC, "bad magic");
    let file_step = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    ensure!(file_step == step, "file says step {file_step}");
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    ensure!(
        len == (bytes.len() - HEADER) as u64,
        "payload length {} but header says {len}",
        bytes.len() - HEADER
    );
    let payload = bytes.split_off(HEADER);
    if Digest::of(&payload).as_bytes()[..] != bytes[24..56] {
        bail!("payload hash mismatch");
    }
    Ok(payload)
}

impl Store {
    fn checkpoint_dir(&self, node_key: &Digest) -> PathBuf {
        self.dir("checkpoints").join(node_key.to_hex())
    }

    /// Steps present for a node, newest first, with their files.
    fn checkpoint_files(&self, node_key: &Digest) -> Result<Vec<(u64, PathBuf)>> {
        let mut v: Vec<(u64, PathBuf)> = fsutil::list_dir(&self.checkpoint_dir(node_key))?
            .into_iter()
            .filter_map(|e| {
                let name = e.file_name();
                let step = name.to_str()?.strip_suffix(".ckpt")?.parse().ok()?;
                Some((step, e.path()))
            })
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(v)
    }

    /// Saves the state of `node_key` after `step` (atomic). Keeps the two
    /// newest steps and deletes older ones.
    pub fn put_checkpoint(&self, node_key: &Digest, step: u64, bytes: &[u8]) -> Result<()> {
        let path = self
            .checkpoint_dir(node_key)
            .join(format!("{step:020}.ckpt"));
        fsutil::write_atomic(
            &self.tmp_dir(),
            &path,
            &encode(step, bytes),
            false,
            self.sharing,
        )?;
        for (old, p) in self.checkpoint_files(node_key)?.into_iter().skip(KEEP) {
            if old < step {
                fsutil::remove_file_opt(&p)?;
            }
        }
        Ok(())
    }

    /// The newest intact checkpoint of `node_key` as `(step, bytes)`; damaged
    /// ones are quarantined with a warning and skipped.
    pub fn latest_checkpoint(&self, node_key: &Digest) -> Result<Option<(u64, Vec<u8>)>> {
        for (step, path) in self.checkpoint_files(node_key)? {
            let Some(bytes) = fsutil::read_opt(&path)? else {
                continue;
            };
            match decode(step, bytes) {
                Ok(payload) => return Ok(Some((step, payload))),
                Err(e) => self.quarantine_checkpoint(node_key, &path, &e)?,
            }
        }
        Ok(None)
    }

    fn quarantine_checkpoint(
        &self,
        node_key: &Digest,
        path: &Path,
        why: &anyhow::Error,
    ) -> Result<()> {
        let q = fsutil::quarantine(&self.quarantine_dir(), path, "ckpt")?;
        tracing::warn!(
            node = %node_key,
            path = %path.display(),
            quarantined = ?q,
            "damaged checkpoint ({why:#}): skipped"
        );
        Ok(())
    }

    /// Deletes all checkpoints of `node_key` (call once its output is stored).
    ///
    /// Another process may be training the same node into the same folder at this moment, so
    /// the folder is first renamed out of the lookup path (atomic: the other writer's next
    /// checkpoint recreates it, and its resume simply finds nothing), then removed under its
    /// private name. Whatever another process already removed or is still writing is not an
    /// error: only a folder we cannot move at all is.
    pub fn clear_checkpoints(&self, node_key: &Digest) -> Result<()> {
        let dir = self.checkpoint_dir(node_key);
        let doomed = self.tmp_dir().join(fsutil::unique_name("ckpt-del-"));
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("moving checkpoints {} aside", dir.display())))
            }
        }
        fsutil::remove_tree_racy(&doomed)
    }

    /// Checks every checkpoint file (used by `verify`): (ok, damaged) counts.
    pub(crate) fn verify_checkpoints(&self) -> Result<(usize, Vec<PathBuf>)> {
        let mut ok = 0;
        let mut bad = Vec::new();
        for dir in fsutil::list_dir(&self.dir("checkpoints"))? {
            let Some(key) = dir
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<Digest>().ok())
            else {
                continue;
            };
            for (step, path) in self.checkpoint_files(&key)? {
                let Some(bytes) = fsutil::read_opt(&path)? else {
                    continue;
                };
                match decode(step, bytes) {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        self.quarantine_checkpoint(&key, &path, &e)?;
                        bad.push(path);
                    }
                }
            }
        }
        Ok((ok, bad))
    }
}
