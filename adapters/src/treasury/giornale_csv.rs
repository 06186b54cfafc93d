//! MyPivot's "giornale di cassa" CSV (flow type C, `Load_Flusso_Giornale_Cassa`): one incoming
//! movement per row, as an entity's accounting office exports its treasury journal.
//!
//! UTF-8, `;`, quote `"` (`\"` and `""` inside quotes), the first line a header skipped
//! whatever it says, blank lines skipped, values trimmed. Columns (MyPivot's default positions):
//!
//! | # | column | rule |
//! |---|---|---|
//! | 1 | anno bolletta | year, 4 digits (1999–2099) |
//! | 2 | cod bolletta | the bill, 1 to 7 characters, no spaces |
//! | 3 | dt contabile | accounting date `yyyy-mm-dd` |
//! | 4 | denominazione | who paid (optional) |
//! | 5 | causale | the transfer's causale (may be empty); IUF/IUV extracted |
//! | 6 | importo | amount, `.` decimals, at most 2 |
//! | 7 | dt valuta | value date `yyyy-mm-dd` |
//!
//! Further columns are ignored. Every row is a movement (`ESEGUITO`); a row breaking a rule
//! stops the file with an error naming the line and the column.

use std::io::Read;

use snodo_core::treasury::{
    check_bill, extract, parse_amount, parse_date, parse_year, DateFormat, DecimalMark,
    MovementOperation, TreasuryError, TreasuryMovement,
};

use super::TreasuryCsvError;
use crate::csv::{CsvLimits, CsvLines, Dialect, Record};

/// The columns, in order.
pub const COLUMNS: [&str; 7] = [
    "anno bolletta",
    "cod bolletta",
    "dt contabile",
    "denominazione",
    "causale",
    "importo",
    "dt valuta",
];
/// MyPivot's longest `cod_bolletta`.
pub const BILL_MAX: usize = 7;

/// Reads the rows of a giornale di cassa CSV (UTF-8 text).
pub struct GiornaleReader<R: Read> {
    lines: CsvLines<R>,
    done: bool,
}

impl<R: Read> GiornaleReader<R> {
    /// Skips the header line.
    pub fn new(input: R) -> Result<GiornaleReader<R>, TreasuryCsvError> {
        Ok(GiornaleReader {
            lines: CsvLines::with_dialect(input, CsvLimits::default(), Dialect::MYPAY)?,
            done: false,
        })
    }

    /// The next movement, `None` at the end. After an error the reader is finished.
    pub fn next_movement(&mut self) -> Result<Option<TreasuryMovement>, TreasuryCsvError> {
        if self.done {
            return Ok(None);
        }
        let next = match self.lines.next_record() {
            Ok(Some(rec)) => movement(&rec).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e.into()),
        };
        if !matches!(next, Ok(Some(_))) {
            self.done = true;
        }
        next
    }
}

fn movement(rec: &Record<'_>) -> Result<TreasuryMovement, TreasuryCsvError> {
    let line = rec.line;
    if let Some(e) = rec.error() {
        return Err(TreasuryCsvError::Row {
            line,
            reason: e.to_string(),
        });
    }
    if rec.field_count() < COLUMNS.len() {
        return Err(TreasuryCsvError::Row {
            line,
            reason: format!(
                "{} columns expected ({}), found {}",
                COLUMNS.len(),
                COLUMNS.join(";"),
                rec.field_count()
            ),
        });
    }
    let col = |i: usize| rec.field(i).trim();
    let at = |i: usize| move |e: TreasuryError| TreasuryCsvError::field(line, i, e);
    let year = parse_year(COLUMNS[0], col(0)).map_err(at(0))?;
    let bill = col(1);
    let got = bill.chars().count();
    if !(1..=BILL_MAX).contains(&got) {
        return Err(TreasuryCsvError::field(
            line,
            1,
            TreasuryError::Length {
                field: COLUMNS[1],
                max: BILL_MAX,
                got,
            },
        ));
    }
    check_bill(COLUMNS[1], bill).map_err(at(1))?;
    let accounting = parse_date(COLUMNS[2], col(2), DateFormat::Iso).map_err(at(2))?;
    let payer = Some(col(3)).filter(|p| !p.is_empty()).map(str::to_owned);
    let causale = col(4).to_owned();
    let amount = parse_amount(COLUMNS[5], col(5), DecimalMark::Dot).map_err(at(5))?;
    let value = parse_date(COLUMNS[6], col(6), DateFormat::Iso).map_err(at(6))?;
    Ok(TreasuryMovement {
        year,
        bill: bill.to_owned(),
        amount,
        accounting_date: Some(accounting),
        value_date: Some(value),
        reference: extract(&causale),
        causale,
        payer,
        end_to_end_id: None,
        operation: MovementOperation::Executed,
    })
}
