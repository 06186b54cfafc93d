//! pagoPA's settlement flows (FdR): a flow's header, its payment rows linked to receipts, its
//! anomalies, and each entity's pull cursor.
//!
//! A flow is keyed by (entity, PSP, IUF, revision). Its rows arrive in chunks, each committed
//! with the flow's `rows_done` (a chunk that does not continue from it is refused), so a pull
//! killed mid-flow resumes after the last committed row and never stores a row twice. A flow is
//! `loading` until [`ReportStore::finish_report`] sets it `ok`, with its totals and the
//! flow-level anomalies, and supersedes its earlier revisions (kept, with `superseded_by`).

use crate::db::{args, Arg, Conn, Dialect, Driver, Row};
use crate::ops::now;
use crate::*;

pub trait ReportStore {
    /// The flow with this key, created `loading` (no rows yet) when new.
    fn begin_report(&self, flow: &NewReport<'_>) -> Result<ReportFlow>;

    /// Adds rows `from_row + 1 ..` of a `loading` flow with their anomalies, in one transaction
    /// with the flow's `rows_done`; `report.anomaly` events for the anomalies of severity
    /// `anomaly`. Refused (`Conflict`) unless the flow has exactly `from_row` rows done.
    fn add_report_rows(
        &self,
        flow_id: i64,
        from_row: u64,
        rows: &[ReportRow<'_>],
        anomalies: &[NewAnomaly<'_>],
    ) -> Result<()>;

    /// Marks a `loading` flow `ok` with its totals and flow-level anomalies, supersedes its
    /// earlier revisions (or is itself superseded by a later one already held), and records
    /// `report.received`; in the same transaction, a delivery for each of the entity's reports
    /// `pipelines` (none for a revision already superseded). Returns false when the flow was not
    /// `loading` (finished already).
    fn finish_report(
        &self,
        flow_id: i64,
        totals: &ReportTotals,
        anomalies: &[NewAnomaly<'_>],
        pipelines: &[&str],
    ) -> Result<bool>;

    /// Records the flow as failed with why (a new row, or a `loading` one); a flow already `ok`
    /// stays so. `report.failed` event.
    fn fail_report(&self, flow: &NewReport<'_>, reason: &str) -> Result<ReportFlow>;

    /// What linking needs of each row's key, in order: the receipt with that id and IUV, and
    /// only without one whether the IUV is the entity's and which other entities' receipts have
    /// the payment; whether another flow (not a revision of `psp_id`/`iuf`) already links it.
    /// A few statements per 250 keys, not one per key.
    fn report_lookup(
        &self,
        entity: &str,
        psp_id: &str,
        iuf: &str,
        keys: &[LookupKey<'_>],
    ) -> Result<Vec<RowFacts>>;

    /// An entity's flows, newest first; only those with anomalies when `anomalies_only`.
    fn reports(&self, entity: &str, anomalies_only: bool, limit: u32) -> Result<Vec<ReportFlow>>;

    /// The entity's finished (`ok`) flows with id above `after_id`, oldest first, at most
    /// `limit`. None past a flow still `loading`: it may finish after later ones, and a puller
    /// keeping the last id seen as its cursor would otherwise never see it.
    fn reports_after(&self, entity: &str, after_id: i64, limit: u32) -> Result<Vec<ReportFlow>>;

    /// The flow with this store id.
    fn report(&self, id: i64) -> Result<Option<ReportFlow>>;

    /// Every flow of the entity with this IUF (all PSPs and revisions), newest first.
    fn reports_by_iuf(&self, entity: &str, iuf: &str) -> Result<Vec<ReportFlow>>;

    /// A flow's rows after `after_row`, in order, at most `limit`.
    fn report_rows(&self, flow_id: i64, after_row: u64, limit: u32)
        -> Result<Vec<StoredReportRow>>;

    /// A flow's anomalies, rows first in order, then the totals'.
    fn report_anomalies(&self, flow_id: i64) -> Result<Vec<StoredAnomaly>>;

    /// The entity's `publishedGt` cursor (FdR 3), if any.
    fn report_cursor(&self, entity: &str) -> Result<Option<String>>;

    fn set_report_cursor(&self, entity: &str, published_gt: &str) -> Result<()>;

    /// The current settlement flow of the receipt that paid each notice number, if known.
    fn settlements(&self, entity: &str, notices: &[&str]) -> Result<Vec<Option<Settlement>>>;
}

/// A flow's header as the store keeps it. `header` is the caller's own serialisation of the
/// whole header (FdR 3's JSON), kept to render the flow again.
#[derive(Debug, Clone)]
pub struct NewReport<'a> {
    pub entity: &'a str,
    pub psp_id: &'a str,
    pub iuf: &'a str,
    pub revision: i64,
    /// `rest` or `soap`.
    pub source: &'a str,
    pub flow_time: Option<&'a str>,
    pub flow_date: Option<&'a str>,
    pub regulation_id: Option<&'a str>,
    pub regulation_date: Option<&'a str>,
    pub header: Option<&'a str>,
    pub declared_count: Option<i64>,
    pub declared_cents: Option<i64>,
    pub published: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportFlow {
    pub id: i64,
    pub entity: String,
    pub psp_id: String,
    pub iuf: String,
    pub revision: i64,
    pub source: String,
    /// `loading`, `ok` or `failed`.
    pub status: String,
    pub reason: Option<String>,
    pub flow_time: Option<String>,
    pub flow_date: Option<String>,
    pub regulation_id: Option<String>,
    pub regulation_date: Option<String>,
    #[serde(skip)]
    pub header: Option<String>,
    pub declared_count: Option<i64>,
    pub declared_cents: Option<i64>,
    pub computed_count: i64,
    pub computed_cents: i64,
    pub linked: i64,
    pub anomalies: i64,
    pub rows_done: i64,
    pub published: Option<String>,
    pub superseded_by: Option<i64>,
    pub received_at: String,
    pub updated_at: String,
}

/// One payment row; `row_no` counts from 1 in flow order.
#[derive(Debug, Clone)]
pub struct ReportRow<'a> {
    pub row_no: u64,
    pub iuv: &'a str,
    pub iur: &'a str,
    /// As sent (`None`: the XML left it out).
    pub transfer_index: Option<i64>,
    /// What linking used (1 when left out).
    pub link_index: i64,
    pub amount_cents: i64,
    pub esito: i64,
    pub pay_date: &'a str,
    /// The receipt (store id) and its transfer index the row settles, if linked.
    pub receipt: Option<i64>,
    pub receipt_transfer: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredReportRow {
    pub row_no: i64,
    pub iuv: String,
    pub iur: String,
    pub transfer_index: Option<i64>,
    pub link_index: i64,
    pub amount_cents: i64,
    pub esito: i64,
    pub pay_date: String,
    pub receipt: Option<i64>,
    pub receipt_transfer: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewAnomaly<'a> {
    pub row_no: Option<u64>,
    pub code: &'a str,
    /// `info` or `anomaly`.
    pub severity: &'a str,
    pub message: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredAnomaly {
    pub row_no: Option<i64>,
    pub code: String,
    pub severity: String,
    pub message: String,
}

/// What a flow's rows add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportTotals {
    pub computed_count: i64,
    pub computed_cents: i64,
    pub linked: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct LookupKey<'a> {
    pub iuv: &'a str,
    pub iur: &'a str,
    pub link_index: i64,
}

/// What the store knows of one row's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFacts {
    /// A position of the entity has (or had) this IUV. Asked only when the entity holds no
    /// receipt for the key (false otherwise): a receipt found says enough.
    pub issued: bool,
    /// The receipt whose id is the row's IUR, for the same IUV.
    pub receipt: Option<LinkReceipt>,
    /// Only when the entity holds no such receipt: the receipts of other entities with the row's
    /// IUR and IUV, oldest first, then the entity's own copies as a secondary beneficiary. A
    /// transfer of one may credit this entity (a secondary beneficiary's flow reports the
    /// notice's entity's IUV); the caller checks which.
    pub others: Vec<OtherReceipt>,
    /// Another flow already links this payment.
    pub elsewhere: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkReceipt {
    pub id: i64,
    pub amount_cents: i64,
    /// The request as parsed on arrival (its transfers), when kept.
    pub parsed: Option<String>,
}

/// A receipt of another entity that a row may settle a transfer of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherReceipt {
    pub id: i64,
    pub entity: String,
    /// The request as parsed on arrival (its transfers and whom each credits), when kept.
    pub parsed: Option<String>,
    /// The receipt's XML, only when `parsed` was not kept.
    pub xml: Option<String>,
}

/// Where a paid position's money was settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settlement {
    pub iuf: String,
    pub psp_id: String,
    pub revision: i64,
    pub flow_date: Option<String>,
    pub regulation_id: Option<String>,
}

const COLUMNS: &str = "id, entity, psp_id, iuf, revision, source, status, reason, flow_time,
    flow_date, regulation_id, regulation_date, header, declared_count, declared_cents,
    computed_count, computed_cents, linked, anomalies, rows_done, published, superseded_by,
    received_at, updated_at";

fn flow_from(r: &dyn Row) -> Result<ReportFlow> {
    Ok(ReportFlow {
        id: r.get(0)?,
        entity: r.get(1)?,
        psp_id: r.get(2)?,
        iuf: r.get(3)?,
        revision: r.get(4)?,
        source: r.get(5)?,
        status: r.get(6)?,
        reason: r.get(7)?,
        flow_time: r.get(8)?,
        flow_date: r.get(9)?,
        regulation_id: r.get(10)?,
        regulation_date: r.get(11)?,
        header: r.get(12)?,
        declared_count: r.get(13)?,
        declared_cents: r.get(14)?,
        computed_count: r.get(15)?,
        computed_cents: r.get(16)?,
        linked: r.get(17)?,
        anomalies: r.get(18)?,
        rows_done: r.get(19)?,
        published: r.get(20)?,
        superseded_by: r.get(21)?,
        received_at: r.get(22)?,
        updated_at: r.get(23)?,
    })
}

const INSERT: &str = "INSERT INTO report_flows (entity, psp_id, iuf, revision, source, status,
        reason, flow_time, flow_date, regulation_id, regulation_date, header, declared_count,
        declared_cents, published, received_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16)
     ON CONFLICT (entity, psp_id, iuf, revision) DO NOTHING";

const INSERT_ROW: &str = "INSERT INTO report_payments (flow, row_no, entity, iuv, iur,
        transfer_index, link_index, amount_cents, esito, pay_date, receipt, receipt_transfer)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// Rows one statement inserts (12 parameters each); the rest of a chunk goes in one by one.
const INSERT_BATCH: usize = 100;

/// [`INSERT_ROW`] with [`INSERT_BATCH`] rows of values.
fn insert_rows_sql(dialect: Dialect) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    SQL[dialect as usize].get_or_init(|| {
        let head = INSERT_ROW.split("VALUES").next().unwrap_or(INSERT_ROW);
        let rows: Vec<String> = (0..INSERT_BATCH)
            .map(|i| {
                let params: Vec<String> = (1..=12).map(|p| format!("${}", i * 12 + p)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        numbered(format!("{head}VALUES {}", rows.join(", ")), dialect)
    })
}

/// A statement of many parameters for `dialect`: SQLite gets `?N` for `$N` (bound by place).
fn numbered(sql: String, dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => sql.replace('$', "?"),
        Dialect::Postgres => sql,
    }
}

fn row_args<'a>(flow_id: i64, entity: &'a str, r: &'a ReportRow<'a>) -> [Arg<'a>; 12] {
    [
        Arg::Int(flow_id),
        Arg::Int(r.row_no as i64),
        Arg::Text(entity),
        Arg::Text(r.iuv),
        Arg::Text(r.iur),
        r.transfer_index.into(),
        Arg::Int(r.link_index),
        Arg::Int(r.amount_cents),
        Arg::Int(r.esito),
        Arg::Text(r.pay_date),
        r.receipt.into(),
        r.receipt_transfer.into(),
    ]
}

const INSERT_ANOMALY: &str =
    "INSERT INTO report_anomalies (flow, row_no, code, severity, message) VALUES ($1, $2, $3, $4, $5)";

/// Keys looked up per statement, each a row of a `VALUES` list: a round trip (and on SQLite a
/// statement run) per batch, not per row, keeps a 100 000-row flow's lookups cheap on both
/// stores. Smaller batches are padded to one of a few sizes, so few statement texts exist.
pub(crate) const LOOKUP_BATCH: usize = 250;
const BATCH_SIZES: [usize; 5] = [1, 4, 16, 64, LOOKUP_BATCH];

fn batch_size(n: usize) -> usize {
    BATCH_SIZES
        .into_iter()
        .find(|&s| s >= n)
        .unwrap_or(LOOKUP_BATCH)
}

/// `VALUES` rows of `size` keys: `(n, $…)` with `n` the key's place (0-based) and `cols`
/// parameters each (those marked true cast to `BIGINT`), numbered from `$first`.
fn key_values(size: usize, first: usize, cols: &[bool]) -> String {
    let mut v = String::with_capacity(size * 24 * (cols.len() + 1));
    for i in 0..size {
        if i > 0 {
            v.push_str(", ");
        }
        v.push_str(&format!("(CAST({i} AS BIGINT)"));
        for (c, bigint) in cols.iter().enumerate() {
            let p = first + i * cols.len() + c;
            if *bigint {
                v.push_str(&format!(", CAST(${p} AS BIGINT)"));
            } else {
                v.push_str(&format!(", ${p}"));
            }
        }
        v.push(')');
    }
    v
}

/// Each key's receipt by the entity's unique (entity, receipt_id) with the same IUV, and a link
/// of the same payment from another flow on `report_payments_key`. `$1` entity, `$2` PSP, `$3`
/// IUF, then (IUV, IUR, link index) per key.
pub(crate) fn lookup_sql(size: usize, dialect: Dialect) -> String {
    numbered(format!(
        "WITH k (n, iuv, iur, li) AS (VALUES {})
         SELECT k.n, r.id, r.amount_cents, r.parsed,
                CAST(CASE WHEN EXISTS (SELECT 1 FROM report_payments rp JOIN report_flows f ON f.id = rp.flow
                      WHERE rp.entity = $1 AND rp.iuv = k.iuv AND rp.iur = k.iur AND rp.link_index = k.li
                        AND rp.receipt IS NOT NULL AND f.superseded_by IS NULL
                        AND NOT (f.psp_id = $2 AND f.iuf = $3))
                     THEN 1 ELSE 0 END AS BIGINT)
         FROM k LEFT JOIN receipts r
           ON r.entity = $1 AND r.receipt_id = k.iur AND r.conflict_of IS NULL AND r.iuv = k.iuv
              AND r.issuer IS NULL",
        key_values(size, 4, &[false, false, true])
    ), dialect)
}

/// The keys whose IUV a position of the entity has or had, each on its partial index. `$1`
/// entity, then the IUV per key.
pub(crate) fn issued_sql(size: usize, dialect: Dialect) -> String {
    numbered(
        format!(
            "WITH k (n, iuv) AS (VALUES {})
         SELECT k.n FROM k
         WHERE EXISTS (SELECT 1 FROM positions p WHERE p.entity = $1 AND p.iuv = k.iuv
                         AND p.iuv IS NOT NULL AND p.status <> 'annulled')
            OR EXISTS (SELECT 1 FROM positions p WHERE p.entity = $1 AND p.iuv = k.iuv
                         AND p.status = 'annulled')",
            key_values(size, 2, &[false])
        ),
        dialect,
    )
}

/// The receipts of other entities with each key's receipt id and IUV, and the entity's own
/// copies as a secondary beneficiary of another entity's notice (the only copy a foreign
/// issuer's payment has here), on `receipts_receipt_id_any`. `$1` entity, then (IUV, IUR) per key.
pub(crate) fn others_sql(size: usize, dialect: Dialect) -> String {
    numbered(
        format!(
            "WITH k (n, iuv, iur) AS (VALUES {})
         SELECT k.n, r.id, r.entity, r.parsed, CASE WHEN r.parsed IS NULL THEN r.xml END
         FROM k JOIN receipts r
           ON r.receipt_id = k.iur AND r.conflict_of IS NULL AND r.iuv = k.iuv
              AND ((r.entity <> $1 AND r.issuer IS NULL) OR (r.entity = $1 AND r.issuer IS NOT NULL))",
            key_values(size, 2, &[false, false])
        ),
        dialect,
    )
}

/// The key's place in its batch, from a row's first column.
fn place(r: &dyn Row, size: usize) -> Result<usize> {
    let n = r.get::<i64>(0)?;
    usize::try_from(n)
        .ok()
        .filter(|&n| n < size)
        .ok_or_else(|| StoreError::Corrupt(format!("lookup answered key {n} of {size}")))
}

/// One batch (at most [`LOOKUP_BATCH`] keys, at least one) of [`ReportStore::report_lookup`].
fn lookup_batch(
    c: &mut dyn Conn,
    entity: &str,
    psp_id: &str,
    iuf: &str,
    keys: &[LookupKey<'_>],
) -> Result<Vec<RowFacts>> {
    let mut out: Vec<RowFacts> = keys
        .iter()
        .map(|_| RowFacts {
            issued: false,
            receipt: None,
            others: Vec::new(),
            elsewhere: false,
        })
        .collect();
    let last = keys.len() - 1;
    // Padding repeats the last key: its answers land on it again.
    let size = batch_size(keys.len());
    let mut a: Vec<Arg<'_>> = vec![entity.into(), psp_id.into(), iuf.into()];
    for i in 0..size {
        let k = keys[i.min(last)];
        a.extend([Arg::Text(k.iuv), Arg::Text(k.iur), Arg::Int(k.link_index)]);
    }
    c.query(&lookup_sql(size, c.dialect()), &a, &mut |r| {
        let f = &mut out[place(r, size)?.min(last)];
        f.receipt = match r.get::<Option<i64>>(1)? {
            Some(id) => Some(LinkReceipt {
                id,
                amount_cents: r.get(2)?,
                parsed: r.get(3)?,
            }),
            None => None,
        };
        f.elsewhere = r.get::<i64>(4)? != 0;
        Ok(())
    })?;
    // Without a receipt of its own: was the IUV issued, and has another entity's receipt the
    // payment (a secondary beneficiary's row)?
    let missing: Vec<usize> = (0..keys.len())
        .filter(|&i| out[i].receipt.is_none())
        .collect();
    let Some(&last_missing) = missing.last() else {
        return Ok(out);
    };
    let size = batch_size(missing.len());
    let miss = |j: usize| missing.get(j).copied().unwrap_or(last_missing);
    let mut a: Vec<Arg<'_>> = vec![entity.into()];
    a.extend((0..size).map(|j| Arg::Text(keys[miss(j)].iuv)));
    c.query(&issued_sql(size, c.dialect()), &a, &mut |r| {
        out[miss(place(r, size)?)].issued = true;
        Ok(())
    })?;
    let mut a: Vec<Arg<'_>> = vec![entity.into()];
    for j in 0..size {
        let k = keys[miss(j)];
        a.extend([Arg::Text(k.iuv), Arg::Text(k.iur)]);
    }
    let mut found: Vec<(usize, OtherReceipt)> = Vec::new();
    c.query(&others_sql(size, c.dialect()), &a, &mut |r| {
        found.push((
            miss(place(r, size)?),
            OtherReceipt {
                id: r.get(1)?,
                entity: r.get(2)?,
                parsed: r.get(3)?,
                xml: r.get(4)?,
            },
        ));
        Ok(())
    })?;
    // The issuer's own receipt first, when it is ours: the one that was delivered.
    found.sort_by_key(|(i, o)| (*i, o.entity == entity, o.id));
    found.dedup_by_key(|(i, o)| (*i, o.id));
    for (i, o) in found {
        out[i].others.push(o);
    }
    Ok(out)
}

/// The entity's own flows only: a secondary beneficiary's flow settles its transfer, not the
/// notice's entity's money.
const SETTLEMENT: &str = "SELECT f.iuf, f.psp_id, f.revision, f.flow_date, f.regulation_id
     FROM receipts r JOIN report_payments rp ON rp.receipt = r.id JOIN report_flows f ON f.id = rp.flow
     WHERE r.entity = $1 AND r.notice_number = $2 AND r.conflict_of IS NULL AND r.issuer IS NULL
       AND f.entity = r.entity AND f.status = 'ok' AND f.superseded_by IS NULL
     ORDER BY f.id DESC LIMIT 1";

pub(crate) mod kind {
    pub const RECEIVED: &str = "report.received";
    pub const ANOMALY: &str = "report.anomaly";
    pub const FAILED: &str = "report.failed";
}

fn by_key(c: &mut dyn Conn, f: &NewReport<'_>) -> Result<ReportFlow> {
    let sql = format!(
        "SELECT {COLUMNS} FROM report_flows WHERE entity = $1 AND psp_id = $2 AND iuf = $3 AND revision = $4"
    );
    c.one(
        &sql,
        args!(f.entity, f.psp_id, f.iuf, f.revision),
        flow_from,
    )?
    .ok_or_else(|| StoreError::Corrupt(format!("flow {} vanished", f.iuf)))
}

fn by_id(c: &mut dyn Conn, id: i64) -> Result<Option<ReportFlow>> {
    let sql = format!("SELECT {COLUMNS} FROM report_flows WHERE id = $1");
    c.one(&sql, args!(id), flow_from)
}

fn insert(
    c: &mut dyn Conn,
    f: &NewReport<'_>,
    status: &str,
    reason: Option<&str>,
    ts: &str,
) -> Result<Option<i64>> {
    c.insert(
        INSERT,
        args!(
            f.entity,
            f.psp_id,
            f.iuf,
            f.revision,
            f.source,
            status,
            reason,
            f.flow_time,
            f.flow_date,
            f.regulation_id,
            f.regulation_date,
            f.header,
            f.declared_count,
            f.declared_cents,
            f.published,
            ts
        ),
    )
}

fn subject(f: &ReportFlow) -> String {
    format!("{}/{}/{}", f.psp_id, f.iuf, f.revision)
}

impl<D: Driver> ReportStore for D {
    fn begin_report(&self, f: &NewReport<'_>) -> Result<ReportFlow> {
        let ts = now();
        self.tx(|c| {
            insert(c, f, "loading", None, &ts)?;
            by_key(c, f)
        })
    }

    fn add_report_rows(
        &self,
        flow_id: i64,
        from_row: u64,
        rows: &[ReportRow<'_>],
        anomalies: &[NewAnomaly<'_>],
    ) -> Result<()> {
        let ts = now();
        self.tx(|c| {
            c.lock(&format!("report:{flow_id}"))?;
            let flow = by_id(c, flow_id)?.ok_or_else(|| {
                StoreError::Conflict(format!("report flow {flow_id} does not exist"))
            })?;
            if flow.status != "loading" {
                return Err(StoreError::Conflict(format!(
                    "report flow {flow_id} is {}, not loading",
                    flow.status
                )));
            }
            crate::ops::check_rows_done(flow_id, Some(flow.rows_done), from_row)?;
            let mut batches = rows.chunks_exact(INSERT_BATCH);
            if batches.len() > 0 {
                let sql = insert_rows_sql(c.dialect());
                let mut a: Vec<Arg<'_>> = Vec::with_capacity(INSERT_BATCH * 12);
                for batch in &mut batches {
                    a.clear();
                    for r in batch {
                        a.extend(row_args(flow_id, &flow.entity, r));
                    }
                    c.execute(sql, &a)?;
                }
            }
            for r in batches.remainder() {
                c.execute(INSERT_ROW, &row_args(flow_id, &flow.entity, r))?;
            }
            add_anomalies(c, &flow, anomalies, &ts)?;
            let done = rows
                .iter()
                .map(|r| r.row_no)
                .max()
                .unwrap_or(from_row)
                .max(from_row);
            c.execute(
                "UPDATE report_flows SET rows_done = $2, updated_at = $3 WHERE id = $1",
                args!(flow_id, done as i64, ts.as_str()),
            )?;
            Ok(())
        })
    }

    fn finish_report(
        &self,
        flow_id: i64,
        totals: &ReportTotals,
        anomalies: &[NewAnomaly<'_>],
        pipelines: &[&str],
    ) -> Result<bool> {
        let ts = now();
        self.tx(|c| {
            c.lock(&format!("report:{flow_id}"))?;
            let Some(flow) = by_id(c, flow_id)? else {
                return Err(StoreError::Conflict(format!(
                    "report flow {flow_id} does not exist"
                )));
            };
            if flow.status != "loading" {
                return Ok(false);
            }
            add_anomalies(c, &flow, anomalies, &ts)?;
            let count = c
                .one(
                    "SELECT COUNT(*) FROM report_anomalies WHERE flow = $1",
                    args!(flow_id),
                    |r| r.get::<i64>(0),
                )?
                .unwrap_or(0);
            // A later revision already held supersedes this one; else this supersedes earlier ones.
            let later = c.one(
                "SELECT id FROM report_flows WHERE entity = $1 AND psp_id = $2 AND iuf = $3
                   AND revision > $4 AND status = 'ok' ORDER BY revision DESC LIMIT 1",
                args!(
                    flow.entity.as_str(),
                    flow.psp_id.as_str(),
                    flow.iuf.as_str(),
                    flow.revision
                ),
                |r| r.get::<i64>(0),
            )?;
            c.execute(
                "UPDATE report_flows SET status = 'ok', computed_count = $2, computed_cents = $3,
                    linked = $4, anomalies = $5, superseded_by = $6, updated_at = $7 WHERE id = $1",
                args!(
                    flow_id,
                    totals.computed_count,
                    totals.computed_cents,
                    totals.linked,
                    count,
                    later,
                    ts.as_str()
                ),
            )?;
            if later.is_none() {
                c.execute(
                    "UPDATE report_flows SET superseded_by = $5, updated_at = $6
                     WHERE entity = $1 AND psp_id = $2 AND iuf = $3 AND revision < $4
                       AND superseded_by IS NULL",
                    args!(
                        flow.entity.as_str(),
                        flow.psp_id.as_str(),
                        flow.iuf.as_str(),
                        flow.revision,
                        flow_id,
                        ts.as_str()
                    ),
                )?;
            }
            let touch = Touch {
                iuf: Some(&flow.iuf),
                ..Touch::default()
            };
            crate::reconcile::mark(c, &flow.entity, &touch)?;
            let subject = subject(&flow);
            let payload = serde_json::json!({
                "iuf": flow.iuf,
                "psp_id": flow.psp_id,
                "revision": flow.revision,
                "source": flow.source,
                "flow_date": flow.flow_date,
                "regulation_id": flow.regulation_id,
                "payments": totals.computed_count,
                "amount_cents": totals.computed_cents,
                "linked": totals.linked,
                "anomalies": count,
                "superseded_by": later,
            });
            c.new_event(
                &NewEvent {
                    kind: kind::RECEIVED,
                    entity: &flow.entity,
                    subject: &subject,
                    payload,
                    correlation: Some(&correlation(flow_id)),
                },
                &ts,
            )?;
            let mut counts = vec![(count::REPORTS, flow.entity.as_str(), 1)];
            if later.is_none() {
                for p in pipelines {
                    c.execute(
                        "INSERT INTO deliveries (pipeline, entity, report, idempotency_key, status,
                            next_attempt_at, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, 'pending', $5, $5, $5)
                         ON CONFLICT DO NOTHING",
                        args!(
                            *p,
                            flow.entity.as_str(),
                            flow_id,
                            subject.as_str(),
                            ts.as_str()
                        ),
                    )?;
                    counts.push((count::DELIVERIES, *p, 1));
                }
            }
            crate::events::add_counts(c, counts)?;
            Ok(true)
        })
    }

    fn fail_report(&self, f: &NewReport<'_>, reason: &str) -> Result<ReportFlow> {
        let ts = now();
        self.tx(|c| {
            let inserted = insert(c, f, "failed", Some(reason), &ts)?.is_some();
            let changed = inserted
                || c.execute(
                    "UPDATE report_flows SET status = 'failed', reason = $5, updated_at = $6
                     WHERE entity = $1 AND psp_id = $2 AND iuf = $3 AND revision = $4
                       AND status = 'loading'",
                    args!(f.entity, f.psp_id, f.iuf, f.revision, reason, ts.as_str()),
                )? > 0;
            let flow = by_key(c, f)?;
            if changed {
                let subject = subject(&flow);
                c.new_event(
                    &NewEvent {
                        kind: kind::FAILED,
                        entity: &flow.entity,
                        subject: &subject,
                        payload: serde_json::json!({
                            "iuf": flow.iuf, "psp_id": flow.psp_id, "revision": flow.revision,
                            "source": flow.source, "reason": reason,
                        }),
                        correlation: Some(&correlation(flow.id)),
                    },
                    &ts,
                )?;
                crate::events::add_counts(c, vec![(count::REPORTS_FAILED, f.entity, 1)])?;
            }
            Ok(flow)
        })
    }

    fn report_lookup(
        &self,
        entity: &str,
        psp_id: &str,
        iuf: &str,
        keys: &[LookupKey<'_>],
    ) -> Result<Vec<RowFacts>> {
        self.read(|c| {
            let mut out = Vec::with_capacity(keys.len());
            for batch in keys.chunks(LOOKUP_BATCH) {
                out.extend(lookup_batch(c, entity, psp_id, iuf, batch)?);
            }
            Ok(out)
        })
    }

    fn reports(&self, entity: &str, anomalies_only: bool, limit: u32) -> Result<Vec<ReportFlow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM report_flows WHERE entity = $1 AND ($2 = 0 OR anomalies > 0 OR status = 'failed')
             ORDER BY id DESC LIMIT $3"
        );
        let only = i64::from(anomalies_only);
        self.read(|c| c.all(&sql, args!(entity, only, limit), flow_from))
    }

    fn reports_after(&self, entity: &str, after_id: i64, limit: u32) -> Result<Vec<ReportFlow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM report_flows WHERE entity = $1 AND id > $2 AND status = 'ok'
               AND id < COALESCE((SELECT MIN(id) FROM report_flows
                                  WHERE entity = $1 AND id > $2 AND status = 'loading'),
                                 9223372036854775807)
             ORDER BY id LIMIT $3"
        );
        self.read(|c| c.all(&sql, args!(entity, after_id, limit), flow_from))
    }

    fn report(&self, id: i64) -> Result<Option<ReportFlow>> {
        self.read(|c| by_id(c, id))
    }

    fn reports_by_iuf(&self, entity: &str, iuf: &str) -> Result<Vec<ReportFlow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM report_flows WHERE entity = $1 AND iuf = $2 ORDER BY id DESC"
        );
        self.read(|c| c.all(&sql, args!(entity, iuf), flow_from))
    }

    fn report_rows(
        &self,
        flow_id: i64,
        after_row: u64,
        limit: u32,
    ) -> Result<Vec<StoredReportRow>> {
        let sql = "SELECT row_no, iuv, iur, transfer_index, link_index, amount_cents, esito,
                pay_date, receipt, receipt_transfer FROM report_payments
             WHERE flow = $1 AND row_no > $2 ORDER BY row_no LIMIT $3";
        self.read(|c| {
            c.all(sql, args!(flow_id, after_row as i64, limit), |r| {
                Ok(StoredReportRow {
                    row_no: r.get(0)?,
                    iuv: r.get(1)?,
                    iur: r.get(2)?,
                    transfer_index: r.get(3)?,
                    link_index: r.get(4)?,
                    amount_cents: r.get(5)?,
                    esito: r.get(6)?,
                    pay_date: r.get(7)?,
                    receipt: r.get(8)?,
                    receipt_transfer: r.get(9)?,
                })
            })
        })
    }

    fn report_anomalies(&self, flow_id: i64) -> Result<Vec<StoredAnomaly>> {
        let sql = "SELECT row_no, code, severity, message FROM report_anomalies
             WHERE flow = $1 ORDER BY id";
        self.read(|c| {
            c.all(sql, args!(flow_id), |r| {
                Ok(StoredAnomaly {
                    row_no: r.get(0)?,
                    code: r.get(1)?,
                    severity: r.get(2)?,
                    message: r.get(3)?,
                })
            })
        })
    }

    fn report_cursor(&self, entity: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.one(
                "SELECT published_gt FROM report_cursors WHERE entity = $1",
                args!(entity),
                |r| r.get::<String>(0),
            )
        })
    }

    fn set_report_cursor(&self, entity: &str, published_gt: &str) -> Result<()> {
        let ts = now();
        self.tx(|c| {
            c.execute(
                "INSERT INTO report_cursors (entity, published_gt, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (entity) DO UPDATE SET published_gt = excluded.published_gt,
                     updated_at = excluded.updated_at",
                args!(entity, published_gt, ts.as_str()),
            )
            .map(drop)
        })
    }

    fn settlements(&self, entity: &str, notices: &[&str]) -> Result<Vec<Option<Settlement>>> {
        self.read(|c| {
            notices
                .iter()
                .map(|n| {
                    c.one(SETTLEMENT, args!(entity, *n), |r| {
                        Ok(Settlement {
                            iuf: r.get(0)?,
                            psp_id: r.get(1)?,
                            revision: r.get(2)?,
                            flow_date: r.get(3)?,
                            regulation_id: r.get(4)?,
                        })
                    })
                })
                .collect()
        })
    }
}

/// The correlation of a settlement flow's events.
pub fn correlation(flow_id: i64) -> String {
    format!("report-{flow_id}")
}

use crate::events::count;

fn add_anomalies(
    c: &mut dyn Conn,
    flow: &ReportFlow,
    anomalies: &[NewAnomaly<'_>],
    ts: &str,
) -> Result<()> {
    if anomalies.is_empty() {
        return Ok(());
    }
    let subject = subject(flow);
    let corr = correlation(flow.id);
    let mut counted = 0;
    for a in anomalies {
        c.execute(
            INSERT_ANOMALY,
            args!(
                flow.id,
                a.row_no.map(|n| n as i64),
                a.code,
                a.severity,
                a.message
            ),
        )?;
        if a.severity == "anomaly" {
            counted += 1;
            c.new_event(
                &NewEvent {
                    kind: kind::ANOMALY,
                    entity: &flow.entity,
                    subject: &subject,
                    payload: serde_json::json!({
                        "iuf": flow.iuf, "psp_id": flow.psp_id, "revision": flow.revision,
                        "row": a.row_no, "code": a.code, "message": a.message,
                    }),
                    correlation: Some(&corr),
                },
                ts,
            )?;
        }
    }
    if counted > 0 {
        crate::events::add_counts(
            c,
            vec![(count::REPORT_ANOMALIES, flow.entity.as_str(), counted)],
        )?;
    }
    Ok(())
}
