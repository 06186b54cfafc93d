use super::*;
use base64::Engine as _;
use sha2::Sha512;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
            kid: None,
            secret_encoding: Default::default(),
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
async fn a_jwt_as_mypay_signs_it_kid_and_base64_secret() {
    let (url, seen) = server(vec![response("200 OK", &[], "")]).await;
    // What MyPay keeps for the entity: a base64 secret (64 random bytes) and its key id.
    let raw: Vec<u8> = (0u8..64).map(|b| b.wrapping_mul(37)).collect();
    let secret = base64::engine::general_purpose::STANDARD.encode(&raw);
    let cfg: HttpSinkConfig = serde_json::from_value(serde_json::json!({
        "url": url,
        "auth": { "jwt": { "secret": secret, "secret_encoding": "base64", "kid": "mypay-key-7" } },
    }))
    .unwrap();
    let result = cfg
        .build()
        .unwrap()
        .deliver(b"x".to_vec(), "text/plain", "k-1")
        .await;
    assert_eq!(result, DeliveryResult::Delivered { status: 200 });
    let r = &seen.lock().unwrap()[0];
    let token = r
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    let parts: Vec<&str> = token.split('.').collect();
    let header: serde_json::Value = serde_json::from_slice(&b64url(parts[0])).unwrap();
    assert_eq!(header["kid"], "mypay-key-7");
    assert_eq!(header["alg"], "HS512");
    let signed = format!("{}.{}", parts[0], parts[1]);
    // Signed with the decoded bytes, as MyPay's Decoders.BASE64 + Keys.hmacShaKeyFor.
    assert_eq!(b64url(parts[2]), hmac_sha512(&raw, signed.as_bytes()));
    assert_ne!(
        b64url(parts[2]),
        hmac_sha512(secret.as_bytes(), signed.as_bytes())
    );
    // A secret that is not base64 is refused when the sink is built.
    let bad: HttpSinkConfig = serde_json::from_value(serde_json::json!({
        "url": "http://erp.example/",
        "auth": { "jwt": { "secret": "not base64 at all!!", "secret_encoding": "base64" } },
    }))
    .unwrap();
    let errors = bad
        .auth
        .as_ref()
        .and_then(|a| a.jwt.as_ref())
        .unwrap()
        .check();
    assert!(
        errors.iter().any(|e| e.contains("not base64")),
        "{errors:?}"
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
    let DeliveryResult::Permanent { reason } = sink.deliver(b"x".to_vec(), "text/plain", "k").await
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
