use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(short, long)]
    config: Option<PathBuf>,
}

/// Problems on standard output (they are the answer), exit code 1 when there are any.
pub fn exec(args: Args) -> Result<ExitCode> {
    let path = super::config_path(args.config);
    match snodo_pipelines::plan::load(path.as_deref()) {
        Ok(plan) => {
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "ok: {} entities, {} pipelines",
                plan.entities.len(),
                plan.pipelines.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for p in &problems {
                println!("{p}");
            }
            eprintln!("{} problem(s)", problems.len());
            Ok(ExitCode::from(1))
        }
    }
}
