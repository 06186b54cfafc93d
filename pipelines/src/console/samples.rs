//! The console's charts: the hub's counters (the store's running totals, as `/metrics` reads
//! them, and this process's answers to the node) sampled once a minute into a ring of a day's
//! samples, in memory. A restart starts the ring again; hubs sharing a store each keep their own.

use crate::node::NodeService;
use crate::ops::{self, Admin};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One sample a minute, a day of them.
const EVERY: Duration = Duration::from_secs(60);
const KEEP: usize = 24 * 60;

/// The counters at one instant.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Sample {
    /// Unix seconds.
    pub at: i64,
    /// Per entity: receipts stored, flagged, held; import rows accepted, rejected.
    pub entities: BTreeMap<String, EntityCounts>,
    /// Per pipeline: deliveries by status (pending, in_flight, delivered, dead).
    pub pipelines: BTreeMap<String, BTreeMap<String, i64>>,
    /// This process's answers to the node: OK, and faults.
    pub soap_ok: u64,
    pub soap_faults: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct EntityCounts {
    pub receipts: i64,
    pub flagged: i64,
    pub held: i64,
    pub accepted: i64,
    pub rejected: i64,
}

pub(crate) struct Samples {
    admin: Admin,
    node: Arc<NodeService>,
    ring: Mutex<VecDeque<Sample>>,
}

impl Samples {
    /// The ring, sampled now and then every minute by a task of its own (which ends when the
    /// console is dropped).
    pub fn start(admin: Admin, node: Arc<NodeService>) -> Arc<Samples> {
        let samples = Arc::new(Samples {
            admin,
            node,
            ring: Mutex::new(VecDeque::new()),
        });
        let weak = Arc::downgrade(&samples);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut tick = tokio::time::interval(EVERY);
                loop {
                    tick.tick().await;
                    let Some(s) = weak.upgrade() else { return };
                    let taken = tokio::task::spawn_blocking(move || {
                        if let Some(sample) = s.now() {
                            let mut ring = s.ring.lock().unwrap_or_else(|p| p.into_inner());
                            if ring.len() == KEEP {
                                ring.pop_front();
                            }
                            ring.push_back(sample);
                        }
                    })
                    .await;
                    if taken.is_err() {
                        return;
                    }
                }
            });
        }
        samples
    }

    /// The counters now (`None` when the store does not answer).
    pub fn now(&self) -> Option<Sample> {
        let m = ops::status::counters(&self.admin)
            .map_err(|e| tracing::warn!("console: counters unavailable: {e}"))
            .ok()?;
        let mut s = Sample {
            at: chrono::Utc::now().timestamp(),
            ..Sample::default()
        };
        for (e, stored, flagged) in &m.receipts {
            let c = s.entities.entry(e.clone()).or_default();
            c.receipts = *stored;
            c.flagged = *flagged;
        }
        for (e, held) in &m.held {
            s.entities.entry(e.clone()).or_default().held = *held;
        }
        for (e, accepted, rejected) in &m.import_rows {
            let c = s.entities.entry(e.clone()).or_default();
            c.accepted = *accepted;
            c.rejected = *rejected;
        }
        for (p, status, n) in &m.deliveries {
            s.pipelines
                .entry(p.clone())
                .or_default()
                .insert(status.clone(), *n);
        }
        for ((_, fault), n) in self.node.answers() {
            if fault.is_empty() {
                s.soap_ok += n;
            } else {
                s.soap_faults += n;
            }
        }
        Some(s)
    }

    /// The samples of the last `window`, oldest first.
    pub fn since(&self, window: Duration) -> Vec<Sample> {
        let from = chrono::Utc::now().timestamp() - window.as_secs() as i64;
        self.ring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| s.at >= from)
            .cloned()
            .collect()
    }
}
