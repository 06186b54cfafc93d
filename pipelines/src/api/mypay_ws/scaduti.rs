//! MyPay's export of expired positions booked through its services:
//! `paaSILPrenotaExportFlussoScaduti` (the unpaid positions of the named debt types due on one
//! day) and `paaSILChiediStatoExportFlussoScaduti` (state, file name, path and a signed link).
//! The file is the one `from = "expired"` pipelines write (`adapters::mypay_expired`), named
//! `EXP_SCADUTI_<token>` as MyPay names it.
//!
//! As MyPay (`ExportFlussoScadutiTaskService`): the positions are the open ones *due on*
//! `dataScadenza`, whatever the debt type's expiry; where MyPay silently drops debt types without
//! a mandatory due date, the hub keeps them (their dated positions are as expired).

use super::flows::file_link;
use super::{refuse, unavailable, Answered, Refusal, Ws};
use crate::plan::{EntityRuntime, Plan};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use snodo_adapters::mypay_expired::{ExpiredRow, ExpiredWriter, IUF_PREFIX};
use snodo_adapters::mypay_import::ZipEntryWriter;
use snodo_adapters::mypay_ws::{Answer, Call, Operation};
use snodo_core::payment::PositionStatus;
use snodo_store::{PositionFilter, Store};
use std::io::{BufWriter, Write as _};
use std::sync::Arc;

const KIND: &str = "export-scaduti";
/// MyPay's export state of a written file; the others are set by `exports::book` and
/// `exports::in_background`.
const DONE: &str = "EXPORT_ESEGUITO";
/// MyPay's folder of these exports (`task.exportFlussoScaduti.export.folder.name`).
const FOLDER: &str = "EXPORT_DOVUTI_SCADUTI";
const PAGE: u32 = 1000;

#[derive(serde::Serialize, serde::Deserialize)]
struct Booking {
    day: NaiveDate,
    debt_types: Vec<String>,
}

/// `paaSILPrenotaExportFlussoScaduti`.
pub(super) async fn prenota(ws: &Ws, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let day = call
        .field("dataScadenza")
        .map(str::trim)
        .and_then(|v| NaiveDate::parse_from_str(v.get(..10)?, "%Y-%m-%d").ok())
        .ok_or_else(|| refuse("PAA_DATE_FROM_NON_VALIDO", "Data inizio non valida"))?;
    let debt_types: Vec<String> = call
        .field("tipiDovuto")
        .unwrap_or_default()
        .split(';')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if debt_types.is_empty() {
        return Err(refuse(
            "PAA_IDENTIFICATIVO_TIPO_DOVUTO_NON_INSERITO",
            "identificativoTipoDovuto non valido",
        ));
    }
    if let Some(t) = debt_types
        .iter()
        .find(|t| !entity.rules.debt_types.contains_key(*t))
    {
        return Err(refuse(
            "PAA_IDENTIFICATIVO_TIPO_DOVUTO_NON_VALIDO",
            format!("identificativoTipoDovuto [{t}] non valido"),
        ));
    }
    let token = super::exports::book(ws, entity, KIND, &Booking { day, debt_types }).await?;
    start(
        ws.api.store.clone(),
        ws.api.plan(),
        entity.clone(),
        token.clone(),
    );
    let mut a = Answer::new(call.op);
    a.text("requestToken", &token);
    Ok(a.finish())
}

/// Writes a booking in the background; its state says how it went.
fn start(store: Arc<dyn Store>, plan: Arc<Plan>, entity: Arc<EntityRuntime>, token: String) {
    super::exports::in_background(store, entity, token, move |store, entity, token| {
        Ok(write(store, &plan, entity, token)?
            .map(|(name, rows, month)| json!({ "files": [name], "rows": rows, "month": month })))
    });
}

/// The file of a booking: (name, rows, `yyyy-MM` of the day), `None` when no position is due then.
fn write(
    store: &dyn Store,
    plan: &Plan,
    entity: &EntityRuntime,
    token: &str,
) -> Result<Option<(String, u64, String)>, String> {
    let r = store
        .ws_request(&entity.ipa_code, token)
        .map_err(|e| e.to_string())?
        .ok_or("the booking vanished")?;
    let b: Booking = serde_json::from_str(&r.params).map_err(|e| e.to_string())?;
    let now = Utc::now()
        .with_timezone(&chrono_tz::Europe::Rome)
        .naive_local();
    let stem = format!("{IUF_PREFIX}{token}");
    let folder = super::flows::dir(plan, &entity.ipa_code, token);
    std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
    let name = format!("{stem}.zip");
    let path = folder.join(&name);
    let file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let entry = ZipEntryWriter::new(BufWriter::new(file), &format!("{stem}.csv"), now)
        .map_err(|e| e.to_string())?;
    let mut writer = ExpiredWriter::new(entry).map_err(|e| e.to_string())?;
    for debt_type in &b.debt_types {
        let filter = PositionFilter {
            debt_type: Some(debt_type),
            due_from: Some(b.day),
            due_to: Some(b.day),
            ..Default::default()
        };
        let mut after = 0;
        loop {
            let page = store
                .list_positions(&entity.ipa_code, &filter, after, PAGE)
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.id;
            for p in &page {
                // Still owed: MyPay's dovuti table holds neither paid nor annulled ones.
                if !matches!(p.status, PositionStatus::Active | PositionStatus::Expired) {
                    continue;
                }
                let created = DateTime::parse_from_rfc3339(&p.created_at)
                    .map(|t| snodo_core::time::rome_date(t.with_timezone(&Utc)))
                    .unwrap_or_else(|_| now.date());
                let row = ExpiredRow {
                    dovuto: &p.dovuto,
                    iuv: p.iuv.as_deref().unwrap_or_default(),
                    created,
                };
                if let Err(e) = writer.push(&row) {
                    tracing::warn!(entity = %entity.ipa_code, iud = %p.iud, "mypay-ws: position left out of the expired export: {e}");
                }
            }
        }
    }
    let rows = writer.rows();
    let mut out = writer
        .finish()
        .and_then(|entry| entry.finish())
        .map_err(|e| e.to_string())?
        .into_inner()
        .map_err(|e| e.into_error().to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    out.sync_all().map_err(|e| e.to_string())?;
    if rows == 0 {
        let _ = std::fs::remove_file(&path);
        return Ok(None);
    }
    Ok(Some((name, rows, b.day.format("%Y-%m").to_string())))
}

/// `paaSILChiediStatoExportFlussoScaduti`: state; once written, the file's name, MyPay's path
/// (`/EXPORT_DOVUTI_SCADUTI/<yyyy-MM>/<name>`) and a signed link.
pub(super) async fn stato(ws: &Ws, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let token = call
        .field("requestToken")
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    let (store, ipa, token2) = (ws.api.store.clone(), entity.ipa_code.clone(), token.clone());
    let found = super::blocking(move || store.ws_request(&ipa, &token2))
        .await
        .map_err(unavailable)?
        .filter(|r| r.kind == KIND);
    let Some(r) = found else {
        return Err(not_found(&entity.ipa_code, &token));
    };
    let outcome: serde_json::Value = r
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or_default();
    let mut a = Answer::new(Operation::ChiediStatoExportFlussoScaduti);
    a.text("stato", &r.state);
    match outcome["files"][0].as_str().filter(|_| r.state == DONE) {
        Some(name) => {
            let month = outcome["month"].as_str().unwrap_or_default();
            a.text("nomeFile", name);
            a.text("downloadUrl", &file_link(ws, entity, &token, name));
            a.text("pathFile", &format!("/{FOLDER}/{month}/{name}"));
        }
        None => {
            for name in ["nomeFile", "downloadUrl", "pathFile"] {
                a.text(name, "");
            }
        }
    }
    Ok(a.finish())
}

fn not_found(ipa: &str, token: &str) -> Refusal {
    refuse(
        "PAA_REQUEST_TOKEN_NON_VALIDO",
        format!("requestToken [{token}] non valido per ente [{ipa}] "),
    )
}
