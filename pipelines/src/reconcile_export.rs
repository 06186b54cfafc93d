//! A reconciliation export pipeline at work (`from = "reconciliation"`, `encode = { codec =
//! "mypivot-export", version, classes }`): on each schedule tick, MyPivot's export file with
//! every payment and movement whose labels changed since the last file, one row per class (as
//! MyPivot's view has it), published through the pipeline's file sink.
//!
//! The pipeline's cursor is the entity's relabelling number (`seq`) reached by the last file
//! published; it moves only after the sink took the file, so a crash in between publishes the
//! rows again in the next file (at least once, never lost). A file holds at most MyPivot's
//! 100 000 rows; a tick writes as many files as it needs.

use crate::plan::{EntityRuntime, PipelineKind, Plan};
use crate::reconciler::Item;
use chrono::{DateTime, Utc};
use chrono_tz::Europe::Rome;
use snodo_adapters::fdr::Report;
use snodo_adapters::mypay_export::ExportReceipt;
use snodo_adapters::mypay_import::ZipEntryWriter;
use snodo_adapters::mypivot::export::{
    file_stem, Acquired, MypivotExportError, ReconciliationRow, ReconciliationWriter,
    TracciatoVersion, MAX_ROWS,
};
use snodo_adapters::mypivot::import_pagati::Notification;
use snodo_connectors::Sink;
use snodo_core::treasury::{CausaleRef, MovementOperation, TreasuryMovement};
use snodo_core::Amount;
use snodo_store::{ReceiptDocument, Store, StoredMovement};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{info, warn};

/// Items read per page.
const PAGE: u32 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum ReconExportError {
    #[error("store: {0}")]
    Store(#[from] snodo_store::StoreError),
    #[error("{0}")]
    Format(#[from] MypivotExportError),
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

pub struct ReconExporter {
    name: String,
    entity: Arc<EntityRuntime>,
    version: TracciatoVersion,
    /// The classes exported; empty: every class the version can export.
    classes: Vec<String>,
    schedule: Box<cron::Schedule>,
    sink: Box<dyn Sink>,
    skip_empty: bool,
    store: Arc<dyn Store>,
    staging: PathBuf,
    instance: String,
}

/// What one tick wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    pub files: Vec<String>,
    pub rows: u64,
}

impl ReconExporter {
    pub fn new(
        plan: Arc<Plan>,
        index: usize,
        store: Arc<dyn Store>,
        instance: String,
    ) -> Result<Self, String> {
        let p = &plan.pipelines[index];
        let PipelineKind::Reconciliation {
            version,
            classes,
            schedule,
            sink,
            skip_empty,
        } = &p.kind
        else {
            return Err("not a reconciliation export pipeline".into());
        };
        let entity = plan.entity_of(p)?;
        Ok(Self {
            name: p.name.clone(),
            entity,
            version: *version,
            classes: classes.clone(),
            schedule: schedule.clone(),
            sink: sink.build().map_err(|e| e.to_string())?,
            skip_empty: *skip_empty,
            store,
            staging: plan.config.hub.data_dir.join("exports").join(&p.name),
            instance,
        })
    }

    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        info!(pipeline = %self.name, entity = %self.entity.ipa_code, "reconciliation exports started");
        let (name, schedule) = (self.name.clone(), self.schedule.clone());
        crate::ticks::every_tick(
            name,
            "reconciliation export",
            schedule,
            shutdown,
            move |tick| self.export(tick).map(drop).map_err(|e| e.to_string()),
        )
        .await
    }

    /// Writes and publishes the files of everything relabelled since the last one; with `tick`,
    /// only the first hub to claim that tick writes.
    pub fn export(&self, tick: Option<String>) -> Result<Written, ReconExportError> {
        let lease = crate::export::JobLease {
            store: &*self.store,
            pipeline: &self.name,
            instance: &self.instance,
        };
        let job = format!("export:{}", self.name);
        lease.run(tick.as_deref(), || self.export_leased(&job, Utc::now()))
    }

    fn export_leased(&self, job: &str, now: DateTime<Utc>) -> Result<Written, ReconExportError> {
        let entity = &self.entity.ipa_code;
        let cursor = self.store.job_cursor(job)?;
        let upto = self.store.recon_seq(entity)?;
        let notifies = self.store.notifies(entity)?;
        let mut written = Written::default();
        // (seq, key) of the last item taken; an empty key takes the whole seq.
        let mut after: (i64, String) = (cursor + 1, String::new());
        loop {
            let pending = !self
                .store
                .recon_changed(entity, (after.0, &after.1), upto, 1)?
                .is_empty();
            if !pending && (self.skip_empty || !written.files.is_empty()) {
                break;
            }
            let (stem, path, rows, done) = self.write_file(&mut after, upto, notifies, now)?;
            let name = format!("{stem}.zip");
            self.sink
                .put_file(&name, &path)
                .map_err(|source| ReconExportError::Publish {
                    name: name.clone(),
                    source,
                })?;
            let _ = std::fs::remove_file(&path);
            info!(pipeline = %self.name, file = %name, rows, "reconciliation export written");
            written.files.push(name);
            written.rows += rows;
            // The next file starts after the last item this one took (after all, when done).
            let reached = if done { upto } else { after.0 - 1 };
            if reached > cursor {
                self.store.set_job_cursor(job, &self.instance, reached)?;
            }
            if done {
                break;
            }
        }
        Ok(written)
    }

    /// One file from `after` on, at most [`MAX_ROWS`] rows; leaves `after` at the last item
    /// written. Returns its stem, path, rows, and whether every item up to `upto` is in.
    fn write_file(
        &self,
        after: &mut (i64, String),
        upto: i64,
        notifies: bool,
        now: DateTime<Utc>,
    ) -> Result<(String, PathBuf, u64, bool), ReconExportError> {
        let entity = &self.entity.ipa_code;
        let at = now.with_timezone(&Rome).naive_local();
        let stem = file_stem(self.version, entity, &format!("{}-{}", after.0, upto), at);
        std::fs::create_dir_all(&self.staging).map_err(|e| io(&self.staging, e))?;
        let zip_path = self.staging.join(format!("{stem}.zip"));
        let file = std::fs::File::create(&zip_path).map_err(|e| io(&zip_path, e))?;
        let entry = ZipEntryWriter::new(BufWriter::new(file), &format!("{stem}.csv"), at)
            .map_err(|e| io(&zip_path, e))?;
        let mut writer = ReconciliationWriter::new(entry, self.version, notifies)?;
        let with_i = writer.layout().with_notifications;
        let mut cache = Sources::default();
        let mut done = true;
        'pages: loop {
            let page = self
                .store
                .recon_changed(entity, (after.0, &after.1), upto, PAGE)?;
            if page.is_empty() {
                break;
            }
            for stored in page {
                let Ok(item) = serde_json::from_str::<Item>(&stored.body) else {
                    warn!(pipeline = %self.name, key = %stored.key, "item unreadable, left out");
                    *after = (stored.seq, stored.key.clone());
                    continue;
                };
                let classes: Vec<&str> = item
                    .classes
                    .iter()
                    .map(String::as_str)
                    .filter(|c| self.classes.is_empty() || self.classes.iter().any(|w| w == c))
                    .filter(|c| self.version.check_class(c, with_i).is_ok())
                    .collect();
                if writer.rows() + classes.len() as u64 > MAX_ROWS {
                    done = false;
                    break 'pages;
                }
                if !classes.is_empty() {
                    self.push_item(&mut writer, &mut cache, &item, &classes, &stored.updated_at)?;
                }
                *after = (stored.seq, stored.key.clone());
            }
        }
        let rows = writer.rows();
        let mut out = writer
            .finish()?
            .finish()
            .map_err(|e| io(&zip_path, e))?
            .into_inner()
            .map_err(|e| io(&zip_path, e.into_error()))?;
        out.flush().map_err(|e| io(&zip_path, e))?;
        Ok((stem, zip_path, rows, done))
    }

    fn push_item<W: Write>(
        &self,
        writer: &mut ReconciliationWriter<W>,
        cache: &mut Sources,
        item: &Item,
        classes: &[&str],
        updated_at: &str,
    ) -> Result<(), ReconExportError> {
        let entity = &self.entity.ipa_code;
        let notification = match item.iud.as_deref() {
            Some(iud) => self
                .store
                .notification(entity, iud)?
                .and_then(|n| serde_json::from_str::<Notification>(&n.body).ok()),
            None => None,
        };
        let receipt: Option<ReceiptDocument> = match item.receipt {
            Some(id) => self.store.receipt_document(id)?,
            None => None,
        };
        let report = match item.iuf.as_deref() {
            Some(iuf) => cache.report(&*self.store, entity, iuf)?,
            None => None,
        };
        let row_index = report.as_ref().and_then(|r| {
            r.payments.iter().position(|p| {
                Some(p.iuv.as_str()) == item.iuv.as_deref()
                    && Some(p.iur.as_str()) == item.iur.as_deref()
                    && item
                        .transfer_index
                        .is_none_or(|i| p.transfer_index.is_none_or(|t| t.get() == i))
            })
        });
        let movement = match item.movement.as_deref() {
            Some(key) => {
                let (year, bill) = key.split_once('-').unwrap_or((key, ""));
                let year: i64 = year.parse().unwrap_or(0);
                self.store.movement(entity, year, bill)?
            }
            None => self
                .store
                .movements_naming(entity, item.iuf.as_deref(), item.iuv.as_deref())?
                .into_iter()
                .next(),
        };
        let movement = movement.as_ref().map(core_movement);
        let updated = DateTime::parse_from_rfc3339(updated_at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|_| Utc::now());
        for class in classes {
            let row = ReconciliationRow {
                notification: notification.as_ref(),
                receipt: receipt.as_ref().map(|doc| {
                    // Another entity's receipt paying this one as a secondary beneficiary, or
                    // the entity's own copy of one (a foreign issuer's).
                    let secondary = doc.receipt.entity != *entity || doc.receipt.issuer.is_some();
                    ExportReceipt {
                        entity_ipa: entity,
                        entity_fiscal_code: self.entity.fiscal_code.as_str(),
                        entity_name: &self.entity.name,
                        iud: doc.iud.as_deref().filter(|_| !secondary),
                        debt_type: doc.debt_type.as_deref().filter(|_| !secondary),
                        iuf: item.iuf.as_deref(),
                        received_at: &doc.receipt.received_at,
                        raw_request: &doc.xml,
                        secondary,
                    }
                }),
                transfer_index: item.transfer_index,
                report: report.as_deref().zip(row_index),
                movement: movement.as_ref(),
                class,
                updated_at: updated,
                acquired: Acquired::default(),
                debt_type_name: None,
            };
            match writer.push(&row) {
                Ok(()) => {}
                Err(e @ MypivotExportError::Io(_)) => return Err(e.into()),
                Err(e) => {
                    warn!(pipeline = %self.name, key = %item.key, class, "row left out of the export: {e}")
                }
            }
        }
        Ok(())
    }
}

/// Flows rebuilt once per file.
#[derive(Default)]
struct Sources {
    reports: HashMap<String, Option<Arc<Report>>>,
}

impl Sources {
    fn report(
        &mut self,
        store: &dyn Store,
        entity: &str,
        iuf: &str,
    ) -> Result<Option<Arc<Report>>, ReconExportError> {
        if let Some(r) = self.reports.get(iuf) {
            return Ok(r.clone());
        }
        let current = store
            .reports_by_iuf(entity, iuf)?
            .into_iter()
            .find(|f| f.status == "ok" && f.superseded_by.is_none());
        let report = match current {
            Some(f) => crate::stored_report::rebuild(store, &f).ok().map(Arc::new),
            None => None,
        };
        self.reports.insert(iuf.to_string(), report.clone());
        Ok(report)
    }
}

/// A stored movement as the formats read it.
fn core_movement(m: &StoredMovement) -> TreasuryMovement {
    let date = |d: &Option<String>| {
        d.as_deref()
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    };
    let reference = match (&m.iuf, &m.iuv) {
        (Some(iuf), _) => snodo_core::settlement::Iuf::parse(iuf)
            .map(CausaleRef::Iuf)
            .unwrap_or(CausaleRef::None),
        (None, Some(iuv)) => CausaleRef::Iuv(iuv.clone()),
        (None, None) => CausaleRef::None,
    };
    TreasuryMovement {
        year: u16::try_from(m.year).unwrap_or(0),
        bill: m.bill.clone(),
        amount: Amount::from_cents(m.amount_cents),
        accounting_date: date(&m.accounting_date),
        value_date: date(&m.value_date),
        causale: m.causale.clone(),
        payer: m.payer.clone(),
        end_to_end_id: m.end_to_end_id.clone(),
        reference,
        operation: MovementOperation::Executed,
    }
}

fn io(path: &std::path::Path, source: std::io::Error) -> ReconExportError {
    ReconExportError::Io {
        path: path.display().to_string(),
        source,
    }
}
