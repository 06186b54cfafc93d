use anyhow::Result;
use snodo_pipelines::{events::TailFilter, ops};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Only this entity's events.
    #[arg(long)]
    entity: Option<String>,
    /// Only this kind (`receipt.stored`) or family (`position`).
    #[arg(long)]
    kind: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
}

pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = super::load_plan(a.config)?;
    let filter = TailFilter {
        entity: a.entity,
        kind: a.kind,
    };
    ops::events::tail(&plan, &filter, a.count, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}
