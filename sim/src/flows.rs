//! The simulated PSPs settle what they paid: settlement flows (FdR) built from the
//! [ledger](crate::ledger) and published for [`crate::fdr`] to serve.
//!
//! [`publish`] takes the payments of one day (Rome) whose receipt the hub did not refuse, and
//! makes one flow per PSP and entity credited: a row per transfer (IUV, IUR = receipt id,
//! transfer index, amount, `EXECUTED`), named as FdR 3 names flows, `<yyyy-mm-dd><pspId>-<entity
//! fiscal code>`, with a regulation (SCT) id, the regulation date (the next day), the flow time
//! (the next day at 09:00 Rome) and the declared totals. Everything but `published` is a
//! function of the ledger and the date, so publishing a day again rewrites the same flows.
//!
//! Each published revision is a file, `<ledger>/flows/<organizationId>/<fdr>.r<revision>.json`
//! (`{"flow": SingleFlowResponse, "payments": [Payment]}`, FdR 3's own JSON through
//! `snodo_adapters::fdr::rest`), with the same flow as FlussoRiversamento XML beside it
//! (`.xml`, `snodo_adapters::fdr::xml`).
//!
//! With [`PublishOptions::anomalies`], over the day's flows ordered by (entity, PSP), one case
//! of each anomaly the hub reports. The *first flow* is the first that settles a notice of its
//! own entity (a secondary beneficiary's flow settles only other entities' notices), its *own
//! rows* those rows; a paid IUV below is its first own row's:
//! - the first flow gets a `NO_RPT` row (esito 9, 10.00, IUV `99…` never paid) and a
//!   `STAND_IN_NO_RPT` row (esito 8, 20.00, IUV `98…` never paid): the IUV was never issued;
//! - then a `NO_RPT` row (esito 9, 5.00) for the paid IUV with IUR `PAIDNORPT<iuv>`, which no
//!   receipt has (no receipt, as expected without a payment request), and an `EXECUTED` row
//!   (esito 0, 7.00) with IUR `NORECEIPT<iuv>` (no receipt, unexpected);
//! - its last own row's amount is 1.00 more than the receipt's transfer;
//! - its totals declare all that, and it is republished as revision 2 (same rows, another
//!   regulation id, flow time one hour later, published after every revision 1);
//! - the next flow of the same entity (if any) repeats the first own row (as the receipt has
//!   it) at its end, totals included: the same payment in two flows;
//! - the last flow's first row is `REVOKED` (esito 3, amount unchanged), and its declared
//!   `sumPayments` is 1.00 more, its `totPayments` one more, than its rows add up to.
//!
//! With a single flow everything falls on it (and on its revision 2), the repeated payment
//! excepted; with a single own row, the changed amount falls on the row the next flow repeats.

use crate::ledger::{self, Entry, LedgerError, LedgerPayment};
use crate::receipt::PSPS;
use chrono::{DateTime, Duration, NaiveDate, SubsecRound, TimeZone, Utc};
use chrono_tz::Europe::Rome;
use serde::{Deserialize, Serialize};
use snodo_adapters::fdr::rest::{FdrRestError, Payment, SingleFlow};
use snodo_adapters::fdr::xml::render_flow;
use snodo_core::settlement::{
    FlowReceiver, FlowSender, Iuf, PayStatus, SenderKind, SettlementFlow, SettlementPayment,
    TransferIndex,
};
use snodo_core::Amount;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The published flows' directory inside the ledger's.
pub const FLOWS_DIR: &str = "flows";

#[derive(Debug, thiserror::Error)]
pub enum FlowsError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FlowsError + '_ {
    move |source| FlowsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One published revision of a flow, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedFlow {
    pub flow: SingleFlow,
    pub payments: Vec<Payment>,
}

impl PublishedFlow {
    fn new(header: &SettlementFlow, rows: &[SettlementPayment]) -> PublishedFlow {
        let computed = rows
            .iter()
            .fold(0i64, |sum, p| sum.saturating_add(p.amount.cents()));
        PublishedFlow {
            flow: SingleFlow::from_flow(
                header,
                Some((rows.len() as u64, Amount::from_cents(computed))),
            ),
            payments: rows
                .iter()
                .enumerate()
                .map(|(i, p)| Payment::from_payment(i as i64 + 1, p))
                .collect(),
        }
    }

    /// The header and rows in the core model.
    pub fn to_model(&self) -> Result<(SettlementFlow, Vec<SettlementPayment>), FdrRestError> {
        let rows = self
            .payments
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_payment(i))
            .collect::<Result<_, _>>()?;
        Ok((self.flow.to_flow()?, rows))
    }

    /// The flow as FlussoRiversamento XML (declared totals, as the PSP wrote them).
    pub fn to_xml(&self) -> Result<Vec<u8>, FdrRestError> {
        let (header, rows) = self.to_model()?;
        Ok(render_flow(&header, &rows))
    }
}

/// Where revision `revision` of flow `fdr` to `organization_id` is stored.
pub fn flow_path(ledger_dir: &Path, organization_id: &str, fdr: &str, revision: i64) -> PathBuf {
    ledger_dir
        .join(FLOWS_DIR)
        .join(organization_id)
        .join(format!("{fdr}.r{revision}.json"))
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The ledger directory (flows are written under its `flows/`).
    pub ledger: PathBuf,
    /// The day (Rome) whose payments are settled.
    pub date: NaiveDate,
    pub anomalies: bool,
    /// `published` of the first flow (to the millisecond); each next one a millisecond later.
    pub published_at: DateTime<Utc>,
}

impl PublishOptions {
    /// No anomalies, published now.
    pub fn new(ledger: impl Into<PathBuf>, date: NaiveDate) -> Self {
        Self {
            ledger: ledger.into(),
            date,
            anomalies: false,
            published_at: Utc::now(),
        }
    }
}

/// `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

/// Today in Rome.
pub fn today() -> NaiveDate {
    snodo_core::time::today_rome()
}

/// One revision written by [`publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub organization_id: String,
    pub psp_id: String,
    pub fdr: String,
    pub revision: i64,
    pub rows: usize,
    pub declared_cents: i64,
    pub computed_cents: i64,
    pub published: DateTime<Utc>,
    pub path: PathBuf,
}

impl std::fmt::Display for Published {
    /// `flow fdr=… revision=… psp=… organization=… payments=… declared_cents=…
    /// computed_cents=… published=… file=…`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "flow fdr={} revision={} psp={} organization={} payments={} declared_cents={} computed_cents={} published={} file={}",
            self.fdr,
            self.revision,
            self.psp_id,
            self.organization_id,
            self.rows,
            self.declared_cents,
            self.computed_cents,
            self.published
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            self.path.display()
        )
    }
}

/// Settles the ledger's payments of `opts.date` into published flows (see the module). No
/// payment that day: nothing is written.
pub fn publish(opts: &PublishOptions) -> Result<Vec<Published>, FlowsError> {
    let payments = settled(&ledger::read(&opts.ledger)?, opts.date);
    let mut flows = build(&payments, opts.date)?;
    let mut revisions: Vec<(SettlementFlow, Vec<SettlementPayment>)> = Vec::new();
    let republish = if opts.anomalies && !flows.is_empty() {
        let own: HashSet<(&str, &str)> = payments
            .iter()
            .map(|p| (p.fiscal_code.as_str(), p.iuv.as_str()))
            .collect();
        Some(add_anomalies(&mut flows, opts.date, &own))
    } else {
        None
    };
    let n = flows.len();
    // Whole milliseconds: a client that writes its cursor with milliseconds loses nothing.
    let at = opts.published_at.trunc_subsecs(3);
    for (i, (mut header, rows)) in flows.into_iter().enumerate() {
        header.published = Some(at + Duration::milliseconds(i as i64));
        if republish == Some(i) {
            let mut second = header.clone();
            second.revision = 2;
            second.regulation_id = regulation_id(second.iuf.as_str(), 2);
            second.flow_time += Duration::hours(1);
            second.published = Some(at + Duration::milliseconds(n as i64));
            revisions.push((header, rows.clone()));
            revisions.push((second, rows));
        } else {
            revisions.push((header, rows));
        }
    }
    let mut out = Vec::with_capacity(revisions.len());
    for (header, rows) in &revisions {
        out.push(write(&opts.ledger, header, rows)?);
    }
    out.sort_by_key(|p| p.published);
    Ok(out)
}

/// The payments of `date` to settle: first record of each receipt id, unless every answer
/// the hub gave to that receipt was a refusal (a receipt without answer is settled: the PSP
/// paid, and the hub may have stored it).
fn settled(entries: &[Entry], date: NaiveDate) -> Vec<LedgerPayment> {
    let day = date.format("%Y-%m-%d").to_string();
    let mut answers: HashMap<&str, bool> = HashMap::new();
    for e in entries {
        if let Entry::Answer(a) = e {
            let kept = a.outcome == "OK"
                || a.outcome == snodo_adapters::pagopa::fault_codes::RECEIPT_DUPLICATA;
            *answers.entry(a.receipt_id.as_str()).or_insert(false) |= kept;
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<LedgerPayment> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Payment(p) => Some(p),
            Entry::Answer(_) => None,
        })
        .filter(|p| p.date == day)
        .filter(|p| answers.get(p.receipt_id.as_str()).copied().unwrap_or(true))
        .filter(|p| seen.insert(p.receipt_id.clone()))
        .cloned()
        .collect();
    out.sort_by(|a, b| (&a.paid_at, &a.receipt_id).cmp(&(&b.paid_at, &b.receipt_id)));
    out
}

type Flow = (SettlementFlow, Vec<SettlementPayment>);

/// One flow per (entity credited, PSP), in that order; rows in the order of payment.
fn build(payments: &[LedgerPayment], date: NaiveDate) -> Result<Vec<Flow>, FlowsError> {
    let mut groups: BTreeMap<(String, String), (Option<String>, Vec<SettlementPayment>)> =
        BTreeMap::new();
    for p in payments {
        for t in &p.transfers {
            let Ok(index) = TransferIndex::new(i64::from(t.index)) else {
                continue;
            };
            let g = groups
                .entry((t.fiscal_code.clone(), p.psp_id.clone()))
                .or_default();
            if g.0.is_none() && t.fiscal_code == p.fiscal_code {
                g.0 = Some(p.company_name.clone());
            }
            g.1.push(SettlementPayment {
                iuv: p.iuv.clone(),
                iur: p.receipt_id.clone(),
                transfer_index: Some(index),
                amount: Amount::from_cents(t.amount_cents),
                status: PayStatus::Executed,
                date,
            });
        }
    }
    groups
        .into_iter()
        .map(|((org, psp), (name, rows))| {
            let header = header(&org, name, &psp, date, &rows)?;
            Ok((header, rows))
        })
        .collect()
}

fn header(
    org: &str,
    org_name: Option<String>,
    psp_id: &str,
    date: NaiveDate,
    rows: &[SettlementPayment],
) -> Result<SettlementFlow, FlowsError> {
    let prefix = format!("{}{psp_id}-", date.format("%Y-%m-%d"));
    let room = 35usize.saturating_sub(prefix.chars().count());
    let suffix: String = org.chars().take(room.max(1)).collect();
    let name = format!("{prefix}{suffix}");
    let iuf = Iuf::parse(&name).map_err(|e| FlowsError::Invalid {
        path: PathBuf::from(&name),
        reason: e.to_string(),
    })?;
    let psp = PSPS.iter().find(|p| p.id == psp_id);
    let next_day = date.succ_opt().unwrap_or(date);
    let flow_time = next_day
        .and_hms_opt(9, 0, 0)
        .and_then(|t| Rome.from_local_datetime(&t).single())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    let mut flow = SettlementFlow {
        regulation_id: regulation_id(iuf.as_str(), 1),
        iuf,
        psp_id: psp_id.to_owned(),
        revision: 1,
        flow_time,
        regulation_date: next_day,
        sender: FlowSender {
            kind: SenderKind::Bic,
            id: psp_id.to_owned(),
            name: Some(psp.map_or(psp_id, |p| p.name).to_owned()),
            broker_id: Some(psp.map_or(psp_id, |p| p.fiscal_code).to_owned()),
            channel_id: Some(psp.map_or(psp_id, |p| p.channel).to_owned()),
        },
        bic_code_pouring_bank: Some(psp_id.to_owned()),
        receiver: FlowReceiver {
            id: org.to_owned(),
            organization_id: org.to_owned(),
            name: Some(org_name.unwrap_or_else(|| org.to_owned())),
        },
        declared_count: 0,
        declared_amount: Amount::ZERO,
        published: None,
    };
    declare_totals(&mut flow, rows);
    Ok(flow)
}

fn declare_totals(flow: &mut SettlementFlow, rows: &[SettlementPayment]) {
    flow.declared_count = rows.len() as u64;
    flow.declared_amount = Amount::from_cents(
        rows.iter()
            .fold(0i64, |s, p| s.saturating_add(p.amount.cents())),
    );
}

/// The SCT reference of a revision: `SCT` and 16 hex digits of its name.
fn regulation_id(iuf: &str, revision: u32) -> String {
    format!("SCT{:016X}", stable_hash(&format!("{iuf}/{revision}")))
}

/// FNV-1a then splitmix: stable across runs and Rust versions (unlike `DefaultHasher`).
fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    crate::receipt::splitmix64(h)
}

/// An IUV no notice has: `prefix` and 15 digits from the flow's name.
fn unpaid_iuv(prefix: &str, flow: &SettlementFlow) -> String {
    let n = stable_hash(&format!("{prefix}{}", flow.iuf)) % 1_000_000_000_000_000;
    format!("{prefix}{n:015}")
}

/// Injects one case of each anomaly (see the module); returns the index of the first flow, the
/// one to republish. `own` holds (entity fiscal code, IUV) of the day's notices.
fn add_anomalies(flows: &mut [Flow], date: NaiveDate, own: &HashSet<(&str, &str)>) -> usize {
    let is_own = |h: &SettlementFlow, p: &SettlementPayment| {
        own.contains(&(h.receiver.organization_id.as_str(), p.iuv.as_str()))
    };
    let first = flows
        .iter()
        .position(|(h, rows)| rows.iter().any(|p| is_own(h, p)))
        .unwrap_or(0);
    let mut repeated = None;
    if let Some((header, rows)) = flows.get_mut(first) {
        let own_rows: Vec<usize> = (0..rows.len())
            .filter(|&i| is_own(header, &rows[i]))
            .collect();
        let row = |iuv: String, iur: String, cents, status| SettlementPayment {
            iuv,
            iur,
            transfer_index: Some(TransferIndex::FIRST),
            amount: Amount::from_cents(cents),
            status,
            date,
        };
        for (prefix, iur, cents, status) in [
            ("99", "NORPT", 1000, PayStatus::NoRpt),
            ("98", "STANDIN", 2000, PayStatus::StandInNoRpt),
        ] {
            let iuv = unpaid_iuv(prefix, header);
            rows.push(row(iuv.clone(), format!("{iur}{iuv}"), cents, status));
        }
        if let (Some(&first_own), Some(&last_own)) = (own_rows.first(), own_rows.last()) {
            let paid = rows[first_own].iuv.clone();
            repeated = Some(rows[first_own].clone());
            rows.push(row(
                paid.clone(),
                format!("PAIDNORPT{paid}"),
                500,
                PayStatus::NoRpt,
            ));
            rows.push(row(
                paid.clone(),
                format!("NORECEIPT{paid}"),
                700,
                PayStatus::Executed,
            ));
            let changed = &mut rows[last_own];
            changed.amount = Amount::from_cents(changed.amount.cents() + 100);
        }
        declare_totals(header, rows);
    }
    let org = flows
        .get(first)
        .map(|(h, _)| h.receiver.organization_id.clone());
    let next = flows
        .iter()
        .enumerate()
        .skip(first + 1)
        .find(|(_, (h, _))| Some(&h.receiver.organization_id) == org.as_ref())
        .map(|(i, _)| i);
    if let (Some(i), Some(p)) = (next, repeated) {
        let (header, rows) = &mut flows[i];
        rows.push(p);
        declare_totals(header, rows);
    }
    if let Some((header, rows)) = flows.last_mut() {
        if let Some(first) = rows.first_mut() {
            first.status = PayStatus::Revoked;
        }
        header.declared_amount = Amount::from_cents(header.declared_amount.cents() + 100);
        header.declared_count += 1;
    }
    first
}

/// Writes the JSON (then the XML) of one revision, each through a temporary file renamed into
/// place, so a server reading the directory never sees half a flow.
fn write(
    ledger_dir: &Path,
    header: &SettlementFlow,
    rows: &[SettlementPayment],
) -> Result<Published, FlowsError> {
    let org = &header.receiver.organization_id;
    let path = flow_path(ledger_dir, org, header.iuf.as_str(), header.revision.into());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let published = PublishedFlow::new(header, rows);
    let json = serde_json::to_vec_pretty(&published).map_err(|e| FlowsError::Invalid {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let xml = render_flow(header, rows);
    replace(&path.with_extension("xml"), &xml)?;
    replace(&path, &json)?;
    Ok(Published {
        organization_id: org.clone(),
        psp_id: header.psp_id.clone(),
        fdr: header.iuf.as_str().to_owned(),
        revision: header.revision.into(),
        rows: rows.len(),
        declared_cents: header.declared_amount.cents(),
        computed_cents: rows.iter().map(|p| p.amount.cents()).sum(),
        published: header.published.unwrap_or_default(),
        path,
    })
}

fn replace(path: &Path, bytes: &[u8]) -> Result<(), FlowsError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// Every published revision under `<ledger_dir>/flows/` (none when there is no such
/// directory), in the order of `published`, then name and revision.
pub fn load_all(ledger_dir: &Path) -> Result<Vec<PublishedFlow>, FlowsError> {
    let mut out = Vec::new();
    for path in flow_files(ledger_dir)? {
        out.push(read_flow(&path)?);
    }
    sort_flows(&mut out, |f| f);
    Ok(out)
}

/// The flows [`load_all_cached`] parsed, by file, kept while the file's size and modification
/// time stay the same (publishing renames a new file into place): a server answering every
/// page of a 100 000-row flow parses it once, not once a page.
#[derive(Debug, Default)]
pub struct FlowCache(Mutex<HashMap<PathBuf, CachedFlow>>);

#[derive(Debug)]
struct CachedFlow {
    modified: Option<SystemTime>,
    len: u64,
    flow: Arc<PublishedFlow>,
}

/// [`load_all`], parsing only the files that changed since `cache` last saw them.
pub fn load_all_cached(
    ledger_dir: &Path,
    cache: &FlowCache,
) -> Result<Vec<Arc<PublishedFlow>>, FlowsError> {
    let files = flow_files(ledger_dir)?;
    let mut cached = cache.0.lock().unwrap_or_else(|e| e.into_inner());
    cached.retain(|path, _| files.contains(path));
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let meta = std::fs::metadata(&path).map_err(io_error(&path))?;
        let (modified, len) = (meta.modified().ok(), meta.len());
        match cached.get(&path) {
            Some(c) if c.modified.is_some() && c.modified == modified && c.len == len => {
                out.push(c.flow.clone());
            }
            _ => {
                let flow = Arc::new(read_flow(&path)?);
                cached.insert(
                    path,
                    CachedFlow {
                        modified,
                        len,
                        flow: flow.clone(),
                    },
                );
                out.push(flow);
            }
        }
    }
    sort_flows(&mut out, |f| f);
    Ok(out)
}

/// The `.json` revisions under `<ledger_dir>/flows/<organizationId>/`.
fn flow_files(ledger_dir: &Path) -> Result<Vec<PathBuf>, FlowsError> {
    let root = ledger_dir.join(FLOWS_DIR);
    let orgs = match std::fs::read_dir(&root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(&root)(e)),
    };
    let mut out = Vec::new();
    for org in orgs {
        let org = org.map_err(io_error(&root))?.path();
        if !org.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&org).map_err(io_error(&org))? {
            let path = f.map_err(io_error(&org))?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
                out.push(path);
            }
        }
    }
    Ok(out)
}

fn read_flow(path: &Path) -> Result<PublishedFlow, FlowsError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    serde_json::from_slice(&bytes).map_err(|e| FlowsError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn sort_flows<T>(flows: &mut [T], flow: impl Fn(&T) -> &PublishedFlow) {
    flows.sort_by(|a, b| {
        let (a, b) = (flow(a), flow(b));
        (a.flow.published, &a.flow.fdr, a.flow.revision).cmp(&(
            b.flow.published,
            &b.flow.fdr,
            b.flow.revision,
        ))
    });
}
