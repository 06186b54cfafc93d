//! One outbound HTTP exchange under a deadline, for calls the hub makes while someone waits for
//! it: pagoPA Checkout when an entity opens a cart, an entity's own system when the node verifies
//! a notice that lives there. Unlike the `http` sink there is no outbox behind these calls: the
//! caller answers its own client from the result, so every failure comes back as a value quickly.
//!
//! Redirects are not followed (Checkout answers a cart with a 302 whose `location` is the
//! result), and bodies are read up to [`MAX_BODY`]. `https://` uses rustls with the system's
//! trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured).

use std::time::Duration;

/// Largest answer read.
pub const MAX_BODY: usize = 1 << 20;

/// What the other side answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The `location` header, for redirects.
    pub location: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

/// A shared client (keep-alive connections); cheap to clone.
#[derive(Clone)]
pub struct Caller {
    client: reqwest::Client,
}

impl Caller {
    pub fn new() -> Result<Self, CallError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| CallError::Failed(format!("HTTP client: {e}")))?;
        Ok(Self { client })
    }

    /// `GET url` with `Accept: application/json` and an optional bearer token.
    pub async fn get_json(
        &self,
        url: &str,
        bearer: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        check_url(url)?;
        let mut req = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        run(req, timeout).await
    }

    /// `POST url` with a JSON body and extra headers.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        self.post(url, "application/json", headers, body, timeout)
            .await
    }

    /// `POST url` with a body of `content_type` (a SOAP call's `text/xml`) and extra headers.
    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        check_url(url)?;
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        run(req, timeout).await
    }
}

fn check_url(url: &str) -> Result<(), CallError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(CallError::Failed(format!("{url:?} is not an http(s) URL")));
    }
    Ok(())
}

/// An error with its causes (a TLS refusal is three levels down in reqwest's errors).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

async fn run(req: reqwest::RequestBuilder, timeout: Duration) -> Result<Answer, CallError> {
    let exchange = async {
        let mut res = req
            .send()
            .await
            .map_err(|e| CallError::Failed(chain(&e.without_url())))?;
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| CallError::Failed(chain(&e.without_url())))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(CallError::Failed(format!(
                    "answer larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            location,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| CallError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-shot server answering `reply` after `delay`.
    fn serve_once(reply: &'static str, delay: Duration) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                std::thread::sleep(delay);
                let _ = s.write_all(reply.as_bytes());
            }
        });
        format!("http://{addr}/x")
    }

    #[tokio::test]
    async fn reads_status_location_and_body() {
        let url = serve_once(
            "HTTP/1.1 302 Found\r\nlocation: http://c/1\r\ncontent-length: 2\r\n\r\nok",
            Duration::ZERO,
        );
        let a = Caller::new()
            .expect("client")
            .post_json(
                &url,
                &[("x-k", "v")],
                b"{}".to_vec(),
                Duration::from_secs(5),
            )
            .await
            .expect("answer");
        assert_eq!(a.status, 302);
        assert_eq!(a.location.as_deref(), Some("http://c/1"));
        assert_eq!(a.body, b"ok");
    }

    #[tokio::test]
    async fn a_late_answer_is_a_timeout() {
        let url = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Duration::from_secs(3),
        );
        let started = std::time::Instant::now();
        let e = Caller::new()
            .expect("client")
            .get_json(&url, None, Duration::from_millis(300))
            .await
            .expect_err("late");
        assert!(matches!(e, CallError::Timeout(_)), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn only_http_urls_are_called() {
        let e = Caller::new()
            .expect("client")
            .get_json("ftp://x/y", None, Duration::from_secs(1))
            .await
            .expect_err("ftp");
        assert!(e.to_string().contains("http(s)"), "{e}");
    }
}
