//! The settlement flows pull (`[pagopa.fdr]`): on each schedule tick, once across the hubs
//! sharing a store (a job lease), every configured entity asks pagoPA for its new flows —
//! FdR 3 REST (the list from the entity's `publishedGt` cursor, paged to the end, then each
//! flow and its payments pages) or the node's legacy SOAP (the list, then each flow not yet
//! held) — and stores each one linked to the hub's receipts.
//!
//! A flow's rows are stored in chunks, each with the flow's checkpoint, so a pull killed
//! mid-flow resumes after the last committed row. The cursor moves only once every flow of the
//! list is stored (ok or failed). A document that cannot be read is recorded as a failed flow
//! with why, and the pull goes on; a transient failure (connection, timeout, 5xx, 429) is
//! retried with backoff, then ends the entity's pull until the next tick.

use crate::config::FdrMode;
use crate::plan::{EntityRuntime, Fdr, Plan};
use chrono::{DateTime, Utc};
use serde::Serialize;
use snodo_adapters::fdr::{rest, soap};
use snodo_adapters::pagopa::{parse_request, stored_transfers, to_cents, ReceiptView};
use snodo_core::settlement::link::{Known, Linker, PaymentKey, ReceiptTransfer};
use snodo_core::settlement::{Iuf, SettlementFlow, SettlementPayment, TransferIndex};
use snodo_store::{
    LinkReceipt, LookupKey, NewAnomaly, NewReport, OtherReceipt, ReportRow, ReportTotals, RowFacts,
    Store,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The job lease's name: one pull at a time across hubs.
pub const JOB: &str = "reports:pull";
/// How long a hub may hold the pull before another may take over (a hub that died).
const LEASE: Duration = Duration::from_secs(30 * 60);
/// Rows committed together with the flow's checkpoint.
pub const CHUNK: usize = 5_000;
/// Rows looked up per read.
const LOOKUP_CHUNK: usize = 2_000;
/// The most an answer's `Content-Length` reserves up front (larger answers grow as they come).
const MAX_PREALLOC: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("store: {0}")]
    Store(#[from] snodo_store::StoreError),
    #[error("{0}")]
    Http(String),
    #[error("entity {0:?} is not configured")]
    NoEntity(String),
    #[error("[pagopa.fdr] is not configured")]
    NotConfigured,
    #[error("another hub is pulling the settlement flows")]
    Busy,
}

/// What one entity's pull did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PullSummary {
    pub entity: String,
    /// Flows stored (ok).
    pub stored: u64,
    /// Flows recorded as failed (bad documents).
    pub failed: u64,
    /// Flows listed but already held.
    pub skipped: u64,
    /// Payment rows stored.
    pub rows: u64,
    /// Why the entity's pull stopped early (a transient failure, a refusal), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A call's failure: transient ones are retried.
enum CallFailure {
    Transient(String),
    /// An answer that will not change on retry (4xx, a SOAP fault): the status and body.
    Refused(u16, Vec<u8>),
}

pub struct Puller {
    plan: Arc<Plan>,
    store: Arc<dyn Store>,
    instance: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl Puller {
    /// `runtime` runs the HTTP calls; the pull itself blocks (call it off the runtime's threads).
    pub fn new(
        plan: Arc<Plan>,
        store: Arc<dyn Store>,
        instance: String,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, PullError> {
        let fdr = plan.fdr.as_ref().ok_or(PullError::NotConfigured)?;
        let client = reqwest::Client::builder()
            .connect_timeout(fdr.connect_timeout)
            .timeout(fdr.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PullError::Http(format!("HTTP client: {e}")))?;
        Ok(Self {
            plan,
            store,
            instance,
            client,
            runtime,
        })
    }

    fn fdr(&self) -> &Fdr {
        // `new` refused a plan without it.
        self.plan.fdr.as_ref().expect("checked in Puller::new")
    }

    /// Pulls on schedule until shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        info!(mode = ?this.fdr().mode, "settlement flows pull started");
        while let Some(tick) = crate::ticks::next_tick(&this.fdr().schedule, &mut shutdown).await {
            let work = this.clone();
            match tokio::task::spawn_blocking(move || work.pull(None, tick)).await {
                Ok(Ok(_)) | Ok(Err(PullError::Busy)) => {}
                Ok(Err(e)) => warn!("settlement flows pull failed: {e}"),
                Err(e) => error!("settlement flows pull panicked: {e}"),
            }
        }
        info!("settlement flows pull stopped");
    }

    /// Pulls every configured entity (or one), under the job lease; with `tick`, only if no hub
    /// pulled that tick yet. Blocks.
    pub fn pull(
        &self,
        entity: Option<&str>,
        tick: Option<String>,
    ) -> Result<Vec<PullSummary>, PullError> {
        let mut entities: Vec<Arc<EntityRuntime>> = match entity {
            Some(ipa) => vec![self
                .plan
                .entities
                .get(ipa)
                .cloned()
                .ok_or_else(|| PullError::NoEntity(ipa.into()))?],
            None => self.plan.entities.values().cloned().collect(),
        };
        entities.sort_by(|a, b| a.ipa_code.cmp(&b.ipa_code));
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let taken = self.store.take_job(
            JOB,
            &self.instance,
            &crate::deliver::stamp(now),
            &crate::deliver::stamp(until),
            tick.as_deref(),
        )?;
        if !taken {
            info!(
                tick = tick.as_deref().unwrap_or("-"),
                "another hub pulls the settlement flows"
            );
            return Err(PullError::Busy);
        }
        let mut out = Vec::new();
        for e in &entities {
            let mut summary = PullSummary {
                entity: e.ipa_code.clone(),
                ..PullSummary::default()
            };
            let result = match self.fdr().mode {
                FdrMode::Rest => self.pull_rest(e, &mut summary),
                FdrMode::Soap => self.pull_soap(e, &mut summary),
            };
            if let Err(err) = result {
                warn!(entity = %e.ipa_code, "settlement flows pull stopped: {err}");
                summary.error = Some(err.to_string());
            }
            info!(entity = %e.ipa_code, stored = summary.stored, failed = summary.failed,
                skipped = summary.skipped, rows = summary.rows, "settlement flows pulled");
            out.push(summary);
        }
        if let Err(e) = self.store.release_job(JOB, &self.instance) {
            warn!("cannot release the pull's lease (it expires by itself): {e}");
        }
        Ok(out)
    }

    /// One call with retries of transient failures; the answer's body when 2xx.
    fn call(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, CallFailure> {
        let policy = snodo_connectors::RetryPolicy {
            max_attempts: self.fdr().attempts,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_age: None,
        };
        let mut attempt = 1;
        loop {
            let result = self.runtime.block_on(async {
                let mut resp = build()
                    .send()
                    .await
                    .map_err(|e| CallFailure::Transient(format!("{what}: {}", without_url(&e))))?;
                let status = resp.status().as_u16();
                // Chunks go straight into one buffer of the announced size: a flow's answer can
                // be 60 MB, and gathering it whole then copying it would hold it twice.
                let announced = resp.content_length().unwrap_or(0).min(MAX_PREALLOC);
                let mut body = Vec::with_capacity(announced as usize);
                while let Some(chunk) = resp.chunk().await.map_err(|e| {
                    CallFailure::Transient(format!(
                        "{what}: reading the answer: {}",
                        without_url(&e)
                    ))
                })? {
                    body.extend_from_slice(&chunk);
                }
                Ok::<_, CallFailure>((status, body))
            });
            let failure = match result {
                Ok((s, body)) if (200..300).contains(&s) => return Ok(body),
                Ok((s, body)) if s == 429 || s >= 500 => {
                    // A SOAP fault comes as a 500 with a body: it is the node's answer.
                    if self.fdr().mode == FdrMode::Soap && !body.is_empty() && s == 500 {
                        return Err(CallFailure::Refused(s, body));
                    }
                    CallFailure::Transient(format!("{what}: HTTP {s}{}", error_code(&body)))
                }
                Ok((s, body)) => return Err(CallFailure::Refused(s, body)),
                Err(f) => f,
            };
            let CallFailure::Transient(why) = &failure else {
                return Err(failure);
            };
            if attempt >= policy.max_attempts {
                return Err(failure);
            }
            let wait = policy.delay(attempt);
            warn!(
                "{why}; attempt {attempt} of {}, again in {wait:?}",
                policy.max_attempts
            );
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    fn rest_get(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<u8>, CallFailure> {
        let fdr = self.fdr();
        let url = format!("{}{path}", fdr.url);
        let key = fdr.subscription_key.clone().unwrap_or_default();
        self.call(what, || {
            self.client
                .get(&url)
                .query(query)
                .header("Ocp-Apim-Subscription-Key", &key)
                .header("Accept", "application/json")
        })
    }

    fn pull_rest(&self, e: &EntityRuntime, summary: &mut PullSummary) -> Result<(), PullError> {
        let fc = e.fiscal_code.as_str();
        let cursor = self.store.report_cursor(&e.ipa_code)?;
        let size = self.fdr().page_size;
        let mut newest: Option<DateTime<Utc>> = None;
        let mut page = 1i64;
        loop {
            let mut query = vec![("page", page.to_string()), ("size", size.to_string())];
            if let Some(c) = &cursor {
                query.push(("publishedGt", c.clone()));
            }
            let path = format!("/organizations/{}/fdrs", enc(fc));
            let body = self
                .rest_get("the list of flows", &path, &query)
                .map_err(|f| refusal(false, "the list of flows", f))?;
            let list: rest::FlowList = rest::decode(&body)
                .map_err(|err| PullError::Http(format!("the list of flows: {err}")))?;
            for item in &list.data {
                self.rest_flow(e, item, summary)?;
                newest = newest.max(Some(item.published));
            }
            if !list.metadata.has_next() || list.data.is_empty() {
                break;
            }
            page += 1;
        }
        // Every listed flow is stored (ok or failed): only now does the cursor move.
        if let Some(n) = newest {
            let n = n.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            if cursor.as_deref() != Some(n.as_str()) {
                self.store.set_report_cursor(&e.ipa_code, &n)?;
            }
        }
        Ok(())
    }

    fn rest_flow(
        &self,
        e: &EntityRuntime,
        item: &rest::FlowByPsp,
        summary: &mut PullSummary,
    ) -> Result<(), PullError> {
        let held = self.store.reports_by_iuf(&e.ipa_code, &item.fdr)?;
        if held.iter().any(|f| {
            f.psp_id == item.psp_id && f.revision == item.revision && f.status != "loading"
        }) {
            summary.skipped += 1;
            return Ok(());
        }
        let key = NewReport {
            entity: &e.ipa_code,
            psp_id: &item.psp_id,
            iuf: &item.fdr,
            revision: item.revision,
            source: "rest",
            flow_time: None,
            flow_date: None,
            regulation_id: None,
            regulation_date: None,
            header: None,
            declared_count: None,
            declared_cents: None,
            published: None,
        };
        let base = format!(
            "/organizations/{}/fdrs/{}/revisions/{}/psps/{}",
            enc(e.fiscal_code.as_str()),
            enc(&item.fdr),
            item.revision,
            enc(&item.psp_id)
        );
        let what = format!(
            "flow {} (PSP {}, revision {})",
            item.fdr, item.psp_id, item.revision
        );
        let header = match self.rest_get(&what, &base, &[]) {
            Ok(b) => b,
            Err(f) => return self.refused_flow(&key, &what, f, summary),
        };
        let flow = match rest::decode::<rest::SingleFlow>(&header).and_then(|h| h.to_flow()) {
            Ok(f) => f,
            Err(err) => return self.bad_flow(&key, &format!("{what}: {err}"), summary),
        };
        let mut payments = Vec::new();
        let mut page = 1i64;
        let size = self.fdr().page_size;
        loop {
            let query = [("page", page.to_string()), ("size", size.to_string())];
            let pwhat = format!("{what}, payments page {page}");
            let body = match self.rest_get(&pwhat, &format!("{base}/payments"), &query) {
                Ok(b) => b,
                Err(f) => return self.refused_flow(&key, &pwhat, f, summary),
            };
            let p: rest::PaymentsPage = match rest::decode(&body) {
                Ok(p) => p,
                Err(err) => return self.bad_flow(&key, &format!("{pwhat}: {err}"), summary),
            };
            match p.to_payments() {
                Ok(rows) => payments.extend(rows),
                Err(err) => return self.bad_flow(&key, &format!("{pwhat}: {err}"), summary),
            }
            if !p.metadata.has_next() || p.data.is_empty() {
                break;
            }
            page += 1;
        }
        self.store_flow(e, "rest", &key, &flow, &payments, summary)
    }

    fn pull_soap(&self, e: &EntityRuntime, summary: &mut PullSummary) -> Result<(), PullError> {
        let fdr = self.fdr();
        let password = fdr.password.clone().unwrap_or_default();
        let caller = soap::NodeCaller {
            broker_id: &fdr.broker,
            station_id: &fdr.station,
            password: &password,
            entity: Some(e.fiscal_code.as_str()),
            psp_id: None,
        };
        let body = self
            .soap_call(
                "the list of flows",
                soap::LIST_OPERATION,
                soap::render_list_request(&caller),
            )
            .map_err(|f| refusal(true, "the list of flows", f))?;
        let listed = soap::parse_list_response(&body).map_err(|err| {
            log_soap(&err, "the list of flows");
            PullError::Http(format!("the list of flows: {err}"))
        })?;
        let mut seen = HashSet::new();
        for l in listed {
            if !seen.insert(l.iuf.clone()) {
                continue;
            }
            // Held unless a crash left it loading (then it resumes).
            if self
                .store
                .reports_by_iuf(&e.ipa_code, &l.iuf)?
                .iter()
                .any(|f| f.status != "loading")
            {
                summary.skipped += 1;
                continue;
            }
            let psp = Iuf::parse(&l.iuf)
                .ok()
                .and_then(|i| i.psp_hint().map(str::to_owned))
                .unwrap_or_default();
            let key = NewReport {
                entity: &e.ipa_code,
                psp_id: &psp,
                iuf: &l.iuf,
                revision: 1,
                source: "soap",
                flow_time: None,
                flow_date: None,
                regulation_id: None,
                regulation_date: None,
                header: None,
                declared_count: None,
                declared_cents: None,
                published: None,
            };
            let what = format!("flow {}", l.iuf);
            let body = match self.soap_call(
                &what,
                soap::FLOW_OPERATION,
                soap::render_flow_request(&caller, &l.iuf),
            ) {
                Ok(b) => b,
                Err(f) => {
                    self.refused_flow(&key, &what, f, summary)?;
                    continue;
                }
            };
            // The answer is dropped once the flow's XML is out of it, the XML once its rows are.
            let xml = soap::parse_flow_response(&body);
            drop(body);
            let parsed = xml.and_then(|xml| {
                let psp = (!psp.is_empty()).then_some(psp.as_str());
                Ok(snodo_adapters::fdr::xml::parse_flow(&xml, psp)?)
            });
            match parsed {
                Ok((flow, payments)) => {
                    self.store_flow(e, "soap", &key, &flow, &payments, summary)?;
                }
                Err(err) => {
                    log_soap(&err, &what);
                    self.bad_flow(&key, &format!("{what}: {err}"), summary)?;
                }
            }
        }
        Ok(())
    }

    fn soap_call(&self, what: &str, op: &str, envelope: String) -> Result<Vec<u8>, CallFailure> {
        let url = self.fdr().url.clone();
        self.call(what, || {
            self.client
                .post(&url)
                .header("Content-Type", "text/xml; charset=utf-8")
                .header("SOAPAction", op)
                .body(envelope.clone())
        })
    }

    /// A call that failed for good: transient ones stop the entity (the flow is asked again at
    /// the next tick); a refusal records the flow failed.
    fn refused_flow(
        &self,
        key: &NewReport<'_>,
        what: &str,
        f: CallFailure,
        summary: &mut PullSummary,
    ) -> Result<(), PullError> {
        match f {
            CallFailure::Transient(why) => Err(PullError::Http(why)),
            CallFailure::Refused(status, body) => {
                let why = format!("{what}: HTTP {status}{}", error_code(&body));
                if self.fdr().mode == FdrMode::Soap {
                    if let Err(err) = soap::parse_flow_response(&body) {
                        log_soap(&err, what);
                        return self.bad_flow(key, &format!("{what}: {err}"), summary);
                    }
                }
                warn!("{why}");
                self.bad_flow(key, &why, summary)
            }
        }
    }

    fn bad_flow(
        &self,
        key: &NewReport<'_>,
        why: &str,
        summary: &mut PullSummary,
    ) -> Result<(), PullError> {
        warn!(
            entity = key.entity,
            iuf = key.iuf,
            psp = key.psp_id,
            "flow recorded as failed: {why}"
        );
        self.store.fail_report(key, why)?;
        summary.failed += 1;
        Ok(())
    }

    /// Links the flow's rows and stores them in chunks, resuming after the rows a crash left
    /// committed; then its totals and anomalies.
    fn store_flow(
        &self,
        e: &EntityRuntime,
        source: &str,
        key: &NewReport<'_>,
        flow: &SettlementFlow,
        payments: &[SettlementPayment],
        summary: &mut PullSummary,
    ) -> Result<(), PullError> {
        let fc = e.fiscal_code.as_str();
        if flow.receiver.organization_id != fc && flow.receiver.id != fc {
            let why = format!(
                "the flow settles to organization {} (receiver {}), not to entity {} ({fc})",
                flow.receiver.organization_id, flow.receiver.id, e.ipa_code
            );
            return self.bad_flow(key, &why, summary);
        }
        if flow.iuf.as_str() != key.iuf
            || (key.source == "rest"
                && (flow.psp_id != key.psp_id || i64::from(flow.revision) != key.revision))
        {
            let why = format!(
                "the flow is {} (PSP {}, revision {}), not the one listed",
                flow.iuf, flow.psp_id, flow.revision
            );
            return self.bad_flow(key, &why, summary);
        }
        let header =
            serde_json::to_string(&rest::SingleFlow::from_flow(flow, None)).unwrap_or_default();
        let flow_time = flow
            .flow_time
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let flow_date = flow.flow_date().to_string();
        let regulation_date = flow.regulation_date.to_string();
        let published = flow
            .published
            .map(|p| p.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        let new = NewReport {
            source,
            flow_time: Some(&flow_time),
            flow_date: Some(&flow_date),
            regulation_id: Some(&flow.regulation_id),
            regulation_date: Some(&regulation_date),
            header: Some(&header),
            declared_count: Some(flow.declared_count as i64),
            declared_cents: Some(flow.declared_amount.cents()),
            published: published.as_deref(),
            ..key.clone()
        };
        let stored = self.store.begin_report(&new)?;
        if stored.status != "loading" {
            summary.skipped += 1;
            return Ok(());
        }
        // What the store knows of each row, compacted (the parsed receipts are dropped here).
        let mut known: Vec<(Known, Option<i64>)> = Vec::with_capacity(payments.len());
        let mut elsewhere = HashSet::new();
        for chunk in payments.chunks(LOOKUP_CHUNK) {
            let keys: Vec<LookupKey<'_>> = chunk
                .iter()
                .map(|p| LookupKey {
                    iuv: &p.iuv,
                    iur: &p.iur,
                    link_index: i64::from(p.index_or_first().get()),
                })
                .collect();
            let facts =
                self.store
                    .report_lookup(&e.ipa_code, &flow.psp_id, flow.iuf.as_str(), &keys)?;
            for (p, f) in chunk.iter().zip(facts) {
                if f.elsewhere {
                    elsewhere.insert(PaymentKey::of(p));
                }
                known.push(known_of(p, f, fc));
            }
        }
        let mut linker = Linker::new(&elsewhere);
        let mut links = Vec::with_capacity(payments.len());
        for (p, (k, receipt)) in payments.iter().zip(known) {
            let l = linker.row(p, |_| k);
            links.push(l.linked.map(|t| (receipt, t.transfer_index)));
        }
        let link_summary = linker.finish(flow);
        let messages: Vec<(Option<u64>, &'static str, &'static str, String)> = link_summary
            .anomalies
            .iter()
            .map(|a| (a.row(), a.code(), a.severity().as_str(), a.to_string()))
            .collect();
        let dates: Vec<String> = payments.iter().map(|p| p.date.to_string()).collect();
        let mut done = stored.rows_done.max(0) as usize;
        if done > 0 {
            info!(entity = %e.ipa_code, iuf = %flow.iuf, rows_done = done, "resuming a flow a crash interrupted");
        }
        while done < payments.len() {
            let end = (done + CHUNK).min(payments.len());
            let rows: Vec<ReportRow<'_>> = (done..end)
                .map(|i| {
                    let p = &payments[i];
                    let (receipt, transfer) = match links[i] {
                        Some((r, t)) => (r, Some(i64::from(t.get()))),
                        None => (None, None),
                    };
                    ReportRow {
                        row_no: i as u64 + 1,
                        iuv: &p.iuv,
                        iur: &p.iur,
                        transfer_index: p.transfer_index.map(|t| i64::from(t.get())),
                        link_index: i64::from(p.index_or_first().get()),
                        amount_cents: p.amount.cents(),
                        esito: i64::from(p.status.esito()),
                        pay_date: &dates[i],
                        receipt,
                        receipt_transfer: transfer,
                    }
                })
                .collect();
            let anomalies: Vec<NewAnomaly<'_>> = messages
                .iter()
                .filter(|(row, ..)| row.is_some_and(|r| r as usize > done && r as usize <= end))
                .map(anomaly)
                .collect();
            self.store
                .add_report_rows(stored.id, done as u64, &rows, &anomalies)?;
            summary.rows += rows.len() as u64;
            done = end;
            crate::failpoint("report-chunk");
        }
        let totals: Vec<NewAnomaly<'_>> = messages
            .iter()
            .filter(|(row, ..)| row.is_none())
            .map(anomaly)
            .collect();
        // The entity's reports pipelines get it in the same commit: handed on exactly once.
        let finished = self.store.finish_report(
            stored.id,
            &ReportTotals {
                computed_count: link_summary.computed_count as i64,
                computed_cents: link_summary.computed_amount.cents(),
                linked: link_summary.linked as i64,
            },
            &totals,
            &self.plan.report_pipelines(&e.ipa_code),
        )?;
        if finished {
            summary.stored += 1;
            info!(entity = %e.ipa_code, iuf = %flow.iuf, psp = %flow.psp_id, revision = flow.revision,
                payments = link_summary.computed_count, linked = link_summary.linked,
                anomalies = messages.len(), "settlement flow stored");
        }
        Ok(())
    }
}

fn anomaly<'a>(m: &'a (Option<u64>, &'static str, &'static str, String)) -> NewAnomaly<'a> {
    NewAnomaly {
        row_no: m.0,
        code: m.1,
        severity: m.2,
        message: &m.3,
    }
}

/// The store's facts as the linking rules' [`Known`], with the receipt's store id.
/// `fiscal_code` is the flow entity's: a row for another entity's notice links only to a
/// transfer that credits it (the entity is that receipt's secondary beneficiary).
fn known_of(p: &SettlementPayment, f: RowFacts, fiscal_code: &str) -> (Known, Option<i64>) {
    let index = p.index_or_first();
    let linked = |amount, id| {
        (
            Known::Transfer(ReceiptTransfer {
                receipt_id: p.iur.clone(),
                transfer_index: index,
                amount,
            }),
            Some(id),
        )
    };
    if let Some(r) = f.receipt {
        return match transfer_amount(&r, index) {
            Some(amount) => linked(amount, r.id),
            None => (Known::NoReceipt, None),
        };
    }
    if let Some((id, amount)) = f
        .others
        .iter()
        .find_map(|o| Some((o.id, credited_amount(o, index, fiscal_code)?)))
    {
        return linked(amount, id);
    }
    if f.issued {
        (Known::NoReceipt, None)
    } else {
        (Known::IuvNotIssued, None)
    }
}

/// The amount of another entity's receipt's transfer `index`, when that transfer credits
/// `fiscal_code` (`fiscalCodePA`); the XML is read when the parsed request was not kept.
fn credited_amount(
    r: &OtherReceipt,
    index: TransferIndex,
    fiscal_code: &str,
) -> Option<snodo_core::Amount> {
    let credits = |id: u8, fc: &str| id == index.get() && fc == fiscal_code;
    match (&r.parsed, &r.xml) {
        (Some(parsed), _) => {
            let transfers = stored_transfers(parsed.as_bytes()).ok()?;
            let t = transfers
                .iter()
                .find(|t| credits(t.id_transfer, &t.fiscal_code_pa))?;
            to_cents(&t.transfer_amount).ok()
        }
        (None, Some(xml)) => {
            let request = parse_request(xml.as_bytes()).ok()?;
            let view = ReceiptView::of(&request)?;
            let t = view
                .transfers
                .iter()
                .find(|t| credits(t.id_transfer, t.fiscal_code_pa))?;
            to_cents(t.amount).ok()
        }
        (None, None) => None,
    }
}

/// The amount of the receipt's transfer `index`, from the request as parsed on arrival; a
/// receipt kept without it counts as one transfer of its whole amount.
pub(crate) fn transfer_amount(r: &LinkReceipt, index: TransferIndex) -> Option<snodo_core::Amount> {
    let Some(parsed) = &r.parsed else {
        return (index == TransferIndex::FIRST)
            .then(|| snodo_core::Amount::from_cents(r.amount_cents));
    };
    let transfers = stored_transfers(parsed.as_bytes()).ok()?;
    let t = transfers.iter().find(|t| t.id_transfer == index.get())?;
    to_cents(&t.transfer_amount).ok()
}

fn refusal(soap_mode: bool, what: &str, f: CallFailure) -> PullError {
    match f {
        CallFailure::Transient(why) => PullError::Http(why),
        CallFailure::Refused(status, body) => {
            if let (true, Err(err)) = (soap_mode, soap::parse_list_response(&body)) {
                if matches!(
                    err,
                    soap::FdrSoapError::Fault(_) | soap::FdrSoapError::Soap(_)
                ) {
                    log_soap(&err, what);
                    return PullError::Http(format!("{what}: {err}"));
                }
            }
            let why = format!("{what}: HTTP {status}{}", error_code(&body));
            warn!("{why}");
            PullError::Http(why)
        }
    }
}

/// FdR 3's `FDR-nnnn` code and first message, when the body is its error.
fn error_code(body: &[u8]) -> String {
    match rest::decode::<rest::ErrorResponse>(body) {
        Ok(r) => {
            let code = r.app_error_code.unwrap_or_default();
            let msg = r
                .errors
                .first()
                .and_then(|m| m.message.clone())
                .unwrap_or_default();
            warn!(code = %code, "FdR 3 answered {code}: {msg}");
            format!(" {code}: {msg}")
        }
        Err(_) => String::new(),
    }
}

fn log_soap(err: &soap::FdrSoapError, what: &str) {
    match err {
        soap::FdrSoapError::Fault(f) => {
            warn!(code = %f.fault_code, "{what}: the node answered {}: {}", f.fault_code, f.fault_string)
        }
        other => warn!("{what}: {other}"),
    }
}

/// A reqwest error's text without its URL (the query could carry a key).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "failed"
    };
    let mut why = kind.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        why = format!("{why}: {s}");
        src = s.source();
    }
    why
}

/// A path segment, percent-encoded beyond the unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use snodo_adapters::pagopa::{
        receipt_to_stored, render_request, EntityType, Outcome, ReceiptDestination,
        ReceiptTransferV2, ReceiptV2, Request, SendRtV2Request, Subject, UniqueIdentifier,
    };
    use snodo_core::settlement::PayStatus;
    use snodo_core::Amount;

    const PADOVA: &str = "00644060287";
    const FELTRE: &str = "00133880252";
    const VENETO: &str = "80007580279";

    /// A Padova receipt of 10.00: transfer 1 (7.00) to Padova, transfer 2 (3.00) to Feltre.
    fn shared_receipt() -> Request {
        let transfer = |id, amount: &str, fc: &str| ReceiptTransferV2 {
            id_transfer: id,
            transfer_amount: amount.into(),
            fiscal_code_pa: fc.into(),
            company_name: None,
            destination: ReceiptDestination::Iban("IT60X0542811101000000123456".into()),
            remittance_information: "/RFB/x/TXT/TARI".into(),
            transfer_category: "9/0101100IM/".into(),
            metadata: Vec::new(),
        };
        Request::SendRtV2(SendRtV2Request {
            id_pa: PADOVA.into(),
            id_broker_pa: VENETO.into(),
            id_station: "80007580279_01".into(),
            receipt: ReceiptV2 {
                receipt_id: "R1".into(),
                notice_number: "301000000000000101".into(),
                fiscal_code: PADOVA.into(),
                outcome: Outcome::Ok,
                creditor_reference_id: "01000000000000101".into(),
                payment_amount: "10.00".into(),
                description: "TARI".into(),
                company_name: "Comune di Padova".into(),
                debtor: Subject {
                    unique_identifier: UniqueIdentifier {
                        kind: EntityType::F,
                        value: "RSSMRA85T10A562S".into(),
                    },
                    full_name: "Mario Rossi".into(),
                    ..Default::default()
                },
                transfer_list: vec![transfer(1, "7.00", PADOVA), transfer(2, "3.00", FELTRE)],
                id_psp: "BCITITMM".into(),
                psp_company_name: "Intesa Sanpaolo".into(),
                id_channel: "BCITITMM_01".into(),
                channel_description: "app".into(),
                payment_date_time: Some("2026-11-26T10:00:00".into()),
                ..Default::default()
            },
        })
    }

    fn row(index: u8, cents: i64) -> SettlementPayment {
        SettlementPayment {
            iuv: "01000000000000101".into(),
            iur: "R1".into(),
            transfer_index: Some(TransferIndex::new(i64::from(index)).unwrap()),
            amount: Amount::from_cents(cents),
            status: PayStatus::Executed,
            date: NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
        }
    }

    /// What the store finds for Feltre: no position, no receipt of its own, Padova's receipt.
    fn facts(other: OtherReceipt) -> RowFacts {
        RowFacts {
            issued: false,
            receipt: None,
            others: vec![other],
            elsewhere: false,
        }
    }

    fn parsed() -> OtherReceipt {
        OtherReceipt {
            id: 7,
            entity: "c_g224".into(),
            parsed: receipt_to_stored(&shared_receipt()),
            xml: None,
        }
    }

    fn linked(k: &(Known, Option<i64>)) -> Option<(i64, u8, i64)> {
        match k {
            (Known::Transfer(t), Some(id)) => Some((*id, t.transfer_index.get(), t.amount.cents())),
            _ => None,
        }
    }

    #[test]
    fn a_secondary_beneficiary_s_row_links_the_transfer_that_credits_it() {
        // Feltre's row for transfer 2: linked to Padova's receipt, with that transfer's amount.
        let k = known_of(&row(2, 300), facts(parsed()), FELTRE);
        assert_eq!(linked(&k), Some((7, 2, 300)));
        // The same from the receipt's XML when the parsed request was not kept.
        let from_xml = OtherReceipt {
            parsed: None,
            xml: Some(render_request(&shared_receipt())),
            ..parsed()
        };
        assert_eq!(
            linked(&known_of(&row(2, 300), facts(from_xml), FELTRE)),
            Some((7, 2, 300))
        );
    }

    #[test]
    fn another_entity_s_transfer_that_does_not_credit_the_entity_is_not_its_own() {
        // Transfer 1 credits Padova, not Feltre; transfer 3 does not exist; the Region is
        // credited by none.
        for (index, fc) in [(1, FELTRE), (3, FELTRE), (2, VENETO)] {
            let k = known_of(&row(index, 300), facts(parsed()), fc);
            assert_eq!(k, (Known::IuvNotIssued, None), "transfer {index} for {fc}");
        }
        // An IUV the entity issued too (IUVs are per entity): no receipt of its own.
        let mut f = facts(parsed());
        f.issued = true;
        assert_eq!(known_of(&row(1, 700), f, FELTRE), (Known::NoReceipt, None));
        // Unreadable: never linked.
        let junk = OtherReceipt {
            parsed: Some("{}".into()),
            ..parsed()
        };
        assert_eq!(
            known_of(&row(2, 300), facts(junk), FELTRE),
            (Known::IuvNotIssued, None)
        );
    }

    #[test]
    fn the_entity_s_own_receipt_comes_first() {
        let f = RowFacts {
            issued: true,
            receipt: Some(LinkReceipt {
                id: 3,
                amount_cents: 1000,
                parsed: receipt_to_stored(&shared_receipt()),
            }),
            others: Vec::new(),
            elsewhere: false,
        };
        assert_eq!(
            linked(&known_of(&row(1, 700), f, PADOVA)),
            Some((3, 1, 700))
        );
    }
}
