//! The embedded store: one SQLite file in WAL mode, one writer connection (with group commit for
//! the node's writes), read connections beside it, and a checkpointer thread.

use crate::db::{apply_write, Access, Arg, Conn, Dialect, Driver, Row, Write, Written};
use crate::ops::now;
use crate::*;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite_0001_init.sql")),
    (2, include_str!("migrations/sqlite_0002_payments.sql")),
    (3, include_str!("migrations/sqlite_0003_outbox.sql")),
    (4, include_str!("migrations/sqlite_0004_exports.sql")),
    (5, include_str!("migrations/sqlite_0005_streams_jobs.sql")),
    (6, include_str!("migrations/sqlite_0006_api.sql")),
    (7, include_str!("migrations/sqlite_0007_parsed.sql")),
    (8, include_str!("migrations/sqlite_0008_metric_counts.sql")),
    (9, include_str!("migrations/sqlite_0009_held.sql")),
    (10, include_str!("migrations/sqlite_0010_file_attempts.sql")),
    (11, include_str!("migrations/sqlite_0011_reports.sql")),
    (
        12,
        include_str!("migrations/sqlite_0012_report_deliveries.sql"),
    ),
    (
        13,
        include_str!("migrations/sqlite_0013_receipt_id_any.sql"),
    ),
    (14, include_str!("migrations/sqlite_0014_treasury.sql")),
    (
        15,
        include_str!("migrations/sqlite_0015_reconciliation.sql"),
    ),
    (16, include_str!("migrations/sqlite_0016_payer_index.sql")),
    (17, include_str!("migrations/sqlite_0017_ws_requests.sql")),
    (18, include_str!("migrations/sqlite_0018_expiry.sql")),
    (19, include_str!("migrations/sqlite_0019_secondary.sql")),
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
            r.set_prepared_statement_cache_capacity(64);
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

    /// A free read connection, else the next one in turn.
    fn read_conn(&self) -> std::sync::MutexGuard<'_, Connection> {
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
        lock_any(&self.conn)
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

impl Driver for SqliteStore {
    fn run<T>(&self, access: Access, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        match access {
            Access::Read => f(&mut Lite(&self.read_conn())),
            Access::Write => f(&mut Lite(&self.lock())),
            // A lease is not money: losing one to a power cut only means a redelivery, so it does
            // not wait for the disk.
            Access::Lease => {
                let conn = self.lock();
                conn.execute_batch("PRAGMA synchronous=NORMAL")?;
                let out = f(&mut Lite(&conn));
                conn.execute_batch("PRAGMA synchronous=FULL")?;
                out
            }
            Access::Tx => {
                let mut conn = self.lock();
                let tx = conn.transaction()?;
                let out = f(&mut Lite(&tx))?;
                tx.commit()?;
                drop(conn);
                self.checkpointer.nudge();
                Ok(out)
            }
        }
    }

    /// Group commit: whoever gets the connection commits every write queued so far in one
    /// transaction (one fsync for all); the others find their outcome set when they get it.
    fn commit_hot(&self, write: Write) -> Result<Written> {
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
        // A batch of activations only is bookkeeping, not money: it is durable once written to
        // the WAL (a crash of the process keeps it) and reaches the disk with the next fsync (a
        // receipt's commit, or a checkpoint), so a power cut can lose the last activations but
        // never a receipt, and never out of order. Receipts always wait for fsync.
        let money = batch.iter().any(|s| matches!(s.write, Write::Receipt(_)));
        let durability = if money {
            "PRAGMA synchronous=FULL"
        } else {
            "PRAGMA synchronous=NORMAL"
        };
        let outcomes = match conn.execute_batch(durability) {
            Ok(()) => commit_writes(&mut conn, &batch),
            Err(e) => batch
                .iter()
                .map(|_| Err(StoreError::Conflict(format!("{durability}: {e}"))))
                .collect(),
        };
        if !money {
            // Every other write on this connection waits for the disk.
            if let Err(e) = conn.execute_batch("PRAGMA synchronous=FULL") {
                tracing::error!("cannot restore synchronous=FULL: {e}");
            }
        }
        for (s, o) in batch.iter().zip(outcomes) {
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
}

/// Commits a batch of writes in one transaction. Should one fail, the batch is rolled back and
/// each write is committed alone, so a failure stays with its own write.
fn commit_writes(conn: &mut Connection, batch: &[Arc<WriteSlot>]) -> Vec<Result<Written>> {
    let mut commit = |slots: &[Arc<WriteSlot>]| {
        let tx = conn.transaction()?;
        let ts = now();
        let done = slots
            .iter()
            .map(|slot| apply_write(&mut Lite(&tx), &slot.write, &ts))
            .collect::<Result<Vec<_>>>()?;
        tx.commit()?;
        Ok::<_, StoreError>(done)
    };
    match commit(batch) {
        Ok(done) => done.into_iter().map(Ok).collect(),
        Err(_) if batch.len() > 1 => batch
            .chunks(1)
            .map(|one| commit(one).map(|mut done| done.remove(0)))
            .collect(),
        Err(e) => vec![Err(e)],
    }
}

/// A connection, or a transaction on the writer: statements stay prepared in the connection's
/// cache.
struct Lite<'a>(&'a Connection);

impl Lite<'_> {
    /// A cached statement with `args` bound. `$N` parameters are named in SQLite and numbered
    /// by first use, so each is bound by its name.
    fn prepare(&self, sql: &str, args: &[Arg<'_>]) -> Result<rusqlite::CachedStatement<'_>> {
        let mut stmt = self.0.prepare_cached(sql)?;
        if !sql.contains('$') {
            // `?` and `?NNN` parameters are numbered by place: bound without their names (finding
            // a name walks every name, quadratic in a statement of hundreds of parameters).
            for i in 1..=stmt.parameter_count() {
                let arg = args
                    .get(i - 1)
                    .ok_or(rusqlite::Error::InvalidParameterCount(i, args.len()))?;
                stmt.raw_bind_parameter(i, arg)?;
            }
            return Ok(stmt);
        }
        for i in 1..=stmt.parameter_count() {
            let n = stmt
                .parameter_name(i)
                .and_then(|name| name.get(1..)?.parse::<usize>().ok())
                .unwrap_or(i);
            let arg = n
                .checked_sub(1)
                .and_then(|k| args.get(k))
                .ok_or(rusqlite::Error::InvalidParameterCount(n, args.len()))?;
            stmt.raw_bind_parameter(i, arg)?;
        }
        Ok(stmt)
    }
}

impl Conn for Lite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        Ok(self.prepare(sql, args)?.raw_execute()? as u64)
    }

    fn insert(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<i64>> {
        let n = self.execute(sql, args)?;
        Ok((n > 0).then(|| self.0.last_insert_rowid()))
    }

    fn query(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.prepare(sql, args)?;
        let mut rows = stmt.raw_query();
        while let Some(r) = rows.next()? {
            each(&LiteRow(r))?;
        }
        Ok(())
    }
}

struct LiteRow<'a, 'b>(&'a rusqlite::Row<'b>);

impl Row for LiteRow<'_, '_> {
    fn int(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.0.get(i)?)
    }

    fn text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.0.get(i)?)
    }

    fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.0.get(i)?)
    }
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match *self {
            Arg::Null => ToSqlOutput::Owned(Value::Null),
            Arg::Int(i) => ToSqlOutput::Owned(Value::Integer(i)),
            Arg::Bool(b) => ToSqlOutput::Owned(Value::Integer(i64::from(b))),
            Arg::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Ints(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "an id list binds on PostgreSQL only".into(),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    //! SQLite-only behaviour; what every store must do is in `tests/suite.rs`.
    use super::*;
    use crate::ops;
    use snodo_core::dovuto::{Subject, SubjectKind};
    use snodo_core::Amount;

    /// SQLite's plan for one of the store's statements (`$n` placeholders), a step per line.
    fn query_plan(conn: &Connection, sql: &str, args: &[Arg]) -> Vec<String> {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {}", sql.replace('$', "?")))
            .unwrap()
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        (dir, s)
    }

    fn key() -> EntityKey<'static> {
        EntityKey {
            ipa_code: "c_g224",
            segregation_code: SegregationCode::parse("01").unwrap(),
            payment_in_progress: std::time::Duration::from_secs(1800),
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
                transfers: Vec::new(),
                document_hash: None,
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
        for sql in [
            crate::receipts::TARGET_LIVE.sqlite,
            crate::receipts::TARGET_ANNULLED,
        ] {
            let plan = plan_of(sql, &[&"c_g224", &"x"]);
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN")),
                "{sql}: {plan:?}"
            );
        }
        // A resent receipt id finds its first copy and the conflicting ones by index.
        let first = crate::receipts::FIRST_COPY.sqlite.replace('$', "?");
        let copies = "SELECT id FROM receipts WHERE conflict_of = ?1 ORDER BY id";
        for plan in [plan_of(&first, &[&"c_g224", &"x"]), plan_of(copies, &[&1])] {
            assert!(
                plan.iter()
                    .all(|step| !step.starts_with("SCAN") && !step.contains("TEMP B-TREE")),
                "{plan:?}"
            );
        }
        // The held-receipts gauge walks the held rows alone, never the receipts.
        for plan in [
            plan_of(crate::events::HELD, &[]),
            plan_of(crate::receipts::HELD, &[&"c_g224", &10]),
        ] {
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN r")),
                "{plan:?}"
            );
        }
        // A claim must not sort the backlog: it walks the due index and stops at the limit.
        let plan = plan_of(crate::deliveries::CLAIM.sqlite, &[&"erp", &"z", &"z", &16]);
        assert!(
            plan.iter()
                .all(|step| !step.starts_with("SCAN") && !step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
        // Pruning finds its edge by walking the primary key from the newest end, no sort.
        let plan = plan_of(crate::events::PRUNE_EDGE, &[&1000]);
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
            "SELECT id FROM flows WHERE entity = ?1 AND iuf = ?2 AND stream = TRUE",
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
        let plan_of = |sql: &str, args: &[Arg]| query_plan(&conn, sql, args);
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
            let (sql, params) =
                ops::list_positions_query(crate::positions::COLUMNS, "c_g224", f, 0, 10).unwrap();
            let args: Vec<Arg> = params.iter().map(Arg::from).collect();
            let plan = plan_of(&sql, &args);
            assert!(
                plan.iter()
                    .all(|step| !step.starts_with("SCAN") && !step.contains("TEMP B-TREE")),
                "{f:?}: {plan:?}"
            );
        }
        let plan = plan_of(
            crate::receipts::AFTER,
            &[Arg::Text("c_g224"), Arg::Int(0), Arg::Int(10)],
        );
        assert!(
            plan.iter()
                .all(|step| !step.starts_with("SCAN r") && !step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_settlement_flow_s_lookups_search_indexes() {
        let (_d, s) = store();
        let conn = s.lock();
        let plan_of = |sql: &str, args: &[Arg]| query_plan(&conn, sql, args);
        let (e, iuv, iur) = (
            Arg::Text("c_d530"),
            Arg::Text("01000000000000001"),
            Arg::Text("R1"),
        );
        // Two keys a batch: the VALUES list is walked, every table searched by index.
        let values_only = |plan: &[String]| {
            plan.iter()
                .filter(|step| step.starts_with("SCAN"))
                .all(|step| step == "SCAN k" || step.starts_with("SCAN 2 CONSTANT ROWS"))
        };
        let mut a = vec![e, Arg::Text("PSP1"), Arg::Text("IUF1")];
        a.extend([iuv, iur, Arg::Int(2), iuv, iur, Arg::Int(1)]);
        let plan = plan_of(&crate::reports::lookup_sql(2, Dialect::Sqlite), &a);
        assert!(values_only(&plan), "{plan:?}");
        for index in [
            "SEARCH r USING INDEX receipts_receipt_id (entity=? AND receipt_id=?)",
            "SEARCH rp USING INDEX report_payments_key (entity=? AND iuv=? AND iur=? AND link_index=?)",
        ] {
            assert!(plan.iter().any(|step| step.starts_with(index)), "{index}: {plan:?}");
        }
        let plan = plan_of(
            &crate::reports::issued_sql(2, Dialect::Sqlite),
            &[e, iuv, iuv],
        );
        assert!(values_only(&plan), "{plan:?}");
        for index in ["positions_live_iuv", "positions_annulled_iuv"] {
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{index}: {plan:?}"
            );
        }
        // Another entity's receipt by its id alone (a secondary beneficiary's row).
        let plan = plan_of(
            &crate::reports::others_sql(2, Dialect::Sqlite),
            &[e, iuv, iur, iuv, iur],
        );
        assert!(values_only(&plan), "{plan:?}");
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX receipts_receipt_id_any (receipt_id=?)")),
            "{plan:?}"
        );
    }

    #[test]
    fn the_scrape_counts_on_indexes_and_never_scans_a_table() {
        let (_d, s) = store();
        let conn = s.lock();
        let plan_of = |sql: &str, args: &[Arg]| query_plan(&conn, sql, args);
        let scans = |plan: &[String]| {
            plan.iter()
                .filter(|step| {
                    ["receipts", "deliveries", "flows"]
                        .iter()
                        .any(|t| step.starts_with(&format!("SCAN {t}")))
                })
                .count()
        };
        let plan = plan_of(crate::events::SCRAPE_COUNTS, &[]);
        assert_eq!(scans(&plan), 0, "{plan:?}");
        let plan = plan_of(
            crate::events::SCRAPE_DELIVERIES,
            &[Arg::Text("2026-01-01T00:00:00.000Z")],
        );
        assert_eq!(scans(&plan), 0, "{plan:?}");
        // Each count is a range of the index that holds just what it counts.
        for index in [
            "USING COVERING INDEX deliveries_due (pipeline=? AND status=?)",
            "USING COVERING INDEX deliveries_leased (pipeline=? AND lease_until>?)",
            "USING COVERING INDEX deliveries_retried (pipeline=?)",
        ] {
            assert!(
                plan.iter()
                    .any(|step| step == &format!("SEARCH deliveries {index}")),
                "{index}: {plan:?}"
            );
        }
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
    fn a_bulk_chunk_stores_its_events_in_rows_of_a_thousand_and_reads_them_back_one_by_one() {
        let (_d, s) = store();
        let f = flow(&s, "F1");
        let mark = s.last_event_id().unwrap();
        let rows: Vec<ChunkRow> = (0..2_500)
            .map(|i| row(Action::Insert, &format!("B{i:04}"), 100 + i, true))
            .collect();
        apply(&s, f, &rows);
        let stored: i64 = s
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM events WHERE id > ?1 AND kind = 'positions.chunk'",
                [mark],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, 3, "2 500 positions in three stored rows");
        let e = s.events_after(mark, 100_000).unwrap();
        assert_eq!(e.len(), 2_500);
        assert!(e.iter().all(|x| x.kind == "position.created"));
        let subjects: Vec<&str> = e.iter().map(|x| x.subject.as_str()).collect();
        let expected: Vec<String> = (0..2_500).map(|i| format!("B{i:04}")).collect();
        assert_eq!(subjects, expected, "in row order");
        assert_eq!((e[999].part, e[1_000].part, e[2_499].part), (1_000, 1, 500));
        assert_ne!(e[999].id, e[1_000].id);
        assert_eq!(e[1_234].payload["amount_cents"], 1_334);
        // A reader asking for ten gets the first stored row whole, and resumes after it.
        let first = s.events_after(mark, 10).unwrap();
        assert_eq!(first.len(), 1_000);
        let next = s.events_after(first[0].id, 10).unwrap();
        assert_eq!(next[0].subject, "B1000");
    }

    #[test]
    fn activations_alone_skip_fsync_and_leave_the_writer_waiting_for_the_disk() {
        let (_d, s) = store();
        let f = flow(&s, "F1");
        apply(&s, f, &[row(Action::Insert, "A", 100, true)]);
        let synchronous = |s: &SqliteStore| -> i64 {
            s.lock()
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(synchronous(&s), 2, "FULL from the start");
        s.record_activation(1, Some("act")).unwrap();
        assert_eq!(
            synchronous(&s),
            2,
            "FULL again after an activation's commit"
        );
        let activations: i64 = s
            .lock()
            .query_row("SELECT activations FROM positions WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(activations, 1, "committed");
    }

    #[test]
    fn the_outbox_keeps_its_deliveries_when_it_learns_reports() {
        // A store at migration 11 with a pending and a delivered receipt delivery: migration 12
        // rebuilds the table; both stay as they were, and new ids follow the old ones.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
            )
            .unwrap();
            for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v <= 11) {
                conn.execute_batch(sql).unwrap();
                conn.execute("INSERT INTO schema_migrations VALUES (?1, 'x')", [v])
                    .unwrap();
            }
            conn.execute_batch(
                "INSERT INTO deliveries (id, pipeline, entity, receipt, idempotency_key, status, attempts,
                    next_attempt_at, created_at, updated_at, secondary)
                 VALUES (7, 'erp', 'e', 70, 'R70', 'pending', 2, 'a', 'a', 'a', 0),
                        (9, 'erp', 'e', 90, 'R90', 'delivered', 1, 'a', 'a', 'a', 1);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let kept = s.delivery(7).unwrap().unwrap();
        assert_eq!(
            (kept.receipt, kept.report, kept.attempts, kept.status),
            (Some(70), None, 2, DeliveryStatus::Pending)
        );
        assert_eq!(s.delivery(9).unwrap().unwrap().receipt, Some(90));
        let conn = s.lock();
        // A delivery is of a receipt or of a report, never both nor neither.
        for (receipt, report) in [("NULL", "NULL"), ("1", "2")] {
            let r = conn.execute_batch(&format!(
                "INSERT INTO deliveries (pipeline, entity, receipt, report, idempotency_key, status,
                    next_attempt_at, created_at, updated_at)
                 VALUES ('x', 'e', {receipt}, {report}, 'k', 'pending', 'a', 'a', 'a')"
            ));
            assert!(r.is_err(), "receipt {receipt}, report {report}");
        }
        conn.execute_batch(
            "INSERT INTO deliveries (pipeline, entity, report, idempotency_key, status,
                next_attempt_at, created_at, updated_at)
             VALUES ('rep', 'e', 5, 'k', 'pending', 'a', 'a', 'a')",
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 10);
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
