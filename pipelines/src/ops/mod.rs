//! What an operator can ask of a hub, one function per operation: the `snodo` commands and the
//! `/admin` routes call these, so each answer is computed in one place.

pub mod dlq;
pub mod events;
pub mod export;
pub mod flows;
pub mod hub;
pub mod import;
pub mod notice;
pub mod onboard;
pub mod positions;
pub mod receipts;
pub mod reconcile;
pub mod reports;
pub mod status;
pub mod topic;
pub mod treasury;

use crate::plan::Plan;
use snodo_store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// Why an operation could not be done. Its `Display` is what the operator reads.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("opening the store")]
    Open(#[source] StoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("entity {0:?} is not configured")]
    NoEntity(String),
    #[error("{name:?} is not a flow format (known: {known})")]
    NoFormat { name: String, known: String },
    #[error("{0:?} is not an encoding (known: utf-8, windows-1252, iso-8859-1, iso-8859-15)")]
    NoEncoding(String),
    #[error("no delivery {0}")]
    NoDelivery(i64),
    #[error("no flow {0}")]
    NoFlow(i64),
    #[error("no receipt {0}")]
    NoReceipt(i64),
    #[error("receipt {receipt} is not held: {why}")]
    NotHeld { receipt: i64, why: String },
    #[error("no pipeline {name:?} (batch pipelines: {batch})")]
    NoPipeline { name: String, batch: String },
    #[error("pipeline {pipeline}: {message}")]
    Pipeline { pipeline: String, message: String },
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    #[error("import interrupted")]
    Interrupted,
    #[error("{context}")]
    Connector {
        context: String,
        #[source]
        source: snodo_connectors::ConnectorError,
    },
    #[error(transparent)]
    Kafka(#[from] snodo_connectors::ConnectorError),
    #[error("tail: {0}")]
    Tail(String),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Notice(#[from] crate::notices::Refused),
}

pub type Result<T> = std::result::Result<T, OpsError>;

/// A hub's data as operators see it: the CLI opens it from a plan, the `/admin` routes hand it
/// the running hub's store.
#[derive(Clone)]
pub struct Admin {
    store: Arc<dyn Store>,
}

impl Admin {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub fn open(plan: &Plan) -> Result<Self> {
        Ok(Self::new(open_store(plan)?))
    }

    fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }
}

/// The store a plan names.
pub fn open_store(plan: &Plan) -> Result<Arc<dyn Store>> {
    let store = snodo_store::open(&plan.config.hub.store, &plan.config.hub.data_dir)
        .map_err(OpsError::Open)?;
    Ok(Arc::from(store))
}

/// The store, for an operation on one configured entity's data.
fn entity_store(plan: &Plan, entity: &str) -> Result<Arc<dyn Store>> {
    if !plan.entities.contains_key(entity) {
        return Err(OpsError::NoEntity(entity.to_string()));
    }
    open_store(plan)
}

/// `500ms`, `30s`, `5m`, `1h`, as in the configuration (the one parser the config uses).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    snodo_connectors::duration::parse_duration(s)
}
