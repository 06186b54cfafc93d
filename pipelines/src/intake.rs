//! Positions that arrive one call at a time (the REST API, an entity system answering a
//! verification) go into the registry through a standing flow per entity and origin, like a
//! Kafka partition: the same `apply_chunk` as an import, so the same history, IUV generation and
//! events, and the flow's counters say how many came that way.
//!
//! Calls for one flow are serialised in this process; two hubs sharing a store are kept apart
//! by the flow's checkpoint (`expect_rows_done`): the loser reloads and tries again.

use crate::plan::EntityRuntime;
use snodo_store::{
    Checkpoint, ChunkCommit, ChunkRow, EntityKey, Flow, NewFlow, RowOutcome, Store, StoreError,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Tries before giving up when other hubs keep moving the flow.
const TRIES: usize = 5;

pub struct StandingFlows {
    store: Arc<dyn Store>,
    /// The last known state of each flow, by IUF; its lock serialises the flow's writers.
    flows: Mutex<HashMap<String, Arc<Mutex<Option<Flow>>>>>,
}

impl StandingFlows {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            flows: Mutex::new(HashMap::new()),
        }
    }

    /// Applies `rows` to the entity's `<origin>:<ipa>` flow in one transaction; one outcome per
    /// row, in order. Blocking.
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
        let mut cached = slot.lock().unwrap_or_else(|p| p.into_inner());
        let key = EntityKey {
            ipa_code: &entity.ipa_code,
            segregation_code: entity.segregation_code,
        };
        for _ in 0..TRIES {
            let flow = match cached.take() {
                Some(f) => f,
                None => self.store.stream_flow(&NewFlow {
                    entity: &entity.ipa_code,
                    iuf: &iuf,
                    file_name: &iuf,
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
