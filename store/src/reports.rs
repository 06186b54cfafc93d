//! pagoPA's settlement flows (FdR): a flow's header, its payment rows linked to receipts, its
//! anomalies, and each entity's pull cursor.
//!
//! A flow is keyed by (entity, PSP, IUF, revision). Its rows arrive in chunks, each committed
//! with the flow's `rows_done` (a chunk that does not continue from it is refused), so a pull
//! killed mid-flow resumes after the last committed row and never stores a row twice. A flow is
//! `loading` until [`ReportStore::finish_report`] sets it `ok`, with its totals and the
//! flow-level anomalies, and supersedes its earlier revisions (kept, with `superseded_by`).

use crate::db::{args, Conn, Driver, Row};
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
    /// `report.received`. Returns false when the flow was not `loading` (finished already).
    fn finish_report(
        &self,
        flow_id: i64,
        totals: &ReportTotals,
        anomalies: &[NewAnomaly<'_>],
    ) -> Result<bool>;

    /// Records the flow as failed with why (a new row, or a `loading` one); a flow already `ok`
    /// stays so. `report.failed` event.
    fn fail_report(&self, flow: &NewReport<'_>, reason: &str) -> Result<ReportFlow>;

    /// What linking needs of each row's key, in order: whether the IUV is the entity's, the
    /// receipt with that id and IUV, and whether another flow (not a revision of `psp_id`/`iuf`)
    /// already links the payment.
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
    /// A position of the entity has (or had) this IUV.
    pub issued: bool,
    /// The receipt whose id is the row's IUR, for the same IUV.
    pub receipt: Option<LinkReceipt>,
    /// Only when the entity holds no such receipt: the receipts of other entities with the row's
    /// IUR and IUV, oldest first. A transfer of one may credit this entity (a secondary
    /// beneficiary's flow reports the notice's entity's IUV); the caller checks which.
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

const INSERT_ANOMALY: &str =
    "INSERT INTO report_anomalies (flow, row_no, code, severity, message) VALUES ($1, $2, $3, $4, $5)";

/// One round trip per row: the IUV issued (live or annulled position, each on its partial
/// index), the receipt by its unique (entity, receipt_id), and a link from another flow on
/// `report_payments_key`.
pub(crate) const LOOKUP: &str = "SELECT a.issued, r.id, r.amount_cents, r.parsed, a.elsewhere FROM
    (SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM positions WHERE entity = $1 AND iuv = $2 AND iuv IS NOT NULL AND status <> 'annulled')
                        OR EXISTS (SELECT 1 FROM positions WHERE entity = $1 AND iuv = $2 AND status = 'annulled')
                 THEN 1 ELSE 0 END AS BIGINT) AS issued,
            CAST(CASE WHEN EXISTS (SELECT 1 FROM report_payments rp JOIN report_flows f ON f.id = rp.flow
                  WHERE rp.entity = $1 AND rp.iuv = $2 AND rp.iur = $3 AND rp.link_index = $4
                    AND rp.receipt IS NOT NULL AND f.superseded_by IS NULL
                    AND NOT (f.psp_id = $5 AND f.iuf = $6))
                 THEN 1 ELSE 0 END AS BIGINT) AS elsewhere) a
    LEFT JOIN receipts r ON r.entity = $1 AND r.receipt_id = $3 AND r.conflict_of IS NULL AND r.iuv = $2";

/// The receipts of other entities with the row's receipt id and IUV, on
/// `receipts_receipt_id_any` (asked only for rows the entity holds no receipt for).
pub(crate) const OTHERS: &str =
    "SELECT id, entity, parsed, CASE WHEN parsed IS NULL THEN xml END FROM receipts
     WHERE receipt_id = $1 AND conflict_of IS NULL AND iuv = $2 AND entity <> $3 ORDER BY id";

/// The entity's own flows only: a secondary beneficiary's flow settles its transfer, not the
/// notice's entity's money.
const SETTLEMENT: &str = "SELECT f.iuf, f.psp_id, f.revision, f.flow_date, f.regulation_id
     FROM receipts r JOIN report_payments rp ON rp.receipt = r.id JOIN report_flows f ON f.id = rp.flow
     WHERE r.entity = $1 AND r.notice_number = $2 AND r.conflict_of IS NULL
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
            for r in rows {
                c.execute(
                    INSERT_ROW,
                    args!(
                        flow_id,
                        r.row_no as i64,
                        flow.entity.as_str(),
                        r.iuv,
                        r.iur,
                        r.transfer_index,
                        r.link_index,
                        r.amount_cents,
                        r.esito,
                        r.pay_date,
                        r.receipt,
                        r.receipt_transfer
                    ),
                )?;
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
            crate::events::add_counts(c, vec![(count::REPORTS, flow.entity.as_str(), 1)])?;
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
            for k in keys {
                let facts = c.one(
                    LOOKUP,
                    args!(entity, k.iuv, k.iur, k.link_index, psp_id, iuf),
                    |r| {
                        let receipt = match r.get::<Option<i64>>(1)? {
                            Some(id) => Some(LinkReceipt {
                                id,
                                amount_cents: r.get(2)?,
                                parsed: r.get(3)?,
                            }),
                            None => None,
                        };
                        Ok(RowFacts {
                            issued: r.get::<i64>(0)? != 0,
                            receipt,
                            others: Vec::new(),
                            elsewhere: r.get::<i64>(4)? != 0,
                        })
                    },
                )?;
                let mut facts =
                    facts.ok_or_else(|| StoreError::Corrupt("lookup gave no row".into()))?;
                if facts.receipt.is_none() {
                    facts.others = c.all(OTHERS, args!(k.iur, k.iuv, entity), |r| {
                        Ok(OtherReceipt {
                            id: r.get(0)?,
                            entity: r.get(1)?,
                            parsed: r.get(2)?,
                            xml: r.get(3)?,
                        })
                    })?;
                }
                out.push(facts);
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
