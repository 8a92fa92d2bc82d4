//! Leave-one-subject-out folds with a seeded validation split of the training subjects.

use crate::data::DatasetIndex;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Natural order: digit runs compare as numbers (`sub2` < `sub10`), the rest as text.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let tx = trim_zeros(dx);
                let ty = trim_zeros(dy);
                let o = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if o != Ordering::Equal {
                    return o;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|c| **c == b'0').count();
    &d[z.min(d.len().saturating_sub(1))..]
}

/// One LOSO fold: sample positions in [`DatasetIndex::samples`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fold {
    pub index: usize,
    pub test_subject: String,
    pub train_subjects: Vec<String>,
    pub val_subjects: Vec<String>,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// One fold per subject (natural order). `n_val` training subjects per fold (fewer if fewer
/// than `n_val + 1` remain, so training keeps at least one) go to validation, chosen with a
/// ChaCha8 seeded from `seed` and the fold index.
pub fn loso_folds(index: &DatasetIndex, n_val: usize, seed: u64) -> Vec<Fold> {
    let subjects = index.subjects();
    subjects
        .iter()
        .enumerate()
        .map(|(k, test_subject)| {
            let test = std::slice::from_ref(test_subject);
            split(index, k, test_subject.clone(), test, n_val, seed)
        })
        .collect()
}

/// Subject-wise k-fold (for budgets where LOSO does not fit): subjects in natural order, fold
/// `j` tests subjects j, j+k, j+2k, ... (no randomness: every seed sees the same folds); the
/// validation split inside the training subjects is drawn as in [`loso_folds`]. Fold ids
/// `fold1`..`foldk`. `k` is capped at the number of subjects.
pub fn kfold_folds(index: &DatasetIndex, k: usize, n_val: usize, seed: u64) -> Vec<Fold> {
    let subjects = index.subjects();
    let k = k.clamp(1, subjects.len().max(1));
    (0..k)
        .map(|j| {
            let test_subjects: Vec<String> = subjects.iter().skip(j).step_by(k).cloned().collect();
            split(
                index,
                j,
                format!("fold{}", j + 1),
                &test_subjects,
                n_val,
                seed,
            )
        })
        .collect()
}

/// The id of the split that trains the final model on every subject (no test subject).
pub const FINAL_FOLD: &str = "final";

/// The final-model split: all subjects train, `n_val` of them (seeded, at most all but one)
/// validate for model selection, none is tested. Index = the number of LOSO folds.
pub fn final_split(index: &DatasetIndex, n_val: usize, seed: u64) -> Fold {
    let k = index.subjects().len();
    split(index, k, FINAL_FOLD.to_string(), &[], n_val, seed)
}

/// Fold `k` (named `id`) testing `test_subjects`: of the other subjects, `n_val` (at most all
/// but one) drawn with a ChaCha8 seeded from `seed` and `k` validate, the rest train.
fn split(
    index: &DatasetIndex,
    k: usize,
    id: String,
    test_subjects: &[String],
    n_val: usize,
    seed: u64,
) -> Fold {
    let mut others: Vec<String> = index
        .subjects()
        .into_iter()
        .filter(|s| !test_subjects.contains(s))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut shuffled = others.clone();
    shuffled.shuffle(&mut rng);
    let nv = n_val.min(others.len().saturating_sub(1));
    let mut val_subjects: Vec<String> = shuffled[..nv].to_vec();
    val_subjects.sort_by(|a, b| natural_cmp(a, b));
    others.retain(|s| !val_subjects.contains(s));
    let pick = |subj: &[String]| -> Vec<usize> {
        (0..index.samples.len())
            .filter(|&i| subj.contains(&index.samples[i].subject))
            .collect()
    };
    Fold {
        index: k,
        test_subject: id,
        train: pick(&others),
        val: pick(&val_subjects),
        test: pick(test_subjects),
        train_subjects: others,
        val_subjects,
    }
}

/// Class counts of a fold's three splits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCounts {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

pub fn split_counts(index: &DatasetIndex, fold: &Fold) -> SplitCounts {
    let count = |pos: &[usize]| {
        let mut c = vec![0; index.classes.len()];
        for &i in pos {
            c[index.samples[i].class] += 1;
        }
        c
    };
    SplitCounts {
        train: count(&fold.train),
        val: count(&fold.val),
        test: count(&fold.test),
    }
}

/// A plain-text table: one line per fold with the class counts of train / val / test.
pub fn fold_table(index: &DatasetIndex, folds: &[Fold]) -> String {
    let short: Vec<String> = index
        .classes
        .iter()
        .map(|c| c.chars().take(4).collect())
        .collect();
    let group = |c: &[usize]| {
        c.iter()
            .map(|n| format!("{n:>4}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let head = short
        .iter()
        .map(|s| format!("{s:>4}"))
        .collect::<Vec<_>>()
        .join(" ");
    let w = head.len();
    let mut out = format!(
        "{:>4}  {:<8}  {:<w$}  |  {:<w$}  |  {:<w$}  | val subjects\n",
        "fold", "test", "train", "val", "test"
    );
    out.push_str(&format!(
        "{:>4}  {:<8}  {head}  |  {head}  |  {head}  |\n",
        "", ""
    ));
    for f in folds {
        let c = split_counts(index, f);
        out.push_str(&format!(
            "{:>4}  {:<8}  {}  |  {}  |  {}  | {}\n",
            f.index,
            f.test_subject,
            group(&c.train),
            group(&c.val),
            group(&c.test),
            f.val_subjects.join(",")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["sub10", "sub2", "sub01", "s1", "006", "10", "9"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["006", "9", "10", "s1", "sub01", "sub2", "sub10"]);
    }
}
