//! A manifest CSV for any other dataset: header `subject,sample,label,onset,apex` (an `offset`
//! column is optional), `onset`/`apex` being frame files relative to the CSV's folder.

use crate::data::frames::trailing_number;
use crate::data::index::{map_entries, Entry, Origin};
use crate::data::sheet::locate;
use crate::data::{folds::natural_cmp, ClassMap, DatasetIndex, DatasetKind, FaultPolicy, Task};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub csv: PathBuf,
    /// Dataset name in ids; default: the CSV's file stem.
    pub name: Option<String>,
    pub task: Task,
    /// Default: SDE = one class per label found (natural order); CDE = MEGC2019 relabelling.
    pub class_map: Option<ClassMap>,
    pub policy: FaultPolicy,
}

impl Options {
    pub fn new(csv: impl Into<PathBuf>) -> Self {
        Self {
            csv: csv.into(),
            name: None,
            task: Task::Sde,
            class_map: None,
            policy: FaultPolicy::Skip,
        }
    }
}

pub fn load(opts: &Options) -> Result<DatasetIndex> {
    if !opts.csv.is_file() {
        bail!("manifest not found: {}", opts.csv.display());
    }
    let name = opts.name.clone().unwrap_or_else(|| {
        opts.csv
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "manifest".into())
    });
    let base = opts
        .csv
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let t = locate(&opts.csv, &["subject", "sample", "label", "onset", "apex"])?;
    let mut entries = Vec::new();
    for (row, cells) in t.data_rows() {
        let origin = Origin {
            file: opts.csv.clone(),
            sheet: None,
            row: *row,
        };
        let mut faults = Vec::new();
        let subject = t.get(cells, "subject").to_string();
        let sample = t.get(cells, "sample").to_string();
        for (f, v) in [("subject", &subject), ("sample", &sample)] {
            if v.is_empty() {
                faults.push(origin.fault(f, "empty"));
            }
        }
        let mut frame = |field: &str, idx: u32| -> (PathBuf, u32) {
            let rel = t.get(cells, field);
            if rel.is_empty() {
                faults.push(origin.fault(field, "empty"));
                return (PathBuf::new(), idx);
            }
            let p = base.join(rel);
            if !p.is_file() {
                faults.push(origin.fault(field, format!("frame not found: {}", p.display())));
            }
            // Frame number from the file name's trailing digits; onset 0 / apex 1 otherwise.
            let n = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(trailing_number)
                .map_or(idx, |x| x.0);
            (p, n)
        };
        let (onset_path, onset) = frame("onset", 0);
        let (apex_path, apex) = frame("apex", 1);
        let offset = crate::data::sheet::parse_frame(t.get(cells, "offset"));
        if apex < onset || offset.is_some_and(|o| apex > o) {
            faults.push(origin.fault("apex", format!("apex {apex} outside onset..offset")));
        }
        entries.push(Entry {
            dataset: name.clone(),
            subject,
            filename: sample,
            emotion: t.get(cells, "label").to_string(),
            emotion_field: "label".into(),
            onset_frame: onset,
            apex_frame: apex,
            offset_frame: offset,
            frame_dir: onset_path
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default(),
            onset_path,
            apex_path,
            origin,
            faults,
        });
    }
    let map = match (&opts.class_map, opts.task) {
        (Some(m), _) => m.clone(),
        (None, Task::Cde) => ClassMap::default_for(DatasetKind::Other, Task::Cde),
        (None, Task::Sde) => {
            let mut labels: Vec<String> = entries.iter().map(|e| e.emotion.clone()).collect();
            labels.retain(|l| !l.is_empty());
            labels.sort_by(|a, b| natural_cmp(a, b));
            labels.dedup();
            ClassMap::identity(&labels)
        }
    };
    map_entries(&name, &entries, &map, opts.policy)
}
