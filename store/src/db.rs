//! The seam between the store's SQL, written once, and the two drivers: a connection runs
//! statements over [`Arg`] values and hands rows back as [`Row`]s; a [`Driver`] says where a call
//! runs (a reader, the writer, a transaction). The drivers differ only where the databases do.

use crate::ops::{now, NewPosition, OwnedReceipt, RawEvent};
use crate::*;

/// Which database runs a statement, for the few places where their SQL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement whose text differs by dialect: mostly row locks (`FOR UPDATE`), which SQLite has
/// neither the syntax nor the need for (its one writer holds the whole database).
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    pub sqlite: &'static str,
    pub pg: &'static str,
}

/// [`Sql`] from text both dialects share; `"text" => "more"` adds `more` for PostgreSQL alone.
macro_rules! sql {
    ($($s:expr $(=> $pg:expr)?),+ $(,)?) => {
        $crate::db::Sql {
            sqlite: concat!($($s),+),
            pg: concat!($($s $(, $pg)?),+),
        }
    };
}
pub(crate) use sql;

/// A value bound to a statement. `Ints` only binds on PostgreSQL (`= ANY($1)`).
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Bool(bool),
    Ints(&'a [i64]),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::Int(i64::from(v))
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<&'a [i64]> for Arg<'a> {
    fn from(v: &'a [i64]) -> Self {
        Arg::Ints(v)
    }
}
impl<'a, T: Into<Arg<'a>>> From<Option<T>> for Arg<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Arg::Null, Into::into)
    }
}

/// `args!(a, b)`: a statement's arguments.
macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$($crate::db::Arg::from($a)),*] };
}
pub(crate) use args;

/// A row read back, column by column (0-based).
pub trait Row {
    fn int(&self, i: usize) -> Result<Option<i64>>;
    fn text(&self, i: usize) -> Result<Option<String>>;
    fn flag(&self, i: usize) -> Result<bool>;
}

/// A type a column reads as.
pub trait Col: Sized {
    fn col(r: &dyn Row, i: usize) -> Result<Self>;
}

fn null(i: usize) -> StoreError {
    StoreError::Corrupt(format!("column {i} is NULL"))
}

impl Col for i64 {
    fn col(r: &dyn Row, i: usize) -> Result<Self> {
        r.int(i)?.ok_or_else(|| null(i))
    }
}
impl Col for u64 {
    fn col(r: &dyn Row, i: usize) -> Result<Self> {
        Ok(i64::col(r, i)? as u64)
    }
}
impl Col for Option<i64> {
    fn col(r: &dyn Row, i: usize) -> Result<Self> {
        r.int(i)
    }
}
impl Col for String {
    fn col(r: &dyn Row, i: usize) -> Result<Self> {
        r.text(i)?.ok_or_else(|| null(i))
    }
}
impl Col for Option<String> {
    fn col(r: &dyn Row, i: usize) -> Result<Self> {
        r.text(i)
    }
}
impl Col for bool {
    fn col(r: &dyn Row, i: usize) -> Result<Self> {
        r.flag(i)
    }
}

impl dyn Row + '_ {
    pub fn get<T: Col>(&self, i: usize) -> Result<T> {
        T::col(self, i)
    }
}

/// A connection, or a transaction open on one. Statements use `$N` placeholders.
pub trait Conn {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64>;
    /// Runs an `INSERT` (written without `RETURNING`): the new row's id, `None` when
    /// `ON CONFLICT DO NOTHING` skipped it.
    fn insert(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<i64>>;
    /// Runs a query, handing each row to `each` in order.
    fn query(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()>;

    /// Records an event in the transaction (PostgreSQL writes them together before commit).
    fn event(&mut self, e: &RawEvent<'_>, ts: &str) -> Result<()> {
        self.execute(
            crate::events::INSERT,
            args!(e.kind, e.entity, e.subject, e.payload, ts, e.correlation),
        )
        .map(drop)
    }
    /// Inserts positions in order (PostgreSQL in one statement: it pays per round trip).
    fn insert_positions(&mut self, batch: &[NewPosition<'_>]) -> Result<Vec<Option<i64>>> {
        let mut ids = Vec::with_capacity(batch.len());
        for p in batch {
            let due = p.row.due_date.map(|d| d.to_string());
            let args = crate::positions::insert_args(p, due.as_deref());
            ids.push(self.insert(crate::positions::INSERT, &args)?);
        }
        Ok(ids)
    }
    /// Adds a flow's outbox messages in order (PostgreSQL in one statement).
    fn insert_outbox(&mut self, flow_id: i64, messages: &[OutboxMessage]) -> Result<()> {
        for m in messages {
            self.execute(
                crate::flows::INSERT_OUTBOX,
                args!(flow_id, &m.key, &m.payload),
            )?;
        }
        Ok(())
    }
    /// Adds to running totals of `metric_counts`: (kind, label, amount), keys distinct and in
    /// order (see [`crate::events::add_counts`]). PostgreSQL sends them in one statement.
    fn add_counts(&mut self, counts: &[(&str, &str, i64)]) -> Result<()> {
        for (kind, label, n) in counts {
            self.execute(crate::events::ADD_COUNT, args!(*kind, *label, *n))?;
        }
        Ok(())
    }
    /// Holds a lock named `key` until the transaction ends. SQLite's write transactions hold the
    /// whole database already; PostgreSQL takes an advisory lock.
    fn lock(&mut self, _key: &str) -> Result<()> {
        Ok(())
    }
}

impl dyn Conn + '_ {
    /// The statement's text for this connection's dialect.
    pub fn pick(&self, sql: &Sql) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => sql.sqlite,
            Dialect::Postgres => sql.pg,
        }
    }

    pub fn all<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        f: impl Fn(&dyn Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.query(sql, args, &mut |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row, if any.
    pub fn one<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        f: impl Fn(&dyn Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut out = None;
        self.query(sql, args, &mut |r| {
            if out.is_none() {
                out = Some(f(r)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs `sql` for each id (its `$1`) with `rest` after it: one statement on PostgreSQL
    /// (`= ANY($1)`), the cached statement once per id on SQLite.
    pub fn each_id(&mut self, sql: &Sql, ids: &[i64], rest: Option<&str>) -> Result<u64> {
        let mut a = [Arg::Ints(ids), rest.map_or(Arg::Null, Arg::Text)];
        let len = 1 + usize::from(rest.is_some());
        if self.dialect() == Dialect::Postgres {
            return self.execute(sql.pg, &a[..len]);
        }
        let mut n = 0;
        for id in ids {
            a[0] = Arg::Int(*id);
            n += self.execute(sql.sqlite, &a[..len])?;
        }
        Ok(n)
    }

    /// Records an event its caller built.
    pub fn new_event(&mut self, e: &NewEvent<'_>, ts: &str) -> Result<()> {
        self.event(&RawEvent::new(e, &e.payload.to_string()), ts)
    }
}

/// Where a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads, beside the writers (SQLite's read connections).
    Read,
    /// Writes, each statement committing on its own.
    Write,
    /// One transaction, committed when the call returns Ok and rolled back otherwise.
    Tx,
    /// A write whose loss on power failure is harmless (a lease): SQLite does not wait for the
    /// disk.
    Lease,
}

/// A database the store runs on. Every store trait is implemented once over it.
pub trait Driver: Send + Sync {
    fn run<T>(&self, access: Access, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T>;

    /// Commits one of the node's small writes; SQLite commits those arriving together at once.
    fn commit_hot(&self, write: Write) -> Result<Written> {
        self.run(Access::Tx, |c| apply_write(c, &write, &now()))
    }

    fn read<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        self.run(Access::Read, f)
    }

    fn tx<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        self.run(Access::Tx, f)
    }
}

/// A write of the node's hot path: small, frequent, each waiting for its commit.
pub enum Write {
    Receipt(Box<OwnedReceipt>),
    Activation(i64, Option<String>),
}

pub enum Written {
    Receipt(ReceiptStored),
    Activation,
}

pub fn apply_write(c: &mut dyn Conn, write: &Write, ts: &str) -> Result<Written> {
    match write {
        Write::Receipt(r) => {
            crate::ops::store_receipt(&mut crate::ops::Ops::new(c), r, ts).map(Written::Receipt)
        }
        Write::Activation(position, correlation) => {
            crate::positions::activate(c, *position, correlation.as_deref(), ts)?;
            Ok(Written::Activation)
        }
    }
}
