use std::io::{Cursor, Read};

use chrono::NaiveDate;

use super::*;
use crate::csv::{CsvLimits, CsvLines};
use crate::pagopa::{ReceiptDestination, Request, SendRtV2Request};
use crate::test_fixtures::{verify_request, FELTRE, PADOVA};

/// paSendRTV2 of Padova's own receipt: payer and debtor, transfer 2 to Feltre, a `"` and
/// non-ASCII in the causale, paid at 23:30:05.250Z (already the next day in Rome).
pub(crate) const PADOVA_RT: &str =
    include_str!("../../tests/data/mypay_export/padova_send_rt_v2.xml");
/// paSendRT of Feltre's receipt whose transfer 2 (`;` and a line break in the causale, a
/// taxonomy without `9/…/`) goes to Padova; no payer, no fee, paid at Rome local time.
const FELTRE_RT: &str = include_str!("../../tests/data/mypay_export/feltre_send_rt.xml");
/// Typed by hand from TRACCIATI.md §3, not produced by this encoder.
const EXPECTED_1_0: &[u8] = include_bytes!("../../tests/data/mypay_export/export_1_0.csv");
/// As above; the `rt` values are `base64 -w0` of the two requests.
const EXPECTED_1_3: &[u8] = include_bytes!("../../tests/data/mypay_export/export_1_3.csv");

pub(crate) fn padova_own() -> ExportReceipt<'static> {
    ExportReceipt {
        entity_ipa: "c_g224",
        entity_fiscal_code: PADOVA,
        entity_name: "Comune di Padova",
        iud: Some("TARI-2026-0001"),
        debt_type: Some("TARI"),
        iuf: Some("2026112601"),
        received_at: "2026-11-26T23:30:07.123Z",
        raw_request: PADOVA_RT,
        secondary: false,
    }
}

/// Feltre's receipt, seen by Padova (a secondary beneficiary).
fn padova_from_feltre() -> ExportReceipt<'static> {
    ExportReceipt {
        iud: None,
        debt_type: None,
        iuf: None,
        received_at: "2026-11-25T17:45:01Z",
        raw_request: FELTRE_RT,
        secondary: true,
        ..padova_own()
    }
}

fn export(version: ExportVersion, receipts: &[ExportReceipt<'_>]) -> Vec<u8> {
    let mut w = ExportWriter::new(version, Vec::new()).expect("header");
    for r in receipts {
        w.push(r).expect("push");
    }
    w.finish().expect("finish")
}

/// The records of an export, header first, unquoted.
fn records(csv: &[u8]) -> Vec<Vec<String>> {
    let limits = CsvLimits {
        max_fields: 100,
        ..CsvLimits::default()
    };
    let mut lines = CsvLines::new(csv, limits).expect("csv");
    let mut out = vec![lines
        .header()
        .trim_start_matches('"')
        .trim_end_matches('"')
        .split("\";\"")
        .map(str::to_owned)
        .collect::<Vec<_>>()];
    while let Some(rec) = lines.next_record().expect("record") {
        assert!(rec.error().is_none(), "{:?}", rec.error());
        out.push(rec.fields().map(str::to_owned).collect());
    }
    out
}

fn v2_request() -> SendRtV2Request {
    match pagopa::parse_request(PADOVA_RT.as_bytes()).expect("fixture parses") {
        Request::SendRtV2(r) => r,
        other => panic!("not a paSendRTV2: {other:?}"),
    }
}

fn render(r: SendRtV2Request) -> String {
    pagopa::render_request(&Request::SendRtV2(r))
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("utf-8")
}

#[test]
fn fixtures_are_what_the_tests_say() {
    assert!(matches!(
        pagopa::parse_request(FELTRE_RT.as_bytes()),
        Ok(Request::SendRt(_))
    ));
    let r = v2_request().receipt;
    assert!(r.transfer_list[0].remittance_information.contains('"'));
    assert!(!r.transfer_list[0].remittance_information.is_ascii());
    assert_eq!(r.transfer_list[1].fiscal_code_pa, FELTRE);
    assert!(r.payer.is_some());
}

#[test]
fn version_1_0_matches_the_reference_byte_for_byte() {
    let mut w = ExportWriter::new(ExportVersion::V1_0, Vec::new()).unwrap();
    assert_eq!(w.push(&padova_own()).unwrap(), 1);
    assert_eq!(
        w.push(&padova_from_feltre()).unwrap(),
        0,
        "no secondary rows before 1.3"
    );
    assert_eq!(w.rows(), 1);
    let out = w.finish().unwrap();
    assert_eq!(text(&out), text(EXPECTED_1_0));
    assert_eq!(out, EXPECTED_1_0);
}

#[test]
fn version_1_3_matches_the_reference_byte_for_byte() {
    let mut w = ExportWriter::new(ExportVersion::V1_3, Vec::new()).unwrap();
    assert_eq!(w.push(&padova_own()).unwrap(), 1);
    assert_eq!(w.push(&padova_from_feltre()).unwrap(), 1);
    assert_eq!(w.rows(), 2);
    let out = w.finish().unwrap();
    assert_eq!(text(&out), text(EXPECTED_1_3));
    assert_eq!(out, EXPECTED_1_3);
}

#[test]
fn column_counts_and_header_per_version() {
    let counts = [
        (ExportVersion::V1_0, 64),
        (ExportVersion::V1_1, 70),
        (ExportVersion::V1_2, 71),
        (ExportVersion::V1_3, 74),
    ];
    for (version, count) in counts {
        assert_eq!(version.column_count(), count, "{version}");
        let out = export(version, &[padova_own(), padova_from_feltre()]);
        let recs = records(&out);
        assert_eq!(recs[0], version.columns().collect::<Vec<_>>());
        for (i, rec) in recs.iter().enumerate() {
            assert_eq!(rec.len(), count, "{version} record {i}");
        }
        assert_eq!(recs[0][0], "iuf");
        assert_eq!(recs[0][63], "tipoDovuto");
    }
    let header = |v: ExportVersion| v.columns().skip(64).collect::<Vec<_>>();
    assert!(header(ExportVersion::V1_0).is_empty());
    assert_eq!(header(ExportVersion::V1_1), RECEIPT_COLUMNS);
    assert_eq!(header(ExportVersion::V1_2)[..6], RECEIPT_COLUMNS);
    assert_eq!(header(ExportVersion::V1_2)[6..], ["bilancio"]);
    assert_eq!(
        header(ExportVersion::V1_3)[6..],
        [
            "bilancio",
            "cod_fiscale_pa1",
            "de_nome_pa1",
            "cod_tassonomico_dovuto_pa1"
        ]
    );
    let only_header = export(ExportVersion::V1_1, &[]);
    assert!(only_header.starts_with(b"\"iuf\";\"numRigaFlusso\";"));
    assert!(only_header.ends_with(b";\"blbRtDatiPagDatiSingPagAllegatoRicevutaTest\"\n"));
    assert_eq!(only_header.iter().filter(|&&b| b == b'\n').count(), 1);
}

#[test]
fn receipt_columns_follow_the_flag_whatever_the_version() {
    use base64::Engine as _;
    let rt = base64::engine::general_purpose::STANDARD.encode(PADOVA_RT.as_bytes());
    for version in ExportVersion::ALL {
        for with in [false, true] {
            let mut w = ExportWriter::with_receipt_columns(version, with, Vec::new()).unwrap();
            w.push(&padova_own()).unwrap();
            let recs = records(&w.finish().unwrap());
            let header: Vec<_> = version.columns_with(with).collect();
            assert_eq!(recs[0], header, "{version} {with}");
            assert_eq!(recs[1].len(), header.len(), "{version} {with}");
            let at = |name: &str| recs[0].iter().position(|c| c == name);
            match at("rt") {
                Some(i) => {
                    assert!(with, "{version}");
                    assert_eq!(recs[1][i], rt, "{version}: the receipt as the node sent it");
                    let idx = at("indiceDatiSingoloPagamento").unwrap();
                    assert_eq!(recs[1][idx], "1", "{version}: the transfer to the entity");
                }
                None => assert!(!with, "{version}"),
            }
            // The base columns do not move.
            assert_eq!(
                recs[1][..64],
                records(&export(version, &[padova_own()]))[1][..64]
            );
        }
    }
}

#[test]
fn every_field_is_quoted_and_quotes_are_doubled() {
    let mut buf = Vec::new();
    write_record(
        &mut buf,
        ["", "a\"b", "x;y", "riga 1\nriga 2", "\"\"", "Città"],
    );
    assert_eq!(
        text(&buf),
        "\"\";\"a\"\"b\";\"x;y\";\"riga 1\nriga 2\";\"\"\"\"\"\";\"Città\"\n"
    );
}

#[test]
fn quoting_survives_a_round_trip_through_a_receipt() {
    let mut req = v2_request();
    req.receipt.transfer_list[0].remittance_information = "a \"b\"; c\nd".into();
    let raw = render(req);
    let out = export(
        ExportVersion::V1_0,
        &[ExportReceipt {
            raw_request: &raw,
            ..padova_own()
        }],
    );
    assert!(text(&out).contains(";\"a \"\"b\"\"; c\nd\";"));
    assert_eq!(records(&out)[1][61], "a \"b\"; c\nd");
}

#[test]
fn secondary_rows_only_in_1_3_one_per_transfer_to_the_entity() {
    // Feltre's receipt with two transfers to Padova.
    let mut req = v2_request();
    req.id_pa = FELTRE.into();
    req.receipt.fiscal_code = FELTRE.into();
    req.receipt.company_name = "Comune di Feltre".into();
    let mut t1 = req.receipt.transfer_list[0].clone();
    t1.fiscal_code_pa = FELTRE.into();
    t1.transfer_category = "9/0301109AP/".into();
    t1.transfer_amount = "100.07".into();
    let mut t2 = req.receipt.transfer_list[0].clone();
    t2.id_transfer = 2;
    t2.transfer_amount = "30.00".into();
    t2.remittance_information = "seconda quota".into();
    let mut t3 = req.receipt.transfer_list[1].clone();
    t3.id_transfer = 3;
    t3.fiscal_code_pa = PADOVA.into();
    t3.transfer_amount = "20.00".into();
    req.receipt.transfer_list = vec![t1, t2, t3];
    let raw = render(req);
    let receipt = ExportReceipt {
        raw_request: &raw,
        secondary: true,
        ..padova_own()
    };
    for version in [
        ExportVersion::V1_0,
        ExportVersion::V1_1,
        ExportVersion::V1_2,
    ] {
        let mut w = ExportWriter::new(version, Vec::new()).unwrap();
        assert_eq!(w.push(&receipt).unwrap(), 0, "{version}");
        assert_eq!(records(&w.finish().unwrap()).len(), 1, "{version}");
    }
    let mut w = ExportWriter::new(ExportVersion::V1_3, Vec::new()).unwrap();
    assert_eq!(w.push(&receipt).unwrap(), 2);
    let recs = records(&w.finish().unwrap());
    assert_eq!(recs.len(), 3);
    let col = |name: &str| {
        recs[0]
            .iter()
            .position(|c| c == name)
            .expect("column exists")
    };
    let expected = [
        ("2", "30.00", "seconda quota"),
        ("3", "20.00", "Diritti di segreteria"),
    ];
    for (rec, (index, amount, causale)) in recs[1..].iter().zip(expected) {
        assert_eq!(rec[col("tipoDovuto")], SECONDARY_DEBT_TYPE);
        assert_eq!(
            rec[col("identificativoStazioneRichiedente")],
            SECONDARY_STATION
        );
        assert_eq!(rec[col("identificativoDominio")], PADOVA);
        assert_eq!(rec[col("numRigaFlusso")], "");
        assert_eq!(rec[col("codIud")], "");
        assert_eq!(rec[col("indiceDatiSingoloPagamento")], index);
        assert_eq!(rec[col("importoTotalePagato")], amount);
        assert_eq!(rec[col("singoloImportoPagato")], amount);
        assert_eq!(rec[col("causaleVersamento")], causale);
        assert_eq!(
            rec[col("rt")],
            base64::engine::general_purpose::STANDARD.encode(&raw)
        );
        assert_eq!(rec[col("cod_fiscale_pa1")], FELTRE);
        assert_eq!(rec[col("de_nome_pa1")], "Comune di Feltre");
        assert_eq!(rec[col("cod_tassonomico_dovuto_pa1")], "9/0301109AP/");
    }
}

#[test]
fn a_secondary_receipt_without_a_transfer_to_the_entity_has_no_rows() {
    let receipt = ExportReceipt {
        entity_fiscal_code: "80007580279",
        ..padova_from_feltre()
    };
    let mut w = ExportWriter::new(ExportVersion::V1_3, Vec::new()).unwrap();
    assert_eq!(w.push(&receipt).unwrap(), 0);
}

#[test]
fn the_primary_row_uses_the_transfer_to_the_entity_and_numbers_rows() {
    // Padova's receipt exported for Feltre as if it were Feltre's own: transfer 2 is Feltre's.
    let as_feltre = ExportReceipt {
        entity_fiscal_code: FELTRE,
        entity_name: "Comune di Feltre",
        ..padova_own()
    };
    let out = export(
        ExportVersion::V1_1,
        &[padova_own(), as_feltre, padova_own()],
    );
    let recs = records(&out);
    let numbers: Vec<&str> = recs[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    let feltre = &recs[2];
    assert_eq!(
        feltre[54], "150.07",
        "importoTotalePagato is the receipt's total"
    );
    assert_eq!(feltre[57], "16.00");
    assert_eq!(feltre[61], "Diritti di segreteria");
    assert_eq!(feltre[62], "9/0301109AP/");
    assert_eq!(feltre[66], "2", "indiceDatiSingoloPagamento");
    assert_eq!(recs[1][66], "1");
}

#[test]
fn a_revenue_stamp_is_exported_as_the_attachment() {
    let mut req = v2_request();
    req.receipt.transfer_list[0].destination =
        ReceiptDestination::MbdAttachment("PG1h\ncmNhLz4=".into());
    let raw = render(req);
    let out = export(
        ExportVersion::V1_2,
        &[ExportReceipt {
            raw_request: &raw,
            ..padova_own()
        }],
    );
    let recs = records(&out);
    assert_eq!(recs[1][68], "BD");
    assert_eq!(recs[1][69], "PG1hcmNhLz4=");
    assert_eq!(recs[1][70], "", "bilancio");
}

#[test]
fn times_are_rome_local() {
    let cases = [
        // Summer time, explicit offset.
        ("2026-07-01T09:00:00+02:00", "2026-07-01T09:00:00"),
        ("2026-07-01T07:00:00.999Z", "2026-07-01T09:00:00"),
        // No zone: already Rome time.
        ("2026-07-01T09:00:00", "2026-07-01T09:00:00"),
        ("2026-12-31T24:00:00", "2027-01-01T00:00:00"),
        ("2026-12-31T23:30:00-01:00", "2027-01-01T01:30:00"),
    ];
    for (wire, rome) in cases {
        let got = rome_local(wire).map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string());
        assert_eq!(got.as_deref(), Some(rome), "{wire}");
    }
    assert_eq!(rome_local("2026-07-01"), None);
    assert_eq!(rome_local("2026-07-01T09:00:00+2"), None);
    assert_eq!(rome_local("2026-07-01T09:00:00+99999999999:00"), None);
    assert_eq!(rome_local("2026-07-01T09:00:00+24:00"), None);
    assert_eq!(rome_local("2026-07-01T09:0€"), None);
}

#[test]
fn without_payment_date_time_the_reception_time_is_used() {
    let mut req = v2_request();
    req.receipt.payment_date_time = None;
    req.receipt.application_date = Some("2026-11-30+01:00".into());
    let raw = render(req);
    let out = export(
        ExportVersion::V1_0,
        &[ExportReceipt {
            raw_request: &raw,
            received_at: "2026-03-29T01:30:00Z",
            ..padova_own()
        }],
    );
    let rec = &records(&out)[1];
    // 01:30 UTC on the night summer time starts is 03:30 in Rome.
    assert_eq!(rec[8], "2026-03-29T03:30:00");
    assert_eq!(
        rec[10], "2026-11-30",
        "riferimentoDataRichiesta is applicationDate"
    );
    assert_eq!(rec[59], "2026-03-29");
}

#[test]
fn file_stems() {
    let at = NaiveDate::from_ymd_opt(2026, 11, 26)
        .and_then(|d| d.and_hms_opt(7, 5, 9))
        .unwrap();
    assert_eq!(
        file_stem(ExportVersion::V1_0, "c_g224", "4711", at),
        "4711_ESTRAZIONE_DOVUTI_2026-11-26_07_05_09"
    );
    assert_eq!(
        file_stem(ExportVersion::V1_3, "c_g224", "4711", at),
        "c_g224-4711_ESTRAZIONE_DOVUTI_20261126070509-1_3"
    );
    assert_eq!(
        file_stem(ExportVersion::V1_1, "c_g224", "4711", at),
        "c_g224-4711_ESTRAZIONE_DOVUTI_20261126070509-1_1"
    );
}

#[test]
fn the_zip_holds_one_deflated_csv_named_after_the_stem() {
    let csv = export(ExportVersion::V1_3, &[padova_own(), padova_from_feltre()]);
    let stem = "c_g224-4711_ESTRAZIONE_DOVUTI_20261126070509-1_3";
    let mut out = Cursor::new(Vec::new());
    zip(stem, &csv, &mut out).unwrap();
    let mut archive = ::zip::ZipArchive::new(Cursor::new(out.into_inner())).unwrap();
    assert_eq!(archive.len(), 1);
    let mut entry = archive.by_index(0).unwrap();
    assert_eq!(entry.name(), format!("{stem}.csv"));
    assert_eq!(entry.compression(), ::zip::CompressionMethod::Deflated);
    let mut content = Vec::new();
    entry.read_to_end(&mut content).unwrap();
    assert_eq!(content, csv);
}

#[test]
fn an_unreadable_request_is_an_error_naming_the_problem_and_writes_nothing() {
    let mut w = ExportWriter::new(ExportVersion::V1_3, Vec::new()).unwrap();
    let before = w.push(&padova_own()).unwrap();
    assert_eq!(before, 1);

    let broken = PADOVA_RT.replace(
        "<paymentAmount>150.07</paymentAmount>",
        "<paymentAmount>150,07</paymentAmount>",
    );
    let err = w
        .push(&ExportReceipt {
            raw_request: &broken,
            ..padova_own()
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, MypayExportError::Unreadable { .. }), "{msg}");
    assert!(msg.contains("paymentAmount"), "{msg}");
    assert!(msg.contains("2026-11-26T23:30:07.123Z"), "{msg}");

    let err = w
        .push(&ExportReceipt {
            raw_request: "not xml at all <",
            ..padova_own()
        })
        .unwrap_err();
    assert!(matches!(err, MypayExportError::Unreadable { .. }), "{err}");

    let verify = verify_request();
    let err = w
        .push(&ExportReceipt {
            raw_request: &verify,
            ..padova_own()
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("paVerifyPaymentNotice, not paSendRT"),
        "{err}"
    );

    let err = w
        .push(&ExportReceipt {
            received_at: "yesterday",
            ..padova_own()
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("receipt c3a7e1f0b2d94a7f8e1c: received_at:"),
        "{msg}"
    );

    assert_eq!(w.rows(), 1);
    let out = w.finish().unwrap();
    assert_eq!(records(&out).len(), 2, "failed pushes wrote nothing");
}

#[test]
fn versions_parse_in_both_spellings() {
    assert_eq!(ExportVersion::default(), ExportVersion::V1_0);
    for v in ExportVersion::ALL {
        assert_eq!(ExportVersion::parse(v.as_str()).unwrap(), v);
        assert_eq!(ExportVersion::parse(v.name_suffix()).unwrap(), v);
        assert_eq!(v.to_string().parse::<ExportVersion>().unwrap(), v);
    }
    assert_eq!(ExportVersion::parse("1_3").unwrap(), ExportVersion::V1_3);
    let err = ExportVersion::parse("1.4").unwrap_err();
    assert!(err.to_string().contains("\"1.4\""), "{err}");
    assert!(ExportVersion::parse("").is_err());
}

#[test]
fn datispecificiriscossione_keeps_or_wraps_the_taxonomy() {
    assert_eq!(dati_specifici_riscossione("9/0101100IM/"), "9/0101100IM/");
    assert_eq!(dati_specifici_riscossione("0101100IM"), "9/0101100IM/");
    assert_eq!(dati_specifici_riscossione("0101100IM/"), "9/0101100IM/");
}

#[test]
fn truncated_requests_are_errors_not_panics() {
    let mut w = ExportWriter::new(ExportVersion::V1_3, Vec::new()).unwrap();
    for (i, _) in PADOVA_RT.char_indices().step_by(7) {
        let cut = &PADOVA_RT[..i];
        assert!(
            w.push(&ExportReceipt {
                raw_request: cut,
                ..padova_own()
            })
            .is_err(),
            "{cut}"
        );
    }
    assert_eq!(w.rows(), 0);
}
