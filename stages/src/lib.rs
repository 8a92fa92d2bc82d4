//! The MPFNet domain as pipeline stages. Modules hold pure algorithms; `kinds` wraps them as
//! `mpfnet_api::Stage`s. Nothing here knows about scheduling or caching.

pub mod bundle;
pub mod cli;
pub mod data;
pub mod eval;
pub mod flownet2;
pub mod kinds;
pub mod model;
pub mod prep;
pub mod train;

pub use kinds::registry;

/// Refuses a device this build cannot use, before any work starts.
pub fn check_device(device: &str) -> anyhow::Result<()> {
    match device {
        "cpu" => Ok(()),
        d if d.starts_with("cuda") => {
            if cfg!(feature = "cuda") {
                Ok(())
            } else {
                anyhow::bail!("device `{d}` needs a build with `--features cuda` (and nvcc); this build is CPU-only")
            }
        }
        d => anyhow::bail!("unknown device `{d}`: use cpu or cuda:N"),
    }
}
