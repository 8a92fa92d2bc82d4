//! The one training loop: rounds (GFE and AFE epochs, meta-learning steps), resume from the
//! latest checkpoint, checkpoints every `checkpoint_every` rounds and at the end, progress, and
//! cancellation at a round boundary. What a round computes is the [`Rounds`] implementation.
use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use candle_nn::VarMap;

use crate::train::ckpt::{Checkpointer, NoCheckpoint, StateWriter};
use crate::train::data::{shuffled_batches, SampleSet};
use crate::train::encoder::Encoder;
use crate::train::host::{read_logs, PendingLog};
use crate::train::init::sorted_vars;
use crate::train::progress::{Progress, TrainLog};
use crate::train::rng::rng_for;
use crate::train::sgd::{SgdConfig, SgdMomentum};
use crate::train::state;

/// What every training loop is handed besides its model, data and config.
pub struct TrainCtx<'a> {
    /// the node seed: every random draw derives from it
    pub seed: u64,
    pub dev: &'a Device,
    pub progress: &'a mut dyn FnMut(Progress),
    pub ckpt: &'a mut dyn Checkpointer,
    /// true once the user asked to stop: the loop returns an error at the next round boundary
    pub cancelled: &'a dyn Fn() -> bool,
}

fn never() -> bool {
    false
}

fn no_progress(_: Progress) {}

/// Runs `f` with a context that reports nothing, saves nothing and is never cancelled.
pub fn quiet<T>(seed: u64, dev: &Device, f: impl FnOnce(&mut TrainCtx) -> T) -> T {
    let (mut progress, mut ckpt) = (no_progress, NoCheckpoint);
    f(&mut TrainCtx {
        seed,
        dev,
        progress: &mut progress,
        ckpt: &mut ckpt,
        cancelled: &never,
    })
}

/// A training loop's rounds: what one round computes and what a checkpoint holds.
pub trait Rounds {
    /// names the loop in messages: `GFE`, `AFE`, `meta`
    const NAME: &'static str;
    /// `epoch` or `step`
    const UNIT: &'static str;
    /// (rounds, checkpoint every this many rounds; 0: never)
    fn schedule(&self) -> (usize, usize);
    /// Before the first round of a fresh (not resumed) run.
    fn start(&mut self, _log: &mut TrainLog) -> Result<()> {
        Ok(())
    }
    /// How many rounds' logs are read back from the device at once (each read waits for the
    /// device): every epoch, but only every so many of meta-learning's short steps.
    const READ_EVERY: usize = 1;
    /// Round `r` (0-based); may record more than its entry in `log` (meta: the best step).
    /// Its loss and accuracy stay on the device until the driver reads them.
    fn round(&mut self, r: usize, log: &mut TrainLog) -> Result<PendingLog>;
    /// The tensors of a checkpoint (variables, momentum buffers, kept states).
    fn save(&self, w: &mut StateWriter) -> Result<()>;
    /// Restores what [`Rounds::save`] wrote.
    fn restore(&mut self, t: &HashMap<String, Tensor>) -> Result<()>;
}

/// The JSON document of every training checkpoint.
#[derive(Serialize, Deserialize)]
struct LogState {
    log: TrainLog,
}

/// Runs `l`'s rounds from the latest checkpoint (or the start) to the end.
pub fn run<L: Rounds>(l: &mut L, cx: &mut TrainCtx) -> Result<TrainLog> {
    let mut log = TrainLog::default();
    let mut start = 0;
    if let Some((e, st, t)) = state::load::<LogState>(cx.ckpt, cx.dev)? {
        l.restore(&t)
            .with_context(|| format!("resuming at {} {e}", L::UNIT))?;
        (start, log) = (e, st.log);
        // logged, not stored: a resumed node's artifact must equal an uninterrupted run's
        tracing::info!(
            "{}: resuming from the checkpoint at {} {e}",
            L::NAME,
            L::UNIT
        );
    } else {
        l.start(&mut log)?;
    }
    let (total, every) = l.schedule();
    let mut pending = Vec::new();
    for r in start..total {
        if (cx.cancelled)() {
            bail!(
                "{} training cancelled before {} {} of {total} (a rerun resumes from the last checkpoint)",
                L::NAME,
                L::UNIT,
                r + 1
            );
        }
        pending.push(l.round(r, &mut log)?);
        let checkpoint = state::due(every, r + 1, total);
        if checkpoint || pending.len() >= L::READ_EVERY || r + 1 == total {
            // a checkpoint never holds a diverged state: its rounds are read (and checked) first
            for entry in read_logs(L::NAME, L::UNIT, std::mem::take(&mut pending))? {
                log.push(entry, cx.progress, total);
            }
        }
        if checkpoint {
            let mut w = StateWriter::default();
            l.save(&mut w)?;
            state::save(cx.ckpt, r + 1, &w, &LogState { log: log.clone() })?;
        }
    }
    Ok(log)
}

/// What one epoch of a network trained by SGD computes (GFE: triplets, AFE: classification).
pub trait EpochStep {
    /// names the loop in messages
    const NAME: &'static str;
    /// Epoch `epoch` over `part`'s samples; its loss and accuracy stay on the device.
    fn epoch(&mut self, part: &mut SgdPart, epoch: usize) -> Result<PendingLog>;
}

/// The rounds of [`SgdPart`] training: epochs, checkpoints of its variables and optimiser.
pub struct EpochRounds<'a, S> {
    pub part: SgdPart<'a>,
    /// (epochs, checkpoint every this many epochs; 0: never)
    pub schedule: (usize, usize),
    pub step: S,
}

impl<S: EpochStep> Rounds for EpochRounds<'_, S> {
    const NAME: &'static str = S::NAME;
    const UNIT: &'static str = "epoch";
    fn schedule(&self) -> (usize, usize) {
        self.schedule
    }
    fn round(&mut self, epoch: usize, _log: &mut TrainLog) -> Result<PendingLog> {
        self.step.epoch(&mut self.part, epoch)
    }
    fn save(&self, w: &mut StateWriter) -> Result<()> {
        self.part.save(w)
    }
    fn restore(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.part.restore(t)
    }
}

/// One network trained by SGD on the whole of a sample set (GFE, AFE): its variables, their
/// optimiser, and what a checkpoint holds of them (under `tag`).
pub struct SgdPart<'a> {
    pub tag: &'static str,
    pub varmap: &'a VarMap,
    pub opt: SgdMomentum,
    pub set: &'a SampleSet,
    pub pool: Vec<usize>,
    pub seed: u64,
    pub dev: &'a Device,
}

impl<'a> SgdPart<'a> {
    /// Every variable of `varmap` (built already) trains on every sample of `set`.
    pub fn new(
        tag: &'static str,
        (varmap, set): (&'a VarMap, &'a SampleSet),
        sgd: SgdConfig,
        (seed, dev): (u64, &'a Device),
    ) -> Result<Self> {
        Ok(SgdPart {
            tag,
            varmap,
            opt: SgdMomentum::new(sorted_vars(varmap), sgd)?,
            set,
            pool: set.all_indices(),
            seed,
            dev,
        })
    }
    /// The epoch's batches of `batch` samples, shuffled by the epoch's own random stream (the
    /// stream goes on to the step, e.g. triplet draws).
    pub fn batches(
        &self,
        stream: u64,
        epoch: usize,
        batch: usize,
    ) -> (Vec<Vec<usize>>, rand_chacha::ChaCha8Rng) {
        let mut rng = rng_for(self.seed, &[stream, epoch as u64]);
        (shuffled_batches(&self.pool, batch, &mut rng), rng)
    }
    pub fn save(&self, w: &mut StateWriter) -> Result<()> {
        state::write_part(w, self.tag, self.varmap, &self.opt)
    }
    pub fn restore(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        state::read_part(t, self.tag, self.varmap, &mut self.opt)
    }
    /// Precise BN of `enc` over the pool through `forward` (see [`crate::train::recalibrate`]).
    pub fn recalibrate(
        &self,
        enc: &dyn Encoder,
        batch: usize,
        forward: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<()> {
        crate::train::recalibrate(&[enc], (self.set, &self.pool), batch, self.dev, forward)
    }
}
