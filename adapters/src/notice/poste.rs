//! The Poste slip's Data Matrix ("Bollettino Postale PA"): its 256-character payload and symbol.
//!
//! Layout after the shared specs/reporting/NOTES.md §2, where pagoPA's generator, MyPay and
//! GovPay agree: a codeline of length-tagged numbers, then fixed-width texts.

use super::{Notice, NoticeError};

/// Length of the payload with every field padded.
pub const POSTE_DATAMATRIX_LEN: usize = 256;
/// Widths of the payload's text fields.
pub(super) const DEBTOR_CF_LEN: usize = 16;
pub(super) const DEBTOR_NAME_LEN: usize = 40;
pub(super) const SUBJECT_LEN: usize = 110;
/// Largest amount the 10-digit cents field holds (99.999.999,99 euro).
pub const POSTE_MAX_AMOUNT_CENTS: i64 = 9_999_999_999;

/// Whether `account` is a postal current account number: 1 to 12 digits (left-padded to 12).
pub(super) fn valid_account(account: &str) -> bool {
    (1..=12).contains(&account.len()) && account.bytes().all(|b| b.is_ascii_digit())
}

/// The account as 12 digits.
pub(super) fn padded_account(account: &str) -> String {
    format!("{account:0>12}")
}

pub(super) fn payload(n: &Notice) -> Option<String> {
    let poste = n.poste.as_ref()?;
    let cents = n.amount.cents();
    if !valid_account(&poste.account) || !(0..=POSTE_MAX_AMOUNT_CENTS).contains(&cents) {
        return None;
    }
    let mut s = String::with_capacity(POSTE_DATAMATRIX_LEN);
    s.push_str("codfase=NBPA;18");
    s.push_str(n.notice_number.as_str());
    s.push_str("12");
    s.push_str(&padded_account(&poste.account));
    s.push_str(&format!("10{cents:010}"));
    s.push_str("3896");
    s.push_str("1P1");
    s.push_str(n.creditor.fiscal_code.as_str());
    push_field(
        &mut s,
        n.debtor.fiscal_code.as_deref().unwrap_or(""),
        DEBTOR_CF_LEN,
    );
    push_field(&mut s, &n.debtor.name, DEBTOR_NAME_LEN);
    push_field(&mut s, &n.subject, SUBJECT_LEN);
    s.push_str(&" ".repeat(12));
    s.push('A');
    debug_assert_eq!(s.len(), POSTE_DATAMATRIX_LEN);
    Some(s)
}

/// `text` upper-cased and sanitised, cut at `width` characters and right-padded with spaces.
fn push_field(out: &mut String, text: &str, width: usize) {
    let mut n = 0;
    let mut put = |f: char| {
        if n == width {
            return false;
        }
        out.push(if allowed(f) { f } else { ' ' });
        n += 1;
        true
    };
    'text: for c in text.chars().flat_map(char::to_uppercase) {
        match fold(c) {
            Some(base) => {
                for f in base.chars() {
                    if !put(f) {
                        break 'text;
                    }
                }
            }
            None => {
                if !put(c) {
                    break;
                }
            }
        }
    }
    out.extend(std::iter::repeat_n(' ', width - n));
}

/// The characters Poste's reader takes (MyPay's and GovPay's list).
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '&' | '\'' | '-' | '.' | ':' | '_' | ',')
}

/// Latin-1 (and Windows-1252) accented capitals to their base letters.
fn fold(c: char) -> Option<&'static str> {
    Some(match c {
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => "A",
        'Æ' => "AE",
        'Ç' => "C",
        'È' | 'É' | 'Ê' | 'Ë' => "E",
        'Ì' | 'Í' | 'Î' | 'Ï' => "I",
        'Ð' => "D",
        'Ñ' => "N",
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' => "O",
        'Ù' | 'Ú' | 'Û' | 'Ü' => "U",
        'Ý' | 'Ÿ' => "Y",
        'Œ' => "OE",
        'Š' => "S",
        'Ž' => "Z",
        _ => return None,
    })
}

/// A Data Matrix symbol: its modules row by row, `side` × `side`, without quiet zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Matrix {
    pub side: usize,
    pub modules: Vec<bool>,
}

/// The square ECC200 symbol of `payload`.
pub(super) fn matrix(payload: &str) -> Result<Matrix, NoticeError> {
    use datamatrix::data::EncodationType;
    // ASCII (digit pairs) and C40 (upper case, digits, space) only: the payload is made of
    // them, and the full optimiser takes ten times as long (~0.8 ms) for the same 48 × 48.
    let code = datamatrix::DataMatrixBuilder::new()
        .with_encodation_types(EncodationType::Ascii | EncodationType::C40)
        .with_symbol_list(datamatrix::SymbolList::default().enforce_square())
        .encode(payload.as_bytes())
        .map_err(|e| NoticeError::DataMatrix(format!("{e:?}")))?;
    let bitmap = code.bitmap();
    let side = bitmap.width();
    let mut modules = vec![false; side * bitmap.height()];
    for (x, y) in bitmap.pixels() {
        modules[y * side + x] = true;
    }
    Ok(Matrix { side, modules })
}

#[cfg(test)]
mod tests {
    use super::super::tests::with_poste;
    use super::*;
    use snodo_core::Amount;

    /// The payload's fields at their offsets: (start, end, what).
    const FIELDS: [(usize, usize); 12] = [
        (0, 13),
        (13, 33),
        (33, 47),
        (47, 59),
        (59, 63),
        (63, 66),
        (66, 77),
        (77, 93),
        (93, 133),
        (133, 243),
        (243, 255),
        (255, 256),
    ];

    fn fields(s: &str) -> Vec<&str> {
        FIELDS.iter().map(|&(a, b)| &s[a..b]).collect()
    }

    #[test]
    fn every_field_sits_at_its_offset() {
        let s = with_poste().poste_datamatrix().unwrap();
        assert_eq!(s.len(), POSTE_DATAMATRIX_LEN);
        assert_eq!(s.chars().count(), POSTE_DATAMATRIX_LEN);
        let f = fields(&s);
        assert_eq!(f[0], "codfase=NBPA;");
        assert_eq!(f[1], "18301000000000012373");
        assert_eq!(f[2], "12000001234567");
        assert_eq!(f[3], "100000102099");
        assert_eq!(f[4], "3896");
        assert_eq!(f[5], "1P1");
        assert_eq!(f[6], "00644060287");
        assert_eq!(f[7], "RSSMRA80A01H501U");
        assert_eq!(f[8], format!("{:<40}", "NICCOLO PERU"));
        assert_eq!(f[9], format!("{:<110}", "RETTA MENSA: E GIA PIU CARO"));
        assert_eq!(f[10], " ".repeat(12));
        assert_eq!(f[11], "A");
        // What readers (the IO app) slice out.
        assert_eq!(&s[15..33], "301000000000012373");
        assert_eq!(&s[49..59], "0000102099");
        assert_eq!(&s[66..77], "00644060287");
    }

    #[test]
    fn none_without_poste_or_with_what_cannot_be_written() {
        let mut n = with_poste();
        n.poste = None;
        assert_eq!(n.poste_datamatrix(), None);
        let mut n = with_poste();
        n.amount = Amount::from_cents(POSTE_MAX_AMOUNT_CENTS + 1);
        assert_eq!(n.poste_datamatrix(), None);
        n.amount = Amount::from_cents(POSTE_MAX_AMOUNT_CENTS);
        assert_eq!(&n.poste_datamatrix().unwrap()[47..59], "109999999999");
        for bad in ["", "1234567890123", "12345a", "１２"] {
            let mut n = with_poste();
            n.poste.as_mut().unwrap().account = bad.into();
            assert_eq!(n.poste_datamatrix(), None, "{bad:?}");
        }
        let mut n = with_poste();
        n.poste.as_mut().unwrap().account = "123456789012".into();
        assert_eq!(&n.poste_datamatrix().unwrap()[33..47], "12123456789012");
    }

    #[test]
    fn texts_are_padded_upper_cased_sanitised_and_cut() {
        let mut n = with_poste();
        n.debtor.fiscal_code = None;
        n.debtor.name = "àèìòù ÀÉ çñ ß Æ €/|\nx&'-.:_,y".into();
        n.subject = "a".repeat(300);
        let s = n.poste_datamatrix().unwrap();
        let f = fields(&s);
        assert_eq!(f[7], " ".repeat(16));
        assert_eq!(f[8], format!("{:<40}", "AEIOU AE CN SS AE     X&'-.:_,Y"));
        assert_eq!(f[9], "A".repeat(110));
        assert_eq!(s.len(), POSTE_DATAMATRIX_LEN);

        n.debtor.name = "b".repeat(200);
        n.debtor.fiscal_code = Some("rssmra80a01h501u".into());
        n.subject = "Tassa | rifiuti € 2026 / ok".into();
        let s = n.poste_datamatrix().unwrap();
        let f = fields(&s);
        assert_eq!(f[7], "RSSMRA80A01H501U");
        assert_eq!(f[8], "B".repeat(40));
        assert_eq!(f[9], format!("{:<110}", "TASSA   RIFIUTI   2026   OK"));
        // Only allowed characters are left anywhere past the literal prefix.
        assert!(s[13..].chars().all(allowed), "{s}");
    }

    #[test]
    fn a_folded_letter_at_the_edge_is_cut_too() {
        let mut n = with_poste();
        n.debtor.name = format!("{}Æ", "x".repeat(39));
        let s = n.poste_datamatrix().unwrap();
        assert_eq!(&s[93..133], format!("{}A", "X".repeat(39)));
        assert_eq!(s.len(), POSTE_DATAMATRIX_LEN);
    }

    #[test]
    fn the_symbol_is_square_and_decodes_back() {
        let payload = with_poste().poste_datamatrix().unwrap();
        let m = matrix(&payload).unwrap();
        assert_eq!(m.modules.len(), m.side * m.side);
        // 25 mm over 48 modules: 0.52 mm each.
        assert_eq!(m.side, 48);
        let decoded = datamatrix::DataMatrix::decode(&m.modules, m.side).unwrap();
        assert_eq!(decoded, payload.as_bytes());
    }
}
