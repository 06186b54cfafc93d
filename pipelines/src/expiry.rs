//! Expiry: a debt type with `expire_after_days` closes its positions that many days after their
//! due date (Europe/Rome). The node refuses them from that day on whatever the store says
//! (`core::payment::payability`); the sweep here makes it visible: status `expired`, history `E`,
//! a `position.expired` event. An expired position can still be modified (it opens again) or
//! annulled, and a receipt for it is still taken: the citizen paid.
//!
//! The expired export (`from = "expired"`, `encode = "mypay-expired"`) writes MyPay's file of
//! expired positions (TRACCIATI.md §4) on its schedule: every position expired since the last
//! file and still expired, through the pipeline's file sink. Its cursor is the last expiry (a
//! history id) published and moves only after the sink took the file: a crash in between
//! writes those positions again, never loses them.

use crate::plan::{EntityRuntime, LivePlan, PipelineKind, Plan};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Europe::Rome;
use snodo_adapters::mypay_expired::{ExpiredError, ExpiredRow, ExpiredWriter, IUF_PREFIX};
use snodo_adapters::mypay_import::ZipEntryWriter;
use snodo_connectors::Sink;
use snodo_core::payment::PositionStatus;
use snodo_store::{Store, StoreError};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// Positions expired per transaction.
const BATCH: u32 = 1_000;
/// How often every entity is swept (and once at start).
const SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);
/// Expired positions per file, as MyPivot's exports.
const MAX_ROWS: u64 = 100_000;
/// Positions read per page.
const PAGE: u32 = 1_000;

/// Expires the entity's positions due long enough ago, debt type by debt type; answers how many.
pub fn sweep_entity(
    store: &dyn Store,
    entity: &EntityRuntime,
    today: NaiveDate,
) -> Result<u64, StoreError> {
    let mut total = 0;
    for (code, payment) in &entity.payments {
        let Some(before) = payment.late.expired_before(today) else {
            continue;
        };
        let mut after = 0;
        loop {
            let round = store.expire_positions(&entity.ipa_code, code, before, after, BATCH)?;
            total += u64::from(round.expired);
            if round.candidates < BATCH {
                break;
            }
            after = round.last;
        }
    }
    if total > 0 {
        info!(entity = %entity.ipa_code, positions = total, "positions expired");
    }
    Ok(total)
}

/// Sweeps every entity of the plan in force now and then, until shutdown. Several hubs on one
/// store may sweep at once: a position expires once (the update is conditional on `active`).
pub async fn run(plan: Arc<LivePlan>, store: Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (plan, store) = (plan.get(), store.clone());
        let swept = tokio::task::spawn_blocking(move || {
            let today = snodo_core::time::today_rome();
            for entity in plan.entities.values() {
                if let Err(e) = sweep_entity(&*store, entity, today) {
                    warn!(entity = %entity.ipa_code, "expiry sweep failed, retried later: {e}");
                }
            }
        })
        .await;
        if let Err(e) = swept {
            warn!("expiry sweep stopped: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExpiredExportError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
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

/// A `from = "expired"` pipeline.
pub struct ExpiredExporter {
    name: String,
    entity: Arc<EntityRuntime>,
    /// Only these debt types (empty: all).
    debt_types: Vec<String>,
    schedule: Box<cron::Schedule>,
    sink: Box<dyn Sink>,
    skip_empty: bool,
    store: Arc<dyn Store>,
    staging: PathBuf,
    instance: String,
}

/// What one run wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    pub files: Vec<String>,
    pub rows: u64,
}

impl ExpiredExporter {
    pub fn new(
        plan: Arc<Plan>,
        index: usize,
        store: Arc<dyn Store>,
        instance: String,
    ) -> Result<Self, String> {
        let p = &plan.pipelines[index];
        let PipelineKind::Expired {
            debt_types,
            schedule,
            sink,
            skip_empty,
        } = &p.kind
        else {
            return Err("not an expired export pipeline".into());
        };
        Ok(Self {
            name: p.name.clone(),
            entity: plan.entity_of(p)?,
            debt_types: debt_types.clone(),
            schedule: schedule.clone(),
            sink: sink.build().map_err(|e| e.to_string())?,
            skip_empty: *skip_empty,
            store,
            staging: plan.config.hub.data_dir.join("exports").join(&p.name),
            instance,
        })
    }

    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        info!(pipeline = %self.name, entity = %self.entity.ipa_code, "expired exports started");
        let (name, schedule) = (self.name.clone(), self.schedule.clone());
        crate::ticks::every_tick(name, "expired export", schedule, shutdown, move |tick| {
            self.export(tick).map(drop).map_err(|e| e.to_string())
        })
        .await
    }

    /// Sweeps the entity, then writes and publishes the file(s) of what expired since the last
    /// one; with `tick`, only the first hub to claim that tick writes.
    pub fn export(&self, tick: Option<String>) -> Result<Written, ExpiredExportError> {
        sweep_entity(&*self.store, &self.entity, snodo_core::time::today_rome())?;
        let lease = crate::export::JobLease {
            store: &*self.store,
            pipeline: &self.name,
            instance: &self.instance,
        };
        let job = format!("export:{}", self.name);
        lease.run(tick.as_deref(), || self.export_leased(&job, Utc::now()))
    }

    fn export_leased(&self, job: &str, now: DateTime<Utc>) -> Result<Written, ExpiredExportError> {
        let mut cursor = self.store.job_cursor(job)?;
        let mut written = Written::default();
        loop {
            let (stem, path, rows, reached, done) = self.write_file(cursor, now)?;
            if rows == 0 && (self.skip_empty || !written.files.is_empty()) {
                let _ = std::fs::remove_file(&path);
                // Nothing to write, but expiries of other debt types or since reopened were
                // read: the next file starts after them.
                if reached > cursor {
                    self.store.set_job_cursor(job, &self.instance, reached)?;
                }
                break;
            }
            let name = format!("{stem}.zip");
            self.sink
                .put_file(&name, &path)
                .map_err(|source| ExpiredExportError::Publish {
                    name: name.clone(),
                    source,
                })?;
            let _ = std::fs::remove_file(&path);
            info!(pipeline = %self.name, file = %name, rows, "expired positions exported");
            written.files.push(name);
            written.rows += rows;
            if reached > cursor {
                self.store.set_job_cursor(job, &self.instance, reached)?;
                cursor = reached;
            }
            if done {
                break;
            }
        }
        Ok(written)
    }

    /// One file of the positions expired after `after`, at most [`MAX_ROWS`]. Returns its stem,
    /// path, rows, the last expiry read and whether every expiry up to now is in.
    fn write_file(
        &self,
        after: i64,
        now: DateTime<Utc>,
    ) -> Result<(String, PathBuf, u64, i64, bool), ExpiredExportError> {
        let entity = &self.entity.ipa_code;
        let at = now.with_timezone(&Rome).naive_local();
        // MyPay names these `EXP_SCADUTI_<token>`; the token here is the entity, the instant
        // (Europe/Rome) and the first expiry it may hold.
        let stem = format!(
            "{IUF_PREFIX}{entity}_{}_{}",
            at.format("%Y%m%d%H%M%S"),
            after + 1
        );
        std::fs::create_dir_all(&self.staging).map_err(|e| io(&self.staging, e))?;
        let zip_path = self.staging.join(format!("{stem}.zip"));
        let file = std::fs::File::create(&zip_path).map_err(|e| io(&zip_path, e))?;
        let entry = ZipEntryWriter::new(BufWriter::new(file), &format!("{stem}.csv"), at)
            .map_err(|e| io(&zip_path, e))?;
        let mut writer = ExpiredWriter::new(entry).map_err(|e| io(&zip_path, e))?;
        let mut reached = after;
        let mut done = true;
        'pages: loop {
            let page = self.store.expired_since(entity, reached, PAGE)?;
            if page.is_empty() {
                break;
            }
            for (expiry, position) in page {
                if writer.rows() >= MAX_ROWS {
                    done = false;
                    break 'pages;
                }
                reached = expiry;
                let d = &position.dovuto;
                // Reopened, paid or annulled since: no longer expired.
                if position.status != PositionStatus::Expired
                    || !(self.debt_types.is_empty() || self.debt_types.contains(&d.debt_type))
                {
                    continue;
                }
                let created = DateTime::parse_from_rfc3339(&position.created_at)
                    .map(|t| snodo_core::time::rome_date(t.with_timezone(&Utc)))
                    .unwrap_or_else(|_| at.date());
                let row = ExpiredRow {
                    dovuto: d,
                    iuv: position.iuv.as_deref().unwrap_or_default(),
                    created,
                };
                match writer.push(&row) {
                    Ok(()) => {}
                    // Kept out of the file, said in the log: MyPay would have failed the
                    // whole export on it.
                    Err(ExpiredError::Missing { iud, what }) => {
                        warn!(pipeline = %self.name, iud = %iud, "expired position left out: {what} is missing")
                    }
                    Err(ExpiredError::Io(e)) => return Err(io(&zip_path, e)),
                }
            }
        }
        let rows = writer.rows();
        let mut out = writer
            .finish()
            .and_then(|entry| entry.finish())
            .map_err(|e| io(&zip_path, e))?
            .into_inner()
            .map_err(|e| io(&zip_path, e.into_error()))?;
        out.flush().map_err(|e| io(&zip_path, e))?;
        out.sync_all().map_err(|e| io(&zip_path, e))?;
        Ok((stem, zip_path, rows, reached, done))
    }
}

fn io(path: &std::path::Path, source: std::io::Error) -> ExpiredExportError {
    ExpiredExportError::Io {
        path: path.display().to_string(),
        source,
    }
}
