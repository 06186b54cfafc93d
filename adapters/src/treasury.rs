//! Treasury files: the movements that actually reached an entity's account, decoded into
//! `snodo_core::treasury::TreasuryMovement` (the IUF or IUV already extracted from each causale).
//!
//! * `opi` ([`OPI`]): the OPI "giornale di cassa" XML the treasurer sends through SIOPE+,
//!   versions 1.4 to 1.8 ([`opi::OpiReader`]);
//! * `treasury-csv` ([`TREASURY_CSV`]): MyPivot's "giornale di cassa" CSV
//!   ([`giornale_csv::GiornaleReader`]) and Poste's account statement CSV
//!   ([`poste_csv::PosteReader`]), told apart by their first line ([`read_csv`]).
//!
//! Nothing here opens a file: callers hand in readers. Every reader streams (one movement at a
//! time) and stops at the first broken rule with an error naming the record: a file is taken
//! whole or not at all.

pub mod giornale_csv;
pub mod opi;
pub mod poste_csv;

use std::io::{self, Read};

use snodo_core::treasury::{TreasuryError, TreasuryMovement};
use snodo_core::Iban;

use crate::csv::CsvError;
use crate::text_encoding::Encoding;

#[cfg(test)]
mod tests;

/// Codec name of the OPI giornale di cassa XML, for pipelines' `decode`.
pub const OPI: &str = "opi";
/// Codec name of the treasury CSVs (MyPivot's giornale di cassa and Poste's statement).
pub const TREASURY_CSV: &str = "treasury-csv";

/// Why a treasury CSV cannot be read; each names the line (from 1) and, for a value, the column
/// (from 1) and the rule.
#[derive(Debug, thiserror::Error)]
pub enum TreasuryCsvError {
    /// The stream itself: I/O, a record over 1 MiB, text that is not in the file's encoding.
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error("line 1: {reason}")]
    FirstLine { reason: String },
    #[error("line {line}: {reason}")]
    Row { line: u64, reason: String },
    #[error("line {line}, column {column}: {error}")]
    Field {
        line: u64,
        column: usize,
        error: TreasuryError,
    },
}

impl TreasuryCsvError {
    /// A value's error; `index` counts columns from 0.
    pub(crate) fn field(line: u64, index: usize, error: TreasuryError) -> TreasuryCsvError {
        TreasuryCsvError::Field {
            line,
            column: index + 1,
            error,
        }
    }

    /// The line the error is on, when there is one.
    pub fn line(&self) -> Option<u64> {
        match self {
            TreasuryCsvError::Csv(e) => e.line(),
            TreasuryCsvError::FirstLine { .. } => Some(1),
            TreasuryCsvError::Row { line, .. } | TreasuryCsvError::Field { line, .. } => {
                Some(*line)
            }
        }
    }
}

/// The two layouts `treasury-csv` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvLayout {
    /// MyPivot's giornale di cassa (flow type C): a header line, then one movement per line.
    GiornaleDiCassa,
    /// Poste's account statement (flow type Y): line 1 ends with the account's IBAN.
    PosteStatement,
}

impl CsvLayout {
    pub fn name(self) -> &'static str {
        match self {
            CsvLayout::GiornaleDiCassa => "giornale-di-cassa",
            CsvLayout::PosteStatement => "poste",
        }
    }

    /// What the file is in unless the pipeline says otherwise: UTF-8 for MyPivot's CSV,
    /// ISO-8859-15 for Poste's statement (as MyPivot reads each).
    pub fn default_encoding(self) -> Encoding {
        match self {
            CsvLayout::GiornaleDiCassa => Encoding::Utf8,
            CsvLayout::PosteStatement => Encoding::Iso8859_15,
        }
    }

    /// The layout of a file from its first line: Poste's when the line's last non-empty
    /// `;`-separated field is a valid IBAN (check digits included), MyPivot's otherwise (its
    /// first line is a header, whatever it says).
    pub fn detect(first_line: &[u8]) -> CsvLayout {
        let line = first_line.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        // The IBAN is ASCII: other bytes (any encoding) cannot be part of it.
        if poste_csv::first_line_iban(&String::from_utf8_lossy(line)).is_some() {
            CsvLayout::PosteStatement
        } else {
            CsvLayout::GiornaleDiCassa
        }
    }
}

/// A `treasury-csv` reader of either layout.
pub enum TreasuryCsvReader<'r> {
    Giornale(giornale_csv::GiornaleReader<Box<dyn Read + 'r>>),
    Poste(poste_csv::PosteReader<Box<dyn Read + 'r>>),
}

/// Longest first line [`read_csv`] looks at to tell the layout.
const FIRST_LINE_MAX: usize = 64 * 1024;

/// Opens a `treasury-csv` file: tells the layout from the first line ([`CsvLayout::detect`]) and
/// decodes it from `encoding`, or from the layout's default encoding when `None`.
pub fn read_csv<'r, R: Read + 'r>(
    mut input: R,
    encoding: Option<Encoding>,
) -> Result<TreasuryCsvReader<'r>, TreasuryCsvError> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.contains(&b'\n') && head.len() < FIRST_LINE_MAX {
        match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CsvError::Io(e).into()),
        }
    }
    let layout = CsvLayout::detect(&head);
    let text = encoding
        .unwrap_or(layout.default_encoding())
        .into_decoder(io::Cursor::new(head).chain(input));
    Ok(match layout {
        CsvLayout::GiornaleDiCassa => {
            TreasuryCsvReader::Giornale(giornale_csv::GiornaleReader::new(text)?)
        }
        CsvLayout::PosteStatement => TreasuryCsvReader::Poste(poste_csv::PosteReader::new(text)?),
    })
}

impl TreasuryCsvReader<'_> {
    pub fn layout(&self) -> CsvLayout {
        match self {
            TreasuryCsvReader::Giornale(_) => CsvLayout::GiornaleDiCassa,
            TreasuryCsvReader::Poste(_) => CsvLayout::PosteStatement,
        }
    }

    /// The next movement, `None` at the end. After an error the reader is finished.
    pub fn next_movement(&mut self) -> Result<Option<TreasuryMovement>, TreasuryCsvError> {
        match self {
            TreasuryCsvReader::Giornale(r) => r.next_movement(),
            TreasuryCsvReader::Poste(r) => r.next_movement(),
        }
    }

    /// The statement's account (Poste only).
    pub fn iban(&self) -> Option<&Iban> {
        match self {
            TreasuryCsvReader::Giornale(_) => None,
            TreasuryCsvReader::Poste(r) => Some(r.iban()),
        }
    }

    /// Rows read but not movements: Poste's debits (MyPivot's layout has none).
    pub fn skipped(&self) -> u64 {
        match self {
            TreasuryCsvReader::Giornale(_) => 0,
            TreasuryCsvReader::Poste(r) => r.no_credit(),
        }
    }
}

impl Iterator for TreasuryCsvReader<'_> {
    type Item = Result<TreasuryMovement, TreasuryCsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_movement().transpose()
    }
}

/// The OPI XSDs, for tests that validate what the hub reads or writes (`xmllint --schema`).
/// OPI 1.6.1's is MyPivot's copy; 1.4, 1.7.1 and 1.8 are PU's.
pub mod specs {
    pub const OPI_1_4_XSD: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/specs/opi/p4pa-payhub-activities/OPI_GIORNALE_DI_CASSA_V_1_4.xsd"
    );
    pub const OPI_1_6_1_XSD: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/specs/opi/mypivot4/OPI_GIORNALE_DI_CASSA_V_1_6_1.XSD"
    );
    pub const OPI_1_7_1_XSD: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/specs/opi/p4pa-payhub-activities/OPI_GIORNALE_DI_CASSA_V_1_7_1.xsd"
    );
    pub const OPI_1_8_XSD: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/specs/opi/p4pa-payhub-activities/OPI_GIORNALE_DI_CASSA_V_1_8.xsd"
    );
    /// The official samples (PU's tests), one per version.
    pub const OPI_SAMPLES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/specs/opi/p4pa-payhub-activities/samples"
    );
}
