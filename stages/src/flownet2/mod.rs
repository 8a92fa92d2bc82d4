//! FlowNet2 (Ilg, Mayer, Saikia, Keuper, Dosovitskiy & Brox, "FlowNet 2.0: Evolution of
//! Optical Flow Estimation with Deep Networks", CVPR 2017) in candle, as NVIDIA's
//! flownet2-pytorch builds it, loading that project's checkpoints (`FlowNet2_checkpoint.pth.tar`)
//! as they are.
//!
//! - `ops`: the correlation layer, bilinear warping (resample2d) and the channel norm, each a
//!   CPU custom op (rayon) with a stock-op twin for other devices and the tests;
//! - `layers`: `conv`, `i_conv`, `deconv`, `predict_flow` and the flow up-samplers of
//!   `networks/submodules.py`;
//! - `nets`: `FlowNetC`, `FlowNetS`, `FlowNetSD`, `FlowNetFusion` and `FlowNet2`
//!   (`FlowNet2Config`: width multiplier, `div_flow`, `rgb_max`);
//! - `checkpoint`: reading the state dict (zip or legacy PyTorch serialisation), checking every
//!   name and shape first;
//! - `estimator`: FlowNet2 as a [`crate::prep::flow::FlowEstimator`] (the `flownet2` flow
//!   backend of `features`).
//!
//! `stages/tests/fixtures/flownet2/params_full_width.txt` lists the official state dict's keys
//! and shapes (generated from flownet2-pytorch's own module classes by
//! `stages/bench/flownet2_keys.py`); `stages/tests/flownet2.rs` checks that our model asks for
//! exactly those, and matches a PyTorch twin (`stages/bench/flownet2_twin.py`) sub-network by
//! sub-network.

pub mod checkpoint;
pub mod estimator;
pub mod layers;
pub mod nets;
pub mod ops;

pub use checkpoint::{load, param_specs, Checkpoint};
pub use estimator::FlowNet2Flow;
pub use nets::{
    FlowNet2, FlowNet2Config, FlowNet2Outputs, FlowNetC, FlowNetFusion, FlowNetS, FlowNetSD,
};
