//! MyPay's taxonomy table (`tassonomia.csv`, a PostgreSQL export of `mygov_tassonomia`) into the
//! core's [`TaxonomyTable`], read with the same CSV reader as the flows.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use snodo_core::ids::IdError;
use snodo_core::{TaxonomyCode, TaxonomyTable};

use crate::csv::{CsvError, CsvLimits, CsvLines, Dialect, RowError};

/// Why the taxonomy file could not be read; `line` is where the record starts (from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaxonomyTableError {
    #[error("taxonomy table line {line}: a quoted field is never closed")]
    UnterminatedQuote { line: usize },
    #[error("taxonomy table line {line}: record has {got} columns, expected at least {expected}")]
    MissingColumns {
        line: usize,
        got: usize,
        expected: usize,
    },
    #[error("taxonomy table line {line}: {error}")]
    Code { line: usize, error: IdError },
    #[error(
        "taxonomy table line {line}: column {column} is {value:?}, expected YYYY-MM-DD HH:MM:SS"
    )]
    Date {
        line: usize,
        column: usize,
        value: String,
    },
    #[error("taxonomy table: {0}")]
    Read(String),
}

// Columns of MyPay's tassonomia.csv (0-based): ..., 10 legal basis, 11 valid from,
// 12 valid until, 13 codice_tassonomico, ...
const COL_START: usize = 11;
const COL_END: usize = 12;
const COL_CODE: usize = 13;

/// Reads the text of MyPay's `tassonomia.csv`: comma-separated, fields optionally in double
/// quotes, which may span lines; inside quotes `'` escapes `"` and `'`, and `""` is also read as
/// `"`. A first line that does not start with a digit is taken as a header. Rows are kept
/// whatever their end date; see [`TaxonomyTable::is_valid_on`].
pub fn from_csv(text: &str) -> Result<TaxonomyTable, TaxonomyTableError> {
    let limits = CsvLimits {
        max_fields: 64,
        ..CsvLimits::default()
    };
    let read_error = |e: CsvError| TaxonomyTableError::Read(e.to_string());
    let mut lines =
        CsvLines::with_dialect(text.as_bytes(), limits, Dialect::POSTGRES).map_err(read_error)?;
    let mut table = TaxonomyTable::default();
    let mut first = true;
    while let Some(record) = lines.next_record().map_err(read_error)? {
        let line = usize::try_from(record.line).unwrap_or(usize::MAX);
        if record.error() == Some(RowError::UnterminatedQuote) {
            return Err(TaxonomyTableError::UnterminatedQuote { line });
        }
        if std::mem::take(&mut first) && !record.field(0).starts_with(|c: char| c.is_ascii_digit())
        {
            continue;
        }
        if record.field_count() <= COL_CODE {
            return Err(TaxonomyTableError::MissingColumns {
                line,
                got: record.field_count(),
                expected: COL_CODE + 1,
            });
        }
        let code = TaxonomyCode::parse(record.field(COL_CODE).trim())
            .map_err(|error| TaxonomyTableError::Code { line, error })?;
        let start = timestamp(record.field(COL_START), line, COL_START)?;
        let end = timestamp(record.field(COL_END), line, COL_END)?;
        table.insert(code, start, end);
    }
    Ok(table)
}

/// A value as PostgreSQL meant it: `''` inside a quoted field is one `'`.
pub fn unescape(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains("''") {
        value.replace("''", "'").into()
    } else {
        value.into()
    }
}

fn timestamp(value: &str, line: usize, column: usize) -> Result<NaiveDateTime, TaxonomyTableError> {
    let v = value.trim();
    NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f"))
        .or_else(|_| NaiveDate::parse_from_str(v, "%Y-%m-%d").map(|d| d.and_time(NaiveTime::MIN)))
        .map_err(|_| TaxonomyTableError::Date {
            line,
            column,
            value: value.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MYPAY_TABLE: &str = include_str!("../specs/mypay/tassonomia.csv");

    fn code(s: &str) -> TaxonomyCode {
        TaxonomyCode::parse(s).unwrap()
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// Every record of a text as (start line, values), `''` folded.
    fn records(text: &str) -> Vec<(u64, Vec<String>)> {
        let mut lines =
            CsvLines::with_dialect(text.as_bytes(), CsvLimits::default(), Dialect::POSTGRES)
                .unwrap();
        let mut out = Vec::new();
        while let Some(r) = lines.next_record().unwrap() {
            out.push((
                r.line,
                r.fields().map(|f| unescape(f).into_owned()).collect(),
            ));
        }
        out
    }

    #[test]
    fn mypay_table_loads_every_record() {
        let table = from_csv(MYPAY_TABLE).unwrap();
        // One code per record; quoted fields span lines, so records are fewer than lines.
        assert_eq!(table.row_count(), MYPAY_TABLE.matches(",9/").count());
        assert_eq!(table.row_count(), 499);
        // 33 codes appear twice (e.g. 9/0201100TS/ for PROVINCIA and PROVINCIA / CITTA ...).
        assert_eq!(table.len(), 466);
        // This record has '"-escaped quotes in the preceding field.
        assert!(table.contains(&code("9/0101100IM/")));
        // The record after a multi-line quoted field.
        assert!(table.contains(&code("9/0709101TS/")));
        assert!(table.contains(&code("9/1001101AP/")));
        assert!(!table.contains(&code("9/0101199IM/")));

        let c = code("9/0709100IM/");
        assert!(table.contains(&c));
        assert!(!table.is_valid_on(&c, day(2021, 3, 4)));
        assert!(table.is_valid_on(&c, day(2021, 3, 5)));
        assert!(table.is_valid_on(&c, day(2079, 12, 31)));
        assert!(!table.is_valid_on(&c, day(2080, 1, 1)));
        assert!(!table.is_valid_on(&code("9/0101199IM/"), day(2024, 1, 1)));
    }

    #[test]
    fn csv_dialect() {
        let text = "h,h,h,h,h,h,h,h,h,h,h,h,h,h\r\n\
            1,a,\"x, '\"y'\" ''z''\",\"multi\nline\",,,,,,,IM,2021-01-01 00:00:00,2022-01-01 00:00:00,9/0101100IM/,extra\r\n\
            \n\
            2,,,,,,,,,,TS,2021-01-01,2080-01-01 00:00:00,9/0101101TS/\n";
        let r = records(text);
        let (line, header) = &r[0];
        assert_eq!((*line, header.len()), (1, 14));
        let (line, row) = &r[1];
        assert_eq!(*line, 2);
        assert_eq!(row[2], "x, \"y\" 'z'");
        assert_eq!(row[3], "multi\nline");
        assert_eq!(row[14], "extra");
        let (line, row) = &r[2];
        assert_eq!((*line, row.len()), (5, 14));
        assert_eq!(r.len(), 3);

        let table = from_csv(text).unwrap();
        assert_eq!((table.len(), table.row_count()), (2, 2));
        let c = code("9/0101100IM/");
        assert!(table.is_valid_on(&c, day(2021, 12, 31)));
        assert!(!table.is_valid_on(&c, day(2022, 1, 1)));
        assert!(table.contains(&c));
    }

    #[test]
    fn csv_errors() {
        assert_eq!(
            from_csv("1,\"open\n"),
            Err(TaxonomyTableError::UnterminatedQuote { line: 1 })
        );
        assert_eq!(
            from_csv("1,2,3\n"),
            Err(TaxonomyTableError::MissingColumns {
                line: 1,
                got: 3,
                expected: 14
            })
        );
        let bad_code = "1,,,,,,,,,,IM,2021-01-01 00:00:00,2080-01-01 00:00:00,9/0101100XX/\n";
        let e = from_csv(bad_code).unwrap_err();
        assert!(matches!(e, TaxonomyTableError::Code { line: 1, .. }));
        assert_eq!(
            e.to_string(),
            "taxonomy table line 1: taxonomy code legal basis is \"XX\", expected IM, TS, SP, SA or AP"
        );
        let bad_date = "1,,,,,,,,,,IM,yesterday,2080-01-01 00:00:00,9/0101100IM/\n";
        assert!(matches!(
            from_csv(bad_date),
            Err(TaxonomyTableError::Date { column: 11, .. })
        ));
        assert_eq!(from_csv("").unwrap().len(), 0);
    }
}
