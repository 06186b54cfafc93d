//! The pagoPA Checkout stand-in, and the server of `snodo sim --serve` that carries it with the
//! [external-verification stand-in](crate::external).
//!
//! A hub in Gateway mode sends a citizen's cart to Checkout (`POST /carts` of the EC API v2,
//! `checkout_v2.json` of the pagoPA specifications) and redirects the citizen to the URL of its
//! `302`. This stand-in plays Checkout *and* the citizen's payment: opening that URL shows the
//! cart, and its "Pay" button pays every notice on the hub exactly as `snodo sim` does (verify,
//! `paGetPaymentV2`, `paSendRTV2` through a [`Payer`]), then redirects to the cart's return URL.
//!
//! Routes:
//!
//! - `POST /checkout/ec/v2/carts`: the Checkout API. The subscription key must be given
//!   (`Ocp-Apim-Subscription-Key` header or, as the specification also allows, the
//!   `subscription-key` query parameter), else `401`. The body is a `CartRequestV2`: 1 to 5
//!   `paymentNotices` (`noticeNumber` 18 characters, `fiscalCode` 11, `amount` an integer of
//!   cents >= 1, `companyName` and `description` at most 140 characters), `returnUrls` with all
//!   four URLs, optional `emailNotice`, `idCart` and `allCCP`; else `400`. Errors are
//!   `ProblemJson` (`{"type": "about:blank", "title", "status", "detail"}`,
//!   `application/json`). A valid cart is kept in memory (a cart with the `idCart` of another
//!   replaces it) and answered `302` with `location: <base URL>/checkout/carts/<id>`: `idCart`
//!   when given, else 32 generated hex digits.
//! - `GET /checkout/carts/{id}`: an HTML page with the notices and a form posting to `.../pay`.
//! - `POST /checkout/carts/{id}/pay`: pays every notice in order, then `303` to `returnOkUrl`
//!   when all were paid, else to `returnErrorUrl`, with a `text/plain` body of one line per
//!   notice: `<noticeNumber> OK <receiptId>`, `<noticeNumber> KO <faultCode>` (the hub's KO:
//!   `PAA_PAGAMENTO_DUPLICATO` when paid before) or `<noticeNumber> KO ERROR:<kind>` (no
//!   usable answer from the hub: `connect`, `timeout`, ...). Paying again drives the hub again.
//! - `GET /checkout/carts/{id}/status`: `{"id", "paid", "notices": [{"noticeNumber",
//!   "fiscalCode", "amountCents", "outcome": null | "OK" | "KO", "receiptId", "faultCode"}]}`.
//!   A notice once paid stays `OK` with its receipt (a later `KO PAA_PAGAMENTO_DUPLICATO` does
//!   not undo it); `paid` is true when every notice is `OK`.
//!
//! Unknown carts are `404`.

use crate::external::{self, ExternalOptions};
use crate::receipt::ReceiptIds;
use crate::{NoticeTarget, Payer, PaymentOutcome, SimError, SimOptions};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The path of the Checkout API a hub is configured with (its `.../checkout/ec/v2`), plus
/// `/carts`.
pub const CARTS_PATH: &str = "/checkout/ec/v2/carts";
/// The subscription key header of the Checkout API.
pub const KEY_HEADER: &str = "Ocp-Apim-Subscription-Key";
/// At most this many notices in a cart (`maxItems` of `paymentNotices`).
const MAX_NOTICES: usize = 5;
/// `maxLength` of `companyName` and `description`.
const MAX_TEXT: usize = 140;

/// What `snodo sim --serve` serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `address:port` to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// The base of the URLs handed out (the `location` of a new cart), when the stand-ins are
    /// reached through another name than the address they listen on. Default:
    /// `http://<listen address>` (a wildcard address becoming loopback).
    pub public_url: Option<String>,
    /// The Checkout subscription key (`Ocp-Apim-Subscription-Key`) a cart must come with.
    pub checkout_key: String,
    /// The external-verification stand-in.
    pub external: ExternalOptions,
    /// pagoPA's reporting services (FdR 3 REST and the legacy SOAP) over the flows published
    /// in a ledger directory; `None`: not served.
    pub fdr: Option<crate::fdr::FdrOptions>,
    /// How carts are paid: the hub's URL, the broker and station it expects, the flow (see
    /// [`Payer::new`]; the notices are ignored).
    pub payer: SimOptions,
}

impl ServeOptions {
    /// Subscription key `demo`, the demo external rule, carts paid on the hub of `payer`.
    pub fn new(listen: impl Into<String>, payer: SimOptions) -> Self {
        Self {
            listen: listen.into(),
            public_url: None,
            checkout_key: "demo".into(),
            external: ExternalOptions::default(),
            fdr: None,
            payer,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        listen: String,
        source: std::io::Error,
    },
    #[error("bad public URL {url:?}: {reason}")]
    PublicUrl { url: String, reason: String },
    #[error(transparent)]
    Payer(#[from] SimError),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// The stand-ins, bound and not serving yet (so a caller can learn the port of `:0`).
pub struct StandIns {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    base_url: String,
    app: Router,
}

impl StandIns {
    /// Checks the options and binds the address. Nothing is sent to the hub yet.
    pub async fn bind(opts: ServeOptions) -> Result<Self, ServeError> {
        let payer = Payer::new(&opts.payer)?;
        let listen_error = |source| ServeError::Listen {
            listen: opts.listen.clone(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(&opts.listen)
            .await
            .map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        let base_url = match &opts.public_url {
            Some(url) => url.trim().trim_end_matches('/').to_string(),
            None => format!("http://{}", connectable(addr)),
        };
        let base =
            reqwest::Url::parse(&format!("{base_url}/")).map_err(|e| ServeError::PublicUrl {
                url: base_url.clone(),
                reason: e.to_string(),
            })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(ServeError::PublicUrl {
                url: base_url,
                reason: "an http:// or https:// URL is needed".into(),
            });
        }
        let checkout = Arc::new(Checkout {
            key: opts.checkout_key,
            base,
            payer,
            carts: Mutex::default(),
            ids: ReceiptIds::random(),
            next: AtomicUsize::new(0),
        });
        let mut app = Router::new()
            .route(CARTS_PATH, post(create_cart))
            .route("/checkout/carts/{id}", get(page))
            .route("/checkout/carts/{id}/pay", post(pay))
            .route("/checkout/carts/{id}/status", get(status))
            .with_state(checkout)
            .merge(crate::demand::router(opts.external.token.clone()))
            .merge(external::router(opts.external));
        if let Some(fdr) = opts.fdr {
            app = app.merge(crate::fdr::router(fdr));
        }
        Ok(Self {
            listener,
            addr,
            base_url,
            app,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base of the URLs it hands out, without a trailing `/`: `http://127.0.0.1:8090`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Serves until `shutdown` completes, then lets the requests in flight finish (2 s at
    /// most).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        crate::receiver::serve_until(self.listener, self.app, shutdown)
            .await
            .map_err(ServeError::Serve)
    }
}

/// Binds, prints `sim: checkout and external stand-ins on http://<address>` on standard output
/// (once listening), and serves until `shutdown` completes.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let flows = opts
        .fdr
        .as_ref()
        .map(|f| f.ledger.join(crate::flows::FLOWS_DIR));
    let stand_ins = StandIns::bind(opts).await?;
    let mut said = format!(
        "sim: checkout and external stand-ins on http://{}\n",
        connectable(stand_ins.local_addr())
    );
    if let Some(flows) = flows {
        said.push_str(&format!(
            "sim: reporting (FdR 3 {}, nodeForPa {}) serving {}\n",
            crate::fdr::FDR_ORG_PATH,
            crate::fdr::NODE_FOR_PA_PATH,
            flows.display()
        ));
    }
    // One write, and a reader that stops after the first line (as scripts and tests do) must
    // not stop the server: `println!` would panic on the closed pipe.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(said.as_bytes()).and_then(|()| out.flush());
    }
    stand_ins.run(shutdown).await
}

/// An address one can connect to: the wildcard addresses become loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// `CartRequestV2`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CartRequest {
    email_notice: Option<String>,
    payment_notices: Vec<PaymentNotice>,
    return_urls: ReturnUrls,
    id_cart: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentNotice {
    notice_number: String,
    fiscal_code: String,
    /// Euro cents.
    amount: i64,
    company_name: String,
    description: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReturnUrls {
    return_ok_url: String,
    return_cancel_url: String,
    return_error_url: String,
    return_waiting_url: String,
}

impl CartRequest {
    /// Every rule of the specification the request breaks.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let n = self.payment_notices.len();
        if !(1..=MAX_NOTICES).contains(&n) {
            out.push(format!(
                "paymentNotices: {n} items, 1 to {MAX_NOTICES} allowed"
            ));
        }
        let mut length = |field: String, value: &str, ok: &dyn Fn(usize) -> bool, rule: &str| {
            let len = value.chars().count();
            if !ok(len) {
                out.push(format!("{field}: {len} characters, {rule}"));
            }
        };
        for (i, p) in self.payment_notices.iter().enumerate() {
            let at = |f: &str| format!("paymentNotices[{i}].{f}");
            length(
                at("noticeNumber"),
                &p.notice_number,
                &|l| l == 18,
                "18 required",
            );
            length(
                at("fiscalCode"),
                &p.fiscal_code,
                &|l| l == 11,
                "11 required",
            );
            length(
                at("companyName"),
                &p.company_name,
                &|l| l <= MAX_TEXT,
                "140 at most",
            );
            length(
                at("description"),
                &p.description,
                &|l| l <= MAX_TEXT,
                "140 at most",
            );
        }
        for (i, p) in self.payment_notices.iter().enumerate() {
            if p.amount < 1 {
                out.push(format!(
                    "paymentNotices[{i}].amount: {}, at least 1 (euro cents)",
                    p.amount
                ));
            }
        }
        let urls = &self.return_urls;
        for (field, url) in [
            ("returnOkUrl", &urls.return_ok_url),
            ("returnCancelUrl", &urls.return_cancel_url),
            ("returnErrorUrl", &urls.return_error_url),
            ("returnWaitingUrl", &urls.return_waiting_url),
        ] {
            if url.trim().is_empty() || HeaderValue::from_str(url).is_err() {
                out.push(format!("returnUrls.{field}: not a URL"));
            }
        }
        if let Some(email) = &self.email_notice {
            if !email.contains('@') || email.chars().any(char::is_whitespace) {
                out.push("emailNotice: not an email address".into());
            }
        }
        if let Some(id) = &self.id_cart {
            if id.is_empty() || id.chars().any(char::is_control) {
                out.push("idCart: empty or with control characters".into());
            }
        }
        out
    }
}

struct Cart {
    request: CartRequest,
    /// Per notice, the last outcome (the paid one once paid).
    outcomes: Vec<Option<PaymentOutcome>>,
}

impl Cart {
    fn paid(&self) -> bool {
        self.outcomes
            .iter()
            .all(|o| o.as_ref().is_some_and(PaymentOutcome::is_paid))
    }
}

struct Checkout {
    key: String,
    /// Ends with `/`.
    base: reqwest::Url,
    payer: Payer,
    carts: Mutex<HashMap<String, Cart>>,
    ids: ReceiptIds,
    next: AtomicUsize,
}

impl Checkout {
    fn carts(&self) -> MutexGuard<'_, HashMap<String, Cart>> {
        // A poisoned lock means a handler panicked mid-update; the carts are still usable.
        self.carts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `<base>/checkout/carts/<id>`, the id percent-encoded as a path segment.
    fn cart_url(&self, id: &str) -> Option<reqwest::Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .extend(["checkout", "carts", id]);
        Some(url)
    }
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn create_cart(
    State(co): State<Arc<Checkout>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .or(query.get("subscription-key").map(String::as_str));
    match key {
        Some(k) if k == co.key => {}
        Some(_) => return problem(StatusCode::UNAUTHORIZED, "invalid subscription key"),
        None => {
            return problem(
                StatusCode::UNAUTHORIZED,
                format!("missing subscription key ({KEY_HEADER})"),
            )
        }
    }
    let request: CartRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("invalid CartRequest: {e}")),
    };
    let problems = request.problems();
    if !problems.is_empty() {
        return problem(StatusCode::BAD_REQUEST, problems.join("; "));
    }
    let id = match &request.id_cart {
        Some(id) => id.clone(),
        None => co.ids.id(co.next.fetch_add(1, Ordering::Relaxed)),
    };
    let Some(location) = co
        .cart_url(&id)
        .and_then(|u| HeaderValue::from_str(u.as_str()).ok())
    else {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot build the cart URL",
        );
    };
    let outcomes = vec![None; request.payment_notices.len()];
    co.carts().insert(id, Cart { request, outcomes });
    (StatusCode::FOUND, [(LOCATION, location)]).into_response()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234` cents: `12.34`.
fn euros(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

/// The outcome as the `pay` answer says it: `OK <receiptId>`, `KO <faultCode>`.
fn outcome_text(outcome: &PaymentOutcome) -> String {
    match outcome {
        PaymentOutcome::Paid {
            receipt_id: Some(id),
        } => format!("OK {id}"),
        PaymentOutcome::Paid { receipt_id: None } => "OK".into(),
        PaymentOutcome::Refused { fault_code } => format!("KO {fault_code}"),
        PaymentOutcome::Failed { kind } => format!("KO ERROR:{kind}"),
    }
}

async fn page(State(co): State<Arc<Checkout>>, Path(id): Path<String>) -> Response {
    let carts = co.carts();
    let (Some(cart), Some(url)) = (carts.get(&id), co.cart_url(&id)) else {
        return (
            StatusCode::NOT_FOUND,
            [(CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!doctype html><title>Cart not found</title><p>No such cart.</p>\n",
        )
            .into_response();
    };
    let id_html = html_escape(&id);
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>pagoPA Checkout (simulated): cart {id_html}</title></head><body>\n\
         <h1>pagoPA Checkout (simulated)</h1>\n<p>Cart <code>{id_html}</code></p>\n\
         <table border=\"1\"><tr><th>Notice</th><th>Entity</th><th>Description</th>\
         <th>Amount (EUR)</th><th>Outcome</th></tr>\n"
    );
    let mut total: i64 = 0;
    for (p, o) in cart.request.payment_notices.iter().zip(&cart.outcomes) {
        total = total.saturating_add(p.amount);
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(&p.notice_number),
            html_escape(&p.company_name),
            html_escape(&p.fiscal_code),
            html_escape(&p.description),
            euros(p.amount),
            o.as_ref()
                .map(|o| html_escape(&outcome_text(o)))
                .unwrap_or_default(),
        );
    }
    let _ = write!(
        html,
        "</table>\n<p>Total: EUR {}</p>\n\
         <form method=\"post\" action=\"{}/pay\"><button type=\"submit\">Pay</button></form>\n\
         </body></html>\n",
        euros(total),
        html_escape(url.as_str()),
    );
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

async fn pay(State(co): State<Arc<Checkout>>, Path(id): Path<String>) -> Response {
    let Some((targets, urls)) = co.carts().get(&id).map(|c| {
        let targets: Vec<NoticeTarget> = c
            .request
            .payment_notices
            .iter()
            .map(|p| NoticeTarget {
                fiscal_code: p.fiscal_code.clone(),
                notice_number: p.notice_number.clone(),
            })
            .collect();
        (targets, c.request.return_urls.clone())
    }) else {
        return problem(StatusCode::NOT_FOUND, format!("no cart {id:?}"));
    };
    let mut outcomes = Vec::with_capacity(targets.len());
    for t in &targets {
        outcomes.push(co.payer.pay(t).await);
    }
    let mut body = String::new();
    for (t, o) in targets.iter().zip(&outcomes) {
        let _ = writeln!(body, "{} {}", t.notice_number, outcome_text(o));
    }
    let all_paid = outcomes.iter().all(PaymentOutcome::is_paid);
    if let Some(cart) = co.carts().get_mut(&id) {
        // The same notices (a cart with this idCart may have replaced it meanwhile).
        for ((t, o), (p, slot)) in targets
            .iter()
            .zip(outcomes)
            .zip(cart.request.payment_notices.iter().zip(&mut cart.outcomes))
        {
            let paid_before = slot.as_ref().is_some_and(PaymentOutcome::is_paid);
            if p.notice_number == t.notice_number && !paid_before {
                *slot = Some(o);
            }
        }
    }
    let to = if all_paid {
        &urls.return_ok_url
    } else {
        &urls.return_error_url
    };
    let Ok(location) = HeaderValue::from_str(to) else {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "bad return URL");
    };
    (
        StatusCode::SEE_OTHER,
        [
            (LOCATION, location),
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn status(State(co): State<Arc<Checkout>>, Path(id): Path<String>) -> Response {
    let carts = co.carts();
    let Some(cart) = carts.get(&id) else {
        return problem(StatusCode::NOT_FOUND, format!("no cart {id:?}"));
    };
    let notices: Vec<Value> = cart
        .request
        .payment_notices
        .iter()
        .zip(&cart.outcomes)
        .map(|(p, o)| {
            let (outcome, receipt_id, fault_code) = match o {
                None => (None, None, None),
                Some(PaymentOutcome::Paid { receipt_id }) => (Some("OK"), receipt_id.clone(), None),
                Some(PaymentOutcome::Refused { fault_code }) => {
                    (Some("KO"), None, Some(fault_code.clone()))
                }
                Some(PaymentOutcome::Failed { kind }) => {
                    (Some("KO"), None, Some(format!("ERROR:{kind}")))
                }
            };
            json!({
                "noticeNumber": p.notice_number,
                "fiscalCode": p.fiscal_code,
                "amountCents": p.amount,
                "outcome": outcome,
                "receiptId": receipt_id,
                "faultCode": fault_code,
            })
        })
        .collect();
    let body = json!({"id": id, "paid": cart.paid(), "notices": notices});
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{start_fake_hub, BROKER, NOTICES, PADOVA, STATION};

    struct Running {
        base: String,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<Result<(), ServeError>>,
    }

    impl Running {
        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            (&mut self.done).await.unwrap().unwrap();
        }
    }

    async fn start_with(hub_url: &str, edit: impl FnOnce(&mut ServeOptions)) -> Running {
        let payer = SimOptions::new(hub_url, BROKER, STATION, Vec::new());
        let mut opts = ServeOptions::new("127.0.0.1:0", payer);
        opts.checkout_key = "k3y".into();
        edit(&mut opts);
        let stand_ins = StandIns::bind(opts).await.unwrap();
        // Where to send requests (the base URL handed out may be a public name).
        let base = format!("http://{}", stand_ins.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(stand_ins.run(async {
            let _ = stopped.await;
        }));
        Running {
            base,
            stop: Some(stop),
            done,
        }
    }

    async fn start(hub_url: &str) -> Running {
        start_with(hub_url, |_| {}).await
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    fn notice(number: &str, cents: i64) -> Value {
        json!({
            "noticeNumber": number,
            "fiscalCode": PADOVA,
            "amount": cents,
            "companyName": "Comune di Padova",
            "description": "TARI <2027> & co",
        })
    }

    fn cart(notices: Vec<Value>) -> Value {
        json!({
            "emailNotice": "mario.rossi@example.it",
            "paymentNotices": notices,
            "returnUrls": {
                "returnOkUrl": "https://ente.example/ok",
                "returnCancelUrl": "https://ente.example/cancel",
                "returnErrorUrl": "https://ente.example/error",
                "returnWaitingUrl": "https://ente.example/waiting",
            },
            "allCCP": "false",
        })
    }

    async fn post_cart(base: &str, key: Option<&str>, body: &str) -> reqwest::Response {
        let mut req = client()
            .post(format!("{base}{CARTS_PATH}"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            req = req.header(KEY_HEADER, k);
        }
        req.send().await.unwrap()
    }

    async fn problem_of(res: reqwest::Response) -> (u16, Value) {
        let status = res.status().as_u16();
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "application/json"
        );
        let body: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        assert_eq!(body["status"], json!(status), "{body}");
        assert_eq!(body["type"], json!("about:blank"), "{body}");
        (status, body)
    }

    fn location(res: &reqwest::Response) -> String {
        res.headers()
            .get("location")
            .expect("a location")
            .to_str()
            .unwrap()
            .to_string()
    }

    async fn status_of(base: &str, id: &str) -> Value {
        let res = client()
            .get(format!("{base}/checkout/carts/{id}/status"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        serde_json::from_str(&res.text().await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn the_subscription_key_is_required() {
        let sim = start("http://127.0.0.1:9").await;
        let body = cart(vec![notice(NOTICES[0], 1000)]).to_string();
        let (s, p) = problem_of(post_cart(&sim.base, None, &body).await).await;
        assert_eq!(s, 401);
        assert!(p["detail"].as_str().unwrap().contains(KEY_HEADER), "{p}");
        let (s, _) = problem_of(post_cart(&sim.base, Some("demo"), &body).await).await;
        assert_eq!(s, 401, "the configured key, not the default one");
        // The query parameter the specification also allows.
        let res = client()
            .post(format!("{}{CARTS_PATH}?subscription-key=k3y", sim.base))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 302);
        // The key is checked before the body.
        let (s, _) = problem_of(post_cart(&sim.base, None, "not json").await).await;
        assert_eq!(s, 401);
        sim.stop().await;
    }

    #[tokio::test]
    async fn invalid_carts_are_400() {
        let sim = start("http://127.0.0.1:9").await;
        let ok = notice(NOTICES[0], 1000);
        let mut no_waiting = cart(vec![ok.clone()]);
        no_waiting["returnUrls"]
            .as_object_mut()
            .unwrap()
            .remove("returnWaitingUrl");
        let mut no_urls = cart(vec![ok.clone()]);
        no_urls.as_object_mut().unwrap().remove("returnUrls");
        let with = |field: &str, value: Value| {
            let mut n = ok.clone();
            n[field] = value;
            cart(vec![n]).to_string()
        };
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "invalid CartRequest"),
            (cart(vec![]).to_string(), "paymentNotices: 0 items"),
            (
                cart(vec![ok.clone(); 6]).to_string(),
                "paymentNotices: 6 items",
            ),
            (
                with("noticeNumber", json!("30071570000000003")),
                "paymentNotices[0].noticeNumber: 17 characters",
            ),
            (
                with("fiscalCode", json!("0064406028")),
                "paymentNotices[0].fiscalCode: 10 characters",
            ),
            (with("amount", json!(0)), "paymentNotices[0].amount: 0"),
            (with("amount", json!(-5)), "paymentNotices[0].amount: -5"),
            (with("amount", json!(10.5)), "invalid CartRequest"),
            (with("amount", json!("1000")), "invalid CartRequest"),
            (
                with("companyName", json!("x".repeat(141))),
                "paymentNotices[0].companyName: 141 characters",
            ),
            (
                with("description", json!("è".repeat(141))),
                "paymentNotices[0].description: 141 characters",
            ),
            (no_waiting.to_string(), "returnWaitingUrl"),
            (no_urls.to_string(), "returnUrls"),
        ];
        for (body, expected) in cases {
            let (s, p) = problem_of(post_cart(&sim.base, Some("k3y"), &body).await).await;
            assert_eq!(s, 400, "{body}");
            let detail = p["detail"].as_str().unwrap();
            assert!(detail.contains(expected), "{expected:?} in {detail:?}");
        }
        // Every broken rule is said at once.
        let mut two = ok.clone();
        two["fiscalCode"] = json!("1");
        two["amount"] = json!(0);
        let body = cart(vec![ok.clone(), two]).to_string();
        let (_, p) = problem_of(post_cart(&sim.base, Some("k3y"), &body).await).await;
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("paymentNotices[1].fiscalCode")
                && detail.contains("paymentNotices[1].amount"),
            "{detail}"
        );
        // 140 characters (not bytes) are fine; 5 notices too.
        let mut long = ok.clone();
        long["description"] = json!("è".repeat(140));
        let body = cart(vec![long; 5]).to_string();
        assert_eq!(
            post_cart(&sim.base, Some("k3y"), &body)
                .await
                .status()
                .as_u16(),
            302
        );
        sim.stop().await;
    }

    #[tokio::test]
    async fn a_cart_redirects_to_its_page() {
        let sim = start("http://127.0.0.1:9").await;
        let mut body = cart(vec![notice(NOTICES[0], 1000), notice(NOTICES[1], 1250)]);
        body["idCart"] = json!("cart 1/a");
        let res = post_cart(&sim.base, Some("k3y"), &body.to_string()).await;
        assert_eq!(res.status().as_u16(), 302);
        let url = location(&res);
        assert_eq!(url, format!("{}/checkout/carts/cart%201%2Fa", sim.base));

        let page = client().get(&url).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 200);
        assert_eq!(
            page.headers().get("content-type").unwrap(),
            "text/html; charset=utf-8"
        );
        let html = page.text().await.unwrap();
        assert!(
            html.contains(NOTICES[0]) && html.contains(NOTICES[1]),
            "{html}"
        );
        assert!(html.contains("TARI &lt;2027&gt; &amp; co"), "{html}");
        assert!(!html.contains("<2027>"), "{html}");
        assert!(html.contains("<td>12.50</td>"), "{html}");
        assert!(html.contains("Total: EUR 22.50"), "{html}");
        assert!(
            html.contains(&format!("<form method=\"post\" action=\"{url}/pay\">")),
            "{html}"
        );
        let status = status_of(&sim.base, "cart%201%2Fa").await;
        assert_eq!(status["id"], json!("cart 1/a"));
        assert_eq!(status["paid"], json!(false));
        assert_eq!(status["notices"][1]["amountCents"], json!(1250));
        assert_eq!(status["notices"][1]["outcome"], Value::Null);

        // Without idCart: a generated id, a new one each time.
        body.as_object_mut().unwrap().remove("idCart");
        let a = location(&post_cart(&sim.base, Some("k3y"), &body.to_string()).await);
        let b = location(&post_cart(&sim.base, Some("k3y"), &body.to_string()).await);
        let prefix = format!("{}/checkout/carts/", sim.base);
        let id = a.strip_prefix(&prefix).unwrap();
        assert_eq!(id.len(), 32, "{a}");
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
        assert_eq!(client().get(&a).send().await.unwrap().status(), 200);

        // Unknown carts.
        for res in [
            client().get(format!("{prefix}nope")).send().await.unwrap(),
            client()
                .get(format!("{prefix}nope/status"))
                .send()
                .await
                .unwrap(),
            client()
                .post(format!("{prefix}nope/pay"))
                .send()
                .await
                .unwrap(),
        ] {
            assert_eq!(res.status().as_u16(), 404);
        }
        sim.stop().await;
    }

    #[tokio::test]
    async fn public_url_is_the_base_of_locations() {
        let sim = start_with("http://127.0.0.1:9", |o| {
            o.public_url = Some("https://sim.example/pagopa/".into());
        })
        .await;
        let body = cart(vec![notice(NOTICES[0], 1000)]).to_string();
        let res = post_cart(&sim.base, Some("k3y"), &body).await;
        let url = location(&res);
        assert!(
            url.starts_with("https://sim.example/pagopa/checkout/carts/"),
            "{url}"
        );
        sim.stop().await;
        let payer = SimOptions::new("http://127.0.0.1:9", BROKER, STATION, Vec::new());
        let mut opts = ServeOptions::new("127.0.0.1:0", payer);
        opts.public_url = Some("ftp://x".into());
        assert!(matches!(
            StandIns::bind(opts).await,
            Err(ServeError::PublicUrl { .. })
        ));
    }

    /// Posts a cart for `notices` and pays it: the redirect and the lines.
    async fn pay_cart(base: &str, id: &str, notices: Vec<Value>) -> (String, Vec<String>) {
        let mut body = cart(notices);
        body["idCart"] = json!(id);
        let res = post_cart(base, Some("k3y"), &body.to_string()).await;
        assert_eq!(res.status().as_u16(), 302);
        pay_again(&location(&res)).await
    }

    async fn pay_again(cart_url: &str) -> (String, Vec<String>) {
        let res = client()
            .post(format!("{cart_url}/pay"))
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 303);
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "text/plain; charset=utf-8"
        );
        let to = location(&res);
        let text = res.text().await.unwrap();
        (to, text.lines().map(str::to_string).collect())
    }

    #[tokio::test]
    async fn paying_drives_the_hub_and_twice_is_duplicate() {
        let (hub_url, hub) = start_fake_hub().await;
        let sim = start(&hub_url).await;
        let notices = vec![notice(NOTICES[0], 1000), notice(NOTICES[1], 1250)];
        let (to, lines) = pay_cart(&sim.base, "c1", notices).await;
        assert_eq!(to, "https://ente.example/ok");
        assert_eq!(lines.len(), 2, "{lines:?}");
        let mut receipts = Vec::new();
        for (line, n) in lines.iter().zip(NOTICES) {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 3, "{line}");
            assert_eq!((f[0], f[1]), (n, "OK"), "{line}");
            assert_eq!(f[2].len(), 32, "{line}");
            receipts.push(f[2].to_string());
        }
        assert_ne!(receipts[0], receipts[1]);
        assert_eq!(hub.paid.lock().unwrap().len(), 2);
        let status = status_of(&sim.base, "c1").await;
        assert_eq!(status["paid"], json!(true), "{status}");
        assert_eq!(status["notices"][0]["outcome"], json!("OK"));
        assert_eq!(status["notices"][0]["receiptId"], json!(receipts[0]));
        assert_eq!(status["notices"][0]["faultCode"], Value::Null);

        // Again: the hub has them paid.
        let (to, lines) = pay_again(&format!("{}/checkout/carts/c1", sim.base)).await;
        assert_eq!(to, "https://ente.example/error");
        assert_eq!(
            lines,
            [
                format!("{} KO PAA_PAGAMENTO_DUPLICATO", NOTICES[0]),
                format!("{} KO PAA_PAGAMENTO_DUPLICATO", NOTICES[1]),
            ]
        );
        let again = status_of(&sim.base, "c1").await;
        assert_eq!(again, status, "paid stays paid");
        sim.stop().await;
    }

    #[tokio::test]
    async fn one_refused_notice_sends_to_the_error_url() {
        let (hub_url, _hub) = start_fake_hub().await;
        let sim = start(&hub_url).await;
        // A well-formed notice the fake hub does not have.
        let unknown = "301000000000012373";
        let notices = vec![notice(unknown, 1000), notice(NOTICES[2], 1500)];
        let (to, lines) = pay_cart(&sim.base, "c2", notices).await;
        assert_eq!(to, "https://ente.example/error");
        assert_eq!(lines[0], format!("{unknown} KO PAA_PAGAMENTO_SCONOSCIUTO"));
        assert!(
            lines[1].starts_with(&format!("{} OK ", NOTICES[2])),
            "{lines:?}"
        );
        let status = status_of(&sim.base, "c2").await;
        assert_eq!(status["paid"], json!(false));
        assert_eq!(status["notices"][0]["outcome"], json!("KO"));
        assert_eq!(
            status["notices"][0]["faultCode"],
            json!("PAA_PAGAMENTO_SCONOSCIUTO")
        );
        assert_eq!(status["notices"][1]["outcome"], json!("OK"));
        sim.stop().await;
    }

    #[tokio::test]
    async fn a_hub_that_is_down_is_an_error_line() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let sim = start(&url).await;
        let (to, lines) = pay_cart(&sim.base, "c3", vec![notice(NOTICES[0], 1000)]).await;
        assert_eq!(to, "https://ente.example/error");
        assert_eq!(lines, [format!("{} KO ERROR:connect", NOTICES[0])]);
        sim.stop().await;
    }

    #[tokio::test]
    async fn external_routes_are_served_too() {
        let sim = start_with("http://127.0.0.1:9", |o| {
            o.external.token = Some("t".into());
        })
        .await;
        let url = format!("{}/external/ztl/302000000000000436", sim.base);
        let res = client().get(&url).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 401);
        let res = client().get(&url).bearer_auth("t").send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
        sim.stop().await;
    }
}
