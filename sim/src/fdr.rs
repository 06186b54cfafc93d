//! pagoPA's reporting services, served by `snodo sim --serve` from the flows
//! [published](crate::flows) in the ledger directory (looked up on every request, so flows
//! published while it runs are served at once; a file is parsed again only once it changed).
//!
//! **FdR 3 for organizations** (`fdr_organization.json` / `openapi-org.json`), under
//! [`FDR_ORG_PATH`] (the path of `https://api.platform.pagopa.it/fdr-org/service/v1`):
//!
//! - `GET …/organizations/{organizationId}/fdrs?publishedGt=&flowDate=&pspId=&page=&size=`:
//!   every published revision to that entity with `published > publishedGt`, `fdrDate >=
//!   flowDate` and that PSP, ordered by `published`. `publishedGt` and `flowDate` default, as
//!   the specification says, to the start of the previous calendar month (00:00 UTC); `page`
//!   from 1 (default 1), `size` 1 to 1000 (default 1000). `metadata{pageSize, pageNumber,
//!   totPage}`, `count` (all matching flows), `data[{fdr, pspId, revision, published,
//!   flowDate}]`.
//! - `GET …/fdrs/{fdr}/revisions/{revision}/psps/{pspId}`: the flow (`SingleFlowResponse`).
//! - `GET …/fdrs/{fdr}/revisions/{revision}/psps/{pspId}/payments?page=&size=`: its rows.
//!
//! The subscription key ([`FdrOptions::key`]) must come as the `Ocp-Apim-Subscription-Key`
//! header or the `subscription-key` query parameter, else `401` (API Management's body,
//! `{"statusCode": 401, "message": …}`). Errors are FdR 3's `ErrorResponse`: `400` `FDR-1000`
//! for a bad parameter, `404` `FDR-3001` for an unknown flow (`fdr.notFound`).
//!
//! **The legacy node** (`nodeForPa.wsdl`), `POST` [`NODE_FOR_PA_PATH`]:
//! `nodoChiediElencoFlussiRendicontazione` lists the latest revision of each flow (of the
//! `identificativoDominio` and `identificativoPSP` when given), `nodoChiediFlussoRendicontazione`
//! answers its FlussoRiversamento XML in base64 (`xmlRendicontazione`). An unknown flow is the
//! fault `PPT_ID_FLUSSO_SCONOSCIUTO`; a password other than [`FdrOptions::password`] (when set)
//! `PPT_AUTENTICAZIONE`; a request that is neither a `500` SOAP fault.

use crate::flows::{self, PublishedFlow};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::json;
use snodo_adapters::fdr::rest::{
    ErrorMessage, ErrorResponse, FlowByPsp, FlowList, PageMetadata, PaymentsPage,
};
use snodo_adapters::fdr::soap::{self, ListedFlow, NodeFault};
use snodo_adapters::pagopa::{render_soap_fault, SoapFaultCode};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// The base path of FdR 3's organization API.
pub const FDR_ORG_PATH: &str = "/fdr-org/service/v1";
/// The path of the node's `nodeForPa` service.
pub const NODE_FOR_PA_PATH: &str = "/nodo-auth/node-for-pa/v1";
/// The subscription key header.
pub const KEY_HEADER: &str = "Ocp-Apim-Subscription-Key";
/// `fdr.notFound`.
pub const FLOW_NOT_FOUND: &str = "FDR-3001";
/// A bad request parameter.
pub const BAD_REQUEST: &str = "FDR-1000";
/// The largest `size`.
const MAX_SIZE: i64 = 1000;

/// What the reporting services serve.
#[derive(Debug, Clone)]
pub struct FdrOptions {
    /// The ledger directory whose `flows/` is served.
    pub ledger: PathBuf,
    /// The FdR 3 subscription key.
    pub key: String,
    /// The station password the SOAP calls must carry; `None` accepts any.
    pub password: Option<String>,
}

impl FdrOptions {
    /// Key `demo`, any password.
    pub fn new(ledger: impl Into<PathBuf>) -> Self {
        Self {
            ledger: ledger.into(),
            key: "demo".into(),
            password: None,
        }
    }
}

pub fn router(opts: FdrOptions) -> Router {
    let org = format!("{FDR_ORG_PATH}/organizations/{{organization_id}}/fdrs");
    Router::new()
        .route(&org, get(list))
        .route(
            &format!("{org}/{{fdr}}/revisions/{{revision}}/psps/{{psp_id}}"),
            get(single),
        )
        .route(
            &format!("{org}/{{fdr}}/revisions/{{revision}}/psps/{{psp_id}}/payments"),
            get(payments),
        )
        .route(NODE_FOR_PA_PATH, post(node_for_pa))
        .with_state(Arc::new(Served {
            opts,
            cache: flows::FlowCache::default(),
        }))
}

/// The services' state: the options, and the flows parsed so far.
struct Served {
    opts: FdrOptions,
    cache: flows::FlowCache,
}

impl std::ops::Deref for Served {
    type Target = FdrOptions;

    fn deref(&self) -> &FdrOptions {
        &self.opts
    }
}

type Params = Query<HashMap<String, String>>;

/// An error answer, boxed: a `Response` is too large to travel in every `Err`.
type Refusal = Box<Response>;

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(b) => (status, [(CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn error(status: StatusCode, code: &str, path: Option<&str>, message: String) -> Response {
    json_response(
        status,
        &ErrorResponse {
            error_id: None,
            http_status_code: Some(i64::from(status.as_u16())),
            http_status_description: status.canonical_reason().map(str::to_owned),
            app_error_code: Some(code.to_owned()),
            errors: vec![ErrorMessage {
                path: path.map(str::to_owned),
                message: Some(message),
            }],
        },
    )
}

fn bad_param(name: &str, message: String) -> Response {
    error(StatusCode::BAD_REQUEST, BAD_REQUEST, Some(name), message)
}

/// `None` when the key is right, else the 401.
fn unauthorized(opts: &FdrOptions, headers: &HeaderMap, params: &Params) -> Option<Response> {
    let given = headers
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| params.get("subscription-key").map(String::as_str));
    if given == Some(opts.key.as_str()) {
        return None;
    }
    let message = if given.is_none() {
        "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API."
    } else {
        "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."
    };
    Some(json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"statusCode": 401, "message": message}),
    ))
}

fn load(served: &Served) -> Result<Vec<Arc<PublishedFlow>>, Refusal> {
    flows::load_all_cached(&served.ledger, &served.cache).map_err(|e| {
        Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "FDR-0500",
            None,
            e.to_string(),
        ))
    })
}

fn int_param(params: &Params, name: &str, default: i64, max: i64) -> Result<i64, Refusal> {
    let Some(v) = params.get(name) else {
        return Ok(default);
    };
    match v.trim().parse::<i64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(Box::new(bad_param(
            name,
            format!("{name} must be an integer from 1 to {max}, got {v:?}"),
        ))),
    }
}

/// An ISO-8601 instant; without a zone it is UTC (`yyyy-MM-dd'T'HH:mm:ss`).
fn instant_param(params: &Params, name: &str) -> Result<Option<DateTime<Utc>>, Refusal> {
    let Some(v) = params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(Some(t.and_utc()));
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
    }
    Err(Box::new(bad_param(
        name,
        format!("{name} must be an ISO-8601 date-time, got {v:?}"),
    )))
}

/// The specification's default lower limit: the start of the previous calendar month, UTC.
fn previous_month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if now.month() == 1 {
        (now.year() - 1, 12)
    } else {
        (now.year(), now.month() - 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

fn page_bounds(total: usize, page: i64, size: i64) -> (usize, usize, i64) {
    let total_i = total as i64;
    let tot_page = ((total_i + size - 1) / size).max(1);
    let start = ((page - 1).saturating_mul(size)).min(total_i) as usize;
    let end = (start + size as usize).min(total);
    (start, end, tot_page)
}

async fn list(
    State(opts): State<Arc<Served>>,
    Path(organization_id): Path<String>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    if let Some(r) = unauthorized(&opts, &headers, &params) {
        return r;
    }
    if !(1..=35).contains(&organization_id.chars().count()) {
        return bad_param(
            "organizationId",
            "organizationId must be 1 to 35 characters".into(),
        );
    }
    let parsed = (|| {
        let page = int_param(&params, "page", 1, i64::MAX)?;
        let size = int_param(&params, "size", MAX_SIZE, MAX_SIZE)?;
        let default = previous_month_start(Utc::now());
        let published_gt = instant_param(&params, "publishedGt")?.unwrap_or(default);
        let flow_date = instant_param(&params, "flowDate")?.unwrap_or(default);
        Ok::<_, Refusal>((page, size, published_gt, flow_date))
    })();
    let (page, size, published_gt, flow_date) = match parsed {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let psp = params.get("pspId");
    let all = match load(&opts) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let matching: Vec<FlowByPsp> = all
        .iter()
        .filter(|f| f.flow.receiver.organization_id == organization_id)
        .filter(|f| psp.is_none_or(|p| &f.flow.sender.psp_id == p))
        .filter(|f| f.flow.fdr_date >= flow_date)
        .filter_map(|f| {
            let published = f.flow.published.filter(|p| *p > published_gt)?;
            Some(FlowByPsp {
                fdr: f.flow.fdr.clone(),
                psp_id: f.flow.sender.psp_id.clone(),
                revision: f.flow.revision,
                published,
                flow_date: f.flow.fdr_date,
            })
        })
        .collect();
    let (start, end, tot_page) = page_bounds(matching.len(), page, size);
    json_response(
        StatusCode::OK,
        &FlowList {
            metadata: PageMetadata {
                page_size: size,
                page_number: page,
                tot_page,
            },
            count: matching.len() as i64,
            data: matching[start..end].to_vec(),
        },
    )
}

/// The flow a path names, or the error to answer.
fn find(
    opts: &Served,
    organization_id: &str,
    fdr: &str,
    revision: &str,
    psp_id: &str,
) -> Result<Arc<PublishedFlow>, Refusal> {
    let revision = match revision.parse::<i64>() {
        Ok(r) if r >= 1 => r,
        _ => {
            return Err(Box::new(bad_param(
                "revision",
                format!("revision must be an integer from 1, got {revision:?}"),
            )))
        }
    };
    load(opts)?
        .into_iter()
        .find(|f| {
            f.flow.fdr == fdr
                && f.flow.revision == revision
                && f.flow.sender.psp_id == psp_id
                && f.flow.receiver.organization_id == organization_id
        })
        .ok_or_else(|| {
            Box::new(error(
                StatusCode::NOT_FOUND,
                FLOW_NOT_FOUND,
                None,
                format!("Fdr [{fdr}] not found"),
            ))
        })
}

async fn single(
    State(opts): State<Arc<Served>>,
    Path((organization_id, fdr, revision, psp_id)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    if let Some(r) = unauthorized(&opts, &headers, &params) {
        return r;
    }
    match find(&opts, &organization_id, &fdr, &revision, &psp_id) {
        Ok(f) => json_response(StatusCode::OK, &f.flow),
        Err(r) => *r,
    }
}

async fn payments(
    State(opts): State<Arc<Served>>,
    Path((organization_id, fdr, revision, psp_id)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    if let Some(r) = unauthorized(&opts, &headers, &params) {
        return r;
    }
    let sizes = int_param(&params, "page", 1, i64::MAX)
        .and_then(|page| Ok((page, int_param(&params, "size", MAX_SIZE, i64::MAX)?)));
    let (page, size) = match sizes {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let flow = match find(&opts, &organization_id, &fdr, &revision, &psp_id) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let (start, end, tot_page) = page_bounds(flow.payments.len(), page, size);
    json_response(
        StatusCode::OK,
        &PaymentsPage {
            metadata: PageMetadata {
                page_size: size,
                page_number: page,
                tot_page,
            },
            // As `PaymentsPage::page_of`: the flow's total, as PagoPA's own mocks give it.
            count: flow.payments.len() as i64,
            data: flow.payments[start..end].to_vec(),
        },
    )
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

fn node_fault(operation: &str, code: &str, string: &str, description: String) -> Response {
    let fault = NodeFault {
        fault_code: code.to_owned(),
        fault_string: string.to_owned(),
        id: "NodoDeiPagamentiSPC".to_owned(),
        description: Some(description),
        serial: None,
        original_fault_code: None,
        original_fault_string: None,
        original_description: None,
    };
    xml_response(
        StatusCode::OK,
        soap::render_fault_response(operation, &fault),
    )
}

async fn node_for_pa(State(opts): State<Arc<Served>>, body: Bytes) -> Response {
    let req = match soap::parse_request(&body) {
        Ok(r) => r,
        Err(e) => {
            return xml_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                render_soap_fault(SoapFaultCode::Client, &e.to_string()),
            )
        }
    };
    let op = req.operation;
    if opts.password.as_ref().is_some_and(|p| *p != req.password) {
        return node_fault(
            op,
            soap::AUTHENTICATION,
            "Errore di autenticazione.",
            "Password sconosciuta o errata".into(),
        );
    }
    let all = match flows::load_all_cached(&opts.ledger, &opts.cache) {
        Ok(a) => a,
        Err(e) => return node_fault(op, "PPT_SYSTEM_ERROR", "Errore di sistema.", e.to_string()),
    };
    let visible = all.into_iter().filter(|f| {
        req.entity
            .as_ref()
            .is_none_or(|e| &f.flow.receiver.organization_id == e)
            && req
                .psp_id
                .as_ref()
                .is_none_or(|p| &f.flow.sender.psp_id == p)
    });
    // The latest revision of each flow name (the node lists one version per name).
    let mut latest: BTreeMap<(String, String), Arc<PublishedFlow>> = BTreeMap::new();
    for f in visible {
        let key = (f.flow.sender.psp_id.clone(), f.flow.fdr.clone());
        match latest.get(&key) {
            Some(have) if have.flow.revision >= f.flow.revision => {}
            _ => {
                latest.insert(key, f);
            }
        }
    }
    if op == soap::LIST_OPERATION {
        let mut listed: Vec<ListedFlow> = latest
            .values()
            .map(|f| ListedFlow {
                iuf: f.flow.fdr.clone(),
                flow_time: f.flow.fdr_date,
            })
            .collect();
        listed.sort_by(|a, b| (a.flow_time, &a.iuf).cmp(&(b.flow_time, &b.iuf)));
        return xml_response(StatusCode::OK, soap::render_list_response(&listed));
    }
    let iuf = req.iuf.unwrap_or_default();
    let Some(flow) = latest.into_values().find(|f| f.flow.fdr == iuf) else {
        return node_fault(
            op,
            soap::FLOW_UNKNOWN,
            "Identificativo flusso sconosciuto.",
            format!("Rendicontazione {iuf} sconosciuta"),
        );
    };
    match flow.to_xml() {
        Ok(xml) => xml_response(StatusCode::OK, soap::render_flow_response(&xml)),
        Err(e) => node_fault(op, "PPT_SYSTEM_ERROR", "Errore di sistema.", e.to_string()),
    }
}
