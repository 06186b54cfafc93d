//! The bodies of the coverage-guided fuzz targets (`fuzz/`, docs/FUZZING.md), shared with the
//! replay test that feeds them every committed corpus and crash file on each `cargo test`.
//!
//! Each target takes arbitrary bytes, must never panic, and asserts properties beyond that:
//! a failed assertion is a finding, like a panic in the parser itself. Not part of the API.

use std::io::{self, Cursor, Read};
use std::sync::OnceLock;

use base64::Engine;
use chrono::NaiveDate;
use snodo_core::dovuto::{validate, DebtTypeRules, EntityRules, FlowVersion};
use snodo_core::taxonomy::TaxonomyTable;
use snodo_core::SegregationCode;

use crate::csv::{CsvError, CsvLimits, CsvLines, Record, RowError};
use crate::mypay_export::{ExportReceipt, ExportVersion, ExportWriter};
use crate::mypay_import::{
    map_row, render_accepted, unmap_row, FlowName, FlowZip, IuvWriter, ScartiWriter, SizeLimited,
};
use crate::pagopa::{self, Request};
use crate::receipt_json::ReceiptContext;
use crate::{mypay_push, position_json, receipt_json};

/// A target's body: any bytes in, a panic for a finding.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/` call them.
pub const TARGETS: [(&str, Target); 6] = [
    ("soap_request", soap_request),
    ("mypay_flow", mypay_flow),
    ("position_json", position_json),
    ("receipt_encoders", receipt_encoders),
    ("fdr", fdr),
    ("treasury", treasury),
];

/// The entity the targets validate against: Padova of `config/demo.toml` (so the sample flows
/// and positions get past the debt-type checks) with MyPay's taxonomy snapshot.
fn rules() -> &'static EntityRules {
    static RULES: OnceLock<EntityRules> = OnceLock::new();
    RULES.get_or_init(|| {
        let debt_type = |code: &str, due: bool, anonymous: bool, generate: bool| {
            let rules = DebtTypeRules {
                code: code.to_owned(),
                active: true,
                due_date_required: due,
                anonymous_payer_allowed: anonymous,
                generate_iuv: generate,
                stamp_duty: false,
            };
            (code.to_owned(), rules)
        };
        let taxonomy: Option<TaxonomyTable> =
            crate::taxonomy::from_csv(include_str!("../specs/mypay/tassonomia.csv")).ok();
        EntityRules {
            // "01" is a valid segregation code; a fallback keeps this free of unwrap.
            segregation_code: SegregationCode::parse("01").expect("a valid segregation code"),
            debt_types: [
                debt_type("TARI", true, false, false),
                debt_type("MENSA", false, false, true),
                debt_type("COSAP", false, true, false),
            ]
            .into_iter()
            .collect(),
            taxonomy: taxonomy.map(std::sync::Arc::new),
        }
    })
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).unwrap_or_default()
}

/// The node's SOAP requests as the hub reads them (`parse_request`, what `pipelines/src/node.rs`
/// calls on every body), and the answers as the simulator reads them.
///
/// Properties: an accepted request is UTF-8 (the hub stores it as text) and renders back to a
/// message that parses to the same request; the same holds for responses. A demand's car tax
/// data that decodes encodes back to the same.
pub fn soap_request(data: &[u8]) {
    if let Ok(request) = pagopa::parse_request(data) {
        assert!(
            std::str::from_utf8(data).is_ok(),
            "parse_request accepted a body that is not UTF-8"
        );
        let rendered = pagopa::render_request(&request);
        let again = pagopa::parse_request(rendered.as_bytes());
        assert_eq!(
            again.as_ref(),
            Ok(&request),
            "a parsed request does not survive render_request: {rendered}"
        );
        // The car tax's service data inside a demand: decoded or refused, never a panic.
        if let pagopa::Request::Demand(r) = &request {
            if let Ok(tax) = crate::car_tax::decode(&r.dati_specifici_servizio) {
                assert_eq!(crate::car_tax::decode(&tax.to_base64()), Ok(tax));
            }
        }
    }
    if let Ok(response) = pagopa::parse_response(data) {
        assert!(
            std::str::from_utf8(data).is_ok(),
            "parse_response accepted a body that is not UTF-8"
        );
        let rendered = pagopa::render_response(&response);
        let again = pagopa::parse_response(rendered.as_bytes());
        assert_eq!(
            again.as_ref(),
            Ok(&response),
            "a parsed response does not survive render_response: {rendered}"
        );
    }
}

/// Flow limits small enough for the fuzzer to reach them.
const FLOW_LIMITS: CsvLimits = CsvLimits {
    max_record_bytes: 4096,
    max_fields: 48,
};
const FLOW_MAX_BYTES: u64 = 256 * 1024;
/// The stem used when the fuzzed file name is not a flow name.
const FALLBACK_STEM: &str = "c_g224-FUZZ-1_4";

/// A MyPay import flow: the first line of `data` is the file name, the rest the file (a zip
/// when the name says so, or when the name is not a flow name and the rest starts with `PK`).
/// The file is read as the importer does: `FlowName::parse`, `FlowZip` or `SizeLimited`,
/// `CsvLines`, then for each record `map_row`, `validate` and the outcome writers.
///
/// Properties: the reader never hands out more bytes than it was given or than the limit, lines
/// and rows count up by one, a record keeps at most `max_fields` values and each is no longer
/// than its raw text, a mapped row unmaps to the same fields, and an accepted row written to the
/// `_IUV` file reads back as the same fields.
pub fn mypay_flow(data: &[u8]) {
    let (name_bytes, file) = match memchr::memchr(b'\n', data) {
        Some(nl) => (&data[..nl], &data[nl + 1..]),
        None => (data, &[][..]),
    };
    let name = String::from_utf8_lossy(name_bytes);
    let parsed = FlowName::parse(&name).ok();
    if let Some(flow) = &parsed {
        check_flow_name(&name, flow);
    }
    let (stem, version, is_zip) = match &parsed {
        Some(f) => (f.stem.as_str(), f.version, f.is_zip),
        None => (FALLBACK_STEM, FlowVersion::V1_4, file.starts_with(b"PK")),
    };
    // How many bytes each read returns: also exercises the reader's refills.
    let chunk = match name_bytes.len() % 4 {
        0 => usize::MAX,
        1 => 1,
        2 => 7,
        _ => 4096,
    };
    if is_zip {
        let Ok(mut zip) = FlowZip::open(Cursor::new(file), stem, FLOW_MAX_BYTES) else {
            return;
        };
        assert_eq!(zip.entry_name(), format!("{stem}.csv"));
        assert!(zip.declared_size() <= FLOW_MAX_BYTES);
        if let Ok(csv) = zip.csv() {
            read_flow(Trickle { inner: csv, chunk }, version, FLOW_MAX_BYTES);
        };
    } else {
        let limit = FLOW_MAX_BYTES.min(file.len() as u64 / 2 + 64);
        let mut limited = SizeLimited::new(Trickle { inner: file, chunk }, limit);
        read_flow(&mut limited, version, limit);
        assert!(limited.bytes_read() <= limit.saturating_add(1));
    }
}

fn check_flow_name(name: &str, flow: &FlowName) {
    assert_eq!(
        name.get(..name.len() - 4),
        Some(flow.stem.as_str()),
        "stem of {name:?}"
    );
    assert_eq!(
        flow.stem,
        format!("{}-{}-{}", flow.ipa_code, flow.iuf, flow.version.as_str())
    );
    assert_eq!(flow.csv_entry_name(), format!("{}.csv", flow.stem));
    let other_ext = if flow.is_zip { ".csv" } else { ".zip" };
    match FlowName::parse(&format!("{}{other_ext}", flow.stem)) {
        Ok(other) => {
            assert_eq!((&other.ipa_code, &other.iuf), (&flow.ipa_code, &flow.iuf));
            assert_eq!(other.version, flow.version);
            assert_eq!(other.is_zip, !flow.is_zip);
        }
        Err(e) => panic!("{name:?} parses but not with the other extension: {e}"),
    }
}

/// Reads a whole flow like the importer; `given` bounds the bytes the reader may hand out.
fn read_flow(reader: impl Read, version: FlowVersion, given: u64) {
    let mut lines = match CsvLines::new(reader, FLOW_LIMITS) {
        Ok(lines) => lines,
        Err(e) => return check_csv_error(&e, 1),
    };
    let mut handed_out = lines.header().len() as u64;
    assert!(handed_out <= FLOW_LIMITS.max_record_bytes as u64);
    let header = lines.header().to_owned();
    let mut scarti = ScartiWriter::new(Vec::new(), &header).ok();
    let mut last_line = lines.lines();
    let mut last_row = 0;
    loop {
        let rec = match lines.next_record() {
            Ok(Some(rec)) => rec,
            Ok(None) => break,
            Err(e) => {
                check_csv_error(&e, last_line + 1);
                break;
            }
        };
        assert!(rec.line > last_line, "line {} after {last_line}", rec.line);
        assert_eq!(rec.row, last_row + 1);
        last_line = rec.line;
        last_row = rec.row;
        handed_out += rec.raw.len() as u64;
        assert!(
            handed_out <= given,
            "the reader handed out {handed_out} bytes of {given}"
        );
        check_record(&rec);
        if rec.error().is_some() {
            continue;
        }
        let Ok(raw) = map_row(version, rec) else {
            continue;
        };
        let fields = unmap_row(version, &raw);
        assert_eq!(map_row(version, &fields).as_ref(), Ok(&raw));
        match validate(&raw, version, rules(), today()) {
            Ok(_) => check_iuv_round_trip(version, &header, &rec),
            Err(rejections) => {
                assert!(!rejections.is_empty(), "a row rejected for no reason");
                let codes: Vec<&str> = rejections.iter().map(|r| r.code.as_str()).collect();
                let messages: Vec<&str> = rejections.iter().map(|r| r.message.as_str()).collect();
                if let Some(w) = scarti.as_mut() {
                    let _ = w.reject(rec.raw, &codes, &messages);
                }
            }
        }
    }
    assert_eq!(lines.rows(), last_row);
    assert!(lines.rows() <= lines.lines());
    // Extra calls after the end (or an error) stay at the end.
    assert!(matches!(lines.next_record(), Ok(None)));
}

fn check_csv_error(e: &CsvError, at_least: u64) {
    if let Some(line) = e.line() {
        assert!(
            line >= at_least,
            "error on line {line}, expected {at_least} or later"
        );
    }
    let _ = e.to_string();
}

fn check_record(rec: &Record<'_>) {
    let count = rec.field_count();
    assert!(count >= 1, "a record without fields");
    let kept = count.min(FLOW_LIMITS.max_fields);
    assert_eq!(rec.fields().count(), kept);
    for i in 0..kept {
        let value = rec.get(i).unwrap_or_else(|| panic!("field {i} of {kept}"));
        assert!(
            value.len() <= rec.raw.len(),
            "a value longer than its record"
        );
    }
    assert_eq!(rec.get(kept), None);
    // An unterminated quote may be the error reported instead.
    match rec.error() {
        Some(RowError::TooManyFields { count: c, max }) => {
            assert_eq!((c, max), (count, FLOW_LIMITS.max_fields));
            assert!(count > max);
        }
        Some(RowError::UnterminatedQuote) => {}
        None => assert!(count <= FLOW_LIMITS.max_fields, "{count} fields, no error"),
    }
}

/// An accepted row, as written to the `_IUV` file, reads back with the same values; the one
/// value `IuvWriter` documents it cannot write unambiguously is left out.
fn check_iuv_round_trip(version: FlowVersion, header: &str, rec: &Record<'_>) {
    let n = version.column_count();
    if (0..n).any(|i| ambiguous_for_iuv(rec.field(i))) || header.contains(['"', '\r']) {
        return;
    }
    let rendered = render_accepted(version, rec);
    let Ok(mut w) = IuvWriter::new(Vec::new(), header) else {
        return;
    };
    if w.accept_rendered(&rendered, None).is_err() {
        return;
    }
    let Ok(out) = w.finish() else { return };
    // The whole file fits one record: the reader's buffer is then no larger than the file.
    let limits = CsvLimits {
        max_record_bytes: out.len(),
        max_fields: n + 1,
    };
    let mut back = match CsvLines::new(&out[..], limits) {
        Ok(back) => back,
        Err(e) => panic!("the _IUV file cannot be read back: {e}"),
    };
    match back.next_record() {
        Ok(Some(again)) => {
            let want: Vec<&str> = (0..n).map(|i| rec.field(i)).collect();
            let got: Vec<&str> = again.fields().collect();
            assert_eq!(got, want, "_IUV line {:?}", String::from_utf8_lossy(&out));
        }
        other => panic!("the _IUV file holds no row: {other:?}"),
    }
}

/// `\` then `"` then `;`, CR, LF or the end of the value: `IuvWriter` reads it back without
/// the backslash, as its docs say.
fn ambiguous_for_iuv(value: &str) -> bool {
    let b = value.as_bytes();
    (0..b.len().saturating_sub(1)).any(|i| {
        b[i] == b'\\'
            && b[i + 1] == b'"'
            && matches!(b.get(i + 2), None | Some(b';' | b'\r' | b'\n'))
    })
}

/// A reader that returns at most `chunk` bytes per call.
struct Trickle<R> {
    inner: R,
    chunk: usize,
}

impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk);
        self.inner.read(&mut buf[..n])
    }
}

/// `position-json` as the Kafka intake decodes it: the first line is the message key (none when
/// the line is empty), the rest the payload.
///
/// Properties: decoding is deterministic, a payload that decodes re-encodes (serde_json's
/// canonical form) to one that decodes the same, `decode_value` on the same JSON agrees with
/// `decode`, and the outcome the hub publishes is JSON naming the same IUD.
pub fn position_json(data: &[u8]) {
    let (key, payload) = match memchr::memchr(b'\n', data) {
        Some(0) => (None, &data[1..]),
        Some(nl) => (Some(&data[..nl]), &data[nl + 1..]),
        None => (None, data),
    };
    let result = position_json::decode(payload, key, rules(), today());
    assert_eq!(
        position_json::decode(payload, key, rules(), today()),
        result,
        "decoding is not deterministic"
    );
    let origin = position_json::Origin {
        topic: "positions",
        partition: 0,
        offset: 7,
    };
    let outcome = match &result {
        Ok(row) => position_json::Outcome::Accepted {
            iud: &row.dovuto.iud,
            action: row.action.as_str(),
            iuv: None,
            notice_number: None,
            iuv_generated: false,
            source: origin,
        },
        Err(invalid) => {
            assert!(!invalid.rejections.is_empty(), "invalid for no reason");
            position_json::Outcome::Rejected {
                iud: invalid.iud.as_deref(),
                errors: invalid
                    .rejections
                    .iter()
                    .map(|r| position_json::OutcomeError {
                        code: r.code.as_str(),
                        message: &r.message,
                    })
                    .collect(),
                source: origin,
            }
        }
    };
    let encoded = outcome.encode();
    let back: serde_json::Value = match serde_json::from_str(&encoded) {
        Ok(v) => v,
        Err(e) => panic!("the outcome is not JSON ({e}): {encoded}"),
    };
    let iud = match &result {
        Ok(row) => Some(row.dovuto.iud.as_str()),
        Err(invalid) => invalid.iud.as_deref(),
    };
    assert_eq!(back.get("iud").and_then(|v| v.as_str()), iud);

    // A payload that decodes is JSON: its canonical re-encoding decodes the same.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
        assert!(
            result.is_err(),
            "decode accepted a payload that is not JSON"
        );
        return;
    };
    let reencoded = serde_json::to_vec(&value).unwrap_or_default();
    let again = position_json::decode(&reencoded, key, rules(), today());
    match (&result, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "re-encoded position decodes differently"),
        (Ok(_), Err(e)) => panic!("re-encoded position is refused: {e:?}"),
        (Err(_), Ok(_)) if result_is_syntax_only(&result) => {}
        (Err(_), Ok(_)) => panic!("re-encoded position is accepted, the original was not"),
        (Err(_), Err(_)) => {}
    }
    if let Ok(row) = &result {
        let expect = position_json::Expect {
            action: row.action.as_str(),
            iud: Some(&row.dovuto.iud),
        };
        let via_value = position_json::decode_value(&value, expect, rules(), today());
        assert_eq!(
            via_value.as_ref(),
            Ok(row),
            "decode_value disagrees with decode"
        );
    }
}

/// A refusal of the raw bytes that the canonical form may not repeat (duplicate keys, which
/// serde_json's `Value` folds into one).
fn result_is_syntax_only<T>(result: &Result<T, position_json::Invalid>) -> bool {
    match result {
        Err(invalid) => invalid.rejections.iter().all(|r| {
            r.code == snodo_core::dovuto::RejectCode::SintassiCsv
                && r.message.contains("duplicate field")
        }),
        Ok(_) => false,
    }
}

/// A receipt request made from fuzzed XML, through the stored form and every receipt encoder.
///
/// Properties: a parsed receipt survives `receipt_to_stored` / `receipt_from_stored`; each
/// encoder gives the same bytes from the parsed request and from the raw XML; the JSON
/// encoders give JSON whose base64 carries the XML as received; the MyPay export CSV is UTF-8
/// with every record holding the version's column count.
pub fn receipt_encoders(data: &[u8]) {
    let Ok(request) = pagopa::parse_request(data) else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(data) else {
        panic!("parse_request accepted a body that is not UTF-8");
    };
    let stored = pagopa::receipt_to_stored(&request);
    let is_receipt = matches!(request, Request::SendRt(_) | Request::SendRtV2(_));
    assert_eq!(stored.is_some(), is_receipt);
    let Some(stored) = stored else { return };
    let request = match pagopa::receipt_from_stored(stored.as_bytes()) {
        Ok(back) => {
            assert_eq!(back, request, "the stored receipt reads back differently");
            back
        }
        Err(e) => panic!("the stored receipt cannot be read back: {e}"),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    for issue in [None, Some("amount differs")] {
        let ctx = ReceiptContext {
            entity_ipa: "c_g224",
            entity_name: "Comune di Padova",
            iud: Some("TARI-2026-0001"),
            debt_type: Some("TARI"),
            received_at: "2026-11-26T10:00:01.123Z",
            issue,
            secondary: None,
        };
        let json = receipt_json::encode_parsed(&ctx, raw, &request);
        assert_eq!(
            receipt_json::encode(&ctx, raw),
            json,
            "receipt_json: raw and parsed differ"
        );
        if let Ok(bytes) = &json {
            let v: serde_json::Value = serde_json::from_slice(bytes)
                .unwrap_or_else(|e| panic!("receipt_json is not JSON: {e}"));
            assert_eq!(v["format"], receipt_json::FORMAT_ID);
            let xml = v["xml_base64"].as_str().unwrap_or_default();
            assert_eq!(b64.decode(xml).ok().as_deref(), Some(data));
        }
        let push = mypay_push::encode_parsed(&ctx, raw, &request);
        assert_eq!(
            mypay_push::encode(&ctx, raw),
            push,
            "mypay_push: raw and parsed differ"
        );
        if let Ok(bytes) = &push {
            let v: serde_json::Value = serde_json::from_slice(bytes)
                .unwrap_or_else(|e| panic!("the mypay push body is not JSON: {e}"));
            let rt = v["rt"].as_str().unwrap_or_default();
            assert_eq!(b64.decode(rt).ok().as_deref(), Some(data));
            let esito = b64
                .decode(v["esito"].as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("esito is not base64: {e}"));
            let esito = String::from_utf8(esito)
                .unwrap_or_else(|e| panic!("the Pagati XML is not UTF-8: {e}"));
            check_well_formed(&esito);
        }
    }
    for version in ExportVersion::ALL {
        for secondary in [false, true] {
            export(version, secondary, raw, &request);
        }
    }
}

fn export(version: ExportVersion, secondary: bool, raw: &str, request: &Request) {
    let receipt = ExportReceipt {
        entity_ipa: "c_g224",
        entity_fiscal_code: "00644060287",
        entity_name: "Comune di Padova",
        iud: Some("TARI-2026-0001"),
        debt_type: Some("TARI"),
        iuf: Some("FLOW1"),
        received_at: "2026-11-26T10:00:01.123Z",
        raw_request: raw,
        secondary,
    };
    let run = |parsed: Option<&Request>| {
        let mut w = ExportWriter::new(version, Vec::new()).ok()?;
        let n = w.push_parsed(&receipt, parsed).map_err(|e| e.to_string());
        Some((n, w.finish().ok()?))
    };
    let from_parsed = run(Some(request));
    assert_eq!(
        run(None),
        from_parsed,
        "mypay_export: raw and parsed differ"
    );
    let Some((Ok(rows), out)) = from_parsed else {
        return;
    };
    let text = std::str::from_utf8(&out).unwrap_or_else(|e| panic!("export not UTF-8: {e}"));
    let records = quoted_csv_records(text)
        .unwrap_or_else(|| panic!("the export is not opencsv's quoted CSV: {text}"));
    assert_eq!(records.len(), rows + 1, "header plus {rows} rows: {text}");
    for r in records {
        assert_eq!(r, version.column_count(), "fields per record: {text}");
    }
}

/// Field counts of each record of a CSV where every field is quoted and `"` doubled (what
/// opencsv writes), `;`-separated, `\n`-terminated; `None` when the text is not that.
fn quoted_csv_records(text: &str) -> Option<Vec<usize>> {
    let b = text.as_bytes();
    let mut records = Vec::new();
    let mut fields = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            return None;
        }
        i += 1;
        loop {
            match b.get(i)? {
                b'"' if b.get(i + 1) == Some(&b'"') => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        i += 1;
        fields += 1;
        match b.get(i)? {
            b';' => i += 1,
            b'\n' => {
                records.push(fields);
                fields = 0;
                i += 1;
            }
            _ => return None,
        }
    }
    (fields == 0).then_some(records)
}

/// Panics unless `xml` is one well-formed element.
fn check_well_formed(xml: &str) {
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut roots = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            Ok(quick_xml::events::Event::Empty(_)) if depth == 0 => roots += 1,
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("the Pagati XML is not well-formed ({e}): {xml}"),
        }
    }
    assert_eq!((depth, roots), (0, 1), "the Pagati XML: {xml}");
}

/// The settlement flows the hub pulls: the FlussoRiversamento XML, the node's SOAP answers that
/// carry it, and the FdR 3 REST pages.
///
/// Properties: a flow that parses renders back to XML that parses to the same header and rows;
/// a REST flow or page that decodes converts without panicking, whatever its numbers.
pub fn fdr(data: &[u8]) {
    use crate::fdr::{rest, soap, xml};
    if let Ok((flow, rows)) = xml::parse_flow(data, Some("FUZZPSP")) {
        let again = xml::render_flow(&flow, &rows);
        let (flow2, rows2) = xml::parse_flow(&again, Some("FUZZPSP"))
            .unwrap_or_else(|e| panic!("a rendered flow does not parse: {e}"));
        assert_eq!(flow2, flow, "the header changed on a round trip");
        assert_eq!(rows2, rows, "the rows changed on a round trip");
    }
    let _ = soap::parse_list_response(data);
    if let Ok(inner) = soap::parse_flow_response(data) {
        let _ = xml::parse_flow(&inner, None);
    }
    if let Ok(page) = rest::decode::<rest::FlowList>(data) {
        let _ = page.metadata.has_next();
        let _ = page.cursor();
    }
    if let Ok(flow) = rest::decode::<rest::SingleFlow>(data) {
        let _ = flow.to_flow();
    }
    if let Ok(page) = rest::decode::<rest::PaymentsPage>(data) {
        let _ = page.to_payments();
    }
}

/// Treasury files: the bytes as an OPI giornale di cassa (`treasury::opi`), as a `treasury-csv`
/// file (layout told by the first line, and each layout's reader forced), and as a causale.
///
/// Properties: the streaming OPI reader fed one byte at a time gives what `parse_opi` gives;
/// the counts add up; the CSV readers give the same movements (or the same error) in 1- and
/// 7-byte reads as whole; every movement validates, carries the header's year (OPI) and the
/// reference its causale gives; an extracted IUF or IUV is found again in the official form of
/// a causale naming it.
pub fn treasury(data: &[u8]) {
    use snodo_core::treasury::extract;

    use crate::treasury::giornale_csv::GiornaleReader;
    use crate::treasury::opi::{parse_opi, OpiReader};
    use crate::treasury::poste_csv::PosteReader;
    use crate::treasury::read_csv;

    let check = |m: &snodo_core::treasury::TreasuryMovement| {
        if let Err(e) = m.validate() {
            panic!("a decoded movement does not validate: {e}: {m:?}");
        }
        assert_eq!(
            m.reference,
            extract(&m.causale),
            "reference of {:?}",
            m.causale
        );
        causale_round_trip(&m.causale);
    };

    let whole = parse_opi(data);
    if let Ok((header, movements, counts)) = &whole {
        assert_eq!(counts.kept, movements.len() as u64, "kept count");
        assert_eq!(
            counts.movements,
            counts.kept + counts.not_incoming + counts.other_operation,
            "the counts add up"
        );
        for m in movements {
            check(m);
            assert_eq!(m.year, header.year, "a movement's year is the file's");
        }
    }
    let plain = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let streamed = OpiReader::new(io::BufReader::with_capacity(1, plain)).and_then(|mut r| {
        let mut ms = Vec::new();
        while let Some(m) = r.next_movement()? {
            ms.push(m);
        }
        Ok((r.header().clone(), ms, r.counts()))
    });
    assert_eq!(streamed, whole, "one-byte reads change the OPI outcome");

    let outcome =
        |r: Result<Vec<_>, crate::treasury::TreasuryCsvError>| r.map_err(|e| e.to_string());
    let csv = |input: Box<dyn Read + '_>| {
        outcome(read_csv(input, None).and_then(|r| r.collect::<Result<Vec<_>, _>>()))
    };
    let whole = csv(Box::new(data));
    for chunk in [1, 7] {
        let trickled = csv(Box::new(Trickle { inner: data, chunk }));
        assert_eq!(trickled, whole, "{chunk}-byte reads change the CSV outcome");
    }
    if let Ok(ms) = &whole {
        ms.iter().for_each(check);
    }
    let forced = [
        outcome(
            GiornaleReader::new(data)
                .and_then(|mut r| std::iter::from_fn(|| r.next_movement().transpose()).collect()),
        ),
        outcome(
            PosteReader::new(data)
                .and_then(|mut r| std::iter::from_fn(|| r.next_movement().transpose()).collect()),
        ),
    ];
    for ms in forced.iter().flatten() {
        ms.iter().for_each(check);
    }

    causale_round_trip(&String::from_utf8_lossy(data));
}

/// An IUF or IUV extracted from `causale` is extracted again from the official form naming it.
fn causale_round_trip(causale: &str) {
    use snodo_core::treasury::{extract, CausaleRef};
    match extract(causale) {
        CausaleRef::Iuf(i) => {
            let official = format!("/PUR/LGPE-RIVERSAMENTO/TXT/0/URI/{}", i.as_str());
            assert_eq!(extract(&official), CausaleRef::Iuf(i), "from {causale:?}");
        }
        CausaleRef::Iuv(v) => {
            if let Err(e) = snodo_core::Iuv::parse(&v) {
                panic!("extracted IUV {v:?} is not an IUV: {e}");
            }
            let official = format!("/RFB/{v}/1.00");
            assert_eq!(extract(&official), CausaleRef::Iuv(v), "from {causale:?}");
        }
        CausaleRef::None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_csv_records_counts_fields_and_refuses_other_shapes() {
        assert_eq!(
            quoted_csv_records("\"a\";\"b\"\"c\"\n\"\";\"x;y\"\n"),
            Some(vec![2, 2])
        );
        assert_eq!(quoted_csv_records("a;\"b\"\n"), None);
        assert_eq!(quoted_csv_records("\"a\"\"\n"), None);
        assert_eq!(quoted_csv_records("\"a\""), None);
    }

    #[test]
    fn ambiguous_values_are_the_documented_ones() {
        assert!(ambiguous_for_iuv("a\\\";b"));
        assert!(ambiguous_for_iuv("a\\\""));
        assert!(!ambiguous_for_iuv("a\\\"b"));
        assert!(!ambiguous_for_iuv("a\\b;\""));
    }
}
