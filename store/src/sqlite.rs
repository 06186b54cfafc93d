//! The embedded store: one SQLite file in WAL mode, one writer connection.

use crate::*;
use rusqlite::{params, Connection, OptionalExtension, Row};
use snodo_core::dovuto::{Action, RejectCode};
use std::path::Path;
use std::sync::{Arc, Mutex};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite_0001_init.sql")),
    (2, include_str!("migrations/sqlite_0002_payments.sql")),
    (3, include_str!("migrations/sqlite_0003_outbox.sql")),
    (4, include_str!("migrations/sqlite_0004_exports.sql")),
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
    Activation(i64),
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

#[derive(Debug, Clone)]
struct OwnedReceipt {
    entity: String,
    notice_number: NoticeNumber,
    receipt_id: String,
    amount_cents: i64,
    psp_id: String,
    psp_name: String,
    payment_date: Option<String>,
    operation: String,
    xml: String,
    deliver_to: Vec<DeliverTo>,
}

impl From<&NewReceipt<'_>> for OwnedReceipt {
    fn from(r: &NewReceipt<'_>) -> Self {
        Self {
            entity: r.entity.into(),
            notice_number: r.notice_number.clone(),
            receipt_id: r.receipt_id.into(),
            amount_cents: r.amount_cents,
            psp_id: r.psp_id.into(),
            psp_name: r.psp_name.into(),
            payment_date: r.payment_date.map(str::to_string),
            operation: r.operation.into(),
            xml: r.xml.into(),
            deliver_to: r.deliver_to.to_vec(),
        }
    }
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

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
            }
        }
        let conn = Connection::open(path)?;
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

/// A live position as the apply step needs it.
struct Live {
    id: i64,
    iuv: Option<String>,
    iuv_generated: bool,
    status: String,
    debt_type: String,
    data: String,
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
        let conn = self.lock();
        let ts = now();
        conn.execute(
            "INSERT INTO flows (entity, iuf, file_name, version, content_sha256, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![f.entity, f.iuf, f.file_name, f.version, f.content_sha256, FlowStatus::LoadImport.as_str(), ts],
        )?;
        let id = conn.last_insert_rowid();
        conn.query_row(
            &format!("SELECT {FLOW_COLUMNS} FROM flows WHERE id = ?1"),
            [id],
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
        let conn = self.lock();
        conn.execute(
            "UPDATE flows SET status = ?2, error_code = ?3, error_message = ?4, updated_at = ?5 WHERE id = ?1",
            params![id, status.as_str(), error.map(|e| e.0), error.map(|e| e.1), now()],
        )?;
        Ok(())
    }

    fn apply_chunk(
        &self,
        flow_id: i64,
        entity: &EntityKey<'_>,
        rows: &[ChunkRow],
        after: &mut ChunkCallback<'_>,
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let ts = now();
        let source = format!("flow:{flow_id}");
        let mut counter = Counter::load(&tx, entity)?;
        let mut outcomes = Vec::with_capacity(rows.len());
        for r in rows {
            let outcome = match r.action {
                Action::Insert => insert(&tx, entity, flow_id, &ts, &source, r, &mut counter)?,
                Action::Modify => modify(&tx, entity, flow_id, &ts, &source, r)?,
                Action::Annul => annul(&tx, entity, flow_id, &ts, &source, r)?,
            };
            outcomes.push(outcome);
        }
        counter.save(&tx, entity)?;
        let cp = after(&outcomes).map_err(StoreError::Callback)?;
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
        tx.commit()?;
        self.checkpointer.nudge();
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

    fn record_activation(&self, position_id: i64) -> Result<()> {
        match self.group_commit(Write::Activation(position_id))? {
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
            tx.prepare_cached(
                "UPDATE deliveries SET status = ?2, attempts = attempts + 1, lease_until = NULL,
                 next_attempt_at = COALESCE(?3, next_attempt_at), last_error = COALESCE(?4, last_error),
                 delivered_at = ?5, updated_at = ?6 WHERE id = ?1",
            )?
            .execute(params![
                delivery,
                status.as_str(),
                next,
                error,
                delivered,
                ts
            ])?;
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
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RECEIPT_COLUMNS}, r.xml, p.iud, p.debt_type FROM receipts r
             LEFT JOIN positions p ON p.id = r.position_id WHERE r.id = ?1"
        ))?;
        Ok(stmt
            .query_row([receipt], |row| {
                Ok(ReceiptDocument {
                    receipt: receipt_from_row(row)?,
                    xml: row.get(12)?,
                    iud: row.get(13)?,
                    debt_type: row.get(14)?,
                })
            })
            .optional()?)
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

    fn events_after(&self, after_id: i64, limit: u32) -> Result<Vec<Event>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, entity, subject, payload, at FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
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
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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

/// The entity's IUV counter, read once per chunk and written back in the same transaction, so a
/// rolled-back chunk never consumes values and a committed one never hands them out again.
struct Counter {
    next: u64,
    dirty: bool,
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
            dirty: false,
        })
    }

    fn take(&mut self, seg: SegregationCode) -> Result<Iuv> {
        let iuv = Iuv::generate(seg, self.next).map_err(|e| StoreError::Conflict(e.to_string()))?;
        self.next += 1;
        self.dirty = true;
        Ok(iuv)
    }

    fn save(&self, tx: &Connection, e: &EntityKey<'_>) -> Result<()> {
        if self.dirty {
            tx.execute(
                "INSERT INTO iuv_counters (entity, segregation_code, next_value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (entity, segregation_code) DO UPDATE SET next_value = excluded.next_value",
                params![e.ipa_code, e.segregation_code.as_str(), self.next as i64],
            )?;
        }
        Ok(())
    }
}

fn reject(code: RejectCode, msg: impl Into<String>) -> RowOutcome {
    RowOutcome::Rejected(Rejection::new(code, msg))
}

fn live(tx: &Connection, entity: &str, iud: &str) -> Result<Option<Live>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, iuv, iuv_generated, status, debt_type, data FROM positions WHERE entity = ?1 AND iud = ?2 AND status <> 'annulled'",
    )?;
    Ok(stmt
        .query_row(params![entity, iud], |r| {
            Ok(Live {
                id: r.get(0)?,
                iuv: r.get(1)?,
                iuv_generated: r.get::<_, i64>(2)? != 0,
                status: r.get(3)?,
                debt_type: r.get(4)?,
                data: r.get(5)?,
            })
        })
        .optional()?)
}

/// The active position an `M` or `A` row acts on, or the row's refusal
/// (`PAA_IMPORT_DOVUTO_NON_PRESENTE`: none, or it is paid or otherwise no longer active).
fn active(
    tx: &Connection,
    entity: &EntityKey<'_>,
    iud: &str,
    verb: &str,
) -> Result<std::result::Result<Live, RowOutcome>> {
    Ok(match live(tx, entity.ipa_code, iud)? {
        None => Err(reject(
            RejectCode::DovutoNonPresente,
            format!("no live position with IUD {iud} to be {verb}"),
        )),
        Some(cur) if cur.status != PositionStatus::Active.as_str() => Err(reject(
            RejectCode::DovutoNonPresente,
            format!(
                "position with IUD {iud} is {} and cannot be {verb}",
                cur.status
            ),
        )),
        Some(cur) => Ok(cur),
    })
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
        Write::Receipt(r) => store_one(tx, r, ts).map(Written::Receipt),
        Write::Activation(position) => {
            tx.prepare_cached(
                "UPDATE positions SET activated_at = ?2, activations = activations + 1 WHERE id = ?1",
            )?
            .execute(params![position, ts])?;
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

const RECEIPT_TARGET_LIVE: &str = "SELECT id, status, amount_cents, debt_type FROM positions
     WHERE entity = ?1 AND iuv = ?2 AND status <> 'annulled'";
const RECEIPT_TARGET_ANNULLED: &str = "SELECT id, status, amount_cents, debt_type FROM positions
     WHERE entity = ?1 AND iuv = ?2 AND status = 'annulled' ORDER BY id DESC LIMIT 1";

/// One receipt inside the batch's transaction.
fn store_one(tx: &Connection, r: &OwnedReceipt, ts: &str) -> Result<ReceiptStored> {
    let iuv = r.notice_number.iuv();
    // The live position, else the latest annulled one; two queries, each on its partial index
    // (one query with an ORDER BY on status would scan the table).
    let lookup = |sql: &str| {
        tx.prepare_cached(sql)?
            .query_row(params![r.entity, iuv.as_str()], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()
    };
    let target = match lookup(RECEIPT_TARGET_LIVE)? {
        Some(live) => Some(live),
        None => lookup(RECEIPT_TARGET_ANNULLED)?,
    };
    let (position, issue) = match &target {
        None => (None, Some(ReceiptIssue::UnknownNotice)),
        Some((id, status, _, _)) if status == PositionStatus::Annulled.as_str() => {
            (Some(*id), Some(ReceiptIssue::Annulled))
        }
        Some((id, status, _, _)) if status == PositionStatus::Paid.as_str() => {
            (Some(*id), Some(ReceiptIssue::AlreadyPaid))
        }
        Some((id, _, cents, _)) if *cents != r.amount_cents => (
            Some(*id),
            Some(ReceiptIssue::AmountMismatch {
                expected_cents: *cents,
            }),
        ),
        Some((id, _, _, _)) => (Some(*id), None),
    };
    let debt_type = target.as_ref().and_then(|t| t.3.as_deref());
    let inserted = tx
        .prepare_cached(
            "INSERT INTO receipts (entity, receipt_id, notice_number, iuv, position_id, amount_cents, psp_id, psp_name, payment_date, operation, issue, xml, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            r.entity,
            r.receipt_id,
            r.notice_number.as_str(),
            iuv.as_str(),
            position,
            r.amount_cents,
            r.psp_id,
            r.psp_name,
            r.payment_date,
            r.operation,
            issue.as_ref().map(|i| i.as_str()),
            r.xml,
            ts
        ])?;
    if inserted == 0 {
        return Ok(ReceiptStored::Duplicate);
    }
    let receipt = tx.last_insert_rowid();
    let source = format!("receipt:{}", r.receipt_id);
    if let (Some(pos), None) = (position, &issue) {
        tx.prepare_cached(
            "UPDATE positions SET status = 'paid', version = version + 1, updated_at = ?2 WHERE id = ?1",
        )?
        .execute(params![pos, ts])?;
        history(tx, pos, "P", &source, None, ts, None)?;
    }
    let payload = serde_json::json!({
        "receipt": receipt,
        "receipt_id": r.receipt_id,
        "notice_number": r.notice_number.as_str(),
        "position": position,
        "amount_cents": r.amount_cents,
        "issue": issue,
    });
    for to in r.deliver_to.iter().filter(|d| d.accepts(debt_type)) {
        tx.prepare_cached(
            "INSERT INTO deliveries (pipeline, entity, receipt, idempotency_key, status, next_attempt_at, created_at, updated_at, secondary)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?5, ?6)",
        )?
        .execute(params![to.pipeline, to.entity, receipt, r.receipt_id, ts, to.secondary])?;
    }
    tx.prepare_cached(
        "INSERT INTO events (kind, entity, subject, payload, at) VALUES ('receipt.stored', ?1, ?2, ?3, ?4)",
    )?
    .execute(params![r.entity, r.notice_number.as_str(), payload.to_string(), ts])?;
    Ok(match (position, issue) {
        (Some(position), None) => ReceiptStored::Paid { receipt, position },
        (_, Some(issue)) => ReceiptStored::Flagged { receipt, issue },
        (None, None) => ReceiptStored::Flagged {
            receipt,
            issue: ReceiptIssue::UnknownNotice,
        },
    })
}

fn history(
    tx: &Connection,
    position_id: i64,
    action: &str,
    source: &str,
    flow_id: Option<i64>,
    ts: &str,
    previous: Option<&str>,
) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO position_history (position_id, action, source, flow_id, at, previous_data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    stmt.execute(params![position_id, action, source, flow_id, ts, previous])?;
    Ok(())
}

fn insert(
    tx: &Connection,
    entity: &EntityKey<'_>,
    flow_id: i64,
    ts: &str,
    source: &str,
    r: &ChunkRow,
    counter: &mut Counter,
) -> Result<RowOutcome> {
    let d = r;
    let (iuv, generated) = match (&d.iuv, d.generate_iuv) {
        (Some(iuv), _) => (Some(iuv.clone()), false),
        (None, true) => (Some(counter.take(entity.segregation_code)?), true),
        (None, false) => (None, false),
    };
    let notice = iuv.as_ref().and_then(|i| i.notice_number());
    let mut stmt = tx.prepare_cached(
        "INSERT INTO positions (entity, iud, iuv, iuv_generated, status, debt_type, amount_cents, due_date, payer_id, data, version, flow_id, created_by, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?7, ?8, ?9, 1, ?10, ?11, ?12, ?12)
         ON CONFLICT DO NOTHING",
    )?;
    let n = stmt.execute(params![
        entity.ipa_code,
        d.iud,
        iuv.as_ref().map(|i| i.as_str()),
        generated as i64,
        d.debt_type,
        d.amount.cents(),
        d.due_date.map(|d| d.to_string()),
        d.payer_id,
        r.data,
        flow_id,
        source,
        ts
    ])?;
    if n == 0 {
        return Ok(if live(tx, entity.ipa_code, &d.iud)?.is_some() {
            reject(
                RejectCode::IudDuplicato,
                format!("IUD {} already has a live position", d.iud),
            )
        } else {
            reject(
                RejectCode::IuvDuplicato,
                format!(
                    "IUV {} already belongs to a live position",
                    iuv.as_ref().map(|i| i.as_str()).unwrap_or("")
                ),
            )
        });
    }
    let id = tx.last_insert_rowid();
    Ok(RowOutcome::Accepted {
        position_id: id,
        iuv,
        notice_number: notice,
        generated,
    })
}

fn modify(
    tx: &Connection,
    entity: &EntityKey<'_>,
    flow_id: i64,
    ts: &str,
    source: &str,
    r: &ChunkRow,
) -> Result<RowOutcome> {
    let d = r;
    let cur = match active(tx, entity, &d.iud, "modified")? {
        Ok(cur) => cur,
        Err(refusal) => return Ok(refusal),
    };
    if cur.debt_type != d.debt_type {
        return Ok(reject(
            RejectCode::TipoDovutoNonModificabile,
            format!(
                "tipoDovuto cannot change from {} to {} on modify",
                cur.debt_type, d.debt_type
            ),
        ));
    }
    let iuv = match (&d.iuv, &cur.iuv) {
        (Some(new), Some(old)) if new.as_str() != old => {
            return Ok(reject(
                RejectCode::Iuv,
                format!("IUV cannot change on modify (position has {old}, row has {new})"),
            ))
        }
        (Some(new), _) => Some(new.clone()),
        // A hub-generated IUV is kept when the row leaves it empty; an entity-supplied one
        // cannot be blanked (MyPay's PAA_IMPORT_IUV_NO_NULLABLE).
        (None, Some(old)) if cur.iuv_generated => Some(
            Iuv::parse(old)
                .map_err(|e| StoreError::Corrupt(format!("position {}: {e}", cur.id)))?,
        ),
        (None, Some(old)) => {
            return Ok(reject(
                RejectCode::IuvNoNullable,
                format!("the position's IUV {old} cannot be blanked"),
            ))
        }
        (None, None) => None,
    };
    let notice = iuv.as_ref().and_then(|i| i.notice_number());
    let mut stmt = tx.prepare_cached(
        "UPDATE positions SET iuv = ?2, amount_cents = ?3, due_date = ?4, payer_id = ?5, data = ?6,
         version = version + 1, flow_id = ?7, updated_at = ?8 WHERE id = ?1",
    )?;
    stmt.execute(params![
        cur.id,
        iuv.as_ref().map(|i| i.as_str()),
        d.amount.cents(),
        d.due_date.map(|d| d.to_string()),
        d.payer_id,
        r.data,
        flow_id,
        ts
    ])?;
    history(
        tx,
        cur.id,
        Action::Modify.as_str(),
        source,
        Some(flow_id),
        ts,
        Some(&cur.data),
    )?;
    Ok(RowOutcome::Accepted {
        position_id: cur.id,
        iuv,
        notice_number: notice,
        generated: false,
    })
}

fn annul(
    tx: &Connection,
    entity: &EntityKey<'_>,
    flow_id: i64,
    ts: &str,
    source: &str,
    d: &ChunkRow,
) -> Result<RowOutcome> {
    let cur = match active(tx, entity, &d.iud, "annulled")? {
        Ok(cur) => cur,
        Err(refusal) => return Ok(refusal),
    };
    let mut stmt = tx.prepare_cached(
        "UPDATE positions SET status = 'annulled', version = version + 1, flow_id = ?2, updated_at = ?3 WHERE id = ?1",
    )?;
    stmt.execute(params![cur.id, flow_id, ts])?;
    history(
        tx,
        cur.id,
        Action::Annul.as_str(),
        source,
        Some(flow_id),
        ts,
        None,
    )?;
    let iuv = cur.iuv.as_deref().and_then(|s| Iuv::parse(s).ok());
    Ok(RowOutcome::Accepted {
        position_id: cur.id,
        notice_number: iuv.as_ref().and_then(|i| i.notice_number()),
        iuv,
        generated: false,
    })
}

#[cfg(test)]
mod tests {
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
        s.apply_chunk(flow_id, &key(), rows, &mut |o| {
            got = o.to_vec();
            Ok(Checkpoint {
                rows_done: o.len() as u64,
                ..Default::default()
            })
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

    fn code_of(o: &RowOutcome) -> RejectCode {
        match o {
            RowOutcome::Rejected(r) => r.code,
            other => panic!("not rejected: {other:?}"),
        }
    }

    #[test]
    fn generated_iuvs_follow_the_counter_and_a_failed_chunk_consumes_nothing() {
        let (_d, s) = store();
        let f = flow(&s, "F1");
        let out = apply(
            &s,
            f,
            &[
                row(Action::Insert, "A", 100, true),
                row(Action::Insert, "B", 100, true),
            ],
        );
        assert_eq!(
            iuv_of(&out[0]),
            Iuv::generate(key().segregation_code, 1).unwrap().as_str()
        );
        assert_eq!(
            iuv_of(&out[1]),
            Iuv::generate(key().segregation_code, 2).unwrap().as_str()
        );

        // The callback fails (outcome files could not be written): nothing of the chunk stays.
        let err = s.apply_chunk(
            f,
            &key(),
            &[row(Action::Insert, "C", 100, true)],
            &mut |_| Err("disk full".into()),
        );
        assert!(matches!(err, Err(StoreError::Callback(m)) if m == "disk full"));
        assert!(s
            .positions("c_g224", &PositionQuery::Iud("C"))
            .unwrap()
            .is_empty());
        assert_eq!(s.flow(f).unwrap().unwrap().progress.rows_done, 2);

        // The counter value the failed chunk drew was never committed, so it is handed out now.
        let out = apply(&s, f, &[row(Action::Insert, "C", 100, true)]);
        assert_eq!(
            iuv_of(&out[0]),
            Iuv::generate(key().segregation_code, 3).unwrap().as_str()
        );
        let p = &s.positions("c_g224", &PositionQuery::Iud("C")).unwrap()[0];
        assert_eq!(
            p.notice_number.as_deref(),
            Some(format!("3{}", iuv_of(&out[0])).as_str())
        );
        assert_eq!(
            p.dovuto.iuv.as_ref().map(|i| i.as_str().to_string()),
            Some(iuv_of(&out[0]))
        );
        let by_notice = s
            .positions(
                "c_g224",
                &PositionQuery::NoticeNumber(p.notice_number.as_deref().unwrap()),
            )
            .unwrap();
        assert_eq!(by_notice[0].iud, "C");
    }

    #[test]
    fn duplicates_modify_annul_and_history() {
        let (_d, s) = store();
        let f1 = flow(&s, "F1");
        apply(&s, f1, &[row(Action::Insert, "A", 100, true)]);
        let f2 = flow(&s, "F2");
        let out = apply(
            &s,
            f2,
            &[
                row(Action::Insert, "A", 100, true),
                row(Action::Modify, "A", 250, false),
                row(Action::Modify, "NOPE", 1, false),
                row(Action::Annul, "A", 250, false),
                row(Action::Modify, "A", 300, false),
                row(Action::Insert, "A", 400, false),
            ],
        );
        assert_eq!(code_of(&out[0]), RejectCode::IudDuplicato);
        assert!(matches!(out[1], RowOutcome::Accepted { .. }));
        assert_eq!(code_of(&out[2]), RejectCode::DovutoNonPresente);
        assert!(matches!(out[3], RowOutcome::Accepted { .. }));
        assert_eq!(
            code_of(&out[4]),
            RejectCode::DovutoNonPresente,
            "an annulled position cannot be modified"
        );
        assert!(
            matches!(out[5], RowOutcome::Accepted { .. }),
            "an annulled IUD is free again"
        );

        let all = s.positions("c_g224", &PositionQuery::Iud("A")).unwrap();
        assert_eq!(all.len(), 2);
        let old = &all[0];
        assert_eq!(old.status, PositionStatus::Annulled);
        assert_eq!(old.amount_cents, 250);
        assert_eq!(old.version, 3);
        let h = s.history(old.id).unwrap();
        assert_eq!(
            h.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["I", "M", "A"]
        );
        assert_eq!(h[0].flow_id, Some(f1));
        assert_eq!(h[1].flow_id, Some(f2));
        assert_eq!(
            h[1].previous.as_ref().unwrap()["amount"],
            100,
            "the modify kept the replaced data"
        );
        assert_eq!(old.history_count, 3);
        assert_eq!(all[1].status, PositionStatus::Active);
        assert_eq!(all[1].amount_cents, 400);
    }

    #[test]
    fn a_supplied_iuv_cannot_be_used_twice() {
        let (_d, s) = store();
        let f = flow(&s, "F1");
        let mut a = row(Action::Insert, "A", 100, false);
        let iuv = Iuv::generate(key().segregation_code, 77).unwrap();
        a.iuv = Some(iuv.clone());
        let mut b = a.clone();
        b.iud = "B".into();
        let out = apply(&s, f, &[a, b]);
        assert_eq!(iuv_of(&out[0]), iuv.as_str());
        assert_eq!(code_of(&out[1]), RejectCode::IuvDuplicato);
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

    /// `erp` takes every receipt, `export` only TARI, `mensa` only MENSA.
    fn pipelines() -> &'static [DeliverTo] {
        static P: std::sync::OnceLock<Vec<DeliverTo>> = std::sync::OnceLock::new();
        P.get_or_init(|| {
            vec![
                DeliverTo::all("erp", "c_g224"),
                DeliverTo {
                    debt_types: vec!["TARI".into()],
                    ..DeliverTo::all("export", "c_g224")
                },
                DeliverTo {
                    debt_types: vec!["MENSA".into()],
                    ..DeliverTo::all("mensa", "c_g224")
                },
            ]
        })
    }

    fn receipt<'a>(notice: &'a NoticeNumber, id: &'a str, cents: i64) -> NewReceipt<'a> {
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
            deliver_to: pipelines(),
        }
    }

    #[test]
    fn receipts_pay_once_and_every_anomaly_is_kept() {
        let (_d, s) = store();
        let f = flow(&s, "F1");
        let out = apply(
            &s,
            f,
            &[
                row(Action::Insert, "A", 1250, true),
                row(Action::Insert, "B", 500, true),
            ],
        );
        let na = NoticeNumber::from_iuv17(&Iuv::parse(&iuv_of(&out[0])).unwrap()).unwrap();
        let nb = NoticeNumber::from_iuv17(&Iuv::parse(&iuv_of(&out[1])).unwrap()).unwrap();

        let p = s.position_by_notice("c_g224", &na).unwrap().unwrap();
        assert_eq!(p.iud, "A");
        s.record_activation(p.id).unwrap();
        s.record_activation(p.id).unwrap();
        let p = s.position_by_notice("c_g224", &na).unwrap().unwrap();
        assert_eq!(p.activations, 2);
        assert!(p.activated_at.is_some());

        let paid = s.store_receipt(&receipt(&na, "R1", 1250)).unwrap();
        assert!(matches!(paid, ReceiptStored::Paid { position, .. } if position == p.id));
        assert_eq!(
            s.store_receipt(&receipt(&na, "R1", 1250)).unwrap(),
            ReceiptStored::Duplicate
        );
        let p = s.position_by_notice("c_g224", &na).unwrap().unwrap();
        assert_eq!(p.status, PositionStatus::Paid);
        assert_eq!(
            s.history(p.id).unwrap().last().unwrap().source,
            "receipt:R1"
        );

        let twice = s.store_receipt(&receipt(&na, "R2", 1250)).unwrap();
        assert!(matches!(
            twice,
            ReceiptStored::Flagged {
                issue: ReceiptIssue::AlreadyPaid,
                ..
            }
        ));
        let wrong = s.store_receipt(&receipt(&nb, "R3", 499)).unwrap();
        assert!(matches!(
            wrong,
            ReceiptStored::Flagged {
                issue: ReceiptIssue::AmountMismatch {
                    expected_cents: 500
                },
                ..
            }
        ));
        assert_eq!(
            s.position_by_notice("c_g224", &nb).unwrap().unwrap().status,
            PositionStatus::Active
        );
        let unknown = NoticeNumber::parse("301000000000012373").unwrap();
        let lost = s.store_receipt(&receipt(&unknown, "R4", 100)).unwrap();
        assert!(matches!(
            lost,
            ReceiptStored::Flagged {
                issue: ReceiptIssue::UnknownNotice,
                ..
            }
        ));

        let events = s.events_after(0, 100).unwrap();
        assert_eq!(
            events.len(),
            4,
            "one event per stored receipt, none for the duplicate"
        );
        assert!(events.iter().all(|e| e.kind == "receipt.stored"));
        assert_eq!(events[0].payload["receipt_id"], "R1");
        assert_eq!(events[1].payload["issue"]["issue"], "already_paid");
        assert_eq!(s.events_after(events[1].id, 100).unwrap().len(), 2);
    }

    #[test]
    fn an_annulled_notice_is_found_as_annulled() {
        let (_d, s) = store();
        let f = flow(&s, "F1");
        let out = apply(&s, f, &[row(Action::Insert, "A", 100, true)]);
        let n = NoticeNumber::from_iuv17(&Iuv::parse(&iuv_of(&out[0])).unwrap()).unwrap();
        apply(&s, f, &[row(Action::Annul, "A", 100, false)]);
        let p = s.position_by_notice("c_g224", &n).unwrap().unwrap();
        assert_eq!(p.status, PositionStatus::Annulled);
        let late = s.store_receipt(&receipt(&n, "R9", 100)).unwrap();
        assert!(matches!(
            late,
            ReceiptStored::Flagged {
                issue: ReceiptIssue::Annulled,
                ..
            }
        ));
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
    }

    #[test]
    fn deliveries_follow_the_debt_type_filter() {
        let (_d, s) = store();
        let f = flow(&s, "F1");
        let out = apply(&s, f, &[row(Action::Insert, "A", 100, true)]);
        let n = NoticeNumber::from_iuv17(&Iuv::parse(&iuv_of(&out[0])).unwrap()).unwrap();
        s.store_receipt(&receipt(&n, "R1", 100)).unwrap();
        let unknown = NoticeNumber::parse("301000000000012373").unwrap();
        s.store_receipt(&receipt(&unknown, "R2", 100)).unwrap();
        let pending = |p: &str| {
            s.deliveries(DeliveryStatus::Pending, None, Some(p), 10)
                .unwrap()
                .into_iter()
                .map(|d| d.idempotency_key)
                .collect::<Vec<_>>()
        };
        assert_eq!(pending("erp"), ["R2", "R1"], "unfiltered: every receipt");
        assert_eq!(
            pending("export"),
            ["R1"],
            "TARI only; an unknown notice has no type"
        );
        assert!(pending("mensa").is_empty());
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
        assert_eq!(s.events_after(0, 1000).unwrap().len(), 64);
        let m = s.metrics().unwrap();
        assert_eq!(m.receipts, vec![("c_g224".to_string(), 64, 32)]);
    }

    #[test]
    fn an_export_keeps_its_receipts_until_written_and_the_next_starts_after_it() {
        let (_d, s) = store();
        let f = flow(&s, "F1");
        let out = apply(
            &s,
            f,
            &[
                row(Action::Insert, "A", 100, true),
                row(Action::Insert, "B", 200, true),
                row(Action::Insert, "C", 300, true),
            ],
        );
        let n: Vec<NoticeNumber> = out
            .iter()
            .map(|o| NoticeNumber::from_iuv17(&Iuv::parse(&iuv_of(o)).unwrap()).unwrap())
            .collect();
        assert!(s.open_export("export", "c_g224", false).unwrap().is_none());
        let empty = s.open_export("export", "c_g224", true).unwrap().unwrap();
        assert_eq!(empty.receipts, 0);
        s.finish_export(empty.id).unwrap();

        s.store_receipt(&receipt(&n[0], "R1", 100)).unwrap();
        s.store_receipt(&receipt(&n[1], "R2", 200)).unwrap();
        let first = s.open_export("export", "c_g224", false).unwrap().unwrap();
        assert_eq!((first.receipts, first.resumed), (2, false));
        assert_eq!(s.unfinished_export("export").unwrap().unwrap().id, first.id);
        // A receipt arriving while the file is written belongs to the next file.
        s.store_receipt(&receipt(&n[2], "R3", 300)).unwrap();
        s.fail_export(first.id, "disk full").unwrap();
        // The crash: the open export is found again, with the same receipts and name.
        let again = s.open_export("export", "c_g224", false).unwrap().unwrap();
        assert_eq!(again.id, first.id);
        assert!(again.resumed);
        assert_eq!(again.created_at, first.created_at);
        let items = s.export_items(again.id).unwrap();
        assert_eq!(items.len(), 2);
        s.finish_export(again.id).unwrap();
        let delivered = s
            .deliveries(DeliveryStatus::Delivered, None, Some("export"), 10)
            .unwrap();
        assert_eq!(delivered.len(), 2);

        let next = s.open_export("export", "c_g224", false).unwrap().unwrap();
        assert_ne!(next.id, first.id);
        let items = s.export_items(next.id).unwrap();
        assert_eq!(items.len(), 1);
        let doc = s.receipt_document(items[0].receipt).unwrap().unwrap();
        assert_eq!(doc.receipt.receipt_id, "R3");
        s.finish_export(next.id).unwrap();
        assert!(s.open_export("export", "c_g224", false).unwrap().is_none());
        assert!(s.unfinished_export("export").unwrap().is_none());
    }

    #[test]
    fn the_outbox_claims_leases_retries_and_replays() {
        let (_d, s) = store();
        let f = flow(&s, "F1");
        let out = apply(&s, f, &[row(Action::Insert, "A", 1250, true)]);
        let n = NoticeNumber::from_iuv17(&Iuv::parse(&iuv_of(&out[0])).unwrap()).unwrap();
        s.store_receipt(&receipt(&n, "R1", 1250)).unwrap();
        assert_eq!(
            s.store_receipt(&receipt(&n, "R1", 1250)).unwrap(),
            ReceiptStored::Duplicate
        );

        let claimed = s
            .claim_deliveries(
                "erp",
                "9999-01-01T00:00:00.000Z",
                "9999-01-01T00:01:00.000Z",
                10,
            )
            .unwrap();
        assert_eq!(
            claimed.len(),
            1,
            "one delivery per pipeline, none for the duplicate"
        );
        let d = &claimed[0];
        assert_eq!(
            (d.idempotency_key.as_str(), d.entity.as_str()),
            ("R1", "c_g224")
        );
        assert!(
            s.claim_deliveries(
                "erp",
                "9999-01-01T00:00:30.000Z",
                "9999-01-01T00:02:00.000Z",
                10
            )
            .unwrap()
            .is_empty(),
            "leased"
        );
        // The worker died: the lease runs out and another claims it.
        let again = s
            .claim_deliveries(
                "erp",
                "9999-01-01T00:01:30.000Z",
                "9999-01-01T00:03:00.000Z",
                10,
            )
            .unwrap();
        assert_eq!(again.len(), 1);

        s.record_attempt(
            d.id,
            &Attempt::Retry {
                at: "9999-02-01T00:00:00.000Z".into(),
                error: "HTTP 500".into(),
            },
        )
        .unwrap();
        assert!(
            s.claim_deliveries(
                "erp",
                "9999-01-15T00:00:00.000Z",
                "9999-01-15T00:01:00.000Z",
                10
            )
            .unwrap()
            .is_empty(),
            "not due yet"
        );
        let due = s
            .claim_deliveries(
                "erp",
                "9999-02-01T00:00:00.000Z",
                "9999-02-01T00:01:00.000Z",
                10,
            )
            .unwrap();
        assert_eq!(due[0].attempts, 1);
        assert_eq!(due[0].last_error.as_deref(), Some("HTTP 500"));

        s.record_attempt(
            d.id,
            &Attempt::Dead {
                error: "HTTP 400: bad".into(),
            },
        )
        .unwrap();
        let dead = s
            .deliveries(DeliveryStatus::Dead, Some("c_g224"), None, 10)
            .unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 2);
        assert!(s
            .deliveries(DeliveryStatus::Dead, Some("c_d530"), None, 10)
            .unwrap()
            .is_empty());
        assert_eq!(s.replay(&[], Some("c_g224")).unwrap(), 1);
        let back = s.delivery(d.id).unwrap().unwrap();
        assert_eq!((back.status, back.attempts), (DeliveryStatus::Pending, 0));
        let again = s
            .claim_deliveries(
                "erp",
                "9999-03-01T00:00:00.000Z",
                "9999-03-01T00:01:00.000Z",
                10,
            )
            .unwrap();
        s.record_attempt(again[0].id, &Attempt::Delivered).unwrap();
        let done = s.delivery(d.id).unwrap().unwrap();
        assert_eq!(done.status, DeliveryStatus::Delivered);
        assert!(done.delivered_at.is_some());

        let doc = s.receipt_document(d.receipt).unwrap().unwrap();
        assert_eq!(doc.iud.as_deref(), Some("A"));
        assert_eq!(doc.debt_type.as_deref(), Some("TARI"));
        assert_eq!(doc.xml, "<receipt/>");
        assert_eq!(doc.receipt.receipt_id, "R1");
    }
}
