//! A push receipts pipeline (or a reports pipeline) at work: claims due deliveries from the
//! outbox, encodes each receipt (or settlement flow), sends it to the entity's system, and
//! records the outcome (delivered, retry later, or dead).
//!
//! Claims are leased in the store, so a crashed hub's deliveries are taken over when the lease
//! ends; each pipeline has its own task and its own concurrency, so a slow or dead entity system
//! never delays another entity's receipts. Outcomes are recorded in batches (one commit for many
//! deliveries), which is what lets one pipeline keep up with thousands of receipts a second.

use crate::codecs::{EncodeReceipt, ReportCodec};
use crate::metrics::DeliveryStats;
use crate::plan::{EntityRuntime, PipelineKind, Plan, ReceiptEncoding, ReceiptRoute};
use crate::stored_report::RebuildError;
use chrono::{DateTime, SecondsFormat, Utc};
use snodo_adapters::pagopa::{self, Request};
use snodo_adapters::receipt_json::ReceiptContext;
use snodo_connectors::{DeliveryResult, MessageSink, Outgoing, RetryPolicy};
use snodo_store::{Attempt, Delivery, ReceiptDocument, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{info, warn};

/// Deliveries a pipeline has in flight at once.
const CONCURRENCY: usize = 32;
/// Under load, a claim waits (briefly) for this much room, so one claim leases many deliveries.
const CLAIM_BATCH: usize = CONCURRENCY / 4;
/// How long to wait for that room before claiming anyway.
const CLAIM_GATHER: Duration = Duration::from_millis(5);
/// How long a claim outlives the delivery's own timeout: time to encode, queue and record its
/// outcome. A hub that died lets go of its claims after the lease (timeout + this).
const LEASE_MARGIN: Duration = Duration::from_secs(20);
/// Pause when nothing is due.
const IDLE: Duration = Duration::from_millis(100);
/// Outcomes recorded per commit, at most.
const RECORD_BATCH: usize = 512;
/// On shutdown, how long deliveries in flight may take to finish (the rest are retried after
/// their lease, by this hub or another).
const DRAIN: Duration = Duration::from_secs(5);

/// What a pipeline's deliveries are of, and how each is written.
#[derive(Clone, Copy)]
enum Subject {
    Receipts(EncodeReceipt),
    Reports(ReportCodec),
}

/// A delivery's message: its key (a receipt's notice number; a flow's file name), body and type.
struct Encoded {
    key: String,
    body: Vec<u8>,
    content_type: &'static str,
}

pub struct Deliverer {
    name: String,
    entity: Arc<EntityRuntime>,
    subject: Subject,
    sink: Arc<dyn MessageSink>,
    policy: RetryPolicy,
    lease: Duration,
    store: Arc<dyn Store>,
    stats: Arc<DeliveryStats>,
}

pub(crate) fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// What every receipt format needs beside the XML.
pub(crate) fn context<'a>(
    entity: &'a EntityRuntime,
    doc: &'a ReceiptDocument,
) -> ReceiptContext<'a> {
    // Another entity's receipt (an issuer of ours), or one stored as a secondary's: the
    // position, if any, is the issuer's, and its IUD and debt type mean nothing to this entity.
    let secondary = doc.receipt.entity != entity.ipa_code || doc.receipt.issuer.is_some();
    ReceiptContext {
        entity_ipa: &entity.ipa_code,
        entity_name: &entity.name,
        iud: doc.iud.as_deref().filter(|_| !secondary),
        debt_type: doc.debt_type.as_deref().filter(|_| !secondary),
        received_at: &doc.receipt.received_at,
        issue: doc.receipt.issue.as_deref(),
        secondary: secondary.then_some(entity.fiscal_code.as_str()),
    }
}

/// The receipt's request as decoded when it arrived; parsed from its XML only for receipts
/// stored before the hub kept the decoded form.
pub(crate) fn decoded(doc: &ReceiptDocument) -> Result<Request, String> {
    match &doc.parsed {
        Some(stored) => pagopa::receipt_from_stored(stored.as_bytes())
            .map_err(|e| format!("receipt {}: stored form unreadable: {e}", doc.receipt.id)),
        None => pagopa::parse_request(doc.xml.as_bytes()).map_err(|e| e.to_string()),
    }
}

impl Deliverer {
    pub fn new(
        plan: Arc<Plan>,
        index: usize,
        store: Arc<dyn Store>,
        stats: Arc<DeliveryStats>,
    ) -> Result<Self, String> {
        let p = &plan.pipelines[index];
        let (subject, sink) = match &p.kind {
            PipelineKind::Receipts {
                format,
                route: ReceiptRoute::Push(target),
                ..
            } => {
                let ReceiptEncoding::PerMessage(encode) = format.encoding else {
                    return Err(format!("{:?} is written in files, not pushed", format.name));
                };
                (Subject::Receipts(encode), &target.sink)
            }
            PipelineKind::Reports { codec, sink, .. } => (Subject::Reports(*codec), sink),
            _ => return Err("not a push receipts pipeline nor a reports pipeline".into()),
        };
        let entity = plan.entity_of(p)?;
        let sink = sink.build().map_err(|e| e.to_string())?;
        let (policy, timeout) = (*sink.retry_policy(), sink.timeout());
        Ok(Self {
            name: p.name.clone(),
            entity,
            subject,
            policy,
            lease: timeout + LEASE_MARGIN,
            sink,
            store,
            stats,
        })
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        info!(pipeline = %self.name, entity = %self.entity.ipa_code, "deliveries started");
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        let (done, outcomes) = mpsc::unbounded_channel::<(Delivery, Attempt)>();
        let recorder = tokio::spawn(this.clone().record(outcomes));
        while !*shutdown.borrow() {
            // Wait for room, then claim as many as there is room for.
            let first = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => continue,
            };
            let mut held = vec![first];
            let gather_until = tokio::time::Instant::now() + CLAIM_GATHER;
            loop {
                match permits.clone().try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) if held.len() >= CLAIM_BATCH => break,
                    Err(_) if tokio::time::Instant::now() >= gather_until => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
            let claimed = this.claim(held.len()).await;
            if claimed.is_empty() {
                drop(held);
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            // One permit per claimed delivery; the rest go back at once.
            held.truncate(claimed.len());
            for (d, permit) in claimed.into_iter().zip(held) {
                let me = this.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let attempt = me.attempt(&d).await;
                    let _ = done.send((d, attempt));
                    drop(permit);
                });
            }
        }
        // Let deliveries in flight finish (bounded), then record what they came to.
        let all = u32::try_from(CONCURRENCY).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(DRAIN, permits.acquire_many(all)).await;
        drop(done);
        let _ = recorder.await;
        info!(pipeline = %this.name, "deliveries stopped");
    }

    /// Records outcomes as they come, many per commit.
    async fn record(self: Arc<Self>, mut outcomes: mpsc::UnboundedReceiver<(Delivery, Attempt)>) {
        let mut batch = Vec::new();
        while outcomes.recv_many(&mut batch, RECORD_BATCH).await > 0 {
            let mut attempts = Vec::with_capacity(batch.len());
            for (d, attempt) in batch.drain(..) {
                self.observe(&d, &attempt);
                attempts.push((d.claim(), attempt));
            }
            let store = self.store.clone();
            let n = attempts.len();
            let recorded =
                tokio::task::spawn_blocking(move || store.record_attempts(&attempts)).await;
            match recorded {
                Ok(Ok(stale)) => {
                    for id in stale {
                        // Another worker claimed it after this one's lease ran out: its outcome
                        // stands, this one's would overwrite it.
                        warn!(pipeline = %self.name, delivery = id, "outcome discarded: the lease ran out and the delivery was claimed again or recorded");
                    }
                }
                // The leases run out and the deliveries are tried again: at least once, never lost.
                _ => {
                    warn!(pipeline = %self.name, deliveries = n, "cannot record delivery outcomes; they will be retried")
                }
            }
        }
    }

    fn observe(&self, d: &Delivery, attempt: &Attempt) {
        match attempt {
            Attempt::Delivered => {
                self.stats.attempt(&self.name, "delivered");
                if let Ok(created) = DateTime::parse_from_rfc3339(&d.created_at) {
                    let latency = (Utc::now() - created.with_timezone(&Utc))
                        .to_std()
                        .unwrap_or_default();
                    self.stats.delivered(&self.name, latency);
                }
                info!(pipeline = %self.name, delivery = d.id, key = %d.idempotency_key, "delivered");
            }
            Attempt::Retry { at, error } => {
                self.stats.attempt(&self.name, "retry");
                warn!(pipeline = %self.name, delivery = d.id, attempts = d.attempts + 1, "delivery failed, retrying at {at}: {error}");
            }
            Attempt::Dead { error } => {
                self.stats.attempt(&self.name, "dead");
                warn!(pipeline = %self.name, delivery = d.id, attempts = d.attempts + 1, "delivery is a dead letter: {error}");
            }
        }
    }

    async fn claim(&self, room: usize) -> Vec<Delivery> {
        let store = self.store.clone();
        let name = self.name.clone();
        let now = Utc::now();
        let lease = now + chrono::Duration::from_std(self.lease).unwrap_or_default();
        let limit = u32::try_from(room).unwrap_or(u32::MAX);
        let claimed = tokio::task::spawn_blocking(move || {
            store.claim_deliveries(&name, &stamp(now), &stamp(lease), limit)
        })
        .await;
        match claimed {
            Ok(Ok(list)) => list,
            Ok(Err(e)) => {
                warn!(pipeline = %self.name, "cannot claim deliveries: {e}");
                Vec::new()
            }
            Err(e) => {
                warn!(pipeline = %self.name, "claim task failed: {e}");
                Vec::new()
            }
        }
    }

    async fn attempt(&self, d: &Delivery) -> Attempt {
        let encoded = match self.subject {
            Subject::Receipts(encode) => self.encode(d, encode).await,
            Subject::Reports(codec) => self.encode_report(d, codec).await,
        };
        match encoded {
            Ok(m) => {
                let headers = [
                    ("Idempotency-Key", d.idempotency_key.as_str()),
                    ("content-type", m.content_type),
                ];
                let message = Outgoing {
                    key: &m.key,
                    body: &m.body,
                    headers: &headers,
                };
                let result = self.sink.send(message).await;
                self.judge(d, result)
            }
            // A receipt (or flow) that cannot be encoded will not encode better later.
            Err(Unsent::Unencodable(e)) => Attempt::Dead { error: e },
            // The store will answer again: the receipt is fine, try later.
            Err(Unsent::Store(e)) => {
                let what = match self.subject {
                    Subject::Receipts(_) => "the receipt",
                    Subject::Reports(_) => "the settlement flow",
                };
                self.retry_later(d, format!("reading {what}: {e}"))
            }
        }
    }

    /// A retry after the policy's wait, however many attempts it took: the fault is the hub's.
    fn retry_later(&self, d: &Delivery, error: String) -> Attempt {
        let attempts = (d.attempts + 1).max(1) as u32;
        let wait = self.policy.wait(attempts, None);
        let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        Attempt::Retry {
            at: stamp(at),
            error,
        }
    }

    fn judge(&self, d: &Delivery, result: DeliveryResult) -> Attempt {
        let attempts = (d.attempts + 1).max(1) as u32;
        match result {
            DeliveryResult::Delivered { .. } => Attempt::Delivered,
            DeliveryResult::Permanent { reason } => Attempt::Dead { error: reason },
            DeliveryResult::Retry { reason, after } => {
                let age = DateTime::parse_from_rfc3339(&d.created_at)
                    .map(|c| {
                        (Utc::now() - c.with_timezone(&Utc))
                            .to_std()
                            .unwrap_or_default()
                    })
                    .unwrap_or_default();
                if self.policy.gives_up(attempts, age) {
                    Attempt::Dead {
                        error: format!("{reason} (gave up after {attempts} attempts)"),
                    }
                } else {
                    let wait = self.policy.wait(attempts, after);
                    let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                    Attempt::Retry {
                        at: stamp(at),
                        error: reason,
                    }
                }
            }
        }
    }

    /// The receipt's notice number (a topic's key) and its encoded body.
    async fn encode(&self, d: &Delivery, encode: EncodeReceipt) -> Result<Encoded, Unsent> {
        let store = self.store.clone();
        let receipt = d
            .receipt
            .ok_or_else(|| Unsent::Unencodable(format!("delivery {} is not of a receipt", d.id)))?;
        let doc = tokio::task::spawn_blocking(move || store.receipt_document(receipt))
            .await
            .map_err(|e| Unsent::Store(e.to_string()))?
            .map_err(Unsent::from)?
            .ok_or_else(|| Unsent::Unencodable(format!("receipt {receipt} is not in the store")))?;
        let ctx = context(&self.entity, &doc);
        let request = decoded(&doc).map_err(Unsent::Unencodable)?;
        let body = encode(&ctx, &doc.xml, &request).map_err(Unsent::Unencodable)?;
        Ok(Encoded {
            key: doc.receipt.notice_number.clone(),
            body,
            content_type: "application/json",
        })
    }

    /// The stored flow as the pipeline's format, keyed by the file name a file sink gives it:
    /// `<iuf>.<pspId>.r<revision>.<extension>`.
    async fn encode_report(&self, d: &Delivery, codec: ReportCodec) -> Result<Encoded, Unsent> {
        let id = d
            .report
            .ok_or_else(|| Unsent::Unencodable(format!("delivery {} is not of a report", d.id)))?;
        let store = self.store.clone();
        let built = tokio::task::spawn_blocking(move || {
            let flow = store.report(id)?.ok_or_else(|| RebuildError::Corrupt {
                id,
                why: "not in the store".into(),
            })?;
            crate::stored_report::rebuild(&*store, &flow).map(|r| (flow, r))
        })
        .await
        .map_err(|e| Unsent::Store(e.to_string()))?;
        let (flow, report) = match built {
            Ok(b) => b,
            Err(RebuildError::Store(e)) => return Err(Unsent::from(e)),
            Err(e) => return Err(Unsent::Unencodable(e.to_string())),
        };
        // A legacy flow's PSP may be unknown: its name then goes without it.
        let psp = if flow.psp_id.is_empty() {
            String::new()
        } else {
            format!(".{}", flow.psp_id)
        };
        Ok(Encoded {
            key: format!("{}{psp}.r{}.{}", flow.iuf, flow.revision, codec.extension),
            body: (codec.encode)(&report),
            content_type: codec.content_type,
        })
    }
}

/// Why a receipt was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unsent {
    /// The record itself is unusable: a dead letter.
    Unencodable(String),
    /// The store did not answer (or not in time): retried.
    Store(String),
}

impl From<snodo_store::StoreError> for Unsent {
    fn from(e: snodo_store::StoreError) -> Self {
        match e {
            // Stored data that does not read as a receipt will not read better later.
            snodo_store::StoreError::Corrupt(_) => Self::Unencodable(e.to_string()),
            _ => Self::Store(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snodo_core::NoticeNumber;
    use snodo_store::prelude::*;
    use snodo_store::{DeliverTo, NewReceipt, SqliteStore};

    fn plan(dir: &std::path::Path) -> Arc<Plan> {
        let path = dir.join("c.toml");
        let demo = include_str!("../../config/demo.toml").replace(
            "${SNODO_TAXONOMY_FILE:-adapters/specs/mypay/tassonomia.csv}",
            "/nonexistent/tassonomia.csv",
        );
        // Nobody listens on port 9: a receipt that gets as far as sending is retried.
        let push = r#"
[[pipelines]]
name = "padova-erp"
entity = "c_g224"
from = "receipts"
encode = "json"
to = { connector = "http", url = "http://127.0.0.1:9/r", retry = { max_attempts = 1 } }
"#;
        std::fs::write(&path, format!("{demo}\n{push}")).unwrap();
        Arc::new(crate::plan::load(Some(&path)).unwrap_or_else(|p| panic!("{p:?}")))
    }

    /// A schema-valid paSendRTV2 of Padova.
    fn receipt_xml(id: &str) -> String {
        use snodo_adapters::pagopa::*;
        let padova = "00644060287";
        let receipt = ReceiptV2 {
            receipt_id: id.into(),
            notice_number: "301000000000012373".into(),
            fiscal_code: padova.into(),
            outcome: Outcome::Ok,
            creditor_reference_id: "01000000000012373".into(),
            payment_amount: "1.00".into(),
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
            transfer_list: vec![ReceiptTransferV2 {
                id_transfer: 1,
                transfer_amount: "1.00".into(),
                fiscal_code_pa: padova.into(),
                company_name: None,
                destination: ReceiptDestination::Iban("IT60X0542811101000000123456".into()),
                remittance_information: "/RFB/x/TXT/TARI".into(),
                transfer_category: "9/0101100IM/".into(),
                metadata: Vec::new(),
            }],
            id_psp: "BCITITMM".into(),
            psp_company_name: "Intesa Sanpaolo".into(),
            id_channel: "BCITITMM_01".into(),
            channel_description: "app".into(),
            ..Default::default()
        };
        render_request(&Request::SendRtV2(SendRtV2Request {
            id_pa: padova.into(),
            id_broker_pa: "80007580279".into(),
            id_station: "80007580279_01".into(),
            receipt,
        }))
    }

    fn store_receipt(store: &SqliteStore, id: &str, xml: &str) {
        let notice = NoticeNumber::parse("301000000000012373").unwrap();
        store
            .store_receipt(&NewReceipt {
                entity: "c_g224",
                notice_number: &notice,
                receipt_id: id,
                amount_cents: 100,
                psp_id: "BCITITMM",
                psp_name: "Intesa Sanpaolo",
                payment_date: None,
                operation: "paSendRTV2",
                xml,
                deliver_to: &[DeliverTo::all("padova-erp", "c_g224")],
                correlation: None,
            })
            .unwrap();
    }

    #[tokio::test]
    async fn a_store_error_is_retried_and_an_unreadable_receipt_is_dead() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let db = dir.path().join("s.db");
        let sqlite = Arc::new(SqliteStore::open(&db).unwrap());
        store_receipt(&sqlite, "R-OK", &receipt_xml("R-OK"));
        store_receipt(&sqlite, "R-BAD", "<not a receipt");
        let store: Arc<dyn Store> = sqlite.clone();
        let index = plan
            .pipelines
            .iter()
            .position(|p| p.name == "padova-erp")
            .unwrap();
        let stats = Arc::new(DeliveryStats::default());
        let deliverer = Deliverer::new(plan.clone(), index, store.clone(), stats).unwrap();
        let claimed = deliverer.claim(10).await;
        assert_eq!(claimed.len(), 2);
        let (good, bad) = (&claimed[0], &claimed[1]);
        assert_eq!(good.idempotency_key, "R-OK");

        // A receipt that cannot be read is a dead letter at once.
        let Attempt::Dead { error } = deliverer.attempt(bad).await else {
            panic!("an unreadable receipt is a dead letter")
        };
        assert!(error.contains("not well-formed XML"), "{error}");

        // The store failing while the receipt is read: retried later, however many attempts
        // the policy allows (one here), never a dead letter.
        let side = rusqlite::Connection::open(&db).unwrap();
        side.execute_batch("ALTER TABLE receipts RENAME TO receipts_away")
            .unwrap();
        let Attempt::Retry { at, error } = deliverer.attempt(good).await else {
            panic!("a store error is retried")
        };
        assert!(error.starts_with("reading the receipt: "), "{error}");
        assert!(at > stamp(Utc::now()), "{at}");

        // Back: the receipt is read and encoded, and only the send fails (no receiver).
        side.execute_batch("ALTER TABLE receipts_away RENAME TO receipts")
            .unwrap();
        match deliverer.attempt(good).await {
            Attempt::Dead { error } | Attempt::Retry { error, .. } => {
                assert!(!error.contains("reading the receipt"), "{error}")
            }
            Attempt::Delivered => panic!("nobody listens on port 9"),
        }

        // Outcomes are recorded under the claim's lease: a stale claim changes nothing.
        let mut stale = good.clone();
        stale.lease_until = Some("1970-01-01T00:00:00.000Z".into());
        let outcome = Attempt::Dead {
            error: "stale".into(),
        };
        assert!(!store.record_attempt(&stale, &outcome).unwrap());
        assert!(store.record_attempt(good, &Attempt::Delivered).unwrap());
        let recorded = store.delivery(good.id).unwrap().unwrap();
        assert_eq!(recorded.status, snodo_store::DeliveryStatus::Delivered);
    }
}
