use anyhow::Result;
use snodo_pipelines::ops::{self, receipts::ReceiptQuery, Admin};
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
    /// Only receipts flagged for operators (unknown notice, amount differs, paid twice, annulled,
    /// conflicting copy); each names the pipelines holding it, if any.
    #[arg(long)]
    flagged: bool,
    /// Only receipts whose deliveries are held for an operator (mypay-push, mypay-export).
    #[arg(long)]
    held: bool,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Deliver a held receipt after all: one delivery per pipeline that held it (an export
    /// lists it in its next file).
    Release { id: i64 },
    /// Never deliver a held receipt where it was held (also clears a conflicting copy).
    Dismiss { id: i64 },
}

pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = super::load_plan(a.config)?;
    let done = match a.action {
        Some(Action::Release { id }) => ops::receipts::release(&Admin::open(&plan)?, id)?,
        Some(Action::Dismiss { id }) => ops::receipts::dismiss(&Admin::open(&plan)?, id)?,
        None => {
            let q = ReceiptQuery {
                entity: a.entity.unwrap_or_default(),
                flagged: a.flagged,
                held: a.held,
                limit: a.limit,
            };
            super::print_json_lines(&ops::receipts::list(&plan, &q)?)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    super::print_json_lines(&[done])?;
    Ok(ExitCode::SUCCESS)
}
