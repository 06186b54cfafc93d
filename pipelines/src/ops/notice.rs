//! The payment notice (PDF) of one position, as `GET …/positions/{iud}/notice.pdf` and
//! `snodo notice` give it.

use super::{entity_store, Result};
use crate::notices::{pdf, Refused};
use crate::plan::Plan;
use snodo_store::PositionQuery;

/// The notice of the entity's position `iud` (the live one, else the latest annulled one).
pub fn render(plan: &Plan, entity: &str, iud: &str) -> Result<Vec<u8>> {
    let store = entity_store(plan, entity)?;
    render_with(&super::Admin::new(store), plan, entity, iud)
}

/// [`render`] on an open store (the console's).
pub fn render_with(admin: &super::Admin, plan: &Plan, entity: &str, iud: &str) -> Result<Vec<u8>> {
    let runtime = plan
        .entities
        .get(entity)
        .ok_or_else(|| super::OpsError::NoEntity(entity.to_string()))?;
    let store = admin.store();
    let position =
        crate::api::positions::current(store.positions(entity, &PositionQuery::Iud(iud))?)
            .ok_or_else(|| Refused::Unknown(iud.to_string()))?;
    Ok(pdf(&position, runtime)?)
}
