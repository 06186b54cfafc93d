//! One module per command: its arguments, one call into `snodo_pipelines::ops`, its output.

pub mod dlq;
pub mod export;
pub mod flows;
pub mod import;
pub mod notice;
pub mod onboard;
pub mod positions;
pub mod receipts;
pub mod receiver;
pub mod reconcile;
pub mod reload;
pub mod reports;
pub mod run;
pub mod sim;
pub mod tail;
pub mod topic;
pub mod treasury;
pub mod validate;

use anyhow::{bail, Result};
use snodo_pipelines::plan::{self, Plan};
use std::path::PathBuf;

/// `-c FILE` if given, else `config/demo.toml` when present, else the embedded demo.
fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        let p = PathBuf::from(snodo_pipelines::config::DEMO_PATH);
        p.exists().then_some(p)
    })
}

/// The checked configuration; its problems on standard error when there are any.
fn load_plan(config: Option<PathBuf>) -> Result<Plan> {
    let path = config_path(config);
    match plan::load(path.as_deref()) {
        Ok(plan) => {
            for w in &plan.warnings {
                tracing::warn!("{w}");
            }
            Ok(plan)
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            bail!(
                "{} problem(s) in {}",
                problems.len(),
                path.map(|p| p.display().to_string())
                    .unwrap_or_else(|| "the embedded demo configuration".into())
            )
        }
    }
}

fn print_json_lines<T: serde::Serialize>(items: &[T]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = items.iter().try_for_each(|item| {
        serde_json::to_writer(&mut out, item)?;
        writeln!(out)
    });
    match written.and_then(|()| out.flush()) {
        // The reader had enough (`| head`): not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A multi-threaded runtime for the commands that serve or call over the network.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
