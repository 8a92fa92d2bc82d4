//! The row loop shared by the FACS-coded sheets (CASME II, SAMM): one sample per row with
//! subject, filename, onset/apex/offset frame numbers and an emotion, under each dataset's own
//! header names. Every fault names the sheet, row and column; frames are stat-ed, never read.

use crate::data::index::{Entry, Origin};
use crate::data::sheet::{locate, parse_frame};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A coded sheet's header names for the fields every sample has.
pub(crate) struct Columns {
    pub subject: &'static str,
    pub filename: &'static str,
    pub onset: &'static str,
    pub apex: &'static str,
    /// Optional column: absent or blank means no offset.
    pub offset: &'static str,
    pub emotion: &'static str,
}

/// The sheet a coded dataset reads: `given`, else what `find` picks in `root`; `root` must be a
/// folder (`dataset` names it in the error).
pub(crate) fn sheet_in(
    dataset: &str,
    root: &Path,
    given: &Option<PathBuf>,
    find: fn(&Path) -> Result<PathBuf>,
) -> Result<PathBuf> {
    if !root.is_dir() {
        bail!("{dataset} root not found: {}", root.display());
    }
    match given {
        Some(s) => Ok(s.clone()),
        None => find(root),
    }
}

/// The files in `root` (the `dataset` root) whose lower-case name starts with `prefix` and ends
/// with one of `exts`.
pub(crate) fn sheets_named(
    dataset: &str,
    root: &Path,
    prefix: &str,
    exts: &[&str],
) -> Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(root)
        .with_context(|| format!("reading {dataset} root {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_lowercase();
            n.starts_with(prefix) && exts.iter().any(|e| n.ends_with(e))
        })
        .collect())
}

/// Reads every data row of `sheet` into an [`Entry`] (faulty rows included, with their faults).
/// Sample folders are `frames/<subject>/<filename>`; `find(subject, folder, n)` locates frame
/// `n` in a folder.
pub(crate) fn read_coded_rows(
    dataset: &str,
    sheet: &Path,
    cols: &Columns,
    normalise_subject: fn(&str) -> Option<String>,
    frames: &Path,
    find: &mut dyn FnMut(&str, &Path, u32) -> Option<PathBuf>,
) -> Result<Vec<Entry>> {
    let t = locate(
        sheet,
        &[
            cols.subject,
            cols.filename,
            cols.onset,
            cols.apex,
            cols.emotion,
        ],
    )?;
    let mut out = Vec::new();
    for (row, cells) in t.data_rows() {
        let origin = Origin {
            file: sheet.to_path_buf(),
            sheet: t.table.sheet.clone(),
            row: *row,
        };
        let mut faults = Vec::new();
        let subj_raw = t.get(cells, cols.subject);
        let subject = normalise_subject(subj_raw).unwrap_or_else(|| {
            faults.push(origin.fault(cols.subject, format!("not a subject number: {subj_raw:?}")));
            subj_raw.to_string()
        });
        let filename = t.get(cells, cols.filename).to_string();
        if filename.is_empty() {
            faults.push(origin.fault(cols.filename, "empty"));
        }
        let emotion = t.get(cells, cols.emotion).to_string();
        let onset_raw = t.get(cells, cols.onset);
        let apex_raw = t.get(cells, cols.apex);
        let offset_raw = t.get(cells, cols.offset);
        let onset = parse_frame(onset_raw);
        if onset.is_none() {
            faults.push(origin.fault(cols.onset, format!("not a frame number: {onset_raw:?}")));
        }
        let apex = parse_frame(apex_raw);
        if apex.is_none() {
            let what = if is_blank_frame(apex_raw) {
                "apex missing"
            } else {
                "not a frame number"
            };
            faults.push(origin.fault(cols.apex, format!("{what}: {apex_raw:?}")));
        }
        let offset = parse_frame(offset_raw);
        if offset.is_none() && !is_blank_frame(offset_raw) {
            faults.push(origin.fault(cols.offset, format!("not a frame number: {offset_raw:?}")));
        }
        let frame_dir = frames.join(&subject).join(&filename);
        let folder_known = !faults
            .iter()
            .any(|f| f.field == cols.subject || f.field == cols.filename);
        let ((onset_path, apex_path), more) = check_frames(
            &origin,
            &mut |d: &Path, n: u32| find(&subject, d, n),
            &frame_dir,
            FrameNumbers {
                onset,
                apex,
                offset,
            },
            cols,
            folder_known,
        );
        faults.extend(more);
        out.push(Entry {
            dataset: dataset.to_string(),
            subject,
            filename,
            emotion,
            emotion_field: cols.emotion.into(),
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
fn is_blank_frame(s: &str) -> bool {
    let s = s.trim();
    s.is_empty() || s == "/" || s.parse::<f64>().map(|v| v < 0.0).unwrap_or(false)
}

/// A row's onset, apex and offset frame numbers (None: blank or unreadable).
struct FrameNumbers {
    onset: Option<u32>,
    apex: Option<u32>,
    offset: Option<u32>,
}

/// Checks onset <= apex <= offset and that the onset and apex frames exist. Returns the frame
/// paths (empty when not found) and the faults. `stat_files` is false when the row is already
/// faulty in a way that makes the folder meaningless (no subject, no filename).
fn check_frames(
    origin: &Origin,
    find: &mut dyn FnMut(&Path, u32) -> Option<PathBuf>,
    frame_dir: &Path,
    frames: FrameNumbers,
    cols: &Columns,
    stat_files: bool,
) -> ((PathBuf, PathBuf), Vec<crate::data::Fault>) {
    let FrameNumbers {
        onset,
        mut apex,
        offset,
    } = frames;
    let mut faults = Vec::new();
    if let (Some(o), Some(a)) = (onset, apex) {
        let hi = offset.unwrap_or(u32::MAX);
        if a == o {
            // The method's input is the motion from onset to apex: none here. MEGC2019's
            // composite set leaves such rows out (CASME II CDE: 145 samples, negative 88).
            apex = None;
            faults.push(origin.fault(
                cols.apex,
                format!("apex {a} equals onset: no motion to learn from"),
            ));
        } else if a < o || a > hi {
            // Already faulty: a missing-frame fault on top would only repeat it.
            apex = None;
            let range = match offset {
                Some(off) => format!("{o}..{off}"),
                None => format!("{o}.."),
            };
            faults.push(origin.fault(cols.apex, format!("apex {a} outside onset..offset {range}")));
        }
    }
    if let (Some(o), Some(off)) = (onset, offset) {
        if off < o {
            faults.push(origin.fault(cols.offset, format!("offset {off} before onset {o}")));
        }
    }
    let mut paths = (PathBuf::new(), PathBuf::new());
    if !stat_files {
        return (paths, faults);
    }
    for (n, field, slot) in [
        (onset, cols.onset, &mut paths.0),
        (apex, cols.apex, &mut paths.1),
    ] {
        let Some(n) = n else { continue };
        match find(frame_dir, n) {
            Some(p) => *slot = p,
            // Only stat the folder once a frame is missing, to name the real cause.
            None if !frame_dir.is_dir() => {
                faults.push(origin.fault(
                    cols.filename,
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
