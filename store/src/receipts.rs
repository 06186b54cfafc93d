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

    /// An entity's receipts, newest first; only those flagged for operators when `flagged`.
    fn receipts(&self, entity: &str, flagged: bool, limit: u32) -> Result<Vec<StoredReceipt>>;

    /// The receipt a delivery carries.
    fn receipt_document(&self, receipt: i64) -> Result<Option<ReceiptDocument>>;

    /// The entity's own receipts with id > `after_id`, ascending id, at most `limit`, with what
    /// a format needs: a poller's pull, resumed from the last id it saw.
    fn receipts_after(
        &self,
        entity: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ReceiptDocument>>;

    /// The latest receipt stored for this notice number of the entity, one that paid its
    /// position preferred over flagged ones, if any.
    fn receipt_for_notice(
        &self,
        entity: &str,
        notice_number: &str,
    ) -> Result<Option<StoredReceipt>>;
}

macro_rules! columns {
    () => {
        "r.id, r.entity, r.receipt_id, r.notice_number, r.position_id, r.amount_cents, r.psp_id,
         r.psp_name, r.payment_date, r.operation, r.issue, r.received_at"
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
    })
}

/// Receipts with what a format needs of their position (see [`document_from`]).
macro_rules! documents {
    ($where:literal) => {
        concat!(
            "SELECT ",
            columns!(),
            ", r.xml, p.iud, p.debt_type, r.parsed FROM receipts r LEFT JOIN positions p ON p.id = r.position_id ",
            $where
        )
    };
}

fn document_from(r: &dyn Row) -> Result<ReceiptDocument> {
    Ok(ReceiptDocument {
        receipt: receipt_from(r)?,
        xml: r.get(12)?,
        iud: r.get(13)?,
        debt_type: r.get(14)?,
        parsed: r.get(15)?,
    })
}

/// A poller's page of an entity's receipts, walked on `receipts_entity_id`.
pub(crate) const AFTER: &str =
    documents!("WHERE r.entity = $1 AND r.id > $2 ORDER BY r.id LIMIT $3");

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

    fn receipts(&self, entity: &str, flagged: bool, limit: u32) -> Result<Vec<StoredReceipt>> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM receipts r WHERE r.entity = $1 AND (NOT $2 OR r.issue IS NOT NULL)
             ORDER BY r.id DESC LIMIT $3"
        );
        self.read(|c| c.all(sql, args!(entity, flagged, limit), receipt_from))
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
             ORDER BY (r.issue IS NULL) DESC, r.id DESC LIMIT 1"
        );
        self.read(|c| c.one(sql, args!(entity, notice_number), receipt_from))
    }
}

/// The receipt statements of the receipt rules.
impl Ops<'_> {
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
            "INSERT INTO receipts (entity, receipt_id, notice_number, iuv, position_id, amount_cents, psp_id, psp_name, payment_date, operation, issue, xml, received_at, parsed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
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
                r.parsed.as_deref()
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
