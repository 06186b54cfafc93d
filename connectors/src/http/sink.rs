//! One POST per message, classified for the outbox.

use super::jwt::JwtSigner;
use super::{EXCERPT_CHARS, EXCERPT_READ_BYTES};
use crate::retry::{parse_retry_after, RetryPolicy};
use crate::{DeliveryResult, MessageSink, Outgoing, Sending};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// Delivers documents to one URL. Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct HttpSink {
    pub(super) client: reqwest::Client,
    pub(super) url: reqwest::Url,
    pub(super) shown_url: String,
    pub(super) timeout: Duration,
    pub(super) bearer: Option<HeaderValue>,
    pub(super) jwt: Option<JwtSigner>,
    /// The bearer token and the JWT secret, kept only to blank them out of response excerpts.
    pub(super) secrets: Vec<String>,
    pub(super) headers: HeaderMap,
    pub(super) retry: RetryPolicy,
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
            let token = match signer.token(now, idempotency_key) {
                Ok(t) => t,
                Err(reason) => return DeliveryResult::Permanent { reason },
            };
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

impl MessageSink for HttpSink {
    /// [`HttpSink::deliver`] with the message's `content-type` and `Idempotency-Key` headers (the
    /// key when there is none).
    fn send<'a>(&'a self, message: Outgoing<'a>) -> Sending<'a> {
        Box::pin(async move {
            let content_type = message
                .header("content-type")
                .unwrap_or("application/octet-stream");
            let key = message.header("idempotency-key").unwrap_or(message.key);
            self.deliver(message.body.to_vec(), content_type, key).await
        })
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }
}
