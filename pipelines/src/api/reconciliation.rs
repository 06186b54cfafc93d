//! The entity's reconciliation (docs/RECONCILIATION.md) over the API: counts per class, and
//! the payments and movements of a class, as the hub's reconciler keeps them. Items come in key
//! order; `nextCursor` is the last key, so a client pages through a class as it stands.

use super::positions::page_limit;
use super::{blocking, query, Api, Entered, Problem, Reply};
use crate::ops::reconcile::class;
use crate::reconciler::item_of;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemsQuery {
    class: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
}

/// `GET /entities/{ipa}/reconciliation/summary`: payments, movements and items per class.
pub(crate) async fn summary(State(api): State<Arc<Api>>, scope: Entered) -> Response {
    let ipa = scope.param("ipa");
    let store = api.store.clone();
    let done = blocking(move || store.recon_summary(&ipa)).await;
    match done {
        Ok(s) => Reply::ok(
            StatusCode::OK,
            json!({
                "payments": s.payments,
                "movements": s.movements,
                "classes": s.classes,
            }),
        )
        .into_response(),
        Err(p) => p.into_response(),
    }
}

/// `GET /entities/{ipa}/reconciliation?class=&since=&limit=`: the items (of a class) after the
/// cursor, in key order.
pub(crate) async fn items(State(api): State<Arc<Api>>, scope: Entered, uri: Uri) -> Response {
    let ipa = scope.param("ipa");
    let page = async {
        let q: ItemsQuery = query(&uri)?;
        let limit = page_limit(q.limit)?;
        let wanted = match q.class.as_deref() {
            None => None,
            Some(c) => Some(class(c).map_err(|why| {
                Problem::new(StatusCode::BAD_REQUEST, "malformed", why).field("class")
            })?),
        };
        let store = api.store.clone();
        let since = q.since.unwrap_or_default();
        let after = since.clone();
        let picked =
            blocking(move || store.recon_items(&ipa, wanted.map(|c| c.code()), &after, limit))
                .await?;
        let next = picked.last().map(|i| i.key.clone()).unwrap_or(since);
        let items: Vec<serde_json::Value> = picked.iter().map(item_of).collect();
        Ok::<_, Problem>(json!({ "items": items, "nextCursor": next }))
    };
    match page.await {
        Ok(v) => Reply::ok(StatusCode::OK, v).into_response(),
        Err(p) => p.into_response(),
    }
}
