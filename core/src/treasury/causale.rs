//! The IUF (or, for old per-payment transfers, the IUV) in a bank transfer's causale (SCT
//! remittance information, AT-05).
//!
//! The official form of a PSP's cumulative transfer is `/PUR/LGPE-RIVERSAMENTO/URI/<IUF>` (SACI
//! ≤ 1.x) or `/PUR/LGPE-RIVERSAMENTO/TXT/<d>/URI/<IUF>` (SACI 2+); old per-payment transfers
//! carried the payment request's `/RFB/<IUV>[/<importo>]…` or `/RFS/<IUV>/<importo>…`. What
//! banks actually deliver is messier, and the rules below take what MyPivot
//! (`MANAGE_FLUSSI_TESORERIA` routine `RegEx`), PagoPA's PU (`TreasuryUtils`) and GovPay
//! (`CausaleIncassoParser`) accept:
//!
//! 1. **IUF**. A tag `LGPE-RIVERSAMENTO`, also with the spaces banks insert (`LGPE- RIVERSAMENTO`,
//!    `LGPE -RIVERSAMENTO`, `LGPE - RIVERSAMENTO`, `L GPE-RIVERSAMENTO`), then `/` or spaces, an
//!    optional `TXT/<digit>/` (PU's normalisation of SACI 2's progressive), `URI`, then `/` or
//!    spaces (`URI` followed by a space is the "slashes turned into spaces" form). The value:
//!    * a date broken by a space (`2023-01- 01…`, `2023-01-0 1…`) is joined again, then the rest
//!      of the value follows;
//!    * the value is the run of letters, digits, `-` and `_`;
//!    * when the causale starts with `ACCREDITI VARI`, the value is split over two
//!      whitespace-separated tokens and joined (`…/URI/2023-01-01 ABC123` → `2023-01-01ABC123`);
//!      if the join is no IUF, the first token alone is tried;
//!    * accepted only if it holds a date `yyyy-mm-dd` (FdR 3 names) or, after `URI/`, is made of
//!      letters and digits only (an "old IUF", e.g. a 32-character hex id); and it must be an IUF
//!      (`[A-Za-z0-9_-]{1,35}`: over 35 characters it is not taken).
//!
//!    Every tag occurrence is tried in order; the first accepted value wins.
//! 2. **IUV**, only when there is no IUF. A tag `RFB` or `RFS` (RFB first, as MyPivot) at the
//!    start or after a non-alphanumeric character, followed by `/` or a space. The value runs to
//!    the next `/`; its first token is tried, then its first 25 non-space characters (an RF
//!    reference printed in groups of four, as MyPivot reads it). It is taken only if it is an IUV
//!    the hub could have issued (15 or 17 digits, or a 25-character RF reference with valid check
//!    digits): nothing else can match a payment.
//!
//! Tags are matched ignoring ASCII case. A causale with neither gives [`CausaleRef::None`]: the
//! movement is kept, unmatched.

use super::CausaleRef;
use crate::ids::Iuv;
use crate::settlement::Iuf;

/// What the causale names; see the module documentation for the rules.
pub fn extract(causale: &str) -> CausaleRef {
    if let Some(iuf) = find_iuf(causale) {
        return CausaleRef::Iuf(iuf);
    }
    match find_iuv(causale) {
        Some(iuv) => CausaleRef::Iuv(iuv),
        None => CausaleRef::None,
    }
}

/// Longest IUF: anything longer is not one.
const IUF_MAX: usize = 35;
/// Longest IUV (a full RF reference).
const IUV_MAX: usize = 25;

fn find_iuf(text: &str) -> Option<Iuf> {
    let two_tokens = starts_with_ci(text.trim_start(), "ACCREDITI VARI");
    let b = text.as_bytes();
    (0..b.len())
        .filter(|&i| b[i].eq_ignore_ascii_case(&b'L'))
        .filter_map(|i| lgpe_tag_end(b, i))
        .filter_map(|end| uri_value_start(b, end))
        .find_map(|(start, slash)| iuf_value(&text[start..], slash, two_tokens))
}

/// The end of `L ?GPE ?- ?RIVERSAMENTO` starting at `i`.
fn lgpe_tag_end(b: &[u8], i: usize) -> Option<usize> {
    let mut at = i;
    for part in ["L", "GPE", "-", "RIVERSAMENTO"] {
        if at > i && b.get(at) == Some(&b' ') {
            at += 1;
        }
        at = literal_ci(b, at, part)?;
    }
    Some(at)
}

/// After the tag: separators, an optional `TXT<sep><digit><sep>`, `URI`, separators. The
/// value's start, and whether `URI` was followed by a `/`.
fn uri_value_start(b: &[u8], at: usize) -> Option<(usize, bool)> {
    let mut at = separators(b, at)?.0;
    if let Some(after_txt) = literal_ci(b, at, "TXT") {
        let (after_sep, _) = separators(b, after_txt)?;
        if !b.get(after_sep)?.is_ascii_digit() {
            return None;
        }
        at = separators(b, after_sep + 1)?.0;
    }
    let after_uri = literal_ci(b, at, "URI")?;
    separators(b, after_uri)
}

/// A non-empty run of `/` and spaces: where it ends, and whether it holds a `/`.
fn separators(b: &[u8], at: usize) -> Option<(usize, bool)> {
    let len = b
        .get(at..)?
        .iter()
        .take_while(|&&c| c == b'/' || c == b' ')
        .count();
    (len > 0).then(|| (at + len, b[at..at + len].contains(&b'/')))
}

fn literal_ci(b: &[u8], at: usize, lit: &str) -> Option<usize> {
    let end = at.checked_add(lit.len())?;
    b.get(at..end)?
        .eq_ignore_ascii_case(lit.as_bytes())
        .then_some(end)
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The IUF at the start of `rest` (the text after `URI`), if one is accepted.
fn iuf_value(rest: &str, slash: bool, two_tokens: bool) -> Option<Iuf> {
    let mut candidates: Vec<String> = Vec::with_capacity(4);
    let mut push_forms = |prefix: &str, s: &str| {
        if two_tokens {
            if let Some(t) = two_token_value(s) {
                candidates.push(format!("{prefix}{t}"));
            }
        }
        if let Some(t) = token(s) {
            candidates.push(format!("{prefix}{t}"));
        }
    };
    if let Some((date, after)) = split_date(rest) {
        push_forms(&date, after);
    }
    push_forms("", rest);
    candidates
        .into_iter()
        .filter(|c| has_date(c) || (slash && c.bytes().all(|b| b.is_ascii_alphanumeric())))
        .find_map(|c| Iuf::parse(&c).ok())
}

fn iuf_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The leading run of IUF characters (`[A-Za-z0-9_-]+`), if not longer than an IUF can be.
fn token(s: &str) -> Option<&str> {
    let len = s
        .bytes()
        .take(IUF_MAX + 1)
        .take_while(|&b| iuf_char(b))
        .count();
    (1..=IUF_MAX).contains(&len).then(|| &s[..len])
}

/// MyPivot's `ACCREDITI VARI` value: an IUF character then more non-spaces, spaces, and another
/// run of non-spaces, joined without the spaces. `None` when longer than an IUF can be.
fn two_token_value(s: &str) -> Option<String> {
    if !s.bytes().next().is_some_and(iuf_char) {
        return None;
    }
    let mut chars = s.chars().peekable();
    let mut out = String::new();
    let first: String = chars
        .by_ref()
        .take(IUF_MAX + 1)
        .take_while(|c| !c.is_whitespace())
        .collect();
    if first.chars().count() < 2 {
        return None;
    }
    out.push_str(&first);
    // `take_while` consumed the first whitespace; skip the rest of the run.
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
    let second: String = chars
        .take(IUF_MAX + 1)
        .take_while(|c| !c.is_whitespace())
        .collect();
    if second.is_empty() {
        return None;
    }
    out.push_str(&second);
    (out.chars().count() <= IUF_MAX).then_some(out)
}

/// `yyyy-mm- dd…` or `yyyy-mm-d d…` at the start: the date without its space, and what follows.
fn split_date(s: &str) -> Option<(String, &str)> {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if !(digits(0..4) && b.get(4) == Some(&b'-') && digits(5..7) && b.get(7) == Some(&b'-')) {
        return None;
    }
    let day = if b.get(8) == Some(&b' ') && digits(9..11) {
        [b[9], b[10]]
    } else if digits(8..9) && b.get(9) == Some(&b' ') && digits(10..11) {
        [b[8], b[10]]
    } else {
        return None;
    };
    let date = format!("{}{}{}", &s[..8], char::from(day[0]), char::from(day[1]));
    Some((date, &s[11..]))
}

/// Whether `s` holds a `dddd-dd-dd` anywhere.
fn has_date(s: &str) -> bool {
    s.as_bytes().windows(10).any(|w| {
        w.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
    })
}

fn find_iuv(text: &str) -> Option<String> {
    let b = text.as_bytes();
    ["RFB", "RFS"].iter().find_map(|tag| {
        (0..b.len())
            .filter(|&i| i == 0 || !b[i - 1].is_ascii_alphanumeric())
            .filter_map(|i| literal_ci(b, i, tag))
            .filter(|&end| matches!(b.get(end), Some(b'/' | b' ')))
            .find_map(|end| iuv_value(&text[end + 1..]))
    })
}

/// The IUV at the start of `rest` (after `RFB/`, `RFS `…), up to the next `/`.
fn iuv_value(rest: &str) -> Option<String> {
    let segment = rest.trim_start_matches(' ');
    let first: String = segment
        .chars()
        .take(IUV_MAX + 1)
        .take_while(|&c| c != '/' && !c.is_whitespace())
        .collect();
    let compact: String = segment
        .chars()
        .take_while(|&c| c != '/')
        .filter(|c| !c.is_whitespace())
        .take(IUV_MAX)
        .collect();
    [first, compact].into_iter().find(|c| Iuv::parse(c).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iuf(s: &str) -> CausaleRef {
        CausaleRef::Iuf(Iuf::parse(s).unwrap())
    }

    fn iuv(s: &str) -> CausaleRef {
        CausaleRef::Iuv(s.to_owned())
    }

    /// A valid 25-character RF reference (ISO 11649 check digits 78).
    const RF: &str = "RF78000000000000000012345";

    /// One row per variant: the causale, what it names, and where the form comes from.
    #[test]
    fn every_documented_causale_variant() {
        let table: Vec<(String, CausaleRef)> = vec![
            // SACI ≤ 1.x and AgID docs: the form without TXT.
            ("/PUR/LGPE-RIVERSAMENTO/URI/2025-01-0188888888888-0000001".into(), iuf("2025-01-0188888888888-0000001")),
            // SACI "Operazione di trasferimento fondi" Tabella 3: TXT/<prog>/ before URI.
            ("/PUR/LGPE-RIVERSAMENTO/TXT/0/URI/2025-01-0188888888888-0000001".into(), iuf("2025-01-0188888888888-0000001")),
            // GovPay V2 CausaleIncassoParserTest: no leading slash, supplementary progressive 1.
            ("PUR/LGPE-RIVERSAMENTO/TXT/1/URI/2026-06-20-FLOW-ABC".into(), iuf("2026-06-20-FLOW-ABC")),
            // GovPay V2 CausaleIncassoParserTest.
            ("PUR/LGPE-RIVERSAMENTO/URI/2026-06-20-XYZ-001".into(), iuf("2026-06-20-XYZ-001")),
            // MyPivot RegEx: spaced tag variants (PRE_IUF_NEW_v2..v5).
            ("/PUR/LGPE- RIVERSAMENTO/URI/2023-01-01PSP01-1".into(), iuf("2023-01-01PSP01-1")),
            ("/PUR/LGPE -RIVERSAMENTO/URI/2023-01-01PSP01-1".into(), iuf("2023-01-01PSP01-1")),
            ("/PUR/LGPE - RIVERSAMENTO/URI/2023-01-01PSP01-1".into(), iuf("2023-01-01PSP01-1")),
            ("/PUR/L GPE-RIVERSAMENTO/URI/2023-01-01PSP01-1".into(), iuf("2023-01-01PSP01-1")),
            // MyPivot RegEx: slashes turned into spaces (" URI "), a date is required there.
            ("PUR LGPE-RIVERSAMENTO URI 2023-01-01PSP01-1 BONIFICO".into(), iuf("2023-01-01PSP01-1")),
            ("PUR LGPE-RIVERSAMENTO URI 10c4f341267947eca9f8f6a7a567a414".into(), CausaleRef::None),
            // "URI" followed by a space after a slash.
            ("/PUR/LGPE-RIVERSAMENTO/URI 2023-01-01PSP01-1".into(), iuf("2023-01-01PSP01-1")),
            // MyPivot RegEx: a date broken by a space, both ways.
            ("/PUR/LGPE-RIVERSAMENTO/URI/2023-01- 01PSP01-7".into(), iuf("2023-01-01PSP01-7")),
            ("/PUR/LGPE-RIVERSAMENTO/URI/2023-01-0 1PSP01-7".into(), iuf("2023-01-01PSP01-7")),
            ("LGPE-RIVERSAMENTO URI 2023-01-0 1PSP01-7".into(), iuf("2023-01-01PSP01-7")),
            // PU TreasuryUtilsTest: ACCREDITI VARI, the IUF split over two tokens.
            ("ACCREDITI VARI LGPE-RIVERSAMENTO/URI/2023-01-01 ABC123".into(), iuf("2023-01-01ABC123")),
            // ACCREDITI VARI whose join is no IUF ('/'): the first token alone.
            ("ACCREDITI VARI LGPE-RIVERSAMENTO/URI/2023-01-01ABC123 /BON.SEPA".into(), iuf("2023-01-01ABC123")),
            // MyPivot RegEx.main: an old IUF (letters and digits only, no date).
            ("/PUR/LGPE-RIVERSAMENTO/URI/10c4f341267947eca9f8f6a7a567a414 750b13d3bb4b49b7a99898584b1ad07c /BON.SEPA TRN 1201160260177342 /BEN. EFFETTIVO REGIONE VENETO /ORD.".into(), iuf("10c4f341267947eca9f8f6a7a567a414")),
            // MyPivot's acceptance check: no date and a '-' is not an old IUF.
            ("/PUR/LGPE-RIVERSAMENTO/URI/FLOW-0001".into(), CausaleRef::None),
            // Max 35 (MyPivot LeggiFile MAX_LENGTH_COD_IUF, the FdR XSD): 36 characters are not an IUF.
            (format!("/PUR/LGPE-RIVERSAMENTO/URI/2023-01-01{}", "A".repeat(26)), CausaleRef::None),
            (format!("/PUR/LGPE-RIVERSAMENTO/URI/2023-01-01{}", "A".repeat(25)), iuf(&format!("2023-01-01{}", "A".repeat(25)))),
            // PU TreasuryPosteProcessingServiceTest: Poste's "RI1" prefix and trailing text.
            ("RI1/PUR/LGPE-RIVERSAMENTO/URI/2025-09-23BPPIITRRXXX-000038102790 ACCREDITO BOLLETTINO P.A.".into(), iuf("2025-09-23BPPIITRRXXX-000038102790")),
            // GovPay (SIOPE+ giornale di cassa): tagged fields around the official form.
            ("/BENEF/COMUNE/ZZ2SATISPAY EUROPE SA/ZZ3Comune Dimostrativo/PUR/LGPE-RIVERSAMENTO/URI/2020-11-21GovPAYPsp-1234567890/ZZ4/ZZ5".into(), iuf("2020-11-21GovPAYPsp-1234567890")),
            // Tags in lower case.
            ("/pur/lgpe-riversamento/txt/2/uri/2023-01-01PSP01-1".into(), iuf("2023-01-01PSP01-1")),
            // A first tag occurrence without a value, a second with one.
            ("LGPE-RIVERSAMENTO RIF. LGPE-RIVERSAMENTO/URI/2023-01-01PSP01-9".into(), iuf("2023-01-01PSP01-9")),
            // An IUF wins over an IUV in the same causale.
            ("/PUR/LGPE-RIVERSAMENTO/URI/2023-01-01PSP01-1 /RFB/01000000000012373".into(), iuf("2023-01-01PSP01-1")),
            // MyPivot RegEx comments: /RFB/<IUV>[/<importo>][/TXT/<descrizione>] (legacy per-payment).
            ("/RFB/01000000000012373/120.50/TXT/TARI 2015".into(), iuv("01000000000012373")),
            ("/RFB/010000000012373".into(), iuv("010000000012373")),
            // MyPivot RegEx: "RFB <IUV> " with spaces.
            ("BONIFICO RFB 01000000000012373 120.50 TARI".into(), iuv("01000000000012373")),
            // MyPivot RegEx comments: /RFS/<IUV>/<importo>[/TXT/<descrizione>], an RF IUV.
            (format!("/RFS/{RF}/10.00/TXT/ICI"), iuv(RF)),
            // GovPay V2 CausaleIncassoParserTest: RFS with a 15-digit IUV.
            ("RFS/123456789012345".into(), iuv("123456789012345")),
            // MyPivot RegEx: an RF reference printed in groups of four, 25 non-space characters.
            ("PAGAMENTO RFS RF78 0000 0000 0000 0000 1234 5 ICI 2010".into(), iuv(RF)),
            ("/RFS/RF78 0000 0000 0000 0000 1234 5 ICI/10.00".into(), iuv(RF)),
            // Not an IUV the hub issues: a 16-digit value, an RF with wrong check digits.
            ("/RFB/0100000000001237/1.00".into(), CausaleRef::None),
            ("/RFS/RF79000000000000000012345/1.00".into(), CausaleRef::None),
            // RFB inside a word is no tag.
            ("SURFB/01000000000012373".into(), CausaleRef::None),
            // Neither: OPI samples' causali, an empty one.
            ("MUTUO 620184257 CUP H94G19030460029 TRXID: 0122492727202545 VIA MILANO 4".into(), CausaleRef::None),
            ("".into(), CausaleRef::None),
            ("LGPE-RIVERSAMENTO".into(), CausaleRef::None),
        ];
        let mut wrong = Vec::new();
        for (causale, expected) in &table {
            let got = extract(causale);
            if &got != expected {
                wrong.push(format!("{causale:?}: got {got:?}, expected {expected:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_reference_tells_its_kind() {
        let r = extract("/PUR/LGPE-RIVERSAMENTO/URI/2023-01-01PSP01-1");
        assert_eq!(r.kind(), "iuf");
        assert_eq!(r.value(), Some("2023-01-01PSP01-1"));
        assert_eq!(r.iuf().map(Iuf::as_str), Some("2023-01-01PSP01-1"));
        assert_eq!(r.iuv(), None);
        let r = extract("/RFB/01000000000012373");
        assert_eq!((r.kind(), r.iuv()), ("iuv", Some("01000000000012373")));
        assert_eq!(CausaleRef::None.kind(), "none");
    }

    #[test]
    fn long_and_odd_text_is_handled() {
        let long = "LGPE-RIVERSAMENTO/URI/".repeat(2000) + &"9".repeat(5000);
        assert_eq!(extract(&long), CausaleRef::None);
        assert_eq!(
            extract("é LGPE-RIVERSAMENTO/URI/2023-01-01€"),
            iuf("2023-01-01")
        );
        assert_eq!(
            extract("ACCREDITI VARI LGPE-RIVERSAMENTO/URI/2023-01-01 é"),
            iuf("2023-01-01")
        );
        assert_eq!(extract("RFS/"), CausaleRef::None);
        assert_eq!(extract("RFB"), CausaleRef::None);
    }
}
