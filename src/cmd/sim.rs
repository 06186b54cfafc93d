use anyhow::{bail, Context, Result};
use snodo_pipelines::ops;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// The hub's base URL (default: http://<http.listen of the configuration>, https:// when
    /// it has [http.tls]).
    #[arg(long, visible_alias = "hub")]
    url: Option<String>,
    /// With https://: a PEM bundle the hub's certificate may chain to (a private CA), on top of
    /// the system's roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// With https://: the client certificate (PEM) to present, as pagoPA's node does to a hub
    /// with `node_auth` mtls; needs --client-key.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The private key (PEM) of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Pay every active position with a notice number of every configured entity.
    #[arg(long, conflicts_with = "notices", required_unless_present_any = ["notices", "serve", "publish_flows", "publish_treasury", "demand", "secondary_receipt"])]
    from_config: bool,
    /// Ask the entity with this fiscal code for a notice of a catalogue service, as a PSP's
    /// citizen paying the car tax without a notice does (paDemandPaymentNotice with the
    /// TassaAutomobilistica data), then verify, activate and pay the notice it answers.
    #[arg(long, value_name = "FISCAL_CODE", conflicts_with_all = ["from_config", "notices", "serve", "publish_flows", "publish_treasury", "verify_only", "receipts_only"])]
    demand: Option<String>,
    /// With --demand: the idServizio (default 00001).
    #[arg(long, value_name = "ID", requires = "demand")]
    demand_service: Option<String>,
    /// With --demand: the idSoggettoServizio (default 00001).
    #[arg(long, value_name = "ID", requires = "demand")]
    demand_provider: Option<String>,
    /// With --demand: the vehicle's plate (default AB123CD).
    #[arg(long, requires = "demand")]
    plate: Option<String>,
    /// With --demand: the vehicle's type (default car).
    #[arg(long, value_enum, requires = "demand")]
    vehicle_type: Option<Vehicle>,
    /// Send the entity with this fiscal code one receipt of a foreign issuer's notice that
    /// names it as a transfer's beneficiary (idPA = the entity, 20.00 of 100.00), as pagoPA
    /// sends each secondary beneficiary its copy; the hub must answer OK.
    #[arg(long, value_name = "FISCAL_CODE", conflicts_with_all = ["from_config", "notices", "serve", "publish_flows", "publish_treasury", "demand", "verify_only", "receipts_only"])]
    secondary_receipt: Option<String>,
    /// With --secondary-receipt: the issuer's fiscal code (default 00339370272, none of the
    /// demo's entities).
    #[arg(long, value_name = "FISCAL_CODE", requires = "secondary_receipt")]
    issuer: Option<String>,
    /// After each receipt the issuer accepts, send the same receipt to every other transfer's
    /// beneficiary that is an entity of the configuration (`idPA` = that entity), as pagoPA
    /// sends each beneficiary its copy: the hub acknowledges it and delivers it once.
    #[arg(long, conflicts_with_all = ["verify_only", "serve"])]
    beneficiary_copies: bool,
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
    /// Pay as a Poste channel: activate with transferType POSTAL where the verify says allCCP.
    #[arg(long)]
    postal: bool,
    /// Only paVerifyPaymentNotice: nothing activated or paid (read-only load).
    #[arg(long)]
    verify_only: bool,
    /// Verify and activate the payments first (untimed), then send only their receipts: the
    /// report, `--duration` and `--rate` cover the receipts alone (the hub's store path).
    #[arg(long, conflicts_with = "verify_only")]
    receipts_only: bool,
    /// Inject a fault the hub must refuse.
    #[arg(long, value_enum)]
    fault: Option<Fault>,
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
    #[arg(long, value_name = "DURATION", value_parser = ops::parse_duration)]
    retry_for: Option<std::time::Duration>,
    /// Start no payment after this long (those in flight finish): `60s`, `2m`.
    #[arg(long, value_name = "DURATION", value_parser = ops::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Pay nothing now: serve the pagoPA Checkout stand-in (carts paid on the hub when their
    /// page's Pay button is pressed) and the external-verification stand-in on ADDR, until
    /// SIGINT/SIGTERM.
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with_all = ["from_config", "notices", "count", "verify_only", "receipts_only", "rate", "duration"]
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
    /// With --serve: write each MyPay SOAP verification (`/external-soap/`) received to
    /// DIR/<n>.xml, as received.
    #[arg(long, value_name = "DIR")]
    external_record: Option<PathBuf>,
    /// With --serve: the base of the cart URLs handed out (default: http://<ADDR>).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// The ledger directory: every receipt is recorded in DIR/payments.jsonl before it is
    /// sent; --publish-flows settles it into DIR/flows/, --serve serves those (default:
    /// sim-ledger beside the configuration file, or in the current directory).
    #[arg(long, value_name = "DIR", conflicts_with = "no_ledger")]
    ledger: Option<PathBuf>,
    /// Record no payment in the ledger (and serve no flows).
    #[arg(long)]
    no_ledger: bool,
    /// Pay nothing: settle the ledger's payments of --date into published flows (one per PSP
    /// and entity), print them and exit.
    #[arg(
        long,
        conflicts_with_all = ["serve", "from_config", "notices", "count", "verify_only", "receipts_only", "rate", "duration", "no_ledger"]
    )]
    publish_flows: bool,
    /// Pay nothing: write each entity's OPI giornale di cassa crediting the flows published in
    /// the ledger (one SCT per flow, the official causale) under DIR/treasury/, print and exit.
    #[arg(
        long,
        conflicts_with_all = ["serve", "from_config", "notices", "count", "verify_only", "receipts_only", "rate", "duration", "no_ledger", "publish_flows"]
    )]
    publish_treasury: bool,
    /// With --publish-flows: the day (Rome) whose payments are settled (default: today); with
    /// --publish-treasury, the giornale's day.
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: Option<String>,
    /// With --publish-flows: add one case of each anomaly (NO_RPT and STAND_IN_NO_RPT rows for
    /// IUVs never paid, NO_RPT and EXECUTED rows for a paid IUV without its receipt, an amount
    /// off its receipt's, a payment in two flows, a revoked payment, wrong declared totals) and
    /// a revision 2; with --publish-treasury: a wrong amount, a mangled causale, a flow never
    /// credited and an unknown movement (docs/SIM.md).
    #[arg(long)]
    anomalies: bool,
    /// With --serve: the FdR 3 subscription key (Ocp-Apim-Subscription-Key; default `demo`).
    #[arg(long, value_name = "KEY")]
    fdr_key: Option<String>,
    /// With --serve: the station password nodoChiedi* calls must carry (default: any).
    #[arg(long, value_name = "PASSWORD")]
    fdr_password: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Vehicle {
    /// tipoVeicoloTarga 1.
    Car,
    /// tipoVeicoloTarga 2.
    Trailer,
    /// tipoVeicoloTarga 4.
    Motorcycle,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Fault {
    /// idStation `<broker>_99`: PAA_STAZIONE_INT_ERRATA at verify.
    WrongStation,
    /// Each receipt sent twice: the second PAA_RECEIPT_DUPLICATA.
    DuplicateReceipt,
    /// A well-formed notice number no position has: PAA_PAGAMENTO_SCONOSCIUTO.
    UnknownNotice,
    /// Receipt amount one cent more: PAA_SEMANTICA.
    WrongAmount,
}

impl From<Fault> for snodo_sim::FaultKind {
    fn from(f: Fault) -> Self {
        match f {
            Fault::WrongStation => Self::WrongStation,
            Fault::DuplicateReceipt => Self::DuplicateReceipt,
            Fault::UnknownNotice => Self::UnknownNotice,
            Fault::WrongAmount => Self::WrongAmount,
        }
    }
}

/// Pays notices from a file or from the hub's store, or serves the stand-ins; the rest is the
/// sim crate's.
pub fn exec(args: Args) -> Result<ExitCode> {
    if args.serve.is_none() {
        for (given, flag) in [
            (args.checkout_key.is_some(), "--checkout-key"),
            (args.external_file.is_some(), "--external-file"),
            (args.external_token.is_some(), "--external-token"),
            (args.external_record.is_some(), "--external-record"),
            (args.public_url.is_some(), "--public-url"),
            (args.fdr_key.is_some(), "--fdr-key"),
            (args.fdr_password.is_some(), "--fdr-password"),
        ] {
            if given {
                bail!("{flag} goes with --serve");
            }
        }
    }
    let ledger = ledger_dir(&args);
    if (args.date.is_some() || args.anomalies) && !(args.publish_flows || args.publish_treasury) {
        bail!("--date and --anomalies go with --publish-flows or --publish-treasury");
    }
    if args.publish_treasury {
        let dir = ledger.context("--publish-treasury needs a ledger")?;
        return publish_treasury(&dir, args.date, args.anomalies);
    }
    if args.publish_flows {
        let dir = ledger.context("--publish-flows needs a ledger")?;
        return publish(&dir, args.date, args.anomalies);
    }
    let plan = super::load_plan(args.config.clone())?;
    let pagopa = &plan.config.pagopa;
    let station = pagopa
        .stations
        .first()
        .context("the configuration has no pagopa.stations")?
        .clone();
    let url = args.url.clone().unwrap_or_else(|| {
        let scheme = if plan.config.http.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", connectable(&plan.config.http.listen))
    });
    let tls = (args.ca_file, args.client_cert, args.client_key);
    let broker = pagopa.broker_fiscal_code.clone();
    if let Some(listen) = args.serve.clone() {
        let mut payer = snodo_sim::SimOptions::new(url, broker, station, Vec::new());
        payer.v1 = args.v1;
        payer.fault = args.fault.map(Into::into);
        payer.receipts_log = args.receipts_log;
        payer.timeout = std::time::Duration::from_secs(args.timeout.max(1));
        payer.retry_for = args.retry_for;
        (payer.ca_file, payer.client_cert, payer.client_key) = tls;
        let mut opts = snodo_sim::ServeOptions::new(listen, payer);
        if let Some(key) = args.checkout_key {
            opts.checkout_key = key;
        }
        opts.external.file = args.external_file;
        opts.external.token = args.external_token;
        opts.external.record = args.external_record;
        opts.public_url = args.public_url;
        if let Some(dir) = &ledger {
            let mut fdr = snodo_sim::fdr::FdrOptions::new(dir);
            if let Some(key) = args.fdr_key {
                fdr.key = key;
            }
            fdr.password = args.fdr_password;
            opts.fdr = Some(fdr);
        }
        opts.payer.ledger = usable(ledger, args.ledger.is_some())?;
        super::runtime()?.block_on(snodo_sim::serve(opts, snodo_sim::receiver::signalled()))?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(beneficiary) = &args.secondary_receipt {
        let issuer = args
            .issuer
            .clone()
            .unwrap_or_else(|| snodo_sim::secondary::FOREIGN_ISSUER.into());
        let mut opts = snodo_sim::SimOptions::new(&url, &broker, &station, Vec::new());
        opts.timeout = std::time::Duration::from_secs(args.timeout.max(1));
        (opts.ca_file, opts.client_cert, opts.client_key) = tls;
        let sent =
            super::runtime()?.block_on(snodo_sim::secondary::send(&opts, beneficiary, &issuer))?;
        println!(
            "secondary receipt={} notice={issuer};{} to={beneficiary} answer={}",
            sent.receipt_id,
            sent.notice_number,
            sent.fault.as_deref().unwrap_or("OK")
        );
        return Ok(if sent.fault.is_none() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let demanded = match &args.demand {
        Some(fiscal_code) => {
            use snodo_sim::demand::{CarTax, VehicleType};
            let sample = CarTax::sample();
            let ask = snodo_sim::demand::DemandAsk {
                fiscal_code: fiscal_code.clone(),
                service: args
                    .demand_service
                    .clone()
                    .unwrap_or_else(|| "00001".into()),
                provider: args
                    .demand_provider
                    .clone()
                    .unwrap_or_else(|| "00001".into()),
                data: CarTax {
                    vehicle_type: match args.vehicle_type {
                        None | Some(Vehicle::Car) => VehicleType::Car,
                        Some(Vehicle::Trailer) => VehicleType::Trailer,
                        Some(Vehicle::Motorcycle) => VehicleType::Motorcycle,
                    },
                    plate: args.plate.clone().unwrap_or(sample.plate),
                },
            };
            let mut opts = snodo_sim::SimOptions::new(&url, &broker, &station, Vec::new());
            opts.timeout = std::time::Duration::from_secs(args.timeout.max(1));
            (opts.ca_file, opts.client_cert, opts.client_key) = tls.clone();
            let d = match super::runtime()?.block_on(snodo_sim::demand::demand(&opts, &ask)) {
                Ok(d) => d,
                // Refused or unanswered: the rehearsal ran, and failed.
                Err(
                    e @ (snodo_sim::SimError::Demand(_) | snodo_sim::SimError::Unreachable { .. }),
                ) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(e.into()),
            };
            println!(
                "demand service={} notice={};{} amount={} description={:?}",
                ask.service,
                d.notice.fiscal_code,
                d.notice.notice_number,
                d.amount,
                d.description.unwrap_or_default()
            );
            Some(d.notice)
        }
        None => None,
    };
    let notices = match &args.notices {
        _ if demanded.is_some() => demanded.into_iter().collect(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            snodo_sim::parse_notices(&text).with_context(|| path.display().to_string())?
        }
        None => ops::positions::payable_notices(&plan)?
            .into_iter()
            .map(|n| snodo_sim::NoticeTarget {
                fiscal_code: n.fiscal_code,
                notice_number: n.notice_number,
            })
            .collect(),
    };
    if notices.is_empty() {
        bail!("no notices to pay (no active position with a notice number, or an empty file)");
    }
    let mut opts = snodo_sim::SimOptions::new(url, broker, station, notices);
    if let Some(n) = args.count {
        opts.count = n;
    }
    opts.concurrency = args.concurrency;
    opts.v1 = args.v1;
    opts.postal = args.postal;
    opts.verify_only = args.verify_only;
    opts.receipts_only = args.receipts_only;
    opts.fault = args.fault.map(Into::into);
    opts.receipts_log = args.receipts_log;
    if args.beneficiary_copies {
        opts.beneficiary_copies = plan
            .entities
            .values()
            .map(|e| e.fiscal_code.as_str().to_string())
            .collect();
    }
    if !args.verify_only {
        opts.ledger = usable(ledger, args.ledger.is_some())?;
    }
    opts.timeout = std::time::Duration::from_secs(args.timeout.max(1));
    opts.rate = args.rate;
    opts.retry_for = args.retry_for;
    opts.duration = args.duration;
    (opts.ca_file, opts.client_cert, opts.client_key) = tls;
    match super::runtime()?.block_on(snodo_sim::run(opts)) {
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

/// `--ledger`, else `sim-ledger` beside the configuration file (in the current directory
/// without one); `None` with `--no-ledger`.
fn ledger_dir(args: &Args) -> Option<PathBuf> {
    if args.no_ledger {
        return None;
    }
    if let Some(dir) = &args.ledger {
        return Some(dir.clone());
    }
    let config = super::config_path(args.config.clone());
    let beside = config
        .as_deref()
        .and_then(std::path::Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Some(beside.join("sim-ledger"))
}

/// The ledger to record into: a `--ledger` that cannot be created is an error; the default
/// one only a warning (the run goes on without a ledger).
fn usable(dir: Option<PathBuf>, explicit: bool) -> Result<Option<PathBuf>> {
    let Some(dir) = dir else { return Ok(None) };
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Ok(Some(dir)),
        Err(e) if explicit => Err(e).with_context(|| format!("creating {}", dir.display())),
        Err(e) => {
            eprintln!(
                "warning: no ledger ({}: {e}); payments will not be settled",
                dir.display()
            );
            Ok(None)
        }
    }
}

/// `--publish-flows`: one line per revision written, then a total.
fn publish(dir: &std::path::Path, date: Option<String>, anomalies: bool) -> Result<ExitCode> {
    let date = match date {
        Some(d) => snodo_sim::flows::parse_date(&d)
            .with_context(|| format!("--date {d:?}: expected YYYY-MM-DD"))?,
        None => snodo_sim::flows::today(),
    };
    let mut opts = snodo_sim::flows::PublishOptions::new(dir, date);
    opts.anomalies = anomalies;
    let published = snodo_sim::flows::publish(&opts)?;
    for p in &published {
        println!("{p}");
    }
    println!(
        "published date={date} flows={} ledger={}",
        published.len(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn publish_treasury(
    dir: &std::path::Path,
    date: Option<String>,
    anomalies: bool,
) -> Result<ExitCode> {
    let date = match date {
        Some(d) => snodo_sim::flows::parse_date(&d)
            .with_context(|| format!("--date {d:?}: expected YYYY-MM-DD"))?,
        None => snodo_sim::flows::today(),
    };
    let written = snodo_sim::treasury::write_giornali(&snodo_sim::treasury::TreasuryOptions {
        ledger_dir: dir.to_path_buf(),
        date,
        anomalies,
    })?;
    for w in &written {
        println!("{w}");
    }
    println!(
        "treasury date={date} giornali={} ledger={}",
        written.len(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A listen address one can connect to: the wildcard addresses become loopback.
pub(super) fn connectable(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_string()
    }
}
