//! Progress reports and training logs.
use serde::{Deserialize, Serialize};

/// One report per epoch (GFE, AFE) or per meta-training step (`epoch` = step, `epochs` = steps).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub epoch: usize,
    pub epochs: usize,
    pub loss: f64,
    pub acc: Option<f64>,
    pub lr: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    /// training accuracy (GFE: fraction of triplets with d(a,p) < d(a,n); AFE: classification;
    /// meta: query accuracy)
    pub acc: Option<f64>,
    pub lr: f64,
    /// meta only: validation accuracy when evaluated at this step
    pub val_acc: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainLog {
    pub entries: Vec<EpochLog>,
    /// meta only: the step whose state was kept (best validation accuracy) and that accuracy
    pub best_step: Option<usize>,
    pub best_val_acc: Option<f64>,
}

impl TrainLog {
    pub fn push(&mut self, e: EpochLog, progress: &mut dyn FnMut(Progress), epochs: usize) {
        progress(Progress {
            epoch: e.epoch,
            epochs,
            loss: e.loss,
            acc: e.acc,
            lr: e.lr,
        });
        self.entries.push(e);
    }
}
