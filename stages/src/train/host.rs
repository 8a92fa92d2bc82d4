//! Reads from the device to the host in the encoders' training rounds go through here, so a test
//! can count them. On a GPU every read waits for the queued work: a round sums its loss and
//! accuracy on the device and reads them once, at its end, never inside a step.

use std::cell::Cell;

use anyhow::Result;
use candle_core::{DType, Tensor};

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
}
