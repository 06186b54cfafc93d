//! A small writer of XML text, element by element, straight into one `String`: what the SOAP
//! renderer and the `Pagati` document share. Each keeps its own specifics (the envelope, cutting
//! to length, optional elements) on top of it.

use std::fmt::{self, Write as _};

/// The document being written.
pub(crate) struct XmlText(String);

impl XmlText {
    pub(crate) fn with_capacity(capacity: usize) -> XmlText {
        XmlText(String::with_capacity(capacity))
    }

    /// Appends markup as it is (a prolog, an envelope's start or end).
    pub(crate) fn push_str(&mut self, markup: &str) {
        self.0.push_str(markup);
    }

    pub(crate) fn open(&mut self, name: &str) {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
    }

    pub(crate) fn close(&mut self, name: &str) {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
    }

    /// A leaf whose value is ours (a code, a number, a date): written as it displays, no
    /// escaping.
    pub(crate) fn raw(&mut self, name: &str, value: impl fmt::Display) {
        self.open(name);
        let _ = write!(self.0, "{value}");
        self.close(name);
    }

    /// A leaf of text, escaped with [`push_escaped`].
    pub(crate) fn leaf(&mut self, name: &str, text: &str) {
        self.open(name);
        push_escaped(&mut self.0, text);
        self.close(name);
    }

    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

/// Appends `s` as XML character data. Characters XML cannot carry (control characters) are
/// dropped; CR is written as a reference so it survives end-of-line normalisation.
fn push_escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut last = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'\r' => "&#13;",
            b'\t' | b'\n' => continue,
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, hence a char boundary.
        if let Some(chunk) = s.get(last..i) {
            out.push_str(chunk);
        }
        out.push_str(rep);
        last = i + 1;
    }
    if let Some(chunk) = s.get(last..) {
        out.push_str(chunk);
    }
}
