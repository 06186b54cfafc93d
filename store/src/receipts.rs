//! Receipts: stored as the node sent them, matched to their position, read back for operators,
//! pollers and the formats that deliver them.

use crate::db::{args, sql, Driver, Row, Sql, Write, Written};
use crate::ops::{Ops, OwnedReceipt, Target};
use crate::*;

pub trait ReceiptStore {
    /// Stores a receipt durably, marks its position paid when it matches, and records a
    /// `receipt.stored` event (and `position.paid` when it paid), all in one transaction.
    /// Receipts arriving together share one commit (group commit), each still all-or-nothing.
    fn store_receipt(&self, receipt: &NewReceipt<'_>) -> Result<ReceiptStored> {
        self.store_parsed_receipt(receipt, None)
    }

    /// [`Self::store_receipt`], keeping beside the XML the request as the hub decoded it, so
    /// that deliveries and exports encode from it without parsing the XML again.
    fn store_parsed_receipt(
        &self,
        receipt: &NewReceipt<'_>,
        parsed: Option<String>,
    ) -> Result<ReceiptStored>;

    /// Stores durably a receipt the node sent `receipt.entity` as a secondary beneficiary of the
    /// notice of `issuer` (fiscal code): no position is looked up or paid, nothing is flagged,
    /// each of `receipt.deliver_to` gets a delivery, and a `receipt.secondary` event is recorded,
    /// in one transaction (group commit as [`Self::store_receipt`]). The same receipt id again is
    /// [`ReceiptStored::Duplicate`] (or a conflicting copy, as for any receipt).
    fn store_secondary_receipt(
        &self,
        receipt: &NewReceipt<'_>,
        issuer: &str,
        parsed: Option<String>,
    ) -> Result<ReceiptStored>;

    /// An entity's receipts, newest first; only those flagged for operators when `flagged`.
    fn receipts(&self, entity: &str, flagged: bool, limit: u32) -> Result<Vec<StoredReceipt>>;

    /// An entity's receipts whose deliveries wait for an operator, newest first.
    fn held_receipts(&self, entity: &str, limit: u32) -> Result<Vec<StoredReceipt>>;

    /// An operator's decision on a held receipt: released, its held deliveries become
    /// deliveries due now (one per pipeline that held it); dismissed, they are dropped. Either
    /// way the receipt records the decision and a `receipt.released` / `receipt.dismissed`
    /// event. A flagged receipt that holds nothing (a conflicting copy) may be dismissed too.
    fn review_receipt(&self, receipt: i64, review: Review) -> Result<Reviewed>;

    /// The receipt a delivery carries.
    fn receipt_document(&self, receipt: i64) -> Result<Option<ReceiptDocument>>;

    /// The entity's own receipts with id > `after_id`, ascending id, at most `limit`, with what
    /// a format needs: a poller's pull, resumed from the last id it saw. Conflicting copies of
    /// a receipt id and secondary beneficiaries' receipts are not among them.
    fn receipts_after(
        &self,
        entity: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ReceiptDocument>>;

    /// The latest receipt stored for this notice number of the entity, one that paid its
    /// position preferred over flagged ones, if any (never a secondary beneficiary's receipt of
    /// another entity's notice, whose number may equal one of the entity's).
    fn receipt_for_notice(
        &self,
        entity: &str,
        notice_number: &str,
    ) -> Result<Option<StoredReceipt>>;
}

macro_rules! columns {
    () => {
        "r.id, r.entity, r.receipt_id, r.notice_number, r.position_id, r.amount_cents, r.psp_id,
         r.psp_name, r.payment_date, r.operation, r.issue, r.received_at, r.conflict_of, r.review,
         r.issuer"
    };
}

fn receipt_from(r: &dyn Row) -> Result<StoredReceipt> {
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
        conflict_of: r.get(12)?,
        review: r.get(13)?,
        issuer: r.get(14)?,
        held: Vec::new(),
    })
}

/// Receipts with what a format needs of their position (see [`document_from`]).
macro_rules! documents {
    ($where:literal) => {
        concat!(
            "SELECT ",
            columns!(),
            ", r.xml, p.iud, p.debt_type, r.parsed, f.iuf FROM receipts r LEFT JOIN positions p ON p.id = r.position_id LEFT JOIN flows f ON f.id = p.flow_id ",
            $where
        )
    };
}

/// [`documents!`] without the request's XML (`xml` empty), with a `WHERE` clause built at run
/// time: for readers of the parsed request alone.
pub(crate) fn parsed_documents_where(clause: &str) -> String {
    format!(
        concat!(
            "SELECT ",
            columns!(),
            ", '', p.iud, p.debt_type, r.parsed, f.iuf FROM receipts r LEFT JOIN positions p ON p.id = r.position_id LEFT JOIN flows f ON f.id = p.flow_id {}"
        ),
        clause
    )
}

pub(crate) fn document_from(r: &dyn Row) -> Result<ReceiptDocument> {
    Ok(ReceiptDocument {
        receipt: receipt_from(r)?,
        xml: r.get(15)?,
        iud: r.get(16)?,
        debt_type: r.get(17)?,
        parsed: r.get(18)?,
        // A standing flow (API, Kafka: `<origin>:<ipa>`) is no import flow of the entity's.
        flow_iuf: r
            .get::<Option<String>>(19)?
            .filter(|iuf| !iuf.contains(':')),
    })
}

/// A poller's page of an entity's receipts, walked on `receipts_entity_id`. Conflicting copies
/// are left out: the first copy is the receipt; so are secondary beneficiaries' receipts of other
/// entities' notices, which only the entity's receipts pipelines deliver.
pub(crate) const AFTER: &str = documents!(
    "WHERE r.entity = $1 AND r.id > $2 AND r.conflict_of IS NULL AND r.issuer IS NULL ORDER BY r.id LIMIT $3"
);

/// An entity's held receipts: walks the held rows (few, and only while held), not the entity's
/// receipts; `CROSS JOIN` keeps that order on SQLite.
pub(crate) const HELD: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM (SELECT DISTINCT receipt FROM held_deliveries) h CROSS JOIN receipts r
       WHERE r.id = h.receipt AND r.entity = $1 ORDER BY r.id DESC LIMIT $2"
);

/// The live position is locked on PostgreSQL: of two receipts paying it at once, the second
/// sees it paid.
pub(crate) const TARGET_LIVE: Sql = sql!(
    "SELECT id, status, amount_cents, debt_type, iud FROM positions
     WHERE entity = $1 AND iuv = $2 AND status <> 'annulled'" => " FOR UPDATE"
);
pub(crate) const TARGET_ANNULLED: &str =
    "SELECT id, status, amount_cents, debt_type, iud FROM positions
     WHERE entity = $1 AND iuv = $2 AND status = 'annulled' ORDER BY id DESC LIMIT 1";

impl<D: Driver> ReceiptStore for D {
    fn store_parsed_receipt(
        &self,
        r: &NewReceipt<'_>,
        parsed: Option<String>,
    ) -> Result<ReceiptStored> {
        let receipt = OwnedReceipt {
            parsed,
            ..OwnedReceipt::from(r)
        };
        match self.commit_hot(Write::Receipt(Box::new(receipt)))? {
            Written::Receipt(stored) => Ok(stored),
            Written::Activation => Err(StoreError::Conflict("mixed-up write outcome".into())),
        }
    }

    fn store_secondary_receipt(
        &self,
        r: &NewReceipt<'_>,
        issuer: &str,
        parsed: Option<String>,
    ) -> Result<ReceiptStored> {
        let receipt = OwnedReceipt {
            parsed,
            issuer: Some(issuer.to_string()),
            ..OwnedReceipt::from(r)
        };
        match self.commit_hot(Write::Receipt(Box::new(receipt)))? {
            Written::Receipt(stored) => Ok(stored),
            Written::Activation => Err(StoreError::Conflict("mixed-up write outcome".into())),
        }
    }

    fn receipts(&self, entity: &str, flagged: bool, limit: u32) -> Result<Vec<StoredReceipt>> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM receipts r WHERE r.entity = $1 AND (NOT $2 OR r.issue IS NOT NULL)
             ORDER BY r.id DESC LIMIT $3"
        );
        self.read(|c| {
            let mut list = c.all(sql, args!(entity, flagged, limit), receipt_from)?;
            fill_held(c, &mut list)?;
            Ok(list)
        })
    }

    fn held_receipts(&self, entity: &str, limit: u32) -> Result<Vec<StoredReceipt>> {
        self.read(|c| {
            let mut list = c.all(HELD, args!(entity, limit), receipt_from)?;
            fill_held(c, &mut list)?;
            Ok(list)
        })
    }

    fn review_receipt(&self, receipt: i64, review: Review) -> Result<Reviewed> {
        self.tx(|c| Ops::new(c).review_receipt(receipt, review, &crate::ops::now()))
    }

    fn receipt_document(&self, receipt: i64) -> Result<Option<ReceiptDocument>> {
        self.read(|c| c.one(documents!("WHERE r.id = $1"), args!(receipt), document_from))
    }

    fn receipts_after(
        &self,
        entity: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ReceiptDocument>> {
        self.read(|c| c.all(AFTER, args!(entity, after_id, limit), document_from))
    }

    fn receipt_for_notice(
        &self,
        entity: &str,
        notice_number: &str,
    ) -> Result<Option<StoredReceipt>> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM receipts r WHERE r.entity = $1 AND r.notice_number = $2
               AND r.conflict_of IS NULL AND r.issuer IS NULL
             ORDER BY (r.issue IS NULL) DESC, r.id DESC LIMIT 1"
        );
        self.read(|c| c.one(sql, args!(entity, notice_number), receipt_from))
    }
}

/// Which pipelines hold each flagged receipt of a listing.
fn fill_held(c: &mut dyn crate::db::Conn, list: &mut [StoredReceipt]) -> Result<()> {
    for r in list.iter_mut().filter(|r| r.issue.is_some()) {
        r.held = c.all(
            "SELECT pipeline FROM held_deliveries WHERE receipt = $1 ORDER BY pipeline",
            args!(r.id),
            |row| row.get(0),
        )?;
    }
    Ok(())
}

/// The first copy of a receipt id, locked on PostgreSQL: of two conflicting copies arriving at
/// once, the second compares itself with the first's.
pub(crate) const FIRST_COPY: Sql = sql!(
    "SELECT id, position_id, notice_number, amount_cents, operation, parsed, xml FROM receipts
     WHERE entity = $1 AND receipt_id = $2 AND conflict_of IS NULL" => " FOR UPDATE"
);

/// A stored copy of a receipt id, as compared with a resend.
pub(crate) struct StoredCopy {
    pub id: i64,
    pub position: Option<i64>,
    notice_number: String,
    amount_cents: i64,
    operation: String,
    parsed: Option<String>,
    xml: String,
}

impl StoredCopy {
    fn from_row(r: &dyn Row) -> Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            position: r.get(1)?,
            notice_number: r.get(2)?,
            amount_cents: r.get(3)?,
            operation: r.get(4)?,
            parsed: r.get(5)?,
            xml: r.get(6)?,
        })
    }

    pub fn amount_cents(&self) -> i64 {
        self.amount_cents
    }

    /// Whether `r` says the same as this copy: the request as decoded when both have it (a
    /// resend may differ in its envelope, spacing or comments), else the XML as received.
    pub fn same_as(&self, r: &OwnedReceipt) -> bool {
        let content = match (&self.parsed, &r.parsed) {
            (Some(a), Some(b)) => a == b,
            _ => self.xml == r.xml,
        };
        content
            && self.notice_number == r.notice_number.as_str()
            && self.amount_cents == r.amount_cents
            && self.operation == r.operation
    }
}

/// The receipt statements of the receipt rules.
impl Ops<'_> {
    /// The first copy of a receipt id and its conflicting copies, first copy first.
    pub fn receipt_copies(&mut self, entity: &str, receipt_id: &str) -> Result<Vec<StoredCopy>> {
        let sql = self.c.pick(&FIRST_COPY);
        let Some(first) = self
            .c
            .one(sql, args!(entity, receipt_id), StoredCopy::from_row)?
        else {
            return Ok(Vec::new());
        };
        let others = self.c.all(
            "SELECT id, position_id, notice_number, amount_cents, operation, parsed, xml
             FROM receipts WHERE conflict_of = $1 ORDER BY id",
            args!(first.id),
            StoredCopy::from_row,
        )?;
        Ok(std::iter::once(first).chain(others).collect())
    }

    /// Stores a conflicting copy of the receipt first stored as `first`.
    pub fn insert_conflict(
        &mut self,
        r: &OwnedReceipt,
        iuv: &str,
        first: &StoredCopy,
        ts: &str,
    ) -> Result<i64> {
        self.c
            .insert(
                "INSERT INTO receipts (entity, receipt_id, notice_number, iuv, position_id, amount_cents, psp_id, psp_name, payment_date, operation, issue, xml, received_at, parsed, conflict_of, issuer)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                args!(
                    &r.entity,
                    &r.receipt_id,
                    r.notice_number.as_str(),
                    iuv,
                    first.position,
                    r.amount_cents,
                    &r.psp_id,
                    &r.psp_name,
                    r.payment_date.as_deref(),
                    &r.operation,
                    CONFLICT_ISSUE,
                    &r.xml,
                    ts,
                    r.parsed.as_deref(),
                    first.id,
                    r.issuer.as_deref()
                ),
            )?
            .ok_or_else(|| StoreError::Conflict("conflicting copy not stored".into()))
    }

    /// Holds a flagged receipt's delivery for an operator instead of creating it.
    pub fn hold_delivery(
        &mut self,
        to: &DeliverTo,
        receipt: i64,
        key: &str,
        ts: &str,
    ) -> Result<()> {
        self.c.execute(
            "INSERT INTO held_deliveries (pipeline, receipt, entity, idempotency_key, secondary, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            args!(&to.pipeline, receipt, &to.entity, key, to.secondary, ts),
        )?;
        Ok(())
    }

    /// See [`ReceiptStore::review_receipt`].
    pub fn review_receipt(&mut self, receipt: i64, review: Review, ts: &str) -> Result<Reviewed> {
        let found = self.c.one(
            "SELECT entity, receipt_id, notice_number, issue, review FROM receipts WHERE id = $1",
            args!(receipt),
            |r| {
                let row: (String, String, String, Option<String>, Option<String>) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
                Ok(row)
            },
        )?;
        let Some((entity, receipt_id, notice, issue, reviewed)) = found else {
            return Ok(Reviewed::NoReceipt);
        };
        if issue.is_none() || reviewed.is_some() {
            return Ok(Reviewed::NotHeld {
                issue,
                review: reviewed,
            });
        }
        // Taken with DELETE ... RETURNING: of two operators at once, one gets the rows.
        let held = self.c.all(
            "DELETE FROM held_deliveries WHERE receipt = $1
             RETURNING pipeline, entity, idempotency_key, secondary",
            args!(receipt),
            |r| {
                Ok((
                    DeliverTo {
                        secondary: r.get(3)?,
                        ..DeliverTo::all(&r.get::<String>(0)?, &r.get::<String>(1)?)
                    },
                    r.get::<String>(2)?,
                ))
            },
        )?;
        if held.is_empty() && review == Review::Released {
            return Ok(Reviewed::NotHeld {
                issue,
                review: None,
            });
        }
        let mut held = held;
        held.sort_by(|a, b| a.0.pipeline.cmp(&b.0.pipeline));
        if review == Review::Released {
            let mut counts = Vec::new();
            for (to, key) in &held {
                self.insert_delivery(to, receipt, key, ts)?;
                counts.push((crate::events::count::DELIVERIES, to.pipeline.as_str(), 1));
            }
            crate::events::add_counts(self.c, counts)?;
        }
        let marked = self.c.execute(
            "UPDATE receipts SET review = $2, reviewed_at = $3 WHERE id = $1 AND review IS NULL",
            args!(receipt, review.as_str(), ts),
        )?;
        if marked == 0 {
            return Err(StoreError::Conflict(format!(
                "receipt {receipt} was reviewed meanwhile"
            )));
        }
        let pipelines: Vec<String> = held.into_iter().map(|(to, _)| to.pipeline).collect();
        let payload = serde_json::json!({
            "receipt": receipt,
            "receipt_id": receipt_id,
            "issue": issue,
            "pipelines": pipelines,
        });
        let kind = match review {
            Review::Released => "receipt.released",
            Review::Dismissed => "receipt.dismissed",
        };
        self.c.event(
            &crate::ops::RawEvent {
                kind,
                entity: &entity,
                subject: &notice,
                payload: &payload.to_string(),
                correlation: None,
            },
            ts,
        )?;
        Ok(Reviewed::Done {
            receipt,
            receipt_id,
            review,
            pipelines,
        })
    }

    /// The live position with this IUV, or with `annulled` the latest annulled one.
    pub fn receipt_target(
        &mut self,
        entity: &str,
        iuv: &str,
        annulled: bool,
    ) -> Result<Option<Target>> {
        let sql = if annulled {
            TARGET_ANNULLED
        } else {
            self.c.pick(&TARGET_LIVE)
        };
        self.c.one(sql, args!(entity, iuv), |r| {
            Ok(Target {
                id: r.get(0)?,
                status: r.get(1)?,
                amount_cents: r.get(2)?,
                debt_type: r.get(3)?,
                iud: r.get(4)?,
            })
        })
    }

    /// `None` when the receipt id is stored already (a concurrent duplicate on PostgreSQL waits
    /// for the first to commit, then inserts nothing).
    pub fn insert_receipt(
        &mut self,
        r: &OwnedReceipt,
        iuv: &str,
        position: Option<i64>,
        issue: Option<&str>,
        ts: &str,
    ) -> Result<Option<i64>> {
        self.c.insert(
            "INSERT INTO receipts (entity, receipt_id, notice_number, iuv, position_id, amount_cents, psp_id, psp_name, payment_date, operation, issue, xml, received_at, parsed, issuer)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT DO NOTHING",
            args!(
                &r.entity,
                &r.receipt_id,
                r.notice_number.as_str(),
                iuv,
                position,
                r.amount_cents,
                &r.psp_id,
                &r.psp_name,
                r.payment_date.as_deref(),
                &r.operation,
                issue,
                &r.xml,
                ts,
                r.parsed.as_deref(),
                r.issuer.as_deref()
            ),
        )
    }

    pub fn insert_delivery(
        &mut self,
        to: &DeliverTo,
        receipt: i64,
        key: &str,
        ts: &str,
    ) -> Result<()> {
        self.c.execute(
            "INSERT INTO deliveries (pipeline, entity, receipt, idempotency_key, status, next_attempt_at, created_at, updated_at, secondary)
             VALUES ($1, $2, $3, $4, 'pending', $5, $5, $5, $6)",
            args!(&to.pipeline, &to.entity, receipt, key, ts, to.secondary),
        )?;
        Ok(())
    }
}
