//! The connector's settings: the source's and the sink's config, and how to reach and trust
//! the remote (shared by both).

use super::*;

pub(super) fn default_port() -> u16 {
    22
}
pub(super) fn default_settle() -> HumanDuration {
    "30s".into()
}
pub(super) fn default_timeout() -> HumanDuration {
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
pub(super) enum Marker {
    /// `<name>.done` exists: its content is not read.
    Done,
    /// `<name>.md5` holds the hex MD5 of `<name>` (as `md5sum` writes it), checked after download.
    Md5,
}

/// Names ending so are markers, never flows (whatever `marker` is set to).
pub(super) const MARKER_SUFFIXES: [&str; 2] = [".done", ".md5"];

impl Marker {
    pub(super) fn parse(s: Option<&str>) -> std::result::Result<Option<Self>, String> {
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

    pub(super) fn suffix(self) -> &'static str {
        match self {
            Marker::Done => ".done",
            Marker::Md5 => ".md5",
        }
    }

    pub(super) fn of(self, name: &str) -> String {
        format!("{name}{}", self.suffix())
    }
}

/// The MD5 an `.md5` marker holds: the first word, 32 hex digits (lowercased).
pub(super) fn parse_md5_marker(text: &str) -> Option<String> {
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
pub(super) struct Remote {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) key: Option<PathBuf>,
    pub(super) passphrase_env: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) known_host: Option<String>,
    pub(super) known_hosts: Option<PathBuf>,
    pub(super) timeout: HumanDuration,
}

impl SftpSourceConfig {
    pub(super) fn remote(&self) -> Remote {
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
    pub(super) fn remote(&self) -> Remote {
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
    pub(super) fn check(&self, path: &str) -> Vec<String> {
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

    pub(super) fn label(&self) -> String {
        format!("sftp://{}@{}:{}", self.user, self.host, self.port)
    }
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
