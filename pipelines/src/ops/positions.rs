//! An entity's debt positions.

use super::{entity_store, open_store, Admin, Result};
use crate::plan::Plan;
use snodo_store::{HistoryEntry, Position, PositionQuery, PositionStatus, Store, StoredReceipt};

/// Which positions: by one key, or all of them up to a limit.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    Iud(&'a str),
    Iuv(&'a str),
    Notice(&'a str),
    /// The debtor's fiscal code (or VAT number).
    Payer(&'a str),
    All {
        limit: u32,
    },
}

pub fn query(plan: &Plan, entity: &str, key: Key<'_>) -> Result<Vec<Position>> {
    let store = entity_store(plan, entity)?;
    find(store.as_ref(), entity, key)
}

/// [`query`] on an open store (the console's).
pub fn lookup(admin: &Admin, entity: &str, key: Key<'_>) -> Result<Vec<Position>> {
    find(admin.store(), entity, key)
}

/// One IUD's positions (the live one, and any annulled before) with each one's history, and
/// the receipt that paid it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Detail {
    pub position: Position,
    pub history: Vec<HistoryEntry>,
    pub receipt: Option<StoredReceipt>,
}

pub fn detail(admin: &Admin, entity: &str, iud: &str) -> Result<Vec<Detail>> {
    let store = admin.store();
    let mut out = Vec::new();
    for position in find(store, entity, Key::Iud(iud))? {
        let history = store.history(position.id)?;
        let receipt = match &position.notice_number {
            Some(n) => store.receipt_for_notice(entity, n)?,
            None => None,
        };
        out.push(Detail {
            position,
            history,
            receipt,
        });
    }
    Ok(out)
}

fn find(store: &dyn Store, entity: &str, key: Key<'_>) -> Result<Vec<Position>> {
    let q = match key {
        Key::Iud(v) => PositionQuery::Iud(v),
        Key::Iuv(v) => PositionQuery::Iuv(v),
        Key::Notice(v) => PositionQuery::NoticeNumber(v),
        Key::Payer(v) => PositionQuery::Payer(v),
        Key::All { limit } => PositionQuery::All { limit },
    };
    let mut positions = store.positions(entity, &q)?;
    // A paid position shows the settlement flow of its receipt, when one is known.
    let paid: Vec<usize> = (0..positions.len())
        .filter(|&i| {
            positions[i].status == PositionStatus::Paid && positions[i].notice_number.is_some()
        })
        .collect();
    let notices: Vec<&str> = paid
        .iter()
        .filter_map(|&i| positions[i].notice_number.as_deref())
        .collect();
    let found = store.settlements(entity, &notices)?;
    for (i, s) in paid.into_iter().zip(found) {
        positions[i].settlement = s;
    }
    Ok(positions)
}

/// A notice the national node could pay now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayableNotice {
    /// The entity's fiscal code.
    pub fiscal_code: String,
    pub notice_number: String,
}

/// Every active position with a notice number, entity by entity (IPA code order).
pub fn payable_notices(plan: &Plan) -> Result<Vec<PayableNotice>> {
    let store = open_store(plan)?;
    let mut entities: Vec<_> = plan.entities.values().collect();
    entities.sort_by(|a, b| a.ipa_code.cmp(&b.ipa_code));
    let mut out = Vec::new();
    for e in entities {
        let positions = store.positions(&e.ipa_code, &PositionQuery::All { limit: u32::MAX })?;
        out.extend(positions.into_iter().filter_map(|p| {
            let notice = p
                .notice_number
                .filter(|_| p.status == PositionStatus::Active)?;
            Some(PayableNotice {
                fiscal_code: e.fiscal_code.as_str().to_string(),
                notice_number: notice,
            })
        }));
    }
    Ok(out)
}
