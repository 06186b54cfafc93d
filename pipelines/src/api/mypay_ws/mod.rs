//! MyPay's SOAP services for entity systems (docs/MYPAY.md): `pa-per-ente.wsdl`'s `paaSIL*`
//! operations on the entity API's own registry, flows, carts and store, so an ERP written for
//! MyPay moves to the hub without a change.
//!
//! Every call is authenticated as MyPay does it (the entity's IPA code, from the SOAP header or
//! the body as the WSDL puts it, and its password, kept here only as a hash), bounded like the
//! REST API (body size, failed authentications per address, a rate per entity) and scoped to
//! that entity. Errors are answered as MyPay answers them: HTTP 200, the operation's response
//! with a `fault` element (MyPay's codes and Italian texts) and `esito` `KO`. A body that names
//! no operation gets a SOAP Fault.

mod exports;
mod flows;
mod pivot;
mod registra;
mod scaduti;

use super::{blocking, carts, cut, positions, Api, Caller};
use crate::plan::{key_hash, EntityRuntime, Plan};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use snodo_adapters::mypay_ws::{
    self, base64_field, dovuti, specs, to_base64, versamento, Answer, Call, CallError, Fault,
    Operation,
};
use snodo_core::dovuto::{validate, Action, DovutoRow, FlowVersion, RejectCode, Rejection};
use snodo_core::payment::PositionStatus;
use snodo_store::{Position, PositionFilter, PositionQuery, ReceiptDocument};
use std::collections::HashMap;
use std::sync::Arc;

/// MyPay's fault codes (`faultCode` of its `faultBean`) the hub answers with.
pub mod codes {
    pub const SYSTEM_ERROR: &str = "PAA_SYSTEM_ERROR";
    /// Unknown entity, or wrong password: MyPay uses the one code for both.
    pub const ENTE_NON_VALIDO: &str = "PAA_ENTE_NON_VALIDO";
    pub const XML_NON_VALIDO: &str = "PAA_XML_NON_VALIDO";
    pub const AZIONE_NON_VALIDO: &str = "PAA_AZIONE_NON_VALIDO";
    pub const IUV_NON_VALIDO: &str = "PAA_IUV_NON_VALIDO";
    pub const IUV_SCADUTO: &str = "PAA_IUV_SCADUTO";
    pub const IUD_NON_VALIDO: &str = "PAA_IUD_NON_VALIDO";
    pub const IUD_DUPLICATO: &str = "PAA_IUD_DUPLICATO";
    pub const ID_SESSION_NON_VALIDO: &str = "PAA_ID_SESSION_NON_VALIDO";
    pub const PAGAMENTO_NON_INIZIATO: &str = "PAA_PAGAMENTO_NON_INIZIATO";
    pub const PAGAMENTO_ANNULLATO: &str = "PAA_PAGAMENTO_ANNULLATO";
    pub const PAGAMENTO_SCADUTO: &str = "PAA_PAGAMENTO_SCADUTO";
    pub const TIPO_IDENTIFICATIVO_PAGATORE_NON_VALIDO: &str =
        "PAA_TIPO_IDENTIFICATIVO_PAGATORE_NON_VALIDO";
    pub const CODICE_IDENTIFICATIVO_PAGATORE_NON_PRESENTE: &str =
        "PAA_CODICE_IDENTIFICATIVO_PAGATORE_NON_PRESENTE";
    pub const INTERVALLO_DATE_NON_VALIDO: &str = "PAA_INTERVALLO_DATE_NON_VALIDO";
    pub const DATE_FROM_NON_VALIDO: &str = "PAA_DATE_FROM_NON_VALIDO";
    pub const DATE_TO_NON_VALIDO: &str = "PAA_DATE_TO_NON_VALIDO";
    /// An operation of MyPay's WSDL the hub does not offer (MyPay's own constant).
    pub const SERVIZIO_NON_IMPLEMENTATO: &str = "PAA_SERVIZIO_NON_IMPLEMENTATO";
}

/// The documents served on GET, with their addresses set, built once.
pub(crate) struct Documents {
    wsdl: String,
    pivot_wsdl: String,
    xsd: String,
}

impl Documents {
    pub(crate) fn new(public_url: &str, path: &str) -> Self {
        let endpoint = format!("{}{path}", public_url.trim_end_matches('/'));
        let xsd_url = format!("{endpoint}?xsd={}", specs::XSD_NAME);
        let address = |wsdl: &str| {
            wsdl.replace(
                "<soap:address location=\"/ws/pa/\"/>",
                &format!("<soap:address location=\"{endpoint}\"/>"),
            )
        };
        // As served, the schemas compile in strict processors too (SOURCES.md): the `ppt` schema
        // imports the `ppthead` namespace it uses, and the XSD's patterns lose the `\/` escape
        // that XSD regular expressions do not have (Java reads it as `/`).
        let wsdl = address(specs::WSDL)
            .replace(
                &format!("schemaLocation=\"{}\"", specs::XSD_NAME),
                &format!("schemaLocation=\"{xsd_url}\""),
            )
            .replace(
                "<xsd:import namespace=\"http://www.regione.veneto.it/schemas/2012/Pagamenti/Ente/\"",
                "<xsd:import namespace=\"http://www.regione.veneto.it/pagamenti/ente/ppthead\"/>\n\t\t\t<xsd:import namespace=\"http://www.regione.veneto.it/schemas/2012/Pagamenti/Ente/\"",
            );
        Self {
            wsdl,
            pivot_wsdl: address(specs::PIVOT_WSDL),
            xsd: specs::XSD.replace(r"\/", "/"),
        }
    }
}

#[derive(Clone)]
struct Ws {
    api: Arc<Api>,
    docs: Arc<Documents>,
    /// The hub's public URL: where a payer comes back to when the caller gives no return URL,
    /// and where download links point.
    public_url: Arc<str>,
    /// Where the services are served.
    path: Arc<str>,
}

/// The routes: the WSDLs and XSD on GET, the calls on POST, at `path` and, as MyPay serves
/// every operation under `/ws/pa/`, at MyPay's own address too when `path` is under it.
pub(crate) fn routes(api: Arc<Api>, path: &str, public_url: &str) -> Router {
    let ws = Ws {
        api,
        docs: Arc::new(Documents::new(public_url, path)),
        public_url: Arc::from(public_url.trim_end_matches('/')),
        path: Arc::from(path.trim_end_matches('/')),
    };
    let base = path.trim_end_matches('/');
    let max_flow = usize::try_from(ws.api.plan().config.hub.max_flow_bytes).unwrap_or(usize::MAX);
    let mut r = Router::new()
        .route(path, get(documents).post(call))
        .route(&format!("{base}/flusso"), get(pivot::download))
        .route(&format!("{base}/file"), get(flows::file))
        .route(
            &format!("{base}/upload"),
            post(flows::upload).layer(axum::extract::DefaultBodyLimit::max(max_flow)),
        );
    flows::resume(ws.api.store.clone(), ws.api.plan());
    let wsdl_file = format!("{}.wsdl", path.trim_end_matches('/'));
    if wsdl_file != path {
        r = r.route(&wsdl_file, get(wsdl));
    }
    if path.starts_with("/ws/pa/") && path != "/ws/pa/" {
        r = r.route("/ws/pa/", post(call));
    }
    r.with_state(ws)
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn wsdl(State(ws): State<Ws>) -> Response {
    xml(StatusCode::OK, ws.docs.wsdl.clone())
}

async fn documents(State(ws): State<Ws>, Query(q): Query<HashMap<String, String>>) -> Response {
    if q.contains_key("wsdl") {
        return xml(StatusCode::OK, ws.docs.wsdl.clone());
    }
    if q.contains_key("pivot-wsdl") {
        return xml(StatusCode::OK, ws.docs.pivot_wsdl.clone());
    }
    match q.get("xsd").map(String::as_str) {
        Some(name) if name == specs::XSD_NAME => xml(StatusCode::OK, ws.docs.xsd.clone()),
        _ => (
            StatusCode::NOT_FOUND,
            format!(
                "ask for ?wsdl (MyPay), ?pivot-wsdl (MyPivot) or ?xsd={}\n",
                specs::XSD_NAME
            ),
        )
            .into_response(),
    }
}

/// A SOAP 1.1 Fault, for a body that names no operation (there is no response to put a
/// `fault` element in).
fn soap_fault(code: &str, message: &str) -> Response {
    let mut escaped = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c if c >= ' ' || c == '\n' || c == '\t' => escaped.push(c),
            _ => {}
        }
    }
    xml(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><soapenv:Fault><faultcode>soapenv:Client</faultcode><faultstring>{code}: {escaped}</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#
        ),
    )
}

/// Why a call is answered with a fault.
struct Refusal {
    code: &'static str,
    message: String,
    description: Option<String>,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        description: None,
    }
}

impl Refusal {
    fn described(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }
}

type Answered = Result<String, Refusal>;

async fn call(
    State(ws): State<Ws>,
    headers: HeaderMap,
    peer: Option<axum::extract::Extension<crate::listen::Peer>>,
    body: Bytes,
) -> Response {
    let api = &ws.api;
    let peer = peer.map(|p| p.addr.ip().to_canonical());
    let action = headers
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .and_then(Operation::from_soap_action);
    let call = match mypay_ws::parse_call(&body) {
        Ok(c) => c,
        Err(CallError::UnknownOperation(name)) => {
            return soap_fault(
                codes::SERVIZIO_NON_IMPLEMENTATO,
                &format!("{name} is not an operation of pa-per-ente.wsdl"),
            )
        }
        Err(e) => {
            return match action {
                // Before any credential: counted, no event (anyone could write those).
                Some(op) => {
                    crate::metrics::MYPAY_WS.fault(op.name(), codes::XML_NON_VALIDO);
                    fault_answer(op, "", refuse(codes::XML_NON_VALIDO, e.to_string()))
                }
                None => soap_fault(codes::XML_NON_VALIDO, &e.to_string()),
            };
        }
    };
    let op = call.op;
    crate::metrics::MYPAY_WS.call(op.name());
    if matches!(
        op,
        Operation::ChiediPosizioniAperte | Operation::ChiediStoricoPagamenti
    ) {
        // A payer's positions: the caller may be one entity or the Region (admin entity).
        return match payer_scope(api, &call, peer) {
            Ok(scope) => {
                let answered = match op {
                    Operation::ChiediPosizioniAperte => posizioni_aperte(api, &scope, &call).await,
                    _ => storico_pagamenti(api, &scope, &call).await,
                };
                finish(api, op, &scope.caller, answered)
            }
            Err((status, who, refusal)) => denied(api, op, &who, refusal, status),
        };
    }
    let entity = match authenticate(api, &call, peer) {
        Ok(e) => e,
        Err((status, refusal)) => {
            let who = call.entity().unwrap_or_default().to_string();
            return denied(api, op, &who, refusal, status);
        }
    };
    tracing::info!(entity = %entity.ipa_code, operation = op.name(), "mypay-ws call");
    if let Some(name) = call.unread.first() {
        let refusal = refuse(
            codes::SERVIZIO_NON_IMPLEMENTATO,
            format!("{name} non è offerto da questo hub (docs/MYPAY.md): nulla è stato scritto"),
        );
        return finish(api, op, &entity.ipa_code, Err(refusal));
    }
    let answered = match op {
        Operation::ImportaDovuto => importa_dovuto(api, &entity, &call).await,
        Operation::VerificaAvviso => verifica_avviso(&ws, &entity, &call).await,
        Operation::ChiediAvvisiPendenti => avvisi_pendenti(api, &entity, &call).await,
        Operation::ChiediPagati | Operation::ChiediPagatiConRicevuta => {
            pagati(api, &entity, &call).await
        }
        Operation::InviaDovuti | Operation::InviaCarrelloDovuti => {
            invia_dovuti(&ws, &entity, &call).await
        }
        Operation::ChiediEsitoCarrelloDovuti => esito_carrello(api, &entity, &call).await,
        Operation::RegistraPagamento => registra::registra(api, &entity, &call).await,
        Operation::AutorizzaImportFlusso => flows::autorizza(&ws, &entity).await,
        Operation::ChiediStatoImportFlusso => flows::stato(&ws, &entity, &call).await,
        Operation::PrenotaExportFlusso | Operation::PrenotaExportFlussoIncrementaleConRicevuta => {
            exports::prenota(&ws, &entity, &call).await
        }
        Operation::ChiediStatoExportFlusso => exports::stato(&ws, &entity, &call).await,
        Operation::PrenotaExportFlussoScaduti => scaduti::prenota(&ws, &entity, &call).await,
        Operation::ChiediStatoExportFlussoScaduti => scaduti::stato(&ws, &entity, &call).await,
        Operation::ChiediElencoFlussiSPC => pivot::elenco(&ws, &entity, &call).await,
        Operation::ChiediFlussoSPC => pivot::flusso(&ws, &entity, &call).await,
        other => Err(refuse(
            codes::SERVIZIO_NON_IMPLEMENTATO,
            format!(
                "{} non è offerto da questo hub (docs/MYPAY.md)",
                other.name()
            ),
        )),
    };
    finish(api, op, &entity.ipa_code, answered)
}

fn finish(api: &Api, op: Operation, who: &str, answered: Answered) -> Response {
    match answered {
        Ok(body) => xml(StatusCode::OK, body),
        Err(refusal) => answer_fault(api, op, who, refusal),
    }
}

fn with_status(mut r: Response, status: StatusCode) -> Response {
    *r.status_mut() = status;
    r
}

/// The operation's answer with MyPay's `fault`, counted, and recorded as a `soap.fault` event
/// like the node's (kept off the answer's path: an event store that fails only loses the event).
/// A refused authentication: the fault with its status. One refused for being over its rate
/// (429) is counted but leaves no event, so a flood cannot turn into store writes.
fn denied(api: &Api, op: Operation, who: &str, refusal: Refusal, status: StatusCode) -> Response {
    if status == StatusCode::TOO_MANY_REQUESTS {
        crate::metrics::MYPAY_WS.fault(op.name(), refusal.code);
        return with_status(fault_answer(op, who, refusal), status);
    }
    with_status(answer_fault(api, op, who, refusal), status)
}

fn answer_fault(api: &Api, op: Operation, id: &str, refusal: Refusal) -> Response {
    crate::metrics::MYPAY_WS.fault(op.name(), refusal.code);
    let (store, entity) = (api.store.clone(), id.to_string());
    let (code, message) = (refusal.code, refusal.message.clone());
    let plan = api.plan();
    let known = plan.entities.contains_key(&entity);
    tokio::task::spawn_blocking(move || {
        let event = snodo_store::NewEvent {
            kind: "soap.fault",
            // Only a configured entity is named: a caller cannot make up event subjects.
            entity: if known { &entity } else { "" },
            subject: op.name(),
            payload: serde_json::json!({
                "service": "mypay",
                "operation": op.name(),
                "fault": code,
                "description": message,
            }),
            correlation: None,
        };
        if let Err(e) = store.record_events(&[event]) {
            tracing::warn!("cannot record the fault event: {e}");
        }
    });
    fault_answer(op, id, refusal)
}

/// The operation's answer carrying MyPay's `fault`.
fn fault_answer(op: Operation, id: &str, refusal: Refusal) -> Response {
    tracing::info!(
        operation = op.name(),
        code = refusal.code,
        "mypay-ws call refused: {}",
        refusal.message
    );
    xml(
        StatusCode::OK,
        Answer::fault(
            op,
            &Fault {
                code: refusal.code.to_string(),
                string: refusal.message,
                id: id.to_string(),
                description: refusal.description,
            },
        ),
    )
}

type Denied = (StatusCode, Refusal);

/// Refused before any credential is looked at: too many failures from this address.
fn throttled(api: &Api, peer: Option<std::net::IpAddr>) -> Result<(), Denied> {
    match peer.and_then(|ip| api.failures.check(ip)) {
        Some(wait) => Err((
            StatusCode::TOO_MANY_REQUESTS,
            refuse(
                codes::SYSTEM_ERROR,
                format!(
                    "troppe autenticazioni fallite da questo indirizzo: riprovare tra {wait} s"
                ),
            ),
        )),
        None => Ok(()),
    }
}

fn spend(api: &Api, ipa: &str) -> Result<(), Denied> {
    match api.limiter.spend(&format!("{ipa}#mypay")) {
        Some(wait) => Err((
            StatusCode::TOO_MANY_REQUESTS,
            refuse(
                codes::SYSTEM_ERROR,
                format!("troppe richieste per l'ente {ipa}: riprovare tra {wait} s"),
            ),
        )),
        None => Ok(()),
    }
}

/// Whether `given` is the entity's MyPay password (trimmed, as MyPay compares).
fn password_ok(entity: &EntityRuntime, given: Option<&str>) -> bool {
    let given = given.map(str::trim).unwrap_or_default();
    match &entity.mypay_password {
        Some(hash) => !given.is_empty() && same_hash(&key_hash(given), hash),
        None => false,
    }
}

/// The entity the call names, once its password is checked and its rate spent.
fn authenticate(
    api: &Api,
    call: &Call,
    peer: Option<std::net::IpAddr>,
) -> Result<Arc<EntityRuntime>, Denied> {
    throttled(api, peer)?;
    let plan: Arc<Plan> = api.plan();
    let failed = |refusal: Refusal| -> Denied {
        if let Some(ip) = peer {
            api.failures.failed(ip);
        }
        (StatusCode::OK, refusal)
    };
    let ipa = call.entity().unwrap_or_default();
    let Some(entity) = plan.entities.get(ipa) else {
        return Err(failed(refuse(
            codes::ENTE_NON_VALIDO,
            format!("codice IPA Ente [{ipa}] non valido"),
        )));
    };
    if !password_ok(entity, call.field("password")) {
        return Err(failed(refuse(
            codes::ENTE_NON_VALIDO,
            format!("Password non valida per ente [{ipa}]"),
        )));
    }
    spend(api, ipa)?;
    Ok(entity.clone())
}

/// Whose positions a payer query may read: one entity, or every entity for the Region's admin
/// entity (`api.mypay_admin_entity`), as MyPay's `pa.codIpaEntePredefinito`.
struct PayerScope {
    /// The IPA code the answer's faults name.
    caller: String,
    entities: Vec<Arc<EntityRuntime>>,
}

fn payer_scope(
    api: &Api,
    call: &Call,
    peer: Option<std::net::IpAddr>,
) -> Result<PayerScope, (StatusCode, String, Refusal)> {
    let with = |who: &str| {
        let who = who.to_string();
        move |(s, r): Denied| (s, who, r)
    };
    throttled(api, peer).map_err(with(""))?;
    let plan = api.plan();
    let filter = call
        .field("codIpaEnte")
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let failed = |who: &str, refusal: Refusal| {
        if let Some(ip) = peer {
            api.failures.failed(ip);
        }
        (StatusCode::OK, who.to_string(), refusal)
    };
    if let Some(f) = filter {
        if !plan.entities.contains_key(f) {
            return Err(failed(
                f,
                refuse(
                    codes::ENTE_NON_VALIDO,
                    format!("codice IPA Ente [{f}] non valido"),
                ),
            ));
        }
    }
    let admin = plan
        .config
        .api
        .mypay_admin_entity
        .as_deref()
        .and_then(|a| plan.entities.get(a));
    if let Some(admin) = admin.filter(|a| password_ok(a, call.field("password"))) {
        spend(api, &admin.ipa_code).map_err(with(&admin.ipa_code))?;
        let entities = match filter {
            Some(f) => plan.entities.get(f).into_iter().cloned().collect(),
            None => plan.entities.values().cloned().collect(),
        };
        return Ok(PayerScope {
            caller: admin.ipa_code.clone(),
            entities,
        });
    }
    let Some(ipa) = filter else {
        let who = admin.map(|a| a.ipa_code.as_str()).unwrap_or_default();
        return Err(failed(
            who,
            refuse(
                codes::ENTE_NON_VALIDO,
                format!("Password non valida per ente [{who}]"),
            ),
        ));
    };
    let Some(entity) = plan
        .entities
        .get(ipa)
        .filter(|e| password_ok(e, call.field("password")))
    else {
        return Err(failed(
            ipa,
            refuse(
                codes::ENTE_NON_VALIDO,
                format!("Password non valida per ente [{ipa}]"),
            ),
        ));
    };
    spend(api, ipa).map_err(with(ipa))?;
    Ok(PayerScope {
        caller: ipa.to_string(),
        entities: vec![entity.clone()],
    })
}

/// An HMAC of `what`, keyed by the entity's password hash: links and tokens that any hub of the
/// Region (sharing the configuration) can check, and that die when the password changes.
/// `None` for an entity without a password.
pub(super) fn sign(entity: &EntityRuntime, what: &str) -> Option<String> {
    use hmac::Mac as _;
    let key = entity.mypay_password?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(entity.ipa_code.as_bytes());
    mac.update(b"|");
    mac.update(what.as_bytes());
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// Why a signed download link opens nothing.
pub(super) enum LinkRefused {
    /// Not made by a hub of this Region for what it names.
    Forged,
    /// Genuine, but past its time.
    Expired,
}

impl LinkRefused {
    /// The answer, telling which call (`again`) gives a fresh link.
    pub(super) fn answer(self, again: &str) -> Response {
        match self {
            Self::Forged => (StatusCode::FORBIDDEN, "this link is not valid\n").into_response(),
            Self::Expired => (
                StatusCode::UNAUTHORIZED,
                format!("this link has expired: ask {again} again\n"),
            )
                .into_response(),
        }
    }
}

/// The entity a signed download link names, when the link (`what` it signs, its expiry) is
/// genuine and in time.
pub(super) fn link_entity(
    plan: &Plan,
    ente: &str,
    what: &str,
    expires: i64,
    token: &str,
) -> Result<Arc<EntityRuntime>, LinkRefused> {
    let entity = plan
        .entities
        .get(ente)
        .filter(|e| sign(e, what).is_some_and(|s| crate::listen::same_secret(&s, token)))
        .ok_or(LinkRefused::Forged)?;
    if expires < chrono::Utc::now().timestamp() {
        return Err(LinkRefused::Expired);
    }
    Ok(entity.clone())
}

fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn unavailable(_: super::Problem) -> Refusal {
    refuse(
        codes::SYSTEM_ERROR,
        "il registro non è raggiungibile; riprovare più tardi",
    )
}

fn xml_error(what: &str, why: impl std::fmt::Display) -> Refusal {
    refuse(codes::XML_NON_VALIDO, format!("XML dei {what} non valido")).described(why.to_string())
}

/// MyPay's code for a broken row rule, the rule's own code and message in the description.
fn rejected(errs: &[Rejection]) -> Refusal {
    use RejectCode as C;
    let Some(first) = errs.first() else {
        return refuse(codes::SYSTEM_ERROR, "PAA SYSTEM ERROR");
    };
    let code = match first.code {
        C::SintassiCsvAzione => codes::AZIONE_NON_VALIDO,
        C::Iuv => codes::IUV_NON_VALIDO,
        C::Iud => codes::IUD_NON_VALIDO,
        C::Importo | C::CommissioniPa => "PAA_IMPORTO_SINGOLO_VERSAMENTO_NON_VALIDO",
        C::Bilancio => "PAA_IMPORTO_BILANCIO_NON_VALIDO",
        C::TipoDovutoInesistente | C::TipoDovutoNonValidoMarcaDaBollo => {
            "PAA_IDENTIFICATIVO_TIPO_DOVUTO_NON_VALIDO"
        }
        C::TipoDovutoNonAttivoPerEnte => "PAA_IDENTIFICATIVO_TIPO_DOVUTO_NON_ABILITATO",
        C::TipoVers => "PAA_TIPO_VERSAMENTO_NON_VALIDO",
        C::DatiRiscoss => "PAA_DATI_SPECIFICI_RISCOSSIONE_NON_VALIDO",
        C::CodFisc | C::IdUnivFg => "PAA_CODICE_FISCALE_NON_VALIDO",
        C::DatiRiscossEnteSecondario => "PAA_DATI_SPECIFICI_RISCOSSIONE_NON_VALIDO",
        C::CodFiscEnteSecondario
        | C::DenominazioneEnteSecondario
        | C::IbanEnteSecondario
        | C::ImportoEnteSecondario => "PAA_ENTE_SECONDARIO_NON_VALIDO",
        C::PIva => "PAA_P_IVA_NON_VALIDO",
        C::Error => codes::SYSTEM_ERROR,
        // What MyPay's database answers with its own codes (the import flow's codes).
        C::IudDuplicato
        | C::IuvDuplicato
        | C::DataScadenzaPagamentoObbligatoria
        | C::DovutoNonPresente
        | C::TipoDovutoNonModificabile
        | C::IuvNoNullable => first.code.as_str(),
        // The rest MyPay catches with its XSD.
        _ => codes::XML_NON_VALIDO,
    };
    let all = errs
        .iter()
        .map(|r| format!("{}: {}", r.code.as_str(), r.message))
        .collect::<Vec<_>>()
        .join("; ");
    refuse(code, first.message.clone()).described(all)
}

/// A `Versamento` (or a `Dovuti` payment) checked by the import rules, with the codes MyPay
/// gives the checks it makes before them.
fn row_of(
    v: &versamento::Versamento,
    generate: bool,
    entity: &EntityRuntime,
) -> Result<DovutoRow, Refusal> {
    if !v.has_payer && v.azione != "A" {
        return Err(refuse(
            "PAA_SOGG_PAG_NON_VALORIZZATO",
            "paaSILImportaDovuto: soggettoPagatore non valorizzato. ",
        ));
    }
    if v.tipo_dovuto.trim().is_empty() {
        return Err(refuse(
            "PAA_IDENT_TIPO_DOVUTO_NON_PRESENTE",
            "paaSILImportaDovuto: identificativoTipoDovuto non specificato ",
        ));
    }
    if v.causale.trim().is_empty() {
        return Err(refuse(
            "PAA_CAUSALE_NON_PRESENTE",
            "paaSILImportaDovuto: causaleVersamento non specificato ",
        ));
    }
    let today = snodo_core::time::today_rome();
    validate(&v.raw(generate), FlowVersion::V1_4, &entity.rules, today).map_err(|e| rejected(&e))
}

/// `paaSILImportaDovuto`: one position inserted, changed or annulled (`azione` I, M, A), or its
/// notice printed (S), through the entity's API flow and the import rules.
async fn importa_dovuto(api: &Arc<Api>, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let encoded = call.field("dovuto").unwrap_or_default();
    let bytes = base64_field(encoded).map_err(|why| xml_error("dovuti", why))?;
    // MyPay also takes a payload encoded twice.
    let bytes = match std::str::from_utf8(&bytes).ok().map(base64_field) {
        Some(Ok(inner)) if inner.starts_with(b"<") => inner,
        _ => bytes,
    };
    let mut v = versamento::decode(&bytes).map_err(|e| xml_error("dovuti", e))?;
    v.azione = v.azione.trim().to_string();
    let flag = call
        .flag("flagGeneraIuv")
        .map_err(|e| xml_error("dovuti", e))?;
    let flag = flag.unwrap_or(false);
    if v.azione == "S" {
        return print_notice(api, entity, &v, flag).await;
    }
    if !["I", "M", "A"].contains(&v.azione.as_str()) {
        return Err(refuse(
            codes::AZIONE_NON_VALIDO,
            format!("azione non valida [{}]", v.azione),
        ));
    }
    if v.azione != "A" {
        v.secondary = secondary_of(call, "PAA_LIMITAZIONE_ENTI_SECONDARI_ERROR")?;
    }
    let generate = flag && v.iuv.trim().is_empty();
    let row = row_of(&v, generate, entity)?;
    let action = row.action;
    let outcome = positions::apply(api, entity, vec![row])
        .await
        .map_err(unavailable)?
        .pop();
    let position = match outcome {
        Some(Ok((_, p))) => p,
        Some(Err(errs)) => {
            let mut r = rejected(&errs);
            r.message = format!(
                "paaSILImportaDovuto: Errore import dovuto IUV [{}] e IUD [{}]: {}",
                v.iuv, v.iud, r.message
            );
            return Err(r);
        }
        None => return Err(refuse(codes::SYSTEM_ERROR, "PAA SYSTEM ERROR")),
    };
    let mut a = Answer::new(Operation::ImportaDovuto);
    a.text("esito", "OK");
    // MyPay gives the IUV back only when it generated it.
    if generate && action != Action::Annul {
        if let Some(iuv) = &position.iuv {
            a.text("identificativoUnivocoVersamento", iuv);
        }
    }
    Ok(a.finish())
}

/// The one secondary beneficiary of `listaDovutiEntiSecondari`, read; more than one is refused
/// with `too_many` (MyPay's code of the operation): the hub's registry holds one per position.
fn secondary_of(
    call: &Call,
    too_many: &'static str,
) -> Result<Option<versamento::EnteSecondario>, Refusal> {
    let Some(encoded) = call.secondaries.first() else {
        return Ok(None);
    };
    if call.secondaries.len() > 1 {
        return Err(refuse(
            too_many,
            format!(
                "Numero di Dovuti Ente Secondario superiore ai consentiti [{}]: uno per dovuto",
                call.secondaries.len()
            ),
        ));
    }
    let bytes = base64_field(encoded).map_err(|why| xml_error("dovuti Enti secondari", why))?;
    versamento::decode_secondario(&bytes)
        .map(Some)
        .map_err(|e| xml_error("dovuti Enti secondari", e))
}

/// `azione` S: the notice of a position already there, zipped as MyPay sends it; nothing is
/// written.
async fn print_notice(
    api: &Arc<Api>,
    entity: &Arc<EntityRuntime>,
    v: &versamento::Versamento,
    flag: bool,
) -> Answered {
    let iuv = v.iuv.trim();
    if iuv.is_empty() || flag {
        return Err(refuse(
            codes::SYSTEM_ERROR,
            format!(
                "paaSILImportaDovuto: Errore import dovuto IUV [{iuv}] e IUD [{}]: Errore richiesta azione 'S' prevede presenza di 'IUV' e assenza 'flag_genera_iuv'",
                v.iud
            ),
        ));
    }
    let Some(p) = by_iuv(api, &entity.ipa_code, iuv).await? else {
        return Err(refuse(
            codes::IUV_NON_VALIDO,
            format!(
                "Error nessun dovuto trovato per IUV [{iuv}] ed ente [{}]",
                entity.ipa_code
            ),
        ));
    };
    let e = entity.clone();
    let zipped = tokio::task::spawn_blocking(move || notice_zip(&p, &e))
        .await
        .map_err(|_| refuse(codes::SYSTEM_ERROR, "PAA SYSTEM ERROR"))?
        .map_err(|why| refuse(codes::SYSTEM_ERROR, why))?;
    let mut a = Answer::new(Operation::ImportaDovuto);
    a.text("esito", "OK");
    a.text("base64ZipAvviso", &to_base64(&zipped));
    Ok(a.finish())
}

/// The position's notice as a zip of one PDF named as MyPay names it.
fn notice_zip(p: &Position, e: &EntityRuntime) -> Result<Vec<u8>, String> {
    use std::io::Write as _;
    let pdf = crate::notices::pdf(p, e).map_err(|e| e.to_string())?;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let name = format!(
        "avviso_{}_{}.pdf",
        e.fiscal_code.as_str(),
        p.iuv.as_deref().unwrap_or(&p.iud)
    );
    let fail = |e: &dyn std::fmt::Display| format!("cannot zip the notice: {e}");
    zip.start_file(name, options).map_err(|e| fail(&e))?;
    zip.write_all(&pdf).map_err(|e| fail(&e))?;
    zip.finish().map_err(|e| fail(&e))?;
    Ok(out.into_inner())
}

/// The entity's live position with this IUV (else the latest annulled one).
async fn by_iuv(api: &Api, entity: &str, iuv: &str) -> Result<Option<Position>, Refusal> {
    let (store, entity, iuv) = (api.store.clone(), entity.to_string(), iuv.to_string());
    blocking(move || store.positions(&entity, &PositionQuery::Iuv(&iuv)))
        .await
        .map(positions::current)
        .map_err(unavailable)
}

async fn by_iud(api: &Api, entity: &str, iud: &str) -> Result<Option<Position>, Refusal> {
    let (store, entity, iud) = (api.store.clone(), entity.to_string(), iud.to_string());
    blocking(move || store.positions(&entity, &PositionQuery::Iud(&iud)))
        .await
        .map(positions::current)
        .map_err(unavailable)
}

/// Opens a Checkout cart for `notices` of the entity, as the entity API does; `None` when the
/// hub has no Checkout configured. Returns (cart id, Checkout's URL).
async fn open_cart(
    ws: &Ws,
    entity: &Arc<EntityRuntime>,
    notices: &[String],
    back: Option<&str>,
) -> Result<Option<(String, String)>, Refusal> {
    if ws.api.plan().checkout.is_none() {
        return Ok(None);
    }
    let back = back
        .map(str::trim)
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}/", ws.public_url));
    let who = Caller {
        key_id: format!("{}#mypay", entity.ipa_code),
        entity: entity.clone(),
    };
    let request = json!({
        "noticeNumbers": notices,
        "returnUrls": {
            "returnOkUrl": back,
            "returnCancelUrl": back,
            "returnErrorUrl": back,
        },
    });
    let reply = carts::open(&ws.api, &who, request, None)
        .await
        .map_err(|p| refuse(codes::SYSTEM_ERROR, p.detail))?;
    let id = reply.body["id"].as_str().unwrap_or_default().to_string();
    let url = reply.body["redirectUrl"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(Some((id, url)))
}

/// `paaSILVerificaAvviso`: whether the notice (its IUV) can be paid, and where to pay it.
async fn verifica_avviso(ws: &Ws, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let iuv = call
        .field("identificativoUnivocoVersamento")
        .unwrap_or_default()
        .trim()
        .to_string();
    let not_found = || {
        refuse(
            codes::IUV_NON_VALIDO,
            format!(
                "Error nessun dovuto trovato per IUV [{iuv}] ed ente [{}]",
                entity.ipa_code
            ),
        )
    };
    let Some(p) = by_iuv(&ws.api, &entity.ipa_code, &iuv).await? else {
        return Err(not_found());
    };
    match p.status {
        PositionStatus::Active => {}
        PositionStatus::Expired => {
            return Err(refuse(
                codes::IUV_SCADUTO,
                format!("alcuni dovuti sono scaduti per il dato IUV [{iuv}]"),
            ))
        }
        PositionStatus::Paid | PositionStatus::Annulled => {
            return Err(refuse(
                codes::IUV_NON_VALIDO,
                format!("non ci sono dovuti pagabili per il dato IUV [{iuv}]"),
            ))
        }
    }
    let Some(notice) = p.notice_number.clone() else {
        return Err(not_found());
    };
    let cart = open_cart(
        ws,
        entity,
        &[notice],
        call.field("enteSILInviaRispostaPagamentoUrl"),
    )
    .await?;
    let mut a = Answer::new(Operation::VerificaAvviso);
    a.text("esito", "OK");
    if let Some((id, url)) = cart {
        a.text("idSession", &id);
        a.text("redirect", "1");
        a.text("url", &url);
    }
    Ok(a.finish())
}

/// `paaSILInviaDovuti` / `paaSILInviaCarrelloDovuti`: the payments become positions of their
/// entities (IUVs generated), then one Checkout cart takes the payer to pay them.
async fn invia_dovuti(ws: &Ws, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let documents: Vec<(Arc<EntityRuntime>, &str)> = if call.op == Operation::InviaDovuti {
        vec![(entity.clone(), call.field("dovuti").unwrap_or_default())]
    } else {
        // Every element must be the caller's own: a cart of several entities is not offered.
        let mut out = Vec::new();
        for item in &call.cart {
            if item.ipa_code != entity.ipa_code {
                return Err(refuse(
                    codes::ENTE_NON_VALIDO,
                    format!(
                        "codice IPA Ente [{}] non valido: un carrello comprende i soli dovuti dell'ente [{}]",
                        item.ipa_code, entity.ipa_code
                    ),
                ));
            }
            out.push((entity.clone(), item.dovuti.as_str()));
        }
        if out.is_empty() {
            return Err(xml_error("dovuti", "listaDovuti is empty"));
        }
        out
    };
    let mut rows: Vec<DovutoRow> = Vec::new();
    for (e, encoded) in &documents {
        let bytes = base64_field(encoded).map_err(|why| xml_error("dovuti", why))?;
        let payments = versamento::decode_dovuti(&bytes).map_err(|e| xml_error("dovuti", e))?;
        for mut v in payments {
            if !v.iuv.trim().is_empty() {
                return Err(refuse(
                    codes::IUV_NON_VALIDO,
                    "l'inserimento dello IUV è deprecato",
                ));
            }
            v.has_payer = true;
            let row = row_of(&v, true, e)?;
            if rows.iter().any(|r| r.dovuto.iud == row.dovuto.iud) {
                return Err(refuse(
                    codes::IUD_DUPLICATO,
                    format!("IUD [{}] duplicato in input per ente", row.dovuto.iud),
                ));
            }
            rows.push(row);
        }
    }
    if rows.len() > 5 {
        return Err(xml_error("dovuti", "a cart takes at most 5 payments"));
    }
    if let Some(secondary) = secondary_of(call, "PAA_LIMITE_MASSIMO_DOVUTI_ENTI_SECONDARI")? {
        // As MyPay: a secondary beneficiary goes with a cart of one payment.
        if rows.len() > 1 {
            return Err(refuse(
                "PAA_LIMITE_MASSIMO_DOVUTI_MULTIBENEFICIARI",
                format!("Numero dovuti Ente primario [{}] non valido", rows.len()),
            ));
        }
        let (e, encoded) = &documents[0];
        let bytes = base64_field(encoded).map_err(|why| xml_error("dovuti", why))?;
        let mut v = versamento::decode_dovuti(&bytes)
            .map_err(|e| xml_error("dovuti", e))?
            .remove(0);
        v.has_payer = true;
        v.secondary = Some(secondary);
        rows = vec![row_of(&v, true, e)?];
    }
    // A known IUD is refused before anything is written, as MyPay does; the same payment again
    // (a retry after Checkout could not be reached) is the position already there.
    for r in &rows {
        if by_iud(&ws.api, &entity.ipa_code, &r.dovuto.iud)
            .await?
            .is_some_and(|p| {
                p.status != PositionStatus::Annulled && !positions::same_data(&p.dovuto, &r.dovuto)
            })
        {
            return Err(refuse(
                codes::IUD_DUPLICATO,
                format!("IUD [{}] già inviato", r.dovuto.iud),
            ));
        }
    }
    let outcomes = positions::apply(&ws.api, entity, rows)
        .await
        .map_err(unavailable)?;
    let mut notices = Vec::new();
    for o in outcomes {
        match o {
            Ok((_, p)) => notices.extend(p.notice_number),
            Err(errs) => return Err(rejected(&errs)),
        }
    }
    let cart = open_cart(
        ws,
        entity,
        &notices,
        call.field("enteSILInviaRispostaPagamentoUrl"),
    )
    .await?;
    let Some((id, url)) = cart else {
        return Err(refuse(
            codes::SYSTEM_ERROR,
            "questo hub non ha pagoPA Checkout configurato ([pagopa.checkout])",
        ));
    };
    let mut a = Answer::new(call.op);
    a.text("esito", "OK");
    a.text(
        if call.op == Operation::InviaDovuti {
            "idSession"
        } else {
            "idSessionCarrello"
        },
        &id,
    );
    a.text("redirect", "1");
    a.text("url", &url);
    Ok(a.finish())
}

/// The receipt that paid `p`, if any.
async fn receipt_of(
    api: &Api,
    entity: &str,
    p: &Position,
) -> Result<Option<ReceiptDocument>, Refusal> {
    let Some(notice) = p.notice_number.clone() else {
        return Ok(None);
    };
    let (store, e) = (api.store.clone(), entity.to_string());
    blocking(move || {
        let Some(r) = store.receipt_for_notice(&e, &notice)? else {
            return Ok(None);
        };
        store.receipt_document(r.id)
    })
    .await
    .map_err(unavailable)
}

/// The `Pagati` (or `PagatiConRicevuta`) XML of a stored receipt.
fn pagati_of(
    entity: &EntityRuntime,
    doc: &ReceiptDocument,
    with_receipt: bool,
) -> Result<String, Refusal> {
    let request = crate::deliver::decoded(doc).map_err(|e| refuse(codes::SYSTEM_ERROR, e))?;
    let ctx = crate::deliver::context(entity, doc);
    snodo_adapters::mypay_push::pagati_document(&ctx, &request, with_receipt)
        .map_err(|e| refuse(codes::SYSTEM_ERROR, e.to_string()))
}

/// MyPay sends `pagati` base64-encoded inside the base64Binary field: twice on the wire.
fn double_base64(xml: &str) -> String {
    to_base64(to_base64(xml.as_bytes()).as_bytes())
}

/// A cart of the entity and its positions, or MyPay's fault for an unknown session.
async fn cart_positions(
    api: &Api,
    entity: &EntityRuntime,
    id: &str,
) -> Result<Vec<Position>, Refusal> {
    let (store, ipa, id2) = (api.store.clone(), entity.ipa_code.clone(), id.to_string());
    let found = blocking(move || {
        let Some(cart) = store.cart(&ipa, &id2)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for n in &cart.notice_numbers {
            if let Ok(nn) = snodo_core::NoticeNumber::parse(n) {
                out.extend(store.position_by_notice(&ipa, &nn)?);
            }
        }
        Ok(Some(out))
    })
    .await
    .map_err(unavailable)?;
    found.ok_or_else(|| {
        refuse(
            codes::ID_SESSION_NON_VALIDO,
            format!("idSession [{id}] non valido per l Ente specificato"),
        )
    })
}

/// The fault of a position not paid (yet), as MyPay words it.
fn not_paid(p: &Position, entity: &str) -> Refusal {
    let iuv = p.iuv.as_deref().unwrap_or_default();
    match p.status {
        PositionStatus::Annulled => refuse(
            codes::PAGAMENTO_ANNULLATO,
            format!("Pagamento annullato per ente [ {entity} ], IUV [{iuv}]"),
        ),
        PositionStatus::Expired => refuse(
            codes::PAGAMENTO_SCADUTO,
            format!("Pagamento scaduto per ente [ {entity} ], IUV [{iuv}]"),
        ),
        _ => refuse(
            codes::PAGAMENTO_NON_INIZIATO,
            format!("Pagamento non iniziato per ente [ {entity} ], IUV [{iuv}]"),
        ),
    }
}

/// `paaSILChiediPagati` (by `idSession`, a cart) and `paaSILChiediPagatiConRicevuta` (by exactly
/// one of `idSession`, IUV, IUD).
async fn pagati(api: &Arc<Api>, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let with_receipt = call.op == Operation::ChiediPagatiConRicevuta;
    let key = |name: &str| {
        call.field(name)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let ipa = entity.ipa_code.as_str();
    let (session, iuv, iud) = if with_receipt {
        (
            key("idSession"),
            key("identificativoUnivocoVersamento"),
            key("identificativoUnivocoDovuto"),
        )
    } else {
        (key("idSession"), None, None)
    };
    let given = [&session, &iuv, &iud]
        .iter()
        .filter(|k| k.is_some())
        .count();
    if given != 1 {
        let description = if given == 0 {
            format!("Nessun campo di input (idSession, identificativoUnivocoVersamento, identificativoUnivocoDovuto) valorizzato per ente [ {ipa} ].")
        } else {
            "Errore, è stato specificato più di un paramero tra idSession, identificativoUnivocoVersamento e identificativoUnivocoDovuto.".to_string()
        };
        return Err(refuse(codes::SYSTEM_ERROR, "PAA SYSTEM ERROR").described(description));
    }
    let positions = if let Some(id) = &session {
        cart_positions(api, entity, id).await?
    } else if let Some(iuv) = &iuv {
        let p = by_iuv(api, ipa, iuv).await?.ok_or_else(|| {
            refuse(
                codes::IUV_NON_VALIDO,
                format!("IUV non valido per ente [ {ipa} ]"),
            )
        })?;
        vec![p]
    } else {
        let iud = iud.unwrap_or_default();
        let p = by_iud(api, ipa, &iud).await?.ok_or_else(|| {
            refuse(
                codes::IUD_NON_VALIDO,
                format!("IUD non valido per ente [ {ipa} ]."),
            )
        })?;
        vec![p]
    };
    // The first paid position of the session answers, as MyPay's first elaborated payment.
    let mut first_unpaid = None;
    for p in &positions {
        if p.status != PositionStatus::Paid {
            first_unpaid.get_or_insert(p);
            continue;
        }
        if let Some(doc) = receipt_of(api, ipa, p).await? {
            let document = pagati_of(entity, &doc, with_receipt)?;
            let mut a = Answer::new(call.op);
            a.text("pagati", &double_base64(&document));
            if with_receipt {
                a.text("rt", &to_base64(doc.xml.as_bytes()));
            }
            return Ok(a.finish());
        }
    }
    Err(match first_unpaid {
        Some(p) => not_paid(p, ipa),
        None => refuse(
            codes::PAGAMENTO_NON_INIZIATO,
            format!("Pagamento non iniziato per ente [ {ipa} ]"),
        ),
    })
}

/// `paaSILChiediEsitoCarrelloDovuti`: the cart's state in MyPay's words, with the receipt of
/// each paid position.
async fn esito_carrello(api: &Arc<Api>, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let id = call
        .field("idSessionCarrello")
        .unwrap_or_default()
        .trim()
        .to_string();
    let positions = cart_positions(api, entity, &id).await?;
    let paid = positions
        .iter()
        .filter(|p| p.status == PositionStatus::Paid)
        .count();
    let esito = match paid {
        0 => "PREDISPOSTO",
        n if n == positions.len() => "PAGATO",
        _ => "PARZIALMENTE PAGATO",
    };
    let mut a = Answer::new(Operation::ChiediEsitoCarrelloDovuti);
    a.open("listaCarrelli");
    a.open("rispostaCarrello");
    a.text("esito", esito);
    a.text("codIpaEnte", &entity.ipa_code);
    a.text("codIdentificativoUnivocoCarrello", &cut(&id, 35));
    if let Some(p) = positions.iter().find(|p| p.status == PositionStatus::Paid) {
        if let Some(doc) = receipt_of(api, &entity.ipa_code, p).await? {
            let document = pagati_of(entity, &doc, true)?;
            a.text("pagati", &double_base64(&document));
            a.text("rt", &to_base64(doc.xml.as_bytes()));
        }
    }
    a.close("rispostaCarrello");
    a.close("listaCarrelli");
    Ok(a.finish())
}

/// The payer of `paaSILChiediPosizioniAperte` / `…StoricoPagamenti`, checked as MyPay checks it.
fn payer(call: &Call) -> Result<String, Refusal> {
    let kind = call
        .field("tipoIdentificativoUnivoco")
        .map(str::trim)
        .unwrap_or_default();
    match kind {
        "" => {
            return Err(refuse(
                codes::TIPO_IDENTIFICATIVO_PAGATORE_NON_VALIDO,
                "Tipo identificativo univoco non presente",
            ))
        }
        "F" | "G" => {}
        other => {
            return Err(refuse(
                codes::TIPO_IDENTIFICATIVO_PAGATORE_NON_VALIDO,
                format!("Tipo identificativo univoco non valido: {other}"),
            ))
        }
    }
    let id = call
        .field("codiceIdentificativoUnivoco")
        .map(str::trim)
        .unwrap_or_default();
    if id.is_empty() {
        return Err(refuse(
            codes::CODICE_IDENTIFICATIVO_PAGATORE_NON_PRESENTE,
            "Codice identificativo univoco non presente",
        ));
    }
    Ok(id.to_uppercase())
}

/// Most positions one answer lists, per entity.
const MAX_LISTED: u32 = 1000;

async fn list(
    api: &Api,
    entity: &str,
    status: PositionStatus,
    payer: Option<String>,
    created: Option<(String, String)>,
) -> Result<Vec<Position>, Refusal> {
    let (store, entity) = (api.store.clone(), entity.to_string());
    blocking(move || {
        let filter = PositionFilter {
            status: Some(status),
            payer_id: payer.as_deref(),
            created_from: created.as_ref().map(|c| c.0.as_str()),
            created_before: created.as_ref().map(|c| c.1.as_str()),
            ..Default::default()
        };
        store.list_positions(&entity, &filter, 0, MAX_LISTED)
    })
    .await
    .map_err(unavailable)
}

/// `paaSILChiediPosizioniAperte`: the payer's positions still to pay, one `Dovuti` each,
/// soonest due first.
async fn posizioni_aperte(api: &Arc<Api>, scope: &PayerScope, call: &Call) -> Answered {
    let payer = payer(call)?;
    let mut a = Answer::new(Operation::ChiediPosizioniAperte);
    for entity in &scope.entities {
        let mut found = list(
            api,
            &entity.ipa_code,
            PositionStatus::Active,
            Some(payer.clone()),
            None,
        )
        .await?;
        found.sort_by(|x, y| {
            (
                x.dovuto.due_date.is_none(),
                x.dovuto.due_date,
                &x.created_at,
            )
                .cmp(&(
                    y.dovuto.due_date.is_none(),
                    y.dovuto.due_date,
                    &y.created_at,
                ))
        });
        for p in &found {
            a.open("paaSILPosizioniAperte");
            a.text("codIpaEnte", &cut(&entity.ipa_code, 35));
            a.text("deNomeEnte", &cut(&entity.name, 35));
            a.text(
                "dovuti",
                &to_base64(dovuti::render(&p.dovuto, p.iuv.as_deref()).as_bytes()),
            );
            a.close("paaSILPosizioniAperte");
        }
    }
    Ok(a.finish())
}

/// `paaSILChiediStoricoPagamenti`: the payer's paid positions, receipt stored in the window
/// (from `dataFrom`'s day, to `dataTo` or now).
async fn storico_pagamenti(api: &Arc<Api>, scope: &PayerScope, call: &Call) -> Answered {
    let payer = payer(call)?;
    let instant = |name: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, Refusal> {
        let Some(v) = call.field(name).map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        parse_instant(v).map(Some).ok_or_else(|| {
            refuse(
                if name == "dataFrom" {
                    codes::DATE_FROM_NON_VALIDO
                } else {
                    codes::DATE_TO_NON_VALIDO
                },
                format!("{name} [{v}] non valida"),
            )
        })
    };
    let now = chrono::Utc::now();
    let from = match instant("dataFrom")? {
        Some(t) => rome_day_start(t),
        None => rome_day_start(now),
    };
    let to = instant("dataTo")?.unwrap_or(now);
    if to < from {
        return Err(refuse(
            codes::INTERVALLO_DATE_NON_VALIDO,
            format!("Data di inizio [{from}] successiva alla data di fine [{to}]"),
        ));
    }
    let mut a = Answer::new(Operation::ChiediStoricoPagamenti);
    a.text(
        "dateTo",
        &to.with_timezone(&chrono_tz::Europe::Rome)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    );
    for entity in &scope.entities {
        let paid = list(
            api,
            &entity.ipa_code,
            PositionStatus::Paid,
            Some(payer.clone()),
            None,
        )
        .await?;
        for p in &paid {
            let Some(doc) = receipt_of(api, &entity.ipa_code, p).await? else {
                continue;
            };
            let at = chrono::DateTime::parse_from_rfc3339(&doc.receipt.received_at)
                .map(|t| t.with_timezone(&chrono::Utc))
                .ok();
            if !at.is_some_and(|t| t > from && t <= to) {
                continue;
            }
            let document = pagati_of(entity, &doc, true)?;
            a.open("paaSILStoricoPagamenti");
            a.text("ctPagatiConRicevuta", &to_base64(document.as_bytes()));
            a.text("rt", &to_base64(doc.xml.as_bytes()));
            a.text("codIpaEnte", &cut(&entity.ipa_code, 35));
            a.text("deNomeEnte", &cut(&entity.name, 35));
            a.close("paaSILStoricoPagamenti");
        }
    }
    Ok(a.finish())
}

/// An `xsd:dateTime` (with or without offset: without, Rome time) or `xsd:date`.
fn parse_instant(v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone as _;
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let local = chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(v.get(..10)?, "%Y-%m-%d")
                .ok()?
                .and_hms_opt(0, 0, 0)
        })?;
    chrono_tz::Europe::Rome
        .from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Midnight (Rome) of the day `t` falls on, as an instant.
fn rome_day_start(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    let day = t.with_timezone(&chrono_tz::Europe::Rome).date_naive();
    parse_instant(&day.to_string()).unwrap_or(t)
}

/// `paaSILChiediAvvisiPendenti`: positions with a notice created between the two dates (Rome),
/// still to pay. (MyPay's WSDL has it, MyPay4 never answered it.)
async fn avvisi_pendenti(api: &Arc<Api>, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let date = |name: &str, code: &'static str| -> Result<chrono::NaiveDate, Refusal> {
        let v = call.field(name).map(str::trim).unwrap_or_default();
        chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .map_err(|_| refuse(code, format!("{name} [{v}] non valida")))
    };
    let from = date("dateFrom", codes::DATE_FROM_NON_VALIDO)?;
    let to = date("dateTo", codes::DATE_TO_NON_VALIDO)?;
    if to < from {
        return Err(refuse(
            codes::INTERVALLO_DATE_NON_VALIDO,
            "L'intervallo data inizio e data fine non è valido",
        ));
    }
    let stamp = |d: chrono::NaiveDate| {
        parse_instant(&d.to_string())
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    };
    let window = (stamp(from), stamp(to.succ_opt().unwrap_or(to)));
    let found = list(
        api,
        &entity.ipa_code,
        PositionStatus::Active,
        None,
        Some(window),
    )
    .await?;
    let mut a = Answer::new(Operation::ChiediAvvisiPendenti);
    for p in found.iter().filter(|p| p.iuv.is_some()) {
        a.open("paaSILAvvisoPendente");
        a.text("dtCreazioneCodIuv", &rome_date(&p.created_at));
        a.text(
            "dovuti",
            &to_base64(dovuti::render(&p.dovuto, p.iuv.as_deref()).as_bytes()),
        );
        a.close("paaSILAvvisoPendente");
    }
    Ok(a.finish())
}

/// The day (Rome) of a stored UTC instant.
fn rome_date(stored: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(stored)
        .map(|t| snodo_core::time::rome_date(t.with_timezone(&chrono::Utc)).to_string())
        .unwrap_or_else(|_| stored.get(..10).unwrap_or(stored).to_string())
}
