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
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = super::load_plan(a.config)?;
    super::print_json_lines(&ops::treasury::list(&plan, &a.entity, a.limit)?)?;
    Ok(ExitCode::SUCCESS)
}
