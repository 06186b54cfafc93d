//! A movement on an entity's treasury account (a line of the treasurer's "giornale di cassa"):
//! the money that actually arrived, to be matched with the PSPs' settlement flows (by IUF) or,
//! for old per-payment transfers, with single payments (by IUV).
//!
//! The treasury files (OPI XML, MyPivot's CSV, Poste's account statement) decode into
//! [`TreasuryMovement`]s; [`causale::extract`] finds the IUF or IUV in the bank transfer's
//! causale. Only incoming movements are kept: a movement is keyed per entity by
//! ([`TreasuryMovement::year`], [`TreasuryMovement::bill`]), so a file read twice gives the same
//! keys. The parsing helpers here hold the rules the decoders share; each error names the field
//! and the rule.

pub mod causale;

use chrono::NaiveDate;

use crate::amount::Amount;
use crate::settlement::Iuf;

pub use causale::extract;

/// Why a value does not fit a treasury movement; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreasuryError {
    #[error("{field} is required")]
    Missing { field: &'static str },
    #[error("{field} must be a year of 4 digits from 1999 to 2099, got {got:?}")]
    Year { field: &'static str, got: String },
    #[error("{field} must be 1 to {max} characters, got {got}")]
    Length {
        field: &'static str,
        max: usize,
        got: usize,
    },
    /// `position` counts characters from 1.
    #[error("{field} character {position} is {found:?}: {rule}")]
    Char {
        field: &'static str,
        position: usize,
        found: char,
        rule: &'static str,
    },
    #[error("{field} {got:?} is not an amount: {rule}")]
    Amount {
        field: &'static str,
        got: String,
        rule: &'static str,
    },
    #[error("{field} {got:?} is not a date ({format})")]
    Date {
        field: &'static str,
        got: String,
        format: &'static str,
    },
    #[error("{field} {got:?} is not a whole number (digits only, at most 18)")]
    Number { field: &'static str, got: String },
}

/// What the movement does to the entity's books: OPI `tipo_operazione`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MovementOperation {
    /// `ESEGUITO`: the movement is booked; it is inserted, or replaces the one with its key.
    Executed,
    /// `STORNATO`: the movement with this key is reversed; it is removed.
    Reversed,
}

impl MovementOperation {
    /// OPI's name.
    pub fn opi_name(self) -> &'static str {
        match self {
            MovementOperation::Executed => "ESEGUITO",
            MovementOperation::Reversed => "STORNATO",
        }
    }

    /// `ESEGUITO` or `STORNATO`; `None` for the others (`REGOLARIZZATO`, `RIPRISTINATO`), which
    /// bring no money in or out and are not movements for reconciliation.
    pub fn from_opi(s: &str) -> Option<MovementOperation> {
        match s {
            "ESEGUITO" => Some(MovementOperation::Executed),
            "STORNATO" => Some(MovementOperation::Reversed),
            _ => None,
        }
    }
}

/// What the causale names: the settlement flow a cumulative transfer pays (IUF), the single
/// payment an old per-payment transfer pays (IUV), or neither (the movement stays unmatched).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CausaleRef {
    Iuf(Iuf),
    /// An IUV of one of the shapes the hub issues (15 or 17 digits, or a 25-character RF
    /// reference), as the causale spells it.
    Iuv(String),
    None,
}

impl CausaleRef {
    pub fn iuf(&self) -> Option<&Iuf> {
        match self {
            CausaleRef::Iuf(i) => Some(i),
            _ => None,
        }
    }

    pub fn iuv(&self) -> Option<&str> {
        match self {
            CausaleRef::Iuv(i) => Some(i),
            _ => None,
        }
    }

    /// `"iuf"`, `"iuv"` or `"none"`, for storage and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            CausaleRef::Iuf(_) => "iuf",
            CausaleRef::Iuv(_) => "iuv",
            CausaleRef::None => "none",
        }
    }

    /// The IUF or IUV as text.
    pub fn value(&self) -> Option<&str> {
        match self {
            CausaleRef::Iuf(i) => Some(i.as_str()),
            CausaleRef::Iuv(i) => Some(i),
            CausaleRef::None => None,
        }
    }
}

/// One incoming movement on the entity's treasury account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreasuryMovement {
    /// OPI `esercizio`; the CSVs' year of the bill (anno bolletta).
    pub year: u16,
    /// OPI `numero_bolletta_quietanza` (as a number, without leading zeros); the CSVs' `cod_bolletta`.
    /// With `year`, the movement's key within the entity.
    pub bill: String,
    /// In cents; OPI's `importo` may be negative.
    pub amount: Amount,
    /// OPI `data_movimento`; the CSVs' accounting date (data contabile).
    pub accounting_date: Option<NaiveDate>,
    /// OPI `data_valuta_ente`, else `data_movimento`; the CSVs' value date (data valuta).
    pub value_date: Option<NaiveDate>,
    /// The bank transfer's remittance information, as the file has it.
    pub causale: String,
    /// Who paid: OPI `cliente/anagrafica_cliente`, the CSV's `denominazione`.
    pub payer: Option<String>,
    /// OPI `end_to_end_id` (the SCT's AT-41).
    pub end_to_end_id: Option<String>,
    /// What [`causale::extract`] finds in `causale`.
    pub reference: CausaleRef,
    pub operation: MovementOperation,
}

impl TreasuryMovement {
    /// Longest bill accepted.
    pub const BILL_MAX: usize = 35;
    /// Longest end-to-end id (OPI's `end_to_end_id`, SEPA's AT-41).
    pub const END_TO_END_MAX: usize = 35;

    /// The movement's key within its entity.
    pub fn key(&self) -> (u16, &str) {
        (self.year, &self.bill)
    }

    /// Checks what the decoders do not already guarantee: a built movement (by a decoder, a
    /// simulator or the API) that passes can be stored.
    pub fn validate(&self) -> Result<(), TreasuryError> {
        if !(YEARS.contains(&self.year)) {
            return Err(TreasuryError::Year {
                field: "year",
                got: self.year.to_string(),
            });
        }
        check_bill("bill", &self.bill)?;
        if let Some(e2e) = &self.end_to_end_id {
            check_length("end_to_end_id", e2e, Self::END_TO_END_MAX)?;
        }
        Ok(())
    }
}

const YEARS: std::ops::RangeInclusive<u16> = 1999..=2099;

/// A year of 4 digits from 1999 to 2099 (OPI's `esercizio`), surrounding spaces ignored.
pub fn parse_year(field: &'static str, text: &str) -> Result<u16, TreasuryError> {
    let t = text.trim();
    let bad = || TreasuryError::Year {
        field,
        got: text.to_owned(),
    };
    if t.len() != 4 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    t.parse::<u16>()
        .ok()
        .filter(|y| YEARS.contains(y))
        .ok_or_else(bad)
}

/// A bill as a file names it: 1 to 35 characters, none of them a space or a control character.
pub fn check_bill(field: &'static str, bill: &str) -> Result<(), TreasuryError> {
    check_length(field, bill, TreasuryMovement::BILL_MAX)?;
    match bill
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_whitespace() || c.is_control())
    {
        Some((i, c)) => Err(TreasuryError::Char {
            field,
            position: i + 1,
            found: c,
            rule: "a bill has no spaces or control characters",
        }),
        None => Ok(()),
    }
}

fn check_length(field: &'static str, value: &str, max: usize) -> Result<(), TreasuryError> {
    let got = value.chars().count();
    if (1..=max).contains(&got) {
        Ok(())
    } else {
        Err(TreasuryError::Length { field, max, got })
    }
}

/// A whole number as OPI writes a bill (`xs:nonNegativeInteger`, e.g. `0074056`), in its
/// canonical form without leading zeros (`74056`), as MyPivot and PU store it.
pub fn parse_bill_number(field: &'static str, text: &str) -> Result<String, TreasuryError> {
    let t = text.trim();
    let digits = t.strip_prefix('+').unwrap_or(t);
    let bad = || TreasuryError::Number {
        field,
        got: text.to_owned(),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let canonical = digits.trim_start_matches('0');
    if canonical.len() > 18 {
        return Err(bad());
    }
    Ok(if canonical.is_empty() {
        "0".to_owned()
    } else {
        canonical.to_owned()
    })
}

/// The decimal mark of a file's amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalMark {
    /// `12.50` only (OPI's `xs:decimal`, MyPivot's CSV).
    Dot,
    /// `12,50` or `12.50` (Poste's statement, written the Italian way).
    DotOrComma,
}

/// An amount in euro into exact cents: an optional sign, digits, and at most 2 decimals after
/// the decimal mark (`12`, `12.5`, `-0.01`, `.50`; XSD's `xs:decimal` lexical form), at most 15
/// digits. No thousands separators, no exponent, no floats.
pub fn parse_amount(
    field: &'static str,
    text: &str,
    mark: DecimalMark,
) -> Result<Amount, TreasuryError> {
    let t = text.trim();
    let bad = |rule: &'static str| TreasuryError::Amount {
        field,
        got: text.to_owned(),
        rule,
    };
    if t.is_empty() {
        return Err(TreasuryError::Missing { field });
    }
    let (negative, body) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let is_mark = |c: char| c == '.' || (c == ',' && mark == DecimalMark::DotOrComma);
    let (int, dec) = match body.find(is_mark) {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(dec) {
        return Err(bad(match mark {
            DecimalMark::Dot => {
                "digits with an optional sign and '.' as the decimal mark (no thousands separators)"
            }
            DecimalMark::DotOrComma => {
                "digits with an optional sign and ',' or '.' as the decimal mark (no thousands separators)"
            }
        }));
    }
    if int.is_empty() && dec.is_empty() {
        return Err(bad("no digits"));
    }
    if dec.len() > 2 {
        return Err(bad("at most 2 decimals (cents)"));
    }
    if int.len() + dec.len() > 15 {
        return Err(bad("at most 15 digits"));
    }
    // At most 15 digits: the sum cannot overflow.
    let units = int.bytes().fold(0i64, |n, b| n * 10 + i64::from(b - b'0'));
    let mut cents = 0i64;
    for (i, b) in dec.bytes().enumerate() {
        cents += i64::from(b - b'0') * if i == 0 { 10 } else { 1 };
    }
    let v = units * 100 + cents;
    Ok(Amount::from_cents(if negative { -v } else { v }))
}

/// How a file writes its dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFormat {
    /// `yyyy-mm-dd` (OPI's `xs:date`, which may add a zone, ignored; MyPivot's CSV).
    Iso,
    /// `dd/mm/yyyy` (Poste's statement); `yyyy-mm-dd` is accepted too.
    Italian,
}

/// A calendar day; surrounding spaces ignored.
pub fn parse_date(
    field: &'static str,
    text: &str,
    format: DateFormat,
) -> Result<NaiveDate, TreasuryError> {
    let t = text.trim();
    let iso = |s: &str| -> Option<NaiveDate> {
        // xs:date may carry a zone (`2022-09-29Z`, `2022-09-29+02:00`): the day is what counts.
        let day = s.get(..10)?;
        let rest = s.get(10..)?;
        let zone_ok = rest.is_empty()
            || rest == "Z"
            || (rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')));
        if !zone_ok || day.len() != 10 || day.as_bytes()[4] != b'-' {
            return None;
        }
        NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
    };
    let parsed = match format {
        DateFormat::Iso => iso(t),
        DateFormat::Italian => {
            if t.len() == 10 && t.as_bytes().get(2) == Some(&b'/') {
                NaiveDate::parse_from_str(t, "%d/%m/%Y").ok()
            } else {
                iso(t)
            }
        }
    };
    parsed.ok_or_else(|| {
        if t.is_empty() {
            TreasuryError::Missing { field }
        } else {
            TreasuryError::Date {
                field,
                got: text.to_owned(),
                format: match format {
                    DateFormat::Iso => "yyyy-mm-dd",
                    DateFormat::Italian => "dd/mm/yyyy",
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn amounts_are_exact_cents_with_at_most_two_decimals() {
        let ok = |s: &str, mark| parse_amount("importo", s, mark).map(Amount::cents);
        assert_eq!(ok("5015.87", DecimalMark::Dot), Ok(501_587));
        assert_eq!(ok(" 12 ", DecimalMark::Dot), Ok(1200));
        assert_eq!(ok("12.5", DecimalMark::Dot), Ok(1250));
        assert_eq!(ok("-0.01", DecimalMark::Dot), Ok(-1));
        assert_eq!(ok("+3.00", DecimalMark::Dot), Ok(300));
        assert_eq!(ok(".50", DecimalMark::Dot), Ok(50));
        assert_eq!(ok("7.", DecimalMark::Dot), Ok(700));
        assert_eq!(ok("0.00", DecimalMark::Dot), Ok(0));
        assert_eq!(ok("1234,56", DecimalMark::DotOrComma), Ok(123_456));
        assert_eq!(
            ok("9999999999999.99", DecimalMark::Dot),
            Ok(999_999_999_999_999)
        );
        let rule = |s: &str, mark| match parse_amount("importo", s, mark) {
            Err(TreasuryError::Amount { rule, .. }) => rule,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(
            rule("12.500", DecimalMark::Dot),
            "at most 2 decimals (cents)"
        );
        assert!(rule("12,50", DecimalMark::Dot).contains("'.' as the decimal mark"));
        assert!(rule("1.234,56", DecimalMark::DotOrComma).contains("no thousands separators"));
        assert!(rule("1e3", DecimalMark::Dot).contains("digits"));
        assert!(rule("abc", DecimalMark::Dot).contains("digits"));
        assert_eq!(rule(".", DecimalMark::Dot), "no digits");
        assert_eq!(rule("-", DecimalMark::Dot), "no digits");
        assert_eq!(
            rule("99999999999999.99", DecimalMark::Dot),
            "at most 15 digits"
        );
        assert_eq!(
            parse_amount("importo", "  ", DecimalMark::Dot),
            Err(TreasuryError::Missing { field: "importo" })
        );
        let msg = parse_amount("importo", "12.345", DecimalMark::Dot)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "importo \"12.345\" is not an amount: at most 2 decimals (cents)"
        );
    }

    #[test]
    fn years_bills_and_dates() {
        assert_eq!(parse_year("esercizio", "2022"), Ok(2022));
        assert!(parse_year("esercizio", "1998").is_err());
        assert!(parse_year("esercizio", "22").is_err());
        assert!(parse_year("esercizio", "２０２２").is_err());
        assert_eq!(
            parse_bill_number("numero_bolletta_quietanza", "0074056").as_deref(),
            Ok("74056")
        );
        assert_eq!(parse_bill_number("n", "000").as_deref(), Ok("0"));
        assert!(parse_bill_number("n", "12a").is_err());
        assert!(parse_bill_number("n", "").is_err());
        assert!(parse_bill_number("n", &"9".repeat(19)).is_err());
        assert!(check_bill("cod_bolletta", "P000001").is_ok());
        assert!(matches!(
            check_bill("cod_bolletta", "A 1"),
            Err(TreasuryError::Char { position: 2, .. })
        ));
        assert!(check_bill("cod_bolletta", "").is_err());
        assert_eq!(
            parse_date("data_movimento", "2022-09-29", DateFormat::Iso),
            Ok(day(2022, 9, 29))
        );
        assert_eq!(
            parse_date("data_movimento", "2022-09-29+02:00", DateFormat::Iso),
            Ok(day(2022, 9, 29))
        );
        assert_eq!(
            parse_date("data contabile", "23/09/2025", DateFormat::Italian),
            Ok(day(2025, 9, 23))
        );
        assert_eq!(
            parse_date("data contabile", "2025-09-23", DateFormat::Italian),
            Ok(day(2025, 9, 23))
        );
        assert!(parse_date("d", "29/09/2022", DateFormat::Iso).is_err());
        assert!(parse_date("d", "2022-02-30", DateFormat::Iso).is_err());
        assert_eq!(
            parse_date("d", "", DateFormat::Iso),
            Err(TreasuryError::Missing { field: "d" })
        );
    }

    #[test]
    fn a_movement_validates_its_key() {
        let m = TreasuryMovement {
            year: 2022,
            bill: "74056".into(),
            amount: Amount::from_cents(501_587),
            accounting_date: Some(day(2022, 9, 29)),
            value_date: None,
            causale: "MUTUO".into(),
            payer: None,
            end_to_end_id: None,
            reference: CausaleRef::None,
            operation: MovementOperation::Executed,
        };
        assert_eq!(m.validate(), Ok(()));
        assert_eq!(m.key(), (2022, "74056"));
        let bad = TreasuryMovement {
            year: 1800,
            ..m.clone()
        };
        assert!(matches!(
            bad.validate(),
            Err(TreasuryError::Year { field: "year", .. })
        ));
        let bad = TreasuryMovement {
            end_to_end_id: Some("E".repeat(36)),
            ..m
        };
        assert_eq!(
            bad.validate(),
            Err(TreasuryError::Length {
                field: "end_to_end_id",
                max: 35,
                got: 36
            })
        );
    }

    #[test]
    fn operations_map_opi_names() {
        for op in [MovementOperation::Executed, MovementOperation::Reversed] {
            assert_eq!(MovementOperation::from_opi(op.opi_name()), Some(op));
        }
        assert_eq!(MovementOperation::from_opi("REGOLARIZZATO"), None);
        assert_eq!(MovementOperation::from_opi("eseguito"), None);
    }
}
