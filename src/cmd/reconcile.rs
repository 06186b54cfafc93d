use anyhow::{bail, Result};
use snodo_pipelines::ops::{self, reconcile};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// `rebuild`: relabel every payment and movement of the entity (repair), then report.
    #[arg(value_parser = ["rebuild"])]
    action: Option<String>,
    #[arg(short, long)]
    config: Option<PathBuf>,
    #[arg(long)]
    entity: String,
    /// Only the payments and movements with this class (e.g. RT_NO_IUF), as JSON lines.
    #[arg(long)]
    class: Option<String>,
    /// How long after its receipt a payment may wait for its settlement flow (RT_NO_IUF after);
    /// `[reconciliation] report_grace` when not given.
    #[arg(long, value_parser = ops::parse_duration)]
    report_grace: Option<std::time::Duration>,
    /// How long after its date a flow may wait for its credit (IUF_NO_TES after);
    /// `[reconciliation] credit_grace` when not given.
    #[arg(long, value_parser = ops::parse_duration)]
    credit_grace: Option<std::time::Duration>,
    /// Label as of this instant (RFC 3339) instead of now: what the grace periods measure to.
    /// The labels written stay until the next change.
    #[arg(long)]
    at: Option<String>,
}

/// Brings the entity's labels up to date (or rebuilds them), then prints its counts per class
/// (one JSON line) or the items of one class (JSON lines).
pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = Arc::new(super::load_plan(a.config)?);
    if let Some(c) = &a.class {
        if let Err(why) = reconcile::class(c) {
            bail!(why);
        }
    }
    let grace = reconcile::Grace {
        report: a.report_grace.unwrap_or(plan.grace.report),
        credit: a.credit_grace.unwrap_or(plan.grace.credit),
    };
    let now = reconcile::instant(a.at.as_deref())?;
    if a.action.is_some() {
        let counts = reconcile::rebuild_entity(&plan, &a.entity, grace, now)?;
        eprintln!(
            "rebuilt {}: {} item(s) written, {} label set(s) changed, {} removed",
            a.entity, counts.written, counts.changed, counts.removed
        );
    }
    let (summary, store) = reconcile::reconcile(plan, &a.entity, grace, now)?;
    match a.class {
        None => super::print_json_lines(&[summary])?,
        Some(c) => super::print_json_lines(&reconcile::items(&*store, &a.entity, Some(&c))?)?,
    }
    Ok(ExitCode::SUCCESS)
}
