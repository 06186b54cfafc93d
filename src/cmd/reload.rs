use anyhow::Result;
use snodo_pipelines::ops;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The configuration the running hub was started with (it is read again by the hub).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// The hub's base URL (default: `http.public_url`, else http(s)://<http.listen>).
    #[arg(long)]
    url: Option<String>,
    /// With https://: a PEM bundle the hub's certificate may chain to (a private CA), on top of
    /// the system's roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

/// Prints the hub's answer (what changed, or why the new configuration was refused); exit
/// code 1 when refused.
pub fn exec(a: Args) -> Result<ExitCode> {
    let path = super::config_path(a.config);
    let (status, answer) =
        ops::hub::ask_reload(path.as_deref(), a.url.as_deref(), a.ca_file.as_deref())?;
    println!("{answer}");
    Ok(if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
