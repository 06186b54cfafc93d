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

mod jwt;
mod sink;
#[cfg(test)]
mod tests;

pub use crate::retry::{parse_retry_after, RetryPolicy, RetryPolicyConfig};
/// Kept here too, where it was first defined: `snodo_connectors::http::DeliveryResult`.
pub use crate::DeliveryResult;
pub use jwt::JwtAuth;
pub use sink::HttpSink;

use crate::duration::HumanDuration;
use crate::{ConnectorError, MessageSink, MessageSinkConfig};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const NAME: &str = "http";

/// How much of a response body goes into a reason.
pub(crate) const EXCERPT_CHARS: usize = 200;
/// How much of a response body is read at most to make that excerpt.
pub(crate) const EXCERPT_READ_BYTES: usize = 8 * 1024;
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
    pub timeout: HumanDuration,
    #[serde(default)]
    pub retry: RetryPolicyConfig,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_timeout() -> HumanDuration {
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

impl HttpSinkConfig {
    /// Semantic checks beyond types, each a message for the operator.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = parse_url(&self.url) {
            errors.push(e);
        }
        match self.timeout.get() {
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
        let timeout = self.timeout.get().map_err(config)?;
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

impl MessageSinkConfig for HttpSinkConfig {
    fn check(&self) -> Vec<String> {
        HttpSinkConfig::check(self)
    }

    fn build(&self) -> crate::Result<Arc<dyn MessageSink>> {
        Ok(Arc::new(HttpSinkConfig::build(self)?))
    }
}
