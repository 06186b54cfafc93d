//! `snodo`: arguments and start-up only. Every operation lives in the library
//! (`snodo_pipelines::ops`), where the `/admin` routes call it too.

mod cmd;

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::process::ExitCode;

/// Imports hand rows between threads by the million; mimalloc frees across threads cheaply.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "snodo",
    version,
    about = "Integration hub for a regional pagoPA payment node"
)]
struct Cli {
    /// Log format: human text, or JSON lines for log shippers. Level from SNODO_LOG (default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run every pipeline of the configuration until SIGINT/SIGTERM.
    Run(cmd::run::Args),
    /// Check a configuration and print every problem with its path.
    Validate(cmd::validate::Args),
    /// Ask the running hub to read its configuration again and apply it without stopping
    /// (or refuse it, keeping the one running): what changed, as JSON.
    Reload(cmd::reload::Args),
    /// Check a new entity's wiring end to end against the running hub: positions in through its
    /// intake, paid by the simulated node, receipts delivered and exported; a PASS/FAIL
    /// checklist (exit code 0 only when every step passes).
    Onboard(cmd::onboard::Args),
    /// Import one MyPay flow through the same code path as a pipeline.
    Import(cmd::import::Args),
    /// Print an entity's import flows (status, counts, error) as JSON lines, newest first.
    Flows(cmd::flows::Args),
    /// Write a batch receipts pipeline's next file now (MyPay's export), as its schedule would:
    /// every receipt not yet exported, or the file an interrupted run left unfinished.
    Export(cmd::export::Args),
    /// Dead letters: receipt deliveries that failed for good or ran out of retries.
    Dlq {
        #[command(subcommand)]
        action: cmd::dlq::Action,
    },
    /// Print an entity's receipts from the node as JSON lines, newest first.
    Receipts(cmd::receipts::Args),
    /// pagoPA's settlement flows (FdR): an entity's flows as JSON lines (newest first), `pull`
    /// now, or `show` one with its payments, links and anomalies.
    Reports(cmd::reports::Args),
    /// Print an entity's treasury movements (the giornale di cassa its treasury intakes read)
    /// as JSON lines, the latest first: bill, amount, dates, causale and the IUF or IUV in it.
    Treasury(cmd::treasury::Args),
    /// Reconciliation: an entity's payments and treasury movements with MyPivot's classes
    /// (receipts, settlement flows and credits matched now): counts per class, or one class's
    /// items as JSON lines.
    Reconcile(cmd::reconcile::Args),
    /// Print an entity's positions as JSON lines.
    Positions(cmd::positions::Args),
    /// Write a position's payment notice (avviso pagoPA) as a PDF.
    Notice(cmd::notice::Args),
    /// Follow the ops event stream, one line per event (from the event topic with [kafka],
    /// else from the store).
    Tail(cmd::tail::Args),
    /// Read a Kafka topic, every partition, outside any consumer group (commits nothing): one
    /// `key<TAB>value` line per message; or, with --produce, write such lines to it. For
    /// operators, tests and the intake benchmark.
    Topic(cmd::topic::Args),
    /// Simulate the national node and its PSPs: verify, activate and pay notices on a hub over
    /// SOAP, then report calls, faults and latencies; or, with --serve, the pagoPA Checkout and
    /// external-verification stand-ins (see docs/SIM.md).
    Sim(Box<cmd::sim::Args>),
    /// An entity system for benchmarks and demos: accepts every receipt a hub pushes, logs it,
    /// and prints `received=N distinct=N refused=N` on SIGINT/SIGTERM (see docs/SIM.md).
    Receiver(cmd::receiver::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let done = match cli.command {
        Command::Run(a) => cmd::run::exec(a),
        Command::Validate(a) => cmd::validate::exec(a),
        Command::Reload(a) => cmd::reload::exec(a),
        Command::Onboard(a) => cmd::onboard::exec(a),
        Command::Import(a) => cmd::import::exec(a),
        Command::Flows(a) => cmd::flows::exec(a),
        Command::Export(a) => cmd::export::exec(a),
        Command::Dlq { action } => cmd::dlq::exec(action),
        Command::Receipts(a) => cmd::receipts::exec(a),
        Command::Reports(a) => cmd::reports::exec(a),
        Command::Positions(a) => cmd::positions::exec(a),
        Command::Treasury(a) => cmd::treasury::exec(a),
        Command::Reconcile(a) => cmd::reconcile::exec(a),
        Command::Notice(a) => cmd::notice::exec(a),
        Command::Tail(a) => cmd::tail::exec(a),
        Command::Topic(a) => cmd::topic::exec(a),
        Command::Sim(a) => cmd::sim::exec(*a),
        Command::Receiver(a) => cmd::receiver::exec(a),
    };
    match done {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SNODO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
