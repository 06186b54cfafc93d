//! The `sftp` connector: a folder on an entity's SFTP server as a drop box (source) or an outbox
//! (sink), over the `ssh2` crate (libssh2). The calls block; the engine runs them on blocking
//! threads, so a slow server stalls only its own pipeline.
//!
//! Source layout under `path`, as for `dir`: new files arrive at the top; a file that has kept
//! its size and mtime for `settle` (seen across polls) is claimed by a remote rename into
//! `processing/<owner>/` (OpenSSH's server refuses a rename onto an existing name and the source
//! name is gone for whoever comes second, so a file is claimed once even by several hubs),
//! streamed down to a local staged file and handed over. [`Ack::done`] moves it to
//! `archive/YYYY_MM/` (or deletes it); [`Ack::failed`] moves it to `failed/` with a
//! `<name>.error.txt` beside it. What a run left in its own `processing/<owner>/` is handed over
//! again, `redelivered`, at the next start; `<owner>` is derived from the machine and the local
//! staging folder, so another hub sharing the remote folder never takes what this one claimed.
//! With `marker = "done" | "md5"` a file is taken once its `<name>.done` / `<name>.md5` exists
//! instead of once settled; the marker travels with it, and an `.md5` is checked against the
//! content while it streams down (a mismatch fails the file).
//!
//! Trust: the server's host key must be pinned (`known_host = "SHA256:..."` as `ssh-keygen -lf`
//! prints it, or a `known_hosts` file); there is no accept-any default, and a mismatch refuses to
//! connect with both fingerprints in the error.
//!
//! The source holds one SSH session, opened and closed when the framework says so
//! ([`crate::Supervised`]); a broken transport is [`ConnectorError::Unavailable`], and the
//! framework reconnects. The sink opens its session on first use.
//!
//! Files: `config.rs` (settings), `session.rs` (connecting, host key pinning, remote file
//! operations), `source.rs` (the drop folder), `sink.rs` (the outbox folder).

mod config;
mod session;
mod sink;
mod source;

pub use config::{SftpSinkConfig, SftpSourceConfig};
pub use session::fingerprint;
pub use sink::SftpSink;
pub use source::{SftpDropFolder, SftpSource};

// What the files of this connector and its tests share (each starts with `use super::*`).
use config::*;
use session::*;

use crate::dir::After;
use crate::duration::HumanDuration;
use crate::{
    Ack, Body, ConnectorError, Message, Result, Sink, SinkConfig, Source, SourceConfig, Supervised,
};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use ssh2::{ErrorCode, FileStat, OpenFlags, OpenType, Session, Sftp};
use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const NAME: &str = "sftp";

/// Against a real server (ops/test.sh turns the feature on).
#[cfg(all(test, feature = "integration"))]
mod integration;
#[cfg(test)]
mod tests;
