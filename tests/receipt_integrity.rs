//! Nothing lost, nothing invented (issue 15): a receipt id resent with other content is kept
//! apart and never delivered, bytes that are not UTF-8 are refused before anything is stored,
//! flagged receipts wait for an operator where the format cannot say what is wrong, and an
//! export goes on without a receipt it cannot encode.

mod common;
use common::*;
use std::time::Duration;

const ADMIN: &str = "adm1n-t0ken-of-the-receipt-integrity-tests";

/// The demo home, with the admin API on and `extra` pipelines.
fn home_with(extra: &str) -> Home {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap().replacen(
        "admin_token = \"${SNODO_ADMIN_TOKEN:-}\"",
        &format!("admin_token = \"{ADMIN}\""),
        1,
    );
    assert!(cfg.contains(ADMIN), "the demo config sets http.admin_token");
    std::fs::write(home.config(), format!("{cfg}\n{extra}")).unwrap();
    let o = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    home
}

fn notice(home: &Home, iud: &str) -> String {
    home.positions(&["--iud", iud])[0]["notice_number"]
        .as_str()
        .unwrap()
        .to_string()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn receipts(home: &Home, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["receipts", "-c", "config.toml", "--entity", "c_g224"];
    args.extend_from_slice(extra);
    let o = home.snodo(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    json_lines(&stdout(&o))
}

/// (HTTP status, body) of an admin call.
fn admin(home: &Home, method: &str, path: &str) -> (String, String) {
    admin_call(home.port, ADMIN, method, path)
}

fn metrics(home: &Home) -> String {
    let o = std::process::Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{}/metrics", home.port)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The data rows' receipt ids of every export zip in `dir`, file by file (oldest first).
fn exported(dir: &std::path::Path) -> Vec<Vec<String>> {
    let mut zips: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    zips.retain(|p| p.extension().is_some_and(|e| e == "zip"));
    zips.sort();
    zips.iter()
        .map(|z| {
            let text = unzip_text(z);
            let mut lines = text.lines();
            let header: Vec<&str> = lines.next().unwrap().split(';').collect();
            let col = header
                .iter()
                .position(|h| h.trim_matches('"') == "identificativoMessaggioRicevuta")
                .expect("the receipt id column");
            lines
                .map(|l| l.split(';').nth(col).unwrap().trim_matches('"').to_string())
                .collect()
        })
        .collect()
}

fn export_now(home: &Home) -> String {
    let o = home.snodo(&[
        "export",
        "-c",
        "config.toml",
        "--pipeline",
        "padova-receipts-export",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

#[test]
fn a_receipt_id_resent_with_other_content_is_kept_apart_and_pushed_once() {
    let (rport, seen) = accepting_receiver();
    let home = home_with(&format!(
        r#"
[[pipelines]]
name = "padova-erp"
entity = "c_g224"
from = "receipts"
encode = "json"
to = {{ connector = "http", url = "http://127.0.0.1:{rport}/erp" }}
"#
    ));
    home.import_rows("CONF1", &[Row::tari("C1", 1, 12050)]);
    let n = notice(&home, "C1");
    let _hub = Hub::start_serving(&home);

    let first = send_rt_v2(&n, "RCPT-CONF-1", "120.50");
    let rt = post_soap(home.port, "paSendRTV2", &first);
    assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");
    // The same receipt id, another amount: refused as a duplicate, but kept for operators.
    let rt = post_soap(
        home.port,
        "paSendRTV2",
        &send_rt_v2(&n, "RCPT-CONF-1", "99.00"),
    );
    assert!(rt.contains("<outcome>KO</outcome>"), "{rt}");
    assert!(
        rt.contains("<faultCode>PAA_RECEIPT_DUPLICATA</faultCode>"),
        "{rt}"
    );
    // The first content again: the silent duplicate it always was.
    let rt = post_soap(home.port, "paSendRTV2", &first);
    assert!(
        rt.contains("<faultCode>PAA_RECEIPT_DUPLICATA</faultCode>"),
        "{rt}"
    );

    let all = receipts(&home, &[]);
    assert_eq!(
        all.len(),
        2,
        "one receipt and one conflicting copy: {all:?}"
    );
    let flagged = receipts(&home, &["--flagged"]);
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert_eq!(flagged[0]["issue"], "conflict");
    assert_eq!(flagged[0]["amount_cents"], 9900);
    let original = all
        .iter()
        .find(|r| r["issue"].is_null())
        .expect("the first");
    assert_eq!(original["amount_cents"], 12050);
    assert_eq!(flagged[0]["conflict_of"], original["id"]);
    let conflicts = store_events(&home, "receipt.conflict");
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].payload["original"], original["id"]);
    assert_eq!(conflicts[0].payload["amount_cents"], 9900);
    assert_eq!(store_events(&home, "receipt.stored").len(), 1);
    assert_eq!(
        home.positions(&["--iud", "C1"])[0]["status"],
        "paid",
        "paid by the first"
    );

    // The ERP hears of the payment once, with the first content.
    assert!(wait_for(10, || !seen.lock().unwrap().is_empty()));
    std::thread::sleep(Duration::from_millis(1500));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].1, "RCPT-CONF-1");
    let json: serde_json::Value = serde_json::from_str(&seen[0].2).unwrap();
    assert_eq!(json["receipt_id"], "RCPT-CONF-1");
    assert_eq!(json["amount"]["cents"], 12050);
    assert!(json["issue"].is_null());
}

#[test]
fn bytes_that_are_not_utf8_are_refused_before_anything_is_stored() {
    let home = home_with("");
    home.import_rows("UTF1", &[Row::tari("U1", 1, 500)]);
    let n = notice(&home, "U1");
    let _hub = Hub::start_serving(&home);
    let good = send_rt_v2(&n, "RCPT-UTF-1", "5.00");
    let body_at = good.find("<soapenv:Body>").expect("a Body");
    let places = [
        (
            "comment",
            format!("{}<!-- caf\u{e8} -->{}", &good[..body_at], &good[body_at..]),
        ),
        (
            "attribute",
            good.replacen("<soapenv:Body>", "<soapenv:Body a=\"caf\u{e8}\">", 1),
        ),
        (
            "Header",
            good.replacen(
                "<soapenv:Header/>",
                "<soapenv:Header><h>caf\u{e8}</h></soapenv:Header>",
                1,
            ),
        ),
    ];
    for (place, doc) in places {
        assert_ne!(doc, good, "{place}: the marker is in");
        // è as ISO-8859-1: the lone byte E8, not UTF-8.
        let bytes: Vec<u8> = doc
            .chars()
            .flat_map(|c| match c {
                '\u{e8}' => vec![0xE8],
                c => c.to_string().into_bytes(),
            })
            .collect();
        let rt = post_soap_bytes(home.port, "paSendRTV2", &bytes);
        assert!(rt.contains("paSendRTV2Response"), "{place}: {rt}");
        assert!(rt.contains("<outcome>KO</outcome>"), "{place}: {rt}");
        assert!(
            rt.contains("<faultCode>PAA_SINTASSI_XSD</faultCode>"),
            "{place}: {rt}"
        );
        assert!(rt.contains("is not UTF-8"), "{place}: {rt}");
    }
    assert!(receipts(&home, &[]).is_empty(), "nothing stored");
    assert!(store_events(&home, "receipt.stored").is_empty());
    assert_eq!(home.positions(&["--iud", "U1"])[0]["status"], "active");
    // The same receipt, well-formed, pays.
    let rt = post_soap(home.port, "paSendRTV2", &good);
    assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");
    assert_eq!(receipts(&home, &[]).len(), 1);
}

#[test]
fn flagged_receipts_wait_for_an_operator_where_the_format_cannot_say_so() {
    let (rport, seen) = accepting_receiver();
    // json says what is wrong; mypay-push and the demo's mypay-export cannot.
    let home = home_with(&format!(
        r#"
[[pipelines]]
name = "padova-erp"
entity = "c_g224"
from = "receipts"
encode = "json"
to = {{ connector = "http", url = "http://127.0.0.1:{rport}/json" }}

[[pipelines]]
name = "padova-mypay-push"
entity = "c_g224"
from = "receipts"
encode = "mypay-push"
to = {{ connector = "http", url = "http://127.0.0.1:{rport}/mypay", auth = {{ jwt = {{ secret = "a-shared-secret-of-at-least-32-bytes!", subject = "c_g224", ttl = "60s" }} }} }}
"#
    ));
    home.import_rows(
        "HOLD1",
        &[
            Row::tari("H1", 1, 1000),
            Row::tari("H2", 2, 2000),
            Row::tari("H3", 3, 3000),
        ],
    );
    let (n1, n2, n3) = (
        notice(&home, "H1"),
        notice(&home, "H2"),
        notice(&home, "H3"),
    );
    let o = home.import(
        &write_zip(
            home.path(),
            "c_g224-HOLD2-1_4",
            csv_text(&[Row::tari("H1", 1, 1000).set(20, "").set(34, "A")]).as_bytes(),
        ),
        &home.path().join("out"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(home.positions(&["--iud", "H1"])[0]["status"], "annulled");
    let export_dir = home.path().join("var/c_g224/export");
    let _hub = Hub::start_serving(&home);

    // A receipt for the annulled position, one with the wrong amount, one that pays.
    let rt = post_soap(
        home.port,
        "paSendRTV2",
        &send_rt_v2(&n1, "RCPT-ANN", "10.00"),
    );
    assert!(
        rt.contains("<faultCode>PAA_PAGAMENTO_ANNULLATO</faultCode>"),
        "{rt}"
    );
    let rt = post_soap(
        home.port,
        "paSendRTV2",
        &send_rt_v2(&n2, "RCPT-AMT", "1.00"),
    );
    assert!(rt.contains("<faultCode>PAA_SEMANTICA</faultCode>"), "{rt}");
    let rt = post_soap(
        home.port,
        "paSendRTV2",
        &send_rt_v2(&n3, "RCPT-OK", "30.00"),
    );
    assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");

    let pushed = |path: &str, id: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(p, k, _)| p == path && k == id)
            .count()
    };
    // json: every receipt, the flag in `issue`. mypay-push: only the one that paid.
    let all_json = || ["RCPT-ANN", "RCPT-AMT", "RCPT-OK"].map(|id| pushed("/json", id));
    assert!(wait_for(10, || all_json() == [1, 1, 1]
        && pushed("/mypay", "RCPT-OK") == 1));
    std::thread::sleep(Duration::from_millis(1500));
    let flag = |id: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(p, k, _)| p == "/json" && k == id)
            .map(|(_, _, b)| serde_json::from_str::<serde_json::Value>(b).unwrap()["issue"].clone())
            .next()
            .unwrap()
    };
    assert_eq!(flag("RCPT-ANN"), "annulled");
    assert_eq!(flag("RCPT-AMT"), "amount_mismatch");
    assert!(flag("RCPT-OK").is_null());
    assert_eq!(pushed("/mypay", "RCPT-ANN"), 0);
    assert_eq!(pushed("/mypay", "RCPT-AMT"), 0);
    assert!(export_now(&home).contains("wrote "));
    assert_eq!(exported(&export_dir), [["RCPT-OK"]]);

    // Operators see what waits, from the CLI, the admin API and /metrics.
    let held = receipts(&home, &["--held"]);
    let ids: Vec<&str> = held
        .iter()
        .map(|r| r["receipt_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["RCPT-AMT", "RCPT-ANN"]);
    assert_eq!(
        held[1]["held"],
        serde_json::json!(["padova-mypay-push", "padova-receipts-export"])
    );
    let flagged = receipts(&home, &["--flagged"]);
    assert_eq!(flagged.len(), 2);
    assert_eq!(flagged[1]["issue"], "annulled");
    assert_eq!(flagged[1]["held"], held[1]["held"]);
    let (code, body) = admin(&home, "GET", "/admin/receipts?entity=c_g224&held=true");
    assert_eq!(code, "200", "{body}");
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .len(),
        2
    );
    assert!(
        metrics(&home)
            .lines()
            .any(|l| l == "snodo_receipts_held{entity=\"c_g224\"} 2"),
        "{}",
        metrics(&home)
    );

    // Released from the CLI: one push, and the next export lists it.
    let annulled = held[1]["id"].as_i64().unwrap().to_string();
    let o = home.snodo(&["receipts", "release", &annulled, "-c", "config.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let done = json_lines(&stdout(&o));
    assert_eq!(done[0]["review"], "released");
    assert_eq!(
        done[0]["pipelines"],
        serde_json::json!(["padova-mypay-push", "padova-receipts-export"])
    );
    assert!(wait_for(10, || pushed("/mypay", "RCPT-ANN") == 1));
    assert!(export_now(&home).contains("wrote "));
    assert_eq!(exported(&export_dir), [["RCPT-OK"], ["RCPT-ANN"]]);
    // Once only.
    let o = home.snodo(&["receipts", "release", &annulled, "-c", "config.toml"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("released already"), "{}", stderr(&o));

    // Dismissed through the admin API: never delivered to those formats.
    let wrong = held[0]["id"].as_i64().unwrap();
    let (code, body) = admin(&home, "POST", &format!("/admin/receipts/{wrong}/dismiss"));
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("\"review\":\"dismissed\""), "{body}");
    let (code, body) = admin(&home, "POST", &format!("/admin/receipts/{wrong}/release"));
    assert_eq!(code, "409", "{body}");
    let (code, body) = admin(&home, "POST", "/admin/receipts/999999/release");
    assert_eq!(code, "404", "{body}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(pushed("/mypay", "RCPT-AMT"), 0);
    assert_eq!(pushed("/mypay", "RCPT-ANN"), 1, "exactly one");
    assert_eq!(pushed("/json", "RCPT-ANN"), 1, "json had it already, once");
    assert!(receipts(&home, &["--held"]).is_empty());
    assert!(
        !metrics(&home).contains("snodo_receipts_held{"),
        "nothing held any more"
    );
    export_now(&home);
    let files = exported(&export_dir);
    assert!(
        files.iter().flatten().all(|id| id != "RCPT-AMT"),
        "{files:?}"
    );
    let released = store_events(&home, "receipt.released");
    assert_eq!(released.len(), 1);
    assert_eq!(store_events(&home, "receipt.dismissed").len(), 1);
}

#[test]
fn an_export_goes_on_without_a_receipt_it_cannot_read() {
    use snodo_store::{DeliverTo, NewReceipt, ReceiptStore};
    let home = home_with("");
    home.import_rows(
        "EXPB1",
        &[
            Row::tari("E1", 1, 1000),
            Row::tari("E2", 2, 2000),
            Row::tari("E3", 3, 3000),
            Row::tari("E4", 4, 4000),
        ],
    );
    let n: Vec<String> = ["E1", "E2", "E3", "E4"]
        .iter()
        .map(|i| notice(&home, i))
        .collect();
    let export_dir = home.path().join("var/c_g224/export");
    let _hub = Hub::start_serving(&home);
    for (i, amount) in [(0, "10.00"), (2, "30.00")] {
        let rt = post_soap(
            home.port,
            "paSendRTV2",
            &send_rt_v2(&n[i], &format!("RCPT-EXP-{}", i + 1), amount),
        );
        assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");
    }
    // A receipt whose stored XML cannot be read (stored before the hub checked, or damaged),
    // between the two good ones.
    {
        let store = snodo_store::SqliteStore::open(&home.path().join("var/snodo.db")).unwrap();
        let notice = snodo_core::NoticeNumber::parse(&n[1]).unwrap();
        let to = [DeliverTo {
            holds_flagged: true,
            ..DeliverTo::all("padova-receipts-export", "c_g224")
        }];
        store
            .store_receipt(&NewReceipt {
                entity: "c_g224",
                notice_number: &notice,
                receipt_id: "RCPT-EXP-BROKEN",
                amount_cents: 2000,
                psp_id: "BCITITMM",
                psp_name: "Intesa Sanpaolo",
                payment_date: None,
                operation: "paSendRTV2",
                xml: "<soapenv:Envelope><broken",
                deliver_to: &to,
                correlation: None,
            })
            .unwrap();
    }

    assert!(export_now(&home).contains("wrote "));
    let files = exported(&export_dir);
    assert_eq!(
        files,
        [["RCPT-EXP-1", "RCPT-EXP-3"]],
        "the others are in it"
    );
    let o = home.snodo(&["dlq", "list", "-c", "config.toml", "--entity", "c_g224"]);
    let dead = json_lines(&stdout(&o));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["idempotency_key"], "RCPT-EXP-BROKEN");
    assert_eq!(dead[0]["pipeline"], "padova-receipts-export");
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot be read"),
        "{}",
        dead[0]
    );

    // The next file goes on.
    let rt = post_soap(
        home.port,
        "paSendRTV2",
        &send_rt_v2(&n[3], "RCPT-EXP-4", "40.00"),
    );
    assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");
    assert!(export_now(&home).contains("wrote "));
    assert_eq!(
        exported(&export_dir),
        [vec!["RCPT-EXP-1", "RCPT-EXP-3"], vec!["RCPT-EXP-4"]]
    );
}
