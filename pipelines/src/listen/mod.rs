//! The hub's listeners, served connection by connection so that each is bounded: a cap on
//! connections (more are answered 503 and closed), a request head must arrive within
//! `http.header_timeout`, an answer is due within `http.request_timeout`, an idle kept-alive
//! connection is closed after `http.idle_timeout`; optional TLS (`[http.tls]`) with the node's
//! client certificate (`[pagopa] node_auth`). docs/SECURITY.md.

mod auth;
mod node_auth;
mod tls;
mod x509;

pub use auth::{same_secret, AuthFailures};
pub use node_auth::{Mode, NodeGate};
pub use x509::Names;

use crate::config::{Config, Problem};
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use snodo_store::Store;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Who sent a request: in every request's extensions.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client certificate, verified at the handshake (TLS only).
    pub cert: Option<Arc<Names>>,
}

/// What bounds a listener.
#[derive(Clone, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Everything the listeners enforce, built once at start from a checked configuration.
pub struct Guard {
    pub limits: Limits,
    pub failures: Arc<AuthFailures>,
    pub gate: Option<Arc<NodeGate>>,
    pub tls: Option<TlsAcceptor>,
    pub metrics_token: Option<String>,
    pub metrics_listen: Option<String>,
    pub soap_max_body: usize,
    pub admin_max_body: usize,
}

impl Guard {
    pub fn new(cfg: &Config, store: Arc<dyn Store>) -> Result<Self, String> {
        let http = &cfg.http;
        let limits = Limits {
            header_timeout: http.header_timeout.value(),
            request_timeout: http.request_timeout.value(),
            idle_timeout: http.idle_timeout.value(),
            max_connections: http.max_connections.max(1),
        };
        let gate = match &cfg.pagopa.node_auth {
            Some(n) => Some(Arc::new(NodeGate::new(n, store)?)),
            None => None,
        };
        if gate.as_ref().is_some_and(|g| g.mode == Mode::None) && !is_loopback(&http.listen) {
            tracing::warn!(
                listen = %http.listen,
                "pagopa.node_auth = \"none\": anyone who reaches this address may call the node's endpoint"
            );
        }
        let client_ca = cfg
            .pagopa
            .node_auth
            .as_ref()
            .filter(|n| n.mode == "mtls")
            .and_then(|n| n.ca_file.as_deref());
        let tls = match &http.tls {
            Some(t) => Some(TlsAcceptor::from(tls::server_config(
                &t.cert_file,
                &t.key_file,
                client_ca,
            )?)),
            None => None,
        };
        Ok(Self {
            limits,
            failures: Arc::new(AuthFailures::new(http.auth_failures_per_minute)),
            gate,
            tls,
            metrics_token: http
                .metrics_token
                .as_ref()
                .map(|t| t.0.clone())
                .filter(|t| !t.is_empty()),
            metrics_listen: http.metrics_listen.clone().filter(|l| !l.is_empty()),
            soap_max_body: http.soap_max_body_bytes,
            admin_max_body: http.admin_max_body_bytes,
        })
    }
}

/// Whether `listen` (`host:port`) is reachable only from this machine.
pub fn is_loopback(listen: &str) -> bool {
    match listen.parse::<SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => listen
            .rsplit_once(':')
            .is_some_and(|(h, _)| h.eq_ignore_ascii_case("localhost")),
    }
}

/// The admin token's shortest length.
pub const MIN_ADMIN_TOKEN: usize = 32;

/// Problems with the listeners' keys: bounds, TLS files, node authentication, the admin token.
pub fn check(cfg: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut p = |path: &str, msg: String| out.push(Problem::new(path, msg));
    let http = &cfg.http;
    for (key, d) in [
        ("http.header_timeout", &http.header_timeout),
        ("http.request_timeout", &http.request_timeout),
        ("http.idle_timeout", &http.idle_timeout),
    ] {
        match d.get() {
            Ok(v) if v.is_zero() => p(key, "must be more than zero".into()),
            Ok(_) => {}
            Err(e) => p(key, e),
        }
    }
    for (key, v) in [
        ("http.max_connections", http.max_connections),
        ("http.soap_max_body_bytes", http.soap_max_body_bytes),
        ("http.admin_max_body_bytes", http.admin_max_body_bytes),
        (
            "http.auth_failures_per_minute",
            http.auth_failures_per_minute as usize,
        ),
    ] {
        if v == 0 {
            p(key, "must be at least 1".into());
        }
    }
    if let Some(t) = http.admin_token.as_ref().filter(|t| !t.0.is_empty()) {
        if t.0.chars().count() < MIN_ADMIN_TOKEN {
            p(
                "http.admin_token",
                format!(
                    "must be at least {MIN_ADMIN_TOKEN} characters (e.g. `openssl rand -hex 32`)"
                ),
            );
        }
    }
    if let Some(t) = &http.tls {
        if let Err(e) = tls::load_key(&t.cert_file, &t.key_file) {
            p("http.tls", e);
        }
    }
    if let Some(m) = &http.metrics_listen {
        if !m.is_empty() && m.parse::<SocketAddr>().is_err() && !m.contains(':') {
            p("http.metrics_listen", format!("{m:?} is not host:port"));
        }
    }
    match &cfg.pagopa.node_auth {
        None if !is_loopback(&http.listen) => p(
            "pagopa.node_auth",
            format!(
                "http.listen {} is reachable beyond this machine, so the node's endpoint needs \
                 authentication: set node_auth to \"mtls\", \"proxy\" or \"allowlist\" (a table, \
                 docs/SECURITY.md), or node_auth = \"none\" to accept anyone explicitly",
                http.listen
            ),
        ),
        None => {}
        Some(n) => {
            let mode = Mode::parse(&n.mode);
            if mode.is_none() {
                p(
                    "pagopa.node_auth.mode",
                    format!("{:?}: expected mtls, proxy, allowlist or none", n.mode),
                );
            }
            for (i, a) in n.allow.iter().enumerate() {
                if let Err(e) = node_auth::parse_cidr(a) {
                    p(&format!("pagopa.node_auth.allow[{i}]"), e);
                }
            }
            if let Some(s) = &n.subject {
                if x509::parse_dn(s).is_none() {
                    p(
                        "pagopa.node_auth.subject",
                        format!("{s:?} is not a distinguished name such as \"CN=..., O=...\""),
                    );
                }
            }
            match mode {
                Some(Mode::Mtls) => {
                    match &n.ca_file {
                        None => p(
                            "pagopa.node_auth.ca_file",
                            "mtls needs the CA bundle the node's certificate chains to".into(),
                        ),
                        Some(ca) => {
                            if let Err(e) = tls::load_roots(ca) {
                                p("pagopa.node_auth.ca_file", e);
                            }
                        }
                    }
                    if http.tls.is_none() {
                        p(
                            "http.tls",
                            "pagopa.node_auth = mtls needs the hub to serve TLS: set [http.tls] cert_file and key_file".into(),
                        );
                    }
                }
                Some(Mode::Proxy) => {
                    if n.allow.is_empty() {
                        p(
                            "pagopa.node_auth.allow",
                            "proxy needs the proxy's addresses (only they may call)".into(),
                        );
                    }
                    match &n.subject_header {
                        None => p(
                            "pagopa.node_auth.subject_header",
                            "proxy needs the header carrying the verified client certificate's subject".into(),
                        ),
                        Some(h) => {
                            if axum::http::HeaderName::try_from(h.as_str()).is_err() {
                                p(
                                    "pagopa.node_auth.subject_header",
                                    format!("{h:?} is not a header name"),
                                );
                            }
                        }
                    }
                }
                Some(Mode::Allowlist) if n.allow.is_empty() => p(
                    "pagopa.node_auth.allow",
                    "allowlist needs at least one address or CIDR".into(),
                ),
                _ => {}
            }
            if mode != Some(Mode::Mtls) && (n.ca_file.is_some() || n.san.is_some()) {
                p(
                    "pagopa.node_auth",
                    "ca_file and san apply only with mode = \"mtls\"".into(),
                );
            }
        }
    }
    out
}

/// A connection's clock: when bytes last came in, when a request head started, how many
/// requests are being answered.
struct Activity {
    born: Instant,
    /// Milliseconds since `born`; 0: none yet.
    head_started: AtomicU64,
    idle_since: AtomicU64,
    in_flight: AtomicUsize,
    served: AtomicUsize,
}

impl Activity {
    fn now(&self) -> u64 {
        self.born.elapsed().as_millis() as u64 + 1
    }
}

/// The socket, noting the first byte of each request head.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.activity.in_flight.load(Ordering::Relaxed) == 0 {
            let now = self.activity.now();
            let _ = self.activity.head_started.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request being answered; dropping it starts the idle clock.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.served.fetch_add(1, Ordering::Relaxed);
        a.head_started.store(0, Ordering::Relaxed);
        Self(a)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then lets the requests in progress
/// finish (up to `request_timeout`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: breathe instead of spinning.
                tracing::warn!("http: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(stream, tls.is_some());
            continue;
        };
        let (app, limits, tls, shutdown) =
            (app.clone(), limits.clone(), tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            connection(stream, addr, app, limits, tls, shutdown).await;
            drop(permit);
        });
    }
    // Wait for the connections to finish their requests.
    let all = limits.max_connections.min(u32::MAX as usize) as u32;
    let _ = tokio::time::timeout(limits.request_timeout, permits.acquire_many(all)).await;
}

/// One connection too many: a plain 503 when it can be said at once, then closed.
fn refuse(stream: TcpStream, tls: bool) {
    tracing::debug!("http: connection refused, at http.max_connections");
    if !tls {
        let _ = stream.try_write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        );
    }
}

async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => {
            let peer = Peer { addr, cert: None };
            http1(stream, peer, app, limits, shutdown).await
        }
        Some(acceptor) => {
            let s = match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(peer = %addr, "tls: handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %addr, "tls: handshake timed out");
                    return;
                }
            };
            let cert = s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::new(Names::parse(c).unwrap_or_default()));
            http1(s, Peer { addr, cert }, app, limits, shutdown).await
        }
    }
}

async fn http1<I>(
    io: I,
    peer: Peer,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        born: Instant::now(),
        head_started: AtomicU64::new(0),
        idle_since: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        served: AtomicUsize::new(0),
    });
    let io = TokioIo::new(Watched {
        inner: io,
        activity: activity.clone(),
    });
    let request_timeout = limits.request_timeout;
    let busy = activity.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer.addr));
            req.extensions_mut().insert(peer.clone());
            let mut app = app.clone();
            let guard = Busy::new(busy.clone());
            async move {
                let req = req.map(axum::body::Body::new);
                let answer = tokio::time::timeout(
                    request_timeout,
                    tower_service::Service::call(&mut app, req),
                )
                .await;
                drop(guard);
                match answer {
                    Ok(r) => r,
                    Err(_) => Ok((
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no answer within http.request_timeout\n",
                    )
                        .into_response()),
                }
            }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Heads and idle connections are timed by the loop below.
        .header_read_timeout(None)
        .max_buf_size(64 << 10)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        // The next moment this connection may have to be closed.
        let a = &activity;
        let deadline_ms = if a.in_flight.load(Ordering::Relaxed) > 0 {
            a.now() + 1000
        } else {
            match a.head_started.load(Ordering::Relaxed) {
                0 if a.served.load(Ordering::Relaxed) == 0 => {
                    limits.header_timeout.as_millis() as u64
                }
                0 => a.idle_since.load(Ordering::Relaxed) + limits.idle_timeout.as_millis() as u64,
                started => started + limits.header_timeout.as_millis() as u64,
            }
        };
        let now = a.now();
        if now >= deadline_ms && a.in_flight.load(Ordering::Relaxed) == 0 {
            // A head that does not finish, or a connection left idle: close it.
            return;
        }
        // Looked at again at least every second: a new head may bring the deadline closer.
        let wait = Duration::from_millis(deadline_ms.saturating_sub(now).min(1000));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("http: connection ended: {e}");
                }
                return;
            }
            changed = shutdown.changed(), if !stopping => {
                let _ = changed;
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
