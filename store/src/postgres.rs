//! The shared store: PostgreSQL, for several hubs on one database: a connection pool with
//! statements prepared once per connection, and batches sent as one statement (`UNNEST`) where
//! SQLite runs a cached statement per row, since PostgreSQL pays a round trip per statement.
//!
//! The sync `postgres` client runs its own small runtime and panics inside an async context, so
//! callers use it from blocking threads; the store itself opens and drops its connections on a
//! thread of its own, so creating or dropping a `PgStore` is safe anywhere.

use crate::db::{args, Access, Arg, Conn, Dialect, Driver, Row};
use crate::ops::{now, NewPosition, RawEvent};
use crate::*;
use ::postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use ::postgres::{Client, GenericClient, NoTls, Statement};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/pg_0001_init.sql")),
    (2, include_str!("migrations/pg_0002_api.sql")),
    (3, include_str!("migrations/pg_0003_parsed.sql")),
];

/// Serialises migrations of hubs starting together (an arbitrary constant: "snodo" in ASCII).
const MIGRATION_LOCK: i64 = 0x0073_6e6f_646f;

/// Connections kept when the URL does not say `?pool=N`.
const DEFAULT_POOL: usize = 8;

/// A connection's prepared statements, by their text; `ids` holds inserts prepared with
/// `RETURNING id` appended.
#[derive(Default)]
struct Statements {
    plain: HashMap<String, Statement>,
    ids: HashMap<String, Statement>,
}

/// A pooled connection with its prepared statements (a statement is prepared once per
/// connection).
struct Pooled {
    client: Client,
    stmts: Statements,
}

struct PoolState {
    idle: Vec<Pooled>,
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

/// Returns the connection to the pool, or drops it if the call left it broken (also on panic).
struct Lease<'s> {
    store: &'s PgStore,
    conn: Option<Pooled>,
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

    fn connect(&self) -> Result<Pooled> {
        let client = Client::connect(&self.url, NoTls)
            .map_err(|e| StoreError::Open(format!("cannot connect to PostgreSQL: {e}")))?;
        Ok(Pooled {
            client,
            stmts: Statements::default(),
        })
    }

    /// Runs `f` on a pooled connection; one that fails with a database error is dropped, not
    /// returned (it may be mid-protocol or its server gone).
    fn with<T>(&self, f: impl FnOnce(&mut Pooled) -> Result<T>) -> Result<T> {
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
            let mut tx = c.client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
            )?;
            for (version, sql) in MIGRATIONS {
                let done = tx.query_opt(
                    "SELECT version FROM schema_migrations WHERE version = $1",
                    &[version],
                )?;
                if done.is_none() {
                    tx.batch_execute(sql)?;
                    tx.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                        &[version, &now()],
                    )?;
                }
            }
            Ok(tx.commit()?)
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

impl Driver for PgStore {
    fn run<T>(&self, access: Access, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        self.with(|p| {
            if access != Access::Tx {
                let mut c = Pg::new(&mut p.client, &mut p.stmts);
                let out = f(&mut c)?;
                c.flush()?;
                return Ok(out);
            }
            let mut tx = p.client.transaction()?;
            let mut c = Pg::new(&mut tx, &mut p.stmts);
            let out = f(&mut c)?;
            c.flush()?;
            tx.commit()?;
            Ok(out)
        })
    }
}

/// A pooled connection or a transaction on it. Events wait in a buffer and go in as one
/// statement before the transaction commits.
struct Pg<'a, C> {
    client: &'a mut C,
    stmts: &'a mut Statements,
    events: EventBuf,
}

impl<'a, C: GenericClient> Pg<'a, C> {
    fn new(client: &'a mut C, stmts: &'a mut Statements) -> Self {
        Self {
            client,
            stmts,
            events: EventBuf::default(),
        }
    }

    /// Prepares `sql` once per connection (with `RETURNING id` when `id`).
    fn prepare(&mut self, sql: &str, id: bool) -> Result<Statement> {
        let cache = if id {
            &mut self.stmts.ids
        } else {
            &mut self.stmts.plain
        };
        if let Some(s) = cache.get(sql) {
            return Ok(s.clone());
        }
        let s = if id {
            self.client.prepare(&format!("{sql} RETURNING id"))?
        } else {
            self.client.prepare(sql)?
        };
        cache.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn flush(&mut self) -> Result<()> {
        if self.events.kind.is_empty() {
            return Ok(());
        }
        let e = std::mem::take(&mut self.events);
        let st = self.prepare(
            "INSERT INTO events (kind, entity, subject, payload, at, correlation)
             SELECT k, e, s, p, a, c
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                  WITH ORDINALITY AS u(k, e, s, p, a, c, n)
             ORDER BY n",
            false,
        )?;
        let params: [&(dyn ToSql + Sync); 6] = [
            &e.kind,
            &e.entity,
            &e.subject,
            &e.payload,
            &e.at,
            &e.correlation,
        ];
        self.client.execute(&st, &params)?;
        Ok(())
    }
}

fn params<'b>(args: &'b [Arg<'_>]) -> Vec<&'b (dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl<C: GenericClient> Conn for Pg<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let st = self.prepare(sql, false)?;
        Ok(self.client.execute(&st, &params(args))?)
    }

    fn insert(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<i64>> {
        let st = self.prepare(sql, true)?;
        let row = self.client.query_opt(&st, &params(args))?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    fn query(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()> {
        let st = self.prepare(sql, false)?;
        for r in self.client.query(&st, &params(args))? {
            each(&PgRow(&r))?;
        }
        Ok(())
    }

    fn event(&mut self, e: &RawEvent<'_>, ts: &str) -> Result<()> {
        self.events.push(e, ts);
        Ok(())
    }

    fn insert_positions(&mut self, batch: &[NewPosition<'_>]) -> Result<Vec<Option<i64>>> {
        let Some(first) = batch.first() else {
            return Ok(Vec::new());
        };
        if batch.len() == 1 {
            let due = first.row.due_date.map(|d| d.to_string());
            let args = crate::positions::insert_args(first, due.as_deref());
            return Ok(vec![self.insert(crate::positions::INSERT, &args)?]);
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
        let st = self.prepare(
            "INSERT INTO positions (entity, iud, iuv, iuv_generated, status, debt_type, amount_cents, due_date, payer_id, data, version, flow_id, created_by, created_at, updated_at)
             SELECT $1, iud, iuv, gen, 'active', dt, amt, due, payer, data, 1, $2, $3, $4, $4
             FROM UNNEST($5::text[], $6::text[], $7::bool[], $8::text[], $9::int8[], $10::text[], $11::text[], $12::text[])
                  WITH ORDINALITY AS u(iud, iuv, gen, dt, amt, due, payer, data, n)
             ORDER BY n
             ON CONFLICT DO NOTHING RETURNING id, iud, iuv",
            false,
        )?;
        let rows = self.client.query(
            &st,
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

    fn insert_outbox(&mut self, flow_id: i64, messages: &[OutboxMessage]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = messages.iter().map(|m| m.key.as_str()).collect();
        let payloads: Vec<&str> = messages.iter().map(|m| m.payload.as_str()).collect();
        let st = self.prepare(
            "INSERT INTO flow_outbox (flow_id, key, payload)
             SELECT $1, k, p FROM UNNEST($2::text[], $3::text[]) WITH ORDINALITY AS u(k, p, n)
             ORDER BY n",
            false,
        )?;
        self.client.execute(&st, &[&flow_id, &keys, &payloads])?;
        Ok(())
    }

    fn lock(&mut self, key: &str) -> Result<()> {
        let sql = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";
        self.execute(sql, args!(key)).map(drop)
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
    fn push(&mut self, e: &RawEvent<'_>, ts: &str) {
        self.kind.push(e.kind.into());
        self.entity.push(e.entity.into());
        self.subject.push(e.subject.into());
        self.payload.push(e.payload.into());
        self.at.push(ts.into());
        self.correlation.push(e.correlation.map(str::to_string));
    }
}

struct PgRow<'a>(&'a ::postgres::Row);

impl Row for PgRow<'_> {
    fn int(&self, i: usize) -> Result<Option<i64>> {
        let ty = self.0.columns().get(i).map(|c| c.type_());
        Ok(match ty {
            Some(t) if *t == Type::INT4 => self.0.try_get::<_, Option<i32>>(i)?.map(i64::from),
            Some(t) if *t == Type::INT2 => self.0.try_get::<_, Option<i16>>(i)?.map(i64::from),
            _ => self.0.try_get(i)?,
        })
    }

    fn text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.0.try_get(i)?)
    }

    fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.0.try_get(i)?)
    }
}

/// Binds to the type the server inferred for the parameter: `Int` also fills an `INTEGER`
/// column or a `BOOLEAN`, `Bool` an integer.
impl ToSql for Arg<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut ::postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Text(s) => s.to_sql(ty, out),
            Arg::Ints(v) => v.to_sql(ty, out),
            Arg::Bool(b) if *ty == Type::BOOL => b.to_sql(ty, out),
            Arg::Bool(b) => Arg::Int(i64::from(b)).to_sql(ty, out),
            Arg::Int(i) if *ty == Type::BOOL => (i != 0).to_sql(ty, out),
            Arg::Int(i) if *ty == Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
            Arg::Int(i) if *ty == Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
            Arg::Int(i) => i.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

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
