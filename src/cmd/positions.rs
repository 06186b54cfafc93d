use anyhow::Result;
use snodo_pipelines::ops::{self, positions::Key};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(short, long)]
    config: Option<PathBuf>,
    #[arg(long)]
    entity: String,
    #[arg(long, group = "by")]
    iud: Option<String>,
    #[arg(long, group = "by")]
    iuv: Option<String>,
    #[arg(long, group = "by")]
    notice: Option<String>,
    /// At most this many positions when no key is given.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
}

pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = super::load_plan(a.config)?;
    let key = match (&a.iud, &a.iuv, &a.notice) {
        (Some(v), _, _) => Key::Iud(v),
        (_, Some(v), _) => Key::Iuv(v),
        (_, _, Some(v)) => Key::Notice(v),
        _ => Key::All { limit: a.limit },
    };
    super::print_json_lines(&ops::positions::query(&plan, &a.entity, key)?)?;
    Ok(ExitCode::SUCCESS)
}
