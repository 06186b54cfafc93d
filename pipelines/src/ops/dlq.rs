//! Dead letters: receipt deliveries that failed for good or ran out of retries.

use super::{Admin, OpsError, Result};
use snodo_store::{Delivery, DeliveryStatus};

/// Which dead letters to list.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DlqQuery {
    pub entity: Option<String>,
    pub pipeline: Option<String>,
    #[serde(default = "default_limit")]
    pub limit: u32,
}

fn default_limit() -> u32 {
    100
}

/// Dead letters, newest first.
pub fn list(admin: &Admin, q: &DlqQuery) -> Result<Vec<Delivery>> {
    Ok(admin.store().deliveries(
        DeliveryStatus::Dead,
        q.entity.as_deref(),
        q.pipeline.as_deref(),
        q.limit,
    )?)
}

/// One delivery, whatever its status, with its last error.
pub fn show(admin: &Admin, id: i64) -> Result<Delivery> {
    admin.store().delivery(id)?.ok_or(OpsError::NoDelivery(id))
}

/// Puts dead letters back in the outbox, due now: `ids`, or with none every dead letter (of
/// `entity`). Returns how many.
pub fn replay(admin: &Admin, ids: &[i64], entity: Option<&str>) -> Result<usize> {
    Ok(admin.store().replay(ids, entity)?)
}

/// An entity's (or every entity's) deliveries in one status, newest first: what the console
/// lists beside the dead letters.
pub fn by_status(
    admin: &Admin,
    status: DeliveryStatus,
    entity: Option<&str>,
    limit: u32,
) -> Result<Vec<Delivery>> {
    Ok(admin.store().deliveries(status, entity, None, limit)?)
}

/// One pipeline's deliveries in one status, newest first.
pub fn by_status_of(
    admin: &Admin,
    status: DeliveryStatus,
    entity: &str,
    pipeline: &str,
    limit: u32,
) -> Result<Vec<Delivery>> {
    Ok(admin
        .store()
        .deliveries(status, Some(entity), Some(pipeline), limit)?)
}
