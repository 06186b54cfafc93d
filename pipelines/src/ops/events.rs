//! The ops event stream, followed.

use super::{open_store, Admin, OpsError, Result};
use crate::events::TailFilter;
use crate::plan::Plan;

/// Writes one line per event that passes `filter`, from now on, until `count` were written (or
/// forever): from the event topic with `[kafka]`, else from the store.
pub fn tail(
    plan: &Plan,
    filter: &TailFilter,
    count: Option<u64>,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let store = open_store(plan)?;
    crate::events::tail(plan, store.as_ref(), filter, count, out).map_err(OpsError::Tail)
}

/// The id of the latest event stored (where a live follower starts).
pub fn last_id(admin: &Admin) -> Result<i64> {
    Ok(admin.store().last_event_id()?)
}

/// Events stored after `cursor` that pass `filter` (as `snodo tail` prints them, as JSON), and
/// the cursor to ask from next.
pub fn after(
    admin: &Admin,
    cursor: i64,
    filter: &TailFilter,
    limit: u32,
) -> Result<(i64, Vec<serde_json::Value>)> {
    let events = admin.store().events_after(cursor, limit)?;
    let next = events.last().map_or(cursor, |e| e.id);
    Ok((
        next,
        events
            .iter()
            .filter(|e| filter.passes(&e.entity, &e.kind))
            .map(crate::events::to_json)
            .collect(),
    ))
}
