//! Streaming reader for MyPay's `;`-separated CSV flows (and, with [`Dialect::POSTGRES`], for
//! PostgreSQL's CSV exports such as MyPay's taxonomy table: the rules below with `,` and `'`).
//!
//! Built for throughput: records are located with `memchr` in one reusable buffer and fields are
//! handed out as slices of that buffer. Only a quoted field that contains an escape (or text after
//! its closing quote) is copied, into a per-record scratch buffer that is reused as well.
//!
//! # Dialect
//!
//! * The first physical line is the header: returned as is by [`CsvLines::header`], never parsed.
//! * Separator `;`; record terminator `\n` or `\r\n` (a final line may lack it).
//! * Lines that are empty or hold only spaces and tabs are skipped (they still count as lines).
//! * A field is quoted when its first byte is `"`. Inside it `;` and line breaks are data, and both
//!   `""` and `\"` stand for a literal `"` (MyPay unescapes `\"`). One exception keeps a value that
//!   ends with a backslash readable, as MyPay does: a `\"` directly followed by `;`, a line break or
//!   the end of input is a backslash followed by the closing quote (`"C:\dir\";` reads `C:\dir\`).
//!   Text between a closing quote and the next separator is appended to the value as is.
//! * A `"` anywhere else (inside an unquoted field) is an ordinary character; unquoted fields are
//!   returned verbatim. Values are not trimmed.
//! * A quoted field still open at the end of input ends there; the record reports
//!   [`RowError::UnterminatedQuote`].
//!
//! # Limits
//!
//! A record longer than [`CsvLimits::max_record_bytes`] or not valid UTF-8 stops the stream with
//! a [`CsvError`] naming its line: the caller should abort the whole flow. A record with more
//! than [`CsvLimits::max_fields`] fields is still returned (only the first `max_fields` values
//! are kept, [`Record::field_count`] is the real count) and reports [`RowError::TooManyFields`],
//! so one bad row does not stop the flow.

use std::fmt;
use std::io::{self, Read};

use memchr::{memchr, memchr2, memchr_iter};

/// Size of the read buffer at start; it grows (doubling) up to the record limit when needed.
const INITIAL_BUFFER: usize = 128 * 1024;

/// Hard limits protecting memory and CPU against malformed or hostile files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvLimits {
    /// Longest record accepted, in bytes, terminator excluded (the header too).
    pub max_record_bytes: usize,
    /// Most field values kept per record; a record with more is a row error, not a stream error.
    pub max_fields: usize,
}

impl Default for CsvLimits {
    /// 1 MiB per record, 64 fields.
    fn default() -> Self {
        Self {
            max_record_bytes: 1024 * 1024,
            max_fields: 64,
        }
    }
}

/// The separator, the escape before a quote, and whether a header line comes first: MyPay's
/// flows ([`Dialect::MYPAY`]) and PostgreSQL's CSV exports such as MyPay's taxonomy table
/// ([`Dialect::POSTGRES`]) differ only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub separator: u8,
    /// Inside a quoted field, this byte followed by `"` stands for a `"` (the exception at the
    /// end of a value applies, see the module docs).
    pub escape: u8,
    pub header: bool,
}

impl Dialect {
    /// MyPay's flows: `;`, `\"`, a header line.
    pub const MYPAY: Dialect = Dialect {
        separator: b';',
        escape: b'\\',
        header: true,
    };
    /// PostgreSQL `COPY … CSV` with `ESCAPE '''`: `,`, `'"`, no header line. A doubled `''`
    /// inside a quoted value is left as is: it is the caller's to fold, where it cares.
    pub const POSTGRES: Dialect = Dialect {
        separator: b',',
        escape: b'\'',
        header: false,
    };
}

/// A problem that stops the stream: the caller should abort the whole flow.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("error reading the flow: {0}")]
    Io(#[from] io::Error),
    #[error("line {line}: record longer than {max} bytes")]
    RecordTooLong { line: u64, max: usize },
    #[error(
        "line {line}: invalid UTF-8 at byte {offset} of the record; the flow must be UTF-8 encoded, or its pipeline must declare its encoding (e.g. encoding = \"windows-1252\")"
    )]
    InvalidUtf8 { line: u64, offset: usize },
}

impl CsvError {
    /// 1-based physical line the error refers to, when there is one.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Io(_) => None,
            Self::RecordTooLong { line, .. } | Self::InvalidUtf8 { line, .. } => Some(*line),
        }
    }
}

/// A problem confined to one record: the caller rejects the row and goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowError {
    /// More fields than [`CsvLimits::max_fields`]: `count` is the real number of fields.
    TooManyFields { count: usize, max: usize },
    /// A quoted field was still open at the end of the input.
    UnterminatedQuote,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyFields { count, max } => write!(f, "Too many columns: {count} > {max}"),
            Self::UnterminatedQuote => {
                f.write_str("Unterminated quoted field: a \" opened in this row is never closed")
            }
        }
    }
}

impl std::error::Error for RowError {}

/// Anything that can hand out a row's fields by position: a [`Record`], or a slice of strings.
///
/// `field` returns `""` for a position past the end, so mappers need no bounds checks.
pub trait FieldSource<'a> {
    /// Number of fields of the row.
    fn field_count(&self) -> usize;
    /// The value at `index`, or `""` when there is none.
    fn field(&self, index: usize) -> &'a str;
}

impl<'a, S: AsRef<str>> FieldSource<'a> for &'a [S] {
    fn field_count(&self) -> usize {
        self.len()
    }
    fn field(&self, index: usize) -> &'a str {
        self.get(index).map_or("", AsRef::as_ref)
    }
}

impl<'a, S: AsRef<str>> FieldSource<'a> for &'a Vec<S> {
    fn field_count(&self) -> usize {
        self.len()
    }
    fn field(&self, index: usize) -> &'a str {
        self.get(index).map_or("", AsRef::as_ref)
    }
}

/// Where a field value lives: in the record text, or in the record's scratch buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    in_scratch: bool,
}

/// One record, borrowed from the reader until the next call to [`CsvLines::next_record`].
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// 1-based physical line where the record starts (the header is line 1).
    pub line: u64,
    /// 1-based number of the record among the data rows (header and blank lines excluded).
    pub row: u64,
    /// The record exactly as in the file, terminator excluded (it may span lines when a quoted
    /// field holds a line break): echo it verbatim when rejecting the row.
    pub raw: &'a str,
    spans: &'a [Span],
    scratch: &'a str,
    field_count: usize,
    max_fields: usize,
    unterminated: bool,
}

impl<'a> Record<'a> {
    /// Real number of fields, even when more than `max_fields` (only those are kept).
    pub fn field_count(&self) -> usize {
        self.field_count
    }

    /// The unescaped value of field `index`, `None` past the kept fields.
    pub fn get(&self, index: usize) -> Option<&'a str> {
        let span = self.spans.get(index)?;
        let text = if span.in_scratch {
            self.scratch
        } else {
            self.raw
        };
        text.get(span.start..span.end)
    }

    /// The unescaped value of field `index`, `""` past the kept fields.
    pub fn field(&self, index: usize) -> &'a str {
        self.get(index).unwrap_or("")
    }

    /// The kept field values in order.
    pub fn fields(&self) -> impl Iterator<Item = &'a str> + 'a {
        let (raw, scratch) = (self.raw, self.scratch);
        self.spans.iter().map(move |span| {
            let text = if span.in_scratch { scratch } else { raw };
            text.get(span.start..span.end).unwrap_or("")
        })
    }

    /// The problem that makes this record unusable, if any: reject the row with it.
    pub fn error(&self) -> Option<RowError> {
        if self.unterminated {
            Some(RowError::UnterminatedQuote)
        } else if self.field_count > self.max_fields {
            Some(RowError::TooManyFields {
                count: self.field_count,
                max: self.max_fields,
            })
        } else {
            None
        }
    }
}

impl<'a> FieldSource<'a> for Record<'a> {
    fn field_count(&self) -> usize {
        self.field_count
    }
    fn field(&self, index: usize) -> &'a str {
        Record::field(self, index)
    }
}

impl<'a> FieldSource<'a> for &Record<'a> {
    fn field_count(&self) -> usize {
        self.field_count
    }
    fn field(&self, index: usize) -> &'a str {
        Record::field(self, index)
    }
}

/// Outcome of scanning the buffered bytes for one record.
enum Scan {
    /// The record is not complete in the buffer.
    NeedMore,
    /// A complete record of `len` bytes followed by `term` terminator bytes.
    Record { len: usize, term: usize, slow: bool },
}

/// Streaming record reader over any [`Read`]; see the module docs for the dialect.
pub struct CsvLines<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes (the current record once returned).
    pos: usize,
    /// End of the valid bytes in `buf`.
    end: usize,
    /// Bytes of the current record plus terminator, dropped at the next call.
    consumed: usize,
    eof: bool,
    done: bool,
    buf_limit: usize,
    limits: CsvLimits,
    dialect: Dialect,
    header: String,
    spans: Vec<Span>,
    scratch: Vec<u8>,
    field_count: usize,
    unterminated: bool,
    next_line: u64,
    rows: u64,
}

impl<R: Read> CsvLines<R> {
    /// Reads the header line and prepares to stream the records.
    ///
    /// An empty input gives an empty header and no records.
    pub fn new(inner: R, limits: CsvLimits) -> Result<Self, CsvError> {
        Self::with_buffer(inner, limits, INITIAL_BUFFER, Dialect::MYPAY)
    }

    /// A reader of another dialect; without a header line, [`Self::header`] is empty.
    pub fn with_dialect(inner: R, limits: CsvLimits, dialect: Dialect) -> Result<Self, CsvError> {
        Self::with_buffer(inner, limits, INITIAL_BUFFER, dialect)
    }

    fn with_buffer(
        inner: R,
        limits: CsvLimits,
        initial: usize,
        dialect: Dialect,
    ) -> Result<Self, CsvError> {
        let limits = CsvLimits {
            max_record_bytes: limits.max_record_bytes.max(1),
            max_fields: limits.max_fields.max(1),
        };
        // Room for the longest record plus "\r\n": a full buffer without a terminator means
        // the record is too long.
        let buf_limit = limits.max_record_bytes.saturating_add(2);
        let mut reader = Self {
            inner,
            buf: vec![0; initial.clamp(1, buf_limit)],
            pos: 0,
            end: 0,
            consumed: 0,
            eof: false,
            done: false,
            buf_limit,
            limits,
            dialect,
            header: String::new(),
            spans: Vec::with_capacity(limits.max_fields.min(64)),
            scratch: Vec::new(),
            field_count: 0,
            unterminated: false,
            next_line: 1,
            rows: 0,
        };
        // A UTF-8 byte order mark (Windows editors write one) is not part of the first record.
        if !reader.eof {
            reader.fill()?;
        }
        if reader.buf[reader.pos..reader.end].starts_with(b"\xEF\xBB\xBF") {
            reader.pos += 3;
        }
        if dialect.header {
            reader.read_header()?;
        }
        Ok(reader)
    }

    /// The first line of the input, without its terminator.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// Data rows returned so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Physical lines consumed so far (header and blank lines included).
    pub fn lines(&self) -> u64 {
        self.next_line - 1
    }

    fn read_header(&mut self) -> Result<(), CsvError> {
        let max = self.limits.max_record_bytes;
        loop {
            let data = &self.buf[self.pos..self.end];
            let (len, term) = match memchr(b'\n', data) {
                Some(nl) => (nl, 1),
                None if self.eof => (data.len(), 0),
                None => {
                    if !self.fill()? {
                        return Err(CsvError::RecordTooLong { line: 1, max });
                    }
                    continue;
                }
            };
            let line = &data[..len];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > max {
                return Err(CsvError::RecordTooLong { line: 1, max });
            }
            let text = std::str::from_utf8(line).map_err(|e| CsvError::InvalidUtf8 {
                line: 1,
                offset: e.valid_up_to(),
            })?;
            self.header = text.to_owned();
            if len + term > 0 {
                self.next_line = 2;
            }
            self.pos += len + term;
            return Ok(());
        }
    }

    /// The next data record, `None` at the end of the input.
    ///
    /// After an error the reader is finished: further calls return `Ok(None)`.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CsvError> {
        if self.done {
            return Ok(None);
        }
        self.pos += self.consumed;
        self.consumed = 0;
        match self.advance() {
            Ok(Some((line, len, slow))) => {
                let raw = &self.buf[self.pos..self.pos + len];
                // Any failure here is a stream error; mark done before borrowing for the result.
                let raw = match std::str::from_utf8(raw) {
                    Ok(raw) => raw,
                    Err(e) => {
                        self.done = true;
                        return Err(CsvError::InvalidUtf8 {
                            line,
                            offset: e.valid_up_to(),
                        });
                    }
                };
                // The scratch holds pieces of `raw` cut at ASCII bytes plus `"`: valid UTF-8
                // whenever `raw` is, so this never fails in practice.
                let scratch = if slow {
                    match std::str::from_utf8(&self.scratch) {
                        Ok(scratch) => scratch,
                        Err(e) => {
                            self.done = true;
                            return Err(CsvError::InvalidUtf8 {
                                line,
                                offset: e.valid_up_to(),
                            });
                        }
                    }
                } else {
                    ""
                };
                // Counted only once it is handed out: a record refused above is no row.
                self.rows += 1;
                Ok(Some(Record {
                    line,
                    row: self.rows,
                    raw,
                    spans: &self.spans,
                    scratch,
                    field_count: self.field_count,
                    max_fields: self.limits.max_fields,
                    unterminated: self.unterminated,
                }))
            }
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    /// Finds and splits the next non-blank record: `(line, len, used scratch)`.
    fn advance(&mut self) -> Result<Option<(u64, usize, bool)>, CsvError> {
        loop {
            if self.pos == self.end {
                if self.eof {
                    return Ok(None);
                }
                self.fill()?;
                continue;
            }
            match self.scan() {
                Scan::NeedMore => {
                    if self.eof {
                        // scan() treats the end of input as a terminator; cannot happen.
                        return Ok(None);
                    }
                    if !self.fill()? {
                        return Err(CsvError::RecordTooLong {
                            line: self.next_line,
                            max: self.limits.max_record_bytes,
                        });
                    }
                }
                Scan::Record { len, term, slow } => {
                    let line = self.next_line;
                    let record = &self.buf[self.pos..self.pos + len];
                    let breaks = if slow {
                        memchr_iter(b'\n', record).count() as u64
                    } else {
                        0
                    };
                    self.next_line += 1 + breaks;
                    if len > self.limits.max_record_bytes {
                        return Err(CsvError::RecordTooLong {
                            line,
                            max: self.limits.max_record_bytes,
                        });
                    }
                    if record.iter().all(|b| matches!(b, b' ' | b'\t')) {
                        self.pos += len + term;
                        continue;
                    }
                    self.consumed = len + term;
                    return Ok(Some((line, len, slow)));
                }
            }
        }
    }

    /// Compacts the buffer, grows it if full, and reads until it is full or the input ends.
    ///
    /// Returns `false` when the buffer is full at its limit (the record cannot fit).
    fn fill(&mut self) -> Result<bool, CsvError> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= self.buf_limit {
                return Ok(false);
            }
            let grown = self.buf.len().saturating_mul(2).clamp(1, self.buf_limit);
            self.buf.resize(grown, 0);
        }
        while self.end < self.buf.len() && !self.eof {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Locates the record at `pos` and fills `spans`/`scratch`/`field_count`.
    fn scan(&mut self) -> Scan {
        let data = &self.buf[self.pos..self.end];
        let (line_len, term) = match memchr(b'\n', data) {
            Some(nl) => (nl, 1),
            None if self.eof => (data.len(), 0),
            None => return Scan::NeedMore,
        };
        let line = &data[..line_len];
        if memchr(b'"', line).is_none() {
            // Fast path: no quotes, the record is this line.
            let (len, term) = match line.last() {
                Some(b'\r') => (line_len - 1, term + 1),
                _ => (line_len, term),
            };
            let max = self.limits.max_fields;
            self.spans.clear();
            self.unterminated = false;
            let mut count = 0;
            let mut start = 0;
            for sep in memchr_iter(self.dialect.separator, &line[..len]) {
                if count < max {
                    self.spans.push(Span {
                        start,
                        end: sep,
                        in_scratch: false,
                    });
                }
                count += 1;
                start = sep + 1;
            }
            if count < max {
                self.spans.push(Span {
                    start,
                    end: len,
                    in_scratch: false,
                });
            }
            self.field_count = count + 1;
            return Scan::Record {
                len,
                term,
                slow: false,
            };
        }
        self.scan_quoted()
    }

    /// The general state machine, used when the first line of the record holds a `"`.
    fn scan_quoted(&mut self) -> Scan {
        let data = &self.buf[self.pos..self.end];
        let eof = self.eof;
        let max = self.limits.max_fields;
        let Dialect {
            separator: sep,
            escape,
            ..
        } = self.dialect;
        let n = data.len();
        let spans = &mut self.spans;
        let scratch = &mut self.scratch;
        spans.clear();
        scratch.clear();
        let mut count = 0usize;
        let mut i = 0usize;
        // Each iteration reads one field starting at `i` and stops at its separator or the end
        // of the record; `stop` is the index of that separator / terminator (or `n`).
        loop {
            let span;
            let stop;
            if data.get(i) == Some(&b'"') {
                let content = i + 1;
                let mut piece = content; // start of the content not yet copied to scratch
                let mut copied = false; // whether the value is being built in scratch
                let scratch_start = scratch.len();
                let mut j = content;
                let closed_at = loop {
                    let Some(k) = memchr(b'"', &data[j..]) else {
                        if !eof {
                            return Scan::NeedMore;
                        }
                        break None;
                    };
                    let q = j + k;
                    if q + 1 >= n && !eof {
                        return Scan::NeedMore;
                    }
                    let next = data.get(q + 1).copied();
                    let next_ends = matches!(next, None | Some(b'\r' | b'\n')) || next == Some(sep);
                    if q > content && data[q - 1] == escape && !next_ends {
                        scratch.extend_from_slice(&data[piece..q - 1]);
                        scratch.push(b'"');
                        copied = true;
                        piece = q + 1;
                        j = q + 1;
                    } else if next == Some(b'"') {
                        scratch.extend_from_slice(&data[piece..q]);
                        scratch.push(b'"');
                        copied = true;
                        piece = q + 2;
                        j = q + 2;
                    } else {
                        break Some(q);
                    }
                };
                match closed_at {
                    None => {
                        // Open quote up to the end of input: the rest (minus a final line
                        // break) is this field's value.
                        let mut len = n;
                        if data.ends_with(b"\n") {
                            len -= 1;
                            if data[..len].ends_with(b"\r") {
                                len -= 1;
                            }
                        }
                        let len = len.max(piece);
                        if copied {
                            scratch.extend_from_slice(&data[piece..len]);
                            span = Span {
                                start: scratch_start,
                                end: scratch.len(),
                                in_scratch: true,
                            };
                        } else {
                            span = Span {
                                start: content,
                                end: len,
                                in_scratch: false,
                            };
                        }
                        if count < max {
                            spans.push(span);
                        }
                        self.field_count = count + 1;
                        self.unterminated = true;
                        return Scan::Record {
                            len,
                            term: n - len,
                            slow: true,
                        };
                    }
                    Some(q) => {
                        let after = q + 1;
                        match data.get(after) {
                            None | Some(b'\n') => {
                                stop = after;
                            }
                            Some(&c) if c == sep => {
                                stop = after;
                            }
                            Some(b'\r') if data.get(after + 1) == Some(&b'\n') => {
                                stop = after;
                            }
                            Some(_) => {
                                // Text after the closing quote: appended as is up to the separator.
                                let Some(s) = find_field_end(data, after, eof, sep) else {
                                    return Scan::NeedMore;
                                };
                                stop = s;
                                copied = true;
                            }
                        }
                        if copied {
                            scratch.extend_from_slice(&data[piece..q]);
                            if stop > after {
                                scratch.extend_from_slice(&data[after..trim_cr(data, after, stop)]);
                            }
                            span = Span {
                                start: scratch_start,
                                end: scratch.len(),
                                in_scratch: true,
                            };
                        } else {
                            span = Span {
                                start: content,
                                end: q,
                                in_scratch: false,
                            };
                        }
                    }
                }
            } else {
                let Some(s) = find_field_end(data, i, eof, sep) else {
                    return Scan::NeedMore;
                };
                stop = s;
                span = Span {
                    start: i,
                    end: trim_cr(data, i, stop),
                    in_scratch: false,
                };
            }
            if count < max {
                spans.push(span);
            }
            count += 1;
            match data.get(stop) {
                Some(&c) if c == sep => i = stop + 1,
                Some(_) => {
                    // Line break ending the record ("\r\n" or "\n").
                    let len = if stop > 0 && data[stop - 1] == b'\r' {
                        stop - 1
                    } else {
                        stop
                    };
                    self.field_count = count;
                    self.unterminated = false;
                    return Scan::Record {
                        len,
                        term: stop + 1 - len,
                        slow: true,
                    };
                }
                None => {
                    let len = if stop > 0 && data[stop - 1] == b'\r' {
                        stop - 1
                    } else {
                        stop
                    };
                    self.field_count = count;
                    self.unterminated = false;
                    return Scan::Record {
                        len,
                        term: n - len,
                        slow: true,
                    };
                }
            }
        }
    }
}

/// Index of the separator or `\n` ending an unquoted field starting at `from`, `n` at the end
/// of input, `None` when more data is needed.
fn find_field_end(data: &[u8], from: usize, eof: bool, sep: u8) -> Option<usize> {
    match memchr2(sep, b'\n', &data[from..]) {
        Some(k) => Some(from + k),
        None if eof => Some(data.len()),
        None => None,
    }
}

/// End of a field value `data[start..stop]` without the `\r` of a `\r\n` (or a final `\r`).
fn trim_cr(data: &[u8], start: usize, stop: usize) -> usize {
    let ends_line = matches!(data.get(stop), None | Some(b'\n'));
    if ends_line && stop > start && data[stop - 1] == b'\r' {
        stop - 1
    } else {
        stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record as plain data, for comparisons.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Rec {
        line: u64,
        row: u64,
        raw: String,
        fields: Vec<String>,
        count: usize,
        error: Option<RowError>,
    }

    fn rec(line: u64, row: u64, raw: &str, fields: &[&str]) -> Rec {
        Rec {
            line,
            row,
            raw: raw.to_owned(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            count: fields.len(),
            error: None,
        }
    }

    /// Reads everything: header, records, and the error that stopped the stream (as text).
    fn read_with<R: Read>(
        reader: R,
        limits: CsvLimits,
        initial: usize,
    ) -> (String, Vec<Rec>, Option<String>) {
        let mut csv = match CsvLines::with_buffer(reader, limits, initial, Dialect::MYPAY) {
            Ok(csv) => csv,
            Err(e) => return (String::new(), Vec::new(), Some(e.to_string())),
        };
        let header = csv.header().to_owned();
        let mut out = Vec::new();
        loop {
            match csv.next_record() {
                Ok(Some(r)) => out.push(Rec {
                    line: r.line,
                    row: r.row,
                    raw: r.raw.to_owned(),
                    fields: r.fields().map(str::to_owned).collect(),
                    count: r.field_count(),
                    error: r.error(),
                }),
                Ok(None) => return (header, out, None),
                Err(e) => {
                    assert!(
                        matches!(csv.next_record(), Ok(None)),
                        "finished after an error"
                    );
                    return (header, out, Some(e.to_string()));
                }
            }
        }
    }

    fn read(input: &[u8]) -> (String, Vec<Rec>, Option<String>) {
        read_with(input, CsvLimits::default(), INITIAL_BUFFER)
    }

    fn records(input: &str) -> Vec<Rec> {
        let (_, recs, err) = read(input.as_bytes());
        assert_eq!(err, None);
        recs
    }

    /// A reader handing out at most `step` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn header_and_simple_rows() {
        let (header, recs, err) = read(b"IUD;codIuv;azione\n1;;I\n2;X;A");
        assert_eq!(header, "IUD;codIuv;azione");
        assert_eq!(err, None);
        assert_eq!(
            recs,
            vec![
                rec(2, 1, "1;;I", &["1", "", "I"]),
                rec(3, 2, "2;X;A", &["2", "X", "A"])
            ]
        );
    }

    #[test]
    fn header_is_not_parsed() {
        let (header, recs, _) = read(b"\"a;b\";\"c\r\nx\n");
        assert_eq!(header, "\"a;b\";\"c");
        assert_eq!(recs, vec![rec(2, 1, "x", &["x"])]);
        let (header, recs, _) = read(b"");
        assert_eq!((header.as_str(), recs.len()), ("", 0));
        let (header, recs, _) = read(b"only header");
        assert_eq!((header.as_str(), recs.len()), ("only header", 0));
    }

    #[test]
    fn quoted_fields_and_escapes() {
        let input = "h\n\
            \"a;b\";\"say \\\"hi\\\"\";\"x\"\"y\";\"\";\"C:\\dir\\\";end\n\
            plain \"quote\";\"open\"tail;\"\\\"\";\"back\\\\\"\n";
        assert_eq!(
            records(input),
            vec![
                rec(
                    2,
                    1,
                    "\"a;b\";\"say \\\"hi\\\"\";\"x\"\"y\";\"\";\"C:\\dir\\\";end",
                    &["a;b", "say \"hi\"", "x\"y", "", "C:\\dir\\", "end"]
                ),
                rec(
                    3,
                    2,
                    "plain \"quote\";\"open\"tail;\"\\\"\";\"back\\\\\"",
                    &["plain \"quote\"", "opentail", "\"", "back\\\\"]
                ),
            ]
        );
    }

    #[test]
    fn newline_inside_quotes() {
        let recs = records("h\n1;\"two\nlines\";\"and\r\nthree\n\";x\n2;y\n");
        assert_eq!(
            recs,
            vec![
                rec(
                    2,
                    1,
                    "1;\"two\nlines\";\"and\r\nthree\n\";x",
                    &["1", "two\nlines", "and\r\nthree\n", "x"]
                ),
                rec(6, 2, "2;y", &["2", "y"]),
            ]
        );
    }

    #[test]
    fn crlf_terminators() {
        let recs = records("h1;h2\r\na;b\r\n\"q\";c\r\nlast;\"z\"\r");
        assert_eq!(
            recs,
            vec![
                rec(2, 1, "a;b", &["a", "b"]),
                rec(3, 2, "\"q\";c", &["q", "c"]),
                rec(4, 3, "last;\"z\"", &["last", "z"]),
            ]
        );
        let (header, _, _) = read(b"h1;h2\r\n");
        assert_eq!(header, "h1;h2");
    }

    #[test]
    fn blank_lines_are_skipped_but_counted() {
        let recs = records("h\n\n1;a\n\r\n  \t \n\n\"2\";b\n\n");
        assert_eq!(
            recs,
            vec![
                rec(3, 1, "1;a", &["1", "a"]),
                rec(7, 2, "\"2\";b", &["2", "b"])
            ]
        );
    }

    #[test]
    fn empty_fields_and_trailing_separator() {
        assert_eq!(
            records("h\n;;\na;\n\"\";\n"),
            vec![
                rec(2, 1, ";;", &["", "", ""]),
                rec(3, 2, "a;", &["a", ""]),
                rec(4, 3, "\"\";", &["", ""]),
            ]
        );
    }

    #[test]
    fn unterminated_quote_is_a_row_error() {
        let (_, recs, err) = read(b"h\n1;ok\n2;\"never closed;x\ny\n");
        assert_eq!(err, None);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].raw, "2;\"never closed;x\ny");
        assert_eq!(recs[1].fields, vec!["2", "never closed;x\ny"]);
        assert_eq!(recs[1].error, Some(RowError::UnterminatedQuote));
        assert_eq!(
            RowError::UnterminatedQuote.to_string(),
            "Unterminated quoted field: a \" opened in this row is never closed"
        );
    }

    #[test]
    fn too_many_fields_is_a_row_error_and_the_stream_goes_on() {
        let wide = vec!["x"; 10_000].join(";");
        let wide_quoted = vec!["\"q\""; 10_000].join(";");
        let input = format!("h\n{wide}\n{wide_quoted}\n1;2\n");
        let (_, recs, err) = read(input.as_bytes());
        assert_eq!(err, None);
        assert_eq!(recs.len(), 3);
        for (i, r) in recs[..2].iter().enumerate() {
            assert_eq!(r.line, 2 + i as u64);
            assert_eq!(r.count, 10_000);
            assert_eq!(r.fields.len(), 64);
            let expected = RowError::TooManyFields {
                count: 10_000,
                max: 64,
            };
            assert_eq!(r.error.as_ref(), Some(&expected));
            assert_eq!(expected.to_string(), "Too many columns: 10000 > 64");
        }
        assert_eq!(recs[0].raw, wide);
        assert_eq!(recs[1].fields[63], "q");
        assert_eq!(recs[2], rec(4, 3, "1;2", &["1", "2"]));
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_record() {
        for dialect in [Dialect::MYPAY, Dialect::POSTGRES] {
            let text = b"\xEF\xBB\xBFIUD;x\nA1;y\n";
            let mut lines =
                CsvLines::with_dialect(&text[..], CsvLimits::default(), dialect).expect("start");
            if dialect.header {
                assert_eq!(lines.header(), "IUD;x");
            } else {
                let first = lines.next_record().expect("read").expect("record");
                assert_eq!(first.raw, "IUD;x");
            }
        }
    }

    #[test]
    fn invalid_utf8_stops_the_stream() {
        let (_, recs, err) = read(b"h\n1;ok\n\n2;caf\xe9\n3;never\n");
        assert_eq!(recs.len(), 1);
        assert_eq!(
            err.as_deref(),
            Some("line 4: invalid UTF-8 at byte 5 of the record; the flow must be UTF-8 encoded, or its pipeline must declare its encoding (e.g. encoding = \"windows-1252\")")
        );
        let e = CsvLines::new(&b"h\xff\n"[..], CsvLimits::default()).err();
        assert_eq!(e.and_then(|e| e.line()), Some(1));
        // Multi-byte characters are fine.
        assert_eq!(records("h\nàèì;\"€\"\n")[0].fields, vec!["àèì", "€"]);
    }

    /// Found by fuzzing: a record refused for invalid UTF-8 was counted in `rows()`.
    #[test]
    fn a_refused_record_is_not_counted_as_a_row() {
        let mut csv = CsvLines::new(&b"h\n1;ok\n2;caf\xe9\n"[..], CsvLimits::default()).unwrap();
        assert_eq!(csv.next_record().unwrap().map(|r| r.row), Some(1));
        assert!(csv.next_record().is_err());
        assert_eq!(csv.rows(), 1);
        assert!(matches!(csv.next_record(), Ok(None)));
        assert_eq!(csv.rows(), 1);
    }

    #[test]
    fn over_long_record_stops_the_stream() {
        let limits = CsvLimits {
            max_record_bytes: 10,
            max_fields: 64,
        };
        let input = b"h\n0123456789\r\n\"0123456789\"\n";
        for initial in [1, 4, INITIAL_BUFFER] {
            let (_, recs, err) = read_with(&input[..], limits, initial);
            assert_eq!(recs.len(), 1, "initial {initial}");
            assert_eq!(recs[0].raw, "0123456789");
            assert_eq!(err.as_deref(), Some("line 3: record longer than 10 bytes"));
        }
        // A huge line is refused without buffering it all.
        let huge = [&b"h\n"[..], &vec![b'x'; 5 * 1024 * 1024]].concat();
        let mut csv = CsvLines::new(
            Trickle {
                data: &huge,
                step: 1 << 16,
            },
            CsvLimits::default(),
        )
        .expect("header");
        let e = csv.next_record().expect_err("too long");
        assert!(matches!(
            e,
            CsvError::RecordTooLong {
                line: 2,
                max: 1_048_576
            }
        ));
        assert!(csv.buf.len() <= 1_048_578);
        // The header too.
        let (_, _, err) = read_with(&b"0123456789A\nx\n"[..], limits, 4);
        assert_eq!(err.as_deref(), Some("line 1: record longer than 10 bytes"));
    }

    #[test]
    fn io_errors_are_reported() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::InvalidData, "boom"))
            }
        }
        let e = CsvLines::new(Failing, CsvLimits::default())
            .err()
            .expect("error");
        assert_eq!(e.to_string(), "error reading the flow: boom");
        assert_eq!(e.line(), None);
    }

    #[test]
    fn record_is_a_field_source() {
        let mut csv = CsvLines::new(&b"h\na;\"b\"\"\";c\n"[..], CsvLimits::default()).expect("h");
        let r = csv.next_record().expect("ok").expect("row");
        assert_eq!(FieldSource::field_count(&r), 3);
        assert_eq!(FieldSource::field(&r, 1), "b\"");
        assert_eq!(r.get(3), None);
        assert_eq!(r.field(3), "");
    }

    /// Deterministic pseudo-random bytes (xorshift).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        const ALPHABET: &[&[u8]] = &[
            b"a",
            b"b",
            b";",
            b";",
            b"\"",
            b"\"",
            b"\\",
            b"\n",
            b"\r\n",
            b"\r",
            b" ",
            "é".as_bytes(),
        ];
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(ALPHABET[(x % ALPHABET.len() as u64) as usize]);
        }
        out
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let limits = CsvLimits {
            max_record_bytes: 40,
            max_fields: 5,
        };
        for seed in 0..400 {
            let input = noise(seed, 20 + (seed as usize % 7) * 30);
            let expected = read_with(&input[..], limits, INITIAL_BUFFER);
            for (step, initial) in [(1, 1), (2, 3), (3, 8), (7, 2), (64, 16)] {
                let got = read_with(Trickle { data: &input, step }, limits, initial);
                assert_eq!(
                    got,
                    expected,
                    "seed {seed} step {step} initial {initial} input {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }
}
