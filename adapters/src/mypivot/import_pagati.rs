//! `mypivot-import-pagati`: MyPivot's "import pagati" (flow type I), the entity's own list of
//! the payments it was notified of, one per IUD, which MyPivot matches against the receipts.
//!
//! As MyPivot's job `MyGov_ImportFlussiEnte` reads it:
//! * the upload is a zip `<codIPA>-<IUF>-1_0.zip` holding `<codIPA>-<IUF>-1_0.csv`
//!   ([`check_file_name`], [`decode_zip`]; the hub also takes the bare CSV, [`decode_csv`]);
//! * UTF-8 only; `;`, quote `"` (`\"` and `""` inside quotes); the first line is a header,
//!   skipped whatever it says; blank lines skipped; every value trimmed;
//! * exactly the 20 [`COLUMNS`], in that order.
//!
//! Where MyPivot is lenient the hub is strict, so nothing is silently changed: MyPivot cuts
//! over-long values to the column's length (the IUD excepted) where the hub rejects them; it
//! parses amounts with `DecimalFormat("###.##")`, which reads `12,3x` as 12, where the hub wants
//! an exact decimal with `.` and at most two decimals; it takes any IUV up to 35 characters and
//! any `tipoIdentificativoUnivoco`, where the hub wants a pagoPA IUV and `F` or `G`; and a
//! second row with the same IUD updates the first, where the hub rejects the file. It also
//! validates `bilancio` against MyPay's `bilancioDefault.xsd`, which the hub does not.
//!
//! A file is taken whole or not at all: every row is checked and up to [`MAX_ERRORS`] broken
//! rules are reported together, each naming its line, column and rule.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Seek};

use chrono::NaiveDate;
use snodo_core::dovuto::FlowVersion;
use snodo_core::ids::Iuv;
use snodo_core::Amount;

use crate::csv::{CsvError, CsvLimits, CsvLines, Dialect, Record};
use crate::mypay_import::{FlowError, FlowName, FlowZip};

/// MyPivot's column labels, in order (its schema of `tFileInputDelimited_1`).
pub const COLUMNS: [&str; 20] = [
    "IUD",
    "codIuv",
    "tipoIdentificativoUnivoco",
    "codiceIdentificativoUnivoco",
    "anagraficaPagatore",
    "indirizzoPagatore",
    "civicoPagatore",
    "capPagatore",
    "localitaPagatore",
    "provinciaPagatore",
    "nazionePagatore",
    "mailPagatore",
    "dataEsecuzionePagamento",
    "importoDovutoPagato",
    "commissioneCaricoPa",
    "tipoDovuto",
    "tipoVersamento",
    "causaleVersamento",
    "datiSpecificiRiscossione",
    "bilancio",
];

/// Longest IUD MyPivot stores (`cod_iud varchar(35)`).
pub const MAX_IUD: usize = 35;
/// Most broken rules one error lists; past it the file is refused with what was found.
pub const MAX_ERRORS: usize = 100;

/// Each column's longest value, in characters (MyPivot's column lengths), and whether it is
/// required (MyPivot's `tSchemaComplianceCheck`: not nullable, empty counts as null).
const RULES: [(usize, bool); 20] = [
    (MAX_IUD, true),
    (35, true),
    (1, true),
    (35, true),
    (70, true),
    (70, false),
    (16, false),
    (16, false),
    (35, false),
    (2, false),
    (2, false),
    (256, false),
    (10, true),
    (15, true),
    (15, false),
    (64, true),
    (32, true),
    (140, true),
    (140, true),
    (4096, false),
];

/// Who paid, as the entity notified it (`soggettoPagatore` of the RT).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NotificationPayer {
    /// `F` (natural person) or `G` (legal person).
    pub kind: char,
    /// Fiscal code or VAT number.
    pub id: String,
    pub name: String,
    pub street: Option<String>,
    pub civic: Option<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
    pub province: Option<String>,
    pub country: Option<String>,
    pub email: Option<String>,
}

/// One row of an import pagati: a payment the entity says it received, keyed by its IUD.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    /// The entity's id of the debt position (`IUD`), 1 to [`MAX_IUD`] characters.
    pub iud: String,
    pub iuv: Iuv,
    pub payer: NotificationPayer,
    /// `dataEsecuzionePagamento`.
    pub execution_date: NaiveDate,
    /// `importoDovutoPagato`: more than 0, at most 999999999.99.
    pub amount: Amount,
    /// `commissioneCaricoPa`.
    pub commission: Option<Amount>,
    /// `tipoDovuto`.
    pub debt_type: String,
    /// `tipoVersamento` (e.g. `PO`, `BBT`).
    pub payment_type: String,
    /// `causaleVersamento`.
    pub causale: String,
    /// `datiSpecificiRiscossione` (e.g. `9/0101100IM/`).
    pub dati_specifici: String,
    /// The `bilancio` XML, as given.
    pub bilancio: Option<String>,
}

/// One broken rule of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Physical line, from 1 (the header is line 1).
    pub line: u64,
    /// The column label ([`COLUMNS`]) and the value, when the rule is about one value.
    pub column: Option<(&'static str, String)>,
    pub rule: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some((column, value)) => {
                write!(f, "line {}, {column} {value:?}: {}", self.line, self.rule)
            }
            None => write!(f, "line {}: {}", self.line, self.rule),
        }
    }
}

/// Why an import pagati is refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportPagatiError {
    /// The stream: I/O, a record over 1 MiB, text that is not UTF-8.
    #[error(transparent)]
    Csv(#[from] CsvError),
    /// The zip: unreadable, or without `<stem>.csv`.
    #[error(transparent)]
    Zip(#[from] FlowError),
    /// Rows breaking rules, in line order; `complete` is false when more were left out past
    /// [`MAX_ERRORS`].
    #[error("{}", rows_message(errors, *complete))]
    Rows {
        errors: Vec<RowError>,
        complete: bool,
    },
    #[error("the file has no data row (only a header, or nothing)")]
    Empty,
}

fn rows_message(errors: &[RowError], complete: bool) -> String {
    let mut s = format!(
        "{} error{}{}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        if complete {
            ""
        } else {
            " (stopped there, more may follow)"
        }
    );
    for e in errors {
        s.push('\n');
        s.push_str(&e.to_string());
    }
    s
}

/// Checks an uploaded file name as MyPivot does: `<codIPA>-<IUF>-1_0` with `.zip` (or, for the
/// hub, `.csv`); 1_0 is the only version. The caller checks the IPA code is the uploader's.
pub fn check_file_name(file_name: &str) -> Result<FlowName, FlowError> {
    let name = FlowName::parse(file_name)?;
    if name.version != FlowVersion::V1_0 {
        return Err(FlowError::BadVersion {
            name: file_name.to_owned(),
            version: name.version.as_str().to_owned(),
        });
    }
    Ok(name)
}

/// Decodes the CSV `<stem>.csv` of a zip (see [`FlowZip::open`] for what is checked), reading at
/// most `max_uncompressed` bytes.
pub fn decode_zip<R: Read + Seek>(
    zip: R,
    stem: &str,
    max_uncompressed: u64,
) -> Result<Vec<Notification>, ImportPagatiError> {
    let mut zip = FlowZip::open(zip, stem, max_uncompressed)?;
    let csv = zip.csv()?;
    decode_csv(csv)
}

/// Decodes a whole CSV (UTF-8): every notification, or every broken rule found (up to
/// [`MAX_ERRORS`]).
pub fn decode_csv<R: Read>(input: R) -> Result<Vec<Notification>, ImportPagatiError> {
    let limits = CsvLimits {
        max_fields: COLUMNS.len() + 1,
        ..CsvLimits::default()
    };
    let mut lines = CsvLines::with_dialect(input, limits, Dialect::MYPAY)?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut first_line_of: HashMap<String, u64> = HashMap::new();
    while let Some(rec) = lines.next_record()? {
        match notification(&rec) {
            Ok(n) => {
                if let Some(first) = first_line_of.get(&n.iud) {
                    errors.push(RowError {
                        line: rec.line,
                        column: Some((COLUMNS[0], n.iud.clone())),
                        rule: format!("the IUD is already on line {first}"),
                    });
                } else {
                    first_line_of.insert(n.iud.clone(), rec.line);
                    if errors.is_empty() {
                        out.push(n);
                    }
                }
            }
            Err(mut e) => errors.append(&mut e),
        }
        if errors.len() >= MAX_ERRORS {
            errors.truncate(MAX_ERRORS);
            return Err(ImportPagatiError::Rows {
                errors,
                complete: false,
            });
        }
    }
    if !errors.is_empty() {
        return Err(ImportPagatiError::Rows {
            errors,
            complete: true,
        });
    }
    if out.is_empty() {
        return Err(ImportPagatiError::Empty);
    }
    Ok(out)
}

/// One row's notification, or every rule it breaks.
fn notification(rec: &Record<'_>) -> Result<Notification, Vec<RowError>> {
    let line = rec.line;
    let row_error = |rule: String| {
        vec![RowError {
            line,
            column: None,
            rule,
        }]
    };
    if let Some(e) = rec.error() {
        return Err(row_error(e.to_string()));
    }
    if rec.field_count() != COLUMNS.len() {
        return Err(row_error(format!(
            "{} columns expected, found {}",
            COLUMNS.len(),
            rec.field_count()
        )));
    }
    let mut errors = Vec::new();
    let mut bad = |i: usize, value: &str, rule: String| {
        errors.push(RowError {
            line,
            column: Some((COLUMNS[i], value.to_owned())),
            rule,
        });
    };
    // Trimmed, length and presence checked; `None` when empty.
    let mut values: [Option<&str>; 20] = [None; 20];
    for (i, slot) in values.iter_mut().enumerate() {
        let v = rec.field(i).trim();
        let (max, required) = RULES[i];
        let chars = v.chars().count();
        if v.is_empty() {
            if required {
                bad(i, v, "is required".to_owned());
            }
        } else if chars > max {
            bad(i, v, format!("longer than {max} characters ({chars})"));
        } else {
            *slot = Some(v);
        }
    }
    let opt = |i: usize| values[i].map(str::to_owned);
    let req = |i: usize| values[i].unwrap_or_default();

    let iuv = values[1].and_then(|v| {
        Iuv::parse(v)
            .map_err(|e| bad(1, v, format!("not a pagoPA IUV: {e}")))
            .ok()
    });
    let kind = values[2].and_then(|v| match v {
        "F" => Some('F'),
        "G" => Some('G'),
        _ => {
            bad(2, v, "must be F or G".to_owned());
            None
        }
    });
    let execution_date = values[12].and_then(|v| {
        let date = (v.len() == 10)
            .then(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
            .flatten();
        if date.is_none() {
            bad(12, v, "not a date yyyy-MM-dd".to_owned());
        }
        date
    });
    let amount = values[13].and_then(|v| {
        Amount::parse_mypay(v)
            .map_err(|e| bad(13, v, e.to_string()))
            .ok()
    });
    let mut commission = None;
    if let Some(v) = values[14] {
        match Amount::parse_decimal(v) {
            Ok(a) if a <= Amount::MYPAY_MAX => commission = Some(a),
            Ok(_) => bad(14, v, "amount must be at most 999999999.99".to_owned()),
            Err(e) => bad(14, v, e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    match (iuv, kind, execution_date, amount) {
        (Some(iuv), Some(kind), Some(execution_date), Some(amount)) => Ok(Notification {
            iud: req(0).to_owned(),
            iuv,
            payer: NotificationPayer {
                kind,
                id: req(3).to_owned(),
                name: req(4).to_owned(),
                street: opt(5),
                civic: opt(6),
                postal_code: opt(7),
                city: opt(8),
                province: opt(9),
                country: opt(10),
                email: opt(11),
            },
            execution_date,
            amount,
            commission,
            debt_type: req(15).to_owned(),
            payment_type: req(16).to_owned(),
            causale: req(17).to_owned(),
            dati_specifici: req(18).to_owned(),
            bilancio: opt(19),
        }),
        // Each `None` above pushed an error (a required value is missing or broken).
        _ => Err(row_error("a required value is missing".to_owned())),
    }
}
