//! Transports. A connector moves bytes between the hub and the outside world and knows no
//! format: a **source** claims input and hands it over with an acknowledgement handle, a **sink**
//! puts a finished file somewhere.
//!
//! The contract gives at-least-once delivery by construction: a source forgets a message (moves
//! the file away, commits the offset) only when the pipeline calls [`Ack::done`] after the result
//! is durable; a crash before that leaves the message claimed, and the source hands it over again
//! on restart with `redelivered` set.
//!
//! The calls are blocking: file and SFTP transfers are blocking by nature, and the engine runs
//! each pipeline's work on a blocking thread so one slow remote never stalls another.

pub mod dir;
pub mod http;
pub mod sftp;

use std::path::PathBuf;

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

/// One claimed input.
pub struct Message {
    /// The name the sender gave it (a file name for file transports).
    pub name: String,
    pub body: Body,
    /// Claimed before, by this or an earlier run that did not finish it.
    pub redelivered: bool,
    pub ack: Box<dyn Ack>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("name", &self.name)
            .field("body", &self.body)
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

pub trait Source: Send {
    /// Claims what is ready now. An empty list means nothing to do until the next poll.
    fn poll(&mut self) -> Result<Vec<Message>>;
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
