//! Receipt exports booked through MyPay's services: `paaSILPrenotaExportFlusso` (paid between
//! two days) and `…IncrementaleConRicevuta` (received between two instants, for pollers), then
//! `paaSILChiediStatoExportFlusso` with a signed link to the file. The file is MyPay's
//! `ESTRAZIONE_DOVUTI` written by the same writer as the nightly export pipeline
//! (`adapters::mypay_export`), of the entity's own receipts.

use super::flows::{file_link, new_token};
use super::{codes, refuse, unavailable, Answered, Refusal, Ws};
use crate::plan::{EntityRuntime, Plan};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use snodo_adapters::mypay_export::{self, ExportReceipt, ExportVersion, ExportWriter};
use snodo_adapters::mypay_import::ZipEntryWriter;
use snodo_adapters::mypay_ws::{Answer, Call, Operation};
use snodo_store::{NewWsRequest, Store};
use std::io::{BufWriter, Write as _};
use std::sync::Arc;

const KIND: &str = "export";
const LOAD: &str = "LOAD_EXPORT";
const RUNNING: &str = "EXPORT_IN_ELAB";
const DONE: &str = "EXPORT_ESEGUITO";
const NOTHING: &str = "EXPORT_ESEGUITO_NESSUN_DOVUTO_TROVATO";
const FAILED: &str = "ERROR_EXPORT";
/// Receipts read per page.
const PAGE: u32 = 1000;

/// What was booked, as kept with the request.
#[derive(serde::Serialize, serde::Deserialize)]
struct Booking {
    /// Inclusive, UTC.
    from: DateTime<Utc>,
    /// Exclusive, UTC.
    to: DateTime<Utc>,
    debt_type: Option<String>,
    version: String,
    /// MyPay's `flgRicevuta`: the RT columns (`rt` the receipt as the node sent it…), asked by
    /// `ricevuta` of the incremental booking; never by `paaSILPrenotaExportFlusso`, as MyPay.
    #[serde(default)]
    receipt: bool,
}

fn field<'a>(call: &'a Call, name: &str) -> Option<&'a str> {
    call.field(name).map(str::trim).filter(|v| !v.is_empty())
}

/// `paaSILPrenotaExportFlusso` and `paaSILPrenotaExportFlussoIncrementaleConRicevuta`.
pub(super) async fn prenota(ws: &Ws, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let incremental = call.op == Operation::PrenotaExportFlussoIncrementaleConRicevuta;
    let bad_from = || refuse("PAA_DATE_FROM_NON_VALIDO", "Data inizio non valida");
    let bad_to = || refuse("PAA_DATE_TO_NON_VALIDO", "Data fine non valida");
    let now = Utc::now();
    let (from, to) = if incremental {
        let from = field(call, "dateFrom")
            .and_then(super::parse_instant)
            .ok_or_else(bad_from)?;
        let to = match field(call, "dateTo") {
            Some(v) => super::parse_instant(v).ok_or_else(bad_to)?,
            None => now,
        };
        (from, to)
    } else {
        let day = |v: Option<&str>| {
            v.and_then(|v| NaiveDate::parse_from_str(v.get(..10)?, "%Y-%m-%d").ok())
        };
        let from = day(field(call, "dateFrom")).ok_or_else(bad_from)?;
        let to = day(field(call, "dateTo")).ok_or_else(bad_to)?;
        // Whole days in Rome, the last one included.
        let start = |d: NaiveDate| super::parse_instant(&d.to_string());
        (
            start(from).ok_or_else(bad_from)?,
            start(to.succ_opt().unwrap_or(to)).ok_or_else(bad_to)?,
        )
    };
    if to < from {
        return Err(refuse(
            codes::INTERVALLO_DATE_NON_VALIDO,
            "L'intervallo data inizio e data fine non è valido",
        ));
    }
    let receipt = incremental
        && call
            .flag("ricevuta")
            .map_err(|e| refuse(codes::XML_NON_VALIDO, e.to_string()))?
            .unwrap_or(false);
    let debt_type = field(call, "identificativoTipoDovuto").map(str::to_string);
    if let Some(t) = &debt_type {
        if t != mypay_export::SECONDARY_DEBT_TYPE && !entity.rules.debt_types.contains_key(t) {
            return Err(refuse(
                "PAA_IDENTIFICATIVO_TIPO_DOVUTO_NON_VALIDO",
                format!("identificativoTipoDovuto [{t}] non valido"),
            ));
        }
    }
    let version = field(call, "versioneTracciato").unwrap_or("1.0");
    let version = ExportVersion::parse(version)
        .map_err(|_| {
            refuse(
                "PAA_VERSIONE_TRACCIATO_NON_VALIDA",
                format!(
                    "Versione tracciato non valida per ente [{}]",
                    entity.ipa_code
                ),
            )
        })?
        .as_str()
        .to_string();
    let booking = Booking {
        from,
        to,
        debt_type,
        version,
        receipt,
    };
    let token = book(ws, entity, KIND, &booking).await?;
    start(
        ws.api.store.clone(),
        ws.api.plan(),
        entity.clone(),
        token.clone(),
    );
    let mut a = Answer::new(call.op);
    a.text("requestToken", &token);
    if incremental {
        a.text(
            "dateTo",
            &to.with_timezone(&chrono_tz::Europe::Rome)
                .format("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
        );
    }
    Ok(a.finish())
}

/// Records a booking of `kind` with its parameters, durable before its token is answered;
/// answers the token.
pub(super) async fn book(
    ws: &Ws,
    entity: &EntityRuntime,
    kind: &'static str,
    booking: &impl serde::Serialize,
) -> Result<String, Refusal> {
    let params =
        serde_json::to_string(booking).map_err(|e| refuse(codes::SYSTEM_ERROR, e.to_string()))?;
    let token = new_token();
    let (store, ipa, token2) = (ws.api.store.clone(), entity.ipa_code.clone(), token.clone());
    super::blocking(move || {
        store.create_ws_request(&NewWsRequest {
            entity: &ipa,
            token: &token2,
            kind,
            state: LOAD,
            params: &params,
        })
    })
    .await
    .map_err(unavailable)?;
    Ok(token)
}

/// Writes a booked export in the background.
fn start(store: Arc<dyn Store>, plan: Arc<Plan>, entity: Arc<EntityRuntime>, token: String) {
    in_background(store, entity, token, move |store, entity, token| {
        Ok(write(store, &plan, entity, token)?.map(|name| json!({ "files": [name] })))
    });
}

/// Runs a booking's `work` on a blocking thread, its state recorded as MyPay's export states:
/// running, then done with `work`'s outcome (`{"files": [...], ...}`), nothing found (`None`),
/// or failed with the message.
pub(super) fn in_background(
    store: Arc<dyn Store>,
    entity: Arc<EntityRuntime>,
    token: String,
    work: impl FnOnce(&dyn Store, &EntityRuntime, &str) -> Result<Option<serde_json::Value>, String>
        + Send
        + 'static,
) {
    tokio::task::spawn_blocking(move || {
        let ipa = entity.ipa_code.clone();
        let set = |state: &str, outcome: Option<&str>| {
            if let Err(e) = store.update_ws_request(&ipa, &token, state, None, outcome) {
                tracing::warn!(entity = %ipa, request = %token, "mypay-ws: cannot record the export's state: {e}");
            }
        };
        set(RUNNING, None);
        match work(store.as_ref(), &entity, &token) {
            Ok(Some(outcome)) => set(DONE, Some(&outcome.to_string())),
            Ok(None) => set(NOTHING, Some(&json!({ "files": [] }).to_string())),
            Err(e) => {
                tracing::error!(entity = %ipa, request = %token, "mypay-ws: export failed: {e}");
                set(FAILED, Some(&json!({ "message": e }).to_string()));
            }
        }
    });
}

/// The export file of a booking, `None` when no receipt falls in it.
fn write(
    store: &dyn Store,
    plan: &Plan,
    entity: &EntityRuntime,
    token: &str,
) -> Result<Option<String>, String> {
    let r = store
        .ws_request(&entity.ipa_code, token)
        .map_err(|e| e.to_string())?
        .ok_or("the booking vanished")?;
    let b: Booking = serde_json::from_str(&r.params).map_err(|e| e.to_string())?;
    let version = ExportVersion::parse(&b.version).map_err(|e| e.to_string())?;
    let now = Utc::now()
        .with_timezone(&chrono_tz::Europe::Rome)
        .naive_local();
    let stem = mypay_export::file_stem(version, &entity.ipa_code, &token[..8], now);
    let folder = super::flows::dir(plan, &entity.ipa_code, token);
    std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
    let name = format!("{stem}.zip");
    let path = folder.join(&name);
    let file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let entry = ZipEntryWriter::new(BufWriter::new(file), &format!("{stem}.csv"), now)
        .map_err(|e| e.to_string())?;
    let mut writer =
        ExportWriter::with_receipt_columns(version, b.receipt, entry).map_err(|e| e.to_string())?;
    let mut after = 0;
    loop {
        let page = store
            .receipts_after(&entity.ipa_code, after, PAGE)
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.receipt.id;
        for doc in &page {
            let at = DateTime::parse_from_rfc3339(&doc.receipt.received_at)
                .map(|t| t.with_timezone(&Utc))
                .ok();
            if !at.is_some_and(|t| t >= b.from && t < b.to) {
                continue;
            }
            if b.debt_type.is_some() && b.debt_type != doc.debt_type {
                continue;
            }
            let request = crate::deliver::decoded(doc).ok();
            let pushed = writer.push_parsed(
                &ExportReceipt {
                    entity_ipa: &entity.ipa_code,
                    entity_fiscal_code: entity.fiscal_code.as_str(),
                    entity_name: &entity.name,
                    iud: doc.iud.as_deref(),
                    debt_type: doc.debt_type.as_deref(),
                    iuf: doc.flow_iuf.as_deref(),
                    received_at: &doc.receipt.received_at,
                    raw_request: &doc.xml,
                    secondary: false,
                },
                request.as_ref(),
            );
            if let Err(e) = pushed {
                tracing::warn!(entity = %entity.ipa_code, receipt = doc.receipt.id, "mypay-ws: receipt left out of the export: {e}");
            }
        }
    }
    let rows = writer.rows();
    let mut out = writer
        .finish()
        .map_err(|e| e.to_string())?
        .finish()
        .map_err(|e| e.to_string())?
        .into_inner()
        .map_err(|e| e.into_error().to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    out.sync_all().map_err(|e| e.to_string())?;
    if rows == 0 {
        let _ = std::fs::remove_file(&path);
        return Ok(None);
    }
    Ok(Some(name))
}

/// `paaSILChiediStatoExportFlusso`: the booking's state, and the link once written.
pub(super) async fn stato(ws: &Ws, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let token = field(call, "requestToken").unwrap_or_default().to_string();
    let (store, ipa, token2) = (ws.api.store.clone(), entity.ipa_code.clone(), token.clone());
    let found = super::blocking(move || store.ws_request(&ipa, &token2))
        .await
        .map_err(unavailable)?
        .filter(|r| r.kind == KIND);
    let Some(r) = found else {
        return Err(not_found(&entity.ipa_code, &token));
    };
    let mut a = Answer::new(Operation::ChiediStatoExportFlusso);
    a.text("stato", &r.state);
    let file = r
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok())
        .and_then(|o| o["files"][0].as_str().map(str::to_string));
    match file.filter(|_| r.state == DONE) {
        Some(name) => a.text("downloadUrl", &file_link(ws, entity, &token, &name)),
        None => a.text("downloadUrl", ""),
    }
    Ok(a.finish())
}

fn not_found(ipa: &str, token: &str) -> Refusal {
    refuse(
        "PAA_REQUEST_TOKEN_NON_VALIDO",
        format!("nessun record trovato per Ente [{ipa}] e requestToken [{token}]"),
    )
}
