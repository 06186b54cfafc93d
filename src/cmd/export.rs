use anyhow::Result;
use snodo_pipelines::ops;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// The pipeline's name (`from = "receipts"` with a `batch`).
    #[arg(long)]
    pipeline: String,
}

pub fn exec(a: Args) -> Result<ExitCode> {
    let written = ops::export::run_now(super::load_plan(a.config)?, &a.pipeline)?;
    if written.is_empty() {
        println!("nothing to export");
    }
    for name in written {
        println!("wrote {name}");
    }
    Ok(ExitCode::SUCCESS)
}
