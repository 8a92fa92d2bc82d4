//! CA-I3D backbone of MPFNet (paper Sec. 3.3.1, Fig. 5) on candle 0.11.1, with custom CPU kernels.
//!
//! - `ops`: conv3d, max_pool3d, adaptive_avg_pool3d, BatchNorm(+ReLU), the fused parts of 3D
//!   coordinate attention; candle custom ops with analytic backward on CPU, stock candle ops on
//!   other devices (so a CUDA build runs the same model) and as the tests' reference.
//! - `layers`: `BatchNorm3d`, `Unit3d`, `CoordAttention3d` (T/H/W extension documented there),
//!   `Inception3d`; `InitScheme` (Kaiming normal by default: the paper's N(0,1) diverges).
//! - `ca_i3d`: `CaI3dConfig` (presets `paper()`, `demo()`, `bench()`), `CaI3d`,
//!   `load_into` (cascade widening with zeros).
//!
//! Seeded initialisation, the optimiser and checkpoints live in `crate::train` (one of each).
//! Typical use:
//! ```ignore
//! let varmap = VarMap::new();
//! let model = CaI3d::new(train::init::var_builder(&varmap, seed, &device), &cfg)?;
//! let mut opt = train::sgd::SgdMomentum::new(train::init::sorted_vars(&varmap), sgd_cfg)?;
//! let loss = /* from model.forward(&x, true)? */;
//! opt.backward_step(&loss)?;
//! ```
//!
//! Allocator: the training step allocates and frees many buffers of tens to hundreds of MiB;
//! with glibc malloc each is a fresh mmap (page faults + kernel zeroing dominate). The `mpfnet`
//! binary (src/main.rs) and `bench_step` use mimalloc with purging off.
pub mod ca_i3d;
pub mod layers;
pub mod ops;

pub use ca_i3d::{load_into, CaI3d, CaI3dConfig};
pub use layers::InitScheme;
