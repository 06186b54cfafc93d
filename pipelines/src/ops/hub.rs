//! The hub itself: every pipeline of a plan.

use super::{open_store, Result};
use crate::plan::Plan;
use tokio::sync::watch;

/// Runs every pipeline until `shutdown` turns true, then drains.
pub async fn run(plan: Plan, shutdown: watch::Receiver<bool>) -> Result<()> {
    let store = open_store(&plan)?;
    crate::engine::Hub::new(plan, store).run(shutdown).await?;
    Ok(())
}
