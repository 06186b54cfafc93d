//! Settlement flows (FdR): pull now, list an entity's flows, show one with its rows.

use super::{entity_store, open_store, Admin, OpsError, Result};
use crate::plan::Plan;
use crate::reports::{PullError, PullSummary, Puller};
use serde::Serialize;
use snodo_store::{ReportFlow, StoredAnomaly, StoredReportRow};
use std::sync::Arc;

/// One flow as `snodo reports` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportLine {
    pub iuf: String,
    pub psp: String,
    pub revision: i64,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub flow_date: Option<String>,
    pub regulation: Option<String>,
    pub regulation_date: Option<String>,
    pub declared: Totals,
    pub computed: Totals,
    pub payments: i64,
    pub linked: i64,
    pub anomalies: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<i64>,
    pub source: String,
    pub received_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub count: Option<i64>,
    pub amount_cents: Option<i64>,
}

impl From<&ReportFlow> for ReportLine {
    fn from(f: &ReportFlow) -> Self {
        Self {
            iuf: f.iuf.clone(),
            psp: f.psp_id.clone(),
            revision: f.revision,
            status: f.status.clone(),
            reason: f.reason.clone(),
            flow_date: f.flow_date.clone(),
            regulation: f.regulation_id.clone(),
            regulation_date: f.regulation_date.clone(),
            declared: Totals {
                count: f.declared_count,
                amount_cents: f.declared_cents,
            },
            computed: Totals {
                count: Some(f.computed_count),
                amount_cents: Some(f.computed_cents),
            },
            payments: f.rows_done,
            linked: f.linked,
            anomalies: f.anomalies,
            superseded_by: f.superseded_by,
            source: f.source.clone(),
            received_at: f.received_at.clone(),
        }
    }
}

/// One flow with its rows and anomalies (`snodo reports show`).
#[derive(Debug, Clone, Serialize)]
pub struct ReportDetail {
    #[serde(flatten)]
    pub flow: ReportLine,
    pub rows: Vec<StoredReportRow>,
    pub anomaly_list: Vec<StoredAnomaly>,
}

/// An entity's flows, newest first; only those with anomalies (or failed) when asked.
pub fn list(plan: &Plan, entity: &str, anomalies: bool, limit: u32) -> Result<Vec<ReportLine>> {
    lines(
        &Admin::new(entity_store(plan, entity)?),
        entity,
        anomalies,
        limit,
    )
}

/// [`list`] on an open store (the console's).
pub fn lines(admin: &Admin, entity: &str, anomalies: bool, limit: u32) -> Result<Vec<ReportLine>> {
    Ok(admin
        .store()
        .reports(entity, anomalies, limit)?
        .iter()
        .map(ReportLine::from)
        .collect())
}

/// Every flow of the entity with this IUF (PSPs, revisions), newest first, with its rows.
pub fn show(plan: &Plan, entity: &str, iuf: &str) -> Result<Vec<ReportDetail>> {
    detail(
        &Admin::new(entity_store(plan, entity)?),
        entity,
        iuf,
        usize::MAX,
    )
}

/// [`show`] on an open store, with at most `max_rows` rows of each flow (the console's).
pub fn detail(
    admin: &Admin,
    entity: &str,
    iuf: &str,
    max_rows: usize,
) -> Result<Vec<ReportDetail>> {
    let store = admin.store();
    let mut out = Vec::new();
    for f in store.reports_by_iuf(entity, iuf)? {
        let mut rows = Vec::new();
        while rows.len() < max_rows {
            let after = rows.last().map_or(0, |r: &StoredReportRow| r.row_no as u64);
            let page = store.report_rows(f.id, after, 10_000)?;
            if page.is_empty() {
                break;
            }
            rows.extend(page);
        }
        out.push(ReportDetail {
            flow: ReportLine::from(&f),
            anomaly_list: store.report_anomalies(f.id)?,
            rows,
        });
    }
    if out.is_empty() {
        return Err(OpsError::Pipeline {
            pipeline: "reports".into(),
            message: format!("entity {entity} holds no settlement flow {iuf}"),
        });
    }
    Ok(out)
}

/// Pulls now, as the schedule would (under the same lease), every entity or one.
pub fn pull(plan: Plan, entity: Option<&str>) -> Result<Vec<PullSummary>> {
    if let Some(e) = entity {
        if !plan.entities.contains_key(e) {
            return Err(OpsError::NoEntity(e.to_string()));
        }
    }
    let store = open_store(&plan)?;
    let instance = crate::engine::instance_name(&plan.config.hub);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let puller = Puller::new(Arc::new(plan), store, instance, runtime.handle().clone())
        .map_err(pull_error)?;
    puller.pull(entity, None).map_err(pull_error)
}

fn pull_error(e: PullError) -> OpsError {
    match e {
        PullError::Store(s) => OpsError::Store(s),
        PullError::NoEntity(e) => OpsError::NoEntity(e),
        other => OpsError::Pipeline {
            pipeline: "reports".into(),
            message: other.to_string(),
        },
    }
}
