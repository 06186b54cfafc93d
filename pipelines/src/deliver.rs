//! A push receipts pipeline at work: claims due deliveries from the outbox, encodes each receipt,
//! sends it to the entity's system, and records the outcome (delivered, retry later, or dead).
//!
//! Claims are leased in the store, so a crashed hub's deliveries are taken over when the lease
//! ends; each pipeline has its own task and its own concurrency, so a slow or dead entity system
//! never delays another entity's receipts. Outcomes are recorded in batches (one commit for many
//! deliveries), which is what lets one pipeline keep up with thousands of receipts a second.

use crate::codecs::EncodeReceipt;
use crate::metrics::DeliveryStats;
use crate::plan::{EntityRuntime, PipelineKind, Plan, ReceiptEncoding, ReceiptRoute};
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

pub struct Deliverer {
    name: String,
    entity: Arc<EntityRuntime>,
    encode: EncodeReceipt,
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
    ReceiptContext {
        entity_ipa: &entity.ipa_code,
        entity_name: &entity.name,
        iud: doc.iud.as_deref(),
        debt_type: doc.debt_type.as_deref(),
        received_at: &doc.receipt.received_at,
        issue: doc.receipt.issue.as_deref(),
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
        let PipelineKind::Receipts {
            format,
            route: ReceiptRoute::Push(target),
            ..
        } = &p.kind
        else {
            return Err("not a push receipts pipeline".into());
        };
        let ReceiptEncoding::PerMessage(encode) = format.encoding else {
            return Err(format!("{:?} is written in files, not pushed", format.name));
        };
        let entity = plan
            .entities
            .get(&p.entity)
            .cloned()
            .ok_or_else(|| format!("unknown entity {}", p.entity))?;
        let sink = target.sink.build().map_err(|e| e.to_string())?;
        let (policy, timeout) = (*sink.retry_policy(), sink.timeout());
        Ok(Self {
            name: p.name.clone(),
            entity,
            encode,
            policy,
            lease: timeout + LEASE_MARGIN,
            sink,
            store,
            stats,
        })
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        info!(pipeline = %self.name, entity = %self.entity.ipa_code, "receipt deliveries started");
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
        info!(pipeline = %this.name, "receipt deliveries stopped");
    }

    /// Records outcomes as they come, many per commit.
    async fn record(self: Arc<Self>, mut outcomes: mpsc::UnboundedReceiver<(Delivery, Attempt)>) {
        let mut batch = Vec::new();
        while outcomes.recv_many(&mut batch, RECORD_BATCH).await > 0 {
            let mut attempts = Vec::with_capacity(batch.len());
            for (d, attempt) in batch.drain(..) {
                self.observe(&d, &attempt);
                attempts.push((d.id, attempt));
            }
            let store = self.store.clone();
            let n = attempts.len();
            let recorded =
                tokio::task::spawn_blocking(move || store.record_attempts(&attempts)).await;
            if !matches!(recorded, Ok(Ok(()))) {
                // The leases run out and the deliveries are tried again: at least once, never lost.
                warn!(pipeline = %self.name, deliveries = n, "cannot record delivery outcomes; they will be retried");
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
                info!(pipeline = %self.name, delivery = d.id, receipt_id = %d.idempotency_key, "receipt delivered");
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
        match self.encode(d).await {
            Ok((notice, body)) => {
                let headers = [
                    ("Idempotency-Key", d.idempotency_key.as_str()),
                    ("content-type", "application/json"),
                ];
                let message = Outgoing {
                    key: &notice,
                    body: &body,
                    headers: &headers,
                };
                let result = self.sink.send(message).await;
                self.judge(d, result)
            }
            // A receipt that cannot be encoded will not encode better later.
            Err(e) => Attempt::Dead { error: e },
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
    async fn encode(&self, d: &Delivery) -> Result<(String, Vec<u8>), String> {
        let store = self.store.clone();
        let receipt = d.receipt;
        let doc = tokio::task::spawn_blocking(move || store.receipt_document(receipt))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("receipt {receipt} is not in the store"))?;
        let ctx = context(&self.entity, &doc);
        let body = (self.encode)(&ctx, &doc.xml, &decoded(&doc)?)?;
        Ok((doc.receipt.notice_number.clone(), body))
    }
}
