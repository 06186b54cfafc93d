//! The ops event stream, followed.

use super::{open_store, OpsError, Result};
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
