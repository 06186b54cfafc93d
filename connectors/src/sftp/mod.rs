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
use crate::{Ack, Body, ConnectorError, Message, Result, Sink, SinkConfig, Source, SourceConfig};
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
        Ok(Box::new(SftpSource::new(self)?))
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

/// One SSH session per connector, opened on first use, checked before reuse after a pause and
/// reopened when it broke.
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

    /// The SFTP channel, connecting (or reconnecting) as needed.
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
            self.live = Some(self.connect()?);
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

    /// Forgets the session when an error says the transport broke (not for a mere SFTP status).
    fn note(&mut self, e: &Fail) {
        let broken = match e {
            Fail::Ssh(e) => matches!(e.code(), ErrorCode::Session(_)),
            Fail::Io(_) => true,
        };
        if broken {
            self.live = None;
        }
    }

    fn connect(&self) -> Result<Live> {
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

    /// Runs `op` on the SFTP channel; a transport error drops the session for the next call.
    fn run<T>(&mut self, op: impl FnOnce(&Sftp) -> Op<T>) -> Result<T> {
        let label = self.remote.label();
        let sftp = self.sftp()?;
        match op(sftp) {
            Ok(v) => Ok(v),
            Err((path, e)) => {
                self.note(&e);
                Err(sftp_err(&label, &path, e))
            }
        }
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
        conn.run(|sftp| {
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

pub struct SftpSource {
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

impl SftpSource {
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
                Some((claimed, dropped)) => Some(conn.run(|sftp| {
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
            let got = conn.run(|sftp| {
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
                conn.run(|sftp| {
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
            let claimed = conn.run(|sftp| {
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
                Err(e) => tracing::warn!(file = %name, "sftp: cannot claim: {e}"),
            }
        }
        self.seen = seen;
        Ok(())
    }

    fn list(&self, dir: &Path) -> Result<Vec<(String, FileStat)>> {
        let mut conn = lock(&self.shared.conn);
        let entries = conn.run(|sftp| sftp.readdir(dir).map_err(ssh_at(dir)))?;
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

impl Source for SftpSource {
    fn poll(&mut self) -> Result<Vec<Message>> {
        // Acks that could not reach the server last time.
        let pending = std::mem::take(
            &mut *self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for (name, how) in pending {
            if let Err(e) = self.shared.settle_or_keep(&name, how) {
                tracing::warn!(file = %name, "sftp: settling a handled file failed again: {e}");
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
        for (name, redelivered) in todo {
            match self.fetch(&name, redelivered) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {}
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

#[cfg(test)]
mod tests {
    //! Against the real OpenSSH server that `ops/sshd.sh` (run by `ops/setup.sh`) starts on
    //! 127.0.0.1. Without it these tests fail, saying so: they never skip.
    use super::*;

    struct Sshd {
        port: u16,
        user: String,
        home: String,
        key: PathBuf,
        fingerprint: String,
        host_pub: String,
    }

    fn sshd() -> Sshd {
        let dir = PathBuf::from(
            std::env::var("SNODO_TEST_SSHD_DIR").unwrap_or_else(|_| "/var/tmp/snodo-sshd".into()),
        );
        let read = |f: &str| -> String {
            match fs::read_to_string(dir.join(f)) {
                Ok(s) => s.trim().to_string(),
                Err(e) => panic!(
                    "the test sshd is not set up ({}: {e}): run ops/setup.sh (or ops/sshd.sh) first",
                    dir.join(f).display()
                ),
            }
        };
        let port: u16 = std::env::var("SNODO_TEST_SSHD_PORT")
            .ok()
            .unwrap_or_else(|| read("port"))
            .parse()
            .expect("a port number");
        if let Err(e) = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(2),
        ) {
            panic!(
                "the test sshd is not running on 127.0.0.1:{port} ({e}): run ops/setup.sh (or ops/sshd.sh) first"
            );
        }
        Sshd {
            port,
            user: read("user"),
            home: read("home"),
            key: dir.join("client_ed25519"),
            fingerprint: read("host_fingerprint"),
            host_pub: read("host_ed25519_key.pub"),
        }
    }

    impl Sshd {
        /// A fresh remote folder for one test.
        fn folder(&self, test: &str) -> String {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            format!("{}/{test}-{}-{nanos}", self.home, std::process::id())
        }

        fn source(&self, path: &str, settle: &str, staging: &Path) -> SftpSourceConfig {
            SftpSourceConfig {
                host: "127.0.0.1".into(),
                port: self.port,
                user: self.user.clone(),
                key: Some(self.key.clone()),
                passphrase_env: None,
                password_env: None,
                known_host: Some(self.fingerprint.clone()),
                known_hosts: None,
                path: path.into(),
                schedule: None,
                settle: settle.into(),
                after: After::Archive,
                timeout: "10s".into(),
                staging: Some(staging.to_path_buf()),
                marker: None,
            }
        }

        fn sink(&self, path: &str, overwrite: bool) -> SftpSinkConfig {
            SftpSinkConfig {
                host: "127.0.0.1".into(),
                port: self.port,
                user: self.user.clone(),
                key: Some(self.key.clone()),
                passphrase_env: None,
                password_env: None,
                known_host: Some(self.fingerprint.clone()),
                known_hosts: None,
                path: path.into(),
                overwrite,
                timeout: "10s".into(),
            }
        }

        /// A session of its own to arrange and inspect the remote side.
        fn client(&self) -> Conn {
            Conn::new(self.sink("/", false).remote()).unwrap()
        }
    }

    fn put(c: &mut Conn, path: &str, bytes: &[u8], append: bool) {
        let p = PathBuf::from(path);
        c.run(|sftp| {
            if let Some(parent) = p.parent() {
                mkdirs(sftp, parent)?;
            }
            let flags = if append {
                OpenFlags::WRITE | OpenFlags::APPEND
            } else {
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE
            };
            let mut f = sftp
                .open_mode(&p, flags, 0o644, OpenType::File)
                .map_err(ssh_at(&p))?;
            if append {
                // OpenSSH ignores APPEND on SFTP v3: write at the end explicitly.
                let len = f.stat().map_err(ssh_at(&p))?.size.unwrap_or(0);
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(len)).map_err(io_at(&p))?;
            }
            f.write_all(bytes).map_err(io_at(&p))?;
            f.close().map_err(ssh_at(&p))
        })
        .unwrap();
    }

    fn read(c: &mut Conn, path: &str) -> Option<Vec<u8>> {
        let p = PathBuf::from(path);
        c.run(|sftp| {
            let mut f = match sftp.open(&p) {
                Ok(f) => f,
                Err(e) if is_no_such_file(&e) => return Ok(None),
                Err(e) => return Err(ssh_at(&p)(e)),
            };
            let mut v = Vec::new();
            f.read_to_end(&mut v).map_err(io_at(&p))?;
            Ok(Some(v))
        })
        .unwrap()
    }

    fn names(c: &mut Conn, dir: &str) -> Vec<String> {
        let p = PathBuf::from(dir);
        let mut v: Vec<String> = c
            .run(|sftp| sftp.readdir(&p).map_err(ssh_at(&p)))
            .unwrap()
            .into_iter()
            .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        v.sort();
        v
    }

    /// The source's own folder under `processing/`.
    fn mine(src: &SftpSource) -> String {
        src.shared.processing(None).display().to_string()
    }

    fn body(m: &Message) -> Vec<u8> {
        match &m.body {
            Body::File(p) => fs::read(p).unwrap(),
            Body::Bytes(b) => b.clone(),
        }
    }

    #[test]
    fn source_round_trip_claims_once_archives_on_done_and_redelivers_after_a_crash() {
        let s = sshd();
        let dir = s.folder("round-trip");
        let staging = tempfile::tempdir().unwrap();
        let mut c = s.client();
        put(&mut c, &format!("{dir}/a.zip"), b"AAAA", false);
        put(&mut c, &format!("{dir}/.b.zip.part"), b"half", false);
        put(&mut c, &format!("{dir}/c.tmp"), b"tmp", false);

        let mut src = SftpSource::new(&s.source(&dir, "0s", staging.path())).unwrap();
        let msgs = src.poll().unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["a.zip"]
        );
        assert!(!msgs[0].redelivered);
        assert_eq!(body(&msgs[0]), b"AAAA");
        assert_eq!(names(&mut c, &mine(&src)), ["a.zip"]);
        assert!(
            src.poll().unwrap().is_empty(),
            "a claimed file is not handed out twice"
        );
        let local = match &msgs[0].body {
            Body::File(p) => p.clone(),
            Body::Bytes(_) => unreachable!(),
        };
        for m in msgs {
            m.ack.done().unwrap();
        }
        let month = chrono::Local::now().format("%Y_%m").to_string();
        assert_eq!(
            read(&mut c, &format!("{dir}/archive/{month}/a.zip")).as_deref(),
            Some(&b"AAAA"[..])
        );
        assert!(names(&mut c, &mine(&src)).is_empty());
        assert!(!local.exists(), "the staged download is removed once acked");
        // The partial and temporary uploads were never touched.
        assert!(read(&mut c, &format!("{dir}/.b.zip.part")).is_some());
        assert!(read(&mut c, &format!("{dir}/c.tmp")).is_some());

        // Claimed, then the hub dies before the ack: the next start hands it over again.
        put(&mut c, &format!("{dir}/d.zip"), b"DD", false);
        let msgs = src.poll().unwrap();
        assert_eq!(msgs.len(), 1);
        drop(msgs);
        drop(src);
        let mut src = SftpSource::new(&s.source(&dir, "0s", staging.path())).unwrap();
        let again = src.poll().unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].name, "d.zip");
        assert!(again[0].redelivered);
        assert_eq!(body(&again[0]), b"DD");
        // Archiving the same name twice keeps both.
        put(&mut c, &format!("{dir}/a.zip"), b"A2", false);
        let more = src.poll().unwrap();
        for m in again.into_iter().chain(more) {
            m.ack.done().unwrap();
        }
        assert_eq!(
            names(&mut c, &format!("{dir}/archive/{month}")),
            ["a.zip", "a.zip.1", "d.zip"]
        );
    }

    #[test]
    fn a_second_hub_starting_does_not_take_what_the_first_one_claimed() {
        let s = sshd();
        let dir = s.folder("two-hubs");
        let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut c = s.client();
        put(&mut c, &format!("{dir}/a.zip"), b"AAAA", false);
        let mut a = SftpSource::new(&s.source(&dir, "0s", sa.path())).unwrap();
        let got = a.poll().unwrap();
        assert_eq!(got.len(), 1);
        // Hub B starts while A is still importing a.zip: its recovery must leave it alone.
        let mut b = SftpSource::new(&s.source(&dir, "0s", sb.path())).unwrap();
        assert_ne!(mine(&a), mine(&b));
        assert!(b.poll().unwrap().is_empty(), "B took A's claimed file");
        put(&mut c, &format!("{dir}/b.zip"), b"BB", false);
        let got_b = b.poll().unwrap();
        assert_eq!(got_b.len(), 1);
        assert!(a.poll().unwrap().is_empty());
        for m in got.into_iter().chain(got_b) {
            m.ack.done().unwrap();
        }
        let month = chrono::Local::now().format("%Y_%m").to_string();
        assert_eq!(
            names(&mut c, &format!("{dir}/archive/{month}")),
            ["a.zip", "b.zip"]
        );
        // A restarted A (same staging) takes back only its own unfinished claims.
        put(&mut c, &format!("{dir}/c.zip"), b"C", false);
        assert_eq!(a.poll().unwrap().len(), 1);
        drop(a);
        let mut b2 = SftpSource::new(&s.source(&dir, "0s", sb.path())).unwrap();
        assert!(b2.poll().unwrap().is_empty());
        let mut a2 = SftpSource::new(&s.source(&dir, "0s", sa.path())).unwrap();
        let again = a2.poll().unwrap();
        assert_eq!(again.len(), 1);
        assert!(again[0].redelivered);
        assert_eq!(again[0].name, "c.zip");
    }

    fn chmod(c: &mut Conn, path: &str, mode: u32) {
        let p = PathBuf::from(path);
        c.run(|sftp| {
            mkdirs(sftp, &p)?;
            let st = FileStat {
                size: None,
                uid: None,
                gid: None,
                perm: Some(mode),
                atime: None,
                mtime: None,
            };
            sftp.setstat(&p, st).map_err(ssh_at(&p))
        })
        .unwrap();
    }

    #[test]
    fn an_archive_folder_without_write_permission_keeps_the_file_claimed_until_fixed() {
        let s = sshd();
        let dir = s.folder("perm");
        let staging = tempfile::tempdir().unwrap();
        let mut c = s.client();
        put(&mut c, &format!("{dir}/p.zip"), b"PPPP", false);
        // archive/ exists but the server's user cannot create archive/YYYY_MM in it.
        chmod(&mut c, &format!("{dir}/archive"), 0o555);
        let mut src = SftpSource::new(&s.source(&dir, "0s", staging.path())).unwrap();
        let msgs = src.poll().unwrap();
        assert_eq!(msgs.len(), 1);
        let err = msgs
            .into_iter()
            .next()
            .unwrap()
            .ack
            .done()
            .unwrap_err()
            .to_string();
        let month = chrono::Local::now().format("%Y_%m").to_string();
        assert!(
            err.contains(&format!("{dir}/archive/{month}")),
            "names the folder: {err}"
        );
        assert!(err.to_lowercase().contains("permission"), "says why: {err}");
        // Claimed, not lost, and not handed over again as a new file.
        assert_eq!(names(&mut c, &mine(&src)), ["p.zip"]);
        assert!(src.poll().unwrap().is_empty(), "still denied: nothing new");
        assert_eq!(names(&mut c, &mine(&src)), ["p.zip"]);
        assert_eq!(
            names(&mut c, &dir),
            ["archive", "failed", "processing"],
            "not put back nor failed"
        );

        // The operator fixes the permission: the next poll finishes the archiving.
        chmod(&mut c, &format!("{dir}/archive"), 0o755);
        assert!(src.poll().unwrap().is_empty());
        assert!(names(&mut c, &mine(&src)).is_empty());
        assert_eq!(
            read(&mut c, &format!("{dir}/archive/{month}/p.zip")).as_deref(),
            Some(&b"PPPP"[..])
        );
    }

    #[test]
    fn a_growing_file_is_not_taken_before_it_settles() {
        let s = sshd();
        let dir = s.folder("growing");
        let staging = tempfile::tempdir().unwrap();
        let mut c = s.client();
        put(&mut c, &format!("{dir}/g.zip"), b"first part;", false);
        let mut src = SftpSource::new(&s.source(&dir, "1s", staging.path())).unwrap();
        assert!(src.poll().unwrap().is_empty(), "first sight: not settled");
        std::thread::sleep(Duration::from_millis(700));
        put(&mut c, &format!("{dir}/g.zip"), b"second part;", true);
        assert!(
            src.poll().unwrap().is_empty(),
            "grew since the last poll: not settled"
        );
        std::thread::sleep(Duration::from_millis(700));
        put(&mut c, &format!("{dir}/g.zip"), b"last part", true);
        assert!(
            src.poll().unwrap().is_empty(),
            "1.4 s after first sight but grew 0 s ago: not settled"
        );
        assert_eq!(names(&mut c, &mine(&src)), Vec::<String>::new());
        std::thread::sleep(Duration::from_millis(1200));
        let msgs = src.poll().unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(body(&msgs[0]), b"first part;second part;last part");
    }

    #[test]
    fn a_failed_ack_moves_the_file_to_failed_with_the_reason_beside_it() {
        let s = sshd();
        let dir = s.folder("failed");
        let staging = tempfile::tempdir().unwrap();
        let mut c = s.client();
        put(&mut c, &format!("{dir}/b.zip"), b"not a zip", false);
        let mut src = SftpSource::new(&s.source(&dir, "0s", staging.path())).unwrap();
        let msgs = src.poll().unwrap();
        assert_eq!(msgs.len(), 1);
        for m in msgs {
            m.ack
                .failed("PAA_IMPORT_FORMATO_ZIP: not a zip file\n")
                .unwrap();
        }
        assert_eq!(
            names(&mut c, &format!("{dir}/failed")),
            ["b.zip", "b.zip.error.txt"]
        );
        assert_eq!(
            read(&mut c, &format!("{dir}/failed/b.zip")).as_deref(),
            Some(&b"not a zip"[..])
        );
        assert_eq!(
            read(&mut c, &format!("{dir}/failed/b.zip.error.txt")).as_deref(),
            Some(&b"PAA_IMPORT_FORMATO_ZIP: not a zip file\n"[..])
        );
        assert!(names(&mut c, &mine(&src)).is_empty());
    }

    #[test]
    fn sink_publishes_atomically_is_idempotent_and_refuses_to_clobber() {
        let s = sshd();
        let dir = s.folder("sink");
        let local = tempfile::tempdir().unwrap();
        let (a, b) = (local.path().join("a"), local.path().join("b"));
        fs::write(&a, vec![7u8; 3 * CHUNK + 11]).unwrap();
        fs::write(&b, b"two").unwrap();
        let sink = SftpSink::new(&s.sink(&format!("{dir}/out"), false)).unwrap();
        sink.put_file("x_SCARTI.zip", &a).unwrap();
        sink.put_file("x_SCARTI.zip", &a).unwrap();
        let err = sink.put_file("x_SCARTI.zip", &b).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        let mut c = s.client();
        assert_eq!(
            read(&mut c, &format!("{dir}/out/x_SCARTI.zip")),
            Some(vec![7u8; 3 * CHUNK + 11])
        );
        assert_eq!(
            names(&mut c, &format!("{dir}/out")),
            ["x_SCARTI.zip"],
            "no temporary upload is left behind"
        );
        assert!(sink.put_file("../evil", &a).is_err());
        assert!(sink.put_file(".hidden", &a).is_err());

        let replacing = SftpSink::new(&s.sink(&format!("{dir}/out"), true)).unwrap();
        replacing.put_file("x_SCARTI.zip", &b).unwrap();
        assert_eq!(
            read(&mut c, &format!("{dir}/out/x_SCARTI.zip")).as_deref(),
            Some(&b"two"[..])
        );
    }

    fn with_marker(mut cfg: SftpSourceConfig, marker: &str) -> SftpSourceConfig {
        cfg.marker = Some(marker.into());
        cfg
    }

    fn staged(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_done_marker_gates_the_file_and_travels_with_it() {
        let s = sshd();
        let dir = s.folder("marker-done");
        let staging = tempfile::tempdir().unwrap();
        let mut c = s.client();
        put(&mut c, &format!("{dir}/a.zip"), b"AAAA", false);
        put(&mut c, &format!("{dir}/b.zip"), b"BBBB", false);
        put(&mut c, &format!("{dir}/b.zip.done"), b"", false);
        put(&mut c, &format!("{dir}/orphan.zip.done"), b"", false);
        put(&mut c, &format!("{dir}/x.md5"), b"", false);
        // A settle of an hour: the marker alone says the file is complete.
        let cfg = with_marker(s.source(&dir, "1h", staging.path()), "done");
        let mut src = SftpSource::new(&cfg).unwrap();
        let msgs = src.poll().unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["b.zip"],
            "only the marked file, and no marker as a flow"
        );
        assert_eq!(body(&msgs[0]), b"BBBB");
        assert_eq!(names(&mut c, &mine(&src)), ["b.zip", "b.zip.done"]);
        assert!(src.poll().unwrap().is_empty(), "a.zip has no marker yet");
        for m in msgs {
            m.ack.done().unwrap();
        }
        let month = chrono::Local::now().format("%Y_%m").to_string();
        assert_eq!(
            names(&mut c, &format!("{dir}/archive/{month}")),
            ["b.zip", "b.zip.done"]
        );
        assert!(names(&mut c, &mine(&src)).is_empty());

        // The marker comes: taken; refused by the pipeline, it fails along with its marker.
        put(&mut c, &format!("{dir}/a.zip.done"), b"", false);
        let msgs = src.poll().unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].name, "a.zip");
        for m in msgs {
            m.ack.failed("refused\n").unwrap();
        }
        assert_eq!(
            names(&mut c, &format!("{dir}/failed")),
            ["a.zip", "a.zip.done", "a.zip.error.txt"]
        );
        assert_eq!(
            names(&mut c, &dir),
            [
                "archive",
                "failed",
                "orphan.zip.done",
                "processing",
                "x.md5"
            ],
            "markers without their file stay where they are"
        );

        // after = "delete" deletes the marker too.
        let mut cfg = cfg;
        cfg.after = After::Delete;
        let mut src = SftpSource::new(&cfg).unwrap();
        put(&mut c, &format!("{dir}/d.zip"), b"D", false);
        put(&mut c, &format!("{dir}/d.zip.done"), b"", false);
        let msgs = src.poll().unwrap();
        assert_eq!(msgs.len(), 1);
        for m in msgs {
            m.ack.done().unwrap();
        }
        assert!(names(&mut c, &mine(&src)).is_empty());
        assert_eq!(
            names(&mut c, &format!("{dir}/archive/{month}")),
            ["b.zip", "b.zip.done"]
        );
    }

    #[test]
    fn an_md5_marker_is_checked_against_the_downloaded_content() {
        let s = sshd();
        let dir = s.folder("marker-md5");
        let staging = tempfile::tempdir().unwrap();
        let mut c = s.client();
        let good = vec![42u8; 2 * CHUNK + 5];
        let good_md5 = format!("{:x}", md5::compute(&good));
        put(&mut c, &format!("{dir}/good.zip"), &good, false);
        // As md5sum writes it, in capitals for once.
        let marker = format!("{}  good.zip\n", good_md5.to_uppercase());
        put(
            &mut c,
            &format!("{dir}/good.zip.md5"),
            marker.as_bytes(),
            false,
        );
        put(&mut c, &format!("{dir}/bad.zip"), b"tampered", false);
        let bad_md5 = format!("{:x}", md5::compute(b"original"));
        put(
            &mut c,
            &format!("{dir}/bad.zip.md5"),
            bad_md5.as_bytes(),
            false,
        );
        put(&mut c, &format!("{dir}/junk.zip"), b"J", false);
        put(
            &mut c,
            &format!("{dir}/junk.zip.md5"),
            b"not a hash\n",
            false,
        );
        put(&mut c, &format!("{dir}/later.zip"), b"L", false);

        let cfg = with_marker(s.source(&dir, "1h", staging.path()), "md5");
        let mut src = SftpSource::new(&cfg).unwrap();
        let msgs = src.poll().unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["good.zip"]
        );
        assert_eq!(body(&msgs[0]), good);
        assert_eq!(
            staged(staging.path()),
            ["good.zip"],
            "nothing of the failed downloads is left in staging"
        );
        assert_eq!(
            names(&mut c, &format!("{dir}/failed")),
            [
                "bad.zip",
                "bad.zip.error.txt",
                "bad.zip.md5",
                "junk.zip",
                "junk.zip.error.txt",
                "junk.zip.md5"
            ]
        );
        let why =
            String::from_utf8(read(&mut c, &format!("{dir}/failed/bad.zip.error.txt")).unwrap())
                .unwrap();
        let actual = format!("{:x}", md5::compute(b"tampered"));
        assert!(why.contains("MD5 mismatch"), "{why}");
        assert!(
            why.contains(&bad_md5) && why.contains(&actual),
            "expected and actual: {why}"
        );
        let why =
            String::from_utf8(read(&mut c, &format!("{dir}/failed/junk.zip.error.txt")).unwrap())
                .unwrap();
        assert!(why.contains("holds no MD5"), "{why}");
        assert_eq!(names(&mut c, &mine(&src)), ["good.zip", "good.zip.md5"]);
        for m in msgs {
            m.ack.done().unwrap();
        }
        let month = chrono::Local::now().format("%Y_%m").to_string();
        assert_eq!(
            names(&mut c, &format!("{dir}/archive/{month}")),
            ["good.zip", "good.zip.md5"]
        );
        assert!(src.poll().unwrap().is_empty(), "later.zip has no marker");

        // Claimed, then the hub stopped before the marker followed: the next start finds it
        // in the drop folder and still checks the content.
        put(
            &mut c,
            &format!("{dir}/later.zip.md5"),
            format!("{:x}", md5::compute(b"L")).as_bytes(),
            false,
        );
        let from = PathBuf::from(format!("{dir}/later.zip"));
        let to = src.shared.processing(Some("later.zip"));
        c.run(|sftp| sftp.rename(&from, &to, None).map_err(ssh_at(&to)))
            .unwrap();
        drop(src);
        let mut src = SftpSource::new(&cfg).unwrap();
        let msgs = src.poll().unwrap();
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].redelivered);
        assert_eq!(body(&msgs[0]), b"L");
        assert_eq!(names(&mut c, &mine(&src)), ["later.zip", "later.zip.md5"]);
    }

    /// Uploads `len` pseudo-random bytes (a fixed seed) to `path`, generated as they are sent:
    /// never held whole in memory. Returns their SHA-256, hex.
    fn put_generated(c: &mut Conn, path: &str, len: u64, seed: u64) -> String {
        let p = PathBuf::from(path);
        c.run(|sftp| {
            if let Some(parent) = p.parent() {
                mkdirs(sftp, parent)?;
            }
            let mut f = sftp
                .open_mode(
                    &p,
                    OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                    0o644,
                    OpenType::File,
                )
                .map_err(ssh_at(&p))?;
            let mut sha = Sha256::new();
            let mut x = seed | 1;
            let mut buf = vec![0u8; CHUNK];
            let mut left = len;
            while left > 0 {
                for word in buf.chunks_exact_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    word.copy_from_slice(&x.to_le_bytes());
                }
                let n = usize::try_from(left.min(CHUNK as u64)).unwrap();
                f.write_all(&buf[..n]).map_err(io_at(&p))?;
                sha.update(&buf[..n]);
                left -= n as u64;
            }
            f.close().map_err(ssh_at(&p))?;
            Ok(hex(&sha.finalize()))
        })
        .unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// SHA-256 of a local file, streamed.
    fn sha256_file(path: &Path) -> String {
        let mut f = fs::File::open(path).unwrap();
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
        }
        hex(&sha.finalize())
    }

    /// A second sshd of this test's own, on a free port, with the shared one's config, host key
    /// and authorized keys (so the same home and pins): stopping it disturbs no other test.
    struct PrivateSshd {
        dir: tempfile::TempDir,
        port: u16,
        child: Option<std::process::Child>,
    }

    impl PrivateSshd {
        fn start() -> Self {
            let state = PathBuf::from(
                std::env::var("SNODO_TEST_SSHD_DIR")
                    .unwrap_or_else(|_| "/var/tmp/snodo-sshd".into()),
            );
            let shared = fs::read_to_string(state.join("sshd_config"))
                .expect("the test sshd's config (run ops/sshd.sh)");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir = tempfile::tempdir().unwrap();
            let pid = dir.path().join("sshd.pid");
            let cfg: String = shared
                .lines()
                .map(|l| {
                    if l.starts_with("Port ") {
                        format!("Port {port}")
                    } else if l.starts_with("PidFile ") {
                        format!("PidFile {}", pid.display())
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            fs::write(dir.path().join("sshd_config"), cfg + "\n").unwrap();
            let mut me = Self {
                dir,
                port,
                child: None,
            };
            me.spawn();
            me
        }

        fn spawn(&mut self) {
            let child = std::process::Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-f")
                .arg(self.dir.path().join("sshd_config"))
                .arg("-E")
                .arg(self.dir.path().join("sshd.log"))
                .spawn()
                .expect("start /usr/sbin/sshd");
            self.child = Some(child);
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
            let started = Instant::now();
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the private sshd did not start: {}",
                    fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Kills the listener and every session process it forked, as a crash or power cut would.
        fn kill(&mut self) {
            let Some(mut child) = self.child.take() else {
                return;
            };
            let mut tree = vec![child.id()];
            let mut i = 0;
            while i < tree.len() {
                let parent = tree[i];
                for e in fs::read_dir("/proc").unwrap().flatten() {
                    let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                        continue;
                    };
                    let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                        continue;
                    };
                    // pid (comm) state ppid ...: comm may hold spaces, so read after the ')'.
                    let ppid = stat
                        .rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                        .and_then(|p| p.parse::<u32>().ok());
                    if ppid == Some(parent) && !tree.contains(&pid) {
                        tree.push(pid);
                    }
                }
                i += 1;
            }
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .args(tree.iter().map(|p| p.to_string()))
                .status();
            let _ = child.wait();
        }
    }

    impl Drop for PrivateSshd {
        fn drop(&mut self) {
            self.kill();
        }
    }

    #[test]
    fn the_server_stopped_mid_transfer_and_restarted_delivers_the_file_whole_once() {
        let s = sshd();
        let dir = s.folder("server-dies");
        let staging = tempfile::tempdir().unwrap();
        let mut c = s.client();
        let len = 48 << 20;
        let want = put_generated(&mut c, &format!("{dir}/big.zip"), len, 0x5eed);
        let mut server = PrivateSshd::start();
        let mut cfg = s.source(&dir, "0s", staging.path());
        cfg.port = server.port;
        cfg.timeout = "5s".into();
        let src = SftpSource::new(&cfg).unwrap();
        let owner_dir = mine(&src);

        let polling = std::thread::spawn(move || {
            let mut src = src;
            let got = src.poll();
            (src, got)
        });
        // Stop the server once the download is under way.
        let part = staging.path().join(".big.zip.part");
        let started = Instant::now();
        while fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < (1 << 20) {
            assert!(
                started.elapsed() < Duration::from_secs(30) && !polling.is_finished(),
                "the download never started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        server.kill();
        let (mut src, got) = polling.join().unwrap();
        let err = match got {
            Ok(msgs) => panic!(
                "the transfer finished before the server was stopped ({} messages): make the file bigger",
                msgs.len()
            ),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("big.zip"), "names the file: {err}");
        assert!(
            staged(staging.path()).is_empty(),
            "nothing partial is left in staging, let alone under the final name"
        );
        // Claimed, whole and not lost on the server.
        assert_eq!(names(&mut c, &owner_dir), ["big.zip"]);
        assert!(src.poll().is_err(), "the server is still down");
        assert!(staged(staging.path()).is_empty());

        server.spawn();
        let msgs = src.poll().unwrap();
        assert_eq!(msgs.len(), 1, "delivered once the server is back");
        assert_eq!(msgs[0].name, "big.zip");
        let local = match &msgs[0].body {
            Body::File(p) => p.clone(),
            Body::Bytes(_) => unreachable!(),
        };
        assert_eq!(fs::metadata(&local).unwrap().len(), len);
        assert_eq!(sha256_file(&local), want, "whole and unchanged");
        assert!(src.poll().unwrap().is_empty(), "not handed over twice");
        for m in msgs {
            m.ack.done().unwrap();
        }
        assert!(src.poll().unwrap().is_empty());
        let month = chrono::Local::now().format("%Y_%m").to_string();
        assert_eq!(
            names(&mut c, &format!("{dir}/archive/{month}")),
            ["big.zip"]
        );
        assert!(names(&mut c, &owner_dir).is_empty());
        assert!(staged(staging.path()).is_empty());
        // 48 MB per run would pile up in the test user's home.
        let archived = PathBuf::from(format!("{dir}/archive/{month}/big.zip"));
        c.run(|sftp| sftp.unlink(&archived).map_err(ssh_at(&archived)))
            .unwrap();
    }

    /// Peak resident memory of this process so far (`VmHWM`), in bytes.
    fn peak_rss() -> u64 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmHWM in /proc/self/status");
        kb * 1024
    }

    const BIG_ENV: &str = "SNODO_TEST_SFTP_BIG";

    #[test]
    fn a_500_mb_flow_streams_down_with_bounded_memory() {
        let s = sshd();
        if let Ok(spec) = std::env::var(BIG_ENV) {
            // The child process: download and measure, alone in its process.
            let mut it = spec.splitn(3, '|');
            let (dir, want, len) = (
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
                it.next().unwrap().parse::<u64>().unwrap(),
            );
            let staging = tempfile::tempdir().unwrap();
            let mut cfg = s.source(&dir, "0s", staging.path());
            cfg.after = After::Delete;
            let before = peak_rss();
            let mut src = SftpSource::new(&cfg).unwrap();
            let msgs = src.poll().unwrap();
            let grew = peak_rss().saturating_sub(before);
            assert_eq!(msgs.len(), 1);
            let local = match &msgs[0].body {
                Body::File(p) => p.clone(),
                Body::Bytes(_) => unreachable!(),
            };
            assert_eq!(fs::metadata(&local).unwrap().len(), len);
            assert_eq!(sha256_file(&local), want);
            for m in msgs {
                m.ack.done().unwrap();
            }
            eprintln!(
                "peak RSS grew by {} KiB downloading {len} bytes",
                grew / 1024
            );
            assert!(
                grew < 64 << 20,
                "peak RSS grew by {} MiB for a {} MiB flow",
                grew >> 20,
                len >> 20
            );
            return;
        }
        let dir = s.folder("big");
        let mut c = s.client();
        let len: u64 = 500 << 20;
        let want = put_generated(&mut c, &format!("{dir}/big.zip"), len, 0xb16);
        // Measured in a process of its own: the other tests of this binary run in threads of
        // this one and would count towards its peak.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "sftp::tests::a_500_mb_flow_streams_down_with_bounded_memory",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(BIG_ENV, format!("{dir}|{want}|{len}"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("1 passed"),
            "the child ran the download: {text}"
        );
        assert!(text.contains("peak RSS grew by"), "{text}");
        if let Some(line) = text.lines().find(|l| l.contains("peak RSS grew by")) {
            eprintln!("{line}");
        }
        assert!(names(&mut c, &dir).iter().all(|n| n != "big.zip"));
    }

    #[test]
    fn a_wrong_host_key_is_refused_showing_both_fingerprints() {
        let s = sshd();
        let dir = s.folder("hostkey");
        let staging = tempfile::tempdir().unwrap();
        let wrong = fingerprint(b"not the server's key");
        let mut cfg = s.source(&dir, "0s", staging.path());
        cfg.known_host = Some(wrong.clone());
        let err = SftpSource::new(&cfg)
            .unwrap()
            .poll()
            .unwrap_err()
            .to_string();
        assert!(err.contains("mismatch"), "{err}");
        assert!(err.contains(&wrong), "the pinned fingerprint: {err}");
        assert!(
            err.contains(&s.fingerprint),
            "the server's fingerprint: {err}"
        );

        let mut sink = s.sink(&dir, false);
        sink.known_host = Some(wrong.clone());
        let f = staging.path().join("f");
        fs::write(&f, b"x").unwrap();
        let err = SftpSink::new(&sink)
            .unwrap()
            .put_file("f", &f)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&wrong) && err.contains(&s.fingerprint),
            "{err}"
        );

        // The same through a known_hosts file: a wrong key refused, the right one accepted.
        let other_key = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let kh = staging.path().join("known_hosts");
        fs::write(
            &kh,
            format!("[127.0.0.1]:{} ssh-ed25519 {other_key}\n", s.port),
        )
        .unwrap();
        cfg.known_host = None;
        cfg.known_hosts = Some(kh.clone());
        let err = SftpSource::new(&cfg)
            .unwrap()
            .poll()
            .unwrap_err()
            .to_string();
        let other_fp = fingerprint(
            &base64::engine::general_purpose::STANDARD
                .decode(other_key)
                .unwrap(),
        );
        assert!(err.contains("mismatch"), "{err}");
        assert!(
            err.contains(&other_fp) && err.contains(&s.fingerprint),
            "{err}"
        );

        let mut parts = s.host_pub.split_whitespace();
        let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
        fs::write(&kh, format!("[127.0.0.1]:{} {kind} {key}\n", s.port)).unwrap();
        assert!(SftpSource::new(&cfg).unwrap().poll().unwrap().is_empty());
    }

    #[test]
    fn a_dead_server_is_a_clear_error_not_a_hang() {
        // Nothing listens on port 1 of the loopback: refused at once.
        let s = sshd();
        let staging = tempfile::tempdir().unwrap();
        let mut cfg = s.source("/in", "0s", staging.path());
        cfg.port = 1;
        cfg.timeout = "2s".into();
        let started = Instant::now();
        let err = SftpSource::new(&cfg)
            .unwrap()
            .poll()
            .unwrap_err()
            .to_string();
        assert!(err.contains("127.0.0.1:1"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn config_problems_are_listed() {
        let cfg: SftpSourceConfig = serde_json::from_value(serde_json::json!({
            "host": "sftp.example.it", "user": "snodo", "path": "/in",
            "settle": "30", "timeout": "0s"
        }))
        .unwrap();
        let p = cfg.check().join("\n");
        assert!(p.contains("no host key pinned"), "{p}");
        assert!(p.contains("no credentials"), "{p}");
        assert!(p.contains("settle"), "{p}");
        assert!(p.contains("timeout"), "{p}");
        assert!(SftpSource::new(&cfg).is_err(), "no accept-any default");
        let mut marked = cfg.clone();
        marked.marker = Some("sha1".into());
        let p = marked.check().join("\n");
        assert!(p.contains("marker \"sha1\" is not known"), "{p}");
        for ok in ["done", "md5"] {
            marked.marker = Some(ok.into());
            assert!(!marked.check().join("\n").contains("marker"), "{ok}");
        }

        let cfg: SftpSinkConfig = serde_json::from_value(serde_json::json!({
            "host": "h", "user": "u", "path": "/out", "key": "/k",
            "known_host": "MD5:aa:bb", "passphrase_env": "P"
        }))
        .unwrap();
        let p = cfg.check().join("\n");
        assert!(p.contains("SHA256"), "{p}");
        assert_eq!(cfg.check().len(), 1, "{p}");

        let ok: SftpSinkConfig = serde_json::from_value(serde_json::json!({
            "host": "h", "user": "u", "path": "/out", "password_env": "PW",
            "known_host": "SHA256:HPauksUw203V1Vd7oc99aEKBxp4ubzTWDZawljWfqtk"
        }))
        .unwrap();
        assert!(ok.check().is_empty(), "{:?}", ok.check());
        assert!(serde_json::from_value::<SftpSinkConfig>(serde_json::json!({
            "host": "h", "user": "u", "path": "/out", "pasword_env": "PW"
        }))
        .is_err());
    }

    #[test]
    fn fingerprints_read_like_ssh_keygen() {
        // The ed25519 key above, as `ssh-keygen -lf` prints it.
        let blob = base64::engine::general_purpose::STANDARD
            .decode("AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
            .unwrap();
        let fp = fingerprint(&blob);
        assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 43, "{fp}");
        assert_eq!(parse_fingerprint(&fp).unwrap(), fp);
        assert_eq!(parse_fingerprint(&format!("{fp}=")).unwrap(), fp);
        assert!(parse_fingerprint("SHA256:short").is_err());
    }
}
