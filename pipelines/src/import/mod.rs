//! Importing one flow of debt positions into the registry: the same code path for `snodo import`
//! and for a pipeline's source. What is the format's own (names, records, outcome lines) comes
//! from its [`FlowFormat`]; MyPay's is the one shipped.
//!
//! Crash safety: rows are applied in chunks; each chunk's positions, history, IUV counter and the
//! flow checkpoint (rows consumed, counts, outcome-file lengths) commit in one transaction, after
//! the chunk's outcome lines are written and synced to staged files. After a crash, the flow is
//! found again by entity, IUF and content hash, the staged outcome files are cut back to the
//! committed lengths, and the import goes on from the committed row: every row is applied once
//! and every IUV handed out once.

mod outcomes;
#[cfg(test)]
mod tests;

use crate::plan::EntityRuntime;
pub use outcomes::OutcomeFile;
use outcomes::Outcomes;
use sha2::{Digest, Sha256};
use snodo_adapters::csv::{CsvError, CsvLimits, CsvLines, Dialect};
use snodo_adapters::flow_format::{
    FlowFile, FlowFormat, FlowLimits, FlowProblem, Refusal, RenderedRow,
};
pub use snodo_adapters::text_encoding::Encoding;
use snodo_core::dovuto::{self, RejectCode, Rejection};
use snodo_store::{
    Checkpoint, ChunkCommit, ChunkRow, EntityKey, Flow, FlowStatus, NewFlow, RowOutcome, Store,
    StoreError,
};
use std::collections::HashSet;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The hub-level limits an import runs under.
#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    pub max_flow_bytes: u64,
    pub max_flow_entries: u64,
    pub chunk_rows: usize,
    pub csv: CsvLimits,
}

impl ImportLimits {
    fn flow(&self) -> FlowLimits {
        FlowLimits {
            max_bytes: self.max_flow_bytes,
            max_entries: self.max_flow_entries,
        }
    }

    pub fn from_hub(hub: &crate::config::HubConfig) -> Self {
        Self {
            max_flow_bytes: hub.max_flow_bytes,
            max_flow_entries: hub.max_flow_entries,
            chunk_rows: hub.import_chunk_rows.max(1),
            csv: CsvLimits::default(),
        }
    }
}

#[derive(Debug)]
pub enum ImportOutcome {
    /// The flow is imported (`IMPORT_ESEGUITO`); publish `files`, then forget the input.
    /// `already` is set when a redelivered flow had been finished before.
    Done {
        flow: Flow,
        files: Vec<OutcomeFile>,
        already: bool,
    },
    /// The flow was refused as a whole with a file-level code of its format; nothing changed.
    Aborted {
        flow: Option<Flow>,
        code: String,
        message: String,
    },
    /// Stopped at a chunk boundary because the hub is shutting down; it resumes next time.
    Interrupted,
}

/// Failures that are not the flow's fault (store or disk trouble): try again later.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImportError {
    let context = context.into();
    move |source| ImportError::Io { context, source }
}

pub struct Importer<'a> {
    pub store: &'a dyn Store,
    /// The flows' format (a pipeline's `decode`).
    pub format: &'a dyn FlowFormat,
    /// The flows' character encoding; outcome files are written in it too.
    pub encoding: Encoding,
    pub entity: &'a EntityRuntime,
    /// Root of the per-flow staging folders.
    pub staging: PathBuf,
    pub limits: ImportLimits,
    /// Set when the hub is stopping: the import stops after the current chunk.
    pub stop: &'a AtomicBool,
    /// Called with the number of rows done after each chunk.
    pub progress: &'a (dyn Fn(u64) + Sync),
    /// Print the payment notices of the accepted positions into a zip published with the
    /// outcome files, on this many threads (0: no notices).
    pub notice_threads: usize,
}

enum Prepared {
    Ready,
    Refused { code: String, message: String },
}

impl Importer<'_> {
    pub fn import(
        &self,
        file_name: &str,
        path: &Path,
        redelivered: bool,
    ) -> Result<ImportOutcome, ImportError> {
        let code = |p| self.format.code(p);
        let name = match self.format.parse_name(file_name) {
            Ok(n) => n,
            Err(r) => return Ok(aborted(None, r.code, r.message)),
        };
        if name.entity != self.entity.ipa_code {
            return Ok(aborted(
                None,
                code(FlowProblem::WrongEntity),
                format!(
                    "the flow names entity {:?} but belongs to {:?}",
                    name.entity, self.entity.ipa_code
                ),
            ));
        }
        let started = std::time::Instant::now();
        let sha = sha256_file(path)?;
        tracing::debug!(elapsed = ?started.elapsed(), "flow hashed");
        let entity = &self.entity.ipa_code;
        let flows = self.store.flows_by_iuf(entity, &name.flow_id)?;

        if let Some(done) = flows.iter().find(|f| f.status == FlowStatus::Eseguito) {
            if redelivered && done.content_sha256 == sha {
                // Finished before the source could forget it: hand the same outcome back.
                let files = self.outcome_files(done.id, &name);
                if files.iter().all(|f| f.path.exists()) {
                    let files = self.with_notices(done.id, &name, files.to_vec(), true)?;
                    return Ok(ImportOutcome::Done {
                        flow: done.clone(),
                        files,
                        already: true,
                    });
                }
            }
            return Ok(aborted(
                None,
                code(FlowProblem::Duplicate),
                format!(
                    "flow {} was already imported for {entity} (flow id {}, {})",
                    name.flow_id, done.id, done.updated_at
                ),
            ));
        }
        let flow = match flows
            .iter()
            .find(|f| matches!(f.status, FlowStatus::LoadImport | FlowStatus::InElab))
        {
            Some(f) if f.content_sha256 == sha => f.clone(),
            Some(f) => {
                return Ok(aborted(
                    None,
                    code(FlowProblem::InProgress),
                    format!(
                        "another file with IUF {} is being loaded (flow id {}, different content)",
                        name.flow_id, f.id
                    ),
                ))
            }
            None => self.store.create_flow(&NewFlow {
                entity,
                iuf: &name.flow_id,
                file_name,
                version: &name.version,
                content_sha256: &sha,
            })?,
        };
        let dir = self.staging.join(flow.id.to_string());
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;

        let step = std::time::Instant::now();
        let prepared = self.prepare(&flow, &name, path)?;
        tracing::debug!(elapsed = ?step.elapsed(), "flow unpacked and checked");
        match prepared {
            Prepared::Ready => {}
            Prepared::Refused { code, message } => {
                let _ = fs::remove_dir_all(&dir);
                self.store.set_flow_status(
                    flow.id,
                    FlowStatus::Abortito,
                    Some((&code, &message)),
                )?;
                let flow = self.store.flow(flow.id)?;
                return Ok(aborted(flow, &code, message));
            }
        };
        let step = std::time::Instant::now();
        let files = self.outcome_files(flow.id, &name);
        let source = FlowSource {
            format: self.format,
            encoding: self.encoding,
            path,
            name: &name,
            limits: self.limits.flow(),
        };
        let Some(done) = self.apply(&flow, &source, &dir, &files)? else {
            return Ok(ImportOutcome::Interrupted);
        };
        tracing::debug!(elapsed = ?step.elapsed(), total = ?started.elapsed(), rows = done.rows_done, "rows applied, outcome files zipped");
        let files = self.with_notices(flow.id, &name, files.to_vec(), false)?;
        self.store
            .set_flow_status(flow.id, FlowStatus::Eseguito, None)?;
        let flow = self
            .store
            .flow(flow.id)?
            .ok_or_else(|| StoreError::Corrupt(format!("flow {} vanished", flow.id)))?;
        Ok(ImportOutcome::Done {
            flow,
            files,
            already: false,
        })
    }

    /// `files` and, when notices are asked for and the flow has any, the zip of its notices
    /// (written now unless `reuse` finds it written before).
    fn with_notices(
        &self,
        flow_id: i64,
        name: &FlowFile,
        mut files: Vec<OutcomeFile>,
        reuse: bool,
    ) -> Result<Vec<OutcomeFile>, ImportError> {
        if self.notice_threads == 0 {
            return Ok(files);
        }
        let file = self.format.notices_name(name);
        let path = self.staging.join(flow_id.to_string()).join(&file);
        if !(reuse && path.exists()) {
            let started = std::time::Instant::now();
            let written = crate::notices::FlowZip {
                store: self.store,
                entity: self.entity,
                flow_id,
                entry: &|iuv| self.format.notice_entry(iuv),
                threads: self.notice_threads,
            }
            .write(&path)?;
            tracing::info!(flow = flow_id, notices = written.notices, failed = written.failed, elapsed = ?started.elapsed(), "flow notices written");
        }
        if path.exists() {
            files.push(OutcomeFile {
                path,
                entry: String::new(),
                name: file,
            });
        }
        Ok(files)
    }

    /// The rejected-rows and accepted-rows zips of a flow, in that order.
    fn outcome_files(&self, flow_id: i64, name: &FlowFile) -> [OutcomeFile; 2] {
        let dir = self.staging.join(flow_id.to_string());
        self.format.outcome_names(name).map(|n| OutcomeFile {
            path: dir.join(&n.file),
            name: n.file,
            entry: n.entry,
        })
    }

    /// Reads the whole flow once, as the import will (size, encoding, record lengths, a damaged
    /// archive), before any row is applied, so a broken file changes nothing.
    fn prepare(&self, flow: &Flow, name: &FlowFile, path: &Path) -> Result<Prepared, ImportError> {
        if flow.status != FlowStatus::LoadImport {
            return Ok(Prepared::Ready);
        }
        let max = self.limits.max_flow_bytes;
        let unreadable = self.format.code(FlowProblem::Unreadable);
        let len = open_flow(path)
            .and_then(|f| f.metadata())
            .map_err(io_err(format!("reading {}", path.display())))?
            .len();
        let verdict = if len > max {
            Err(Refusal::new(
                unreadable,
                format!("the flow is {len} bytes, more than the limit of {max} bytes"),
            ))
        } else {
            self.check(path, name)?
                .map_err(|reason| Refusal::new(unreadable, reason))
                .and_then(|r| r)
        };
        if let Err(r) = verdict {
            return Ok(refused(r.code, r.message));
        }
        self.store
            .set_flow_status(flow.id, FlowStatus::InElab, None)?;
        Ok(Prepared::Ready)
    }

    /// Reads the records to the end as the import will: `Ok(Err(reason))` when they cannot be,
    /// `Ok(Ok(Err(refusal)))` when the format refuses the file. A packed flow is unpacked by a
    /// second thread while this one parses.
    fn check(
        &self,
        path: &Path,
        name: &FlowFile,
    ) -> Result<Result<Result<(), Refusal>, String>, ImportError> {
        let (limits, dialect) = (self.limits.csv, self.format.dialect());
        let max = self.limits.flow();
        let open = || open_flow(path).map_err(io_err(format!("opening {}", path.display())));
        if !name.packed {
            let mut verdict = Ok(());
            let opened = self.format.open_records(open()?, name, max, &mut |r, _| {
                verdict = check_csv(self.encoding.decoder(r), limits, dialect);
            });
            return Ok(verdict.map(|()| opened));
        }
        let file = open()?;
        Ok(std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
            let unpacking = scope.spawn(move || {
                self.format
                    .open_records(file, name, max, &mut |reader, _| loop {
                        let mut block = vec![0u8; 256 * 1024];
                        let sent = match read_block(reader, &mut block) {
                            Ok(0) => return,
                            Ok(n) => {
                                block.truncate(n);
                                tx.send(Ok(block))
                            }
                            Err(e) => tx.send(Err(e)),
                        };
                        if sent.is_err() {
                            return;
                        }
                    })
            });
            let mut blocks = BlockReader {
                blocks: rx,
                current: Vec::new(),
                pos: 0,
            };
            let verdict = check_csv(self.encoding.decoder(&mut blocks), limits, dialect);
            // The format's refusal (no records found, say) explains an empty read best.
            match unpacking.join() {
                Ok(Err(refusal)) => Ok(Err(refusal)),
                Ok(Ok(())) => verdict.map(Ok),
                Err(_) => Err("the flow could not be unpacked".to_string()),
            }
        }))
    }

    /// Applies every row from the checkpoint on and zips the outcome files; returns the final
    /// checkpoint, or `None` when stopped early.
    ///
    /// Threads: one reads and validates the next chunk while this one applies the previous chunk
    /// to the store, and the outcome zips follow what is committed.
    fn apply(
        &self,
        flow: &Flow,
        source: &FlowSource<'_>,
        dir: &Path,
        files: &[OutcomeFile; 2],
    ) -> Result<Option<Checkpoint>, ImportError> {
        let (limits, dialect) = (self.limits.csv, self.format.dialect());
        let (header, csv_len) = source
            .read(|r, len| {
                CsvLines::with_dialect(r, limits, dialect).map(|l| (l.header().to_string(), len))
            })?
            .map_err(changed_after_check)?;
        let cp = flow.progress;
        let mut outcomes = Outcomes::open(self.format, self.encoding, dir, cp, &header, files)?;
        let key = EntityKey {
            ipa_code: &self.entity.ipa_code,
            segregation_code: self.entity.segregation_code,
            payment_in_progress: self.entity.payment_in_progress,
        };

        let done = std::thread::scope(|scope| {
            // Two chunks in flight at most: memory stays bounded whatever the flow's size.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Chunk, CsvError>>(0);
            let reader = ChunkReader {
                format: self.format,
                flow: source.name,
                rules: &self.entity.rules,
                today: snodo_core::time::today_rome(),
                skip: cp.rows_done,
                chunk_rows: self.limits.chunk_rows,
                seen: IudSet::for_flow_of(csv_len),
            };
            std::thread::Builder::new()
                .name("flow-reader".into())
                .spawn_scoped(scope, move || {
                    let read =
                        source.read(|r, _| match CsvLines::with_dialect(r, limits, dialect) {
                            Ok(lines) => reader.run(lines, &tx),
                            Err(e) => {
                                let _ = tx.send(Err(e));
                            }
                        });
                    if let Err(e) = read {
                        let _ = tx.send(Err(CsvError::Io(io::Error::other(e.to_string()))));
                    }
                })
                .map_err(io_err("starting the flow reader thread"))?;

            let mut progress = cp;
            for chunk in rx {
                let chunk = chunk.map_err(changed_after_check)?;
                let mut committed: Option<Checkpoint> = None;
                let mut outcome_err: Option<io::Error> = None;
                let r = {
                    // Runs inside the chunk's transaction, before commit: the outcome lines are
                    // on disk before the rows they describe are committed.
                    let mut after = |results: &[RowOutcome]| -> Result<ChunkCommit, String> {
                        let res = write_outcomes(&chunk.pending, results, progress, &mut outcomes);
                        match res {
                            Ok(next) => {
                                committed = Some(next);
                                Ok(next.into())
                            }
                            Err(e) => {
                                let msg = e.to_string();
                                outcome_err = Some(e);
                                Err(msg)
                            }
                        }
                    };
                    self.store
                        .apply_chunk(flow.id, &key, &chunk.rows, None, &mut after)
                };
                if let Some(e) = outcome_err {
                    return Err(ImportError::Io {
                        context: "writing outcome files".into(),
                        source: e,
                    });
                }
                r?;
                progress = committed.unwrap_or(progress);
                outcomes.committed(&progress);
                (self.progress)(progress.rows_done);
                if !chunk.last && self.stop.load(Ordering::SeqCst) {
                    // Dropping the receiver stops the reader thread.
                    return Ok(None);
                }
            }
            Ok(Some(progress))
        })?;
        match done {
            Some(cp) => {
                outcomes.finish(&cp)?;
                Ok(Some(cp))
            }
            None => Ok(None),
        }
    }
}

/// One chunk of rows ready to apply, and what their outcome lines need.
struct Chunk {
    rows: Vec<ChunkRow>,
    pending: Vec<Pending>,
    /// The flow's last chunk (possibly empty: it still commits the final checkpoint).
    last: bool,
}

/// Reads and validates rows into chunks, on its own thread.
struct ChunkReader<'a> {
    format: &'a dyn FlowFormat,
    flow: &'a FlowFile,
    rules: &'a dovuto::EntityRules,
    today: chrono::NaiveDate,
    /// Rows already committed before a restart.
    skip: u64,
    chunk_rows: usize,
    seen: IudSet,
}

impl ChunkReader<'_> {
    fn run<R: Read>(
        mut self,
        mut lines: CsvLines<R>,
        tx: &std::sync::mpsc::SyncSender<Result<Chunk, CsvError>>,
    ) {
        loop {
            let chunk = self.next_chunk(&mut lines);
            let last = !matches!(chunk, Ok(Chunk { last: false, .. }));
            if tx.send(chunk).is_err() || last {
                return;
            }
        }
    }

    fn next_chunk<R: Read>(&mut self, lines: &mut CsvLines<R>) -> Result<Chunk, CsvError> {
        let mut rows = Vec::with_capacity(self.chunk_rows);
        let mut pending = Vec::with_capacity(self.chunk_rows);
        while pending.len() < self.chunk_rows {
            let Some(rec) = lines.next_record()? else {
                return Ok(Chunk {
                    rows,
                    pending,
                    last: true,
                });
            };
            let first = self.seen.first(rec.field(0));
            if rec.row <= self.skip {
                // Applied before a restart: only its IUD is remembered, for duplicates.
                continue;
            }
            pending.push(classify(
                &rec,
                self.format,
                self.flow,
                self.rules,
                self.today,
                first,
                &mut rows,
            ));
        }
        Ok(Chunk {
            rows,
            pending,
            last: false,
        })
    }
}

fn changed_after_check(e: CsvError) -> ImportError {
    ImportError::Io {
        context: csv_problem(&e),
        source: io::Error::other("the flow changed after it was checked"),
    }
}

/// Writes a chunk's outcome lines in row order, syncs both files, and returns the checkpoint
/// that covers them.
fn write_outcomes(
    pending: &[Pending],
    outcomes: &[RowOutcome],
    from: Checkpoint,
    out: &mut Outcomes<'_>,
) -> io::Result<Checkpoint> {
    let mut next = from;
    for p in pending {
        next.rows_done += 1;
        match p {
            Pending::Rejected { raw, rejections } => {
                out.reject(raw, rejections)?;
                next.rejected += 1;
            }
            Pending::Valid { raw, line, index } => match outcomes.get(*index) {
                Some(RowOutcome::Accepted { iuv, generated, .. }) => {
                    let generated_iuv = if *generated {
                        iuv.as_ref().map(|i| i.as_str())
                    } else {
                        None
                    };
                    out.accept(line, generated_iuv)?;
                    next.accepted += 1;
                }
                Some(RowOutcome::Rejected(r)) => {
                    out.reject(raw, std::slice::from_ref(r))?;
                    next.rejected += 1;
                }
                None => {
                    return Err(io::Error::other(
                        "the store returned fewer outcomes than rows",
                    ))
                }
            },
        }
    }
    (next.scarti_bytes, next.iuv_bytes) = out.sync()?;
    Ok(next)
}

/// Reads the whole flow as the import will, so that whatever would stop it midway (invalid
/// UTF-8, an endless record, a truncated zip) refuses it before any row is applied.
fn check_csv<R: Read>(reader: R, limits: CsvLimits, dialect: Dialect) -> Result<(), String> {
    let mut lines = CsvLines::with_dialect(reader, limits, dialect).map_err(|e| csv_problem(&e))?;
    while lines.next_record().map_err(|e| csv_problem(&e))?.is_some() {}
    if lines.lines() == 0 {
        return Err("the flow is empty: not even a header line".to_string());
    }
    Ok(())
}

/// Fills `block` as far as the reader allows; 0 only at the end.
fn read_block<R: Read + ?Sized>(r: &mut R, block: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < block.len() {
        match r.read(&mut block[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads blocks inflated by another thread.
struct BlockReader {
    blocks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for BlockReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.current.len() {
            match self.blocks.recv() {
                Ok(block) => {
                    self.current = block?;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Where an import reads its records, through the format: read again (and unpacked again) on
/// every pass rather than unpacked to disk.
struct FlowSource<'a> {
    format: &'a dyn FlowFormat,
    encoding: Encoding,
    path: &'a Path,
    name: &'a FlowFile,
    limits: FlowLimits,
}

impl FlowSource<'_> {
    /// Calls `f` with a reader of the records and their (declared) size.
    fn read<T>(&self, f: impl FnOnce(&mut dyn Read, u64) -> T) -> Result<T, ImportError> {
        let file =
            open_flow(self.path).map_err(io_err(format!("opening {}", self.path.display())))?;
        let mut f = Some(f);
        let mut out = None;
        self.format
            .open_records(file, self.name, self.limits, &mut |r, len| {
                out = f.take().map(|f| f(&mut *self.encoding.decoder(r), len));
            })
            .map_err(|r| ImportError::Io {
                context: format!("reading {}", self.path.display()),
                source: io::Error::other(format!(
                    "the flow changed after it was checked: {}",
                    r.message
                )),
            })?;
        out.ok_or_else(|| ImportError::Io {
            context: format!("reading {}", self.path.display()),
            source: io::Error::other("the format opened no records"),
        })
    }
}

fn aborted(flow: Option<Flow>, code: &str, message: String) -> ImportOutcome {
    ImportOutcome::Aborted {
        flow,
        code: code.to_string(),
        message,
    }
}

fn refused(code: &str, message: String) -> Prepared {
    Prepared::Refused {
        code: code.to_string(),
        message,
    }
}

fn csv_problem(e: &CsvError) -> String {
    match e {
        CsvError::Io(inner) => format!("the flow cannot be read: {inner}"),
        other => other.to_string(),
    }
}

/// Opens a flow for reading without following a symbolic link: a link swapped in for a claimed
/// file must not make the hub read (and answer with) a file of someone else's choosing.
fn open_flow(path: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

fn sha256_file(path: &Path) -> Result<String, ImportError> {
    let mut f = open_flow(path).map_err(io_err(format!("opening {}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io_err(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A row waiting for its chunk to commit, with what its outcome line needs.
enum Pending {
    Rejected {
        raw: String,
        rejections: Vec<Rejection>,
    },
    /// Valid: `line` is its IUV-file line, `raw` its SCARTI text should the registry refuse it.
    Valid {
        raw: String,
        line: RenderedRow,
        index: usize,
    },
}

fn classify(
    rec: &snodo_adapters::csv::Record<'_>,
    format: &dyn FlowFormat,
    flow: &FlowFile,
    rules: &dovuto::EntityRules,
    today: chrono::NaiveDate,
    first_of_iud: bool,
    rows: &mut Vec<ChunkRow>,
) -> Pending {
    let reject = |rejections: Vec<Rejection>| Pending::Rejected {
        raw: rec.raw.to_string(),
        rejections,
    };
    if let Some(e) = rec.error() {
        return reject(vec![Rejection::new(RejectCode::SintassiCsv, e.to_string())]);
    }
    let raw = match format.decode(flow, rec) {
        Ok(r) => r,
        Err(e) => return reject(vec![Rejection::new(RejectCode::SintassiCsv, e)]),
    };
    let result = dovuto::validate(&raw, flow.rules, rules, today);
    let dup = (!first_of_iud).then(|| {
        Rejection::new(
            RejectCode::IudDuplicato,
            format!("IUD {} appears more than once in this flow", raw.iud),
        )
    });
    match (result, dup) {
        (Ok(row), None) => {
            match ChunkRow::new(row) {
                Ok(r) => rows.push(r),
                Err(e) => return reject(vec![Rejection::new(RejectCode::Error, e.to_string())]),
            }
            Pending::Valid {
                raw: rec.raw.to_string(),
                line: format.render_accepted(flow, rec),
                index: rows.len() - 1,
            }
        }
        (Ok(_), Some(d)) => reject(vec![d]),
        (Err(mut errs), d) => {
            errs.extend(d);
            reject(errs)
        }
    }
}

/// IUDs seen in this flow, as 128-bit hashes: a million rows fit in a few tens of MB.
#[derive(Default)]
struct IudSet(HashSet<u128>);

impl IudSet {
    /// Sized up front for a flow of `bytes` (rows are rarely shorter than 150 bytes), so the set
    /// does not hold its old and new tables at once while growing at the end of a large flow.
    fn for_flow_of(bytes: u64) -> Self {
        Self(HashSet::with_capacity(
            (bytes / 150).min(10_000_000) as usize
        ))
    }

    /// Records the IUD; true when it was not seen before (empty IUDs are not tracked).
    fn first(&mut self, iud: &str) -> bool {
        if iud.is_empty() {
            return true;
        }
        let mut a = std::collections::hash_map::DefaultHasher::new();
        (0u8, iud).hash(&mut a);
        let mut b = std::collections::hash_map::DefaultHasher::new();
        (1u8, iud).hash(&mut b);
        self.0
            .insert(((a.finish() as u128) << 64) | b.finish() as u128)
    }
}
