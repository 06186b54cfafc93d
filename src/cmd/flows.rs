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
    /// Only the flows with this IUF.
    #[arg(long)]
    iuf: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = super::load_plan(a.config)?;
    let flows = ops::flows::list(&plan, &a.entity, a.iuf.as_deref(), a.limit)?;
    super::print_json_lines(&flows)?;
    Ok(ExitCode::SUCCESS)
}
