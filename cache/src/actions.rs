//! Action records: an action key (a digest the engine computes from a node's
//! inputs, code and parameters) maps to the digest of its output blob.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::digest::canonical_json;
use crate::{fsutil, Digest, KeyHasher, Store};

/// What an action produced. `provenance` is the engine's business and is
/// stored verbatim (it must be JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Digest of the output blob.
    pub output: Digest,
    /// Free-form JSON from the engine (what ran, when, with what).
    pub provenance: serde_json::Value,
}

/// The file format: the record plus a self-check, so a damaged file is a miss
/// rather than a wrong answer.
#[derive(Serialize, Deserialize)]
struct ActionFile {
    format: u32,
    output: Digest,
    provenance: serde_json::Value,
    check: Digest,
}

fn check_of(output: &Digest, provenance: &serde_json::Value) -> Digest {
    KeyHasher::new("mpfnet-cache/action-record")
        .with_digest(output)
        .str(&canonical_json(provenance))
        .digest()
}

/// Parses an action file; `Err` says why it is unusable.
pub(crate) fn parse_action(bytes: &[u8]) -> Result<ActionRecord> {
    let f: ActionFile = serde_json::from_slice(bytes).context("not a valid action record")?;
    if f.format != 1 {
        bail!("unknown action record format {}", f.format);
    }
    if check_of(&f.output, &f.provenance) != f.check {
        bail!("action record self-check failed");
    }
    Ok(ActionRecord {
        output: f.output,
        provenance: f.provenance,
    })
}

impl Store {
    fn action_path(&self, key: &Digest) -> std::path::PathBuf {
        self.sharded("actions", key, ".json")
    }

    /// Records that action `key` produced `rec.output` (which must already be
    /// stored). Atomic; a later record for the same key replaces it.
    pub fn put_action(&self, key: &Digest, rec: &ActionRecord) -> Result<()> {
        if !self.has_blob(&rec.output) {
            bail!(
                "action {key}: output blob {} is not in the store (put_blob first)",
                rec.output
            );
        }
        let file = ActionFile {
            format: 1,
            output: rec.output,
            provenance: rec.provenance.clone(),
            check: check_of(&rec.output, &rec.provenance),
        };
        let mut json = serde_json::to_vec(&file).context("serializing action record")?;
        json.push(b'\n');
        fsutil::write_atomic(
            &self.tmp_dir(),
            &self.action_path(key),
            &json,
            false,
            self.sharing,
        )
        .with_context(|| format!("storing action {key}"))
    }

    /// The record of action `key`, or `None` on a miss. A damaged record is
    /// quarantined with a warning and reported as a miss; so is (without
    /// quarantine) one whose output blob is gone.
    pub fn get_action(&self, key: &Digest) -> Result<Option<ActionRecord>> {
        let path = self.action_path(key);
        let Some(bytes) = fsutil::read_opt(&path)? else {
            return Ok(None);
        };
        match parse_action(&bytes) {
            Ok(rec) if self.has_blob(&rec.output) => Ok(Some(rec)),
            Ok(rec) => {
                tracing::debug!(action = %key, output = %rec.output, "action output blob missing: miss");
                Ok(None)
            }
            Err(e) => {
                self.quarantine_action(key, &path, &e)?;
                Ok(None)
            }
        }
    }

    pub(crate) fn quarantine_action(
        &self,
        key: &Digest,
        path: &Path,
        why: &anyhow::Error,
    ) -> Result<()> {
        let q = fsutil::quarantine(&self.quarantine_dir(), path, "action")?;
        tracing::warn!(
            action = %key,
            path = %path.display(),
            quarantined = ?q,
            "damaged action record ({why:#}): treated as a miss"
        );
        Ok(())
    }

    /// Removes the record of action `key` (its output blob stays until `gc`).
    /// Returns whether there was one.
    pub fn remove_action(&self, key: &Digest) -> Result<bool> {
        fsutil::remove_file_opt(&self.action_path(key))
    }

    /// All action keys in the store, sorted.
    pub fn list_actions(&self) -> Result<Vec<Digest>> {
        Ok(self
            .list_sharded("actions", ".json")?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }
}
