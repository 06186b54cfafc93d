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
    /// The debtor's fiscal code or VAT number (as the console searches).
    #[arg(long, group = "by")]
    fiscal_code: Option<String>,
    /// At most this many positions when no key is given.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
}

pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = super::load_plan(a.config)?;
    let key = match (&a.iud, &a.iuv, &a.notice, &a.fiscal_code) {
        (Some(v), ..) => Key::Iud(v),
        (_, Some(v), ..) => Key::Iuv(v),
        (_, _, Some(v), _) => Key::Notice(v),
        (_, _, _, Some(v)) => Key::Payer(v),
        _ => Key::All { limit: a.limit },
    };
    super::print_json_lines(&ops::positions::query(&plan, &a.entity, key)?)?;
    Ok(ExitCode::SUCCESS)
}
