//! A stream of debt positions (Kafka, `decode = "position-json"`) into the registry, one outcome
//! per message to the pipeline's `outcomes` topic.
//!
//! Each partition is a standing flow in the store. A batch of a partition's messages is applied
//! in one transaction together with the flow's checkpoint (the next offset to apply) and the
//! batch's outcome messages (a small outbox), and only then are the outcomes produced and the
//! offsets acknowledged. So:
//! - a message redelivered after a crash (its offset below the checkpoint) is recognised and not
//!   applied again;
//! - two hubs that briefly both hold a partition during a rebalance cannot both apply a batch:
//!   the store refuses a checkpoint that moved under it (`expect_rows_done`);
//! - outcomes committed but not yet produced when the hub died are produced at the next batch.

use crate::codecs::DecodePosition;
use crate::plan::{EntityRuntime, PipelineKind, Plan};
use snodo_adapters::position_json::{Invalid, Origin, Outcome, OutcomeError};
use snodo_connectors::{Message, MessageSink, StreamOffset, Supervised};
use snodo_core::dovuto::DovutoRow;
use snodo_store::{
    Checkpoint, ChunkCommit, ChunkRow, EntityKey, Flow, NewFlow, OutboxMessage, RowOutcome, Store,
    StoreError,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// The `version` of a flow that stands for a stream partition.
pub const STREAM_FLOW_VERSION: &str = "position-json";
/// How long producing a batch's outcomes may take before the batch is tried again.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a batch failed for a reason that is not the message's fault (store, broker).
const BACKOFF: Duration = Duration::from_secs(1);
/// How often a wait for the source's backoff looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);

pub struct StreamIntake {
    name: String,
    entity: Arc<EntityRuntime>,
    store: Arc<dyn Store>,
    source: Supervised,
    /// The pipeline's `decode` codec.
    decode: DecodePosition,
    /// Where outcomes go (a topic).
    outcomes: Option<Arc<dyn MessageSink>>,
    /// The standing flow of each partition, by topic and partition.
    flows: HashMap<(String, i32), Flow>,
}

/// A message of one batch, decoded.
struct Item {
    msg: Message,
    at: StreamOffset,
    decoded: Result<DovutoRow, Invalid>,
}

impl StreamIntake {
    pub fn new(plan: &Plan, index: usize, store: Arc<dyn Store>) -> Result<Self, String> {
        let p = &plan.pipelines[index];
        let PipelineKind::StreamPositions {
            source,
            decode,
            outcomes,
        } = &p.kind
        else {
            return Err("not a stream intake pipeline".into());
        };
        let entity = plan.entity_of(p)?;
        let outcomes = match outcomes {
            Some(o) => Some(o.build().map_err(|e| format!("outcomes: {e}"))?),
            None => None,
        };
        let source = Supervised::wrap(p.name.clone(), source.build().map_err(|e| e.to_string())?);
        Ok(Self {
            name: p.name.clone(),
            entity,
            store,
            source,
            decode: *decode,
            outcomes,
            flows: HashMap::new(),
        })
    }

    /// Polls and applies until `stop`; runs on its own blocking thread.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        info!(pipeline = %self.name, entity = %self.entity.ipa_code, "stream intake started");
        while !stop.load(Ordering::SeqCst) {
            let wait = self.source.due_in();
            if !wait.is_zero() {
                // The source is unreachable: wait out its backoff, a slice at a time.
                std::thread::sleep(wait.min(STOP_CHECK));
                continue;
            }
            let batch = match self.source.poll() {
                Ok(b) => b,
                // A connection problem is the supervisor's to log, once.
                Err(e) if self.source.is_connected() => {
                    warn!(pipeline = %self.name, "poll failed: {e}");
                    std::thread::sleep(BACKOFF);
                    continue;
                }
                Err(_) => continue,
            };
            if batch.is_empty() {
                continue;
            }
            if let Err(e) = self.handle(batch) {
                // Not acknowledged: the same messages come again (this hub or another).
                error!(pipeline = %self.name, "batch not applied, it will be redelivered: {e}");
                std::thread::sleep(BACKOFF);
            }
        }
        self.source.close();
        info!(pipeline = %self.name, "stream intake stopped");
    }

    fn handle(&mut self, batch: Vec<Message>) -> Result<(), String> {
        let today = snodo_core::time::today_rome();
        let mut parts: BTreeMap<(String, i32), Vec<Item>> = BTreeMap::new();
        for msg in batch {
            let Some(at) = msg.offset.clone() else {
                let _ = msg.ack.failed("not a stream message");
                continue;
            };
            let decoded = match &msg.body {
                snodo_connectors::Body::Bytes(b) => {
                    (self.decode)(b, msg.key.as_deref(), &self.entity.rules, today)
                }
                snodo_connectors::Body::File(_) => Err(Invalid {
                    iud: None,
                    rejections: vec![snodo_core::dovuto::Rejection::new(
                        snodo_core::dovuto::RejectCode::SintassiCsv,
                        "a stream message must be in memory",
                    )],
                }),
            };
            parts
                .entry((at.topic.clone(), at.partition))
                .or_default()
                .push(Item { msg, at, decoded });
        }
        let mut first_error = None;
        for (part, items) in parts {
            if let Err(e) = self.apply_partition(&part, items) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn flow(&mut self, part: &(String, i32), reload: bool) -> Result<Flow, StoreError> {
        if !reload {
            if let Some(f) = self.flows.get(part) {
                return Ok(f.clone());
            }
        }
        let iuf = format!("kafka:{}:{}", part.0, part.1);
        let flow = self.store.stream_flow(&NewFlow {
            entity: &self.entity.ipa_code,
            iuf: &iuf,
            file_name: &iuf,
            version: STREAM_FLOW_VERSION,
            content_sha256: "",
        })?;
        self.flows.insert(part.clone(), flow.clone());
        Ok(flow)
    }

    fn apply_partition(&mut self, part: &(String, i32), items: Vec<Item>) -> Result<(), String> {
        let mut reload = false;
        for _ in 0..3 {
            let flow = self.flow(part, reload).map_err(|e| e.to_string())?;
            let next = flow.progress.rows_done;
            let fresh: Vec<&Item> = items
                .iter()
                .filter(|i| i.at.offset >= 0 && i.at.offset as u64 >= next)
                .collect();
            if !fresh.is_empty() {
                match self.apply(&flow, &fresh) {
                    Ok(()) => {}
                    Err(StoreError::Conflict(why)) => {
                        info!(pipeline = %self.name, partition = part.1, "checkpoint moved under this hub ({why}); reloading it");
                        reload = true;
                        continue;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            } else if !items.is_empty() {
                info!(pipeline = %self.name, partition = part.1, skipped = items.len(), "redelivered messages were applied before; not applying them again");
            }
            self.publish_outcomes(flow.id)?;
            for item in items {
                if let Err(e) = item.msg.ack.done() {
                    warn!(pipeline = %self.name, "cannot acknowledge {}: {e}", item.msg.name);
                }
            }
            return Ok(());
        }
        Err(format!(
            "partition {} kept moving under this hub; leaving it to the other one",
            part.1
        ))
    }

    fn apply(&mut self, flow: &Flow, items: &[&Item]) -> Result<(), StoreError> {
        let segregation_code = self.entity.segregation_code;
        let key = EntityKey {
            ipa_code: &self.entity.ipa_code,
            segregation_code,
            payment_in_progress: self.entity.payment_in_progress,
        };
        let mut rows = Vec::with_capacity(items.len());
        for item in items {
            if let Ok(row) = &item.decoded {
                rows.push(ChunkRow::new(row.clone())?);
            }
        }
        let last = items.last().map(|i| i.at.offset).unwrap_or(0);
        let before = flow.progress;
        let with_outbox = self.outcomes.is_some();
        let mut committed = None;
        let mut after = |outcomes: &[RowOutcome]| -> Result<ChunkCommit, String> {
            let mut stored = outcomes.iter();
            let mut outbox = Vec::new();
            let (mut accepted, mut rejected) = (0u64, 0u64);
            for item in items {
                let origin = Origin {
                    topic: &item.at.topic,
                    partition: item.at.partition,
                    offset: item.at.offset,
                };
                let (key, text) = match &item.decoded {
                    Err(invalid) => {
                        rejected += 1;
                        let errors = invalid
                            .rejections
                            .iter()
                            .map(|r| OutcomeError {
                                code: r.code.as_str(),
                                message: &r.message,
                            })
                            .collect();
                        let iud = invalid.iud.as_deref();
                        let text = Outcome::Rejected {
                            iud,
                            errors,
                            source: origin,
                        }
                        .encode();
                        (iud.unwrap_or_default().to_string(), text)
                    }
                    Ok(row) => {
                        let iud = row.dovuto.iud.as_str();
                        let text = match stored.next() {
                            Some(RowOutcome::Accepted {
                                iuv,
                                notice_number,
                                generated,
                                ..
                            }) => {
                                accepted += 1;
                                Outcome::Accepted {
                                    iud,
                                    action: row.action.as_str(),
                                    iuv: iuv.as_ref().map(|i| i.as_str()),
                                    notice_number: notice_number.as_ref().map(|n| n.as_str()),
                                    iuv_generated: *generated,
                                    source: origin,
                                }
                                .encode()
                            }
                            Some(RowOutcome::Rejected(r)) => {
                                rejected += 1;
                                Outcome::Rejected {
                                    iud: Some(iud),
                                    errors: vec![OutcomeError {
                                        code: r.code.as_str(),
                                        message: &r.message,
                                    }],
                                    source: origin,
                                }
                                .encode()
                            }
                            None => {
                                return Err("the store returned fewer outcomes than rows".into())
                            }
                        };
                        (iud.to_string(), text)
                    }
                };
                if with_outbox {
                    outbox.push(OutboxMessage { key, payload: text });
                }
            }
            let checkpoint = Checkpoint {
                rows_done: u64::try_from(last + 1).unwrap_or(0),
                accepted: before.accepted + accepted,
                rejected: before.rejected + rejected,
                ..before
            };
            committed = Some(checkpoint);
            Ok(ChunkCommit { checkpoint, outbox })
        };
        self.store
            .apply_chunk(flow.id, &key, &rows, Some(before.rows_done), &mut after)?;
        // The cached flow moves with what was just committed: no read back per batch.
        if let (Some(checkpoint), Some(first)) = (committed, items.first()) {
            if let Some(f) = self
                .flows
                .get_mut(&(first.at.topic.clone(), first.at.partition))
            {
                f.progress = checkpoint;
            }
        }
        Ok(())
    }

    /// Produces the flow's committed outcomes, then forgets them.
    fn publish_outcomes(&self, flow_id: i64) -> Result<(), String> {
        let Some(out) = &self.outcomes else {
            return Ok(());
        };
        loop {
            let pending = self
                .store
                .flow_outbox(flow_id, 10_000)
                .map_err(|e| e.to_string())?;
            if pending.is_empty() {
                return Ok(());
            }
            let messages: Vec<(String, Vec<u8>)> = pending
                .iter()
                .map(|(_, m)| (m.key.clone(), m.payload.clone().into_bytes()))
                .collect();
            out.send_all(&messages, PRODUCE_TIMEOUT)
                .map_err(|e| format!("cannot produce outcomes: {e}"))?;
            let ids: Vec<i64> = pending.iter().map(|(id, _)| *id).collect();
            self.store
                .clear_flow_outbox(&ids)
                .map_err(|e| e.to_string())?;
        }
    }
}
