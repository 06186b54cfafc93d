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
    /// Only receipts flagged for operators (unknown notice, amount differs, paid twice, annulled).
    #[arg(long)]
    flagged: bool,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = super::load_plan(a.config)?;
    let receipts = ops::receipts::list(&plan, &a.entity, a.flagged, a.limit)?;
    super::print_json_lines(&receipts)?;
    Ok(ExitCode::SUCCESS)
}
