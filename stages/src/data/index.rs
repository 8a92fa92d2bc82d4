//! The sample index every loader produces, and fault reporting.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// One micro-expression clip: where its onset and apex frames are and what class it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Unique within an index, e.g. `casme2/sub01/EP02_01f`.
    pub id: String,
    /// `casme2`, `samm`, `smic`, or the manifest's name.
    pub dataset: String,
    /// Normalised subject as the folders spell it: `sub01`, `006`, `s1`.
    pub subject: String,
    /// Sample folder name, e.g. `EP02_01f`, `006_1_2`, `s1_ne_01`.
    pub filename: String,
    /// Emotion as written in the sheet (or the SMIC folder).
    pub emotion: String,
    /// Position in [`DatasetIndex::classes`].
    pub class: usize,
    pub onset_frame: u32,
    pub apex_frame: u32,
    pub offset_frame: Option<u32>,
    pub onset_path: PathBuf,
    pub apex_path: PathBuf,
    pub frame_dir: PathBuf,
}

/// A problem with one row (or folder) of a dataset's annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub file: PathBuf,
    pub sheet: Option<String>,
    /// 1-based row as a spreadsheet shows it; 0 where the fault is not about a row (a folder).
    pub row: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Fault {
    /// `FILE, sheet S, row R, field F: message` (the sheet and row parts are left out when absent).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(s) = &self.sheet {
            write!(f, ", sheet {s}")?;
        }
        if self.row > 0 {
            write!(f, ", row {}", self.row)?;
        }
        write!(f, ", field {}: {}", self.field, self.message)
    }
}

/// What to do with faulty rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultPolicy {
    /// Warn (`tracing::warn!`) and drop the row; the fault stays in [`DatasetIndex::faults`].
    #[default]
    Skip,
    /// Return an error listing every fault.
    Fail,
}

/// The samples of one dataset under one class map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetIndex {
    pub name: String,
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
    /// Rows dropped under [`FaultPolicy::Skip`].
    pub faults: Vec<Fault>,
}

impl DatasetIndex {
    /// Subjects in natural order (`sub2` < `sub10`).
    pub fn subjects(&self) -> Vec<String> {
        let mut s: Vec<String> = self.samples.iter().map(|x| x.subject.clone()).collect();
        s.sort_by(|a, b| crate::data::folds::natural_cmp(a, b));
        s.dedup();
        s
    }

    /// Number of samples per class, in class order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for s in &self.samples {
            c[s.class] += 1;
        }
        c
    }

    /// Samples of each subject per class: `(subject, counts)` in natural subject order.
    pub fn subject_class_counts(&self) -> Vec<(String, Vec<usize>)> {
        self.subjects()
            .into_iter()
            .map(|subj| {
                let mut c = vec![0; self.classes.len()];
                for s in self.samples.iter().filter(|s| s.subject == subj) {
                    c[s.class] += 1;
                }
                (subj, c)
            })
            .collect()
    }

    /// Looks a sample up by its id.
    pub fn get(&self, id: &str) -> Option<&Sample> {
        self.samples.iter().find(|s| s.id == id)
    }
}

/// Applies a [`FaultPolicy`] to what a loader found: logs and keeps the faults under `Skip`,
/// or fails with all of them listed under `Fail`.
pub fn finish(
    name: &str,
    classes: Vec<String>,
    samples: Vec<Sample>,
    faults: Vec<Fault>,
    policy: FaultPolicy,
) -> anyhow::Result<DatasetIndex> {
    if !faults.is_empty() {
        match policy {
            FaultPolicy::Fail => {
                let list: Vec<String> = faults.iter().map(|f| format!("  {f}")).collect();
                anyhow::bail!(
                    "{name}: {} faulty row(s):\n{}",
                    faults.len(),
                    list.join("\n")
                );
            }
            FaultPolicy::Skip => {
                for f in &faults {
                    tracing::warn!(dataset = name, "skipping faulty row: {f}");
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for s in &samples {
        anyhow::ensure!(
            seen.insert(s.id.as_str()),
            "{name}: duplicate sample id {}",
            s.id
        );
    }
    Ok(DatasetIndex {
        name: name.to_string(),
        classes,
        samples,
        faults,
    })
}

/// Where an annotation row came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub file: PathBuf,
    pub sheet: Option<String>,
    pub row: usize,
}

impl Origin {
    pub fn fault(&self, field: &str, message: impl Into<String>) -> Fault {
        Fault {
            file: self.file.clone(),
            sheet: self.sheet.clone(),
            row: self.row,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// One annotation row checked against the frame files, before class mapping. Datasets are
/// scanned into entries once; [`map_entries`] turns them into an index for a class map, and the
/// MEGC2019 loader looks them up by subject and filename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub dataset: String,
    pub subject: String,
    pub filename: String,
    pub emotion: String,
    /// Field name of the emotion (for faults).
    pub emotion_field: String,
    pub onset_frame: u32,
    pub apex_frame: u32,
    pub offset_frame: Option<u32>,
    pub onset_path: PathBuf,
    pub apex_path: PathBuf,
    pub frame_dir: PathBuf,
    pub origin: Origin,
    /// Problems other than the label; an entry with faults never becomes a sample.
    pub faults: Vec<Fault>,
}

impl Entry {
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.dataset, self.subject, self.filename)
    }

    pub fn to_sample(&self, class: usize) -> Sample {
        Sample {
            id: self.id(),
            dataset: self.dataset.clone(),
            subject: self.subject.clone(),
            filename: self.filename.clone(),
            emotion: self.emotion.clone(),
            class,
            onset_frame: self.onset_frame,
            apex_frame: self.apex_frame,
            offset_frame: self.offset_frame,
            onset_path: self.onset_path.clone(),
            apex_path: self.apex_path.clone(),
            frame_dir: self.frame_dir.clone(),
        }
    }
}

/// Applies a class map to scanned entries: dropped emotions are left out silently, unknown
/// emotions and entry faults are faults, duplicates (same subject and filename) are faults.
pub fn map_entries(
    name: &str,
    entries: &[Entry],
    map: &crate::data::ClassMap,
    policy: FaultPolicy,
) -> anyhow::Result<DatasetIndex> {
    use crate::data::Label;
    let mut samples = Vec::new();
    let mut faults = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for e in entries {
        let mut f = Vec::new();
        let class = match map.lookup(&e.emotion) {
            Label::Dropped => continue,
            Label::Class(c) => Some(c),
            Label::Unknown => {
                f.push(e.origin.fault(
                    &e.emotion_field,
                    format!("unknown emotion {:?} ({})", e.emotion, map.describe()),
                ));
                None
            }
        };
        f.extend(e.faults.iter().cloned());
        if let Some(first) = seen.get(&e.id()) {
            f.push(e.origin.fault(
                "Filename",
                format!("duplicate sample {} (first at row {first})", e.id()),
            ));
        }
        match (class, f.is_empty()) {
            (Some(c), true) => {
                seen.insert(e.id(), e.origin.row);
                samples.push(e.to_sample(c));
            }
            _ => faults.extend(f),
        }
    }
    finish(name, map.classes.clone(), samples, faults, policy)
}
