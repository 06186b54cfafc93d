//! One flow imported on demand, through the same importer as a pipeline.

use super::{OpsError, Result};
use crate::codecs::Does;
use crate::import::{Encoding, ImportLimits, ImportOutcome, Importer};
use crate::plan::Plan;
use snodo_connectors::dir::DirSinkConfig;
use snodo_connectors::SinkConfig;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Rows of a flow as far as it got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
}

#[derive(Debug)]
pub enum Imported {
    /// Imported; its outcome files were published to `written`.
    Done {
        counts: Counts,
        status: &'static str,
        written: Vec<PathBuf>,
    },
    /// Refused as a whole with a MyPay file-level code; nothing changed.
    Aborted {
        counts: Counts,
        code: String,
        message: String,
    },
}

/// Imports the flow at `path` for `entity`, read as `decode` (a flow format's codec name) in
/// `encoding`, then publishes its outcome files through a `dir` sink on `out` (default: beside
/// `path`). `progress` hears the rows done after each chunk. With `notices`, the accepted
/// positions' payment notices are published too, as one zip.
#[allow(clippy::too_many_arguments)]
pub fn one_file(
    plan: &Plan,
    entity: &str,
    decode: &str,
    encoding: &str,
    out: Option<PathBuf>,
    notices: bool,
    path: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Imported> {
    let format = match crate::codecs::codec(decode).map(|c| c.does) {
        Some(Does::ImportFlows(format)) => format,
        _ => {
            return Err(OpsError::NoFormat {
                name: decode.to_string(),
                known: crate::codecs::names(|d| matches!(d, Does::ImportFlows(_))).join(", "),
            })
        }
    };
    let encoding =
        Encoding::parse(encoding).ok_or_else(|| OpsError::NoEncoding(encoding.to_string()))?;
    let store = super::open_store(plan)?;
    one_file_in(
        store.as_ref(),
        plan,
        entity,
        format,
        encoding,
        out,
        notices,
        path,
        progress,
    )
}

/// [`one_file`] on a store already open (a running hub's), the format and encoding known.
#[allow(clippy::too_many_arguments)]
pub fn one_file_in(
    store: &dyn snodo_store::Store,
    plan: &Plan,
    entity: &str,
    format: &'static dyn snodo_adapters::flow_format::FlowFormat,
    encoding: Encoding,
    out: Option<PathBuf>,
    notices: bool,
    path: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Imported> {
    let runtime = plan
        .entities
        .get(entity)
        .ok_or_else(|| OpsError::NoEntity(entity.to_string()))?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} has no usable file name", path.display()),
            )
        })?
        .to_string();
    let out_dir = out.unwrap_or_else(|| {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let stop = AtomicBool::new(false);
    let importer = Importer {
        store,
        format,
        encoding,
        entity: runtime,
        staging: crate::engine::staging_dir(plan),
        limits: ImportLimits::from_hub(&plan.config.hub),
        stop: &stop,
        progress,
        notice_threads: if notices {
            crate::engine::notice_threads(&plan.config.hub)
        } else {
            0
        },
    };
    // The importer never follows a link (a pipeline's source could be handed one); an operator
    // naming a link here means the file it points to. The flow keeps the name it was given.
    let target = std::fs::canonicalize(path)?;
    match importer.import(&file_name, &target, false)? {
        ImportOutcome::Done { flow, files, .. } => {
            // Replacing what is there, as a rerun by hand is meant to.
            let sink = DirSinkConfig {
                path: out_dir.clone(),
                overwrite: true,
            };
            let publish = |e| OpsError::Connector {
                context: format!("publishing to {}", out_dir.display()),
                source: e,
            };
            let sink = sink.build().map_err(publish)?;
            let mut written = Vec::new();
            for f in &files {
                sink.put_file(&f.name, &f.path).map_err(publish)?;
                // A one-shot import is never redelivered: its staged copy is not needed again.
                let _ = std::fs::remove_file(&f.path);
                written.push(out_dir.join(&f.name));
            }
            Ok(Imported::Done {
                counts: counts(&flow.progress),
                status: flow.status.as_str(),
                written,
            })
        }
        ImportOutcome::Aborted {
            flow,
            code,
            message,
        } => Ok(Imported::Aborted {
            counts: flow.map(|f| counts(&f.progress)).unwrap_or_default(),
            code,
            message,
        }),
        ImportOutcome::Interrupted => Err(OpsError::Interrupted),
    }
}

fn counts(p: &snodo_store::Checkpoint) -> Counts {
    Counts {
        rows: p.rows_done,
        accepted: p.accepted,
        rejected: p.rejected,
    }
}
