//! Receipts of secondary beneficiaries (issue 19, item 3): pagoPA sends every beneficiary of a
//! notice the receipt, with `idPA` the beneficiary and `fiscalCode` the issuer. One of ours named
//! in a transfer gets it stored as a secondary receipt, delivered to its own receipts pipelines
//! that can say so, never as a payment; once only when the issuer is ours too. Every answer is
//! validated against the official XSD.

mod common;
use common::*;
use snodo_adapters::pagopa::{self as soap, Request};
use std::process::Command;
use std::time::Duration;

const FELTRE: &str = "00133880252";
/// An issuer that is none of the hub's entities.
const FOREIGN: &str = "00339370272";

/// POSTs a SOAP body; returns the response body after checking it against the XSD.
fn call(home: &Home, action: &str, body: &str) -> String {
    let text = post_soap(home.port, action, body);
    let file = home
        .path()
        .join(format!("answer-{}.xml", std::process::id()));
    std::fs::write(&file, &text).unwrap();
    let out = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(repo().join("tests/data/soap-paForNode.xsd"))
        .arg(&file)
        .output()
        .expect("xmllint not found: run ops/setup.sh");
    assert!(
        out.status.success(),
        "answer not valid against paForNode.xsd:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A paSendRTV2 sent to `id_pa` for the notice of `issuer`, one transfer per (fiscalCodePA,
/// amount); the payment is their sum.
fn receipt_to(
    id_pa: &str,
    issuer: &str,
    notice: &str,
    receipt_id: &str,
    transfers: &[(&str, u64)],
) -> String {
    let euros = |c: u64| format!("{}.{:02}", c / 100, c % 100);
    let total: u64 = transfers.iter().map(|t| t.1).sum();
    let transfer_list = transfers
        .iter()
        .enumerate()
        .map(|(i, (fc, cents))| soap::ReceiptTransferV2 {
            id_transfer: i as u8 + 1,
            transfer_amount: euros(*cents),
            fiscal_code_pa: (*fc).into(),
            company_name: None,
            destination: soap::ReceiptDestination::Iban("IT60X0542811101000000123456".into()),
            remittance_information: "/RFB/x/TXT/TARI".into(),
            transfer_category: "9/0101100IM/".into(),
            metadata: Vec::new(),
        })
        .collect();
    let receipt = soap::ReceiptV2 {
        receipt_id: receipt_id.into(),
        notice_number: notice.into(),
        fiscal_code: issuer.into(),
        outcome: soap::Outcome::Ok,
        creditor_reference_id: notice[1..].into(),
        payment_amount: euros(total),
        description: "TARI".into(),
        company_name: "Comune emittente".into(),
        debtor: soap::Subject {
            unique_identifier: soap::UniqueIdentifier {
                kind: soap::EntityType::F,
                value: "RSSMRA85T10A562S".into(),
            },
            full_name: "Mario Rossi".into(),
            ..Default::default()
        },
        transfer_list,
        id_psp: "BCITITMM".into(),
        psp_company_name: "Intesa Sanpaolo".into(),
        id_channel: "BCITITMM_01".into(),
        channel_description: "app".into(),
        payment_date_time: Some("2026-11-26T10:00:00".into()),
        ..Default::default()
    };
    soap::render_request(&Request::SendRtV2(soap::SendRtV2Request {
        id_pa: id_pa.into(),
        id_broker_pa: BROKER.into(),
        id_station: STATION.into(),
        receipt,
    }))
}

fn fault(answer: &str) -> Option<&str> {
    let start = answer.find("<faultCode>")? + "<faultCode>".len();
    let end = answer[start..].find("</faultCode>")?;
    Some(&answer[start..start + end])
}

/// Feltre and Padova with a `json` pipeline each (to the receiver), Feltre with a `mypay-push`
/// one (it cannot say "secondary") and a MyPay 1.3 export.
fn home_with_pipelines(rport: u16) -> Home {
    let home = Home::new();
    home.append_config(&format!(
        r#"
[[pipelines]]
name = "feltre-erp"
entity = "c_d530"
from = "receipts"
encode = "json"
to = {{ connector = "http", url = "http://127.0.0.1:{rport}/feltre" }}

[[pipelines]]
name = "feltre-mypay-push"
entity = "c_d530"
from = "receipts"
encode = "mypay-push"
to = {{ connector = "http", url = "http://127.0.0.1:{rport}/feltre-mypay", auth = {{ jwt = {{ secret = "a-shared-secret-of-at-least-32-bytes!", subject = "c_d530", ttl = "60s" }} }} }}

[[pipelines]]
name = "feltre-receipts-export"
entity = "c_d530"
from = "receipts"
encode = {{ codec = "mypay-export", version = "1.3" }}
batch = {{ schedule = "0 0 2 * * *" }}
to = {{ connector = "dir", path = "var/c_d530/export" }}

[[pipelines]]
name = "padova-erp"
entity = "c_g224"
from = "receipts"
encode = "json"
to = {{ connector = "http", url = "http://127.0.0.1:{rport}/padova" }}
"#
    ));
    let o = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    home
}

/// The JSON bodies the receiver got on `path`.
fn got(seen: &Received, path: &str) -> Vec<serde_json::Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p == path)
        .map(|(_, _, body)| serde_json::from_str(body).unwrap())
        .collect()
}

/// Writes Feltre's export now; the data rows of its zips as (tipoDovuto, receipt id).
fn feltre_export(home: &Home) -> Vec<(String, String)> {
    let o = home.snodo(&[
        "export",
        "-c",
        "config.toml",
        "--pipeline",
        "feltre-receipts-export",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let dir = home.path().join("var/c_d530/export");
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "zip") {
            continue;
        }
        let text = unzip_text(&path);
        let mut lines = text.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap()
            .split(';')
            .map(|h| h.trim_matches('"').to_string())
            .collect();
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        let (dt, id) = (col("tipoDovuto"), col("identificativoMessaggioRicevuta"));
        for l in lines {
            let f: Vec<&str> = l.split(';').map(|f| f.trim_matches('"')).collect();
            rows.push((f[dt].to_string(), f[id].to_string()));
        }
    }
    rows
}

fn feltre_receipts(home: &Home) -> Vec<serde_json::Value> {
    let o = home.snodo(&["receipts", "-c", "config.toml", "--entity", "c_d530"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn metrics(home: &Home) -> String {
    let o = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{}/metrics", home.port)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_foreign_issuer_s_receipt_reaches_feltre_as_secondary_and_only_feltre() {
    let (rport, seen) = accepting_receiver();
    let home = home_with_pipelines(rport);
    let _hub = Hub::start_serving(&home);
    let notice = "347000000000000124";

    let rt = receipt_to(
        FELTRE,
        FOREIGN,
        notice,
        "RCPT-SEC-1",
        &[(FOREIGN, 8000), (FELTRE, 2000)],
    );
    let ok = call(&home, "paSendRTV2", &rt);
    assert!(ok.contains("<outcome>OK</outcome>"), "{ok}");

    // Feltre's json system hears it, saying whose notice it is.
    assert!(wait_for(10, || got(&seen, "/feltre").len() == 1));
    let doc = &got(&seen, "/feltre")[0];
    assert_eq!(doc["receipt_id"], "RCPT-SEC-1");
    assert_eq!(doc["entity"]["ipa_code"], "c_d530");
    assert_eq!(doc["entity"]["fiscal_code"], FELTRE);
    assert_eq!(doc["entity"]["role"], "secondary");
    assert_eq!(doc["entity"]["issuer_fiscal_code"], FOREIGN);
    assert_eq!(doc["iud"], serde_json::Value::Null);
    assert_eq!(doc["issue"], serde_json::Value::Null);

    // The same receipt again: a duplicate, delivered once.
    let again = call(&home, "paSendRTV2", &rt);
    assert_eq!(fault(&again), Some("PAA_RECEIPT_DUPLICATA"), "{again}");

    // A receipt of that issuer naming Feltre in no transfer is not Feltre's.
    let not_ours = call(
        &home,
        "paSendRTV2",
        &receipt_to(FELTRE, FOREIGN, notice, "RCPT-SEC-2", &[(FOREIGN, 10000)]),
    );
    assert_eq!(
        fault(&not_ours),
        Some("PAA_ID_DOMINIO_ERRATO"),
        "{not_ours}"
    );
    assert!(
        not_ours.contains("fiscalCodePA of no transfer"),
        "{not_ours}"
    );

    // Stored for Feltre as secondary, unflagged, no position behind it.
    let listed = feltre_receipts(&home);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["receipt_id"], "RCPT-SEC-1");
    assert_eq!(listed[0]["issuer"], FOREIGN);
    assert_eq!(listed[0]["position_id"], serde_json::Value::Null);
    assert_eq!(listed[0]["issue"], serde_json::Value::Null);
    let events = store_events(&home, "receipt.secondary");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].entity, "c_d530");
    assert_eq!(events[0].payload["issuer"], FOREIGN);
    assert!(store_events(&home, "receipt.stored").is_empty());
    assert!(store_events(&home, "position.paid").is_empty());
    let m = metrics(&home);
    for line in [
        "snodo_receipts_stored_total{entity=\"c_d530\"} 1",
        "snodo_receipts_secondary_total{entity=\"c_d530\"} 1",
        "snodo_receipts_flagged_total{entity=\"c_d530\"} 0",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
    assert!(
        !m.contains("snodo_receipts_stored_total{entity=\"c_g224\"}"),
        "{m}"
    );

    // MyPay's 1.3 export lists it as EXPORT_ENTE_SECONDARIO, one row for Feltre's transfer.
    assert_eq!(
        feltre_export(&home),
        [(
            "EXPORT_ENTE_SECONDARIO".to_string(),
            "RCPT-SEC-1".to_string()
        )]
    );
    // Nobody else: not Padova, not a format that would pass it off as Feltre's payment.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(got(&seen, "/feltre").len(), 1);
    assert!(got(&seen, "/padova").is_empty());
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|(p, _, _)| p != "/feltre-mypay"));

    // `snodo sim --secondary-receipt` rehearses the same: a fresh receipt of a foreign notice.
    let out = stdout(&run_sim(
        &home,
        &["-c", "config.toml", "--secondary-receipt", FELTRE],
    ));
    assert!(out.contains(&format!("to={FELTRE} answer=OK")), "{out}");
    assert!(out.contains(&format!("notice={FOREIGN};")), "{out}");
    assert!(wait_for(10, || got(&seen, "/feltre").len() == 2));
    let doc = &got(&seen, "/feltre")[1];
    assert_eq!(doc["entity"]["role"], "secondary");
    assert_eq!(doc["entity"]["issuer_fiscal_code"], FOREIGN);
    assert_eq!(feltre_receipts(&home).len(), 2);
}

#[test]
fn when_the_issuer_is_ours_feltre_gets_the_receipt_once() {
    let (rport, seen) = accepting_receiver();
    let home = home_with_pipelines(rport);
    // A Padova TARI of 100.00, 25.00 of it to Feltre (MyPay 1_4's secondary entity).
    home.import_rows(
        "SEC1",
        &[Row::tari("MULTI", 3, 10000)
            .set(21, "true")
            .set(22, FELTRE)
            .set(23, "Comune di Feltre")
            .set(24, "IT95O0306911884000100012345")
            .set(31, "9/0101100IM/")
            .set(33, "25.00")],
    );
    let multi = &home.positions(&["--iud", "MULTI"])[0];
    let notice = multi["notice_number"].as_str().unwrap().to_string();
    let _hub = Hub::start_serving(&home);
    let transfers = [(PADOVA, 7500), (FELTRE, 2500)];

    // pagoPA's copy for Feltre may come first: acknowledged and stored, delivered by Padova's.
    let feltre_copy = receipt_to(FELTRE, PADOVA, &notice, "RCPT-MULTI", &transfers);
    let ok = call(&home, "paSendRTV2", &feltre_copy);
    assert!(ok.contains("<outcome>OK</outcome>"), "{ok}");
    let ok = call(
        &home,
        "paSendRTV2",
        &receipt_to(PADOVA, PADOVA, &notice, "RCPT-MULTI", &transfers),
    );
    assert!(ok.contains("<outcome>OK</outcome>"), "{ok}");
    let again = call(&home, "paSendRTV2", &feltre_copy);
    assert_eq!(fault(&again), Some("PAA_RECEIPT_DUPLICATA"), "{again}");

    assert!(wait_for(10, || got(&seen, "/padova").len() == 1
        && got(&seen, "/feltre").len() == 1));
    let padova = &got(&seen, "/padova")[0];
    assert_eq!(padova["entity"]["role"], "issuer");
    assert_eq!(padova["iud"], "MULTI");
    let feltre = &got(&seen, "/feltre")[0];
    assert_eq!(feltre["entity"]["role"], "secondary");
    assert_eq!(feltre["entity"]["fiscal_code"], FELTRE);
    assert_eq!(feltre["entity"]["issuer_fiscal_code"], PADOVA);
    assert_eq!(
        feltre["iud"],
        serde_json::Value::Null,
        "Padova's IUD is not Feltre's"
    );
    assert_eq!(
        feltre_export(&home),
        [(
            "EXPORT_ENTE_SECONDARIO".to_string(),
            "RCPT-MULTI".to_string()
        )],
        "one set of rows, not one per copy"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(got(&seen, "/feltre").len(), 1, "delivered once");
    assert_eq!(got(&seen, "/padova").len(), 1);

    // Padova's position is paid by Padova's receipt alone; Feltre's copy is kept as secondary.
    assert_eq!(home.positions(&["--iud", "MULTI"])[0]["status"], "paid");
    assert_eq!(store_events(&home, "position.paid").len(), 1);
    let listed = feltre_receipts(&home);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["issuer"], PADOVA);
    let m = metrics(&home);
    assert!(
        m.contains("snodo_receipts_secondary_total{entity=\"c_d530\"} 1"),
        "{m}"
    );
}

#[test]
fn snodo_sim_sends_each_beneficiary_its_copy() {
    let (rport, seen) = accepting_receiver();
    let home = home_with_pipelines(rport);
    home.import_rows(
        "SEC2",
        &[Row::tari("MULTI2", 4, 10000)
            .set(21, "true")
            .set(22, FELTRE)
            .set(23, "Comune di Feltre")
            .set(24, "IT95O0306911884000100012345")
            .set(31, "9/0101100IM/")
            .set(33, "25.00")],
    );
    let notice = home.positions(&["--iud", "MULTI2"])[0]["notice_number"]
        .as_str()
        .unwrap()
        .to_string();
    let notices = home.path().join("notices.txt");
    std::fs::write(&notices, format!("{PADOVA};{notice}\n")).unwrap();
    let _hub = Hub::start_serving(&home);
    let log = home.path().join("receipts.log");
    run_sim(
        &home,
        &[
            "-c",
            "config.toml",
            "--notices",
            notices.to_str().unwrap(),
            "--beneficiary-copies",
            "--no-ledger",
            "--receipts-log",
            log.to_str().unwrap(),
        ],
    );
    assert_eq!(home.positions(&["--iud", "MULTI2"])[0]["status"], "paid");
    // Feltre's copy was sent and kept as secondary, and Feltre hears of the payment once.
    let listed = feltre_receipts(&home);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["issuer"], PADOVA);
    assert!(wait_for(10, || got(&seen, "/feltre").len() == 1));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(got(&seen, "/feltre").len(), 1);
    assert_eq!(got(&seen, "/feltre")[0]["entity"]["role"], "secondary");
}
