//! Outcome files of an import (TRACCIATI.md §2): `<stem>_SCARTI.csv` with the rejected rows and
//! `<stem>_IUV.csv` with the accepted rows, each zipped alone as `<name>.zip`.

use std::io::{self, Read, Seek, Write};

use chrono::{Datelike, NaiveDateTime, Timelike};
use memchr::{memchr, memchr3};
use snodo_core::dovuto::{FlowVersion, RawDovuto};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use super::columns::unmap_row;
use crate::csv::FieldSource;
use crate::flow_format::RenderedRow;

/// `<stem>_SCARTI`: base name of the rejected-rows file (`.csv` inside `.zip`).
pub fn scarti_name(stem: &str) -> String {
    format!("{stem}_SCARTI")
}

/// `<stem>_IUV`: base name of the accepted-rows file (`.csv` inside `.zip`).
pub fn iuv_name(stem: &str) -> String {
    format!("{stem}_IUV")
}

/// Writes `<stem>_SCARTI.csv`: the flow's header plus `;cod_rifiuto;de_rifiuto`, then each
/// rejected row verbatim plus `;<codes>;<descriptions>`, lines ended by `\n`.
///
/// Multiple codes and descriptions are joined with `|`, as MyPay does. So that the two added
/// columns always split cleanly (MyPay consumers split on `;` and `|` without quote handling),
/// codes and descriptions are never quoted; instead, within each of them `;` becomes `,`, `|`
/// becomes `/`, `"` becomes `'` and CR/LF become a space.
///
/// Give it a buffered writer: it issues one `write_all` per row.
#[derive(Debug)]
pub struct ScartiWriter<W: Write> {
    out: W,
    line: Vec<u8>,
    rows: u64,
}

impl<W: Write> ScartiWriter<W> {
    /// Writes the header line: `header` (the flow's own, as read) + `;cod_rifiuto;de_rifiuto`.
    pub fn new(mut out: W, header: &str) -> io::Result<Self> {
        out.write_all(header.as_bytes())?;
        out.write_all(b";cod_rifiuto;de_rifiuto\n")?;
        Ok(Self {
            out,
            line: Vec::with_capacity(512),
            rows: 0,
        })
    }

    /// Writes one rejected row: `raw_row;code1|code2;description1|description2`.
    pub fn reject(
        &mut self,
        raw_row: &str,
        codes: &[&str],
        descriptions: &[&str],
    ) -> io::Result<()> {
        let line = &mut self.line;
        line.clear();
        scarti_line(raw_row, codes, descriptions, line);
        self.out.write_all(line)?;
        self.rows += 1;
        Ok(())
    }

    /// Continues a file already holding the header (and maybe rows), e.g. after a restart:
    /// writes nothing now; [`ScartiWriter::rows`] counts from zero.
    pub fn append(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(512),
            rows: 0,
        }
    }

    /// The underlying writer, e.g. to sync it between rows.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Rows written so far (header excluded).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Appends one SCARTI line: `raw_row;code1|code2;description1|description2\n`.
pub fn scarti_line(raw_row: &str, codes: &[&str], descriptions: &[&str], line: &mut Vec<u8>) {
    line.extend_from_slice(raw_row.as_bytes());
    line.push(b';');
    push_joined(line, codes);
    line.push(b';');
    push_joined(line, descriptions);
    line.push(b'\n');
}

fn push_joined(line: &mut Vec<u8>, parts: &[&str]) {
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            line.push(b'|');
        }
        push_clean(line, part);
    }
}

/// Appends `text` with the characters that would break the SCARTI columns replaced.
fn push_clean(line: &mut Vec<u8>, text: &str) {
    for &b in text.as_bytes() {
        line.push(match b {
            b';' => b',',
            b'|' => b'/',
            b'"' => b'\'',
            b'\r' | b'\n' => b' ',
            other => other,
        });
    }
}

/// Writes `<stem>_IUV.csv`: the flow's header, then each accepted row re-serialised in its
/// version's column order with `codIuv` replaced by the IUV MyPay generated, lines ended by `\n`.
///
/// A value is enclosed in `"` only when it holds `;`, `"`, CR or LF. Inside, a `"` is written
/// `\"` (what MyPay's reader unescapes), except a `"` followed by `;`, CR or LF, written `""`
/// so that it cannot be taken for a closing quote; [`crate::csv::CsvLines`] reads both forms
/// back. (A value holding `\` then `"` then `;` or a line break cannot be written unambiguously
/// and reads back without that backslash.)
#[derive(Debug)]
pub struct IuvWriter<W: Write> {
    out: W,
    line: Vec<u8>,
    rows: u64,
}

impl<W: Write> IuvWriter<W> {
    /// Writes the header line: the flow's own `header`, as read.
    pub fn new(mut out: W, header: &str) -> io::Result<Self> {
        out.write_all(header.as_bytes())?;
        out.write_all(b"\n")?;
        Ok(Self {
            out,
            line: Vec::with_capacity(512),
            rows: 0,
        })
    }

    /// Writes a row rendered earlier by [`render_accepted`], with `generated_iuv` (when given)
    /// in place of its `codIuv`. Same bytes as [`IuvWriter::accept`] on the same fields.
    pub fn accept_rendered(
        &mut self,
        row: &RenderedRow,
        generated_iuv: Option<&str>,
    ) -> io::Result<()> {
        let line = &mut self.line;
        line.clear();
        iuv_line(row, generated_iuv, line);
        self.out.write_all(line)?;
        self.rows += 1;
        Ok(())
    }

    /// Writes an accepted row: the first `version.column_count()` fields (missing ones empty),
    /// with column 1 (`codIuv`) replaced by `generated_iuv` when given.
    pub fn accept<'f, F: FieldSource<'f>>(
        &mut self,
        version: FlowVersion,
        fields: F,
        generated_iuv: Option<&str>,
    ) -> io::Result<()> {
        let line = &mut self.line;
        line.clear();
        for i in 0..version.column_count() {
            if i > 0 {
                line.push(b';');
            }
            let value = match (i, generated_iuv) {
                (1, Some(iuv)) => iuv,
                _ => fields.field(i),
            };
            push_field(line, value);
        }
        line.push(b'\n');
        self.out.write_all(line)?;
        self.rows += 1;
        Ok(())
    }

    /// [`IuvWriter::accept`] for a row already mapped to a [`RawDovuto`].
    pub fn accept_raw(
        &mut self,
        version: FlowVersion,
        raw: &RawDovuto<'_>,
        generated_iuv: Option<&str>,
    ) -> io::Result<()> {
        let fields = unmap_row(version, raw);
        self.accept(version, &fields, generated_iuv)
    }

    /// Continues a file already holding the header (and maybe rows), e.g. after a restart:
    /// writes nothing now; [`IuvWriter::rows`] counts from zero.
    pub fn append(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(512),
            rows: 0,
        }
    }

    /// The underlying writer, e.g. to sync it between rows.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Rows written so far (header excluded).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Appends a row rendered by [`render_accepted`], with `generated_iuv` (when given) in place of
/// its `codIuv`.
pub fn iuv_line(row: &RenderedRow, generated_iuv: Option<&str>, line: &mut Vec<u8>) {
    match generated_iuv {
        None => line.extend_from_slice(&row.line),
        Some(iuv) => {
            line.extend_from_slice(&row.line[..row.iuv_at.start]);
            push_field(line, iuv);
            line.extend_from_slice(&row.line[row.iuv_at.end..]);
        }
    }
}

/// Renders a row as [`IuvWriter::accept`] would write it with no generated IUV.
pub fn render_accepted<'f, F: FieldSource<'f>>(version: FlowVersion, fields: F) -> RenderedRow {
    let mut line = Vec::with_capacity(256);
    let mut iuv_at = 0..0;
    for i in 0..version.column_count() {
        if i > 0 {
            line.push(b';');
        }
        let start = line.len();
        push_field(&mut line, fields.field(i));
        if i == 1 {
            iuv_at = start..line.len();
        }
    }
    line.push(b'\n');
    RenderedRow { line, iuv_at }
}

/// Appends one CSV value, quoted and escaped only when needed (see [`IuvWriter`]).
fn push_field(line: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    if memchr3(b';', b'"', b'\n', bytes).is_none() && memchr(b'\r', bytes).is_none() {
        line.extend_from_slice(bytes);
        return;
    }
    line.push(b'"');
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'"' {
            let before_end = matches!(bytes.get(i + 1), Some(b';' | b'\r' | b'\n'));
            line.extend_from_slice(if before_end { b"\"\"" } else { b"\\\"" });
        } else {
            line.push(b);
        }
    }
    line.push(b'"');
}

/// A zip archive being written with a single deflated entry; write the entry's content through
/// [`Write`], then [`ZipEntryWriter::finish`]. Lets the outcome CSVs stream straight into their
/// zip, without a temporary file.
pub struct ZipEntryWriter<W: Write + Seek> {
    zip: ZipWriter<W>,
}

impl<W: Write + Seek> ZipEntryWriter<W> {
    /// Starts the archive and its entry `entry_name`, stamped with `modified` (local time;
    /// outside the zip range 1980–2107 it falls back to 1980-01-01).
    pub fn new(out: W, entry_name: &str, modified: NaiveDateTime) -> io::Result<Self> {
        let mut zip = ZipWriter::new(out);
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            // Fastest level: outcome files of large flows are zipped on the import's clock, and
            // CSV compresses well even so.
            .compression_level(Some(1))
            .last_modified_time(zip_time(modified))
            .unix_permissions(0o644);
        zip.start_file(entry_name, options)?;
        Ok(Self { zip })
    }

    /// Ends the entry and the archive and returns the underlying writer.
    pub fn finish(self) -> io::Result<W> {
        Ok(self.zip.finish()?)
    }
}

impl<W: Write + Seek> Write for ZipEntryWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.zip.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.zip.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.zip.flush()
    }
}

fn zip_time(t: NaiveDateTime) -> DateTime {
    let narrow = |v: u32| u8::try_from(v).unwrap_or(0);
    u16::try_from(t.year())
        .ok()
        .and_then(|year| {
            DateTime::from_date_and_time(
                year,
                narrow(t.month()),
                narrow(t.day()),
                narrow(t.hour()),
                narrow(t.minute()),
                // Zip times have a 2-second resolution, at most 58.
                narrow(t.second().min(59) & !1),
            )
            .ok()
        })
        .unwrap_or_default()
}

/// Writes to `out` a zip holding one deflated entry `entry_name` with all of `content`,
/// stamped with the current local time; returns `out`.
///
/// MyPay ships outcomes as `<name>.zip` holding `<name>.csv` (see [`scarti_name`]).
pub fn zip_single_file<W: Write + Seek, R: Read>(
    out: W,
    entry_name: &str,
    content: R,
) -> io::Result<W> {
    zip_single_file_at(out, entry_name, content, chrono::Local::now().naive_local())
}

/// [`zip_single_file`] with an explicit modification time (for reproducible output).
pub fn zip_single_file_at<W: Write + Seek, R: Read>(
    out: W,
    entry_name: &str,
    mut content: R,
    modified: NaiveDateTime,
) -> io::Result<W> {
    let mut entry = ZipEntryWriter::new(out, entry_name, modified)?;
    io::copy(&mut content, &mut entry)?;
    entry.finish()
}

#[cfg(test)]
mod rendered_tests {
    use super::*;

    #[test]
    fn a_rendered_row_writes_the_same_bytes_as_accept() {
        let mut fields: Vec<String> = (0..35).map(|i| format!("f{i}")).collect();
        fields[1] = String::new();
        fields[17] = "causale; con \"virgolette\"".into();
        let rendered = render_accepted(FlowVersion::V1_4, &fields);
        for iuv in [None, Some("01000000000012373")] {
            let mut a = IuvWriter::append(Vec::new());
            a.accept(FlowVersion::V1_4, &fields, iuv).unwrap();
            let mut b = IuvWriter::append(Vec::new());
            b.accept_rendered(&rendered, iuv).unwrap();
            assert_eq!(a.finish().unwrap(), b.finish().unwrap());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv::{CsvLimits, CsvLines};
    use chrono::NaiveDate;
    use std::io::Cursor;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn append_writes_no_header() {
        let mut w = ScartiWriter::append(b"h;cod_rifiuto;de_rifiuto\n".to_vec());
        w.reject("r", &["C"], &["D"]).expect("row");
        assert_eq!(w.rows(), 1);
        assert_eq!(
            text(w.finish().expect("finish")),
            "h;cod_rifiuto;de_rifiuto\nr;C;D\n"
        );
        let mut w = IuvWriter::append(Vec::new());
        w.accept(FlowVersion::V1_0, &["a"][..], Some("X"))
            .expect("row");
        assert_eq!(
            text(w.finish().expect("finish")),
            format!("a;X{}\n", ";".repeat(18))
        );
    }

    #[test]
    fn names() {
        assert_eq!(scarti_name("e-F1-1_0"), "e-F1-1_0_SCARTI");
        assert_eq!(iuv_name("e-F1-1_0"), "e-F1-1_0_IUV");
    }

    #[test]
    fn scarti_output_is_byte_exact() {
        let mut w = ScartiWriter::new(Vec::new(), "IUD;codIuv;azione").expect("header");
        w.reject("1;;I", &["PAA_IMPORT_SINTASSI_CSV"], &["IUD NON PRESENTE"])
            .expect("row");
        w.reject(
            "2;\"a;b\";X",
            &["PAA_IMPORT_SINTASSI_CSV", "PAA_IMPORT_SINTASSI_CSV_AZIONE"],
            &[
                "Too many columns: got 4; version 1_0 has 3",
                "azione \"X\"|bad\r\nvalue",
            ],
        )
        .expect("row");
        w.reject("3;\"multi\nline\";I", &[], &[]).expect("row");
        assert_eq!(w.rows(), 3);
        assert_eq!(
            text(w.finish().expect("finish")),
            "IUD;codIuv;azione;cod_rifiuto;de_rifiuto\n\
             1;;I;PAA_IMPORT_SINTASSI_CSV;IUD NON PRESENTE\n\
             2;\"a;b\";X;PAA_IMPORT_SINTASSI_CSV|PAA_IMPORT_SINTASSI_CSV_AZIONE;\
             Too many columns: got 4, version 1_0 has 3|azione 'X'/bad  value\n\
             3;\"multi\nline\";I;;\n"
        );
    }

    #[test]
    fn iuv_output_is_byte_exact() {
        let mut w = IuvWriter::new(Vec::new(), "IUD;codIuv;x;azione").expect("header");
        let fields = ["1", "", "plain", "I"];
        // 1_0 has 20 columns: missing ones are written empty.
        w.accept(FlowVersion::V1_0, &fields[..], Some("310000000000123"))
            .expect("row");
        let mut row: Vec<&str> = vec!["x"; 20];
        row[1] = "RF23000000000000000001234";
        row[4] = "Bianchi; Rossi";
        row[5] = "Via \"Roma\"";
        row[6] = "a\";b";
        row[7] = "two\nlines";
        row[8] = "back\\slash";
        row[19] = "M";
        w.accept(FlowVersion::V1_0, &row, None).expect("row");
        assert_eq!(w.rows(), 2);
        assert_eq!(
            text(w.finish().expect("finish")),
            "IUD;codIuv;x;azione\n\
             1;310000000000123;plain;I;;;;;;;;;;;;;;;;\n\
             x;RF23000000000000000001234;x;x;\"Bianchi; Rossi\";\"Via \\\"Roma\\\"\";\
             \"a\"\";b\";\"two\nlines\";back\\slash;x;x;x;x;x;x;x;x;x;x;M\n"
        );
    }

    #[test]
    fn iuv_rows_read_back_unchanged() {
        let values = [
            "plain",
            "with;semicolon",
            "say \"hi\"",
            "\"quoted\"",
            "a\";b",
            "x\"\r\ny",
            "ends with \\",
            "semi;and back\\",
            "a\\\"b",
            "",
            "\"",
            "\"\"",
        ];
        let mut w = IuvWriter::new(Vec::new(), "h").expect("header");
        for v in values {
            let mut row = vec![""; 20];
            row[4] = v;
            row[19] = "I";
            w.accept(FlowVersion::V1_1, &row, None).expect("row");
        }
        let out = w.finish().expect("finish");
        let mut csv = CsvLines::new(&out[..], CsvLimits::default()).expect("header");
        for v in values {
            let rec = csv.next_record().expect("ok").expect("row");
            assert_eq!(rec.error(), None);
            assert_eq!(rec.field_count(), 20, "{v:?} -> {:?}", rec.raw);
            assert_eq!(rec.field(4), v, "raw {:?}", rec.raw);
            assert_eq!(rec.field(19), "I");
        }
        assert!(csv.next_record().expect("ok").is_none());
    }

    #[test]
    fn accept_raw_uses_the_version_layout() {
        let raw = RawDovuto {
            iud: "A1",
            cod_iuv: "old",
            bilancio: "B",
            flg_genera_iuv: "true",
            azione: "I",
            ..RawDovuto::default()
        };
        let mut w = IuvWriter::new(Vec::new(), "h").expect("header");
        w.accept_raw(FlowVersion::V1_3, &raw, Some("IUV17"))
            .expect("row");
        w.accept_raw(FlowVersion::V1_3, &raw, None).expect("row");
        assert_eq!(
            text(w.finish().expect("finish")),
            "h\nA1;IUV17;;;;;;;;;;;;;;;;;;B;true;I\nA1;old;;;;;;;;;;;;;;;;;;B;true;I\n"
        );
    }

    #[test]
    fn zips_one_entry() {
        let when = NaiveDate::from_ymd_opt(2025, 3, 4)
            .and_then(|d| d.and_hms_opt(5, 6, 7))
            .expect("date");
        let mut scarti = ScartiWriter::new(Vec::new(), "IUD;azione").expect("header");
        scarti.reject("1;I", &["C"], &["D"]).expect("row");
        let csv = scarti.finish().expect("finish");
        let name = scarti_name("e-F1-1_0");
        let zip = zip_single_file_at(
            Cursor::new(Vec::new()),
            &format!("{name}.csv"),
            &csv[..],
            when,
        )
        .expect("zip")
        .into_inner();
        let mut archive = zip::ZipArchive::new(Cursor::new(zip)).expect("valid zip");
        assert_eq!(archive.len(), 1);
        let mut entry = archive.by_index(0).expect("entry");
        assert_eq!(entry.name(), "e-F1-1_0_SCARTI.csv");
        assert_eq!(entry.compression(), CompressionMethod::Deflated);
        let modified = entry.last_modified().expect("time");
        assert_eq!(
            (
                modified.year(),
                modified.month(),
                modified.day(),
                modified.hour(),
                modified.minute(),
                modified.second()
            ),
            (2025, 3, 4, 5, 6, 6)
        );
        let mut content = String::new();
        entry.read_to_string(&mut content).expect("read");
        assert_eq!(content, "IUD;azione;cod_rifiuto;de_rifiuto\n1;I;C;D\n");
    }

    #[test]
    fn streams_into_a_zip_entry() {
        let when = NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("date");
        let entry = ZipEntryWriter::new(Cursor::new(Vec::new()), "x_IUV.csv", when).expect("zip");
        let mut iuv = IuvWriter::new(entry, "h").expect("header");
        iuv.accept(FlowVersion::V1_0, &["a"][..], None)
            .expect("row");
        let zip = iuv
            .finish()
            .expect("flush")
            .finish()
            .expect("zip")
            .into_inner();
        let mut archive = zip::ZipArchive::new(Cursor::new(zip)).expect("valid zip");
        let mut entry = archive.by_name("x_IUV.csv").expect("entry");
        let mut content = String::new();
        entry.read_to_string(&mut content).expect("read");
        assert_eq!(content, format!("h\na{}\n", ";".repeat(19)));
    }
}
