//! Domain commands of the CLI (`mpfnet synth`).

#[derive(clap::Args, Debug, Clone)]
pub struct SynthArgs {
    /// Output folder (CASME II layout)
    #[arg(long)]
    pub out: std::path::PathBuf,
    #[arg(long, default_value_t = 10)]
    pub subjects: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub fn synth(_args: &SynthArgs) -> anyhow::Result<()> {
    anyhow::bail!("synth: not wired yet")
}
