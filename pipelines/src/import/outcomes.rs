//! The outcome files of one import: rejected and accepted lines (MyPay's SCARTI and IUV) staged on disk chunk by chunk (cut back
//! to the committed length after a crash), and each deflated into its zip by a background thread
//! that follows the committed length, so zipping a large flow overlaps with applying it.

use super::{io_err, ImportError};
use snodo_adapters::flow_format::{FlowFormat, RenderedRow};
use snodo_adapters::mypay_import::ZipEntryWriter;
use snodo_adapters::text_encoding::Encoding;
use snodo_core::dovuto::Rejection;
use snodo_store::Checkpoint;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Both outcome files of a flow being imported, their lines written by the flow's format.
pub(super) struct Outcomes<'f> {
    format: &'f dyn FlowFormat,
    encoding: Encoding,
    /// A line in the flow's encoding, when it is not UTF-8.
    encoded: Vec<u8>,
    rejected: Staged,
    accepted: Staged,
    line: Vec<u8>,
    zips: [Zipper; 2],
}

/// A finished outcome file, staged locally, to be published under `name`.
#[derive(Debug, Clone)]
pub struct OutcomeFile {
    pub name: String,
    /// The file inside the zip.
    pub entry: String,
    pub path: PathBuf,
}

impl<'f> Outcomes<'f> {
    /// Opens the staged files at the checkpoint (writing the headers on a fresh start) and starts
    /// zipping what is committed. `files` are the rejected-rows and accepted-rows zips to
    /// produce, in that order.
    pub fn open(
        format: &'f dyn FlowFormat,
        encoding: Encoding,
        dir: &Path,
        cp: Checkpoint,
        header: &str,
        files: &[OutcomeFile; 2],
    ) -> Result<Self, ImportError> {
        // Names kept from before formats were pluggable: a flow interrupted across an upgrade
        // resumes on its staged files.
        let rejected_path = dir.join("scarti.csv");
        let accepted_path = dir.join("iuv.csv");
        let mut rejected = Staged::open(&rejected_path, cp.scarti_bytes)?;
        let mut accepted = Staged::open(&accepted_path, cp.iuv_bytes)?;
        let (mut line, mut encoded) = (Vec::with_capacity(512), Vec::new());
        if cp.scarti_bytes == 0 {
            format.rejected_header(header, &mut line);
            write_in(encoding, &line, &mut encoded, &mut rejected)
                .map_err(io_err("writing the rejected-rows file"))?;
            line.clear();
        }
        if cp.iuv_bytes == 0 {
            format.accepted_header(header, &mut line);
            write_in(encoding, &line, &mut encoded, &mut accepted)
                .map_err(io_err("writing the accepted-rows file"))?;
            line.clear();
        }
        let zips = [
            Zipper::start(rejected_path, &files[0], cp.scarti_bytes)?,
            Zipper::start(accepted_path, &files[1], cp.iuv_bytes)?,
        ];
        Ok(Self {
            format,
            encoding,
            encoded,
            rejected,
            accepted,
            line,
            zips,
        })
    }

    /// Writes one rejected row (not yet synced).
    pub fn reject(&mut self, raw: &str, why: &[Rejection]) -> io::Result<()> {
        self.line.clear();
        self.format.rejected_line(raw, why, &mut self.line);
        write_in(
            self.encoding,
            &self.line,
            &mut self.encoded,
            &mut self.rejected,
        )
    }

    /// Writes one accepted row (not yet synced).
    pub fn accept(&mut self, row: &RenderedRow, generated_iuv: Option<&str>) -> io::Result<()> {
        self.line.clear();
        self.format
            .accepted_line(row, generated_iuv, &mut self.line);
        write_in(
            self.encoding,
            &self.line,
            &mut self.encoded,
            &mut self.accepted,
        )
    }

    /// Flushes and syncs both staged files; returns their lengths (rejected, accepted) to
    /// commit.
    pub fn sync(&mut self) -> io::Result<(u64, u64)> {
        Ok((self.rejected.sync()?, self.accepted.sync()?))
    }

    /// The lengths in `cp` are committed: the zippers may take everything up to them.
    pub fn committed(&self, cp: &Checkpoint) {
        self.zips[0].advance(cp.scarti_bytes);
        self.zips[1].advance(cp.iuv_bytes);
    }

    /// Waits for both zips to take the last committed bytes, then publishes them locally.
    pub fn finish(mut self, cp: &Checkpoint) -> Result<(), ImportError> {
        let [rejected, accepted] =
            std::mem::replace(&mut self.zips, [Zipper::idle(), Zipper::idle()]);
        rejected.finish(cp.scarti_bytes)?;
        accepted.finish(cp.iuv_bytes)?;
        Ok(())
    }
}

/// Writes a UTF-8 `line` to `out` in `encoding`.
fn write_in(
    encoding: Encoding,
    line: &[u8],
    encoded: &mut Vec<u8>,
    out: &mut impl Write,
) -> io::Result<()> {
    if encoding == Encoding::Utf8 {
        return out.write_all(line);
    }
    encoded.clear();
    encoding.encode_into(line, encoded);
    out.write_all(encoded)
}

/// A staged outcome file, cut back to its committed length on open.
pub(super) struct Staged {
    writer: BufWriter<File>,
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl Staged {
    fn open(path: &Path, committed: u64) -> Result<Self, ImportError> {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        f.set_len(committed)
            .map_err(io_err(format!("truncating {}", path.display())))?;
        f.seek(SeekFrom::End(0))
            .map_err(io_err(format!("seeking {}", path.display())))?;
        Ok(Self {
            writer: BufWriter::with_capacity(256 * 1024, f),
        })
    }

    /// Flushes and syncs; returns the file's length, the value to commit.
    fn sync(&mut self) -> io::Result<u64> {
        self.writer.flush()?;
        let f = self.writer.get_ref();
        f.sync_data()?;
        f.metadata().map(|m| m.len())
    }
}

#[derive(Default)]
struct Progress {
    /// Bytes of the staged file that are committed and may be zipped.
    ready: u64,
    /// No more bytes will come: finish the zip at `ready`.
    closing: bool,
}

/// Deflates a staged file into `<target>.tmp` as its committed length grows; `finish` renames
/// the result to `target`. Dropped unfinished (a failed or interrupted import), it stops and
/// removes the temporary zip: a resumed import zips again from the start.
struct Zipper {
    shared: Arc<(Mutex<Progress>, Condvar)>,
    thread: Option<JoinHandle<io::Result<()>>>,
    tmp: PathBuf,
    target: PathBuf,
}

impl Zipper {
    fn idle() -> Self {
        Self {
            shared: Arc::default(),
            thread: None,
            tmp: PathBuf::new(),
            target: PathBuf::new(),
        }
    }

    fn start(source: PathBuf, file: &OutcomeFile, ready: u64) -> Result<Self, ImportError> {
        let tmp = PathBuf::from(format!("{}.tmp", file.path.display()));
        let entry = file.entry.clone();
        let shared: Arc<(Mutex<Progress>, Condvar)> = Arc::new((
            Mutex::new(Progress {
                ready,
                closing: false,
            }),
            Condvar::new(),
        ));
        let out = File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        let input = File::open(&source).map_err(io_err(format!("opening {}", source.display())))?;
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("outcome-zip".into())
            .spawn(move || zip_following(input, out, &entry, &state))
            .map_err(io_err("starting an outcome zip thread"))?;
        Ok(Self {
            shared,
            thread: Some(thread),
            tmp,
            target: file.path.clone(),
        })
    }

    fn advance(&self, ready: u64) {
        let (lock, cv) = &*self.shared;
        lock_progress(lock).ready = ready;
        cv.notify_one();
    }

    fn finish(mut self, ready: u64) -> Result<(), ImportError> {
        {
            let (lock, cv) = &*self.shared;
            let mut p = lock_progress(lock);
            p.ready = ready;
            p.closing = true;
            cv.notify_one();
        }
        let result = match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the zip thread panicked"))),
            None => Ok(()),
        };
        result.map_err(io_err(format!("zipping {}", self.target.display())))?;
        fs::rename(&self.tmp, &self.target)
            .map_err(io_err(format!("renaming {}", self.tmp.display())))
    }
}

impl Drop for Zipper {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            {
                let (lock, cv) = &*self.shared;
                let mut p = lock_progress(lock);
                // Closing at zero bytes past what was taken ends the thread promptly.
                p.closing = true;
                p.ready = 0;
                cv.notify_one();
            }
            let _ = t.join();
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn lock_progress(m: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn zip_following(
    mut input: File,
    out: File,
    entry: &str,
    state: &(Mutex<Progress>, Condvar),
) -> io::Result<()> {
    let mut zip = ZipEntryWriter::new(
        BufWriter::with_capacity(256 * 1024, out),
        entry,
        chrono::Local::now().naive_local(),
    )?;
    let mut taken = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let (ready, closing) = {
            let (lock, cv) = state;
            let mut p = lock_progress(lock);
            while p.ready <= taken && !p.closing {
                p = cv.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            (p.ready, p.closing)
        };
        if closing && ready < taken {
            // Abandoned: the caller removes the temporary file.
            return Ok(());
        }
        while taken < ready {
            let want = (ready - taken).min(buf.len() as u64) as usize;
            input.read_exact(&mut buf[..want])?;
            zip.write_all(&buf[..want])?;
            taken += want as u64;
        }
        if closing {
            let out = zip.finish()?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            return file.sync_all();
        }
    }
}
