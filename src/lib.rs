//! mpfnet's engine: pipelines in TOML, a DAG of stage instances, a content-addressed cache,
//! plans, run records. It knows stages only through `mpfnet_api::{Stage, Registry}`; the
//! micro-expression domain lives in the `mpfnet-stages` crate.

pub mod artifact_codec;
pub mod engine;
pub mod inspect;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod runs;
pub mod select;
pub mod session;
pub mod slurm;

pub use engine::{Engine, ExecSummary, NodeState, Options};
pub use pipeline::{ConfigError, Pipeline};
pub use session::Workspace;
