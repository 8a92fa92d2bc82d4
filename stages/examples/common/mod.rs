//! Helpers shared by the benchmark examples (each example uses a part of them).
#![allow(dead_code)]

use candle_core::Device;
use candle_nn::VarMap;
use mpfnet_stages::model::{CaI3d, CaI3dConfig};
use mpfnet_stages::train::init::{sorted_vars, var_builder};
use mpfnet_stages::train::sgd::{SgdConfig, SgdMomentum};

/// The number after `name` on the command line, or `default`.
pub fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A CA-I3D of `cfg` (seed 1) on `dev` and its SGD-momentum optimiser (lr 1e-3, momentum 0.9,
/// weight decay 5e-4): what one timed training step runs.
pub fn trainer(cfg: &CaI3dConfig, dev: &Device) -> anyhow::Result<(CaI3d, SgdMomentum)> {
    let vm = VarMap::new();
    let model = CaI3d::new(var_builder(&vm, 1, dev), cfg)?;
    let opt = SgdMomentum::new(
        sorted_vars(&vm),
        SgdConfig {
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 5e-4,
        },
    )?;
    Ok((model, opt))
}
