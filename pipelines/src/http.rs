//! The hub's HTTP server: the node's SOAP endpoint (`/pagopa/paForNode`, with the official WSDL
//! and schemas at `?wsdl` / `?xsd=...`) and the health probe.

use crate::node::NodeService;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const WSDL: &str =
    include_str!("../../../shared/specs/pagopa/pagopa-api/SANP3.12.0/wsdl/paForNode.wsdl");
const XSD_PA_FOR_NODE: &str =
    include_str!("../../../shared/specs/pagopa/pagopa-api/SANP3.12.0/wsdl/xsd/paForNode.xsd");
const XSD_COMMON: &str = include_str!(
    "../../../shared/specs/pagopa/pagopa-api/SANP3.12.0/xsd-common/sac-common-types-1.0.xsd"
);

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
    docs: Documents,
    started: Arc<AtomicBool>,
}

/// `started` turns true once every pipeline runs; `/readyz` also asks the store.
pub fn router(node: Arc<NodeService>, public_url: &str, started: Arc<AtomicBool>) -> Router {
    let state = Arc::new(AppState {
        node,
        docs: Documents::new(public_url),
        started,
    });
    Router::new()
        .route(PA_FOR_NODE_PATH, get(documents).post(soap))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let node = state.node.clone();
    match tokio::task::spawn_blocking(move || node.metrics()).await {
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
    let node = state.node.clone();
    let store = tokio::task::spawn_blocking(move || node.store_ready())
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

async fn soap(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let node = state.node.clone();
    // The store is blocking (SQLite): keep it off the async workers.
    match tokio::task::spawn_blocking(move || node.handle(&body)).await {
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
