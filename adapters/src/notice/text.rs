//! Text rules of the notice: the specification's length limits, the printed shapes of codes,
//! amounts and dates, and fitting text into a box with the standard fonts' metrics.

use super::metrics::{HELVETICA, HELVETICA_BOLD};
use chrono::NaiveDate;
use snodo_core::Amount;

/// Limits of the notice specification (Allegato 2), in characters.
pub const SUBJECT_MAX: usize = 90;
pub const ENTITY_NAME_MAX: usize = 100;
pub const FISCAL_CODE_MAX: usize = 16;
pub const DEBTOR_NAME_MAX: usize = 70;
pub const DEBTOR_ADDRESS_MAX: usize = 140;
/// Not limited by the specification; kept to what fits two lines of its box.
pub const ENTITY_LINE_MAX: usize = 100;
/// A CBILL (SIA) code is 5 characters; a little room for what entities may type.
pub const CBILL_MAX: usize = 16;

/// Whitespace runs become one space, ends trimmed, then the first `max` characters are kept:
/// the specification cuts, it does not abbreviate.
pub fn cut(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 2));
    let mut n = 0;
    for word in text.split_whitespace() {
        if n > 0 {
            if n == max {
                break;
            }
            out.push(' ');
            n += 1;
        }
        for c in word.chars() {
            if n == max {
                break;
            }
            out.push(c);
            n += 1;
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

/// The 18-digit notice number in groups of four: `3010 0000 0000 1237 31` (22 characters).
pub fn grouped(notice: &str) -> String {
    let mut out = String::with_capacity(notice.len() + notice.len() / 4);
    for (i, c) in notice.chars().enumerate() {
        if i > 0 && i.is_multiple_of(4) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Italian format without currency: `1.020,99`.
pub fn euro(amount: Amount) -> String {
    let cents = amount.cents();
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let int = (abs / 100).to_string();
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            grouped.push('.');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped},{:02}", abs % 100)
}

/// `dd/mm/yyyy`.
pub fn date(d: NaiveDate) -> String {
    d.format("%d/%m/%Y").to_string()
}

/// One character in WinAnsiEncoding (Windows-1252); what the standard fonts cannot show becomes `?`.
pub fn winansi(c: char) -> u8 {
    let u = c as u32;
    match u {
        0x20..=0x7e | 0xa0..=0xff => u as u8,
        _ => match c {
            '€' => 0x80,
            '‚' => 0x82,
            'ƒ' => 0x83,
            '„' => 0x84,
            '…' => 0x85,
            '†' => 0x86,
            '‡' => 0x87,
            'ˆ' => 0x88,
            '‰' => 0x89,
            'Š' => 0x8a,
            '‹' => 0x8b,
            'Œ' => 0x8c,
            'Ž' => 0x8e,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '˜' => 0x98,
            '™' => 0x99,
            'š' => 0x9a,
            '›' => 0x9b,
            'œ' => 0x9c,
            'ž' => 0x9e,
            'Ÿ' => 0x9f,
            '\t' | '\n' | '\r' => b' ',
            _ => b'?',
        },
    }
}

pub fn encode(text: &str) -> Vec<u8> {
    text.chars().map(winansi).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Font {
    Regular,
    Bold,
}

impl Font {
    fn widths(self) -> &'static [u16; 256] {
        match self {
            Font::Regular => &HELVETICA,
            Font::Bold => &HELVETICA_BOLD,
        }
    }

    /// Width of `text` in points at `size`.
    pub fn width(self, text: &str, size: f32) -> f32 {
        let w = self.widths();
        let units: u32 = text
            .chars()
            .map(|c| u32::from(w[usize::from(winansi(c))]))
            .sum();
        units as f32 * size / 1000.0
    }
}

/// How a text sits in its box: the size used and its lines, each no wider than the box.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub size: f32,
    pub lines: Vec<String>,
}

/// Wraps at spaces into at most `max_lines` lines of `width` points, shrinking from `size` down
/// to `min_size`; if it still does not fit, the last line is cut at the box's edge, so the text
/// never leaves its box.
pub fn fit(
    text: &str,
    font: Font,
    size: f32,
    min_size: f32,
    width: f32,
    max_lines: usize,
) -> Fitted {
    let mut s = size;
    loop {
        if let Some(lines) = wrap(text, font, s, width, max_lines) {
            return Fitted { size: s, lines };
        }
        if s - 0.5 < min_size {
            break;
        }
        s -= 0.5;
    }
    let mut lines = wrap_all(text, font, min_size, width);
    lines.truncate(max_lines.max(1));
    let rest = text_after(text, &lines);
    if let Some(last) = lines.last_mut() {
        let joined = if rest.is_empty() {
            last.clone()
        } else {
            format!("{last} {rest}")
        };
        *last = clip(&joined, font, min_size, width);
    }
    Fitted {
        size: min_size,
        lines,
    }
}

/// What follows the first lines in `text` (words not yet placed), to clip onto the last line.
fn text_after(text: &str, lines: &[String]) -> String {
    let placed: usize = lines.iter().map(|l| l.split_whitespace().count()).sum();
    text.split_whitespace()
        .skip(placed)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The longest prefix of `text` no wider than `width`.
fn clip(text: &str, font: Font, size: f32, width: f32) -> String {
    let mut out = String::new();
    let mut w = 0.0;
    for c in text.chars() {
        let cw = font.width(c.encode_utf8(&mut [0; 4]), size);
        if w + cw > width {
            break;
        }
        w += cw;
        out.push(c);
    }
    out.trim_end().to_string()
}

fn wrap(text: &str, font: Font, size: f32, width: f32, max_lines: usize) -> Option<Vec<String>> {
    let lines = wrap_all(text, font, size, width);
    let fits = lines.len() <= max_lines && lines.iter().all(|l| font.width(l, size) <= width);
    fits.then_some(lines)
}

/// Greedy wrapping at spaces; a word wider than the box is clipped on its own line.
fn wrap_all(text: &str, font: Font, size: f32, width: f32) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if font.width(&candidate, size) <= width || line.is_empty() {
            line = candidate;
        } else {
            lines.push(std::mem::take(&mut line));
            line = word.to_string();
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_the_first_characters_counting_accents_once() {
        assert_eq!(cut("  Comune   di  Città ", 100), "Comune di Città");
        let long = "à".repeat(95);
        assert_eq!(cut(&long, SUBJECT_MAX).chars().count(), 90);
        assert_eq!(cut("abcd efgh", 5), "abcd");
        assert_eq!(cut("abcd efgh", 6), "abcd e");
    }

    #[test]
    fn notice_number_in_groups_of_four() {
        let g = grouped("301000000000012373");
        assert_eq!(g, "3010 0000 0000 0123 73");
        assert_eq!(g.len(), 22);
    }

    #[test]
    fn italian_amounts() {
        assert_eq!(euro(Amount::from_cents(102_099)), "1.020,99");
        assert_eq!(euro(Amount::from_cents(5)), "0,05");
        assert_eq!(euro(Amount::from_cents(99_999_999_999)), "999.999.999,99");
        assert_eq!(euro(Amount::from_cents(123_456)), "1.234,56");
    }

    #[test]
    fn winansi_covers_italian_accents_and_euro() {
        assert_eq!(
            encode("àèìòù€É"),
            vec![0xe0, 0xe8, 0xec, 0xf2, 0xf9, 0x80, 0xc9]
        );
        assert_eq!(encode("ł"), b"?");
    }

    #[test]
    fn widths_follow_the_font_metrics() {
        // Helvetica: A = 667, space = 278; bold A = 722.
        assert!((Font::Regular.width("A A", 10.0) - 16.12).abs() < 1e-3);
        assert!((Font::Bold.width("A", 10.0) - 7.22).abs() < 1e-3);
    }

    #[test]
    fn fitted_text_never_leaves_its_box() {
        let long = "Pagamento della retta scolastica per il servizio mensa ".repeat(4);
        for max_lines in 1..=3 {
            let f = fit(&long, Font::Bold, 11.0, 7.0, 150.0, max_lines);
            assert!(f.lines.len() <= max_lines);
            for l in &f.lines {
                assert!(Font::Bold.width(l, f.size) <= 150.0, "{l}");
            }
        }
        // A short text keeps its size and one line.
        let f = fit("Comune di Prova", Font::Regular, 10.0, 7.0, 200.0, 2);
        assert_eq!((f.size, f.lines.len()), (10.0, 1));
        // One unbreakable word wider than the box is clipped.
        let f = fit(&"W".repeat(80), Font::Regular, 10.0, 8.0, 100.0, 1);
        assert!(Font::Regular.width(&f.lines[0], 8.0) <= 100.0);
    }
}
