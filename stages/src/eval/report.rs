//! `report.md` (tables in the shape of the paper's, with the paper's figures beside ours, labelled
//! "paper, on its data") and the serde `Report` written as `report.json`.
use crate::eval::metrics::{Metrics, Summary};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// each dataset with its own labels (Acc / F1)
    Sde,
    /// 3-class composite (UF1 / UAR)
    Cde,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// dataset key: smic, casme2, samm, megc2019 (others are reported without paper figures)
    pub dataset: String,
    pub task: Task,
    /// MPFNet-C, MPFNet-P, PLSM, PLTN, w/o PL
    pub variant: String,
    /// flow+diff, flow, diff
    pub features: String,
    pub class_names: Vec<String>,
    /// the test subject of each fold, in fold order
    pub fold_subjects: Vec<String>,
    pub summary: Summary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    /// what the data is (real dataset, synthetic stand-in, ...)
    pub data_note: String,
    pub runs: Vec<RunResult>,
    /// (caption, path relative to report.md) of figures to link
    #[serde(default)]
    pub figures: Vec<(String, String)>,
    pub notes: Vec<String>,
}

fn key(s: &str) -> String {
    s.to_lowercase().replace(['-', ' ', '_'], "")
}

/// paper Sec. 5, SDE: (Acc, F1) of the paper for dataset and variant.
pub fn paper_sde(dataset: &str, variant: &str) -> Option<(f64, f64)> {
    match (key(dataset).as_str(), key(variant).as_str()) {
        ("smic", "mpfnetc") => Some((0.811, 0.811)),
        ("casme2" | "casmeii", "mpfnetc") => Some((0.831, 0.833)),
        ("samm", "mpfnetc") => Some((0.719, 0.718)),
        ("smic", "mpfnetp") => Some((0.787, 0.787)),
        ("casme2" | "casmeii", "mpfnetp") => Some((0.820, 0.819)),
        ("samm", "mpfnetp") => Some((0.704, 0.695)),
        _ => None,
    }
}

/// paper Sec. 5, CDE (MPFNet-C): (UF1, UAR).
pub fn paper_cde(dataset: &str, variant: &str) -> Option<(f64, f64)> {
    if key(variant) != "mpfnetc" {
        return None;
    }
    match key(dataset).as_str() {
        "smic" => Some((0.806, 0.809)),
        "casme2" | "casmeii" => Some((0.911, 0.923)),
        "samm" => Some((0.795, 0.839)),
        "megc2019" | "megc2019cd" => Some((0.840, 0.846)),
        _ => None,
    }
}

/// paper Sec. 5, ablations on CASME II 3-class: Acc.
pub fn paper_ablation(variant: &str) -> Option<f64> {
    match key(variant).as_str() {
        "w/opl" | "wopl" | "withoutpl" => Some(0.621),
        "pltn" => Some(0.745),
        "plsm" => Some(0.834),
        "mpfnetp" => Some(0.897),
        "mpfnetc" => Some(0.924),
        _ => None,
    }
}

/// paper Sec. 5, input features with MPFNet-C on CASME II 3-class: Acc.
pub fn paper_features(features: &str) -> Option<f64> {
    match key(features).as_str() {
        "flow" => Some(0.865),
        "diff" => Some(0.662),
        "flow+diff" => Some(0.924),
        _ => None,
    }
}

fn f(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into())
}

const ABLATION_ORDER: [&str; 5] = ["w/o PL", "PLTN", "PLSM", "MPFNet-P", "MPFNet-C"];

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n\n{}\n", r.title, r.data_note);
    let _ = writeln!(s, "Headline metrics pool the predictions of all LOSO folds (MEGC2019 convention); per-fold means are given beside them. Figures marked \"paper, on its data\" are the paper's own results on the real datasets, not a reproduction target for other data.\n");
    main_table(&mut s, r, Task::Sde);
    main_table(&mut s, r, Task::Cde);
    ablation_table(&mut s, r);
    feature_table(&mut s, r);
    for run in &r.runs {
        run_detail(&mut s, run);
    }
    if !r.figures.is_empty() {
        let _ = writeln!(s, "## Figures\n");
        for (cap, path) in &r.figures {
            let _ = writeln!(s, "![{cap}]({path})\n");
        }
    }
    paper_reference(&mut s);
    if !r.notes.is_empty() {
        let _ = writeln!(s, "## Notes\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

/// All of paper Sec. 5's figures, whatever was run.
fn paper_reference(s: &mut String) {
    let pair = |(a, b): (f64, f64)| format!("{a:.3} / {b:.3}");
    let sde = [
        ("smic", "SMIC-HS 3-class"),
        ("casme2", "CASME II 5-class"),
        ("samm", "SAMM 5-class"),
    ]
    .map(|(d, name)| {
        let p = paper_sde(d, "MPFNet-P").unwrap_or_default();
        let c = paper_sde(d, "MPFNet-C").unwrap_or_default();
        vec!["SDE Acc / F1".into(), name.into(), pair(p), pair(c)]
    });
    let cde = [
        ("smic", "SMIC-HS"),
        ("casme2", "CASME II"),
        ("samm", "SAMM"),
        ("megc2019", "MEGC2019-CD"),
    ]
    .map(|(d, name)| {
        let c = paper_cde(d, "MPFNet-C").unwrap_or_default();
        vec!["CDE UF1 / UAR".into(), name.into(), "-".into(), pair(c)]
    });
    table(
        s,
        "The paper's figures (paper, on its data)",
        &["task", "dataset", "MPFNet-P", "MPFNet-C"],
        sde.into_iter().chain(cde),
    );
    let abl: Vec<String> = ABLATION_ORDER
        .iter()
        .map(|v| format!("{v} {}", f(paper_ablation(v))))
        .collect();
    let feats: Vec<String> = ["flow", "diff", "flow+diff"]
        .iter()
        .map(|v| format!("{v} {}", f(paper_features(v))))
        .collect();
    let _ = writeln!(
        s,
        "Ablations, Acc on CASME II 3-class: {}. Input features (MPFNet-C): {}.\n",
        abl.join(", "),
        feats.join(", ")
    );
}

/// The runs of `task` on the full input (flow + differences): the main tables' rows.
fn full_input_runs(r: &Report, task: Task) -> Vec<&RunResult> {
    r.runs
        .iter()
        .filter(|x| x.task == task && key(&x.features) == "flow+diff")
        .collect()
}

/// The paper's pair of figures for (dataset, variant): [`paper_sde`], [`paper_cde`].
type PaperPair = fn(&str, &str) -> Option<(f64, f64)>;

/// The main tables (paper Sec. 5): per run on the full input, our figures, then the paper's
/// pair for that dataset and variant (SDE: Acc, F1; CDE: UF1, UAR).
fn main_table(s: &mut String, r: &Report, task: Task) {
    let runs = full_input_runs(r, task);
    if runs.is_empty() {
        return;
    }
    let (title, columns, paper): (_, [&str; 8], PaperPair) = match task {
        Task::Sde => (
            "SDE (Acc / F1)",
            [
                "dataset",
                "classes",
                "method",
                "Acc",
                "F1",
                "Acc per-fold mean",
                "Acc (paper, on its data)",
                "F1 (paper, on its data)",
            ],
            paper_sde,
        ),
        Task::Cde => (
            "CDE (UF1 / UAR)",
            [
                "dataset",
                "method",
                "UF1",
                "UAR",
                "UF1 per-fold mean",
                "UAR per-fold mean",
                "UF1 (paper, on its data)",
                "UAR (paper, on its data)",
            ],
            paper_cde,
        ),
    };
    let rows = runs.into_iter().map(|x| {
        let (m, fm) = (&x.summary.pooled, &x.summary.fold_means);
        let mut cells = match task {
            Task::Sde => vec![
                x.dataset.clone(),
                x.class_names.len().to_string(),
                x.variant.clone(),
                format!("{:.3}", m.acc),
                f(m.f1_macro),
                f(fm.acc),
            ],
            Task::Cde => vec![
                x.dataset.clone(),
                x.variant.clone(),
                f(m.uf1),
                f(m.uar),
                f(fm.uf1),
                f(fm.uar),
            ],
        };
        let p = paper(&x.dataset, &x.variant);
        cells.extend([f(p.map(|p| p.0)), f(p.map(|p| p.1))]);
        cells
    });
    table(s, title, &columns, rows);
}

fn ablation_table(s: &mut String, r: &Report) {
    let mut datasets: Vec<&str> = r
        .runs
        .iter()
        .filter(|x| x.task == Task::Cde)
        .map(|x| x.dataset.as_str())
        .collect();
    datasets.dedup();
    for d in datasets {
        let rows: Vec<&RunResult> = ABLATION_ORDER
            .iter()
            .filter_map(|v| {
                r.runs.iter().find(|x| {
                    x.task == Task::Cde
                        && x.dataset == d
                        && key(&x.variant) == key(v)
                        && key(&x.features) == "flow+diff"
                })
            })
            .collect();
        if rows.len() < 2 {
            continue;
        }
        let rows = rows.into_iter().map(|x| {
            let mut cells = vec![x.variant.clone()];
            cells.extend(acc_uf1_uar(&x.summary.pooled));
            cells.push(f(paper_ablation(&x.variant)));
            cells
        });
        let columns = ["method", "Acc", "UF1", "UAR", PAPER_CASME_ACC];
        table(
            s,
            &format!("Ablation: prior learning ({d}, 3-class)"),
            &columns,
            rows,
        );
    }
}

fn feature_table(s: &mut String, r: &Report) {
    let rows: Vec<&RunResult> = r
        .runs
        .iter()
        .filter(|x| x.task == Task::Cde && key(&x.variant) == "mpfnetc")
        .collect();
    if rows
        .iter()
        .map(|x| key(&x.features))
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        < 2
    {
        return;
    }
    let rows = rows.into_iter().map(|x| {
        let mut cells = vec![x.dataset.clone(), x.features.clone()];
        cells.extend(acc_uf1_uar(&x.summary.pooled));
        cells.push(f(paper_features(&x.features)));
        cells
    });
    let columns = ["dataset", "input", "Acc", "UF1", "UAR", PAPER_CASME_ACC];
    table(
        s,
        "Ablation: input features (MPFNet-C, 3-class)",
        &columns,
        rows,
    );
}

/// The ablation tables' column of the paper's figures.
const PAPER_CASME_ACC: &str = "Acc (paper, on its data: CASME II 3-class)";

/// The ablation tables' cells of one run: Acc, UF1, UAR.
fn acc_uf1_uar(m: &Metrics) -> [String; 3] {
    [format!("{:.3}", m.acc), f(m.uf1), f(m.uar)]
}

/// A markdown table's header: the column names, then the rule.
fn header(s: &mut String, columns: &[&str]) {
    let rule = " --- |".repeat(columns.len());
    let _ = writeln!(s, "| {} |\n|{rule}", columns.join(" | "));
}

fn row(s: &mut String, cells: &[String]) {
    let _ = writeln!(s, "| {} |", cells.join(" | "));
}

/// A section of one table: `## title`, the header, a line per row, a blank line.
fn table(
    s: &mut String,
    title: &str,
    columns: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) {
    let _ = writeln!(s, "## {title}\n");
    header(s, columns);
    for r in rows {
        row(s, &r);
    }
    let _ = writeln!(s);
}

fn run_detail(s: &mut String, x: &RunResult) {
    let t = match x.task {
        Task::Sde => "SDE",
        Task::Cde => "CDE",
    };
    let _ = writeln!(s, "## {} {} {} ({})\n", x.dataset, t, x.variant, x.features);
    let fm = &x.summary.fold_means;
    let columns = [
        "convention",
        "Acc",
        "F1",
        "UF1",
        "UAR",
        "std of per-class Acc",
    ];
    header(s, &columns);
    let m = &x.summary.pooled;
    row(
        s,
        &[
            "pooled (headline)".into(),
            format!("{:.3}", m.acc),
            f(m.f1_macro),
            f(m.uf1),
            f(m.uar),
            f(m.class_acc_std),
        ],
    );
    row(
        s,
        &[
            format!("per-fold mean ({} folds)", fm.folds),
            f(fm.acc),
            f(fm.f1_macro),
            f(fm.uf1),
            f(fm.uar),
            f(fm.class_acc_std),
        ],
    );
    let _ = writeln!(s);
    header(s, &["class", "N", "precision", "recall (Acc_c)", "F1"]);
    for (name, c) in x.class_names.iter().zip(&m.per_class) {
        let support = c.support.to_string();
        row(
            s,
            &[name.clone(), support, f(c.precision), f(c.recall), f(c.f1)],
        );
    }
    let _ = writeln!(s, "\nConfusion matrix (rows true, columns predicted):\n");
    let _ = writeln!(
        s,
        "| true \\ pred | {} |\n| --- |{}",
        x.class_names.join(" | "),
        " --- |".repeat(x.class_names.len())
    );
    for (name, counts) in x.class_names.iter().zip(&x.summary.confusion.m) {
        let cells = std::iter::once(name.clone()).chain(counts.iter().map(|v| v.to_string()));
        row(s, &cells.collect::<Vec<_>>());
    }
    let _ = writeln!(s);
}

/// Writes `report.md` and `report.json` into `dir`.
pub fn write(r: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let md = dir.join("report.md");
    std::fs::write(&md, markdown(r)).with_context(|| format!("writing {}", md.display()))?;
    let js = dir.join("report.json");
    let text = serde_json::to_string_pretty(r).context("serialising report")?;
    std::fs::write(&js, text).with_context(|| format!("writing {}", js.display()))
}
