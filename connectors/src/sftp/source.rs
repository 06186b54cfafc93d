//! The drop folder: claims, downloads, hands over and settles files (see the module docs).

use super::*;

/// What an ack could not do yet; the source retries it at its next poll.
#[derive(Debug, Clone)]
pub(super) enum Settle {
    Done,
    Failed(String),
}

pub(super) struct Shared {
    pub(super) conn: Mutex<Conn>,
    /// Acks that failed (server gone, permission denied): retried before each poll.
    pub(super) pending: Mutex<Vec<(String, Settle)>>,
    pub(super) root: String,
    /// This hub's folder under `processing/` (see [`owner_id`]).
    pub(super) owner: String,
    pub(super) after: After,
    pub(super) marker: Option<Marker>,
}

impl Shared {
    /// Where this hub keeps the files it claimed: `processing/<owner>/`.
    pub(super) fn processing(&self, name: Option<&str>) -> PathBuf {
        match name {
            Some(name) => join(&self.root, &["processing", &self.owner, name]),
            None => join(&self.root, &["processing", &self.owner]),
        }
    }

    pub(super) fn settle(&self, name: &str, how: &Settle) -> Result<()> {
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

    pub(super) fn settle_or_keep(&self, name: &str, how: Settle) -> Result<()> {
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
    pub(super) shared: Arc<Shared>,
    pub(super) staging: PathBuf,
    pub(super) settle: Duration,
    pub(super) label: String,
    pub(super) recovered: bool,
    /// Size and mtime of each candidate when first seen so, to tell a settled file.
    pub(super) seen: HashMap<String, (Option<u64>, Option<u64>, Instant)>,
    /// Claimed but not yet downloaded (the transfer broke): fetched again at the next poll.
    pub(super) undelivered: Vec<(String, bool)>,
    /// Larger files are set aside without being downloaded.
    pub(super) max_bytes: u64,
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
            max_bytes: u64::MAX,
        })
    }

    /// Streams `processing/<name>` down to the staging folder; the message's body is that file.
    /// `None`: the content failed its `.md5` marker, and the file went to `failed/`.
    pub(super) fn fetch(&self, name: &str, redelivered: bool) -> Result<Option<Message>> {
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
            let max = self.max_bytes;
            let too_large = |size: u64| {
                format!("{name}: {size} bytes or more, larger than the limit of {max} bytes (not downloaded)\n")
            };
            let got = conn.run_live(|sftp| {
                let expect = sftp.stat(&remote).map_err(ssh_at(&remote))?.size;
                if let Some(size) = expect.filter(|&s| s > max) {
                    return Ok(Err(too_large(size)));
                }
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
                    if total > max {
                        // The file grew, or the server did not tell its size.
                        return Ok(Err(too_large(total)));
                    }
                }
                Ok(Ok((total, expect)))
            })?;
            let (total, expect) = match got {
                Ok(v) => v,
                Err(reason) => return Ok(Some(reason)),
            };
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
    pub(super) fn claim_new(&mut self, todo: &mut Vec<(String, bool)>) -> Result<()> {
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

    pub(super) fn list(&self, dir: &Path) -> Result<Vec<(String, FileStat)>> {
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
pub(super) fn owner_id(staging: &Path) -> String {
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
pub(super) fn short_hex(digest: &[u8]) -> String {
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

pub(super) fn is_candidate(name: &str) -> bool {
    !name.starts_with('.')
        && !name.ends_with(".tmp")
        && !name.ends_with(".part")
        && !name.ends_with(".error.txt")
        && !MARKER_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Moves a claimed file's marker from the drop folder into `processing/<owner>/` beside it
/// (replacing a stale one left there). `false`: there was no marker to move.
pub(super) fn claim_marker(sftp: &Sftp, from: &Path, to: &Path) -> Op<bool> {
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

    fn limit_file_size(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
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

pub(super) struct SftpAck {
    pub(super) shared: Arc<Shared>,
    pub(super) name: String,
    pub(super) local: PathBuf,
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
