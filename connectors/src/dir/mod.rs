//! The `dir` connector: a local folder as a drop box (source) or an outbox (sink).
//!
//! Source layout under `path`: new files arrive at the top; a claimed file is renamed into
//! `processing/<owner>/` (rename is atomic, so a file is taken once even by several hubs on one
//! folder), then moved to `archive/YYYY_MM/` (or deleted) once done, or to `failed/` with a
//! `<name>.error.txt` beside it saying why.
//!
//! `<owner>` names this hub: `hub-<hex>`, hashed from the host name and the hub's working
//! directory, or set with `owner = "..."` (letters, digits, `-`, `_`, `.`; not starting with `.`).
//! At start a hub hands over again (`redelivered`) only what is in its own `processing/<owner>/`,
//! so a hub starting beside a live one on shared storage never takes what that one is processing.
//! Files directly under `processing/` (claims from versions without owner folders) are taken
//! back by the first hub to start, each moved into its own folder by an atomic rename.

use crate::duration::HumanDuration;
use crate::{Ack, Body, ConnectorError, Message, Result, Sink, SinkConfig, Source, SourceConfig};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub const NAME: &str = "dir";

/// What to do with a source file once its result is durable.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum After {
    #[default]
    Archive,
    Delete,
}

/// `from = { connector = "dir", path = "...", schedule = "...", settle = "2s", after = "archive",
/// owner = "hub-a" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirSourceConfig {
    pub path: PathBuf,
    /// Cron expression with seconds (`sec min hour day month weekday`), in Europe/Rome.
    pub schedule: Option<String>,
    /// A file is taken only when it has not changed for this long (it may still be written).
    #[serde(default = "default_settle")]
    pub settle: HumanDuration,
    #[serde(default)]
    pub after: After,
    /// This hub's folder under `processing/`; derived from host and working directory if unset.
    #[serde(default)]
    pub owner: Option<String>,
}

fn default_settle() -> HumanDuration {
    "1s".into()
}

/// `outcomes = { connector = "dir", path = "...", overwrite = false }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirSinkConfig {
    pub path: PathBuf,
    /// Replace an existing file with different content (off: such a put fails).
    #[serde(default)]
    pub overwrite: bool,
}

/// Kept at its old path for callers outside the crate.
pub use crate::duration::parse_duration;

impl SourceConfig for DirSourceConfig {
    fn schedule(&self) -> Option<&str> {
        self.schedule.as_deref()
    }

    fn check(&self) -> Vec<String> {
        let mut errors: Vec<String> = self.settle.get().err().into_iter().collect();
        errors.extend(self.owner.as_deref().and_then(owner_error));
        errors
    }

    fn build(&self) -> Result<Box<dyn Source>> {
        Ok(Box::new(DirSource::new(self)?))
    }
}

impl SinkConfig for DirSinkConfig {
    fn build(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(DirSink::new(self)?))
    }
}

/// Why `owner` cannot name a folder under `processing/`, if it cannot.
fn owner_error(owner: &str) -> Option<String> {
    let ok = !owner.is_empty()
        && owner.len() <= 100
        && !owner.starts_with('.')
        && owner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!ok).then(|| {
        format!(
            "owner {owner:?} must be a plain folder name \
             (letters, digits, '-', '_', '.'; not starting with '.')"
        )
    })
}

/// This hub's default owner: host name and working directory, hashed. Stable across restarts
/// of one hub (it takes back its own claims) and distinct between hubs sharing a folder (two
/// hubs on one machine run from their own directories).
fn default_owner() -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let cwd = std::env::current_dir()
        .and_then(fs::canonicalize)
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(host.trim().as_bytes());
    h.update([0]);
    h.update(cwd.as_os_str().as_encoded_bytes());
    let hex: String = h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("hub-{hex}")
}

pub struct DirSource {
    root: PathBuf,
    settle: Duration,
    after: After,
    /// `processing/<owner>/`: where this hub keeps what it claimed.
    mine: PathBuf,
    recovered: bool,
    /// Larger files are set aside when claimed, not handed over.
    max_bytes: u64,
}

impl DirSource {
    pub fn new(cfg: &DirSourceConfig) -> Result<Self> {
        let settle = cfg.settle.get().map_err(ConnectorError::Config)?;
        let owner = match &cfg.owner {
            Some(o) => {
                if let Some(e) = owner_error(o) {
                    return Err(ConnectorError::Config(e));
                }
                o.clone()
            }
            None => default_owner(),
        };
        let root = cfg.path.clone();
        let mine = root.join("processing").join(owner);
        for p in [root.clone(), mine.clone(), root.join("failed")] {
            fs::create_dir_all(&p).map_err(|e| ConnectorError::io(p.display(), e))?;
        }
        Ok(Self {
            root,
            settle,
            after: cfg.after,
            mine,
            recovered: false,
            max_bytes: u64::MAX,
        })
    }

    /// Hands over the claimed file `name`, or sets it aside when it is not a regular file (a
    /// symbolic link swapped in after listing is never followed) or is too large.
    fn hand_over(&self, name: String, redelivered: bool, out: &mut Vec<Message>) {
        let claimed = self.mine.join(&name);
        let why = match fs::symlink_metadata(&claimed) {
            Err(e) => Some(format!("{name}: cannot be read: {e}\n")),
            Ok(m) if !m.file_type().is_file() => Some(format!(
                "{name}: not a regular file (a symbolic link or a special file): not followed\n"
            )),
            Ok(m) if m.len() > self.max_bytes => Some(format!(
                "{name}: {} bytes, larger than the limit of {} bytes\n",
                m.len(),
                self.max_bytes
            )),
            Ok(_) => None,
        };
        let msg = self.message(name, redelivered);
        match why {
            None => out.push(msg),
            Some(reason) => {
                tracing::warn!(file = %msg.name, "dir: {}", reason.trim_end());
                if let Err(e) = msg.ack.failed(&reason) {
                    tracing::warn!("dir: cannot set the file aside: {e}");
                }
            }
        }
    }

    /// Moves claims left directly under `processing/` by versions without owner folders into
    /// this hub's own; the rename is atomic, so each goes to exactly one hub.
    fn adopt_legacy_claims(&self) -> Result<()> {
        let dir = self.root.join("processing");
        for name in list_files(&dir)? {
            let (from, to) = (dir.join(&name), self.mine.join(&name));
            if to.exists() {
                // rename would replace our own claim of that name; try again at the next start.
                tracing::warn!(file = %name, "dir: {} is also in {}, left where it is", from.display(), self.mine.display());
                continue;
            }
            match fs::rename(&from, &to) {
                Ok(()) => {}
                // Another hub starting at the same time took it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ConnectorError::io(from.display(), e)),
            }
        }
        Ok(())
    }

    /// Whether a file of this name is being processed by any hub (or left by an old version).
    fn in_processing(&self, name: &str) -> Result<bool> {
        let dir = self.root.join("processing");
        if dir.join(name).exists() {
            return Ok(true);
        }
        let rd = fs::read_dir(&dir).map_err(|e| ConnectorError::io(dir.display(), e))?;
        for entry in rd {
            let entry = entry.map_err(|e| ConnectorError::io(dir.display(), e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) && entry.path().join(name).exists() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn message(&self, name: String, redelivered: bool) -> Message {
        let claimed = self.mine.join(&name);
        Message {
            name: name.clone(),
            body: Body::File(claimed.clone()),
            redelivered,
            key: None,
            offset: None,
            ack: Box::new(DirAck {
                root: self.root.clone(),
                name,
                claimed,
                after: self.after,
            }),
        }
    }
}

fn is_candidate(name: &str) -> bool {
    !name.starts_with('.')
        && !name.ends_with(".tmp")
        && !name.ends_with(".part")
        && !name.ends_with(".error.txt")
}

impl Source for DirSource {
    fn limit_file_size(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
    }

    fn poll(&mut self) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        // Files left in this hub's processing/<owner>/ were claimed by a run of it that stopped
        // before finishing them. Other hubs' folders are theirs: they may be processing them now.
        if !self.recovered {
            self.adopt_legacy_claims()?;
            for name in list_files(&self.mine)? {
                self.hand_over(name, true, &mut out);
            }
            self.recovered = true;
        }
        if let Err(e) = self.claim_new(&mut out) {
            if out.is_empty() {
                return Err(e);
            }
            // Hand over what is already claimed; dropping it would strand it until a restart.
            tracing::warn!("dir: {e}; retrying at the next poll");
        }
        Ok(out)
    }
}

impl DirSource {
    /// Claims the settled new files at the top into `processing/<owner>/`, appending to `out`.
    fn claim_new(&self, out: &mut Vec<Message>) -> Result<()> {
        let now = SystemTime::now();
        for name in list_files(&self.root)? {
            if !is_candidate(&name) {
                continue;
            }
            let from = self.root.join(&name);
            let Ok(meta) = fs::metadata(&from) else {
                continue;
            };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age < self.settle {
                continue;
            }
            if self.in_processing(&name)? {
                // A file of that name is still being processed (here or by another hub); take
                // this one next time, so two files of one name are not in flight at once.
                continue;
            }
            let to = self.mine.join(&name);
            match fs::rename(&from, &to) {
                Ok(()) => self.hand_over(name, false, out),
                // Another hub (or a concurrent poll) claimed it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ConnectorError::io(from.display(), e)),
            }
        }
        Ok(())
    }
}

fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| ConnectorError::io(dir.display(), e))?;
    for entry in rd {
        let entry = entry.map_err(|e| ConnectorError::io(dir.display(), e))?;
        let Ok(ft) = entry.file_type() else { continue };
        if !ft.is_file() {
            continue;
        }
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

struct DirAck {
    root: PathBuf,
    name: String,
    claimed: PathBuf,
    after: After,
}

/// A name under `dir` that does not exist yet: `name`, else `name.1`, `name.2`, ...
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let mut candidate = dir.join(name);
    let mut n = 1;
    while candidate.exists() {
        candidate = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    candidate
}

impl Ack for DirAck {
    fn done(self: Box<Self>) -> Result<()> {
        match self.after {
            After::Delete => fs::remove_file(&self.claimed)
                .map_err(|e| ConnectorError::io(self.claimed.display(), e)),
            After::Archive => {
                let month = chrono::Local::now().format("%Y_%m").to_string();
                let dir = self.root.join("archive").join(month);
                fs::create_dir_all(&dir).map_err(|e| ConnectorError::io(dir.display(), e))?;
                let to = free_name(&dir, &self.name);
                fs::rename(&self.claimed, &to).map_err(|e| ConnectorError::io(to.display(), e))
            }
        }
    }

    fn failed(self: Box<Self>, reason: &str) -> Result<()> {
        let dir = self.root.join("failed");
        fs::create_dir_all(&dir).map_err(|e| ConnectorError::io(dir.display(), e))?;
        let to = free_name(&dir, &self.name);
        let note = PathBuf::from(format!("{}.error.txt", to.display()));
        write_atomically(&note, &mut reason.as_bytes(), true)?;
        fs::rename(&self.claimed, &to).map_err(|e| ConnectorError::io(to.display(), e))
    }
}

pub struct DirSink {
    root: PathBuf,
    overwrite: bool,
}

impl DirSink {
    pub fn new(cfg: &DirSinkConfig) -> Result<Self> {
        fs::create_dir_all(&cfg.path).map_err(|e| ConnectorError::io(cfg.path.display(), e))?;
        Ok(Self {
            root: cfg.path.clone(),
            overwrite: cfg.overwrite,
        })
    }
}

impl Sink for DirSink {
    fn put_file(&self, name: &str, content: &Path) -> Result<()> {
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(ConnectorError::Refused(format!(
                "unsafe file name {name:?}"
            )));
        }
        let target = self.root.join(name);
        if target.exists() && !self.overwrite {
            // Publishing the same file again (a redelivered flow) is fine; replacing another is not.
            if same_content(&target, content)? {
                return Ok(());
            }
            return Err(ConnectorError::Refused(format!(
                "{} already exists with other content (set overwrite = true to replace it)",
                target.display()
            )));
        }
        let mut src =
            fs::File::open(content).map_err(|e| ConnectorError::io(content.display(), e))?;
        write_atomically(&target, &mut src, self.overwrite)
    }
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let (ma, mb) = (
        fs::metadata(a).map_err(|e| ConnectorError::io(a.display(), e))?,
        fs::metadata(b).map_err(|e| ConnectorError::io(b.display(), e))?,
    );
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let mut fa = fs::File::open(a).map_err(|e| ConnectorError::io(a.display(), e))?;
    let mut fb = fs::File::open(b).map_err(|e| ConnectorError::io(b.display(), e))?;
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa
            .read(&mut ba)
            .map_err(|e| ConnectorError::io(a.display(), e))?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])
            .map_err(|e| ConnectorError::io(b.display(), e))?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Writes to a hidden temporary name, syncs, then renames: readers see all or nothing, and a
/// crash leaves at most a `.tmp` file that no source picks up.
pub fn write_atomically(target: &Path, content: &mut dyn Read, overwrite: bool) -> Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        std::io::copy(content, &mut f)?;
        f.flush()?;
        f.sync_all()?;
        if !overwrite && target.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "target appeared while writing",
            ));
        }
        fs::rename(&tmp, target)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| ConnectorError::io(target.display(), e))
}

#[cfg(test)]
mod tests;
