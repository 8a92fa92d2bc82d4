//! SAMM: `SAMM_Micro_FACS_Codes_v2.xlsx` (preamble rows, then a header) and grey-scale frames
//! `SAMM/006/006_1_2/006_05562.jpg`.

use crate::data::coded::{read_coded_rows, sheet_in, sheets_named, Columns};
use crate::data::frames::{list_frames, FrameFinder};
use crate::data::index::{map_entries, Entry};
use crate::data::sheet::parse_frame;
use crate::data::{ClassMap, DatasetIndex, DatasetKind, FaultPolicy, Task};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const NAME: &str = "samm";

/// The columns of `SAMM_Micro_FACS_Codes_v2.xlsx` (below its preamble rows).
const COLUMNS: Columns = Columns {
    subject: "Subject",
    filename: "Filename",
    onset: "Onset Frame",
    apex: "Apex Frame",
    offset: "Offset Frame",
    emotion: "Estimated Emotion",
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// Folder holding the sheet and the `SAMM` frame folder.
    pub root: PathBuf,
    /// Default: `SAMM_Micro_FACS_Codes_v2.xlsx`, else the first `SAMM_Micro_FACS_Codes*` sheet.
    pub sheet: Option<PathBuf>,
    /// Default: `root/SAMM` if it exists, else `root`.
    pub frames: Option<PathBuf>,
    /// Zero-padded width of frame numbers (5 in the release); other widths are found by
    /// listing the sample folder when a frame is not where this says.
    pub digits: usize,
    pub task: Task,
    pub class_map: Option<ClassMap>,
    pub policy: FaultPolicy,
}

impl Options {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            sheet: None,
            frames: None,
            digits: 5,
            task: Task::Sde,
            class_map: None,
            policy: FaultPolicy::Skip,
        }
    }
}

/// `6`, `06`, `006`, `6.0` -> `006`.
pub fn normalise_subject(s: &str) -> Option<String> {
    parse_frame(s).map(|n| format!("{n:03}"))
}

fn find_sheet(root: &Path) -> Result<PathBuf> {
    let default = root.join("SAMM_Micro_FACS_Codes_v2.xlsx");
    if default.is_file() {
        return Ok(default);
    }
    let exts = [".xlsx", ".xls", ".csv"];
    let mut found = sheets_named("SAMM", root, "samm_micro_facs_codes", &exts)?;
    found.sort();
    match found.into_iter().next() {
        Some(p) => Ok(p),
        None => bail!(
            "no SAMM sheet ({} or SAMM_Micro_FACS_Codes*.xlsx) in {}",
            default.display(),
            root.display()
        ),
    }
}

pub fn scan(opts: &Options) -> Result<Vec<Entry>> {
    let sheet = sheet_in("SAMM", &opts.root, &opts.sheet, find_sheet)?;
    let frames = opts.frames.clone().unwrap_or_else(|| {
        let f = opts.root.join("SAMM");
        if f.is_dir() {
            f
        } else {
            opts.root.clone()
        }
    });
    if !frames.is_dir() {
        bail!("SAMM frame folder not found: {}", frames.display());
    }
    let mut finder = FrameFinder::new("", Some(opts.digits));
    read_coded_rows(
        NAME,
        &sheet,
        &COLUMNS,
        normalise_subject,
        &frames,
        &mut |subject, dir, n| {
            finder.prefix = format!("{subject}_");
            finder.find(dir, n).or_else(|| {
                // Another digit count or prefix: look the number up in the folder listing.
                list_frames(dir)
                    .ok()?
                    .into_iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, p)| p)
            })
        },
    )
}

pub fn load(opts: &Options) -> Result<DatasetIndex> {
    let entries = scan(opts)?;
    let map = ClassMap::chosen_or_default(opts.class_map.as_ref(), DatasetKind::Samm, opts.task);
    map_entries(NAME, &entries, &map, opts.policy)
}
