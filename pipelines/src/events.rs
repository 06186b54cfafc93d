//! The ops event stream. The store writes every domain event (flow received, position created,
//! payment activated, receipt stored, delivery dead, SOAP fault...) in the transaction of the
//! change it describes, so the stream never tells of a change that did not happen nor misses one
//! that did. This task publishes them in order to `hub.events_topic` when `[kafka]` is set (one
//! hub at a time, under a lease, from a cursor kept in the store), and keeps the store's copy
//! bounded to `hub.events_kept`. `snodo tail` follows the topic, or the store without Kafka.

use crate::config::KafkaHubConfig;
use crate::plan::Plan;
use chrono::{DateTime, Utc};
use snodo_connectors::kafka::{self, KafkaConnection, KafkaProducer, KafkaReader, ReadFrom};
use snodo_store::{Event, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// The publisher's lease and cursor in the store.
const PUBLISHER_JOB: &str = "events-publisher";
/// The pruner's lease (without Kafka): one hub prunes per tick.
const PRUNER_JOB: &str = "events-pruner";
/// Events published per produce call.
const BATCH: u32 = 5_000;
/// Pause when the stream is caught up.
const IDLE: Duration = Duration::from_millis(200);
/// How often the store's copy is pruned without Kafka.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The publisher's lease: another hub takes over this long after the publisher died.
const LEASE: Duration = Duration::from_secs(15);
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// A short id that ties a request's log lines and events together: unique per process run.
pub fn correlation_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        (nanos ^ u64::from(std::process::id()).rotate_left(32)) & 0xffff_ffff
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{seed:08x}{n:08x}")
}

/// The connection `[kafka]` describes.
pub fn connection(k: &KafkaHubConfig) -> KafkaConnection {
    let mut conn = KafkaConnection::new(k.brokers.clone());
    conn.options = k.options.clone();
    conn
}

/// An event as published and as `snodo tail` prints it.
pub fn to_json(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "id": e.id,
        "part": e.part,
        "kind": e.kind,
        "entity": e.entity,
        "subject": e.subject,
        "correlation": e.correlation,
        "at": e.at,
        "payload": e.payload,
    })
}

pub struct EventKeeper {
    store: Arc<dyn Store>,
    instance: String,
    kept: u64,
    publish: Option<(KafkaProducer, String)>,
    /// Until when this hub holds the publisher's lease, as far as it knows (it renews early).
    held_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// How old an event must be to be published. On PostgreSQL ids are taken at insert, not at
    /// commit, so a late commit can hold a smaller id than one already visible: waiting until
    /// every transaction that could hold one has ended keeps the cursor from skipping it.
    settle: chrono::Duration,
}

/// Longer than any transaction that writes events.
const PG_SETTLE: chrono::Duration = chrono::Duration::seconds(2);

impl EventKeeper {
    /// Creates the event topic when missing: a broker that refuses stops the start.
    pub fn new(plan: &Plan, store: Arc<dyn Store>, instance: String) -> Result<Self, String> {
        let hub = &plan.config.hub;
        let publish = match &plan.config.kafka {
            None => None,
            Some(k) => {
                let conn = connection(k);
                kafka::ensure_topics(
                    &conn,
                    &[(hub.events_topic.clone(), k.events_partitions)],
                    Duration::from_secs(10),
                )
                .map_err(|e| e.to_string())?;
                let producer = KafkaProducer::new(&conn).map_err(|e| e.to_string())?;
                Some((producer, hub.events_topic.clone()))
            }
        };
        let settle = if hub.store.starts_with("postgres") {
            PG_SETTLE
        } else {
            chrono::Duration::zero()
        };
        Ok(Self {
            store,
            instance,
            kept: hub.events_kept.max(1),
            publish,
            held_until: Default::default(),
            settle,
        })
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        if let Some((_, topic)) = &this.publish {
            info!(topic = %topic, "publishing the event stream");
        }
        let mut last_prune = tokio::time::Instant::now();
        while !*shutdown.borrow() {
            let work = this.clone();
            let prune = last_prune.elapsed() >= PRUNE_EVERY;
            if prune {
                last_prune = tokio::time::Instant::now();
            }
            let busy = match tokio::task::spawn_blocking(move || work.step(prune)).await {
                Ok(Ok(busy)) => busy,
                Ok(Err(e)) => {
                    warn!("event stream: {e}");
                    false
                }
                Err(e) => {
                    warn!("event stream task failed: {e}");
                    false
                }
            };
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    /// Publishes one batch (or prunes); true when there may be more to do right away.
    fn step(&self, prune: bool) -> Result<bool, String> {
        let now = Utc::now();
        let stamp = crate::deliver::stamp;
        let until = stamp(now + chrono::Duration::from_std(LEASE).unwrap_or_default());
        let Some((producer, topic)) = &self.publish else {
            if prune {
                let tick = stamp(now).get(..16).unwrap_or_default().to_string();
                let e = |e: snodo_store::StoreError| e.to_string();
                if self
                    .store
                    .take_job(PRUNER_JOB, &self.instance, &stamp(now), &until, Some(&tick))
                    .map_err(e)?
                {
                    let gone = self.store.prune_events(self.kept).map_err(e)?;
                    if gone > 0 {
                        info!(pruned = gone, kept = self.kept, "old events pruned");
                    }
                }
            }
            return Ok(false);
        };
        let e = |e: snodo_store::StoreError| e.to_string();
        // Renew the lease only when half of it is gone: a store write per step would cost the
        // writer (and an fsync on SQLite) five times a second, idle or not.
        let fresh = self
            .held_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.saturating_duration_since(std::time::Instant::now()) > LEASE / 2);
        if !fresh {
            let taken = self
                .store
                .take_job(PUBLISHER_JOB, &self.instance, &stamp(now), &until, None)
                .map_err(e)?;
            *self.held_until.lock().unwrap_or_else(|p| p.into_inner()) =
                taken.then(|| std::time::Instant::now() + LEASE);
            if !taken {
                return Ok(false);
            }
        }
        let cursor = self.store.job_cursor(PUBLISHER_JOB).map_err(e)?;
        let mut events = self.store.events_after(cursor, BATCH).map_err(e)?;
        let full = events.len() as u32 >= BATCH;
        if !self.settle.is_zero() {
            let horizon = stamp(now - self.settle);
            if let Some(young) = events.iter().position(|ev| ev.at > horizon) {
                events.truncate(young);
            }
        }
        let Some(last) = events.last().map(|ev| ev.id) else {
            if prune {
                // Caught up: everything older than the newest `kept` is on the topic.
                self.store.prune_events(self.kept).map_err(e)?;
            }
            return Ok(false);
        };
        let messages: Vec<(String, Vec<u8>)> = events
            .iter()
            .map(|ev| (ev.entity.clone(), to_json(ev).to_string().into_bytes()))
            .collect();
        producer
            .send_all(topic, &messages, PRODUCE_TIMEOUT)
            .map_err(|err| format!("cannot publish events to {topic}: {err}"))?;
        if !self
            .store
            .set_job_cursor(PUBLISHER_JOB, &self.instance, last)
            .map_err(e)?
        {
            warn!("another hub took over the event stream; it republishes from its cursor");
            *self.held_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        } else if prune && !full {
            // Nearly caught up: what pruning removes (all but the newest `kept`) is published.
            self.store.prune_events(self.kept).map_err(e)?;
        }
        Ok(full && events.len() as u32 >= BATCH)
    }
}

/// What `snodo tail` shows.
#[derive(Debug, Clone, Default)]
pub struct TailFilter {
    pub entity: Option<String>,
    pub kind: Option<String>,
}

impl TailFilter {
    pub(crate) fn passes(&self, entity: &str, kind: &str) -> bool {
        self.entity.as_deref().is_none_or(|x| x == entity)
            && self
                .kind
                .as_deref()
                .is_none_or(|k| kind == k || kind.starts_with(&format!("{k}.")))
    }
}

/// One readable line per event: time (Rome), entity, kind, subject, correlation, then the
/// payload's plain values as key=value.
pub fn line(v: &serde_json::Value) -> String {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-");
    let at = DateTime::parse_from_rfc3339(s("at"))
        .map(|t| {
            t.with_timezone(&chrono_tz::Europe::Rome)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_else(|_| s("at").to_string());
    let mut out = format!(
        "{at} {:<10} {:<18} {}",
        s("entity"),
        s("kind"),
        s("subject")
    );
    if let Some(c) = v.get("correlation").and_then(|c| c.as_str()) {
        out.push_str(&format!(" corr={c}"));
    }
    if let Some(p) = v.get("payload").and_then(|p| p.as_object()) {
        for (k, x) in p {
            match x {
                serde_json::Value::Null => {}
                serde_json::Value::String(t) => out.push_str(&format!(" {k}={t}")),
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                    out.push_str(&format!(" {k}={x}"))
                }
                other => out.push_str(&format!(" {k}={other}")),
            }
        }
    }
    out
}

/// Follows the event stream from now, printing each event that passes `filter` until `count`
/// were printed (or forever). From the topic when `[kafka]` is set, else from the store.
pub fn tail(
    plan: &Plan,
    store: &dyn Store,
    filter: &TailFilter,
    count: Option<u64>,
    out: &mut dyn std::io::Write,
) -> Result<(), String> {
    let mut printed = 0u64;
    let mut emit = |v: &serde_json::Value, out: &mut dyn std::io::Write| -> Result<bool, String> {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
        if filter.passes(s("entity"), s("kind")) {
            writeln!(out, "{}", line(v)).map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
            printed += 1;
        }
        Ok(count.is_some_and(|c| printed >= c))
    };
    match &plan.config.kafka {
        Some(k) => {
            let mut reader =
                KafkaReader::open(&connection(k), &plan.config.hub.events_topic, ReadFrom::End)
                    .map_err(|e| e.to_string())?;
            loop {
                let Some(m) = reader
                    .next(Duration::from_millis(500))
                    .map_err(|e| e.to_string())?
                else {
                    continue;
                };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                    continue;
                };
                if emit(&v, out)? {
                    return Ok(());
                }
            }
        }
        None => {
            let mut cursor = store.last_event_id().map_err(|e| e.to_string())?;
            loop {
                let events = store
                    .events_after(cursor, 1_000)
                    .map_err(|e| e.to_string())?;
                if events.is_empty() {
                    std::thread::sleep(IDLE);
                    continue;
                }
                for ev in &events {
                    cursor = ev.id;
                    if emit(&to_json(ev), out)? {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_differ_and_are_short() {
        let a = correlation_id();
        let b = correlation_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn a_line_shows_time_in_rome_and_plain_payload_values() {
        let v = serde_json::json!({
            "kind": "receipt.stored", "entity": "c_g224", "subject": "301000000000000144",
            "correlation": "abc", "at": "2026-07-01T10:00:00.000Z",
            "payload": {"receipt_id": "R1", "amount_cents": 12050, "issue": null}
        });
        let l = line(&v);
        assert!(l.starts_with("2026-07-01 12:00:00.000 c_g224"), "{l}");
        assert!(l.contains("receipt.stored"), "{l}");
        assert!(l.contains("corr=abc"), "{l}");
        assert!(
            l.contains("amount_cents=12050") && l.contains("receipt_id=R1"),
            "{l}"
        );
        assert!(!l.contains("issue"), "{l}");
    }

    #[test]
    fn the_filter_matches_entity_and_kind_or_its_family() {
        let f = TailFilter {
            entity: Some("c_g224".into()),
            kind: Some("position".into()),
        };
        assert!(f.passes("c_g224", "position.created"));
        assert!(!f.passes("c_d530", "position.created"));
        assert!(!f.passes("c_g224", "receipt.stored"));
        assert!(TailFilter::default().passes("x", "y"));
    }
}
