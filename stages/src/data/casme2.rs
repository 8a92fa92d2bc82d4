//! CASME II: coding sheet (`CASME2-coding-*.xlsx` or a `.csv` with the same header) and frames
//! in the raw (`CASME2_RAW_selected/sub01/EP02_01f/img46.jpg`) or registered-crop
//! (`Cropped/sub01/EP02_01f/reg_img46.jpg`) layout.

use crate::data::coded::{read_coded_rows, sheet_in, sheets_named, Columns};
use crate::data::frames::FrameFinder;
use crate::data::index::{map_entries, Entry};
use crate::data::sheet::subject_number;
use crate::data::{ClassMap, DatasetIndex, DatasetKind, FaultPolicy, Task};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const NAME: &str = "casme2";

/// The coding sheet's columns (`CASME2-coding-20190701.xlsx`).
const COLUMNS: Columns = Columns {
    subject: "Subject",
    filename: "Filename",
    onset: "OnsetFrame",
    apex: "ApexFrame",
    offset: "OffsetFrame",
    emotion: "Estimated Emotion",
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `CASME2_RAW_selected/subNN/EPxx/imgN.jpg`
    Raw,
    /// `Cropped/subNN/EPxx/reg_imgN.jpg`
    #[default]
    Cropped,
}

impl Layout {
    pub fn folder(self) -> &'static str {
        match self {
            Layout::Raw => "CASME2_RAW_selected",
            Layout::Cropped => "Cropped",
        }
    }
    pub fn prefix(self) -> &'static str {
        match self {
            Layout::Raw => "img",
            Layout::Cropped => "reg_img",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// Folder holding the coding sheet and the frame folder.
    pub root: PathBuf,
    /// Coding sheet; default: the first `CASME2-coding*.xlsx` (then `.csv`) in `root`.
    pub sheet: Option<PathBuf>,
    pub layout: Layout,
    /// Frame folder; default `root/CASME2_RAW_selected` or `root/Cropped`.
    pub frames: Option<PathBuf>,
    pub task: Task,
    /// Overrides the task's default map.
    pub class_map: Option<ClassMap>,
    pub policy: FaultPolicy,
}

impl Options {
    pub fn new(root: impl Into<PathBuf>, layout: Layout) -> Self {
        Self {
            root: root.into(),
            sheet: None,
            layout,
            frames: None,
            task: Task::Sde,
            class_map: None,
            policy: FaultPolicy::Skip,
        }
    }
}

/// `1`, `01`, `1.0`, `sub1`, `sub01` -> `sub01`.
pub fn normalise_subject(s: &str) -> Option<String> {
    subject_number(s, "sub", |n| format!("sub{n:02}"))
}

fn find_sheet(root: &Path) -> Result<PathBuf> {
    let mut found = sheets_named("CASME II", root, "casme2-coding", &[".xlsx", ".csv"])?;
    // xlsx before csv, then by name.
    found.sort_by_key(|p| (!p.to_string_lossy().ends_with(".xlsx"), p.clone()));
    match found.into_iter().next() {
        Some(p) => Ok(p),
        None => bail!(
            "no CASME II coding sheet (CASME2-coding*.xlsx or .csv) in {}",
            root.display()
        ),
    }
}

/// Reads the sheet and checks every row against the frames (one `stat` per onset/apex frame).
pub fn scan(opts: &Options) -> Result<Vec<Entry>> {
    let sheet = sheet_in("CASME II", &opts.root, &opts.sheet, find_sheet)?;
    let frames = opts
        .frames
        .clone()
        .unwrap_or_else(|| opts.root.join(opts.layout.folder()));
    if !frames.is_dir() {
        bail!(
            "CASME II frame folder not found: {} (layout {:?})",
            frames.display(),
            opts.layout
        );
    }
    let mut finder = FrameFinder::new(opts.layout.prefix(), None);
    read_coded_rows(
        NAME,
        &sheet,
        &COLUMNS,
        normalise_subject,
        &frames,
        &mut |_, dir, n| finder.find(dir, n),
    )
}

/// Loads CASME II under the options' task / class map and fault policy.
pub fn load(opts: &Options) -> Result<DatasetIndex> {
    let entries = scan(opts)?;
    let map = ClassMap::chosen_or_default(opts.class_map.as_ref(), DatasetKind::Casme2, opts.task);
    map_entries(NAME, &entries, &map, opts.policy)
}
