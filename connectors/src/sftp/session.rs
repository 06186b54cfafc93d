//! One SSH session to the remote: connecting, host key pinning, and the remote file operations
//! source and sink share.

use super::*;

/// libssh2's SFTP status codes (SSH_FX_*) the connector tells apart.
pub(super) const FX_NO_SUCH_FILE: i32 = 2;
pub(super) const FX_OP_UNSUPPORTED: i32 = 8;

/// Transfer buffer: large reads let libssh2 pipeline its SFTP requests.
pub(super) const CHUNK: usize = 256 * 1024;

/// Checks a `SHA256:<base64>` fingerprint and returns it normalised (no padding).
pub(super) fn parse_fingerprint(s: &str) -> std::result::Result<String, String> {
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

/// Why a remote operation failed: an SFTP/SSH error, or an I/O error of a transfer (ssh2's
/// `File` reports through `std::io`, which hides whether the session broke).
pub(super) enum Fail {
    Ssh(ssh2::Error),
    Io(std::io::Error),
}

/// A failed remote operation and the path it concerned.
pub(super) type Op<T> = std::result::Result<T, (PathBuf, Fail)>;

pub(super) fn ssh_at(path: &Path) -> impl FnOnce(ssh2::Error) -> (PathBuf, Fail) + '_ {
    move |e| (path.to_path_buf(), Fail::Ssh(e))
}

pub(super) fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> (PathBuf, Fail) + '_ {
    move |e| (path.to_path_buf(), Fail::Io(e))
}

/// An SFTP error with the remote path it concerns.
pub(super) fn sftp_err(label: &str, path: &Path, e: Fail) -> ConnectorError {
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

pub(super) fn is_no_such_file(e: &ssh2::Error) -> bool {
    e.code() == ErrorCode::SFTP(FX_NO_SUCH_FILE)
}

/// A remote path under `root`.
pub(super) fn join(root: &str, parts: &[&str]) -> PathBuf {
    let mut s = root.trim_end_matches('/').to_string();
    for part in parts {
        s.push('/');
        s.push_str(part);
    }
    PathBuf::from(s)
}

pub(super) struct Live {
    // Dropped before the session it runs on.
    pub(super) sftp: Sftp,
    pub(super) session: Session,
    pub(super) used: Instant,
}

/// One SSH session. The source opens and closes it when the framework says so ([`Conn::connect`],
/// [`Conn::close`], [`Conn::run_live`]); the sink (and a test's client) opens it on first use and
/// checks it before reuse after a pause ([`Conn::run`]). A transport error drops it either way.
pub(super) struct Conn {
    pub(super) remote: Remote,
    pub(super) timeout: Duration,
    pub(super) live: Option<Live>,
}

/// A session idle for longer than this is probed before use.
pub(super) const PROBE_AFTER: Duration = Duration::from_secs(2);

impl Conn {
    pub(super) fn new(remote: Remote) -> Result<Self> {
        let timeout = remote.timeout.get().map_err(ConnectorError::Config)?;
        Ok(Self {
            remote,
            timeout,
            live: None,
        })
    }

    /// Opens a new session, replacing any.
    pub(super) fn connect(&mut self) -> Result<()> {
        self.live = None;
        self.live = Some(self.open()?);
        Ok(())
    }

    pub(super) fn close(&mut self) {
        self.live = None;
    }

    /// The SFTP channel, connecting (or reconnecting) as needed: for the sink.
    pub(super) fn sftp(&mut self) -> Result<&Sftp> {
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
    pub(super) fn fail(&mut self, path: &Path, e: Fail) -> ConnectorError {
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

    pub(super) fn open(&self) -> Result<Live> {
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

    pub(super) fn verify_host_key(&self, session: &Session) -> Result<()> {
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
    pub(super) fn run<T>(&mut self, op: impl FnOnce(&Sftp) -> Op<T>) -> Result<T> {
        let sftp = self.sftp()?;
        op(sftp).map_err(|(path, e)| self.fail(&path, e))
    }

    /// Runs `op` on the open session; none open is [`ConnectorError::Unavailable`] (the source:
    /// the framework connects).
    pub(super) fn run_live<T>(&mut self, op: impl FnOnce(&Sftp) -> Op<T>) -> Result<T> {
        let Some(live) = self.live.as_mut() else {
            return Err(self.not_connected());
        };
        live.used = Instant::now();
        op(&live.sftp).map_err(|(path, e)| self.fail(&path, e))
    }

    /// Whether a session is open ([`ConnectorError::Unavailable`] if not).
    pub(super) fn live(&self) -> Result<()> {
        match self.live {
            Some(_) => Ok(()),
            None => Err(self.not_connected()),
        }
    }

    pub(super) fn not_connected(&self) -> ConnectorError {
        ConnectorError::Unavailable(format!("{}: not connected", self.remote.label()))
    }
}

pub(super) fn env(var: &str) -> Result<String> {
    std::env::var(var)
        .map_err(|_| ConnectorError::Config(format!("environment variable {var} is not set")))
}

pub(super) fn lock(m: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `mkdir -p` on the remote.
pub(super) fn mkdirs(sftp: &Sftp, dir: &Path) -> Op<()> {
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
pub(super) fn free_name(sftp: &Sftp, dir: &Path, name: &str) -> PathBuf {
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
pub(super) fn upload_atomically(
    sftp: &Sftp,
    content: &mut dyn Read,
    tmp: &Path,
    target: &Path,
) -> Op<u64> {
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
