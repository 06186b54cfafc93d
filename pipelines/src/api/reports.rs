//! The entity's settlement flows: the finished ones in the order they finished (a poller's
//! pull), and one flow with its payments, links and anomalies (`fdr-json`, or `fdr-xml` when
//! asked for with `Accept: application/xml`).

use super::positions::{cursor, page_limit};
use super::{blocking, query, Api, Entered, Problem, Reply};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use snodo_store::ReportFlow;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReportQuery {
    psp_id: Option<String>,
    revision: Option<i64>,
}

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

/// Which of the flows stored under one IUF the caller means: the given PSP and revision, else
/// the current (not superseded) one. Several PSPs under one IUF must be told apart.
fn pick(flows: Vec<ReportFlow>, q: &ReportQuery, iuf: &str) -> Result<ReportFlow, Problem> {
    let matching: Vec<ReportFlow> = flows
        .into_iter()
        .filter(|f| q.psp_id.as_deref().is_none_or(|p| f.psp_id == p))
        .filter(|f| match q.revision {
            Some(r) => f.revision == r,
            None => f.superseded_by.is_none(),
        })
        .collect();
    let (ok, failed): (Vec<ReportFlow>, Vec<ReportFlow>) =
        matching.into_iter().partition(|f| f.status == "ok");
    let mut psps: Vec<&str> = ok.iter().map(|f| f.psp_id.as_str()).collect();
    psps.sort_unstable();
    psps.dedup();
    if psps.len() > 1 {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "IUF {iuf:?} is reported by several PSPs ({}): say which with pspId",
                psps.join(", ")
            ),
        )
        .field("pspId"));
    }
    if let Some(f) = ok.into_iter().next() {
        return Ok(f);
    }
    match failed.into_iter().next() {
        Some(f) => Err(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "settlement flow {iuf} (PSP {}, revision {}) could not be stored: {}",
                f.psp_id,
                f.revision,
                f.reason.unwrap_or_default()
            ),
        )),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no stored settlement flow with IUF {iuf:?}"),
        )
        .field("iuf")),
    }
}

/// Whether the caller asked for the XML (FlussoRiversamento) rather than the JSON report.
fn wants_xml(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.split(';').next().unwrap_or_default().trim();
            t.eq_ignore_ascii_case("application/xml") || t.eq_ignore_ascii_case("text/xml")
        })
}

/// `GET /entities/{ipa}/reports/{iuf}?pspId=&revision=`: one stored flow with its payments,
/// their links and the anomalies found, as `fdr-json`, or as `fdr-xml` for `Accept:
/// application/xml`.
pub(crate) async fn read(
    State(api): State<Arc<Api>>,
    scope: Entered,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let ipa = scope.param("ipa");
    let iuf = scope.param("iuf");
    let xml = wants_xml(&headers);
    let answer = async {
        let q: ReportQuery = query(&uri)?;
        let store = api.store.clone();
        let (ipa2, iuf2) = (ipa.clone(), iuf.clone());
        let flows = blocking(move || store.reports_by_iuf(&ipa2, &iuf2)).await?;
        let flow = pick(flows, &q, &iuf)?;
        let store = api.store.clone();
        let report = blocking(move || Ok(crate::stored_report::rebuild(&*store, &flow))).await?;
        report.map_err(|e| {
            tracing::error!("api: settlement flow {iuf}: {e}");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the stored flow cannot be read back; the operators are told",
            )
        })
    };
    match answer.await {
        Ok(report) if xml => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/xml")],
            report.to_xml(),
        )
            .into_response(),
        Ok(report) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            snodo_adapters::fdr::report_json::encode(&report),
        )
            .into_response(),
        Err(p) => p.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_given_only_when_asked_for() {
        let mut h = HeaderMap::new();
        assert!(!wants_xml(&h));
        h.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert!(!wants_xml(&h));
        h.insert(
            header::ACCEPT,
            "text/html, application/xml;q=0.9".parse().unwrap(),
        );
        assert!(wants_xml(&h));
    }
}
