//! The hub's HTTP server: the node's SOAP endpoint (`/pagopa/paForNode`, with the official WSDL
//! and schemas at `?wsdl` / `?xsd=...`), the probes, `/metrics`, and the operators' `/admin/`
//! API (dead letters and replay, held receipts) behind a bearer token.

use crate::listen::{same_secret, Guard, Peer};
use crate::metrics::DeliveryStats;
use crate::node::NodeService;
use crate::ops::dlq::{self, DlqQuery};
use crate::ops::{self, Admin, OpsError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use snodo_store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use snodo_adapters::pagopa::specs::{WSDL, XSD_COMMON, XSD_PA_FOR_NODE};

/// Where the node's calls arrive, under the hub's public URL.
pub const PA_FOR_NODE_PATH: &str = "/pagopa/paForNode";

/// The official documents with their references rewritten to this hub, built once at start.
struct Documents {
    wsdl: String,
    xsd_pa_for_node: String,
}

impl Documents {
    fn new(public_url: &str) -> Self {
        let endpoint = format!("{}{PA_FOR_NODE_PATH}", public_url.trim_end_matches('/'));
        Self {
            wsdl: WSDL
                .replace(
                    "schemaLocation=\"xsd/paForNode.xsd\"",
                    &format!("schemaLocation=\"{endpoint}?xsd=paForNode.xsd\""),
                )
                .replace(
                    "location=\"http://pagopa-api.pagopa.gov.it/service/pa/paForNode\"",
                    &format!("location=\"{endpoint}\""),
                ),
            xsd_pa_for_node: XSD_PA_FOR_NODE.replace(
                "schemaLocation=\"../../xsd-common/sac-common-types-1.0.xsd\"",
                &format!("schemaLocation=\"{endpoint}?xsd=sac-common-types-1.0.xsd\""),
            ),
        }
    }
}

struct AppState {
    node: Arc<NodeService>,
    admin: Admin,
    stats: Arc<DeliveryStats>,
    admin_token: Option<String>,
    docs: Documents,
    started: Arc<AtomicBool>,
    guard: Arc<Guard>,
    reload: Option<tokio::sync::mpsc::Sender<crate::reload::ReloadRequest>>,
}

/// What the server needs from the running hub.
pub struct AppParts<'a> {
    pub node: Arc<NodeService>,
    pub store: Arc<dyn Store>,
    pub stats: Arc<DeliveryStats>,
    /// `None`: `/admin/` answers 404.
    pub admin_token: Option<String>,
    pub public_url: &'a str,
    /// Turns true once every pipeline runs; `/readyz` also asks the store.
    pub started: Arc<AtomicBool>,
    /// Node authentication, failed-authentication bounds, body limits, `/metrics` placement.
    pub guard: Arc<Guard>,
    /// Where `POST /admin/reload` asks the engine (`None`: 404).
    pub reload: Option<tokio::sync::mpsc::Sender<crate::reload::ReloadRequest>>,
    /// Who each key is, in the plan running now (the console's sign-in).
    pub keys: Arc<crate::api::Keys>,
    /// Turns true when the hub stops (the console's live streams end).
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The hub's routes, and the `/metrics` router for `http.metrics_listen` when it is set (then
/// `/metrics` is not on the main listener).
pub fn router(parts: AppParts<'_>) -> (Router, Option<Router>) {
    let guard = parts.guard.clone();
    let console = crate::console::router(crate::console::Parts {
        keys: parts.keys,
        store: parts.store.clone(),
        node: parts.node.clone(),
        guard: parts.guard.clone(),
        started: parts.started.clone(),
        shutdown: parts.shutdown.clone(),
    });
    let state = Arc::new(AppState {
        node: parts.node,
        admin: Admin::new(parts.store),
        stats: parts.stats,
        admin_token: parts.admin_token,
        docs: Documents::new(parts.public_url),
        started: parts.started,
        guard: parts.guard,
        reload: parts.reload,
    });
    let soap = Router::new()
        .route(PA_FOR_NODE_PATH, get(documents).post(soap))
        .route_layer(from_fn_with_state(state.clone(), node_gate))
        .layer(DefaultBodyLimit::max(guard.soap_max_body));
    let admin = Router::new()
        .route("/admin/dlq", get(dlq_list))
        .route("/admin/dlq/replay", post(dlq_replay_all))
        .route("/admin/dlq/{id}", get(dlq_show))
        .route("/admin/dlq/{id}/replay", post(dlq_replay_one))
        .route("/admin/receipts", get(receipts_list))
        .route("/admin/receipts/{id}/release", post(receipt_release))
        .route("/admin/receipts/{id}/dismiss", post(receipt_dismiss))
        .route("/admin/reload", post(reload))
        .route_layer(from_fn_with_state(state.clone(), admin_gate))
        .layer(DefaultBodyLimit::max(guard.admin_max_body));
    let metrics_routes = Router::new().route("/metrics", get(metrics));
    let (main, separate) = if guard.metrics_listen.is_some() {
        (
            Router::new(),
            Some(metrics_routes.with_state(state.clone())),
        )
    } else {
        (metrics_routes, None)
    };
    let main = main
        .merge(soap)
        .merge(admin)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state)
        .merge(console);
    (main, separate)
}

/// The node's endpoint: who may call is checked before the body is read.
async fn node_gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(gate) = &state.guard.gate else {
        return next.run(request).await;
    };
    let peer = request.extensions().get::<Peer>();
    match gate.check(peer, request.headers()) {
        Ok(()) => next.run(request).await,
        Err((status, reason)) => {
            gate.refused(peer, reason);
            (status, format!("refused: {reason}\n")).into_response()
        }
    }
}

/// A bearer secret checked in constant time, with failures bounded per peer address.
fn bearer(guard: &Guard, request: &Request, expected: &str, what: &str) -> Option<Response> {
    let ip = request
        .extensions()
        .get::<Peer>()
        .map(|p| p.addr.ip().to_canonical());
    if let Some(wait) = ip.and_then(|ip| guard.failures.check(ip)) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed authentications: retry in {wait} s"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
        return Some(r);
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same_secret(given, expected) {
        return None;
    }
    if let Some(ip) = ip {
        guard.failures.failed(ip);
    }
    tracing::warn!(peer = ?ip, "{what}: refused, no valid token");
    let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is needed");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Some(r)
}

/// `/admin/`: off without a token, else the token before anything else.
async fn admin_gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.admin_token else {
        return error(
            StatusCode::NOT_FOUND,
            "the admin API is off: set http.admin_token (e.g. \"${SNODO_ADMIN_TOKEN}\")",
        );
    };
    match bearer(&state.guard, &request, expected, "admin") {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// A JSON answer, or a JSON error `{"error": "..."}`.
fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, serde_json::json!({ "error": message.into() }))
}

/// An admin call (the token checked by `admin_gate`): the operation off the async workers,
/// its value answered as JSON.
async fn admin<T: serde::Serialize + Send + 'static>(
    state: &AppState,
    _headers: &HeaderMap,
    call: impl FnOnce(&Admin) -> ops::Result<T> + Send + 'static,
) -> Response {
    let admin = state.admin.clone();
    match tokio::task::spawn_blocking(move || call(&admin)).await {
        Ok(Ok(v)) => match serde_json::to_value(v) {
            Ok(v) => json(StatusCode::OK, v),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Ok(Err(OpsError::NoDelivery(_))) => error(StatusCode::NOT_FOUND, "no such delivery"),
        Ok(Err(OpsError::NoReceipt(_))) => error(StatusCode::NOT_FOUND, "no such receipt"),
        Ok(Err(e @ OpsError::NotHeld { .. })) => error(StatusCode::CONFLICT, e.to_string()),
        Ok(Err(OpsError::Store(e))) => {
            error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"))
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn replayed(n: usize) -> serde_json::Value {
    serde_json::json!({ "replayed": n })
}

/// `GET /admin/dlq?entity=&pipeline=&limit=`: dead letters, newest first.
async fn dlq_list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<DlqQuery>,
) -> Response {
    admin(&state, &headers, move |a| dlq::list(a, &q)).await
}

/// `GET /admin/dlq/{id}`: one delivery, whatever its status.
async fn dlq_show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    admin(&state, &headers, move |a| dlq::show(a, id)).await
}

/// `POST /admin/dlq/{id}/replay`: back in the outbox, due now.
async fn dlq_replay_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    admin(&state, &headers, move |a| {
        dlq::replay(a, &[id], None).map(replayed)
    })
    .await
}

#[derive(serde::Deserialize)]
struct ReplayQuery {
    entity: Option<String>,
}

/// `POST /admin/dlq/replay?entity=`: every dead letter (of one entity).
async fn dlq_replay_all(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ReplayQuery>,
) -> Response {
    admin(&state, &headers, move |a| {
        dlq::replay(a, &[], q.entity.as_deref()).map(replayed)
    })
    .await
}

/// `POST /admin/reload`: the configuration file read again and applied (200 with what changed),
/// or refused (422 with the problems, as `snodo validate` words them; the running one stays).
async fn reload(State(state): State<Arc<AppState>>) -> Response {
    use crate::reload::ReloadOutcome;
    let Some(requests) = &state.reload else {
        return (StatusCode::NOT_FOUND, "no reload here\n").into_response();
    };
    match crate::reload::ask(requests).await {
        Some(outcome) => {
            let status = match outcome {
                ReloadOutcome::Applied { .. } => StatusCode::OK,
                ReloadOutcome::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            };
            json(status, serde_json::to_value(&outcome).unwrap_or_default())
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the hub is stopping: no reload\n",
        )
            .into_response(),
    }
}

/// `GET /admin/receipts?entity=&flagged=&held=&limit=`: an entity's receipts, newest first
/// (as `snodo receipts`).
async fn receipts_list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ops::receipts::ReceiptQuery>,
) -> Response {
    admin(&state, &headers, move |a| ops::receipts::query(a, &q)).await
}

/// `POST /admin/receipts/{id}/release`: a held receipt is delivered after all.
async fn receipt_release(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    admin(&state, &headers, move |a| ops::receipts::release(a, id)).await
}

/// `POST /admin/receipts/{id}/dismiss`: a held receipt is never delivered where it was held.
async fn receipt_dismiss(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    admin(&state, &headers, move |a| ops::receipts::dismiss(a, id)).await
}

async fn metrics(State(state): State<Arc<AppState>>, request: Request) -> Response {
    if let Some(token) = &state.guard.metrics_token {
        if let Some(refused) = bearer(&state.guard, &request, token, "metrics") {
            return refused;
        }
    }
    let node = state.node.clone();
    let stats = state.stats.clone();
    let gate = state.guard.gate.clone();
    match tokio::task::spawn_blocking(move || {
        let mut text = node.metrics(&stats);
        if let Some(g) = gate {
            text.push_str(&g.metrics());
        }
        text
    })
    .await
    {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    // On the node's threads: a probe must not queue behind a busy shared pool.
    let store = state
        .node
        .reserved(|n| n.store_ready())
        .await
        .unwrap_or(false);
    let pipelines = state.started.load(Ordering::SeqCst);
    let status = if store && pipelines {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        format!(
            "store {}\npipelines {}\n",
            if store { "ok" } else { "unreachable" },
            if pipelines { "started" } else { "starting" }
        ),
    )
        .into_response()
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn documents(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let docs = &state.docs;
    if q.contains_key("wsdl") {
        return xml(StatusCode::OK, docs.wsdl.clone());
    }
    match q.get("xsd").map(String::as_str) {
        Some("paForNode.xsd") => xml(StatusCode::OK, docs.xsd_pa_for_node.clone()),
        Some("sac-common-types-1.0.xsd") => xml(StatusCode::OK, XSD_COMMON.to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "ask for ?wsdl, ?xsd=paForNode.xsd or ?xsd=sac-common-types-1.0.xsd\n",
        )
            .into_response(),
    }
}

async fn soap(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    // The store is blocking: off the async workers, on threads kept for the node.
    let corr = crate::events::correlation_id();
    // What the caller says it asks: the typed KO for a body that cannot be read at all.
    let action = headers
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .and_then(snodo_adapters::pagopa::Operation::from_soap_action);
    match state
        .node
        .reserved(move |n| n.handle(&body, action, &corr))
        .await
    {
        Ok(answer) => xml(StatusCode::OK, answer),
        Err(e) => {
            tracing::error!("SOAP handler failed: {e}");
            xml(
                StatusCode::INTERNAL_SERVER_ERROR,
                crate::node::system_fault(),
            )
        }
    }
}
