//! Dataset indexing for MPFNet: loaders for CASME II, SAMM, SMIC-HS, MEGC2019-CD and a generic
//! manifest, LOSO folds, and a synthetic CASME II-layout dataset generator.
//!
//! Loaders are pure functions from a dataset root (+ options) to a [`index::DatasetIndex`]; they
//! stat the onset/apex frame files but never read them (except SMIC's `ApexRule::MaxMotion`,
//! which must look at the frames to pick an apex).

pub mod casme2;
pub mod classes;
mod coded;
pub mod fixtures;
pub mod folds;
pub mod frames;
pub mod index;
pub mod manifest;
pub mod megc;
pub mod samm;
pub mod sheet;
pub mod smic;
pub mod synth;

pub use classes::{ClassMap, DatasetKind, Label, Task};
pub use folds::{loso_folds, Fold, SplitCounts};
pub use index::{DatasetIndex, Fault, FaultPolicy, Sample};

#[cfg(test)]
mod tests;
