//! `snodo`: command line and start-up only. Everything it does lives in the library crates.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use snodo_pipelines::import::{ImportLimits, ImportOutcome, Importer};
use snodo_pipelines::plan::{self, Plan};
use snodo_store::{PositionQuery, PositionStatus, Store};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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
enum DlqAction {
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

#[derive(Subcommand)]
enum Command {
    /// Run every pipeline of the configuration until SIGINT/SIGTERM.
    Run {
        /// Configuration file (default: config/demo.toml, or the embedded demo when absent).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Check a configuration and print every problem with its path.
    Validate {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Import one MyPay flow through the same code path as a pipeline.
    Import {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// IPA code of the entity the flow belongs to.
        #[arg(long)]
        entity: String,
        /// Where the outcome files go (default: beside PATH).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The flow: `<codIPA>-<IUF>-<version>.zip` (or `.csv`).
        path: PathBuf,
    },
    /// Print an entity's import flows (status, counts, error) as JSON lines, newest first.
    Flows {
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long)]
        entity: String,
        /// Only the flows with this IUF.
        #[arg(long)]
        iuf: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Write a batch receipts pipeline's next file now (MyPay's export), as its schedule would:
    /// every receipt not yet exported, or the file an interrupted run left unfinished.
    Export {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The pipeline's name (`from = "receipts"` with a `batch`).
        #[arg(long)]
        pipeline: String,
    },
    /// Dead letters: receipt deliveries that failed for good or ran out of retries.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Print an entity's receipts from the node as JSON lines, newest first.
    Receipts {
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long)]
        entity: String,
        /// Only receipts flagged for operators (unknown notice, amount differs, paid twice, annulled).
        #[arg(long)]
        flagged: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Print an entity's positions as JSON lines.
    Positions {
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long)]
        entity: String,
        #[arg(long, group = "by")]
        iud: Option<String>,
        #[arg(long, group = "by")]
        iuv: Option<String>,
        #[arg(long, group = "by")]
        notice: Option<String>,
        /// At most this many positions when no key is given.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Follow the ops event stream, one line per event (from the event topic with [kafka],
    /// else from the store).
    Tail {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Only this entity's events.
        #[arg(long)]
        entity: Option<String>,
        /// Only this kind (`receipt.stored`) or family (`position`).
        #[arg(long)]
        kind: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Read a Kafka topic, every partition, outside any consumer group (commits nothing): one
    /// `key<TAB>value` line per message; or, with --produce, write such lines to it. For
    /// operators, tests and the intake benchmark.
    Topic {
        /// `host:port[,host:port...]`.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
        /// Start from the oldest message (default: only new ones).
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Stop when nothing arrived for this long: `5s`.
        #[arg(long, value_parser = parse_duration)]
        idle: Option<std::time::Duration>,
        /// Print nothing but the number of messages read and the time it took.
        #[arg(long)]
        quiet: bool,
        /// Produce the `key<TAB>value` lines of FILE (`-`: standard input) instead of reading,
        /// creating the topic with --partitions when missing.
        #[arg(long, value_name = "FILE")]
        produce: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
    /// Simulate the national node and its PSPs: verify, activate and pay notices on a hub over
    /// SOAP, then report calls, faults and latencies; or, with --serve, the pagoPA Checkout and
    /// external-verification stand-ins (see docs/SIM.md).
    Sim(SimArgs),
    /// An entity system for benchmarks and demos: accepts every receipt a hub pushes, logs it,
    /// and prints `received=N distinct=N refused=N` on SIGINT/SIGTERM (see docs/SIM.md).
    Receiver(ReceiverArgs),
}

#[derive(clap::Args)]
struct SimArgs {
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// The hub's base URL (default: http://<http.listen of the configuration>).
    #[arg(long, visible_alias = "hub")]
    url: Option<String>,
    /// Pay every active position with a notice number of every configured entity.
    #[arg(long, conflicts_with = "notices", required_unless_present_any = ["notices", "serve"])]
    from_config: bool,
    /// Notices to pay: one `<fiscalCode>;<noticeNumber>` a line.
    #[arg(long)]
    notices: Option<PathBuf>,
    /// Payments to make, taking the notices in order and cycling (default: one per notice).
    #[arg(long)]
    count: Option<usize>,
    /// Payments in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// paGetPayment and paSendRT instead of paGetPaymentV2 and paSendRTV2.
    #[arg(long)]
    v1: bool,
    /// Only paVerifyPaymentNotice: nothing activated or paid (read-only load).
    #[arg(long)]
    verify_only: bool,
    /// Inject a fault the hub must refuse.
    #[arg(long, value_enum)]
    fault: Option<SimFault>,
    /// Append `<receiptId>;<noticeNumber>;<OK|faultCode>` per receipt answer to FILE.
    #[arg(long, value_name = "FILE")]
    receipts_log: Option<PathBuf>,
    /// Seconds each call may take, connection included.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Start this many payments per second overall (latency at a fixed load), instead of as
    /// fast as the hub answers.
    #[arg(long)]
    rate: Option<f64>,
    /// Resend a call that got no answer (refused, cut, timed out, HTTP error, not SOAP) for up
    /// to this long, as the national node does: `60s`, `2m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retry_for: Option<std::time::Duration>,
    /// Start no payment after this long (those in flight finish): `60s`, `2m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<std::time::Duration>,
    /// Pay nothing now: serve the pagoPA Checkout stand-in (carts paid on the hub when their
    /// page's Pay button is pressed) and the external-verification stand-in on ADDR, until
    /// SIGINT/SIGTERM.
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with_all = ["from_config", "notices", "count", "verify_only", "rate", "duration"]
    )]
    serve: Option<String>,
    /// With --serve: the Ocp-Apim-Subscription-Key a cart must come with (default `demo`).
    #[arg(long, value_name = "KEY")]
    checkout_key: Option<String>,
    /// With --serve: the external-verification answers, a JSON object by notice number, read
    /// on every request (default: the demo rule, see docs/SIM.md).
    #[arg(long, value_name = "FILE")]
    external_file: Option<PathBuf>,
    /// With --serve: the bearer token the external-verification stand-in requires.
    #[arg(long, value_name = "TOKEN")]
    external_token: Option<String>,
    /// With --serve: the base of the cart URLs handed out (default: http://<ADDR>).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
}

#[derive(clap::Args)]
struct ReceiverArgs {
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

/// `500ms`, `30s`, `5m`, `1h`, as in the configuration.
fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    snodo_connectors::dir::parse_duration(s)
}

#[derive(Clone, Copy, ValueEnum)]
enum SimFault {
    /// idStation `<broker>_99`: PAA_STAZIONE_INT_ERRATA at verify.
    WrongStation,
    /// Each receipt sent twice: the second PAA_RECEIPT_DUPLICATA.
    DuplicateReceipt,
    /// A well-formed notice number no position has: PAA_PAGAMENTO_SCONOSCIUTO.
    UnknownNotice,
    /// Receipt amount one cent more: PAA_SEMANTICA.
    WrongAmount,
}

impl From<SimFault> for snodo_sim::FaultKind {
    fn from(f: SimFault) -> Self {
        match f {
            SimFault::WrongStation => Self::WrongStation,
            SimFault::DuplicateReceipt => Self::DuplicateReceipt,
            SimFault::UnknownNotice => Self::UnknownNotice,
            SimFault::WrongAmount => Self::WrongAmount,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match dispatch(cli.command) {
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

/// `-c FILE` if given, else `config/demo.toml` when present, else the embedded demo.
fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        let p = PathBuf::from(snodo_pipelines::config::DEMO_PATH);
        p.exists().then_some(p)
    })
}

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

fn produce_topic(brokers: &str, topic: &str, file: &Path, partitions: i32) -> Result<ExitCode> {
    use snodo_connectors::kafka::{self, KafkaConnection, KafkaProducer};
    use std::io::BufRead;
    let conn = KafkaConnection::new(brokers);
    let timeout = std::time::Duration::from_secs(60);
    kafka::ensure_topics(&conn, &[(topic.to_string(), partitions)], timeout)?;
    let producer = KafkaProducer::new(&conn)?;
    let input: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| file.display().to_string())?,
        ))
    };
    let started = std::time::Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    let mut sent = 0u64;
    for line in input.lines() {
        let line = line?;
        let (key, value) = line.split_once('\t').unwrap_or(("", line.as_str()));
        batch.push((key.to_string(), value.as_bytes().to_vec()));
        if batch.len() == 10_000 {
            producer.send_all(topic, &batch, timeout)?;
            sent += batch.len() as u64;
            batch.clear();
        }
    }
    producer.send_all(topic, &batch, timeout)?;
    sent += batch.len() as u64;
    eprintln!(
        "produced={sent} seconds={:.3}",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn read_topic(
    brokers: &str,
    topic: &str,
    from_beginning: bool,
    count: Option<u64>,
    idle: Option<std::time::Duration>,
    quiet: bool,
) -> Result<ExitCode> {
    use snodo_connectors::kafka::{KafkaConnection, KafkaReader, ReadFrom};
    use std::io::Write;
    let from = if from_beginning {
        ReadFrom::Beginning
    } else {
        ReadFrom::End
    };
    let mut reader = KafkaReader::open(&KafkaConnection::new(brokers), topic, from)
        .with_context(|| format!("reading {topic} on {brokers}"))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let started = std::time::Instant::now();
    let mut last = std::time::Instant::now();
    let mut read = 0u64;
    while count.is_none_or(|c| read < c) {
        match reader.next(std::time::Duration::from_millis(200))? {
            Some(m) => {
                read += 1;
                last = std::time::Instant::now();
                if !quiet {
                    out.write_all(m.key.as_deref().unwrap_or_default())?;
                    out.write_all(b"\t")?;
                    out.write_all(&m.payload)?;
                    out.write_all(b"\n")?;
                }
            }
            None if idle.is_some_and(|i| last.elapsed() >= i) => break,
            None => {}
        }
    }
    out.flush()?;
    if quiet {
        println!(
            "messages={read} seconds={:.3}",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn open_store(plan: &Plan) -> Result<Arc<dyn Store>> {
    let store = snodo_store::open(&plan.config.hub.store, &plan.config.hub.data_dir)
        .context("opening the store")?;
    Ok(Arc::from(store))
}

/// The store of a configuration, for commands that read one entity's data.
fn entity_store(config: Option<PathBuf>, entity: &str) -> Result<Arc<dyn Store>> {
    let plan = load_plan(config)?;
    if !plan.entities.contains_key(entity) {
        bail!("entity {entity:?} is not configured");
    }
    open_store(&plan)
}

fn dispatch(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Validate { config } => {
            let path = config_path(config);
            match plan::load(path.as_deref()) {
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
        Command::Run { config } => run(load_plan(config)?),
        Command::Import {
            config,
            entity,
            out,
            path,
        } => import(load_plan(config)?, &entity, out, &path),
        Command::Flows {
            config,
            entity,
            iuf,
            limit,
        } => {
            let store = entity_store(config, &entity)?;
            let flows = match &iuf {
                Some(iuf) => store.flows_by_iuf(&entity, iuf)?,
                None => store.recent_flows(&entity, limit)?,
            };
            print_json_lines(&flows)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { action } => dlq(action),
        Command::Export { config, pipeline } => export(load_plan(config)?, &pipeline),
        Command::Topic {
            brokers,
            topic,
            produce: Some(file),
            partitions,
            ..
        } => produce_topic(&brokers, &topic, &file, partitions),
        Command::Topic {
            brokers,
            topic,
            from_beginning,
            count,
            idle,
            quiet,
            produce: None,
            ..
        } => read_topic(&brokers, &topic, from_beginning, count, idle, quiet),
        Command::Tail {
            config,
            entity,
            kind,
            count,
        } => {
            let plan = load_plan(config)?;
            let store = open_store(&plan)?;
            let filter = snodo_pipelines::events::TailFilter { entity, kind };
            snodo_pipelines::events::tail(
                &plan,
                store.as_ref(),
                &filter,
                count,
                &mut std::io::stdout().lock(),
            )
            .map_err(|e| anyhow::anyhow!("tail: {e}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Receipts {
            config,
            entity,
            flagged,
            limit,
        } => {
            let store = entity_store(config, &entity)?;
            print_json_lines(&store.receipts(&entity, flagged, limit)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Positions {
            config,
            entity,
            iud,
            iuv,
            notice,
            limit,
        } => {
            let store = entity_store(config, &entity)?;
            let query = match (&iud, &iuv, &notice) {
                (Some(v), _, _) => PositionQuery::Iud(v),
                (_, Some(v), _) => PositionQuery::Iuv(v),
                (_, _, Some(v)) => PositionQuery::NoticeNumber(v),
                _ => PositionQuery::All { limit },
            };
            print_json_lines(&store.positions(&entity, &query)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim(args) => sim(args),
        Command::Receiver(args) => receiver(args),
    }
}

/// `snodo export`: one export of a batch pipeline, through the same code as its schedule.
fn export(plan: Plan, pipeline: &str) -> Result<ExitCode> {
    let Some(index) = plan.pipelines.iter().position(|p| p.name == pipeline) else {
        let batch: Vec<&str> = plan
            .pipelines
            .iter()
            .filter(|p| {
                matches!(
                    p.kind,
                    snodo_pipelines::plan::PipelineKind::Receipts {
                        route: snodo_pipelines::plan::ReceiptRoute::Batch { .. },
                        ..
                    }
                )
            })
            .map(|p| p.name.as_str())
            .collect();
        bail!(
            "no pipeline {pipeline:?} (batch pipelines: {})",
            if batch.is_empty() {
                "none".to_string()
            } else {
                batch.join(", ")
            }
        );
    };
    let store = open_store(&plan)?;
    let instance = snodo_pipelines::engine::instance_name(&plan.config.hub);
    let exporter = snodo_pipelines::export::Exporter::new(Arc::new(plan), index, store, instance)
        .map_err(|e| anyhow::anyhow!("pipeline {pipeline}: {e}"))?;
    // An unfinished file first (same receipts, same name), then a new one.
    let mut written = Vec::new();
    if let Some(name) = exporter.export(true, None)? {
        written.push(name);
    }
    if let Some(name) = exporter.export(false, None)? {
        written.push(name);
    }
    if written.is_empty() {
        println!("nothing to export");
    }
    for name in written {
        println!("wrote {name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `snodo receiver`: serves until SIGINT/SIGTERM, then prints what it saw on standard output.
fn receiver(args: ReceiverArgs) -> Result<ExitCode> {
    let opts = snodo_sim::receiver::ReceiverOptions {
        listen: args.listen,
        log: args.log,
        status: args.status,
        fail_first: args.fail_first,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = rt.block_on(snodo_sim::receiver::serve(opts))?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// `snodo sim`: the notices come from a file or from the hub's store; the rest is the library's.
fn sim(args: SimArgs) -> Result<ExitCode> {
    if args.serve.is_none() {
        for (given, flag) in [
            (args.checkout_key.is_some(), "--checkout-key"),
            (args.external_file.is_some(), "--external-file"),
            (args.external_token.is_some(), "--external-token"),
            (args.public_url.is_some(), "--public-url"),
        ] {
            if given {
                bail!("{flag} goes with --serve");
            }
        }
    }
    let plan = load_plan(args.config.clone())?;
    let pagopa = &plan.config.pagopa;
    let station = pagopa
        .stations
        .first()
        .context("the configuration has no pagopa.stations")?
        .clone();
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", connectable(&plan.config.http.listen)));
    if let Some(listen) = args.serve.clone() {
        let mut payer =
            snodo_sim::SimOptions::new(url, pagopa.broker_fiscal_code.clone(), station, Vec::new());
        payer.v1 = args.v1;
        payer.fault = args.fault.map(Into::into);
        payer.receipts_log = args.receipts_log;
        payer.timeout = std::time::Duration::from_secs(args.timeout.max(1));
        payer.retry_for = args.retry_for;
        let mut opts = snodo_sim::ServeOptions::new(listen, payer);
        if let Some(key) = args.checkout_key {
            opts.checkout_key = key;
        }
        opts.external.file = args.external_file;
        opts.external.token = args.external_token;
        opts.public_url = args.public_url;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(snodo_sim::serve(opts, snodo_sim::receiver::signalled()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let notices = match &args.notices {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            snodo_sim::parse_notices(&text).with_context(|| path.display().to_string())?
        }
        None => active_notices(&plan)?,
    };
    if notices.is_empty() {
        bail!("no notices to pay (no active position with a notice number, or an empty file)");
    }
    let mut opts =
        snodo_sim::SimOptions::new(url, pagopa.broker_fiscal_code.clone(), station, notices);
    if let Some(n) = args.count {
        opts.count = n;
    }
    opts.concurrency = args.concurrency;
    opts.v1 = args.v1;
    opts.verify_only = args.verify_only;
    opts.fault = args.fault.map(Into::into);
    opts.receipts_log = args.receipts_log;
    opts.timeout = std::time::Duration::from_secs(args.timeout.max(1));
    opts.rate = args.rate;
    opts.retry_for = args.retry_for;
    opts.duration = args.duration;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match rt.block_on(snodo_sim::run(opts)) {
        Ok(report) => {
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ snodo_sim::SimError::Unreachable { .. }) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

/// Every active position with a notice number, entity by entity (IPA code order).
fn active_notices(plan: &Plan) -> Result<Vec<snodo_sim::NoticeTarget>> {
    let store = open_store(plan)?;
    let mut entities: Vec<_> = plan.entities.values().collect();
    entities.sort_by(|a, b| a.ipa_code.cmp(&b.ipa_code));
    let mut out = Vec::new();
    for e in entities {
        let positions = store.positions(&e.ipa_code, &PositionQuery::All { limit: u32::MAX })?;
        out.extend(positions.into_iter().filter_map(|p| {
            let notice = p
                .notice_number
                .filter(|_| p.status == PositionStatus::Active)?;
            Some(snodo_sim::NoticeTarget {
                fiscal_code: e.fiscal_code.as_str().to_string(),
                notice_number: notice,
            })
        }));
    }
    Ok(out)
}

/// A listen address one can connect to: the wildcard addresses become loopback.
fn connectable(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_string()
    }
}

fn dlq(action: DlqAction) -> Result<ExitCode> {
    match action {
        DlqAction::List {
            config,
            entity,
            pipeline,
            limit,
        } => {
            let store = open_store(&load_plan(config)?)?;
            let dead = store.deliveries(
                snodo_store::DeliveryStatus::Dead,
                entity.as_deref(),
                pipeline.as_deref(),
                limit,
            )?;
            print_json_lines(&dead)?;
        }
        DlqAction::Show { config, id } => {
            let store = open_store(&load_plan(config)?)?;
            match store.delivery(id)? {
                Some(d) => print_json_lines(&[d])?,
                None => bail!("no delivery {id}"),
            }
        }
        DlqAction::Replay {
            config,
            ids,
            all,
            entity,
        } => {
            let store = open_store(&load_plan(config)?)?;
            let ids = if all { Vec::new() } else { ids };
            let n = store.replay(&ids, entity.as_deref())?;
            println!("replayed={n}");
        }
    }
    Ok(ExitCode::SUCCESS)
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

fn run(plan: Plan) -> Result<ExitCode> {
    let store = open_store(&plan)?;
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
        let hub = snodo_pipelines::engine::Hub::new(plan, store);
        hub.run(rx).await?;
        Ok::<_, anyhow::Error>(())
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

fn import(plan: Plan, entity: &str, out: Option<PathBuf>, path: &Path) -> Result<ExitCode> {
    let runtime = plan
        .entities
        .get(entity)
        .with_context(|| format!("entity {entity:?} is not configured"))?
        .clone();
    let store = open_store(&plan)?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", path.display()))?
        .to_string();
    let out_dir = out.unwrap_or_else(|| {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let bar = progress_bar();
    let stop = AtomicBool::new(false);
    let on_progress = |rows: u64| {
        if let Some(b) = &bar {
            b.set_position(rows);
        }
    };
    let importer = Importer {
        store: store.as_ref(),
        entity: &runtime,
        staging: snodo_pipelines::engine::staging_dir(&plan),
        limits: ImportLimits::from_hub(&plan.config.hub),
        stop: &stop,
        progress: &on_progress,
    };
    let outcome = importer.import(&file_name, path, false)?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match outcome {
        ImportOutcome::Done { flow, files, .. } => {
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            for f in &files {
                // A one-shot import is never redelivered, so its staged outcome files can move.
                let target = out_dir.join(&f.name);
                if std::fs::rename(&f.path, &target).is_err() {
                    std::fs::copy(&f.path, &target)
                        .with_context(|| format!("writing {}", target.display()))?;
                }
                eprintln!("wrote {}", target.display());
            }
            let p = flow.progress;
            println!(
                "rows={} accepted={} rejected={} flow={}",
                p.rows_done,
                p.accepted,
                p.rejected,
                flow.status.as_str()
            );
            Ok(ExitCode::SUCCESS)
        }
        ImportOutcome::Aborted {
            flow,
            code,
            message,
        } => {
            eprintln!("{code}: {message}");
            let p = flow.map(|f| f.progress).unwrap_or_default();
            println!(
                "rows={} accepted={} rejected={} flow=IMPORT_ABORTITO code={code}",
                p.rows_done, p.accepted, p.rejected
            );
            Ok(ExitCode::from(1))
        }
        ImportOutcome::Interrupted => bail!("import interrupted"),
    }
}

fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {pos} rows imported ({per_sec}) {elapsed}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(bar)
}
