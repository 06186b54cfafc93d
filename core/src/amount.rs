//! Money as integer euro cents, so sums of transfers and totals are exact.
//!
//! Text amounts (SOAP wire, MyPay flows) are parsed as exact decimals, never through floats.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount in euro cents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

/// Why a text is not an amount; the message names the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount must be at most 15 characters, got {0}")]
    TooLong(usize),
    #[error("amount must not have a sign, found {0:?}")]
    Sign(char),
    #[error("amount must use '.' as decimal separator, found ','")]
    Comma,
    #[error("amount must not use exponent notation, found {0:?}")]
    Exponent(char),
    /// `position` counts characters from 1.
    #[error("amount must be digits with an optional '.' and decimals, found {found:?} at position {position}")]
    InvalidChar { position: usize, found: char },
    #[error("amount must have digits before the '.'")]
    MissingInteger,
    #[error("amount must have digits after the '.'")]
    MissingDecimals,
    #[error("amount must have at most 2 decimal places (cents)")]
    TooManyDecimals,
    #[error("amount must be greater than 0")]
    NotPositive,
    #[error("amount must be at most 999999999.99")]
    TooLarge,
}

impl Amount {
    pub const ZERO: Amount = Amount(0);
    /// MyPay's ceiling for one debt position, in cents.
    pub const MYPAY_MAX: Amount = Amount(99_999_999_999);
    const MAX_CHARS: usize = 15;

    pub const fn from_cents(cents: i64) -> Self {
        Self(cents)
    }

    pub const fn cents(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// Exact parse of `12`, `12.5`, `12.50`; decimals beyond the second are accepted only when
    /// they are zeros (`12.500`). No sign, exponent, comma or missing digits on either side.
    pub fn parse_decimal(s: &str) -> Result<Amount, AmountError> {
        if s.is_empty() {
            return Err(AmountError::Empty);
        }
        if s.len() > Self::MAX_CHARS {
            let chars = s.chars().count();
            if chars > Self::MAX_CHARS {
                return Err(AmountError::TooLong(chars));
            }
        }
        let b = s.as_bytes();
        let mut units: i64 = 0;
        let mut cents: i64 = 0;
        let mut int_digits = 0usize;
        let mut dec_digits = 0usize;
        let mut seen_dot = false;
        for (i, &c) in b.iter().enumerate() {
            match c {
                b'0'..=b'9' => {
                    let d = i64::from(c - b'0');
                    if !seen_dot {
                        // At most 15 digits, so this cannot overflow.
                        units = units * 10 + d;
                        int_digits += 1;
                    } else {
                        dec_digits += 1;
                        match dec_digits {
                            1 => cents += d * 10,
                            2 => cents += d,
                            _ if d != 0 => return Err(AmountError::TooManyDecimals),
                            _ => {}
                        }
                    }
                }
                b'.' if !seen_dot => {
                    if int_digits == 0 {
                        return Err(AmountError::MissingInteger);
                    }
                    seen_dot = true;
                }
                b'+' | b'-' if i == 0 => return Err(AmountError::Sign(char::from(c))),
                b',' => return Err(AmountError::Comma),
                b'e' | b'E' => return Err(AmountError::Exponent(char::from(c))),
                _ => {
                    let position = s.get(..i).map_or(i, |p| p.chars().count()) + 1;
                    let found = s
                        .get(i..)
                        .and_then(|t| t.chars().next())
                        .unwrap_or(char::REPLACEMENT_CHARACTER);
                    return Err(AmountError::InvalidChar { position, found });
                }
            }
        }
        if seen_dot && dec_digits == 0 {
            return Err(AmountError::MissingDecimals);
        }
        units
            .checked_mul(100)
            .and_then(|u| u.checked_add(cents))
            .map(Amount)
            .ok_or(AmountError::TooLarge)
    }

    /// [`Amount::parse_decimal`] plus MyPay's limits for an amount due: > 0 and ≤ 999999999.99.
    pub fn parse_mypay(s: &str) -> Result<Amount, AmountError> {
        let a = Self::parse_decimal(s)?;
        if a.0 <= 0 {
            Err(AmountError::NotPositive)
        } else if a > Self::MYPAY_MAX {
            Err(AmountError::TooLarge)
        } else {
            Ok(a)
        }
    }
}

/// Two decimals, as on the SOAP wire: `12.50`.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_decimal(s)
    }
}

/// Integer cents, as GPD and Checkout use.
impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i64::deserialize(deserializer).map(Amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error as DeError, I64Deserializer};
    use serde::de::IntoDeserializer;

    fn cents(s: &str) -> i64 {
        Amount::parse_decimal(s).unwrap().cents()
    }

    #[test]
    fn exact_decimals() {
        assert_eq!(cents("12"), 1200);
        assert_eq!(cents("12.5"), 1250);
        assert_eq!(cents("12.50"), 1250);
        assert_eq!(cents("0.01"), 1);
        assert_eq!(cents("0"), 0);
        assert_eq!(cents("007.10"), 710);
        assert_eq!(cents("12.500"), 1250);
        assert_eq!(cents("999999999999.99"), 99_999_999_999_999);
        assert_eq!(cents("999999999999999"), 99_999_999_999_999_900);
        // A float would give 0.1 + 0.2 != 0.3; cents do not.
        let sum = Amount::parse_decimal("0.1")
            .unwrap()
            .checked_add(Amount::parse_decimal("0.2").unwrap());
        assert_eq!(sum, Some(Amount::parse_decimal("0.3").unwrap()));
    }

    #[test]
    fn rejected_forms() {
        use AmountError::*;
        let err = |s| Amount::parse_decimal(s).unwrap_err();
        assert_eq!(err(""), Empty);
        assert_eq!(err("1e3"), Exponent('e'));
        assert_eq!(err("1E3"), Exponent('E'));
        assert_eq!(err(","), Comma);
        assert_eq!(err("12,50"), Comma);
        assert_eq!(err("12.345"), TooManyDecimals);
        assert_eq!(err("12.5001"), TooManyDecimals);
        assert_eq!(err("+12"), Sign('+'));
        assert_eq!(err("-12"), Sign('-'));
        assert_eq!(
            err("1-2"),
            InvalidChar {
                position: 2,
                found: '-'
            }
        );
        assert_eq!(err("1234567890123456"), TooLong(16));
        assert_eq!(err(".5"), MissingInteger);
        assert_eq!(err("12."), MissingDecimals);
        assert_eq!(
            err("1.2.3"),
            InvalidChar {
                position: 4,
                found: '.'
            }
        );
        assert_eq!(
            err(" 12"),
            InvalidChar {
                position: 1,
                found: ' '
            }
        );
        assert_eq!(
            err("12€"),
            InvalidChar {
                position: 3,
                found: '€'
            }
        );
        assert_eq!(
            err("12.345").to_string(),
            "amount must have at most 2 decimal places (cents)"
        );
    }

    #[test]
    fn mypay_limits() {
        assert_eq!(Amount::parse_mypay("0.01").unwrap().cents(), 1);
        assert_eq!(
            Amount::parse_mypay("999999999.99").unwrap(),
            Amount::MYPAY_MAX
        );
        assert_eq!(
            Amount::parse_mypay("1000000000"),
            Err(AmountError::TooLarge)
        );
        assert_eq!(Amount::parse_mypay("0.00"), Err(AmountError::NotPositive));
        assert_eq!(
            Amount::parse_mypay("0").unwrap_err().to_string(),
            "amount must be greater than 0"
        );
        assert_eq!(
            Amount::parse_mypay("1000000000").unwrap_err().to_string(),
            "amount must be at most 999999999.99"
        );
    }

    #[test]
    fn display_two_decimals() {
        assert_eq!(Amount::from_cents(1250).to_string(), "12.50");
        assert_eq!(Amount::from_cents(1).to_string(), "0.01");
        assert_eq!(Amount::from_cents(0).to_string(), "0.00");
        assert_eq!(Amount::from_cents(-5).to_string(), "-0.05");
        assert_eq!(
            Amount::from_cents(i64::MIN).to_string(),
            "-92233720368547758.08"
        );
        assert_eq!("3.2".parse::<Amount>().unwrap().to_string(), "3.20");
    }

    #[test]
    fn checked_arithmetic() {
        let max = Amount::from_cents(i64::MAX);
        assert_eq!(max.checked_add(Amount::from_cents(1)), None);
        assert_eq!(
            Amount::from_cents(5).checked_sub(Amount::from_cents(7)),
            Some(Amount::from_cents(-2))
        );
    }

    #[test]
    fn deserializes_from_cents() {
        let d: I64Deserializer<DeError> = 1250i64.into_deserializer();
        assert_eq!(Amount::deserialize(d).unwrap(), Amount::from_cents(1250));
    }
}
