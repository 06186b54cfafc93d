//! Spontaneous payments (Base mode): what a citizen portal may offer, and a position made from a
//! citizen's request through the same MyPay rules as any other.

use super::positions::single;
use super::{decode_body, read_json, Api, Caller, Entered, Problem, Reply};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use snodo_core::dovuto::{validate, FlowVersion, RawDovuto};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `GET /entities/{ipa}/spontaneous`.
pub(crate) async fn list(scope: Entered) -> Response {
    let who = scope.who.clone();
    let items: Vec<Value> = who
        .entity
        .spontaneous
        .iter()
        .map(|o| {
            json!({
                "debtType": o.debt_type,
                "description": o.description,
                "amount": o.rule.amount,
                "causale": o.rule.causale,
                "fields": o.rule.fields,
            })
        })
        .collect();
    Reply::ok(StatusCode::OK, json!({ "items": items })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Request {
    payer: Payer,
    amount_cents: Option<i64>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payer {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    name: String,
    email: Option<String>,
}

/// `POST /entities/{ipa}/spontaneous/{debtType}`.
pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    scope: Entered,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let who = scope.who.clone();
    let ipa = scope.param("ipa");
    let debt_type = scope.param("debt_type");
    let (bytes, value) = match read_json(&api, &headers, body).await {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    // With a key, the IUD is derived from it: even two hubs racing on a retry make one position.
    let seed = headers
        .get("idempotency-key")
        .and_then(|k| k.to_str().ok())
        .map(|k| format!("{ipa}|{debt_type}|{k}"));
    let route = format!("POST spontaneous/{debt_type}");
    let api2 = api.clone();
    let who2 = who.clone();
    api.once(&who2, &route, &headers, &bytes, || async move {
        spontaneous(&api2, &who, &debt_type, value, seed).await
    })
    .await
}

/// Where a MyPay field of the row is in this call's body.
fn body_field(f: &str) -> String {
    match f {
        "tipoIdentificativoUnivoco" => "payer.type",
        "codiceIdentificativoUnivoco" => "payer.id",
        "anagraficaPagatore" => "payer.name",
        "mailPagatore" => "payer.email",
        "importoDovuto" => "amountCents",
        "causaleVersamento" => "fields",
        other => other,
    }
    .to_string()
}

async fn spontaneous(
    api: &Arc<Api>,
    who: &Caller,
    debt_type: &str,
    value: Value,
    seed: Option<String>,
) -> Reply {
    let entity = &who.entity;
    let Some(offer) = entity.spontaneous.iter().find(|o| o.debt_type == debt_type) else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{debt_type:?} is not a debt type {} offers for spontaneous payment (see GET .../spontaneous)", entity.ipa_code),
        )
        .field("debtType")
        .into();
    };
    let req: Request = match decode_body(&value) {
        Ok(r) => r,
        Err(p) => return p.into(),
    };
    let (amount, causale) = match offer.rule.apply(req.amount_cents, &req.fields) {
        Ok(v) => v,
        Err(errors) => {
            let mut p = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                errors
                    .iter()
                    .map(|e| format!("{} {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            p.field = errors.first().map(|e| e.field.clone());
            p.errors = errors
                .iter()
                .map(|e| json!({ "field": e.field, "detail": e.message }))
                .collect();
            return p.into();
        }
    };
    let iud = spontaneous_iud(seed.as_deref());
    let amount = amount.to_string();
    let taxonomy = entity
        .payments
        .get(debt_type)
        .map(|p| p.taxonomy.as_str())
        .unwrap_or_default();
    let raw = RawDovuto {
        iud: &iud,
        tipo_identificativo_univoco: &req.payer.kind,
        codice_identificativo_univoco: &req.payer.id,
        anagrafica_pagatore: &req.payer.name,
        mail_pagatore: req.payer.email.as_deref().unwrap_or_default(),
        importo_dovuto: &amount,
        tipo_dovuto: debt_type,
        causale_versamento: &causale,
        dati_specifici_riscossione: taxonomy,
        flg_genera_iuv: "true",
        azione: "I",
        ..Default::default()
    };
    let today = snodo_core::time::today_rome();
    match validate(&raw, FlowVersion::V1_4, &entity.rules, today) {
        Ok(row) => single(api, entity, row).await,
        Err(rs) => Problem::rejected(&rs, &body_field).into(),
    }
}

/// `SP` + 30 hex digits: from the idempotency seed, else unique to this call.
fn spontaneous_iud(seed: Option<&str>) -> String {
    use sha2::Digest;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let material = match seed {
        Some(s) => s.to_string(),
        None => format!(
            "{:?}|{}|{}",
            std::time::SystemTime::now(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ),
    };
    let hash = hex::encode(sha2::Sha256::digest(material.as_bytes()));
    format!("SP{}", &hash[..30])
}
