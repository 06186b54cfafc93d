use anyhow::Result;
use snodo_pipelines::ops;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(short, long)]
    config: Option<PathBuf>,
    #[arg(long)]
    entity: String,
    #[arg(long)]
    iud: String,
    /// Where to write the PDF.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = super::load_plan(a.config)?;
    let pdf = ops::notice::render(&plan, &a.entity, &a.iud)?;
    std::fs::write(&a.output, pdf)?;
    println!("{}", a.output.display());
    Ok(ExitCode::SUCCESS)
}
