//! The XSD simple types of paForNode, checked on their text. Each check returns the reason of a
//! failure, to which the parser prepends the element path.
//!
//! Types derived from `xsd:string` keep their whitespace (facet `preserve`); the numeric, boolean
//! and date types collapse it, so their surrounding whitespace is trimmed first, as a validator
//! would.

use chrono::NaiveDate;

pub(crate) type Check<T> = Result<T, String>;

/// At most this much of an offending value is quoted in a message.
const QUOTE_MAX: usize = 40;

/// The value, quoted and shortened for an error message.
pub(crate) fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(QUOTE_MAX).collect();
        format!("{head:?}…")
    }
}

fn xml_trim(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

/// `minLength`/`maxLength`, counted in characters as XSD does.
pub(crate) fn length(s: &str, min: usize, max: usize) -> Check<()> {
    // Bytes bound characters from above, so only long values need counting.
    let n = if s.len() <= max {
        if s.len() >= min && s.is_ascii() {
            return Ok(());
        }
        s.chars().count()
    } else {
        s.chars().count()
    };
    if n == 0 && min > 0 {
        Err("must not be empty".into())
    } else if n < min || n > max {
        Err(format!("must be {min} to {max} characters long, found {n}"))
    } else {
        Ok(())
    }
}

/// `[0-9]{n}` (stFiscalCodePA with n = 11, stNoticeNumber with n = 18).
pub(crate) fn digits(s: &str, n: usize) -> Check<()> {
    if s.len() == n && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("must be {n} digits, found {}", quote(s)))
    }
}

/// `stAmount` (`\d+\.\d{2}`, at most 999999999.99) and, with `not_zero`, `stAmountNotZero`
/// (at least 0.01). Returns the trimmed text.
pub(crate) fn amount(s: &str, not_zero: bool) -> Check<&str> {
    let t = xml_trim(s);
    let bad = || {
        format!(
            "must be an amount with two decimals like 12.50, found {}",
            quote(s)
        )
    };
    let (int, dec) = t.split_once('.').ok_or_else(bad)?;
    if int.is_empty()
        || dec.len() != 2
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !dec.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let significant = int.trim_start_matches('0');
    if significant.len() > 9 {
        return Err(format!("must be at most 999999999.99, found {}", quote(t)));
    }
    if not_zero && significant.is_empty() && dec == "00" {
        return Err("must be at least 0.01".into());
    }
    Ok(t)
}

fn two_digits(b: &[u8]) -> Option<u32> {
    match b {
        [a, c] if a.is_ascii_digit() && c.is_ascii_digit() => {
            Some(u32::from(a - b'0') * 10 + u32::from(c - b'0'))
        }
        _ => None,
    }
}

/// `YYYY-MM-DD`, a real calendar day.
fn date_part(b: &[u8]) -> bool {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let year = b[..4].iter().try_fold(0i32, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + i32::from(d - b'0'))
    });
    match (year, two_digits(&b[5..7]), two_digits(&b[8..10])) {
        (Some(y), Some(m), Some(d)) => NaiveDate::from_ymd_opt(y, m, d).is_some(),
        _ => false,
    }
}

/// An optional XSD timezone: `Z` or `±hh:mm` up to 14:00.
fn timezone(b: &[u8]) -> bool {
    match b {
        [] | [b'Z'] => true,
        [sign, h @ .., b':', m1, m2] if matches!(sign, b'+' | b'-') && h.len() == 2 => {
            match (two_digits(h), two_digits(&[*m1, *m2])) {
                (Some(h), Some(m)) => m < 60 && (h < 14 || (h == 14 && m == 0)),
                _ => false,
            }
        }
        _ => false,
    }
}

/// `xsd:date` (`stISODate`), optionally with a timezone. Returns the trimmed text.
pub(crate) fn date(s: &str) -> Check<&str> {
    let t = xml_trim(s);
    let b = t.as_bytes();
    if b.len() >= 10 && date_part(&b[..10]) && timezone(&b[10..]) {
        Ok(t)
    } else {
        Err(format!(
            "must be a date like 2024-12-31, found {}",
            quote(s)
        ))
    }
}

/// `xsd:dateTime` (`stISODateTime`): `YYYY-MM-DDThh:mm:ss[.fff][timezone]`.
pub(crate) fn date_time(s: &str) -> Check<&str> {
    let t = xml_trim(s);
    let b = t.as_bytes();
    let ok = (|| {
        if b.len() < 19 || !date_part(&b[..10]) || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return false;
        }
        let (h, m, sec) = match (
            two_digits(&b[11..13]),
            two_digits(&b[14..16]),
            two_digits(&b[17..19]),
        ) {
            (Some(h), Some(m), Some(s)) => (h, m, s),
            _ => return false,
        };
        let mut rest = &b[19..];
        let mut frac_zero = true;
        if let [b'.', tail @ ..] = rest {
            let n = tail.iter().take_while(|d| d.is_ascii_digit()).count();
            if n == 0 {
                return false;
            }
            frac_zero = tail[..n].iter().all(|&d| d == b'0');
            rest = &tail[n..];
        }
        let time_ok =
            (h < 24 && m < 60 && sec < 60) || (h == 24 && m == 0 && sec == 0 && frac_zero);
        time_ok && timezone(rest)
    })();
    if ok {
        Ok(t)
    } else {
        Err(format!(
            "must be a date and time like 2024-12-31T23:59:59, found {}",
            quote(s)
        ))
    }
}

/// `xsd:boolean`: `true`, `false`, `1`, `0`.
pub(crate) fn boolean(s: &str) -> Check<bool> {
    match xml_trim(s) {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("must be true or false, found {}", quote(s))),
    }
}

/// `xsd:int`.
pub(crate) fn int(s: &str) -> Check<i32> {
    xml_trim(s)
        .parse::<i32>()
        .map_err(|_| format!("must be an integer, found {}", quote(s)))
}

/// `stIdTransfer`: an `xsd:int` among 1 to 5.
pub(crate) fn id_transfer(s: &str) -> Check<u8> {
    match int(s) {
        Ok(n @ 1..=5) => u8::try_from(n).map_err(|e| e.to_string()),
        _ => Err(format!("must be 1 to 5, found {}", quote(s))),
    }
}

/// `stNazioneProvincia`: `[A-Z]{2}`.
pub(crate) fn upper2(s: &str) -> Check<()> {
    if s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("must be 2 upper-case letters, found {}", quote(s)))
    }
}

/// `stEMail`: `[a-zA-Z0-9_\.\+\-]+@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*`, at most 256 characters.
pub(crate) fn email(s: &str) -> Check<()> {
    let ok = s.len() <= 256
        && match s.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-')
                    })
                    && domain.split('.').all(|label| {
                        !label.is_empty()
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    })
            }
            None => false,
        };
    if ok {
        Ok(())
    } else {
        Err(format!("must be an e-mail address, found {}", quote(s)))
    }
}

/// `xsd:base64Binary`, whitespace ignored. With `len`, the `.{min,max}` pattern of
/// `stBase64Binary72` on the collapsed text. Returns the trimmed text.
pub(crate) fn base64(s: &str, len: Option<(usize, usize)>) -> Check<&str> {
    let t = xml_trim(s);
    if let Some((min, max)) = len {
        let n = t.chars().count();
        if n < min || n > max {
            return Err(format!(
                "must be {min} to {max} characters of base64, found {n}"
            ));
        }
    }
    let data: Vec<u8> = t
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .collect();
    let pad = data.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &data[..data.len() - pad];
    // Groups of four characters (`% 4` spelled so as to keep the workspace's MSRV 1.80).
    let ok = data.len() & 3 == 0
        && pad <= 2
        && body
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'));
    if ok {
        Ok(t)
    } else {
        Err(format!("must be base64, found {}", quote(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_count_characters() {
        assert!(length("abc", 1, 3).is_ok());
        assert!(length("àèì", 1, 3).is_ok());
        assert_eq!(length("", 1, 35), Err("must not be empty".into()));
        assert_eq!(
            length("abcd", 1, 3),
            Err("must be 1 to 3 characters long, found 4".into())
        );
        assert!(length("à", 2, 16).is_err());
    }

    #[test]
    fn amounts() {
        assert_eq!(amount("12.50", true), Ok("12.50"));
        assert_eq!(amount(" 0.00\n", false), Ok("0.00"));
        assert_eq!(amount("999999999.99", true), Ok("999999999.99"));
        assert_eq!(amount("000999999999.99", true), Ok("000999999999.99"));
        assert!(amount("1000000000.00", true).is_err());
        assert!(amount("0.00", true).is_err());
        for bad in [
            "12", "12.5", "12.500", ".50", "-1.00", "1,00", "1e2.00", "１.00", "",
        ] {
            assert!(amount(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert!(date("2024-02-29").is_ok());
        assert!(date("2024-02-29Z").is_ok());
        assert!(date("2024-02-29+01:00").is_ok());
        assert!(date("2023-02-29").is_err());
        assert!(date("2024-2-1").is_err());
        assert!(date("2024-02-01T00:00:00").is_err());
        assert!(date_time("2021-10-01T17:48:22").is_ok());
        assert!(date_time("2021-10-01T17:48:22.123+02:00").is_ok());
        assert!(date_time("2021-12-31T24:00:00").is_ok());
        assert!(date_time("2021-12-31T24:00:01").is_err());
        assert!(date_time("2021-10-01 17:48:22").is_err());
        assert!(date_time("2021-10-01T17:48").is_err());
        assert!(date_time("2021-10-01T17:48:22.").is_err());
        assert!(date_time("2021-10-01T17:48:22+15:00").is_err());
    }

    #[test]
    fn small_types() {
        assert_eq!(boolean(" 1 "), Ok(true));
        assert_eq!(boolean("false"), Ok(false));
        assert!(boolean("yes").is_err());
        assert_eq!(id_transfer("+05"), Ok(5));
        assert!(id_transfer("6").is_err());
        assert!(id_transfer("0").is_err());
        assert!(email("john.doe@test.it").is_ok());
        assert!(email("a@b").is_ok());
        assert!(email("a@b.").is_err());
        assert!(email("a b@c.it").is_err());
        assert!(upper2("MI").is_ok());
        assert!(upper2("mi").is_err());
        assert!(digits("77777777777", 11).is_ok());
        assert!(digits("7777777777a", 11).is_err());
        assert_eq!(base64("AAAA", Some((4, 72))), Ok("AAAA"));
        assert!(base64("AAA", None).is_err());
        assert!(base64("AA==", None).is_ok());
        assert!(base64("A===", None).is_err());
        assert!(base64("AA=A", None).is_err());
        assert!(base64("", None).is_ok());
    }
}
