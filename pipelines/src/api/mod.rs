//! The entity REST API under `/api/v1` (docs/API.md, docs/openapi.json): positions, receipts
//! and settlement flows pull, spontaneous payments (Base mode) and Checkout carts (Gateway mode).
//!
//! Every route goes through [`Api::enter`]: the key is checked (only its SHA-256 is kept), its
//! rate limit spent, and the call scoped to the key's entity, before any handler runs. Writes that
//! may be retried take an `Idempotency-Key` ([`Api::once`]): the first answer is kept in the store
//! and given again. Every error is `application/problem+json` naming the MyPay code and the field.

mod carts;
pub(crate) mod mypay_ws;
pub(crate) mod positions;
mod problem;
mod reconciliation;
mod reports;
mod spontaneous;
mod treasury;

use crate::intake::StandingFlows;
use crate::plan::{key_hash, EntityRuntime, LivePlan, Plan};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
pub use problem::Problem;
use snodo_store::{SavedResponse, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where the API lives.
pub const BASE: &str = "/api/v1";
/// The OpenAPI document, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");
/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 200;
/// The standing flow positions created through the API go in (`api:<ipa>`).
pub const ORIGIN: &str = "api";

/// Every route, as in the OpenAPI document (a test keeps the two equal).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/entities/{ipa}/positions"),
    ("POST", "/entities/{ipa}/positions"),
    ("GET", "/entities/{ipa}/positions/{iud}"),
    ("PUT", "/entities/{ipa}/positions/{iud}"),
    ("DELETE", "/entities/{ipa}/positions/{iud}"),
    ("GET", "/entities/{ipa}/positions/{iud}/notice.pdf"),
    ("GET", "/entities/{ipa}/receipts"),
    ("GET", "/entities/{ipa}/reports"),
    ("GET", "/entities/{ipa}/reports/{iuf}"),
    ("GET", "/entities/{ipa}/reconciliation"),
    ("GET", "/entities/{ipa}/reconciliation/summary"),
    ("PUT", "/entities/{ipa}/treasury/{movementId}"),
    ("DELETE", "/entities/{ipa}/treasury/{movementId}"),
    ("GET", "/entities/{ipa}/spontaneous"),
    ("POST", "/entities/{ipa}/spontaneous/{debtType}"),
    ("POST", "/entities/{ipa}/carts"),
    ("GET", "/entities/{ipa}/carts/{id}"),
];

/// Who is calling, once the key is checked.
#[derive(Clone)]
pub(crate) struct Caller {
    /// `<ipa>#<n>` or `admin`: what the logs name, never the key.
    pub key_id: String,
    pub entity: Arc<EntityRuntime>,
}

/// A route's path parameters once the caller is let in: every handler starts from this, so no
/// handler can forget the key, the rate or the entity scope.
pub(crate) struct Entered {
    pub who: Caller,
    params: HashMap<String, String>,
}

impl Entered {
    /// A path parameter of the route (always present: the router matched it).
    pub fn param(&self, name: &str) -> String {
        self.params.get(name).cloned().unwrap_or_default()
    }
}

impl axum::extract::FromRequestParts<Arc<Api>> for Entered {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Arc<Api>,
    ) -> Result<Self, Response> {
        let axum::extract::Path(params) =
            axum::extract::Path::<HashMap<String, String>>::from_request_parts(parts, api)
                .await
                .map_err(bad_path)?;
        let ipa = params.get("ipa").map(String::as_str).unwrap_or_default();
        let peer = parts
            .extensions
            .get::<crate::listen::Peer>()
            .map(|p| p.addr.ip().to_canonical());
        let who = api
            .enter(&parts.headers, &parts.method, &parts.uri, ipa, peer)
            .map_err(|r| *r)?;
        Ok(Self { who, params })
    }
}

/// A token bucket per key (GCRA): `rate` a second on average, `burst` at once.
struct RateLimiter {
    keyed: governor::DefaultKeyedRateLimiter<String>,
    clock: governor::clock::DefaultClock,
}

impl RateLimiter {
    fn new(rate: u32, burst: u32) -> Self {
        let one = std::num::NonZeroU32::MIN;
        let quota = governor::Quota::per_second(std::num::NonZeroU32::new(rate).unwrap_or(one))
            .allow_burst(std::num::NonZeroU32::new(burst).unwrap_or(one));
        Self {
            keyed: governor::RateLimiter::keyed(quota),
            clock: governor::clock::DefaultClock::default(),
        }
    }

    /// `None`: allowed; `Some(s)`: out of tokens, retry in `s` seconds (at least 1).
    fn spend(&self, key_id: &str) -> Option<u64> {
        use governor::clock::Clock as _;
        match self.keyed.check_key(&key_id.to_string()) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Some(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
        }
    }
}

pub(crate) struct Api {
    plans: Arc<LivePlan>,
    pub store: Arc<dyn Store>,
    pub flows: Arc<StandingFlows>,
    pub caller: snodo_connectors::call::Caller,
    /// Who each key is, for the plan running now (shared with the console).
    keys: Arc<Keys>,
    limiter: RateLimiter,
    /// Failed authentications per peer address.
    failures: Arc<crate::listen::AuthFailures>,
    /// Serialises concurrent calls with the same `Idempotency-Key` in this process.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The API keys and the admin token of the plan running now: the one place a presented secret
/// is resolved to who presents it (the entity API and the console both ask here).
pub struct Keys {
    plans: Arc<LivePlan>,
    /// The key table of the plan running now (rebuilt when a reload brings another).
    table: std::sync::RwLock<Arc<KeyTable>>,
    /// The admin token's hash (`http` is not reloaded: it stays).
    admin: Option<[u8; 32]>,
}

/// Who a key is: its id for the logs (`<ipa>#<n>` or `admin`), its entity (`None`: the admin
/// token, every entity), and the plan it was resolved in.
pub(crate) struct Holder {
    pub key_id: String,
    pub entity: Option<String>,
    pub plan: Arc<Plan>,
}

impl Keys {
    pub(crate) fn new(plans: Arc<LivePlan>, admin_token: Option<&str>) -> Arc<Keys> {
        let admin = admin_token.map(key_hash);
        Arc::new(Keys {
            table: std::sync::RwLock::new(Arc::new(KeyTable::of(plans.get(), admin))),
            plans,
            admin,
        })
    }

    /// The keys of the plan running now.
    fn table(&self) -> Arc<KeyTable> {
        let plan = self.plans.get();
        {
            let t = self.table.read().unwrap_or_else(|e| e.into_inner());
            if Arc::ptr_eq(&t.plan, &plan) {
                return t.clone();
            }
        }
        let t = Arc::new(KeyTable::of(plan, self.admin));
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = t.clone();
        t
    }

    /// Who holds the key whose SHA-256 is `hash`, in the plan running now (a key a reload
    /// removed is no one's any more).
    pub(crate) fn holder(&self, hash: &[u8; 32]) -> Option<Holder> {
        let table = self.table();
        let (key_id, entity) = table.keys.get(hash)?.clone();
        Some(Holder {
            key_id,
            entity,
            plan: table.plan.clone(),
        })
    }
}

/// Key hash -> (key id, entity), for one plan; the admin token's entity is `None`.
struct KeyTable {
    plan: Arc<Plan>,
    keys: HashMap<[u8; 32], (String, Option<String>)>,
}

impl KeyTable {
    fn of(plan: Arc<Plan>, admin: Option<[u8; 32]>) -> KeyTable {
        let mut keys = HashMap::new();
        for e in plan.entities.values() {
            for k in &e.api_keys {
                keys.insert(k.sha256, (k.id.clone(), Some(e.ipa_code.clone())));
            }
        }
        if let Some(t) = admin {
            keys.insert(t, ("admin".to_string(), None));
        }
        KeyTable { plan, keys }
    }
}

pub fn router(
    plans: Arc<LivePlan>,
    store: Arc<dyn Store>,
    flows: Arc<StandingFlows>,
    stats: Arc<crate::metrics::ApiStats>,
    keys: Arc<Keys>,
    failures: Arc<crate::listen::AuthFailures>,
    public_url: &str,
) -> Result<Router, String> {
    let plan = plans.get();
    let limiter = RateLimiter::new(plan.config.api.rate_per_second, plan.config.api.rate_burst);
    let api = Arc::new(Api {
        keys,
        plans: plans.clone(),
        store,
        flows,
        caller: snodo_connectors::call::Caller::new().map_err(|e| e.to_string())?,
        limiter,
        failures,
        in_flight: Mutex::new(HashMap::new()),
    });
    let routes = Router::new()
        .route(
            "/entities/{ipa}/positions",
            get(positions::list).post(positions::create),
        )
        .route(
            "/entities/{ipa}/positions/{iud}",
            get(positions::read)
                .put(positions::modify)
                .delete(positions::annul),
        )
        .route(
            "/entities/{ipa}/positions/{iud}/notice.pdf",
            get(positions::notice_pdf),
        )
        .route("/entities/{ipa}/receipts", get(positions::receipts))
        .route("/entities/{ipa}/reports", get(reports::list))
        .route("/entities/{ipa}/reports/{iuf}", get(reports::read))
        .route("/entities/{ipa}/reconciliation", get(reconciliation::items))
        .route(
            "/entities/{ipa}/reconciliation/summary",
            get(reconciliation::summary),
        )
        .route(
            "/entities/{ipa}/treasury/{movementId}",
            axum::routing::put(treasury::put).delete(treasury::delete),
        )
        .route("/entities/{ipa}/spontaneous", get(spontaneous::list))
        .route(
            "/entities/{ipa}/spontaneous/{debt_type}",
            axum::routing::post(spontaneous::create),
        )
        .route("/entities/{ipa}/carts", axum::routing::post(carts::create))
        .route("/entities/{ipa}/carts/{id}", get(carts::read))
        .route("/openapi.json", get(openapi))
        .fallback(no_route)
        .with_state(api.clone())
        .layer(axum::middleware::from_fn_with_state((stats, plans), count));
    let ws_path = api.plan().config.api.mypay_ws_path.clone();
    let max_body = api.plan().config.api.max_body_bytes;
    let mypay = mypay_ws::routes(api, &ws_path, public_url)
        .layer(axum::extract::DefaultBodyLimit::max(max_body));
    Ok(Router::new().nest(BASE, routes).merge(mypay))
}

/// Counts every answer for `/metrics`, by entity and resource (`/entities/{ipa}/{resource}/...`).
/// Only configured entities, the API's resources and the usual methods become labels, so no
/// caller can grow the number of series.
async fn count(
    axum::extract::State((stats, plans)): axum::extract::State<(
        Arc<crate::metrics::ApiStats>,
        Arc<LivePlan>,
    )>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        _ => "other",
    };
    let path = request.uri().path().to_string();
    let answer = next.run(request).await;
    let mut parts = path.split('/').skip_while(|p| *p != "entities").skip(1);
    let plan = plans.get();
    let entity = parts
        .next()
        .filter(|e| plan.entities.contains_key(*e))
        .unwrap_or("");
    let resource = parts
        .next()
        .filter(|r| {
            ROUTES
                .iter()
                .any(|(_, route)| route.split('/').nth(3) == Some(*r))
        })
        .unwrap_or("");
    stats.request(entity, resource, method, answer.status().as_u16());
    answer
}

/// Forgets `Idempotency-Key` answers older than `ttl`, hourly (and once at start).
pub fn spawn_pruner(
    store: Arc<dyn Store>,
    ttl: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            let before = chrono::Utc::now()
                - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
            let before = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.prune_saved_responses(&before)).await {
                Ok(Ok(n)) if n > 0 => tracing::info!("api: forgot {n} idempotency answers"),
                Ok(Err(e)) => tracing::warn!("api: cannot prune idempotency answers: {e}"),
                _ => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}

async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

async fn no_route(method: Method, uri: Uri) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-route",
        format!(
            "{method} {} is not a route of this API (see {BASE}/openapi.json)",
            uri.path()
        ),
    )
    .into_response()
}

impl Api {
    /// The plan running now; a call reads it once.
    pub(crate) fn plan(&self) -> Arc<Plan> {
        self.plans.get()
    }

    /// Checks the key, spends one token of its rate, and scopes the call to `ipa`.
    pub(crate) fn enter(
        &self,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        ipa: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Caller, Box<Response>> {
        if let Some(wait) = peer.and_then(|ip| self.failures.check(ip)) {
            tracing::warn!(peer = ?peer, %method, path = %uri.path(), "api: refused, too many failed authentications");
            let mut r = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!("too many failed authentications from this address: retry in {wait} s"),
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return Err(Box::new(r));
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let Some(Holder {
            key_id,
            entity: own,
            plan,
        }) = presented.and_then(|k| self.keys.holder(&key_hash(k)))
        else {
            if let Some(ip) = peer {
                self.failures.failed(ip);
            }
            tracing::warn!(%method, path = %uri.path(), "api: refused, no valid key");
            let mut r = Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is needed: Authorization: Bearer <key>",
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Err(Box::new(r));
        };
        if let Some(wait) = self.limiter.spend(&key_id) {
            tracing::warn!(key = %key_id, %method, path = %uri.path(), "api: rate limited");
            let mut r = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!(
                    "more than {} requests a second with this key: retry in {wait} s",
                    plan.config.api.rate_per_second
                ),
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return Err(Box::new(r));
        }
        match own {
            Some(own) if own != ipa => {
                tracing::warn!(key = %key_id, %method, path = %uri.path(), "api: refused, another entity's resource");
                Err(Box::new(
                    Problem::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!("this key is {own}'s: it may not act for {ipa:?}"),
                    )
                    .into_response(),
                ))
            }
            _ => match plan.entities.get(ipa) {
                Some(entity) => {
                    tracing::info!(key = %key_id, %method, path = %uri.path(), "api request");
                    Ok(Caller {
                        key_id: key_id.clone(),
                        entity: entity.clone(),
                    })
                }
                None => Err(Box::new(
                    Problem::new(
                        StatusCode::NOT_FOUND,
                        "not-found",
                        format!("no entity {ipa:?} on this hub"),
                    )
                    .into_response(),
                )),
            },
        }
    }

    /// Runs `work` once per `Idempotency-Key` (when the request has one): a retry with the same
    /// key and body gets the kept answer, the same key with another body is refused. Answers of
    /// 5xx are not kept, so the client may retry them.
    pub(crate) async fn once<F, Fut>(
        self: &Arc<Self>,
        who: &Caller,
        route: &str,
        headers: &HeaderMap,
        body: &[u8],
        work: F,
    ) -> Response
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Reply>,
    {
        let Some(key) = headers.get("idempotency-key") else {
            return work().await.into_response();
        };
        let key = match key.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY => k.to_string(),
            _ => {
                return Problem::new(
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ),
                )
                .field("Idempotency-Key")
                .into_response()
            }
        };
        let scope = format!("{}:{route}", who.entity.ipa_code);
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(body))
        };
        let lock = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(format!("{scope}\n{key}"))
            .or_default()
            .clone();
        let guard = lock.lock().await;
        let answer = async {
            let kept = {
                let (store, scope, key) = (self.store.clone(), scope.clone(), key.clone());
                blocking(move || store.saved_response(&scope, &key)).await?
            };
            if let Some(kept) = kept {
                return Ok(replay(&kept, &sha));
            }
            let reply = work().await;
            if reply.status.is_server_error() {
                return Ok(reply.into_response());
            }
            // The body with its `Location`, so a replay is the whole first answer.
            let text =
                serde_json::json!({ "location": reply.location, "body": reply.body }).to_string();
            let fresh = SavedResponse {
                request_sha256: sha.clone(),
                status: reply.status.as_u16(),
                body: text.clone(),
            };
            let (store, scope2, key2) = (self.store.clone(), scope.clone(), key.clone());
            let kept = blocking(move || store.save_response(&scope2, &key2, &fresh)).await?;
            // Another hub answered the same key first: its answer is the one.
            if kept.body != text || kept.status != reply.status.as_u16() {
                return Ok(replay(&kept, &sha));
            }
            Ok(reply.into_response())
        }
        .await;
        drop(guard);
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, l| Arc::strong_count(l) > 1);
        answer.unwrap_or_else(|p: Problem| p.into_response())
    }
}

fn replay(kept: &SavedResponse, sha: &str) -> Response {
    if kept.request_sha256 != sha {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "this Idempotency-Key was used with another request body: use a new key for a new request",
        )
        .field("Idempotency-Key")
        .into_response();
    }
    let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    let kept: serde_json::Value = serde_json::from_str(&kept.body).unwrap_or_default();
    let mut r = Reply {
        status,
        body: kept["body"].clone(),
        location: kept["location"].as_str().map(str::to_string),
    }
    .into_response();
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

fn content_type(status: StatusCode) -> &'static str {
    if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    }
}

/// A handler's answer before it is sent: kept whole for `Idempotency-Key` replays.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: serde_json::Value,
    pub location: Option<String>,
}

impl Reply {
    pub fn ok(status: StatusCode, body: serde_json::Value) -> Self {
        Self {
            status,
            body,
            location: None,
        }
    }
}

impl From<Problem> for Reply {
    fn from(p: Problem) -> Self {
        Self {
            status: p.status,
            body: p.to_json(),
            location: None,
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, content_type(self.status))],
            self.body.to_string(),
        )
            .into_response();
        if let Some(l) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            r.headers_mut().insert(header::LOCATION, l);
        }
        r
    }
}

/// `s` cut to at most `max` characters (a text field's length on the other side).
pub(crate) fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A store call off the async workers; a failing store is a 503.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> snodo_store::Result<T> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!("api: store: {e}");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the registry cannot be reached; retry later",
            ))
        }
        Err(e) => {
            tracing::error!("api: store call failed: {e}");
            Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ))
        }
    }
}

/// Reads a JSON body: the content type checked, the size bounded.
pub(crate) async fn read_json(
    api: &Api,
    headers: &HeaderMap,
    body: Body,
) -> Result<(axum::body::Bytes, serde_json::Value), Problem> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| t == "application/json" || t.ends_with("+json"));
    if !json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the body as Content-Type: application/json",
        ));
    }
    let limit = api.plan().config.api.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("the body is larger than {limit} bytes (api.max_body_bytes)"),
        )
    })?;
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("the body is not JSON: {e}"),
        )
    })?;
    Ok((bytes, value))
}

/// Reads a JSON body into `T` (which refuses unknown fields): a problem names the JSON path.
pub(crate) fn decode_body<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let p = Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("{field}: {}", e.into_inner()),
        );
        if field.is_empty() || field == "." {
            p
        } else {
            p.field(field)
        }
    })
}

/// Reads query parameters into `T`, refusing unknown ones.
pub(crate) fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, Problem> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("query: {}", e.body_text()),
            )
        })
}

/// A path segment that could not be read.
pub(crate) fn bad_path(e: axum::extract::rejection::PathRejection) -> Response {
    Problem::new(StatusCode::BAD_REQUEST, "malformed", e.body_text()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document lists exactly the routes the router serves.
    #[test]
    fn the_openapi_document_has_every_route_and_no_other() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .expect("operations")
                    .keys()
                    .filter(|m| *m != "parameters")
                    .map(move |m| (m.to_ascii_uppercase(), path.clone()))
            })
            .collect();
        documented.sort();
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
        assert_eq!(doc["servers"][0]["url"], BASE);
    }

    #[test]
    fn the_rate_limit_is_per_key_and_refills() {
        let limiter = RateLimiter::new(20, 3);
        for _ in 0..3 {
            assert_eq!(limiter.spend("k"), None);
        }
        assert_eq!(limiter.spend("k"), Some(1));
        assert_eq!(limiter.spend("other"), None, "each key has its own bucket");
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert_eq!(
            limiter.spend("k"),
            None,
            "20 a second: refilled after 50 ms"
        );
    }
}
