use anyhow::Result;
use snodo_pipelines::ops::{dlq, Admin};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Action {
    /// Dead letters as JSON lines, newest first.
    List {
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long)]
        entity: Option<String>,
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One delivery, with its last error.
    Show {
        #[arg(short, long)]
        config: Option<PathBuf>,
        id: i64,
    },
    /// Put dead letters back in the outbox: the given ids, or --all (of --entity).
    Replay {
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(required_unless_present = "all")]
        ids: Vec<i64>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(long)]
        entity: Option<String>,
    },
}

pub fn exec(action: Action) -> Result<ExitCode> {
    match action {
        Action::List {
            config,
            entity,
            pipeline,
            limit,
        } => {
            let admin = Admin::open(&super::load_plan(config)?)?;
            let q = dlq::DlqQuery {
                entity,
                pipeline,
                limit,
            };
            super::print_json_lines(&dlq::list(&admin, &q)?)?;
        }
        Action::Show { config, id } => {
            let admin = Admin::open(&super::load_plan(config)?)?;
            super::print_json_lines(&[dlq::show(&admin, id)?])?;
        }
        Action::Replay {
            config,
            ids,
            all,
            entity,
        } => {
            let admin = Admin::open(&super::load_plan(config)?)?;
            let ids = if all { Vec::new() } else { ids };
            let n = dlq::replay(&admin, &ids, entity.as_deref())?;
            println!("replayed={n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
