pub mod afe;
pub mod ckpt;
pub mod data;
pub mod driver;
pub mod encoder;
pub mod host;
pub mod init;
pub mod meta;
pub mod precision;
pub mod progress;
pub mod rng;
pub mod sgd;
pub mod state;
#[cfg(test)]
pub mod testing;
pub mod triplet;

#[cfg(test)]
mod tests;

/// Precise BN (see [`crate::model::layers::recalibrate_bn`]) of `encoders` over `pool`, in
/// fixed-order chunks of `batch`, through `forward` (a train-mode pass of the model being
/// recalibrated).
pub fn recalibrate(
    encoders: &[&dyn encoder::Encoder],
    data: (&data::SampleSet, &[usize]),
    batch: usize,
    dev: &candle_core::Device,
    forward: impl Fn(&candle_core::Tensor) -> candle_core::Result<candle_core::Tensor>,
) -> anyhow::Result<()> {
    let (set, pool) = data;
    let chunks: Vec<&[usize]> = pool.chunks(batch.max(2)).collect();
    let handles: Vec<_> = encoders.iter().filter_map(|e| e.bn_momentum()).collect();
    crate::model::layers::recalibrate_bn(&handles, chunks.len(), |k| {
        forward(&set.batch(chunks[k], dev)?)?;
        Ok(())
    })
}
