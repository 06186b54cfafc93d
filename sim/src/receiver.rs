//! `snodo receiver`: the entity system at the other end of a hub's receipts pipelines, for
//! benchmarks and demos. An HTTP/1 server that accepts a `POST` on any path, answers at once,
//! and appends one line per request to a log:
//!
//! ```text
//! <unix ms of arrival>;<Idempotency-Key>;<body length in bytes>
//! ```
//!
//! The log is buffered and flushed at least every 100 ms and when the receiver stops. It counts
//! requests and distinct idempotency keys (a hub delivers at least once: a key seen twice is a
//! redelivery) and can answer an error status, always (`--status 500`) or to the first N
//! requests (`--fail-first N`, answered 503), to show a hub's retries.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Router;
use std::collections::HashSet;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the log reaches the file at least.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How long a stopping receiver waits for the requests in flight.
const DRAIN: Duration = Duration::from_secs(2);

/// What to serve.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// `address:port` to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Append a line per request here.
    pub log: Option<PathBuf>,
    /// The status of every answer (200 unless a demo wants errors).
    pub status: u16,
    /// Answer the first N requests 503, whatever `status` says.
    pub fail_first: u64,
}

impl ReceiverOptions {
    /// Answers 200 to everything, keeps no log.
    pub fn new(listen: impl Into<String>) -> Self {
        Self {
            listen: listen.into(),
            log: None,
            status: 200,
            fail_first: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("status {0} is not an HTTP status (100-999)")]
    Status(u16),
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        listen: String,
        source: std::io::Error,
    },
    #[error("cannot open the log {path}: {source}")]
    OpenLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the log {path} failed, it is incomplete: {source} ({summary})")]
    WriteLog {
        path: PathBuf,
        source: std::io::Error,
        summary: ReceiverSummary,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// What the receiver saw, printed when it stops: `received=N distinct=N refused=N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverSummary {
    /// POST requests.
    pub received: u64,
    /// Distinct `Idempotency-Key` values among them (requests without one not counted).
    pub distinct: u64,
    /// Requests answered an error status (`--status`, `--fail-first`).
    pub refused: u64,
}

impl fmt::Display for ReceiverSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} distinct={} refused={}",
            self.received, self.distinct, self.refused
        )
    }
}

struct Tally {
    received: u64,
    refused: u64,
    keys: HashSet<String>,
    log: Option<BufWriter<std::fs::File>>,
    /// The first write error; the log is dropped after it.
    log_error: Option<std::io::Error>,
}

impl Tally {
    fn summary(&self) -> ReceiverSummary {
        ReceiverSummary {
            received: self.received,
            distinct: self.keys.len() as u64,
            refused: self.refused,
        }
    }

    fn flush(&mut self) {
        if let Some(w) = self.log.as_mut() {
            if let Err(e) = w.flush() {
                self.fail(e);
            }
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        eprintln!("receiver: cannot write the log: {e}");
        self.log = None;
        self.log_error.get_or_insert(e);
    }
}

struct Shared {
    tally: Mutex<Tally>,
    status: StatusCode,
    fail_first: u64,
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        // A poisoned lock means a handler panicked mid-update; the counts are still usable.
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bound receiver, not serving yet (so a caller can learn the port of `127.0.0.1:0`).
pub struct Receiver {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    log_path: Option<PathBuf>,
}

impl Receiver {
    /// Checks the options, opens the log (appending) and binds the address.
    pub async fn bind(opts: ReceiverOptions) -> Result<Self, ReceiverError> {
        let status =
            StatusCode::from_u16(opts.status).map_err(|_| ReceiverError::Status(opts.status))?;
        let log = match &opts.log {
            Some(path) => Some(BufWriter::with_capacity(
                1 << 16,
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| ReceiverError::OpenLog {
                        path: path.clone(),
                        source,
                    })?,
            )),
            None => None,
        };
        let listen_error = |source| ReceiverError::Listen {
            listen: opts.listen.clone(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(&opts.listen)
            .await
            .map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        Ok(Self {
            listener,
            addr,
            shared: Arc::new(Shared {
                tally: Mutex::new(Tally {
                    received: 0,
                    refused: 0,
                    keys: HashSet::new(),
                    log,
                    log_error: None,
                }),
                status,
                fail_first: opts.fail_first,
            }),
            log_path: opts.log,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then lets the requests in flight finish (2 s at
    /// most), flushes the log and says what it saw.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<ReceiverSummary, ReceiverError> {
        let shared = self.shared;
        let app = Router::new()
            .fallback(accept)
            .with_state(Arc::clone(&shared));
        let flusher = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(FLUSH_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    shared.tally().flush();
                }
            })
        };
        let served = serve_until(self.listener, app, shutdown).await;
        flusher.abort();
        let mut tally = shared.tally();
        tally.flush();
        let summary = tally.summary();
        served.map_err(ReceiverError::Serve)?;
        if let (Some(source), Some(path)) = (tally.log_error.take(), self.log_path) {
            return Err(ReceiverError::WriteLog {
                path,
                source,
                summary,
            });
        }
        Ok(summary)
    }
}

/// Binds, says where it listens (on standard error), and serves until SIGINT or SIGTERM.
pub async fn serve(opts: ReceiverOptions) -> Result<ReceiverSummary, ReceiverError> {
    let receiver = Receiver::bind(opts).await?;
    eprintln!("receiver listening on http://{}", receiver.local_addr());
    receiver.run(signalled()).await
}

/// Completes on SIGINT or SIGTERM: the shutdown of the servers of `snodo receiver` and
/// `snodo sim --serve`.
pub async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// The key as it goes in a `;`-separated line.
fn log_key(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c == ';' || c.is_control() { '_' } else { c })
        .collect()
}

async fn accept(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED;
    }
    let at = unix_ms();
    let key = headers
        .get("idempotency-key")
        .map(|v| log_key(v.as_bytes()))
        .unwrap_or_default();
    let mut tally = shared.tally();
    tally.received += 1;
    let status = if tally.received <= shared.fail_first {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        shared.status
    };
    if !status.is_success() {
        tally.refused += 1;
    }
    if let Some(w) = tally.log.as_mut() {
        if let Err(e) = writeln!(w, "{at};{key};{}", body.len()) {
            tally.fail(e);
        }
    }
    if !key.is_empty() && !tally.keys.contains(&key) {
        tally.keys.insert(key);
    }
    status
}

/// Serves `app` until `shutdown` completes, then lets the requests in flight finish ([`DRAIN`] at
/// most).
pub(crate) async fn serve_until(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })
            .into_future(),
    );
    let served = tokio::select! {
        () = shutdown => {
            let _ = stop_tx.send(true);
            match tokio::time::timeout(DRAIN, &mut server).await {
                Ok(joined) => joined,
                Err(_) => {
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
        joined = &mut server => joined,
    };
    served.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(client: &reqwest::Client, url: &str, key: Option<&str>, body: &str) -> u16 {
        let mut req = client.post(url).body(body.to_string());
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        req.send().await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn logs_counts_and_refuses_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("received.log");
        let mut opts = ReceiverOptions::new("127.0.0.1:0");
        opts.log = Some(log.clone());
        opts.fail_first = 1;
        let receiver = Receiver::bind(opts).await.unwrap();
        let base = format!("http://{}", receiver.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(receiver.run(async {
            let _ = stopped.await;
        }));

        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let before = unix_ms();
        // The first is refused (fail-first), the retry of the same key accepted; any path.
        assert_eq!(
            post(&client, &format!("{base}/receipts"), Some("R1"), "{}").await,
            503
        );
        assert_eq!(
            post(&client, &format!("{base}/receipts"), Some("R1"), "{}").await,
            200
        );
        assert_eq!(
            post(&client, &format!("{base}/a/b"), Some("R2;x"), "hello").await,
            200
        );
        assert_eq!(post(&client, &base, None, "").await, 200);
        let get = client.get(&base).send().await.unwrap().status().as_u16();
        assert_eq!(get, 405, "only POST is a delivery");

        // Flushed while running, within the flush period.
        tokio::time::sleep(FLUSH_EVERY * 3).await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");

        stop.send(()).unwrap();
        let summary = running.await.unwrap().unwrap();
        assert_eq!(
            summary,
            ReceiverSummary {
                received: 4,
                distinct: 2,
                refused: 1
            }
        );
        assert_eq!(summary.to_string(), "received=4 distinct=2 refused=1");

        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(';').collect()).collect();
        assert_eq!(lines.len(), 4, "{text}");
        for l in &lines {
            assert_eq!(l.len(), 3, "{text}");
            let at: u128 = l[0].parse().unwrap();
            assert!(at >= before && at <= unix_ms(), "{text}");
        }
        let fields: Vec<(&str, &str)> = lines.iter().map(|l| (l[1], l[2])).collect();
        assert_eq!(
            fields,
            [("R1", "2"), ("R1", "2"), ("R2_x", "5"), ("", "0")],
            "{text}"
        );
    }

    #[tokio::test]
    async fn answers_the_status_asked_for() {
        let mut opts = ReceiverOptions::new("127.0.0.1:0");
        opts.status = 500;
        let receiver = Receiver::bind(opts).await.unwrap();
        let base = format!("http://{}", receiver.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(receiver.run(async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        for _ in 0..3 {
            assert_eq!(post(&client, &base, Some("K"), "x").await, 500);
        }
        stop.send(()).unwrap();
        let summary = running.await.unwrap().unwrap();
        assert_eq!(summary.to_string(), "received=3 distinct=1 refused=3");
    }

    #[tokio::test]
    async fn bad_options_are_refused() {
        let mut opts = ReceiverOptions::new("127.0.0.1:0");
        opts.status = 42;
        assert!(matches!(
            Receiver::bind(opts).await,
            Err(ReceiverError::Status(42))
        ));
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let opts = ReceiverOptions::new(taken.local_addr().unwrap().to_string());
        assert!(matches!(
            Receiver::bind(opts).await,
            Err(ReceiverError::Listen { .. })
        ));
    }
}
