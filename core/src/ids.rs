//! Identifiers that validate on construction, so a value of these types is always well-formed.
//!
//! Each type keeps its canonical text (one owned `String`, or less), parses with a check-digit
//! test where the identifier has one, and serialises as that text. Error messages name the rule
//! broken because they reach entity IT teams in reject files.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Visitor};

/// Implements `Display`, `FromStr`, `AsRef<str>` and serde (as the canonical string, deserialising
/// through `parse`) for a type with `as_str()` and `parse()`.
macro_rules! string_id {
    ($ty:ty, $expecting:literal) => {
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::ids::IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                deserializer.deserialize_str($crate::ids::ParseVisitor::<Self>::new($expecting))
            }
        }
    };
}
pub(crate) use string_id;

/// Deserialises any identifier from a borrowed or owned string without an extra copy.
pub(crate) struct ParseVisitor<T> {
    expecting: &'static str,
    marker: PhantomData<T>,
}

impl<T> ParseVisitor<T> {
    pub(crate) fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            marker: PhantomData,
        }
    }
}

impl<T: FromStr<Err = IdError>> Visitor<'_> for ParseVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

/// Why a string is not a valid identifier; the message names the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must be {rule}, got {got} characters")]
    Length {
        what: &'static str,
        rule: &'static str,
        got: usize,
    },
    /// `position` counts characters from 1.
    #[error("{what} character {position} is {found:?}, expected {expected}")]
    Char {
        what: &'static str,
        position: usize,
        found: char,
        expected: &'static str,
    },
    #[error("notice number aux digit is {0}, expected 0, 1, 2 or 3")]
    AuxDigit(u8),
    #[error(
        "notice number check digits are {got:02}, expected {expected:02} (first 16 digits mod 93)"
    )]
    NoticeCheckDigits { got: u8, expected: u8 },
    #[error(
        "IUV check digits are {got:02}, expected {expected:02} (\"3\" + first 15 IUV digits, mod 93)"
    )]
    IuvCheckDigits { got: u8, expected: u8 },
    #[error("segregation code must be 00 to 49, got {0:02}")]
    SegregationRange(u8),
    #[error("IUV counter for segregation code {segregation} is exhausted: {counter} does not fit in 13 digits")]
    CounterExhausted {
        segregation: SegregationCode,
        counter: u64,
    },
    #[error("RF reference must start with \"RF\" (uppercase, no spaces)")]
    RfPrefix,
    #[error("RF reference check digits are {got:02}, expected {expected:02} (ISO 11649 mod 97)")]
    RfCheckDigits { got: u8, expected: u8 },
    /// The 11-digit fiscal codes of entities and businesses.
    #[error("{what} check digit is {got}, expected {expected}")]
    CheckDigit {
        what: &'static str,
        got: char,
        expected: char,
    },
    #[error("fiscal code check character is {got}, expected {expected}")]
    FiscalCodeCheckChar { got: char, expected: char },
    #[error("IBAN checksum fails (mod 97)")]
    IbanChecksum,
    #[error("Italian IBAN CIN is {got}, expected {expected}")]
    ItalianCin { got: char, expected: char },
    #[error("taxonomy code legal basis is {found:?}, expected IM, TS, SP, SA or AP")]
    TaxonomyLegalBasis { found: String },
}

// ---------------------------------------------------------------------------------------------
// Shared checks. They work on bytes for speed and only look at characters to word an error.

/// Error for the character that contains byte `idx` (robust to non-ASCII input).
pub(crate) fn bad_char(s: &str, idx: usize, what: &'static str, expected: &'static str) -> IdError {
    let mut position = 0;
    let mut found = char::REPLACEMENT_CHARACTER;
    for (i, c) in s.char_indices() {
        if i > idx {
            break;
        }
        position += 1;
        found = c;
    }
    IdError::Char {
        what,
        position,
        found,
        expected,
    }
}

pub(crate) fn expect_len(
    s: &str,
    len: usize,
    what: &'static str,
    rule: &'static str,
) -> Result<(), IdError> {
    if s.len() == len {
        Ok(())
    } else {
        Err(IdError::Length {
            what,
            rule,
            got: s.chars().count(),
        })
    }
}

pub(crate) fn expect_digits(s: &str, what: &'static str) -> Result<(), IdError> {
    match s.bytes().position(|b| !b.is_ascii_digit()) {
        None => Ok(()),
        Some(i) => Err(bad_char(s, i, what, "a digit")),
    }
}

/// Decimal digits (already validated) taken as one integer, mod 93.
fn mod93(digits: &[u8]) -> u8 {
    mod93_after(0, digits)
}

/// Like [`mod93`] for `prefix` followed by `digits`, without building the joined number.
fn mod93_after(prefix: u32, digits: &[u8]) -> u8 {
    let r = digits
        .iter()
        .fold(prefix % 93, |acc, d| (acc * 10 + u32::from(d - b'0')) % 93);
    r as u8
}

/// Two validated decimal digits as a number.
fn two_digits(b: &[u8]) -> u8 {
    (b[0] - b'0') * 10 + (b[1] - b'0')
}

/// Feeds one ISO 7064 character (digit as is, letter A..Z as 10..35) into a running mod 97.
fn push_mod97(acc: u32, c: u8) -> u32 {
    if c.is_ascii_digit() {
        (acc * 10 + u32::from(c - b'0')) % 97
    } else {
        (acc * 100 + u32::from(c - b'A') + 10) % 97
    }
}

fn mod97(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0, |acc, &c| push_mod97(acc, c))
}

/// Values of odd positions (1st, 3rd, ...) in the fiscal code and CIN tables, for 0-9 and A-Z.
const ODD_VALUES: [u8; 26] = [
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
];

/// The check letter shared by the personal fiscal code and the Italian IBAN CIN: odd positions
/// through [`ODD_VALUES`], even positions as 0-9 / A=0..Z=25, sum mod 26 as a letter.
/// `None` if a byte is not an uppercase letter or digit.
fn italian_check_letter(bytes: &[u8]) -> Option<char> {
    let mut sum = 0u32;
    for (i, &c) in bytes.iter().enumerate() {
        let index = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A',
            _ => return None,
        };
        let value = if i % 2 == 0 {
            ODD_VALUES[usize::from(index)]
        } else {
            index
        };
        sum += u32::from(value);
    }
    Some(char::from(b'A' + (sum % 26) as u8))
}

// ---------------------------------------------------------------------------------------------

/// Segregation code 00-49: picks the generation point inside an entity, so that IUVs generated by
/// different systems of the same entity never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegregationCode(u8);

const SEGREGATION_TEXT: [&str; 50] = [
    "00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15",
    "16", "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
    "32", "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46", "47",
    "48", "49",
];

impl SegregationCode {
    const WHAT: &'static str = "segregation code";

    pub fn new(value: u8) -> Result<Self, IdError> {
        if usize::from(value) < SEGREGATION_TEXT.len() {
            Ok(Self(value))
        } else {
            Err(IdError::SegregationRange(value))
        }
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        expect_len(s, 2, Self::WHAT, "2 digits")?;
        expect_digits(s, Self::WHAT)?;
        Self::new(two_digits(s.as_bytes()))
    }

    pub fn value(self) -> u8 {
        self.0
    }

    pub fn as_str(&self) -> &'static str {
        SEGREGATION_TEXT[usize::from(self.0)]
    }
}

string_id!(SegregationCode, "a segregation code 00-49");

// ---------------------------------------------------------------------------------------------

/// The 18-digit notice number ("numero avviso") printed on the notice and used by the node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NoticeNumber(String);

impl NoticeNumber {
    const WHAT: &'static str = "notice number";

    /// Validates length, digits, aux digit (0-3) and, for aux 0, 2 and 3, the mod-93 check digits.
    ///
    /// Any two digits are accepted as the aux 3 segregation code, as the node's schema does:
    /// notices generated elsewhere may use codes this hub never assigns.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        expect_len(s, 18, Self::WHAT, "18 digits")?;
        expect_digits(s, Self::WHAT)?;
        let b = s.as_bytes();
        match b[0] - b'0' {
            1 => {}
            0 | 2 | 3 => {
                let expected = mod93(&b[..16]);
                let got = two_digits(&b[16..]);
                if got != expected {
                    return Err(IdError::NoticeCheckDigits { got, expected });
                }
            }
            aux => return Err(IdError::AuxDigit(aux)),
        }
        Ok(Self(s.to_owned()))
    }

    /// The aux-3 notice number of a 17-digit IUV: `3` + IUV, with its check digits verified.
    pub fn from_iuv17(iuv: &Iuv) -> Result<NoticeNumber, IdError> {
        if iuv.kind() != IuvKind::Digits17 {
            return Err(IdError::Length {
                what: "IUV of an aux 3 notice number",
                rule: "17 digits",
                got: iuv.as_str().len(),
            });
        }
        iuv.aux3_check()?;
        let mut s = String::with_capacity(18);
        s.push('3');
        s.push_str(iuv.as_str());
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn aux_digit(&self) -> u8 {
        self.0.as_bytes()[0] - b'0'
    }

    /// The IUV inside: the last 15 digits for aux 0 (the application code precedes them), the
    /// last 17 otherwise.
    pub fn iuv(&self) -> Iuv {
        if self.aux_digit() == 0 {
            Iuv {
                value: self.0[3..].to_owned(),
                kind: IuvKind::Digits15,
            }
        } else {
            Iuv {
                value: self.0[1..].to_owned(),
                kind: IuvKind::Digits17,
            }
        }
    }

    /// The segregation code of an aux 3 notice; `None` for other aux digits, and for codes
    /// 50-99 that no entity of this hub is assigned.
    pub fn segregation_code(&self) -> Option<SegregationCode> {
        if self.aux_digit() != 3 {
            return None;
        }
        SegregationCode::new(two_digits(&self.0.as_bytes()[1..3])).ok()
    }
}

string_id!(NoticeNumber, "an 18-digit pagoPA notice number");

// ---------------------------------------------------------------------------------------------

/// ISO 11649 creditor reference (`RF` + 2 check digits + 1-21 letters or digits), compact and
/// uppercase: the form that travels in IUVs and on the wire.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RfReference(String);

impl RfReference {
    const WHAT: &'static str = "RF reference";
    const BODY: &'static str = "RF reference body";
    const BODY_CHARS: &'static str = "an uppercase letter or digit";

    pub fn parse(s: &str) -> Result<Self, IdError> {
        validate_rf(s)?;
        Ok(Self(s.to_owned()))
    }

    /// Builds the reference for `body` (1-21 uppercase letters or digits), computing the check
    /// digits.
    pub fn create(body: &str) -> Result<Self, IdError> {
        if body.is_empty() || body.len() > 21 {
            return Err(IdError::Length {
                what: Self::BODY,
                rule: "1 to 21 letters or digits",
                got: body.chars().count(),
            });
        }
        validate_rf_body(body, Self::BODY)?;
        let check = rf_check_digits(body.as_bytes());
        let mut s = String::with_capacity(body.len() + 4);
        s.push_str("RF");
        s.push(char::from(b'0' + check / 10));
        s.push(char::from(b'0' + check % 10));
        s.push_str(body);
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `RF` and the check digits.
    pub fn body(&self) -> &str {
        &self.0[4..]
    }
}

string_id!(RfReference, "an ISO 11649 RF creditor reference");

fn validate_rf_body(body: &str, what: &'static str) -> Result<(), IdError> {
    match body
        .bytes()
        .position(|b| !(b.is_ascii_uppercase() || b.is_ascii_digit()))
    {
        None => Ok(()),
        Some(i) => Err(bad_char(body, i, what, RfReference::BODY_CHARS)),
    }
}

/// ISO 11649 check digits of a validated body: 98 - (body + "RF00" mod 97).
fn rf_check_digits(body: &[u8]) -> u8 {
    let r = b"RF00"
        .iter()
        .fold(mod97(body), |acc, &c| push_mod97(acc, c));
    (98 - r) as u8
}

fn validate_rf(s: &str) -> Result<(), IdError> {
    if s.len() < 5 || s.len() > 25 {
        return Err(IdError::Length {
            what: RfReference::WHAT,
            rule: "5 to 25 characters (RF, 2 check digits, 1 to 21 letters or digits)",
            got: s.chars().count(),
        });
    }
    let b = s.as_bytes();
    if &b[..2] != b"RF" {
        return Err(IdError::RfPrefix);
    }
    if let Some(i) = b[2..4].iter().position(|c| !c.is_ascii_digit()) {
        return Err(bad_char(
            s,
            i + 2,
            RfReference::WHAT,
            "a digit (check digits)",
        ));
    }
    if let Some(i) = b[4..]
        .iter()
        .position(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit()))
    {
        return Err(bad_char(
            s,
            i + 4,
            RfReference::WHAT,
            RfReference::BODY_CHARS,
        ));
    }
    let expected = rf_check_digits(&b[4..]);
    let got = two_digits(&b[2..4]);
    if got != expected {
        return Err(IdError::RfCheckDigits { got, expected });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

/// The three shapes an IUV (identificativo univoco di versamento) can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IuvKind {
    /// Aux 0: base (13) + check (2); the check depends on the application code, not in the IUV.
    Digits15,
    /// Aux 1, 2 or 3.
    Digits17,
    /// A full-length ISO 11649 RF reference.
    Rf25,
}

/// IUV: what identifies a payment within an entity (15 digits, 17 digits or a 25-char RF).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iuv {
    value: String,
    kind: IuvKind,
}

impl Iuv {
    const WHAT: &'static str = "IUV";
    /// 10^13: the aux 3 base has 13 digits.
    const COUNTER_LIMIT: u64 = 10_000_000_000_000;

    /// Checks the shape only: the check digits of a 17-digit IUV depend on the aux digit, which
    /// the IUV does not carry (see [`Iuv::check_digits_valid_for_aux3`]).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let kind = match s.len() {
            15 => IuvKind::Digits15,
            17 => IuvKind::Digits17,
            25 => {
                validate_rf(s)?;
                return Ok(Self {
                    value: s.to_owned(),
                    kind: IuvKind::Rf25,
                });
            }
            _ => {
                return Err(IdError::Length {
                    what: Self::WHAT,
                    rule: "15 digits, 17 digits or a 25-character RF reference",
                    got: s.chars().count(),
                })
            }
        };
        expect_digits(s, Self::WHAT)?;
        Ok(Self {
            value: s.to_owned(),
            kind,
        })
    }

    /// The aux 3 IUV for the `counter`-th payment of a segregation code: code + counter as 13
    /// digits + ("3" + code + base) mod 93.
    pub fn generate(seg: SegregationCode, counter: u64) -> Result<Iuv, IdError> {
        if counter >= Self::COUNTER_LIMIT {
            return Err(IdError::CounterExhausted {
                segregation: seg,
                counter,
            });
        }
        // The 16 digits "3" + code + base as one number.
        let head =
            3 * 100 * Self::COUNTER_LIMIT + u64::from(seg.value()) * Self::COUNTER_LIMIT + counter;
        let check = head % 93;
        Ok(Self {
            value: format!("{seg}{counter:013}{check:02}"),
            kind: IuvKind::Digits17,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    pub fn kind(&self) -> IuvKind {
        self.kind
    }

    /// Whether a 17-digit IUV ends with the check digits of an aux 3 notice (`false` for other
    /// kinds).
    pub fn check_digits_valid_for_aux3(&self) -> bool {
        self.kind == IuvKind::Digits17 && self.aux3_check().is_ok()
    }

    /// The aux 3 notice number (`3` + IUV) when the check digits fit, else `None`.
    pub fn notice_number(&self) -> Option<NoticeNumber> {
        NoticeNumber::from_iuv17(self).ok()
    }

    /// Check digits of a 17-digit IUV as part of an aux 3 notice.
    fn aux3_check(&self) -> Result<(), IdError> {
        let b = self.value.as_bytes();
        let expected = mod93_after(3, &b[..15]);
        let got = two_digits(&b[15..17]);
        if got == expected {
            Ok(())
        } else {
            Err(IdError::IuvCheckDigits { got, expected })
        }
    }
}

string_id!(
    Iuv,
    "an IUV (15 digits, 17 digits or a 25-character RF reference)"
);

// ---------------------------------------------------------------------------------------------

/// Validates an 11-digit numeric fiscal code (partita IVA algorithm): odd positions summed, even
/// positions doubled (minus 9 above 9), check = (10 - sum mod 10) mod 10.
fn validate_numeric_fiscal_code(s: &str, what: &'static str) -> Result<(), IdError> {
    expect_len(s, 11, what, "11 digits")?;
    expect_digits(s, what)?;
    let b = s.as_bytes();
    let mut sum = 0u32;
    for (i, &c) in b[..10].iter().enumerate() {
        let d = u32::from(c - b'0');
        sum += if i % 2 == 0 {
            d
        } else if d * 2 > 9 {
            d * 2 - 9
        } else {
            d * 2
        };
    }
    let expected = char::from(b'0' + ((10 - sum % 10) % 10) as u8);
    let got = char::from(b[10]);
    if got != expected {
        return Err(IdError::CheckDigit {
            what,
            got,
            expected,
        });
    }
    Ok(())
}

/// An entity's 11-digit fiscal code (`idPA`, `fiscalCodePA`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityFiscalCode(String);

impl EntityFiscalCode {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        validate_numeric_fiscal_code(s, "entity fiscal code")?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_id!(EntityFiscalCode, "an 11-digit entity fiscal code");

/// A business's partita IVA (VAT number): same shape as an entity fiscal code, kept apart so
/// the two are not mixed up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitaIva(String);

impl PartitaIva {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        validate_numeric_fiscal_code(s, "partita IVA")?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_id!(PartitaIva, "an 11-digit partita IVA");

// ---------------------------------------------------------------------------------------------

/// A person's 16-character codice fiscale, stored uppercase.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersonalFiscalCode(String);

impl PersonalFiscalCode {
    const WHAT: &'static str = "fiscal code";
    /// Positions (0-based) of the pattern LLLLLLDDLDDLDDDL that hold digits.
    const DIGIT_POSITIONS: [bool; 15] = [
        false, false, false, false, false, false, true, true, false, true, true, false, true, true,
        true,
    ];

    /// Accepts lowercase input. Digit positions also accept the omocodia letters LMNPQRSTUV,
    /// which replace digits when two people would otherwise share a code.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        expect_len(s, 16, Self::WHAT, "16 characters")?;
        let b = s.as_bytes();
        let mut upper = [0u8; 16];
        for (i, &raw) in b.iter().enumerate() {
            let c = raw.to_ascii_uppercase();
            let digit_position = Self::DIGIT_POSITIONS.get(i).copied().unwrap_or(false);
            let ok = if digit_position {
                c.is_ascii_digit() || b"LMNPQRSTUV".contains(&c)
            } else {
                c.is_ascii_uppercase()
            };
            if !ok {
                let expected = if digit_position {
                    "a digit or one of LMNPQRSTUV"
                } else {
                    "a letter"
                };
                return Err(bad_char(s, i, Self::WHAT, expected));
            }
            upper[i] = c;
        }
        // Every byte is an ASCII letter or digit here, so the check letter exists.
        let expected = italian_check_letter(&upper[..15]).unwrap_or('?');
        let got = char::from(upper[15]);
        if got != expected {
            return Err(IdError::FiscalCodeCheckChar { got, expected });
        }
        Ok(Self(s.to_ascii_uppercase()))
    }

    /// The check character for the first 15 characters of a code (case-insensitive); `None` if
    /// they are not 15 letters or digits. Does not check the pattern.
    pub fn check_char(first15: &str) -> Option<char> {
        let b = first15.as_bytes();
        if b.len() != 15 {
            return None;
        }
        let mut upper = [0u8; 15];
        for (u, c) in upper.iter_mut().zip(b) {
            *u = c.to_ascii_uppercase();
        }
        italian_check_letter(&upper)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_id!(PersonalFiscalCode, "a 16-character personal fiscal code");

// ---------------------------------------------------------------------------------------------

/// An IBAN in compact uppercase form; Italian ones also have their CIN verified, which catches
/// errors in the national part that mod 97 alone can miss.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iban(String);

impl Iban {
    const WHAT: &'static str = "IBAN";
    const IT_WHAT: &'static str = "Italian IBAN";

    /// Removes spaces and uppercases before validating, since IBANs are often written in groups.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let mut v = String::with_capacity(s.len());
        v.extend(
            s.chars()
                .filter(|&c| c != ' ')
                .map(|c| c.to_ascii_uppercase()),
        );
        Self::validate(&v)?;
        Ok(Self(v))
    }

    fn validate(v: &str) -> Result<(), IdError> {
        if v.len() < 15 || v.len() > 34 {
            return Err(IdError::Length {
                what: Self::WHAT,
                rule: "15 to 34 letters and digits (spaces ignored)",
                got: v.chars().count(),
            });
        }
        let b = v.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            let (ok, expected) = match i {
                0 | 1 => (c.is_ascii_uppercase(), "a letter (country code)"),
                2 | 3 => (c.is_ascii_digit(), "a digit (check digits)"),
                _ => (
                    c.is_ascii_uppercase() || c.is_ascii_digit(),
                    "a letter or digit",
                ),
            };
            if !ok {
                return Err(bad_char(v, i, Self::WHAT, expected));
            }
        }
        let italian = &b[..2] == b"IT";
        if italian {
            expect_len(v, 27, Self::IT_WHAT, "27 characters")?;
            if !b[4].is_ascii_uppercase() {
                return Err(bad_char(v, 4, Self::IT_WHAT, "a letter (CIN)"));
            }
            if let Some(i) = b[5..15].iter().position(|c| !c.is_ascii_digit()) {
                return Err(bad_char(v, i + 5, Self::IT_WHAT, "a digit (ABI and CAB)"));
            }
        }
        let r = b[..4]
            .iter()
            .fold(mod97(&b[4..]), |acc, &c| push_mod97(acc, c));
        if r != 1 {
            return Err(IdError::IbanChecksum);
        }
        if italian {
            let expected = italian_check_letter(&b[5..27]).unwrap_or('?');
            let got = char::from(b[4]);
            if got != expected {
                return Err(IdError::ItalianCin { got, expected });
            }
        }
        Ok(())
    }

    /// An account of Poste Italiane (an Italian IBAN with ABI 07601): a postal current account,
    /// which Poste's channels and the postal slip can credit.
    pub fn is_postal(&self) -> bool {
        self.0.starts_with("IT") && self.0.get(5..10) == Some(Self::POSTE_ABI)
    }

    /// ABI code of Poste Italiane.
    pub const POSTE_ABI: &'static str = "07601";

    /// Builds an Italian IBAN from ABI (5 digits), CAB (5 digits) and account (12 letters or
    /// digits, case-insensitive), computing CIN and check digits.
    pub fn italian(abi: &str, cab: &str, account: &str) -> Result<Iban, IdError> {
        expect_len(abi, 5, "ABI", "5 digits")?;
        expect_digits(abi, "ABI")?;
        expect_len(cab, 5, "CAB", "5 digits")?;
        expect_digits(cab, "CAB")?;
        expect_len(account, 12, "account number", "12 letters or digits")?;
        if let Some(i) = account.bytes().position(|c| !c.is_ascii_alphanumeric()) {
            return Err(bad_char(account, i, "account number", "a letter or digit"));
        }
        let mut national = String::with_capacity(27);
        national.push_str(abi);
        national.push_str(cab);
        national.extend(account.chars().map(|c| c.to_ascii_uppercase()));
        let cin = italian_check_letter(national.as_bytes()).unwrap_or('?');
        let r = [cin as u8]
            .iter()
            .chain(national.as_bytes())
            .chain(b"IT00")
            .fold(0, |acc, &c| push_mod97(acc, c));
        let check = 98 - r;
        Ok(Self(format!("IT{check:02}{cin}{national}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The two-letter country code.
    pub fn country(&self) -> &str {
        &self.0[..2]
    }
}

string_id!(Iban, "an IBAN");

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error as DeError, StrDeserializer};
    use serde::de::IntoDeserializer;
    use serde::Deserialize;

    fn de<'a, T: Deserialize<'a>>(s: &'a str) -> Result<T, DeError> {
        let d: StrDeserializer<'a, DeError> = s.into_deserializer();
        T::deserialize(d)
    }

    #[test]
    fn segregation_code_range() {
        assert_eq!(SegregationCode::parse("00").unwrap().value(), 0);
        assert_eq!(SegregationCode::parse("49").unwrap().as_str(), "49");
        assert_eq!(
            SegregationCode::parse("50"),
            Err(IdError::SegregationRange(50))
        );
        assert!(matches!(
            SegregationCode::parse("7"),
            Err(IdError::Length { got: 1, .. })
        ));
        assert!(matches!(
            SegregationCode::parse("0a"),
            Err(IdError::Char {
                position: 2,
                found: 'a',
                ..
            })
        ));
        assert_eq!(SegregationCode::new(7).unwrap().to_string(), "07");
    }

    #[test]
    fn official_notice_numbers_parse() {
        for s in [
            "300715700000000032",
            "322201151398574181",
            "347164993070184562",
            "301000000000012373",
        ] {
            let n = NoticeNumber::parse(s).unwrap();
            assert_eq!(n.as_str(), s);
            assert_eq!(n.to_string(), s);
            assert_eq!(n.aux_digit(), 3);
            assert_eq!(n.iuv().as_str(), &s[1..]);
            assert_eq!(n.iuv().kind(), IuvKind::Digits17);
        }
        let n = NoticeNumber::parse("347164993070184562").unwrap();
        assert_eq!(n.segregation_code().unwrap().value(), 47);
    }

    #[test]
    fn worked_example_check_digits() {
        let seg = SegregationCode::parse("01").unwrap();
        let iuv = Iuv::generate(seg, 123).unwrap();
        assert_eq!(iuv.as_str(), "01000000000012373");
        assert!(iuv.check_digits_valid_for_aux3());
        assert_eq!(iuv.notice_number().unwrap().as_str(), "301000000000012373");
        assert_eq!(
            NoticeNumber::from_iuv17(&iuv).unwrap().as_str(),
            "301000000000012373"
        );
    }

    #[test]
    fn notice_number_errors() {
        assert_eq!(
            NoticeNumber::parse("301000000000012312"),
            Err(IdError::NoticeCheckDigits {
                got: 12,
                expected: 73
            })
        );
        assert_eq!(
            NoticeNumber::parse("301000000000012312")
                .unwrap_err()
                .to_string(),
            "notice number check digits are 12, expected 73 (first 16 digits mod 93)"
        );
        let e = NoticeNumber::parse("30100000000001237").unwrap_err();
        assert_eq!(
            e.to_string(),
            "notice number must be 18 digits, got 17 characters"
        );
        assert_eq!(
            NoticeNumber::parse("30100000000001237A"),
            Err(IdError::Char {
                what: "notice number",
                position: 18,
                found: 'A',
                expected: "a digit"
            })
        );
        assert_eq!(
            NoticeNumber::parse("401000000000012373"),
            Err(IdError::AuxDigit(4))
        );
        // Multi-byte input never panics and reports the character.
        assert!(matches!(
            NoticeNumber::parse("3010000000000123é"),
            Err(IdError::Char {
                position: 17,
                found: 'é',
                ..
            })
        ));
        assert!(matches!(
            NoticeNumber::parse(""),
            Err(IdError::Length { got: 0, .. })
        ));
    }

    #[test]
    fn notice_number_other_aux_digits() {
        // aux 0: application code 07, IUV15 = base 13 + check over "0" + 07 + base.
        let base = "0000000000123";
        let head = format!("007{base}");
        let check = head.parse::<u64>().unwrap() % 93;
        let s = format!("{head}{check:02}");
        let n = NoticeNumber::parse(&s).unwrap();
        assert_eq!(n.aux_digit(), 0);
        assert_eq!(n.iuv().as_str(), &s[3..]);
        assert_eq!(n.iuv().kind(), IuvKind::Digits15);
        assert_eq!(n.segregation_code(), None);

        // aux 1: no check digits at all.
        let n = NoticeNumber::parse("112345678901234599").unwrap();
        assert_eq!(n.iuv().as_str(), "12345678901234599");
        assert_eq!(n.segregation_code(), None);

        // aux 2: base 15 + check.
        let head = "2123456789012345";
        let check = head.parse::<u64>().unwrap() % 93;
        let s = format!("{head}{check:02}");
        assert_eq!(NoticeNumber::parse(&s).unwrap().iuv().as_str(), &s[1..]);
        let wrong = format!("{head}{:02}", (check + 1) % 100);
        assert!(matches!(
            NoticeNumber::parse(&wrong),
            Err(IdError::NoticeCheckDigits { .. })
        ));
    }

    #[test]
    fn notice_number_serde_validates() {
        let n: NoticeNumber = de("300715700000000032").unwrap();
        assert_eq!(n.as_str(), "300715700000000032");
        let e = de::<NoticeNumber>("300715700000000033").unwrap_err();
        assert!(e.to_string().contains("check digits are 33, expected 32"));
        assert_eq!("300715700000000032".parse::<NoticeNumber>().unwrap(), n);
    }

    #[test]
    fn iuv_generate_limits() {
        let seg = SegregationCode::parse("47").unwrap();
        let last = Iuv::generate(seg, 9_999_999_999_999).unwrap();
        assert_eq!(&last.as_str()[..15], "479999999999999");
        assert!(last.check_digits_valid_for_aux3());
        let e = Iuv::generate(seg, 10_000_000_000_000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "IUV counter for segregation code 47 is exhausted: 10000000000000 does not fit in 13 digits"
        );
        let first = Iuv::generate(SegregationCode::parse("00").unwrap(), 0).unwrap();
        assert_eq!(
            first.as_str(),
            format!("000000000000000{:02}", 3_000_000_000_000_000u64 % 93)
        );
    }

    #[test]
    fn iuv_kinds() {
        assert_eq!(
            Iuv::parse("000000000012373").unwrap().kind(),
            IuvKind::Digits15
        );
        let i17 = Iuv::parse("22201151398574181").unwrap();
        assert_eq!(i17.kind(), IuvKind::Digits17);
        assert_eq!(i17.notice_number().unwrap().as_str(), "322201151398574181");
        let bad = Iuv::parse("22201151398574182").unwrap();
        assert!(!bad.check_digits_valid_for_aux3());
        assert_eq!(bad.notice_number(), None);
        assert_eq!(
            NoticeNumber::from_iuv17(&bad),
            Err(IdError::IuvCheckDigits {
                got: 82,
                expected: 81
            })
        );
        let i15 = Iuv::parse("000000000012373").unwrap();
        assert!(!i15.check_digits_valid_for_aux3());
        assert!(matches!(
            NoticeNumber::from_iuv17(&i15),
            Err(IdError::Length { got: 15, .. })
        ));

        let rf = RfReference::create("ABCDEFGHIJ0123456789X").unwrap();
        assert_eq!(rf.as_str().len(), 25);
        let iuv = Iuv::parse(rf.as_str()).unwrap();
        assert_eq!(iuv.kind(), IuvKind::Rf25);
        assert_eq!(iuv.notice_number(), None);

        assert!(matches!(
            Iuv::parse("1234567890123456"),
            Err(IdError::Length { got: 16, .. })
        ));
        assert!(matches!(
            Iuv::parse("12345678901234X"),
            Err(IdError::Char { position: 15, .. })
        ));
        // A short RF is a valid RF but not an IUV.
        assert!(matches!(
            Iuv::parse("RF18539007547034"),
            Err(IdError::Length { got: 16, .. })
        ));
        assert_eq!(
            Iuv::parse("0123456789012345678901234"),
            Err(IdError::RfPrefix)
        );
    }

    #[test]
    fn rf_reference() {
        let rf = RfReference::parse("RF18539007547034").unwrap();
        assert_eq!(rf.body(), "539007547034");
        assert_eq!(RfReference::create("539007547034").unwrap(), rf);
        assert_eq!(
            RfReference::parse("RF17539007547034"),
            Err(IdError::RfCheckDigits {
                got: 17,
                expected: 18
            })
        );
        assert_eq!(
            RfReference::parse("RF18539007547034").unwrap().to_string(),
            "RF18539007547034"
        );
        assert_eq!(
            RfReference::create("ABC123").unwrap().as_str(),
            "RF47ABC123"
        );
        assert_eq!(
            RfReference::parse("rf18539007547034"),
            Err(IdError::RfPrefix)
        );
        assert!(matches!(
            RfReference::parse("RF18 539007547034"),
            Err(IdError::Char {
                position: 5,
                found: ' ',
                ..
            })
        ));
        assert!(matches!(
            RfReference::parse("RF18"),
            Err(IdError::Length { got: 4, .. })
        ));
        assert!(matches!(
            RfReference::create(""),
            Err(IdError::Length { got: 0, .. })
        ));
        assert!(matches!(
            RfReference::create("abc"),
            Err(IdError::Char { position: 1, .. })
        ));
        assert!(matches!(
            RfReference::create("0123456789012345678901"),
            Err(IdError::Length { got: 22, .. })
        ));
    }

    #[test]
    fn entity_fiscal_codes() {
        for s in ["00644060287", "00133880252", "80007580279"] {
            assert_eq!(EntityFiscalCode::parse(s).unwrap().as_str(), s);
            assert_eq!(PartitaIva::parse(s).unwrap().as_str(), s);
        }
        let e = EntityFiscalCode::parse("00644060288").unwrap_err();
        assert_eq!(
            e,
            IdError::CheckDigit {
                what: "entity fiscal code",
                got: '8',
                expected: '7'
            }
        );
        assert_eq!(
            e.to_string(),
            "entity fiscal code check digit is 8, expected 7"
        );
        assert_eq!(
            PartitaIva::parse("0013388025").unwrap_err().to_string(),
            "partita IVA must be 11 digits, got 10 characters"
        );
        assert!(matches!(
            EntityFiscalCode::parse("0064406028X"),
            Err(IdError::Char { position: 11, .. })
        ));
        let e: EntityFiscalCode = de("80007580279").unwrap();
        assert_eq!(e.as_str(), "80007580279");
        assert!(de::<EntityFiscalCode>("80007580270").is_err());
    }

    #[test]
    fn personal_fiscal_codes() {
        assert_eq!(
            PersonalFiscalCode::parse("RSSMRA85T10A562S")
                .unwrap()
                .as_str(),
            "RSSMRA85T10A562S"
        );
        assert_eq!(
            PersonalFiscalCode::parse("rssmra85t10a562s")
                .unwrap()
                .as_str(),
            "RSSMRA85T10A562S"
        );
        assert_eq!(PersonalFiscalCode::check_char("RSSMRA85T10A562"), Some('S'));
        assert_eq!(PersonalFiscalCode::check_char("BNCGNN80A01H501"), Some('T'));
        assert_eq!(PersonalFiscalCode::check_char("RSSMRA85T10A56"), None);
        assert_eq!(PersonalFiscalCode::check_char("RSSMRA85T10A56-"), None);
        let e = PersonalFiscalCode::parse("RSSMRA85T10A562T").unwrap_err();
        assert_eq!(
            e,
            IdError::FiscalCodeCheckChar {
                got: 'T',
                expected: 'S'
            }
        );
        assert_eq!(
            e.to_string(),
            "fiscal code check character is T, expected S"
        );
        // Omocodia: a digit position holding a substitute letter (5 -> R in position 15).
        let first15 = "RSSMRA85T10A56R";
        let c = PersonalFiscalCode::check_char(first15).unwrap();
        let code = format!("{first15}{c}");
        assert_eq!(PersonalFiscalCode::parse(&code).unwrap().as_str(), code);
        assert_eq!(
            PersonalFiscalCode::parse("RSSMRA85T10A56AS"),
            Err(IdError::Char {
                what: "fiscal code",
                position: 15,
                found: 'A',
                expected: "a digit or one of LMNPQRSTUV"
            })
        );
        assert!(matches!(
            PersonalFiscalCode::parse("1SSMRA85T10A562S"),
            Err(IdError::Char { position: 1, .. })
        ));
        assert!(matches!(
            PersonalFiscalCode::parse("RSSMRA85T10A562"),
            Err(IdError::Length { got: 15, .. })
        ));
    }

    #[test]
    fn postal_ibans_are_poste_italiane_s() {
        let postal = Iban::italian("07601", "12100", "000012345678").unwrap();
        assert_eq!(postal.as_str(), "IT24M0760112100000012345678");
        assert!(postal.is_postal());
        assert!(!Iban::parse("IT60X0542811101000000123456")
            .unwrap()
            .is_postal());
        // ABI 07601 in another country's IBAN is no Poste account.
        assert!(!Iban::parse("DE89370400440532013000").unwrap().is_postal());
    }

    #[test]
    fn ibans() {
        let iban = Iban::parse("IT60X0542811101000000123456").unwrap();
        assert_eq!(iban.country(), "IT");
        assert_eq!(
            Iban::parse("it60 x054 2811 1010 0000 0123 456").unwrap(),
            iban
        );
        assert_eq!(
            Iban::italian("05428", "11101", "000000123456").unwrap(),
            iban
        );
        assert_eq!(
            Iban::italian("12345", "12345", "123456789012")
                .unwrap()
                .as_str(),
            "IT98Z1234512345123456789012"
        );
        assert_eq!(
            Iban::italian("03069", "09606", "100000000001")
                .unwrap()
                .as_str(),
            "IT45U0306909606100000000001"
        );
        let generated = Iban::italian("03069", "09606", "00000000abc1").unwrap();
        assert_eq!(Iban::parse(generated.as_str()).unwrap(), generated);

        assert_eq!(
            Iban::parse("IT02L1234512345123456789012"),
            Err(IdError::IbanChecksum)
        );
        assert_eq!(
            Iban::parse("IT61X0542811101000000123456")
                .unwrap_err()
                .to_string(),
            "IBAN checksum fails (mod 97)"
        );
        // A consistent mod 97 with a wrong CIN: recompute check digits around CIN 'A'.
        let bban = "A0542811101000000123456";
        let r = bban.bytes().chain(*b"IT00").fold(0, push_mod97);
        let wrong_cin = format!("IT{:02}{bban}", 98 - r);
        assert_eq!(
            Iban::parse(&wrong_cin).unwrap_err().to_string(),
            "Italian IBAN CIN is A, expected X"
        );
        assert!(matches!(
            Iban::parse("IT60X054281110100000012345"),
            Err(IdError::Length {
                what: "Italian IBAN",
                got: 26,
                ..
            })
        ));
        // Foreign IBANs: mod 97 only.
        assert_eq!(
            Iban::parse("DE89 3704 0044 0532 0130 00")
                .unwrap()
                .country(),
            "DE"
        );
        assert_eq!(
            Iban::parse("GB82WEST12345698765432").unwrap().as_str(),
            "GB82WEST12345698765432"
        );
        assert!(matches!(
            Iban::parse("1T60X0542811101000000123456"),
            Err(IdError::Char { position: 1, .. })
        ));
        assert!(matches!(
            Iban::parse("IT60X05428"),
            Err(IdError::Length { got: 10, .. })
        ));
        assert!(matches!(
            Iban::italian("0542", "11101", "000000123456"),
            Err(IdError::Length { what: "ABI", .. })
        ));
    }
}
