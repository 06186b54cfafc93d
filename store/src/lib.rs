//! Persistence for the hub: debt positions with their history, import flows with their
//! checkpoints, and the IUV counters.
//!
//! Callers see one [`Store`] trait, the union of one trait per concern, with blocking methods
//! called from blocking threads: SQLite (embedded, one hub) or PostgreSQL (several hubs sharing one
//! database). Every method that changes state commits before it returns, so "returned Ok" means
//! "durable", and writes the events of its change in the same transaction. The SQL is written once
//! per concern (`flows.rs`, `positions.rs`, ...) over a small driver seam (`db.rs`); `sqlite.rs`
//! and `postgres.rs` hold what differs: connections, pooling, group commit, batching.

mod api;
mod db;
pub mod deadline;
mod deliveries;
mod events;
mod exports;
mod flows;
mod jobs;
mod ops;
mod pgtls;
mod positions;
mod postgres;
mod receipts;
mod reconcile;
mod reports;
mod sqlite;
mod treasury;

pub use crate::postgres::PgStore;
pub use api::{
    outside_payment_token, ApiStore, CartStore, NewWsRequest, OutsidePaid, OutsidePayment,
    WsRequest, WsRequestStore,
};
pub use deliveries::OutboxStore;
pub use events::{EventStore, StatusStore};
pub use exports::ExportStore;
pub use flows::FlowStore;
pub use jobs::JobStore;
pub use positions::{PositionStore, Swept};
pub use receipts::ReceiptStore;
pub use reconcile::{
    DirtyMark, FactMovement, FactRow, IuvSelect, LabelCounts, MovementSelect, NewItem,
    NewNotification, ReconSummary, ReconTx, ReconcileStore, StoredItem, StoredNotification, Touch,
};
pub use reports::{
    correlation as report_correlation, LinkReceipt, LookupKey, NewAnomaly, NewReport, OtherReceipt,
    ReportFlow, ReportRow, ReportStore, ReportTotals, RowFacts, Settlement, StoredAnomaly,
    StoredReportRow,
};
pub use sqlite::SqliteStore;
pub use treasury::{MovementCounts, NewMovement, StoredMovement, TreasuryStore};

use serde::Serialize;
pub use snodo_core::dovuto::Action;
use snodo_core::dovuto::{Dovuto, DovutoRow, Rejection};
pub use snodo_core::payment::PositionStatus;
use snodo_core::{Iuv, NoticeNumber, SegregationCode};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("PostgreSQL error: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
    #[error("cannot open the store: {0}")]
    Open(String),
    /// The database did not answer within a limit (pool wait, connect, statement, or the
    /// caller's [`deadline`]).
    #[error("the database did not answer in time: {0}")]
    Timeout(String),
    #[error("{0}")]
    Callback(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Lifecycle of an import flow, with MyPay's state names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FlowStatus {
    #[serde(rename = "LOAD_IMPORT")]
    LoadImport,
    #[serde(rename = "IMPORT_IN_ELAB")]
    InElab,
    #[serde(rename = "IMPORT_ESEGUITO")]
    Eseguito,
    #[serde(rename = "IMPORT_ABORTITO")]
    Abortito,
}

impl FlowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoadImport => "LOAD_IMPORT",
            Self::InElab => "IMPORT_IN_ELAB",
            Self::Eseguito => "IMPORT_ESEGUITO",
            Self::Abortito => "IMPORT_ABORTITO",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::LoadImport,
            Self::InElab,
            Self::Eseguito,
            Self::Abortito,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }
}

/// An import flow and how far it got.
#[derive(Debug, Clone, Serialize)]
pub struct Flow {
    pub id: i64,
    pub entity: String,
    pub iuf: String,
    pub file_name: String,
    pub version: String,
    pub content_sha256: String,
    pub status: FlowStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub progress: Checkpoint,
    pub created_at: String,
    pub updated_at: String,
}

/// How far an import got, committed together with the rows it covers: data rows consumed, rows
/// accepted and rejected, and the byte lengths of the staged outcome files at that point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    pub rows_done: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub scarti_bytes: u64,
    pub iuv_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct NewFlow<'a> {
    pub entity: &'a str,
    pub iuf: &'a str,
    pub file_name: &'a str,
    pub version: &'a str,
    pub content_sha256: &'a str,
}

/// The entity a batch of rows belongs to, with what IUV generation needs.
#[derive(Debug, Clone)]
pub struct EntityKey<'a> {
    pub ipa_code: &'a str,
    pub segregation_code: SegregationCode,
    /// How long after the node's last activation a position is being paid: an `M` or `A`
    /// row is refused meanwhile.
    pub payment_in_progress: std::time::Duration,
}

/// A valid row ready for the store: the columns it needs and the position's data already
/// serialised (callers do that on their own thread, off the writer's path; the rest of the
/// `Dovuto` is dropped there, so a chunk in flight stays small).
#[derive(Debug, Clone)]
pub struct ChunkRow {
    pub action: Action,
    pub iud: String,
    /// The IUV the row supplies; the store generates one when `generate_iuv` and this is `None`.
    pub iuv: Option<snodo_core::Iuv>,
    pub generate_iuv: bool,
    pub debt_type: String,
    pub amount: snodo_core::Amount,
    pub due_date: Option<chrono::NaiveDate>,
    pub payer_id: String,
    /// The position's data as stored. The IUV column, not the `iuv` inside, says which IUV the
    /// position has (the store may generate it).
    pub data: String,
}

impl ChunkRow {
    pub fn new(row: DovutoRow) -> Result<Self> {
        let data =
            serde_json::to_string(&row.dovuto).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let d = row.dovuto;
        Ok(Self {
            action: row.action,
            iud: d.iud,
            iuv: d.iuv,
            generate_iuv: d.generate_iuv,
            debt_type: d.debt_type,
            amount: d.amount,
            due_date: d.due_date,
            payer_id: d.payer.id,
            data,
        })
    }
}

/// What happened to one valid row when applied to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    Accepted {
        position_id: i64,
        iuv: Option<Iuv>,
        notice_number: Option<NoticeNumber>,
        /// The hub generated the IUV for this row.
        generated: bool,
    },
    Rejected(Rejection),
}

/// A stored position as operators and APIs see it.
#[derive(Debug, Clone, Serialize)]
pub struct Position {
    pub id: i64,
    pub entity: String,
    pub iud: String,
    pub iuv: Option<String>,
    pub notice_number: Option<String>,
    pub iuv_generated: bool,
    pub status: PositionStatus,
    pub amount_cents: i64,
    pub version: i64,
    pub flow_id: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
    /// Entries in its history: its creation plus every change since.
    pub history_count: i64,
    /// Last time the node activated a payment of it (paGetPayment), and how many times.
    pub activated_at: Option<String>,
    pub activations: i64,
    pub dovuto: Dovuto,
    /// The settlement flow (FdR) of the receipt that paid it, when known; filled by callers
    /// that ask for it ([`ReportStore::settlements`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Settlement>,
}

/// Filters of an entity's position list (API `GET .../positions`).
#[derive(Debug, Clone, Default)]
pub struct PositionFilter<'a> {
    pub status: Option<PositionStatus>,
    pub debt_type: Option<&'a str>,
    /// Inclusive; positions without a due date are left out when set.
    pub due_from: Option<chrono::NaiveDate>,
    /// Inclusive; positions without a due date are left out when set.
    pub due_to: Option<chrono::NaiveDate>,
    pub iuv: Option<&'a str>,
    /// An aux 3 notice number ("3" + IUV), matched through the IUV column (the only notices
    /// positions show); any other notice matches nothing.
    pub notice_number: Option<&'a str>,
    /// Positions the flow with this id created or last changed.
    pub flow_id: Option<i64>,
    /// The payer's fiscal code (or other unique id), as given.
    pub payer_id: Option<&'a str>,
    /// Created at or after this instant (RFC 3339, UTC, as stored).
    pub created_from: Option<&'a str>,
    /// Created before this instant (RFC 3339, UTC, as stored).
    pub created_before: Option<&'a str>,
}

/// One change of a position.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub action: String,
    pub source: String,
    pub flow_id: Option<i64>,
    pub at: String,
    /// The position's data before this change, when the change replaced it.
    pub previous: Option<serde_json::Value>,
}

/// How to find positions of one entity.
#[derive(Debug, Clone)]
pub enum PositionQuery<'a> {
    All {
        limit: u32,
    },
    Iud(&'a str),
    Iuv(&'a str),
    NoticeNumber(&'a str),
    /// The debtor's fiscal code or VAT number (`codiceIdentificativoUnivoco`).
    Payer(&'a str),
}

/// A receipt (ricevuta) as the node sent it, with the fields the registry matches on.
#[derive(Debug, Clone)]
pub struct NewReceipt<'a> {
    pub entity: &'a str,
    pub notice_number: &'a NoticeNumber,
    pub receipt_id: &'a str,
    pub amount_cents: i64,
    pub psp_id: &'a str,
    pub psp_name: &'a str,
    pub payment_date: Option<&'a str>,
    /// `paSendRT` or `paSendRTV2`.
    pub operation: &'a str,
    /// The receipt payload exactly as received: the evidence every entity system gets back.
    pub xml: &'a str,
    /// The receipt pipelines that may deliver it: those whose filter the receipt's position
    /// passes get a delivery, created with it.
    pub deliver_to: &'a [DeliverTo],
    /// Ties the receipt's events to the rest of its story (e.g. the node's request).
    pub correlation: Option<&'a str>,
}

/// A receipts pipeline as the store sees it when a receipt arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverTo {
    pub pipeline: String,
    /// The entity the delivery is for: the receipt's own, or a secondary beneficiary's.
    pub entity: String,
    /// Only positions of these debt types (empty: every receipt, unknown notices included).
    pub debt_types: Vec<String>,
    /// The entity is a secondary beneficiary of the receipt (a transfer is paid to it).
    pub secondary: bool,
    /// The pipeline's format has no field for what is wrong with a flagged receipt (MyPay's):
    /// a flagged receipt's delivery is held until an operator releases or dismisses it.
    pub holds_flagged: bool,
}

impl DeliverTo {
    /// Every receipt of the entity, unfiltered.
    pub fn all(pipeline: &str, entity: &str) -> Self {
        Self {
            pipeline: pipeline.into(),
            entity: entity.into(),
            debt_types: Vec::new(),
            secondary: false,
            holds_flagged: false,
        }
    }

    fn accepts(&self, debt_type: Option<&str>) -> bool {
        self.debt_types.is_empty()
            || debt_type.is_some_and(|d| self.debt_types.iter().any(|t| t == d))
    }
}

/// A file of receipts being written by a batch pipeline (MyPay's export). Its receipts are fixed
/// when it opens, so a crash while writing redoes the same file and the next file starts after it.
#[derive(Debug, Clone, Serialize)]
pub struct Export {
    pub id: i64,
    pub pipeline: String,
    pub entity: String,
    /// How many deliveries (receipts) it holds.
    pub receipts: i64,
    /// When it opened (RFC 3339, UTC): its file name derives from it, so a redo has the same name.
    pub created_at: String,
    /// Opened by an earlier run that did not finish it.
    pub resumed: bool,
}

/// One receipt of an export.
#[derive(Debug, Clone)]
pub struct ExportItem {
    pub delivery: i64,
    pub receipt: i64,
    pub secondary: bool,
}

/// Why a stored receipt needs an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "issue", rename_all = "snake_case")]
pub enum ReceiptIssue {
    UnknownNotice,
    AmountMismatch {
        expected_cents: i64,
    },
    /// The position was paid before, by another receipt: a double payment.
    AlreadyPaid,
    Annulled,
}

impl ReceiptIssue {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UnknownNotice => "unknown_notice",
            Self::AmountMismatch { .. } => "amount_mismatch",
            Self::AlreadyPaid => "already_paid",
            Self::Annulled => "annulled",
        }
    }
}

/// What storing a receipt did. In every case but `Duplicate` the receipt is now durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptStored {
    /// Stored, and its position is now paid.
    Paid { receipt: i64, position: i64 },
    /// Stored, not applied to any position: operators must look at it.
    Flagged { receipt: i64, issue: ReceiptIssue },
    /// This receipt id was stored before with the same content; nothing changed.
    Duplicate,
    /// This receipt id was stored before with other content: kept as a flagged copy of the
    /// first (which stays the receipt), delivered nowhere, raised as `receipt.conflict`.
    Conflict { receipt: i64, original: i64 },
    /// Stored as a secondary beneficiary's receipt of another entity's notice: no position
    /// matched or paid, delivered to the deliveries it was given (`receipt.secondary`).
    Secondary { receipt: i64 },
}

/// The `issue` of a conflicting copy of a receipt (see [`ReceiptStored::Conflict`]).
pub const CONFLICT_ISSUE: &str = "conflict";

/// An operator's decision on a held receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Review {
    /// Deliver it after all: each held delivery becomes a delivery, due now.
    Released,
    /// Never deliver it to the formats that held it.
    Dismissed,
}

impl Review {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::Dismissed => "dismissed",
        }
    }
}

/// What a review did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Reviewed {
    /// Done: `pipelines` now get a delivery (released) or never will (dismissed).
    Done {
        receipt: i64,
        receipt_id: String,
        review: Review,
        pipelines: Vec<String>,
    },
    NoReceipt,
    /// Nothing held to release, or already reviewed (`review` says how).
    NotHeld {
        issue: Option<String>,
        review: Option<String>,
    },
}

/// A stored receipt as operators see it (the receipt XML itself is left out).
#[derive(Debug, Clone, Serialize)]
pub struct StoredReceipt {
    pub id: i64,
    pub entity: String,
    pub receipt_id: String,
    pub notice_number: String,
    pub position_id: Option<i64>,
    pub amount_cents: i64,
    pub psp_id: String,
    pub psp_name: String,
    pub payment_date: Option<String>,
    pub operation: String,
    /// Why operators must look at it; `None` when it paid its position normally.
    pub issue: Option<String>,
    pub received_at: String,
    /// A conflicting copy: the id of the receipt first stored with this receipt id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict_of: Option<i64>,
    /// An operator's decision on it: `released` or `dismissed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
    /// A secondary beneficiary's receipt: the fiscal code of the entity that issued the notice
    /// (`None`: the entity's own receipt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The pipelines whose deliveries of it wait for an operator (filled by listings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Failed for good or out of retries: a dead letter, until replayed.
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Dead]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// One receipt on its way to one entity system.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub pipeline: String,
    pub entity: String,
    /// The stored receipt's id (see [`ReceiptStore::receipt_document`]), for a receipts
    /// pipeline's delivery.
    pub receipt: Option<i64>,
    /// The stored settlement flow's id (see [`ReportStore::report`]), for a reports pipeline's.
    pub report: Option<i64>,
    /// The receipt id, or the flow's `pspId/iuf/revision`: receivers dedupe on it.
    pub idempotency_key: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub delivered_at: Option<String>,
    /// The lease of the claim that holds it: its outcome is recorded only under that lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
}

impl Delivery {
    /// The claim this delivery was handed out under, which its outcome is recorded with.
    pub fn claim(&self) -> Claim {
        Claim {
            delivery: self.id,
            // Never claimed: an empty lease matches none, so nothing is recorded.
            lease_until: self.lease_until.clone().unwrap_or_default(),
        }
    }
}

/// A delivery as claimed: its id and the lease its claim set. A later claim (after this lease
/// ran out) sets a later lease, so the lease tells this claim from any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub delivery: i64,
    pub lease_until: String,
}

/// What a delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Try again at `at` (RFC 3339, UTC).
    Retry {
        at: String,
        error: String,
    },
    /// Give up: the delivery becomes a dead letter.
    Dead {
        error: String,
    },
}

/// A stored receipt with what a format needs about its position.
#[derive(Debug, Clone)]
pub struct ReceiptDocument {
    pub receipt: StoredReceipt,
    /// The request as the node sent it.
    pub xml: String,
    pub iud: Option<String>,
    pub debt_type: Option<String>,
    /// The request as the hub decoded it when it arrived; `None` for receipts stored before
    /// the hub kept it (parse `xml` then).
    pub parsed: Option<String>,
    /// The IUF of the import flow that loaded (or last changed) the paid position, when one did:
    /// the `iuf` column of MyPay's export.
    pub flow_iuf: Option<String>,
}

/// A response kept for an `Idempotency-Key`, so a retried request gets the first answer again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedResponse {
    /// Tells a retry (same body) from a reuse of the key for another request.
    pub request_sha256: String,
    pub status: u16,
    pub body: String,
}

/// A Checkout cart opened for an entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cart {
    pub id: String,
    pub entity: String,
    pub notice_numbers: Vec<String>,
    /// Where Checkout sends the payer.
    pub redirect_url: String,
    /// The return URLs as the caller gave them (JSON text).
    pub return_urls: String,
    pub created_at: String,
}

/// A cart to record.
#[derive(Debug, Clone)]
pub struct NewCart<'a> {
    pub id: &'a str,
    pub entity: &'a str,
    pub notice_numbers: &'a [String],
    pub redirect_url: &'a str,
    pub return_urls: &'a str,
}

/// Counts for `/metrics`, read from the store at scrape time (so every hub sharing a store
/// reports the same totals).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreMetrics {
    /// (entity, receipts stored, of which flagged)
    pub receipts: Vec<(String, i64, i64)>,
    /// (entity, receipts stored as a secondary beneficiary of another entity's notice; counted
    /// in `receipts` too)
    pub secondary: Vec<(String, i64)>,
    /// (pipeline, status, deliveries); status is pending, in_flight (leased), delivered or dead
    pub deliveries: Vec<(String, String, i64)>,
    /// (pipeline, deliveries that needed more than one attempt)
    pub retried: Vec<(String, i64)>,
    /// (entity, rows accepted, rows rejected) over every import flow
    pub import_rows: Vec<(String, i64, i64)>,
    /// (entity, receipts held for an operator)
    pub held: Vec<(String, i64)>,
    /// (entity, settlement flows stored, failed, anomalies found)
    pub reports: Vec<(String, i64, i64, i64)>,
    /// (entity, class, items labelled with it now)
    pub reconciliation: Vec<(String, String, i64)>,
}

/// Something that happened, kept in order for whoever fans it out (the receipt outbox, ops).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    /// 0 for an event stored on its own; 1, 2... for the positions of one stored row of a bulk
    /// import (see `ops::POSITIONS`): (`id`, `part`) tells every event apart.
    pub part: u32,
    pub kind: String,
    pub entity: String,
    pub subject: String,
    pub payload: serde_json::Value,
    pub at: String,
    /// Groups the events of one story: `flow-<id>` for an import, the caller's id otherwise.
    pub correlation: Option<String>,
}

/// An event a caller records itself (the store records its own changes' events).
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub entity: &'a str,
    pub subject: &'a str,
    pub payload: serde_json::Value,
    pub correlation: Option<&'a str>,
}

/// A message a stream intake must publish once its chunk is committed (e.g. a reply topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub key: String,
    pub payload: String,
}

/// What commits with a chunk besides its rows.
#[derive(Debug, Clone, Default)]
pub struct ChunkCommit {
    pub checkpoint: Checkpoint,
    pub outbox: Vec<OutboxMessage>,
}

impl From<Checkpoint> for ChunkCommit {
    fn from(checkpoint: Checkpoint) -> Self {
        Self {
            checkpoint,
            outbox: Vec::new(),
        }
    }
}

/// Called inside the transaction of a chunk, after the rows are applied and before commit: it
/// writes the chunk's outcome lines and returns the checkpoint (and outbox) to commit with them.
pub type ChunkCallback<'c> =
    dyn FnMut(&[RowOutcome]) -> std::result::Result<ChunkCommit, String> + 'c;

/// The correlation of an import flow's events.
pub fn flow_correlation(flow_id: i64) -> String {
    format!("flow-{flow_id}")
}

/// The whole store, one trait per concern: what callers hold (`Arc<dyn Store>`). Bring the
/// concerns' methods into scope with `use snodo_store::prelude::*`.
pub trait Store:
    FlowStore
    + PositionStore
    + ReceiptStore
    + OutboxStore
    + ExportStore
    + EventStore
    + JobStore
    + ApiStore
    + CartStore
    + WsRequestStore
    + StatusStore
    + ReportStore
    + TreasuryStore
    + ReconcileStore
    + Send
    + Sync
{
}

impl<T> Store for T where
    T: FlowStore
        + PositionStore
        + ReceiptStore
        + OutboxStore
        + ExportStore
        + EventStore
        + JobStore
        + ApiStore
        + CartStore
        + WsRequestStore
        + StatusStore
        + ReportStore
        + TreasuryStore
        + ReconcileStore
        + Send
        + Sync
{
}

/// The store traits, for `use snodo_store::prelude::*`.
pub mod prelude {
    pub use crate::{
        ApiStore, CartStore, EventStore, ExportStore, FlowStore, JobStore, OutboxStore,
        PositionStore, ReceiptStore, ReconcileStore, ReportStore, StatusStore, Store,
        TreasuryStore, WsRequestStore,
    };
}

/// Opens the store a `hub.store` setting names: `sqlite` (a file under the data dir),
/// `sqlite://<path>`, or a PostgreSQL URL (`postgres://…`, `postgresql://…`, with the options of [`PgStore::open`]).
pub fn open(setting: &str, data_dir: &std::path::Path) -> Result<Box<dyn Store>> {
    match setting {
        "sqlite" | "" => Ok(Box::new(SqliteStore::open(&data_dir.join("snodo.db"))?)),
        s if s.starts_with("sqlite://") => Ok(Box::new(SqliteStore::open(std::path::Path::new(
            &s["sqlite://".len()..],
        ))?)),
        s if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
            Ok(Box::new(PgStore::open(s)?))
        }
        other => Err(StoreError::Open(format!(
            "unsupported store {other:?}: use \"sqlite\", \"sqlite://<path>\" or a \"postgres://user@host/db\" URL"
        ))),
    }
}
