//! An entity's import flows.

use super::{entity_store, Admin, OpsError, Result};
use crate::config::Endpoint;
use crate::plan::Plan;
use snodo_store::Flow;
use std::io::Read;
use std::path::PathBuf;

/// The flows with `iuf`, or else the `limit` most recent ones; newest first.
pub fn list(plan: &Plan, entity: &str, iuf: Option<&str>, limit: u32) -> Result<Vec<Flow>> {
    let store = entity_store(plan, entity)?;
    Ok(match iuf {
        Some(iuf) => store.flows_by_iuf(entity, iuf)?,
        None => store.recent_flows(entity, limit)?,
    })
}

/// An entity's latest flows, newest first, on an open store (the console's).
pub fn recent(admin: &Admin, entity: &str, limit: u32) -> Result<Vec<Flow>> {
    Ok(admin.store().recent_flows(entity, limit)?)
}

/// One flow by its id.
pub fn one(admin: &Admin, id: i64) -> Result<Flow> {
    admin.store().flow(id)?.ok_or(OpsError::NoFlow(id))
}

/// An outcome file of a flow the hub can still read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutcomeFile {
    pub name: String,
    pub bytes: u64,
    #[serde(skip)]
    pub path: PathBuf,
}

/// The flow's outcome files: those staged under `<data_dir>/flows/<id>/` (a pipeline keeps
/// them there after publishing), else those its entity's `dir` outcome sinks hold.
pub fn outcome_files(plan: &Plan, flow: &Flow) -> Vec<OutcomeFile> {
    let stem = flow
        .file_name
        .rsplit_once('.')
        .map_or(flow.file_name.as_str(), |(s, _)| s);
    let prefix = format!("{stem}_");
    let mut dirs = vec![crate::engine::staging_dir(plan).join(flow.id.to_string())];
    dirs.extend(plan.config.pipelines.iter().filter_map(|p| {
        match (&p.outcomes, p.entity == flow.entity) {
            (Some(Endpoint::Connector { kind, params }), true) if kind == "dir" => params
                .get("path")
                .and_then(|v| v.as_str())
                .map(PathBuf::from),
            _ => None,
        }
    }));
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<OutcomeFile> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let meta = e.metadata().ok()?;
                (meta.is_file() && name.starts_with(&prefix) && name.ends_with(".zip")).then(|| {
                    OutcomeFile {
                        name,
                        bytes: meta.len(),
                        path: e.path(),
                    }
                })
            })
            .collect();
        if !files.is_empty() {
            files.sort_by(|a, b| a.name.cmp(&b.name));
            return files;
        }
    }
    Vec::new()
}

/// Rejected rows as the flow's rejected-rows file tells them: its header and up to `limit`
/// lines, each split on `;` (the last two columns are MyPay's code and message).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Rejected {
    pub file: Option<String>,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// More lines than `limit` in the file.
    pub truncated: bool,
}

/// Reads the `_SCARTI` file among `files` (at most 16 MiB of it).
pub fn rejected_rows(files: &[OutcomeFile], limit: usize) -> Result<Rejected> {
    let Some(f) = files.iter().find(|f| f.name.contains("_SCARTI")) else {
        return Ok(Rejected::default());
    };
    let file = std::fs::File::open(&f.path)?;
    let mut zip = zip::ZipArchive::new(file).map_err(std::io::Error::other)?;
    let mut text = Vec::new();
    if zip.is_empty() {
        return Ok(Rejected::default());
    }
    zip.by_index(0)
        .map_err(std::io::Error::other)?
        .take(16 << 20)
        .read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let split = |l: &str| l.split(';').map(str::to_string).collect::<Vec<_>>();
    let header = lines.next().map(split).unwrap_or_default();
    let mut rows = Vec::new();
    let mut truncated = false;
    for l in lines {
        if rows.len() == limit {
            truncated = true;
            break;
        }
        rows.push(split(l));
    }
    Ok(Rejected {
        file: Some(f.name.clone()),
        header,
        rows,
        truncated,
    })
}
