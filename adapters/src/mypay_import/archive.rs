//! The zip around the flow CSV, opened defensively.

use std::fmt::Write as _;
use std::io::{self, Read, Seek};

use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use super::FlowError;

/// Caps the bytes read from `inner`: reading past `limit` fails with an [`io::Error`]
/// (`InvalidData`) saying the flow exceeds the limit, so a zip bomb is stopped after `limit`
/// bytes whatever its declared size. Also useful around a bare `.csv` upload.
#[derive(Debug)]
pub struct SizeLimited<R> {
    inner: R,
    limit: u64,
    read: u64,
}

impl<R> SizeLimited<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            limit,
            read: 0,
        }
    }

    /// Bytes delivered so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn exceeded(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the flow exceeds {} bytes uncompressed", self.limit),
        )
    }
}

impl<R: Read> Read for SizeLimited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read > self.limit {
            return Err(self.exceeded());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte beyond the limit is enough to know the input is too big.
        let allowed = (self.limit - self.read).saturating_add(1);
        let take = usize::try_from(allowed).map_or(buf.len(), |a| a.min(buf.len()));
        let n = self.inner.read(&mut buf[..take])?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(self.exceeded());
        }
        Ok(n)
    }
}

/// A flow zip whose `<stem>.csv` entry has been found and checked.
///
/// The reader returned by [`FlowZip::csv`] borrows the archive (the `zip` crate decompresses
/// from the archive's reader), so keep the `FlowZip` alive while reading.
pub struct FlowZip<R> {
    archive: ZipArchive<R>,
    index: usize,
    entry: String,
    declared_size: u64,
    limit: u64,
}

impl<R> std::fmt::Debug for FlowZip<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowZip")
            .field("entry", &self.entry)
            .field("declared_size", &self.declared_size)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// Same as [`FlowZip::open`].
pub fn open_flow_csv<R: Read + Seek>(
    zip: R,
    stem: &str,
    max_uncompressed: u64,
) -> Result<FlowZip<R>, FlowError> {
    FlowZip::open(zip, stem, max_uncompressed)
}

impl<R: Read + Seek> FlowZip<R> {
    /// Opens the zip and finds the entry named exactly `<stem>.csv` at its root.
    ///
    /// Entries in folders or with unsafe names (`..`, absolute paths) never count as the CSV;
    /// when no usable entry exists the [`FlowError::NoCsv`] message names the CSV-like entries
    /// that were found instead. The entry must be stored or deflated, not encrypted, and declare
    /// at most `max_uncompressed` bytes.
    pub fn open(zip: R, stem: &str, max_uncompressed: u64) -> Result<Self, FlowError> {
        Self::open_with(zip, stem, max_uncompressed, DEFAULT_MAX_ENTRIES)
    }

    /// [`FlowZip::open`], refusing a zip of more than `max_entries` entries before its central
    /// directory is read (the `zip` crate loads it whole: a million empty entries would take
    /// hundreds of MB).
    pub fn open_with(
        mut zip: R,
        stem: &str,
        max_uncompressed: u64,
        max_entries: u64,
    ) -> Result<Self, FlowError> {
        if let Some(entries) =
            entry_count(&mut zip).map_err(|e| FlowError::NotAZip(e.to_string()))?
        {
            if entries > max_entries {
                return Err(FlowError::TooManyEntries {
                    entries,
                    limit: max_entries,
                });
            }
        }
        zip.seek(io::SeekFrom::Start(0))
            .map_err(|e| FlowError::NotAZip(format!("i/o error: {e}")))?;
        let mut archive = ZipArchive::new(zip).map_err(|e| FlowError::NotAZip(describe(&e)))?;
        let wanted = format!("{stem}.csv");
        let Some(index) = archive.index_for_name(&wanted) else {
            return Err(FlowError::NoCsv {
                detail: describe_other_csvs(&archive, &wanted),
                expected: wanted,
            });
        };
        let file = archive
            .by_index_raw(index)
            .map_err(|e| FlowError::NotAZip(describe(&e)))?;
        if file.is_dir() {
            return Err(FlowError::NoCsv {
                expected: wanted,
                detail: " (an entry with that name is a directory)".to_owned(),
            });
        }
        if file.encrypted() {
            return Err(FlowError::UnsupportedEntry {
                entry: wanted,
                reason: "the entry is encrypted; upload an unencrypted zip".to_owned(),
            });
        }
        let method = file.compression();
        if method != CompressionMethod::Stored && method != CompressionMethod::DEFLATE {
            return Err(FlowError::UnsupportedEntry {
                entry: wanted,
                reason: format!(
                    "compression method {method} is not supported; use deflate (or no compression)"
                ),
            });
        }
        let declared_size = file.size();
        drop(file);
        if declared_size > max_uncompressed {
            return Err(FlowError::TooLarge {
                entry: wanted,
                declared: declared_size,
                limit: max_uncompressed,
            });
        }
        Ok(Self {
            archive,
            index,
            entry: wanted,
            declared_size,
            limit: max_uncompressed,
        })
    }

    /// Name of the CSV entry (`<stem>.csv`).
    pub fn entry_name(&self) -> &str {
        &self.entry
    }

    /// Uncompressed size the zip declares for the entry (not trusted: reads are counted).
    pub fn declared_size(&self) -> u64 {
        self.declared_size
    }

    /// A streaming reader of the decompressed CSV, failing once it passes the size limit.
    ///
    /// Corrupt data or a wrong checksum surface as [`io::Error`]s while reading.
    pub fn csv(&mut self) -> Result<impl Read + '_, FlowError> {
        let limit = self.limit;
        let file = self
            .archive
            .by_index(self.index)
            .map_err(|e| FlowError::NotAZip(describe(&e)))?;
        Ok(SizeLimited::new(file, limit))
    }
}

/// Entries a flow zip may hold unless configured otherwise (MyPay's hold one).
pub const DEFAULT_MAX_ENTRIES: u64 = 1000;

/// The number of entries the zip's end records declare, read from its tail alone; `None` when
/// there is no end record to read (the `zip` crate then says what is wrong).
fn entry_count<R: Read + Seek>(r: &mut R) -> io::Result<Option<u64>> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    const LOCATOR: [u8; 4] = [0x50, 0x4b, 0x06, 0x07];
    const EOCD64: [u8; 4] = [0x50, 0x4b, 0x06, 0x06];
    let len = r.seek(io::SeekFrom::End(0))?;
    // The end record is 22 bytes plus a comment of at most 65535.
    let tail_len = len.min(22 + 65_535);
    r.seek(io::SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    r.read_exact(&mut tail)?;
    let Some(at) = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == EOCD)
    else {
        return Ok(None);
    };
    let u16_at = |i: usize| u16::from_le_bytes([tail[i], tail[i + 1]]);
    let entries = u16_at(at + 10);
    if entries != u16::MAX {
        return Ok(Some(u64::from(entries)));
    }
    // ZIP64: a locator just before the end record points at the 64-bit end record.
    let Some(loc) = at.checked_sub(20).filter(|&l| tail[l..l + 4] == LOCATOR) else {
        return Ok(Some(u64::from(entries)));
    };
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&tail[loc + 8..loc + 16]);
    let offset = u64::from_le_bytes(offset);
    if offset.saturating_add(56) > len {
        return Ok(None);
    }
    r.seek(io::SeekFrom::Start(offset))?;
    let mut record = [0u8; 56];
    r.read_exact(&mut record)?;
    if record[..4] != EOCD64 {
        return Ok(None);
    }
    let mut total = [0u8; 8];
    total.copy_from_slice(&record[32..40]);
    Ok(Some(u64::from_le_bytes(total)))
}

/// A zip error as text, with the underlying I/O error when there is one.
fn describe(e: &ZipError) -> String {
    match e {
        ZipError::Io(io) => format!("i/o error: {io}"),
        other => other.to_string(),
    }
}

/// Whether a zip entry name would escape the extraction folder.
fn is_unsafe_name(name: &str) -> bool {
    name.starts_with('/')
        || name.starts_with('\\')
        || name.as_bytes().get(1) == Some(&b':')
        || name.split(['/', '\\']).any(|part| part == "..")
}

/// `"; found instead: …"` listing up to 5 CSV-looking entries, for the `NoCsv` message.
fn describe_other_csvs<R: Read + Seek>(archive: &ZipArchive<R>, wanted: &str) -> String {
    const SHOWN: usize = 5;
    let mut csvs = archive.file_names().filter(|name| {
        name.len() >= 4
            && name
                .get(name.len() - 4..)
                .is_some_and(|ext| ext.eq_ignore_ascii_case(".csv"))
    });
    let mut out = String::new();
    let mut total = 0usize;
    for name in csvs.by_ref() {
        total += 1;
        if total > SHOWN {
            continue;
        }
        out.push_str(if total == 1 {
            "; found instead: "
        } else {
            ", "
        });
        let _ = write!(out, "{name:?}");
        if is_unsafe_name(name) {
            out.push_str(" (unsafe path, ignored)");
        } else if name.contains(['/', '\\']) {
            out.push_str(" (not at the root, ignored)");
        } else if name.eq_ignore_ascii_case(wanted) {
            out.push_str(" (name differs in case)");
        }
    }
    if total > SHOWN {
        let _ = write!(out, " and {} more", total - SHOWN);
    }
    if total == 0 {
        out.push_str(&format!(
            "; the zip holds {} entries and no .csv",
            archive.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;
    use zip::ZipWriter;

    fn make_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        for (name, data) in entries {
            if name.ends_with('/') {
                w.add_directory(*name, opts).expect("dir");
            } else {
                w.start_file(*name, opts).expect("start");
                w.write_all(data).expect("write");
            }
        }
        w.finish().expect("finish").into_inner()
    }

    #[test]
    fn a_zip_of_too_many_entries_is_refused_before_its_directory_is_read() {
        let names: Vec<String> = (0..=DEFAULT_MAX_ENTRIES).map(|i| format!("e{i}")).collect();
        let mut entries: Vec<(&str, &[u8])> =
            names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        entries.push(("f.csv", b"IUD\n"));
        let zip = make_zip(&entries);
        let err = FlowZip::open(Cursor::new(zip.clone()), "f", u64::MAX).unwrap_err();
        assert!(
            matches!(
                err,
                FlowError::TooManyEntries {
                    entries: 1002,
                    limit: 1000
                }
            ),
            "{err}"
        );
        assert_eq!(err.code(), "PAA_IMPORT_ERROR");
        assert!(FlowZip::open_with(Cursor::new(zip), "f", u64::MAX, 1002).is_ok());
        assert_eq!(
            entry_count(&mut Cursor::new(make_zip(&[("a", b"x"), ("b", b"")]))).unwrap(),
            Some(2)
        );
        assert_eq!(
            entry_count(&mut Cursor::new(b"not a zip".to_vec())).unwrap(),
            None
        );
    }

    fn read_all(zip: Vec<u8>, stem: &str, limit: u64) -> Result<Vec<u8>, String> {
        let mut fz = FlowZip::open(Cursor::new(zip), stem, limit).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        fz.csv()
            .map_err(|e| e.to_string())?
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// Offsets of `sig` in `bytes`.
    fn find_all(bytes: &[u8], sig: &[u8]) -> Vec<usize> {
        bytes
            .windows(sig.len())
            .enumerate()
            .filter(|(_, w)| *w == sig)
            .map(|(i, _)| i)
            .collect()
    }

    /// Patches a little-endian field in every local (`PK\3\4`) and central (`PK\1\2`) header.
    fn patch(zip: &mut [u8], local_off: usize, central_off: usize, value: &[u8]) {
        for at in find_all(zip, b"PK\x03\x04") {
            zip[at + local_off..at + local_off + value.len()].copy_from_slice(value);
        }
        for at in find_all(zip, b"PK\x01\x02") {
            zip[at + central_off..at + central_off + value.len()].copy_from_slice(value);
        }
    }

    #[test]
    fn reads_the_csv_entry() {
        let zip = make_zip(&[("readme.txt", b"hi"), ("e-F1-1_0.csv", b"h1;h2\na;b\n")]);
        let fz = FlowZip::open(Cursor::new(zip.clone()), "e-F1-1_0", 1000).expect("open");
        assert_eq!(fz.entry_name(), "e-F1-1_0.csv");
        assert_eq!(fz.declared_size(), 10);
        assert_eq!(
            read_all(zip, "e-F1-1_0", 1000).expect("read"),
            b"h1;h2\na;b\n"
        );
    }

    #[test]
    fn open_flow_csv_alias() {
        let zip = make_zip(&[("e-F1-1_0.csv", b"x\n")]);
        let mut fz = open_flow_csv(Cursor::new(zip), "e-F1-1_0", 10).expect("open");
        let mut s = String::new();
        fz.csv().expect("csv").read_to_string(&mut s).expect("read");
        assert_eq!(s, "x\n");
    }

    #[test]
    fn missing_csv() {
        let zip = make_zip(&[("other.csv", b"x"), ("notes.txt", b"y")]);
        let e = FlowZip::open(Cursor::new(zip), "e-F1-1_0", 1000).expect_err("missing");
        assert_eq!(e.code(), "PAA_IMPORT_NO_CSV");
        assert_eq!(
            e.to_string(),
            "the zip does not contain \"e-F1-1_0.csv\" at its root; found instead: \"other.csv\""
        );
        let zip = make_zip(&[("notes.txt", b"y")]);
        let e = FlowZip::open(Cursor::new(zip), "e-F1-1_0", 1000).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "the zip does not contain \"e-F1-1_0.csv\" at its root; the zip holds 1 entries and no .csv"
        );
    }

    #[test]
    fn traversal_entry_is_not_the_csv() {
        let zip = make_zip(&[("../e-F1-1_0.csv", b"evil")]);
        let e = FlowZip::open(Cursor::new(zip), "e-F1-1_0", 1000).expect_err("unsafe");
        assert_eq!(e.code(), "PAA_IMPORT_NO_CSV");
        assert_eq!(
            e.to_string(),
            "the zip does not contain \"e-F1-1_0.csv\" at its root; found instead: \
             \"../e-F1-1_0.csv\" (unsafe path, ignored)"
        );
        let zip = make_zip(&[("../evil.csv", b"evil"), ("sub/e-F1-1_0.csv", b"x")]);
        let e = FlowZip::open(Cursor::new(zip), "e-F1-1_0", 1000).expect_err("unsafe");
        assert_eq!(
            e.to_string(),
            "the zip does not contain \"e-F1-1_0.csv\" at its root; found instead: \
             \"../evil.csv\" (unsafe path, ignored), \"sub/e-F1-1_0.csv\" (not at the root, ignored)"
        );
        // An unsafe entry next to the right one is harmless.
        let zip = make_zip(&[("../evil.csv", b"evil"), ("e-F1-1_0.csv", b"ok")]);
        assert_eq!(read_all(zip, "e-F1-1_0", 1000).expect("read"), b"ok");
    }

    #[test]
    fn directory_entry_is_not_the_csv() {
        let zip = make_zip(&[("e-F1-1_0.csv/", b"")]);
        let e = FlowZip::open(Cursor::new(zip), "e-F1-1_0", 1000).expect_err("dir");
        assert_eq!(e.code(), "PAA_IMPORT_NO_CSV");
    }

    #[test]
    fn not_a_zip() {
        let e = FlowZip::open(Cursor::new(b"IUD;codIuv\n1;2\n".to_vec()), "e-F1-1_0", 1000)
            .expect_err("not a zip");
        assert_eq!(e.code(), "PAA_IMPORT_ERROR");
        assert!(
            e.to_string()
                .starts_with("the flow is not a readable zip archive: "),
            "{e}"
        );
        let e = FlowZip::open(Cursor::new(Vec::new()), "e-F1-1_0", 1000).expect_err("empty");
        assert_eq!(e.code(), "PAA_IMPORT_ERROR");
    }

    #[test]
    fn declared_size_over_limit() {
        let zip = make_zip(&[("e-F1-1_0.csv", &[b'a'; 2000])]);
        let e = FlowZip::open(Cursor::new(zip), "e-F1-1_0", 1999).expect_err("too large");
        assert_eq!(e.code(), "PAA_IMPORT_ERROR");
        assert_eq!(
            e.to_string(),
            "zip entry \"e-F1-1_0.csv\" declares 2000 bytes uncompressed, more than the limit of 1999 bytes"
        );
    }

    #[test]
    fn zip_bomb_with_lying_size_is_cut_at_the_limit() {
        const MB: usize = 1024 * 1024;
        // 50 MB of zeros compress to ~50 KB.
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        w.start_file("e-F1-1_0.csv", opts).expect("start");
        let chunk = vec![0u8; MB];
        for _ in 0..50 {
            w.write_all(&chunk).expect("write");
        }
        let mut zip = w.finish().expect("finish").into_inner();
        assert!(zip.len() < 200 * 1024, "compressed size {}", zip.len());
        // Honest declared size: refused up front.
        let e = FlowZip::open(Cursor::new(zip.clone()), "e-F1-1_0", MB as u64).expect_err("big");
        assert!(matches!(e, FlowError::TooLarge { declared, .. } if declared == 50 * MB as u64));
        // Declared size lowered to 10 bytes: the counting reader stops it.
        patch(&mut zip, 22, 24, &10u32.to_le_bytes());
        let mut fz = FlowZip::open(Cursor::new(zip), "e-F1-1_0", MB as u64).expect("open");
        assert_eq!(fz.declared_size(), 10);
        let mut reader = fz.csv().expect("csv");
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        let err = loop {
            match reader.read(&mut buf) {
                Ok(0) => panic!("read to the end without hitting the limit"),
                Ok(n) => total += n as u64,
                Err(e) => break e,
            }
        };
        assert_eq!(total, MB as u64);
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            "the flow exceeds 1048576 bytes uncompressed"
        );
        // And it keeps failing.
        assert!(reader.read(&mut buf).is_err());
    }

    #[test]
    fn encrypted_entry_is_refused() {
        let mut zip = make_zip(&[("e-F1-1_0.csv", b"a;b\n")]);
        // General purpose flag bit 0 = encrypted.
        patch(&mut zip, 6, 8, &1u16.to_le_bytes());
        let e = FlowZip::open(Cursor::new(zip), "e-F1-1_0", 1000).expect_err("encrypted");
        assert_eq!(e.code(), "PAA_IMPORT_ERROR");
        assert_eq!(
            e.to_string(),
            "zip entry \"e-F1-1_0.csv\" cannot be read: the entry is encrypted; upload an unencrypted zip"
        );
    }

    #[test]
    fn unsupported_method_is_refused() {
        let mut zip = make_zip(&[("e-F1-1_0.csv", b"a;b\n")]);
        // Compression method 12 = bzip2.
        patch(&mut zip, 8, 10, &12u16.to_le_bytes());
        let e = FlowZip::open(Cursor::new(zip), "e-F1-1_0", 1000).expect_err("bzip2");
        assert_eq!(e.code(), "PAA_IMPORT_ERROR");
        assert!(
            e.to_string().contains("is not supported; use deflate"),
            "{e}"
        );
    }

    #[test]
    fn stored_entry_is_fine() {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        w.start_file("e-F1-1_0.csv", opts).expect("start");
        w.write_all(b"h\nr\n").expect("write");
        let zip = w.finish().expect("finish").into_inner();
        assert_eq!(read_all(zip, "e-F1-1_0", 4).expect("read"), b"h\nr\n");
    }

    #[test]
    fn size_limited_exact_limit_is_fine() {
        let mut out = Vec::new();
        SizeLimited::new(&b"12345"[..], 5)
            .read_to_end(&mut out)
            .expect("exactly at the limit");
        assert_eq!(out, b"12345");
        let e = SizeLimited::new(&b"123456"[..], 5)
            .read_to_end(&mut Vec::new())
            .expect_err("over");
        assert_eq!(e.to_string(), "the flow exceeds 5 bytes uncompressed");
    }
}
