//! Import flows through MyPay's services: `paaSILAutorizzaImportFlusso` hands out an upload
//! link, the ERP posts its zip there (multipart, as to MyPay's `uploadFlusso`), the hub imports
//! it with the same importer as a dropped flow, and `paaSILChiediStatoImportFlusso` tells the
//! state (MyPay's `LOAD_IMPORT`, `IMPORT_IN_ELAB`, `IMPORT_ESEGUITO`, `IMPORT_ABORTITO`) with
//! signed links to the outcome files.
//!
//! The upload is durable (written and synced, its request recorded) before it is acknowledged;
//! a hub that stops mid-import takes the flow up again when it starts (the importer knows a flow
//! it has seen). The state lives in the store; the file and its outcome files stay in the data
//! directory of the hub that received the upload (docs/MYPAY.md).

use super::{codes, refuse, sign, unavailable, Answered, Refusal, Ws};
use crate::plan::{EntityRuntime, PipelineKind, Plan};
use axum::extract::{Multipart, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use snodo_adapters::mypay_ws::{Answer, Call, Operation};
use snodo_store::{NewWsRequest, Store, WsRequest};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// An upload link works for an hour (MyPay's `authorizationToken`).
const UPLOAD_LIFETIME: i64 = 3600;
/// A link to an outcome file works for two hours.
const FILE_LIFETIME: i64 = 2 * 3600;
const KIND: &str = "import";

pub(super) const LOAD: &str = "LOAD_IMPORT";
const RUNNING: &str = "IMPORT_IN_ELAB";
const DONE: &str = "IMPORT_ESEGUITO";
const ABORTED: &str = "IMPORT_ABORTITO";

/// A request token: unique enough for one entity's bookings, never a secret (the calls that use
/// it carry the password).
pub(super) fn new_token() -> String {
    use sha2::Digest;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let material = format!(
        "{:?}|{}|{n}|{}",
        std::time::SystemTime::now(),
        std::process::id(),
        crate::events::correlation_id()
    );
    let h = hex::encode(sha2::Sha256::digest(material.as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Where an upload and its outcome files live.
pub(super) fn dir(plan: &Plan, entity: &str, token: &str) -> PathBuf {
    plan.config
        .hub
        .data_dir
        .join(entity)
        .join("mypay-ws")
        .join(token)
}

/// `paaSILAutorizzaImportFlusso`: where to upload and the token that lets the upload in.
pub(super) async fn autorizza(ws: &Ws, entity: &Arc<EntityRuntime>) -> Answered {
    let token = new_token();
    let expires = chrono::Utc::now().timestamp() + UPLOAD_LIFETIME;
    let proof = sign(entity, &format!("upload|{token}|{expires}"))
        .ok_or_else(|| refuse(codes::SYSTEM_ERROR, "PAA SYSTEM ERROR"))?;
    let mut a = Answer::new(Operation::AutorizzaImportFlusso);
    a.text("uploadUrl", &format!("{}{}/upload", ws.public_url, ws.path));
    a.text(
        "authorizationToken",
        &format!("{}.{token}.{expires}.{proof}", entity.ipa_code),
    );
    a.text("requestToken", &token);
    a.text("importPath", "/IMPORT");
    Ok(a.finish())
}

/// The entity and request an authorization token names, when it is genuine and in time.
fn check_token(plan: &Plan, given: &str) -> Result<(Arc<EntityRuntime>, String), String> {
    let bad = || "authorizationToken non valido".to_string();
    let mut parts = given.trim().rsplitn(3, '.');
    let (Some(proof), Some(expires), Some(rest)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (ipa, token) = rest.rsplit_once('.').ok_or_else(bad)?;
    let entity = plan.entities.get(ipa).ok_or_else(bad)?;
    let expected = sign(entity, &format!("upload|{token}|{expires}")).ok_or_else(bad)?;
    if !crate::listen::same_secret(&expected, proof) {
        return Err(bad());
    }
    let expires: i64 = expires.parse().map_err(|_| bad())?;
    if expires < chrono::Utc::now().timestamp() {
        return Err("authorizationToken scaduto: chiedere paaSILAutorizzaImportFlusso".into());
    }
    Ok((entity.clone(), token.to_string()))
}

/// MyPay's upload answer: always HTTP 200, a list with the file or with the error.
fn upload_answer(value: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn upload_error(code: &str, why: &str) -> Response {
    upload_answer(json!([{ "codice": code, "descrizione": why }]))
}

#[derive(Deserialize)]
pub(super) struct UploadQuery {
    #[serde(rename = "authorizationToken")]
    authorization_token: Option<String>,
}

/// `POST <path>/upload`: the zip and its `authorizationToken` (form field or query), one file.
pub(super) async fn upload(
    State(ws): State<Ws>,
    Query(q): Query<UploadQuery>,
    peer: Option<axum::extract::Extension<crate::listen::Peer>>,
    mut form: Multipart,
) -> Response {
    let peer = peer.map(|p| p.addr.ip().to_canonical());
    if let Some(wait) = peer.and_then(|ip| ws.api.failures.check(ip)) {
        return upload_error(
            "400",
            &format!("troppe autenticazioni fallite: riprovare tra {wait} s"),
        );
    }
    let plan = ws.api.plan();
    let mut token = q.authorization_token;
    let mut file: Option<(String, Vec<u8>)> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return upload_error("400", &format!("richiesta non valida: {e}")),
        };
        match field.file_name().map(str::to_string) {
            None => {
                if field.name() == Some("authorizationToken") {
                    match field.text().await {
                        Ok(t) => token = Some(t),
                        Err(e) => {
                            return upload_error("400", &format!("richiesta non valida: {e}"))
                        }
                    }
                }
            }
            Some(name) => {
                if file.is_some() {
                    return upload_error("400", "la richiesta deve contenere un solo file");
                }
                match field.bytes().await {
                    Ok(b) => file = Some((name, b.to_vec())),
                    Err(e) => return upload_error("400", &format!("file non ricevuto: {e}")),
                }
            }
        }
    }
    let (entity, request) = match check_token(&plan, token.as_deref().unwrap_or_default()) {
        Ok(x) => x,
        Err(why) => {
            if let Some(ip) = peer {
                ws.api.failures.failed(ip);
            }
            return upload_error("400", &why);
        }
    };
    let Some((name, bytes)) = file.filter(|(_, b)| !b.is_empty()) else {
        return upload_error("400", "la richiesta deve contenere un file non vuoto");
    };
    let name = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .to_string();
    let safe = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !safe || !name.to_ascii_lowercase().ends_with(".zip") || name.starts_with('.') {
        return upload_error("400", &format!("nome file [{name}] non valido: un .zip"));
    }
    if !name.starts_with(&entity.ipa_code) {
        return upload_error(
            "400",
            &format!(
                "il nome file [{name}] deve iniziare con il codice IPA [{}]",
                entity.ipa_code
            ),
        );
    }
    let size = bytes.len();
    // Each upload in a folder of its own: a second upload with the same token never touches
    // the first's file.
    let slot = new_token()[..8].to_string();
    let folder = dir(&plan, &entity.ipa_code, &request).join(&slot);
    let path = folder.join(&name);
    let (store, ipa, req, name2) = (
        ws.api.store.clone(),
        entity.ipa_code.clone(),
        request.clone(),
        name.clone(),
    );
    let saved = tokio::task::spawn_blocking(move || -> Result<bool, String> {
        std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
        let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        f.write_all(&bytes).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        let params = json!({ "file": name2, "slot": slot }).to_string();
        let created = store
            .create_ws_request(&NewWsRequest {
                entity: &ipa,
                token: &req,
                kind: KIND,
                state: LOAD,
                params: &params,
            })
            .map_err(|e| e.to_string())?;
        if !created {
            let _ = std::fs::remove_dir_all(&folder);
        }
        Ok(created)
    })
    .await;
    match saved {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            return upload_error("400", &format!("requestToken [{request}] già utilizzato"))
        }
        other => {
            tracing::error!("mypay-ws: cannot keep an upload: {}", e_text(&other));
            return upload_error("500", "il file non può essere salvato; riprovare");
        }
    }
    tracing::info!(entity = %entity.ipa_code, request = %request, file = %name, size, "mypay-ws: import flow uploaded");
    start_import(ws.api.store.clone(), plan, entity, request);
    upload_answer(json!([{ "fileName": name, "fileSize": size, "fileType": "application/zip" }]))
}

fn e_text(r: &Result<Result<bool, String>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Err(e)) => e.clone(),
        Err(e) => e.to_string(),
        Ok(Ok(_)) => String::new(),
    }
}

/// The import format, encoding and notices of the entity's import pipeline (MyPay's format in
/// UTF-8 when it has none).
fn import_settings(
    plan: &Plan,
    entity: &str,
) -> (
    &'static dyn snodo_adapters::flow_format::FlowFormat,
    snodo_adapters::text_encoding::Encoding,
    bool,
) {
    for p in plan.pipelines.iter().filter(|p| p.entity == entity) {
        if let PipelineKind::ImportFlows {
            format,
            encoding,
            notices,
            ..
        } = &p.kind
        {
            return (*format, *encoding, *notices);
        }
    }
    (
        &snodo_adapters::mypay_import::MyPayImport,
        Default::default(),
        true,
    )
}

/// Imports an uploaded flow in the background, moving its request through MyPay's states.
pub(super) fn start_import(
    store: Arc<dyn Store>,
    plan: Arc<Plan>,
    entity: Arc<EntityRuntime>,
    request: String,
) {
    tokio::task::spawn_blocking(move || {
        let ipa = entity.ipa_code.as_str();
        let set = |state: &str, code: Option<&str>, outcome: Option<&str>| {
            if let Err(e) = store.update_ws_request(ipa, &request, state, code, outcome) {
                tracing::warn!(entity = ipa, request = %request, "mypay-ws: cannot record the import's state: {e}");
            }
        };
        let Some(r) = store.ws_request(ipa, &request).ok().flatten() else {
            return;
        };
        let (folder, file) = upload_of(&plan, &r);
        let path = folder.join(&file);
        if file.is_empty() || !path.is_file() {
            set(ABORTED, Some("PAA_IMPORT_NO_FILE_AUTH"), None);
            return;
        }
        set(RUNNING, None, None);
        let (format, encoding, notices) = import_settings(&plan, ipa);
        let done = crate::ops::import::one_file_in(
            store.as_ref(),
            &plan,
            ipa,
            format,
            encoding,
            Some(folder.clone()),
            notices,
            &path,
            &|_| {},
        );
        match done {
            Ok(crate::ops::import::Imported::Done {
                counts, written, ..
            }) => {
                let files: Vec<String> = written
                    .iter()
                    .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
                    .collect();
                let outcome = json!({
                    "rows": counts.rows,
                    "accepted": counts.accepted,
                    "rejected": counts.rejected,
                    "files": files,
                })
                .to_string();
                set(DONE, None, Some(&outcome));
            }
            Ok(crate::ops::import::Imported::Aborted { code, message, .. }) => {
                let outcome = json!({ "message": message }).to_string();
                set(ABORTED, Some(&code), Some(&outcome));
            }
            Err(crate::ops::OpsError::Interrupted) => {}
            Err(e) => {
                tracing::error!(entity = ipa, request = %request, "mypay-ws: import failed: {e}");
                let outcome = json!({ "message": e.to_string() }).to_string();
                set(
                    ABORTED,
                    Some("PAA_IMPORT_FLUSSO_ERRORE_GENERICO"),
                    Some(&outcome),
                );
            }
        }
    });
}

/// The folder of a request's upload and the file's name.
fn upload_of(plan: &Plan, r: &WsRequest) -> (PathBuf, String) {
    let params: serde_json::Value = serde_json::from_str(&r.params).unwrap_or_default();
    let text = |k: &str| params[k].as_str().unwrap_or_default().to_string();
    (
        dir(plan, &r.entity, &r.token).join(text("slot")),
        text("file"),
    )
}

/// Takes up the uploads a hub left before their import finished (this hub's, whose files are
/// here).
pub(super) fn resume(store: Arc<dyn Store>, plan: Arc<Plan>) {
    tokio::spawn(async move {
        let s = store.clone();
        let pending =
            tokio::task::spawn_blocking(move || s.ws_requests_in(KIND, &[LOAD, RUNNING], 10_000))
                .await;
        let Ok(Ok(pending)) = pending else {
            return;
        };
        for r in pending {
            let Some(entity) = plan.entities.get(&r.entity) else {
                continue;
            };
            if dir(&plan, &r.entity, &r.token).is_dir() {
                tracing::info!(entity = %r.entity, request = %r.token, "mypay-ws: taking up an import left unfinished");
                start_import(store.clone(), plan.clone(), entity.clone(), r.token.clone());
            }
        }
    });
}

/// The outcome files of a finished import, by MyPay's kind.
fn outcome_files(r: &WsRequest) -> (u64, u64, Vec<String>) {
    let o: serde_json::Value = r
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or_default();
    let files = o["files"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (
        o["accepted"].as_u64().unwrap_or(0),
        o["rejected"].as_u64().unwrap_or(0),
        files,
    )
}

pub(super) fn file_link(ws: &Ws, entity: &EntityRuntime, request: &str, name: &str) -> String {
    let expires = chrono::Utc::now().timestamp() + FILE_LIFETIME;
    let proof = sign(entity, &format!("file|{request}|{name}|{expires}")).unwrap_or_default();
    format!(
        "{}{}/file?ente={}&req={request}&name={name}&expires={expires}&token={proof}",
        ws.public_url, ws.path, entity.ipa_code
    )
}

/// `paaSILChiediStatoImportFlusso`: the request's state (or its error code) and, once imported,
/// the links to the files asked for.
pub(super) async fn stato(ws: &Ws, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let token = call
        .field("requestToken")
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    let ipa = entity.ipa_code.clone();
    let (store, ipa2, token2) = (ws.api.store.clone(), ipa.clone(), token.clone());
    let found = super::blocking(move || store.ws_request(&ipa2, &token2))
        .await
        .map_err(unavailable)?
        .filter(|r| r.kind == KIND);
    let Some(r) = found else {
        return Err(not_found(&ipa, &token));
    };
    let flag = |name: &str| call.flag(name).ok().flatten().unwrap_or(false);
    let mut a = Answer::new(Operation::ChiediStatoImportFlusso);
    a.text("stato", r.error_code.as_deref().unwrap_or(&r.state));
    if r.state == DONE {
        let (accepted, rejected, files) = outcome_files(&r);
        let pick = |suffix: &str| files.iter().find(|f| f.ends_with(suffix));
        if flag("fileScarti") && rejected > 0 {
            if let Some(f) = pick("_SCARTI.zip") {
                a.text("urlFileScarti", &file_link(ws, entity, &token, f));
            }
        }
        if flag("fileIUV") && accepted > 0 {
            if let Some(f) = pick("_IUV.zip") {
                a.text("urlFileIUV", &file_link(ws, entity, &token, f));
            }
        }
        if flag("fileAvvisi") {
            if let Some(f) = pick("_AVVISI_PDF.zip") {
                a.text("urlFileAvvisi", &file_link(ws, entity, &token, f));
            }
        }
    }
    Ok(a.finish())
}

fn not_found(ipa: &str, token: &str) -> Refusal {
    refuse(
        "PAA_REQUEST_TOKEN_NON_VALIDO",
        format!("nessun record trovato per Ente [{ipa}] e requestToken [{token}]"),
    )
}

#[derive(Deserialize)]
pub(super) struct FileQuery {
    ente: String,
    req: String,
    name: String,
    expires: i64,
    token: String,
}

/// `GET <path>/file?...`: an outcome file a link names, while the link is valid.
pub(super) async fn file(State(ws): State<Ws>, Query(q): Query<FileQuery>) -> Response {
    let refused = |status: StatusCode, why: &str| (status, format!("{why}\n")).into_response();
    let plan = ws.api.plan();
    let what = format!("file|{}|{}|{}", q.req, q.name, q.expires);
    let entity = match super::link_entity(&plan, &q.ente, &what, q.expires, &q.token) {
        Ok(e) => e,
        Err(refused) => return refused.answer("paaSILChiediStatoImportFlusso"),
    };
    // Only a file the import wrote, by its recorded name: the link names nothing else.
    let (store, ipa, req) = (ws.api.store.clone(), entity.ipa_code.clone(), q.req.clone());
    let request = tokio::task::spawn_blocking(move || store.ws_request(&ipa, &req))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let Some(r) = request else {
        return refused(StatusCode::NOT_FOUND, "no such file");
    };
    if !outcome_files(&r).2.contains(&q.name) {
        return refused(StatusCode::NOT_FOUND, "no such file");
    }
    let path: PathBuf = upload_of(&plan, &r).0.join(&q.name);
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/zip".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", q.name),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => refused(
            StatusCode::NOT_FOUND,
            "the file is kept by the hub that received the upload",
        ),
    }
}
