//! Locating frame files by number without reading them.

use std::path::{Path, PathBuf};

/// Frame extensions tried, in order (upper-case variants too).
pub const EXTENSIONS: [&str; 4] = ["jpg", "png", "bmp", "jpeg"];

/// Finds frame files named `{prefix}{number}.{ext}`, remembering the extension that last
/// matched so that a whole dataset costs about one `stat` per frame looked up.
#[derive(Debug, Clone)]
pub struct FrameFinder {
    pub prefix: String,
    /// Zero-padded width; `None` for plain numbers (`img46`).
    pub digits: Option<usize>,
    last_ext: String,
}

impl FrameFinder {
    pub fn new(prefix: impl Into<String>, digits: Option<usize>) -> Self {
        Self {
            prefix: prefix.into(),
            digits,
            last_ext: EXTENSIONS[0].to_string(),
        }
    }

    fn name(&self, n: u32, ext: &str) -> String {
        match self.digits {
            Some(d) => format!("{}{:0d$}.{}", self.prefix, n, ext, d = d),
            None => format!("{}{}.{}", self.prefix, n, ext),
        }
    }

    /// The path of frame `n` in `dir`, if a file with a known extension exists.
    pub fn find(&mut self, dir: &Path, n: u32) -> Option<PathBuf> {
        let p = dir.join(self.name(n, &self.last_ext));
        if p.is_file() {
            return Some(p);
        }
        let candidates = EXTENSIONS
            .iter()
            .map(|e| e.to_string())
            .chain(EXTENSIONS.iter().map(|e| e.to_uppercase()));
        for ext in candidates {
            if ext == self.last_ext {
                continue;
            }
            let p = dir.join(self.name(n, &ext));
            if p.is_file() {
                self.last_ext = ext;
                return Some(p);
            }
        }
        None
    }
}

/// The number at the end of a file stem and its digit count: `006_05562` -> (5562, 5).
pub fn trailing_number(stem: &str) -> Option<(u32, usize)> {
    let digits: String = stem
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if digits.is_empty() {
        return None;
    }
    digits.parse().ok().map(|n| (n, digits.len()))
}

pub fn is_frame_file(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| EXTENSIONS.contains(&e.to_lowercase().as_str()))
        .unwrap_or(false)
}

/// The numbered frame files of a folder, sorted by number (reads the directory, not the files).
pub fn list_frames(dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if !is_frame_file(&p) {
            continue;
        }
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if let Some((n, _)) = trailing_number(stem) {
            out.push((n, p));
        }
    }
    out.sort();
    Ok(out)
}

/// Sub-folders of `dir`, sorted naturally by name.
pub fn sub_dirs(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            if let Some(n) = e.file_name().to_str() {
                out.push((n.to_string(), e.path()));
            }
        }
    }
    out.sort_by(|a, b| crate::data::folds::natural_cmp(&a.0, &b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing() {
        assert_eq!(trailing_number("006_05562"), Some((5562, 5)));
        assert_eq!(trailing_number("reg_img46"), Some((46, 2)));
        assert_eq!(trailing_number("onset"), None);
    }
}
