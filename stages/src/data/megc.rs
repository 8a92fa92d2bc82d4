//! MEGC2019 composite (CDE): `combined_3class_gt.csv` rows `dataset,subject,filename,label`
//! (0 negative, 1 positive, 2 surprise) over the CASME II, SAMM and SMIC-HS roots.

use crate::data::classes::CDE_CLASSES;
use crate::data::index::{finish, Entry, Origin};
use crate::data::sheet::{parse_csv, parse_frame};
use crate::data::{
    casme2, samm, smic, ClassMap, DatasetIndex, DatasetKind, FaultPolicy, Label, Task,
};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

pub const NAME: &str = "megc2019";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub csv: PathBuf,
    /// Each dataset's own options (their task, class map and policy are not used here).
    pub casme2: Option<casme2::Options>,
    pub samm: Option<samm::Options>,
    pub smic: Option<smic::Options>,
    pub policy: FaultPolicy,
}

/// `casme2`, `CASME II`, `casme_2` -> `casme2`; `SAMM` -> `samm`; `SMIC`, `smic-hs` -> `smic`.
pub fn normalise_dataset(s: &str) -> Option<&'static str> {
    let n = crate::data::sheet::norm_header(s);
    match n.as_str() {
        "casme2" | "casmeii" | "casme" => Some(casme2::NAME),
        "samm" => Some(samm::NAME),
        "smic" | "smichs" | "hs" => Some(smic::NAME),
        _ => None,
    }
}

/// The subject as the dataset's folders spell it.
pub fn normalise_subject(dataset: &str, s: &str) -> Option<String> {
    match dataset {
        casme2::NAME => casme2::normalise_subject(s),
        samm::NAME => samm::normalise_subject(s),
        smic::NAME => smic::normalise_subject(s),
        _ => None,
    }
}

/// Filename key: lower case; SMIC's subject prefix without zero padding (`s01_ne_01` -> `s1_ne_01`).
fn filename_key(dataset: &str, f: &str) -> String {
    let f = f.trim().to_lowercase();
    if dataset == smic::NAME {
        if let Some((head, rest)) = f.split_once('_') {
            if let Some(s) = smic::normalise_subject(head) {
                return format!("{s}_{rest}");
            }
        }
    }
    f
}

pub fn load(opts: &Options) -> Result<DatasetIndex> {
    if !opts.csv.is_file() {
        bail!("MEGC2019 label file not found: {}", opts.csv.display());
    }
    let text = std::fs::read_to_string(&opts.csv)
        .with_context(|| format!("reading {}", opts.csv.display()))?;
    let rows = parse_csv(&text);
    let entries = scan_named(opts, &rows)?;
    let classes: Vec<String> = CDE_CLASSES.iter().map(|s| s.to_string()).collect();
    let mut samples = Vec::new();
    let mut faults = Vec::new();
    let mut seen = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let origin = Origin {
            file: opts.csv.clone(),
            sheet: None,
            row: i + 1,
        };
        let cell = |k: usize| r.get(k).map(|s| s.trim()).unwrap_or("");
        if r.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        // Optional header row.
        if i == 0 && cell(0).eq_ignore_ascii_case("dataset") {
            continue;
        }
        let e = match resolve_row(&entries, &origin, &cell, classes.len()) {
            Ok(found) => found,
            Err(fs) => {
                faults.extend(fs);
                continue;
            }
        };
        let (dataset, e, label) = e;
        if let Some(first) = seen.insert(e.id(), origin.row) {
            faults.push(origin.fault("filename", format!("duplicate of row {first}")));
            continue;
        }
        check_label(opts, &origin, dataset, e, label);
        samples.push(e.to_sample(label));
    }
    finish(NAME, classes, samples, faults, opts.policy)
}

/// Scanned samples keyed by (dataset, subject, filename key).
type Scanned = HashMap<(&'static str, String, String), Entry>;

/// Scans each dataset the CSV's rows name.
fn scan_named(opts: &Options, rows: &[Vec<String>]) -> Result<Scanned> {
    let mut wanted: Vec<&'static str> = Vec::new();
    for r in rows {
        if let Some(d) = r.first().and_then(|d| normalise_dataset(d)) {
            if !wanted.contains(&d) {
                wanted.push(d);
            }
        }
    }
    let unset = |what: &str, root: &str| {
        format!(
            "{} names {what} samples but no {root} root is set",
            opts.csv.display()
        )
    };
    let mut entries = Scanned::new();
    for d in wanted {
        let scanned = match d {
            casme2::NAME => {
                casme2::scan(opts.casme2.as_ref().with_context(|| unset(d, "CASME II"))?)?
            }
            samm::NAME => samm::scan(opts.samm.as_ref().with_context(|| unset(d, "SAMM"))?)?,
            _ => smic::scan(opts.smic.as_ref().with_context(|| unset(d, "SMIC"))?)?,
        };
        for e in scanned {
            let key = (d, e.subject.clone(), filename_key(d, &e.filename));
            entries.entry(key).or_insert(e);
        }
    }
    Ok(entries)
}

/// The dataset, scanned sample and label a CSV row names, or the row's faults.
fn resolve_row<'a>(
    entries: &'a Scanned,
    origin: &Origin,
    cell: &dyn Fn(usize) -> &'a str,
    n_classes: usize,
) -> std::result::Result<(&'static str, &'a Entry, usize), Vec<crate::data::Fault>> {
    let Some(dataset) = normalise_dataset(cell(0)) else {
        return Err(vec![
            origin.fault("dataset", format!("unknown dataset {:?}", cell(0)))
        ]);
    };
    let Some(subject) = normalise_subject(dataset, cell(1)) else {
        return Err(vec![
            origin.fault("subject", format!("not a subject: {:?}", cell(1)))
        ]);
    };
    let label = match parse_frame(cell(3)) {
        Some(l) if (l as usize) < n_classes => l as usize,
        _ => {
            return Err(vec![
                origin.fault("label", format!("not 0, 1 or 2: {:?}", cell(3)))
            ]);
        }
    };
    let key = (dataset, subject.clone(), filename_key(dataset, cell(2)));
    let Some(e) = entries.get(&key) else {
        return Err(vec![origin.fault(
            "filename",
            format!("no sample {subject}/{} in {dataset}", cell(2)),
        )]);
    };
    if !e.faults.is_empty() {
        return Err(e
            .faults
            .iter()
            .map(|f| origin.fault("filename", format!("sample faulty in {dataset}: {f}")))
            .collect());
    }
    Ok((dataset, e, label))
}

/// The CSV is authoritative; a disagreement with the relabelled emotion is only logged.
fn check_label(opts: &Options, origin: &Origin, dataset: &str, e: &Entry, label: usize) {
    let kind = match dataset {
        casme2::NAME => DatasetKind::Casme2,
        samm::NAME => DatasetKind::Samm,
        _ => DatasetKind::Smic,
    };
    if let Label::Class(c) = ClassMap::default_for(kind, Task::Cde).lookup(&e.emotion) {
        if c != label {
            tracing::warn!(
                "{}, row {}: label {label} but {} says {:?}",
                opts.csv.display(),
                origin.row,
                dataset,
                e.emotion
            );
        }
    }
}
