//! Import flows: their lifecycle, the chunks applied under them, and a stream's outbox.

use crate::db::{args, sql, Access, Driver, Row, Sql};
use crate::events::count;
use crate::ops::{self, check_rows_done, now, Ops};
use crate::*;

pub trait FlowStore {
    /// Flows of an entity with this IUF, newest first.
    fn flows_by_iuf(&self, entity: &str, iuf: &str) -> Result<Vec<Flow>>;
    fn flow(&self, id: i64) -> Result<Option<Flow>>;
    /// An entity's most recent flows, newest first.
    fn recent_flows(&self, entity: &str, limit: u32) -> Result<Vec<Flow>>;
    /// Records a new flow in `LOAD_IMPORT` (and its `flow.received` event).
    fn create_flow(&self, flow: &NewFlow<'_>) -> Result<Flow>;
    /// The standing flow of a stream (e.g. one Kafka partition) by entity and IUF, created in
    /// `IMPORT_IN_ELAB` when missing; race-free between processes.
    fn stream_flow(&self, flow: &NewFlow<'_>) -> Result<Flow>;
    /// Moves a flow to `status`; becoming `IMPORT_ESEGUITO` or `IMPORT_ABORTITO` writes
    /// `flow.imported` or `flow.aborted`.
    fn set_flow_status(
        &self,
        id: i64,
        status: FlowStatus,
        error: Option<(&str, &str)>,
    ) -> Result<()>;

    /// Applies a chunk of valid rows of a flow in one transaction: positions, history, IUV
    /// counters, events, and the checkpoint and outbox `after` returns all commit together, or
    /// none does. With `expect_rows_done`, a flow whose committed `rows_done` differs (another
    /// process got there first) is a [`StoreError::Conflict`] and nothing is applied.
    fn apply_chunk(
        &self,
        flow_id: i64,
        entity: &EntityKey<'_>,
        rows: &[ChunkRow],
        expect_rows_done: Option<u64>,
        after: &mut ChunkCallback<'_>,
    ) -> Result<()>;

    /// A flow's outbox messages, oldest first, with their ids.
    fn flow_outbox(&self, flow_id: i64, limit: u32) -> Result<Vec<(i64, OutboxMessage)>>;
    /// The messages are published: forget them.
    fn clear_flow_outbox(&self, ids: &[i64]) -> Result<()>;

    /// Counts one more attempt at the file `name` claimed by `pipeline`, committed before the
    /// work starts so that an attempt the process dies in counts too. Returns the attempts
    /// before this one and the last error recorded.
    fn begin_file_attempt(&self, pipeline: &str, name: &str) -> Result<(u32, Option<String>)>;
    /// Records why the current attempt at the file failed.
    fn fail_file_attempt(&self, pipeline: &str, name: &str, error: &str) -> Result<()>;
    /// The current attempt stopped cleanly (the hub is shutting down): it does not count.
    fn spare_file_attempt(&self, pipeline: &str, name: &str) -> Result<()>;
    /// The file is done with (imported, refused or set aside): its attempts are forgotten.
    fn forget_file_attempts(&self, pipeline: &str, name: &str) -> Result<()>;
}

const BEGIN_ATTEMPT: &str = "INSERT INTO file_attempts (pipeline, name, attempts, updated_at)
     VALUES ($1, $2, 1, $3)
     ON CONFLICT (pipeline, name) DO UPDATE SET attempts = file_attempts.attempts + 1,
         updated_at = excluded.updated_at
     RETURNING attempts - 1, last_error";

macro_rules! select_flows {
    ($where:literal) => {
        concat!(
            "SELECT id, entity, iuf, file_name, version, content_sha256, status, error_code,
             error_message, rows_done, accepted, rejected, scarti_bytes, iuv_bytes, created_at,
             updated_at FROM flows ",
            $where
        )
    };
}

fn flow_from(r: &dyn Row) -> Result<Flow> {
    Ok(Flow {
        id: r.get(0)?,
        entity: r.get(1)?,
        iuf: r.get(2)?,
        file_name: r.get(3)?,
        version: r.get(4)?,
        content_sha256: r.get(5)?,
        status: FlowStatus::parse(&r.get::<String>(6)?).unwrap_or(FlowStatus::Abortito),
        error_code: r.get(7)?,
        error_message: r.get(8)?,
        progress: Checkpoint {
            rows_done: r.get(9)?,
            accepted: r.get(10)?,
            rejected: r.get(11)?,
            scarti_bytes: r.get(12)?,
            iuv_bytes: r.get(13)?,
        },
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
    })
}

const INSERT_FLOW: &str =
    "INSERT INTO flows (entity, iuf, file_name, version, content_sha256, status, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)";
/// The partial unique index on standing flows decides between processes: a second insert does
/// nothing and the select finds the first one's flow.
const INSERT_STREAM: &str =
    "INSERT INTO flows (entity, iuf, file_name, version, content_sha256, status, stream, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7, $7) ON CONFLICT DO NOTHING";
/// Locked on PostgreSQL: chunks and status changes of one flow commit one at a time across
/// processes, and what they read holds until commit.
const FLOW_STATE: Sql = sql!(
    "SELECT status, entity, iuf, accepted, rejected FROM flows WHERE id = $1" => " FOR UPDATE"
);
const ROWS_DONE: Sql = sql!(
    "SELECT rows_done, accepted, rejected, entity FROM flows WHERE id = $1" => " FOR UPDATE"
);
pub(crate) const INSERT_OUTBOX: &str =
    "INSERT INTO flow_outbox (flow_id, key, payload) VALUES ($1, $2, $3)";
const CLEAR_OUTBOX: Sql = Sql {
    sqlite: "DELETE FROM flow_outbox WHERE id = $1",
    pg: "DELETE FROM flow_outbox WHERE id = ANY($1)",
};

/// A new flow's entity gets its import totals (at zero), so /metrics lists it from its first flow.
fn count_entity(c: &mut dyn crate::db::Conn, entity: &str) -> Result<()> {
    let counts = vec![(count::ACCEPTED, entity, 0), (count::REJECTED, entity, 0)];
    crate::events::add_counts(c, counts)
}

impl<D: Driver> FlowStore for D {
    fn flows_by_iuf(&self, entity: &str, iuf: &str) -> Result<Vec<Flow>> {
        self.read(|c| {
            let sql = select_flows!("WHERE entity = $1 AND iuf = $2 ORDER BY id DESC");
            c.all(sql, args!(entity, iuf), flow_from)
        })
    }

    fn flow(&self, id: i64) -> Result<Option<Flow>> {
        self.read(|c| c.one(select_flows!("WHERE id = $1"), args!(id), flow_from))
    }

    fn recent_flows(&self, entity: &str, limit: u32) -> Result<Vec<Flow>> {
        self.read(|c| {
            let sql = select_flows!("WHERE entity = $1 ORDER BY id DESC LIMIT $2");
            c.all(sql, args!(entity, limit), flow_from)
        })
    }

    fn begin_file_attempt(&self, pipeline: &str, name: &str) -> Result<(u32, Option<String>)> {
        self.tx(|c| {
            let row = c.one(BEGIN_ATTEMPT, args!(pipeline, name, &now()), |r| {
                Ok((r.get::<i64>(0)?, r.get::<Option<String>>(1)?))
            })?;
            let (before, last) = row.unwrap_or((0, None));
            Ok((u32::try_from(before).unwrap_or(u32::MAX), last))
        })
    }

    fn fail_file_attempt(&self, pipeline: &str, name: &str, error: &str) -> Result<()> {
        let sql = "UPDATE file_attempts SET last_error = $3, updated_at = $4
                   WHERE pipeline = $1 AND name = $2";
        self.run(Access::Write, |c| {
            c.execute(sql, args!(pipeline, name, error, &now()))
                .map(drop)
        })
    }

    fn spare_file_attempt(&self, pipeline: &str, name: &str) -> Result<()> {
        let sql = "UPDATE file_attempts SET attempts = attempts - 1
                   WHERE pipeline = $1 AND name = $2 AND attempts > 0";
        self.run(Access::Write, |c| {
            c.execute(sql, args!(pipeline, name)).map(drop)
        })
    }

    fn forget_file_attempts(&self, pipeline: &str, name: &str) -> Result<()> {
        let sql = "DELETE FROM file_attempts WHERE pipeline = $1 AND name = $2";
        self.run(Access::Write, |c| {
            c.execute(sql, args!(pipeline, name)).map(drop)
        })
    }

    fn create_flow(&self, f: &NewFlow<'_>) -> Result<Flow> {
        self.tx(|c| {
            let ts = now();
            let status = FlowStatus::LoadImport.as_str();
            let id = c.insert(
                INSERT_FLOW,
                args!(
                    f.entity,
                    f.iuf,
                    f.file_name,
                    f.version,
                    f.content_sha256,
                    status,
                    &ts
                ),
            )?;
            let flow = match id {
                Some(id) => c.one(select_flows!("WHERE id = $1"), args!(id), flow_from)?,
                None => None,
            }
            .ok_or_else(|| StoreError::Conflict(format!("flow {} was not created", f.iuf)))?;
            count_entity(c, &flow.entity)?;
            let correlation = flow_correlation(flow.id);
            c.new_event(
                &NewEvent {
                    kind: "flow.received",
                    entity: &flow.entity,
                    subject: &flow.iuf,
                    payload: ops::flow_received(&flow),
                    correlation: Some(&correlation),
                },
                &ts,
            )?;
            Ok(flow)
        })
    }

    fn stream_flow(&self, f: &NewFlow<'_>) -> Result<Flow> {
        self.run(Access::Write, |c| {
            let status = FlowStatus::InElab.as_str();
            let created = c.execute(
                INSERT_STREAM,
                args!(
                    f.entity,
                    f.iuf,
                    f.file_name,
                    f.version,
                    f.content_sha256,
                    status,
                    &now()
                ),
            )?;
            if created > 0 {
                count_entity(c, f.entity)?;
            }
            let sql = select_flows!("WHERE entity = $1 AND iuf = $2 AND stream = TRUE");
            c.one(sql, args!(f.entity, f.iuf), flow_from)?
                .ok_or_else(|| {
                    StoreError::Conflict(format!(
                        "stream flow {}/{} vanished after creation",
                        f.entity, f.iuf
                    ))
                })
        })
    }

    fn set_flow_status(
        &self,
        id: i64,
        status: FlowStatus,
        error: Option<(&str, &str)>,
    ) -> Result<()> {
        self.tx(|c| {
            let ts = now();
            let before = c.one(c.pick(&FLOW_STATE), args!(id), |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                    r.get::<i64>(3)?,
                    r.get::<i64>(4)?,
                ))
            })?;
            c.execute(
                "UPDATE flows SET status = $2, error_code = $3, error_message = $4, updated_at = $5 WHERE id = $1",
                args!(id, status.as_str(), error.map(|e| e.0), error.map(|e| e.1), &ts),
            )?;
            let Some((was, entity, iuf, accepted, rejected)) = before else {
                return Ok(());
            };
            let event = ops::flow_status_event(status, id, &iuf, accepted, rejected, error);
            if let (Some((kind, payload)), true) = (event, was != status.as_str()) {
                let correlation = flow_correlation(id);
                let e = NewEvent {
                    kind,
                    entity: &entity,
                    subject: &iuf,
                    payload,
                    correlation: Some(&correlation),
                };
                c.new_event(&e, &ts)?;
            }
            Ok(())
        })
    }

    fn apply_chunk(
        &self,
        flow_id: i64,
        entity: &EntityKey<'_>,
        rows: &[ChunkRow],
        expect_rows_done: Option<u64>,
        after: &mut ChunkCallback<'_>,
    ) -> Result<()> {
        // SQLite's write transactions are immediate: the rows_done check and the writes see one
        // state, even against another process on the same file.
        self.tx(|c| {
            let ts = now();
            let before = c.one(c.pick(&ROWS_DONE), args!(flow_id), |r| {
                Ok((
                    r.get::<i64>(0)?,
                    r.get::<i64>(1)?,
                    r.get::<i64>(2)?,
                    r.get::<String>(3)?,
                ))
            })?;
            if let Some(expected) = expect_rows_done {
                check_rows_done(flow_id, before.as_ref().map(|b| b.0), expected)?;
            }
            let mut ops = Ops::new(c);
            let outcomes = ops::apply_rows(&mut ops, entity, flow_id, &ts, rows)?;
            ops.save_counter(entity)?;
            let commit = after(&outcomes).map_err(StoreError::Callback)?;
            let cp = commit.checkpoint;
            c.execute(
                "UPDATE flows SET status = $2, rows_done = $3, accepted = $4, rejected = $5,
                 scarti_bytes = $6, iuv_bytes = $7, updated_at = $8 WHERE id = $1",
                args!(
                    flow_id,
                    FlowStatus::InElab.as_str(),
                    cp.rows_done as i64,
                    cp.accepted as i64,
                    cp.rejected as i64,
                    cp.scarti_bytes as i64,
                    cp.iuv_bytes as i64,
                    &ts
                ),
            )?;
            // The entity's totals move by what this checkpoint adds to the flow's own.
            if let Some((_, accepted, rejected, entity)) = &before {
                let counts = [
                    (count::ACCEPTED, cp.accepted as i64 - accepted),
                    (count::REJECTED, cp.rejected as i64 - rejected),
                ];
                let moved = counts
                    .into_iter()
                    .filter(|(_, n)| *n != 0)
                    .map(|(kind, n)| (kind, entity.as_str(), n))
                    .collect::<Vec<_>>();
                crate::events::add_counts(c, moved)?;
            }
            c.insert_outbox(flow_id, &commit.outbox)
        })
    }

    fn flow_outbox(&self, flow_id: i64, limit: u32) -> Result<Vec<(i64, OutboxMessage)>> {
        self.read(|c| {
            c.all(
                "SELECT id, key, payload FROM flow_outbox WHERE flow_id = $1 ORDER BY id LIMIT $2",
                args!(flow_id, limit),
                |r| {
                    let message = OutboxMessage {
                        key: r.get(1)?,
                        payload: r.get(2)?,
                    };
                    Ok((r.get(0)?, message))
                },
            )
        })
    }

    fn clear_flow_outbox(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.tx(|c| c.each_id(&CLEAR_OUTBOX, ids, None).map(drop))
    }
}
