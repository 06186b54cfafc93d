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
        })
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
    fn poll(&mut self) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        // Files left in this hub's processing/<owner>/ were claimed by a run of it that stopped
        // before finishing them. Other hubs' folders are theirs: they may be processing them now.
        if !self.recovered {
            self.adopt_legacy_claims()?;
            for name in list_files(&self.mine)? {
                out.push(self.message(name, true));
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
                Ok(()) => out.push(self.message(name, false)),
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
mod tests {
    use super::*;

    fn config(dir: &Path, owner: Option<&str>) -> DirSourceConfig {
        DirSourceConfig {
            path: dir.to_path_buf(),
            schedule: None,
            settle: "0s".into(),
            after: After::Archive,
            owner: owner.map(str::to_string),
        }
    }

    fn source(dir: &Path) -> DirSource {
        DirSource::new(&config(dir, None)).unwrap()
    }

    /// A hub with its own name (in one test process all hubs share host and working directory).
    fn hub(dir: &Path, owner: &str) -> DirSource {
        DirSource::new(&config(dir, Some(owner))).unwrap()
    }

    fn names(msgs: &[Message]) -> Vec<&str> {
        msgs.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn claims_once_archives_on_done_and_sets_aside_on_failure() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("a.zip"), b"A").unwrap();
        fs::write(tmp.path().join("b.zip"), b"B").unwrap();
        fs::write(tmp.path().join(".hidden.tmp"), b"x").unwrap();
        let mut src = source(tmp.path());
        let msgs = src.poll().unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["a.zip", "b.zip"]
        );
        assert!(
            src.poll().unwrap().is_empty(),
            "a claimed file is not handed out twice"
        );
        let mut it = msgs.into_iter();
        it.next().unwrap().ack.done().unwrap();
        it.next().unwrap().ack.failed("bad zip").unwrap();
        let month = chrono::Local::now().format("%Y_%m").to_string();
        assert_eq!(
            fs::read(tmp.path().join("archive").join(month).join("a.zip")).unwrap(),
            b"A"
        );
        assert_eq!(
            fs::read_to_string(tmp.path().join("failed/b.zip.error.txt")).unwrap(),
            "bad zip"
        );
        assert!(tmp.path().join("failed/b.zip").exists());
        assert!(list_files(&tmp.path().join("processing"))
            .unwrap()
            .is_empty());
        assert!(list_files(&src.mine).unwrap().is_empty());
    }

    #[test]
    fn a_restart_redelivers_what_was_claimed_but_not_acked() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("a.zip"), b"A").unwrap();
        let msgs = source(tmp.path()).poll().unwrap();
        assert!(!msgs[0].redelivered);
        drop(msgs); // crash: never acked
        let again = source(tmp.path()).poll().unwrap();
        assert_eq!(again.len(), 1);
        assert!(again[0].redelivered);
        assert_eq!(again[0].name, "a.zip");
    }

    #[test]
    fn the_default_owner_is_stable_and_claims_go_into_its_folder() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("a.zip"), b"A").unwrap();
        let src = source(tmp.path());
        assert_eq!(src.mine, source(tmp.path()).mine);
        let owner = src.mine.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            owner.starts_with("hub-") && owner_error(&owner).is_none(),
            "{owner}"
        );
        let mut src = src;
        let msgs = src.poll().unwrap();
        assert_eq!(names(&msgs), ["a.zip"]);
        assert!(tmp
            .path()
            .join("processing")
            .join(&owner)
            .join("a.zip")
            .exists());
    }

    #[test]
    fn a_second_hub_starting_does_not_take_what_the_first_one_claimed() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("a.zip"), b"A").unwrap();
        let mut a = hub(tmp.path(), "hub-a");
        let got = a.poll().unwrap();
        assert_eq!(names(&got), ["a.zip"]);
        assert!(!got[0].redelivered);
        // Hub B starts while A is still importing a.zip: its recovery must leave it alone.
        let mut b = hub(tmp.path(), "hub-b");
        assert!(b.poll().unwrap().is_empty(), "B took A's claimed file");
        // B still claims new files; A does not see them again.
        fs::write(tmp.path().join("b.zip"), b"B").unwrap();
        assert_eq!(names(&b.poll().unwrap()), ["b.zip"]);
        assert!(a.poll().unwrap().is_empty());
        // A crashes without acking; its restart (same owner) takes a.zip back, and only that.
        drop((got, a));
        let again = hub(tmp.path(), "hub-a").poll().unwrap();
        assert_eq!(names(&again), ["a.zip"]);
        assert!(again[0].redelivered);
        let Body::File(path) = &again[0].body else {
            panic!("dir hands over files")
        };
        assert_eq!(path, &tmp.path().join("processing/hub-a/a.zip"));
    }

    #[test]
    fn claims_left_by_a_version_without_owner_folders_go_to_the_first_hub_once() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("processing")).unwrap();
        fs::write(tmp.path().join("processing/old.zip"), b"O").unwrap();
        let (mut a, mut b) = (hub(tmp.path(), "hub-a"), hub(tmp.path(), "hub-b"));
        let got = a.poll().unwrap();
        assert_eq!(names(&got), ["old.zip"]);
        assert!(got[0].redelivered);
        assert!(tmp.path().join("processing/hub-a/old.zip").exists());
        assert!(b.poll().unwrap().is_empty());
        got.into_iter().next().unwrap().ack.done().unwrap();
        let month = chrono::Local::now().format("%Y_%m").to_string();
        assert!(tmp
            .path()
            .join("archive")
            .join(month)
            .join("old.zip")
            .exists());
    }

    #[test]
    fn a_name_being_processed_by_another_hub_waits() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("a.zip"), b"1").unwrap();
        let (mut a, mut b) = (hub(tmp.path(), "hub-a"), hub(tmp.path(), "hub-b"));
        let first = a.poll().unwrap();
        fs::write(tmp.path().join("a.zip"), b"2").unwrap();
        assert!(b.poll().unwrap().is_empty(), "same name while A has it");
        first.into_iter().next().unwrap().ack.done().unwrap();
        assert_eq!(names(&b.poll().unwrap()), ["a.zip"]);
    }

    #[test]
    fn fifty_files_polled_by_two_hubs_at_once_are_each_claimed_exactly_once() {
        // A single race is often won whole by one thread; several rounds make them overlap.
        for _ in 0..20 {
            race_two_hubs_over_fifty_files();
        }
    }

    fn race_two_hubs_over_fifty_files() {
        let tmp = tempfile::tempdir().unwrap();
        let all: Vec<String> = (0..50).map(|i| format!("f{i:02}.zip")).collect();
        for n in &all {
            fs::write(tmp.path().join(n), n.as_bytes()).unwrap();
        }
        let go = std::sync::Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = ["hub-a", "hub-b"]
            .into_iter()
            .map(|owner| {
                let (root, go) = (tmp.path().to_path_buf(), go.clone());
                std::thread::spawn(move || {
                    let mut src = hub(&root, owner);
                    go.wait();
                    let mut got = Vec::new();
                    // Poll until the top is empty, as a scheduled source would.
                    while list_files(&root).unwrap().iter().any(|n| is_candidate(n)) {
                        got.extend(src.poll().unwrap().into_iter().map(|m| m.name));
                    }
                    got
                })
            })
            .collect();
        let mut claimed: Vec<String> = Vec::new();
        for (t, owner) in threads.into_iter().zip(["hub-a", "hub-b"]) {
            let got = t.join().unwrap();
            let mut on_disk = list_files(&tmp.path().join("processing").join(owner)).unwrap();
            let mut sorted = got.clone();
            sorted.sort();
            on_disk.sort();
            assert_eq!(sorted, on_disk, "{owner} handed over exactly what it holds");
            claimed.extend(got);
        }
        claimed.sort();
        assert_eq!(claimed, all, "every file claimed once, none twice");
    }

    #[test]
    fn a_file_younger_than_settle_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("a.zip"), b"A").unwrap();
        let mut src = DirSource::new(&DirSourceConfig {
            path: tmp.path().to_path_buf(),
            schedule: None,
            settle: "1h".into(),
            after: After::Delete,
            owner: None,
        })
        .unwrap();
        assert!(src.poll().unwrap().is_empty());
        assert!(tmp.path().join("a.zip").exists());
    }

    #[test]
    fn sink_is_idempotent_for_equal_content_and_refuses_to_clobber() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let sink = DirSink::new(&DirSinkConfig {
            path: out.clone(),
            overwrite: false,
        })
        .unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        fs::write(&a, b"one").unwrap();
        fs::write(&b, b"two").unwrap();
        sink.put_file("x.zip", &a).unwrap();
        sink.put_file("x.zip", &a).unwrap();
        let err = sink.put_file("x.zip", &b).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(fs::read(out.join("x.zip")).unwrap(), b"one");
        assert!(sink.put_file("../evil", &a).is_err());
    }

    #[test]
    fn an_owner_must_be_a_plain_folder_name() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "../x", "a b"] {
            assert_eq!(config(tmp.path(), Some(bad)).check().len(), 1, "{bad:?}");
            assert!(DirSource::new(&config(tmp.path(), Some(bad))).is_err());
        }
        assert!(config(tmp.path(), Some("hub-a_1.x")).check().is_empty());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("30").is_err());
        assert!(
            parse_duration("99999999999999h").is_err(),
            "overflow is an error"
        );
        assert!(parse_duration("3d").is_err());
    }
}
