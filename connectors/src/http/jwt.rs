//! `auth = { jwt = { ... } }`: a fresh HS512 token per request, signed with `jsonwebtoken`.

use crate::duration::HumanDuration;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::{Deserialize, Serialize};
use std::time::Duration;

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
    pub ttl: HumanDuration,
    /// The JOSE header's `kid`: the id MyPay gives the entity's key
    /// (`cod_service_account_jwt_uscita_secret_key_id`), which receivers built for MyPay look up.
    pub kid: Option<String>,
    /// How `secret` reads: `utf-8` (its bytes, the default) or `base64` (decoded first, as MyPay
    /// reads the secret it shares with an entity, so the same configured value signs alike).
    #[serde(default)]
    pub secret_encoding: SecretEncoding,
}

/// How a JWT secret is written in the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretEncoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    Base64,
}

fn default_issuer() -> String {
    "snodo".into()
}
fn default_ttl() -> HumanDuration {
    "5m".into()
}

/// Shortest JWT secret accepted, in bytes.
const JWT_MIN_SECRET_BYTES: usize = 32;
/// Longest token lifetime accepted: a push token has no business living longer.
const JWT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The JOSE header of every token, `alg` first as receivers have always seen it
/// (`jsonwebtoken::encode` writes `typ` first, so the crate signs and this module frames).
const JWT_HEADER: &str = r#"{"alg":"HS512","typ":"JWT"}"#;

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("secret", &"[redacted]")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("ttl", &self.ttl)
            .field("kid", &self.kid)
            .field("secret_encoding", &self.secret_encoding)
            .finish()
    }
}

impl JwtAuth {
    /// Semantic checks, each a message for the operator that never shows the secret.
    pub fn check(&self) -> Vec<String> {
        self.build().err().unwrap_or_default()
    }

    pub(super) fn build(&self) -> Result<JwtSigner, Vec<String>> {
        let mut errors = Vec::new();
        let key: Vec<u8> = match self.secret_encoding {
            SecretEncoding::Utf8 => self.secret.as_bytes().to_vec(),
            SecretEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(self.secret.trim())
                .unwrap_or_else(|_| {
                    errors.push(
                        "auth.jwt.secret is not base64 (secret_encoding = \"base64\")".to_string(),
                    );
                    Vec::new()
                }),
        };
        if self.secret.trim().is_empty() {
            errors.push("auth.jwt.secret is empty".to_string());
        } else if !key.is_empty() && key.len() < JWT_MIN_SECRET_BYTES {
            errors.push(format!(
                "auth.jwt.secret must be at least {JWT_MIN_SECRET_BYTES} bytes for HS512, got {}",
                key.len()
            ));
        }
        if self.kid.as_deref().is_some_and(|k| k.trim().is_empty()) {
            errors.push("auth.jwt.kid is empty: leave it out instead".to_string());
        }
        if self.issuer.trim().is_empty() {
            errors.push("auth.jwt.issuer is empty".to_string());
        }
        if self.subject.as_deref().is_some_and(|s| s.trim().is_empty()) {
            errors.push("auth.jwt.subject is empty: leave it out instead".to_string());
        }
        let ttl = match self.ttl.get() {
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
        let ttl_secs = ttl.unwrap_or_else(|e| {
            errors.push(e);
            0
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        let header = match &self.kid {
            None => JWT_HEADER.to_string(),
            Some(kid) => serde_json::json!({"alg": "HS512", "typ": "JWT", "kid": kid}).to_string(),
        };
        Ok(JwtSigner {
            key: EncodingKey::from_secret(&key),
            header,
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            ttl_secs,
        })
    }
}

/// Signs the per-request tokens of [`JwtAuth`].
#[derive(Clone)]
pub(super) struct JwtSigner {
    key: EncodingKey,
    /// The JOSE header, as written.
    header: String,
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
    pub(super) fn token(&self, iat: u64, jti: &str) -> Result<String, String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = JwtClaims {
            iss: &self.issuer,
            sub: self.subject.as_deref(),
            iat,
            exp: iat.saturating_add(self.ttl_secs),
            jti,
        };
        let claims = serde_json::to_vec(&claims).map_err(|e| e.to_string())?;
        let signing_input = format!("{}.{}", b64.encode(&self.header), b64.encode(claims));
        let signature =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &self.key, Algorithm::HS512)
                .map_err(|e| format!("cannot sign the JWT: {e}"))?;
        Ok(format!("{signing_input}.{signature}"))
    }
}
