//! A batch receipts pipeline at work: on each schedule tick, one MyPay export file with every
//! receipt of the entity not yet exported, published through the pipeline's sink.
//!
//! Exactly once across crashes: the store fixes an export's receipts when it opens, and the file
//! name derives from the export, so a hub that dies while writing redoes the same file with the
//! same receipts at its next start, and the next file starts after them.

use crate::codecs::ReceiptFile;
use crate::plan::{
    EntityRuntime, PipelineKind, Plan, ReceiptEncoding, ReceiptFormat, ReceiptRoute,
};
use chrono::{DateTime, Utc};
use chrono_tz::Europe::Rome;
use snodo_adapters::mypay_export::{self, ExportReceipt, ExportVersion, ExportWriter};
use snodo_adapters::mypay_import::ZipEntryWriter;
use snodo_connectors::Sink;
use snodo_store::{Export, Store};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// First wait after a failed write; doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(15 * 60);

pub struct Exporter {
    name: String,
    entity: Arc<EntityRuntime>,
    version: ExportVersion,
    schedule: Box<cron::Schedule>,
    sink: Box<dyn Sink>,
    skip_empty: bool,
    store: Arc<dyn Store>,
    staging: PathBuf,
    /// Holder of the pipeline's job lease: several hubs sharing a store write each tick once.
    instance: String,
}

/// How long a hub may hold an export's lease before another may take over (a hub that died).
const LEASE: Duration = Duration::from_secs(30 * 60);

/// A scheduled export pipeline's job lease: several hubs sharing a store write each tick once.
pub(crate) struct JobLease<'a> {
    pub store: &'a dyn Store,
    pub pipeline: &'a str,
    pub instance: &'a str,
}

impl JobLease<'_> {
    /// Runs `work` holding the pipeline's lease (with `tick`, only if this hub is the first to
    /// claim that tick); `T::default()` when another hub holds it.
    pub fn run<T: Default, E: From<snodo_store::StoreError>>(
        &self,
        tick: Option<&str>,
        work: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let job = format!("export:{}", self.pipeline);
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let stamp = crate::deliver::stamp;
        if !self
            .store
            .take_job(&job, self.instance, &stamp(now), &stamp(until), tick)?
        {
            info!(pipeline = %self.pipeline, tick = tick.unwrap_or("-"), "another hub runs this export");
            return Ok(T::default());
        }
        let result = work();
        if let Err(e) = self.store.release_job(&job, self.instance) {
            warn!(pipeline = %self.pipeline, "cannot release the export lease (it expires by itself): {e}");
        }
        result
    }
}

/// Why an export file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("store: {0}")]
    Store(#[from] snodo_store::StoreError),
    #[error("receipt {0} is not in the store")]
    Missing(i64),
    #[error("{0}")]
    Format(#[from] mypay_export::MypayExportError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("publishing {name}: {source}")]
    Publish {
        name: String,
        source: snodo_connectors::ConnectorError,
    },
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Exporter {
    pub fn new(
        plan: Arc<Plan>,
        index: usize,
        store: Arc<dyn Store>,
        instance: String,
    ) -> Result<Self, String> {
        let p = &plan.pipelines[index];
        let PipelineKind::Receipts {
            format:
                ReceiptFormat {
                    encoding: ReceiptEncoding::File(ReceiptFile { version, .. }),
                    ..
                },
            route:
                ReceiptRoute::Batch {
                    schedule,
                    sink,
                    skip_empty,
                },
            ..
        } = &p.kind
        else {
            return Err("not an export pipeline".into());
        };
        let entity = plan.entity_of(p)?;
        let version = ExportVersion::parse(version).map_err(|e| e.to_string())?;
        Ok(Self {
            name: p.name.clone(),
            entity,
            version,
            schedule: schedule.clone(),
            sink: sink.build().map_err(|e| e.to_string())?,
            skip_empty: *skip_empty,
            store,
            staging: plan.config.hub.data_dir.join("exports").join(&p.name),
            instance,
        })
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        info!(pipeline = %self.name, entity = %self.entity.ipa_code, "receipt exports started");
        let this = Arc::new(self);
        // An export a crash interrupted is finished first, with the receipts it had.
        let mut resume = true;
        loop {
            let mut tick = None;
            if !resume {
                match crate::ticks::next_tick(&this.schedule, &mut shutdown).await {
                    Some(t) => tick = t,
                    None => break,
                }
            }
            if *shutdown.borrow() {
                break;
            }
            let mut backoff = RETRY_FIRST;
            loop {
                let work = this.clone();
                let only_resume = resume;
                // The tick is claimed once; a retry of it runs under the lease already held.
                let this_tick = tick.take();
                match tokio::task::spawn_blocking(move || work.export(only_resume, this_tick)).await
                {
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) => {
                        warn!(pipeline = %this.name, "export failed, retrying in {backoff:?}: {e}")
                    }
                    Err(e) => error!(pipeline = %this.name, "export task panicked: {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    break;
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            resume = false;
        }
        info!(pipeline = %this.name, "receipt exports stopped");
    }

    /// Writes and publishes the open export (or, unless `only_resume`, a new one). Returns the
    /// published file's name, if any. With `tick`, only the first hub to claim that tick of the
    /// schedule writes; without, it runs unless another hub holds the pipeline's lease.
    pub fn export(
        &self,
        only_resume: bool,
        tick: Option<String>,
    ) -> Result<Option<String>, ExportError> {
        let lease = JobLease {
            store: &*self.store,
            pipeline: &self.name,
            instance: &self.instance,
        };
        lease.run(tick.as_deref(), || self.export_leased(only_resume))
    }

    fn export_leased(&self, only_resume: bool) -> Result<Option<String>, ExportError> {
        let opened = if only_resume {
            self.store.unfinished_export(&self.name)?
        } else {
            self.store
                .open_export(&self.name, &self.entity.ipa_code, !self.skip_empty)?
        };
        let Some(export) = opened else {
            return Ok(None);
        };
        match self.write(&export) {
            Ok((name, left_out)) => {
                crate::failpoint("export-published");
                self.store.finish_export_without(export.id, &left_out)?;
                for (delivery, why) in &left_out {
                    warn!(pipeline = %self.name, export = export.id, delivery, "receipt left out of the export, a dead letter: {why}");
                }
                let receipts = export.receipts - left_out.len() as i64;
                info!(pipeline = %self.name, export = export.id, receipts, left_out = left_out.len(), file = %name, resumed = export.resumed, "export written");
                Ok(Some(name))
            }
            Err(e) => {
                if let Err(fe) = self.store.fail_export(export.id, &e.to_string()) {
                    warn!(pipeline = %self.name, export = export.id, "cannot record the failure: {fe}");
                }
                Err(e)
            }
        }
    }

    /// Writes and publishes the export's file; returns its name and the deliveries left out of
    /// it, with why: receipts that cannot be encoded (the same on a redo, so a redone file is
    /// the same file). A store or file error fails the whole file, to be retried.
    fn write(&self, export: &Export) -> Result<(String, Vec<(i64, String)>), ExportError> {
        let opened = DateTime::parse_from_rfc3339(&export.created_at)
            .map(|t| t.with_timezone(&Rome).naive_local())
            .unwrap_or_else(|_| Utc::now().with_timezone(&Rome).naive_local());
        let stem = mypay_export::file_stem(
            self.version,
            &self.entity.ipa_code,
            &export.id.to_string(),
            opened,
        );
        std::fs::create_dir_all(&self.staging).map_err(io(&self.staging))?;
        let zip_path = self.staging.join(format!("{stem}.zip"));
        let mut left_out = Vec::new();
        {
            let file = std::fs::File::create(&zip_path).map_err(io(&zip_path))?;
            // Rows stream into the zip entry as they are encoded. Stamped with the export's own
            // time: a redo after a crash is the same file, byte for byte.
            let entry = ZipEntryWriter::new(BufWriter::new(file), &format!("{stem}.csv"), opened)
                .map_err(io(&zip_path))?;
            let mut writer = ExportWriter::new(self.version, entry)?;
            for item in self.store.export_items(export.id)? {
                let Some(doc) = self.store.receipt_document(item.receipt)? else {
                    left_out.push((
                        item.delivery,
                        ExportError::Missing(item.receipt).to_string(),
                    ));
                    continue;
                };
                let request = crate::deliver::decoded(&doc).ok();
                let pushed = writer.push_parsed(
                    &ExportReceipt {
                        entity_ipa: &self.entity.ipa_code,
                        entity_fiscal_code: self.entity.fiscal_code.as_str(),
                        entity_name: &self.entity.name,
                        iud: if item.secondary {
                            None
                        } else {
                            doc.iud.as_deref()
                        },
                        debt_type: if item.secondary {
                            None
                        } else {
                            doc.debt_type.as_deref()
                        },
                        iuf: if item.secondary {
                            None
                        } else {
                            doc.flow_iuf.as_deref()
                        },
                        received_at: &doc.receipt.received_at,
                        raw_request: &doc.xml,
                        secondary: item.secondary,
                    },
                    // Unreadable: the writer parses the XML and names the problem.
                    request.as_ref(),
                );
                match pushed {
                    Ok(_) => {}
                    Err(e @ mypay_export::MypayExportError::Io(_)) => return Err(e.into()),
                    // Nothing of it was written: the file goes on without it.
                    Err(e) => left_out.push((item.delivery, e.to_string())),
                }
            }
            let mut out = writer
                .finish()?
                .finish()
                .map_err(io(&zip_path))?
                .into_inner()
                .map_err(|e| io(&zip_path)(e.into_error()))?;
            out.flush().map_err(io(&zip_path))?;
        }
        let name = format!("{stem}.zip");
        self.sink
            .put_file(&name, &zip_path)
            .map_err(|source| ExportError::Publish {
                name: name.clone(),
                source,
            })?;
        let _ = std::fs::remove_file(&zip_path);
        Ok((name, left_out))
    }
}
