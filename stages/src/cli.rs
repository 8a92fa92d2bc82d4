//! Domain commands of the CLI: `mpfnet synth`.

use anyhow::Result;

use crate::data::{casme2, synth, Task};
use crate::kinds::dataset::SynthParams;

#[derive(clap::Args, Debug, Clone)]
pub struct SynthArgs {
    /// Output folder (CASME II layout: Cropped/subNN/EPxx/reg_imgN.jpg + coding sheet)
    #[arg(long)]
    pub out: std::path::PathBuf,
    #[arg(long, default_value_t = SynthParams::default().subjects)]
    pub subjects: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, default_value_t = SynthParams::default().samples_min)]
    pub samples_min: usize,
    #[arg(long, default_value_t = SynthParams::default().samples_max)]
    pub samples_max: usize,
    /// Frame side in pixels
    #[arg(long, default_value_t = SynthParams::default().size)]
    pub size: u32,
    /// Also report a simple LOSO baseline (nearest class mean of a coarse motion descriptor)
    #[arg(long)]
    pub baseline: bool,
}

pub fn synth(a: &SynthArgs) -> Result<()> {
    let p = SynthParams {
        subjects: a.subjects,
        seed: a.seed,
        samples_min: a.samples_min,
        samples_max: a.samples_max,
        size: a.size,
    };
    crate::kinds::dataset::ensure_synth(&a.out, &p)?;
    for task in [Task::Sde, Task::Cde] {
        let mut o = casme2::Options::new(&a.out, casme2::Layout::Cropped);
        o.task = task;
        let index = casme2::load(&o)?;
        let counts: Vec<String> = index
            .classes
            .iter()
            .zip(index.class_counts())
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        println!(
            "{:?}: {} samples, {} subjects: {}",
            task,
            index.samples.len(),
            index.subjects().len(),
            counts.join(", ")
        );
        if a.baseline {
            let r = synth::baseline::baseline_report(&index)?;
            println!(
                "  baseline (nearest class mean of an 8x8 onset-apex difference, LOSO): accuracy {:.3}, UAR {:.3}, majority class {:.3}",
                r.accuracy, r.uar, r.majority
            );
        }
    }
    println!("written to {}", a.out.display());
    Ok(())
}
