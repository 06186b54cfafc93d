//! The external-verification stand-in: an entity's own system answering a hub's real-time
//! verification (a debt type with `external = { url = ... }`), served by `snodo sim --serve`
//! under `/external/`.
//!
//! `GET /external/<anything>/<noticeNumber>`: the hub appends the notice number to the URL of
//! the debt type, so any path under `/external/` is accepted and its **last segment** is the
//! notice number (`/external/erp/notices/301000000000012373` asks for `301000000000012373`).
//! Every answer is JSON (`application/json`).
//!
//! **With a file** ([`ExternalOptions::file`], `--external-file FILE`): a JSON object mapping
//! notice numbers to entries. The file is read again on every request, so a test can change it
//! while the stand-in runs.
//!
//! ```json
//! {
//!   "301000000000012373": {"amountCents": 1500, "dueDate": "2026-12-31",
//!                          "payer": {"type": "F", "id": "RSSMRA80A01H501U", "name": "Mario Rossi"},
//!                          "causale": "Permesso ZTL", "iud": "ZTL-2026-1"},
//!   "301000000000012374": {"status": 410},
//!   "301000000000012375": {"status": 500},
//!   "301000000000012376": {"delayMs": 5000, "amountCents": 1500, "payer": {...}, "causale": "..."}
//! }
//! ```
//!
//! - An entry is a **position** unless it says otherwise: `200` with the entry itself as the
//!   body, verbatim (without `delayMs`/`status`). It is not checked, so a test can serve a
//!   position the hub must refuse (a zero amount, a missing payer).
//! - `"status": N` (100-599, other than 200): answers N with `{"status": N, "title": "<reason>",
//!   "noticeNumber": "..."}` (404: unknown, 410: annulled, anything else: an error, for the hub).
//! - `"delayMs": N`: waits N milliseconds (at most an hour) before answering, whatever the
//!   answer (to see the hub's timeout).
//! - A notice number the file does not have: 404.
//! - A file that cannot be read or is not a JSON object, an entry that is not an object, a
//!   `status` or `delayMs` that is not such a number: 500, with a `detail` saying why.
//!
//! **Without a file**, the demo rule: a notice number (18 digits, aux digit 0-3) whose IUV
//! body ends in an even digit is a fixed position of 25.00 euro ([`DEMO_AMOUNT_CENTS`]),
//! causale `Permesso ZTL <noticeNumber>`, payer `RSSMRA80A01H501U` Mario Rossi (type F), due
//! 2099-12-31; any other: 404. The IUV body is the notice without its aux digit and, for aux
//! digits 0, 2 and 3, without its two check digits: its last digit is the 16th of the notice
//! (the 18th, the last, for aux digit 1).
//!
//! **Token** ([`ExternalOptions::token`], `--external-token TOKEN`): every request must carry
//! `Authorization: Bearer TOKEN`, else 401 (with `WWW-Authenticate: Bearer`), before anything
//! else.
//!
//! **MyPay's SOAP form** (`external` mode `mypay-soap`): `POST /external-soap/<anything>` takes
//! MyPay's `paaSILVerificaEsterna` (`esterni-per-pa.wsdl`) and answers from the same file (or
//! demo rule), finding the entry whose notice number has the header's IUV: a position is `esito`
//! `OK` with `datiPagamentoPA` (its `amountCents`, its `iban` or [`DEMO_IBAN`], its `causale`);
//! 404 is the fault `PAA_PAGAMENTO_SCONOSCIUTO`, 410 `PAA_PAGAMENTO_ANNULLATO`; `"faultCode":
//! "PAA_..."` answers that fault; any other status is that HTTP status with a SOAP Fault. A
//! request that is not such a call is a 500 SOAP Fault. MyPay4's new-model call
//! (`paExternalVerifyPaymentNotice`, mode `mypay-external-verify`) is answered from the same
//! entries, by its notice number: `amount`, `dueDate` and the `causale` as descriptions. With
//! [`ExternalOptions::record`] (`--external-record DIR`) each request is written to
//! `DIR/<n>.xml` as received, before it is answered.

use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The amount of every demo position, in cents.
pub const DEMO_AMOUNT_CENTS: i64 = 2500;
/// The due date of every demo position.
pub const DEMO_DUE_DATE: &str = "2099-12-31";
/// The payer of every demo position: fiscal code and name.
pub const DEMO_PAYER: (&str, &str) = ("RSSMRA80A01H501U", "Mario Rossi");
/// The account of the SOAP form's answers when the entry names none (the demo's ZTL).
pub const DEMO_IBAN: &str = "IT23Z0622512100100000300299";
/// The longest `delayMs` honoured.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// How the stand-in answers.
#[derive(Debug, Clone, Default)]
pub struct ExternalOptions {
    /// The notices file, read on every request; `None`: the demo rule.
    pub file: Option<PathBuf>,
    /// The bearer token every request must carry; `None`: no check.
    pub token: Option<String>,
    /// Where the SOAP form's requests are written as received; `None`: nowhere.
    pub record: Option<PathBuf>,
}

/// The routes of the stand-in (`GET /external/{*path}`), ready to merge into a server.
pub fn router(opts: ExternalOptions) -> Router {
    Router::new()
        .route("/external/{*path}", get(verify))
        .route("/external-soap/{*path}", post(verify_soap))
        .with_state(Arc::new(opts))
}

/// The demo rule: the position of `notice`, or `None` (404). See the module documentation.
pub fn demo_position(notice: &str) -> Option<Value> {
    let b = notice.as_bytes();
    if b.len() != 18 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let last_of_body = match b[0] {
        b'1' => b[17],
        b'0' | b'2' | b'3' => b[15],
        _ => return None,
    };
    if !matches!(last_of_body, b'0' | b'2' | b'4' | b'6' | b'8') {
        return None;
    }
    Some(json!({
        "amountCents": DEMO_AMOUNT_CENTS,
        "dueDate": DEMO_DUE_DATE,
        "payer": {"type": "F", "id": DEMO_PAYER.0, "name": DEMO_PAYER.1},
        "causale": format!("Permesso ZTL {notice}"),
    }))
}

fn answer(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn status_body(status: StatusCode, notice: &str) -> Value {
    json!({
        "status": status.as_u16(),
        "title": status.canonical_reason().unwrap_or("Error"),
        "noticeNumber": notice,
    })
}

fn broken(notice: &str, detail: String) -> Response {
    eprintln!("sim: external verification of {notice}: {detail}");
    let mut body = status_body(StatusCode::INTERNAL_SERVER_ERROR, notice);
    body["detail"] = Value::String(detail);
    answer(StatusCode::INTERNAL_SERVER_ERROR, &body)
}

fn authorized(opts: &ExternalOptions, headers: &HeaderMap) -> bool {
    let Some(token) = &opts.token else {
        return true;
    };
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.trim() == token)
}

async fn verify(
    State(opts): State<Arc<ExternalOptions>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let notice = path
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_string();
    if !authorized(&opts, &headers) {
        let status = StatusCode::UNAUTHORIZED;
        let mut res = answer(status, &status_body(status, &notice));
        res.headers_mut().insert(
            WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return res;
    }
    let Some(file) = &opts.file else {
        return match demo_position(&notice) {
            Some(position) => answer(StatusCode::OK, &position),
            None => answer(
                StatusCode::NOT_FOUND,
                &status_body(StatusCode::NOT_FOUND, &notice),
            ),
        };
    };
    let text = match tokio::fs::read_to_string(file).await {
        Ok(t) => t,
        Err(e) => return broken(&notice, format!("cannot read {}: {e}", file.display())),
    };
    let mut entries: Map<String, Value> = match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return broken(&notice, format!("{} is not a JSON object", file.display())),
        Err(e) => return broken(&notice, format!("{} is not JSON: {e}", file.display())),
    };
    let Some(entry) = entries.remove(&notice) else {
        return answer(
            StatusCode::NOT_FOUND,
            &status_body(StatusCode::NOT_FOUND, &notice),
        );
    };
    let Value::Object(mut entry) = entry else {
        return broken(&notice, "the entry is not a JSON object".into());
    };
    match behaviour(&mut entry) {
        Ok((delay, status)) => {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if status == StatusCode::OK {
                answer(status, &Value::Object(entry))
            } else {
                answer(status, &status_body(status, &notice))
            }
        }
        Err(detail) => broken(&notice, detail),
    }
}

fn soap(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

fn soap_fault(status: StatusCode, why: &str) -> Response {
    let why = why.replace('&', "&amp;").replace('<', "&lt;");
    soap(
        status,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><soapenv:Fault><faultcode>soapenv:Server</faultcode><faultstring>{why}</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#
        ),
    )
}

/// Counts recorded requests, for their file names.
static RECORDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// MyPay's `paaSILVerificaEsterna`, answered from the file or the demo rule.
async fn verify_soap(
    State(opts): State<Arc<ExternalOptions>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use snodo_adapters::mypay_esterni::notice::{NoticePayment, NoticeReply, NoticeRequest};
    use snodo_adapters::mypay_esterni::{Payment, Reply, Request};
    if let Some(dir) = &opts.record {
        let n = RECORDED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = dir.join(format!("{n}.xml"));
        if let Err(e) = tokio::fs::write(&path, &body).await {
            eprintln!("sim: cannot record {}: {e}", path.display());
        }
    }
    if !authorized(&opts, &headers) {
        return soap_fault(StatusCode::UNAUTHORIZED, "Bearer token required");
    }
    // MyPay's old call (`paaSILVerificaEsterna`, by IUV) or MyPay4's new-model one
    // (`paExternalVerifyPaymentNotice`, by notice number): the same entries answer both.
    let (iuv, new_model) = match Request::parse(&body) {
        Ok(r) => (r.iuv, None),
        Err(old) => match NoticeRequest::parse(&body) {
            Ok(r) => match snodo_core::NoticeNumber::parse(&r.notice_number) {
                Ok(n) => (n.iuv().as_str().to_string(), Some(r)),
                Err(e) => return soap_fault(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            Err(_) => return soap_fault(StatusCode::INTERNAL_SERVER_ERROR, &old.to_string()),
        },
    };
    let request = IuvOnly { iuv };
    let fault = |code: &str, text: &str| {
        let envelope = match &new_model {
            Some(_) => NoticeReply::Refused {
                code: code.into(),
                string: text.into(),
            }
            .envelope(),
            None => Reply::Refused {
                code: code.into(),
                string: text.into(),
            }
            .envelope(),
        };
        soap(StatusCode::OK, envelope)
    };
    let unknown = || fault("PAA_PAGAMENTO_SCONOSCIUTO", "Pagamento sconosciuto");
    let same_iuv = |notice: &str| {
        snodo_core::NoticeNumber::parse(notice).is_ok_and(|n| n.iuv().as_str() == request.iuv)
    };
    let (notice, mut entry) = match &opts.file {
        None => {
            // The demo rule, on the notice numbers this IUV can have (aux digit 3 first).
            let found = ["3", "1"]
                .iter()
                .map(|aux| format!("{aux}{}", request.iuv))
                .chain((0..100).map(|code| format!("0{code:02}{}", request.iuv)))
                .find_map(|n| demo_position(&n).map(|p| (n, p)));
            match found {
                Some((n, Value::Object(p))) => (n, p),
                _ => return unknown(),
            }
        }
        Some(file) => {
            let text = match tokio::fs::read_to_string(file).await {
                Ok(t) => t,
                Err(e) => {
                    return soap_fault(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("cannot read {}: {e}", file.display()),
                    )
                }
            };
            let entries: Map<String, Value> = match serde_json::from_str(&text) {
                Ok(Value::Object(m)) => m,
                _ => {
                    return soap_fault(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("{} is not a JSON object", file.display()),
                    )
                }
            };
            match entries.into_iter().find(|(n, _)| same_iuv(n)) {
                Some((n, Value::Object(e))) => (n, e),
                Some(_) => {
                    return soap_fault(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the entry is not a JSON object",
                    )
                }
                None => return unknown(),
            }
        }
    };
    let (delay, status) = match behaviour(&mut entry) {
        Ok(b) => b,
        Err(detail) => return soap_fault(StatusCode::INTERNAL_SERVER_ERROR, &detail),
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = entry.get("faultCode").and_then(Value::as_str) {
        return fault(code, "risposta di prova");
    }
    match status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return unknown(),
        StatusCode::GONE => return fault("PAA_PAGAMENTO_ANNULLATO", "Pagamento annullato"),
        other => return soap_fault(other, &format!("notice {notice}: HTTP {other}")),
    }
    let cents = entry
        .get("amountCents")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let text = |k: &str| entry.get(k).and_then(Value::as_str).map(str::to_string);
    let amount = snodo_core::Amount::from_cents(cents);
    let causale = text("causale").unwrap_or_default();
    let envelope = match new_model {
        Some(r) => NoticeReply::Payable(NoticePayment {
            amount,
            description: causale.chars().take(35).collect(),
            detail: causale.chars().take(140).collect(),
            due_date: text("dueDate"),
            fiscal_code_pa: r.qr_fiscal_code,
            company_name: "Ente".into(),
            office_name: "Ufficio".into(),
        })
        .envelope(),
        None => Reply::Payable(Payment {
            amount,
            iban: text("iban").unwrap_or_else(|| DEMO_IBAN.to_string()),
            bic: None,
            causale,
            credentials: None,
        })
        .envelope(),
    };
    soap(StatusCode::OK, envelope)
}

/// What the lookup needs of either call.
struct IuvOnly {
    iuv: String,
}

/// Takes `delayMs` and `status` out of an entry.
fn behaviour(entry: &mut Map<String, Value>) -> Result<(Option<Duration>, StatusCode), String> {
    let delay = match entry.remove("delayMs") {
        None => None,
        Some(v) => {
            let ms = v
                .as_u64()
                .ok_or_else(|| format!("delayMs {v} is not a whole number of milliseconds"))?;
            Some(Duration::from_millis(ms).min(MAX_DELAY))
        }
    };
    let status = match entry.remove("status") {
        None => StatusCode::OK,
        Some(v) => v
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| (100..=599).contains(n))
            .and_then(|n| StatusCode::from_u16(n).ok())
            .ok_or_else(|| format!("status {v} is not an HTTP status (100-599)"))?,
    };
    Ok((delay, status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Serves `opts` on a loopback port; the server lives as long as the test's runtime.
    async fn start(opts: ExternalOptions) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(opts)).await });
        base
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = client().get(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let ct = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(ct.as_deref(), Some("application/json"), "{path}");
        let body: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        (status, body)
    }

    fn position(cents: i64) -> Value {
        json!({
            "amountCents": cents,
            "dueDate": "2026-12-31",
            "payer": {"type": "F", "id": "RSSMRA80A01H501U", "name": "Mario Rossi"},
            "causale": "Mensa 2026",
            "iud": "MENSA-1",
        })
    }

    #[tokio::test]
    async fn answers_from_the_file_read_on_every_request() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notices.json");
        let mut slow = position(700);
        slow["delayMs"] = json!(400);
        let entries = json!({
            "301000000000000001": position(1500),
            "301000000000000002": {"status": 404},
            "301000000000000003": {"status": 410},
            "301000000000000004": {"status": 500},
            "301000000000000005": slow,
            "301000000000000006": {"status": 200, "amountCents": 9},
            "301000000000000007": "not an object",
            "301000000000000008": {"status": 42},
        });
        std::fs::write(&file, entries.to_string()).unwrap();
        let base = start(ExternalOptions {
            file: Some(file.clone()),
            token: None,
            record: None,
        })
        .await;

        // A position, verbatim, under any prefix; the last segment is the notice.
        let (s, body) = get(&base, "/external/erp/301000000000000001", None).await;
        assert_eq!((s, &body), (200, &position(1500)));
        let (s, body) = get(&base, "/external/a/b/c/301000000000000001/", None).await;
        assert_eq!((s, &body), (200, &position(1500)));
        let (s, body) = get(&base, "/external/301000000000000006", None).await;
        assert_eq!((s, body), (200, json!({"amountCents": 9})));

        for (notice, status) in [
            ("301000000000000002", 404),
            ("301000000000000003", 410),
            ("301000000000000004", 500),
            ("301000000000000099", 404),
        ] {
            let (s, body) = get(&base, &format!("/external/erp/{notice}"), None).await;
            assert_eq!(s, status, "{notice}: {body}");
            assert_eq!(body["status"], json!(status), "{body}");
            assert_eq!(body["noticeNumber"], json!(notice), "{body}");
        }
        let (s, body) = get(&base, "/external/erp/301000000000000003", None).await;
        assert_eq!((s, body["title"].as_str()), (410, Some("Gone")));

        // Broken entries are the stand-in's own errors: 500 saying why.
        for notice in ["301000000000000007", "301000000000000008"] {
            let (s, body) = get(&base, &format!("/external/erp/{notice}"), None).await;
            assert_eq!(s, 500, "{body}");
            assert!(body["detail"].is_string(), "{body}");
        }

        // The delay, then the position without the behaviour keys.
        let t0 = Instant::now();
        let (s, body) = get(&base, "/external/erp/301000000000000005", None).await;
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!((s, body), (200, position(700)));

        // The file changes while serving: the next request sees it.
        std::fs::write(
            &file,
            json!({"301000000000000001": {"status": 410}}).to_string(),
        )
        .unwrap();
        let (s, _) = get(&base, "/external/erp/301000000000000001", None).await;
        assert_eq!(s, 410);
        let (s, _) = get(&base, "/external/erp/301000000000000002", None).await;
        assert_eq!(s, 404, "gone from the file: unknown");

        // An unreadable file: 500.
        std::fs::write(&file, "{ not json").unwrap();
        let (s, body) = get(&base, "/external/erp/301000000000000001", None).await;
        assert_eq!(s, 500);
        assert!(
            body["detail"].as_str().unwrap().contains("not JSON"),
            "{body}"
        );
        std::fs::remove_file(&file).unwrap();
        let (s, body) = get(&base, "/external/erp/301000000000000001", None).await;
        assert_eq!(s, 500);
        assert!(
            body["detail"].as_str().unwrap().contains("cannot read"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn demo_rule_without_a_file() {
        let base = start(ExternalOptions::default()).await;
        // aux 3: the 16th digit (before the two check digits) decides.
        let (s, body) = get(&base, "/external/ztl/302000000000000436", None).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(
            body,
            json!({
                "amountCents": 2500,
                "dueDate": "2099-12-31",
                "payer": {"type": "F", "id": "RSSMRA80A01H501U", "name": "Mario Rossi"},
                "causale": "Permesso ZTL 302000000000000436",
            })
        );
        for (notice, status) in [
            ("302000000000000417", 200), // body ends in 4, last digit odd
            ("302000000000000354", 404), // body ends in 3, last digit even
            ("100000000000000002", 200), // aux 1: no check digits, the last one decides
            ("100000000000000021", 404),
            ("000000000000000099", 200),
            ("402000000000000436", 404), // aux 4 does not exist
            ("30200000000000043", 404),  // 17 digits
            ("30200000000000043x", 404),
        ] {
            let (s, body) = get(&base, &format!("/external/ztl/{notice}"), None).await;
            assert_eq!(s, status, "{notice}: {body}");
        }
        assert_eq!(demo_position("302000000000000531"), None);
        assert!(demo_position("302000000000000621").is_some());
    }

    #[tokio::test]
    async fn the_token_is_checked_first() {
        let base = start(ExternalOptions {
            file: None,
            token: Some("s3cret".into()),
            record: None,
        })
        .await;
        let path = "/external/ztl/302000000000000436";
        let res = client().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 401);
        assert_eq!(
            res.headers()
                .get("www-authenticate")
                .unwrap()
                .to_str()
                .unwrap(),
            "Bearer"
        );
        assert_eq!(get(&base, path, Some("wrong")).await.0, 401);
        assert_eq!(get(&base, path, Some("s3cret")).await.0, 200);
        // Even for an unknown notice: 401 before 404.
        assert_eq!(get(&base, "/external/ztl/1", None).await.0, 401);
        assert_eq!(get(&base, "/external/ztl/1", Some("s3cret")).await.0, 404);
    }
}
