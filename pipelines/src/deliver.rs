//! A receipts pipeline at work: claims due deliveries from the outbox, encodes each receipt,
//! sends it to the entity's system, and records the outcome (delivered, retry later, or dead).
//!
//! Claims are leased in the store, so a crashed hub's deliveries are taken over when the lease
//! ends; each pipeline has its own task and its own concurrency, so a slow or dead entity system
//! never delays another entity's receipts.

use crate::plan::{EntityRuntime, PipelineKind, Plan};
use chrono::{DateTime, SecondsFormat, Utc};
use snodo_adapters::receipt_json::{self, ReceiptContext};
use snodo_connectors::http::{DeliveryResult, HttpSink, RetryPolicy};
use snodo_store::{Attempt, Delivery, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// Deliveries a pipeline sends at once (and claims per round).
const CONCURRENCY: u32 = 8;
/// How long a claim is held; a worker that died lets go after this.
const LEASE: Duration = Duration::from_secs(120);
/// Pause when nothing is due.
const IDLE: Duration = Duration::from_millis(200);

pub struct Deliverer {
    name: String,
    entity: Arc<EntityRuntime>,
    encoder: String,
    sink: Arc<HttpSink>,
    policy: RetryPolicy,
    store: Arc<dyn Store>,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Deliverer {
    pub fn new(plan: Arc<Plan>, index: usize, store: Arc<dyn Store>) -> Result<Self, String> {
        let p = &plan.pipelines[index];
        let PipelineKind::Receipts { encoder, sink } = &p.kind else {
            return Err("not a receipts pipeline".into());
        };
        let entity = plan
            .entities
            .get(&p.entity)
            .cloned()
            .ok_or_else(|| format!("unknown entity {}", p.entity))?;
        let sink = sink.build().map_err(|e| e.to_string())?;
        Ok(Self {
            name: p.name.clone(),
            entity,
            encoder: encoder.clone(),
            policy: *sink.retry_policy(),
            sink: Arc::new(sink),
            store,
        })
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        info!(pipeline = %self.name, entity = %self.entity.ipa_code, "receipt deliveries started");
        let this = Arc::new(self);
        while !*shutdown.borrow() {
            let claimed = this.claim().await;
            if claimed.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let mut running = tokio::task::JoinSet::new();
            for d in claimed {
                let me = this.clone();
                running.spawn(async move { me.deliver(d).await });
            }
            while running.join_next().await.is_some() {}
        }
        info!(pipeline = %this.name, "receipt deliveries stopped");
    }

    async fn claim(&self) -> Vec<Delivery> {
        let store = self.store.clone();
        let name = self.name.clone();
        let now = Utc::now();
        let lease = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let claimed = tokio::task::spawn_blocking(move || {
            store.claim_deliveries(&name, &stamp(now), &stamp(lease), CONCURRENCY)
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

    async fn deliver(&self, d: Delivery) {
        let attempt = match self.encode(&d).await {
            Ok(body) => {
                let result = self
                    .sink
                    .deliver(body, "application/json", &d.idempotency_key)
                    .await;
                self.judge(&d, result)
            }
            // A receipt that cannot be encoded will not encode better later.
            Err(e) => Attempt::Dead { error: e },
        };
        match &attempt {
            Attempt::Delivered => {
                info!(pipeline = %self.name, delivery = d.id, receipt_id = %d.idempotency_key, "receipt delivered")
            }
            Attempt::Retry { at, error } => {
                warn!(pipeline = %self.name, delivery = d.id, attempts = d.attempts + 1, "delivery failed, retrying at {at}: {error}")
            }
            Attempt::Dead { error } => {
                warn!(pipeline = %self.name, delivery = d.id, attempts = d.attempts + 1, "delivery is a dead letter: {error}")
            }
        }
        let store = self.store.clone();
        let id = d.id;
        let recorded =
            tokio::task::spawn_blocking(move || store.record_attempt(id, &attempt)).await;
        if !matches!(recorded, Ok(Ok(()))) {
            // The lease runs out and the delivery is tried again: at least once, never lost.
            warn!(pipeline = %self.name, delivery = id, "cannot record the attempt; it will be retried");
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

    async fn encode(&self, d: &Delivery) -> Result<Vec<u8>, String> {
        let store = self.store.clone();
        let receipt = d.receipt;
        let doc = tokio::task::spawn_blocking(move || store.receipt_document(receipt))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("receipt {receipt} is not in the store"))?;
        match self.encoder.as_str() {
            receipt_json::JSON => receipt_json::encode(
                &ReceiptContext {
                    entity_ipa: &self.entity.ipa_code,
                    entity_name: &self.entity.name,
                    iud: doc.iud.as_deref(),
                    debt_type: doc.debt_type.as_deref(),
                    received_at: &doc.receipt.received_at,
                    issue: doc.receipt.issue.as_deref(),
                },
                &doc.xml,
            )
            .map_err(|e| e.to_string()),
            other => Err(format!("unknown receipt format {other}")),
        }
    }
}
