//! The national node and its PSPs, simulated: `snodo sim`.
//!
//! Each simulated payment makes the calls the node makes to an entity's broker, over the
//! official SOAP contract (`paForNode`): `paVerifyPaymentNotice`, then `paGetPaymentV2` (or
//! `paGetPayment`), then `paSendRTV2` (or `paSendRT`) with a receipt a PSP would issue, built
//! from the activation's answer. A payment stops at its first KO. Faults can be injected to
//! see the hub refuse what it must refuse.
//!
//! It is also the load generator of the SOAP benchmark: `concurrency` workers share one HTTP
//! client (keep-alive connections), render requests with the adapter's codec straight into the
//! request body, and keep their counters to themselves until the end of the run.
//!
//! Like the real node, it can resend a call that got no answer ([`SimOptions::retry_for`]):
//! the same request, receipt id included, until the hub answers or the time is up.
//!
//! [`receiver`] is the other end of a hub's receipts pipelines: an HTTP server that accepts
//! every push and logs it, for benchmarks and demos (`snodo receiver`).
//!
//! [`checkout`] and [`external`] are the stand-ins a hub talks to in Gateway mode: pagoPA
//! Checkout (carts, paid through [`Payer`]) and an entity's own system answering real-time
//! verification (`snodo sim --serve`, [`serve`]).

pub mod checkout;
pub mod demand;
pub mod external;
pub mod fdr;
#[cfg(test)]
mod fdr_tests;
pub mod flows;
pub mod ledger;
mod receipt;
pub mod receiver;
mod report;
pub mod secondary;
#[cfg(test)]
mod tests;
pub mod treasury;

pub use checkout::{serve, ServeError, ServeOptions, StandIns};
pub use report::{Latency, OpReport, Report};

use receipt::{PaidAt, ReceiptFacts, ReceiptIds, PSPS};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use snodo_adapters::pagopa::{
    self as soap, GetPaymentRequest, Operation, Outcome, QrCode, Request, Response, SendRtRequest,
    SendRtV2Request, SoapError, VerifyRequest,
};
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a hub serves the node's calls, under its base URL.
pub const PA_FOR_NODE_PATH: &str = "/pagopa/paForNode";

/// A notice to pay: the entity's fiscal code and the notice number, as on the printed notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeTarget {
    pub fiscal_code: String,
    pub notice_number: String,
}

/// Reads a notices file: one `<fiscalCode>;<noticeNumber>` a line; blank lines and lines
/// starting with `#` are skipped. Each value must be well formed (11-digit fiscal code,
/// 18-digit notice number with valid check digits).
pub fn parse_notices(text: &str) -> Result<Vec<NoticeTarget>, SimError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| SimError::Notices {
            line: n + 1,
            reason,
        };
        let (fc, notice) = line
            .split_once(';')
            .ok_or_else(|| bad("expected <fiscalCode>;<noticeNumber>".into()))?;
        let (fc, notice) = (fc.trim(), notice.trim());
        snodo_core::EntityFiscalCode::parse(fc).map_err(|e| bad(e.to_string()))?;
        snodo_core::NoticeNumber::parse(notice).map_err(|e| bad(e.to_string()))?;
        out.push(NoticeTarget {
            fiscal_code: fc.to_string(),
            notice_number: notice.to_string(),
        });
    }
    Ok(out)
}

/// A fault to inject, to check the hub refuses it with the right code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Every call names station `<broker>_99`: `PAA_STAZIONE_INT_ERRATA` at verify.
    WrongStation,
    /// Every receipt is sent twice: the second must be `PAA_RECEIPT_DUPLICATA`.
    DuplicateReceipt,
    /// A well-formed notice number no position has: `PAA_PAGAMENTO_SCONOSCIUTO` at verify.
    UnknownNotice,
    /// The receipt declares one cent more than the position: `PAA_SEMANTICA` at the receipt.
    WrongAmount,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [
        Self::WrongStation,
        Self::DuplicateReceipt,
        Self::UnknownNotice,
        Self::WrongAmount,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::WrongStation => "wrong-station",
            Self::DuplicateReceipt => "duplicate-receipt",
            Self::UnknownNotice => "unknown-notice",
            Self::WrongAmount => "wrong-amount",
        }
    }

    /// The fault code the hub owes the injected call.
    pub fn expected_fault(self) -> &'static str {
        use soap::fault_codes::*;
        match self {
            Self::WrongStation => STAZIONE_INT_ERRATA,
            Self::DuplicateReceipt => RECEIPT_DUPLICATA,
            Self::UnknownNotice => PAGAMENTO_SCONOSCIUTO,
            Self::WrongAmount => SEMANTICA,
        }
    }

    /// The operation that carries the fault and must be refused.
    pub fn injected_at(self, v1: bool) -> Operation {
        match self {
            Self::WrongStation | Self::UnknownNotice => Operation::VerifyPaymentNotice,
            Self::DuplicateReceipt | Self::WrongAmount if v1 => Operation::SendRt,
            Self::DuplicateReceipt | Self::WrongAmount => Operation::SendRtV2,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault {s:?}; one of {}", names.join(", "))
            })
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The hub's base URL (`http://127.0.0.1:8080`), or its full paForNode endpoint.
    pub url: String,
    /// `idBrokerPA` of every call.
    pub broker_fiscal_code: String,
    /// `idStation` of every call (unless [`FaultKind::WrongStation`]).
    pub station: String,
    /// Notices paid in order, cycling when `count` is larger.
    pub notices: Vec<NoticeTarget>,
    /// Payments to make.
    pub count: usize,
    /// Payments in flight at once.
    pub concurrency: usize,
    /// `paGetPayment` + `paSendRT` instead of their V2.
    pub v1: bool,
    /// Pay as a Poste channel (postal slip, post office): activate with `transferType` POSTAL
    /// where the verify said every transfer can go to a postal account (`allCCP`).
    pub postal: bool,
    /// Only `paVerifyPaymentNotice`, nothing activated or paid (read-only load).
    pub verify_only: bool,
    /// Verify and activate the `count` payments first, untimed, then send only their receipts:
    /// the report (and `duration`, `rate`) covers the receipts alone, the hub's store path.
    pub receipts_only: bool,
    pub fault: Option<FaultKind>,
    /// Appends `<receiptId>;<noticeNumber>;<OK|faultCode>` per receipt answer, written as soon
    /// as the answer arrives.
    pub receipts_log: Option<PathBuf>,
    /// The ledger directory ([`ledger`]): every receipt is recorded in
    /// `<dir>/payments.jsonl` before it is sent, and the hub's answer after, so the payments
    /// can be settled later ([`flows::publish`]). `None`: nothing is recorded.
    pub ledger: Option<PathBuf>,
    /// Per call, connection included.
    pub timeout: Duration,
    /// Start payments at this many per second overall (latency at a fixed load) instead of as
    /// fast as the hub answers.
    pub rate: Option<f64>,
    /// Resend a call that got no answer (connection refused or cut, timeout, an HTTP error or
    /// anything but a SOAP answer) for up to this long, as the national node does: the same
    /// request (a receipt keeps its receipt id), after 50 ms, then twice as long each time up to
    /// 1 s. A SOAP answer, KO included, ends it. `None`: one attempt per call.
    pub retry_for: Option<Duration>,
    /// Start no payment after this long from the start (the payments in flight finish).
    pub duration: Option<Duration>,
    /// With an `https://` URL: the PEM bundle the hub's certificate must chain to, on top of
    /// the system's roots.
    pub ca_file: Option<PathBuf>,
    /// With an `https://` URL: the client certificate (PEM, chain included) presented to the
    /// hub, as pagoPA's node does under `node_auth = "mtls"`; `client_key` is its private key.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Fiscal codes of entities the hub serves: after the issuer accepts a receipt, the same
    /// receipt goes to each of them that is another transfer's `fiscalCodePA` (`idPA` = that
    /// beneficiary), as pagoPA sends every beneficiary its copy. Empty: the issuer's only.
    pub beneficiary_copies: Vec<String>,
}

impl SimOptions {
    /// One payment per notice, 16 at a time, V2 messages, no fault, 30 s per call.
    pub fn new(
        url: impl Into<String>,
        broker_fiscal_code: impl Into<String>,
        station: impl Into<String>,
        notices: Vec<NoticeTarget>,
    ) -> Self {
        Self {
            url: url.into(),
            broker_fiscal_code: broker_fiscal_code.into(),
            station: station.into(),
            count: notices.len(),
            notices,
            concurrency: 16,
            v1: false,
            postal: false,
            verify_only: false,
            receipts_only: false,
            fault: None,
            receipts_log: None,
            ledger: None,
            timeout: Duration::from_secs(30),
            rate: None,
            retry_for: None,
            duration: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            beneficiary_copies: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("no notices to pay")]
    NoNotices,
    #[error("notices line {line}: {reason}")]
    Notices { line: usize, reason: String },
    #[error("bad hub URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot open the receipts log {path}: {source}")]
    ReceiptsLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error("the hub could not be reached at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("a simulated payment crashed: {0}")]
    Worker(String),
    #[error("paDemandPaymentNotice: {0}")]
    Demand(String),
}

/// The operations a run calls (and reports), in order.
pub(crate) fn flow(v1: bool, verify_only: bool, receipts_only: bool) -> &'static [Operation] {
    use Operation::*;
    match (verify_only, v1) {
        (true, _) => &[VerifyPaymentNotice],
        (false, true) if receipts_only => &[SendRt],
        (false, false) if receipts_only => &[SendRtV2],
        (false, true) => &[VerifyPaymentNotice, GetPayment, SendRt],
        (false, false) => &[VerifyPaymentNotice, GetPaymentV2, SendRtV2],
    }
}

/// The paForNode endpoint of a base URL (a URL already ending in `/paForNode` is kept).
fn endpoint_url(url: &str) -> Result<reqwest::Url, SimError> {
    let bad = |reason: String| SimError::Url {
        url: url.to_string(),
        reason,
    };
    let trimmed = url.trim().trim_end_matches('/');
    let full = if trimmed.ends_with("/paForNode") {
        trimmed.to_string()
    } else {
        format!("{trimmed}{PA_FOR_NODE_PATH}")
    };
    let parsed = reqwest::Url::parse(&full).map_err(|e| bad(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("expected http:// or https://".into()));
    }
    Ok(parsed)
}

/// Simulates `opts.count` payments and reports on them. KO answers and transport errors are
/// results, in the report; an error means the run could not start (no notices, bad URL,
/// receipts log not writable, nothing listening at the URL).
pub async fn run(opts: SimOptions) -> Result<Report, SimError> {
    if opts.notices.is_empty() {
        return Err(SimError::NoNotices);
    }
    let endpoint = endpoint_url(&opts.url)?;
    let workers = opts.concurrency.clamp(1, opts.count.max(1));
    let client = http_client(&opts, workers)?;
    preflight(&client, &endpoint, opts.retry_for).await?;
    let log = open_receipts_log(opts.receipts_log.as_ref())?;
    let ledger = open_ledger(&opts)?;
    let station = station_of(&opts);
    let shape = report::RunShape {
        endpoint: endpoint.to_string(),
        concurrency: workers,
        v1: opts.v1,
        verify_only: opts.verify_only,
        receipts_only: opts.receipts_only && !opts.verify_only,
        fault: opts.fault,
        retry_for: opts.retry_for,
    };
    let start = Instant::now();
    let mut shared = Shared {
        client,
        endpoint,
        broker: opts.broker_fiscal_code,
        station,
        notices: opts.notices,
        count: opts.count,
        next: AtomicUsize::new(0),
        v1: opts.v1,
        postal: opts.postal,
        verify_only: opts.verify_only,
        fault: opts.fault,
        log,
        ledger,
        ids: ReceiptIds::random(),
        pace: opts
            .rate
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r)),
        start,
        stop_at: opts.duration.and_then(|d| start.checked_add(d)),
        retry_for: opts.retry_for,
        activated: None,
        receipts_now: false,
        copies: opts.beneficiary_copies,
    };
    if shape.receipts_only {
        // Untimed: every payment verified and activated, its activation kept for its receipt.
        shared.activated = Some((0..shared.count).map(|_| Mutex::new(None)).collect());
        // Neither paced nor cut short: `rate` and `duration` apply to the receipts.
        let pace = shared.pace.take();
        shared.stop_at = None;
        let mut shared_arc = Arc::new(shared);
        let ready = workers_run(&shared_arc, workers).await?;
        eprintln!(
            "sim: {} of {} payments activated in {:.1} s; sending their receipts",
            ready.completed,
            ready.payments,
            start.elapsed().as_secs_f64()
        );
        let Some(sh) = Arc::get_mut(&mut shared_arc) else {
            return Err(SimError::Worker("a worker outlived its run".into()));
        };
        let start = Instant::now();
        sh.next = AtomicUsize::new(0);
        sh.pace = pace;
        sh.start = start;
        sh.stop_at = opts.duration.and_then(|d| start.checked_add(d));
        sh.receipts_now = true;
        let stats = workers_run(&shared_arc, workers).await?;
        return Ok(Report::new(shape, stats, start.elapsed()));
    }
    let stats = workers_run(&Arc::new(shared), workers).await?;
    Ok(Report::new(shape, stats, start.elapsed()))
}

async fn workers_run(shared: &Arc<Shared>, workers: usize) -> Result<report::Stats, SimError> {
    let handles: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(worker(Arc::clone(shared))))
        .collect();
    let mut stats = report::Stats::default();
    for h in handles {
        stats.merge(h.await.map_err(|e| SimError::Worker(e.to_string()))?);
    }
    Ok(stats)
}

/// The client every call of a run (or of a [`Payer`]) goes through: a private CA and a client
/// certificate when given.
fn http_client(opts: &SimOptions, workers: usize) -> Result<reqwest::Client, SimError> {
    let timeout = opts.timeout;
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(workers)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout);
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| SimError::Tls(format!("reading {}: {e}", p.display())))
    };
    if let Some(ca) = &opts.ca_file {
        let certs = reqwest::Certificate::from_pem_bundle(&read(ca)?)
            .map_err(|e| SimError::Tls(format!("{}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(SimError::Tls(format!("{}: no certificate", ca.display())));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    match (&opts.client_cert, &opts.client_key) {
        (Some(cert), Some(key)) => {
            // reqwest wants the key and the chain in one PEM.
            let mut pem = read(key)?;
            pem.push(b'\n');
            pem.extend(read(cert)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                SimError::Tls(format!("{} + {}: {e}", cert.display(), key.display()))
            })?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => {
            return Err(SimError::Tls(
                "a client certificate needs both its certificate and its key".into(),
            ))
        }
    }
    b.build().map_err(SimError::Client)
}

fn open_receipts_log(path: Option<&PathBuf>) -> Result<Option<Mutex<std::fs::File>>, SimError> {
    let Some(path) = path else { return Ok(None) };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| SimError::ReceiptsLog {
            path: path.clone(),
            source,
        })?;
    Ok(Some(Mutex::new(file)))
}

/// The ledger, unless only verifying (nothing is paid then).
fn open_ledger(opts: &SimOptions) -> Result<Option<ledger::Ledger>, SimError> {
    match &opts.ledger {
        Some(dir) if !opts.verify_only => Ok(Some(ledger::Ledger::open(dir)?)),
        _ => Ok(None),
    }
}

/// The station every call names (a wrong one with [`FaultKind::WrongStation`]).
fn station_of(opts: &SimOptions) -> String {
    match opts.fault {
        Some(FaultKind::WrongStation) => format!("{}_99", opts.broker_fiscal_code),
        _ => opts.station.clone(),
    }
}

/// Pays one notice at a time, on demand, through the same calls as [`run`]: verify, then
/// activation, then receipt (or their V1), stopping at the first KO. The Checkout stand-in pays
/// its carts with it.
pub struct Payer {
    shared: Shared,
}

impl Payer {
    /// The hub, identity and flow of `opts` (`url`, `broker_fiscal_code`, `station`, `v1`,
    /// `verify_only`, `fault`, `receipts_log`, `timeout`, `retry_for`); its `notices`,
    /// `count`, `concurrency`, `rate` and `duration` are ignored. Nothing is sent yet: a hub
    /// that is down only makes each payment fail ([`PaymentOutcome::Failed`]).
    pub fn new(opts: &SimOptions) -> Result<Self, SimError> {
        let endpoint = endpoint_url(&opts.url)?;
        let client = http_client(opts, 4)?;
        let log = open_receipts_log(opts.receipts_log.as_ref())?;
        let ledger = open_ledger(opts)?;
        let start = Instant::now();
        Ok(Self {
            shared: Shared {
                client,
                endpoint,
                broker: opts.broker_fiscal_code.clone(),
                station: station_of(opts),
                notices: Vec::new(),
                count: 0,
                next: AtomicUsize::new(0),
                v1: opts.v1,
                postal: opts.postal,
                verify_only: opts.verify_only,
                fault: opts.fault,
                log,
                ledger,
                ids: ReceiptIds::random(),
                pace: None,
                start,
                stop_at: None,
                retry_for: opts.retry_for,
                activated: None,
                receipts_now: false,
                copies: opts.beneficiary_copies.clone(),
            },
        })
    }

    /// The paForNode endpoint the calls go to.
    pub fn endpoint(&self) -> &str {
        self.shared.endpoint.as_str()
    }

    /// Pays `target`: a new receipt id per call, PSPs taken in turn.
    pub async fn pay(&self, target: &NoticeTarget) -> PaymentOutcome {
        let i = self.shared.next.fetch_add(1, Ordering::Relaxed);
        let mut stats = report::Stats::default();
        self.shared.pay(target, i, &mut stats).await
    }
}

/// Fails fast when nothing answers HTTP at the endpoint (any HTTP status will do); with
/// `retry_for`, only once that time has passed without an answer.
async fn preflight(
    client: &reqwest::Client,
    endpoint: &reqwest::Url,
    retry_for: Option<Duration>,
) -> Result<(), SimError> {
    let mut url = endpoint.clone();
    url.set_query(Some("wsdl"));
    let mut backoff = Backoff::new(retry_for);
    loop {
        match client.get(url.clone()).send().await {
            Ok(_) => return Ok(()),
            Err(e) => {
                if !backoff.wait().await {
                    return Err(SimError::Unreachable {
                        url: endpoint.to_string(),
                        reason: error_chain(&e),
                    });
                }
            }
        }
    }
}

/// The waits between resends: 50 ms, doubling up to 1 s, until the deadline.
struct Backoff {
    deadline: Option<Instant>,
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(1);

    /// Starts the clock; `None` allows no resend.
    fn new(retry_for: Option<Duration>) -> Self {
        Self {
            deadline: retry_for.and_then(|d| Instant::now().checked_add(d)),
            next: Self::FIRST,
        }
    }

    /// Sleeps before the next attempt; false (at once) when the time for resends is up.
    async fn wait(&mut self) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(self.next.min(deadline - now)).await;
        self.next = (self.next * 2).min(Self::MAX);
        true
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

struct Shared {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    broker: String,
    station: String,
    notices: Vec<NoticeTarget>,
    count: usize,
    next: AtomicUsize,
    v1: bool,
    postal: bool,
    verify_only: bool,
    fault: Option<FaultKind>,
    log: Option<Mutex<std::fs::File>>,
    ledger: Option<ledger::Ledger>,
    ids: ReceiptIds,
    /// Payment `i` starts no earlier than `start + i * pace` (with `--rate`).
    pace: Option<Duration>,
    start: Instant,
    /// No payment starts at or after this instant (with `--duration`).
    stop_at: Option<Instant>,
    retry_for: Option<Duration>,
    /// With `receipts_only`: payment `i`'s activation answer (and the verified company name),
    /// kept by the first pass, taken by the second.
    activated: Option<Vec<Mutex<Option<Activated>>>>,
    /// The second pass of `receipts_only`: only the receipts are sent.
    receipts_now: bool,
    /// See [`SimOptions::beneficiary_copies`].
    copies: Vec<String>,
}

/// An activation's answer and the verified company name, kept for the receipt.
type Activated = (Response, Option<String>);

static SOAP_ACTION: HeaderName = HeaderName::from_static("soapaction");
static TEXT_XML: HeaderValue = HeaderValue::from_static("text/xml; charset=utf-8");

/// One SOAP call of a single-shot command (`--demand`, `--secondary-receipt`): the answer's
/// status and body, or the hub as unreachable.
async fn post_soap_once(
    client: &reqwest::Client,
    endpoint: &reqwest::Url,
    action: &'static str,
    body: String,
) -> Result<(reqwest::StatusCode, Vec<u8>), SimError> {
    let unreachable = |e: reqwest::Error| SimError::Unreachable {
        url: endpoint.to_string(),
        reason: error_chain(&e),
    };
    let answer = client
        .post(endpoint.clone())
        .header(CONTENT_TYPE, TEXT_XML.clone())
        .header(SOAP_ACTION.clone(), action)
        .body(body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = answer.status();
    let bytes = answer.bytes().await.map_err(unreachable)?;
    Ok((status, bytes.to_vec()))
}

/// How a call ended. `Ok` is the common case and lives on the stack only briefly: boxing it
/// would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Ok(Response),
    Ko(String),
    /// No usable answer, of this kind (as in the report).
    Error(&'static str),
}

impl Answer {
    /// Worth sending again: nothing came back that the hub could have meant as its answer.
    /// A SOAP answer, even for another operation, is an answer.
    fn resendable(&self) -> bool {
        matches!(self, Answer::Error(kind) if *kind != "wrong_operation")
    }
}

async fn worker(sh: Arc<Shared>) -> report::Stats {
    let mut stats = report::Stats::default();
    loop {
        let i = sh.next.fetch_add(1, Ordering::Relaxed);
        if i >= sh.count {
            return stats;
        }
        if let Some(pace) = sh.pace {
            let due = sh.start + pace.saturating_mul(i as u32);
            if sh.stop_at.is_some_and(|stop| due >= stop) {
                return stats;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        if sh.stop_at.is_some_and(|stop| Instant::now() >= stop) {
            return stats;
        }
        stats.payments += 1;
        let target = &sh.notices[i % sh.notices.len()];
        match sh.pay(target, i, &mut stats).await {
            PaymentOutcome::Paid { .. } => stats.completed += 1,
            PaymentOutcome::Refused { .. } => stats.faulted += 1,
            PaymentOutcome::Failed { .. } => stats.errored += 1,
        }
    }
}

/// How one payment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// Every step answered OK: paid, with the receipt the hub accepted (`None` when only
    /// verifying). Also a resent receipt the hub already had (`PAA_RECEIPT_DUPLICATA` after a
    /// call without answer): an earlier attempt was stored.
    Paid { receipt_id: Option<String> },
    /// Stopped by a KO answer, with its fault code (`PAA_PAGAMENTO_DUPLICATO`, ...).
    Refused { fault_code: String },
    /// Stopped by a call without a usable answer, of this kind (`connect`, `timeout`,
    /// `http_status`, `invalid_answer`, `wrong_operation`, `no_data`, ...).
    Failed { kind: &'static str },
}

/// The internal name: how [`Shared::pay`] ends.
type End = PaymentOutcome;

impl PaymentOutcome {
    pub fn is_paid(&self) -> bool {
        matches!(self, Self::Paid { .. })
    }
}

impl Shared {
    async fn call(&self, op: Operation, body: String, stats: &mut report::Stats) -> Answer {
        let started = Instant::now();
        let sent = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, TEXT_XML.clone())
            .header(
                SOAP_ACTION.clone(),
                HeaderValue::from_static(op.soap_action()),
            )
            .body(body)
            .send()
            .await;
        let answer = match sent {
            Ok(res) => {
                let status = res.status();
                res.bytes().await.map(|b| (status, b))
            }
            Err(e) => Err(e),
        };
        let (status, bytes) = match answer {
            Ok(a) => a,
            Err(e) => {
                let kind = if e.is_connect() {
                    "connect"
                } else if e.is_timeout() {
                    "timeout"
                } else if e.is_body() || e.is_decode() {
                    "body"
                } else {
                    "request"
                };
                if stats.first_error.is_none() {
                    stats.first_error = Some(format!("{}: {}", op.soap_action(), error_chain(&e)));
                }
                stats.op(op).error(kind);
                return Answer::Error(kind);
            }
        };
        let s = stats.op(op);
        s.answered(started.elapsed());
        match soap::parse_response(&bytes) {
            Ok(r) if r.operation() != op => {
                s.error_answered("wrong_operation");
                Answer::Error("wrong_operation")
            }
            Ok(r) => match r.outcome() {
                Outcome::Ok => {
                    s.ok();
                    Answer::Ok(r)
                }
                Outcome::Ko => {
                    let code = r
                        .fault()
                        .map_or("KO_WITHOUT_FAULT", |f| f.fault_code.as_str());
                    s.fault(code);
                    Answer::Ko(code.to_string())
                }
            },
            Err(SoapError::SoapFault {
                fault_code,
                fault_string,
            }) => {
                let code = if fault_string.starts_with("PAA_") && !fault_string.contains(' ') {
                    fault_string
                } else {
                    format!("SOAP:{fault_code}")
                };
                s.fault(&code);
                Answer::Ko(code)
            }
            Err(_) if !status.is_success() => {
                s.error_answered("http_status");
                Answer::Error("http_status")
            }
            Err(_) => {
                s.error_answered("invalid_answer");
                Answer::Error("invalid_answer")
            }
        }
    }

    /// [`Shared::call`], resending the same body while there is no answer and `retry_for`
    /// allows. Returns the final answer and how many times the request was resent.
    async fn send(&self, op: Operation, body: String, stats: &mut report::Stats) -> (Answer, u32) {
        if self.retry_for.is_none() {
            return (self.call(op, body, stats).await, 0);
        }
        let mut backoff = Backoff::new(self.retry_for);
        let mut resent = 0;
        loop {
            let answer = self.call(op, body.clone(), stats).await;
            if !answer.resendable() {
                return (answer, resent);
            }
            if !backoff.wait().await {
                stats.gave_up += 1;
                return (answer, resent);
            }
            resent += 1;
            stats.op(op).resent();
        }
    }

    fn log_receipt(&self, receipt_id: &str, notice: &str, answer: &Answer) {
        let outcome = match answer {
            Answer::Ok(_) => "OK",
            Answer::Ko(code) => code.as_str(),
            Answer::Error(_) => return,
        };
        if let Some(ledger) = &self.ledger {
            let entry = ledger::Entry::Answer(ledger::LedgerAnswer {
                receipt_id: receipt_id.to_string(),
                outcome: outcome.to_string(),
            });
            if let Err(e) = ledger.append(&entry) {
                eprintln!("{e}");
            }
        }
        let Some(log) = &self.log else { return };
        let line = format!("{receipt_id};{notice};{outcome}\n");
        // One write per line on an unbuffered file: in the OS as soon as it returns. A poisoned
        // lock only means another worker panicked mid-write; the file is still usable.
        let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            eprintln!("receipts log: {e}");
        }
    }

    /// Payment number `i` (it picks the receipt id and the PSP) of `target`.
    async fn pay(&self, target: &NoticeTarget, i: usize, stats: &mut report::Stats) -> End {
        let notice = match self.fault {
            Some(FaultKind::UnknownNotice) => receipt::unknown_notice(&target.notice_number, i),
            _ => target.notice_number.clone(),
        };
        let qr_code = QrCode {
            fiscal_code: target.fiscal_code.clone(),
            notice_number: notice.clone(),
        };
        let injected_at = self.fault.map(|f| f.injected_at(self.v1));
        if self.receipts_now {
            let kept = self
                .activated
                .as_ref()
                .and_then(|a| a.get(i))
                .and_then(|m| m.lock().unwrap_or_else(|p| p.into_inner()).take());
            let Some((activated, company)) = kept else {
                return End::Failed {
                    kind: "not_activated",
                };
            };
            return self
                .send_receipt(
                    target,
                    &notice,
                    company.as_deref(),
                    activated,
                    i,
                    injected_at,
                    stats,
                )
                .await;
        }

        // paVerifyPaymentNotice
        let op = Operation::VerifyPaymentNotice;
        let body = soap::render_request(&Request::Verify(VerifyRequest {
            id_pa: target.fiscal_code.clone(),
            id_broker_pa: self.broker.clone(),
            id_station: self.station.clone(),
            qr_code: qr_code.clone(),
        }));
        let (answer, _) = self.send(op, body, stats).await;
        if injected_at == Some(op) {
            self.count_injection(&answer, stats);
        }
        let verified = match answer {
            Answer::Ok(Response::Verify(v)) => v,
            Answer::Ok(_) => {
                return End::Failed {
                    kind: "wrong_operation",
                }
            }
            Answer::Error(kind) => return End::Failed { kind },
            Answer::Ko(fault_code) => return End::Refused { fault_code },
        };
        if self.verify_only {
            return End::Paid { receipt_id: None };
        }

        // paGetPayment(V2)
        let get = GetPaymentRequest {
            id_pa: target.fiscal_code.clone(),
            id_broker_pa: self.broker.clone(),
            id_station: self.station.clone(),
            qr_code,
            transfer_type: (self.postal
                && verified.payment_option.as_ref().is_some_and(|o| o.all_ccp))
            .then_some(soap::TransferType::Postal),
            amount: verified.payment_option.map(|o| o.amount),
            payment_note: None,
            due_date: None,
        };
        let (op, request) = if self.v1 {
            (Operation::GetPayment, Request::GetPayment(get))
        } else {
            (Operation::GetPaymentV2, Request::GetPaymentV2(get))
        };
        let activated = match self.send(op, soap::render_request(&request), stats).await.0 {
            Answer::Ok(r) => r,
            Answer::Ko(fault_code) => return End::Refused { fault_code },
            Answer::Error(kind) => return End::Failed { kind },
        };
        if let Some(slot) = self.activated.as_ref().and_then(|a| a.get(i)) {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((activated, verified.company_name));
            return End::Paid { receipt_id: None };
        }
        self.send_receipt(
            target,
            &notice,
            verified.company_name.as_deref(),
            activated,
            i,
            injected_at,
            stats,
        )
        .await
    }

    /// paSendRT(V2) of payment `i`, built from its activation's answer.
    #[allow(clippy::too_many_arguments)]
    async fn send_receipt(
        &self,
        target: &NoticeTarget,
        notice: &str,
        company_name: Option<&str>,
        activated: Response,
        i: usize,
        injected_at: Option<Operation>,
        stats: &mut report::Stats,
    ) -> End {
        let op = if self.v1 {
            Operation::GetPayment
        } else {
            Operation::GetPaymentV2
        };
        let receipt_id = self.ids.id(i);
        let paid_at = PaidAt::now();
        let facts = ReceiptFacts {
            receipt_id: receipt_id.clone(),
            notice_number: notice,
            fiscal_code: &target.fiscal_code,
            psp: &PSPS[i % PSPS.len()],
            paid_at: &paid_at,
            wrong_amount: self.fault == Some(FaultKind::WrongAmount),
        };
        let (op, request) = match activated {
            Response::GetPaymentV2(r) => match r.data {
                Some(data) => (
                    Operation::SendRtV2,
                    Request::SendRtV2(SendRtV2Request {
                        id_pa: target.fiscal_code.clone(),
                        id_broker_pa: self.broker.clone(),
                        id_station: self.station.clone(),
                        receipt: receipt::receipt_v2(data, facts),
                    }),
                ),
                None => return self.no_data(op, stats),
            },
            Response::GetPayment(r) => match r.data {
                Some(data) => (
                    Operation::SendRt,
                    Request::SendRt(SendRtRequest {
                        id_pa: target.fiscal_code.clone(),
                        id_broker_pa: self.broker.clone(),
                        id_station: self.station.clone(),
                        receipt: receipt::receipt_v1(data, company_name, facts),
                    }),
                ),
                None => return self.no_data(op, stats),
            },
            _ => {
                return End::Failed {
                    kind: "wrong_operation",
                }
            }
        };
        // The ledger first: a receipt the hub may keep is always one the PSP can settle.
        if let Some(ledger) = &self.ledger {
            if let Some(p) = ledger::LedgerPayment::from_request(&request) {
                if let Err(e) = ledger.append(&ledger::Entry::Payment(p)) {
                    eprintln!("{e}");
                    return End::Failed { kind: "ledger" };
                }
            }
        }
        let body = soap::render_request(&request);
        let copies = self.beneficiary_copies(&request, &target.fiscal_code);
        drop(request);
        let duplicate = self.fault == Some(FaultKind::DuplicateReceipt);
        let again = duplicate.then(|| body.clone());
        let (answer, resent) = self.send(op, body, stats).await;
        self.log_receipt(&receipt_id, notice, &answer);
        if injected_at == Some(op) && !duplicate {
            self.count_injection(&answer, stats);
        }
        let end = match answer {
            Answer::Ok(_) => End::Paid {
                receipt_id: Some(receipt_id.clone()),
            },
            // A resent receipt the hub already has: an earlier attempt was stored, and only its
            // answer was lost. The payment went through.
            Answer::Ko(code) if resent > 0 && code == soap::fault_codes::RECEIPT_DUPLICATA => {
                stats.stored_before_resend += 1;
                End::Paid {
                    receipt_id: Some(receipt_id.clone()),
                }
            }
            Answer::Ko(fault_code) => End::Refused { fault_code },
            Answer::Error(kind) => End::Failed { kind },
        };
        if let Some(body) = again {
            let (answer, _) = self.send(op, body, stats).await;
            self.log_receipt(&receipt_id, notice, &answer);
            self.count_injection(&answer, stats);
        }
        if !matches!(end, End::Paid { .. }) {
            return end;
        }
        // Each beneficiary's copy; one it refuses fails the payment, so a rehearsal shows it.
        for body in copies {
            match self.send(op, body, stats).await.0 {
                Answer::Ok(_) => {}
                Answer::Ko(fault_code) => return End::Refused { fault_code },
                Answer::Error(kind) => return End::Failed { kind },
            }
        }
        end
    }

    /// The copies of a receipt for its other beneficiaries the hub serves (see
    /// [`SimOptions::beneficiary_copies`]), rendered with their `idPA`.
    fn beneficiary_copies(&self, request: &Request, issuer: &str) -> Vec<String> {
        let beneficiaries: Vec<String> = match request {
            Request::SendRtV2(r) => r
                .receipt
                .transfer_list
                .iter()
                .map(|t| t.fiscal_code_pa.clone())
                .collect(),
            Request::SendRt(r) => r
                .receipt
                .transfer_list
                .iter()
                .map(|t| t.fiscal_code_pa.clone())
                .collect(),
            _ => Vec::new(),
        };
        let mut out: Vec<String> = Vec::new();
        let mut sent: Vec<String> = Vec::new();
        for fc in beneficiaries {
            if fc == issuer || sent.contains(&fc) || !self.copies.contains(&fc) {
                continue;
            }
            let mut copy = request.clone();
            match &mut copy {
                Request::SendRtV2(r) => r.id_pa = fc.clone(),
                Request::SendRt(r) => r.id_pa = fc.clone(),
                _ => continue,
            }
            out.push(soap::render_request(&copy));
            sent.push(fc);
        }
        out
    }

    /// An OK activation without the payment data: nothing to build a receipt from.
    fn no_data(&self, op: Operation, stats: &mut report::Stats) -> End {
        let s = stats.op(op);
        s.ok_without_data();
        End::Failed { kind: "no_data" }
    }

    fn count_injection(&self, answer: &Answer, stats: &mut report::Stats) {
        let Some(fault) = self.fault else { return };
        if matches!(answer, Answer::Error(_)) {
            return;
        }
        stats.injected += 1;
        if matches!(answer, Answer::Ko(code) if code == fault.expected_fault()) {
            stats.injected_seen += 1;
        }
    }
}
