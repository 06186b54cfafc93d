//! An entity's receipts from the node, and operators' decisions on held ones.

use super::{entity_store, Admin, OpsError, Result};
use crate::plan::Plan;
use snodo_store::{Review, Reviewed, StoredReceipt};

/// Which receipts to list.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReceiptQuery {
    pub entity: String,
    /// Only those flagged for operators (unknown notice, amount differs, paid twice, annulled,
    /// conflicting copy).
    #[serde(default)]
    pub flagged: bool,
    /// Only those whose deliveries wait for an operator's release or dismissal.
    #[serde(default)]
    pub held: bool,
    #[serde(default = "default_limit")]
    pub limit: u32,
}

fn default_limit() -> u32 {
    100
}

/// A configured entity's receipts (see [`query`]).
pub fn list(plan: &Plan, q: &ReceiptQuery) -> Result<Vec<StoredReceipt>> {
    let admin = Admin::new(entity_store(plan, &q.entity)?);
    query(&admin, q)
}

/// Newest first, as the query says (each flagged one names the pipelines holding it).
pub fn query(admin: &Admin, q: &ReceiptQuery) -> Result<Vec<StoredReceipt>> {
    let store = admin.store();
    Ok(if q.held {
        store.held_receipts(&q.entity, q.limit)?
    } else {
        store.receipts(&q.entity, q.flagged, q.limit)?
    })
}

/// Delivers a held receipt after all: one delivery, due now, per pipeline that held it (an
/// export lists it in its next file).
pub fn release(admin: &Admin, receipt: i64) -> Result<Reviewed> {
    review(admin, receipt, Review::Released)
}

/// Never delivers a held receipt to the formats that held it (and clears a flagged receipt that
/// holds nothing, such as a conflicting copy, from the operators' queue).
pub fn dismiss(admin: &Admin, receipt: i64) -> Result<Reviewed> {
    review(admin, receipt, Review::Dismissed)
}

fn review(admin: &Admin, receipt: i64, review: Review) -> Result<Reviewed> {
    match admin.store().review_receipt(receipt, review)? {
        done @ Reviewed::Done { .. } => Ok(done),
        Reviewed::NoReceipt => Err(OpsError::NoReceipt(receipt)),
        Reviewed::NotHeld { issue, review } => Err(OpsError::NotHeld {
            receipt,
            why: match (issue, review) {
                (None, _) => "it is not flagged, it was delivered as usual".into(),
                (_, Some(r)) => format!("it was {r} already"),
                (Some(i), None) => format!("it is flagged ({i}) but no delivery of it is held"),
            },
        }),
    }
}

/// One receipt with the XML the node sent.
pub fn document(admin: &Admin, receipt: i64) -> Result<snodo_store::ReceiptDocument> {
    admin
        .store()
        .receipt_document(receipt)?
        .ok_or(OpsError::NoReceipt(receipt))
}
