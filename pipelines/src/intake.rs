//! Positions that arrive one call at a time (the REST API, an entity system answering a
//! verification) go into the registry through a standing flow per entity and origin, like a
//! Kafka partition: the same `apply_chunk` as an import, so the same history, IUV generation and
//! events, and the flow's counters say how many came that way.
//!
//! Calls for one flow are serialised in this process, and committed together: whoever takes the
//! flow applies every call queued behind the previous commit in one transaction (group commit),
//! so concurrent single-position calls share an fsync. Two hubs sharing a store are kept apart by
//! the flow's checkpoint (`expect_rows_done`): the loser reloads and tries again.

use crate::plan::EntityRuntime;
use snodo_store::{
    Checkpoint, ChunkCommit, ChunkRow, EntityKey, Flow, NewFlow, RowOutcome, Store, StoreError,
};
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};

/// Tries before giving up when other hubs keep moving the flow.
const TRIES: usize = 5;

pub struct StandingFlows {
    store: Arc<dyn Store>,
    /// Each flow by IUF: its last known state (whose lock serialises the writers) and the calls
    /// waiting to be applied.
    flows: Mutex<HashMap<String, Arc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    flow: Mutex<Option<Flow>>,
    queue: Mutex<Vec<Waiting>>,
}

/// A call's rows and where its outcomes go.
struct Waiting {
    rows: Vec<ChunkRow>,
    reply: mpsc::Sender<Result<Vec<RowOutcome>, StoreError>>,
}

impl StandingFlows {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            flows: Mutex::new(HashMap::new()),
        }
    }

    /// Applies `rows` to the entity's `<origin>:<ipa>` flow in one transaction (perhaps shared
    /// with other calls); one outcome per row, in order. Blocking.
    pub fn apply(
        &self,
        entity: &EntityRuntime,
        origin: &str,
        rows: &[ChunkRow],
    ) -> Result<Vec<RowOutcome>, StoreError> {
        let iuf = format!("{origin}:{}", entity.ipa_code);
        let slot = self
            .flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(iuf.clone())
            .or_default()
            .clone();
        let (reply, mine) = mpsc::channel();
        slot.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Waiting {
                rows: rows.to_vec(),
                reply,
            });
        loop {
            let mut cached = slot.flow.lock().unwrap_or_else(|p| p.into_inner());
            // The previous holder may have applied this call with its own.
            if let Ok(done) = mine.try_recv() {
                return done;
            }
            let batch = std::mem::take(&mut *slot.queue.lock().unwrap_or_else(|p| p.into_inner()));
            let all: Vec<ChunkRow> = batch.iter().flat_map(|w| w.rows.iter().cloned()).collect();
            let result = self.apply_locked(&mut cached, entity, origin, &iuf, &all);
            // Answered before the flow is let go: whoever takes it next finds its answer here
            // or its call still queued.
            match result {
                Ok(outcomes) => {
                    let mut rest = outcomes.into_iter();
                    for w in batch {
                        let part: Vec<RowOutcome> = rest.by_ref().take(w.rows.len()).collect();
                        let _ = w.reply.send(Ok(part));
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    for w in batch {
                        let _ = w.reply.send(Err(StoreError::Callback(why.clone())));
                    }
                }
            }
            drop(cached);
            if let Ok(done) = mine.try_recv() {
                return done;
            }
        }
    }

    fn apply_locked(
        &self,
        cached: &mut Option<Flow>,
        entity: &EntityRuntime,
        origin: &str,
        iuf: &str,
        rows: &[ChunkRow],
    ) -> Result<Vec<RowOutcome>, StoreError> {
        let key = EntityKey {
            ipa_code: &entity.ipa_code,
            segregation_code: entity.segregation_code,
            payment_in_progress: entity.payment_in_progress,
        };
        for _ in 0..TRIES {
            let flow = match cached.take() {
                Some(f) => f,
                None => self.store.stream_flow(&NewFlow {
                    entity: &entity.ipa_code,
                    iuf,
                    file_name: iuf,
                    version: origin,
                    content_sha256: "",
                })?,
            };
            let before = flow.progress;
            let mut got = Vec::new();
            let mut next = before;
            let mut after = |outcomes: &[RowOutcome]| -> Result<ChunkCommit, String> {
                let accepted = outcomes
                    .iter()
                    .filter(|o| matches!(o, RowOutcome::Accepted { .. }))
                    .count() as u64;
                next = Checkpoint {
                    rows_done: before.rows_done + outcomes.len() as u64,
                    accepted: before.accepted + accepted,
                    rejected: before.rejected + outcomes.len() as u64 - accepted,
                    ..before
                };
                got = outcomes.to_vec();
                Ok(next.into())
            };
            match self
                .store
                .apply_chunk(flow.id, &key, rows, Some(before.rows_done), &mut after)
            {
                Ok(()) => {
                    *cached = Some(Flow {
                        progress: next,
                        ..flow
                    });
                    return Ok(got);
                }
                // Another hub wrote to this flow: read it again.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(format!(
            "{iuf} kept moving under this hub ({TRIES} tries)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snodo_core::dovuto::{validate, FlowVersion, RawDovuto};

    fn row(entity: &EntityRuntime, iud: &str) -> ChunkRow {
        let raw = RawDovuto {
            iud,
            tipo_identificativo_univoco: "F",
            codice_identificativo_univoco: "RSSMRA85T10A562S",
            anagrafica_pagatore: "Mario Rossi",
            importo_dovuto: "10.00",
            tipo_dovuto: "MENSA",
            causale_versamento: "Mensa",
            dati_specifici_riscossione: "9/0107101TS/",
            flg_genera_iuv: "true",
            azione: "I",
            ..Default::default()
        };
        let today = snodo_core::time::today_rome();
        let valid = validate(&raw, FlowVersion::V1_4, &entity.rules, today).expect("valid row");
        ChunkRow::new(valid).expect("row")
    }

    /// Many concurrent calls: each gets its own outcomes, and the flow counts every row once.
    #[test]
    fn concurrent_calls_share_commits_and_keep_their_outcomes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = crate::plan::load(None).expect("demo plan");
        let entity = plan.entities.get("c_g224").expect("c_g224").clone();
        let store: Arc<dyn Store> =
            Arc::new(snodo_store::SqliteStore::open(&dir.path().join("s.db")).expect("store"));
        let flows = StandingFlows::new(store.clone());
        std::thread::scope(|s| {
            for t in 0..8 {
                let (flows, entity) = (&flows, &entity);
                s.spawn(move || {
                    for i in 0..25 {
                        let iud = format!("T{t}-{i}");
                        // Each call: a new IUD, then the same IUD again (refused as a duplicate).
                        let rows = [row(entity, &iud), row(entity, &iud)];
                        let out = flows.apply(entity, "api", &rows).expect("applied");
                        assert_eq!(out.len(), 2);
                        assert!(matches!(out[0], RowOutcome::Accepted { .. }), "{out:?}");
                        assert!(matches!(out[1], RowOutcome::Rejected(_)), "{out:?}");
                    }
                });
            }
        });
        let flow = store
            .flows_by_iuf("c_g224", "api:c_g224")
            .expect("flows")
            .pop()
            .expect("the standing flow");
        assert_eq!(flow.progress.rows_done, 400);
        assert_eq!(flow.progress.accepted, 200);
        assert_eq!(flow.progress.rejected, 200);
    }
}
