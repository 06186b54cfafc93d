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

/// libssh2's SFTP status codes (SSH_FX_*) the connector tells apart.
const FX_NO_SUCH_FILE: i32 = 2;
const FX_OP_UNSUPPORTED: i32 = 8;

/// Transfer buffer: large reads let libssh2 pipeline its SFTP requests.
const CHUNK: usize = 256 * 1024;

fn default_port() -> u16 {
    22
}
fn default_settle() -> HumanDuration {
    "30s".into()
}
fn default_timeout() -> HumanDuration {
    "30s".into()
}

/// `from = { connector = "sftp", host, port = 22, user, key = "...", known_host = "SHA256:...",
/// path = "/in", schedule = "...", settle = "30s", after = "archive" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpSourceConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    /// Private key file (OpenSSH format).
    pub key: Option<PathBuf>,
    /// Environment variable holding the private key's passphrase.
    pub passphrase_env: Option<String>,
    /// Environment variable holding the password (when there is no key).
    pub password_env: Option<String>,
    /// The server's host key fingerprint, `SHA256:<base64>` as `ssh-keygen -lf` prints it.
    pub known_host: Option<String>,
    /// An OpenSSH known_hosts file holding the server's host key.
    pub known_hosts: Option<PathBuf>,
    /// The remote folder.
    pub path: String,
    /// Cron expression with seconds (`sec min hour day month weekday`), in Europe/Rome.
    pub schedule: Option<String>,
    /// A file is taken only once its size and mtime have not changed for this long.
    #[serde(default = "default_settle")]
    pub settle: HumanDuration,
    #[serde(default)]
    pub after: After,
    /// Connect and per-operation timeout.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Local folder for downloaded files (default: a folder under the system's temp dir).
    pub staging: Option<PathBuf>,
    /// A companion file that says `<name>` is complete: `"done"` (`<name>.done`) or `"md5"`
    /// (`<name>.md5` holding the content's MD5, checked after download). None: `settle` only.
    pub marker: Option<String>,
}

/// The companion file that marks a flow complete (the `marker` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// `<name>.done` exists: its content is not read.
    Done,
    /// `<name>.md5` holds the hex MD5 of `<name>` (as `md5sum` writes it), checked after download.
    Md5,
}

/// Names ending so are markers, never flows (whatever `marker` is set to).
const MARKER_SUFFIXES: [&str; 2] = [".done", ".md5"];

impl Marker {
    fn parse(s: Option<&str>) -> std::result::Result<Option<Self>, String> {
        match s.map(str::trim) {
            None => Ok(None),
            Some("done") => Ok(Some(Marker::Done)),
            Some("md5") => Ok(Some(Marker::Md5)),
            Some(other) => Err(format!(
                "marker {other:?} is not known: \"done\" (<name>.done) or \"md5\" (<name>.md5 \
                 holding the content's MD5), or leave it out to take files once they settle"
            )),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Marker::Done => ".done",
            Marker::Md5 => ".md5",
        }
    }

    fn of(self, name: &str) -> String {
        format!("{name}{}", self.suffix())
    }
}

/// The MD5 an `.md5` marker holds: the first word, 32 hex digits (lowercased).
fn parse_md5_marker(text: &str) -> Option<String> {
    let word = text.split_whitespace().next()?;
    (word.len() == 32 && word.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| word.to_ascii_lowercase())
}

/// `outcomes = { connector = "sftp", host, user, key, known_host, path = "/out", overwrite = false }`
///
/// The connection keys repeat the source's on purpose: serde cannot `flatten` a shared struct
/// under `deny_unknown_fields`, and a misspelt key must be refused, not ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpSinkConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    pub key: Option<PathBuf>,
    pub passphrase_env: Option<String>,
    pub password_env: Option<String>,
    pub known_host: Option<String>,
    pub known_hosts: Option<PathBuf>,
    pub path: String,
    /// Replace an existing file with different content (off: such a put fails).
    #[serde(default)]
    pub overwrite: bool,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

/// How to reach and trust one remote, shared by source and sink.
#[derive(Debug, Clone)]
struct Remote {
    host: String,
    port: u16,
    user: String,
    key: Option<PathBuf>,
    passphrase_env: Option<String>,
    password_env: Option<String>,
    known_host: Option<String>,
    known_hosts: Option<PathBuf>,
    timeout: HumanDuration,
}

impl SftpSourceConfig {
    fn remote(&self) -> Remote {
        Remote {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            key: self.key.clone(),
            passphrase_env: self.passphrase_env.clone(),
            password_env: self.password_env.clone(),
            known_host: self.known_host.clone(),
            known_hosts: self.known_hosts.clone(),
            timeout: self.timeout.clone(),
        }
    }
}

impl SftpSinkConfig {
    fn remote(&self) -> Remote {
        Remote {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            key: self.key.clone(),
            passphrase_env: self.passphrase_env.clone(),
            password_env: self.password_env.clone(),
            known_host: self.known_host.clone(),
            known_hosts: self.known_hosts.clone(),
            timeout: self.timeout.clone(),
        }
    }
}

impl Remote {
    fn check(&self, path: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.host.trim().is_empty() {
            p.push("host is empty".to_string());
        }
        if self.user.trim().is_empty() {
            p.push("user is empty".to_string());
        }
        if path.trim().is_empty() {
            p.push("path is empty (the remote folder)".to_string());
        }
        match (&self.known_host, &self.known_hosts) {
            (None, None) => p.push(
                "no host key pinned: set known_host = \"SHA256:...\" (as `ssh-keygen -lf` prints \
                 the server's public host key) or known_hosts = \"<file>\"; there is no \
                 accept-any-host-key default"
                    .to_string(),
            ),
            (Some(_), Some(_)) => {
                p.push("set one of known_host and known_hosts, not both".to_string())
            }
            (Some(fp), None) => {
                if let Err(e) = parse_fingerprint(fp) {
                    p.push(e);
                }
            }
            (None, Some(_)) => {}
        }
        match (&self.key, &self.password_env) {
            (None, None) => p.push(
                "no credentials: set key = \"<private key file>\" or password_env = \"<VAR>\""
                    .to_string(),
            ),
            (Some(_), Some(_)) => p.push("set one of key and password_env, not both".to_string()),
            _ => {}
        }
        if self.passphrase_env.is_some() && self.key.is_none() {
            p.push("passphrase_env is set but there is no key".to_string());
        }
        match self.timeout.get() {
            Err(e) => p.push(format!("timeout: {e}")),
            Ok(d) if d.is_zero() => p.push("timeout must be more than 0".to_string()),
            Ok(d) if u32::try_from(d.as_millis()).is_err() => {
                p.push("timeout is too long".to_string())
            }
            Ok(_) => {}
        }
        p
    }

    fn label(&self) -> String {
        format!("sftp://{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Checks a `SHA256:<base64>` fingerprint and returns it normalised (no padding).
fn parse_fingerprint(s: &str) -> std::result::Result<String, String> {
    let b64 = s.trim().strip_prefix("SHA256:").ok_or_else(|| {
        format!("known_host {s:?} must be a SHA256 fingerprint, \"SHA256:<base64>\" as `ssh-keygen -lf` prints it")
    })?;
    let b64 = b64.trim_end_matches('=');
    match base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64) {
        Ok(bytes) if bytes.len() == 32 => Ok(format!("SHA256:{b64}")),
        _ => Err(format!(
            "known_host {s:?} is not a SHA256 fingerprint (43 base64 characters after \"SHA256:\")"
        )),
    }
}

/// The fingerprint OpenSSH prints for a public key blob: SHA-256, base64 without padding.
pub fn fingerprint(key_blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(key_blob))
    )
}

impl SourceConfig for SftpSourceConfig {
    fn schedule(&self) -> Option<&str> {
        self.schedule.as_deref()
    }

    fn check(&self) -> Vec<String> {
        let mut p = self.remote().check(&self.path);
        if let Err(e) = self.settle.get() {
            p.push(format!("settle: {e}"));
        }
        if let Err(e) = Marker::parse(self.marker.as_deref()) {
            p.push(e);
        }
        p
    }

    fn build(&self) -> Result<Box<dyn Source>> {
        Ok(Box::new(SftpDropFolder::new(self)?))
    }
}

impl SinkConfig for SftpSinkConfig {
    fn check(&self) -> Vec<String> {
        self.remote().check(&self.path)
    }

    fn build(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(SftpSink::new(self)?))
    }
}

/// Why a remote operation failed: an SFTP/SSH error, or an I/O error of a transfer (ssh2's
/// `File` reports through `std::io`, which hides whether the session broke).
enum Fail {
    Ssh(ssh2::Error),
    Io(std::io::Error),
}

/// A failed remote operation and the path it concerned.
type Op<T> = std::result::Result<T, (PathBuf, Fail)>;

fn ssh_at(path: &Path) -> impl FnOnce(ssh2::Error) -> (PathBuf, Fail) + '_ {
    move |e| (path.to_path_buf(), Fail::Ssh(e))
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> (PathBuf, Fail) + '_ {
    move |e| (path.to_path_buf(), Fail::Io(e))
}

/// An SFTP error with the remote path it concerns.
fn sftp_err(label: &str, path: &Path, e: Fail) -> ConnectorError {
    let e = match e {
        Fail::Ssh(e) => {
            let text = e.to_string();
            let kind = std::io::Error::from(e).kind();
            std::io::Error::new(kind, text)
        }
        Fail::Io(e) => e,
    };
    ConnectorError::io(format!("{label}{}", path.display()), e)
}

fn is_no_such_file(e: &ssh2::Error) -> bool {
    e.code() == ErrorCode::SFTP(FX_NO_SUCH_FILE)
}

/// A remote path under `root`.
fn join(root: &str, parts: &[&str]) -> PathBuf {
    let mut s = root.trim_end_matches('/').to_string();
    for part in parts {
        s.push('/');
        s.push_str(part);
    }
    PathBuf::from(s)
}

struct Live {
    // Dropped before the session it runs on.
    sftp: Sftp,
    session: Session,
    used: Instant,
}

/// One SSH session. The source opens and closes it when the framework says so ([`Conn::connect`],
/// [`Conn::close`], [`Conn::run_live`]); the sink (and a test's client) opens it on first use and
/// checks it before reuse after a pause ([`Conn::run`]). A transport error drops it either way.
struct Conn {
    remote: Remote,
    timeout: Duration,
    live: Option<Live>,
}

/// A session idle for longer than this is probed before use.
const PROBE_AFTER: Duration = Duration::from_secs(2);

impl Conn {
    fn new(remote: Remote) -> Result<Self> {
        let timeout = remote.timeout.get().map_err(ConnectorError::Config)?;
        Ok(Self {
            remote,
            timeout,
            live: None,
        })
    }

    /// Opens a new session, replacing any.
    fn connect(&mut self) -> Result<()> {
        self.live = None;
        self.live = Some(self.open()?);
        Ok(())
    }

    fn close(&mut self) {
        self.live = None;
    }

    /// The SFTP channel, connecting (or reconnecting) as needed: for the sink.
    fn sftp(&mut self) -> Result<&Sftp> {
        let stale = match &self.live {
            None => true,
            Some(live) if live.used.elapsed() > PROBE_AFTER => {
                live.session.keepalive_send().is_err()
                    || live.sftp.realpath(Path::new(".")).is_err()
            }
            Some(_) => false,
        };
        if stale {
            self.live = None;
            self.live = Some(self.open()?);
        }
        match self.live.as_mut() {
            Some(live) => {
                live.used = Instant::now();
                Ok(&live.sftp)
            }
            None => Err(ConnectorError::Refused(format!(
                "{}: no session",
                self.remote.label()
            ))),
        }
    }

    /// The error of a failed operation. When the transport broke (not for a mere SFTP status)
    /// the session is dropped and the error is [`ConnectorError::Unavailable`].
    fn fail(&mut self, path: &Path, e: Fail) -> ConnectorError {
        let broken = match &e {
            Fail::Ssh(e) => matches!(e.code(), ErrorCode::Session(_)),
            Fail::Io(_) => true,
        };
        let err = sftp_err(&self.remote.label(), path, e);
        if broken {
            self.live = None;
            return ConnectorError::Unavailable(err.to_string());
        }
        err
    }

    fn open(&self) -> Result<Live> {
        let r = &self.remote;
        let label = r.label();
        let io = |e: std::io::Error| ConnectorError::io(&label, e);
        let ssh = |what: &str, e: ssh2::Error| {
            ConnectorError::io(&label, std::io::Error::other(format!("{what}: {e}")))
        };
        let addrs: Vec<_> = (r.host.as_str(), r.port)
            .to_socket_addrs()
            .map_err(io)?
            .collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or_else(|| io(last))?;
        let _ = tcp.set_nodelay(true);
        let mut session = Session::new().map_err(|e| ssh("session", e))?;
        session.set_tcp_stream(tcp);
        session.set_timeout(u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX));
        session.handshake().map_err(|e| ssh("handshake", e))?;
        self.verify_host_key(&session)?;
        match (&r.key, &r.password_env) {
            (Some(key), _) => {
                let passphrase = match &r.passphrase_env {
                    Some(var) => Some(env(var)?),
                    None => None,
                };
                if !key.is_file() {
                    return Err(ConnectorError::Config(format!(
                        "{label}: private key file {} not found",
                        key.display()
                    )));
                }
                session
                    .userauth_pubkey_file(&r.user, None, key, passphrase.as_deref())
                    .map_err(|e| ssh(&format!("key authentication as {}", r.user), e))?;
            }
            (None, Some(var)) => {
                let password = env(var)?;
                session
                    .userauth_password(&r.user, &password)
                    .map_err(|e| ssh(&format!("password authentication as {}", r.user), e))?;
            }
            (None, None) => {
                return Err(ConnectorError::Config(format!(
                    "{label}: no key and no password_env"
                )))
            }
        }
        if !session.authenticated() {
            return Err(ConnectorError::Refused(format!(
                "{label}: authentication as {} failed",
                r.user
            )));
        }
        session.set_keepalive(true, 15);
        let sftp = session.sftp().map_err(|e| ssh("sftp subsystem", e))?;
        Ok(Live {
            sftp,
            session,
            used: Instant::now(),
        })
    }

    fn verify_host_key(&self, session: &Session) -> Result<()> {
        let r = &self.remote;
        let label = r.label();
        let (blob, kind) = session.host_key().ok_or_else(|| {
            ConnectorError::Refused(format!("{label}: the server showed no host key"))
        })?;
        let got = fingerprint(blob);
        if let Some(pin) = &r.known_host {
            let want = parse_fingerprint(pin).map_err(ConnectorError::Config)?;
            if got != want {
                return Err(ConnectorError::Refused(format!(
                    "{label}: host key mismatch, refusing to connect: the server showed {got} \
                     ({kind:?}) but known_host pins {want}"
                )));
            }
            return Ok(());
        }
        let Some(file) = &r.known_hosts else {
            return Err(ConnectorError::Config(format!(
                "{label}: no host key pinned (known_host or known_hosts)"
            )));
        };
        let mut kh = session
            .known_hosts()
            .map_err(|e| ConnectorError::io(&label, e.into()))?;
        kh.read_file(file, ssh2::KnownHostFileKind::OpenSSH)
            .map_err(|e| ConnectorError::io(file.display(), e.into()))?;
        match kh.check_port(&r.host, r.port, blob) {
            ssh2::CheckResult::Match => Ok(()),
            ssh2::CheckResult::NotFound => Err(ConnectorError::Refused(format!(
                "{label}: {} has no entry for {} (the server showed {got} ({kind:?}))",
                file.display(),
                r.host
            ))),
            ssh2::CheckResult::Mismatch => {
                let names = [r.host.clone(), format!("[{}]:{}", r.host, r.port)];
                let known: Vec<String> = kh
                    .hosts()
                    .unwrap_or_default()
                    .iter()
                    .filter(|h| {
                        h.name()
                            .is_some_and(|n| n.split(',').any(|n| names.iter().any(|m| m == n)))
                    })
                    .filter_map(|h| {
                        base64::engine::general_purpose::STANDARD
                            .decode(h.key())
                            .ok()
                            .map(|b| fingerprint(&b))
                    })
                    .collect();
                let known = if known.is_empty() {
                    "a different key".to_string()
                } else {
                    known.join(", ")
                };
                Err(ConnectorError::Refused(format!(
                    "{label}: host key mismatch, refusing to connect: the server showed {got} \
                     ({kind:?}) but {} holds {known}",
                    file.display()
                )))
            }
            ssh2::CheckResult::Failure => Err(ConnectorError::Refused(format!(
                "{label}: cannot check the host key against {}",
                file.display()
            ))),
        }
    }

    /// Runs `op` on the SFTP channel, connecting first if needed (the sink).
    fn run<T>(&mut self, op: impl FnOnce(&Sftp) -> Op<T>) -> Result<T> {
        let sftp = self.sftp()?;
        op(sftp).map_err(|(path, e)| self.fail(&path, e))
    }

    /// Runs `op` on the open session; none open is [`ConnectorError::Unavailable`] (the source:
    /// the framework connects).
    fn run_live<T>(&mut self, op: impl FnOnce(&Sftp) -> Op<T>) -> Result<T> {
        let Some(live) = self.live.as_mut() else {
            return Err(self.not_connected());
        };
        live.used = Instant::now();
        op(&live.sftp).map_err(|(path, e)| self.fail(&path, e))
    }

    /// Whether a session is open ([`ConnectorError::Unavailable`] if not).
    fn live(&self) -> Result<()> {
        match self.live {
            Some(_) => Ok(()),
            None => Err(self.not_connected()),
        }
    }

    fn not_connected(&self) -> ConnectorError {
        ConnectorError::Unavailable(format!("{}: not connected", self.remote.label()))
    }
}

fn env(var: &str) -> Result<String> {
    std::env::var(var)
        .map_err(|_| ConnectorError::Config(format!("environment variable {var} is not set")))
}

fn lock(m: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `mkdir -p` on the remote.
fn mkdirs(sftp: &Sftp, dir: &Path) -> Op<()> {
    let s = dir.to_string_lossy();
    let mut cur = String::new();
    for (i, part) in s.split('/').enumerate() {
        if i > 0 {
            cur.push('/');
        }
        cur.push_str(part);
        if part.is_empty() || part == "." {
            continue;
        }
        let p = Path::new(&cur);
        if sftp.stat(p).is_ok() {
            continue;
        }
        if let Err(e) = sftp.mkdir(p, 0o755) {
            // Made meanwhile by someone else?
            if sftp.stat(p).is_err() {
                return Err(ssh_at(p)(e));
            }
        }
    }
    Ok(())
}

/// A name under `dir` that does not exist yet: `name`, else `name.1`, `name.2`, ...
fn free_name(sftp: &Sftp, dir: &Path, name: &str) -> PathBuf {
    let mut candidate = dir.join(name);
    let mut n = 1;
    while sftp.lstat(&candidate).is_ok() {
        candidate = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    candidate
}

/// Uploads `content` to `tmp`, syncs it where the server can, and renames it to `target`. The
/// rename fails on OpenSSH when `target` exists, so a concurrent writer is never clobbered.
fn upload_atomically(sftp: &Sftp, content: &mut dyn Read, tmp: &Path, target: &Path) -> Op<u64> {
    let result = (|| -> Op<u64> {
        let mut f = sftp
            .open_mode(
                tmp,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                0o644,
                OpenType::File,
            )
            .map_err(ssh_at(tmp))?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = content.read(&mut buf).map_err(io_at(tmp))?;
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).map_err(io_at(tmp))?;
            total += n as u64;
        }
        match f.fsync() {
            Ok(()) => {}
            // fsync@openssh.com is an extension: a server without it gets no sync.
            Err(e) if e.code() == ErrorCode::SFTP(FX_OP_UNSUPPORTED) => {}
            Err(e) if matches!(e.code(), ErrorCode::Session(_)) => {
                return Err(ssh_at(tmp)(e));
            }
            Err(_) => {}
        }
        f.close().map_err(ssh_at(tmp))?;
        let size = sftp.stat(tmp).map_err(ssh_at(tmp))?.size.unwrap_or(total);
        if size != total {
            return Err(io_at(tmp)(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the server holds {size} bytes of the {total} sent"),
            )));
        }
        sftp.rename(tmp, target, None).map_err(ssh_at(target))?;
        Ok(total)
    })();
    if result.is_err() {
        let _ = sftp.unlink(tmp);
    }
    result
}

fn same_remote_content(sftp: &Sftp, remote: &Path, local: &Path) -> Result<bool> {
    let lm = fs::metadata(local).map_err(|e| ConnectorError::io(local.display(), e))?;
    let rs = sftp
        .stat(remote)
        .map_err(|e| sftp_err("", remote, Fail::Ssh(e)))?;
    if rs.size != Some(lm.len()) {
        return Ok(false);
    }
    let mut rf = sftp
        .open(remote)
        .map_err(|e| sftp_err("", remote, Fail::Ssh(e)))?;
    let mut lf = fs::File::open(local).map_err(|e| ConnectorError::io(local.display(), e))?;
    let (mut rb, mut lb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    loop {
        let n = rf
            .read(&mut rb)
            .map_err(|e| ConnectorError::io(remote.display(), e))?;
        if n == 0 {
            // The remote is done; equal only if the local file is too.
            let m = lf
                .read(&mut lb[..1])
                .map_err(|e| ConnectorError::io(local.display(), e))?;
            return Ok(m == 0);
        }
        if lf.read_exact(&mut lb[..n]).is_err() || rb[..n] != lb[..n] {
            return Ok(false);
        }
    }
}

/// What an ack could not do yet; the source retries it at its next poll.
#[derive(Debug, Clone)]
enum Settle {
    Done,
    Failed(String),
}

struct Shared {
    conn: Mutex<Conn>,
    /// Acks that failed (server gone, permission denied): retried before each poll.
    pending: Mutex<Vec<(String, Settle)>>,
    root: String,
    /// This hub's folder under `processing/` (see [`owner_id`]).
    owner: String,
    after: After,
    marker: Option<Marker>,
}

impl Shared {
    /// Where this hub keeps the files it claimed: `processing/<owner>/`.
    fn processing(&self, name: Option<&str>) -> PathBuf {
        match name {
            Some(name) => join(&self.root, &["processing", &self.owner, name]),
            None => join(&self.root, &["processing", &self.owner]),
        }
    }

    fn settle(&self, name: &str, how: &Settle) -> Result<()> {
        let root = self.root.as_str();
        let claimed = self.processing(Some(name));
        let mut conn = lock(&self.conn);
        conn.run_live(|sftp| {
            match sftp.lstat(&claimed) {
                Ok(_) => {}
                // Settled by an earlier try whose answer was lost.
                Err(e) if is_no_such_file(&e) => return Ok(()),
                Err(e) => return Err(ssh_at(&claimed)(e)),
            }
            // The marker goes first: if the file's move then fails, a retry still finds the file
            // and finishes; the other way round a retry would think all done and leave the marker.
            let marker = self
                .marker
                .map(|m| (self.processing(Some(&m.of(name))), m))
                .filter(|(p, _)| sftp.lstat(p).is_ok());
            let move_marker = |dir: &Path, to: &Path| -> Op<()> {
                if let Some((from, m)) = &marker {
                    let to_name = to
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| name.to_string());
                    let mto = free_name(sftp, dir, &m.of(&to_name));
                    sftp.rename(from, &mto, None).map_err(ssh_at(&mto))?;
                }
                Ok(())
            };
            match how {
                Settle::Done => match self.after {
                    After::Delete => {
                        if let Some((m, _)) = &marker {
                            sftp.unlink(m).map_err(ssh_at(m))?;
                        }
                        sftp.unlink(&claimed).map_err(ssh_at(&claimed))
                    }
                    After::Archive => {
                        let month = chrono::Local::now().format("%Y_%m").to_string();
                        let dir = join(root, &["archive", &month]);
                        mkdirs(sftp, &dir)?;
                        let to = free_name(sftp, &dir, name);
                        move_marker(&dir, &to)?;
                        sftp.rename(&claimed, &to, None).map_err(ssh_at(&to))
                    }
                },
                Settle::Failed(reason) => {
                    let dir = join(root, &["failed"]);
                    mkdirs(sftp, &dir)?;
                    let to = free_name(sftp, &dir, name);
                    let to_name = to
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| name.to_string());
                    let note = join(root, &["failed", &format!("{to_name}.error.txt")]);
                    let tmp = join(root, &["failed", &format!(".{to_name}.error.txt.part")]);
                    let _ = sftp.unlink(&note);
                    upload_atomically(sftp, &mut reason.as_bytes(), &tmp, &note)?;
                    move_marker(&dir, &to)?;
                    sftp.rename(&claimed, &to, None).map_err(ssh_at(&to))
                }
            }
        })
    }

    fn settle_or_keep(&self, name: &str, how: Settle) -> Result<()> {
        match self.settle(name, &how) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((name.to_string(), how));
                Err(e)
            }
        }
    }
}

/// A drop folder on an SFTP server under the framework's supervision: what a pipeline polls.
pub type SftpSource = Supervised<SftpDropFolder>;

impl SftpSource {
    pub fn new(cfg: &SftpSourceConfig) -> Result<Self> {
        let folder = SftpDropFolder::new(cfg)?;
        let name = format!("{}{}", folder.label, cfg.path);
        Ok(Supervised::wrap(name, Box::new(folder)))
    }
}

/// The drop folder itself: connects, polls and closes when the framework says so.
pub struct SftpDropFolder {
    shared: Arc<Shared>,
    staging: PathBuf,
    settle: Duration,
    label: String,
    recovered: bool,
    /// Size and mtime of each candidate when first seen so, to tell a settled file.
    seen: HashMap<String, (Option<u64>, Option<u64>, Instant)>,
    /// Claimed but not yet downloaded (the transfer broke): fetched again at the next poll.
    undelivered: Vec<(String, bool)>,
}

impl SftpDropFolder {
    pub fn new(cfg: &SftpSourceConfig) -> Result<Self> {
        let problems = cfg.check();
        if !problems.is_empty() {
            return Err(ConnectorError::Config(problems.join("; ")));
        }
        let remote = cfg.remote();
        let label = remote.label();
        let settle = cfg.settle.get().map_err(ConnectorError::Config)?;
        let staging = match &cfg.staging {
            Some(p) => p.clone(),
            None => {
                let slug: String = format!("{}@{}_{}{}", cfg.user, cfg.host, cfg.port, cfg.path)
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "@._-".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                // Two hubs on one machine (started from their own directories) must not share
                // a staging folder, nor the owner id derived from it.
                let cwd = std::env::current_dir().unwrap_or_default();
                let here = short_hex(&Sha256::digest(cwd.as_os_str().as_encoded_bytes()));
                std::env::temp_dir()
                    .join("snodo-sftp")
                    .join(format!("{slug}-{here}"))
            }
        };
        fs::create_dir_all(&staging).map_err(|e| ConnectorError::io(staging.display(), e))?;
        let owner = owner_id(&staging);
        Ok(Self {
            shared: Arc::new(Shared {
                conn: Mutex::new(Conn::new(remote)?),
                pending: Mutex::new(Vec::new()),
                root: cfg.path.clone(),
                owner,
                after: cfg.after,
                marker: Marker::parse(cfg.marker.as_deref()).map_err(ConnectorError::Config)?,
            }),
            staging,
            settle,
            label,
            recovered: false,
            seen: HashMap::new(),
            undelivered: Vec::new(),
        })
    }

    /// Streams `processing/<name>` down to the staging folder; the message's body is that file.
    /// `None`: the content failed its `.md5` marker, and the file went to `failed/`.
    fn fetch(&self, name: &str, redelivered: bool) -> Result<Option<Message>> {
        let remote = self.shared.processing(Some(name));
        let local = self.staging.join(name);
        let part = self.staging.join(format!(".{name}.part"));
        let md5_marker = (self.shared.marker == Some(Marker::Md5)).then(|| {
            (
                self.shared.processing(Some(&Marker::Md5.of(name))),
                join(&self.shared.root, &[&Marker::Md5.of(name)]),
            )
        });
        let mut conn = lock(&self.shared.conn);
        let label = self.label.clone();
        // Ok(Some(reason)): downloaded whole, but the content is not what the marker says.
        let result = (|| -> Result<Option<String>> {
            // The MD5 the marker holds, or why there is none to check against.
            let expected = match &md5_marker {
                None => None,
                Some((claimed, dropped)) => Some(conn.run_live(|sftp| {
                    let mut f = match sftp.open(claimed) {
                        Ok(f) => f,
                        // Claimed before the marker could follow (a crash in between).
                        Err(e) if is_no_such_file(&e) => {
                            if !claim_marker(sftp, dropped, claimed)? {
                                return Ok(Err(format!(
                                    "{name}: its marker {} is gone, nothing to check the \
                                     content against\n",
                                    Marker::Md5.of(name)
                                )));
                            }
                            sftp.open(claimed).map_err(ssh_at(claimed))?
                        }
                        Err(e) => return Err(ssh_at(claimed)(e)),
                    };
                    let mut text = Vec::new();
                    (&mut f)
                        .take(4096)
                        .read_to_end(&mut text)
                        .map_err(io_at(claimed))?;
                    let text = String::from_utf8_lossy(&text);
                    Ok(parse_md5_marker(&text).ok_or_else(|| {
                        format!(
                            "{name}: its marker {} holds no MD5 (32 hex digits): {:?}\n",
                            Marker::Md5.of(name),
                            text.trim()
                        )
                    }))
                })?),
            };
            if let Some(Err(reason)) = expected {
                return Ok(Some(reason));
            }
            let mut out =
                fs::File::create(&part).map_err(|e| ConnectorError::io(part.display(), e))?;
            let mut md5 = md5::Context::new();
            let got = conn.run_live(|sftp| {
                let expect = sftp.stat(&remote).map_err(ssh_at(&remote))?.size;
                let mut f = sftp.open(&remote).map_err(ssh_at(&remote))?;
                let mut buf = vec![0u8; CHUNK];
                let mut total = 0u64;
                loop {
                    let n = f.read(&mut buf).map_err(io_at(&remote))?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n]).map_err(io_at(&part))?;
                    if expected.is_some() {
                        md5.consume(&buf[..n]);
                    }
                    total += n as u64;
                }
                Ok((total, expect))
            })?;
            let (total, expect) = got;
            if let Some(expect) = expect {
                if total != expect {
                    return Err(ConnectorError::Refused(format!(
                        "{label}{}: downloaded {total} bytes of {expect}",
                        remote.display()
                    )));
                }
            }
            out.flush()
                .map_err(|e| ConnectorError::io(part.display(), e))?;
            drop(out);
            if let Some(Ok(want)) = expected {
                let actual = format!("{:x}", md5.compute());
                if actual != want {
                    return Ok(Some(format!(
                        "{name}: MD5 mismatch: {} expects {want}, the content ({total} bytes) \
                         has {actual}\n",
                        Marker::Md5.of(name)
                    )));
                }
            }
            fs::rename(&part, &local).map_err(|e| ConnectorError::io(local.display(), e))?;
            Ok(None)
        })();
        drop(conn);
        if !matches!(result, Ok(None)) {
            let _ = fs::remove_file(&part);
        }
        if let Some(reason) = result? {
            tracing::warn!(file = %name, "sftp: {}", reason.trim_end());
            if let Err(e) = self.shared.settle_or_keep(name, Settle::Failed(reason)) {
                tracing::warn!(file = %name, "sftp: moving it to failed/ failed, retrying at the next poll: {e}");
            }
            return Ok(None);
        }
        Ok(Some(Message {
            name: name.to_string(),
            body: Body::File(local.clone()),
            redelivered,
            key: None,
            offset: None,
            ack: Box::new(SftpAck {
                shared: self.shared.clone(),
                name: name.to_string(),
                local,
            }),
        }))
    }

    /// Takes back this hub's own unfinished claims (once, at the first poll) and claims the
    /// drop folder's complete files, adding them to `todo`.
    fn claim_new(&mut self, todo: &mut Vec<(String, bool)>) -> Result<()> {
        let root = self.shared.root.clone();
        if !self.recovered {
            {
                let mut conn = lock(&self.shared.conn);
                conn.run_live(|sftp| {
                    mkdirs(sftp, &self.shared.processing(None))?;
                    mkdirs(sftp, &join(&root, &["failed"]))
                })?;
            }
            // Files left in this hub's processing/<owner>/ were claimed by a run of it that stopped
            // before finishing them. Other hubs' folders are theirs: taking those would import a
            // flow that hub is importing right now.
            for (name, _) in self.list(&self.shared.processing(None))? {
                if is_candidate(&name) && !todo.iter().any(|(n, _)| *n == name) {
                    todo.push((name, true));
                }
            }
            self.recovered = true;
        }

        let listing = self.list(Path::new(&root))?;
        let present: std::collections::HashSet<&str> =
            listing.iter().map(|(n, _)| n.as_str()).collect();
        let marker = self.shared.marker;
        let now = Instant::now();
        let mut seen = HashMap::new();
        for (name, st) in &listing {
            let name = name.clone();
            if !is_candidate(&name) {
                continue;
            }
            if let Some(m) = marker {
                // The marker says it is complete: no need to watch it settle.
                if !present.contains(m.of(&name).as_str()) {
                    continue;
                }
            } else {
                let state = (st.size, st.mtime);
                let since = match self.seen.get(&name) {
                    Some((size, mtime, since)) if (*size, *mtime) == state => *since,
                    _ => now,
                };
                seen.insert(name.clone(), (state.0, state.1, since));
                if now.duration_since(since) < self.settle {
                    continue;
                }
            }
            if todo.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let from = join(&root, &[&name]);
            let to = self.shared.processing(Some(&name));
            let mut conn = lock(&self.shared.conn);
            let claimed = conn.run_live(|sftp| {
                if sftp.lstat(&to).is_ok() {
                    // A file of that name is still being processed; take this one next time.
                    return Ok(false);
                }
                match sftp.rename(&from, &to, None) {
                    Ok(()) => {
                        if let Some(m) = marker {
                            let mname = m.of(&name);
                            let mfrom = join(&root, &[&mname]);
                            let mto = self.shared.processing(Some(&mname));
                            if let Err((p, e)) = claim_marker(sftp, &mfrom, &mto) {
                                // Fetching (md5) looks for it again; settling moves what it finds.
                                let e = sftp_err("", &p, e);
                                tracing::warn!(file = %name, "sftp: cannot move its marker: {e}");
                            }
                        }
                        Ok(true)
                    }
                    // Another hub (or a concurrent poll) claimed it first.
                    Err(e) if is_no_such_file(&e) => Ok(false),
                    Err(e) => Err(ssh_at(&from)(e)),
                }
            });
            drop(conn);
            match claimed {
                Ok(true) => {
                    seen.remove(&name);
                    todo.push((name, false));
                }
                Ok(false) => {}
                // The session is gone: the framework reconnects; the listing is taken again then.
                Err(e @ ConnectorError::Unavailable(_)) => return Err(e),
                Err(e) => tracing::warn!(file = %name, "sftp: cannot claim: {e}"),
            }
        }
        self.seen = seen;
        Ok(())
    }

    fn list(&self, dir: &Path) -> Result<Vec<(String, FileStat)>> {
        let mut conn = lock(&self.shared.conn);
        let entries = conn.run_live(|sftp| sftp.readdir(dir).map_err(ssh_at(dir)))?;
        let mut out: Vec<(String, FileStat)> = entries
            .into_iter()
            .filter(|(_, st)| st.is_file())
            .filter_map(|(p, st)| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .map(|n| (n.to_string(), st))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// This hub's name for its folder under `processing/`: the machine and the local staging folder,
/// hashed. Stable across restarts of the same hub (so it takes back what it claimed before a
/// crash) and distinct between hubs sharing a remote folder (so none takes another's claims).
fn owner_id(staging: &Path) -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let staging = fs::canonicalize(staging).unwrap_or_else(|_| staging.to_path_buf());
    let mut h = Sha256::new();
    h.update(host.trim().as_bytes());
    h.update([0]);
    h.update(staging.as_os_str().as_encoded_bytes());
    format!("hub-{}", short_hex(&h.finalize()))
}

/// The first 6 bytes of a digest, in hex.
fn short_hex(digest: &[u8]) -> String {
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn is_candidate(name: &str) -> bool {
    !name.starts_with('.')
        && !name.ends_with(".tmp")
        && !name.ends_with(".part")
        && !name.ends_with(".error.txt")
        && !MARKER_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Moves a claimed file's marker from the drop folder into `processing/<owner>/` beside it
/// (replacing a stale one left there). `false`: there was no marker to move.
fn claim_marker(sftp: &Sftp, from: &Path, to: &Path) -> Op<bool> {
    match sftp.rename(from, to, None) {
        Ok(()) => Ok(true),
        Err(e) if is_no_such_file(&e) => Ok(false),
        Err(e) => {
            // OpenSSH refuses to rename onto an existing name: a marker left by an earlier run.
            if sftp.lstat(to).is_ok() && sftp.lstat(from).is_ok() {
                sftp.unlink(to).map_err(ssh_at(to))?;
                sftp.rename(from, to, None).map_err(ssh_at(to))?;
                return Ok(true);
            }
            Err(ssh_at(from)(e))
        }
    }
}

impl Source for SftpDropFolder {
    fn connect(&mut self) -> Result<()> {
        lock(&self.shared.conn).connect()
    }

    fn close(&mut self) {
        lock(&self.shared.conn).close();
    }

    fn poll(&mut self) -> Result<Vec<Message>> {
        lock(&self.shared.conn).live()?;
        // Acks that could not reach the server last time.
        let pending = std::mem::take(
            &mut *self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut pending = pending.into_iter();
        while let Some((name, how)) = pending.next() {
            match self.shared.settle_or_keep(&name, how) {
                Ok(()) => {}
                Err(e @ ConnectorError::Unavailable(_)) => {
                    self.shared
                        .pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(pending);
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(file = %name, "sftp: settling a handled file failed again: {e}")
                }
            }
        }

        // Claimed but not downloaded yet (the transfer broke), then what is new: kept for the
        // next poll if the server cannot be listed now.
        let mut todo: Vec<(String, bool)> = std::mem::take(&mut self.undelivered);
        if let Err(e) = self.claim_new(&mut todo) {
            self.undelivered = todo;
            return Err(e);
        }

        let mut out = Vec::new();
        let mut first_err = None;
        let mut todo = todo.into_iter();
        while let Some((name, redelivered)) = todo.next() {
            match self.fetch(&name, redelivered) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {}
                Err(e @ ConnectorError::Unavailable(_)) => {
                    // The session is gone: the rest waits for the next connection.
                    self.undelivered.push((name, redelivered));
                    self.undelivered.extend(todo);
                    first_err.get_or_insert(e);
                    break;
                }
                Err(e) => {
                    tracing::warn!(file = %name, "sftp: download failed, retrying at the next poll: {e}");
                    first_err.get_or_insert(e);
                    self.undelivered.push((name, redelivered));
                }
            }
        }
        match first_err {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}

struct SftpAck {
    shared: Arc<Shared>,
    name: String,
    local: PathBuf,
}

impl Ack for SftpAck {
    fn done(self: Box<Self>) -> Result<()> {
        let r = self.shared.settle_or_keep(&self.name, Settle::Done);
        let _ = fs::remove_file(&self.local);
        r
    }

    fn failed(self: Box<Self>, reason: &str) -> Result<()> {
        let r = self
            .shared
            .settle_or_keep(&self.name, Settle::Failed(reason.to_string()));
        let _ = fs::remove_file(&self.local);
        r
    }
}

pub struct SftpSink {
    conn: Mutex<Conn>,
    root: String,
    overwrite: bool,
    label: String,
}

impl SftpSink {
    pub fn new(cfg: &SftpSinkConfig) -> Result<Self> {
        let problems = cfg.check();
        if !problems.is_empty() {
            return Err(ConnectorError::Config(problems.join("; ")));
        }
        let remote = cfg.remote();
        Ok(Self {
            label: remote.label(),
            conn: Mutex::new(Conn::new(remote)?),
            root: cfg.path.clone(),
            overwrite: cfg.overwrite,
        })
    }
}

impl Sink for SftpSink {
    fn put_file(&self, name: &str, content: &Path) -> Result<()> {
        if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(ConnectorError::Refused(format!(
                "unsafe file name {name:?}"
            )));
        }
        let root = self.root.as_str();
        let target = join(root, &[name]);
        let tmp = join(root, &[&format!(".{name}.{}.part", std::process::id())]);
        let mut conn = lock(&self.conn);
        let exists = conn.run(|sftp| {
            mkdirs(sftp, Path::new(root))?;
            Ok(sftp.lstat(&target).is_ok())
        })?;
        let same = |conn: &mut Conn| -> Result<bool> {
            let sftp = conn.sftp()?;
            same_remote_content(sftp, &target, content)
        };
        if exists {
            if same(&mut conn)? {
                // Publishing the same file again (a redelivered flow) is fine.
                return Ok(());
            }
            if !self.overwrite {
                return Err(ConnectorError::Refused(format!(
                    "{}{} already exists with other content (set overwrite = true to replace it)",
                    self.label,
                    target.display()
                )));
            }
        }
        let mut src =
            fs::File::open(content).map_err(|e| ConnectorError::io(content.display(), e))?;
        let overwrite = self.overwrite;
        let put = conn.run(|sftp| {
            if overwrite && sftp.lstat(&target).is_ok() {
                // SFTP v3 has no atomic replace: remove, then rename the complete upload in.
                sftp.unlink(&target).map_err(ssh_at(&target))?;
            }
            upload_atomically(sftp, &mut src, &tmp, &target)
        });
        match put {
            Ok(_) => Ok(()),
            // Someone published the same name meanwhile: fine only if it is the same file.
            Err(e) if !overwrite => match same(&mut conn) {
                Ok(true) => Ok(()),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

/// Against a real server (ops/test.sh turns the feature on).
#[cfg(all(test, feature = "integration"))]
mod integration;
#[cfg(test)]
mod tests;
