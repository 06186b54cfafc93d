use anyhow::Result;
use snodo_pipelines::ops;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    #[arg(long, required = true)]
    entity: Option<String>,
    /// Only flows with anomalies, or recorded as failed.
    #[arg(long)]
    anomalies: bool,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Pull the settlement flows now, as the schedule would: every entity, or one.
    Pull {
        #[arg(long)]
        entity: Option<String>,
    },
    /// One flow (every PSP and revision with this IUF) with its rows, links and anomalies.
    Show {
        #[arg(long)]
        entity: String,
        iuf: String,
    },
}

pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = super::load_plan(a.config)?;
    match a.action {
        Some(Action::Pull { entity }) => {
            let summaries = ops::reports::pull(plan, entity.as_deref())?;
            let failed = summaries.iter().any(|s| s.error.is_some());
            super::print_json_lines(&summaries)?;
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Some(Action::Show { entity, iuf }) => {
            super::print_json_lines(&ops::reports::show(&plan, &entity, &iuf)?)?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let entity = a.entity.unwrap_or_default();
            super::print_json_lines(&ops::reports::list(&plan, &entity, a.anomalies, a.limit)?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
