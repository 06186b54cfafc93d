//! The hub's counters as `/metrics` reads them (running totals in the store), for the console's
//! overview and charts.

use super::{Admin, Result};
use snodo_store::StoreMetrics;

/// The store's running totals: receipts, deliveries by status, import rows, held receipts,
/// settlement flows and reconciliation classes.
pub fn counters(admin: &Admin) -> Result<StoreMetrics> {
    Ok(admin.store().metrics()?)
}
