//! The entity's treasury movements posted over the API, for an accounting system that reads
//! its giornale di cassa itself (GovPay's scenario): `PUT` books a movement by its id
//! (`<year>-<bill>`, idempotent: the same body again changes nothing), `DELETE` reverses it
//! (OPI's STORNATO). The IUF or IUV is taken from the causale, as for files.

use super::{blocking, decode_body, read_json, Api, Entered, Problem, Reply};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use snodo_core::treasury::{self as core_treasury, DateFormat};
use snodo_store::{MovementCounts, NewMovement, StoredMovement};
use std::sync::Arc;

/// Longest causale taken (MyPivot's column).
const CAUSALE_MAX: usize = 2000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MovementInput {
    amount_cents: i64,
    accounting_date: Option<String>,
    value_date: Option<String>,
    causale: String,
    payer: Option<String>,
    end_to_end_id: Option<String>,
}

fn invalid(field: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail).field(field)
}

/// `<year>-<bill>`: the year of the account's books and the bill number.
fn movement_id(id: &str) -> Result<(u16, String), Problem> {
    let (year, bill) = id.split_once('-').ok_or_else(|| {
        invalid(
            "movementId",
            format!("{id:?} is not <year>-<bill>, e.g. 2026-0001201"),
        )
    })?;
    let year = core_treasury::parse_year("movementId year", year)
        .map_err(|e| invalid("movementId", e.to_string()))?;
    core_treasury::check_bill("movementId bill", bill)
        .map_err(|e| invalid("movementId", e.to_string()))?;
    Ok((year, bill.to_string()))
}

fn view(m: &StoredMovement) -> Value {
    json!({
        "movementId": format!("{}-{}", m.year, m.bill),
        "year": m.year,
        "bill": m.bill,
        "amountCents": m.amount_cents,
        "accountingDate": m.accounting_date,
        "valueDate": m.value_date,
        "causale": m.causale,
        "payer": m.payer,
        "endToEndId": m.end_to_end_id,
        "iuf": m.iuf,
        "iuv": m.iuv,
        "source": m.source,
        "receivedAt": m.received_at,
        "updatedAt": m.updated_at,
    })
}

fn outcome(c: &MovementCounts) -> &'static str {
    if c.inserted > 0 {
        "inserted"
    } else if c.updated > 0 {
        "updated"
    } else if c.removed > 0 {
        "removed"
    } else if c.not_found > 0 {
        "not-found"
    } else {
        "unchanged"
    }
}

/// `PUT /entities/{ipa}/treasury/{movementId}`: books the movement (201 when new, 200 else).
pub(crate) async fn put(
    State(api): State<Arc<Api>>,
    scope: Entered,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ipa = scope.param("ipa");
    let id = scope.param("movementId");
    let answer = async {
        let (year, bill) = movement_id(&id)?;
        let (_, value) = read_json(&api, &headers, body).await?;
        let input: MovementInput = decode_body(&value)?;
        if input.amount_cents <= 0 {
            return Err(invalid(
                "amountCents",
                format!(
                    "{} is not an incoming amount: cents above 0",
                    input.amount_cents
                ),
            ));
        }
        let causale = input.causale.trim().to_string();
        if causale.is_empty() || causale.chars().count() > CAUSALE_MAX {
            return Err(invalid(
                "causale",
                format!("must be 1 to {CAUSALE_MAX} characters"),
            ));
        }
        let mut dates = Vec::new();
        for (field, given) in [
            ("accountingDate", &input.accounting_date),
            ("valueDate", &input.value_date),
        ] {
            dates.push(match given {
                None => None,
                Some(d) => Some(
                    core_treasury::parse_date("date", d, DateFormat::Iso)
                        .map_err(|_| invalid(field, format!("{d:?} is not a date (yyyy-mm-dd)")))?
                        .to_string(),
                ),
            });
        }
        let reference = core_treasury::extract(&causale);
        let store = api.store.clone();
        let (ipa2, bill2) = (ipa.clone(), bill.clone());
        let (counts, stored) = blocking(move || {
            let m = NewMovement {
                year: i64::from(year),
                bill: &bill2,
                amount_cents: input.amount_cents,
                accounting_date: dates[0].as_deref(),
                value_date: dates[1].as_deref(),
                causale: &causale,
                payer: input.payer.as_deref(),
                end_to_end_id: input.end_to_end_id.as_deref(),
                iuf: reference.iuf().map(|i| i.as_str()),
                iuv: reference.iuv(),
                reversed: false,
            };
            let counts = store.apply_movements(&ipa2, "api", &[m])?;
            let stored = store.movement(&ipa2, i64::from(year), &bill2)?;
            Ok((counts, stored))
        })
        .await?;
        let stored = stored.ok_or_else(|| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the movement was booked but cannot be read back",
            )
        })?;
        let status = if counts.inserted > 0 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let mut body = view(&stored);
        body["outcome"] = json!(outcome(&counts));
        Ok::<_, Problem>((status, body))
    };
    match answer.await {
        Ok((status, body)) => Reply::ok(status, body).into_response(),
        Err(p) => p.into_response(),
    }
}

/// `DELETE /entities/{ipa}/treasury/{movementId}`: the movement reversed (removed); 404 when
/// the hub holds no such movement.
pub(crate) async fn delete(State(api): State<Arc<Api>>, scope: Entered) -> Response {
    let ipa = scope.param("ipa");
    let id = scope.param("movementId");
    let answer = async {
        let (year, bill) = movement_id(&id)?;
        let store = api.store.clone();
        let counts = blocking(move || {
            let m = NewMovement {
                year: i64::from(year),
                bill: &bill,
                amount_cents: 0,
                accounting_date: None,
                value_date: None,
                causale: "",
                payer: None,
                end_to_end_id: None,
                iuf: None,
                iuv: None,
                reversed: true,
            };
            store.apply_movements(&ipa, "api", &[m])
        })
        .await?;
        if counts.removed == 0 {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no treasury movement {id:?}"),
            )
            .field("movementId"));
        }
        Ok(json!({ "movementId": id, "outcome": "removed" }))
    };
    match answer.await {
        Ok(v) => Reply::ok(StatusCode::OK, v).into_response(),
        Err(p) => p.into_response(),
    }
}
