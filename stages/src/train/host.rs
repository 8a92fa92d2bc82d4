//! Reads from the device to the host in the encoders' training rounds go through here, so a test
//! can count them. On a GPU every read waits for the queued work: a round sums its loss and
//! accuracy on the device and reads them once, at its end, never inside a step.

use std::cell::Cell;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use crate::train::progress::EpochLog;

thread_local! {
    // per thread: a round and its reads run on one thread, and tests run side by side
    static READS: Cell<usize> = const { Cell::new(0) };
}

/// The values of `t` (any shape, any float or int dtype) as f64, in one read.
pub fn values(t: &Tensor) -> Result<Vec<f64>> {
    READS.with(|r| r.set(r.get() + 1));
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?)
}

/// How many reads this thread has made.
pub fn reads() -> usize {
    READS.with(|r| r.get())
}

/// Running sums of per-step statistics kept on the device: `add` queues an addition, `read`
/// brings the totals over once.
#[derive(Default)]
pub struct DeviceSums(Option<Tensor>);

impl DeviceSums {
    pub fn add(&mut self, step: Tensor) -> Result<()> {
        self.0 = Some(match self.0.take() {
            None => step,
            Some(s) => (s + step)?,
        });
        Ok(())
    }

    /// The totals, or None when nothing was added.
    pub fn read(&self) -> Result<Option<Vec<f64>>> {
        self.0.as_ref().map(values).transpose()
    }

    /// An epoch's log from sums of (loss, accuracy) over `n` (samples or batches), refusing a
    /// loss that diverged.
    pub fn epoch_log(&self, what: &str, epoch: usize, n: usize, lr: f64) -> Result<EpochLog> {
        let (loss, acc) = match self.read()?.as_deref() {
            Some(&[l, a]) => (l, a),
            _ => (0.0, 0.0),
        };
        if !loss.is_finite() {
            bail!("{what} epoch {epoch}: the loss is {loss} (diverged)");
        }
        let n = n.max(1) as f64;
        Ok(EpochLog {
            epoch,
            loss: loss / n,
            acc: Some(acc / n),
            lr,
            val_acc: None,
        })
    }
}
