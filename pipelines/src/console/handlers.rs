//! The console's JSON (and files, and the live events), every one scoped to the session's
//! entity and read through `crate::ops`.

use super::samples::Sample;
use super::{error, Console, Refusal, Who};
use crate::config::{Endpoint, EntityState};
use crate::events::TailFilter;
use crate::ops::{self, Admin, OpsError};
use crate::plan::{PipelineKind, ReceiptRoute};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};
use snodo_store::DeliveryStatus;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

type Session = Extension<Arc<Who>>;

fn ok(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn ops_error(e: OpsError) -> Refusal {
    match e {
        OpsError::NoDelivery(_) => Refusal::new(StatusCode::NOT_FOUND, "no such delivery"),
        OpsError::NoReceipt(_) => Refusal::new(StatusCode::NOT_FOUND, "no such receipt"),
        OpsError::NoFlow(_) => Refusal::new(StatusCode::NOT_FOUND, "no such flow"),
        OpsError::NoEntity(_) => Refusal::new(StatusCode::NOT_FOUND, "no such entity"),
        e @ OpsError::NotHeld { .. } => Refusal::new(StatusCode::CONFLICT, e.to_string()),
        OpsError::Notice(r) => Refusal::new(StatusCode::CONFLICT, r.to_string()),
        OpsError::Store(e) => Refusal::new(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
        e => Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Runs `work` off the async workers; its answer or its error as JSON.
async fn blocking(
    c: &Console,
    work: impl FnOnce(&Admin) -> Result<Value, Refusal> + Send + 'static,
) -> Response {
    let admin = c.admin.clone();
    match tokio::task::spawn_blocking(move || work(&admin)).await {
        Ok(Ok(v)) => ok(v),
        Ok(Err(r)) => r.into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn to_json<T: serde::Serialize>(v: T) -> Result<Value, Refusal> {
    serde_json::to_value(v)
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Deserialize, Default)]
pub(super) struct EntityQuery {
    entity: Option<String>,
}

/// `GET /console/api/me`: who is signed in, the CSRF token, the entities to choose from.
pub(super) async fn me(Extension(who): Session) -> Response {
    let mut entities: Vec<Value> = who
        .plan
        .entities
        .values()
        .filter(|e| who.may_see(&e.ipa_code))
        .map(|e| json!({ "ipa": e.ipa_code, "name": e.name }))
        .collect();
    entities.sort_by(|a, b| a["ipa"].as_str().cmp(&b["ipa"].as_str()));
    ok(json!({
        "role": if who.entity.is_some() { "entity" } else { "operator" },
        "entity": who.entity,
        "keyId": who.key_id,
        "csrf": who.csrf,
        "entities": entities,
    }))
}

fn kind_of(kind: &PipelineKind) -> &'static str {
    match kind {
        PipelineKind::ImportFlows { .. } => "import",
        PipelineKind::TreasuryFiles { .. } => "treasury",
        PipelineKind::StreamPositions { .. } => "stream",
        PipelineKind::Receipts {
            route: ReceiptRoute::Push(_),
            ..
        } => "receipts-push",
        PipelineKind::Receipts {
            route: ReceiptRoute::Batch { .. },
            ..
        } => "receipts-export",
        PipelineKind::Reports { .. } => "reports",
        PipelineKind::Reconciliation { .. } => "reconciliation",
        PipelineKind::Expired { .. } => "expired-export",
    }
}

/// The sums of a sample over the session's entities and their pipelines.
fn point(s: &Sample, entities: &[String], pipelines: &[String], operator: bool) -> Value {
    let mut t = [0i64; 5];
    for e in entities {
        if let Some(c) = s.entities.get(e) {
            t[0] += c.receipts;
            t[1] += c.accepted + c.rejected;
            t[2] += c.rejected;
        }
    }
    for p in pipelines {
        if let Some(d) = s.pipelines.get(p) {
            t[3] += d.get("delivered").copied().unwrap_or(0);
            t[4] += d.get("dead").copied().unwrap_or(0);
        }
    }
    let mut v = json!({
        "at": s.at, "receipts": t[0], "rows": t[1], "rejected": t[2], "delivered": t[3], "dead": t[4],
    });
    if operator {
        v["soapOk"] = json!(s.soap_ok);
        v["soapFaults"] = json!(s.soap_faults);
    }
    v
}

/// `GET /console/api/overview?entity=`: pipelines with their state, last run, last error and
/// throughput; today's flows by state; receipts stored, held, dead-lettered; the node's answers
/// (operators); the counters of the last hour and day.
pub(super) async fn overview(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Query(q): Query<EntityQuery>,
) -> Response {
    let entities = match who.entities(q.entity.as_deref()) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    let c2 = c.clone();
    blocking(&c, move |admin| {
        let plan = &who.plan;
        let operator = who.entity.is_none();
        let started = c2.started.load(Ordering::SeqCst);
        let now = c2.samples.now().unwrap_or_default();
        let hour = c2.samples.since(Duration::from_secs(3600));
        let day = c2.samples.since(Duration::from_secs(86_400));
        let pipelines: Vec<&crate::plan::PipelinePlan> = plan
            .pipelines
            .iter()
            .filter(|p| entities.contains(&p.entity))
            .collect();
        let names: Vec<String> = pipelines.iter().map(|p| p.name.clone()).collect();
        // Today in Rome, where the hub's days are.
        let rome = |t: chrono::DateTime<chrono::Utc>| t.with_timezone(&chrono_tz::Europe::Rome).date_naive();
        let today = rome(chrono::Utc::now());
        let of_today = |at: &str| {
            chrono::DateTime::parse_from_rfc3339(at)
                .is_ok_and(|t| rome(t.with_timezone(&chrono::Utc)) == today)
        };
        let mut flows_today: BTreeMap<String, u64> = BTreeMap::new();
        let mut latest_flow = BTreeMap::new();
        for e in &entities {
            let flows = ops::flows::recent(admin, e, 500).map_err(ops_error)?;
            if let Some(f) = flows.first() {
                latest_flow.insert(e.clone(), f.clone());
            }
            // Standing flows (API, external, Kafka partitions: no file, no hash) stay open for
            // good: only files count.
            let files = flows.iter().filter(|f| !f.content_sha256.is_empty());
            for f in files.filter(|f| of_today(&f.created_at)) {
                *flows_today.entry(f.status.as_str().to_string()).or_default() += 1;
            }
        }
        let oldest_hour = hour.first();
        let mut rows = Vec::new();
        for p in &pipelines {
            let kind = kind_of(&p.kind);
            let entity_state = plan.entities.get(&p.entity).map(|e| e.state);
            let state = match (started, entity_state) {
                (false, _) => "starting",
                (true, Some(EntityState::Suspended)) => "suspended",
                (true, Some(EntityState::PreProduction)) => "pre-production",
                _ => "running",
            };
            let deliveries = now.pipelines.get(&p.name).cloned().unwrap_or_default();
            let (last_run, last_error, throughput) = match kind {
                "import" | "stream" | "treasury" => {
                    let f = latest_flow.get(&p.entity);
                    let rows_now = now
                        .entities
                        .get(&p.entity)
                        .map_or(0, |c| c.accepted + c.rejected);
                    let rows_then = oldest_hour.map(|s| {
                        s.entities
                            .get(&p.entity)
                            .map_or(0, |c| c.accepted + c.rejected)
                    });
                    (
                        f.map(|f| f.updated_at.clone()),
                        f.and_then(|f| f.error_message.clone()),
                        rows_then.map(|t| rows_now - t),
                    )
                }
                _ => {
                    let delivered = ops::dlq::by_status_of(
                        admin,
                        DeliveryStatus::Delivered,
                        &p.entity,
                        &p.name,
                        1,
                    )
                    .map_err(ops_error)?;
                    let dead = ops::dlq::by_status_of(
                        admin,
                        DeliveryStatus::Dead,
                        &p.entity,
                        &p.name,
                        1,
                    )
                    .map_err(ops_error)?;
                    let pending = ops::dlq::by_status_of(
                        admin,
                        DeliveryStatus::Pending,
                        &p.entity,
                        &p.name,
                        1,
                    )
                    .map_err(ops_error)?;
                    let then = oldest_hour.map(|s| {
                        s.pipelines
                            .get(&p.name)
                            .and_then(|d| d.get("delivered").copied())
                            .unwrap_or(0)
                    });
                    (
                        delivered
                            .first()
                            .and_then(|d| d.delivered_at.clone().or(Some(d.updated_at.clone()))),
                        pending
                            .first()
                            .and_then(|d| d.last_error.clone())
                            .or_else(|| dead.first().and_then(|d| d.last_error.clone())),
                        then.map(|t| deliveries.get("delivered").copied().unwrap_or(0) - t),
                    )
                }
            };
            rows.push(json!({
                "name": p.name, "entity": p.entity, "kind": kind, "state": state,
                "lastRun": last_run, "lastError": last_error, "perHour": throughput,
                "deliveries": deliveries,
            }));
        }
        let mut receipts = json!({ "stored": 0, "flagged": 0, "held": 0, "dead": 0, "rowsAccepted": 0, "rowsRejected": 0 });
        let mut sum = |k: &str, n: i64| {
            receipts[k] = json!(receipts[k].as_i64().unwrap_or(0) + n);
        };
        for e in &entities {
            if let Some(c) = now.entities.get(e) {
                sum("stored", c.receipts);
                sum("flagged", c.flagged);
                sum("held", c.held);
                sum("rowsAccepted", c.accepted);
                sum("rowsRejected", c.rejected);
            }
        }
        for n in &names {
            if let Some(d) = now.pipelines.get(n) {
                sum("dead", d.get("dead").copied().unwrap_or(0));
            }
        }
        let soap = operator.then(|| {
            let mut faults: BTreeMap<String, u64> = BTreeMap::new();
            let mut by_op: BTreeMap<String, u64> = BTreeMap::new();
            let mut ok_n = 0;
            for ((op, fault), n) in c2.node.answers() {
                *by_op.entry(op.to_string()).or_default() += n;
                if fault.is_empty() {
                    ok_n += n;
                } else {
                    *faults.entry(fault).or_default() += n;
                }
            }
            json!({ "ok": ok_n, "faults": faults, "byOperation": by_op })
        });
        let series = |samples: &[Sample]| -> Vec<Value> {
            samples
                .iter()
                .chain(std::iter::once(&now))
                .map(|s| point(s, &entities, &names, operator))
                .collect()
        };
        Ok(json!({
            "pipelines": rows,
            "flowsToday": flows_today,
            "receipts": receipts,
            "soap": soap,
            "series": { "hour": series(&hour), "day": series(&day) },
        }))
    })
    .await
}

/// What a pipeline's end is, without its secrets: the connector, and its path, topic or URL
/// (no user, password or query).
fn describe(e: &Endpoint) -> Value {
    match e {
        Endpoint::Named(n) => json!({ "kind": n }),
        Endpoint::Connector { kind, params } => {
            let text = |k: &str| params.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let detail = text("path").or_else(|| text("topic")).or_else(|| {
                text("url").map(|u| {
                    let u = u.split(['?', '#']).next().unwrap_or_default().to_string();
                    match u.split_once("://") {
                        Some((scheme, rest)) => {
                            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
                            format!("{scheme}://{rest}")
                        }
                        None => u,
                    }
                })
            });
            let host = text("host");
            json!({ "kind": kind, "detail": detail.or(host) })
        }
    }
}

/// `GET /console/api/pipelines?entity=`: each pipeline as its steps, from the configuration
/// running now, with its counters.
pub(super) async fn pipelines(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Query(q): Query<EntityQuery>,
) -> Response {
    let entities = match who.entities(q.entity.as_deref()) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    let c2 = c.clone();
    blocking(&c, move |_| {
        let now = c2.samples.now().unwrap_or_default();
        let kinds: BTreeMap<&str, &'static str> = who
            .plan
            .pipelines
            .iter()
            .map(|p| (p.name.as_str(), kind_of(&p.kind)))
            .collect();
        let out: Vec<Value> = who
            .plan
            .config
            .pipelines
            .iter()
            .filter(|p| entities.contains(&p.entity))
            .map(|p| {
                let mut steps = vec![json!({ "role": "source", "what": describe(&p.from) })];
                if let Some(d) = &p.decode {
                    steps.push(json!({ "role": "decode", "what": { "kind": d.name } }));
                }
                if let Some(e) = &p.encode {
                    steps.push(json!({ "role": "encode", "what": { "kind": e.name } }));
                }
                steps.push(json!({ "role": "destination", "what": describe(&p.to) }));
                if let Some(o) = &p.outcomes {
                    steps.push(json!({ "role": "outcomes", "what": describe(o) }));
                }
                let counts = now.entities.get(&p.entity).copied().unwrap_or_default();
                json!({
                    "name": p.name,
                    "entity": p.entity,
                    "kind": kinds.get(p.name.as_str()).copied().unwrap_or("?"),
                    "steps": steps,
                    "deliveries": now.pipelines.get(&p.name).cloned().unwrap_or_default(),
                    "rows": { "accepted": counts.accepted, "rejected": counts.rejected },
                    "receipts": counts.receipts,
                })
            })
            .collect();
        Ok(json!(out))
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct LimitQuery {
    entity: Option<String>,
    limit: Option<u32>,
}

/// `GET /console/api/flows?entity=&limit=`: the latest import flows, newest first.
pub(super) async fn flows(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Query(q): Query<LimitQuery>,
) -> Response {
    let entities = match who.entities(q.entity.as_deref()) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    blocking(&c, move |admin| {
        let mut all = Vec::new();
        for e in &entities {
            all.extend(ops::flows::recent(admin, e, limit).map_err(ops_error)?);
        }
        all.sort_by_key(|f| std::cmp::Reverse(f.id));
        all.truncate(limit as usize);
        to_json(all)
    })
    .await
}

/// A flow the session may see (else 404, as if it did not exist).
fn visible_flow(admin: &Admin, who: &Who, id: i64) -> Result<snodo_store::Flow, Refusal> {
    match ops::flows::one(admin, id) {
        Ok(f) if who.may_see(&f.entity) => Ok(f),
        Ok(_) => Err(ops_error(OpsError::NoFlow(id))),
        Err(e) => Err(ops_error(e)),
    }
}

/// `GET /console/api/flows/{id}`: the flow, its outcome files, its rejected rows with their
/// MyPay codes and messages.
pub(super) async fn flow(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Path(id): Path<i64>,
) -> Response {
    blocking(&c, move |admin| {
        let flow = visible_flow(admin, &who, id)?;
        let files = ops::flows::outcome_files(&who.plan, &flow);
        let rejected = ops::flows::rejected_rows(&files, 1000).map_err(ops_error)?;
        Ok(json!({ "flow": to_json(&flow)?, "files": to_json(&files)?, "rejected": to_json(&rejected)? }))
    })
    .await
}

/// `GET /console/api/flows/{id}/files/{name}`: one of the flow's outcome files.
pub(super) async fn flow_file(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Path((id, name)): Path<(i64, String)>,
) -> Response {
    let admin = c.admin.clone();
    let read = tokio::task::spawn_blocking(move || {
        let flow = visible_flow(&admin, &who, id)?;
        let files = ops::flows::outcome_files(&who.plan, &flow);
        let file = files
            .into_iter()
            .find(|f| f.name == name)
            .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "no such outcome file"))?;
        std::fs::read(&file.path)
            .map(|bytes| (file.name, bytes))
            .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await;
    match read {
        Ok(Ok((name, bytes))) => {
            let mut r = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/zip")],
                bytes,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Ok(Err(r)) => r.into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
pub(super) struct PositionSearch {
    entity: Option<String>,
    iud: Option<String>,
    iuv: Option<String>,
    notice: Option<String>,
    #[serde(rename = "fiscalCode")]
    fiscal_code: Option<String>,
}

/// `GET /console/api/positions?entity=&iud=|iuv=|notice=|fiscalCode=`.
pub(super) async fn positions(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Query(q): Query<PositionSearch>,
) -> Response {
    let entities = match who.entities(q.entity.as_deref()) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    blocking(&c, move |admin| {
        fn t(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|s| !s.is_empty())
        }
        let mut out = Vec::new();
        for e in &entities {
            let key = match (t(&q.iud), t(&q.iuv), t(&q.notice), t(&q.fiscal_code)) {
                (Some(v), ..) => ops::positions::Key::Iud(v),
                (_, Some(v), ..) => ops::positions::Key::Iuv(v),
                (_, _, Some(v), _) => ops::positions::Key::Notice(v),
                (_, _, _, Some(v)) => ops::positions::Key::Payer(v),
                _ => ops::positions::Key::All { limit: 50 },
            };
            out.extend(ops::positions::lookup(admin, e, key).map_err(ops_error)?);
            if out.len() >= 200 {
                out.truncate(200);
                break;
            }
        }
        to_json(out)
    })
    .await
}

/// `GET /console/api/positions/{entity}/{iud}`: the positions of the IUD with their history and
/// receipts.
pub(super) async fn position(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Path((entity, iud)): Path<(String, String)>,
) -> Response {
    if let Err(r) = who.entities(Some(&entity)) {
        return r.into_response();
    }
    blocking(&c, move |admin| {
        to_json(ops::positions::detail(admin, &entity, &iud).map_err(ops_error)?)
    })
    .await
}

/// `GET /console/api/positions/{entity}/{iud}/notice.pdf`: its payment notice.
pub(super) async fn notice(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Path((entity, iud)): Path<(String, String)>,
) -> Response {
    if let Err(r) = who.entities(Some(&entity)) {
        return r.into_response();
    }
    let admin = c.admin.clone();
    match tokio::task::spawn_blocking(move || {
        ops::notice::render_with(&admin, &who.plan, &entity, &iud)
    })
    .await
    {
        Ok(Ok(pdf)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/pdf")],
            pdf,
        )
            .into_response(),
        Ok(Err(e)) => ops_error(e).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /console/api/receipts?entity=`: held first, then flagged, then the latest.
pub(super) async fn receipts(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Query(q): Query<EntityQuery>,
) -> Response {
    let entities = match who.entities(q.entity.as_deref()) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    blocking(&c, move |admin| {
        let (mut held, mut flagged, mut recent) = (Vec::new(), Vec::new(), Vec::new());
        for e in &entities {
            let ask = |held: bool, flagged: bool, limit: u32| {
                ops::receipts::query(
                    admin,
                    &ops::receipts::ReceiptQuery {
                        entity: e.clone(),
                        flagged,
                        held,
                        limit,
                    },
                )
                .map_err(ops_error)
            };
            held.extend(ask(true, false, 200)?);
            flagged.extend(ask(false, true, 200)?);
            recent.extend(ask(false, false, 50)?);
        }
        recent.sort_by_key(|r| std::cmp::Reverse(r.id));
        recent.truncate(100);
        Ok(json!({ "held": to_json(held)?, "flagged": to_json(flagged)?, "recent": to_json(recent)? }))
    })
    .await
}

/// A receipt the session may see, with its XML (else 404).
fn visible_receipt(
    admin: &Admin,
    who: &Who,
    id: i64,
) -> Result<snodo_store::ReceiptDocument, Refusal> {
    match ops::receipts::document(admin, id) {
        Ok(d) if who.may_see(&d.receipt.entity) => Ok(d),
        Ok(_) => Err(ops_error(OpsError::NoReceipt(id))),
        Err(e) => Err(ops_error(e)),
    }
}

/// `GET /console/api/receipts/{id}`: the receipt and the XML the node sent.
pub(super) async fn receipt(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Path(id): Path<i64>,
) -> Response {
    blocking(&c, move |admin| {
        let d = visible_receipt(admin, &who, id)?;
        Ok(json!({ "receipt": to_json(&d.receipt)?, "xml": d.xml, "iud": d.iud, "debtType": d.debt_type }))
    })
    .await
}

pub(super) async fn receipt_release(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Path(id): Path<i64>,
) -> Response {
    blocking(&c, move |admin| {
        visible_receipt(admin, &who, id)?;
        to_json(ops::receipts::release(admin, id).map_err(ops_error)?)
    })
    .await
}

pub(super) async fn receipt_dismiss(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Path(id): Path<i64>,
) -> Response {
    blocking(&c, move |admin| {
        visible_receipt(admin, &who, id)?;
        to_json(ops::receipts::dismiss(admin, id).map_err(ops_error)?)
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct DeliveryQuery {
    entity: Option<String>,
    status: Option<String>,
}

/// `GET /console/api/deliveries?entity=&status=dead|pending|delivered`, newest first.
pub(super) async fn deliveries(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Query(q): Query<DeliveryQuery>,
) -> Response {
    let entities = match who.entities(q.entity.as_deref()) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    let status = match q.status.as_deref().unwrap_or("dead") {
        "dead" => DeliveryStatus::Dead,
        "pending" => DeliveryStatus::Pending,
        "delivered" => DeliveryStatus::Delivered,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "status: dead, pending or delivered",
            )
        }
    };
    let every = who.entity.is_none() && q.entity.as_deref().is_none_or(str::is_empty);
    blocking(&c, move |admin| {
        let mut out = Vec::new();
        if every {
            out = ops::dlq::by_status(admin, status, None, 200).map_err(ops_error)?;
        } else {
            for e in &entities {
                out.extend(ops::dlq::by_status(admin, status, Some(e), 200).map_err(ops_error)?);
            }
        }
        to_json(out)
    })
    .await
}

/// `POST /console/api/dlq/{id}/replay`: one dead letter back in the outbox.
pub(super) async fn replay_one(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Path(id): Path<i64>,
) -> Response {
    blocking(&c, move |admin| {
        match ops::dlq::show(admin, id) {
            Ok(d) if who.may_see(&d.entity) => {}
            Ok(_) => return Err(ops_error(OpsError::NoDelivery(id))),
            Err(e) => return Err(ops_error(e)),
        }
        let n = ops::dlq::replay(admin, &[id], None).map_err(ops_error)?;
        Ok(json!({ "replayed": n }))
    })
    .await
}

/// `POST /console/api/dlq/replay?entity=`: every dead letter of the entity (an operator without
/// one: of every entity).
pub(super) async fn replay_all(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Query(q): Query<EntityQuery>,
) -> Response {
    let entities = match who.entities(q.entity.as_deref()) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    let every = who.entity.is_none() && q.entity.as_deref().is_none_or(str::is_empty);
    blocking(&c, move |admin| {
        let mut n = 0;
        if every {
            n = ops::dlq::replay(admin, &[], None).map_err(ops_error)?;
        } else {
            for e in &entities {
                n += ops::dlq::replay(admin, &[], Some(e)).map_err(ops_error)?;
            }
        }
        Ok(json!({ "replayed": n }))
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct EventQuery {
    entity: Option<String>,
    kind: Option<String>,
}

/// Events shown at once when the page opens, before the live ones.
const EVENTS_BACK: i64 = 200;
/// A stream ends after this long (and at once when the hub stops); the browser reconnects at
/// once with `Last-Event-ID`, so no answer outlives the listener's idle bound or holds a
/// shutdown.
const STREAM_FOR: Duration = Duration::from_secs(25);

/// Where a live event stream stands.
struct Follow {
    /// The last event id read (or skipped by the filter).
    cursor: i64,
    /// The last id the browser was given.
    told: i64,
    queue: std::collections::VecDeque<(i64, Value)>,
    first: bool,
    until: tokio::time::Instant,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

/// `GET /console/api/events?entity=&kind=`: the ops event stream as server-sent events, the
/// latest ones first and then live (resuming after `Last-Event-ID` on reconnection).
pub(super) async fn events(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> Response {
    let entity = match (&who.entity, q.entity.as_deref().filter(|e| !e.is_empty())) {
        (Some(own), None) => Some(own.clone()),
        (_, Some(asked)) => match who.entities(Some(asked)) {
            Ok(_) => Some(asked.to_string()),
            Err(r) => return r.into_response(),
        },
        (None, None) => None,
    };
    let filter = TailFilter {
        entity,
        kind: q.kind.filter(|k| !k.is_empty()),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let admin = c.admin.clone();
    let start = match resume {
        Some(id) => id,
        None => {
            let a = admin.clone();
            match tokio::task::spawn_blocking(move || ops::events::last_id(&a)).await {
                Ok(Ok(id)) => (id - EVENTS_BACK).max(0),
                Ok(Err(e)) => return ops_error(e).into_response(),
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
    };
    let filter = Arc::new(filter);
    let state = Follow {
        cursor: start,
        told: -1,
        queue: std::collections::VecDeque::new(),
        first: true,
        until: tokio::time::Instant::now() + STREAM_FOR,
        shutdown: c.shutdown.clone(),
    };
    let stream = futures::stream::unfold(state, move |mut st| {
        let admin = admin.clone();
        let filter = filter.clone();
        async move {
            loop {
                if let Some((id, v)) = st.queue.pop_front() {
                    st.told = id;
                    let ev = Event::default().id(id.to_string()).data(v.to_string());
                    return Some((Ok::<_, std::convert::Infallible>(ev), st));
                }
                if st.told != st.cursor {
                    // Where to resume (Last-Event-ID) even when the filter let nothing through.
                    st.told = st.cursor;
                    let ev = Event::default()
                        .id(st.cursor.to_string())
                        .retry(Duration::from_millis(500));
                    return Some((Ok(ev), st));
                }
                if !st.first {
                    let stopped = match st.shutdown.as_mut() {
                        Some(rx) => tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(400)) => *rx.borrow(),
                            _ = rx.changed() => true,
                        },
                        None => {
                            tokio::time::sleep(Duration::from_millis(400)).await;
                            false
                        }
                    };
                    if stopped || tokio::time::Instant::now() >= st.until {
                        return None;
                    }
                }
                st.first = false;
                let (a, f, cursor) = (admin.clone(), filter.clone(), st.cursor);
                let got =
                    tokio::task::spawn_blocking(move || ops::events::after(&a, cursor, &f, 500))
                        .await;
                match got {
                    Ok(Ok((next, events))) => {
                        for v in events {
                            let id = v.get("id").and_then(Value::as_i64).unwrap_or(next);
                            st.queue.push_back((id, v));
                        }
                        st.cursor = next;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("console: events unavailable: {e}");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    Err(_) => return None,
                }
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct ReportQuery {
    entity: Option<String>,
    #[serde(default)]
    anomalies: bool,
}

/// `GET /console/api/reports?entity=&anomalies=`: settlement flows, newest first.
pub(super) async fn reports(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Query(q): Query<ReportQuery>,
) -> Response {
    let entities = match who.entities(q.entity.as_deref()) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    blocking(&c, move |admin| {
        let mut out = Vec::new();
        for e in &entities {
            for line in ops::reports::lines(admin, e, q.anomalies, 100).map_err(ops_error)? {
                let mut v = to_json(line)?;
                v["entity"] = json!(e);
                out.push(v);
            }
        }
        Ok(json!(out))
    })
    .await
}

/// `GET /console/api/reports/{entity}/{iuf}`: a flow's revisions with rows and anomalies.
pub(super) async fn report(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Path((entity, iuf)): Path<(String, String)>,
) -> Response {
    if let Err(r) = who.entities(Some(&entity)) {
        return r.into_response();
    }
    blocking(&c, move |admin| {
        match ops::reports::detail(admin, &entity, &iuf, 1000) {
            Ok(d) => to_json(d),
            Err(OpsError::Pipeline { message, .. }) => {
                Err(Refusal::new(StatusCode::NOT_FOUND, message))
            }
            Err(e) => Err(ops_error(e)),
        }
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct ReconQuery {
    entity: Option<String>,
    class: Option<String>,
}

/// `GET /console/api/reconciliation?entity=&class=`: counts per class; with `class`, its first
/// items.
pub(super) async fn reconciliation(
    State(c): State<Arc<Console>>,
    Extension(who): Session,
    Query(q): Query<ReconQuery>,
) -> Response {
    let entities = match who.entities(q.entity.as_deref()) {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    if let Some(class) = q.class.as_deref().filter(|c| !c.is_empty()) {
        if let Err(e) = ops::reconcile::class(class) {
            return error(StatusCode::BAD_REQUEST, e);
        }
    }
    blocking(&c, move |admin| {
        let mut summaries = Vec::new();
        let mut items = Vec::new();
        let class = q.class.as_deref().filter(|c| !c.is_empty());
        for e in &entities {
            summaries.push(to_json(
                ops::reconcile::summary_of(admin, e).map_err(ops_error)?,
            )?);
            if let Some(class) = class {
                for mut item in
                    ops::reconcile::items_page(admin, e, Some(class), "", 200).map_err(ops_error)?
                {
                    item["entity"] = json!(e);
                    items.push(item);
                }
            }
        }
        Ok(json!({ "summaries": summaries, "items": items }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_end_is_shown_without_its_secrets() {
        let e = Endpoint::Connector {
            kind: "http".into(),
            params: json!({ "url": "https://user:pw@erp.example/receipts?token=x", "auth": { "bearer": "s3cret" } }),
        };
        assert_eq!(
            describe(&e),
            json!({ "kind": "http", "detail": "https://erp.example/receipts" })
        );
        let d = Endpoint::Connector {
            kind: "dir".into(),
            params: json!({ "path": "var/in" }),
        };
        assert_eq!(describe(&d), json!({ "kind": "dir", "detail": "var/in" }));
        assert_eq!(
            describe(&Endpoint::Named("registry".into())),
            json!({ "kind": "registry" })
        );
    }
}
