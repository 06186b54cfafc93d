//! The official OPI samples and hand-written fixtures (`adapters/tests/data/treasury/`), each
//! OPI document also checked against its XSD with xmllint, so that what the reader accepts and
//! refuses is tied to the schema.

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::NaiveDate;
use snodo_core::settlement::Iuf;
use snodo_core::treasury::{CausaleRef, MovementOperation, TreasuryMovement};
use snodo_core::Amount;

use super::giornale_csv::GiornaleReader;
use super::opi::{parse_opi, OpiCounts, OpiError, OpiReader, OpiVersion};
use super::poste_csv::PosteReader;
use super::{read_csv, specs, CsvLayout, TreasuryCsvError, TreasuryCsvReader};
use crate::text_encoding::Encoding;

const OPI_1_4: &[u8] = include_bytes!("../../tests/data/treasury/opi_1_4.xml");
const OPI_1_8: &[u8] = include_bytes!("../../tests/data/treasury/opi_1_8.xml");
const GIORNALE: &[u8] = include_bytes!("../../tests/data/treasury/giornale.csv");
const POSTE: &[u8] = include_bytes!("../../tests/data/treasury/poste.csv");

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn iuf(s: &str) -> CausaleRef {
    CausaleRef::Iuf(Iuf::parse(s).unwrap())
}

fn sample(version: &str) -> PathBuf {
    Path::new(specs::OPI_SAMPLES).join(format!("OPI_GIORNALE_DI_CASSA_V_{version}.VALID.xml"))
}

/// xmllint's verdict on one document: `Ok` when it validates, else its report.
fn xmllint(xsd: &str, doc: &[u8]) -> Result<(), String> {
    match Command::new("xmllint").arg("--version").output() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("xmllint is not installed (ops/setup.sh installs libxml2-utils)")
        }
        Err(e) => panic!("cannot run xmllint: {e}"),
        Ok(_) => {}
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("doc.xml");
    std::fs::write(&file, doc).expect("write");
    let out = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema", xsd])
        .arg(&file)
        .output()
        .expect("run xmllint");
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!report.contains("failed to compile"), "{report}");
    if out.status.success() && report.contains("validates") {
        Ok(())
    } else {
        Err(report)
    }
}

fn replace(doc: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(doc).unwrap();
    assert!(text.contains(from), "the fixture holds {from:?}");
    text.replacen(from, to, 1).into_bytes()
}

// ---------------------------------------------------------------------------------------------
// OPI

/// Every official sample validates against its version's XSD and gives its two incoming
/// movements (the two USCITA MANDATO are skipped), whatever the version.
#[test]
fn the_official_samples_validate_and_parse() {
    let cases = [
        ("1_4", specs::OPI_1_4_XSD, OpiVersion::V1_4),
        ("1_6_1", specs::OPI_1_6_1_XSD, OpiVersion::V1_6_1To1_8),
        ("1_7_1", specs::OPI_1_7_1_XSD, OpiVersion::V1_6_1To1_8),
        ("1_8", specs::OPI_1_8_XSD, OpiVersion::V1_6_1To1_8),
    ];
    for (version, xsd, expected_version) in cases {
        let doc = std::fs::read(sample(version)).unwrap();
        xmllint(xsd, &doc).unwrap_or_else(|r| panic!("{version}: {r}"));
        let (header, movements, counts) =
            parse_opi(&doc).unwrap_or_else(|e| panic!("{version}: {e}"));
        assert_eq!(header.version, expected_version, "{version}");
        assert_eq!(header.entity_fiscal_code, "06144260707");
        assert_eq!(header.entity_code, "ABC1DE");
        assert_eq!(header.abi_bt, "03069");
        assert_eq!(header.flow_id, "GDC-202209302022202209291010285#001#001");
        assert_eq!((header.page, header.total_pages), (Some(1), Some(2)));
        assert_eq!(header.year, 2022);
        if expected_version == OpiVersion::V1_4 {
            assert_eq!(header.period, Some((day(2022, 1, 1), day(2022, 12, 31))));
            assert_eq!(header.reference_date, None);
        } else {
            assert_eq!(header.reference_date, Some(day(2022, 9, 29)));
            assert_eq!(header.period, None);
        }
        assert_eq!(
            counts,
            OpiCounts {
                movements: 4,
                kept: 2,
                not_incoming: 2,
                other_operation: 0
            },
            "{version}"
        );
        let expected = |bill: &str, cents: i64, payer: &str, causale: &str| TreasuryMovement {
            year: 2022,
            bill: bill.into(),
            amount: Amount::from_cents(cents),
            accounting_date: Some(day(2022, 9, 29)),
            value_date: Some(day(2022, 9, 29)),
            causale: causale.into(),
            payer: Some(payer.into()),
            end_to_end_id: None,
            reference: CausaleRef::None,
            operation: MovementOperation::Executed,
        };
        assert_eq!(
            movements,
            vec![
                expected(
                    "74056",
                    501_587,
                    "TEST 3",
                    "MUTUO 620184257 CUP H94G19030460029 TRXID: 0122492727202545 VIA MILANO 4"
                ),
                expected(
                    "74060",
                    427_620,
                    "TEST 5",
                    "MUTUO 636278330 CUP H92H19401690074 TRXID: 0122092627273243 VIA MILANO 4"
                ),
            ],
            "{version}"
        );
    }
}

/// A sample checked against another version's XSD fails where the versions differ: the XSDs
/// really tell them apart, and the reader takes each.
#[test]
fn the_versions_differ_in_their_header() {
    let doc = std::fs::read(sample("1_4")).unwrap();
    assert!(xmllint(specs::OPI_1_8_XSD, &doc).is_err());
    let doc = std::fs::read(sample("1_8")).unwrap();
    assert!(xmllint(specs::OPI_1_4_XSD, &doc).is_err());
}

#[test]
fn an_opi_1_8_file_gives_its_incoming_movements() {
    xmllint(specs::OPI_1_8_XSD, OPI_1_8).unwrap();
    // SEPA INSTANT CREDIT TRANSFER is new in 1.8.
    assert!(xmllint(specs::OPI_1_7_1_XSD, OPI_1_8).is_err());
    let (header, movements, counts) = parse_opi(OPI_1_8).unwrap();
    assert_eq!(header.version, OpiVersion::V1_6_1To1_8);
    assert_eq!(header.entity_fiscal_code, "00644060287");
    assert_eq!(header.reference_date, Some(day(2026, 11, 25)));
    assert_eq!(
        counts,
        OpiCounts {
            movements: 7,
            kept: 4,
            not_incoming: 2,
            other_operation: 1
        }
    );
    let bills: Vec<&str> = movements.iter().map(|m| m.bill.as_str()).collect();
    assert_eq!(bills, ["1201", "1202", "1190", "1204"]);
    assert_eq!(
        movements[0],
        TreasuryMovement {
            year: 2026,
            bill: "1201".into(),
            amount: Amount::from_cents(123_450),
            accounting_date: Some(day(2026, 11, 25)),
            value_date: Some(day(2026, 11, 26)),
            causale: "/PUR/LGPE-RIVERSAMENTO/TXT/0/URI/2026-11-24ABI03069-S0001".into(),
            payer: Some("BANCA PROVA S.P.A. SERVIZIO PAGOPA".into()),
            end_to_end_id: Some("E2E-2026-11-25-0001".into()),
            reference: iuf("2026-11-24ABI03069-S0001"),
            operation: MovementOperation::Executed,
        }
    );
    // No data_valuta_ente: the value date is data_movimento. A bank-mangled causale.
    let m = &movements[1];
    assert_eq!(m.amount, Amount::from_cents(1));
    assert_eq!(m.value_date, Some(day(2026, 11, 25)));
    assert_eq!(m.reference, iuf("2026-11-24PSPTEST-0001"));
    assert_eq!(m.end_to_end_id, None);
    // STORNATO removes bill 1190; a legacy per-payment causale names an IUV.
    let m = &movements[2];
    assert_eq!(m.operation, MovementOperation::Reversed);
    assert_eq!(m.value_date, Some(day(2026, 11, 20)));
    assert_eq!(m.reference, CausaleRef::Iuv("01000000000012373".into()));
    // The second account; entities, CDATA and character references in the text.
    let m = &movements[3];
    assert_eq!(m.amount, Amount::from_cents(25_000));
    assert_eq!(m.payer.as_deref(), Some("Rossi & Figli S.r.l."));
    assert_eq!(m.causale, "Rimborso spese <nessun IUF> € 250");
    assert_eq!(m.reference, CausaleRef::None);
    for m in &movements {
        assert_eq!(m.validate(), Ok(()));
    }
}

#[test]
fn an_opi_1_4_file_with_the_signature_first() {
    xmllint(specs::OPI_1_4_XSD, OPI_1_4).unwrap();
    let (header, movements, counts) = parse_opi(OPI_1_4).unwrap();
    assert_eq!(header.version, OpiVersion::V1_4);
    assert_eq!(header.flow_id, "GDC-20190302-0001");
    assert_eq!((header.page, header.total_pages), (None, None));
    assert_eq!(header.period, Some((day(2019, 3, 1), day(2019, 3, 1))));
    assert_eq!(
        counts,
        OpiCounts {
            movements: 3,
            kept: 2,
            not_incoming: 1,
            other_operation: 0
        },
        "the element inside ds:Object is not a movement"
    );
    assert_eq!(
        movements,
        vec![
            TreasuryMovement {
                year: 2019,
                bill: "310".into(),
                amount: Amount::from_cents(382_040),
                accounting_date: Some(day(2019, 3, 1)),
                value_date: Some(day(2019, 3, 1)),
                causale: "/PUR/LGPE-RIVERSAMENTO/URI/2019-02-28BPPIITRRXXX-0000381027".into(),
                payer: Some("POSTE ITALIANE SPA".into()),
                end_to_end_id: None,
                reference: iuf("2019-02-28BPPIITRRXXX-0000381027"),
                operation: MovementOperation::Executed,
            },
            TreasuryMovement {
                year: 2019,
                bill: "290".into(),
                amount: Amount::from_cents(1200),
                accounting_date: Some(day(2019, 3, 1)),
                value_date: Some(day(2019, 2, 27)),
                causale: "/PUR/LGPE-RIVERSAMENTO/URI/10c4f341267947eca9f8f6a7a567a414".into(),
                payer: Some("BANCA".into()),
                end_to_end_id: Some("NOTPROVIDED".into()),
                reference: iuf("10c4f341267947eca9f8f6a7a567a414"),
                operation: MovementOperation::Reversed,
            },
        ]
    );
}

/// The reader hands out one movement at a time and reads the file only as far as it needs.
#[test]
fn movements_stream_one_at_a_time() {
    let mut reader = OpiReader::new(OPI_1_8).unwrap();
    assert_eq!(reader.header().year, 2026);
    assert_eq!(reader.counts().movements, 0, "the header only");
    let first = reader.next_movement().unwrap().unwrap();
    assert_eq!(first.bill, "1201");
    assert_eq!(reader.counts().movements, 1);
    let rest: Vec<_> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(rest.len(), 3);
    assert_eq!(reader.next_movement().unwrap(), None);
}

fn opi_error(doc: &[u8]) -> OpiError {
    match parse_opi(doc) {
        Err(e) => e,
        Ok(_) => panic!("accepted:\n{}", String::from_utf8_lossy(doc)),
    }
}

const MOV1: &str =
    "flusso_giornale_di_cassa/informazioni_conto_evidenza[1]/movimento_conto_evidenza[1]";
const MOV3: &str =
    "flusso_giornale_di_cassa/informazioni_conto_evidenza[1]/movimento_conto_evidenza[3]";

/// A bad amount is refused by the XSD and by the reader, naming the movement and the rule.
#[test]
fn bad_amounts_are_refused_naming_the_movement() {
    let cases = [
        ("1234,50", "importo \"1234,50\" is not an amount: digits with an optional sign and '.' as the decimal mark (no thousands separators)"),
        ("1234.505", "importo \"1234.505\" is not an amount: at most 2 decimals (cents)"),
        ("dodici", "importo \"dodici\" is not an amount: digits with an optional sign and '.' as the decimal mark (no thousands separators)"),
        ("", "importo is required"),
    ];
    for (amount, rule) in cases {
        let doc = replace(
            OPI_1_8,
            "<importo>1234.50</importo>",
            &format!("<importo>{amount}</importo>"),
        );
        assert!(xmllint(specs::OPI_1_8_XSD, &doc).is_err(), "{amount}");
        assert_eq!(
            opi_error(&doc).to_string(),
            format!("movement 1 (bill 1201) at {MOV1}/importo: {rule}")
        );
    }
    // The same rule for a skipped movement: the file is refused whole.
    let doc = replace(
        OPI_1_8,
        "<importo>7853.35</importo>",
        "<importo>7853.3.5</importo>",
    );
    assert!(matches!(
        opi_error(&doc),
        OpiError::Movement { number: 2, ref bill, .. } if bill.as_deref() == Some("500")
    ));
}

/// The XSD lets a movement go without its bill number; an incoming one cannot, since the bill
/// is its key. A skipped one may.
#[test]
fn a_missing_bill_is_refused_for_an_incoming_movement() {
    let doc = replace(
        OPI_1_8,
        "<numero_bolletta_quietanza>0001202</numero_bolletta_quietanza>",
        "",
    );
    xmllint(specs::OPI_1_8_XSD, &doc).unwrap();
    assert_eq!(
        opi_error(&doc).to_string(),
        format!(
            "movement 3 (no bill number) at {MOV3}/numero_bolletta_quietanza: missing: an \
             incoming movement (SOSPESO ENTRATA) is keyed by its bill number"
        )
    );
    let doc = replace(
        OPI_1_8,
        "<numero_bolletta_quietanza>0000500</numero_bolletta_quietanza>",
        "",
    );
    assert_eq!(parse_opi(&doc).unwrap().1.len(), 4);
}

#[test]
fn broken_movements_name_the_element_and_the_rule() {
    let cases: [(&str, &str, &str); 7] = [
        (
            "<tipo_operazione>ESEGUITO</tipo_operazione>",
            "<tipo_operazione>FATTO</tipo_operazione>",
            "tipo_operazione: \"FATTO\" is not one of ESEGUITO, STORNATO, REGOLARIZZATO, RIPRISTINATO",
        ),
        (
            "<tipo_movimento>ENTRATA</tipo_movimento>",
            "",
            "tipo_movimento: missing",
        ),
        (
            "<data_movimento>2026-11-25</data_movimento>",
            "<data_movimento>25/11/2026</data_movimento>",
            "data_movimento: data_movimento \"25/11/2026\" is not a date (yyyy-mm-dd)",
        ),
        (
            "<data_valuta_ente>2026-11-26</data_valuta_ente>",
            "<data_valuta_ente>2026-02-30</data_valuta_ente>",
            "data_valuta_ente: data_valuta_ente \"2026-02-30\" is not a date (yyyy-mm-dd)",
        ),
        (
            "<numero_bolletta_quietanza>0001201</numero_bolletta_quietanza>",
            "<numero_bolletta_quietanza>12A</numero_bolletta_quietanza>",
            "numero_bolletta_quietanza: numero_bolletta_quietanza \"12A\" is not a whole number (digits only, at most 18)",
        ),
        (
            "<importo>1234.50</importo>",
            "<importo>1234.50</importo><importo>1.00</importo>",
            "importo: appears twice",
        ),
        (
            "<end_to_end_id>E2E-2026-11-25-0001</end_to_end_id>",
            "<end_to_end_id><x>1</x></end_to_end_id>",
            "end_to_end_id: expected text, found child elements",
        ),
    ];
    for (from, to, tail) in cases {
        let doc = replace(OPI_1_8, from, to);
        let msg = opi_error(&doc).to_string();
        assert!(
            msg.starts_with("movement 1 (") && msg.ends_with(&format!("{MOV1}/{tail}")),
            "{to}: {msg}"
        );
    }
    let doc = replace(
        OPI_1_8,
        "/PUR/LGPE-RIVERSAMENTO/TXT/0/URI/2026-11-24ABI03069-S0001</causale>",
        "</causale>",
    );
    // An empty causale is a causale (no reference); a missing one is not.
    assert_eq!(parse_opi(&doc).unwrap().1[0].reference, CausaleRef::None);
    let doc = replace(
        OPI_1_8,
        "<causale>/PUR/LGPE-RIVERSAMENTO/TXT/0/URI/2026-11-24ABI03069-S0001</causale>",
        "",
    );
    assert!(opi_error(&doc).to_string().ends_with("causale: missing"));
}

#[test]
fn bad_files_are_refused_with_the_rule() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "not well-formed XML: no root element"),
        (b"<a/>".to_vec(), "/: expected flusso_giornale_di_cassa, found <a>"),
        (
            b"<flusso_giornale_di_cassa xmlns=\"urn:x\"/>".to_vec(),
            "/: expected flusso_giornale_di_cassa without a namespace",
        ),
        (
            replace(OPI_1_8, "encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\""),
            "not well-formed XML: the declared encoding is \"ISO-8859-1\"; an OPI file must be UTF-8",
        ),
        (
            replace(OPI_1_8, "<esercizio>2026</esercizio>", "<esercizio>26</esercizio>"),
            "flusso_giornale_di_cassa/esercizio: esercizio must be a year of 4 digits from 1999 to 2099, got \"26\"",
        ),
        (
            replace(
                OPI_1_8,
                "<codice_fiscale_ente>00644060287</codice_fiscale_ente>",
                "",
            ),
            "flusso_giornale_di_cassa/testata_messaggio/codice_fiscale_ente: missing",
        ),
        (
            replace(OPI_1_8, "#001#001<", "#1#1<"),
            "flusso_giornale_di_cassa/identificativo_flusso_BT: \"GDC-202611262026202611251010285#1#1\" does not match GDC-<8 digits><10 to 50 letters or digits>#<3 digits>#<3 digits>",
        ),
        (
            replace(OPI_1_8, "<pagina>1</pagina>", "<pagina>0</pagina>"),
            "flusso_giornale_di_cassa/pagina: \"0\" is not a number from 1 to 9999999",
        ),
        (
            replace(
                OPI_1_8,
                "<data_riferimento_GdC>2026-11-25</data_riferimento_GdC>",
                "",
            ),
            "flusso_giornale_di_cassa/data_riferimento_GdC: missing: OPI 1.6.1 to 1.8 have data_riferimento_GdC, OPI 1.4 data_inizio_periodo_riferimento",
        ),
        (
            b"<flusso_giornale_di_cassa><esercizio>2026</esercizio></flusso_giornale_di_cassa>"
                .to_vec(),
            "flusso_giornale_di_cassa: no informazioni_conto_evidenza: the file holds no account",
        ),
        (
            [OPI_1_8, b"<flusso_giornale_di_cassa/>"].concat(),
            "/: <flusso_giornale_di_cassa> after the root element",
        ),
        (
            replace(OPI_1_8, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e \"e\">]>"),
            "not well-formed XML: a DTD is not accepted",
        ),
        (
            replace(OPI_1_8, "Rossi &amp; Figli", "Rossi &#1; Figli"),
            "character U+0001 is not allowed in XML",
        ),
        (
            replace(OPI_1_8, "Rossi &amp; Figli", "Rossi &nbsp; Figli"),
            "not well-formed XML: unknown entity &nbsp;",
        ),
        (
            OPI_1_8[..OPI_1_8.len() - 40].to_vec(),
            "not well-formed XML",
        ),
    ];
    for (doc, expected) in cases {
        let msg = opi_error(&doc).to_string();
        assert!(msg.contains(expected), "expected {expected:?}, got {msg:?}");
    }
}

#[test]
fn invalid_utf8_in_a_value_is_refused() {
    let mut doc = OPI_1_8.to_vec();
    let at = doc.windows(5).position(|w| w == b"Rossi").unwrap();
    doc[at] = 0xE9;
    assert!(matches!(opi_error(&doc), OpiError::NotXml(_)));
}

// ---------------------------------------------------------------------------------------------
// treasury-csv

fn all(reader: TreasuryCsvReader<'_>) -> Result<Vec<TreasuryMovement>, TreasuryCsvError> {
    reader.collect()
}

#[test]
fn mypivot_giornale_di_cassa_csv() {
    let reader = read_csv(GIORNALE, None).unwrap();
    assert_eq!(reader.layout(), CsvLayout::GiornaleDiCassa);
    assert_eq!(reader.iban(), None);
    let movements = all(reader).unwrap();
    assert_eq!(movements.len(), 4);
    assert_eq!(
        movements[0],
        TreasuryMovement {
            year: 2026,
            bill: "0001201".into(),
            amount: Amount::from_cents(123_450),
            accounting_date: Some(day(2026, 11, 25)),
            value_date: Some(day(2026, 11, 26)),
            causale: "/PUR/LGPE-RIVERSAMENTO/TXT/0/URI/2026-11-24ABI03069-S0001".into(),
            payer: Some("BANCA PROVA S.P.A. SERVIZIO PAGOPA".into()),
            end_to_end_id: None,
            reference: iuf("2026-11-24ABI03069-S0001"),
            operation: MovementOperation::Executed,
        }
    );
    // Quotes, a ';' inside them, spaces around a date, accents.
    let m = &movements[1];
    assert_eq!(m.payer.as_deref(), Some("Società Cooperativa \"La Fiera\""));
    assert_eq!(
        m.causale,
        "BONIFICO RFB 01000000000012373 120.50 TARI; rata 1"
    );
    assert_eq!(m.reference, CausaleRef::Iuv("01000000000012373".into()));
    assert_eq!(m.amount, Amount::from_cents(12_050));
    assert_eq!(m.accounting_date, Some(day(2026, 11, 25)));
    // A line break inside a quoted causale; no payer.
    let m = &movements[2];
    assert_eq!((m.bill.as_str(), m.payer.as_deref()), ("1203", None));
    assert_eq!(m.causale, "Rimborso\nspese");
    assert_eq!(m.reference, CausaleRef::None);
    // After a blank line; an extra column is ignored.
    let m = &movements[3];
    assert_eq!(m.bill, "B-77");
    assert_eq!(m.reference, iuf("2026-11-24PSPTEST-0001"));
    assert_eq!(m.amount, Amount::from_cents(25_000));
}

fn giornale_error(csv: &str) -> String {
    let input = format!("header\n{csv}");
    let mut reader = GiornaleReader::new(input.as_bytes()).unwrap();
    loop {
        match reader.next_movement() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("accepted: {csv}"),
            Err(e) => return e.to_string(),
        }
    }
}

#[test]
fn giornale_rows_that_break_a_rule_name_line_and_column() {
    let ok = "2026;1;2026-11-25;x;c;1.00;2026-11-25";
    let cases = [
        ("26;1;2026-11-25;x;c;1.00;2026-11-25", "line 2, column 1: anno bolletta must be a year of 4 digits from 1999 to 2099, got \"26\""),
        ("2026;12345678;2026-11-25;x;c;1.00;2026-11-25", "line 2, column 2: cod bolletta must be 1 to 7 characters, got 8"),
        ("2026;;2026-11-25;x;c;1.00;2026-11-25", "line 2, column 2: cod bolletta must be 1 to 7 characters, got 0"),
        ("2026;1;25/11/2026;x;c;1.00;2026-11-25", "line 2, column 3: dt contabile \"25/11/2026\" is not a date (yyyy-mm-dd)"),
        ("2026;1;2026-11-25;x;c;1,00;2026-11-25", "line 2, column 6: importo \"1,00\" is not an amount: digits with an optional sign and '.' as the decimal mark (no thousands separators)"),
        ("2026;1;2026-11-25;x;c;1.001;2026-11-25", "line 2, column 6: importo \"1.001\" is not an amount: at most 2 decimals (cents)"),
        ("2026;1;2026-11-25;x;c;1.00;", "line 2, column 7: dt valuta is required"),
        ("2026;1;2026-11-25;x;c;1.00", "line 2: 7 columns expected (anno bolletta;cod bolletta;dt contabile;denominazione;causale;importo;dt valuta), found 6"),
        ("2026;1;2026-11-25;x;\"c;1.00;2026-11-25", "line 2: Unterminated quoted field"),
    ];
    for (row, expected) in cases {
        let msg = giornale_error(row);
        assert!(msg.starts_with(expected), "{row}: {msg}");
    }
    // The error names the line where the row is, after good rows.
    assert!(
        giornale_error(&format!("{ok}\n\n{ok}\n2026;1;x;x;c;1;2026-11-25"))
            .starts_with("line 5, column 3")
    );
    assert!(
        giornale_error("2026;1;2026-11-25;x;c;1.00;2026-11-25\n\u{0}\u{ff}").contains("line 3")
    );
}

/// Poste's statement: ISO-8859-15, told apart by the IBAN closing line 1; debits skipped, the
/// footer skipped, identical rows kept apart, a credit without IUF kept.
#[test]
fn poste_statement_csv() {
    let mut reader = read_csv(POSTE, None).unwrap();
    assert_eq!(reader.layout(), CsvLayout::PosteStatement);
    assert_eq!(
        reader.iban().map(|i| i.as_str()),
        Some("IT85C0760103200001023456789")
    );
    let movements: Vec<TreasuryMovement> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(reader.skipped(), 1, "the debit");
    let TreasuryCsvReader::Poste(poste) = &reader else {
        unreachable!()
    };
    assert!(poste.footer_skipped());
    assert_eq!(movements.len(), 4);
    let m = &movements[0];
    assert_eq!(
        (m.year, m.amount, m.accounting_date, m.value_date),
        (
            2025,
            Amount::from_cents(382_040),
            Some(day(2025, 9, 23)),
            Some(day(2025, 9, 23))
        )
    );
    assert_eq!(m.reference, iuf("2025-09-23BPPIITRRXXX-000038102790"));
    assert!(m.bill.starts_with('P') && m.bill.len() == 17, "{}", m.bill);
    assert_eq!(
        (m.payer.as_ref(), m.operation),
        (None, MovementOperation::Executed)
    );
    // ISO-8859-15's € and è, decoded; no IUF, kept.
    let (a, b) = (&movements[1], &movements[2]);
    assert_eq!(a.causale, "Rimborso caffè € 15 società");
    assert_eq!(a.reference, CausaleRef::None);
    assert_eq!(a.amount, Amount::from_cents(1500));
    // Identical rows: the second gets `-2`.
    assert_eq!(b.causale, a.causale);
    assert_eq!(b.bill, format!("{}-2", a.bill));
    // A '.' decimal, no value date, an IUV.
    let m = &movements[3];
    assert_eq!(m.amount, Amount::from_cents(12_050));
    assert_eq!(m.value_date, None);
    assert_eq!(m.reference, CausaleRef::Iuv("01000000000012373".into()));
    for m in &movements {
        assert_eq!(m.validate(), Ok(()));
    }
    // The same file read again gives the same keys.
    let again = all(read_csv(POSTE, None).unwrap()).unwrap();
    assert_eq!(again, movements);
}

fn poste(body: &str) -> String {
    format!("ESTRATTO CONTO;IT85C0760103200001023456789\nData;Valuta;…\n{body}")
}

#[test]
fn poste_rows_that_break_a_rule_name_line_and_column() {
    let error = |body: &str| {
        let text = poste(body);
        let mut reader = PosteReader::new(text.as_bytes()).unwrap();
        loop {
            match reader.next_movement() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("accepted: {body}"),
                Err(e) => return e.to_string(),
            }
        }
    };
    let ok = "24/09/2025;24/09/2025;048;B;EUR;;1,00;;x";
    let cases = [
        ("24/09/2025;24/09/2025;048;B;EUR;;1,001;;x", "line 3, column 7: importo credito \"1,001\" is not an amount: at most 2 decimals (cents)"),
        ("24/09/2025;24/09/2025;048;B;EUR;;1.234,00;;x", "line 3, column 7: importo credito \"1.234,00\" is not an amount"),
        ("24/09/2025;31/09/2025;048;B;EUR;;1,00;;x", "line 3, column 2: data valuta \"31/09/2025\" is not a date (dd/mm/yyyy)"),
        ("24/09/2025;24/09/2025;048;B;EUR;;1,00", "line 3: 9 columns expected"),
        ("24/09/1998;24/09/1998;048;B;EUR;;1,00;;x", "line 3, column 1: data contabile must be a year of 4 digits from 1999 to 2099, got \"1998\""),
    ];
    for (row, expected) in cases {
        let msg = error(row);
        assert!(msg.starts_with(expected), "{row}: {msg}");
    }
    // A row whose date is not a date is the footer only when it is the last.
    let msg = error(&format!("{ok}\nTOTALE;;;;;;1,00;;\n{ok}"));
    assert_eq!(
        msg,
        "line 4, column 1: data contabile \"TOTALE\" is not a date (dd/mm/yyyy)"
    );
    let text = poste(&format!("{ok}\nTOTALE;;;;;;1,00;;\n\n"));
    let mut reader = PosteReader::new(text.as_bytes()).unwrap();
    assert!(reader.next_movement().unwrap().is_some());
    assert_eq!(reader.next_movement().unwrap(), None);
    assert!(reader.footer_skipped());
    // An empty statement, and one without its IBAN.
    let text = "X;IT85C0760103200001023456789\n";
    let mut reader = PosteReader::new(text.as_bytes()).unwrap();
    assert_eq!(reader.next_movement().unwrap(), None);
    assert!(!reader.footer_skipped());
    let err = PosteReader::new("ESTRATTO CONTO;IT00X\n".as_bytes())
        .err()
        .unwrap();
    assert!(err
        .to_string()
        .starts_with("line 1: a Poste statement's first line ends with the account's IBAN"));
    assert_eq!(err.line(), Some(1));
}

#[test]
fn the_layout_is_told_by_the_first_line() {
    assert_eq!(
        CsvLayout::detect(b"\xEF\xBB\xBFESTRATTO;IT85C0760103200001023456789 ;;\r\nx"),
        CsvLayout::PosteStatement
    );
    // A wrong check digit is no IBAN.
    assert_eq!(
        CsvLayout::detect(b"ESTRATTO;IT86C0760103200001023456789\n"),
        CsvLayout::GiornaleDiCassa
    );
    assert_eq!(CsvLayout::detect(GIORNALE), CsvLayout::GiornaleDiCassa);
    assert_eq!(CsvLayout::detect(b""), CsvLayout::GiornaleDiCassa);
    // The encoding the pipeline declares wins over the layout's.
    let utf8 = poste("24/09/2025;24/09/2025;048;B;EUR;;1,00;;caffè €");
    let ms = all(read_csv(utf8.as_bytes(), Some(Encoding::Utf8)).unwrap()).unwrap();
    assert_eq!(ms[0].causale, "caffè €");
    let ms = all(read_csv(utf8.as_bytes(), None).unwrap()).unwrap();
    assert_ne!(ms[0].causale, "caffè €", "read as ISO-8859-15 by default");
    // A giornale that is not UTF-8 is refused, naming the line.
    let latin = b"h\n2026;1;2026-11-25;Societ\xe0;c;1.00;2026-11-25\n";
    let err = all(read_csv(&latin[..], None).unwrap()).unwrap_err();
    assert_eq!(err.line(), Some(2));
    let ms = all(read_csv(&latin[..], Some(Encoding::Iso8859_15)).unwrap()).unwrap();
    assert_eq!(ms[0].payer.as_deref(), Some("Società"));
}

/// A reader fed in one-byte reads gives the same movements.
#[test]
fn csv_reads_in_small_pieces() {
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((&b, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            if buf.is_empty() {
                return Ok(0);
            }
            buf[0] = b;
            self.0 = rest;
            Ok(1)
        }
    }
    for file in [GIORNALE, POSTE] {
        let whole = all(read_csv(file, None).unwrap()).unwrap();
        let trickled = all(read_csv(Trickle(file), None).unwrap()).unwrap();
        assert_eq!(trickled, whole);
    }
}
