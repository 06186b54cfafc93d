use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Address and port to listen on (port 0: any free port, printed on standard error).
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: String,
    /// Append `<unix ms>;<Idempotency-Key>;<body bytes>` per request to FILE.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// The HTTP status of every answer (e.g. 500, to watch a hub retry).
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// Answer the first N requests 503, then `--status`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    fail_first: u64,
}

/// Serves until SIGINT/SIGTERM, then prints what it saw on standard output.
pub fn exec(a: Args) -> Result<ExitCode> {
    let opts = snodo_sim::receiver::ReceiverOptions {
        listen: a.listen,
        log: a.log,
        status: a.status,
        fail_first: a.fail_first,
    };
    let summary = super::runtime()?.block_on(snodo_sim::receiver::serve(opts))?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
