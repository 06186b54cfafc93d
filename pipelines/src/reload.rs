//! Reloading the configuration while the hub runs (SIGHUP, `POST /admin/reload`, `snodo
//! reload`): the requests the engine answers, and the `hub.reloaded` event. The engine does the
//! work (`engine::Hub::reload`): load and validate the whole file, refuse it with the same
//! problems `snodo validate` prints, or swap the plan the node's and the API's calls read and
//! restart only the pipelines whose configuration (or entity) changed.

use crate::plan::PlanDiff;
use serde::Serialize;
use snodo_store::{NewEvent, Store};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// One reload asked for; `reply` gets the outcome (a signal asks without waiting).
pub struct ReloadRequest {
    pub reply: Option<oneshot::Sender<ReloadOutcome>>,
}

/// What a reload came to.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new configuration runs; `not_started` names pipelines that could not start (the
    /// rest of it applies).
    Applied {
        diff: Box<PlanDiff>,
        not_started: Vec<String>,
    },
    /// The running configuration stays; each problem as `snodo validate` words it.
    Refused { problems: Vec<String> },
}

/// Asks for a reload on every SIGHUP.
pub fn on_sighup(requests: mpsc::Sender<ReloadRequest>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            warn!("SIGHUP will not reload the configuration: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            info!("SIGHUP: reloading the configuration");
            if requests.send(ReloadRequest { reply: None }).await.is_err() {
                return;
            }
        }
    });
}

/// Asks the engine for a reload and waits for its outcome.
pub async fn ask(requests: &mpsc::Sender<ReloadRequest>) -> Option<ReloadOutcome> {
    let (reply, outcome) = oneshot::channel();
    requests
        .send(ReloadRequest { reply: Some(reply) })
        .await
        .ok()?;
    outcome.await.ok()
}

/// The `hub.reloaded` event: what changed, by name.
pub(crate) async fn record(store: Arc<dyn Store>, outcome: &ReloadOutcome) {
    let ReloadOutcome::Applied { diff, not_started } = outcome else {
        return;
    };
    info!(diff = %serde_json::to_string(diff).unwrap_or_default(), "configuration reloaded");
    let payload = serde_json::json!({ "diff": diff, "not_started": not_started });
    let saved = tokio::task::spawn_blocking(move || {
        store.record_events(&[NewEvent {
            kind: "hub.reloaded",
            entity: "",
            subject: "config",
            payload,
            correlation: None,
        }])
    })
    .await;
    if !matches!(saved, Ok(Ok(()))) {
        warn!("the reload's event could not be stored");
    }
}
