//! The web console at `/console` (docs/CONSOLE.md): pages and their JSON on the hub's own
//! listener, assets embedded in the binary.
//!
//! Sign-in takes the admin token (an operator: every entity) or an entity's API key (that entity
//! only), resolved by the same key table as the entity API ([`crate::api::Keys`]). A session is
//! an unguessable id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` under TLS), kept in
//! memory with the key's hash, so a key a reload removes ends its sessions at their next request.
//! Every POST but the sign-in carries the session's CSRF token (`X-CSRF-Token`, or the form field
//! `csrf`). Each JSON endpoint scopes itself to the session's entity on the server, and reads
//! through `crate::ops`, the operations the CLI and `/admin` use.

mod handlers;
mod samples;

use crate::api::Keys;
use crate::listen::{same_secret, Guard, Peer};
use crate::node::NodeService;
use crate::ops::Admin;
use crate::plan::{key_hash, Plan};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use snodo_store::Store;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "snodo_console";
/// A session unused this long ends.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, used or not.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; past it the oldest go first.
const MAX_SESSIONS: usize = 10_000;
/// Body limit of the console's requests (a sign-in form, an action): none carries more.
const MAX_BODY: usize = 16 * 1024;

/// Sent with every page and answer of the console: only the hub's own scripts, styles and
/// connections; no frames, no inline script.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_HTML: &str = include_str!("assets/app.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What the console needs from the running hub.
pub struct Parts {
    pub keys: Arc<Keys>,
    pub store: Arc<dyn Store>,
    pub node: Arc<NodeService>,
    pub guard: Arc<Guard>,
    pub started: Arc<AtomicBool>,
    /// Turns true when the hub stops: live event streams end.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

pub(crate) struct Console {
    keys: Arc<Keys>,
    admin: Admin,
    node: Arc<NodeService>,
    guard: Arc<Guard>,
    started: Arc<AtomicBool>,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    /// `Secure` on the cookie: the listener speaks TLS.
    secure: bool,
    sessions: Mutex<HashMap<String, Session>>,
    samples: Arc<samples::Samples>,
}

struct Session {
    /// SHA-256 of the key or token signed in with, resolved again at every request.
    key: [u8; 32],
    csrf: String,
    created: Instant,
    seen: Instant,
}

/// Who is asking, once the session is checked.
pub(crate) struct Who {
    pub key_id: String,
    /// `None`: an operator (every entity).
    pub entity: Option<String>,
    pub plan: Arc<Plan>,
    pub csrf: String,
}

impl Who {
    /// The entities a request may read: the session's own, or for an operator the one asked
    /// for, else all of them (IPA code order). An entity session asking for another entity gets
    /// 403, as the entity API answers.
    pub fn entities(&self, asked: Option<&str>) -> Result<Vec<String>, Refusal> {
        let asked = asked.filter(|a| !a.is_empty());
        match (&self.entity, asked) {
            (Some(own), None) => Ok(vec![own.clone()]),
            (Some(own), Some(a)) if a == own => Ok(vec![own.clone()]),
            (Some(_), Some(_)) => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "this session may only see its own entity",
            )),
            (None, Some(a)) if self.plan.entities.contains_key(a) => Ok(vec![a.to_string()]),
            (None, Some(a)) => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("no entity {a:?} on this hub"),
            )),
            (None, None) => {
                let mut all: Vec<String> = self.plan.entities.keys().cloned().collect();
                all.sort();
                Ok(all)
            }
        }
    }

    /// Whether something of `entity` may be shown to this session.
    pub fn may_see(&self, entity: &str) -> bool {
        self.entity.as_deref().is_none_or(|own| own == entity)
    }
}

/// The console's routes, all under `/console`.
pub fn router(parts: Parts) -> Router {
    let secure = parts.guard.tls.is_some();
    let admin = Admin::new(parts.store);
    let samples = samples::Samples::start(admin.clone(), parts.node.clone());
    let console = Arc::new(Console {
        keys: parts.keys,
        admin,
        node: parts.node,
        guard: parts.guard,
        started: parts.started,
        shutdown: parts.shutdown,
        secure,
        sessions: Mutex::new(HashMap::new()),
        samples,
    });
    let api = Router::new()
        .route("/console/api/me", get(handlers::me))
        .route("/console/api/overview", get(handlers::overview))
        .route("/console/api/pipelines", get(handlers::pipelines))
        .route("/console/api/flows", get(handlers::flows))
        .route("/console/api/flows/{id}", get(handlers::flow))
        .route(
            "/console/api/flows/{id}/files/{name}",
            get(handlers::flow_file),
        )
        .route("/console/api/positions", get(handlers::positions))
        .route(
            "/console/api/positions/{entity}/{iud}",
            get(handlers::position),
        )
        .route(
            "/console/api/positions/{entity}/{iud}/notice.pdf",
            get(handlers::notice),
        )
        .route("/console/api/receipts", get(handlers::receipts))
        .route("/console/api/receipts/{id}", get(handlers::receipt))
        .route(
            "/console/api/receipts/{id}/release",
            post(handlers::receipt_release),
        )
        .route(
            "/console/api/receipts/{id}/dismiss",
            post(handlers::receipt_dismiss),
        )
        .route("/console/api/deliveries", get(handlers::deliveries))
        .route("/console/api/dlq/replay", post(handlers::replay_all))
        .route("/console/api/dlq/{id}/replay", post(handlers::replay_one))
        .route("/console/api/events", get(handlers::events))
        .route("/console/api/reports", get(handlers::reports))
        .route("/console/api/reports/{entity}/{iuf}", get(handlers::report))
        .route("/console/api/reconciliation", get(handlers::reconciliation))
        .route("/console/api/logout", post(logout))
        .route_layer(from_fn_with_state(console.clone(), gate));
    Router::new()
        .route("/console", get(app))
        .route("/console/", get(app))
        .route("/console/login", get(login_page).post(login))
        .route(
            "/console/assets/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/console/assets/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .merge(api)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(headers))
        .with_state(console)
}

/// Security headers on every console answer.
async fn headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// An error answer on its way: its status and message (answered as [`error`]).
pub(crate) struct Refusal(StatusCode, String);

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// A JSON error `{"error": "..."}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message.into() }).to_string(),
    )
        .into_response()
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// The session id the request's cookie names.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// 32 bytes from the system's secure random source, as hex.
fn random_id() -> Option<String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .ok()?;
    Some(hex::encode(bytes))
}

impl Console {
    /// The session's holder, if the cookie names a live session whose key still holds.
    fn who(&self, headers: &HeaderMap) -> Option<Who> {
        let id = cookie(headers)?;
        let now = Instant::now();
        let (key, csrf) = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let s = sessions.get_mut(&id)?;
            if now.duration_since(s.seen) > IDLE || now.duration_since(s.created) > LIFETIME {
                sessions.remove(&id);
                return None;
            }
            s.seen = now;
            (s.key, s.csrf.clone())
        };
        match self.keys.holder(&key) {
            Some(h) => Some(Who {
                key_id: h.key_id,
                entity: h.entity,
                plan: h.plan,
                csrf,
            }),
            None => {
                self.end(&id);
                None
            }
        }
    }

    fn end(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// A new session for the key with this hash: its id and CSRF token.
    fn begin(&self, key: [u8; 32]) -> Option<String> {
        let id = random_id()?;
        let csrf = random_id()?;
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| {
                now.duration_since(s.seen) <= IDLE && now.duration_since(s.created) <= LIFETIME
            });
        }
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.seen)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                key,
                csrf,
                created: now,
                seen: now,
            },
        );
        Some(id)
    }

    fn set_cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict{}",
            if self.secure { "; Secure" } else { "" }
        )
    }

    fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// `/console/api/...`: a live session first; then, for any method but GET, its CSRF token.
async fn gate(State(c): State<Arc<Console>>, mut request: Request, next: Next) -> Response {
    let Some(who) = c.who(request.headers()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "sign in first: POST /console/login with the field token",
        );
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if cross_site(request.headers()) {
            return error(
                StatusCode::FORBIDDEN,
                "an action from another site is refused",
            );
        }
        let given = request
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if given.is_empty() || !same_secret(given, &who.csrf) {
            tracing::warn!(key = %who.key_id, path = %request.uri().path(), "console: refused, no valid CSRF token");
            return error(
                StatusCode::FORBIDDEN,
                "a valid CSRF token is needed (header X-CSRF-Token)",
            );
        }
    }
    request.extensions_mut().insert(Arc::new(who));
    next.run(request).await
}

/// `GET /console`: the application, or the sign-in page without a session.
async fn app(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match c.who(&headers) {
        Some(_) => html(StatusCode::OK, APP_HTML.to_string()),
        None => redirect("/console/login"),
    }
}

async fn login_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.who(&headers).is_some() {
        return redirect("/console");
    }
    html(StatusCode::OK, login_html(None))
}

/// The sign-in page, with what went wrong (fixed texts only: nothing of the request echoed).
fn login_html(problem: Option<&'static str>) -> String {
    let message = match problem {
        Some(p) => format!("<p class=\"error\" role=\"alert\" id=\"login-error\">{p}</p>"),
        None => String::new(),
    };
    LOGIN_HTML.replace("<!--ERROR-->", &message)
}

/// `POST /console/login` with the form field `token` (an entity's API key or the admin token):
/// a session cookie and a redirect to the console; failures count against the peer address.
async fn login(State(c): State<Arc<Console>>, request: Request) -> Response {
    if cross_site(request.headers()) {
        return error(
            StatusCode::FORBIDDEN,
            "a sign-in from another site is refused",
        );
    }
    let ip = request
        .extensions()
        .get::<Peer>()
        .map(|p| p.addr.ip().to_canonical());
    if let Some(wait) = ip.and_then(|ip| c.guard.failures.check(ip)) {
        let mut r = html(
            StatusCode::TOO_MANY_REQUESTS,
            login_html(Some("Troppi tentativi falliti: riprova più tardi. / Too many failed attempts: try again later.")),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"),
    };
    let token = form_field(&body, "token").unwrap_or_default();
    let token = token.trim();
    let hash = key_hash(token);
    let holder = (!token.is_empty()).then(|| c.keys.holder(&hash)).flatten();
    let Some(holder) = holder else {
        if let Some(ip) = ip {
            c.guard.failures.failed(ip);
        }
        tracing::warn!(peer = ?ip, "console: sign-in refused, no valid key or token");
        return html(
            StatusCode::UNAUTHORIZED,
            login_html(Some(
                "Chiave o token non valido. / Not a valid key or token.",
            )),
        );
    };
    let Some(id) = c.begin(hash) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no secure random source for a session id",
        );
    };
    tracing::info!(key = %holder.key_id, "console: signed in");
    let mut r = redirect("/console");
    if let Ok(v) = HeaderValue::from_str(&c.set_cookie(&id)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /console/api/logout` (CSRF checked by the gate): the session ends.
async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers) {
        c.end(&id);
    }
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"signedOut\":true}",
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&c.clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Whether the browser says the request comes from another site (`Sec-Fetch-Site`): refused for
/// the sign-in (no signing a person in to someone else's session) and every action, on top of
/// the SameSite cookie and the CSRF token. Scripts send no such header and are not affected.
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &Bytes, name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| percent_decode(k).as_deref() == Some(name))
        .and_then(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        let body = Bytes::from_static(b"a=1&token=demo-key%2Bx+y&b");
        assert_eq!(form_field(&body, "token").as_deref(), Some("demo-key+x y"));
        assert_eq!(form_field(&body, "b").as_deref(), Some(""));
        assert_eq!(form_field(&body, "c"), None);
        assert_eq!(form_field(&Bytes::from_static(b"token=%zz"), "token"), None);
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let mut h = HeaderMap::new();
        assert!(!cross_site(&h), "a script sends no Sec-Fetch-Site");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!cross_site(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&h));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; snodo_console=abc; y=2"),
        );
        assert_eq!(cookie(&h).as_deref(), Some("abc"));
    }

    fn who(entity: Option<&str>) -> Who {
        Who {
            key_id: "k".into(),
            entity: entity.map(str::to_string),
            plan: Arc::new(crate::plan::load(None).expect("demo plan")),
            csrf: String::new(),
        }
    }

    #[test]
    fn an_entity_session_reads_its_own_entity_only() {
        let padova = who(Some("c_g224"));
        assert_eq!(padova.entities(None).ok(), Some(vec!["c_g224".to_string()]));
        assert_eq!(
            padova.entities(Some("c_g224")).ok(),
            Some(vec!["c_g224".to_string()])
        );
        let refused = padova.entities(Some("c_d530")).err().map(|r| r.0);
        assert_eq!(refused, Some(StatusCode::FORBIDDEN));
        // An unknown entity too: a key cannot learn which entities exist.
        let unknown = padova.entities(Some("c_x000")).err().map(|r| r.0);
        assert_eq!(unknown, Some(StatusCode::FORBIDDEN));
        assert!(padova.may_see("c_g224") && !padova.may_see("c_d530"));
    }

    #[test]
    fn an_operator_reads_one_entity_or_all() {
        let op = who(None);
        assert_eq!(
            op.entities(None).ok(),
            Some(vec!["c_d530".into(), "c_g224".into(), "r_veneto".into()])
        );
        assert_eq!(
            op.entities(Some("c_d530")).ok(),
            Some(vec!["c_d530".into()])
        );
        let unknown = op.entities(Some("c_x000")).err().map(|r| r.0);
        assert_eq!(unknown, Some(StatusCode::NOT_FOUND));
        assert!(op.may_see("c_d530"));
    }

    #[test]
    fn session_ids_are_random_and_long() {
        let (a, b) = (random_id().unwrap(), random_id().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
