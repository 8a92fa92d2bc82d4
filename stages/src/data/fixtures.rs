//! Writers for small dataset trees in the official layouts, for tests and benchmarks (and for
//! pipeline tests downstream): sheets through rust_xlsxwriter, tiny encoded frames.

use crate::data::casme2::Layout;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// A spreadsheet cell to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Str(String),
    Num(f64),
    Empty,
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Str(s.to_string())
    }
}
impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Str(s)
    }
}
impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Cell::Num(v)
    }
}
impl From<u32> for Cell {
    fn from(v: u32) -> Self {
        Cell::Num(v as f64)
    }
}

/// Writes one sheet; row 0 of `rows` is spreadsheet row 1.
pub fn write_xlsx(path: &Path, sheet: &str, rows: &[Vec<Cell>]) -> Result<()> {
    use rust_xlsxwriter::{DocProperties, ExcelDateTime, Workbook};
    let mut wb = Workbook::new();
    // A fixed creation date keeps the file byte-identical across runs.
    let date = ExcelDateTime::from_ymd(2014, 5, 8)?;
    wb.set_properties(&DocProperties::new().set_creation_datetime(&date));
    let ws = wb.add_worksheet();
    ws.set_name(sheet)?;
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            match cell {
                Cell::Str(s) => {
                    ws.write_string(r as u32, c as u16, s)?;
                }
                Cell::Num(v) => {
                    ws.write_number(r as u32, c as u16, *v)?;
                }
                Cell::Empty => {}
            }
        }
    }
    wb.save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes rows as CSV (fields with commas or quotes are quoted).
pub fn write_csv(path: &Path, rows: &[Vec<String>]) -> Result<()> {
    let q = |s: &String| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.clone()
        }
    };
    let text: String = rows
        .iter()
        .map(|r| r.iter().map(q).collect::<Vec<_>>().join(",") + "\n")
        .collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A small grey frame encoded as `ext` (jpg, png or bmp), with a bright square of side `blob`
/// in the centre (so frames can differ).
pub fn tiny_frame(ext: &str, size: u32, shade: u8, blob: u32) -> Result<Vec<u8>> {
    let img = image::RgbImage::from_fn(size, size, |x, y| {
        let c = size / 2;
        let inside = x + blob / 2 >= c
            && x < c + blob.div_ceil(2)
            && y + blob / 2 >= c
            && y < c + blob.div_ceil(2);
        let v = if inside { 250 } else { shade };
        image::Rgb([v, v, v])
    });
    let fmt = image::ImageFormat::from_extension(ext)
        .with_context(|| format!("unknown image extension {ext}"))?;
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, fmt)?;
    Ok(buf.into_inner())
}

/// CASME II sheet header in the real column layout (two blank columns).
pub fn casme2_header() -> Vec<Cell> {
    [
        "Subject",
        "Filename",
        "",
        "OnsetFrame",
        "ApexFrame",
        "OffsetFrame",
        "",
        "Action Units",
        "Estimated Emotion",
    ]
    .iter()
    .map(|s| {
        if s.is_empty() {
            Cell::Empty
        } else {
            (*s).into()
        }
    })
    .collect()
}

/// A CASME II sheet row: subject number, filename, onset, apex cell, offset, AUs, emotion.
pub fn casme2_row(
    subject: u32,
    filename: &str,
    onset: u32,
    apex: Cell,
    offset: u32,
    emotion: &str,
) -> Vec<Cell> {
    vec![
        subject.into(),
        filename.into(),
        Cell::Empty,
        onset.into(),
        apex,
        offset.into(),
        Cell::Empty,
        "12".into(),
        emotion.into(),
    ]
}

/// Writes the frames `frames` of one CASME II sample, `(subject, filename)`, as `ext` files
/// (same bytes for each frame).
pub fn casme2_frames(
    root: &Path,
    layout: Layout,
    (subject, filename): (&str, &str),
    frames: std::ops::RangeInclusive<u32>,
    ext: &str,
    bytes: &[u8],
) -> Result<PathBuf> {
    let dir = root.join(layout.folder()).join(subject).join(filename);
    std::fs::create_dir_all(&dir)?;
    for n in frames {
        std::fs::write(dir.join(format!("{}{n}.{ext}", layout.prefix())), bytes)?;
    }
    Ok(dir)
}

/// A valid CASME II tree of `subjects` x `per_subject` samples, each with `frames` tiny JPEG
/// frames, emotions cycling through the five SDE classes. Returns the sheet path.
pub fn casme2_tree(
    root: &Path,
    layout: Layout,
    subjects: u32,
    per_subject: u32,
    frames: u32,
) -> Result<PathBuf> {
    let bytes = tiny_frame("jpg", 8, 100, 2)?;
    let mut rows = vec![casme2_header()];
    for s in 1..=subjects {
        for k in 0..per_subject {
            let name = format!("EP{:02}_{:02}", k / 3 + 1, k % 3 + 1);
            let onset = 10 + k;
            let (apex, offset) = (onset + frames / 2, onset + frames - 1);
            rows.push(casme2_row(
                s,
                &name,
                onset,
                apex.into(),
                offset,
                crate::data::synth::EMOTIONS[(s + k) as usize % 5],
            ));
            let sample = (format!("sub{s:02}"), name);
            casme2_frames(
                root,
                layout,
                (&sample.0, &sample.1),
                onset..=offset,
                "jpg",
                &bytes,
            )?;
        }
    }
    let sheet = root.join("CASME2-coding-20140508.xlsx");
    write_xlsx(&sheet, "Sheet1", &rows)?;
    Ok(sheet)
}
