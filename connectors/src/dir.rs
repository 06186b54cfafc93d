//! The `dir` connector: a local folder as a drop box (source) or an outbox (sink).
//!
//! Source layout under `path`: new files arrive at the top; a claimed file is renamed into
//! `processing/` (rename is atomic, so a file is taken once even by several hubs on one folder),
//! then moved to `archive/YYYY_MM/` (or deleted) once done, or to `failed/` with a
//! `<name>.error.txt` beside it saying why.

use crate::{Ack, Body, ConnectorError, Message, Result, Sink, SinkConfig, Source, SourceConfig};
use serde::Deserialize;
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

/// `from = { connector = "dir", path = "...", schedule = "...", settle = "2s", after = "archive" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirSourceConfig {
    pub path: PathBuf,
    /// Cron expression with seconds (`sec min hour day month weekday`), in Europe/Rome.
    pub schedule: Option<String>,
    /// A file is taken only when it has not changed for this long (it may still be written).
    #[serde(default = "default_settle")]
    pub settle: String,
    #[serde(default)]
    pub after: After,
}

fn default_settle() -> String {
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

/// Parses durations such as `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {s:?} needs a unit (ms, s, m, h)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?} does not start with a number"))?;
    let per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "duration {s:?}: unknown unit {unit:?} (ms, s, m, h)"
            ))
        }
    };
    let ms = n
        .checked_mul(per)
        .ok_or_else(|| format!("duration {s:?} is too long"))?;
    Ok(Duration::from_millis(ms))
}

impl SourceConfig for DirSourceConfig {
    fn schedule(&self) -> Option<&str> {
        self.schedule.as_deref()
    }

    fn check(&self) -> Vec<String> {
        parse_duration(&self.settle).err().into_iter().collect()
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

pub struct DirSource {
    root: PathBuf,
    settle: Duration,
    after: After,
    recovered: bool,
}

impl DirSource {
    pub fn new(cfg: &DirSourceConfig) -> Result<Self> {
        let settle = parse_duration(&cfg.settle).map_err(ConnectorError::Config)?;
        let root = cfg.path.clone();
        for sub in ["", "processing", "failed"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(|e| ConnectorError::io(p.display(), e))?;
        }
        Ok(Self {
            root,
            settle,
            after: cfg.after,
            recovered: false,
        })
    }

    fn message(&self, name: String, redelivered: bool) -> Message {
        let claimed = self.root.join("processing").join(&name);
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
        // Files left in processing/ were claimed by a run that stopped before finishing them.
        if !self.recovered {
            self.recovered = true;
            let dir = self.root.join("processing");
            for name in list_files(&dir)? {
                out.push(self.message(name, true));
            }
        }
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
            let to = self.root.join("processing").join(&name);
            if to.exists() {
                // A file of that name is still being processed; take this one next time.
                continue;
            }
            match fs::rename(&from, &to) {
                Ok(()) => out.push(self.message(name, false)),
                // Another hub (or a concurrent poll) claimed it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ConnectorError::io(from.display(), e)),
            }
        }
        Ok(out)
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

    fn source(dir: &Path) -> DirSource {
        DirSource::new(&DirSourceConfig {
            path: dir.to_path_buf(),
            schedule: None,
            settle: "0s".into(),
            after: After::Archive,
        })
        .unwrap()
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
    fn a_file_younger_than_settle_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("a.zip"), b"A").unwrap();
        let mut src = DirSource::new(&DirSourceConfig {
            path: tmp.path().to_path_buf(),
            schedule: None,
            settle: "1h".into(),
            after: After::Delete,
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
