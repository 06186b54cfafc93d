//! The shared store: PostgreSQL, for several hubs on one database: a connection pool with
//! statements prepared once per connection, and batches sent as one statement (`UNNEST`) where
//! SQLite runs a cached statement per row, since PostgreSQL pays a round trip per statement.
//!
//! Each pooled connection is a `tokio-postgres` client on a current-thread runtime of its own,
//! driven by the calling (blocking) thread, so every wait has a limit: for a pooled connection
//! (`pool_wait`), for connecting (`connect_timeout`, the whole start-up, TLS included), and for
//! each statement's answer (`statement_timeout` on the server, and a little more on the client for
//! a server that went silent), all cut to the caller's [`deadline`](crate::deadline). A connection
//! that timed out or broke is dropped with the idle ones (they likely share its fate) and new
//! ones are made on demand: the store recovers when the database does. The runtimes panic when
//! dropped inside an async context, so connections are opened and dropped on blocking threads
//! (`open` and `Drop` use a thread of their own).

use crate::db::{args, Access, Arg, Conn, Dialect, Driver, Row};
use crate::ops::{now, NewPosition, RawEvent};
use crate::pgtls::{MakeRustls, Verify};
use crate::*;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/pg_0001_init.sql")),
    (2, include_str!("migrations/pg_0002_api.sql")),
    (3, include_str!("migrations/pg_0003_parsed.sql")),
    (4, include_str!("migrations/pg_0004_metric_counts.sql")),
    (5, include_str!("migrations/pg_0005_held.sql")),
    (6, include_str!("migrations/pg_0006_file_attempts.sql")),
    (7, include_str!("migrations/pg_0007_reports.sql")),
    (8, include_str!("migrations/pg_0008_report_deliveries.sql")),
    (9, include_str!("migrations/pg_0009_receipt_id_any.sql")),
    (10, include_str!("migrations/pg_0010_treasury.sql")),
    (11, include_str!("migrations/pg_0011_reconciliation.sql")),
    (12, include_str!("migrations/pg_0012_payer_index.sql")),
    (13, include_str!("migrations/pg_0013_ws_requests.sql")),
    (14, include_str!("migrations/pg_0014_expiry.sql")),
    (15, include_str!("migrations/pg_0015_secondary.sql")),
];

/// Serialises migrations of hubs starting together (an arbitrary constant: "snodo" in ASCII).
const MIGRATION_LOCK: i64 = 0x0073_6e6f_646f;

/// Connections kept when the URL does not say `?pool=N`.
const DEFAULT_POOL: usize = 8;
/// How long a call waits for a pooled connection (`pool_wait`).
const DEFAULT_POOL_WAIT: Duration = Duration::from_secs(2);
/// How long connecting may take, TCP, TLS and start-up together (`connect_timeout`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The server cancels a statement running longer (`statement_timeout`; `0` turns it off).
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How much longer than `statement_timeout` the client waits for an answer before it gives the
/// connection up (the server may be unreachable, not slow).
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// How the store connects, from the URL's query (the options the driver does not know are
/// taken off; the rest is the driver's).
struct Settings {
    config: tokio_postgres::Config,
    pool: usize,
    pool_wait: Duration,
    connect_timeout: Duration,
    /// `None`: off.
    statement_timeout: Option<Duration>,
    tls: Option<MakeRustls>,
    /// `sslmode` as given, for messages.
    sslmode: String,
}

/// A duration option: `500ms`, `5s`, `2min`, or a bare number in `bare` units.
fn duration(key: &str, value: &str, bare: Duration) -> Result<Duration> {
    let bad = || {
        StoreError::Open(format!(
            "{key}={value}: expected a duration such as 500ms, 5s or 2min"
        ))
    };
    let (num, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => value.split_at(i),
        None => (value, ""),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let unit = match unit {
        "" => bare,
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "min" => Duration::from_secs(60),
        _ => return Err(bad()),
    };
    unit.checked_mul(u32::try_from(n).map_err(|_| bad())?)
        .ok_or_else(bad)
}

impl Settings {
    fn parse(url: &str) -> Result<Self> {
        let (url, pool) = parse_url(url)?;
        let (base, query) = url.split_once('?').unwrap_or((&url, ""));
        let mut s = Settings {
            config: tokio_postgres::Config::new(),
            pool,
            pool_wait: DEFAULT_POOL_WAIT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: Some(DEFAULT_STATEMENT_TIMEOUT),
            tls: None,
            sslmode: "disable".into(),
        };
        let mut root_cert: Option<PathBuf> = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let sec = Duration::from_secs(1);
            match key {
                "pool_wait" => s.pool_wait = duration(key, value, sec)?,
                "connect_timeout" => s.connect_timeout = duration(key, value, sec)?,
                // PostgreSQL's own unit: a bare number is milliseconds.
                "statement_timeout" => {
                    let d = duration(key, value, Duration::from_millis(1))?;
                    s.statement_timeout = (!d.is_zero()).then_some(d);
                }
                "sslmode" => s.sslmode = value.to_string(),
                "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(value))),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        s.config = rest
            .parse()
            .map_err(|e| StoreError::Open(format!("invalid PostgreSQL URL: {e}")))?;
        if s.connect_timeout.is_zero() || s.pool_wait.is_zero() {
            return Err(StoreError::Open(
                "connect_timeout and pool_wait must be more than 0".into(),
            ));
        }
        s.config.connect_timeout(s.connect_timeout);
        let verify = match s.sslmode.as_str() {
            "disable" => None,
            "require" => Some(Verify::None),
            "verify-ca" => Some(Verify::Chain),
            "verify-full" => Some(Verify::Full),
            other => {
                return Err(StoreError::Open(format!(
                    "sslmode={other}: expected disable, require, verify-ca or verify-full"
                )))
            }
        };
        if let Some(verify) = verify {
            let config = crate::pgtls::client_config(verify, root_cert.as_deref())
                .map_err(StoreError::Open)?;
            s.tls = Some(MakeRustls(Arc::new(config)));
            s.config.ssl_mode(tokio_postgres::config::SslMode::Require);
        } else {
            s.config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        Ok(s)
    }
}

/// `%XX` escapes in a URL option's value (a path with spaces, say).
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A connection's prepared statements, by their text; `ids` holds inserts prepared with
/// `RETURNING id` appended.
#[derive(Default)]
struct Statements {
    plain: HashMap<String, Statement>,
    ids: HashMap<String, Statement>,
}

/// A pooled connection: its client, the runtime that drives it, its prepared statements (a
/// statement is prepared once per connection).
struct Pooled {
    client: Client,
    stmts: Statements,
    rt: tokio::runtime::Runtime,
    /// The client's limit for one statement's answer.
    answer_wait: Duration,
}

impl Pooled {
    /// Runs one exchange under the answer limit and the caller's deadline.
    fn call<T>(
        rt: &tokio::runtime::Runtime,
        wait: Duration,
        fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        let wait = crate::deadline::cap(wait)
            .ok_or_else(|| StoreError::Timeout("the caller's time is up".into()))?;
        // The timer is made inside the runtime, which owns the clock.
        match rt.block_on(async { tokio::time::timeout(wait, fut).await }) {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Timeout(format!(
                "no answer from PostgreSQL within {wait:?}"
            ))),
        }
    }

    fn batch(&self, sql: &str) -> Result<()> {
        Self::call(&self.rt, self.answer_wait, self.client.batch_execute(sql))
    }

    /// Whether the connection still looks usable: lets its task see a close the server sent
    /// while it sat idle (no round trip).
    fn alive(&self) -> bool {
        self.rt.block_on(tokio::task::yield_now());
        !self.client.is_closed()
    }
}

struct PoolState {
    idle: Vec<Pooled>,
    open: usize,
    /// Connections leased by calls without [`priority`](crate::deadline::priority).
    general: usize,
}

/// Connections only priority calls (the node's) may take: a quarter of the pool, from 4 up.
fn reserve(pool: usize) -> usize {
    if pool >= 4 {
        pool / 4
    } else {
        0
    }
}

pub struct PgStore {
    settings: Settings,
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

/// How a call left its connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Back to the pool.
    Keep,
    /// Dropped (a database error may leave it mid-protocol).
    Drop,
    /// Dropped with the idle ones: the server went silent or away.
    DropAll,
}

/// Returns the connection to the pool, or drops it if the call left it broken (also on panic).
struct Lease<'s> {
    store: &'s PgStore,
    conn: Option<Pooled>,
    after: After,
    /// Counted in `general` while held.
    general: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let conn = self.conn.take();
        let mut st = lock_any(&self.store.state);
        if self.general {
            st.general = st.general.saturating_sub(1);
        }
        let mut gone = Vec::new();
        match (conn, self.after) {
            // Nothing was taken.
            (None, After::Keep) => {}
            (Some(c), After::Keep) if !c.client.is_closed() => st.idle.push(c),
            (c, _) => {
                st.open = st.open.saturating_sub(1);
                gone.extend(c);
                if self.after == After::DropAll {
                    st.open = st.open.saturating_sub(st.idle.len());
                    gone.append(&mut st.idle);
                }
            }
        }
        drop(st);
        self.store.freed.notify_all();
        // Outside the lock: dropping closes sockets.
        drop(gone);
    }
}

impl PgStore {
    /// Connects (lazily, up to the pool size) and migrates the schema. Besides the driver's
    /// own URL options it takes `pool=N`, `pool_wait`, `connect_timeout`, `statement_timeout`
    /// (durations: `500ms`, `5s`, `2min`; bare numbers are seconds, milliseconds for
    /// `statement_timeout` as in PostgreSQL), and `sslmode=disable|require|verify-ca|verify-full`
    /// with `sslrootcert=<CA file>`.
    pub fn open(url: &str) -> Result<Self> {
        let settings = Settings::parse(url)?;
        if settings.tls.is_none() && !loopback_only(&settings.config) {
            tracing::warn!(
                "PostgreSQL beyond loopback without TLS: add sslmode=verify-full&sslrootcert=<CA file> to hub.store"
            );
        }
        let store = Self {
            settings,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                general: 0,
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
        let s = &self.settings;
        let fail = |e: String| {
            StoreError::Open(format!(
                "cannot connect to PostgreSQL (sslmode={}): {e}",
                s.sslmode
            ))
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let wait = crate::deadline::cap(s.connect_timeout)
            .ok_or_else(|| StoreError::Timeout("the caller's time is up".into()))?;
        let connected = rt.block_on(async {
            tokio::time::timeout(wait, async {
                match &s.tls {
                    None => {
                        let (client, conn) = s.config.connect(NoTls).await?;
                        tokio::spawn(conn);
                        Ok(client)
                    }
                    Some(tls) => {
                        let (client, conn) = s.config.connect(tls.clone()).await?;
                        tokio::spawn(conn);
                        Ok::<_, tokio_postgres::Error>(client)
                    }
                }
            })
            .await
        });
        let client = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(fail(error_chain(&e))),
            Err(_) => {
                return Err(StoreError::Timeout(format!(
                    "connecting to PostgreSQL took more than {wait:?}"
                )))
            }
        };
        let answer_wait = s
            .statement_timeout
            .map_or(Duration::MAX, |t| t.saturating_add(ANSWER_MARGIN));
        let pooled = Pooled {
            client,
            stmts: Statements::default(),
            rt,
            answer_wait,
        };
        let timeout_ms = s.statement_timeout.map_or(0, |t| t.as_millis());
        pooled.batch(&format!("SET statement_timeout = {timeout_ms}"))?;
        Ok(pooled)
    }

    /// Runs `f` on a pooled connection; one that fails with a database error is dropped, not
    /// returned (it may be mid-protocol or its server gone).
    fn with<T>(&self, f: impl FnOnce(&mut Pooled) -> Result<T>) -> Result<T> {
        let waited = Instant::now();
        let limit = crate::deadline::cap(self.settings.pool_wait)
            .ok_or_else(|| StoreError::Timeout("the caller's time is up".into()))?;
        let priority = crate::deadline::is_priority();
        let general_max = self.settings.pool - reserve(self.settings.pool);
        // `Drop` until a connection is in hand: a slot counted open and then not filled (a
        // failed connect) is given back.
        let mut lease = Lease {
            store: self,
            conn: None,
            after: After::Drop,
            general: false,
        };
        {
            let mut st = lock_any(&self.state);
            loop {
                let may = priority || st.general < general_max;
                if may && !priority {
                    st.general += 1;
                    lease.general = true;
                }
                if let Some(c) = if may { st.idle.pop() } else { None } {
                    drop(st);
                    if c.alive() {
                        lease.conn = Some(c);
                        break;
                    }
                    // Closed while idle (a restarted server): make a new one in its slot.
                    drop(c);
                    lease.conn = Some(self.connect().inspect_err(|e| {
                        if matches!(e, StoreError::Timeout(_)) {
                            lease.after = After::DropAll;
                        }
                    })?);
                    break;
                }
                if may && st.open < self.settings.pool {
                    st.open += 1;
                    drop(st);
                    // Counted as open: the lease gives the slot back if connecting fails.
                    lease.conn = Some(self.connect().inspect_err(|e| {
                        if matches!(e, StoreError::Timeout(_)) {
                            lease.after = After::DropAll;
                        }
                    })?);
                    break;
                }
                if lease.general {
                    st.general -= 1;
                    lease.general = false;
                }
                let left = limit.saturating_sub(waited.elapsed());
                if left.is_zero() {
                    // No slot was taken: nothing to give back.
                    lease.after = After::Keep;
                    return Err(StoreError::Timeout(format!(
                        "no PostgreSQL connection free within {limit:?} (pool={})",
                        self.settings.pool
                    )));
                }
                st = self
                    .freed
                    .wait_timeout(st, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        let Some(conn) = lease.conn.as_mut() else {
            return Err(StoreError::Conflict("no connection was leased".into()));
        };
        let out = f(conn);
        lease.after = match &out {
            Err(StoreError::Timeout(_)) => After::DropAll,
            Err(StoreError::Pg(e)) if e.is_closed() => After::DropAll,
            Err(StoreError::Pg(_)) => After::Drop,
            _ => After::Keep,
        };
        out
    }

    fn migrate(&self) -> Result<()> {
        self.with(|p| {
            in_tx(p, |c| {
                c.execute("SELECT pg_advisory_xact_lock($1)", args!(MIGRATION_LOCK))?;
                c.batch(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
                )?;
                for (version, sql) in MIGRATIONS {
                    let done = (c as &mut dyn Conn).one(
                        "SELECT version FROM schema_migrations WHERE version = $1",
                        args!(*version),
                        |_| Ok(()),
                    )?;
                    if done.is_none() {
                        c.batch(sql)?;
                        c.execute(
                            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                            args!(*version, now().as_str()),
                        )?;
                    }
                }
                Ok(())
            })
        })
    }
}

/// Whether every host of the URL is this machine (or a Unix socket).
fn loopback_only(c: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    c.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[allow(unreachable_patterns)]
        _ => true,
    }) && c.get_hostaddrs().iter().all(std::net::IpAddr::is_loopback)
}

/// An error with its causes (the driver's `Display` leaves the TLS reason out).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a connection's runtime panics inside an async context: do it on a plain
        // thread.
        let idle = std::mem::take(&mut lock_any(&self.state).idle);
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

impl Driver for PgStore {
    fn run<T>(&self, access: Access, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        self.with(|p| {
            if access == Access::Tx {
                return in_tx(p, |c| f(c));
            }
            let mut c = Pg::new(p);
            let out = f(&mut c)?;
            c.flush()?;
            Ok(out)
        })
    }
}

/// Runs `f` in a transaction on `p`: committed when it returns Ok, rolled back otherwise.
fn in_tx<T>(p: &mut Pooled, f: impl FnOnce(&mut Pg<'_>) -> Result<T>) -> Result<T> {
    p.batch("BEGIN")?;
    let mut c = Pg::new(p);
    let out = f(&mut c).and_then(|out| {
        c.flush()?;
        Ok(out)
    });
    match out {
        Ok(out) => {
            p.batch("COMMIT")?;
            Ok(out)
        }
        Err(e) => {
            // A connection that failed is dropped anyway; a healthy one goes back clean.
            if !matches!(e, StoreError::Pg(_) | StoreError::Timeout(_)) {
                p.batch("ROLLBACK")?;
            }
            Err(e)
        }
    }
}

/// A pooled connection, maybe in a transaction. Events wait in a buffer and go in as one
/// statement before the transaction commits.
struct Pg<'a> {
    conn: &'a mut Pooled,
    events: EventBuf,
}

impl<'a> Pg<'a> {
    fn new(conn: &'a mut Pooled) -> Self {
        Self {
            conn,
            events: EventBuf::default(),
        }
    }

    fn call<T>(
        &self,
        fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        Pooled::call(&self.conn.rt, self.conn.answer_wait, fut)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.conn.batch(sql)
    }

    /// Prepares `sql` once per connection (with `RETURNING id` when `id`).
    fn prepare(&mut self, sql: &str, id: bool) -> Result<Statement> {
        let cache = if id {
            &self.conn.stmts.ids
        } else {
            &self.conn.stmts.plain
        };
        if let Some(s) = cache.get(sql) {
            return Ok(s.clone());
        }
        let text = if id {
            format!("{sql} RETURNING id")
        } else {
            sql.to_string()
        };
        let s = self.call(self.conn.client.prepare(&text))?;
        let cache = if id {
            &mut self.conn.stmts.ids
        } else {
            &mut self.conn.stmts.plain
        };
        cache.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn exec(&mut self, st: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.call(self.conn.client.execute(st, params))
    }

    fn rows(
        &mut self,
        st: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.call(self.conn.client.query(st, params))
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
        self.exec(&st, &params)?;
        Ok(())
    }
}

fn params<'b>(args: &'b [Arg<'_>]) -> Vec<&'b (dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl Conn for Pg<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let st = self.prepare(sql, false)?;
        self.exec(&st, &params(args))
    }

    fn insert(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<i64>> {
        let st = self.prepare(sql, true)?;
        let rows = self.rows(&st, &params(args))?;
        Ok(rows.first().map(|r| r.try_get(0)).transpose()?)
    }

    fn query(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()> {
        let st = self.prepare(sql, false)?;
        for r in self.rows(&st, &params(args))? {
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
        let rows = self.rows(
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
        self.exec(&st, &[&flow_id, &keys, &payloads])?;
        Ok(())
    }

    fn add_counts(&mut self, counts: &[(&str, &str, i64)]) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let kinds: Vec<&str> = counts.iter().map(|c| c.0).collect();
        let labels: Vec<&str> = counts.iter().map(|c| c.1).collect();
        let ns: Vec<i64> = counts.iter().map(|c| c.2).collect();
        // The connection's shard: transactions on other connections (other hubs) add to other
        // rows instead of waiting for this one's commit. Rows are locked in the callers' order.
        let st = self.prepare(
            "INSERT INTO metric_counts (kind, label, shard, n)
             SELECT k, l, pg_backend_pid() % 16, v
             FROM UNNEST($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY AS u(k, l, v, o)
             ORDER BY o
             ON CONFLICT (kind, label, shard) DO UPDATE SET n = metric_counts.n + EXCLUDED.n",
            false,
        )?;
        self.exec(&st, &[&kinds, &labels, &ns])?;
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

struct PgRow<'a>(&'a tokio_postgres::Row);

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
        out: &mut tokio_postgres::types::private::BytesMut,
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

    #[test]
    fn limits_and_tls_come_off_the_url() {
        let s = Settings::parse("postgres://u@h/db").unwrap();
        assert_eq!(s.pool_wait, DEFAULT_POOL_WAIT);
        assert_eq!(s.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(s.statement_timeout, Some(DEFAULT_STATEMENT_TIMEOUT));
        assert!(s.tls.is_none());
        let s = Settings::parse(
            "postgres://u@h/db?pool=2&pool_wait=500ms&connect_timeout=4&statement_timeout=1500&application_name=x",
        )
        .unwrap();
        assert_eq!(s.pool, 2);
        assert_eq!(s.pool_wait, Duration::from_millis(500));
        assert_eq!(s.connect_timeout, Duration::from_secs(4));
        assert_eq!(s.statement_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(s.config.get_application_name(), Some("x"));
        let s = Settings::parse("postgres://u@h/db?statement_timeout=0&sslmode=require").unwrap();
        assert_eq!(s.statement_timeout, None);
        assert!(s.tls.is_some());
        for bad in [
            "postgres://u@h/db?pool_wait=soon",
            "postgres://u@h/db?connect_timeout=0",
            "postgres://u@h/db?statement_timeout=5h",
            "postgres://u@h/db?sslmode=prefer",
            "postgres://u@h/db?sslmode=verify-full",
            "postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
        ] {
            assert!(Settings::parse(bad).is_err(), "{bad}");
        }
        let e = Settings::parse("postgres://u@h/db?sslmode=verify-full")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslrootcert"), "{e}");
        assert_eq!(percent_decode("/a%20b/c%2Fd"), "/a b/c/d");
    }

    /// A fresh database on the test server (`SNODO_TEST_PG`), dropped by the returned guard.
    struct TempDb(String, String);
    impl TempDb {
        fn new() -> Self {
            let admin = std::env::var("SNODO_TEST_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("snodo_pool_{}_{n}", std::process::id());
            let mut c = ::postgres::Client::connect(&admin, ::postgres::NoTls)
                .expect("PostgreSQL on SNODO_TEST_PG (ops/setup.sh)");
            c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                .unwrap();
            c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
            Self(admin, name)
        }
        fn url(&self, query: &str) -> String {
            let base = self.0.rsplit_once('/').map_or(self.0.as_str(), |(b, _)| b);
            format!("{base}/{}?{query}", self.1)
        }
    }
    impl Drop for TempDb {
        fn drop(&mut self) {
            if let Ok(mut c) = ::postgres::Client::connect(&self.0, ::postgres::NoTls) {
                let _ =
                    c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.1));
            }
        }
    }

    /// Plans of the scrape's statements with sequential scans priced out (a small table would be
    /// read whole, as it should): every read of receipts, deliveries or flows is an index range.
    #[test]
    fn the_scrape_counts_on_indexes_and_never_scans_a_table() {
        let db = TempDb::new();
        drop(PgStore::open(&db.url("pool=1")).unwrap());
        let mut c = ::postgres::Client::connect(&db.url(""), ::postgres::NoTls).unwrap();
        c.batch_execute("SET enable_seqscan = off").unwrap();
        let now = "2026-01-01T00:00:00.000Z";
        let explain = |c: &mut ::postgres::Client, sql: &str, args: &[&(dyn ToSql + Sync)]| {
            c.query(&format!("EXPLAIN {sql}"), args)
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        };
        let counts = explain(&mut c, crate::events::SCRAPE_COUNTS, &[]);
        let deliveries = explain(&mut c, crate::events::SCRAPE_DELIVERIES, &[&now]);
        for plan in [&counts, &deliveries] {
            for (i, node) in plan.iter().enumerate() {
                let on_table = ["receipts", "deliveries", "flows"]
                    .iter()
                    .any(|t| node.contains(&format!(" on {t} ")));
                if !on_table {
                    continue;
                }
                // A node's details follow it, up to the next node.
                let details: Vec<&String> = plan[i + 1..]
                    .iter()
                    .take_while(|l| !l.contains("->"))
                    .collect();
                let bounded = details
                    .iter()
                    .any(|d| d.contains("Index Cond:") || d.contains("Recheck Cond:"));
                assert!(
                    !node.contains("Seq Scan") && bounded,
                    "{node}: {}",
                    plan.join("\n")
                );
            }
        }
        for index in ["deliveries_due", "deliveries_leased", "deliveries_retried"] {
            assert!(
                deliveries
                    .iter()
                    .any(|l| l.contains(&format!("using {index} on deliveries"))),
                "{index}: {}",
                deliveries.join("\n")
            );
        }
    }

    #[test]
    fn the_pool_keeps_a_share_for_priority_calls_and_bounds_every_wait() {
        let db = TempDb::new();
        // pool 4: one connection kept for priority calls.
        let store = PgStore::open(&db.url("pool=4&pool_wait=300ms")).unwrap();
        let release = std::sync::Barrier::new(4);
        let held = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    store
                        .with(|_| {
                            held.wait();
                            release.wait();
                            Ok(())
                        })
                        .unwrap()
                });
            }
            held.wait();
            // Every general connection is taken: a general call waits `pool_wait`, then fails.
            let t = Instant::now();
            let e = store.with(|_| Ok(())).err().unwrap();
            assert!(matches!(e, StoreError::Timeout(_)), "{e}");
            assert!(
                t.elapsed() >= Duration::from_millis(250),
                "{:?}",
                t.elapsed()
            );
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
            // The node's calls still get one.
            crate::deadline::priority(|| store.ping()).unwrap();
            // The caller's deadline cuts the wait short.
            let t = Instant::now();
            let e = crate::deadline::within(Duration::from_millis(50), || {
                store.with(|_| Ok(())).err().unwrap()
            });
            assert!(matches!(e, StoreError::Timeout(_)), "{e}");
            assert!(
                t.elapsed() < Duration::from_millis(250),
                "{:?}",
                t.elapsed()
            );
            release.wait();
        });
        store.ping().unwrap();
        let st = lock_any(&store.state);
        assert_eq!((st.general, st.open), (0, st.idle.len()));
    }
}
