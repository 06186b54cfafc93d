//! The node's calls against a running hub: paVerifyPaymentNotice, paGetPaymentV2, paSendRTV2,
//! every fault, and every answer valid against the official XSD.

mod common;
use common::*;
use snodo_adapters::pagopa::{self as soap, Request};
use std::process::Command;

fn call(home: &Home, action: &str, body: &str) -> String {
    node_call(home, action, body)
}

fn get_payment_v2(notice: &str) -> String {
    get_payment_v2_for(notice, None)
}

/// paGetPaymentV2 from a channel: `Some(Postal)` is a Poste channel asking for postal accounts.
fn get_payment_v2_for(notice: &str, channel: Option<soap::TransferType>) -> String {
    soap::render_request(&Request::GetPaymentV2(soap::GetPaymentRequest {
        id_pa: PADOVA.into(),
        id_broker_pa: BROKER.into(),
        id_station: STATION.into(),
        qr_code: soap::QrCode {
            fiscal_code: PADOVA.into(),
            notice_number: notice.into(),
        },
        transfer_type: channel,
        ..Default::default()
    }))
}

#[test]
fn the_node_verifies_activates_and_pays_a_notice() {
    let home = Home::new();
    // MENSA may not be paid late in this test, to see PAA_PAGAMENTO_SCADUTO.
    let cfg = std::fs::read_to_string(home.config()).unwrap().replacen(
        "taxonomy = \"9/0107101TS/\"\n  generate_iuv = true",
        "taxonomy = \"9/0107101TS/\"\n  generate_iuv = true\n  late_payment_allowed = false",
        1,
    );
    std::fs::write(home.config(), cfg).unwrap();
    let out = home.path().join("out");
    let rows = vec![
        Row::tari("PAY", 1, 12050),
        Row::tari("ANN", 2, 100),
        Row::tari("MULTI", 3, 10000)
            .set(21, "true")
            .set(22, "00133880252")
            .set(23, "Comune di Feltre")
            .set(24, "IT95O0306911884000100012345")
            .set(31, "9/0101100IM/")
            .set(33, "25.00"),
        Row::tari("LATE", 4, 700)
            .set(15, "MENSA")
            .set(18, "9/0107101TS/")
            .set(12, "2020-01-01"),
        Row::tari("NODUE", 5, 900)
            .set(15, "MENSA")
            .set(18, "9/0107101TS/")
            .set(12, ""),
    ];
    let o = home.import(
        &write_zip(home.path(), "c_g224-SOAP1-1_4", csv_text(&rows).as_bytes()),
        &out,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let annul = vec![Row::tari("ANN", 2, 100).set(20, "").set(34, "A")];
    let o = home.import(
        &write_zip(home.path(), "c_g224-SOAP2-1_4", csv_text(&annul).as_bytes()),
        &out,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let notice = |iud: &str| {
        home.positions(&["--iud", iud])[0]["notice_number"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (pay, ann, multi, late) = (
        notice("PAY"),
        notice("ANN"),
        notice("MULTI"),
        notice("LATE"),
    );

    let hub = Hub::start_serving(&home);

    // No due date: none in the verify's paymentOption (optional there); the activation's
    // paymentData requires one, and gets 2099-12-31 (docs/FORMATS.md).
    let no_due = notice("NODUE");
    let v = call(
        &home,
        "paVerifyPaymentNotice",
        &verify_body(PADOVA, BROKER, STATION, &no_due),
    );
    assert!(v.contains("<outcome>OK</outcome>"), "{v}");
    assert!(!v.contains("<dueDate>"), "{v}");
    let a = call(&home, "paGetPaymentV2", &get_payment_v2(&no_due));
    assert!(a.contains("<dueDate>2099-12-31</dueDate>"), "{a}");

    // Verify: amount, causale and company, as a curl user would see them.
    let ok = call(
        &home,
        "paVerifyPaymentNotice",
        &verify_body(PADOVA, BROKER, STATION, &pay),
    );
    assert!(ok.contains("<outcome>OK</outcome>"), "{ok}");
    assert!(ok.contains("<amount>120.50</amount>"), "{ok}");
    assert!(
        ok.contains("<companyName>Comune di Padova</companyName>"),
        "{ok}"
    );
    assert!(ok.contains("<options>EQ</options>"), "{ok}");

    // Bytes that are not XML, or not SOAP, sent for an operation the SOAPAction names: that
    // operation's KO with PAA_SINTASSI_EXTRAXSD (valid against the XSD, like every answer).
    for (action, body) in [
        ("paVerifyPaymentNotice", "\u{0}garbage <not xml"),
        ("\"paGetPaymentV2\"", "{\"json\": \"not SOAP\"}"),
        ("paSendRTV2", "<root>XML but not SOAP</root>"),
    ] {
        let ko = call(&home, action, body);
        let op = action.trim_matches('"');
        assert!(ko.contains(&format!(":{op}Res")), "{action}: {ko}");
        assert!(ko.contains("<outcome>KO</outcome>"), "{ko}");
        assert!(
            ko.contains("<faultCode>PAA_SINTASSI_EXTRAXSD</faultCode>"),
            "{ko}"
        );
    }
    // Without an operation named anywhere there is nothing typed to answer: a SOAP client
    // fault, not a crash or a hang.
    let garbage = call(&home, "noSuchOperation", "\u{0}garbage <not xml");
    assert!(
        garbage.contains("<faultcode>soapenv:Client</faultcode>"),
        "{garbage}"
    );

    // Every refusal with its own code.
    for (body, code) in [
        (
            verify_body(PADOVA, "00000000000", STATION, &pay),
            "PAA_ID_INTERMEDIARIO_ERRATO",
        ),
        (
            verify_body(PADOVA, BROKER, "80007580279_99", &pay),
            "PAA_STAZIONE_INT_ERRATA",
        ),
        (
            verify_body("00133880253", BROKER, STATION, &pay),
            "PAA_ID_DOMINIO_ERRATO",
        ),
        (
            verify_body(PADOVA, BROKER, STATION, "301000000000012373"),
            "PAA_PAGAMENTO_SCONOSCIUTO",
        ),
        (
            verify_body(PADOVA, BROKER, STATION, &ann),
            "PAA_PAGAMENTO_ANNULLATO",
        ),
        (
            verify_body(PADOVA, BROKER, STATION, &late),
            "PAA_PAGAMENTO_SCADUTO",
        ),
        (
            verify_body(PADOVA, BROKER, STATION, "12345"),
            "PAA_SINTASSI_XSD",
        ),
    ] {
        let ko = call(&home, "paVerifyPaymentNotice", &body);
        assert!(ko.contains("<outcome>KO</outcome>"), "{ko}");
        assert_eq!(fault_of(&ko).as_deref(), Some(code), "{ko}");
    }

    // Activation: the multi-beneficiary position splits into two transfers that add up.
    let act = call(&home, "paGetPaymentV2", &get_payment_v2(&multi));
    assert!(act.contains("<outcome>OK</outcome>"), "{act}");
    assert!(
        act.contains("<transferAmount>75.00</transferAmount>"),
        "{act}"
    );
    assert!(
        act.contains("<transferAmount>25.00</transferAmount>"),
        "{act}"
    );
    assert!(
        act.contains("<fiscalCodePA>00133880252</fiscalCodePA>"),
        "{act}"
    );
    assert!(
        act.contains("<IBAN>IT95O0306911884000100012345</IBAN>"),
        "{act}"
    );
    // The node retries activations: answered again, and counted.
    let again = call(&home, "paGetPaymentV2", &get_payment_v2(&multi));
    assert!(again.contains("<outcome>OK</outcome>"));
    assert_eq!(home.positions(&["--iud", "MULTI"])[0]["activations"], 2);

    // The receipt: stored, the position paid; the same receipt again is a duplicate.
    let act = call(&home, "paGetPaymentV2", &get_payment_v2(&pay));
    assert!(
        act.contains("<paymentAmount>120.50</paymentAmount>"),
        "{act}"
    );
    let rt = call(&home, "paSendRTV2", &send_rt_v2(&pay, "RCPT-1", "120.50"));
    assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");
    assert_eq!(home.positions(&["--iud", "PAY"])[0]["status"], "paid");
    let dup = call(&home, "paSendRTV2", &send_rt_v2(&pay, "RCPT-1", "120.50"));
    assert_eq!(
        fault_of(&dup).as_deref(),
        Some("PAA_RECEIPT_DUPLICATA"),
        "{dup}"
    );
    let paid = call(
        &home,
        "paVerifyPaymentNotice",
        &verify_body(PADOVA, BROKER, STATION, &pay),
    );
    assert_eq!(
        fault_of(&paid).as_deref(),
        Some("PAA_PAGAMENTO_DUPLICATO"),
        "{paid}"
    );

    // A receipt nobody expected is kept and answered with a fault.
    let stray = call(
        &home,
        "paSendRTV2",
        &send_rt_v2("301000000000012373", "RCPT-2", "5.00"),
    );
    assert_eq!(
        fault_of(&stray).as_deref(),
        Some("PAA_PAGAMENTO_SCONOSCIUTO"),
        "{stray}"
    );
    let wrong = call(&home, "paSendRTV2", &send_rt_v2(&multi, "RCPT-3", "99.99"));
    assert_eq!(
        fault_of(&wrong).as_deref(),
        Some("PAA_SEMANTICA"),
        "{wrong}"
    );
    assert_eq!(home.positions(&["--iud", "MULTI"])[0]["status"], "active");
    // Operators see both, flagged, with the reason.
    let flagged = home.snodo(&[
        "receipts",
        "-c",
        "config.toml",
        "--entity",
        "c_g224",
        "--flagged",
    ]);
    let flagged: Vec<serde_json::Value> = stdout(&flagged)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let issues: Vec<(&str, &str)> = flagged
        .iter()
        .map(|r| {
            (
                r["receipt_id"].as_str().unwrap(),
                r["issue"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        issues,
        [("RCPT-3", "amount_mismatch"), ("RCPT-2", "unknown_notice")]
    );

    // The WSDL points at this hub.
    let wsdl = Command::new("curl")
        .args([
            "-s",
            &format!("http://127.0.0.1:{}/pagopa/paForNode?wsdl", home.port),
        ])
        .output()
        .unwrap();
    let wsdl = String::from_utf8_lossy(&wsdl.stdout);
    assert!(
        wsdl.contains(&format!(
            "location=\"http://127.0.0.1:{}/pagopa/paForNode\"",
            home.port
        )),
        "{wsdl}"
    );
    assert!(hub.terminate().success());
}

/// Imports `n` TARI positions for c_g224 and returns their notice numbers, in IUD order.
fn import_positions(home: &Home, iuf: &str, n: u32) -> Vec<String> {
    let rows: Vec<Row> = (1..=n)
        .map(|i| Row::tari(&format!("{iuf}-{i}"), i, 12050))
        .collect();
    let flow = write_zip(
        home.path(),
        &format!("c_g224-{iuf}-1_4"),
        csv_text(&rows).as_bytes(),
    );
    let o = home.import(&flow, &home.path().join("out"));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut positions = home.positions(&["--limit", "100000"]);
    positions.retain(|p| {
        p["iud"]
            .as_str()
            .is_some_and(|i| i.starts_with(&format!("{iuf}-")))
    });
    positions.sort_by_key(|p| p["id"].as_i64());
    positions
        .iter()
        .map(|p| p["notice_number"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_third_party_soap_client_works_from_the_served_wsdl() {
    let home = Home::new();
    let notice = import_positions(&home, "ZEEP", 1).remove(0);
    let _hub = Hub::start_serving(&home);
    let wsdl = format!("http://127.0.0.1:{}/pagopa/paForNode?wsdl", home.port);
    let out = Command::new("python3")
        .arg(repo().join("tests/data/zeep_client.py"))
        .args([&wsdl, PADOVA, BROKER, STATION, &notice])
        .output()
        .expect("python3 (run ops/setup.sh)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "zeep failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("verify OK 120.50"), "{text}");
    assert!(
        text.contains("getPaymentV2 OK 120.50 1 IT60X0542811101000000123456"),
        "{text}"
    );
}

#[test]
fn concurrent_receipts_are_stored_once_and_duplicates_faulted() {
    let home = Home::new();
    let notices = import_positions(&home, "CONC", 200);
    let _hub = Hub::start_serving(&home);
    // 200 distinct receipts plus a second copy of 50 of them, all at once.
    let mut bodies: Vec<String> = notices
        .iter()
        .enumerate()
        .map(|(i, n)| send_rt_v2(n, &format!("RC-{i}"), "120.50"))
        .collect();
    let copies: Vec<String> = (0..50).map(|i| bodies[i * 4].clone()).collect();
    bodies.extend(copies);
    let start = std::sync::Arc::new(std::sync::Barrier::new(bodies.len()));
    let port = home.port;
    let answers: Vec<String> = bodies
        .into_iter()
        .map(|body| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                post_soap(port, "paSendRTV2", &body)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();
    let ok = answers
        .iter()
        .filter(|a| a.contains("<outcome>OK</outcome>"))
        .count();
    let dup = answers
        .iter()
        .filter(|a| fault_of(a).as_deref() == Some("PAA_RECEIPT_DUPLICATA"))
        .count();
    assert_eq!(
        (ok, dup),
        (200, 50),
        "every receipt stored once, every copy faulted"
    );
    let paid = home
        .positions(&["--limit", "100000"])
        .iter()
        .filter(|p| p["status"] == "paid")
        .count();
    assert_eq!(paid, 200);
    let store = snodo_store::SqliteStore::open(&home.path().join("var/snodo.db")).unwrap();
    use snodo_store::prelude::*;
    let events = store.events_after(0, 10_000).unwrap();
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(
        count("receipt.stored"),
        200,
        "one receipt.stored event per receipt"
    );
    assert_eq!(
        count("position.paid"),
        200,
        "one position.paid per position"
    );
    assert_eq!(count("soap.fault"), 50, "one soap.fault per duplicate");
}

/// The official request samples (SANP2.5.1 examples), as shipped and rewritten to this hub's
/// broker, station, entity and a real position (adapters/specs/SOURCES.md says where they come from).
#[test]
fn the_official_samples_are_answered() {
    let home = Home::new();
    let rows = vec![Row::tari("SAMPLE", 1, 3000)];
    let flow = write_zip(
        home.path(),
        "c_g224-SAMPLES-1_4",
        csv_text(&rows).as_bytes(),
    );
    assert!(home
        .import(&flow, &home.path().join("out"))
        .status
        .success());
    let notice = home.positions(&["--iud", "SAMPLE"])[0]["notice_number"]
        .as_str()
        .unwrap()
        .to_string();
    let _hub = Hub::start_serving(&home);
    let sample = |name: &str| {
        std::fs::read_to_string(
            repo()
                .join("adapters/specs/pagopa/SANP2.5.1/examples")
                .join(name),
        )
        .expect("official sample (adapters/specs)")
    };
    let ours = |xml: &str| {
        xml.replace(
            "<idBrokerPA>77777777777</idBrokerPA>",
            &format!("<idBrokerPA>{BROKER}</idBrokerPA>"),
        )
        .replace(
            "<idStation>77777777777_01</idStation>",
            &format!("<idStation>{STATION}</idStation>"),
        )
        .replace("77777777777", PADOVA)
        .replace("311111111112222222", &notice)
    };

    // As shipped: the sample ids are not this broker's, the receipt lacks transferCategory, the
    // verify sample is in the nodeForPsp namespace.
    let get = call(&home, "paGetPayment", &sample("ReqPaGetPayment.xml"));
    assert_eq!(
        fault_of(&get).as_deref(),
        Some("PAA_ID_INTERMEDIARIO_ERRATO"),
        "{get}"
    );
    let rt = call(&home, "paSendRT", &sample("ReqPaSendRT.xml"));
    assert_eq!(fault_of(&rt).as_deref(), Some("PAA_SINTASSI_XSD"), "{rt}");
    assert!(
        rt.contains("transferCategory"),
        "the fault names the missing element: {rt}"
    );
    let verify = call(
        &home,
        "paVerifyPaymentNotice",
        &sample("ReqPaVerifyPayment.xml"),
    );
    assert_eq!(
        fault_of(&verify).as_deref(),
        Some("PAA_SINTASSI_XSD"),
        "{verify}"
    );
    assert!(
        verify.contains("nodeForPsp.xsd"),
        "the fault names the wrong namespace: {verify}"
    );

    // Rewritten to this hub and made valid: answered OK, and the receipt pays the position.
    let verify = sample("ReqPaVerifyPayment.xml").replace(
        "http://pagopa-api.pagopa.gov.it/node/nodeForPsp.xsd",
        "http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd",
    );
    let verify = call(&home, "paVerifyPaymentNotice", &ours(&verify));
    assert!(
        verify.contains("<outcome>OK</outcome>") && verify.contains("<amount>30.00</amount>"),
        "{verify}"
    );
    let get = call(&home, "paGetPayment", &ours(&sample("ReqPaGetPayment.xml")));
    assert!(
        get.contains("<outcome>OK</outcome>")
            && get.contains("<paymentAmount>30.00</paymentAmount>"),
        "{get}"
    );
    let rt = sample("ReqPaSendRT.xml").replace(
        "</remittanceInformation>",
        "</remittanceInformation><transferCategory>9/0101100IM/</transferCategory>",
    );
    let rt = call(&home, "paSendRT", &ours(&rt));
    assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");
    assert_eq!(home.positions(&["--iud", "SAMPLE"])[0]["status"], "paid");
}

/// Postal accounts (Poste's channels): TARI has a bank and a postal account, MENSA only a
/// postal one. paVerifyPaymentNotice says `allCCP` true when every transfer can go to a postal
/// account (false for a multi-beneficiary notice whose secondary entity has a bank account);
/// paGetPaymentV2 with `transferType` POSTAL credits the postal account, without it the bank one.
#[test]
fn poste_channels_are_given_postal_accounts() {
    const POSTAL: &str = "IT24M0760112100000012345678";
    const POSTAL_ONLY: &str = "IT90L0760103200001017436751";
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config())
        .unwrap()
        .replacen(
            "  iban = \"IT60X0542811101000000123456\"\n",
            &format!("  iban = \"IT60X0542811101000000123456\"\n  postal_iban = \"{POSTAL}\"\n"),
            1,
        )
        .replacen("IT90J0200812100000041234567", POSTAL_ONLY, 1);
    std::fs::write(home.config(), cfg).unwrap();
    let rows = vec![
        Row::tari("POST", 1, 12050),
        Row::tari("ONLY", 2, 3000)
            .set(15, "MENSA")
            .set(18, "9/0107101TS/"),
        Row::tari("MIXED", 3, 10000)
            .set(21, "true")
            .set(22, "00133880252")
            .set(23, "Comune di Feltre")
            .set(24, "IT95O0306911884000100012345")
            .set(31, "9/0101100IM/")
            .set(33, "25.00"),
    ];
    home.import_rows("POSTE1", &rows);
    let notice = |iud: &str| {
        home.positions(&["--iud", iud])[0]["notice_number"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (post, only, mixed) = (notice("POST"), notice("ONLY"), notice("MIXED"));
    let _hub = Hub::start_serving(&home);

    let all_ccp = |n: &str| {
        let ok = call(
            &home,
            "paVerifyPaymentNotice",
            &verify_body(PADOVA, BROKER, STATION, n),
        );
        assert!(ok.contains("<outcome>OK</outcome>"), "{ok}");
        ok.contains("<allCCP>true</allCCP>")
    };
    assert!(all_ccp(&post), "TARI has a postal account");
    assert!(all_ccp(&only), "MENSA's account is postal");
    assert!(!all_ccp(&mixed), "Feltre's share goes to a bank");

    let get = |n: &str, channel: Option<soap::TransferType>| {
        let answer = call(&home, "paGetPaymentV2", &get_payment_v2_for(n, channel));
        assert!(answer.contains("<outcome>OK</outcome>"), "{answer}");
        answer
    };
    let postal = get(&post, Some(soap::TransferType::Postal));
    assert!(
        postal.contains(&format!("<IBAN>{POSTAL}</IBAN>")),
        "{postal}"
    );
    let bank = get(&post, Some(soap::TransferType::PagoPa));
    assert!(
        bank.contains("<IBAN>IT60X0542811101000000123456</IBAN>") && !bank.contains(POSTAL),
        "{bank}"
    );
    let bank = get(&post, None);
    assert!(!bank.contains(POSTAL), "{bank}");
    let only_postal = get(&only, Some(soap::TransferType::Postal));
    assert!(
        only_postal.contains(&format!("<IBAN>{POSTAL_ONLY}</IBAN>")),
        "{only_postal}"
    );
    // A mixed notice: Padova's share to its postal account, Feltre's to its bank.
    let mixed = get(&mixed, Some(soap::TransferType::Postal));
    assert!(
        mixed.contains(&format!("<IBAN>{POSTAL}</IBAN>"))
            && mixed.contains("<IBAN>IT95O0306911884000100012345</IBAN>"),
        "{mixed}"
    );

    // The postal-only notice is paid: the receipt is taken as any other.
    let paid = call(
        &home,
        "paSendRTV2",
        &send_rt_v2(&only, "RT-POSTE-1", "30.00"),
    );
    assert!(paid.contains("<outcome>OK</outcome>"), "{paid}");
}
