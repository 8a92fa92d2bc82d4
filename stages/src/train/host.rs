//! Reads from the device to the host in training rounds go through here, so a test can count
//! them. On a GPU every read waits for the queued work: a round sums its loss and accuracy on the
//! device, and the driver reads the sums of a batch of rounds at once, never inside a step.

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

/// Running sums of per-step statistics kept on the device: `add` queues an addition, `pending`
/// hands the totals to [`read_logs`].
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

    /// The round's log entry from sums of (loss, accuracy) over `n` (samples, batches or
    /// episodes), left on the device: [`read_logs`] reads it later with others, at once.
    pub fn pending(self, epoch: usize, n: usize, lr: f64) -> PendingLog {
        PendingLog {
            epoch,
            sums: self.0,
            n,
            lr,
            val_acc: None,
        }
    }
}

/// A round's log whose loss and accuracy sums are still on the device.
pub struct PendingLog {
    pub epoch: usize,
    /// `[loss, accuracy]` summed over `n`; None when nothing was summed
    sums: Option<Tensor>,
    n: usize,
    pub lr: f64,
    pub val_acc: Option<f64>,
}

/// The logs of `pending` rounds in one read, refusing a loss that diverged (naming the round:
/// `what` and `unit` say `meta step 12`).
pub fn read_logs(what: &str, unit: &str, pending: Vec<PendingLog>) -> Result<Vec<EpochLog>> {
    let present: Vec<&Tensor> = pending.iter().filter_map(|p| p.sums.as_ref()).collect();
    let values = if present.is_empty() {
        Vec::new()
    } else {
        values(&Tensor::stack(&present, 0)?)?
    };
    let mut read = values.chunks(2);
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        let (loss, acc) = match p.sums.as_ref().and(read.next()) {
            Some(&[l, a]) => (l, a),
            _ => (0.0, 0.0),
        };
        if !loss.is_finite() {
            bail!("{what} {unit} {}: the loss is {loss} (diverged)", p.epoch);
        }
        let n = p.n.max(1) as f64;
        out.push(EpochLog {
            epoch: p.epoch,
            loss: loss / n,
            acc: Some(acc / n),
            lr: p.lr,
            val_acc: p.val_acc,
        });
    }
    Ok(out)
}
