//! The settlement flows pull: the entity's finished flows in the order they finished.

use super::positions::{cursor, page_limit};
use super::{blocking, query, Api, Entered, Problem, Reply};
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use snodo_store::ReportFlow;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportsQuery {
    since: Option<String>,
    limit: Option<u32>,
}

/// A flow as the list shows it: its key, dates and what its rows add up to.
fn summary(f: &ReportFlow) -> Value {
    json!({
        "iuf": f.iuf,
        "pspId": f.psp_id,
        "revision": f.revision,
        "source": f.source,
        "flowDate": f.flow_date,
        "regulationId": f.regulation_id,
        "regulationDate": f.regulation_date,
        "declaredCount": f.declared_count,
        "declaredCents": f.declared_cents,
        "computedCount": f.computed_count,
        "computedCents": f.computed_cents,
        "linked": f.linked,
        "anomalies": f.anomalies,
        "superseded": f.superseded_by.is_some(),
        "receivedAt": f.received_at,
    })
}

/// `GET /entities/{ipa}/reports?since=&limit=`: finished flows after the cursor, oldest first;
/// `nextCursor` is always given so a poller can keep it.
pub(crate) async fn list(State(api): State<Arc<Api>>, scope: Entered, uri: Uri) -> Response {
    let ipa = scope.param("ipa");
    let page = async {
        let q: ReportsQuery = query(&uri)?;
        let limit = page_limit(q.limit)?;
        let since = cursor(q.since.as_deref(), "since")?;
        let store = api.store.clone();
        let flows = blocking(move || store.reports_after(&ipa, since, limit)).await?;
        let items: Vec<Value> = flows.iter().map(summary).collect();
        let next = flows.last().map(|f| f.id).unwrap_or(since);
        Ok::<_, Problem>(json!({ "items": items, "nextCursor": next.to_string() }))
    };
    match page.await {
        Ok(v) => Reply::ok(StatusCode::OK, v).into_response(),
        Err(p) => p.into_response(),
    }
}
