//! The `http` connector: pushes a document (a receipt) to an entity's own system with one POST.
//!
//! `to = { connector = "http", url = "http://erp.example/receipts", auth = { bearer = "TOKEN" },
//! timeout = "10s", retry = { max_attempts = 12, initial = "1s", max = "1h" },
//! headers = { "X-Foo" = "bar" } }`
//!
//! Instead of a fixed bearer token, `auth = { jwt = { secret = "...", issuer = "snodo",
//! subject = "...", ttl = "5m" } }` signs a fresh HS512 JWT for every request, the way MyPay
//! authenticates its pushes to entity systems with a shared secret (see [`JwtAuth`]).
//!
//! [`HttpSink::deliver`] makes one attempt and says what happened: delivered, worth retrying
//! (with the server's `Retry-After` when it gave one), or refused for good. It keeps no state:
//! the durable outbox decides when to try again with the sink's [`RetryPolicy`]. Every attempt
//! carries the same `Idempotency-Key`, so a receiver that got a request whose answer was lost can
//! recognise the retry.
//!
//! Redirects are not followed (a 3xx is a permanent failure the operator must fix in the URL),
//! and proxies from `HTTP_PROXY`/`NO_PROXY` in the environment are honoured.
//!
//! `https://` uses rustls with the system's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` point it
//! at another CA bundle, e.g. an entity's private CA).

use crate::dir::parse_duration;
use crate::ConnectorError;
/// Kept here too, where it was first defined: `snodo_connectors::http::DeliveryResult`.
pub use crate::DeliveryResult;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::Sha512;
use std::collections::BTreeMap;
use std::time::Duration;

pub const NAME: &str = "http";

/// How much of a response body goes into a reason.
const EXCERPT_CHARS: usize = 200;
/// How much of a response body is read at most to make that excerpt.
const EXCERPT_READ_BYTES: usize = 8 * 1024;
/// Headers the connector sets itself; the `headers` table may not override them.
const RESERVED_HEADERS: [&str; 6] = [
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "authorization",
    "idempotency-key",
];

/// The pipeline's `to` table for `connector = "http"` (the `connector` key already removed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    pub url: String,
    pub auth: Option<HttpAuth>,
    /// For the whole exchange: connecting, sending the body, reading the answer.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub retry: RetryPolicyConfig,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_timeout() -> String {
    "10s".into()
}

/// `auth = { bearer = "TOKEN" }`: sent as `Authorization: Bearer TOKEN`; or `auth = { jwt =
/// { ... } }`, a token signed per request ([`JwtAuth`]). One of the two; secrets are never
/// shown in reasons, logs or `Debug` output.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpAuth {
    pub bearer: Option<String>,
    pub jwt: Option<JwtAuth>,
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuth")
            .field("bearer", &self.bearer.as_ref().map(|_| "[redacted]"))
            .field("jwt", &self.jwt)
            .finish()
    }
}

/// `jwt = { secret = "...", issuer = "snodo", subject = "...", ttl = "5m" }`: every request
/// carries `Authorization: Bearer <JWT>`, header `{"alg":"HS512","typ":"JWT"}`, claims `iss`,
/// `sub` (when set), `iat`, `exp` = `iat` + `ttl` and `jti` = the request's idempotency key,
/// signed with HMAC-SHA512 over the secret's UTF-8 bytes. A fresh, short-lived token per
/// request means a leaked header is worth little; the shared secret never travels.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    /// At least 32 bytes: HS512 is only as strong as its key.
    pub secret: String,
    #[serde(default = "default_issuer")]
    pub issuer: String,
    pub subject: Option<String>,
    /// How long a token is valid, from when it is made: whole seconds, at most 24h.
    #[serde(default = "default_ttl")]
    pub ttl: String,
}

fn default_issuer() -> String {
    "snodo".into()
}
fn default_ttl() -> String {
    "5m".into()
}

/// Shortest JWT secret accepted, in bytes.
const JWT_MIN_SECRET_BYTES: usize = 32;
/// Longest token lifetime accepted: a push token has no business living longer.
const JWT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The JOSE header of every token.
const JWT_HEADER: &str = r#"{"alg":"HS512","typ":"JWT"}"#;

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("secret", &"[redacted]")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl JwtAuth {
    /// Semantic checks, each a message for the operator that never shows the secret.
    pub fn check(&self) -> Vec<String> {
        self.build().err().unwrap_or_default()
    }

    fn build(&self) -> std::result::Result<JwtSigner, Vec<String>> {
        let mut errors = Vec::new();
        if self.secret.trim().is_empty() {
            errors.push("auth.jwt.secret is empty".to_string());
        } else if self.secret.len() < JWT_MIN_SECRET_BYTES {
            errors.push(format!(
                "auth.jwt.secret must be at least {JWT_MIN_SECRET_BYTES} bytes for HS512, got {}",
                self.secret.len()
            ));
        }
        if self.issuer.trim().is_empty() {
            errors.push("auth.jwt.issuer is empty".to_string());
        }
        if self.subject.as_deref().is_some_and(|s| s.trim().is_empty()) {
            errors.push("auth.jwt.subject is empty: leave it out instead".to_string());
        }
        let ttl = match parse_duration(&self.ttl) {
            Ok(d) if d.is_zero() => Err("auth.jwt.ttl must be more than 0".to_string()),
            Ok(d) if d.subsec_nanos() != 0 => Err(format!(
                "auth.jwt.ttl ({}) must be whole seconds: JWT times are in seconds",
                self.ttl
            )),
            Ok(d) if d > JWT_MAX_TTL => {
                Err(format!("auth.jwt.ttl ({}) must be at most 24h", self.ttl))
            }
            Ok(d) => Ok(d.as_secs()),
            Err(e) => Err(format!("auth.jwt.ttl: {e}")),
        };
        let ttl_secs = match ttl {
            Ok(secs) => secs,
            Err(e) => {
                errors.push(e);
                0
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let mac = Hmac::<Sha512>::new_from_slice(self.secret.as_bytes())
            .map_err(|_| vec!["auth.jwt.secret cannot key HMAC-SHA512".to_string()])?;
        Ok(JwtSigner {
            mac,
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            ttl_secs,
        })
    }
}

/// Signs the per-request tokens of [`JwtAuth`]; holds the keyed MAC, not the secret's text.
#[derive(Clone)]
struct JwtSigner {
    mac: Hmac<Sha512>,
    issuer: String,
    subject: Option<String>,
    ttl_secs: u64,
}

/// The claims, in output order.
#[derive(Serialize)]
struct JwtClaims<'a> {
    iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    iat: u64,
    exp: u64,
    jti: &'a str,
}

impl JwtSigner {
    /// The compact JWS issued at `iat` (seconds since the epoch) for the request `jti`.
    fn token(&self, iat: u64, jti: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = JwtClaims {
            iss: &self.issuer,
            sub: self.subject.as_deref(),
            iat,
            exp: iat.saturating_add(self.ttl_secs),
            jti,
        };
        // Strings and integers only: serialising cannot fail.
        let claims = serde_json::to_vec(&claims).unwrap_or_default();
        let mut token = b64.encode(JWT_HEADER);
        token.push('.');
        token.push_str(&b64.encode(claims));
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        let signature = mac.finalize().into_bytes();
        token.push('.');
        token.push_str(&b64.encode(signature));
        token
    }
}

/// `retry = { max_attempts = 12, initial = "1s", max = "1h", max_age = "2d" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicyConfig {
    /// Attempts in all, the first one included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    #[serde(default = "default_initial")]
    pub initial: String,
    /// The longest wait between two attempts.
    #[serde(default = "default_max")]
    pub max: String,
    /// Give up once the first attempt is this old, whatever the count.
    pub max_age: Option<String>,
}

fn default_max_attempts() -> u32 {
    12
}
fn default_initial() -> String {
    "1s".into()
}
fn default_max() -> String {
    "1h".into()
}

impl Default for RetryPolicyConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial: default_initial(),
            max: default_max(),
            max_age: None,
        }
    }
}

impl RetryPolicyConfig {
    /// Semantic checks, each a message for the operator.
    pub fn check(&self) -> Vec<String> {
        self.build().err().unwrap_or_default()
    }

    pub fn build(&self) -> std::result::Result<RetryPolicy, Vec<String>> {
        let mut errors = Vec::new();
        if self.max_attempts < 1 {
            errors.push("retry.max_attempts must be at least 1".to_string());
        }
        let mut duration = |field: &str, value: &str| match parse_duration(value) {
            Ok(d) if d.is_zero() => {
                errors.push(format!("retry.{field} must be more than 0"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(format!("retry.{field}: {e}"));
                None
            }
        };
        let initial = duration("initial", &self.initial);
        let max = duration("max", &self.max);
        let max_age = match &self.max_age {
            Some(s) => duration("max_age", s).map(Some),
            None => Some(None),
        };
        if let (Some(i), Some(m)) = (initial, max) {
            if i > m {
                errors.push(format!(
                    "retry.initial ({}) is longer than retry.max ({})",
                    self.initial, self.max
                ));
            }
        }
        match (initial, max, max_age) {
            (Some(initial), Some(max), Some(max_age)) if errors.is_empty() => Ok(RetryPolicy {
                max_attempts: self.max_attempts,
                initial,
                max,
                max_age,
            }),
            _ => Err(errors),
        }
    }
}

/// When to try a failed delivery again, and when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
    /// Give up once the first attempt is this old.
    pub max_age: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            max_age: None,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1 for the first), before jitter:
    /// `initial * 2^(attempt-1)`, capped at `max`. Attempt 0 counts as 1.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1);
        if doublings >= 32 {
            return self.max;
        }
        self.initial
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// [`Self::base_delay`] with ±20% random jitter, so that many deliveries failing together
    /// do not all come back at the same instant. Never more than `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 0.8 + 0.4 * random_unit();
        self.base_delay(attempt).mul_f64(factor).min(self.max)
    }

    /// The wait before the next attempt given what the server asked for: its `Retry-After`
    /// when it gave one (capped at `max`, so a bogus value cannot stall the outbox), else
    /// [`Self::delay`].
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(after) => after.min(self.max),
            None => self.delay(attempt),
        }
    }

    /// True when a delivery that has failed `attempts` times, the first of them `age` ago,
    /// should not be tried again.
    pub fn gives_up(&self, attempts: u32, age: Duration) -> bool {
        attempts >= self.max_attempts || self.max_age.is_some_and(|max_age| age >= max_age)
    }
}

/// A uniform number in [0, 1) from the standard library's per-instance random hash keys: enough
/// for jitter, with no dependency.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl HttpSinkConfig {
    /// Semantic checks beyond types, each a message for the operator.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = parse_url(&self.url) {
            errors.push(e);
        }
        match parse_duration(&self.timeout) {
            Ok(d) if d.is_zero() => errors.push("timeout must be more than 0".into()),
            Ok(_) => {}
            Err(e) => errors.push(format!("timeout: {e}")),
        }
        errors.extend(self.retry.check());
        if let Some(auth) = &self.auth {
            if auth.bearer.is_some() && auth.jwt.is_some() {
                errors.push("auth: give either bearer or jwt, not both".into());
            }
            if let Some(jwt) = &auth.jwt {
                errors.extend(jwt.check());
            }
            if let Some(token) = &auth.bearer {
                if token.trim().is_empty() {
                    errors.push("auth.bearer is empty".into());
                } else if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                    // The token itself is not shown: it is a secret.
                    errors.push(
                        "auth.bearer contains characters not allowed in an HTTP header".into(),
                    );
                }
            }
        }
        if let Err(e) = parse_headers(&self.headers) {
            errors.extend(e);
        }
        errors
    }

    /// One client for all deliveries of this sink; fails with every problem [`Self::check`]
    /// finds.
    pub fn build(&self) -> std::result::Result<HttpSink, ConnectorError> {
        let errors = self.check();
        if !errors.is_empty() {
            return Err(ConnectorError::Config(errors.join("; ")));
        }
        let config = |e: String| ConnectorError::Config(e);
        let url = parse_url(&self.url).map_err(config)?;
        let timeout = parse_duration(&self.timeout).map_err(config)?;
        let retry = self
            .retry
            .build()
            .map_err(|e| ConnectorError::Config(e.join("; ")))?;
        let headers = parse_headers(&self.headers).map_err(|e| config(e.join("; ")))?;
        let token = self
            .auth
            .as_ref()
            .and_then(|a| a.bearer.clone())
            .filter(|t| !t.is_empty());
        let bearer = match &token {
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    config("auth.bearer contains characters not allowed in an HTTP header".into())
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let jwt = match self.auth.as_ref().and_then(|a| a.jwt.as_ref()) {
            Some(j) => Some(j.build().map_err(|e| config(e.join("; ")))?),
            None => None,
        };
        let mut secrets: Vec<String> = token.into_iter().collect();
        if let Some(j) = self.auth.as_ref().and_then(|a| a.jwt.as_ref()) {
            secrets.push(j.secret.clone());
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(HttpSink {
            client,
            shown_url: shown_url(&url),
            url,
            timeout,
            bearer,
            jwt,
            secrets,
            headers,
            retry,
        })
    }
}

fn parse_url(s: &str) -> std::result::Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("url {s:?} is not a valid URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "url {}: scheme {other:?} is not supported (only http and https)",
                shown_url(&url)
            ))
        }
    }
    if !matches!(url.host_str(), Some(h) if !h.is_empty()) {
        return Err(format!("url {s:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "url {}: put credentials in auth = {{ bearer = ... }}, not in the url",
            shown_url(&url)
        ));
    }
    Ok(url)
}

/// The URL as shown to operators: without credentials or query string, which may hold secrets.
fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

fn parse_headers(
    headers: &BTreeMap<String, String>,
) -> std::result::Result<HeaderMap, Vec<String>> {
    let mut map = HeaderMap::new();
    let mut errors = Vec::new();
    for (name, value) in headers {
        let Ok(hname) = HeaderName::from_bytes(name.as_bytes()) else {
            errors.push(format!("headers: {name:?} is not a valid header name"));
            continue;
        };
        if RESERVED_HEADERS.contains(&hname.as_str()) {
            errors.push(format!(
                "headers: {name} is set by the connector and cannot be configured"
            ));
            continue;
        }
        match HeaderValue::from_str(value) {
            Ok(v) => {
                map.insert(hname, v);
            }
            Err(_) => errors.push(format!(
                "headers: the value of {name} contains characters not allowed in an HTTP header"
            )),
        }
    }
    if errors.is_empty() {
        Ok(map)
    } else {
        Err(errors)
    }
}

/// Delivers documents to one URL. Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    url: reqwest::Url,
    shown_url: String,
    timeout: Duration,
    bearer: Option<HeaderValue>,
    jwt: Option<JwtSigner>,
    /// The bearer token and the JWT secret, kept only to blank them out of response excerpts.
    secrets: Vec<String>,
    headers: HeaderMap,
    retry: RetryPolicy,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("url", &self.shown_url)
            .field("timeout", &self.timeout)
            .field(
                "auth",
                &match (&self.bearer, &self.jwt) {
                    (Some(_), _) => Some("bearer [redacted]"),
                    (None, Some(_)) => Some("jwt HS512 [redacted]"),
                    (None, None) => None,
                },
            )
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("retry", &self.retry)
            .finish()
    }
}

impl HttpSink {
    /// The retry policy from the config, for the outbox to schedule attempts.
    /// The longest one delivery can take, connection included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The target URL as it may be shown (no credentials, no query string).
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// One attempt: POSTs `body` with `Content-Type: content_type`, `Idempotency-Key:
    /// idempotency_key` (the same on every attempt for one document), the bearer token or a
    /// fresh JWT whose `jti` is that key, and the configured headers, and classifies the outcome.
    pub async fn deliver(
        &self,
        body: Vec<u8>,
        content_type: &str,
        idempotency_key: &str,
    ) -> DeliveryResult {
        let Ok(ct) = HeaderValue::from_str(content_type) else {
            return DeliveryResult::Permanent {
                reason: format!("content type {content_type:?} is not a valid header value"),
            };
        };
        let Ok(key) = HeaderValue::from_str(idempotency_key) else {
            return DeliveryResult::Permanent {
                reason: format!("idempotency key {idempotency_key:?} is not a valid header value"),
            };
        };
        let mut headers = self.headers.clone();
        headers.insert(reqwest::header::CONTENT_TYPE, ct);
        headers.insert(HeaderName::from_static("idempotency-key"), key);
        if let Some(bearer) = &self.bearer {
            headers.insert(reqwest::header::AUTHORIZATION, bearer.clone());
        }
        let mut jwt_token = None;
        if let Some(signer) = &self.jwt {
            let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
            let token = signer.token(now, idempotency_key);
            // Base64url and dots only: always a valid header value.
            let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
                return DeliveryResult::Permanent {
                    reason: "the signed JWT is not a valid header value".into(),
                };
            };
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
            jwt_token = Some(token);
        }
        let sent = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => self.classify(response, jwt_token.as_deref()).await,
            Err(e) => self.failed(&e),
        }
    }

    /// `jwt` is the token this request carried, blanked out of the excerpt like the secrets.
    async fn classify(&self, mut response: reqwest::Response, jwt: Option<&str>) -> DeliveryResult {
        let status = response.status();
        let code = status.as_u16();
        if status.is_success() {
            return DeliveryResult::Delivered { status: code };
        }
        let after = if code == 429 || code == 503 {
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, chrono::Utc::now()))
        } else {
            None
        };
        let location = if status.is_redirection() {
            response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        } else {
            None
        };
        let excerpt = self.excerpt(&mut response, jwt).await;
        let mut reason = format!("{} answered {}", self.shown_url, status_text(status));
        match excerpt {
            Some(text) => reason.push_str(&format!(": {text:?}")),
            None => reason.push_str(" with an empty body"),
        }
        if code == 408 || code == 429 || status.is_server_error() {
            if let Some(after) = after {
                reason.push_str(&format!("; it asks to retry after {}", fmt_duration(after)));
            }
            return DeliveryResult::Retry { reason, after };
        }
        if status.is_redirection() {
            reason.push_str(&match location {
                Some(l) => format!(
                    "; redirects are not followed: set url to {l:?} if that is the new address"
                ),
                None => "; redirects are not followed".to_string(),
            });
        }
        DeliveryResult::Permanent { reason }
    }

    /// Up to [`EXCERPT_CHARS`] characters of the body, whitespace folded, secrets and the
    /// request's JWT blanked; `None` for an empty (or unreadable) body.
    async fn excerpt(&self, response: &mut reqwest::Response, jwt: Option<&str>) -> Option<String> {
        let mut raw = Vec::new();
        // A read error (timeout, reset) only shortens the excerpt.
        while raw.len() < EXCERPT_READ_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => raw.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        let mut text = String::from_utf8_lossy(&raw).into_owned();
        for secret in self.secrets.iter().map(String::as_str).chain(jwt) {
            if !secret.is_empty() {
                text = text.replace(secret, "[redacted]");
            }
        }
        let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if folded.is_empty() {
            return None;
        }
        let mut chars = folded.chars();
        let mut out: String = chars.by_ref().take(EXCERPT_CHARS).collect();
        if chars.next().is_some() || raw.len() >= EXCERPT_READ_BYTES {
            out.push('…');
        }
        Some(out)
    }

    fn failed(&self, e: &reqwest::Error) -> DeliveryResult {
        let detail = innermost(e);
        if e.is_timeout() {
            DeliveryResult::Retry {
                reason: format!(
                    "no answer from {} within {} (timeout)",
                    self.shown_url,
                    fmt_duration(self.timeout)
                ),
                after: None,
            }
        } else if e.is_connect() {
            DeliveryResult::Retry {
                reason: format!("could not connect to {}: {detail}", self.shown_url),
                after: None,
            }
        } else if e.is_builder() {
            DeliveryResult::Permanent {
                reason: format!("could not make the request to {}: {detail}", self.shown_url),
            }
        } else {
            DeliveryResult::Retry {
                reason: format!("the exchange with {} failed: {detail}", self.shown_url),
                after: None,
            }
        }
    }
}

/// The deepest cause of an error, which says what happened ("Connection refused") where the
/// outer ones only say where.
fn innermost(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s);
        source = s.source();
    }
    match last {
        Some(s) => s.to_string(),
        None => "unknown error".to_string(),
    }
}

fn status_text(status: reqwest::StatusCode) -> String {
    match status.canonical_reason() {
        Some(r) => format!("{} {r}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && !d.is_zero() {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date (IMF-fixdate, RFC 850 or asctime); a date in
/// the past means now. `None` when it is neither.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let when = chrono::DateTime::parse_from_rfc2822(value)
        .map(|d| d.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|f| chrono::NaiveDateTime::parse_from_str(value, f).ok())
                .map(|n| n.and_utc())
        })?;
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A request as the server received it.
    #[derive(Debug, Clone)]
    struct Received {
        request_line: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// A loopback HTTP/1.1 server answering each connection with the next canned response
    /// (raw bytes, `Connection: close`), or never answering when there are none left.
    async fn server(responses: Vec<String>) -> (String, Arc<Mutex<Vec<Received>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/receipts", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut responses = responses.into_iter();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let Some(received) = read_request(&mut stream).await else {
                    continue;
                };
                log.lock().unwrap().push(received);
                match responses.next() {
                    Some(r) => {
                        let _ = stream.write_all(r.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                    // Hold the connection open without a word.
                    None => {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            drop(stream);
                        });
                    }
                }
            }
        });
        (url, seen)
    }

    async fn read_request(stream: &mut TcpStream) -> Option<Received> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
        let mut lines = head.split("\r\n");
        let request_line = lines.next()?.to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < len {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(Received {
            request_line,
            headers,
            body,
        })
    }

    fn response(status: &str, extra_headers: &[&str], body: &str) -> String {
        let mut r = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for h in extra_headers {
            r.push_str(h);
            r.push_str("\r\n");
        }
        r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        r
    }

    fn config(url: &str) -> HttpSinkConfig {
        HttpSinkConfig {
            url: url.to_string(),
            auth: Some(HttpAuth {
                bearer: Some("s3cret-T0KEN".into()),
                jwt: None,
            }),
            timeout: "2s".into(),
            retry: RetryPolicyConfig::default(),
            headers: BTreeMap::from([("X-Ente".to_string(), "80012345678".to_string())]),
        }
    }

    async fn deliver(url: &str) -> DeliveryResult {
        config(url)
            .build()
            .unwrap()
            .deliver(b"<receipt/>".to_vec(), "application/xml", "rt-42")
            .await
    }

    #[tokio::test]
    async fn a_2xx_is_delivered_and_the_request_carries_key_token_headers_and_body() {
        let (url, seen) = server(vec![response("201 Created", &[], "ok")]).await;
        assert_eq!(
            deliver(&url).await,
            DeliveryResult::Delivered { status: 201 }
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let r = &seen[0];
        assert_eq!(r.request_line, "POST /receipts HTTP/1.1");
        assert_eq!(r.header("idempotency-key"), Some("rt-42"));
        assert_eq!(r.header("authorization"), Some("Bearer s3cret-T0KEN"));
        assert_eq!(r.header("content-type"), Some("application/xml"));
        assert_eq!(r.header("x-ente"), Some("80012345678"));
        assert_eq!(r.body, b"<receipt/>");
    }

    #[tokio::test]
    async fn no_authorization_header_without_a_token() {
        let (url, seen) = server(vec![response("200 OK", &[], "")]).await;
        let mut cfg = config(&url);
        cfg.auth = None;
        let result = cfg
            .build()
            .unwrap()
            .deliver(b"x".to_vec(), "text/plain", "k")
            .await;
        assert_eq!(result, DeliveryResult::Delivered { status: 200 });
        assert_eq!(seen.lock().unwrap()[0].header("authorization"), None);
    }

    #[tokio::test]
    async fn a_500_is_retried_and_says_what_the_server_said() {
        let (url, _) = server(vec![response(
            "500 Internal Server Error",
            &["Retry-After: 5"],
            "database\n   down",
        )])
        .await;
        assert_eq!(
            deliver(&url).await,
            DeliveryResult::Retry {
                reason: format!("{url} answered 500 Internal Server Error: \"database down\""),
                // Retry-After is honoured for 429 and 503 only.
                after: None,
            }
        );
    }

    #[tokio::test]
    async fn a_408_and_a_502_are_retried() {
        let (url, _) = server(vec![
            response("408 Request Timeout", &[], ""),
            response("502 Bad Gateway", &[], ""),
        ])
        .await;
        let sink = config(&url).build().unwrap();
        for expected in ["408 Request Timeout", "502 Bad Gateway"] {
            assert_eq!(
                sink.deliver(b"x".to_vec(), "text/plain", "k").await,
                DeliveryResult::Retry {
                    reason: format!("{url} answered {expected} with an empty body"),
                    after: None,
                }
            );
        }
    }

    #[tokio::test]
    async fn a_429_with_retry_after_seconds_is_retried_after_that_long() {
        let (url, _) = server(vec![response(
            "429 Too Many Requests",
            &["Retry-After: 7"],
            "slow down",
        )])
        .await;
        assert_eq!(
            deliver(&url).await,
            DeliveryResult::Retry {
                reason: format!(
                    "{url} answered 429 Too Many Requests: \"slow down\"; it asks to retry after 7 s"
                ),
                after: Some(Duration::from_secs(7)),
            }
        );
    }

    #[tokio::test]
    async fn a_503_with_an_http_date_is_retried_after_about_that_long() {
        let when = chrono::Utc::now() + chrono::Duration::seconds(120);
        let header = format!("Retry-After: {}", when.format("%a, %d %b %Y %H:%M:%S GMT"));
        let (url, _) = server(vec![response("503 Service Unavailable", &[&header], "")]).await;
        let DeliveryResult::Retry { after, .. } = deliver(&url).await else {
            panic!("a 503 is retried");
        };
        let after = after.expect("the date is honoured");
        assert!(
            after > Duration::from_secs(115) && after <= Duration::from_secs(120),
            "{after:?}"
        );
    }

    #[tokio::test]
    async fn a_400_is_permanent_with_an_excerpt_of_the_body_and_no_token() {
        let long = format!(
            "invalid receipt: IUV missing. you sent Authorization: Bearer s3cret-T0KEN {}",
            "x".repeat(300)
        );
        let (url, _) = server(vec![response("400 Bad Request", &[], &long)]).await;
        let DeliveryResult::Permanent { reason } = deliver(&url).await else {
            panic!("a 400 is permanent");
        };
        let excerpt: String = long
            .replace("s3cret-T0KEN", "[redacted]")
            .chars()
            .take(200)
            .collect();
        assert_eq!(
            reason,
            format!("{url} answered 400 Bad Request: \"{excerpt}…\"")
        );
        assert!(!reason.contains("s3cret"));
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_is_permanent() {
        let (url, seen) = server(vec![
            response(
                "301 Moved Permanently",
                &["Location: http://elsewhere/"],
                "",
            ),
            response("200 OK", &[], ""),
        ])
        .await;
        assert_eq!(
            deliver(&url).await,
            DeliveryResult::Permanent {
                reason: format!(
                    "{url} answered 301 Moved Permanently with an empty body; redirects are not \
                     followed: set url to \"http://elsewhere/\" if that is the new address"
                )
            }
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_and_is_retried() {
        let (url, seen) = server(vec![]).await;
        let mut cfg = config(&url);
        cfg.timeout = "300ms".into();
        let sink = cfg.build().unwrap();
        let started = Instant::now();
        let result = sink.deliver(b"x".to_vec(), "text/plain", "k").await;
        let took = started.elapsed();
        assert_eq!(
            result,
            DeliveryResult::Retry {
                reason: format!("no answer from {url} within 300 ms (timeout)"),
                after: None,
            }
        );
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(1),
            "{took:?}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "the request did arrive");
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("http://{addr}/receipts");
        let DeliveryResult::Retry { reason, after } = deliver(&url).await else {
            panic!("a refused connection is retried");
        };
        assert_eq!(after, None);
        assert!(
            reason.starts_with(&format!("could not connect to {url}: ")),
            "{reason}"
        );
        assert!(reason.to_lowercase().contains("refused"), "{reason}");
    }

    #[tokio::test]
    async fn a_bad_idempotency_key_is_permanent_without_sending() {
        let (url, seen) = server(vec![response("200 OK", &[], "")]).await;
        let result = config(&url)
            .build()
            .unwrap()
            .deliver(b"x".to_vec(), "text/plain", "bad\nkey")
            .await;
        assert_eq!(
            result,
            DeliveryResult::Permanent {
                reason: "idempotency key \"bad\\nkey\" is not a valid header value".into()
            }
        );
        assert!(seen.lock().unwrap().is_empty());
    }

    fn policy(max_age: Option<Duration>) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            max_age,
        }
    }

    #[test]
    fn delays_double_and_cap_at_max() {
        let p = policy(None);
        let base: Vec<u64> = (1..=6).map(|a| p.base_delay(a).as_secs()).collect();
        assert_eq!(base, [1, 2, 4, 8, 10, 10]);
        assert_eq!(p.base_delay(0), Duration::from_secs(1));
        assert_eq!(p.base_delay(40), Duration::from_secs(10));
        assert_eq!(p.base_delay(u32::MAX), Duration::from_secs(10));
        let huge = RetryPolicy {
            initial: Duration::from_secs(u64::MAX / 2),
            max: Duration::from_secs(u64::MAX),
            ..p
        };
        assert_eq!(huge.base_delay(3), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn jitter_stays_within_20_percent_and_under_max() {
        let p = policy(None);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = p.delay(3);
            assert!(
                d >= Duration::from_millis(3200) && d <= Duration::from_millis(4800),
                "{d:?}"
            );
            seen.insert(d);
            let capped = p.delay(10);
            assert!(
                capped >= Duration::from_secs(8) && capped <= Duration::from_secs(10),
                "{capped:?}"
            );
        }
        assert!(
            seen.len() > 100,
            "delays are jittered: {} distinct",
            seen.len()
        );
    }

    #[test]
    fn wait_prefers_the_servers_retry_after_capped_at_max() {
        let p = policy(None);
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(99_999))),
            Duration::from_secs(10)
        );
        let w = p.wait(2, None);
        assert!(w >= Duration::from_millis(1600) && w <= Duration::from_millis(2400));
    }

    #[test]
    fn gives_up_by_attempts_and_by_age() {
        let p = policy(None);
        assert!(!p.gives_up(4, Duration::from_secs(1_000_000)));
        assert!(p.gives_up(5, Duration::ZERO));
        let p = policy(Some(Duration::from_secs(3600)));
        assert!(!p.gives_up(1, Duration::from_secs(3599)));
        assert!(p.gives_up(1, Duration::from_secs(3600)));
    }

    #[test]
    fn retry_after_values() {
        let now = chrono::DateTime::parse_from_rfc3339("2025-03-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let secs = |s: &str| parse_retry_after(s, now);
        assert_eq!(secs("7"), Some(Duration::from_secs(7)));
        assert_eq!(secs(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            secs("Sat, 01 Mar 2025 10:01:30 GMT"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            secs("Saturday, 01-Mar-25 10:00:20 GMT"),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            secs("Sat Mar  1 10:00:05 2025"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(secs("Sat, 01 Mar 2025 09:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(secs("-3"), None);
        assert_eq!(secs("soon"), None);
        assert_eq!(secs(""), None);
    }

    #[test]
    fn config_from_toml_like_json_with_defaults() {
        let cfg: HttpSinkConfig = serde_json::from_value(serde_json::json!({
            "url": "http://erp.example/receipts",
            "auth": { "bearer": "TOKEN" },
        }))
        .unwrap();
        assert_eq!(cfg.timeout, "10s");
        assert!(cfg.headers.is_empty());
        assert!(cfg.check().is_empty(), "{:?}", cfg.check());
        assert!(!format!("{cfg:?}").contains("TOKEN"));
        let sink = cfg.build().unwrap();
        assert_eq!(
            *sink.retry_policy(),
            RetryPolicy {
                max_attempts: 12,
                initial: Duration::from_secs(1),
                max: Duration::from_secs(3600),
                max_age: None,
            }
        );
        assert!(!format!("{sink:?}").contains("TOKEN"));
        let unknown = serde_json::from_value::<HttpSinkConfig>(serde_json::json!({
            "url": "http://erp.example/", "retries": 3,
        }));
        assert!(unknown.is_err());
    }

    #[test]
    fn config_checks() {
        let check = |f: &dyn Fn(&mut HttpSinkConfig)| {
            let mut cfg = config("http://erp.example/receipts");
            f(&mut cfg);
            cfg.check()
        };
        assert_eq!(check(&|_| {}), Vec::<String>::new());
        assert_eq!(
            check(&|c| c.url = "https://erp.example/receipts?key=abc".into()),
            Vec::<String>::new()
        );
        assert_eq!(
            check(&|c| c.url = "ftp://erp.example/".into()),
            ["url ftp://erp.example/: scheme \"ftp\" is not supported (only http and https)"]
        );
        assert_eq!(
            check(&|c| c.url = "erp.example/receipts".into()),
            ["url \"erp.example/receipts\" is not a valid URL: relative URL without a base"]
        );
        assert_eq!(
            check(&|c| c.url = "http://user:pw@erp.example/".into()),
            ["url http://erp.example/: put credentials in auth = { bearer = ... }, not in the url"]
        );
        assert_eq!(
            check(&|c| c.timeout = "10".into()),
            ["timeout: duration \"10\" needs a unit (ms, s, m, h)"]
        );
        assert_eq!(
            check(&|c| c.timeout = "0s".into()),
            ["timeout must be more than 0"]
        );
        assert_eq!(
            check(&|c| c.retry.max_attempts = 0),
            ["retry.max_attempts must be at least 1"]
        );
        assert_eq!(
            check(&|c| {
                c.retry.initial = "1x".into();
                c.retry.max_age = Some("2d".into());
            }),
            [
                "retry.initial: duration \"1x\": unknown unit \"x\" (ms, s, m, h)",
                "retry.max_age: duration \"2d\": unknown unit \"d\" (ms, s, m, h)",
            ]
        );
        assert_eq!(
            check(&|c| c.retry.initial = "2h".into()),
            ["retry.initial (2h) is longer than retry.max (1h)"]
        );
        assert_eq!(
            check(&|c| c.auth = Some(HttpAuth {
                bearer: Some(" ".into()),
                jwt: None,
            })),
            ["auth.bearer is empty"]
        );
        assert_eq!(
            check(&|c| c.auth = Some(HttpAuth {
                bearer: Some("a\nb".into()),
                jwt: None,
            })),
            ["auth.bearer contains characters not allowed in an HTTP header"]
        );
        assert_eq!(
            check(&|c| {
                c.headers.insert("Authorization".into(), "Basic x".into());
                c.headers.insert("Bad Name".into(), "x".into());
                c.headers.insert("X-Ok".into(), "a\nb".into());
            }),
            [
                "headers: Authorization is set by the connector and cannot be configured",
                "headers: \"Bad Name\" is not a valid header name",
                "headers: the value of X-Ok contains characters not allowed in an HTTP header",
            ]
        );
        let mut bad = config("ftp://erp.example/");
        bad.timeout = "x".into();
        let err = bad.build().unwrap_err().to_string();
        assert!(err.contains("scheme \"ftp\" is not supported"), "{err}");
        assert!(err.contains("; timeout: "), "{err}");
    }

    const JWT_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

    fn jwt_auth(secret: &str, subject: Option<&str>) -> HttpAuth {
        HttpAuth {
            bearer: None,
            jwt: Some(JwtAuth {
                secret: secret.into(),
                issuer: "snodo".into(),
                subject: subject.map(Into::into),
                ttl: "5m".into(),
            }),
        }
    }

    /// HMAC-SHA512 (RFC 2104) written out over `sha2`, so the check does not rest on the code
    /// under test or on the `hmac` crate.
    fn hmac_sha512(key: &[u8], message: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        const BLOCK: usize = 128;
        let mut k = if key.len() > BLOCK {
            Sha512::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        k.resize(BLOCK, 0);
        let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
        let inner = Sha512::new()
            .chain_update(pad(0x36))
            .chain_update(message)
            .finalize();
        Sha512::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize()
            .to_vec()
    }

    fn b64url(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .expect("base64url without padding")
    }

    /// Checks the bearer JWT of a received request and returns its claims.
    fn verified_claims(r: &Received, secret: &str) -> serde_json::Value {
        let auth = r.header("authorization").expect("an Authorization header");
        let token = auth.strip_prefix("Bearer ").expect("a bearer token");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "base64url without padding: {token}"
        );
        assert_eq!(b64url(parts[0]), br#"{"alg":"HS512","typ":"JWT"}"#);
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert_eq!(
            b64url(parts[2]),
            hmac_sha512(secret.as_bytes(), signed.as_bytes()),
            "the signature verifies with the shared secret"
        );
        assert_ne!(
            b64url(parts[2]),
            hmac_sha512(b"another-secret-of-at-least-32-bytes!", signed.as_bytes())
        );
        serde_json::from_slice(&b64url(parts[1])).expect("claims are JSON")
    }

    #[tokio::test]
    async fn a_jwt_is_signed_afresh_for_each_request() {
        let (url, seen) = server(vec![
            response("200 OK", &[], ""),
            response("201 Created", &[], ""),
        ])
        .await;
        let mut cfg = config(&url);
        cfg.auth = Some(jwt_auth(JWT_SECRET, Some("c_g224")));
        let sink = cfg.build().unwrap();
        let before = chrono::Utc::now().timestamp();
        assert_eq!(
            sink.deliver(b"{}".to_vec(), "application/json", "rt-42")
                .await,
            DeliveryResult::Delivered { status: 200 }
        );
        assert_eq!(
            sink.deliver(b"{}".to_vec(), "application/json", "rt-43")
                .await,
            DeliveryResult::Delivered { status: 201 }
        );
        let after = chrono::Utc::now().timestamp();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for (r, key) in seen.iter().zip(["rt-42", "rt-43"]) {
            assert_eq!(r.header("idempotency-key"), Some(key));
            let claims = verified_claims(r, JWT_SECRET);
            let names: Vec<&str> = claims
                .as_object()
                .expect("an object")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(names.len(), 5, "{claims}");
            assert_eq!(claims["iss"], "snodo");
            assert_eq!(claims["sub"], "c_g224");
            assert_eq!(claims["jti"], key);
            let iat = claims["iat"].as_i64().expect("iat in seconds");
            let exp = claims["exp"].as_i64().expect("exp in seconds");
            assert!(before <= iat && iat <= after, "{iat} in {before}..={after}");
            assert_eq!(exp - iat, 300, "exp = iat + ttl");
        }
        assert_ne!(
            seen[0].header("authorization"),
            seen[1].header("authorization")
        );
    }

    #[tokio::test]
    async fn a_jwt_without_subject_and_with_a_long_secret() {
        let (url, seen) = server(vec![response("200 OK", &[], "")]).await;
        // Longer than SHA-512's block: HMAC hashes the key first.
        let secret = "k".repeat(200);
        let mut cfg = config(&url);
        cfg.auth = Some(jwt_auth(&secret, None));
        if let Some(jwt) = cfg.auth.as_mut().and_then(|a| a.jwt.as_mut()) {
            jwt.ttl = "90s".into();
        }
        let result = cfg
            .build()
            .unwrap()
            .deliver(b"x".to_vec(), "text/plain", "k-1")
            .await;
        assert_eq!(result, DeliveryResult::Delivered { status: 200 });
        let claims = verified_claims(&seen.lock().unwrap()[0], &secret);
        assert!(claims.get("sub").is_none(), "{claims}");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            90
        );
    }

    #[tokio::test]
    async fn the_jwt_secret_and_token_never_show() {
        let body = format!("bad token; key was {JWT_SECRET}");
        let (url, _) = server(vec![response("401 Unauthorized", &[], &body)]).await;
        let mut cfg = config(&url);
        cfg.auth = Some(jwt_auth(JWT_SECRET, Some("c_g224")));
        assert!(!format!("{cfg:?}").contains(JWT_SECRET));
        let sink = cfg.build().unwrap();
        let shown = format!("{sink:?}");
        assert!(shown.contains("jwt HS512 [redacted]"), "{shown}");
        assert!(!shown.contains(JWT_SECRET));
        let DeliveryResult::Permanent { reason } =
            sink.deliver(b"x".to_vec(), "text/plain", "k").await
        else {
            panic!("a 401 is permanent");
        };
        assert_eq!(
            reason,
            format!("{url} answered 401 Unauthorized: \"bad token; key was [redacted]\"")
        );
    }

    #[test]
    fn jwt_config_defaults_and_checks() {
        let cfg: HttpSinkConfig = serde_json::from_value(serde_json::json!({
            "url": "http://erp.example/receipts",
            "auth": { "jwt": { "secret": JWT_SECRET } },
        }))
        .unwrap();
        let jwt = cfg.auth.as_ref().and_then(|a| a.jwt.as_ref()).unwrap();
        assert_eq!(jwt.issuer, "snodo");
        assert_eq!(jwt.subject, None);
        assert_eq!(jwt.ttl, "5m");
        assert!(cfg.check().is_empty(), "{:?}", cfg.check());
        let unknown = serde_json::from_value::<HttpSinkConfig>(serde_json::json!({
            "url": "http://erp.example/", "auth": { "jwt": { "secret": JWT_SECRET, "alg": "HS256" } },
        }));
        assert!(unknown.is_err());

        let check = |f: &dyn Fn(&mut JwtAuth)| {
            let mut cfg = config("http://erp.example/receipts");
            let mut auth = jwt_auth(JWT_SECRET, Some("c_g224"));
            if let Some(j) = auth.jwt.as_mut() {
                f(j);
            }
            cfg.auth = Some(auth);
            let errors = cfg.check();
            assert!(
                errors.iter().all(|e| !e.contains("shared-secret")),
                "{errors:?}"
            );
            errors
        };
        assert_eq!(check(&|_| {}), Vec::<String>::new());
        assert_eq!(
            check(&|j| j.secret = " ".into()),
            ["auth.jwt.secret is empty"]
        );
        assert_eq!(
            check(&|j| j.secret = "a-shared-secret-of-31-bytes-xyz".into()),
            ["auth.jwt.secret must be at least 32 bytes for HS512, got 31"]
        );
        // Bytes, not characters: 16 two-byte characters are enough.
        assert_eq!(check(&|j| j.secret = "è".repeat(16)), Vec::<String>::new());
        assert_eq!(
            check(&|j| j.issuer = "".into()),
            ["auth.jwt.issuer is empty"]
        );
        assert_eq!(
            check(&|j| j.subject = Some(" ".into())),
            ["auth.jwt.subject is empty: leave it out instead"]
        );
        assert_eq!(
            check(&|j| j.ttl = "5".into()),
            ["auth.jwt.ttl: duration \"5\" needs a unit (ms, s, m, h)"]
        );
        assert_eq!(
            check(&|j| j.ttl = "0s".into()),
            ["auth.jwt.ttl must be more than 0"]
        );
        assert_eq!(
            check(&|j| j.ttl = "1500ms".into()),
            ["auth.jwt.ttl (1500ms) must be whole seconds: JWT times are in seconds"]
        );
        assert_eq!(
            check(&|j| j.ttl = "25h".into()),
            ["auth.jwt.ttl (25h) must be at most 24h"]
        );
        assert_eq!(check(&|j| j.ttl = "24h".into()), Vec::<String>::new());
        assert_eq!(
            check(&|j| {
                j.secret = "short".into();
                j.ttl = "1x".into();
            }),
            [
                "auth.jwt.secret must be at least 32 bytes for HS512, got 5",
                "auth.jwt.ttl: duration \"1x\": unknown unit \"x\" (ms, s, m, h)",
            ]
        );

        let mut both = config("http://erp.example/receipts");
        both.auth = Some(HttpAuth {
            bearer: Some("TOKEN".into()),
            ..jwt_auth(JWT_SECRET, None)
        });
        assert_eq!(both.check(), ["auth: give either bearer or jwt, not both"]);
        let err = both.build().unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
        assert!(!err.contains(JWT_SECRET) && !err.contains("TOKEN"), "{err}");
    }
}
