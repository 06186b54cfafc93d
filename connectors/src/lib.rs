//! Transports. A connector moves bytes between the hub and the outside world and knows no
//! format: a **source** claims input and hands it over with an acknowledgement handle, a **file
//! sink** puts a finished file somewhere, a **message sink** sends one message (key, body,
//! headers) and says whether it was delivered, is worth retrying (after how long) or is refused.
//! Each connector lives in its own folder (`dir/`, `sftp/`, `http/`, `kafka/`) and implements
//! the config traits below for what it can be; the pipeline engine registers it by name.
//!
//! Shared by all: typed durations ([`duration`]), the retry policy and `Retry-After` handling
//! ([`retry`]), and the supervision of a source's connection ([`supervised`]).
//!
//! The contract gives at-least-once delivery by construction: a source forgets a message (moves
//! the file away, commits the offset) only when the pipeline calls [`Ack::done`] after the result
//! is durable; a crash before that leaves the message claimed, and the source hands it over again
//! on restart with `redelivered` set.
//!
//! The calls are blocking: file and SFTP transfers are blocking by nature, and the engine runs
//! each pipeline's work on a blocking thread so one slow remote never stalls another.

pub mod call;
pub mod dir;
pub mod duration;
pub mod file_messages;
pub mod http;
pub mod kafka;
pub mod retry;
pub mod sftp;
pub mod supervised;

pub use duration::HumanDuration;
pub use retry::{RetryPolicy, RetryPolicyConfig};
pub use supervised::Supervised;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Refused(String),
    /// The remote did not answer (down, unreachable, too slow): worth trying again later.
    #[error("{0}")]
    Unavailable(String),
}

impl ConnectorError {
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_string(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, ConnectorError>;

/// Where a message's bytes are: a local file (large flows are never held in memory) or a buffer.
#[derive(Debug)]
pub enum Body {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// What the pipeline did with a message; the source then forgets it or sets it aside.
pub trait Ack: Send {
    /// The result is durable: the source may forget the message.
    fn done(self: Box<Self>) -> Result<()>;
    /// The message cannot be processed; the source sets it aside with the reason beside it.
    fn failed(self: Box<Self>, reason: &str) -> Result<()>;
}

/// Where a message sits in a stream (Kafka): enough to find it again or to report it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One claimed input.
pub struct Message {
    /// The name the sender gave it (a file name for file transports; `topic/partition@offset`
    /// for streams).
    pub name: String,
    pub body: Body,
    /// Claimed before, by this or an earlier run that did not finish it.
    pub redelivered: bool,
    /// The record key of a stream message; `None` for file transports.
    pub key: Option<Vec<u8>>,
    /// Where a stream message sits; `None` for file transports.
    pub offset: Option<StreamOffset>,
    pub ack: Box<dyn Ack>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("name", &self.name)
            .field("body", &self.body)
            .field("redelivered", &self.redelivered)
            .field(
                "key",
                &self.key.as_ref().map(|k| String::from_utf8_lossy(k)),
            )
            .field("offset", &self.offset)
            .finish()
    }
}

/// A source's lifecycle: connect, poll, close. The framework ([`Supervised`]) drives it: it
/// connects before the first poll, and when a poll says the connection is lost
/// ([`ConnectorError::Unavailable`]) it closes and connects again, waiting the shared backoff
/// between failed tries. A source never reconnects by itself.
pub trait Source: Send {
    /// Opens what the source reads through (a session, a consumer). Nothing to open (a local
    /// folder): the default.
    fn connect(&mut self) -> Result<()> {
        Ok(())
    }
    /// Claims what is ready now. An empty list means nothing to do until the next poll.
    /// `Err(Unavailable)`: the connection is lost (or was never opened); any other error leaves
    /// it open.
    fn poll(&mut self) -> Result<Vec<Message>>;
    /// Files larger than this are set aside (to the source's failed place, with why) without
    /// being taken in, where the transport tells a file's size before reading it.
    fn limit_file_size(&mut self, _max_bytes: u64) {}
    /// Lets the connection go. Messages already handed over keep their acks: an ack that cannot
    /// reach the remote now is retried by a later poll.
    fn close(&mut self) {}
}

/// A source's settings as read from the config; one impl per connector, registered by name in
/// the pipeline engine.
pub trait SourceConfig: Send + Sync + 'static {
    /// Cron expression (with seconds, Europe/Rome) for polling; `None` for the default.
    fn schedule(&self) -> Option<&str>;
    /// Semantic checks beyond types, each a message for the operator.
    fn check(&self) -> Vec<String> {
        Vec::new()
    }
    fn build(&self) -> Result<Box<dyn Source>>;
}

/// A sink's settings as read from the config.
pub trait SinkConfig: Send + Sync + 'static {
    fn check(&self) -> Vec<String> {
        Vec::new()
    }
    fn build(&self) -> Result<Box<dyn Sink>>;
}

pub trait Sink: Send + Sync {
    /// Publishes a finished file under `name`, all at once: a reader never sees it half written.
    fn put_file(&self, name: &str, content: &std::path::Path) -> Result<()>;
}

/// A message sink's settings as read from the config.
pub trait MessageSinkConfig: Send + Sync + 'static {
    fn check(&self) -> Vec<String> {
        Vec::new()
    }
    /// Blocking: it may ask the remote first (a topic is created when missing).
    fn build(&self) -> Result<Arc<dyn MessageSink>>;
}

/// One message for a [`MessageSink`].
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// What the message is about (a receipt's notice number): a stream's record key, so the
    /// messages of one key stay in order; an HTTP sink does not send it.
    pub key: &'a str,
    pub body: &'a [u8],
    /// `content-type` and `Idempotency-Key` (the same on every attempt of one message) among
    /// them: HTTP request headers, or record headers.
    pub headers: &'a [(&'a str, &'a str)],
}

impl Outgoing<'_> {
    /// The value of a header, its name compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// What [`MessageSink::send`] returns: a future the outbox awaits.
pub type Sending<'a> = Pin<Box<dyn Future<Output = DeliveryResult> + Send + 'a>>;

/// Sends messages one at a time, each attempt classified for the outbox; keeps no state about
/// them (the durable outbox decides when to try again, with [`MessageSink::retry_policy`]).
pub trait MessageSink: Send + Sync {
    /// One attempt.
    fn send<'a>(&'a self, message: Outgoing<'a>) -> Sending<'a>;

    /// The longest one attempt can take (the outbox's lease outlives it).
    fn timeout(&self) -> Duration;

    /// When to try again and when to give up, from the sink's `retry` settings.
    fn retry_policy(&self) -> &RetryPolicy;

    /// Sends `(key, body)` pairs and returns once every one is delivered, or with the first
    /// failure (some may have been delivered: the caller sends them all again, so receivers
    /// see duplicates, never gaps). Blocking; within `timeout`. A stream sink overrides this
    /// with one batch.
    fn send_all(&self, messages: &[(String, Vec<u8>)], timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        for (key, body) in messages {
            if std::time::Instant::now() >= deadline {
                return Err(ConnectorError::Unavailable(format!(
                    "not all {} messages sent within {timeout:?}",
                    messages.len()
                )));
            }
            let msg = Outgoing {
                key,
                body,
                headers: &[],
            };
            match futures::executor::block_on(self.send(msg)) {
                DeliveryResult::Delivered { .. } => {}
                DeliveryResult::Retry { reason, .. } => {
                    return Err(ConnectorError::Unavailable(reason))
                }
                DeliveryResult::Permanent { reason } => {
                    return Err(ConnectorError::Refused(reason))
                }
            }
        }
        Ok(())
    }
}

/// What one delivery attempt (of a receipt to a push target) came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The receiver accepted it: for HTTP a 2xx answer (its status); for Kafka the record was
    /// acknowledged by all in-sync replicas (`status` is 0: there is no status code).
    Delivered { status: u16 },
    /// Worth trying again later: a timeout, a connection problem, 408, 429 or 5xx, a broker
    /// that is down or busy. `after` is the wait the server asked for with `Retry-After`
    /// (HTTP 429 and 503 only).
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Trying again will not help until someone changes something (another 4xx, a 3xx; a record
    /// too large, an unauthorised or invalid topic).
    Permanent { reason: String },
}
