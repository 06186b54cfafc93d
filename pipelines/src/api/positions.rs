//! Positions over HTTP, with the fields, validation and MyPay codes of a CSV row, and the
//! receipts pull.

use super::{blocking, query, read_json, Api, Caller, Entered, Problem, Reply, ORIGIN};
use crate::plan::EntityRuntime;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use snodo_adapters::position_json::{self, Expect};
use snodo_core::dovuto::{Action, DovutoRow, RejectCode, Rejection};
use snodo_core::payment::PositionStatus;
use snodo_store::{ChunkRow, Position, PositionFilter, PositionQuery, RowOutcome};
use std::sync::Arc;

/// Most items in one page.
const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 100;

/// A position as the API shows it.
pub(crate) fn view(p: &Position, entity: &EntityRuntime) -> Value {
    let d = &p.dovuto;
    let qr = p
        .notice_number
        .as_deref()
        .and_then(|n| snodo_core::NoticeNumber::parse(n).ok())
        .map(|n| snodo_core::qr::qr_payload(&n, &entity.fiscal_code, d.amount));
    json!({
        "iud": p.iud,
        "iuv": p.iuv,
        "noticeNumber": p.notice_number,
        "status": p.status.as_str(),
        "debtType": d.debt_type,
        "amountCents": d.amount.cents(),
        "paFeeCents": d.pa_fee.map(|a| a.cents()),
        "dueDate": d.due_date.map(|x| x.to_string()),
        "payer": {
            "type": d.payer.kind.map(|k| k.as_str()),
            "id": d.payer.id,
            "name": d.payer.name,
            "email": d.payer.email,
        },
        "causale": d.causale,
        "qrCode": qr,
        "version": p.version,
        "iuvGenerated": p.iuv_generated,
        "createdAt": p.created_at,
        "updatedAt": p.updated_at,
        // Paid positions, once the PSP's settlement flow names their receipt.
        "settlement": p.settlement.as_ref().map(|s| json!({
            "iuf": s.iuf,
            "pspId": s.psp_id,
            "revision": s.revision,
            "flowDate": s.flow_date,
            "regulationId": s.regulation_id,
        })),
    })
}

/// Fills in the settlement flow of each paid position, where one is known.
async fn with_settlements(
    api: &Api,
    ipa: &str,
    mut positions: Vec<Position>,
) -> Result<Vec<Position>, Problem> {
    let notices: Vec<(usize, String)> = positions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.status == PositionStatus::Paid)
        .filter_map(|(i, p)| p.notice_number.clone().map(|n| (i, n)))
        .collect();
    if notices.is_empty() {
        return Ok(positions);
    }
    let store = api.store.clone();
    let ipa = ipa.to_owned();
    let keys: Vec<String> = notices.iter().map(|(_, n)| n.clone()).collect();
    let found = blocking(move || {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        store.settlements(&ipa, &keys)
    })
    .await?;
    for ((i, _), s) in notices.into_iter().zip(found) {
        positions[i].settlement = s;
    }
    Ok(positions)
}

/// Whether a request carries what the position already holds. A request that leaves the IUV to
/// the hub matches whatever IUV the position got.
pub(crate) fn same_data(
    stored: &snodo_core::dovuto::Dovuto,
    given: &snodo_core::dovuto::Dovuto,
) -> bool {
    if given.iuv.is_some() {
        return stored == given;
    }
    let mut s = stored.clone();
    s.iuv = None;
    s.generate_iuv = given.generate_iuv;
    &s == given
}

/// The live position with this IUD, else the latest annulled one.
pub(crate) fn current(mut all: Vec<Position>) -> Option<Position> {
    match all
        .iter()
        .position(|p| p.status != PositionStatus::Annulled)
    {
        Some(i) => Some(all.swap_remove(i)),
        None => all.into_iter().max_by_key(|p| p.id),
    }
}

async fn by_iud(api: &Api, ipa: &str, iud: &str) -> Result<Option<Position>, Problem> {
    let (store, ipa, iud) = (api.store.clone(), ipa.to_string(), iud.to_string());
    blocking(move || store.positions(&ipa, &PositionQuery::Iud(&iud)))
        .await
        .map(current)
}

/// Applies valid rows through the entity's API flow; one outcome per row. When an insert finds
/// its IUD taken by a position with the same data, that is a retry: the position is the answer.
pub(crate) async fn apply(
    api: &Arc<Api>,
    entity: &Arc<EntityRuntime>,
    rows: Vec<DovutoRow>,
) -> Result<Vec<Result<(StatusCode, Position), Vec<Rejection>>>, Problem> {
    let (flows, store, e) = (api.flows.clone(), api.store.clone(), entity.clone());
    blocking(move || {
        let chunk = rows
            .iter()
            .map(|r| ChunkRow::new(r.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let outcomes = flows.apply(&e, ORIGIN, &chunk)?;
        let mut out = Vec::with_capacity(rows.len());
        for (row, outcome) in rows.iter().zip(outcomes) {
            let iud = row.dovuto.iud.as_str();
            let now = current(store.positions(&e.ipa_code, &PositionQuery::Iud(iud))?);
            out.push(match (outcome, now) {
                (RowOutcome::Accepted { .. }, Some(p)) => {
                    let status = if row.action == Action::Insert {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    Ok((status, p))
                }
                (RowOutcome::Rejected(r), Some(p))
                    if r.code == RejectCode::IudDuplicato
                        && p.status != PositionStatus::Annulled
                        && same_data(&p.dovuto, &row.dovuto) =>
                {
                    Ok((StatusCode::OK, p))
                }
                (RowOutcome::Rejected(r), _) => Err(vec![r]),
                (RowOutcome::Accepted { .. }, None) => Err(vec![Rejection::new(
                    RejectCode::Error,
                    "the position was stored but cannot be read back",
                )]),
            });
        }
        Ok(out)
    })
    .await
}

fn location(ipa: &str, iud: &str) -> String {
    format!(
        "{}/entities/{ipa}/positions/{}",
        super::BASE,
        encode_segment(iud)
    )
}

/// Percent-encodes a path segment (IUDs are free text).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn same(f: &str) -> String {
    f.to_string()
}

/// `POST /entities/{ipa}/positions`: one position (an object) or a batch (an array).
pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    scope: Entered,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let who = scope.who.clone();
    let (bytes, value) = match read_json(&api, &headers, body).await {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let api2 = api.clone();
    let who2 = who.clone();
    api.once(&who2, "POST positions", &headers, &bytes, || async move {
        create_positions(&api2, &who, value).await
    })
    .await
}

async fn create_positions(api: &Arc<Api>, who: &Caller, value: Value) -> Reply {
    let entity = &who.entity;
    let today = snodo_core::time::today_rome();
    let insert = Expect {
        action: "I",
        iud: None,
    };
    match value {
        Value::Array(items) => {
            let max = api.plan().config.api.max_batch;
            if items.is_empty() || items.len() > max {
                return Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!(
                        "a batch has 1 to {max} positions (api.max_batch), this one {}",
                        items.len()
                    ),
                )
                .into();
            }
            let decoded: Vec<_> = items
                .iter()
                .map(|v| position_json::decode_value(v, insert, &entity.rules, today))
                .collect();
            let rows: Vec<DovutoRow> = decoded.iter().filter_map(|d| d.clone().ok()).collect();
            let mut applied = match apply(api, entity, rows).await {
                Ok(a) => a.into_iter(),
                Err(p) => return p.into(),
            };
            let (mut created, mut unchanged, mut rejected) = (0, 0, 0);
            let mut results = Vec::with_capacity(decoded.len());
            for (index, d) in decoded.into_iter().enumerate() {
                let outcome = match d {
                    Err(invalid) => Err(invalid.rejections),
                    Ok(_) => applied.next().unwrap_or_else(|| {
                        Err(vec![Rejection::new(RejectCode::Error, "no outcome")])
                    }),
                };
                results.push(match outcome {
                    Ok((status, p)) => {
                        if status == StatusCode::CREATED {
                            created += 1;
                        } else {
                            unchanged += 1;
                        }
                        json!({ "index": index, "status": status.as_u16(), "position": view(&p, entity) })
                    }
                    Err(rs) => {
                        rejected += 1;
                        let p = Problem::rejected(&rs, &same);
                        json!({ "index": index, "status": p.status.as_u16(), "problem": p.to_json() })
                    }
                });
            }
            Reply::ok(
                StatusCode::OK,
                json!({ "created": created, "unchanged": unchanged, "rejected": rejected, "results": results }),
            )
        }
        Value::Object(_) => {
            let row = match position_json::decode_value(&value, insert, &entity.rules, today) {
                Ok(r) => r,
                Err(invalid) => return Problem::rejected(&invalid.rejections, &same).into(),
            };
            single(api, entity, row).await
        }
        _ => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "the body is a position (an object) or a batch (an array of positions)",
        )
        .into(),
    }
}

/// Applies one row and answers with the position or the problem.
pub(crate) async fn single(api: &Arc<Api>, entity: &Arc<EntityRuntime>, row: DovutoRow) -> Reply {
    match apply(api, entity, vec![row]).await {
        Ok(mut v) => match v.pop() {
            Some(Ok((status, p))) => Reply {
                status,
                body: view(&p, entity),
                location: Some(location(&entity.ipa_code, &p.iud)),
            },
            Some(Err(rs)) => Problem::rejected(&rs, &same).into(),
            None => {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no outcome").into()
            }
        },
        Err(p) => p.into(),
    }
}

/// `GET /entities/{ipa}/positions/{iud}`.
pub(crate) async fn read(State(api): State<Arc<Api>>, scope: Entered) -> Response {
    let who = scope.who.clone();
    let ipa = scope.param("ipa");
    let iud = scope.param("iud");
    let found = match by_iud(&api, &ipa, &iud).await {
        Ok(Some(p)) => with_settlements(&api, &ipa, vec![p]).await,
        Ok(None) => return not_found(&iud).into_response(),
        Err(p) => return p.into_response(),
    };
    match found.map(|mut v| v.pop()) {
        Ok(Some(p)) => Reply::ok(StatusCode::OK, view(&p, &who.entity)).into_response(),
        Ok(None) => not_found(&iud).into_response(),
        Err(p) => p.into_response(),
    }
}

/// `GET /entities/{ipa}/positions/{iud}/notice.pdf`: the payment notice; 409 for a paid or
/// annulled position, or one without a notice number.
pub(crate) async fn notice_pdf(State(api): State<Arc<Api>>, scope: Entered) -> Response {
    let who = scope.who.clone();
    let ipa = scope.param("ipa");
    let iud = scope.param("iud");
    let position = match by_iud(&api, &ipa, &iud).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(&iud).into_response(),
        Err(p) => return p.into_response(),
    };
    let entity = who.entity.clone();
    // The IUD is the entity's own text: only safe characters go into the header.
    let name: String = iud
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    let rendered = blocking(move || {
        let started = std::time::Instant::now();
        let pdf = crate::notices::pdf(&position, &entity);
        if pdf.is_ok() {
            crate::metrics::NOTICES.rendered(&entity.ipa_code, "api", 1, started.elapsed());
        }
        Ok(pdf)
    })
    .await;
    match rendered {
        Ok(Ok(pdf)) => (
            StatusCode::OK,
            [
                (
                    axum::http::header::CONTENT_TYPE,
                    "application/pdf".to_string(),
                ),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"avviso-{name}.pdf\""),
                ),
            ],
            pdf,
        )
            .into_response(),
        Ok(Err(e)) => Problem::new(StatusCode::CONFLICT, "conflict", e.to_string()).into_response(),
        Err(p) => p.into_response(),
    }
}

fn not_found(iud: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no position with IUD {iud:?}"),
    )
    .code(RejectCode::DovutoNonPresente.as_str())
    .field("IUD")
}

/// `PUT /entities/{ipa}/positions/{iud}`: the whole position replaces the live one.
pub(crate) async fn modify(
    State(api): State<Arc<Api>>,
    scope: Entered,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let who = scope.who.clone();
    let ipa = scope.param("ipa");
    let iud = scope.param("iud");
    let value = match read_json(&api, &headers, body).await {
        Ok((_, v)) => v,
        Err(p) => return p.into_response(),
    };
    let expect = Expect {
        action: "M",
        iud: Some(&iud),
    };
    let today = snodo_core::time::today_rome();
    let row = match position_json::decode_value(&value, expect, &who.entity.rules, today) {
        Ok(r) => r,
        Err(invalid) => return Problem::rejected(&invalid.rejections, &same).into_response(),
    };
    // The same data again changes nothing (no new version): PUT is idempotent.
    match by_iud(&api, &ipa, &iud).await {
        Ok(Some(p))
            if p.status != PositionStatus::Annulled && same_data(&p.dovuto, &row.dovuto) =>
        {
            return Reply::ok(StatusCode::OK, view(&p, &who.entity)).into_response()
        }
        Ok(_) => {}
        Err(p) => return p.into_response(),
    }
    let mut reply = single(&api, &who.entity, row).await;
    reply.location = None;
    reply.into_response()
}

/// `DELETE /entities/{ipa}/positions/{iud}`: annulled, kept in history.
pub(crate) async fn annul(State(api): State<Arc<Api>>, scope: Entered) -> Response {
    let who = scope.who.clone();
    let ipa = scope.param("ipa");
    let iud = scope.param("iud");
    let p = match by_iud(&api, &ipa, &iud).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(&iud).into_response(),
        Err(p) => return p.into_response(),
    };
    match p.status {
        PositionStatus::Annulled => {
            return Reply::ok(StatusCode::OK, view(&p, &who.entity)).into_response()
        }
        PositionStatus::Paid => {
            return Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("position {iud:?} is paid: it cannot be annulled"),
            )
            .field("IUD")
            .into_response()
        }
        _ => {}
    }
    let mut dovuto = p.dovuto.clone();
    dovuto.iud = p.iud.clone();
    let row = DovutoRow {
        action: Action::Annul,
        dovuto,
    };
    let mut reply = single(&api, &who.entity, row).await;
    reply.location = None;
    reply.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ListQuery {
    status: Option<String>,
    debt_type: Option<String>,
    due_from: Option<chrono::NaiveDate>,
    due_to: Option<chrono::NaiveDate>,
    iuv: Option<String>,
    notice_number: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, Problem> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        n => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("limit is 1 to {MAX_PAGE}, not {n}"),
        )
        .field("limit")),
    }
}

/// A cursor is the last id seen, as text (opaque to clients).
pub(crate) fn cursor(c: Option<&str>, name: &str) -> Result<i64, Problem> {
    match c {
        None | Some("") => Ok(0),
        Some(c) => c.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("{name} {c:?} is not a cursor this API gave"),
            )
            .field(name)
        }),
    }
}

/// `GET /entities/{ipa}/positions?status=&debtType=&dueFrom=&dueTo=&iuv=&noticeNumber=&cursor=&limit=`.
pub(crate) async fn list(State(api): State<Arc<Api>>, scope: Entered, uri: Uri) -> Response {
    let who = scope.who.clone();
    let ipa = scope.param("ipa");
    let page = async {
        let q: ListQuery = query(&uri)?;
        let limit = page_limit(q.limit)?;
        let after = cursor(q.cursor.as_deref(), "cursor")?;
        let status = match q.status.as_deref() {
            None => None,
            Some(s) => Some(PositionStatus::parse(s).ok_or_else(|| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    format!("status {s:?} is not one of active, paid, annulled, expired"),
                )
                .field("status")
            })?),
        };
        let store = api.store.clone();
        let entity = ipa.clone();
        let mut items = blocking(move || {
            let filter = PositionFilter {
                status,
                debt_type: q.debt_type.as_deref(),
                due_from: q.due_from,
                due_to: q.due_to,
                iuv: q.iuv.as_deref(),
                notice_number: q.notice_number.as_deref(),
                ..Default::default()
            };
            store.list_positions(&entity, &filter, after, limit + 1)
        })
        .await?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let items = with_settlements(&api, &ipa, items).await?;
        let next = if more {
            items.last().map(|p| p.id.to_string())
        } else {
            None
        };
        let views: Vec<Value> = items.iter().map(|p| view(p, &who.entity)).collect();
        Ok::<_, Problem>(json!({ "items": views, "nextCursor": next }))
    };
    match page.await {
        Ok(v) => Reply::ok(StatusCode::OK, v).into_response(),
        Err(p) => p.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptsQuery {
    since: Option<String>,
    limit: Option<u32>,
}

/// `GET /entities/{ipa}/receipts?since=&limit=`: receipts in store order, in the push `json`
/// format; `nextCursor` is always given so a poller can keep it.
pub(crate) async fn receipts(State(api): State<Arc<Api>>, scope: Entered, uri: Uri) -> Response {
    let who = scope.who.clone();
    let ipa = scope.param("ipa");
    let page = async {
        let q: ReceiptsQuery = query(&uri)?;
        let limit = page_limit(q.limit)?;
        let since = cursor(q.since.as_deref(), "since")?;
        let store = api.store.clone();
        let docs = blocking(move || store.receipts_after(&ipa, since, limit)).await?;
        let mut items = Vec::with_capacity(docs.len());
        for doc in &docs {
            let ctx = crate::deliver::context(&who.entity, doc);
            let encoded = crate::deliver::decoded(doc)
                .and_then(|r| {
                    snodo_adapters::receipt_json::encode_parsed(&ctx, &doc.xml, &r)
                        .map_err(|e| e.to_string())
                })
                .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()));
            match encoded {
                Ok(v) => items.push(v),
                Err(e) => {
                    tracing::error!(
                        receipt = doc.receipt.id,
                        "api: receipt cannot be encoded: {e}"
                    );
                    return Err(Problem::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        format!(
                            "receipt {} cannot be encoded; operators are told",
                            doc.receipt.receipt_id
                        ),
                    ));
                }
            }
        }
        let next = docs.last().map(|d| d.receipt.id).unwrap_or(since);
        Ok::<_, Problem>(json!({ "items": items, "nextCursor": next.to_string() }))
    };
    match page.await {
        Ok(v) => Reply::ok(StatusCode::OK, v).into_response(),
        Err(p) => p.into_response(),
    }
}
