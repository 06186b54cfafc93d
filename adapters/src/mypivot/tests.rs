use std::io::{Cursor, Write as _};

use chrono::{NaiveDate, TimeZone, Utc};
use snodo_core::ids::Iuv;
use snodo_core::settlement::{
    FlowReceiver, FlowSender, Iuf, PayStatus, SenderKind, SettlementFlow, SettlementPayment,
    TransferIndex,
};
use snodo_core::treasury::{CausaleRef, MovementOperation, TreasuryMovement};
use snodo_core::Amount;

use super::export::{is_mapped, DOPPI, MAX_ROWS};
use super::import_pagati::{COLUMNS, MAX_ERRORS};
use super::*;
use crate::csv::CsvError;
use crate::fdr::Report;
use crate::mypay_export::ExportReceipt;
use crate::mypay_import::zip_single_file_at;
use crate::test_fixtures::PADOVA;

/// MyPivot's headers, one line per layout (see specs/SOURCES.md).
const HEADERS: &str = include_str!("../../specs/mypivot/export_headers.txt");

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("date")
}

pub(super) fn notification() -> Notification {
    Notification {
        iud: "TARI-2026-0001".into(),
        iuv: Iuv::parse("01000000000012373").expect("iuv"),
        payer: NotificationPayer {
            kind: 'F',
            id: "RSSMRA85T10A562S".into(),
            name: "Mario Rossi".into(),
            street: Some("Via Roma".into()),
            civic: None,
            postal_code: Some("35100".into()),
            city: Some("Padova".into()),
            province: Some("PD".into()),
            country: Some("IT".into()),
            email: None,
        },
        execution_date: day(2026, 11, 26),
        amount: Amount::from_cents(13407),
        commission: Some(Amount::from_cents(150)),
        debt_type: "TARI".into(),
        payment_type: "PO".into(),
        causale: "TARI 2026; rata \"unica\" C:\\x".into(),
        dati_specifici: "9/0101100IM/".into(),
        bilancio: None,
    }
}

/// Padova's own receipt, as MyPay's export tests have it.
fn receipt() -> ExportReceipt<'static> {
    crate::mypay_export::tests::padova_own()
}

fn report() -> Report {
    let payments = vec![
        SettlementPayment {
            iuv: "01000000000012373".into(),
            iur: "c3a7e1f0b2d94a7f8e1c".into(),
            transfer_index: Some(TransferIndex::FIRST),
            amount: Amount::from_cents(13407),
            status: PayStatus::Executed,
            date: day(2026, 11, 27),
        },
        SettlementPayment {
            iuv: "01000000000099999".into(),
            iur: "IUR-2".into(),
            transfer_index: None,
            amount: Amount::from_cents(2000),
            status: PayStatus::NoRpt,
            date: day(2026, 11, 27),
        },
    ];
    Report {
        flow: SettlementFlow {
            iuf: Iuf::parse("2026-11-28BCITITMM-S0001").expect("iuf"),
            psp_id: "BCITITMM".into(),
            revision: 1,
            flow_time: Utc.with_ymd_and_hms(2026, 11, 28, 6, 0, 1).unwrap(),
            regulation_id: "SCT-0001".into(),
            regulation_date: day(2026, 11, 29),
            sender: FlowSender {
                kind: SenderKind::Bic,
                id: "BCITITMM".into(),
                name: Some("Intesa Sanpaolo".into()),
                broker_id: None,
                channel_id: None,
            },
            bic_code_pouring_bank: None,
            receiver: FlowReceiver {
                id: PADOVA.into(),
                organization_id: PADOVA.into(),
                name: Some("Comune di Padova".into()),
            },
            declared_count: 2,
            declared_amount: Amount::from_cents(15407),
            published: None,
        },
        payments,
        links: vec![],
        computed_count: 2,
        computed_amount: Amount::from_cents(15407),
        linked: 1,
        anomalies: vec![],
    }
}

fn movement() -> TreasuryMovement {
    TreasuryMovement {
        year: 2026,
        bill: "1234".into(),
        amount: Amount::from_cents(15407),
        accounting_date: Some(day(2026, 11, 30)),
        value_date: Some(day(2026, 11, 29)),
        causale: "/PUR/LGPE-RIVERSAMENTO/URI/2026-11-28BCITITMM-S0001".into(),
        payer: Some("Intesa Sanpaolo".into()),
        end_to_end_id: None,
        reference: CausaleRef::Iuf(Iuf::parse("2026-11-28BCITITMM-S0001").expect("iuf")),
        operation: MovementOperation::Executed,
    }
}

fn row<'a>(class: &'a str) -> ReconciliationRow<'a> {
    ReconciliationRow {
        notification: None,
        receipt: None,
        transfer_index: None,
        report: None,
        movement: None,
        class,
        // 23:30 UTC is already the next day in Rome.
        updated_at: Utc.with_ymd_and_hms(2026, 11, 30, 23, 30, 0).unwrap(),
        acquired: Acquired::default(),
        debt_type_name: None,
    }
}

impl<'a> ReconciliationRow<'a> {
    fn with_class(self, class: &'a str) -> Self {
        ReconciliationRow { class, ..self }
    }
}

/// Reads Talend's CSV back: every field quoted, `\` escapes, `\r\n`.
fn parse(bytes: &[u8]) -> Vec<Vec<String>> {
    let text = std::str::from_utf8(bytes).expect("utf-8");
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut field = String::new();
                loop {
                    match chars.next().expect("closing quote") {
                        '\\' => field.push(chars.next().expect("escaped char")),
                        '"' => break,
                        other => field.push(other),
                    }
                }
                record.push(field);
            }
            ';' => {}
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "records end with \\r\\n");
                records.push(std::mem::take(&mut record));
            }
            other => panic!("unexpected {other:?} outside quotes"),
        }
    }
    assert!(record.is_empty(), "the last record ends with \\r\\n");
    records
}

fn export(
    version: TracciatoVersion,
    with_notifications: bool,
    rows: &[ReconciliationRow<'_>],
) -> Vec<Vec<String>> {
    let mut w = ReconciliationWriter::new(Vec::new(), version, with_notifications).expect("header");
    for r in rows {
        w.push(r).expect("row");
    }
    assert_eq!(w.rows(), rows.len() as u64);
    parse(&w.finish().expect("finish"))
}

/// The value of column `name` in record `i` (1 = first data row).
fn col<'r>(records: &'r [Vec<String>], i: usize, name: &str) -> &'r str {
    let at = records[0]
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    &records[i][at]
}

// ---------------------------------------------------------------------------------------------
// mypivot-export

#[test]
fn every_layout_has_mypivots_header() {
    let mut seen = 0;
    for line in HEADERS.lines() {
        let mut parts = line.splitn(3, ' ');
        let (v, n, header) = (parts.next(), parts.next(), parts.next());
        let version = TracciatoVersion::parse(v.expect("version")).expect("known version");
        let count: usize = n.expect("count").parse().expect("count");
        let expected: Vec<&str> = header.expect("header").split(';').collect();
        assert_eq!(expected.len(), count, "{line}");
        let with_i = expected[0..2].iter().any(|c| c.ends_with('I'));
        let layout = ExportLayout::new(version, with_i);
        assert_eq!(
            layout.columns(),
            expected,
            "{version} with I block: {with_i}"
        );
        for c in &expected {
            assert!(is_mapped(c), "column {c} of {version} is mapped");
        }
        let out = export(version, with_i, &[]);
        assert_eq!(
            out,
            vec![expected.iter().map(|c| c.to_string()).collect::<Vec<_>>()]
        );
        seen += 1;
    }
    assert_eq!(seen, 8, "1.0, 1.1, and two layouts each of 1.2, 1.3, 1.4");
    let counts: Vec<(usize, usize)> = TracciatoVersion::ALL
        .iter()
        .map(|v| (v.columns(false).len(), v.columns(true).len()))
        .collect();
    assert_eq!(
        counts,
        [(145, 145), (133, 133), (113, 134), (115, 136), (120, 141)]
    );
}

#[test]
fn all_four_blocks_fill_their_columns_in_1_4() {
    let (n, r, m) = (notification(), report(), movement());
    let full = ReconciliationRow {
        notification: Some(&n),
        receipt: Some(receipt()),
        report: Some((&r, 0)),
        movement: Some(&m),
        acquired: Acquired {
            notification: Some(Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).unwrap()),
            receipt: None,
            report: Some(Utc.with_ymd_and_hms(2026, 11, 28, 7, 0, 0).unwrap()),
            movement: Some(Utc.with_ymd_and_hms(2026, 12, 1, 9, 15, 30).unwrap()),
        },
        debt_type_name: Some("Tassa rifiuti"),
        ..row("IUD_RT_IUF_TES")
    };
    let out = export(TracciatoVersion::V1_4, true, &[full]);
    assert_eq!(out[0].len(), 141);
    let expect = [
        // I
        ("codIudI", "TARI-2026-0001"),
        ("codRpSilinviarpIdUnivocoVersamentoI", "01000000000012373"),
        ("codRpSoggPagIdUnivPagTipoIdUnivocoI", "F"),
        ("deRpSoggPagCivicoPagatoreI", ""),
        ("dtRpDatiVersDataEsecuzionePagamentoI", "2026-11-26"),
        (
            "numRpDatiVersDatiSingVersImportoSingoloVersamentoI",
            "134.07",
        ),
        ("numRpDatiVersDatiSingVersCommissioneCaricoPaI", "1.50"),
        (
            "deRpDatiVersDatiSingVersCausaleVersamentoI",
            "TARI 2026; rata \"unica\" C:\\x",
        ),
        ("codTipoDovutoI", "TARI"),
        ("dtAcquisizioneI", "2026-11-26"),
        // E: MyPay's export columns
        ("deNomeFlussoE", "2026112601"),
        ("numRigaFlussoE", ""),
        ("codIudE", "TARI-2026-0001"),
        ("codRpSilinviarpIdUnivocoVersamentoE", "01000000000012373"),
        ("codEDomIdDominioE", PADOVA),
        ("dtEDataOraMessaggioRicevutaE", "2026-11-27T00:30:05"),
        ("codEIstitAttIdUnivAttCodiceIdUnivocoE", "BCITITMM"),
        ("codESoggPagAnagraficaPagatoreE", "Mario Rossi"),
        ("numEDatiPagImportoTotalePagatoE", "150.07"),
        ("numEDatiPagDatiSingPagSingoloImportoPagatoE", "134.07"),
        (
            "dtEDatiPagDatiSingPagDataEsitoSingoloPagamentoE",
            "2026-11-27",
        ),
        (
            "codEDatiPagDatiSingPagIdUnivocoRiscossE",
            "c3a7e1f0b2d94a7f8e1c",
        ),
        (
            "deEDatiPagDatiSingPagDatiSpecificiRiscossioneE",
            "9/0101100IM/",
        ),
        ("codTipoDovutoE", "TARI"),
        // received_at 23:30:07Z is the 27th in Rome.
        ("dtAcquisizioneE", "2026-11-27"),
        ("bilancioE", ""),
        // R
        ("versioneOggettoR", "1.0"),
        ("codIdentificativoFlussoR", "2026-11-28BCITITMM-S0001"),
        ("dtDataOraFlussoR", "2026-11-28T07:00:01"),
        ("dtDataRegolamentoR", "2026-11-29"),
        ("codIstMittIdUnivMittTipoIdentificativoUnivocoR", "B"),
        ("codIstRicevIdUnivRicevCodiceIdentificativoUnivocoR", PADOVA),
        ("numNumeroTotalePagamentiR", "2"),
        ("numImportoTotalePagamentiR", "154.07"),
        ("numDatiSingPagamSingoloImportoPagatoR", "134.07"),
        ("codDatiSingPagamCodiceEsitoSingoloPagamentoR", "0"),
        ("dtAcquisizioneR", "2026-11-28"),
        // T
        ("dtDataContabileT", "2026-11-30"),
        ("dtDataValutaT", "2026-11-29"),
        ("numImportoTesoreria", "154.07"),
        ("codIdUnivocoFlussoT", "2026-11-28BCITITMM-S0001"),
        ("codIdUnivocoVersamentoT", ""),
        ("deAnnoBollettaT", "2026"),
        ("codBollettaT", "1234"),
        ("codOr1T", "Intesa Sanpaolo"),
        ("dtRicezioneT", "2026-12-01T10:15:30"),
        ("codContoTesoreria", ""),
        // tail
        ("classificazioneCompletezza", "IUD_RT_IUF_TES"),
        ("dtDataUltimoAggiornamento", "2026-12-01"),
        ("cod_tipo_dovuto_pa1", "TARI"),
        ("de_tipo_dovuto_pa1", "Tassa rifiuti"),
        ("cod_tassonomico_dovuto_pa1", "9/0101100IM/"),
        ("cod_fiscale_pa1", PADOVA),
        ("de_nome_pa1", "Comune di Padova"),
    ];
    for (name, value) in expect {
        assert_eq!(col(&out, 1, name), value, "{name}");
    }
}

#[test]
fn rows_with_some_blocks_leave_the_others_empty() {
    let (r, m) = (report(), movement());
    let rows = [
        ReconciliationRow {
            receipt: Some(receipt()),
            report: Some((&r, 0)),
            ..row("RT_IUF")
        },
        ReconciliationRow {
            receipt: Some(receipt()),
            // Transfer 2 is Feltre's.
            transfer_index: Some(2),
            ..row("RT_NO_IUF")
        },
        ReconciliationRow {
            report: Some((&r, 1)),
            ..row("IUV_NO_RT")
        },
        ReconciliationRow {
            movement: Some(&m),
            ..row("TES_NO_IUF_OR_IUV")
        },
    ];
    for with_i in [false, true] {
        let out = export(TracciatoVersion::V1_4, with_i, &rows);
        assert_eq!(out[0].len(), if with_i { 141 } else { 120 });
        assert!(out.iter().all(|r| r.len() == out[0].len()));
        if with_i {
            assert!((1..=4).all(|i| col(&out, i, "codIudI").is_empty()));
        }
        // E+R
        assert_eq!(
            col(&out, 1, "codRpSilinviarpIdUnivocoVersamentoE"),
            "01000000000012373"
        );
        assert_eq!(
            col(&out, 1, "codDatiSingPagamIdentificativoUnivocoVersamentoR"),
            "01000000000012373"
        );
        assert_eq!(col(&out, 1, "numImportoTesoreria"), "");
        assert_eq!(col(&out, 1, "classificazioneCompletezza"), "RT_IUF");
        // E only, on the transfer asked
        assert_eq!(
            col(&out, 2, "numEDatiPagDatiSingPagSingoloImportoPagatoE"),
            "16.00"
        );
        assert_eq!(
            col(&out, 2, "deEDatiPagDatiSingPagCausaleVersamentoE"),
            "Diritti di segreteria"
        );
        assert_eq!(col(&out, 2, "codIdentificativoFlussoR"), "");
        // R only
        assert_eq!(col(&out, 3, "codEIdMessaggioRicevutaE"), "");
        assert_eq!(col(&out, 3, "cod_fiscale_pa1"), "");
        assert_eq!(
            col(&out, 3, "codDatiSingPagamIdentificativoUnivocoRiscossioneR"),
            "IUR-2"
        );
        assert_eq!(
            col(&out, 3, "codDatiSingPagamCodiceEsitoSingoloPagamentoR"),
            "9"
        );
        assert_eq!(col(&out, 3, "dtAcquisizioneR"), "");
        // T only
        assert_eq!(col(&out, 4, "deCausaleT"), movement().causale);
        assert_eq!(col(&out, 4, "codIdentificativoFlussoR"), "");
        assert_eq!(col(&out, 4, "codIudE"), "");
        assert_eq!(col(&out, 4, "dtDataUltimoAggiornamento"), "2026-12-01");
    }
}

#[test]
fn quotes_semicolons_and_backslashes_are_escaped_as_talend_does() {
    let n = notification();
    let mut w =
        ReconciliationWriter::new(Vec::new(), TracciatoVersion::V1_4, true).expect("header");
    w.push(&ReconciliationRow {
        notification: Some(&n),
        ..row("IUD_NO_RT")
    })
    .expect("row");
    let bytes = w.finish().expect("finish");
    let text = String::from_utf8(bytes).expect("utf-8");
    assert!(text.starts_with("\"codIudI\";\"codRpSilinviarpIdUnivocoVersamentoI\";"));
    assert!(
        text.contains(r#";"TARI 2026; rata \"unica\" C:\\x";"#),
        "{text}"
    );
    assert!(text.ends_with("\"IUD_NO_RT\";\"2026-12-01\";\"\";\"\";\"\";\"\";\"\"\r\n"));
    assert_eq!(text.matches("\r\n").count(), 2);
}

#[test]
fn earlier_versions_write_their_own_blocks() {
    let (n, m) = (notification(), movement());
    let full = ReconciliationRow {
        notification: Some(&n),
        receipt: Some(receipt()),
        movement: Some(&m),
        ..row("IUD_RT_IUF_TES")
    };
    let out = export(TracciatoVersion::V1_0, false, &[full]);
    assert_eq!(out[1].len(), 145);
    assert_eq!(col(&out, 1, "mygovManageFlussoIdI"), "");
    assert_eq!(col(&out, 1, "codIudI"), "TARI-2026-0001");
    assert_eq!(col(&out, 1, "codIudE"), "TARI-2026-0001");
    assert_eq!(col(&out, 1, "codOr1T"), "Intesa Sanpaolo");
    assert_eq!(col(&out, 1, "codBi2T"), "");
    let out = export(
        TracciatoVersion::V1_2,
        false,
        &[ReconciliationRow {
            notification: None,
            ..full
        }
        .with_class("RT_TES")],
    );
    assert_eq!(out[1].len(), 113);
    assert_eq!(col(&out, 1, "deAnnoBollettaT"), "2026");
}

#[test]
fn classes_are_checked_against_the_version() {
    let m = movement();
    let mut w =
        ReconciliationWriter::new(Vec::new(), TracciatoVersion::V1_1, true).expect("header");
    let doppi = ReconciliationRow {
        movement: Some(&m),
        ..row(DOPPI)
    };
    let e = w.push(&doppi).unwrap_err();
    assert_eq!(
        e.to_string(),
        "class DOPPI cannot be exported in tracciato 1.1"
    );
    let e = w
        .push(&ReconciliationRow {
            class: "RT_FOO",
            ..doppi
        })
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("unknown classificazioneCompletezza \"RT_FOO\""),
        "{e}"
    );
    let e = w.push(&row("RT_IUF")).unwrap_err();
    assert!(matches!(e, MypivotExportError::EmptyRow), "{e}");
    let r = report();
    let e = w
        .push(&ReconciliationRow {
            report: Some((&r, 2)),
            ..row("IUV_NO_RT")
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "flow 2026-11-28BCITITMM-S0001: row 2 asked, the flow has 2 rows"
    );
    assert_eq!(w.rows(), 0, "refused rows write nothing");
    for v in [TracciatoVersion::V1_0, TracciatoVersion::V1_4] {
        assert!(v.check_class(DOPPI, false).is_ok());
    }
    assert!(TracciatoVersion::V1_2
        .check_class("IUD_NO_RT", false)
        .is_err());
    assert!(TracciatoVersion::V1_2
        .check_class("IUD_NO_RT", true)
        .is_ok());
    assert!(TracciatoVersion::V1_3
        .check_class("IUD_NO_RT", false)
        .is_ok());
    assert_eq!(MAX_ROWS, 100_000);
}

#[test]
fn the_export_is_named_as_mypivot_names_it() {
    let at = day(2026, 12, 1).and_hms_opt(9, 5, 7).expect("time");
    assert_eq!(
        file_stem(TracciatoVersion::V1_4, "c_g224", "42", at),
        "c_g224-42_ESTRAZIONE_RICONCILIAZIONE_20261201090507-1_4"
    );
    assert_eq!(
        TracciatoVersion::parse("1_3").expect("1_3"),
        TracciatoVersion::V1_3
    );
    assert!(TracciatoVersion::parse("1.5").is_err());
}

// ---------------------------------------------------------------------------------------------
// mypivot-import-pagati

const HEADER: &str = "IUD;codIuv;tipoIdentificativoUnivoco;codiceIdentificativoUnivoco;anagraficaPagatore;indirizzoPagatore;civicoPagatore;capPagatore;localitaPagatore;provinciaPagatore;nazionePagatore;mailPagatore;dataEsecuzionePagamento;importoDovutoPagato;commissioneCaricoPa;tipoDovuto;tipoVersamento;causaleVersamento;datiSpecificiRiscossione;bilancio";

/// A good row with `iud`; `edit` replaces columns (index, value).
fn csv_row(iud: &str, edit: &[(usize, &str)]) -> String {
    let mut v: Vec<String> = [
        iud,
        "01000000000012373",
        "F",
        "RSSMRA85T10A562S",
        "Mario Rossi",
        "Via Roma",
        "",
        "35100",
        "Padova",
        "PD",
        "IT",
        "",
        "2026-11-26",
        "134.07",
        "",
        "TARI",
        "PO",
        "\"TARI 2026; rata \"\"unica\"\"\"",
        "9/0101100IM/",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (i, s) in edit {
        v[*i] = s.to_string();
    }
    v.join(";")
}

fn file(rows: &[String]) -> Vec<u8> {
    let mut s = String::from(HEADER);
    for r in rows {
        s.push_str("\r\n");
        s.push_str(r);
    }
    s.push('\n');
    s.into_bytes()
}

fn row_errors(bytes: &[u8]) -> Vec<String> {
    match decode_csv(bytes) {
        Err(ImportPagatiError::Rows { errors, complete }) => {
            assert!(complete);
            errors.iter().map(ToString::to_string).collect()
        }
        other => panic!("expected row errors, got {other:?}"),
    }
}

#[test]
fn a_good_file_decodes_from_csv_and_from_zip() {
    let bytes = file(&[
        csv_row("A1", &[]),
        String::new(),
        csv_row(
            " A2 ",
            &[
                (1, "RF34000000000000000000042"),
                (2, "G"),
                (14, "0.50"),
                (19, "<bilancio/>"),
                (13, "1"),
            ],
        ),
    ]);
    let got = decode_csv(&bytes[..]).expect("decodes");
    assert_eq!(got.len(), 2);
    let a = &got[0];
    assert_eq!(a.iud, "A1");
    assert_eq!(a.iuv.as_str(), "01000000000012373");
    assert_eq!(a.payer.kind, 'F');
    assert_eq!(a.payer.civic, None);
    assert_eq!(a.payer.postal_code.as_deref(), Some("35100"));
    assert_eq!(a.execution_date, day(2026, 11, 26));
    assert_eq!(a.amount, Amount::from_cents(13407));
    assert_eq!(a.commission, None);
    assert_eq!(a.causale, "TARI 2026; rata \"unica\"");
    assert_eq!(a.bilancio, None);
    let b = &got[1];
    assert_eq!(b.iud, "A2", "values are trimmed");
    assert_eq!(b.iuv.as_str(), "RF34000000000000000000042");
    assert_eq!(b.amount, Amount::from_cents(100));
    assert_eq!(b.commission, Some(Amount::from_cents(50)));
    assert_eq!(b.bilancio.as_deref(), Some("<bilancio/>"));

    let stem = "c_g224-IMP2026-1_0";
    assert_eq!(
        check_file_name(&format!("{stem}.zip")).expect("name").iuf,
        "IMP2026"
    );
    let mut zip = Cursor::new(Vec::new());
    zip = zip_single_file_at(
        zip,
        &format!("{stem}.csv"),
        &bytes[..],
        day(2026, 1, 1).and_hms_opt(0, 0, 0).unwrap(),
    )
    .expect("zip");
    let from_zip = decode_zip(Cursor::new(zip.into_inner()), stem, 1 << 20).expect("zip decodes");
    assert_eq!(from_zip, got);
    assert!(matches!(
        decode_zip(Cursor::new(b"not a zip".to_vec()), stem, 1 << 20),
        Err(ImportPagatiError::Zip(_))
    ));
}

#[test]
fn only_version_1_0_is_accepted_in_the_name() {
    let e = check_file_name("c_g224-IMP2026-1_1.zip").unwrap_err();
    assert!(e.to_string().contains("unknown version \"1_1\""), "{e}");
    assert!(check_file_name("c_g224-IMP2026.zip").is_err());
}

#[test]
fn each_broken_rule_is_named_with_line_and_column() {
    let rows = [
        csv_row("B1", &[(13, "12,3x")]),
        csv_row("B2", &[(13, "-5.00")]),
        csv_row("B3", &[(13, "1.005")]),
        csv_row("B4", &[(13, "0")]),
        csv_row("B5", &[(12, "26/11/2026")]),
        csv_row("B6", &[(1, "123")]),
        csv_row("B7", &[(2, "X")]),
        csv_row("", &[]),
        csv_row(&"X".repeat(36), &[]),
        csv_row("B10", &[(9, "PDX")]),
        csv_row("B11", &[(14, "1e3")]),
        csv_row("B12", &[(17, "")]),
        "B13;only;three".to_owned(),
        csv_row("A1", &[]),
        csv_row("A1", &[]),
        csv_row("B16", &[(13, "1.5"), (15, "")]),
    ];
    let errors = row_errors(&file(&rows));
    let expected = [
        "line 2, importoDovutoPagato \"12,3x\": amount must use '.' as decimal separator, found ','",
        "line 3, importoDovutoPagato \"-5.00\": amount must not have a sign, found '-'",
        "line 4, importoDovutoPagato \"1.005\": amount must have at most 2 decimal places (cents)",
        "line 5, importoDovutoPagato \"0\": amount must be greater than 0",
        "line 6, dataEsecuzionePagamento \"26/11/2026\": not a date yyyy-MM-dd",
        "line 7, codIuv \"123\": not a pagoPA IUV: ",
        "line 8, tipoIdentificativoUnivoco \"X\": must be F or G",
        "line 9, IUD \"\": is required",
        "line 10, IUD \"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\": longer than 35 characters (36)",
        "line 11, provinciaPagatore \"PDX\": longer than 2 characters (3)",
        "line 12, commissioneCaricoPa \"1e3\": amount must not use exponent notation, found 'e'",
        "line 13, causaleVersamento \"\": is required",
        "line 14: 20 columns expected, found 3",
        "line 16, IUD \"A1\": the IUD is already on line 15",
        "line 17, tipoDovuto \"\": is required",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (got, want) in errors.iter().zip(expected) {
        assert!(got.starts_with(want), "{got:?} should start with {want:?}");
    }
    // One error lists them all, one per line.
    let e = decode_csv(&file(&rows)[..]).unwrap_err().to_string();
    assert!(
        e.starts_with("15 errors\nline 2, importoDovutoPagato"),
        "{e}"
    );
}

#[test]
fn a_file_with_many_bad_rows_stops_at_the_limit() {
    let rows: Vec<String> = (0..150)
        .map(|i| csv_row(&format!("C{i}"), &[(2, "X")]))
        .collect();
    match decode_csv(&file(&rows)[..]) {
        Err(ImportPagatiError::Rows { errors, complete }) => {
            assert!(!complete);
            assert_eq!(errors.len(), MAX_ERRORS);
            assert_eq!(errors[99].line, 101);
        }
        other => panic!("expected row errors, got {other:?}"),
    }
}

#[test]
fn only_utf8_is_read_and_an_empty_file_is_refused() {
    // MyPivot reads the file as UTF-8 only: ISO-8859-1 "à" is refused, naming the line.
    let mut bytes = file(&[csv_row("D1", &[]), csv_row("D2", &[(4, "Nicol\u{e0}")])]);
    let at = bytes
        .windows(2)
        .position(|w| w == "à".as_bytes())
        .expect("à");
    bytes.splice(at..at + 2, [0xE0]);
    match decode_csv(&bytes[..]) {
        Err(ImportPagatiError::Csv(e @ CsvError::InvalidUtf8 { .. })) => {
            assert_eq!(e.line(), Some(3))
        }
        other => panic!("expected invalid UTF-8, got {other:?}"),
    }
    let utf8 = file(&[csv_row("D2", &[(4, "Nicol\u{e0}")])]);
    assert_eq!(
        decode_csv(&utf8[..]).expect("utf-8")[0].payer.name,
        "Nicolà"
    );
    assert!(matches!(
        decode_csv(HEADER.as_bytes()),
        Err(ImportPagatiError::Empty)
    ));
    assert!(matches!(
        decode_csv(&b""[..]),
        Err(ImportPagatiError::Empty)
    ));
    assert_eq!(COLUMNS.len(), 20);
    let mut unterminated = file(&[csv_row("D3", &[])]);
    unterminated.write_all(b"D4;\"open").expect("append");
    let errors = row_errors(&unterminated);
    assert!(errors[0].starts_with("line 3: "), "{errors:?}");
}
