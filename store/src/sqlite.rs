//! The embedded store: one SQLite file in WAL mode, one writer connection.

use crate::ops::{
    self, check_rows_done, now, Arg, Live, NewPosition, Ops, OwnedReceipt, RawEvent, Target,
    TAKE_JOB_SQL,
};
use crate::*;
use rusqlite::{params, Connection, OptionalExtension, Row};
use snodo_core::dovuto::Action;
use std::path::Path;
use std::sync::{Arc, Mutex};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite_0001_init.sql")),
    (2, include_str!("migrations/sqlite_0002_payments.sql")),
    (3, include_str!("migrations/sqlite_0003_outbox.sql")),
    (4, include_str!("migrations/sqlite_0004_exports.sql")),
    (5, include_str!("migrations/sqlite_0005_streams_jobs.sql")),
    (6, include_str!("migrations/sqlite_0006_api.sql")),
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Read-only connections: in WAL mode reads run beside the writer's commits, so the node's
    /// verify calls never queue behind an fsync.
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    checkpointer: Checkpointer,
    /// Node-driven writes waiting for the next group commit.
    write_queue: Mutex<Vec<Arc<WriteSlot>>>,
}

/// A write of the node's hot path: small, frequent, each waiting for its commit.
enum Write {
    Receipt(Box<OwnedReceipt>),
    Activation(i64, Option<String>),
}

enum Written {
    Receipt(ReceiptStored),
    Activation,
}

/// A write waiting to be committed, and then its outcome.
struct WriteSlot {
    write: Write,
    outcome: Mutex<Option<Result<Written>>>,
}

fn lock_any<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read connections beside the one writer.
const READERS: usize = 4;

/// Least time between two checkpoints.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Copies committed WAL pages into the database file on its own thread and connection, so a
/// large import's commits do not also pay for the checkpoint (on two cores, it runs beside them).
struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA busy_timeout=10000;")?;
        let (wake, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                use std::sync::mpsc::RecvTimeoutError;
                let mut last = false;
                loop {
                    if !last {
                        last = matches!(
                            rx.recv_timeout(std::time::Duration::from_secs(1)),
                            Err(RecvTimeoutError::Disconnected)
                        );
                    }
                    let mode = if last { "TRUNCATE" } else { "PASSIVE" };
                    if let Err(e) =
                        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
                    {
                        tracing::warn!("WAL checkpoint failed: {e}");
                    }
                    if last {
                        break;
                    }
                    // Coalesce: under a stream of small commits, one checkpoint copies a hot page
                    // once for many commits instead of once per commit. Closing ends the wait.
                    let until = std::time::Instant::now() + CHECKPOINT_EVERY;
                    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
                        match rx.recv_timeout(left) {
                            Ok(()) => continue,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => {
                                last = true;
                                break;
                            }
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Open(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    fn nudge(&self) {
        if let Some(w) = &self.wake {
            let _ = w.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
            }
        }
        let mut conn = Connection::open(path)?;
        // Immediate: a write transaction takes the write lock first (waiting its turn), so one
        // that reads before writing never fails on a snapshot another process made stale.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        // Every statement of the writer stays prepared (the default 16 would evict some).
        conn.set_prepared_statement_cache_capacity(64);
        // FULL: a commit survives power loss, not only a crash; commits are per chunk, so cheap.
        conn.execute_batch(
            "PRAGMA page_size=4096;
             PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA foreign_keys=ON;
             PRAGMA busy_timeout=10000;
             PRAGMA cache_size=-32768;
             PRAGMA wal_autocheckpoint=0;
             PRAGMA journal_size_limit=67108864;",
        )?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            r.execute_batch("PRAGMA busy_timeout=10000; PRAGMA cache_size=-8192;")?;
            readers.push(Mutex::new(r));
        }
        let store = Self {
            conn: Mutex::new(conn),
            readers,
            next_reader: Default::default(),
            checkpointer: Checkpointer::start(path)?,
            write_queue: Mutex::new(Vec::new()),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Group commit: whoever gets the connection commits every write queued so far in one
    /// transaction (one fsync for all); the others find their outcome set when they get it.
    fn group_commit(&self, write: Write) -> Result<Written> {
        let slot = Arc::new(WriteSlot {
            write,
            outcome: Mutex::new(None),
        });
        lock_any(&self.write_queue).push(slot.clone());
        let mut conn = self.lock();
        if let Some(done) = lock_any(&slot.outcome).take() {
            return done;
        }
        let batch = std::mem::take(&mut *lock_any(&self.write_queue));
        for (s, o) in batch.iter().zip(commit_writes(&mut conn, &batch)) {
            *lock_any(&s.outcome) = Some(o);
        }
        drop(conn);
        self.checkpointer.nudge();
        let outcome = lock_any(&slot.outcome).take();
        outcome.unwrap_or_else(|| {
            Err(StoreError::Conflict(
                "the write was not committed: lost from its batch".into(),
            ))
        })
    }

    /// A free read connection, else the next one in turn.
    fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Ok(guard) = r.try_lock() {
                return guard;
            }
        }
        let i = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.readers.len();
        lock_any(&self.readers[i])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.lock();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
        )?;
        let tx = conn.transaction()?;
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> = tx
                .query_row(
                    "SELECT version FROM schema_migrations WHERE version = ?1",
                    [version],
                    |r| r.get(0),
                )
                .optional()?;
            if done.is_none() {
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                    params![version, now()],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

const FLOW_COLUMNS: &str = "id, entity, iuf, file_name, version, content_sha256, status, error_code, error_message, rows_done, accepted, rejected, scarti_bytes, iuv_bytes, created_at, updated_at";

fn flow_from_row(r: &Row<'_>) -> rusqlite::Result<Flow> {
    let status: String = r.get(6)?;
    Ok(Flow {
        id: r.get(0)?,
        entity: r.get(1)?,
        iuf: r.get(2)?,
        file_name: r.get(3)?,
        version: r.get(4)?,
        content_sha256: r.get(5)?,
        status: FlowStatus::parse(&status).unwrap_or(FlowStatus::Abortito),
        error_code: r.get(7)?,
        error_message: r.get(8)?,
        progress: Checkpoint {
            rows_done: r.get::<_, i64>(9)? as u64,
            accepted: r.get::<_, i64>(10)? as u64,
            rejected: r.get::<_, i64>(11)? as u64,
            scarti_bytes: r.get::<_, i64>(12)? as u64,
            iuv_bytes: r.get::<_, i64>(13)? as u64,
        },
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
    })
}

impl Store for SqliteStore {
    fn flows_by_iuf(&self, entity: &str, iuf: &str) -> Result<Vec<Flow>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {FLOW_COLUMNS} FROM flows WHERE entity = ?1 AND iuf = ?2 ORDER BY id DESC"
        ))?;
        let rows = stmt.query_map(params![entity, iuf], flow_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn flow(&self, id: i64) -> Result<Option<Flow>> {
        let conn = self.read();
        Ok(conn
            .query_row(
                &format!("SELECT {FLOW_COLUMNS} FROM flows WHERE id = ?1"),
                [id],
                flow_from_row,
            )
            .optional()?)
    }

    fn recent_flows(&self, entity: &str, limit: u32) -> Result<Vec<Flow>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {FLOW_COLUMNS} FROM flows WHERE entity = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![entity, limit as i64], flow_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn create_flow(&self, f: &NewFlow<'_>) -> Result<Flow> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let ts = now();
        tx.execute(
            "INSERT INTO flows (entity, iuf, file_name, version, content_sha256, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![f.entity, f.iuf, f.file_name, f.version, f.content_sha256, FlowStatus::LoadImport.as_str(), ts],
        )?;
        let id = tx.last_insert_rowid();
        let flow = tx.query_row(
            &format!("SELECT {FLOW_COLUMNS} FROM flows WHERE id = ?1"),
            [id],
            flow_from_row,
        )?;
        let correlation = flow_correlation(id);
        insert_event(
            &tx,
            &NewEvent {
                kind: "flow.received",
                entity: &flow.entity,
                subject: &flow.iuf,
                payload: ops::flow_received(&flow),
                correlation: Some(&correlation),
            },
            &ts,
        )?;
        tx.commit()?;
        Ok(flow)
    }

    fn stream_flow(&self, f: &NewFlow<'_>) -> Result<Flow> {
        let conn = self.lock();
        let ts = now();
        // The partial unique index decides between processes: whoever inserts second gets the
        // first one's flow.
        conn.execute(
            "INSERT INTO flows (entity, iuf, file_name, version, content_sha256, status, stream, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7) ON CONFLICT DO NOTHING",
            params![f.entity, f.iuf, f.file_name, f.version, f.content_sha256, FlowStatus::InElab.as_str(), ts],
        )?;
        conn.query_row(
            &format!(
                "SELECT {FLOW_COLUMNS} FROM flows WHERE entity = ?1 AND iuf = ?2 AND stream = 1"
            ),
            params![f.entity, f.iuf],
            flow_from_row,
        )
        .map_err(Into::into)
    }

    fn set_flow_status(
        &self,
        id: i64,
        status: FlowStatus,
        error: Option<(&str, &str)>,
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let ts = now();
        let before = tx
            .query_row(
                "SELECT status, entity, iuf, accepted, rejected FROM flows WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()?;
        tx.execute(
            "UPDATE flows SET status = ?2, error_code = ?3, error_message = ?4, updated_at = ?5 WHERE id = ?1",
            params![id, status.as_str(), error.map(|e| e.0), error.map(|e| e.1), ts],
        )?;
        if let Some((was, entity, iuf, accepted, rejected)) = before {
            let event = ops::flow_status_event(status, id, &iuf, accepted, rejected, error);
            if let (Some((kind, payload)), true) = (event, was != status.as_str()) {
                let correlation = flow_correlation(id);
                insert_event(
                    &tx,
                    &NewEvent {
                        kind,
                        entity: &entity,
                        subject: &iuf,
                        payload,
                        correlation: Some(&correlation),
                    },
                    &ts,
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn apply_chunk(
        &self,
        flow_id: i64,
        entity: &EntityKey<'_>,
        rows: &[ChunkRow],
        expect_rows_done: Option<u64>,
        after: &mut ChunkCallback<'_>,
    ) -> Result<()> {
        let mut conn = self.lock();
        // Immediate (as every write here): the rows_done check and the writes see one state,
        // even against another process on the same file.
        let tx = conn.transaction()?;
        let ts = now();
        if let Some(expected) = expect_rows_done {
            let done: Option<i64> = tx
                .query_row(
                    "SELECT rows_done FROM flows WHERE id = ?1",
                    [flow_id],
                    |r| r.get(0),
                )
                .optional()?;
            check_rows_done(flow_id, done, expected)?;
        }
        let mut ops = SqliteOps {
            tx: &tx,
            counter: None,
        };
        let outcomes = ops::apply_rows(&mut ops, entity, flow_id, &ts, rows)?;
        if let Some(counter) = &ops.counter {
            counter.save(&tx, entity)?;
        }
        let commit = after(&outcomes).map_err(StoreError::Callback)?;
        let cp = commit.checkpoint;
        tx.execute(
            "UPDATE flows SET status = ?2, rows_done = ?3, accepted = ?4, rejected = ?5, scarti_bytes = ?6, iuv_bytes = ?7, updated_at = ?8 WHERE id = ?1",
            params![
                flow_id,
                FlowStatus::InElab.as_str(),
                cp.rows_done as i64,
                cp.accepted as i64,
                cp.rejected as i64,
                cp.scarti_bytes as i64,
                cp.iuv_bytes as i64,
                ts
            ],
        )?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO flow_outbox (flow_id, key, payload) VALUES (?1, ?2, ?3)",
            )?;
            for m in &commit.outbox {
                stmt.execute(params![flow_id, m.key, m.payload])?;
            }
        }
        tx.commit()?;
        self.checkpointer.nudge();
        Ok(())
    }

    fn flow_outbox(&self, flow_id: i64, limit: u32) -> Result<Vec<(i64, OutboxMessage)>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, key, payload FROM flow_outbox WHERE flow_id = ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![flow_id, limit as i64], |r| {
            Ok((
                r.get(0)?,
                OutboxMessage {
                    key: r.get(1)?,
                    payload: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn clear_flow_outbox(&self, ids: &[i64]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM flow_outbox WHERE id = ?1")?;
            for id in ids {
                stmt.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn positions(&self, entity: &str, query: &PositionQuery<'_>) -> Result<Vec<Position>> {
        let conn = self.read();
        let base = format!("SELECT {POSITION_COLUMNS} FROM positions p WHERE p.entity = ?1");
        // Each key is looked up among live rows and among annulled rows separately, so that
        // each half uses its partial index.
        let by = |column: &str| {
            format!(
                "{base} AND p.{column} = ?2 AND p.status <> 'annulled'
                 UNION ALL {base} AND p.{column} = ?2 AND p.status = 'annulled' ORDER BY 1"
            )
        };
        let notice_iuv: String;
        let (sql, arg): (String, Option<&str>) = match query {
            PositionQuery::All { .. } => (format!("{base} ORDER BY p.id LIMIT ?2"), None),
            PositionQuery::Iud(v) => (by("iud"), Some(v)),
            PositionQuery::Iuv(v) => (by("iuv"), Some(v)),
            PositionQuery::NoticeNumber(v) => match NoticeNumber::parse(v) {
                // A notice number is its IUV behind an aux digit (and, for aux 0, an
                // application code): look the IUV up.
                Ok(n) => {
                    notice_iuv = n.iuv().as_str().to_string();
                    (by("iuv"), Some(notice_iuv.as_str()))
                }
                Err(_) => return Ok(Vec::new()),
            },
        };
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = match (query, arg) {
            (PositionQuery::All { limit }, _) => stmt
                .query_map(params![entity, *limit as i64], position_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            (_, Some(v)) => stmt
                .query_map(params![entity, v], position_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            (_, None) => Vec::new(),
        };
        Ok(rows)
    }

    fn position_by_notice(&self, entity: &str, notice: &NoticeNumber) -> Result<Option<Position>> {
        let conn = self.read();
        let iuv = notice.iuv();
        let live = conn
            .prepare_cached(&format!(
                "SELECT {POSITION_COLUMNS} FROM positions p WHERE p.entity = ?1 AND p.iuv = ?2 AND p.status <> 'annulled'"
            ))?
            .query_row(params![entity, iuv.as_str()], position_from_row)
            .optional()?;
        let row = match live {
            Some(row) => Some(row),
            None => conn
                .prepare_cached(&format!(
                    "SELECT {POSITION_COLUMNS} FROM positions p WHERE p.entity = ?1 AND p.iuv = ?2 AND p.status = 'annulled' ORDER BY p.id DESC LIMIT 1"
                ))?
                .query_row(params![entity, iuv.as_str()], position_from_row)
                .optional()?,
        };
        Ok(row)
    }

    fn record_activation(&self, position_id: i64, correlation: Option<&str>) -> Result<()> {
        let write = Write::Activation(position_id, correlation.map(str::to_string));
        match self.group_commit(write)? {
            Written::Activation => Ok(()),
            Written::Receipt(_) => Err(StoreError::Conflict("mixed-up write outcome".into())),
        }
    }

    fn store_receipt(&self, r: &NewReceipt<'_>) -> Result<ReceiptStored> {
        match self.group_commit(Write::Receipt(Box::new(OwnedReceipt::from(r))))? {
            Written::Receipt(stored) => Ok(stored),
            Written::Activation => Err(StoreError::Conflict("mixed-up write outcome".into())),
        }
    }

    fn receipts(&self, entity: &str, flagged: bool, limit: u32) -> Result<Vec<StoredReceipt>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts r WHERE r.entity = ?1 AND (?2 = 0 OR r.issue IS NOT NULL)
             ORDER BY r.id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![entity, flagged as i64, limit as i64],
            receipt_from_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn claim_deliveries(
        &self,
        pipeline: &str,
        now: &str,
        lease_until: &str,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let conn = self.lock();
        // A lease is not money: losing one to a power cut only means a redelivery, so it does
        // not wait for the disk.
        conn.execute_batch("PRAGMA synchronous=NORMAL")?;
        let claimed = (|| {
            // One statement: picking and leasing cannot be split by another worker.
            let mut stmt = conn.prepare_cached(&format!("{CLAIM} RETURNING {DELIVERY_COLUMNS}"))?;
            let rows = stmt.query_map(
                params![pipeline, now, lease_until, limit as i64],
                delivery_from_row,
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })();
        conn.execute_batch("PRAGMA synchronous=FULL")?;
        let mut claimed = claimed?;
        claimed.sort_by_key(|d| d.id);
        Ok(claimed)
    }

    fn record_attempts(&self, attempts: &[(i64, Attempt)]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let ts = now();
        for (delivery, attempt) in attempts {
            let (status, next, error, delivered) = match attempt {
                Attempt::Delivered => (DeliveryStatus::Delivered, None, None, Some(ts.as_str())),
                Attempt::Retry { at, error } => (
                    DeliveryStatus::Pending,
                    Some(at.as_str()),
                    Some(error.as_str()),
                    None,
                ),
                Attempt::Dead { error } => (DeliveryStatus::Dead, None, Some(error.as_str()), None),
            };
            let updated = tx
                .prepare_cached(
                    "UPDATE deliveries SET status = ?2, attempts = attempts + 1, lease_until = NULL,
                     next_attempt_at = COALESCE(?3, next_attempt_at), last_error = COALESCE(?4, last_error),
                     delivered_at = ?5, updated_at = ?6 WHERE id = ?1
                     RETURNING pipeline, entity, idempotency_key, attempts",
                )?
                .query_row(
                    params![delivery, status.as_str(), next, error, delivered, ts],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    },
                )
                .optional()?;
            if let Some((pipeline, entity, key, attempts)) = updated {
                if let Some((kind, payload)) =
                    ops::attempt_event(attempt, *delivery, &pipeline, attempts)
                {
                    insert_event(
                        &tx,
                        &NewEvent {
                            kind,
                            entity: &entity,
                            subject: &key,
                            payload,
                            correlation: None,
                        },
                        &ts,
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn unfinished_export(&self, pipeline: &str) -> Result<Option<Export>> {
        let conn = self.read();
        let found = conn
            .prepare_cached(
                "SELECT id, entity, receipts, created_at FROM exports
                 WHERE pipeline = ?1 AND status = 'writing' ORDER BY id LIMIT 1",
            )?
            .query_row([pipeline], |r| {
                Ok(Export {
                    id: r.get(0)?,
                    pipeline: pipeline.into(),
                    entity: r.get(1)?,
                    receipts: r.get(2)?,
                    created_at: r.get(3)?,
                    resumed: true,
                })
            })
            .optional()?;
        Ok(found)
    }

    fn open_export(
        &self,
        pipeline: &str,
        entity: &str,
        allow_empty: bool,
    ) -> Result<Option<Export>> {
        let mut conn = self.lock();
        // Immediate: two hubs (or `snodo export` beside a hub) never open the same receipts twice.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let open = tx
            .prepare_cached(
                "SELECT id, receipts, created_at FROM exports
                 WHERE pipeline = ?1 AND status = 'writing' ORDER BY id LIMIT 1",
            )?
            .query_row([pipeline], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        if let Some((id, receipts, created_at)) = open {
            return Ok(Some(Export {
                id,
                pipeline: pipeline.into(),
                entity: entity.into(),
                receipts,
                created_at,
                resumed: true,
            }));
        }
        let pending: i64 = tx.query_row(
            "SELECT COUNT(*) FROM deliveries WHERE pipeline = ?1 AND status = 'pending' AND export_id IS NULL",
            [pipeline],
            |r| r.get(0),
        )?;
        if pending == 0 && !allow_empty {
            return Ok(None);
        }
        let ts = now();
        tx.execute(
            "INSERT INTO exports (pipeline, entity, status, receipts, created_at) VALUES (?1, ?2, 'writing', ?3, ?4)",
            params![pipeline, entity, pending, ts],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE deliveries SET export_id = ?2, updated_at = ?3
             WHERE pipeline = ?1 AND status = 'pending' AND export_id IS NULL",
            params![pipeline, id, ts],
        )?;
        tx.commit()?;
        Ok(Some(Export {
            id,
            pipeline: pipeline.into(),
            entity: entity.into(),
            receipts: pending,
            created_at: ts,
            resumed: false,
        }))
    }

    fn export_items(&self, export: i64) -> Result<Vec<ExportItem>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, receipt, secondary FROM deliveries WHERE export_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([export], |r| {
            Ok(ExportItem {
                delivery: r.get(0)?,
                receipt: r.get(1)?,
                secondary: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn finish_export(&self, export: i64) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let ts = now();
        tx.execute(
            "UPDATE exports SET status = 'written', attempts = attempts + 1, written_at = ?2 WHERE id = ?1",
            params![export, ts],
        )?;
        tx.execute(
            "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = ?2, updated_at = ?2
             WHERE export_id = ?1",
            params![export, ts],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn fail_export(&self, export: i64, error: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE exports SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
            params![export, error],
        )?;
        Ok(())
    }

    fn receipt_document(&self, receipt: i64) -> Result<Option<ReceiptDocument>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!("{RECEIPT_DOCUMENTS} WHERE r.id = ?1"))?;
        Ok(stmt.query_row([receipt], document_from_row).optional()?)
    }

    fn delivery(&self, id: i64) -> Result<Option<Delivery>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"
        ))?;
        let found = stmt.query_row([id], delivery_from_row).optional()?;
        Ok(found)
    }

    fn deliveries(
        &self,
        status: DeliveryStatus,
        entity: Option<&str>,
        pipeline: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE status = ?1 AND (?2 IS NULL OR entity = ?2) AND (?3 IS NULL OR pipeline = ?3)
             ORDER BY id DESC LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![status.as_str(), entity, pipeline, limit as i64],
            delivery_from_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn replay(&self, ids: &[i64], entity: Option<&str>) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let ts = now();
        let mut n = 0;
        if ids.is_empty() {
            n += tx
                .prepare_cached(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?2, lease_until = NULL, updated_at = ?2
                     WHERE status = 'dead' AND (?1 IS NULL OR entity = ?1)",
                )?
                .execute(params![entity, ts])?;
        } else {
            for id in ids {
                n += tx
                    .prepare_cached(
                        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?2, lease_until = NULL, updated_at = ?2
                         WHERE id = ?1 AND status = 'dead'",
                    )?
                    .execute(params![id, ts])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    fn metrics(&self) -> Result<StoreMetrics> {
        let conn = self.read();
        let mut m = StoreMetrics::default();
        let mut stmt = conn.prepare_cached(
            "SELECT entity, COUNT(*), COUNT(issue) FROM receipts GROUP BY entity ORDER BY entity",
        )?;
        m.receipts = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare_cached(
            "SELECT pipeline, CASE WHEN status = 'pending' AND lease_until > ?1 THEN 'in_flight' ELSE status END AS s,
                    COUNT(*) FROM deliveries GROUP BY pipeline, s ORDER BY pipeline, s",
        )?;
        m.deliveries = stmt
            .query_map([now()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare_cached(
            "SELECT pipeline, COUNT(*) FROM deliveries WHERE attempts > 1 OR (status = 'pending' AND attempts > 0)
             GROUP BY pipeline ORDER BY pipeline",
        )?;
        m.retried = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare_cached(
            "SELECT entity, SUM(accepted), SUM(rejected) FROM flows GROUP BY entity ORDER BY entity",
        )?;
        m.import_rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(m)
    }

    fn ping(&self) -> Result<()> {
        let conn = self.read();
        conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn last_event_id(&self) -> Result<i64> {
        Ok(self
            .read()
            .query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?)
    }

    fn events_after(&self, after_id: i64, limit: u32) -> Result<Vec<Event>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, entity, subject, payload, at, correlation FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after_id, limit as i64], |r| {
            let payload: String = r.get(4)?;
            Ok(Event {
                id: r.get(0)?,
                kind: r.get(1)?,
                entity: r.get(2)?,
                subject: r.get(3)?,
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                at: r.get(5)?,
                correlation: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn record_events(&self, events: &[NewEvent<'_>]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let ts = now();
        for e in events {
            insert_event(&tx, e, &ts)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn prune_events(&self, keep: u64) -> Result<u64> {
        let conn = self.lock();
        // The newest `keep` walk the primary key backwards; the rest go as one id range.
        let edge: Option<i64> = conn
            .prepare_cached(PRUNE_EDGE)?
            .query_row([keep as i64], |r| r.get(0))
            .optional()?;
        let Some(edge) = edge else {
            return Ok(0);
        };
        let n = conn
            .prepare_cached("DELETE FROM events WHERE id <= ?1")?
            .execute([edge])?;
        Ok(n as u64)
    }

    fn take_job(
        &self,
        job: &str,
        holder: &str,
        now: &str,
        until: &str,
        tick: Option<&str>,
    ) -> Result<bool> {
        let conn = self.lock();
        let n = conn
            // SQLite numbers `$N` by first use, not by N: it gets `?N`.
            .prepare_cached(&TAKE_JOB_SQL.replace('$', "?"))?
            .execute(params![job, holder, now, until, tick])?;
        Ok(n > 0)
    }

    fn release_job(&self, job: &str, holder: &str) -> Result<()> {
        let conn = self.lock();
        conn.prepare_cached("UPDATE jobs SET lease_until = ?3 WHERE name = ?1 AND holder = ?2")?
            .execute(params![job, holder, ops::EPOCH])?;
        Ok(())
    }

    fn job_cursor(&self, job: &str) -> Result<i64> {
        let conn = self.read();
        let cursor: Option<i64> = conn
            .prepare_cached("SELECT cursor FROM jobs WHERE name = ?1")?
            .query_row([job], |r| r.get(0))
            .optional()?;
        Ok(cursor.unwrap_or(0))
    }

    fn set_job_cursor(&self, job: &str, holder: &str, cursor: i64) -> Result<bool> {
        let conn = self.lock();
        let n = conn
            .prepare_cached(
                "UPDATE jobs SET cursor = ?3 WHERE name = ?1 AND holder = ?2 AND lease_until > ?4",
            )?
            .execute(params![job, holder, cursor, ops::EPOCH])?;
        Ok(n > 0)
    }

    fn history(&self, position_id: i64) -> Result<Vec<HistoryEntry>> {
        let conn = self.read();
        let created = conn
            .query_row(
                "SELECT created_by, created_at FROM positions WHERE id = ?1",
                [position_id],
                |r| {
                    let source: String = r.get(0)?;
                    Ok(HistoryEntry {
                        action: Action::Insert.as_str().to_string(),
                        flow_id: source.strip_prefix("flow:").and_then(|f| f.parse().ok()),
                        source,
                        at: r.get(1)?,
                        previous: None,
                    })
                },
            )
            .optional()?;
        let Some(created) = created else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare_cached(
            "SELECT action, source, flow_id, at, previous_data FROM position_history WHERE position_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([position_id], |r| {
            let prev: Option<String> = r.get(4)?;
            Ok(HistoryEntry {
                action: r.get(0)?,
                source: r.get(1)?,
                flow_id: r.get(2)?,
                at: r.get(3)?,
                previous: prev.and_then(|p| serde_json::from_str(&p).ok()),
            })
        })?;
        let mut all = vec![created];
        for r in rows {
            all.push(r?);
        }
        Ok(all)
    }

    fn list_positions(
        &self,
        entity: &str,
        filter: &PositionFilter<'_>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Position>> {
        let Some((sql, args)) =
            ops::list_positions_query(POSITION_COLUMNS, entity, filter, after_id, limit)
        else {
            return Ok(Vec::new());
        };
        let conn = self.read();
        // SQLite numbers `$N` by first use, not by N: it gets `?N`.
        let mut stmt = conn.prepare_cached(&sql.replace('$', "?"))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(&args), position_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn receipts_after(
        &self,
        entity: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ReceiptDocument>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "{RECEIPT_DOCUMENTS} WHERE r.entity = ?1 AND r.id > ?2 ORDER BY r.id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![entity, after_id, limit as i64], document_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn receipt_for_notice(
        &self,
        entity: &str,
        notice_number: &str,
    ) -> Result<Option<StoredReceipt>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts r WHERE r.entity = ?1 AND r.notice_number = ?2
             ORDER BY r.issue IS NULL DESC, r.id DESC LIMIT 1"
        ))?;
        Ok(stmt
            .query_row(params![entity, notice_number], receipt_from_row)
            .optional()?)
    }

    fn saved_response(&self, scope: &str, key: &str) -> Result<Option<SavedResponse>> {
        saved_response(&self.read(), scope, key)
    }

    fn save_response(
        &self,
        scope: &str,
        key: &str,
        response: &SavedResponse,
    ) -> Result<SavedResponse> {
        let conn = self.lock();
        // The primary key decides between processes: the second insert does nothing and the
        // select returns the first one's response.
        conn.prepare_cached(
            "INSERT INTO api_responses (scope, key, request_sha256, status, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            scope,
            key,
            response.request_sha256,
            i64::from(response.status),
            response.body,
            now()
        ])?;
        saved_response(&conn, scope, key)?.ok_or_else(|| {
            StoreError::Conflict(format!("kept response {scope}/{key} vanished after saving"))
        })
    }

    fn prune_saved_responses(&self, before: &str) -> Result<u64> {
        let conn = self.lock();
        let n = conn
            .prepare_cached("DELETE FROM api_responses WHERE created_at < ?1")?
            .execute([before])?;
        Ok(n as u64)
    }

    fn create_cart(&self, cart: &NewCart<'_>) -> Result<Cart> {
        let notices = ops::cart_notices_text(cart.notice_numbers)?;
        let mut conn = self.lock();
        // Immediate: of two processes opening the same cart, the second finds the first's.
        let tx = conn.transaction()?;
        let ts = now();
        let inserted = tx
            .prepare_cached(
                "INSERT INTO carts (entity, id, notice_numbers, redirect_url, return_urls, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                cart.entity,
                cart.id,
                notices,
                cart.redirect_url,
                cart.return_urls,
                ts
            ])?;
        if inserted > 0 {
            insert_event(&tx, &ops::cart_opened(cart), &ts)?;
        }
        let stored = tx
            .prepare_cached(&format!(
                "SELECT {CART_COLUMNS} FROM carts WHERE entity = ?1 AND id = ?2"
            ))?
            .query_row(params![cart.entity, cart.id], cart_from_row)?;
        tx.commit()?;
        cart_of(stored)
    }

    fn cart(&self, entity: &str, id: &str) -> Result<Option<Cart>> {
        let conn = self.read();
        let found = conn
            .prepare_cached(&format!(
                "SELECT {CART_COLUMNS} FROM carts WHERE entity = ?1 AND id = ?2"
            ))?
            .query_row(params![entity, id], cart_from_row)
            .optional()?;
        found.map(cart_of).transpose()
    }
}

fn saved_response(conn: &Connection, scope: &str, key: &str) -> Result<Option<SavedResponse>> {
    let found = conn
        .prepare_cached(
            "SELECT request_sha256, status, body FROM api_responses WHERE scope = ?1 AND key = ?2",
        )?
        .query_row(params![scope, key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    found
        .map(|(request_sha256, status, body)| {
            Ok(SavedResponse {
                request_sha256,
                status: ops::http_status(status)?,
                body,
            })
        })
        .transpose()
}

/// Receipts with what a format needs of their position (see [`document_from_row`]).
const RECEIPT_DOCUMENTS: &str = "SELECT r.id, r.entity, r.receipt_id, r.notice_number, r.position_id, r.amount_cents, r.psp_id, r.psp_name, r.payment_date, r.operation, r.issue, r.received_at,
     r.xml, p.iud, p.debt_type FROM receipts r LEFT JOIN positions p ON p.id = r.position_id";

fn document_from_row(row: &Row<'_>) -> rusqlite::Result<ReceiptDocument> {
    Ok(ReceiptDocument {
        receipt: receipt_from_row(row)?,
        xml: row.get(12)?,
        iud: row.get(13)?,
        debt_type: row.get(14)?,
    })
}

const CART_COLUMNS: &str = "id, entity, notice_numbers, redirect_url, return_urls, created_at";

fn cart_from_row(r: &Row<'_>) -> rusqlite::Result<(Cart, String)> {
    Ok((
        Cart {
            id: r.get(0)?,
            entity: r.get(1)?,
            notice_numbers: Vec::new(),
            redirect_url: r.get(3)?,
            return_urls: r.get(4)?,
            created_at: r.get(5)?,
        },
        r.get(2)?,
    ))
}

/// A cart read back, its notice numbers decoded.
fn cart_of((mut cart, notices): (Cart, String)) -> Result<Cart> {
    cart.notice_numbers = ops::cart_notices(&cart.id, &notices)?;
    Ok(cart)
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Text(s) => s.to_sql(),
            Arg::Int(i) => i.to_sql(),
        }
    }
}

const RECEIPT_COLUMNS: &str = "r.id, r.entity, r.receipt_id, r.notice_number, r.position_id, r.amount_cents, r.psp_id, r.psp_name, r.payment_date, r.operation, r.issue, r.received_at";

fn receipt_from_row(r: &Row<'_>) -> rusqlite::Result<StoredReceipt> {
    Ok(StoredReceipt {
        id: r.get(0)?,
        entity: r.get(1)?,
        receipt_id: r.get(2)?,
        notice_number: r.get(3)?,
        position_id: r.get(4)?,
        amount_cents: r.get(5)?,
        psp_id: r.get(6)?,
        psp_name: r.get(7)?,
        payment_date: r.get(8)?,
        operation: r.get(9)?,
        issue: r.get(10)?,
        received_at: r.get(11)?,
    })
}

const DELIVERY_COLUMNS: &str = "id, pipeline, entity, receipt, idempotency_key, status, attempts, next_attempt_at, last_error, created_at, updated_at, delivered_at";

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    let status: String = r.get(5)?;
    Ok(Delivery {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        entity: r.get(2)?,
        receipt: r.get(3)?,
        idempotency_key: r.get(4)?,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending),
        attempts: r.get(6)?,
        next_attempt_at: r.get(7)?,
        last_error: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        delivered_at: r.get(11)?,
    })
}

const POSITION_COLUMNS: &str = "p.id, p.entity, p.iud, p.iuv, p.iuv_generated, p.status, p.amount_cents, p.version, p.flow_id, p.created_at, p.updated_at, p.data,
     1 + (SELECT COUNT(*) FROM position_history h WHERE h.position_id = p.id), p.activated_at, p.activations";

fn position_from_row(r: &Row<'_>) -> rusqlite::Result<Position> {
    let id: i64 = r.get(0)?;
    let status: String = r.get(5)?;
    let iuv: Option<String> = r.get(3)?;
    let iuv_generated = r.get::<_, i64>(4)? != 0;
    let data: String = r.get(11)?;
    let mut dovuto: Dovuto = serde_json::from_str(&data).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            11,
            rusqlite::types::Type::Text,
            format!("position {id}: stored data is corrupt: {e}").into(),
        )
    })?;
    // The columns are authoritative: the store may have generated the IUV.
    let parsed = iuv.as_deref().and_then(|i| Iuv::parse(i).ok());
    dovuto.iuv = parsed.clone();
    dovuto.generate_iuv = iuv_generated;
    Ok(Position {
        id,
        entity: r.get(1)?,
        iud: r.get(2)?,
        notice_number: parsed
            .and_then(|i| i.notice_number())
            .map(|n| n.as_str().to_string()),
        iuv,
        iuv_generated,
        status: PositionStatus::parse(&status).unwrap_or(PositionStatus::Active),
        amount_cents: r.get(6)?,
        version: r.get(7)?,
        flow_id: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        history_count: r.get(12)?,
        activated_at: r.get(13)?,
        activations: r.get(14)?,
        dovuto,
    })
}

/// The entity's IUV counter, read at the chunk's first generated IUV and written back in the same
/// transaction, so a rolled-back chunk never consumes values and a committed one never hands them
/// out again.
struct Counter {
    next: u64,
}

impl Counter {
    fn load(tx: &Connection, e: &EntityKey<'_>) -> Result<Self> {
        let next: Option<i64> = tx
            .query_row(
                "SELECT next_value FROM iuv_counters WHERE entity = ?1 AND segregation_code = ?2",
                params![e.ipa_code, e.segregation_code.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(Self {
            next: next.unwrap_or(1) as u64,
        })
    }

    fn save(&self, tx: &Connection, e: &EntityKey<'_>) -> Result<()> {
        tx.execute(
            "INSERT INTO iuv_counters (entity, segregation_code, next_value) VALUES (?1, ?2, ?3)
             ON CONFLICT (entity, segregation_code) DO UPDATE SET next_value = excluded.next_value",
            params![e.ipa_code, e.segregation_code.as_str(), self.next as i64],
        )?;
        Ok(())
    }
}

/// The rules' statements on SQLite, inside the writer's transaction.
struct SqliteOps<'c> {
    tx: &'c Connection,
    counter: Option<Counter>,
}

fn insert_event(tx: &Connection, e: &NewEvent<'_>, ts: &str) -> Result<()> {
    insert_raw_event(tx, &RawEvent::new(e, &e.payload.to_string()), ts)
}

fn insert_raw_event(tx: &Connection, e: &RawEvent<'_>, ts: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO events (kind, entity, subject, payload, at, correlation) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![e.kind, e.entity, e.subject, e.payload, ts, e.correlation])?;
    Ok(())
}

impl Ops for SqliteOps<'_> {
    fn live(&mut self, entity: &str, iud: &str) -> Result<Option<Live>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT id, iuv, iuv_generated, status, debt_type, amount_cents, data FROM positions
             WHERE entity = ?1 AND iud = ?2 AND status <> 'annulled'",
        )?;
        Ok(stmt
            .query_row(params![entity, iud], |r| {
                Ok(Live {
                    id: r.get(0)?,
                    iuv: r.get(1)?,
                    iuv_generated: r.get::<_, i64>(2)? != 0,
                    status: r.get(3)?,
                    debt_type: r.get(4)?,
                    amount_cents: r.get(5)?,
                    data: r.get(6)?,
                })
            })
            .optional()?)
    }

    fn insert_position(&mut self, p: &NewPosition<'_>) -> Result<Option<i64>> {
        let d = p.row;
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO positions (entity, iud, iuv, iuv_generated, status, debt_type, amount_cents, due_date, payer_id, data, version, flow_id, created_by, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?7, ?8, ?9, 1, ?10, ?11, ?12, ?12)
             ON CONFLICT DO NOTHING",
        )?;
        let n = stmt.execute(params![
            p.entity,
            d.iud,
            p.iuv,
            p.generated as i64,
            d.debt_type,
            d.amount.cents(),
            d.due_date.map(|d| d.to_string()),
            d.payer_id,
            d.data,
            p.flow_id,
            p.source,
            p.ts
        ])?;
        Ok((n > 0).then(|| self.tx.last_insert_rowid()))
    }

    fn modify_position(
        &mut self,
        id: i64,
        iuv: Option<&str>,
        d: &ChunkRow,
        flow_id: i64,
        ts: &str,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE positions SET iuv = ?2, amount_cents = ?3, due_date = ?4, payer_id = ?5, data = ?6,
                 version = version + 1, flow_id = ?7, updated_at = ?8 WHERE id = ?1",
            )?
            .execute(params![
                id,
                iuv,
                d.amount.cents(),
                d.due_date.map(|d| d.to_string()),
                d.payer_id,
                d.data,
                flow_id,
                ts
            ])?;
        Ok(())
    }

    fn annul_position(&mut self, id: i64, flow_id: i64, ts: &str) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE positions SET status = 'annulled', version = version + 1, flow_id = ?2, updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, flow_id, ts])?;
        Ok(())
    }

    fn history(
        &mut self,
        position_id: i64,
        action: &str,
        source: &str,
        flow_id: Option<i64>,
        ts: &str,
        previous: Option<&str>,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO position_history (position_id, action, source, flow_id, at, previous_data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![position_id, action, source, flow_id, ts, previous])?;
        Ok(())
    }

    fn next_counter(&mut self, entity: &EntityKey<'_>) -> Result<u64> {
        let counter = match &mut self.counter {
            Some(c) => c,
            None => self.counter.insert(Counter::load(self.tx, entity)?),
        };
        let n = counter.next;
        counter.next += 1;
        Ok(n)
    }

    fn receipt_target(
        &mut self,
        entity: &str,
        iuv: &str,
        annulled: bool,
    ) -> Result<Option<Target>> {
        let sql = if annulled {
            RECEIPT_TARGET_ANNULLED
        } else {
            RECEIPT_TARGET_LIVE
        };
        Ok(self
            .tx
            .prepare_cached(sql)?
            .query_row(params![entity, iuv], |row| {
                Ok(Target {
                    id: row.get(0)?,
                    status: row.get(1)?,
                    amount_cents: row.get(2)?,
                    debt_type: row.get(3)?,
                    iud: row.get(4)?,
                })
            })
            .optional()?)
    }

    fn insert_receipt(
        &mut self,
        r: &OwnedReceipt,
        iuv: &str,
        position: Option<i64>,
        issue: Option<&str>,
        ts: &str,
    ) -> Result<Option<i64>> {
        let inserted = self.tx
            .prepare_cached(
                "INSERT INTO receipts (entity, receipt_id, notice_number, iuv, position_id, amount_cents, psp_id, psp_name, payment_date, operation, issue, xml, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                r.entity,
                r.receipt_id,
                r.notice_number.as_str(),
                iuv,
                position,
                r.amount_cents,
                r.psp_id,
                r.psp_name,
                r.payment_date,
                r.operation,
                issue,
                r.xml,
                ts
            ])?;
        Ok((inserted > 0).then(|| self.tx.last_insert_rowid()))
    }

    fn pay_position(&mut self, id: i64, ts: &str) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE positions SET status = 'paid', version = version + 1, updated_at = ?2 WHERE id = ?1",
            )?
            .execute(params![id, ts])?;
        Ok(())
    }

    fn insert_delivery(&mut self, to: &DeliverTo, receipt: i64, key: &str, ts: &str) -> Result<()> {
        self.tx.prepare_cached(
            "INSERT INTO deliveries (pipeline, entity, receipt, idempotency_key, status, next_attempt_at, created_at, updated_at, secondary)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?5, ?6)",
        )?
        .execute(params![to.pipeline, to.entity, receipt, key, ts, to.secondary])?;
        Ok(())
    }

    fn event(&mut self, e: &RawEvent<'_>, ts: &str) -> Result<()> {
        insert_raw_event(self.tx, e, ts)
    }
}

/// Commits a batch of writes in one transaction. Should one fail, the batch is rolled back and
/// each write is committed alone, so a failure stays with its own write.
fn commit_writes(conn: &mut Connection, batch: &[Arc<WriteSlot>]) -> Vec<Result<Written>> {
    let together = (|| {
        let tx = conn.transaction()?;
        let ts = now();
        let mut done = Vec::with_capacity(batch.len());
        for slot in batch {
            done.push(apply_write(&tx, &slot.write, &ts)?);
        }
        tx.commit()?;
        Ok::<_, StoreError>(done)
    })();
    match together {
        Ok(done) => done.into_iter().map(Ok).collect(),
        Err(_) if batch.len() > 1 => batch
            .iter()
            .map(|slot| {
                let tx = conn.transaction()?;
                let done = apply_write(&tx, &slot.write, &now())?;
                tx.commit()?;
                Ok(done)
            })
            .collect(),
        Err(e) => vec![Err(e)],
    }
}

fn apply_write(tx: &Connection, write: &Write, ts: &str) -> Result<Written> {
    match write {
        Write::Receipt(r) => {
            let mut ops = SqliteOps { tx, counter: None };
            ops::store_receipt(&mut ops, r, ts).map(Written::Receipt)
        }
        Write::Activation(position, correlation) => {
            let activated = tx
                .prepare_cached(
                    "UPDATE positions SET activated_at = ?2, activations = activations + 1 WHERE id = ?1
                     RETURNING entity, iud, iuv, amount_cents",
                )?
                .query_row(params![position, ts], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .optional()?;
            if let Some((entity, iud, iuv, cents)) = activated {
                let (subject, payload) = ops::activation_payload(&iud, iuv.as_deref(), cents);
                insert_event(
                    tx,
                    &NewEvent {
                        kind: "payment.activated",
                        entity: &entity,
                        subject: &subject,
                        payload,
                        correlation: correlation.as_deref(),
                    },
                    ts,
                )?;
            }
            Ok(Written::Activation)
        }
    }
}

/// Due deliveries in due order, walked on `deliveries_due` (ordering by anything else would sort
/// the whole backlog on every claim).
const CLAIM: &str = "UPDATE deliveries SET lease_until = ?3
     WHERE id IN (SELECT id FROM deliveries
                  WHERE pipeline = ?1 AND status = 'pending' AND next_attempt_at <= ?2
                    AND (lease_until IS NULL OR lease_until < ?2) AND export_id IS NULL
                  ORDER BY next_attempt_at, id LIMIT ?4)";

const RECEIPT_TARGET_LIVE: &str = "SELECT id, status, amount_cents, debt_type, iud FROM positions
     WHERE entity = ?1 AND iuv = ?2 AND status <> 'annulled'";
const RECEIPT_TARGET_ANNULLED: &str =
    "SELECT id, status, amount_cents, debt_type, iud FROM positions
     WHERE entity = ?1 AND iuv = ?2 AND status = 'annulled' ORDER BY id DESC LIMIT 1";

/// The id of the oldest event to keep's predecessor: a walk of `keep` ids down the primary key.
const PRUNE_EDGE: &str = "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1";

#[cfg(test)]
mod tests {
    //! SQLite-only behaviour; what every store must do is in `tests/suite.rs`.
    use super::*;
    use snodo_core::dovuto::{Subject, SubjectKind};
    use snodo_core::Amount;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        (dir, s)
    }

    fn key() -> EntityKey<'static> {
        EntityKey {
            ipa_code: "c_g224",
            segregation_code: SegregationCode::parse("01").unwrap(),
        }
    }

    fn row(action: Action, iud: &str, cents: i64, generate: bool) -> ChunkRow {
        ChunkRow::new(DovutoRow {
            action,
            dovuto: Dovuto {
                iud: iud.into(),
                iuv: None,
                generate_iuv: generate,
                payer: Subject {
                    kind: Some(SubjectKind::F),
                    id: "RSSMRA85T10A562S".into(),
                    name: "Mario Rossi".into(),
                    ..Default::default()
                },
                due_date: None,
                amount: Amount::from_cents(cents),
                pa_fee: None,
                debt_type: "TARI".into(),
                payment_kinds: "ALL".into(),
                causale: "TARI".into(),
                dati_specifici_riscossione: "9/0101100IM/".into(),
                bilancio: None,
                secondary: None,
            },
        })
        .unwrap()
    }

    fn flow(s: &SqliteStore, iuf: &str) -> i64 {
        s.create_flow(&NewFlow {
            entity: "c_g224",
            iuf,
            file_name: "f.zip",
            version: "1_4",
            content_sha256: "x",
        })
        .unwrap()
        .id
    }

    fn apply(s: &SqliteStore, flow_id: i64, rows: &[ChunkRow]) -> Vec<RowOutcome> {
        let mut got = Vec::new();
        s.apply_chunk(flow_id, &key(), rows, None, &mut |o| {
            got = o.to_vec();
            Ok(Checkpoint {
                rows_done: o.len() as u64,
                ..Default::default()
            }
            .into())
        })
        .unwrap();
        got
    }

    fn iuv_of(o: &RowOutcome) -> String {
        match o {
            RowOutcome::Accepted { iuv: Some(i), .. } => i.as_str().to_string(),
            other => panic!("not accepted with an IUV: {other:?}"),
        }
    }

    #[test]
    fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            let f = flow(&s, "F1");
            apply(&s, f, &[row(Action::Insert, "A", 100, true)]);
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.positions("c_g224", &PositionQuery::All { limit: 10 })
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            s.flows_by_iuf("c_g224", "F1").unwrap()[0]
                .progress
                .rows_done,
            1
        );
    }

    fn receipt<'a>(notice: &'a NoticeNumber, id: &'a str, cents: i64) -> NewReceipt<'a> {
        static P: std::sync::OnceLock<Vec<DeliverTo>> = std::sync::OnceLock::new();
        NewReceipt {
            entity: "c_g224",
            notice_number: notice,
            receipt_id: id,
            amount_cents: cents,
            psp_id: "BCITITMM",
            psp_name: "Intesa Sanpaolo",
            payment_date: Some("2026-11-26"),
            operation: "paSendRTV2",
            xml: "<receipt/>",
            deliver_to: P.get_or_init(|| vec![DeliverTo::all("erp", "c_g224")]),
            correlation: None,
        }
    }

    #[test]
    fn hot_paths_search_indexes_and_never_scan_or_sort() {
        let (_d, s) = store();
        let conn = s.lock();
        let plan_of = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Vec<String> {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(args, |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        for sql in [RECEIPT_TARGET_LIVE, RECEIPT_TARGET_ANNULLED] {
            let plan = plan_of(sql, &[&"c_g224", &"x"]);
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN")),
                "{sql}: {plan:?}"
            );
        }
        // A claim must not sort the backlog: it walks the due index and stops at the limit.
        let plan = plan_of(CLAIM, &[&"erp", &"z", &"z", &16]);
        assert!(
            plan.iter()
                .all(|step| !step.starts_with("SCAN") && !step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
        // Pruning finds its edge by walking the primary key from the newest end, no sort.
        let plan = plan_of(PRUNE_EDGE, &[&1000]);
        assert!(
            plan.iter().all(|step| !step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
        let plan = plan_of("DELETE FROM events WHERE id <= ?1", &[&5]);
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN")),
            "{plan:?}"
        );
        // A stream's outbox and a job lease are key lookups.
        let plan = plan_of(
            "SELECT id, key, payload FROM flow_outbox WHERE flow_id = ?1 ORDER BY id LIMIT ?2",
            &[&1, &10],
        );
        assert!(
            plan.iter()
                .all(|step| !step.starts_with("SCAN") && !step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
        let plan = plan_of(
            "SELECT id FROM flows WHERE entity = ?1 AND iuf = ?2 AND stream = 1",
            &[&"c_g224", &"p0"],
        );
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN")),
            "{plan:?}"
        );
    }

    #[test]
    fn api_pages_walk_indexes() {
        let (_d, s) = store();
        let conn = s.lock();
        let plan_of = |sql: &str, args: &[Arg]| -> Vec<String> {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {}", sql.replace('$', "?")))
                .unwrap()
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let day = Some(chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
        let filters = [
            PositionFilter::default(),
            PositionFilter {
                status: Some(PositionStatus::Paid),
                debt_type: Some("TARI"),
                due_from: day,
                due_to: day,
                ..Default::default()
            },
            PositionFilter {
                iuv: Some("01000000000000001"),
                ..Default::default()
            },
        ];
        for f in &filters {
            let (sql, args) =
                ops::list_positions_query(POSITION_COLUMNS, "c_g224", f, 0, 10).unwrap();
            let plan = plan_of(&sql, &args);
            assert!(
                plan.iter()
                    .all(|step| !step.starts_with("SCAN") && !step.contains("TEMP B-TREE")),
                "{f:?}: {plan:?}"
            );
        }
        let plan = plan_of(
            &format!(
                "{RECEIPT_DOCUMENTS} WHERE r.entity = $1 AND r.id > $2 ORDER BY r.id LIMIT $3"
            ),
            &[Arg::Text("c_g224".into()), Arg::Int(0), Arg::Int(10)],
        );
        assert!(
            plan.iter()
                .all(|step| !step.starts_with("SCAN r") && !step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }

    #[test]
    fn concurrent_receipts_share_commits_and_each_gets_its_own_outcome() {
        let (_d, s) = store();
        let s = Arc::new(s);
        let f = flow(&s, "F1");
        let rows: Vec<ChunkRow> = (0..64)
            .map(|i| row(Action::Insert, &format!("I{i}"), 100 + i, true))
            .collect();
        let out = apply(&s, f, &rows);
        let notices: Vec<NoticeNumber> = out
            .iter()
            .map(|o| NoticeNumber::from_iuv17(&Iuv::parse(&iuv_of(o)).unwrap()).unwrap())
            .collect();
        let threads: Vec<_> = notices
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                let s = s.clone();
                std::thread::spawn(move || {
                    // Every other receipt has the wrong amount: flagged, but its neighbours pay.
                    let cents = if i % 2 == 0 { 100 + i as i64 } else { 1 };
                    let first = s
                        .store_receipt(&receipt(&n, &format!("R{i}"), cents))
                        .unwrap();
                    s.record_activation(1, Some("act")).unwrap();
                    let again = s
                        .store_receipt(&receipt(&n, &format!("R{i}"), cents))
                        .unwrap();
                    (i, first, again)
                })
            })
            .collect();
        for t in threads {
            let (i, first, again) = t.join().unwrap();
            if i % 2 == 0 {
                assert!(
                    matches!(first, ReceiptStored::Paid { .. }),
                    "R{i}: {first:?}"
                );
            } else {
                assert!(
                    matches!(
                        first,
                        ReceiptStored::Flagged {
                            issue: ReceiptIssue::AmountMismatch { .. },
                            ..
                        }
                    ),
                    "R{i}: {first:?}"
                );
            }
            assert_eq!(again, ReceiptStored::Duplicate, "R{i}");
        }
        let kinds = |k: &str| {
            s.events_after(0, 10_000)
                .unwrap()
                .iter()
                .filter(|e| e.kind == k)
                .count()
        };
        assert_eq!(kinds("receipt.stored"), 64);
        assert_eq!(kinds("position.paid"), 32);
        assert_eq!(kinds("payment.activated"), 64);
        let m = s.metrics().unwrap();
        assert_eq!(m.receipts, vec![("c_g224".to_string(), 64, 32)]);
    }

    #[test]
    fn the_schema_migrates_from_version_4() {
        // A store written before migration 5 (no correlation, stream or jobs) opens and works.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
            )
            .unwrap();
            for (v, sql) in &MIGRATIONS[..4] {
                conn.execute_batch(sql).unwrap();
                conn.execute("INSERT INTO schema_migrations VALUES (?1, 'x')", [v])
                    .unwrap();
            }
            conn.execute(
                "INSERT INTO events (kind, entity, subject, payload, at) VALUES ('old', 'e', 's', '{}', 'x')",
                [],
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let e = s.events_after(0, 10).unwrap();
        assert_eq!(
            (e[0].kind.as_str(), e[0].correlation.as_deref()),
            ("old", None)
        );
        assert!(s
            .take_job(
                "j",
                "h",
                "2026-01-01T00:00:00.000Z",
                "2026-01-01T00:01:00.000Z",
                None
            )
            .unwrap());
    }
}
