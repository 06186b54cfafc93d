//! A batch receipts pipeline's export, on demand.

use super::{open_store, OpsError, Result};
use crate::export::Exporter;
use crate::plan::{PipelineKind, Plan, ReceiptRoute};
use std::sync::Arc;

/// Writes `pipeline`'s next file now, as its schedule would: first the file an interrupted run
/// left unfinished (same receipts, same name), then one of every receipt not yet exported.
/// Returns the names of the files published.
pub fn run_now(plan: Plan, pipeline: &str) -> Result<Vec<String>> {
    run_shared(Arc::new(plan), pipeline)
}

/// [`run_now`] with a plan shared with others.
pub fn run_shared(plan: Arc<Plan>, pipeline: &str) -> Result<Vec<String>> {
    let Some(index) = plan.pipelines.iter().position(|p| p.name == pipeline) else {
        let batch: Vec<&str> = plan
            .pipelines
            .iter()
            .filter(|p| {
                matches!(
                    p.kind,
                    PipelineKind::Receipts {
                        route: ReceiptRoute::Batch { .. },
                        ..
                    }
                )
            })
            .map(|p| p.name.as_str())
            .collect();
        return Err(OpsError::NoPipeline {
            name: pipeline.to_string(),
            batch: if batch.is_empty() {
                "none".to_string()
            } else {
                batch.join(", ")
            },
        });
    };
    let store = open_store(&plan)?;
    let instance = crate::engine::instance_name(&plan.config.hub);
    let exporter =
        Exporter::new(plan, index, store, instance).map_err(|message| OpsError::Pipeline {
            pipeline: pipeline.to_string(),
            message,
        })?;
    let mut written = Vec::new();
    for only_resume in [true, false] {
        if let Some(name) = exporter.export(only_resume, None)? {
            written.push(name);
        }
    }
    Ok(written)
}
