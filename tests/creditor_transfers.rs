//! Positions that carry their own transfer list (multi-beneficiary up to 5, postal accounts,
//! digital revenue stamps with metadata) and stamp-duty debt types, against a running hub:
//! what the API takes and refuses, what the node is answered (every answer checked against the
//! XSD), and the receipt `snodo sim` pays with, delivered with its stamp.

mod common;
use common::*;
use serde_json::{json, Value};
use snodo_adapters::pagopa::{self as soap, Request};

fn activation(notice: &str, v2: bool, channel: Option<soap::TransferType>) -> String {
    let r = soap::GetPaymentRequest {
        id_pa: PADOVA.into(),
        id_broker_pa: BROKER.into(),
        id_station: STATION.into(),
        qr_code: soap::QrCode {
            fiscal_code: PADOVA.into(),
            notice_number: notice.into(),
        },
        transfer_type: channel,
        ..Default::default()
    };
    soap::render_request(&if v2 {
        Request::GetPaymentV2(r)
    } else {
        Request::GetPayment(r)
    })
}

const HASH: &str = "Y2VydGlmaWNhdG8gZGkgcmVzaWRlbnphIG4uIDEyMw==";
const FELTRE_POSTAL: &str = "IT24M0760112100000012345678";
const VENETO_POSTAL: &str = "IT90L0760103200001017436751";

fn create(home: &Home, body: &Value) -> (u16, Value) {
    let r = http(
        home.port,
        "POST",
        "/api/v1/entities/c_g224/positions",
        Some(KEY_PADOVA),
        &[],
        Some(&body.to_string()),
    );
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

/// `snodo sim` pays `notice` (with `extra` flags); the body the entity's receiver got for it.
fn pay_and_receive(home: &Home, notice: &str, extra: &[&str], seen: &Received) -> String {
    let list = home.path().join("notices.txt");
    std::fs::write(&list, format!("{PADOVA};{notice}\n")).unwrap();
    let mut args = vec![
        "-c",
        "config.toml",
        "--notices",
        list.to_str().unwrap(),
        "--no-ledger",
    ];
    args.extend_from_slice(extra);
    let o = run_sim(home, &args);
    assert!(stdout(&o).contains("ok=1"), "{}", stdout(&o));
    let pushed = || {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(_, _, b)| b.contains(notice))
            .map(|(_, _, b)| b.clone())
    };
    assert!(
        wait_for(20, || pushed().is_some()),
        "the receipt of {notice} was not pushed"
    );
    pushed().unwrap_or_default()
}

#[test]
fn a_four_transfer_position_with_a_stamp_is_answered_and_paid() {
    let (rport, seen) = accepting_receiver();
    let home = Home::new();
    // A certificate office: its fee is a stamp duty (the payer's province, the document's hash).
    let cfg = std::fs::read_to_string(home.config()).unwrap().replacen(
        "  [[entities.debt_types]]\n  code = \"MENSA\"",
        "  [[entities.debt_types]]\n  code = \"CERT\"\n  description = \"Certificati\"\n  iban = \"IT60X0542811101000000123456\"\n  taxonomy = \"9/0101100IM/\"\n  stamp_duty = \"01\"\n\n  [[entities.debt_types]]\n  code = \"MENSA\"",
        1,
    );
    std::fs::write(home.config(), cfg).unwrap();
    home.append_config(&format!(
        r#"
[[pipelines]]
name = "padova-erp"
entity = "c_g224"
from = "receipts"
encode = "json"
to = {{ connector = "http", url = "http://127.0.0.1:{rport}/erp" }}
"#
    ));
    let o = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let hub = Hub::start_serving(&home);

    // Four transfers: Padova's own, Feltre (bank and postal), a stamp, the Region (postal only).
    let mut body = api_position("MULTI-4", 10_000);
    body["transfers"] = json!([
        {"importo": "50.00", "metadata": [{"key": "capitolo", "value": "3010"}]},
        {"codiceFiscaleEnte": "00133880252", "denominazioneEnte": "Comune di Feltre",
         "ibanAccredito": "IT95O0306911884000100012345", "ibanPostale": FELTRE_POSTAL,
         "importo": "30.00", "causaleVersamento": "Quota Feltre",
         "datiSpecificiRiscossione": "9/0101107TS/"},
        {"codiceFiscaleEnte": "80007580279", "denominazioneEnte": "Regione del Veneto",
         "marcaDaBollo": {"hashDocumento": HASH, "provinciaResidenza": "PD"}, "importo": "16.00"},
        {"codiceFiscaleEnte": "80007580279", "ibanPostale": VENETO_POSTAL, "importo": "4.00",
         "metadata": [{"key": "k1", "value": "v1"}, {"key": "k2", "value": "v2"}]}
    ]);
    let (status, made) = create(&home, &body);
    assert_eq!(status, 201, "{made}");
    let notice = made["noticeNumber"].as_str().unwrap().to_string();

    // The verify: no allCCP (a stamp is no postal account).
    let v = node_call(
        &home,
        "paVerifyPaymentNotice",
        &verify_body(PADOVA, BROKER, STATION, &notice),
    );
    assert!(v.contains("<outcome>OK</outcome>"), "{v}");
    assert!(v.contains("<allCCP>false</allCCP>"), "{v}");
    // V2: every transfer, its beneficiary, destination and metadata.
    let a = node_call(&home, "paGetPaymentV2", &activation(&notice, true, None));
    assert!(a.contains("<outcome>OK</outcome>"), "{a}");
    assert_eq!(a.matches("<transfer>").count(), 4, "{a}");
    for part in [
        "<idTransfer>4</idTransfer>",
        "<transferAmount>30.00</transferAmount>",
        "<IBAN>IT95O0306911884000100012345</IBAN>",
        "<companyName>Comune di Feltre</companyName>",
        "<remittanceInformation>Quota Feltre</remittanceInformation>",
        "<transferCategory>9/0101107TS/</transferCategory>",
        "<richiestaMarcaDaBollo>",
        &format!("<hashDocumento>{HASH}</hashDocumento>"),
        "<provinciaResidenza>PD</provinciaResidenza>",
        &format!("<IBAN>{VENETO_POSTAL}</IBAN>"),
        "<key>capitolo</key>",
        "<value>3010</value>",
        "<key>k2</key>",
    ] {
        assert!(a.contains(part), "{part} not in {a}");
    }
    // A Poste channel: Feltre's postal account.
    let a = node_call(
        &home,
        "paGetPaymentV2",
        &activation(&notice, true, Some(soap::TransferType::Postal)),
    );
    assert!(a.contains(&format!("<IBAN>{FELTRE_POSTAL}</IBAN>")), "{a}");
    // V1 has no stamp: refused, saying so.
    let a = node_call(&home, "paGetPayment", &activation(&notice, false, None));
    assert_eq!(fault_of(&a).as_deref(), Some("PAA_SEMANTICA"), "{a}");
    assert!(a.contains("paGetPaymentV2"), "{a}");

    // The simulator pays it; the json receipt carries the stamp's MBD document.
    let pushed: Value = serde_json::from_str(&pay_and_receive(&home, &notice, &[], &seen)).unwrap();
    let transfers = pushed["transfers"].as_array().expect("transfers");
    assert_eq!(transfers.len(), 4, "{pushed}");
    assert!(
        transfers
            .iter()
            .any(|t| t["mbd_attachment"].as_str().is_some_and(|m| !m.is_empty())),
        "{pushed}"
    );

    // Every transfer to a postal account: allCCP, and `snodo sim --postal` pays it as a Poste
    // channel would, the receipt naming the postal accounts.
    let mut poste = api_position("POSTE-1", 3_000);
    poste["transfers"] = json!([
        {"importo": "20.00", "ibanPostale": VENETO_POSTAL},
        {"codiceFiscaleEnte": "00133880252", "ibanAccredito": "IT95O0306911884000100012345",
         "ibanPostale": FELTRE_POSTAL, "importo": "10.00"}
    ]);
    let (status, made) = create(&home, &poste);
    assert_eq!(status, 201, "{made}");
    let poste_notice = made["noticeNumber"].as_str().unwrap().to_string();
    let v = node_call(
        &home,
        "paVerifyPaymentNotice",
        &verify_body(PADOVA, BROKER, STATION, &poste_notice),
    );
    assert!(v.contains("<allCCP>true</allCCP>"), "{v}");
    let body = pay_and_receive(&home, &poste_notice, &["--postal"], &seen);
    assert!(
        body.contains(FELTRE_POSTAL) && body.contains(VENETO_POSTAL),
        "{body}"
    );
    assert!(!body.contains("IT95O0306911884000100012345"), "{body}");
    drop(hub);
}

#[test]
fn stamp_duty_debt_types_and_broken_lists_are_refused_with_their_rule() {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap().replacen(
        "  [[entities.debt_types]]\n  code = \"MENSA\"",
        "  [[entities.debt_types]]\n  code = \"CERT\"\n  description = \"Certificati\"\n  iban = \"IT60X0542811101000000123456\"\n  taxonomy = \"9/0101100IM/\"\n  stamp_duty = \"01\"\n\n  [[entities.debt_types]]\n  code = \"MENSA\"",
        1,
    );
    std::fs::write(home.config(), cfg).unwrap();
    // A flow has no column for the document: MyPay's own refusal of a stamp in a flow.
    let flow = write_zip(
        home.path(),
        "c_g224-CERT1-1_4",
        csv_text(&[Row::tari("CERT-FLOW", 1, 1600).set(15, "CERT")]).as_bytes(),
    );
    let out = home.path().join("out");
    let o = home.import(&flow, &out);
    assert!(
        stdout(&o).contains("accepted=0 rejected=1"),
        "{}",
        stdout(&o)
    );
    let scarti = unzip_text(&out.join("c_g224-CERT1-1_4_SCARTI.zip"));
    assert!(
        scarti.contains("PAA_IMPORT_TIPO_DOVUTO_NON_VALIDO_MARCA_DA_BOLLO"),
        "{scarti}"
    );
    let hub = Hub::start_serving(&home);

    // Through the API with the document's hash and the payer's province: a stamp for it.
    let mut cert = api_position("CERT-1", 1600);
    cert["tipoDovuto"] = json!("CERT");
    cert["hashDocumento"] = json!(HASH);
    cert["provinciaPagatore"] = json!("VR");
    cert["nazionePagatore"] = json!("IT");
    let (status, made) = create(&home, &cert);
    assert_eq!(status, 201, "{made}");
    let notice = made["noticeNumber"].as_str().unwrap().to_string();
    let a = node_call(&home, "paGetPaymentV2", &activation(&notice, true, None));
    assert!(
        a.contains(&format!("<hashDocumento>{HASH}</hashDocumento>")),
        "{a}"
    );
    assert!(
        a.contains("<provinciaResidenza>VR</provinciaResidenza>"),
        "{a}"
    );
    assert!(!a.contains("<IBAN>"), "{a}");
    let mut no_hash = cert.clone();
    no_hash["IUD"] = json!("CERT-2");
    no_hash.as_object_mut().unwrap().remove("hashDocumento");
    let (status, problem) = create(&home, &no_hash);
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["code"], "PAA_IMPORT_TIPO_DOVUTO_NON_VALIDO_MARCA_DA_BOLLO",
        "{problem}"
    );

    // Broken lists: every rule named with its JSON path.
    let mut bad = api_position("BAD-1", 10_000);
    bad["transfers"] = json!([
        {"codiceFiscaleEnte": "00644060287", "importo": "50.00"},
        {"importo": "30.00", "ibanAccredito": "IT00X0000000000000000000000"},
        {"codiceFiscaleEnte": "00133880252", "ibanPostale": "IT95O0306911884000100012345", "importo": "10.00",
         "metadata": [{"key": "", "value": "x"}]}
    ]);
    let (status, problem) = create(&home, &bad);
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    for f in [
        "transfers[1].ibanAccredito",
        "transfers[0].codiceFiscaleEnte",
        "transfers[1].codiceFiscaleEnte",
        "transfers[2].ibanPostale",
        "transfers[2].metadata[0].key",
        "transfers",
    ] {
        assert!(fields.contains(&f), "{f} not in {problem}");
    }
    // Six transfers are one too many, and nothing was stored of any of these.
    let mut six = api_position("BAD-2", 600);
    six["transfers"] = json!((0..6).map(|i| if i == 0 { json!({"importo": "1.00"}) } else {
        json!({"codiceFiscaleEnte": "00133880252", "ibanAccredito": "IT95O0306911884000100012345", "importo": "1.00"})
    }).collect::<Vec<_>>());
    let (status, problem) = create(&home, &six);
    assert_eq!(status, 422, "{problem}");
    assert!(problem.to_string().contains("at most 5"), "{problem}");
    for iud in ["BAD-1", "BAD-2", "CERT-2"] {
        assert!(
            home.positions(&["--iud", iud]).is_empty(),
            "{iud} was stored"
        );
    }
    drop(hub);
}
