//! CASME II: coding sheet (`CASME2-coding-*.xlsx` or a `.csv` with the same header) and frames
//! in the raw (`CASME2_RAW_selected/sub01/EP02_01f/img46.jpg`) or registered-crop
//! (`Cropped/sub01/EP02_01f/reg_img46.jpg`) layout.

use crate::data::frames::FrameFinder;
use crate::data::index::{map_entries, Entry, Origin};
use crate::data::sheet::{locate, parse_frame};
use crate::data::{ClassMap, DatasetIndex, DatasetKind, FaultPolicy, Task};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const NAME: &str = "casme2";

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

    pub fn class_map(&self) -> ClassMap {
        self.class_map
            .clone()
            .unwrap_or_else(|| ClassMap::default_for(DatasetKind::Casme2, self.task))
    }
}

/// `1`, `01`, `1.0`, `sub1`, `sub01` -> `sub01`.
pub fn normalise_subject(s: &str) -> Option<String> {
    let t = s.trim().to_lowercase();
    let digits = t.strip_prefix("sub").unwrap_or(&t);
    parse_frame(digits).map(|n| format!("sub{n:02}"))
}

fn find_sheet(root: &Path) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("reading CASME II root {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_lowercase();
            n.starts_with("casme2-coding") && (n.ends_with(".xlsx") || n.ends_with(".csv"))
        })
        .collect();
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
    if !opts.root.is_dir() {
        bail!("CASME II root not found: {}", opts.root.display());
    }
    let sheet = match &opts.sheet {
        Some(s) => s.clone(),
        None => find_sheet(&opts.root)?,
    };
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
    let t = locate(
        &sheet,
        &[
            "Subject",
            "Filename",
            "OnsetFrame",
            "ApexFrame",
            "Estimated Emotion",
        ],
    )?;
    let mut finder = FrameFinder::new(opts.layout.prefix(), None);
    let mut out = Vec::new();
    for (row, cells) in t.data_rows() {
        let origin = Origin {
            file: sheet.clone(),
            sheet: t.table.sheet.clone(),
            row: *row,
        };
        let mut faults = Vec::new();
        let subj_raw = t.get(cells, "Subject");
        let subject = normalise_subject(subj_raw).unwrap_or_else(|| {
            faults.push(origin.fault("Subject", format!("not a subject number: {subj_raw:?}")));
            subj_raw.to_string()
        });
        let filename = t.get(cells, "Filename").to_string();
        if filename.is_empty() {
            faults.push(origin.fault("Filename", "empty"));
        }
        let emotion = t.get(cells, "Estimated Emotion").to_string();
        let onset_raw = t.get(cells, "OnsetFrame");
        let apex_raw = t.get(cells, "ApexFrame");
        let offset_raw = t.get(cells, "OffsetFrame");
        let onset = parse_frame(onset_raw);
        if onset.is_none() {
            faults.push(origin.fault("OnsetFrame", format!("not a frame number: {onset_raw:?}")));
        }
        let apex = parse_frame(apex_raw);
        if apex.is_none() {
            let what = if is_blank_frame(apex_raw) {
                "apex missing"
            } else {
                "not a frame number"
            };
            faults.push(origin.fault("ApexFrame", format!("{what}: {apex_raw:?}")));
        }
        let offset = parse_frame(offset_raw);
        if offset.is_none() && !is_blank_frame(offset_raw) {
            faults.push(origin.fault("OffsetFrame", format!("not a frame number: {offset_raw:?}")));
        }
        let frame_dir = frames.join(&subject).join(&filename);
        let folder_known = !faults
            .iter()
            .any(|f| f.field == "Subject" || f.field == "Filename");
        let entry_faults = check_frames(
            &origin,
            &mut |d: &Path, n: u32| finder.find(d, n),
            &frame_dir,
            onset,
            apex,
            offset,
            ("OnsetFrame", "ApexFrame", "OffsetFrame"),
            folder_known,
        );
        faults.extend(entry_faults.1);
        let (onset_path, apex_path) = entry_faults.0;
        out.push(Entry {
            dataset: NAME.to_string(),
            subject,
            filename,
            emotion,
            emotion_field: "Estimated Emotion".into(),
            onset_frame: onset.unwrap_or(0),
            apex_frame: apex.unwrap_or(0),
            offset_frame: offset,
            onset_path,
            apex_path,
            frame_dir,
            origin,
            faults,
        });
    }
    Ok(out)
}

/// An absent frame number: empty, `/`, or a negative placeholder such as `-1`.
pub(crate) fn is_blank_frame(s: &str) -> bool {
    let s = s.trim();
    s.is_empty() || s == "/" || s.parse::<f64>().map(|v| v < 0.0).unwrap_or(false)
}

/// Checks onset <= apex <= offset and that the onset and apex frames exist. Returns the frame
/// paths (empty when not found) and the faults. `stat_files` is false when the row is already
/// faulty in a way that makes the folder meaningless (no subject, no filename).
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_frames(
    origin: &Origin,
    find: &mut dyn FnMut(&Path, u32) -> Option<PathBuf>,
    frame_dir: &Path,
    onset: Option<u32>,
    apex: Option<u32>,
    offset: Option<u32>,
    fields: (&str, &str, &str),
    stat_files: bool,
) -> ((PathBuf, PathBuf), Vec<crate::data::Fault>) {
    let mut faults = Vec::new();
    let mut apex = apex;
    if let (Some(o), Some(a)) = (onset, apex) {
        let hi = offset.unwrap_or(u32::MAX);
        if a < o || a > hi {
            // Already faulty: a missing-frame fault on top would only repeat it.
            apex = None;
            let range = match offset {
                Some(off) => format!("{o}..{off}"),
                None => format!("{o}.."),
            };
            faults.push(origin.fault(fields.1, format!("apex {a} outside onset..offset {range}")));
        }
    }
    if let (Some(o), Some(off)) = (onset, offset) {
        if off < o {
            faults.push(origin.fault(fields.2, format!("offset {off} before onset {o}")));
        }
    }
    let mut paths = (PathBuf::new(), PathBuf::new());
    if !stat_files {
        return (paths, faults);
    }
    for (n, field, slot) in [
        (onset, fields.0, &mut paths.0),
        (apex, fields.1, &mut paths.1),
    ] {
        let Some(n) = n else { continue };
        match find(frame_dir, n) {
            Some(p) => *slot = p,
            // Only stat the folder once a frame is missing, to name the real cause.
            None if !frame_dir.is_dir() => {
                faults.push(origin.fault(
                    "Filename",
                    format!("sample folder not found: {}", frame_dir.display()),
                ));
                break;
            }
            None => faults.push(origin.fault(
                field,
                format!("frame {n} not found in {}", frame_dir.display()),
            )),
        }
    }
    (paths, faults)
}

/// Loads CASME II under the options' task / class map and fault policy.
pub fn load(opts: &Options) -> Result<DatasetIndex> {
    let entries = scan(opts)?;
    map_entries(NAME, &entries, &opts.class_map(), opts.policy)
}
