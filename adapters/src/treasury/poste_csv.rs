//! Poste Italiane's account statement CSV ("estratto conto", MyPivot's flow type Y,
//! `Load_Flusso_estratto_conto_poste`): the movements of a BancoPosta account, of which the
//! credits are the incoming movements.
//!
//! ISO-8859-15 (decoded by [`super::read_csv`]; [`PosteReader`] reads UTF-8 text), `;`.
//! Line 1 ends with the account's IBAN (`…;<IBAN>`); line 2 names the columns and is skipped, as
//! MyPivot skips both. Then one movement per line:
//!
//! | # | column | rule |
//! |---|---|---|
//! | 1 | data contabile | accounting date `dd/mm/yyyy` (or `yyyy-mm-dd`) |
//! | 2 | data valuta | value date, same format (optional) |
//! | 3 | cod causale | Poste's operation code |
//! | 4 | causale | Poste's operation name |
//! | 5 | divisa | currency |
//! | 6 | importo debito | debit: rows with no credit are skipped (counted) |
//! | 7 | importo credito | credit, `,` or `.` decimals, at most 2 |
//! | 8 | accessoria | |
//! | 9 | causale movimento | the transfer's causale; IUF/IUV extracted |
//!
//! Differences from MyPivot, on purpose:
//! * a credit whose causale names neither an IUF nor an IUV is **kept** (with
//!   [`snodo_core::treasury::CausaleRef::None`], unmatched) where MyPivot drops it: money that
//!   arrived is never lost from view;
//! * the statement has no bill numbers (MyPivot writes `P000000` for every row): the bill is
//!   made from the row itself, `P` + 16 hex digits of a hash of the IBAN, the dates, the
//!   operation code, the amount and the causale, with `-2`, `-3`… for identical rows of the same
//!   file. The same row in a later (overlapping) statement gets the same key; the year is the
//!   accounting date's;
//! * the last line is skipped as the statement's footer (as MyPivot) only when its accounting
//!   date is not a date; any other row that breaks a rule stops the file with an error naming
//!   the line and the column.

use std::collections::HashMap;
use std::io::Read;

use chrono::{Datelike, NaiveDate};
use snodo_core::treasury::{
    extract, parse_amount, parse_date, DateFormat, DecimalMark, MovementOperation, TreasuryError,
    TreasuryMovement,
};
use snodo_core::Iban;

use super::TreasuryCsvError;
use crate::csv::{CsvLimits, CsvLines, Dialect, Record};

/// The columns, in order.
pub const COLUMNS: [&str; 9] = [
    "data contabile",
    "data valuta",
    "cod causale",
    "causale",
    "divisa",
    "importo debito",
    "importo credito",
    "accessoria",
    "causale movimento",
];
const ACCOUNTING: usize = 0;
const VALUE: usize = 1;
const CODE: usize = 2;
const CREDIT: usize = 6;
const CAUSALE: usize = 8;

/// The IBAN at the end of a statement's first line (`…;<IBAN>`), if it is one.
pub fn first_line_iban(line: &str) -> Option<Iban> {
    let last = line
        .trim_start_matches('\u{feff}')
        .split(';')
        .map(str::trim)
        .rfind(|f| !f.is_empty())?;
    Iban::parse(last).ok()
}

/// Reads a Poste account statement (UTF-8 text).
pub struct PosteReader<R: Read> {
    lines: CsvLines<R>,
    iban: Iban,
    /// How many times each row hash was seen, for identical rows.
    seen: HashMap<u64, u32>,
    /// A row whose accounting date is not a date: the footer if nothing follows.
    held: Option<TreasuryCsvError>,
    no_credit: u64,
    footer: bool,
    done: bool,
}

/// Why one row is not a movement.
enum RowFailure {
    /// Its accounting date is not a date: the footer, if it is the last line.
    NotADate(TreasuryCsvError),
    Other(TreasuryCsvError),
}

impl<R: Read> PosteReader<R> {
    /// Reads line 1 and its IBAN.
    pub fn new(input: R) -> Result<PosteReader<R>, TreasuryCsvError> {
        let lines = CsvLines::with_dialect(input, CsvLimits::default(), Dialect::MYPAY)?;
        let iban = first_line_iban(lines.header()).ok_or_else(|| TreasuryCsvError::FirstLine {
            reason: format!(
                "a Poste statement's first line ends with the account's IBAN (…;<IBAN>), found {:?}",
                lines.header()
            ),
        })?;
        Ok(PosteReader {
            lines,
            iban,
            seen: HashMap::new(),
            held: None,
            no_credit: 0,
            footer: false,
            done: false,
        })
    }

    /// The account's IBAN, from line 1.
    pub fn iban(&self) -> &Iban {
        &self.iban
    }

    /// Rows skipped because they hold no credit (debits).
    pub fn no_credit(&self) -> u64 {
        self.no_credit
    }

    /// Whether the last line was skipped as the statement's footer.
    pub fn footer_skipped(&self) -> bool {
        self.footer
    }

    /// The next credit, `None` at the end. After an error the reader is finished.
    pub fn next_movement(&mut self) -> Result<Option<TreasuryMovement>, TreasuryCsvError> {
        if self.done {
            return Ok(None);
        }
        let next = self.advance();
        if !matches!(next, Ok(Some(_))) {
            self.done = true;
        }
        next
    }

    fn advance(&mut self) -> Result<Option<TreasuryMovement>, TreasuryCsvError> {
        loop {
            let parsed = match self.lines.next_record()? {
                None => {
                    self.footer = self.held.take().is_some();
                    return Ok(None);
                }
                // Line 2 names the columns.
                Some(rec) if rec.line == 2 => continue,
                Some(rec) => row(&rec, &self.iban, &mut self.seen),
            };
            if let Some(e) = self.held.take() {
                return Err(e);
            }
            match parsed {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) => self.no_credit += 1,
                Err(RowFailure::NotADate(e)) => self.held = Some(e),
                Err(RowFailure::Other(e)) => return Err(e),
            }
        }
    }
}

fn row(
    rec: &Record<'_>,
    iban: &Iban,
    seen: &mut HashMap<u64, u32>,
) -> Result<Option<TreasuryMovement>, RowFailure> {
    let line = rec.line;
    let col = |i: usize| rec.field(i).trim();
    let at =
        |i: usize| move |e: TreasuryError| RowFailure::Other(TreasuryCsvError::field(line, i, e));
    let accounting = parse_date(COLUMNS[ACCOUNTING], col(ACCOUNTING), DateFormat::Italian)
        .map_err(|e| RowFailure::NotADate(TreasuryCsvError::field(line, ACCOUNTING, e)))?;
    if let Some(e) = rec.error() {
        return Err(RowFailure::Other(TreasuryCsvError::Row {
            line,
            reason: e.to_string(),
        }));
    }
    if rec.field_count() < COLUMNS.len() {
        return Err(RowFailure::Other(TreasuryCsvError::Row {
            line,
            reason: format!(
                "{} columns expected ({}), found {}",
                COLUMNS.len(),
                COLUMNS.join(";"),
                rec.field_count()
            ),
        }));
    }
    let credit = col(CREDIT);
    if credit.is_empty() {
        return Ok(None);
    }
    let amount =
        parse_amount(COLUMNS[CREDIT], credit, DecimalMark::DotOrComma).map_err(at(CREDIT))?;
    let value = Some(col(VALUE))
        .filter(|v| !v.is_empty())
        .map(|v| parse_date(COLUMNS[VALUE], v, DateFormat::Italian))
        .transpose()
        .map_err(at(VALUE))?;
    let year = u16::try_from(accounting.year())
        .ok()
        .filter(|y| (1999..=2099).contains(y))
        .ok_or_else(|| {
            at(ACCOUNTING)(TreasuryError::Year {
                field: COLUMNS[ACCOUNTING],
                got: accounting.year().to_string(),
            })
        })?;
    let causale = col(CAUSALE).to_owned();
    let hash = row_hash(iban, accounting, value, col(CODE), amount.cents(), &causale);
    let n = seen.entry(hash).or_insert(0);
    *n += 1;
    let bill = if *n == 1 {
        format!("P{hash:016x}")
    } else {
        format!("P{hash:016x}-{n}")
    };
    Ok(Some(TreasuryMovement {
        year,
        bill,
        amount,
        accounting_date: Some(accounting),
        value_date: value,
        reference: extract(&causale),
        causale,
        payer: None,
        end_to_end_id: None,
        operation: MovementOperation::Executed,
    }))
}

/// FNV-1a (64 bits) of the row's facts: stable across runs, platforms and versions.
fn row_hash(
    iban: &Iban,
    accounting: NaiveDate,
    value: Option<NaiveDate>,
    code: &str,
    cents: i64,
    causale: &str,
) -> u64 {
    let accounting = accounting.to_string();
    let value = value.map(|d| d.to_string()).unwrap_or_default();
    let cents = cents.to_string();
    let parts: [&[u8]; 6] = [
        iban.as_str().as_bytes(),
        accounting.as_bytes(),
        value.as_bytes(),
        code.as_bytes(),
        cents.as_bytes(),
        causale.as_bytes(),
    ];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0x1f]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}
