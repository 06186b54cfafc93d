//! An entity's import flows.

use super::{entity_store, Result};
use crate::plan::Plan;
use snodo_store::Flow;

/// The flows with `iuf`, or else the `limit` most recent ones; newest first.
pub fn list(plan: &Plan, entity: &str, iuf: Option<&str>, limit: u32) -> Result<Vec<Flow>> {
    let store = entity_store(plan, entity)?;
    Ok(match iuf {
        Some(iuf) => store.flows_by_iuf(entity, iuf)?,
        None => store.recent_flows(entity, limit)?,
    })
}
