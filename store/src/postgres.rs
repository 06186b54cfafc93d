//! The shared store: PostgreSQL, for several hubs on one database.
//!
//! The sync `postgres` client runs its own small runtime and panics inside an async context, so
//! callers use it from blocking threads; the store itself opens and drops its connections on a
//! thread of its own, so creating or dropping a `PgStore` is safe anywhere.

use crate::ops::{
    self, check_rows_done, now, Arg, Live, NewPosition, Ops, OwnedReceipt, RawEvent, Target,
};
use crate::*;
use ::postgres::types::ToSql;
use ::postgres::{Client, GenericClient, NoTls, Row, Statement, Transaction};
use snodo_core::dovuto::Action;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/pg_0001_init.sql")),
    (2, include_str!("migrations/pg_0002_api.sql")),
];

/// Serialises migrations of hubs starting together (an arbitrary constant: "snodo" in ASCII).
const MIGRATION_LOCK: i64 = 0x0073_6e6f_646f;

/// Connections kept when the URL does not say `?pool=N`.
const DEFAULT_POOL: usize = 8;

type Params<'a> = [&'a (dyn ToSql + Sync)];

/// A connection with its prepared statements (a statement is prepared once per connection).
struct Conn {
    client: Client,
    stmts: HashMap<String, Statement>,
}

struct PoolState {
    idle: Vec<Conn>,
    open: usize,
}

pub struct PgStore {
    url: String,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

fn lock_any<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Splits `?pool=N` off the URL (the driver refuses parameters it does not know).
fn parse_url(url: &str) -> Result<(String, usize)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), DEFAULT_POOL));
    };
    let mut pool = DEFAULT_POOL;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("pool", n)) => {
                pool = n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    StoreError::Open(format!("pool={n}: expected a positive number"))
                })?;
            }
            _ => kept.push(pair),
        }
    }
    Ok(if kept.is_empty() {
        (base.to_string(), pool)
    } else {
        (format!("{base}?{}", kept.join("&")), pool)
    })
}

/// Prepares `sql` once per connection.
fn prep(
    stmts: &mut HashMap<String, Statement>,
    c: &mut impl GenericClient,
    sql: &str,
) -> Result<Statement> {
    if let Some(s) = stmts.get(sql) {
        return Ok(s.clone());
    }
    let s = c.prepare(sql)?;
    stmts.insert(sql.to_string(), s.clone());
    Ok(s)
}

/// An open transaction with its connection's statement cache.
struct Tx<'a, 'c> {
    tx: &'a mut Transaction<'c>,
    stmts: &'a mut HashMap<String, Statement>,
}

impl Tx<'_, '_> {
    fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        let st = prep(self.stmts, self.tx, sql)?;
        Ok(self.tx.query(&st, params)?)
    }

    fn opt(&mut self, sql: &str, params: &Params<'_>) -> Result<Option<Row>> {
        let st = prep(self.stmts, self.tx, sql)?;
        Ok(self.tx.query_opt(&st, params)?)
    }

    fn one(&mut self, sql: &str, params: &Params<'_>) -> Result<Row> {
        let st = prep(self.stmts, self.tx, sql)?;
        Ok(self.tx.query_one(&st, params)?)
    }

    fn exec(&mut self, sql: &str, params: &Params<'_>) -> Result<u64> {
        let st = prep(self.stmts, self.tx, sql)?;
        Ok(self.tx.execute(&st, params)?)
    }
}

impl Conn {
    fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        let st = prep(&mut self.stmts, &mut self.client, sql)?;
        Ok(self.client.query(&st, params)?)
    }

    fn opt(&mut self, sql: &str, params: &Params<'_>) -> Result<Option<Row>> {
        let st = prep(&mut self.stmts, &mut self.client, sql)?;
        Ok(self.client.query_opt(&st, params)?)
    }

    fn exec(&mut self, sql: &str, params: &Params<'_>) -> Result<u64> {
        let st = prep(&mut self.stmts, &mut self.client, sql)?;
        Ok(self.client.execute(&st, params)?)
    }

    /// Runs `f` in a transaction, committed when it returns Ok.
    fn tx<T>(&mut self, f: impl FnOnce(&mut Tx<'_, '_>) -> Result<T>) -> Result<T> {
        let mut tx = self.client.transaction()?;
        let out = f(&mut Tx {
            tx: &mut tx,
            stmts: &mut self.stmts,
        })?;
        tx.commit()?;
        Ok(out)
    }
}

/// Events written together at the end of a transaction (one statement, not one per row).
#[derive(Default)]
struct EventBuf {
    kind: Vec<String>,
    entity: Vec<String>,
    subject: Vec<String>,
    payload: Vec<String>,
    at: Vec<String>,
    correlation: Vec<Option<String>>,
}

impl EventBuf {
    fn push(&mut self, e: &NewEvent<'_>, ts: &str) {
        self.push_raw(&RawEvent::new(e, &e.payload.to_string()), ts);
    }

    fn push_raw(&mut self, e: &RawEvent<'_>, ts: &str) {
        self.kind.push(e.kind.into());
        self.entity.push(e.entity.into());
        self.subject.push(e.subject.into());
        self.payload.push(e.payload.into());
        self.at.push(ts.into());
        self.correlation.push(e.correlation.map(str::to_string));
    }

    fn flush(&mut self, tx: &mut Tx<'_, '_>) -> Result<()> {
        if self.kind.is_empty() {
            return Ok(());
        }
        tx.exec(
            "INSERT INTO events (kind, entity, subject, payload, at, correlation)
             SELECT k, e, s, p, a, c
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                  WITH ORDINALITY AS u(k, e, s, p, a, c, n)
             ORDER BY n",
            &[
                &self.kind,
                &self.entity,
                &self.subject,
                &self.payload,
                &self.at,
                &self.correlation,
            ],
        )?;
        *self = Self::default();
        Ok(())
    }
}

/// Returns the connection to the pool, or drops it if the call left it broken (also on panic).
struct Lease<'s> {
    store: &'s PgStore,
    conn: Option<Conn>,
    healthy: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let conn = self.conn.take();
        let mut st = lock_any(&self.store.state);
        match conn {
            Some(c) if self.healthy && !c.client.is_closed() => st.idle.push(c),
            _ => st.open = st.open.saturating_sub(1),
        }
        drop(st);
        self.store.freed.notify_one();
    }
}

impl PgStore {
    /// Connects (lazily, up to the pool size) and migrates the schema.
    pub fn open(url: &str) -> Result<Self> {
        let (url, max) = parse_url(url)?;
        let store = Self {
            url,
            max,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        };
        // On a thread of its own: `open` may be called from async start-up code.
        std::thread::scope(|s| {
            s.spawn(|| store.migrate())
                .join()
                .unwrap_or_else(|_| Err(StoreError::Open("migration thread panicked".into())))
        })?;
        Ok(store)
    }

    fn connect(&self) -> Result<Conn> {
        let client = Client::connect(&self.url, NoTls)
            .map_err(|e| StoreError::Open(format!("cannot connect to PostgreSQL: {e}")))?;
        Ok(Conn {
            client,
            stmts: HashMap::new(),
        })
    }

    /// Runs `f` on a pooled connection; one that fails with a database error is dropped, not
    /// returned (it may be mid-protocol or its server gone).
    fn with<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let mut lease = Lease {
            store: self,
            conn: None,
            healthy: false,
        };
        {
            let mut st = lock_any(&self.state);
            loop {
                if let Some(c) = st.idle.pop() {
                    lease.conn = Some(c);
                    break;
                }
                if st.open < self.max {
                    st.open += 1;
                    drop(st);
                    // Counted as open: the lease gives the slot back if connecting fails.
                    lease.conn = Some(self.connect()?);
                    break;
                }
                st = self.freed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        let Some(conn) = lease.conn.as_mut() else {
            return Err(StoreError::Conflict("no connection was leased".into()));
        };
        let out = f(conn);
        lease.healthy = !matches!(out, Err(StoreError::Pg(_)));
        out
    }

    fn migrate(&self) -> Result<()> {
        self.with(|c| {
            c.tx(|tx| {
                tx.tx
                    .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
                tx.tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
                )?;
                for (version, sql) in MIGRATIONS {
                    let done = tx.tx.query_opt(
                        "SELECT version FROM schema_migrations WHERE version = $1",
                        &[version],
                    )?;
                    if done.is_none() {
                        tx.tx.batch_execute(sql)?;
                        tx.tx.execute(
                            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                            &[version, &now()],
                        )?;
                    }
                }
                Ok(())
            })
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a client drops its runtime, which panics inside an async context: do it on
        // a plain thread.
        let idle = std::mem::take(&mut lock_any(&self.state).idle);
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

const FLOW_COLUMNS: &str = "id, entity, iuf, file_name, version, content_sha256, status, error_code, error_message, rows_done, accepted, rejected, scarti_bytes, iuv_bytes, created_at, updated_at";

fn flow_from_row(r: &Row) -> Result<Flow> {
    let status: String = r.try_get(6)?;
    let n = |i: usize| -> Result<u64> { Ok(r.try_get::<_, i64>(i)? as u64) };
    Ok(Flow {
        id: r.try_get(0)?,
        entity: r.try_get(1)?,
        iuf: r.try_get(2)?,
        file_name: r.try_get(3)?,
        version: r.try_get(4)?,
        content_sha256: r.try_get(5)?,
        status: FlowStatus::parse(&status).unwrap_or(FlowStatus::Abortito),
        error_code: r.try_get(7)?,
        error_message: r.try_get(8)?,
        progress: Checkpoint {
            rows_done: n(9)?,
            accepted: n(10)?,
            rejected: n(11)?,
            scarti_bytes: n(12)?,
            iuv_bytes: n(13)?,
        },
        created_at: r.try_get(14)?,
        updated_at: r.try_get(15)?,
    })
}

const POSITION_COLUMNS: &str = "p.id, p.entity, p.iud, p.iuv, p.iuv_generated, p.status, p.amount_cents, p.version, p.flow_id, p.created_at, p.updated_at, p.data,
     1 + (SELECT COUNT(*) FROM position_history h WHERE h.position_id = p.id), p.activated_at, p.activations";

fn position_from_row(r: &Row) -> Result<Position> {
    let id: i64 = r.try_get(0)?;
    let status: String = r.try_get(5)?;
    let iuv: Option<String> = r.try_get(3)?;
    let iuv_generated: bool = r.try_get(4)?;
    let data: String = r.try_get(11)?;
    let mut dovuto: Dovuto = serde_json::from_str(&data)
        .map_err(|e| StoreError::Corrupt(format!("position {id}: stored data is corrupt: {e}")))?;
    // The columns are authoritative: the store may have generated the IUV.
    let parsed = iuv.as_deref().and_then(|i| Iuv::parse(i).ok());
    dovuto.iuv = parsed.clone();
    dovuto.generate_iuv = iuv_generated;
    Ok(Position {
        id,
        entity: r.try_get(1)?,
        iud: r.try_get(2)?,
        notice_number: parsed
            .and_then(|i| i.notice_number())
            .map(|n| n.as_str().to_string()),
        iuv,
        iuv_generated,
        status: PositionStatus::parse(&status).unwrap_or(PositionStatus::Active),
        amount_cents: r.try_get(6)?,
        version: r.try_get(7)?,
        flow_id: r.try_get(8)?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
        history_count: r.try_get(12)?,
        activated_at: r.try_get(13)?,
        activations: r.try_get(14)?,
        dovuto,
    })
}

const RECEIPT_COLUMNS: &str = "r.id, r.entity, r.receipt_id, r.notice_number, r.position_id, r.amount_cents, r.psp_id, r.psp_name, r.payment_date, r.operation, r.issue, r.received_at";

fn receipt_from_row(r: &Row) -> Result<StoredReceipt> {
    Ok(StoredReceipt {
        id: r.try_get(0)?,
        entity: r.try_get(1)?,
        receipt_id: r.try_get(2)?,
        notice_number: r.try_get(3)?,
        position_id: r.try_get(4)?,
        amount_cents: r.try_get(5)?,
        psp_id: r.try_get(6)?,
        psp_name: r.try_get(7)?,
        payment_date: r.try_get(8)?,
        operation: r.try_get(9)?,
        issue: r.try_get(10)?,
        received_at: r.try_get(11)?,
    })
}

/// Receipts with what a format needs of their position (see [`document_from_row`]).
const RECEIPT_DOCUMENTS: &str = "SELECT r.id, r.entity, r.receipt_id, r.notice_number, r.position_id, r.amount_cents, r.psp_id, r.psp_name, r.payment_date, r.operation, r.issue, r.received_at,
     r.xml, p.iud, p.debt_type FROM receipts r LEFT JOIN positions p ON p.id = r.position_id";

fn document_from_row(row: &Row) -> Result<ReceiptDocument> {
    Ok(ReceiptDocument {
        receipt: receipt_from_row(row)?,
        xml: row.try_get(12)?,
        iud: row.try_get(13)?,
        debt_type: row.try_get(14)?,
    })
}

const CART_COLUMNS: &str = "id, entity, notice_numbers, redirect_url, return_urls, created_at";

fn cart_from_row(r: &Row) -> Result<Cart> {
    let id: String = r.try_get(0)?;
    let notices: String = r.try_get(2)?;
    Ok(Cart {
        notice_numbers: ops::cart_notices(&id, &notices)?,
        id,
        entity: r.try_get(1)?,
        redirect_url: r.try_get(3)?,
        return_urls: r.try_get(4)?,
        created_at: r.try_get(5)?,
    })
}

fn saved_from_row(r: &Row) -> Result<SavedResponse> {
    Ok(SavedResponse {
        request_sha256: r.try_get(0)?,
        status: ops::http_status(i64::from(r.try_get::<_, i32>(1)?))?,
        body: r.try_get(2)?,
    })
}

const DELIVERY_COLUMNS: &str = "id, pipeline, entity, receipt, idempotency_key, status, attempts, next_attempt_at, last_error, created_at, updated_at, delivered_at";

fn delivery_from_row(r: &Row) -> Result<Delivery> {
    let status: String = r.try_get(5)?;
    Ok(Delivery {
        id: r.try_get(0)?,
        pipeline: r.try_get(1)?,
        entity: r.try_get(2)?,
        receipt: r.try_get(3)?,
        idempotency_key: r.try_get(4)?,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending),
        attempts: r.try_get(6)?,
        next_attempt_at: r.try_get(7)?,
        last_error: r.try_get(8)?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
        delivered_at: r.try_get(11)?,
    })
}

fn all<T>(rows: Vec<Row>, f: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

/// The rules' statements on PostgreSQL. Rows an import or a receipt changes are locked first, so
/// two processes never both act on what each read.
struct PgOps<'a, 'b, 'c> {
    tx: &'a mut Tx<'b, 'c>,
    /// The entity's IUV counter once locked: (next value, value when read).
    counter: Option<(i64, i64)>,
    events: EventBuf,
}

impl<'a, 'b, 'c> PgOps<'a, 'b, 'c> {
    fn new(tx: &'a mut Tx<'b, 'c>) -> Self {
        Self {
            tx,
            counter: None,
            events: EventBuf::default(),
        }
    }

    /// Writes what was buffered: the counter and the events.
    fn finish(mut self, entity: Option<&EntityKey<'_>>) -> Result<()> {
        if let (Some((next, read)), Some(e)) = (self.counter, entity) {
            if next != read {
                self.tx.exec(
                    "UPDATE iuv_counters SET next_value = $3 WHERE entity = $1 AND segregation_code = $2",
                    &[&e.ipa_code, &e.segregation_code.as_str(), &next],
                )?;
            }
        }
        self.events.flush(self.tx)
    }
}

impl Ops for PgOps<'_, '_, '_> {
    fn live(&mut self, entity: &str, iud: &str) -> Result<Option<Live>> {
        let row = self.tx.opt(
            "SELECT id, iuv, iuv_generated, status, debt_type, amount_cents, data FROM positions
             WHERE entity = $1 AND iud = $2 AND status <> 'annulled' FOR UPDATE",
            &[&entity, &iud],
        )?;
        row.map(|r| {
            Ok(Live {
                id: r.try_get(0)?,
                iuv: r.try_get(1)?,
                iuv_generated: r.try_get(2)?,
                status: r.try_get(3)?,
                debt_type: r.try_get(4)?,
                amount_cents: r.try_get(5)?,
                data: r.try_get(6)?,
            })
        })
        .transpose()
    }

    fn insert_position(&mut self, p: &NewPosition<'_>) -> Result<Option<i64>> {
        let d = p.row;
        let due = d.due_date.map(|d| d.to_string());
        let row = self.tx.opt(
            "INSERT INTO positions (entity, iud, iuv, iuv_generated, status, debt_type, amount_cents, due_date, payer_id, data, version, flow_id, created_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, 1, $10, $11, $12, $12)
             ON CONFLICT DO NOTHING RETURNING id",
            &[
                &p.entity,
                &d.iud,
                &p.iuv,
                &p.generated,
                &d.debt_type,
                &d.amount.cents(),
                &due,
                &d.payer_id,
                &d.data,
                &p.flow_id,
                &p.source,
                &p.ts,
            ],
        )?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    fn insert_positions(&mut self, batch: &[NewPosition<'_>]) -> Result<Vec<Option<i64>>> {
        let Some(first) = batch.first() else {
            return Ok(Vec::new());
        };
        if batch.len() == 1 {
            return Ok(vec![self.insert_position(first)?]);
        }
        let col = |f: &dyn Fn(&NewPosition<'_>) -> Option<String>| -> Vec<Option<String>> {
            batch.iter().map(f).collect()
        };
        let iuds = col(&|p| Some(p.row.iud.clone()));
        let iuvs = col(&|p| p.iuv.map(str::to_string));
        let generated: Vec<bool> = batch.iter().map(|p| p.generated).collect();
        let debt_types = col(&|p| Some(p.row.debt_type.clone()));
        let cents: Vec<i64> = batch.iter().map(|p| p.row.amount.cents()).collect();
        let dues = col(&|p| p.row.due_date.map(|d| d.to_string()));
        let payers = col(&|p| Some(p.row.payer_id.clone()));
        let data = col(&|p| Some(p.row.data.clone()));
        // One statement for the run; rows go in in order, so of two rows wanting one IUD or
        // IUV the first wins, as row by row.
        let rows = self.tx.query(
            "INSERT INTO positions (entity, iud, iuv, iuv_generated, status, debt_type, amount_cents, due_date, payer_id, data, version, flow_id, created_by, created_at, updated_at)
             SELECT $1, iud, iuv, gen, 'active', dt, amt, due, payer, data, 1, $2, $3, $4, $4
             FROM UNNEST($5::text[], $6::text[], $7::bool[], $8::text[], $9::int8[], $10::text[], $11::text[], $12::text[])
                  WITH ORDINALITY AS u(iud, iuv, gen, dt, amt, due, payer, data, n)
             ORDER BY n
             ON CONFLICT DO NOTHING RETURNING id, iud, iuv",
            &[
                &first.entity,
                &first.flow_id,
                &first.source,
                &first.ts,
                &iuds,
                &iuvs,
                &generated,
                &debt_types,
                &cents,
                &dues,
                &payers,
                &data,
            ],
        )?;
        // RETURNING names no input row: match on (IUD, IUV). Two inputs with the same pair
        // cannot both be inserted, and the first of them is the one that could be.
        let mut inserted: HashMap<(String, Option<String>), i64> = HashMap::new();
        for r in rows {
            inserted.insert((r.try_get(1)?, r.try_get(2)?), r.try_get(0)?);
        }
        Ok(batch
            .iter()
            .map(|p| inserted.remove(&(p.row.iud.clone(), p.iuv.map(str::to_string))))
            .collect())
    }

    fn modify_position(
        &mut self,
        id: i64,
        iuv: Option<&str>,
        d: &ChunkRow,
        flow_id: i64,
        ts: &str,
    ) -> Result<()> {
        let due = d.due_date.map(|d| d.to_string());
        self.tx.exec(
            "UPDATE positions SET iuv = $2, amount_cents = $3, due_date = $4, payer_id = $5, data = $6,
             version = version + 1, flow_id = $7, updated_at = $8 WHERE id = $1",
            &[
                &id,
                &iuv,
                &d.amount.cents(),
                &due,
                &d.payer_id,
                &d.data,
                &flow_id,
                &ts,
            ],
        )?;
        Ok(())
    }

    fn annul_position(&mut self, id: i64, flow_id: i64, ts: &str) -> Result<()> {
        self.tx.exec(
            "UPDATE positions SET status = 'annulled', version = version + 1, flow_id = $2, updated_at = $3 WHERE id = $1",
            &[&id, &flow_id, &ts],
        )?;
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
        self.tx.exec(
            "INSERT INTO position_history (position_id, action, source, flow_id, at, previous_data) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&position_id, &action, &source, &flow_id, &ts, &previous],
        )?;
        Ok(())
    }

    fn next_counter(&mut self, entity: &EntityKey<'_>) -> Result<u64> {
        let (next, _) = match &mut self.counter {
            Some(c) => c,
            None => {
                // Row-locked until commit: concurrent imports of the entity draw in turn.
                let seg = entity.segregation_code.as_str();
                self.tx.exec(
                    "INSERT INTO iuv_counters (entity, segregation_code, next_value) VALUES ($1, $2, 1)
                     ON CONFLICT DO NOTHING",
                    &[&entity.ipa_code, &seg],
                )?;
                let n: i64 = self
                    .tx
                    .one(
                        "SELECT next_value FROM iuv_counters WHERE entity = $1 AND segregation_code = $2 FOR UPDATE",
                        &[&entity.ipa_code, &seg],
                    )?
                    .try_get(0)?;
                self.counter.insert((n, n))
            }
        };
        let n = *next;
        *next += 1;
        Ok(n as u64)
    }

    fn receipt_target(
        &mut self,
        entity: &str,
        iuv: &str,
        annulled: bool,
    ) -> Result<Option<Target>> {
        // The live one is locked: of two receipts paying it at once, the second sees it paid.
        let sql = if annulled {
            "SELECT id, status, amount_cents, debt_type, iud FROM positions
             WHERE entity = $1 AND iuv = $2 AND status = 'annulled' ORDER BY id DESC LIMIT 1"
        } else {
            "SELECT id, status, amount_cents, debt_type, iud FROM positions
             WHERE entity = $1 AND iuv = $2 AND status <> 'annulled' FOR UPDATE"
        };
        let row = self.tx.opt(sql, &[&entity, &iuv])?;
        row.map(|r| {
            Ok(Target {
                id: r.try_get(0)?,
                status: r.try_get(1)?,
                amount_cents: r.try_get(2)?,
                debt_type: r.try_get(3)?,
                iud: r.try_get(4)?,
            })
        })
        .transpose()
    }

    fn insert_receipt(
        &mut self,
        r: &OwnedReceipt,
        iuv: &str,
        position: Option<i64>,
        issue: Option<&str>,
        ts: &str,
    ) -> Result<Option<i64>> {
        // A concurrent duplicate waits for the first to commit, then inserts nothing.
        let row = self.tx.opt(
            "INSERT INTO receipts (entity, receipt_id, notice_number, iuv, position_id, amount_cents, psp_id, psp_name, payment_date, operation, issue, xml, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT DO NOTHING RETURNING id",
            &[
                &r.entity,
                &r.receipt_id,
                &r.notice_number.as_str(),
                &iuv,
                &position,
                &r.amount_cents,
                &r.psp_id,
                &r.psp_name,
                &r.payment_date,
                &r.operation,
                &issue,
                &r.xml,
                &ts,
            ],
        )?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    fn pay_position(&mut self, id: i64, ts: &str) -> Result<()> {
        self.tx.exec(
            "UPDATE positions SET status = 'paid', version = version + 1, updated_at = $2 WHERE id = $1",
            &[&id, &ts],
        )?;
        Ok(())
    }

    fn insert_delivery(&mut self, to: &DeliverTo, receipt: i64, key: &str, ts: &str) -> Result<()> {
        self.tx.exec(
            "INSERT INTO deliveries (pipeline, entity, receipt, idempotency_key, status, next_attempt_at, created_at, updated_at, secondary)
             VALUES ($1, $2, $3, $4, 'pending', $5, $5, $5, $6)",
            &[&to.pipeline, &to.entity, &receipt, &key, &ts, &to.secondary],
        )?;
        Ok(())
    }

    fn event(&mut self, e: &RawEvent<'_>, ts: &str) -> Result<()> {
        self.events.push_raw(e, ts);
        Ok(())
    }
}

/// One event, written at once.
fn event_now(tx: &mut Tx<'_, '_>, e: &NewEvent<'_>, ts: &str) -> Result<()> {
    let mut buf = EventBuf::default();
    buf.push(e, ts);
    buf.flush(tx)
}

impl Store for PgStore {
    fn flows_by_iuf(&self, entity: &str, iuf: &str) -> Result<Vec<Flow>> {
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {FLOW_COLUMNS} FROM flows WHERE entity = $1 AND iuf = $2 ORDER BY id DESC"
                ),
                &[&entity, &iuf],
            )?;
            all(rows, flow_from_row)
        })
    }

    fn flow(&self, id: i64) -> Result<Option<Flow>> {
        self.with(|c| {
            c.opt(
                &format!("SELECT {FLOW_COLUMNS} FROM flows WHERE id = $1"),
                &[&id],
            )?
            .map(|r| flow_from_row(&r))
            .transpose()
        })
    }

    fn recent_flows(&self, entity: &str, limit: u32) -> Result<Vec<Flow>> {
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {FLOW_COLUMNS} FROM flows WHERE entity = $1 ORDER BY id DESC LIMIT $2"
                ),
                &[&entity, &(limit as i64)],
            )?;
            all(rows, flow_from_row)
        })
    }

    fn create_flow(&self, f: &NewFlow<'_>) -> Result<Flow> {
        self.with(|c| {
            c.tx(|tx| {
                let ts = now();
                let row = tx.one(
                    &format!(
                        "INSERT INTO flows (entity, iuf, file_name, version, content_sha256, status, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {FLOW_COLUMNS}"
                    ),
                    &[
                        &f.entity,
                        &f.iuf,
                        &f.file_name,
                        &f.version,
                        &f.content_sha256,
                        &FlowStatus::LoadImport.as_str(),
                        &ts,
                    ],
                )?;
                let flow = flow_from_row(&row)?;
                let correlation = flow_correlation(flow.id);
                event_now(
                    tx,
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
        })
    }

    fn stream_flow(&self, f: &NewFlow<'_>) -> Result<Flow> {
        self.with(|c| {
            // The partial unique index decides: a concurrent second insert waits for the first
            // and inserts nothing; the select then finds the first one's flow.
            c.exec(
                "INSERT INTO flows (entity, iuf, file_name, version, content_sha256, status, stream, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7, $7) ON CONFLICT DO NOTHING",
                &[
                    &f.entity,
                    &f.iuf,
                    &f.file_name,
                    &f.version,
                    &f.content_sha256,
                    &FlowStatus::InElab.as_str(),
                    &now(),
                ],
            )?;
            let row = c.opt(
                &format!(
                    "SELECT {FLOW_COLUMNS} FROM flows WHERE entity = $1 AND iuf = $2 AND stream"
                ),
                &[&f.entity, &f.iuf],
            )?;
            match row {
                Some(r) => flow_from_row(&r),
                None => Err(StoreError::Conflict(format!(
                    "stream flow {}/{} vanished after creation",
                    f.entity, f.iuf
                ))),
            }
        })
    }

    fn set_flow_status(
        &self,
        id: i64,
        status: FlowStatus,
        error: Option<(&str, &str)>,
    ) -> Result<()> {
        self.with(|c| {
            c.tx(|tx| {
                let ts = now();
                let before = tx.opt(
                    "SELECT status, entity, iuf, accepted, rejected FROM flows WHERE id = $1 FOR UPDATE",
                    &[&id],
                )?;
                tx.exec(
                    "UPDATE flows SET status = $2, error_code = $3, error_message = $4, updated_at = $5 WHERE id = $1",
                    &[&id, &status.as_str(), &error.map(|e| e.0), &error.map(|e| e.1), &ts],
                )?;
                if let Some(r) = before {
                    let was: String = r.try_get(0)?;
                    let entity: String = r.try_get(1)?;
                    let iuf: String = r.try_get(2)?;
                    let event = ops::flow_status_event(
                        status,
                        id,
                        &iuf,
                        r.try_get(3)?,
                        r.try_get(4)?,
                        error,
                    );
                    if let (Some((kind, payload)), true) = (event, was != status.as_str()) {
                        let correlation = flow_correlation(id);
                        event_now(
                            tx,
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
                Ok(())
            })
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
        self.with(|c| {
            c.tx(|tx| {
                let ts = now();
                // The flow's row is locked first: chunks of one flow commit one at a time across
                // processes, and the rows_done check holds until commit.
                let done = tx
                    .opt(
                        "SELECT rows_done FROM flows WHERE id = $1 FOR UPDATE",
                        &[&flow_id],
                    )?
                    .map(|r| r.try_get::<_, i64>(0))
                    .transpose()?;
                if let Some(expected) = expect_rows_done {
                    check_rows_done(flow_id, done, expected)?;
                }
                let mut ops = PgOps::new(tx);
                let outcomes = ops::apply_rows(&mut ops, entity, flow_id, &ts, rows)?;
                ops.finish(Some(entity))?;
                let commit = after(&outcomes).map_err(StoreError::Callback)?;
                let cp = commit.checkpoint;
                tx.exec(
                    "UPDATE flows SET status = $2, rows_done = $3, accepted = $4, rejected = $5, scarti_bytes = $6, iuv_bytes = $7, updated_at = $8 WHERE id = $1",
                    &[
                        &flow_id,
                        &FlowStatus::InElab.as_str(),
                        &(cp.rows_done as i64),
                        &(cp.accepted as i64),
                        &(cp.rejected as i64),
                        &(cp.scarti_bytes as i64),
                        &(cp.iuv_bytes as i64),
                        &ts,
                    ],
                )?;
                if !commit.outbox.is_empty() {
                    let keys: Vec<&str> = commit.outbox.iter().map(|m| m.key.as_str()).collect();
                    let payloads: Vec<&str> =
                        commit.outbox.iter().map(|m| m.payload.as_str()).collect();
                    tx.exec(
                        "INSERT INTO flow_outbox (flow_id, key, payload)
                         SELECT $1, k, p FROM UNNEST($2::text[], $3::text[]) WITH ORDINALITY AS u(k, p, n)
                         ORDER BY n",
                        &[&flow_id, &keys, &payloads],
                    )?;
                }
                Ok(())
            })
        })
    }

    fn flow_outbox(&self, flow_id: i64, limit: u32) -> Result<Vec<(i64, OutboxMessage)>> {
        self.with(|c| {
            let rows = c.query(
                "SELECT id, key, payload FROM flow_outbox WHERE flow_id = $1 ORDER BY id LIMIT $2",
                &[&flow_id, &(limit as i64)],
            )?;
            all(rows, |r| {
                Ok((
                    r.try_get(0)?,
                    OutboxMessage {
                        key: r.try_get(1)?,
                        payload: r.try_get(2)?,
                    },
                ))
            })
        })
    }

    fn clear_flow_outbox(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            c.exec("DELETE FROM flow_outbox WHERE id = ANY($1)", &[&ids])?;
            Ok(())
        })
    }

    fn positions(&self, entity: &str, query: &PositionQuery<'_>) -> Result<Vec<Position>> {
        let base = format!("SELECT {POSITION_COLUMNS} FROM positions p WHERE p.entity = $1");
        let by = |column: &str| {
            format!(
                "{base} AND p.{column} = $2 AND p.status <> 'annulled'
                 UNION ALL {base} AND p.{column} = $2 AND p.status = 'annulled' ORDER BY 1"
            )
        };
        let notice_iuv: String;
        let (sql, arg): (String, Option<&str>) = match query {
            PositionQuery::All { .. } => (format!("{base} ORDER BY p.id LIMIT $2"), None),
            PositionQuery::Iud(v) => (by("iud"), Some(v)),
            PositionQuery::Iuv(v) => (by("iuv"), Some(v)),
            PositionQuery::NoticeNumber(v) => match NoticeNumber::parse(v) {
                Ok(n) => {
                    notice_iuv = n.iuv().as_str().to_string();
                    (by("iuv"), Some(notice_iuv.as_str()))
                }
                Err(_) => return Ok(Vec::new()),
            },
        };
        self.with(|c| {
            let rows = match (query, arg) {
                (PositionQuery::All { limit }, _) => c.query(&sql, &[&entity, &(*limit as i64)])?,
                (_, Some(v)) => c.query(&sql, &[&entity, &v])?,
                (_, None) => Vec::new(),
            };
            all(rows, position_from_row)
        })
    }

    fn position_by_notice(&self, entity: &str, notice: &NoticeNumber) -> Result<Option<Position>> {
        let iuv = notice.iuv();
        self.with(|c| {
            let live = c.opt(
                &format!(
                    "SELECT {POSITION_COLUMNS} FROM positions p WHERE p.entity = $1 AND p.iuv = $2 AND p.status <> 'annulled'"
                ),
                &[&entity, &iuv.as_str()],
            )?;
            let row = match live {
                Some(r) => Some(r),
                None => c.opt(
                    &format!(
                        "SELECT {POSITION_COLUMNS} FROM positions p WHERE p.entity = $1 AND p.iuv = $2 AND p.status = 'annulled' ORDER BY p.id DESC LIMIT 1"
                    ),
                    &[&entity, &iuv.as_str()],
                )?,
            };
            row.map(|r| position_from_row(&r)).transpose()
        })
    }

    fn record_activation(&self, position_id: i64, correlation: Option<&str>) -> Result<()> {
        self.with(|c| {
            c.tx(|tx| {
                let ts = now();
                let row = tx.opt(
                    "UPDATE positions SET activated_at = $2, activations = activations + 1 WHERE id = $1
                     RETURNING entity, iud, iuv, amount_cents",
                    &[&position_id, &ts],
                )?;
                if let Some(r) = row {
                    let entity: String = r.try_get(0)?;
                    let iud: String = r.try_get(1)?;
                    let iuv: Option<String> = r.try_get(2)?;
                    let (subject, payload) =
                        ops::activation_payload(&iud, iuv.as_deref(), r.try_get(3)?);
                    event_now(
                        tx,
                        &NewEvent {
                            kind: "payment.activated",
                            entity: &entity,
                            subject: &subject,
                            payload,
                            correlation,
                        },
                        &ts,
                    )?;
                }
                Ok(())
            })
        })
    }

    fn store_receipt(&self, r: &NewReceipt<'_>) -> Result<ReceiptStored> {
        let owned = OwnedReceipt::from(r);
        self.with(|c| {
            c.tx(|tx| {
                let mut ops = PgOps::new(tx);
                let stored = ops::store_receipt(&mut ops, &owned, &now())?;
                ops.finish(None)?;
                Ok(stored)
            })
        })
    }

    fn receipts(&self, entity: &str, flagged: bool, limit: u32) -> Result<Vec<StoredReceipt>> {
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {RECEIPT_COLUMNS} FROM receipts r WHERE r.entity = $1 AND (NOT $2 OR r.issue IS NOT NULL)
                     ORDER BY r.id DESC LIMIT $3"
                ),
                &[&entity, &flagged, &(limit as i64)],
            )?;
            all(rows, receipt_from_row)
        })
    }

    fn claim_deliveries(
        &self,
        pipeline: &str,
        now: &str,
        lease_until: &str,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        self.with(|c| {
            // SKIP LOCKED: concurrent claimers take disjoint rows instead of queueing; a row
            // another process leased meanwhile fails the re-checked lease condition.
            let rows = c.query(
                &format!(
                    "UPDATE deliveries SET lease_until = $3
                     WHERE id IN (SELECT id FROM deliveries
                                  WHERE pipeline = $1 AND status = 'pending' AND next_attempt_at <= $2
                                    AND (lease_until IS NULL OR lease_until < $2) AND export_id IS NULL
                                  ORDER BY next_attempt_at, id LIMIT $4
                                  FOR UPDATE SKIP LOCKED)
                     RETURNING {DELIVERY_COLUMNS}"
                ),
                &[&pipeline, &now, &lease_until, &(limit as i64)],
            )?;
            let mut claimed = all(rows, delivery_from_row)?;
            claimed.sort_by_key(|d| d.id);
            Ok(claimed)
        })
    }

    fn record_attempts(&self, attempts: &[(i64, Attempt)]) -> Result<()> {
        self.with(|c| {
            c.tx(|tx| {
                let ts = now();
                let mut events = EventBuf::default();
                for (delivery, attempt) in attempts {
                    let (status, next, error, delivered) = match attempt {
                        Attempt::Delivered => {
                            (DeliveryStatus::Delivered, None, None, Some(ts.as_str()))
                        }
                        Attempt::Retry { at, error } => (
                            DeliveryStatus::Pending,
                            Some(at.as_str()),
                            Some(error.as_str()),
                            None,
                        ),
                        Attempt::Dead { error } => {
                            (DeliveryStatus::Dead, None, Some(error.as_str()), None)
                        }
                    };
                    let row = tx.opt(
                        "UPDATE deliveries SET status = $2, attempts = attempts + 1, lease_until = NULL,
                         next_attempt_at = COALESCE($3, next_attempt_at), last_error = COALESCE($4, last_error),
                         delivered_at = $5, updated_at = $6 WHERE id = $1
                         RETURNING pipeline, entity, idempotency_key, attempts",
                        &[delivery, &status.as_str(), &next, &error, &delivered, &ts],
                    )?;
                    if let Some(r) = row {
                        let pipeline: String = r.try_get(0)?;
                        let entity: String = r.try_get(1)?;
                        let key: String = r.try_get(2)?;
                        if let Some((kind, payload)) =
                            ops::attempt_event(attempt, *delivery, &pipeline, r.try_get(3)?)
                        {
                            events.push(
                                &NewEvent {
                                    kind,
                                    entity: &entity,
                                    subject: &key,
                                    payload,
                                    correlation: None,
                                },
                                &ts,
                            );
                        }
                    }
                }
                events.flush(tx)
            })
        })
    }

    fn open_export(
        &self,
        pipeline: &str,
        entity: &str,
        allow_empty: bool,
    ) -> Result<Option<Export>> {
        self.with(|c| {
            let mut tx = c.client.transaction()?;
            let mut t = Tx {
                tx: &mut tx,
                stmts: &mut c.stmts,
            };
            // One opener per pipeline at a time across processes: the second finds the first's
            // export open and resumes it instead of taking receipts of its own.
            t.exec(
                "SELECT pg_advisory_xact_lock(hashtextextended('snodo.export:' || $1, 0))",
                &[&pipeline],
            )?;
            let open = t.opt(
                "SELECT id, receipts, created_at FROM exports
                 WHERE pipeline = $1 AND status = 'writing' ORDER BY id LIMIT 1",
                &[&pipeline],
            )?;
            if let Some(r) = open {
                let export = Export {
                    id: r.try_get(0)?,
                    pipeline: pipeline.into(),
                    entity: entity.into(),
                    receipts: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                    resumed: true,
                };
                tx.commit()?;
                return Ok(Some(export));
            }
            let ts = now();
            let id: i64 = t
                .one(
                    "INSERT INTO exports (pipeline, entity, status, receipts, created_at) VALUES ($1, $2, 'writing', 0, $3) RETURNING id",
                    &[&pipeline, &entity, &ts],
                )?
                .try_get(0)?;
            let taken = t.exec(
                "UPDATE deliveries SET export_id = $2, updated_at = $3
                 WHERE pipeline = $1 AND status = 'pending' AND export_id IS NULL",
                &[&pipeline, &id, &ts],
            )? as i64;
            if taken == 0 && !allow_empty {
                tx.rollback()?;
                return Ok(None);
            }
            t.exec(
                "UPDATE exports SET receipts = $2 WHERE id = $1",
                &[&id, &taken],
            )?;
            tx.commit()?;
            Ok(Some(Export {
                id,
                pipeline: pipeline.into(),
                entity: entity.into(),
                receipts: taken,
                created_at: ts,
                resumed: false,
            }))
        })
    }

    fn unfinished_export(&self, pipeline: &str) -> Result<Option<Export>> {
        self.with(|c| {
            c.opt(
                "SELECT id, entity, receipts, created_at FROM exports
                 WHERE pipeline = $1 AND status = 'writing' ORDER BY id LIMIT 1",
                &[&pipeline],
            )?
            .map(|r| {
                Ok(Export {
                    id: r.try_get(0)?,
                    pipeline: pipeline.into(),
                    entity: r.try_get(1)?,
                    receipts: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                    resumed: true,
                })
            })
            .transpose()
        })
    }

    fn export_items(&self, export: i64) -> Result<Vec<ExportItem>> {
        self.with(|c| {
            let rows = c.query(
                "SELECT id, receipt, secondary FROM deliveries WHERE export_id = $1 ORDER BY id",
                &[&export],
            )?;
            all(rows, |r| {
                Ok(ExportItem {
                    delivery: r.try_get(0)?,
                    receipt: r.try_get(1)?,
                    secondary: r.try_get(2)?,
                })
            })
        })
    }

    fn finish_export(&self, export: i64) -> Result<()> {
        self.with(|c| {
            c.tx(|tx| {
                let ts = now();
                tx.exec(
                    "UPDATE exports SET status = 'written', attempts = attempts + 1, written_at = $2 WHERE id = $1",
                    &[&export, &ts],
                )?;
                tx.exec(
                    "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = $2, updated_at = $2
                     WHERE export_id = $1",
                    &[&export, &ts],
                )?;
                Ok(())
            })
        })
    }

    fn fail_export(&self, export: i64, error: &str) -> Result<()> {
        self.with(|c| {
            c.exec(
                "UPDATE exports SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                &[&export, &error],
            )?;
            Ok(())
        })
    }

    fn receipt_document(&self, receipt: i64) -> Result<Option<ReceiptDocument>> {
        self.with(|c| {
            c.opt(&format!("{RECEIPT_DOCUMENTS} WHERE r.id = $1"), &[&receipt])?
                .map(|row| document_from_row(&row))
                .transpose()
        })
    }

    fn delivery(&self, id: i64) -> Result<Option<Delivery>> {
        self.with(|c| {
            c.opt(
                &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"),
                &[&id],
            )?
            .map(|r| delivery_from_row(&r))
            .transpose()
        })
    }

    fn deliveries(
        &self,
        status: DeliveryStatus,
        entity: Option<&str>,
        pipeline: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries
                     WHERE status = $1 AND ($2::text IS NULL OR entity = $2) AND ($3::text IS NULL OR pipeline = $3)
                     ORDER BY id DESC LIMIT $4"
                ),
                &[&status.as_str(), &entity, &pipeline, &(limit as i64)],
            )?;
            all(rows, delivery_from_row)
        })
    }

    fn replay(&self, ids: &[i64], entity: Option<&str>) -> Result<usize> {
        self.with(|c| {
            let ts = now();
            let n = if ids.is_empty() {
                c.exec(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2, lease_until = NULL, updated_at = $2
                     WHERE status = 'dead' AND ($1::text IS NULL OR entity = $1)",
                    &[&entity, &ts],
                )?
            } else {
                c.exec(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2, lease_until = NULL, updated_at = $2
                     WHERE id = ANY($1) AND status = 'dead'",
                    &[&ids, &ts],
                )?
            };
            Ok(n as usize)
        })
    }

    fn metrics(&self) -> Result<StoreMetrics> {
        self.with(|c| {
            let mut m = StoreMetrics::default();
            let rows = c.query(
                "SELECT entity, COUNT(*), COUNT(issue) FROM receipts GROUP BY entity ORDER BY entity",
                &[],
            )?;
            m.receipts = all(rows, |r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))?;
            let rows = c.query(
                "SELECT pipeline, CASE WHEN status = 'pending' AND lease_until > $1 THEN 'in_flight' ELSE status END AS s,
                        COUNT(*) FROM deliveries GROUP BY pipeline, s ORDER BY pipeline, s",
                &[&now()],
            )?;
            m.deliveries = all(rows, |r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))?;
            let rows = c.query(
                "SELECT pipeline, COUNT(*) FROM deliveries WHERE attempts > 1 OR (status = 'pending' AND attempts > 0)
                 GROUP BY pipeline ORDER BY pipeline",
                &[],
            )?;
            m.retried = all(rows, |r| Ok((r.try_get(0)?, r.try_get(1)?)))?;
            let rows = c.query(
                "SELECT entity, SUM(accepted)::BIGINT, SUM(rejected)::BIGINT FROM flows GROUP BY entity ORDER BY entity",
                &[],
            )?;
            m.import_rows = all(rows, |r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))?;
            Ok(m)
        })
    }

    fn ping(&self) -> Result<()> {
        self.with(|c| {
            c.client.simple_query("SELECT 1")?;
            Ok(())
        })
    }

    fn last_event_id(&self) -> Result<i64> {
        self.with(|c| {
            let row = c.opt("SELECT coalesce(max(id), 0)::BIGINT FROM events", &[])?;
            Ok(match row {
                Some(r) => r.try_get(0)?,
                None => 0,
            })
        })
    }

    fn events_after(&self, after_id: i64, limit: u32) -> Result<Vec<Event>> {
        self.with(|c| {
            let rows = c.query(
                "SELECT id, kind, entity, subject, payload, at, correlation FROM events WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after_id, &(limit as i64)],
            )?;
            all(rows, |r| {
                let payload: String = r.try_get(4)?;
                Ok(Event {
                    id: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    entity: r.try_get(2)?,
                    subject: r.try_get(3)?,
                    payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                    at: r.try_get(5)?,
                    correlation: r.try_get(6)?,
                })
            })
        })
    }

    fn record_events(&self, events: &[NewEvent<'_>]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            c.tx(|tx| {
                let ts = now();
                let mut buf = EventBuf::default();
                for e in events {
                    buf.push(e, &ts);
                }
                buf.flush(tx)
            })
        })
    }

    fn prune_events(&self, keep: u64) -> Result<u64> {
        self.with(|c| {
            // The newest `keep` walk the primary key backwards; the rest go as one id range.
            let edge = c.opt(
                "SELECT id FROM events ORDER BY id DESC OFFSET $1 LIMIT 1",
                &[&(keep as i64)],
            )?;
            let Some(edge) = edge else {
                return Ok(0);
            };
            let edge: i64 = edge.try_get(0)?;
            c.exec("DELETE FROM events WHERE id <= $1", &[&edge])
        })
    }

    fn take_job(
        &self,
        job: &str,
        holder: &str,
        now: &str,
        until: &str,
        tick: Option<&str>,
    ) -> Result<bool> {
        self.with(|c| {
            let n = c.exec(ops::TAKE_JOB_SQL, &[&job, &holder, &now, &until, &tick])?;
            Ok(n > 0)
        })
    }

    fn release_job(&self, job: &str, holder: &str) -> Result<()> {
        self.with(|c| {
            c.exec(
                "UPDATE jobs SET lease_until = $3 WHERE name = $1 AND holder = $2",
                &[&job, &holder, &ops::EPOCH],
            )?;
            Ok(())
        })
    }

    fn job_cursor(&self, job: &str) -> Result<i64> {
        self.with(|c| {
            let row = c.opt("SELECT cursor FROM jobs WHERE name = $1", &[&job])?;
            Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
        })
    }

    fn set_job_cursor(&self, job: &str, holder: &str, cursor: i64) -> Result<bool> {
        self.with(|c| {
            let n = c.exec(
                "UPDATE jobs SET cursor = $3 WHERE name = $1 AND holder = $2 AND lease_until > $4",
                &[&job, &holder, &cursor, &ops::EPOCH],
            )?;
            Ok(n > 0)
        })
    }

    fn history(&self, position_id: i64) -> Result<Vec<HistoryEntry>> {
        self.with(|c| {
            let created = c.opt(
                "SELECT created_by, created_at FROM positions WHERE id = $1",
                &[&position_id],
            )?;
            let Some(created) = created else {
                return Ok(Vec::new());
            };
            let source: String = created.try_get(0)?;
            let mut out = vec![HistoryEntry {
                action: Action::Insert.as_str().to_string(),
                flow_id: source.strip_prefix("flow:").and_then(|f| f.parse().ok()),
                source,
                at: created.try_get(1)?,
                previous: None,
            }];
            let rows = c.query(
                "SELECT action, source, flow_id, at, previous_data FROM position_history WHERE position_id = $1 ORDER BY id",
                &[&position_id],
            )?;
            for r in rows {
                let prev: Option<String> = r.try_get(4)?;
                out.push(HistoryEntry {
                    action: r.try_get(0)?,
                    source: r.try_get(1)?,
                    flow_id: r.try_get(2)?,
                    at: r.try_get(3)?,
                    previous: prev.and_then(|p| serde_json::from_str(&p).ok()),
                });
            }
            Ok(out)
        })
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
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| match a {
                Arg::Text(s) => s as &(dyn ToSql + Sync),
                Arg::Int(i) => i,
            })
            .collect();
        self.with(|c| {
            let rows = c.query(&sql, &params)?;
            all(rows, position_from_row)
        })
    }

    fn receipts_after(
        &self,
        entity: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ReceiptDocument>> {
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "{RECEIPT_DOCUMENTS} WHERE r.entity = $1 AND r.id > $2 ORDER BY r.id LIMIT $3"
                ),
                &[&entity, &after_id, &(limit as i64)],
            )?;
            all(rows, document_from_row)
        })
    }

    fn receipt_for_notice(
        &self,
        entity: &str,
        notice_number: &str,
    ) -> Result<Option<StoredReceipt>> {
        self.with(|c| {
            c.opt(
                &format!(
                    "SELECT {RECEIPT_COLUMNS} FROM receipts r WHERE r.entity = $1 AND r.notice_number = $2
                     ORDER BY (r.issue IS NULL) DESC, r.id DESC LIMIT 1"
                ),
                &[&entity, &notice_number],
            )?
            .map(|r| receipt_from_row(&r))
            .transpose()
        })
    }

    fn saved_response(&self, scope: &str, key: &str) -> Result<Option<SavedResponse>> {
        self.with(|c| {
            c.opt(SAVED_RESPONSE, &[&scope, &key])?
                .map(|r| saved_from_row(&r))
                .transpose()
        })
    }

    fn save_response(
        &self,
        scope: &str,
        key: &str,
        response: &SavedResponse,
    ) -> Result<SavedResponse> {
        self.with(|c| {
            // The primary key decides: a concurrent second insert waits for the first, inserts
            // nothing, and the select (a statement of its own) returns the first's response.
            c.exec(
                "INSERT INTO api_responses (scope, key, request_sha256, status, body, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &scope,
                    &key,
                    &response.request_sha256,
                    &i32::from(response.status),
                    &response.body,
                    &now(),
                ],
            )?;
            match c.opt(SAVED_RESPONSE, &[&scope, &key])? {
                Some(r) => saved_from_row(&r),
                None => Err(StoreError::Conflict(format!(
                    "kept response {scope}/{key} vanished after saving"
                ))),
            }
        })
    }

    fn prune_saved_responses(&self, before: &str) -> Result<u64> {
        self.with(|c| {
            c.exec(
                "DELETE FROM api_responses WHERE created_at < $1",
                &[&before],
            )
        })
    }

    fn create_cart(&self, cart: &NewCart<'_>) -> Result<Cart> {
        let notices = ops::cart_notices_text(cart.notice_numbers)?;
        self.with(|c| {
            c.tx(|tx| {
                let ts = now();
                // A concurrent second insert of the cart waits for the first to commit and
                // inserts nothing; the select (a statement of its own) then sees the first's.
                let inserted = tx.opt(
                    &format!(
                        "INSERT INTO carts (entity, id, notice_numbers, redirect_url, return_urls, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING {CART_COLUMNS}"
                    ),
                    &[
                        &cart.entity,
                        &cart.id,
                        &notices,
                        &cart.redirect_url,
                        &cart.return_urls,
                        &ts,
                    ],
                )?;
                if let Some(r) = inserted {
                    event_now(tx, &ops::cart_opened(cart), &ts)?;
                    return cart_from_row(&r);
                }
                let r = tx.one(
                    &format!("SELECT {CART_COLUMNS} FROM carts WHERE entity = $1 AND id = $2"),
                    &[&cart.entity, &cart.id],
                )?;
                cart_from_row(&r)
            })
        })
    }

    fn cart(&self, entity: &str, id: &str) -> Result<Option<Cart>> {
        self.with(|c| {
            c.opt(
                &format!("SELECT {CART_COLUMNS} FROM carts WHERE entity = $1 AND id = $2"),
                &[&entity, &id],
            )?
            .map(|r| cart_from_row(&r))
            .transpose()
        })
    }
}

const SAVED_RESPONSE: &str =
    "SELECT request_sha256, status, body FROM api_responses WHERE scope = $1 AND key = $2";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_size_comes_off_the_url() {
        assert_eq!(
            parse_url("postgres://u@h/db?pool=3").unwrap(),
            ("postgres://u@h/db".to_string(), 3)
        );
        assert_eq!(
            parse_url("postgres://u@h/db?sslmode=disable&pool=2&application_name=x").unwrap(),
            (
                "postgres://u@h/db?sslmode=disable&application_name=x".to_string(),
                2
            )
        );
        assert_eq!(
            parse_url("postgresql://u@h/db").unwrap(),
            ("postgresql://u@h/db".to_string(), DEFAULT_POOL)
        );
        assert!(parse_url("postgres://u@h/db?pool=0").is_err());
        assert!(parse_url("postgres://u@h/db?pool=x").is_err());
    }
}
