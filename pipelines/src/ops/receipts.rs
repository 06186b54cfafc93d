//! An entity's receipts from the node.

use super::{entity_store, Result};
use crate::plan::Plan;
use snodo_store::StoredReceipt;

/// Newest first; `flagged`: only those an operator should look at.
pub fn list(plan: &Plan, entity: &str, flagged: bool, limit: u32) -> Result<Vec<StoredReceipt>> {
    Ok(entity_store(plan, entity)?.receipts(entity, flagged, limit)?)
}
