//! Classification metrics over LOSO folds (paper Sec. 4.2.3).
//!
//! Headline convention (MEGC2019): the confusion matrices of all folds are summed ("pooled"), then
//! per class F1_c = 2TP/(2TP+FP+FN) and recall_c = TP/(TP+FN) are taken. Acc = trace / total;
//! UF1 = mean_c F1_c; UAR = mean_c recall_c; "F1 (SDE)" is read as the same macro F1 over classes
//! on the pooled predictions (so it equals UF1); the support-weighted F1 is given beside it.
//! Per-fold values are computed the same way on each fold and averaged over folds.
//!
//! Absent classes, explicitly: recall_c is undefined when class c has no true sample (N_c = 0) and
//! is then left out of UAR and of the per-class accuracy std; F1_c is undefined when
//! 2TP+FP+FN = 0 (class neither present nor predicted) and is then left out of UF1. A class that is
//! absent but predicted has F1_c = 0 and counts. Fold means skip folds where a value is undefined.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `m[true][pred]` counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub n_classes: usize,
    pub m: Vec<Vec<usize>>,
}

impl Confusion {
    pub fn new(n_classes: usize) -> Self {
        Self {
            n_classes,
            m: vec![vec![0; n_classes]; n_classes],
        }
    }

    pub fn from_labels(y_true: &[usize], y_pred: &[usize], n_classes: usize) -> Result<Self> {
        if y_true.len() != y_pred.len() {
            bail!(
                "confusion: {} true labels but {} predictions",
                y_true.len(),
                y_pred.len()
            );
        }
        let mut c = Self::new(n_classes);
        for (i, (&t, &p)) in y_true.iter().zip(y_pred).enumerate() {
            if t >= n_classes || p >= n_classes {
                bail!(
                    "confusion: sample {i} has label {t} / prediction {p}, n_classes {n_classes}"
                );
            }
            c.m[t][p] += 1;
        }
        Ok(c)
    }

    pub fn add(&mut self, o: &Confusion) {
        for (r, ro) in self.m.iter_mut().zip(&o.m) {
            for (a, b) in r.iter_mut().zip(ro) {
                *a += b;
            }
        }
    }

    pub fn total(&self) -> usize {
        self.m.iter().flatten().sum()
    }
    pub fn tp(&self, c: usize) -> usize {
        self.m[c][c]
    }
    pub fn support(&self, c: usize) -> usize {
        self.m[c].iter().sum()
    }
    pub fn predicted(&self, c: usize) -> usize {
        self.m.iter().map(|r| r[c]).sum()
    }
    pub fn fp(&self, c: usize) -> usize {
        self.predicted(c) - self.tp(c)
    }
    pub fn fn_(&self, c: usize) -> usize {
        self.support(c) - self.tp(c)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub support: usize,
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub precision: Option<f64>,
    /// = per-class accuracy Acc_c = TP_c / N_c
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub n: usize,
    pub acc: f64,
    pub uf1: Option<f64>,
    pub uar: Option<f64>,
    /// "F1 (SDE)": macro F1 over classes (= uf1 in this reading)
    pub f1_macro: Option<f64>,
    pub f1_weighted: Option<f64>,
    /// population std of the defined per-class accuracies
    pub class_acc_std: Option<f64>,
    pub per_class: Vec<ClassMetrics>,
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

pub fn mean(v: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let d: Vec<f64> = v.into_iter().flatten().collect();
    (!d.is_empty()).then(|| d.iter().sum::<f64>() / d.len() as f64)
}

pub fn std_pop(v: &[f64]) -> Option<f64> {
    let m = mean(v.iter().map(|&x| Some(x)))?;
    Some((v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
}

impl Metrics {
    pub fn from_confusion(c: &Confusion) -> Self {
        let per_class: Vec<ClassMetrics> = (0..c.n_classes)
            .map(|k| {
                let (tp, fp, fn_) = (c.tp(k), c.fp(k), c.fn_(k));
                ClassMetrics {
                    support: c.support(k),
                    tp,
                    fp,
                    fn_,
                    precision: ratio(tp, tp + fp),
                    recall: ratio(tp, tp + fn_),
                    f1: ratio(2 * tp, 2 * tp + fp + fn_),
                }
            })
            .collect();
        let n = c.total();
        let trace: usize = (0..c.n_classes).map(|k| c.tp(k)).sum();
        let recalls: Vec<f64> = per_class.iter().filter_map(|m| m.recall).collect();
        let uf1 = mean(per_class.iter().map(|m| m.f1));
        let wsum: f64 = per_class
            .iter()
            .filter(|m| m.f1.is_some())
            .map(|m| m.support as f64)
            .sum();
        let f1_weighted = (wsum > 0.0).then(|| {
            per_class
                .iter()
                .filter_map(|m| m.f1.map(|f| f * m.support as f64))
                .sum::<f64>()
                / wsum
        });
        Metrics {
            n,
            acc: ratio(trace, n).unwrap_or(0.0),
            uf1,
            uar: mean(recalls.iter().map(|&r| Some(r))),
            f1_macro: uf1,
            f1_weighted,
            class_acc_std: std_pop(&recalls),
            per_class,
        }
    }
}

/// Means over folds of the per-fold metrics (undefined values skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldMeans {
    pub folds: usize,
    pub acc: Option<f64>,
    pub uf1: Option<f64>,
    pub uar: Option<f64>,
    pub f1_macro: Option<f64>,
    pub class_acc_std: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// headline: metrics of the summed confusion matrix
    pub pooled: Metrics,
    pub confusion: Confusion,
    pub per_fold: Vec<Metrics>,
    pub fold_means: FoldMeans,
}

/// `folds`: per fold, (y_true, y_pred).
pub fn summarize(folds: &[(Vec<usize>, Vec<usize>)], n_classes: usize) -> Result<Summary> {
    let mut pooled = Confusion::new(n_classes);
    let mut per_fold = Vec::new();
    for (i, (t, p)) in folds.iter().enumerate() {
        let c =
            Confusion::from_labels(t, p, n_classes).map_err(|e| e.context(format!("fold {i}")))?;
        pooled.add(&c);
        per_fold.push(Metrics::from_confusion(&c));
    }
    let nonempty: Vec<&Metrics> = per_fold.iter().filter(|m| m.n > 0).collect();
    let fold_means = FoldMeans {
        folds: nonempty.len(),
        acc: mean(nonempty.iter().map(|m| Some(m.acc))),
        uf1: mean(nonempty.iter().map(|m| m.uf1)),
        uar: mean(nonempty.iter().map(|m| m.uar)),
        f1_macro: mean(nonempty.iter().map(|m| m.f1_macro)),
        class_acc_std: mean(nonempty.iter().map(|m| m.class_acc_std)),
    };
    Ok(Summary {
        pooled: Metrics::from_confusion(&pooled),
        confusion: pooled,
        per_fold,
        fold_means,
    })
}
