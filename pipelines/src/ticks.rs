//! Waiting for a pipeline's schedule: every scheduled task (intakes, exports, the settlement
//! flows pull) sleeps to its next tick the same way.

use chrono::Utc;
use chrono_tz::Europe::Rome;
use std::time::Duration;
use tokio::sync::watch;

/// Sleeps until `schedule`'s next tick (Europe/Rome) or until `shutdown` flips. `None` when
/// shutting down; otherwise the tick's instant as stored (the key several hubs claim a tick by;
/// `None` inside when the schedule has no next tick, and the wait was a second).
pub async fn next_tick(
    schedule: &cron::Schedule,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Option<String>> {
    let next = schedule.upcoming(Rome).next();
    let tick = next.map(|t| crate::deliver::stamp(t.with_timezone(&Utc)));
    let wait = next
        .and_then(|t| (t.with_timezone(&Utc) - Utc::now()).to_std().ok())
        .unwrap_or(Duration::from_secs(1));
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.changed() => {}
    }
    if *shutdown.borrow() {
        return None;
    }
    Some(tick)
}

/// Runs `work` (blocking) at each tick of `schedule` until shutdown, for scheduled exports
/// whose cursor moves only when a file is published: a failed tick is logged and the next one
/// writes the same items again.
pub async fn every_tick<F>(
    name: String,
    what: &'static str,
    schedule: Box<cron::Schedule>,
    mut shutdown: watch::Receiver<bool>,
    work: F,
) where
    F: Fn(Option<String>) -> Result<(), String> + Send + Sync + 'static,
{
    let work = std::sync::Arc::new(work);
    while let Some(tick) = next_tick(&schedule, &mut shutdown).await {
        let w = work.clone();
        match tokio::task::spawn_blocking(move || w(tick)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(pipeline = %name, "{what} failed, retried at the next tick: {e}")
            }
            Err(e) => tracing::warn!(pipeline = %name, "{what} task panicked: {e}"),
        }
    }
    tracing::info!(pipeline = %name, "{what}s stopped");
}
