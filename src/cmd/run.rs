use anyhow::Result;
use snodo_pipelines::ops;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (default: config/demo.toml, or the embedded demo when absent).
    #[arg(short, long)]
    config: Option<PathBuf>,
}

pub fn exec(args: Args) -> Result<ExitCode> {
    // A reload reads the same file again.
    let path = super::config_path(args.config.clone());
    let plan = super::load_plan(args.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work is store calls behind one SQLite writer and file transfers: a few
        // threads keep both cores busy; hundreds would only add memory and lock contention.
        .max_blocking_threads(16)
        .build()?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received, draining");
            let _ = tx.send(true);
        });
        ops::hub::run(plan, path, rx).await
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
