//! pagoPA taxonomy codes (`transferCategory`, MyPay `datiSpecificiRiscossione`) and the table of
//! codes in force, so a transfer is never sent with a category pagoPA does not know.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

use crate::ids::{bad_char, expect_len, string_id, IdError};

/// A strict taxonomy code: `9/` + EC type (2) + macro area (2) + service type (3) + legal basis
/// (IM|TS|SP|SA|AP) + `/`, e.g. `9/0101100IM/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaxonomyCode(String);

impl TaxonomyCode {
    const WHAT: &'static str = "taxonomy code";
    const LEN: usize = 12;
    const LEGAL_BASES: [&'static [u8; 2]; 5] = [b"IM", b"TS", b"SP", b"SA", b"AP"];
    const LEGAL_BASIS_RULE: &'static str = "IM, TS, SP, SA or AP";

    pub fn parse(s: &str) -> Result<Self, IdError> {
        expect_len(
            s,
            Self::LEN,
            Self::WHAT,
            "12 characters: 9/ + 7 digits + IM, TS, SP, SA or AP + / (e.g. 9/0101100IM/)",
        )?;
        let b = s.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            let (ok, expected) = match i {
                0 => (c == b'9', "'9'"),
                1 | 11 => (c == b'/', "'/'"),
                2..=8 => (c.is_ascii_digit(), "a digit"),
                _ => (c.is_ascii(), Self::LEGAL_BASIS_RULE),
            };
            if !ok {
                return Err(bad_char(s, i, Self::WHAT, expected));
            }
            if i == 10 && !Self::LEGAL_BASES.iter().any(|l| l[..] == b[9..11]) {
                return Err(IdError::TaxonomyLegalBasis {
                    found: s.get(9..11).unwrap_or_default().to_owned(),
                });
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The code at the start of a MyPay `datiSpecificiRiscossione`, which may carry free text
    /// after it; `None` if the start is not a strict code.
    pub fn from_dati_specifici(s: &str) -> Option<TaxonomyCode> {
        s.get(..Self::LEN).and_then(|p| Self::parse(p).ok())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Type of creditor entity (e.g. `01` municipality).
    pub fn ec_type(&self) -> &str {
        &self.0[2..4]
    }

    pub fn macro_area(&self) -> &str {
        &self.0[4..6]
    }

    pub fn service_type(&self) -> &str {
        &self.0[6..9]
    }

    /// IM, TS, SP, SA or AP.
    pub fn legal_basis(&self) -> &str {
        &self.0[9..11]
    }
}

string_id!(TaxonomyCode, "a pagoPA taxonomy code such as 9/0101100IM/");

/// MyPay's rule for `datiSpecificiRiscossione`: `^[0129]/\S{3,138}$`, with Java's meaning of
/// `\S` (not space, tab, newline, vertical tab, form feed or carriage return) and length counted
/// in UTF-16 units, so that the hub rejects exactly what MyPay rejects.
pub fn dati_specifici_riscossione_valid(s: &str) -> bool {
    let mut chars = s.chars();
    if !matches!(chars.next(), Some('0' | '1' | '2' | '9')) || chars.next() != Some('/') {
        return false;
    }
    let mut units = 0usize;
    for c in chars {
        if matches!(c, ' ' | '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r') {
            return false;
        }
        units += c.len_utf16();
    }
    (3..=138).contains(&units)
}

// ---------------------------------------------------------------------------------------------

/// Half-open validity period `[start, end)` of one table row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Validity {
    start: NaiveDateTime,
    end: NaiveDateTime,
}

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
}

/// The taxonomy codes MyPay knows (`mygov_tassonomia`), with their validity periods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaxonomyTable {
    codes: HashMap<TaxonomyCode, Vec<Validity>>,
}

impl TaxonomyTable {
    // Columns of MyPay's tassonomia.csv (0-based): ..., 10 legal basis, 11 valid from,
    // 12 valid until, 13 codice_tassonomico, ...
    const COL_START: usize = 11;
    const COL_END: usize = 12;
    const COL_CODE: usize = 13;

    /// Reads the text of MyPay's `tassonomia.csv`: a PostgreSQL CSV export (comma-separated,
    /// fields optionally in double quotes, which may span lines; inside quotes `'` escapes `"`
    /// and `'`, and `""` is also read as `"`). A first line that does not start with a digit is
    /// taken as a header. Rows are kept whatever their end date; see [`Self::is_valid_on`].
    pub fn from_csv(text: &str) -> Result<TaxonomyTable, TaxonomyTableError> {
        let mut codes: HashMap<TaxonomyCode, Vec<Validity>> = HashMap::new();
        let mut records = CsvRecords::new(text);
        let mut first = true;
        while let Some(record) = records.next_record() {
            let (line, fields) = record?;
            if std::mem::take(&mut first)
                && !fields
                    .first()
                    .is_some_and(|f| f.starts_with(|c: char| c.is_ascii_digit()))
            {
                continue;
            }
            if fields.len() <= Self::COL_CODE {
                return Err(TaxonomyTableError::MissingColumns {
                    line,
                    got: fields.len(),
                    expected: Self::COL_CODE + 1,
                });
            }
            let code = TaxonomyCode::parse(fields[Self::COL_CODE].trim())
                .map_err(|error| TaxonomyTableError::Code { line, error })?;
            let start = parse_timestamp(&fields[Self::COL_START], line, Self::COL_START)?;
            let end = parse_timestamp(&fields[Self::COL_END], line, Self::COL_END)?;
            codes.entry(code).or_default().push(Validity { start, end });
        }
        Ok(Self { codes })
    }

    /// Whether the code is in the table, whatever its validity dates.
    pub fn contains(&self, code: &TaxonomyCode) -> bool {
        self.codes.contains_key(code)
    }

    /// Whether some row of the code is in force for part of `date` (periods are `[start, end)`).
    pub fn is_valid_on(&self, code: &TaxonomyCode, date: NaiveDate) -> bool {
        let day_start = date.and_time(NaiveTime::MIN);
        let next_day = date
            .succ_opt()
            .map_or(NaiveDateTime::MAX, |d| d.and_time(NaiveTime::MIN));
        self.codes.get(code).is_some_and(|periods| {
            periods
                .iter()
                .any(|p| p.start < next_day && p.end > day_start)
        })
    }

    /// Number of distinct codes (MyPay repeats some under different entity-type labels).
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Number of rows read, repeated codes included.
    pub fn row_count(&self) -> usize {
        self.codes.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    pub fn codes(&self) -> impl Iterator<Item = &TaxonomyCode> {
        self.codes.keys()
    }
}

fn parse_timestamp(
    value: &str,
    line: usize,
    column: usize,
) -> Result<NaiveDateTime, TaxonomyTableError> {
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

/// Minimal reader for the PostgreSQL CSV dialect of `tassonomia.csv` (see
/// [`TaxonomyTable::from_csv`]). Blank lines are skipped.
struct CsvRecords<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> CsvRecords<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            bytes: text.as_bytes(),
            pos: 0,
            line: 1,
        }
    }

    /// The next record with the line it starts on.
    fn next_record(&mut self) -> Option<Result<(usize, Vec<String>), TaxonomyTableError>> {
        let b = self.bytes;
        loop {
            if self.pos >= b.len() {
                return None;
            }
            let start_line = self.line;
            let mut fields = Vec::new();
            let mut field: Vec<u8> = Vec::new();
            let mut in_quotes = false;
            let mut quoted = false;
            let mut i = self.pos;
            let finished = loop {
                let Some(&c) = b.get(i) else {
                    if in_quotes {
                        self.pos = b.len();
                        return Some(Err(TaxonomyTableError::UnterminatedQuote {
                            line: start_line,
                        }));
                    }
                    break i;
                };
                let next = b.get(i + 1).copied();
                if in_quotes {
                    match (c, next) {
                        (b'\'', Some(n @ (b'"' | b'\''))) | (b'"', Some(n @ b'"')) => {
                            field.push(n);
                            i += 2;
                            continue;
                        }
                        (b'"', _) => in_quotes = false,
                        (b'\n', _) => {
                            self.line += 1;
                            field.push(c);
                        }
                        _ => field.push(c),
                    }
                } else {
                    match c {
                        b'"' => {
                            in_quotes = true;
                            quoted = true;
                        }
                        b',' => fields.push(take_string(&mut field)),
                        b'\r' if next == Some(b'\n') => {}
                        b'\n' => {
                            self.line += 1;
                            break i + 1;
                        }
                        _ => field.push(c),
                    }
                }
                i += 1;
            };
            self.pos = finished;
            if fields.is_empty() && field.is_empty() && !quoted {
                continue;
            }
            fields.push(take_string(&mut field));
            return Some(Ok((start_line, fields)));
        }
    }
}

/// The text of a field; only ASCII bytes are ever split or dropped, so it stays valid UTF-8.
fn take_string(field: &mut Vec<u8>) -> String {
    String::from_utf8_lossy(&std::mem::take(field)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MYPAY_TABLE: &str = include_str!("../../adapters/specs/mypay/tassonomia.csv");

    fn code(s: &str) -> TaxonomyCode {
        TaxonomyCode::parse(s).unwrap()
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn strict_codes() {
        let c = code("9/0101100IM/");
        assert_eq!(c.as_str(), "9/0101100IM/");
        assert_eq!(c.ec_type(), "01");
        assert_eq!(c.macro_area(), "01");
        assert_eq!(c.service_type(), "100");
        assert_eq!(c.legal_basis(), "IM");
        assert_eq!(c.to_string(), "9/0101100IM/");
        for ok in [
            "9/0101105AP/",
            "9/9999999TS/",
            "9/0000000SP/",
            "9/0102100SA/",
        ] {
            assert!(TaxonomyCode::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            TaxonomyCode::parse("9/0101100XX/"),
            Err(IdError::TaxonomyLegalBasis {
                found: "XX".to_owned()
            })
        );
        assert_eq!(
            TaxonomyCode::parse("9/0101100XX/").unwrap_err().to_string(),
            "taxonomy code legal basis is \"XX\", expected IM, TS, SP, SA or AP"
        );
        assert!(matches!(
            TaxonomyCode::parse("9/0101100IM"),
            Err(IdError::Length { got: 11, .. })
        ));
        assert_eq!(
            TaxonomyCode::parse("1/0101100IM/"),
            Err(IdError::Char {
                what: "taxonomy code",
                position: 1,
                found: '1',
                expected: "'9'"
            })
        );
        assert!(matches!(
            TaxonomyCode::parse("9/01A1100IM/"),
            Err(IdError::Char { position: 5, .. })
        ));
        assert!(matches!(
            TaxonomyCode::parse("9/0101100im/"),
            Err(IdError::TaxonomyLegalBasis { .. })
        ));
        assert!(matches!(
            TaxonomyCode::parse("9/0101100IMX"),
            Err(IdError::Char { position: 12, .. })
        ));
        assert!(matches!(
            TaxonomyCode::parse("9/0101100Iè"),
            Err(IdError::Char {
                position: 11,
                found: 'è',
                ..
            })
        ));
    }

    #[test]
    fn dati_specifici() {
        assert_eq!(
            TaxonomyCode::from_dati_specifici("9/0101100IM/"),
            Some(code("9/0101100IM/"))
        );
        assert_eq!(
            TaxonomyCode::from_dati_specifici("9/0101100IM/TARI-2024"),
            Some(code("9/0101100IM/"))
        );
        assert_eq!(TaxonomyCode::from_dati_specifici("9/ABC"), None);
        assert_eq!(TaxonomyCode::from_dati_specifici("1/0101100IM/"), None);
        assert_eq!(TaxonomyCode::from_dati_specifici("9/0101100IMè"), None);

        assert!(dati_specifici_riscossione_valid("9/0101100IM/"));
        assert!(dati_specifici_riscossione_valid("0/abc"));
        assert!(dati_specifici_riscossione_valid("2/àè€"));
        assert!(!dati_specifici_riscossione_valid("9/ab"));
        assert!(!dati_specifici_riscossione_valid("3/abc"));
        assert!(!dati_specifici_riscossione_valid("9abc"));
        assert!(!dati_specifici_riscossione_valid("9/ab c"));
        assert!(!dati_specifici_riscossione_valid(""));
        let longest = format!("9/{}", "x".repeat(138));
        assert!(dati_specifici_riscossione_valid(&longest));
        assert!(!dati_specifici_riscossione_valid(&format!("{longest}x")));
    }

    #[test]
    fn mypay_table_loads_every_record() {
        let table = TaxonomyTable::from_csv(MYPAY_TABLE).unwrap();
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
        let mut r = CsvRecords::new(text);
        let (line, header) = r.next_record().unwrap().unwrap();
        assert_eq!((line, header.len()), (1, 14));
        let (line, row) = r.next_record().unwrap().unwrap();
        assert_eq!(line, 2);
        assert_eq!(row[2], "x, \"y\" 'z'");
        assert_eq!(row[3], "multi\nline");
        assert_eq!(row[14], "extra");
        let (line, row) = r.next_record().unwrap().unwrap();
        assert_eq!((line, row.len()), (5, 14));
        assert!(r.next_record().is_none());

        let table = TaxonomyTable::from_csv(text).unwrap();
        assert_eq!((table.len(), table.row_count()), (2, 2));
        let c = code("9/0101100IM/");
        assert!(table.is_valid_on(&c, day(2021, 12, 31)));
        assert!(!table.is_valid_on(&c, day(2022, 1, 1)));
        assert!(table.contains(&c));
    }

    #[test]
    fn csv_errors() {
        assert_eq!(
            TaxonomyTable::from_csv("1,\"open\n"),
            Err(TaxonomyTableError::UnterminatedQuote { line: 1 })
        );
        assert_eq!(
            TaxonomyTable::from_csv("1,2,3\n"),
            Err(TaxonomyTableError::MissingColumns {
                line: 1,
                got: 3,
                expected: 14
            })
        );
        let bad_code = "1,,,,,,,,,,IM,2021-01-01 00:00:00,2080-01-01 00:00:00,9/0101100XX/\n";
        let e = TaxonomyTable::from_csv(bad_code).unwrap_err();
        assert!(matches!(e, TaxonomyTableError::Code { line: 1, .. }));
        assert_eq!(
            e.to_string(),
            "taxonomy table line 1: taxonomy code legal basis is \"XX\", expected IM, TS, SP, SA or AP"
        );
        let bad_date = "1,,,,,,,,,,IM,yesterday,2080-01-01 00:00:00,9/0101100IM/\n";
        assert!(matches!(
            TaxonomyTable::from_csv(bad_date),
            Err(TaxonomyTableError::Date { column: 11, .. })
        ));
        assert_eq!(TaxonomyTable::from_csv("").unwrap().len(), 0);
    }
}
