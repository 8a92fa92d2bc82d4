pub mod afe;
pub mod ckpt;
pub mod data;
pub mod encoder;
pub mod init;
pub mod meta;
pub mod progress;
pub mod rng;
pub mod sgd;
pub mod state;
pub mod testing;
pub mod triplet;

#[cfg(test)]
mod tests;
