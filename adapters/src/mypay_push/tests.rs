//! Receipts in, push bodies out: the JSON wrapper, the `rt` bytes, and every `Pagati` document
//! validated with xmllint against MyPay's XSD.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use chrono::{NaiveDate, TimeZone, Utc};
use quick_xml::events::Event;
use serde_json::Value;

use super::pagati::{fit, mypay_email, rome_local};
use super::*;
use crate::pagopa::{EntityType, Outcome, ReceiptDestination};
use crate::test_fixtures::*;

const MYPAY_XSD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/specs/mypay/PagInf_Dovuti_Pagati_6_2_0.xsd"
);
const PAGOPA_EXAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/specs/pagopa/SANP2.5.1/examples/"
);
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mypay_push/");

/// Encodes, checks the JSON wrapper and `rt`, and returns the `Pagati` XML.
fn esito(ctx: &ReceiptContext<'_>, raw: &str) -> String {
    let bytes = encode(ctx, raw).expect("encode");
    assert!(bytes.starts_with(br#"{"rt":""#), "rt comes first");
    assert!(!bytes.contains(&b'\n'), "compact output");
    let v: Value = serde_json::from_slice(&bytes).expect("output is JSON");
    let obj = v.as_object().expect("an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["esito", "rt"]);
    let b64 = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(obj[k].as_str().expect("a string"))
            .expect("standard base64 with padding")
    };
    assert_eq!(b64("rt"), raw.as_bytes(), "rt is the request as received");
    String::from_utf8(b64("esito")).expect("esito is UTF-8")
}

/// The text of every element of `xml` by its path of local names (`datiPagamento/...`),
/// references resolved; elements without text are left out.
fn fields(xml: &str) -> Vec<(String, String)> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut out = Vec::new();
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => {
                path.push(String::from_utf8(e.local_name().as_ref().to_vec()).expect("name"));
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.decode().expect("text")),
            Event::GeneralRef(r) => match r.resolve_char_ref().expect("char ref") {
                Some(c) => text.push(c),
                None => {
                    let name = r.decode().expect("ref");
                    text.push_str(
                        quick_xml::escape::resolve_xml_entity(&name).expect("known entity"),
                    );
                }
            },
            Event::End(_) => {
                if !text.is_empty() {
                    out.push((path[1..].join("/"), std::mem::take(&mut text)));
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

fn all(fields: &[(String, String)], path: &str) -> Vec<String> {
    fields
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, v)| v.clone())
        .collect()
}

fn one(fields: &[(String, String)], path: &str) -> String {
    match all(fields, path).as_slice() {
        [v] => v.clone(),
        other => panic!("{path}: expected one value, found {other:?}"),
    }
}

/// Validates each document with xmllint against MyPay's XSD, with the one fix SOURCES.md
/// describes (`\/` → `/` in two patterns) made on a copy; `None` when a document is valid,
/// else xmllint's report. `Err` with a note when xmllint is not installed.
fn xsd_verdicts(docs: &[&str]) -> Result<Vec<Option<String>>, &'static str> {
    match Command::new("xmllint").arg("--version").output() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err("xmllint is not installed (ops/setup.sh installs libxml2-utils)")
        }
        Err(e) => panic!("cannot run xmllint: {e}"),
        Ok(_) => {}
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let xsd = std::fs::read_to_string(MYPAY_XSD).expect("MyPay XSD in adapters/specs");
    assert!(xsd.contains(r"\/"), "the XSD still needs its fix");
    let xsd_path = dir.path().join("PagInf_Dovuti_Pagati_6_2_0.xsd");
    std::fs::write(&xsd_path, xsd.replace(r"\/", "/")).expect("write XSD");
    let files: Vec<PathBuf> = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let path = dir.path().join(format!("pagati{i}.xml"));
            std::fs::write(&path, doc).expect("write document");
            path
        })
        .collect();
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--nonet")
        .arg("--schema")
        .arg(&xsd_path)
        .args(&files)
        .output()
        .expect("run xmllint");
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !report.contains("failed to compile"),
        "the XSD does not compile:\n{report}"
    );
    Ok(files
        .iter()
        .map(|f| verdict(&report, f))
        .collect::<Vec<_>>())
}

fn verdict(report: &str, file: &Path) -> Option<String> {
    let f = file.display().to_string();
    if report.contains(&format!("{f} validates")) {
        None
    } else if report.contains(&format!("{f} fails to validate")) {
        Some(
            report
                .lines()
                .filter(|l| l.starts_with(&f))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    } else {
        panic!("no xmllint verdict for {f}:\n{report}")
    }
}

/// Panics unless every document is valid; prints a note and checks nothing without xmllint.
pub(crate) fn assert_valid(docs: &[&str]) {
    match xsd_verdicts(docs) {
        Err(note) => eprintln!("note: {note}; the Pagati documents were not validated"),
        Ok(verdicts) => {
            for (doc, verdict) in docs.iter().zip(verdicts) {
                if let Some(why) = verdict {
                    panic!("invalid Pagati:\n{why}\n{doc}");
                }
            }
        }
    }
}

#[test]
fn v2_receipt() {
    let raw = send_rt_v2(receipt_v2());
    let xml = esito(&ctx(), &raw);
    assert_valid(&[&xml]);
    // The whole document, for review; `SNODO_BLESS=1` rewrites it.
    let golden = format!("{DATA}pagati_v2.xml");
    if std::env::var_os("SNODO_BLESS").is_some() {
        std::fs::write(&golden, format!("{xml}\n")).expect("write golden file");
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(xml, expected.trim_end(), "{golden}");

    let f = fields(&xml);
    assert!(xml.contains(&format!(r#"<Pagati xmlns="{PAGATI_NS}">"#)));
    assert_eq!(one(&f, "versioneOggetto"), "6.2.0");
    assert_eq!(one(&f, "dominio/identificativoDominio"), PADOVA);
    assert!(all(&f, "dominio/identificativoStazioneRichiedente").is_empty());
    assert_eq!(
        one(&f, "identificativoMessaggioRicevuta"),
        "9f1e2d3c4b5a69788796"
    );
    assert_eq!(one(&f, "dataOraMessaggioRicevuta"), "2026-11-26T10:00:00");
    assert_eq!(
        one(&f, "riferimentoMessaggioRichiesta"),
        "9f1e2d3c4b5a69788796"
    );
    assert_eq!(one(&f, "riferimentoDataRichiesta"), "2026-11-26");
    assert_eq!(
        one(
            &f,
            "istitutoAttestante/identificativoUnivocoAttestante/tipoIdentificativoUnivoco"
        ),
        "B"
    );
    assert_eq!(
        one(
            &f,
            "istitutoAttestante/identificativoUnivocoAttestante/codiceIdentificativoUnivoco"
        ),
        "BCITITMM"
    );
    assert_eq!(
        one(&f, "istitutoAttestante/denominazioneAttestante"),
        "Intesa Sanpaolo"
    );
    assert_eq!(
        one(
            &f,
            "enteBeneficiario/identificativoUnivocoBeneficiario/codiceIdentificativoUnivoco"
        ),
        PADOVA
    );
    assert_eq!(
        one(&f, "enteBeneficiario/denominazioneBeneficiario"),
        "Comune di Padova"
    );
    assert_eq!(
        one(
            &f,
            "soggettoPagatore/identificativoUnivocoPagatore/tipoIdentificativoUnivoco"
        ),
        "F"
    );
    assert_eq!(
        one(&f, "soggettoPagatore/anagraficaPagatore"),
        "Mario Rossi"
    );
    assert_eq!(one(&f, "datiPagamento/codiceEsitoPagamento"), "0");
    assert_eq!(one(&f, "datiPagamento/importoTotalePagato"), "150.07");
    assert_eq!(
        one(&f, "datiPagamento/identificativoUnivocoVersamento"),
        "47164993070184562"
    );
    assert_eq!(
        one(&f, "datiPagamento/codiceContestoPagamento"),
        "9f1e2d3c4b5a69788796"
    );
    // Padova's own transfer only: the stamp is paid to Feltre (MyPay lists the receiving
    // entity's own payments); the total stays the whole payment's.
    let singolo = |leaf: &str| all(&f, &format!("datiPagamento/datiSingoloPagamento/{leaf}"));
    assert_eq!(singolo("identificativoUnivocoDovuto"), ["TARI-2026-0001"]);
    assert_eq!(singolo("singoloImportoPagato"), ["134.07"]);
    assert_eq!(singolo("esitoSingoloPagamento"), ["0"]);
    assert_eq!(singolo("dataEsitoSingoloPagamento"), ["2026-11-26"]);
    assert_eq!(
        singolo("identificativoUnivocoRiscossione"),
        ["9f1e2d3c4b5a69788796"]
    );
    assert_eq!(
        singolo("causaleVersamento"),
        ["/RFB/47164993070184562/TXT/Certificato"]
    );

    // Both transfers Padova's: both listed, the stamp's bare code in MyPay's 9/…/ form.
    let mut both = receipt_v2();
    both.transfer_list[1].fiscal_code_pa = PADOVA.into();
    let xml = esito(&ctx(), &send_rt_v2(both));
    assert_valid(&[&xml]);
    let f = fields(&xml);
    let singolo = |leaf: &str| all(&f, &format!("datiPagamento/datiSingoloPagamento/{leaf}"));
    assert_eq!(singolo("singoloImportoPagato"), ["134.07", "16.00"]);
    assert_eq!(
        singolo("datiSpecificiRiscossione"),
        ["9/0101100IM/", "9/0301109AP/"]
    );
}

#[test]
fn v1_receipt() {
    let raw = send_rt(receipt_v1());
    let xml = esito(&ctx(), &raw);
    assert_valid(&[&xml]);
    let f = fields(&xml);
    assert_eq!(one(&f, "dataOraMessaggioRicevuta"), "2026-11-26T10:00:00");
    // applicationDate, the day the PSP took the payment.
    assert_eq!(one(&f, "riferimentoDataRichiesta"), "2026-11-25");
    let pagatore = |leaf: &str| one(&f, &format!("soggettoPagatore/{leaf}"));
    assert_eq!(pagatore("indirizzoPagatore"), "Piazza dei Signori");
    assert_eq!(pagatore("civicoPagatore"), "12");
    assert_eq!(pagatore("capPagatore"), "35139");
    assert_eq!(pagatore("localitaPagatore"), "Padova");
    assert_eq!(pagatore("provinciaPagatore"), "PD");
    assert_eq!(pagatore("nazionePagatore"), "IT");
    assert_eq!(pagatore("e-mailPagatore"), "mario.rossi@example.it");
    // ctPagati has no soggettoVersante: the payer travels in rt only.
    assert!(!xml.contains("Rossi &amp; Figli"));
    assert!(!xml.contains("Versante"));
    assert_eq!(one(&f, "datiPagamento/importoTotalePagato"), "120.50");
    assert_eq!(
        all(
            &f,
            "datiPagamento/datiSingoloPagamento/singoloImportoPagato"
        ),
        ["120.50"]
    );
}

#[test]
fn the_official_send_rt_sample() {
    // SOURCES.md: the sample lacks transferCategory; with it, it parses.
    let xml = std::fs::read_to_string(format!("{PAGOPA_EXAMPLES}ReqPaSendRT.xml"))
        .expect("official sample")
        .replace(
            "</remittanceInformation>",
            "</remittanceInformation><transferCategory>9/0101100IM/</transferCategory>",
        );
    let pagati = esito(&ctx(), &xml);
    assert_valid(&[&pagati]);
    let f = fields(&pagati);
    assert_eq!(
        one(&f, "identificativoMessaggioRicevuta"),
        "c110729d258c4ab1b765fe902aae41d6"
    );
    assert_eq!(one(&f, "dataOraMessaggioRicevuta"), "2021-10-01T17:48:22");
    assert_eq!(one(&f, "datiPagamento/importoTotalePagato"), "30.00");
    // The sample pays two entities: the receiving one's own transfer is listed.
    assert_eq!(
        all(
            &f,
            "datiPagamento/datiSingoloPagamento/singoloImportoPagato"
        )
        .len(),
        1
    );
}

#[test]
fn amounts_are_exact() {
    let mut r = receipt_v2();
    r.payment_amount = "0.30".into();
    r.transfer_list[0].transfer_amount = "0.10".into();
    r.transfer_list[1].transfer_amount = "0.20".into();
    r.transfer_list[1].fiscal_code_pa = PADOVA.into();
    let xml = esito(&ctx(), &send_rt_v2(r));
    assert_valid(&[&xml]);
    let f = fields(&xml);
    assert_eq!(one(&f, "datiPagamento/importoTotalePagato"), "0.30");
    let singoli = all(
        &f,
        "datiPagamento/datiSingoloPagamento/singoloImportoPagato",
    );
    assert_eq!(singoli, ["0.10", "0.20"]);
    let cents: i64 = singoli
        .iter()
        .map(|s| pagopa::to_cents(s).expect("amount").cents())
        .sum();
    assert_eq!(cents, 30);

    let mut big = receipt_v1();
    big.payment_amount = "999999999.99".into();
    big.transfer_list[0].transfer_amount = "999999999.99".into();
    let xml = esito(&ctx(), &send_rt(big));
    assert_valid(&[&xml]);
    assert_eq!(
        one(&fields(&xml), "datiPagamento/importoTotalePagato"),
        "999999999.99"
    );
}

#[test]
fn texts_are_escaped_and_cut_to_the_xsd_lengths() {
    let mut r = receipt_v2();
    r.debtor.full_name = "Zoë <Ünïcödé> & \"Ålesund\" 'x' 😀".into();
    r.debtor.city = Some("Sant'Elpidio a Mare <AP> & città".into());
    // 140 characters, 6 of them outside the BMP: 146 UTF-16 units.
    let remittance = format!("/TXT/<&>{}{}", "è".repeat(126), "😀".repeat(6));
    assert_eq!(remittance.chars().count(), 140);
    assert_eq!(remittance.encode_utf16().count(), 146);
    r.transfer_list[0].remittance_information = remittance.clone();
    r.company_name = "Comune di Località Molto Lunga "
        .repeat(4)
        .trim_end()
        .into();
    let long_iud = "IUD-ÀÈÌÒÙ-".repeat(4);
    let c = ReceiptContext {
        entity_name: "",
        iud: Some(&long_iud),
        ..ctx()
    };
    let xml = esito(&c, &send_rt_v2(r.clone()));
    assert_valid(&[&xml]);
    let f = fields(&xml);
    assert_eq!(
        one(&f, "soggettoPagatore/anagraficaPagatore"),
        "Zoë <Ünïcödé> & \"Ålesund\" 'x' 😀"
    );
    assert!(xml.contains("Zoë &lt;Ünïcödé&gt; &amp; \"Ålesund\" 'x' 😀"));
    assert_eq!(
        one(&f, "soggettoPagatore/localitaPagatore"),
        "Sant'Elpidio a Mare <AP> & città"
    );
    // causaleVersamento is stText140: the stamps that overflow are cut whole.
    let causale = all(&f, "datiPagamento/datiSingoloPagamento/causaleVersamento");
    assert_eq!(causale[0].encode_utf16().count(), 140);
    assert_eq!(
        causale[0],
        format!("/TXT/<&>{}{}", "è".repeat(126), "😀".repeat(3))
    );
    // With no configured name the receipt's company name is used, cut to stText70.
    let name = one(&f, "enteBeneficiario/denominazioneBeneficiario");
    assert_eq!(name.chars().count(), 70);
    assert!(r.company_name.starts_with(&name));
    // identificativoUnivocoDovuto is stText35.
    let iud = all(
        &f,
        "datiPagamento/datiSingoloPagamento/identificativoUnivocoDovuto",
    );
    assert_eq!(iud[0], long_iud.chars().take(35).collect::<String>());

    // A control character from the context cannot reach the XML; CR is written as a reference.
    let c = ReceiptContext {
        entity_name: "Comune\u{1}\rdi Padova",
        ..ctx()
    };
    let xml = esito(&c, &send_rt_v2(r));
    assert_valid(&[&xml]);
    assert!(xml.contains("<denominazioneBeneficiario>Comune&#13;di Padova<"));
}

#[test]
fn fit_cuts_on_character_boundaries() {
    assert_eq!(fit("abc", 2), "ab");
    assert_eq!(fit("èèè", 2), "èè");
    // A character outside the BMP takes two UTF-16 units and is never split.
    assert_eq!(fit("a😀b", 2), "a");
    assert_eq!(fit("a😀b", 3), "a😀");
    assert_eq!(fit("a\u{0}b\u{FFFE}c\td", 10), "abc\td");
    assert_eq!(fit("", 5), "");
}

#[test]
fn emails_outside_mypays_pattern_are_recognised() {
    assert!(mypay_email("mario.rossi+tari@example.it"));
    assert!(mypay_email("o'brien@example.ie"));
    for bad in [
        "",
        "@example.it",
        "mario@",
        "mario rossi@example.it",
        "a@b@c",
        "a@exa_mple.it",
    ] {
        assert!(!mypay_email(bad), "{bad:?}");
    }
    assert!(!mypay_email(&format!("{}@example.it", "a".repeat(250))));
}

#[test]
fn a_receipt_without_payer_or_addresses() {
    let mut r = receipt_v2();
    r.payer = None;
    r.debtor.unique_identifier.kind = EntityType::G;
    r.debtor.unique_identifier.value = "01234567890".into();
    // Not MyPay's stText2: left out, never invalid.
    r.debtor.state_province_region = Some("P".into());
    let c = ReceiptContext {
        iud: None,
        debt_type: None,
        ..ctx()
    };
    let xml = esito(&c, &send_rt_v2(r));
    assert_valid(&[&xml]);
    let f = fields(&xml);
    assert_eq!(
        one(
            &f,
            "soggettoPagatore/identificativoUnivocoPagatore/tipoIdentificativoUnivoco"
        ),
        "G"
    );
    for absent in [
        "indirizzoPagatore",
        "provinciaPagatore",
        "nazionePagatore",
        "e-mailPagatore",
    ] {
        assert!(!xml.contains(absent), "{absent}");
    }
    // No IUD in the context: the XSD still wants one.
    assert_eq!(
        all(
            &f,
            "datiPagamento/datiSingoloPagamento/identificativoUnivocoDovuto"
        ),
        ["n/a"]
    );

    // A province written out is cut to its first two letters, as MyPay does.
    let mut r = receipt_v1();
    r.debtor.state_province_region = Some("Padova".into());
    let xml = esito(&ctx(), &send_rt(r));
    assert_valid(&[&xml]);
    assert_eq!(
        one(&fields(&xml), "soggettoPagatore/provinciaPagatore"),
        "Pa"
    );
}

#[test]
fn a_revenue_stamp_transfer_stays_in_rt() {
    let mut r = receipt_v2();
    r.transfer_list.truncate(1);
    r.transfer_list[0].destination = ReceiptDestination::MbdAttachment(MBD.into());
    r.transfer_list[0].transfer_amount = "150.07".into();
    let raw = send_rt_v2(r);
    let xml = esito(&ctx(), &raw);
    assert_valid(&[&xml]);
    assert!(raw.contains("<MBDAttachment>PG1h\ncmNhLz4=</MBDAttachment>"));
    assert!(!xml.contains("PG1h"), "ctPagati has no allegatoRicevuta");
    assert_eq!(
        all(
            &fields(&xml),
            "datiPagamento/datiSingoloPagamento/singoloImportoPagato"
        ),
        ["150.07"]
    );
}

#[test]
fn a_ko_receipt_pays_nothing() {
    let mut r = receipt_v1();
    r.outcome = Outcome::Ko;
    let xml = esito(&ctx(), &send_rt(r));
    assert_valid(&[&xml]);
    let f = fields(&xml);
    assert_eq!(one(&f, "datiPagamento/codiceEsitoPagamento"), "1");
    assert_eq!(one(&f, "datiPagamento/importoTotalePagato"), "0.00");
    assert!(!xml.contains("datiSingoloPagamento"));
}

#[test]
fn dates_are_local_time_in_rome() {
    let date_of = |pdt: Option<&str>, app: Option<&str>, received_at: &str| {
        let mut r = receipt_v1();
        r.payment_date_time = pdt.map(Into::into);
        r.application_date = app.map(Into::into);
        let c = ctx_at(received_at);
        let xml = esito(&c, &send_rt(r));
        assert_valid(&[&xml]);
        let f = fields(&xml);
        (
            one(&f, "dataOraMessaggioRicevuta"),
            one(&f, "riferimentoDataRichiesta"),
            one(
                &f,
                "datiPagamento/datiSingoloPagamento/dataEsitoSingoloPagamento",
            ),
        )
    };
    let at = "2026-07-01T08:30:00Z";
    let d = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    // Summer time, a zone given: converted.
    assert_eq!(
        date_of(Some("2026-06-30T22:30:00.5Z"), None, at),
        d("2026-07-01T00:30:00", "2026-07-01", "2026-07-01")
    );
    assert_eq!(
        date_of(
            Some("2026-07-01T05:00:00-03:00"),
            Some("2026-07-02+02:00"),
            at
        ),
        d("2026-07-01T10:00:00", "2026-07-02", "2026-07-01")
    );
    // No zone: the node's local time, as written.
    assert_eq!(
        date_of(Some("2026-12-31T23:59:59.999"), None, at),
        d("2026-12-31T23:59:59", "2026-12-31", "2026-12-31")
    );
    assert_eq!(
        date_of(Some("2026-12-31T24:00:00"), None, at),
        d("2027-01-01T00:00:00", "2027-01-01", "2027-01-01")
    );
    // No paymentDateTime: when the hub stored the receipt, in Rome.
    assert_eq!(
        date_of(None, None, at),
        d("2026-07-01T10:30:00", "2026-07-01", "2026-07-01")
    );
    assert_eq!(
        date_of(None, Some("2026-06-30"), "2026-12-31T23:30:00+00:00"),
        d("2027-01-01T00:30:00", "2026-06-30", "2027-01-01")
    );
}

#[test]
fn rome_time_follows_the_eu_rule() {
    let local = |y, mo, d, h, mi, s| {
        rome_local(
            Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
                .single()
                .expect("instant"),
        )
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
    };
    // 2026: summer time from 29 March to 25 October, switching at 01:00 UTC.
    assert_eq!(local(2026, 3, 29, 0, 59, 59), "2026-03-29 01:59:59");
    assert_eq!(local(2026, 3, 29, 1, 0, 0), "2026-03-29 03:00:00");
    assert_eq!(local(2026, 10, 25, 0, 59, 59), "2026-10-25 02:59:59");
    assert_eq!(local(2026, 10, 25, 1, 0, 0), "2026-10-25 02:00:00");
    // Checked against the core's zone database: at 22:30 UTC Rome is on the next day only in
    // summer, so the date there gives away the offset, every day of 40 years.
    let mut day = NaiveDate::from_ymd_opt(2000, 1, 1).expect("date");
    while day.format("%Y").to_string() != "2040" {
        let at = day.and_hms_opt(22, 30, 0).expect("time").and_utc();
        assert_eq!(
            rome_local(at).date(),
            snodo_core::time::rome_date(at),
            "{day}"
        );
        day = day.succ_opt().expect("next day");
    }
}

#[test]
fn an_unusable_category_is_an_error() {
    for category in ["X", "9/0101100IM/ extra", "9/ab", " 0101100IM"] {
        let mut r = receipt_v1();
        r.transfer_list[0].transfer_category = category.into();
        assert_eq!(
            encode(&ctx(), &send_rt(r)),
            Err(MypayPushError::Category {
                index: 0,
                value: category.into()
            }),
            "{category:?}"
        );
    }
}

#[test]
fn what_is_not_a_receipt_is_an_error_not_a_panic() {
    for raw in [
        "",
        "not xml",
        "<a>",
        "\u{0}\u{FFFF}",
        "<?xml version=\"1.0\"?><x/>",
    ] {
        assert!(
            matches!(encode(&ctx(), raw), Err(MypayPushError::Soap(_))),
            "{raw:?}"
        );
    }
    let verify = verify_request();
    assert_eq!(
        encode(&ctx(), &verify),
        Err(MypayPushError::NotAReceipt("paVerifyPaymentNotice"))
    );
    // A receipt broken by one character, and one cut short.
    let raw = send_rt(receipt_v1());
    let broken = raw.replace("<paymentAmount>120.50", "<paymentAmount>120,50");
    assert!(matches!(
        encode(&ctx(), &broken),
        Err(MypayPushError::Soap(_))
    ));
    for cut in (0..raw.len()).step_by(97) {
        if let Some(prefix) = raw.get(..cut) {
            assert!(encode(&ctx(), prefix).is_err(), "cut at {cut}");
        }
    }
    let err = encode(&ctx(), "not xml").expect_err("not a request");
    assert!(err
        .to_string()
        .starts_with("the stored request cannot be read: "));
}

#[test]
fn a_bad_context_is_refused() {
    let raw = send_rt(receipt_v1());
    for received_at in ["", "2026-11-26", "2026-11-26T10:00:01", "yesterday"] {
        let c = ctx_at(received_at);
        assert!(
            matches!(encode(&c, &raw), Err(MypayPushError::Context(_))),
            "{received_at:?}"
        );
    }
}

/// The validator in these tests does refuse what MyPay's XSD refuses.
#[test]
fn the_xsd_check_catches_invalid_documents() {
    let good = esito(&ctx(), &send_rt(receipt_v1()));
    let bad_amount = good.replace(
        "<importoTotalePagato>120.50<",
        "<importoTotalePagato>120.5<",
    );
    let bad_category = good.replace(">9/0101100IM/<", ">9/0101100IM/ x<");
    let bad_order = good.replace("<versioneOggetto>6.2.0</versioneOggetto>", "");
    let too_long = good.replace(">Mario Rossi<", &format!(">{}<", "M".repeat(71)));
    let docs = [&good, &bad_amount, &bad_category, &bad_order, &too_long];
    assert!(
        docs[1..].iter().all(|d| *d != &good),
        "each variant differs"
    );
    match xsd_verdicts(&docs.map(String::as_str)) {
        Err(note) => eprintln!("note: {note}; the XSD check was not exercised"),
        Ok(verdicts) => {
            assert_eq!(verdicts[0], None, "the encoder's output is valid");
            for (i, v) in verdicts.iter().enumerate().skip(1) {
                assert!(v.is_some(), "variant {i} passed the XSD");
            }
        }
    }
}
