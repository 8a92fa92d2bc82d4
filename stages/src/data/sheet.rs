//! Reading annotation sheets (`.xlsx`/`.xls`/`.ods` through calamine, or `.csv`) as text cells,
//! and finding a header row by its cells rather than by position.

use anyhow::{bail, Context, Result};
use calamine::{open_workbook_auto, Data, Reader};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One sheet as text cells, each row with its 1-based row number as a spreadsheet shows it.
#[derive(Debug, Clone)]
pub struct Table {
    pub file: PathBuf,
    pub sheet: Option<String>,
    pub rows: Vec<(usize, Vec<String>)>,
}

/// A table whose header row was found: data rows follow it.
#[derive(Debug, Clone)]
pub struct Located {
    pub table: Table,
    /// Position of the header in `table.rows`.
    pub header_pos: usize,
    /// Normalised header name -> column.
    pub cols: BTreeMap<String, usize>,
}

/// Header names are compared lower-case with everything but letters and digits removed, so
/// `OnsetFrame`, `Onset Frame` and `onset_frame` are one name.
pub fn norm_header(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(|c| c.to_lowercase())
        .collect()
}

fn cell_text(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::String(s) => s.trim().to_string(),
        Data::Int(i) => i.to_string(),
        // Frame numbers are stored as floats by Excel: print 46.0 as 46.
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(d) => d.as_f64().to_string(),
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => format!("#{e:?}"),
    }
}

/// Reads every sheet of a workbook, or the single table of a CSV file.
pub fn read_tables(path: &Path) -> Result<Vec<Table>> {
    if !path.is_file() {
        bail!("annotation sheet not found: {}", path.display());
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_lowercase();
    if ext == "csv" {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let rows = parse_csv(&text)
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i + 1, r))
            .collect();
        return Ok(vec![Table {
            file: path.to_path_buf(),
            sheet: None,
            rows,
        }]);
    }
    let mut wb = open_workbook_auto(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for name in wb.sheet_names() {
        let range = wb
            .worksheet_range(&name)
            .with_context(|| format!("reading sheet {name} of {}", path.display()))?;
        let (r0, c0) = range.start().unwrap_or((0, 0));
        let rows = range
            .rows()
            .enumerate()
            .map(|(i, r)| {
                // Keep absolute columns so blank leading columns do not shift names.
                let mut cells = vec![String::new(); c0 as usize];
                cells.extend(r.iter().map(cell_text));
                (r0 as usize + i + 1, cells)
            })
            .collect();
        out.push(Table {
            file: path.to_path_buf(),
            sheet: Some(name),
            rows,
        });
    }
    Ok(out)
}

/// Finds, in the first sheet that has one, the first row (within the first 100) containing all
/// `required` header names.
pub fn locate(path: &Path, required: &[&str]) -> Result<Located> {
    let req: Vec<String> = required.iter().map(|s| norm_header(s)).collect();
    for table in read_tables(path)? {
        for (pos, (_, cells)) in table.rows.iter().enumerate().take(100) {
            let mut cols = BTreeMap::new();
            for (c, v) in cells.iter().enumerate() {
                let n = norm_header(v);
                if !n.is_empty() {
                    cols.entry(n).or_insert(c);
                }
            }
            if req.iter().all(|r| cols.contains_key(r)) {
                return Ok(Located {
                    table,
                    header_pos: pos,
                    cols,
                });
            }
        }
    }
    bail!(
        "{}: no header row with the columns {} (looked at the first 100 rows of every sheet)",
        path.display(),
        required.join(", ")
    )
}

impl Located {
    /// Data rows after the header, skipping rows whose cells are all empty.
    pub fn data_rows(&self) -> impl Iterator<Item = &(usize, Vec<String>)> {
        self.table.rows[self.header_pos + 1..]
            .iter()
            .filter(|(_, cells)| cells.iter().any(|c| !c.trim().is_empty()))
    }

    /// The cell under header `name` (any spelling), or "" if the row is short or the column absent.
    pub fn get<'a>(&self, cells: &'a [String], name: &str) -> &'a str {
        self.cols
            .get(&norm_header(name))
            .and_then(|&c| cells.get(c))
            .map(|s| s.trim())
            .unwrap_or("")
    }

    pub fn has(&self, name: &str) -> bool {
        self.cols.contains_key(&norm_header(name))
    }
}

/// RFC 4180 CSV: quoted fields, doubled quotes, CRLF or LF, optional UTF-8 BOM.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            _ => field.push(c),
        }
    }
    if any {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// A subject cell or folder name spelled the dataset's way: trimmed, lower-cased, `prefix`
/// dropped where present, read as a number (as [`parse_frame`]) and given to `spell`.
pub fn subject_number(s: &str, prefix: &str, spell: fn(u32) -> String) -> Option<String> {
    let t = s.trim().to_lowercase();
    parse_frame(t.strip_prefix(prefix).unwrap_or(&t)).map(spell)
}

/// Parses a frame number cell: a non-negative integer (Excel may give `46` or `46.0`).
pub fn parse_frame(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Ok(v) = s.parse::<u32>() {
        return Some(v);
    }
    let f: f64 = s.parse().ok()?;
    (f >= 0.0 && f.fract() == 0.0 && f < u32::MAX as f64).then_some(f as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_crlf() {
        let r = parse_csv("a,\"b,c\",\"d\"\"e\"\r\n1,,3\n");
        assert_eq!(r, vec![vec!["a", "b,c", "d\"e"], vec!["1", "", "3"]]);
        assert_eq!(parse_csv("x,y"), vec![vec!["x", "y"]]);
    }

    #[test]
    fn header_norm_and_frames() {
        assert_eq!(norm_header("Onset Frame"), norm_header("OnsetFrame"));
        assert_eq!(parse_frame("46"), Some(46));
        assert_eq!(parse_frame("46.0"), Some(46));
        assert_eq!(parse_frame("/"), None);
        assert_eq!(parse_frame("-1"), None);
    }
}
