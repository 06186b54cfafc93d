//! Payment notices (PDF) of positions: one at a time for the API and `snodo notice`, and a whole
//! flow's as one zip beside its outcome files (`notices = true` on an import pipeline).
//!
//! A flow's notices are read back from the store after its rows are applied (so a resumed
//! import prints the same notices as one that never stopped), rendered on worker threads and
//! zipped as they come. Between the stages at most [`QUEUE`] positions and [`QUEUE`] PDFs wait,
//! so memory stays bounded whatever the flow's size.

use crate::plan::EntityRuntime;
use snodo_adapters::notice::{self, Creditor, Debtor, Notice, Poste};
use snodo_core::payment::PositionStatus;
use snodo_store::{Position, PositionFilter, Store, StoreError};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Positions read from the store per page, and the bound of each queue between stages.
const PAGE: u32 = 256;
pub const QUEUE: usize = 64;

/// Why a position has no notice to print.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no position with IUD {0:?}")]
    Unknown(String),
    /// Paid or annulled: printing it would invite a second payment.
    #[error("position {iud:?} is {status}: no notice is printed for it")]
    Closed { iud: String, status: &'static str },
    #[error("position {0:?} has no notice number")]
    NoNumber(String),
    #[error("position {iud:?}: {source}")]
    Render {
        iud: String,
        #[source]
        source: notice::NoticeError,
    },
}

/// What the notice of `p` shows.
pub fn notice_of(p: &Position, entity: &EntityRuntime) -> Result<Notice, Refused> {
    if matches!(p.status, PositionStatus::Paid | PositionStatus::Annulled) {
        return Err(Refused::Closed {
            iud: p.iud.clone(),
            status: p.status.as_str(),
        });
    }
    let number = p
        .notice_number
        .as_deref()
        .and_then(|n| snodo_core::NoticeNumber::parse(n).ok())
        .ok_or_else(|| Refused::NoNumber(p.iud.clone()))?;
    let d = &p.dovuto;
    let payer = &d.payer;
    let joined = |parts: &[&Option<String>]| {
        parts
            .iter()
            .filter_map(|s| s.as_deref())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let street = joined(&[&payer.address, &payer.civic]);
    let place = joined(&[&payer.postal_code, &payer.locality, &payer.province]);
    let address = [street, place]
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    // MyPay prints the postal slip only for an entity Poste authorised to print it.
    let poste = entity
        .poste_authorisation
        .as_ref()
        .zip(
            entity
                .payments
                .get(&d.debt_type)
                .and_then(|t| t.postal.as_ref()),
        )
        .map(|(authorisation, postal)| Poste {
            account: postal.number().to_string(),
            holder: postal.holder.clone(),
            authorisation: authorisation.clone(),
        });
    Ok(Notice {
        creditor: Creditor {
            name: entity.name.clone(),
            fiscal_code: entity.fiscal_code.clone(),
            sector: entity.office_name.clone(),
            info: None,
            cbill: entity.cbill.clone(),
            logo: entity.logo.clone(),
        },
        debtor: Debtor {
            fiscal_code: Some(payer.id.clone()).filter(|id| !id.eq_ignore_ascii_case("ANONIMO")),
            name: payer.name.clone(),
            address: Some(address).filter(|a| !a.is_empty()),
        },
        subject: d.causale.clone(),
        notice_number: number,
        amount: d.amount,
        due_date: d.due_date,
        poste,
    })
}

/// The PDF of `p`'s notice.
pub fn pdf(p: &Position, entity: &EntityRuntime) -> Result<Vec<u8>, Refused> {
    notice::render(&notice_of(p, entity)?).map_err(|source| Refused::Render {
        iud: p.iud.clone(),
        source,
    })
}

/// What writing a flow's notices came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// PDFs in the zip.
    pub notices: u64,
    /// Positions whose notice could not be rendered (listed in the zip's error file).
    pub failed: u64,
}

/// Store or disk trouble, not the flow's fault: the import tries again later.
pub type NoticesError = crate::import::ImportError;

/// The entry that lists, when some notices could not be rendered, which and why.
pub const FAILED_ENTRY: &str = "AVVISI_NON_GENERATI.csv";

/// How a flow's notices are named and where they go.
pub struct FlowZip<'a> {
    pub store: &'a dyn Store,
    pub entity: &'a EntityRuntime,
    pub flow_id: i64,
    /// Name of a position's PDF inside the zip, by IUV.
    pub entry: &'a (dyn Fn(&str) -> String + Sync),
    /// Rendering threads (at least one).
    pub threads: usize,
}

type Rendered = (Position, Result<Vec<u8>, Refused>);

impl FlowZip<'_> {
    /// Writes the notice of every live, unpaid position the flow created or last changed and
    /// that has a notice number into a zip at `target` (through `<target>.tmp`, synced, then
    /// renamed). No such position: no zip, and `Written::default()`.
    pub fn write(&self, target: &Path) -> Result<Written, NoticesError> {
        let started = Instant::now();
        let tmp = PathBuf::from(format!("{}.tmp", target.display()));
        let io_err = |context: String| move |source| NoticesError::Io { context, source };
        let (jobs_tx, jobs_rx) = sync_channel::<Position>(QUEUE);
        let (done_tx, done_rx) = sync_channel::<Rendered>(QUEUE);
        // Owned by the workers only: if they all stop (the zipper failed), sending fails
        // instead of blocking.
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let written = std::thread::scope(|scope| -> Result<Written, NoticesError> {
            for _ in 0..self.threads.max(1) {
                let done_tx = done_tx.clone();
                let jobs_rx = jobs_rx.clone();
                scope.spawn(move || {
                    while let Some(p) = next_job(&jobs_rx) {
                        let pdf = pdf(&p, self.entity);
                        if done_tx.send((p, pdf)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(done_tx);
            drop(jobs_rx);
            let zipper = scope.spawn(|| self.zip(done_rx, &tmp));
            let read = self.read_into(jobs_tx);
            // The workers end when the jobs channel closes (read_into dropped it), the zipper
            // when every worker has ended.
            let zipped = zipper
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the notices zip thread panicked")))
                .map_err(io_err(format!("writing {}", tmp.display())));
            read?;
            zipped
        });
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if written.notices + written.failed == 0 {
            let _ = fs::remove_file(&tmp);
            return Ok(written);
        }
        fs::rename(&tmp, target).map_err(io_err(format!("renaming {}", tmp.display())))?;
        crate::metrics::NOTICES.rendered(
            &self.entity.ipa_code,
            "flow",
            written.notices,
            started.elapsed(),
        );
        Ok(written)
    }

    /// Sends the flow's positions with a notice number, page by page, then closes the channel.
    fn read_into(&self, jobs: std::sync::mpsc::SyncSender<Position>) -> Result<(), StoreError> {
        let filter = PositionFilter {
            status: Some(PositionStatus::Active),
            flow_id: Some(self.flow_id),
            ..Default::default()
        };
        let mut after = 0;
        loop {
            let page = self
                .store
                .list_positions(&self.entity.ipa_code, &filter, after, PAGE)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.id;
            for p in page {
                if p.notice_number.is_some() && jobs.send(p).is_err() {
                    // The zipper stopped on an error; it reports it.
                    return Ok(());
                }
            }
        }
    }

    /// Adds each rendered notice as it arrives; failures go to [`FAILED_ENTRY`] at the end.
    fn zip(&self, done: Receiver<Rendered>, tmp: &Path) -> io::Result<Written> {
        let file = File::create(tmp)?;
        let mut zip = zip::ZipWriter::new(BufWriter::with_capacity(256 * 1024, file));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(1));
        let mut written = Written::default();
        let mut failures = String::new();
        for (p, pdf) in done {
            match pdf {
                Ok(bytes) => {
                    let iuv = p.iuv.as_deref().unwrap_or(&p.iud);
                    zip.start_file((self.entry)(iuv), options)
                        .map_err(io::Error::other)?;
                    zip.write_all(&bytes)?;
                    written.notices += 1;
                }
                Err(why) => {
                    tracing::warn!(entity = %self.entity.ipa_code, flow = self.flow_id, iud = %p.iud, "notice not rendered: {why}");
                    failures.push_str(&format!(
                        "{};{};{}\n",
                        p.iud,
                        p.iuv.as_deref().unwrap_or(""),
                        why.to_string().replace(['\n', ';'], " ")
                    ));
                    written.failed += 1;
                }
            }
        }
        if written.failed > 0 {
            zip.start_file(FAILED_ENTRY, options)
                .map_err(io::Error::other)?;
            zip.write_all(b"iud;iuv;motivo\n")?;
            zip.write_all(failures.as_bytes())?;
        }
        let out = zip.finish().map_err(io::Error::other)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(written)
    }
}

fn next_job(jobs: &Mutex<Receiver<Position>>) -> Option<Position> {
    jobs.lock().unwrap_or_else(|p| p.into_inner()).recv().ok()
}

/// Rendering threads by default: every core (the import itself is done when they start).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}
