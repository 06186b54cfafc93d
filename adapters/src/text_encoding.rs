//! The character encodings entities' older systems write flows in. Everything inside the hub is
//! UTF-8: a flow declared in another encoding is transcoded while it is read, and its outcome
//! files are written back in that encoding so the entity's system reads them as it wrote them.
//!
//! All three are single-byte encodings: each byte is one character, so the tables below are
//! the whole story (windows-1252's five unassigned bytes map to the C1 controls of the same
//! value, as WHATWG's decoder does, so any file round-trips).

use std::io::{self, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Utf8,
    Windows1252,
    Iso8859_1,
    Iso8859_15,
}

/// windows-1252's bytes 0x80..=0x9F (the rest of its upper half is ISO-8859-1).
const CP1252_80: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}',
    '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
];

/// Where ISO-8859-15 differs from ISO-8859-1.
const LATIN9: [(u8, char); 8] = [
    (0xA4, '€'),
    (0xA6, 'Š'),
    (0xA8, 'š'),
    (0xB4, 'Ž'),
    (0xB8, 'ž'),
    (0xBC, 'Œ'),
    (0xBD, 'œ'),
    (0xBE, 'Ÿ'),
];

impl Encoding {
    pub const NAMES: &'static [&'static str] =
        &["utf-8", "windows-1252", "iso-8859-1", "iso-8859-15"];

    /// Reads a configured name (case-insensitive; `cp1252`, `latin1` and `latin9` too).
    pub fn parse(label: &str) -> Option<Self> {
        match label.trim().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Some(Self::Utf8),
            "windows-1252" | "cp1252" => Some(Self::Windows1252),
            "iso-8859-1" | "iso8859-1" | "latin1" => Some(Self::Iso8859_1),
            "iso-8859-15" | "iso8859-15" | "latin9" => Some(Self::Iso8859_15),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Utf8 => "utf-8",
            Self::Windows1252 => "windows-1252",
            Self::Iso8859_1 => "iso-8859-1",
            Self::Iso8859_15 => "iso-8859-15",
        }
    }

    fn decode_byte(self, b: u8) -> char {
        match (self, b) {
            (_, 0..=0x7F) => char::from(b),
            (Self::Windows1252, 0x80..=0x9F) => CP1252_80[usize::from(b - 0x80)],
            (Self::Iso8859_15, _) => LATIN9
                .iter()
                .find(|(at, _)| *at == b)
                .map_or(char::from(b), |(_, c)| *c),
            _ => char::from(b),
        }
    }

    fn encode_char(self, c: char) -> Option<u8> {
        if c.is_ascii() {
            return u8::try_from(c).ok();
        }
        match self {
            Self::Utf8 => None,
            Self::Windows1252 => CP1252_80
                .iter()
                .position(|&x| x == c)
                .and_then(|i| u8::try_from(0x80 + i).ok())
                .or_else(|| u8::try_from(u32::from(c)).ok().filter(|&b| b >= 0xA0)),
            Self::Iso8859_1 => u8::try_from(u32::from(c)).ok(),
            Self::Iso8859_15 => LATIN9
                .iter()
                .find(|(_, x)| *x == c)
                .map(|(b, _)| *b)
                .or_else(|| {
                    u8::try_from(u32::from(c))
                        .ok()
                        .filter(|b| !LATIN9.iter().any(|(at, _)| at == b))
                }),
        }
    }

    /// Appends `text` in this encoding; a character it cannot represent becomes `?`.
    pub fn encode_into(self, text: &[u8], out: &mut Vec<u8>) {
        if self == Self::Utf8 {
            out.extend_from_slice(text);
            return;
        }
        for c in String::from_utf8_lossy(text).chars() {
            out.push(self.encode_char(c).unwrap_or(b'?'));
        }
    }

    /// A reader giving UTF-8 of what `inner` holds in this encoding (`inner` itself for UTF-8).
    pub fn decoder<'r>(self, inner: &'r mut dyn Read) -> Box<dyn Read + 'r> {
        self.into_decoder(inner)
    }

    /// [`Encoding::decoder`] owning its input.
    pub fn into_decoder<'r, R: Read + 'r>(self, inner: R) -> Box<dyn Read + 'r> {
        match self {
            Self::Utf8 => Box::new(inner),
            _ => Box::new(Decoder {
                encoding: self,
                inner,
                raw: Vec::new(),
                pending: Vec::new(),
                at: 0,
            }),
        }
    }
}

struct Decoder<R> {
    encoding: Encoding,
    inner: R,
    raw: Vec<u8>,
    /// Decoded bytes not handed out yet.
    pending: Vec<u8>,
    at: usize,
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.pending.len() {
            self.raw.resize(buf.len().clamp(1, 64 * 1024), 0);
            let n = self.inner.read(&mut self.raw)?;
            if n == 0 {
                return Ok(0);
            }
            self.pending.clear();
            self.at = 0;
            let mut utf8 = [0u8; 4];
            for &b in &self.raw[..n] {
                let c = self.encoding.decode_byte(b);
                self.pending
                    .extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(e: Encoding, bytes: &[u8]) -> String {
        let mut input = bytes;
        let mut out = String::new();
        e.decoder(&mut input)
            .read_to_string(&mut out)
            .expect("decode");
        out
    }

    #[test]
    fn accented_names_and_the_euro_sign() {
        let cp1252 = b"Nicol\xf2 Fr\xe0 \x80 5";
        assert_eq!(decode(Encoding::Windows1252, cp1252), "Nicolò Frà € 5");
        assert_eq!(decode(Encoding::Iso8859_15, b"\xa4 \xe8"), "€ è");
        assert_eq!(decode(Encoding::Iso8859_1, b"\xa4 \xe8"), "¤ è");
        let mut back = Vec::new();
        Encoding::Windows1252.encode_into("Nicolò Frà € 5".as_bytes(), &mut back);
        assert_eq!(back, cp1252);
        let mut back = Vec::new();
        Encoding::Iso8859_1.encode_into("€ è".as_bytes(), &mut back);
        assert_eq!(back, b"? \xe8", "ISO-8859-1 has no euro sign");
    }

    /// Every byte of each encoding decodes to one character and encodes back to itself.
    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        for e in [
            Encoding::Windows1252,
            Encoding::Iso8859_1,
            Encoding::Iso8859_15,
        ] {
            let text = decode(e, &all);
            assert_eq!(text.chars().count(), 256, "{e:?}");
            let mut back = Vec::new();
            e.encode_into(text.as_bytes(), &mut back);
            assert_eq!(back, all, "{e:?}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(Encoding::parse("Windows-1252"), Some(Encoding::Windows1252));
        assert_eq!(Encoding::parse("latin9"), Some(Encoding::Iso8859_15));
        assert_eq!(Encoding::parse("ebcdic"), None);
        for n in Encoding::NAMES {
            assert_eq!(Encoding::parse(n).map(Encoding::name), Some(*n));
        }
    }
}
