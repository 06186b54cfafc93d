//! `mypay-export`: MyPay's receipt export `ESTRAZIONE_DOVUTI`, versions 1.0 to 1.3
//! (`specs/mypay/TRACCIATI.md` §3), so entity systems that read MyPay's export read ours unchanged.
//!
//! MyPay fills these RT-era columns from its own tables; the hub has the pagoPA receipt
//! (`paSendRT` / `paSendRTV2`) as the node sent it, so every column is mapped from that receipt
//! plus what the registry knows ([`ExportReceipt`]). The mapping is documented in
//! `docs/FORMATS.md`.
//!
//! Writing an export:
//! 1. [`file_stem`] names it (`.zip` around `<stem>.csv`);
//! 2. an [`ExportWriter`] writes the header, then the rows of each [`ExportWriter::push`]ed
//!    receipt, into any [`Write`]: a [`ZipEntryWriter`](crate::mypay_import::ZipEntryWriter) named
//!    `<stem>.csv` to stream straight into the zip, or a buffer handed to [`zip`] afterwards.
//!
//! The CSV is what opencsv's `CSVWriter` writes for MyPay: separator `;`, every field (header
//! included) in `"` with an inner `"` doubled, records ended by `\n`, UTF-8, no BOM.

use std::borrow::Cow;
use std::fmt;
use std::io::{Seek, Write};
use std::str::FromStr;

use base64::Engine as _;
use chrono::{DateTime, Days, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::Rome;

use crate::pagopa::{self, Outcome, ReceiptTransferView, ReceiptView, SoapError, Subject};

/// Registry key of this codec.
pub const MYPAY_EXPORT: &str = "mypay-export";

/// `tipoDovuto` of the rows of a receipt paid to the entity as a secondary beneficiary (1.3).
pub const SECONDARY_DEBT_TYPE: &str = "EXPORT_ENTE_SECONDARIO";
/// `identificativoStazioneRichiedente` MyPay writes, fixed, on secondary-beneficiary rows.
pub const SECONDARY_STATION: &str = "0007580279_03";
/// `versioneOggetto` of a primary row: the RT version whose columns the export keeps.
pub const VERSIONE_OGGETTO: &str = "6.2.0";

/// The 64 columns of every version, in order.
pub const BASE_COLUMNS: [&str; 64] = [
    "iuf",
    "numRigaFlusso",
    "codIud",
    "codIuv",
    "versioneOggetto",
    "identificativoDominio",
    "identificativoStazioneRichiedente",
    "identificativoMessaggioRicevuta",
    "dataOraMessaggioRicevuta",
    "riferimentoMessaggioRichiesta",
    "riferimentoDataRichiesta",
    "tipoIdentificativoUnivoco",
    "codiceIdentificativoUnivoco",
    "denominazioneAttestante",
    "codiceUnitOperAttestante",
    "denomUnitOperAttestante",
    "indirizzoAttestante",
    "civicoAttestante",
    "capAttestante",
    "localitaAttestante",
    "provinciaAttestante",
    "nazioneAttestante",
    "enteBenefTipoIdentificativoUnivoco",
    "enteBenefCodiceIdentificativoUnivoco",
    "denominazioneBeneficiario",
    "codiceUnitOperBeneficiario",
    "denomUnitOperBeneficiario",
    "indirizzoBeneficiario",
    "civicoBeneficiario",
    "capBeneficiario",
    "localitaBeneficiario",
    "provinciaBeneficiario",
    "nazioneBeneficiario",
    "soggVersTipoIdentificativoUnivoco",
    "soggVersCodiceIdentificativoUnivoco",
    "anagraficaVersante",
    "indirizzoVersante",
    "civicoVersante",
    "capVersante",
    "localitaVersante",
    "provinciaVersante",
    "nazioneVersante",
    "emailVersante",
    "soggPagTipoIdentificativoUnivoco",
    "soggPagCodiceIdentificativoUnivoco",
    "anagraficaPagatore",
    "indirizzoPagatore",
    "civicoPagatore",
    "capPagatore",
    "localitaPagatore",
    "provinciaPagatore",
    "nazionePagatore",
    "emailPagatore",
    "codiceEsitoPagamento",
    "importoTotalePagato",
    "identificativoUnivocoVersamento",
    "codiceContestoPagamento",
    "singoloImportoPagato",
    "esitoSingoloPagamento",
    "dataEsitoSingoloPagamento",
    "identificativoUnivocoRiscoss",
    "causaleVersamento",
    "datiSpecificiRiscossione",
    "tipoDovuto",
];

/// MyPay's `flgRicevuta` columns: added by every version but 1.0 in the nightly export, and
/// by `ricevuta = true` of `paaSILPrenotaExportFlussoIncrementaleConRicevuta` (any version).
pub const RECEIPT_COLUMNS: [&str; 6] = [
    "tipoFirma",
    "rt",
    "indiceDatiSingoloPagamento",
    "numRtDatiPagDatiSingPagCommissioniApplicatePsp",
    "codRtDatiPagDatiSingPagAllegatoRicevutaTipo",
    "blbRtDatiPagDatiSingPagAllegatoRicevutaTest",
];

/// Added by 1.2.
pub const V1_2_COLUMNS: [&str; 1] = ["bilancio"];

/// Added by 1.3.
pub const V1_3_COLUMNS: [&str; 4] = [
    "bilancio",
    "cod_fiscale_pa1",
    "de_nome_pa1",
    "cod_tassonomico_dovuto_pa1",
];

/// A version of the export layout (MyPay's `versioneTracciato`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ExportVersion {
    /// MyPay's default.
    #[default]
    V1_0,
    V1_1,
    V1_2,
    V1_3,
}

impl ExportVersion {
    pub const ALL: [ExportVersion; 4] = [Self::V1_0, Self::V1_1, Self::V1_2, Self::V1_3];

    /// `1.3`, or `1_3` as in the file names.
    pub fn parse(s: &str) -> Result<Self, MypayExportError> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s || v.name_suffix() == s)
            .ok_or_else(|| MypayExportError::UnknownVersion(s.to_owned()))
    }

    /// `1.0` … `1.3`, as MyPay spells the version.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_0 => "1.0",
            Self::V1_1 => "1.1",
            Self::V1_2 => "1.2",
            Self::V1_3 => "1.3",
        }
    }

    /// `1_0` … `1_3`, the form in the file name.
    pub fn name_suffix(self) -> &'static str {
        match self {
            Self::V1_0 => "1_0",
            Self::V1_1 => "1_1",
            Self::V1_2 => "1_2",
            Self::V1_3 => "1_3",
        }
    }

    /// The header, in column order.
    pub fn columns(self) -> impl Iterator<Item = &'static str> {
        self.columns_with(self.has_receipt_columns())
    }

    /// The header with or without the [`RECEIPT_COLUMNS`], whatever the version's default.
    pub fn columns_with(self, rt_columns: bool) -> impl Iterator<Item = &'static str> {
        let receipt: &'static [&'static str] = if rt_columns { &RECEIPT_COLUMNS } else { &[] };
        BASE_COLUMNS
            .iter()
            .chain(receipt)
            .chain(self.version_columns())
            .copied()
    }

    /// 64, 70, 71 or 74.
    pub fn column_count(self) -> usize {
        self.columns().count()
    }

    /// Whether receipts paid to the entity as a secondary beneficiary get rows (1.3 only).
    pub fn exports_secondary(self) -> bool {
        self == Self::V1_3
    }

    /// Whether the version has the [`RECEIPT_COLUMNS`] by default (MyPay's nightly export).
    pub fn has_receipt_columns(self) -> bool {
        self != Self::V1_0
    }

    fn version_columns(self) -> &'static [&'static str] {
        match self {
            Self::V1_0 | Self::V1_1 => &[],
            Self::V1_2 => &V1_2_COLUMNS,
            Self::V1_3 => &V1_3_COLUMNS,
        }
    }
}

impl fmt::Display for ExportVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExportVersion {
    type Err = MypayExportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MypayExportError {
    #[error("unknown export version {0:?} (supported: 1.0, 1.1, 1.2, 1.3)")]
    UnknownVersion(String),
    /// The stored request is not a schema-valid paForNode request; the receipt id is unknown,
    /// so the receipt is named by when it was received.
    #[error("receipt received at {received_at}: the stored request cannot be read: {source}")]
    Unreadable {
        received_at: String,
        source: SoapError,
    },
    /// The stored request is a paForNode request, but not a receipt.
    #[error("receipt received at {received_at}: the stored request is {operation}, not paSendRT or paSendRTV2")]
    NotAReceipt {
        received_at: String,
        operation: &'static str,
    },
    /// A value of the receipt, or of [`ExportReceipt`], cannot be exported.
    #[error("receipt {receipt_id}: {field}: {reason}")]
    Field {
        receipt_id: String,
        /// Like `receipt/transferList/transfer[2]/transferAmount`, or an [`ExportReceipt`] field.
        field: String,
        reason: String,
    },
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
}

/// One stored receipt, with what the registry knows beyond its XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportReceipt<'a> {
    /// The exporting entity's IPA code.
    pub entity_ipa: &'a str,
    /// The exporting entity's 11-digit fiscal code.
    pub entity_fiscal_code: &'a str,
    /// The exporting entity's name (`denominazioneBeneficiario`).
    pub entity_name: &'a str,
    /// The entity's id of the paid position (`codIud`), when the position is known.
    pub iud: Option<&'a str>,
    /// The paid position's debt type (`tipoDovuto`), when known.
    pub debt_type: Option<&'a str>,
    /// The IUF of the import flow that loaded the position, when there was one.
    pub iuf: Option<&'a str>,
    /// When the hub stored the receipt, RFC 3339 (UTC); the payment time when the receipt has
    /// no `paymentDateTime`.
    pub received_at: &'a str,
    /// The whole `paSendRT` / `paSendRTV2` SOAP request as the node sent it.
    pub raw_request: &'a str,
    /// The entity is a secondary beneficiary of someone else's receipt (one of the transfers,
    /// not the receipt, has the entity's fiscal code).
    pub secondary: bool,
}

/// `<exportId>_ESTRAZIONE_DOVUTI_<yyyy-MM-dd_HH_mm_ss>` for 1.0, otherwise
/// `<codIPA>-<exportId>_ESTRAZIONE_DOVUTI_<yyyyMMddHHmmss>-<1_x>`; `at` is Rome local time.
pub fn file_stem(
    version: ExportVersion,
    entity_ipa: &str,
    export_id: &str,
    at: NaiveDateTime,
) -> String {
    match version {
        ExportVersion::V1_0 => format!(
            "{export_id}_ESTRAZIONE_DOVUTI_{}",
            at.format("%Y-%m-%d_%H_%M_%S")
        ),
        v => format!(
            "{entity_ipa}-{export_id}_ESTRAZIONE_DOVUTI_{}-{}",
            at.format("%Y%m%d%H%M%S"),
            v.name_suffix()
        ),
    }
}

/// Writes to `out` a zip with one deflated entry `<stem>.csv` holding `csv`, stamped with the
/// current Rome time.
pub fn zip(stem: &str, csv: &[u8], out: impl Write + Seek) -> Result<(), MypayExportError> {
    zip_at(
        stem,
        csv,
        out,
        Utc::now().with_timezone(&Rome).naive_local(),
    )
}

/// [`zip`] with an explicit modification time, for reproducible archives.
pub fn zip_at(
    stem: &str,
    csv: &[u8],
    out: impl Write + Seek,
    modified: NaiveDateTime,
) -> Result<(), MypayExportError> {
    crate::mypay_import::zip_single_file_at(out, &format!("{stem}.csv"), csv, modified)?;
    Ok(())
}

/// Writes one export CSV: the header on creation, then the rows of each pushed receipt.
///
/// A receipt's rows are built whole before any byte is written, so a receipt that cannot be
/// exported leaves the output as it was; an I/O error may leave a partial row, and the export
/// should then be dropped.
#[derive(Debug)]
pub struct ExportWriter<W: Write> {
    version: ExportVersion,
    rt_columns: bool,
    out: W,
    rows: u64,
    buf: Vec<u8>,
}

impl<W: Write> ExportWriter<W> {
    /// Starts the export with its header row.
    pub fn new(version: ExportVersion, out: W) -> Result<Self, MypayExportError> {
        Self::with_receipt_columns(version, version.has_receipt_columns(), out)
    }

    /// [`Self::new`], with the [`RECEIPT_COLUMNS`] or without them whatever the version (MyPay's
    /// `flgRicevuta` as its SOAP services set it).
    pub fn with_receipt_columns(
        version: ExportVersion,
        rt_columns: bool,
        mut out: W,
    ) -> Result<Self, MypayExportError> {
        let mut buf = Vec::with_capacity(4096);
        write_record(&mut buf, version.columns_with(rt_columns));
        out.write_all(&buf)?;
        Ok(Self {
            version,
            rt_columns,
            out,
            rows: 0,
            buf,
        })
    }

    pub fn version(&self) -> ExportVersion {
        self.version
    }

    /// Data rows written so far (the header not counted).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends the rows of one receipt and returns how many: 1 for a primary receipt; for a
    /// secondary one, one per transfer to the entity in 1.3 and none before.
    pub fn push(&mut self, receipt: &ExportReceipt<'_>) -> Result<usize, MypayExportError> {
        self.push_parsed(receipt, None)
    }

    /// [`Self::push`] of a receipt already parsed (`request` is `receipt.raw_request` as the
    /// hub decoded it); with `None` the raw request is parsed.
    pub fn push_parsed(
        &mut self,
        receipt: &ExportReceipt<'_>,
        request: Option<&pagopa::Request>,
    ) -> Result<usize, MypayExportError> {
        if receipt.secondary && !self.version.exports_secondary() {
            return Ok(0);
        }
        self.buf.clear();
        let n = encode(
            (self.version, self.rt_columns),
            receipt,
            request,
            self.rows,
            &mut self.buf,
        )?;
        self.out.write_all(&self.buf)?;
        self.rows += n as u64;
        Ok(n)
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> Result<W, MypayExportError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One record as opencsv writes it with its defaults: every field quoted, `"` doubled, `\n`.
fn write_record<'s>(buf: &mut Vec<u8>, fields: impl IntoIterator<Item = &'s str>) {
    write_quoted_record(buf, fields, None, b"\n");
}

/// One `;`-separated record with every field in `"`: an inner `"` doubled (`escape` `None`,
/// opencsv's default), or `"` and the escape itself preceded by `escape` (Talend's CSV mode);
/// then `line_end`.
pub(crate) fn write_quoted_record<'s>(
    buf: &mut Vec<u8>,
    fields: impl IntoIterator<Item = &'s str>,
    escape: Option<u8>,
    line_end: &[u8],
) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            buf.push(b';');
        }
        buf.push(b'"');
        let bytes = field.as_bytes();
        let mut start = 0;
        for (k, &b) in bytes.iter().enumerate() {
            if b == b'"' || Some(b) == escape {
                // Copy up to here, then the escape; the byte itself starts the next run.
                buf.extend_from_slice(&bytes[start..k]);
                buf.push(escape.unwrap_or(b'"'));
                start = k;
            }
        }
        buf.extend_from_slice(&bytes[start..]);
        buf.push(b'"');
    }
    buf.extend_from_slice(line_end);
}

/// What the export reads off a receipt's [`ReceiptView`] beyond its fields.
trait ExportView<'r> {
    /// The first transfer to `fiscal_code`, else the first transfer.
    fn transfer_to(&self, fiscal_code: &str) -> Option<&ReceiptTransferView<'r>>;

    fn field_error(&self, field: impl Into<String>, reason: impl Into<String>) -> MypayExportError;

    /// Two-decimal text of a wire amount, parsed exactly.
    fn amount(
        &self,
        wire: &str,
        field: impl FnOnce() -> String,
    ) -> Result<String, MypayExportError>;

    fn transfer_amount(&self, t: &ReceiptTransferView<'_>) -> Result<String, MypayExportError>;
}

impl<'r> ExportView<'r> for ReceiptView<'r> {
    fn transfer_to(&self, fiscal_code: &str) -> Option<&ReceiptTransferView<'r>> {
        self.transfers
            .iter()
            .find(|t| t.fiscal_code_pa == fiscal_code)
            .or_else(|| self.transfers.first())
    }

    fn field_error(&self, field: impl Into<String>, reason: impl Into<String>) -> MypayExportError {
        MypayExportError::Field {
            receipt_id: self.receipt_id.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn amount(
        &self,
        wire: &str,
        field: impl FnOnce() -> String,
    ) -> Result<String, MypayExportError> {
        pagopa::to_cents(wire)
            .map(pagopa::from_cents)
            .map_err(|e| self.field_error(field(), e.to_string()))
    }

    fn transfer_amount(&self, t: &ReceiptTransferView<'_>) -> Result<String, MypayExportError> {
        self.amount(t.amount, || {
            format!(
                "receipt/transferList/transfer[{}]/transferAmount",
                t.position
            )
        })
    }
}

/// Rome local times of the receipt, already formatted.
struct Times {
    /// `dataOraMessaggioRicevuta`: `yyyy-MM-ddTHH:mm:ss`.
    paid_at: String,
    /// The calendar day of `paid_at`.
    paid_on: String,
    /// `applicationDate` when present, else `paid_on`.
    applied_on: String,
}

impl Times {
    /// `received` (Rome local) stands in for a missing `paymentDateTime`.
    fn of(view: &ReceiptView<'_>, received: NaiveDateTime) -> Result<Times, MypayExportError> {
        let paid = match view.payment_date_time {
            Some(s) => rome_local(s).ok_or_else(|| {
                view.field_error(
                    "receipt/paymentDateTime",
                    format!("cannot be read as an xsd:dateTime: {s:?}"),
                )
            })?,
            None => received,
        };
        let paid_on = paid.format("%Y-%m-%d").to_string();
        let applied_on = match view.application_date {
            Some(s) => wire_date(s)
                .ok_or_else(|| {
                    view.field_error(
                        "receipt/applicationDate",
                        format!("cannot be read as an xsd:date: {s:?}"),
                    )
                })?
                .format("%Y-%m-%d")
                .to_string(),
            None => paid_on.clone(),
        };
        Ok(Times {
            paid_at: paid.format("%Y-%m-%dT%H:%M:%S").to_string(),
            paid_on,
            applied_on,
        })
    }
}

/// Rome local time of an `xsd:dateTime`. Without a zone the node means Rome time already (as
/// MyPay reads it); fractions of a second are dropped, `24:00:00` is the next midnight.
fn rome_local(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    let (head, rest) = (s.get(..19)?, s.get(19..)?);
    let rest = match rest.strip_prefix('.') {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    let naive = match head.strip_suffix("T24:00:00") {
        Some(day) => wire_date(day)?
            .and_hms_opt(0, 0, 0)?
            .checked_add_days(Days::new(1))?,
        None => NaiveDateTime::parse_from_str(head, "%Y-%m-%dT%H:%M:%S").ok()?,
    };
    let offset = match rest {
        "" => return Some(naive),
        "Z" => FixedOffset::east_opt(0)?,
        tz => {
            let (sign, hm) = match tz.split_at_checked(1)? {
                ("+", hm) => (1, hm),
                ("-", hm) => (-1, hm),
                _ => return None,
            };
            let (h, m) = hm.split_once(':')?;
            // u8 keeps the arithmetic far from overflow; east_opt rejects a day or more.
            let (h, m): (u8, u8) = (h.parse().ok()?, m.parse().ok()?);
            FixedOffset::east_opt(sign * (i32::from(h) * 3600 + i32::from(m) * 60))?
        }
    };
    let instant = offset.from_local_datetime(&naive).single()?;
    Some(instant.with_timezone(&Rome).naive_local())
}

/// The calendar day of an `xsd:date`; a zone, if any, does not move the day.
fn wire_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim().get(..10)?, "%Y-%m-%d").ok()
}

pub(crate) fn received_at_rome(s: &str) -> Option<NaiveDateTime> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Rome).naive_local())
}

/// `datiSpecificiRiscossione` from a `transferCategory`: kept when already in MyPay's
/// `<digit>/…` form (`9/0101100IM/`), otherwise wrapped as MyPay does (`9/<code>/`).
fn dati_specifici_riscossione(category: &str) -> Cow<'_, str> {
    match category.as_bytes() {
        [b'0' | b'1' | b'2' | b'9', b'/', ..] => Cow::Borrowed(category),
        _ => Cow::Owned(format!("9/{}/", category.trim_end_matches('/'))),
    }
}

/// `xsd:base64Binary` text without the whitespace XML allows in it.
fn compact_base64(s: &str) -> Cow<'_, str> {
    let ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    if s.contains(ws) {
        Cow::Owned(s.chars().filter(|&c| !ws(c)).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// The ten `soggVers*` / `soggPag*` columns of a subject; empty when there is none.
fn subject_columns<'v>(row: &mut Vec<Cow<'v, str>>, s: Option<&'v Subject>) {
    let Some(s) = s else {
        empties(row, 10);
        return;
    };
    let opt = |o: &'v Option<String>| Cow::Borrowed(o.as_deref().unwrap_or(""));
    row.extend([
        Cow::Borrowed(s.unique_identifier.kind.as_str()),
        Cow::Borrowed(s.unique_identifier.value.as_str()),
        Cow::Borrowed(s.full_name.as_str()),
        opt(&s.street_name),
        opt(&s.civic_number),
        opt(&s.postal_code),
        opt(&s.city),
        opt(&s.state_province_region),
        opt(&s.country),
        opt(&s.email),
    ]);
}

fn empties<'v>(row: &mut Vec<Cow<'v, str>>, n: usize) {
    row.resize(row.len() + n, Cow::Borrowed(""));
}

/// Encodes the rows of `r` into `buf`; `rows_before` numbers them.
fn encode(
    layout: (ExportVersion, bool),
    r: &ExportReceipt<'_>,
    parsed: Option<&pagopa::Request>,
    rows_before: u64,
    buf: &mut Vec<u8>,
) -> Result<usize, MypayExportError> {
    with_row_context(layout, r, parsed, |ctx| {
        if r.secondary {
            let mut n = 0;
            for t in ctx.secondary_transfers() {
                let row = ctx.secondary_row(t)?;
                write_record(buf, row.iter().map(|c| c.as_ref()));
                n += 1;
            }
            Ok(n)
        } else {
            let row = ctx.primary_row(Some(rows_before + 1), None)?;
            write_record(buf, row.iter().map(|c| c.as_ref()));
            Ok(1)
        }
    })
}

/// The 1.3 row (74 values, [`BASE_COLUMNS`] first) of one transfer of `r`: transfer
/// `transfer_index` when given, else the one [`ExportWriter::push`] would write (the first to
/// the entity); `numRigaFlusso` is left empty. MyPivot's E block is these columns.
pub(crate) fn receipt_row(
    r: &ExportReceipt<'_>,
    parsed: Option<&pagopa::Request>,
    transfer_index: Option<u8>,
) -> Result<Vec<String>, MypayExportError> {
    with_row_context((ExportVersion::V1_3, true), r, parsed, |ctx| {
        let row = if r.secondary {
            let mut own = ctx.secondary_transfers();
            let t = match transfer_index {
                Some(i) => own.find(|t| t.id_transfer == i),
                None => own.next(),
            };
            let Some(t) = t else {
                return Err(ctx.view.field_error(
                    "receipt/transferList",
                    format!(
                        "has no transfer {} to {}",
                        transfer_index.map_or(String::new(), |i| i.to_string()),
                        r.entity_fiscal_code
                    ),
                ));
            };
            ctx.secondary_row(t)?
        } else {
            ctx.primary_row(None, transfer_index)?
        };
        Ok(row.into_iter().map(Cow::into_owned).collect())
    })
}

/// Parses (when `parsed` is `None`) and checks the receipt, then hands its [`RowContext`] to `f`.
fn with_row_context<T>(
    (version, rt_columns): (ExportVersion, bool),
    r: &ExportReceipt<'_>,
    parsed: Option<&pagopa::Request>,
    f: impl FnOnce(&RowContext<'_>) -> Result<T, MypayExportError>,
) -> Result<T, MypayExportError> {
    let parsed_now;
    let request = match parsed {
        Some(request) => request,
        None => {
            parsed_now = pagopa::parse_request(r.raw_request.as_bytes()).map_err(|source| {
                MypayExportError::Unreadable {
                    received_at: r.received_at.to_owned(),
                    source,
                }
            })?;
            &parsed_now
        }
    };
    let view = ReceiptView::of(request).ok_or_else(|| MypayExportError::NotAReceipt {
        received_at: r.received_at.to_owned(),
        operation: request.soap_action(),
    })?;
    if r.entity_fiscal_code.is_empty() {
        return Err(view.field_error("entity_fiscal_code", "must not be empty"));
    }
    let received = received_at_rome(r.received_at).ok_or_else(|| {
        view.field_error(
            "received_at",
            format!(
                "must be an RFC 3339 timestamp like 2026-11-26T10:00:01.123Z, got {:?}",
                r.received_at
            ),
        )
    })?;
    if view.transfers.is_empty() {
        return Err(view.field_error("receipt/transferList", "has no transfer"));
    }
    let times = Times::of(&view, received)?;
    let rt = base64::engine::general_purpose::STANDARD.encode(r.raw_request.as_bytes());
    f(&RowContext {
        version,
        rt_columns,
        receipt: r,
        view: &view,
        times: &times,
        rt: &rt,
    })
}

struct RowContext<'v> {
    version: ExportVersion,
    /// The [`RECEIPT_COLUMNS`] are written.
    rt_columns: bool,
    receipt: &'v ExportReceipt<'v>,
    view: &'v ReceiptView<'v>,
    times: &'v Times,
    rt: &'v str,
}

/// What differs between a primary and a secondary row.
struct RowSpec<'v> {
    iuf: Cow<'v, str>,
    num_riga_flusso: Cow<'v, str>,
    iud: &'v str,
    versione_oggetto: &'v str,
    station: &'v str,
    riferimento_data_richiesta: &'v str,
    attestante_tipo: &'v str,
    importo_totale: String,
    transfer: &'v ReceiptTransferView<'v>,
    tipo_dovuto: &'v str,
    pa1_fiscal_code: &'v str,
    pa1_name: &'v str,
    pa1_category: &'v str,
}

impl<'v> RowContext<'v> {
    /// The transfers of a secondary receipt paid to the entity.
    fn secondary_transfers(&self) -> impl Iterator<Item = &'v ReceiptTransferView<'v>> + '_ {
        let fiscal_code = self.receipt.entity_fiscal_code;
        self.view
            .transfers
            .iter()
            .filter(move |t| t.fiscal_code_pa == fiscal_code)
    }

    /// One row for the entity's own receipt, built on the transfer paid to it (or on transfer
    /// `transfer_index`); `number` is `numRigaFlusso`.
    fn primary_row(
        &self,
        number: Option<u64>,
        transfer_index: Option<u8>,
    ) -> Result<Vec<Cow<'v, str>>, MypayExportError> {
        let (r, v) = (self.receipt, self.view);
        let transfer = match transfer_index {
            Some(i) => v.transfers.iter().find(|t| t.id_transfer == i),
            None => v.transfer_to(r.entity_fiscal_code),
        };
        let Some(transfer) = transfer else {
            return Err(v.field_error(
                "receipt/transferList",
                match transfer_index {
                    Some(i) => format!("has no transfer with idTransfer {i}"),
                    None => "has no transfer".to_owned(),
                },
            ));
        };
        let importo_totale = v.amount(v.payment_amount, || "receipt/paymentAmount".into())?;
        self.row(RowSpec {
            iuf: Cow::Borrowed(r.iuf.unwrap_or("")),
            num_riga_flusso: number.map_or(Cow::Borrowed(""), |n| Cow::Owned(n.to_string())),
            iud: r.iud.unwrap_or(""),
            versione_oggetto: VERSIONE_OGGETTO,
            station: v.id_station,
            riferimento_data_richiesta: &self.times.applied_on,
            attestante_tipo: "B",
            importo_totale,
            transfer,
            tipo_dovuto: r.debt_type.unwrap_or(""),
            pa1_fiscal_code: r.entity_fiscal_code,
            pa1_name: r.entity_name,
            pa1_category: transfer.category,
        })
    }

    /// One row for a transfer paid to the entity out of another entity's receipt, as MyPay
    /// writes it from its receipt table.
    fn secondary_row(
        &self,
        transfer: &'v ReceiptTransferView<'v>,
    ) -> Result<Vec<Cow<'v, str>>, MypayExportError> {
        let v = self.view;
        let pa1_category = v.transfer_to(v.fiscal_code).map_or("", |t| t.category);
        self.row(RowSpec {
            iuf: Cow::Borrowed(""),
            num_riga_flusso: Cow::Borrowed(""),
            iud: "",
            versione_oggetto: "",
            station: SECONDARY_STATION,
            riferimento_data_richiesta: &self.times.paid_on,
            attestante_tipo: "G",
            importo_totale: v.transfer_amount(transfer)?,
            transfer,
            tipo_dovuto: SECONDARY_DEBT_TYPE,
            pa1_fiscal_code: v.fiscal_code,
            pa1_name: v.company_name,
            pa1_category,
        })
    }

    fn row(&self, s: RowSpec<'v>) -> Result<Vec<Cow<'v, str>>, MypayExportError> {
        let (r, v, t) = (self.receipt, self.view, self.times);
        let esito = match v.outcome {
            Outcome::Ok => "0",
            Outcome::Ko => "1",
        };
        let singolo = v.transfer_amount(s.transfer)?;
        let mut row: Vec<Cow<'v, str>> = Vec::with_capacity(80);
        row.extend([
            s.iuf,
            s.num_riga_flusso,
            Cow::Borrowed(s.iud),
            Cow::Borrowed(v.creditor_reference_id),
            Cow::Borrowed(s.versione_oggetto),
            Cow::Borrowed(r.entity_fiscal_code),
            Cow::Borrowed(s.station),
            Cow::Borrowed(v.receipt_id),
            Cow::Borrowed(t.paid_at.as_str()),
            Cow::Borrowed(v.receipt_id),
            Cow::Borrowed(s.riferimento_data_richiesta),
            Cow::Borrowed(s.attestante_tipo),
            Cow::Borrowed(v.id_psp),
            Cow::Borrowed(v.psp_company_name),
        ]);
        // codiceUnitOperAttestante … nazioneAttestante: the receipt has no PSP address.
        empties(&mut row, 8);
        row.extend([
            Cow::Borrowed("G"),
            Cow::Borrowed(r.entity_fiscal_code),
            Cow::Borrowed(r.entity_name),
        ]);
        // codiceUnitOperBeneficiario … nazioneBeneficiario: not in the receipt.
        empties(&mut row, 8);
        subject_columns(&mut row, v.payer);
        subject_columns(&mut row, Some(v.debtor));
        row.extend([
            Cow::Borrowed(esito),
            Cow::Owned(s.importo_totale),
            Cow::Borrowed(v.creditor_reference_id),
            Cow::Borrowed(v.receipt_id),
            Cow::Owned(singolo),
            Cow::Borrowed(esito),
            Cow::Borrowed(t.paid_on.as_str()),
            Cow::Borrowed(v.receipt_id),
            Cow::Borrowed(s.transfer.remittance_information),
            dati_specifici_riscossione(s.transfer.category),
            Cow::Borrowed(s.tipo_dovuto),
        ]);
        if self.rt_columns {
            let fee = match v.fee {
                Some(f) => Cow::Owned(v.amount(f, || "receipt/fee".into())?),
                None => Cow::Borrowed(""),
            };
            let (allegato_tipo, allegato) = match s.transfer.mbd_attachment {
                Some(b64) => (Cow::Borrowed("BD"), compact_base64(b64)),
                None => (Cow::Borrowed(""), Cow::Borrowed("")),
            };
            row.extend([
                Cow::Borrowed(""),
                Cow::Borrowed(self.rt),
                Cow::Owned(s.transfer.id_transfer.to_string()),
                fee,
                allegato_tipo,
                allegato,
            ]);
        }
        match self.version {
            ExportVersion::V1_0 | ExportVersion::V1_1 => {}
            ExportVersion::V1_2 => row.push(Cow::Borrowed("")),
            ExportVersion::V1_3 => row.extend([
                Cow::Borrowed(""),
                Cow::Borrowed(s.pa1_fiscal_code),
                Cow::Borrowed(s.pa1_name),
                Cow::Borrowed(s.pa1_category),
            ]),
        }
        debug_assert_eq!(
            row.len(),
            self.version.columns_with(self.rt_columns).count()
        );
        Ok(row)
    }
}

#[cfg(test)]
pub(crate) mod tests;
