//! Codecs by the name a pipeline's `decode` or `encode` gives, each with what it reads or
//! writes. Adding a format is its adapter file plus one line in [`CODECS`]; the planner picks
//! the pipeline from what the codec does, never from its name.

use crate::config::Problem;
use serde_json::Value;
use snodo_adapters::fdr::{self, report_json, Report};
use snodo_adapters::flow_format::FlowFormat;
use snodo_adapters::pagopa::Request;
use snodo_adapters::receipt_json::ReceiptContext;
use snodo_adapters::text_encoding::Encoding;
use snodo_adapters::treasury;
use snodo_adapters::{
    mypay_export, mypay_import, mypay_push, mypivot, position_json, receipt_json,
};
use snodo_core::dovuto::{DovutoRow, EntityRules};
use snodo_core::treasury::TreasuryMovement;
use std::path::Path;

/// One line per codec.
#[rustfmt::skip]
pub const CODECS: &[Codec] = &[
    Codec { name: mypay_import::MYPAY_IMPORT, does: Does::ImportFlows(&mypay_import::MyPayImport), holds_flagged: false, says_secondary: false },
    Codec { name: position_json::POSITION_JSON, does: Does::StreamPositions(position_json::decode), holds_flagged: false, says_secondary: false },
    // `issue` says what is wrong with a flagged receipt: delivered like any other.
    Codec { name: receipt_json::JSON, does: Does::ReceiptMessages(|c, xml, r| receipt_json::encode_parsed(c, xml, r).map_err(|e| e.to_string())), holds_flagged: false, says_secondary: true },
    // MyPay's formats have no such field: the ERP would book a normal payment.
    Codec { name: mypay_push::MYPAY_PUSH, does: Does::ReceiptMessages(|c, xml, r| mypay_push::encode_parsed(c, xml, r).map_err(|e| e.to_string())), holds_flagged: true, says_secondary: false },
    Codec { name: mypay_export::MYPAY_EXPORT, does: Does::ReceiptFiles(mypay_export_settings), holds_flagged: true, says_secondary: false },
    Codec { name: fdr::FDR_XML, does: Does::ReportDocuments(ReportCodec { encode: Report::to_xml, extension: "xml", content_type: "application/xml" }), holds_flagged: false, says_secondary: false },
    Codec { name: treasury::OPI, does: Does::TreasuryFiles(decode_opi), holds_flagged: false, says_secondary: false },
    Codec { name: treasury::TREASURY_CSV, does: Does::TreasuryFiles(decode_treasury_csv), holds_flagged: false, says_secondary: false },
    Codec { name: mypivot::MYPIVOT_IMPORT_PAGATI, does: Does::NotificationFiles(decode_import_pagati), holds_flagged: false, says_secondary: false },
    Codec { name: fdr::FDR_JSON, does: Does::ReportDocuments(ReportCodec { encode: report_json::encode, extension: "json", content_type: "application/json" }), holds_flagged: false, says_secondary: false },
];

/// Decodes and validates one stream message (payload, key) into a position row.
pub type DecodePosition = fn(
    &[u8],
    Option<&[u8]>,
    &EntityRules,
    chrono::NaiveDate,
) -> Result<DovutoRow, position_json::Invalid>;

/// Encodes one stored receipt (its XML as received, the request decoded from it once on
/// arrival, and what the hub knows beside it) as one message body.
pub type EncodeReceipt = fn(&ReceiptContext<'_>, &str, &Request) -> Result<Vec<u8>, String>;

/// How a reports pipeline writes a settlement flow: one document per flow revision.
#[derive(Clone, Copy)]
pub struct ReportCodec {
    pub encode: fn(&Report) -> Vec<u8>,
    /// Of the file a file sink writes (`<iuf>.<pspId>.r<revision>.<extension>`).
    pub extension: &'static str,
    pub content_type: &'static str,
}

/// Reads a batch codec's settings (`encode = { codec = "...", ... }`), each problem under `at`.
pub type FileSettings = fn(&Value, &str, &mut Vec<Problem>) -> Option<ReceiptFile>;

pub struct Codec {
    pub name: &'static str,
    pub does: Does,
    /// A receipt format that cannot say what is wrong with a flagged receipt (unknown notice,
    /// amount differs, paid twice, annulled): such receipts wait for an operator's release.
    pub holds_flagged: bool,
    /// A per-message receipt format that says when the entity receives a receipt as a
    /// secondary beneficiary of another entity's notice (`json`'s `entity.role`): such
    /// receipts are delivered to it. A file format says so by its settings (MyPay's 1.3).
    pub says_secondary: bool,
}

/// What a codec reads or writes, which decides the pipelines it fits.
#[derive(Clone, Copy)]
pub enum Does {
    /// Decodes flows (files) of debt positions, for an import pipeline.
    ImportFlows(&'static dyn FlowFormat),
    /// Decodes one debt position per stream message, for a stream intake.
    StreamPositions(DecodePosition),
    /// Encodes one receipt per message, pushed through a message sink.
    ReceiptMessages(EncodeReceipt),
    /// Encodes many receipts per file, written on a schedule through a file sink.
    ReceiptFiles(FileSettings),
    /// Encodes one settlement flow (its report) per document, for a reports pipeline.
    ReportDocuments(ReportCodec),
    /// Decodes a treasury file (the giornale di cassa) into movements, for a treasury intake.
    TreasuryFiles(DecodeTreasury),
    /// Files of the entity's own notifications of payments, into its reconciliation.
    NotificationFiles(DecodeTreasury),
}

/// A treasury file decoded: whose it says it is, and its incoming movements in file order.
#[derive(Debug, Clone, Default)]
pub struct TreasuryFile {
    /// The entity's fiscal code the file names (OPI `codice_fiscale_ente`).
    pub fiscal_code: Option<String>,
    /// The account the statement is of (Poste's).
    pub iban: Option<String>,
    pub movements: Vec<TreasuryMovement>,
    /// Lines read but not incoming movements (outgoing, other documents).
    pub skipped: u64,
    /// The entity's notifications of payments (MyPivot's import pagati), and the IPA code its
    /// file name gives.
    pub notifications: Vec<mypivot::import_pagati::Notification>,
    pub ipa_code: Option<String>,
}

/// Decodes a whole treasury file at a path, in `encoding` (`None`: the format's own); the
/// error names the record and the rule.
pub type DecodeTreasury = fn(&Path, Option<Encoding>) -> Result<TreasuryFile, String>;

fn decode_opi(path: &Path, _encoding: Option<Encoding>) -> Result<TreasuryFile, String> {
    // XML says its own encoding.
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (header, movements, counts) =
        treasury::opi::parse_opi(&bytes).map_err(|e| e.to_string())?;
    Ok(TreasuryFile {
        fiscal_code: Some(header.entity_fiscal_code.clone()).filter(|f| !f.is_empty()),
        iban: None,
        skipped: counts.movements.saturating_sub(counts.kept),
        movements,
        ..TreasuryFile::default()
    })
}

/// Largest CSV a notifications zip may unpack to.
const NOTIFICATIONS_MAX_BYTES: u64 = 1 << 30;

fn decode_import_pagati(path: &Path, _encoding: Option<Encoding>) -> Result<TreasuryFile, String> {
    // MyPivot's files are UTF-8, named `<codIPA>-<IUF>-1_0.zip` (the hub also takes the `.csv`).
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let flow = mypivot::check_file_name(&name).map_err(|e| e.to_string())?;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let read = std::io::BufReader::new(file);
    let notifications = if flow.is_zip {
        mypivot::decode_zip(read, &flow.stem, NOTIFICATIONS_MAX_BYTES)
    } else {
        mypivot::decode_csv(read)
    }
    .map_err(|e| e.to_string())?;
    Ok(TreasuryFile {
        notifications,
        ipa_code: Some(flow.ipa_code),
        ..TreasuryFile::default()
    })
}

fn decode_treasury_csv(path: &Path, encoding: Option<Encoding>) -> Result<TreasuryFile, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader =
        treasury::read_csv(std::io::BufReader::new(file), encoding).map_err(|e| e.to_string())?;
    let mut movements = Vec::new();
    while let Some(m) = reader.next_movement().map_err(|e| e.to_string())? {
        movements.push(m);
    }
    Ok(TreasuryFile {
        fiscal_code: None,
        iban: reader.iban().map(|i| i.as_str().to_string()),
        skipped: reader.skipped(),
        movements,
        ..TreasuryFile::default()
    })
}

/// How a batch codec writes its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptFile {
    /// The file layout's version (MyPay's export: `1.0` to `1.3`).
    pub version: String,
    /// The files also list receipts paid to the entity as a secondary beneficiary.
    pub lists_secondary_receipts: bool,
}

pub fn codec(name: &str) -> Option<&'static Codec> {
    CODECS.iter().find(|c| c.name == name)
}

/// The names of the codecs that do what `fits` says.
pub fn names(fits: impl Fn(&Does) -> bool) -> Vec<&'static str> {
    CODECS
        .iter()
        .filter(|c| fits(&c.does))
        .map(|c| c.name)
        .collect()
}

/// Versions of MyPay's ESTRAZIONE_DOVUTI.
const EXPORT_VERSIONS: &[&str] = &["1.0", "1.1", "1.2", "1.3"];

/// `encode = { codec = "mypay-export", version = "1.3" }` (`1_3` too); `1.0` when not given.
fn mypay_export_settings(
    params: &Value,
    at: &str,
    local: &mut Vec<Problem>,
) -> Option<ReceiptFile> {
    let mut params = params.as_object().cloned().unwrap_or_default();
    let version = match params.remove("version") {
        None => "1.0".to_string(),
        Some(Value::String(v)) => v,
        Some(other) => other.to_string(),
    };
    for k in params.keys() {
        local.push(Problem::new(
            format!("{at}.{k}"),
            "unknown setting (known: version)",
        ));
    }
    let v = version.replace('_', ".");
    if EXPORT_VERSIONS.contains(&v.as_str()) {
        Some(ReceiptFile {
            lists_secondary_receipts: v == "1.3",
            version: v,
        })
    } else {
        local.push(Problem::new(
            format!("{at}.version"),
            format!(
                "{version:?} is not a version of MyPay's export (known: {})",
                EXPORT_VERSIONS.join(", ")
            ),
        ));
        None
    }
}
