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

/// The taxonomy codes in force (MyPay's `mygov_tassonomia`), with their validity periods. The
/// adapters read it from a file (`snodo_adapters::taxonomy`); the core only asks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaxonomyTable {
    codes: HashMap<TaxonomyCode, Vec<Validity>>,
}

impl TaxonomyTable {
    /// Adds one row: `code` in force over `[start, end)`. A code may have several rows.
    pub fn insert(&mut self, code: TaxonomyCode, start: NaiveDateTime, end: NaiveDateTime) {
        self.codes
            .entry(code)
            .or_default()
            .push(Validity { start, end });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> TaxonomyCode {
        TaxonomyCode::parse(s).unwrap()
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
}
