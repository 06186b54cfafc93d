use anyhow::{bail, Result};
use snodo_pipelines::ops::{self, reconcile::Grace};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(short, long)]
    config: Option<PathBuf>,
    #[arg(long)]
    entity: String,
    /// Only the payments and movements with this class (e.g. RT_NO_IUF), as JSON lines.
    #[arg(long)]
    class: Option<String>,
    /// How long after its receipt a payment may wait for its settlement flow (RT_NO_IUF after).
    #[arg(long, value_parser = ops::parse_duration, default_value = "72h")]
    report_grace: std::time::Duration,
    /// How long after its date a flow may wait for its credit (IUF_NO_TES after).
    #[arg(long, value_parser = ops::parse_duration, default_value = "120h")]
    credit_grace: std::time::Duration,
    /// Classify as of this instant (RFC 3339) instead of now: what the grace periods measure to.
    #[arg(long)]
    at: Option<String>,
}

/// The entity's counts per class (one JSON line), or the items of one class (JSON lines).
pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = super::load_plan(a.config)?;
    if let Some(c) = &a.class {
        if let Err(why) = ops::reconcile::class(c) {
            bail!(why);
        }
    }
    let grace = Grace {
        report: a.report_grace,
        credit: a.credit_grace,
    };
    let (summary, items) = ops::reconcile::reconcile_at(&plan, &a.entity, grace, a.at.as_deref())?;
    match a.class {
        None => super::print_json_lines(&[summary])?,
        Some(c) => {
            let of: Vec<_> = items
                .into_iter()
                .filter(|i| i.classes.contains(&c.as_str()))
                .collect();
            super::print_json_lines(&of)?
        }
    }
    Ok(ExitCode::SUCCESS)
}
