//! What the importer needs from a format of debt-position flows (files an entity uploads with
//! many positions). The importer owns the hard parts every format shares — finding the flow
//! again after a crash, chunked commits, outcome files staged and zipped, duplicate IUDs — and
//! asks the format only what is its own: the file name, where the records are inside the file,
//! how a record maps onto a position, and how outcome lines are written.
//!
//! Records are lines of fields read by [`crate::csv::CsvLines`] in the format's
//! [`crate::csv::Dialect`]. Adding a flow format is one implementation of [`FlowFormat`] plus one
//! line in the pipelines' codec list.

use crate::csv::{Dialect, Record};
use snodo_core::dovuto::{FlowVersion, RawDovuto, Rejection};
use std::fs::File;
use std::io::Read;

/// What a flow may hold at most, from the hub's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Bytes of records (uncompressed), and bytes of the file itself.
    pub max_bytes: u64,
    /// Entries of an archive.
    pub max_entries: u64,
}

/// A flow's file name, read by its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowFile {
    /// The entity the name says the flow belongs to; the importer checks it is the uploader.
    pub entity: String,
    /// The flow's identifier within the entity (MyPay's IUF): one flow per identifier.
    pub flow_id: String,
    /// The validation rules the rows follow (which fields are required, lengths).
    pub rules: FlowVersion,
    /// The format's own version label, stored with the flow.
    pub version: String,
    /// The name without extension, base of the outcome files' names.
    pub stem: String,
    /// The records are inside an archive: reading them twice costs an inflate each time, so
    /// the importer checks such a flow with a second thread.
    pub packed: bool,
}

/// A whole flow refused by its format, with the format's file-level code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// File-level situations the importer detects itself, which each format names with its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowProblem {
    /// The name says another entity.
    WrongEntity,
    /// A flow with this identifier was imported before.
    Duplicate,
    /// Another file with this identifier is being imported.
    InProgress,
    /// The records cannot be read to the end (size, encoding, a damaged archive).
    Unreadable,
}

/// One outcome file of a flow: the file published and the entry inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeName {
    /// e.g. `c_g224-F1-1_4_SCARTI.zip`.
    pub file: String,
    /// e.g. `c_g224-F1-1_4_SCARTI.csv`.
    pub entry: String,
}

/// An accepted row serialised ahead of time (on the reader thread), with the place of its IUV
/// marked so that an IUV generated at commit goes in without serialising the row again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedRow {
    pub line: Vec<u8>,
    pub iuv_at: std::ops::Range<usize>,
}

/// A format of debt-position flows. Implementations hold no state: one value serves every
/// import, from several threads.
pub trait FlowFormat: Send + Sync {
    /// Reads an uploaded file's name (no directories).
    fn parse_name(&self, file_name: &str) -> Result<FlowFile, Refusal>;

    /// The code this format gives a file-level situation the importer found.
    fn code(&self, problem: FlowProblem) -> &'static str;

    /// How the records are split into fields.
    fn dialect(&self) -> Dialect;

    /// Calls `read` with the flow's records (within `limits`) and their size as declared (for a
    /// packed flow) or found. The importer calls it more than once per flow.
    fn open_records(
        &self,
        file: File,
        flow: &FlowFile,
        limits: FlowLimits,
        read: &mut dyn FnMut(&mut dyn Read, u64),
    ) -> Result<(), Refusal>;

    /// Maps one record onto a position to validate; `Err` says why the record has the wrong
    /// shape (it is rejected as a syntax error).
    fn decode<'r>(&self, flow: &FlowFile, record: &Record<'r>) -> Result<RawDovuto<'r>, String>;

    /// The record as its line of the accepted-rows outcome file.
    fn render_accepted(&self, flow: &FlowFile, record: &Record<'_>) -> RenderedRow;

    /// The rejected-rows and the accepted-rows outcome files, in that order.
    fn outcome_names(&self, flow: &FlowFile) -> [OutcomeName; 2];

    /// The archive of the flow's payment notices, published beside the outcome files when a
    /// pipeline asks for notices.
    fn notices_name(&self, flow: &FlowFile) -> String;

    /// A position's notice inside that archive, by its IUV.
    fn notice_entry(&self, iuv: &str) -> String;

    /// The first line of the rejected-rows file, from the flow's own `header` line.
    fn rejected_header(&self, header: &str, out: &mut Vec<u8>);

    /// The first line of the accepted-rows file.
    fn accepted_header(&self, header: &str, out: &mut Vec<u8>);

    /// One rejected row: the record's text as read and why it was rejected.
    fn rejected_line(&self, raw: &str, why: &[Rejection], out: &mut Vec<u8>);

    /// One accepted row, with the IUV the hub generated for it (when it did).
    fn accepted_line(&self, row: &RenderedRow, generated_iuv: Option<&str>, out: &mut Vec<u8>);
}
