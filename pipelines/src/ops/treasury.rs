//! The treasury's movements as operators see them (`snodo treasury`).

use super::{entity_store, Result};
use crate::plan::Plan;
use snodo_store::StoredMovement;

/// An entity's movements, the latest received first.
pub fn list(plan: &Plan, entity: &str, limit: u32) -> Result<Vec<StoredMovement>> {
    Ok(entity_store(plan, entity)?.movements(entity, limit)?)
}
