//! MyPivot's settlement-flow services (`mypivot-pa-per-ente.wsdl`): the list of an entity's
//! settlement flows (FdR) and a download link for one, answered from the flows the hub pulled
//! and linked (docs/RECONCILIATION.md), never a second copy.
//!
//! The link carries its own proof (an HMAC of what it names and its expiry, keyed by the
//! entity's password hash, which every hub of a Region shares through the configuration), so a
//! download needs no session and any hub can serve it, as MyPay's signed links.

use super::{codes, refuse, unavailable, Answered, Refusal, Ws};
use crate::plan::EntityRuntime;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use snodo_adapters::mypay_ws::{Answer, Call, Operation};
use snodo_store::ReportFlow;
use std::sync::Arc;

/// How long a download link works (MyPay's tokens: 2 hours).
const LINK_LIFETIME: i64 = 2 * 3600;
/// Most flows one list answers.
const MAX_FLOWS: u32 = 10_000;

fn date(call: &Call, name: &str, what: &str) -> Result<chrono::NaiveDate, Refusal> {
    let v = call.field(name).map(str::trim).unwrap_or_default();
    chrono::NaiveDate::parse_from_str(v.get(..10).unwrap_or(v), "%Y-%m-%d")
        // MyPay answers every date error of this service with PAA_ENTE_NON_VALIDO.
        .map_err(|_| refuse(codes::ENTE_NON_VALIDO, format!("Data {what} non valida")))
}

/// The entity's stored flows (status ok, latest revision) of `psp`.
async fn flows(ws: &Ws, entity: &str, psp: Option<String>) -> Result<Vec<ReportFlow>, Refusal> {
    let (store, entity) = (ws.api.store.clone(), entity.to_string());
    super::blocking(move || store.reports(&entity, false, MAX_FLOWS))
        .await
        .map_err(unavailable)
        .map(|all| {
            all.into_iter()
                .filter(|f| f.status == "ok" && f.superseded_by.is_none())
                .filter(|f| psp.as_deref().is_none_or(|p| f.psp_id == p))
                .collect()
        })
}

/// The flow's date and time as MyPivot shows it (no offset, no fraction).
fn flow_time(f: &ReportFlow) -> String {
    let at = f.flow_time.as_deref().unwrap_or(&f.received_at);
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| {
            t.with_timezone(&chrono_tz::Europe::Rome)
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| at.get(..19).unwrap_or(at).to_string())
}

/// `paaSILChiediElencoFlussiSPC`: the entity's settlement flows (`tipoFlusso` R) of one PSP
/// received between the two dates (Rome, both included). The hub keeps no squaring flows (Q):
/// none are listed.
pub(super) async fn elenco(ws: &Ws, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let from = date(call, "dateFrom", "inizio")?;
    let to = date(call, "dateTo", "fine")?;
    if to < from {
        return Err(refuse(
            codes::ENTE_NON_VALIDO,
            "Intervallo data Extraction non valida",
        ));
    }
    let kind = call.field("tipoFlusso").map(str::trim).unwrap_or_default();
    let psp = call
        .field("identificativoPsp")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let listed = match kind {
        "R" => flows(ws, &entity.ipa_code, psp)
            .await?
            .into_iter()
            .filter(|f| {
                let day = super::rome_date(&f.received_at);
                day >= from.to_string() && day <= to.to_string()
            })
            .collect(),
        "Q" => Vec::new(),
        other => {
            return Err(refuse(
                codes::SYSTEM_ERROR,
                format!("tipoFlusso [{other}] non valido: R (rendicontazione) o Q (quadratura)"),
            ))
        }
    };
    let mut a = Answer::new(Operation::ChiediElencoFlussiSPC);
    a.open("elencoFlussiSPC");
    a.text("totRestituiti", &listed.len().to_string());
    for f in &listed {
        a.open("idSPC");
        a.text("identificativoFlusso", &f.iuf);
        a.text("dataOraFlusso", &flow_time(f));
        a.close("idSPC");
    }
    a.close("elencoFlussiSPC");
    Ok(a.finish())
}

/// `paaSILChiediFlussoSPC`: `OK` and a download link for the flow, `KO` when the hub has none.
pub(super) async fn flusso(ws: &Ws, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let iuf = call
        .field("identificativoFlusso")
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    let psp = call
        .field("identificativoPsp")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let kind = call.field("tipoFlusso").map(str::trim).unwrap_or_default();
    let found = if kind == "R" {
        flows(ws, &entity.ipa_code, psp)
            .await?
            .into_iter()
            .find(|f| f.iuf == iuf)
    } else {
        None
    };
    let mut a = Answer::new(Operation::ChiediFlussoSPC);
    match found {
        Some(f) => {
            a.text("stato", "OK");
            a.text("downloadUrl", &link(ws, entity, &f));
        }
        None => {
            a.text("stato", "KO");
            a.text("downloadUrl", "");
        }
    }
    Ok(a.finish())
}

fn link(ws: &Ws, entity: &EntityRuntime, f: &ReportFlow) -> String {
    let expires = chrono::Utc::now().timestamp() + LINK_LIFETIME;
    let token =
        super::sign(entity, &format!("mypivot-flusso|{}|{expires}", f.id)).unwrap_or_default();
    format!(
        "{}{}/flusso?ente={}&id={}&expires={expires}&token={token}",
        ws.public_url, ws.path, entity.ipa_code, f.id
    )
}

#[derive(Deserialize)]
pub(super) struct Download {
    ente: String,
    id: i64,
    expires: i64,
    token: String,
}

/// `GET <path>/flusso?...`: the flow a link names, as its FR XML, while the link is valid.
pub(super) async fn download(State(ws): State<Ws>, Query(q): Query<Download>) -> Response {
    let refused = |status: StatusCode, why: &str| (status, format!("{why}\n")).into_response();
    let plan = ws.api.plan();
    let what = format!("mypivot-flusso|{}|{}", q.id, q.expires);
    let entity = match super::link_entity(&plan, &q.ente, &what, q.expires, &q.token) {
        Ok(e) => e,
        Err(refused) => return refused.answer("paaSILChiediFlussoSPC"),
    };
    let (store, ipa, id) = (ws.api.store.clone(), entity.ipa_code.clone(), q.id);
    let built = tokio::task::spawn_blocking(move || {
        let flow = store
            .report(id)
            .ok()
            .flatten()
            .filter(|f| f.entity == ipa)?;
        let report = crate::stored_report::rebuild(store.as_ref(), &flow).ok()?;
        Some((flow.iuf.clone(), report.to_xml()))
    })
    .await
    .ok()
    .flatten();
    match built {
        Some((iuf, xml)) => {
            let name: String = iuf
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                .collect();
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/xml".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{name}.xml\""),
                    ),
                ],
                xml,
            )
                .into_response()
        }
        None => refused(StatusCode::NOT_FOUND, "no such flow"),
    }
}
