//! Importing one MyPay flow into the registry: the same code path for `snodo import` and for a
//! pipeline's source.
//!
//! Crash safety: rows are applied in chunks; each chunk's positions, history, IUV counter and the
//! flow checkpoint (rows consumed, counts, outcome-file lengths) commit in one transaction, after
//! the chunk's outcome lines are written and synced to staged files. After a crash, the flow is
//! found again by entity, IUF and content hash, the staged outcome files are cut back to the
//! committed lengths, and the import goes on from the committed row: every row is applied once
//! and every IUV handed out once.

mod outcomes;

use crate::plan::EntityRuntime;
pub use outcomes::OutcomeFile;
use outcomes::Outcomes;
use sha2::{Digest, Sha256};
use snodo_adapters::csv::{CsvError, CsvLimits, CsvLines};
use snodo_adapters::mypay_import::{
    self as mypay, iuv_name, map_row, render_accepted, scarti_name, FlowName, FlowZip, RenderedRow,
    ScartiWriter, SizeLimited,
};
use snodo_core::dovuto::{self, FlowVersion, RejectCode, Rejection};
use snodo_store::{
    Checkpoint, ChunkCommit, ChunkRow, EntityKey, Flow, FlowStatus, NewFlow, RowOutcome, Store,
    StoreError,
};
use std::collections::HashSet;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The hub-level limits an import runs under.
#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    pub max_flow_bytes: u64,
    pub chunk_rows: usize,
    pub csv: CsvLimits,
}

impl ImportLimits {
    pub fn from_hub(hub: &crate::config::HubConfig) -> Self {
        Self {
            max_flow_bytes: hub.max_flow_bytes,
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
    /// The flow was refused as a whole with a MyPay file-level code; nothing changed.
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

pub const ENTE_ERR: &str = "PAA_IMPORT_ENTE_ERR";
pub const FLUSSO_DUPLICATO: &str = "PAA_IMPORT_FLUSSO_DUPLICATO";
pub const FLUSSO_IN_CARICAMENTO: &str = "PAA_IMPORT_FLUSSO_IN_CARICAMENTO";

pub struct Importer<'a> {
    pub store: &'a dyn Store,
    pub entity: &'a EntityRuntime,
    /// Root of the per-flow staging folders.
    pub staging: PathBuf,
    pub limits: ImportLimits,
    /// Set when the hub is stopping: the import stops after the current chunk.
    pub stop: &'a AtomicBool,
    /// Called with the number of rows done after each chunk.
    pub progress: &'a (dyn Fn(u64) + Sync),
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
        let name = match FlowName::parse(file_name) {
            Ok(n) => n,
            Err(e) => return Ok(aborted(None, e.code(), e.to_string())),
        };
        if name.ipa_code != self.entity.ipa_code {
            return Ok(aborted(
                None,
                ENTE_ERR,
                format!(
                    "the flow names entity {:?} but belongs to {:?}",
                    name.ipa_code, self.entity.ipa_code
                ),
            ));
        }
        let started = std::time::Instant::now();
        let sha = sha256_file(path)?;
        tracing::debug!(elapsed = ?started.elapsed(), "flow hashed");
        let entity = &self.entity.ipa_code;
        let flows = self.store.flows_by_iuf(entity, &name.iuf)?;

        if let Some(done) = flows.iter().find(|f| f.status == FlowStatus::Eseguito) {
            if redelivered && done.content_sha256 == sha {
                // Finished before the source could forget it: hand the same outcome back.
                let files = self.outcome_files(done.id, &name.stem);
                if files.iter().all(|f| f.path.exists()) {
                    return Ok(ImportOutcome::Done {
                        flow: done.clone(),
                        files: files.to_vec(),
                        already: true,
                    });
                }
            }
            return Ok(aborted(
                None,
                FLUSSO_DUPLICATO,
                format!(
                    "flow {} was already imported for {entity} (flow id {}, {})",
                    name.iuf, done.id, done.updated_at
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
                    FLUSSO_IN_CARICAMENTO,
                    format!(
                        "another file with IUF {} is being loaded (flow id {}, different content)",
                        name.iuf, f.id
                    ),
                ))
            }
            None => self.store.create_flow(&NewFlow {
                entity,
                iuf: &name.iuf,
                file_name,
                version: name.version.as_str(),
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
        let files = self.outcome_files(flow.id, &name.stem);
        let source = FlowSource {
            path,
            name: &name,
            max: self.limits.max_flow_bytes,
        };
        let Some(done) = self.apply(&flow, &source, &dir, &files)? else {
            return Ok(ImportOutcome::Interrupted);
        };
        tracing::debug!(elapsed = ?step.elapsed(), total = ?started.elapsed(), rows = done.rows_done, "rows applied, outcome files zipped");
        let files = files.to_vec();
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

    /// The SCARTI and IUV zips of a flow, in that order.
    fn outcome_files(&self, flow_id: i64, stem: &str) -> [OutcomeFile; 2] {
        let dir = self.staging.join(flow_id.to_string());
        [scarti_name(stem), iuv_name(stem)].map(|n| {
            let name = format!("{n}.zip");
            OutcomeFile {
                path: dir.join(&name),
                name,
            }
        })
    }

    /// Unpacks the CSV to the staging folder (for a zip) and checks the whole file is readable
    /// (size, UTF-8, record lengths) before any row is applied, so a broken file changes nothing.
    fn prepare(&self, flow: &Flow, name: &FlowName, path: &Path) -> Result<Prepared, ImportError> {
        if flow.status != FlowStatus::LoadImport {
            return Ok(Prepared::Ready);
        }
        let max = self.limits.max_flow_bytes;
        let verdict = if name.is_zip {
            self.check_zip(path, name)?
        } else {
            let len = fs::metadata(path)
                .map_err(io_err(format!("reading {}", path.display())))?
                .len();
            if len > max {
                Err((
                    mypay::codes::ERROR,
                    format!("the flow is {len} bytes, more than the limit of {max} bytes"),
                ))
            } else {
                let file =
                    File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
                check_csv(SizeLimited::new(file, max), self.limits.csv)
                    .map_err(|reason| (mypay::codes::ERROR, reason))
            }
        };
        if let Err((code, message)) = verdict {
            return Ok(refused(code, message));
        }
        self.store
            .set_flow_status(flow.id, FlowStatus::InElab, None)?;
        Ok(Prepared::Ready)
    }

    /// Reads the zip's CSV to the end as the import will: a thread inflates while this one
    /// parses. `Ok(Err((code, reason)))` refuses the flow.
    fn check_zip(
        &self,
        path: &Path,
        name: &FlowName,
    ) -> Result<Result<(), (&'static str, String)>, ImportError> {
        let file = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
        let mut zip = match FlowZip::open(
            io::BufReader::new(file),
            &name.stem,
            self.limits.max_flow_bytes,
        ) {
            Ok(z) => z,
            Err(e) => return Ok(Err((e.code(), e.to_string()))),
        };
        let verdict = std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
            scope.spawn(move || {
                let mut reader = match zip.csv() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(io::Error::other(e.to_string())));
                        return;
                    }
                };
                loop {
                    let mut block = vec![0u8; 256 * 1024];
                    let sent = match read_block(&mut reader, &mut block) {
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
                }
            });
            check_csv(
                BlockReader {
                    blocks: rx,
                    current: Vec::new(),
                    pos: 0,
                },
                self.limits.csv,
            )
        });
        Ok(verdict.map_err(|reason| (mypay::codes::ERROR, reason)))
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
        let limits = self.limits.csv;
        let (header, csv_len) = source
            .read(|r, len| CsvLines::new(r, limits).map(|l| (l.header().to_string(), len)))?
            .map_err(changed_after_check)?;
        let cp = flow.progress;
        let mut outcomes = Outcomes::open(dir, cp, &header, files)?;
        let key = EntityKey {
            ipa_code: &self.entity.ipa_code,
            segregation_code: self.entity.segregation_code,
        };

        let done = std::thread::scope(|scope| {
            // Two chunks in flight at most: memory stays bounded whatever the flow's size.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Chunk, CsvError>>(0);
            let reader = ChunkReader {
                version: source.name.version,
                rules: &self.entity.rules,
                today: snodo_core::time::today_rome(),
                skip: cp.rows_done,
                chunk_rows: self.limits.chunk_rows,
                seen: IudSet::for_flow_of(csv_len),
            };
            std::thread::Builder::new()
                .name("flow-reader".into())
                .spawn_scoped(scope, move || {
                    let read = source.read(|r, _| match CsvLines::new(r, limits) {
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
    version: FlowVersion,
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
                self.version,
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
    out: &mut Outcomes,
) -> io::Result<Checkpoint> {
    let mut next = from;
    for p in pending {
        next.rows_done += 1;
        match p {
            Pending::Rejected { raw, rejections } => {
                write_reject(&mut out.scarti, raw, rejections)?;
                next.rejected += 1;
            }
            Pending::Valid { raw, line, index } => match outcomes.get(*index) {
                Some(RowOutcome::Accepted { iuv, generated, .. }) => {
                    let generated_iuv = if *generated {
                        iuv.as_ref().map(|i| i.as_str())
                    } else {
                        None
                    };
                    out.iuv.accept_rendered(line, generated_iuv)?;
                    next.accepted += 1;
                }
                Some(RowOutcome::Rejected(r)) => {
                    write_reject(&mut out.scarti, raw, std::slice::from_ref(r))?;
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
fn check_csv<R: Read>(reader: R, limits: CsvLimits) -> Result<(), String> {
    let mut lines = CsvLines::new(reader, limits).map_err(|e| csv_problem(&e))?;
    while lines.next_record().map_err(|e| csv_problem(&e))?.is_some() {}
    if lines.lines() == 0 {
        return Err("the flow is empty: not even a header line".to_string());
    }
    Ok(())
}

/// Fills `block` as far as the reader allows; 0 only at the end.
fn read_block(r: &mut impl Read, block: &mut [u8]) -> io::Result<usize> {
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

/// Where an import reads its CSV: the flow file itself, or the entry inside its zip (inflated
/// again on every read rather than unpacked to disk).
struct FlowSource<'a> {
    path: &'a Path,
    name: &'a FlowName,
    max: u64,
}

impl FlowSource<'_> {
    /// Calls `f` with a reader of the CSV and its (declared) size.
    fn read<T>(&self, f: impl FnOnce(Box<dyn Read + '_>, u64) -> T) -> Result<T, ImportError> {
        let file =
            File::open(self.path).map_err(io_err(format!("opening {}", self.path.display())))?;
        if !self.name.is_zip {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            return Ok(f(Box::new(SizeLimited::new(file, self.max)), len));
        }
        let changed = |e: mypay::FlowError| ImportError::Io {
            context: format!("reading {}", self.path.display()),
            source: io::Error::other(format!("the flow changed after it was checked: {e}")),
        };
        let mut zip =
            FlowZip::open(io::BufReader::new(file), &self.name.stem, self.max).map_err(changed)?;
        let len = zip.declared_size();
        let csv = zip.csv().map_err(changed)?;
        Ok(f(Box::new(csv), len))
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

fn sha256_file(path: &Path) -> Result<String, ImportError> {
    let mut f = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
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
    version: FlowVersion,
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
    let raw = match map_row(version, rec) {
        Ok(r) => r,
        Err(e) => return reject(vec![Rejection::new(RejectCode::SintassiCsv, e.to_string())]),
    };
    let result = dovuto::validate(&raw, version, rules, today);
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
                line: render_accepted(version, rec),
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

fn write_reject<W: Write>(
    w: &mut ScartiWriter<W>,
    raw: &str,
    rejections: &[Rejection],
) -> io::Result<()> {
    let codes: Vec<&str> = rejections.iter().map(|r| r.code.as_str()).collect();
    let descs: Vec<&str> = rejections.iter().map(|r| r.message.as_str()).collect();
    w.reject(raw, &codes, &descs)
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
