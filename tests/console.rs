//! The web console end to end in a real browser: the hub runs with an import pipeline, a
//! receipts push to a receiver that refuses at first (a dead letter), a flow with rejected rows
//! and another entity's flow; then `tests/console/console.spec.mjs` drives Debian's chromium
//! with Playwright (playwright-core from npm, installed by `ops/setup.sh`) through every page,
//! takes screenshots into `<target>/console-screenshots/`, and checks the security headers,
//! cookie flags, CSRF refusals and the entity isolation. A missing chromium or npm package
//! fails the test, naming what to install.

mod common;
use common::*;
use snodo_store::prelude::*;
use snodo_store::{NewAnomaly, NewReport, ReportRow, ReportTotals, SqliteStore};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

const ADMIN: &str = "adm1n-t0ken-of-the-console-browser-tests";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A receiver answering every request with the status in `status`; counts what it got.
fn receiver(status: Arc<AtomicU16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let code = status.load(Ordering::SeqCst);
            let answer = if code == 200 { "ok" } else { "the ERP says no" };
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    port
}

fn flows(home: &Home, entity: &str) -> Vec<serde_json::Value> {
    let o = home.snodo(&["flows", "-c", "config.toml", "--entity", entity]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Where the browser test's packages are; fails naming the fix when they or chromium are missing.
fn browser_test_dir() -> PathBuf {
    let dir = repo().join("tests/console");
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the console's browser tests need Debian's chromium (ops/setup.sh installs it: apt-get install chromium)"
    );
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/console/node_modules/playwright-core is missing: run ops/setup.sh (it runs npm ci in tests/console)"
    );
    dir
}

#[test]
fn the_console_in_a_real_browser() {
    let tests = browser_test_dir();
    let status = Arc::new(AtomicU16::new(400));
    let rport = receiver(status.clone());
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap().replacen(
        "admin_token = \"${SNODO_ADMIN_TOKEN:-}\"",
        &format!("admin_token = \"{ADMIN}\""),
        1,
    );
    assert!(cfg.contains(ADMIN), "the demo config sets http.admin_token");
    std::fs::write(home.config(), cfg).unwrap();
    home.append_config(&format!(
        r#"
[[pipelines]]
name = "padova-receipts-push"
entity = "c_g224"
from = "receipts"
encode = "json"
to = {{ connector = "http", url = "http://127.0.0.1:{rport}/receipts", timeout = "2s", retry = {{ max_attempts = 2, initial = "200ms", max = "500ms" }} }}
"#
    ));
    let o = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // Entity B's flow, imported before the hub starts: entity A's session must never see it.
    let feltre = csv_text(&[Row::tari("FELTRE-1", 201, 1500)]);
    let b_flow = write_zip(home.path(), "c_d530-FELTRESECRET-1_4", feltre.as_bytes());
    let o = home.snodo(&[
        "import",
        "-c",
        "config.toml",
        "--entity",
        "c_d530",
        "--out",
        home.path().join("out-b").to_str().unwrap(),
        b_flow.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b = flows(&home, "c_d530");
    assert_eq!(b.len(), 1, "{b:?}");

    // A settlement flow of each entity, with a row that settles nothing this hub holds.
    {
        let store = SqliteStore::open(&home.path().join("var/snodo.db")).unwrap();
        for (entity, iuf) in [("c_g224", "FDR-CONSOLE-A"), ("c_d530", "FDR-CONSOLE-B")] {
            let flow = store
                .begin_report(&NewReport {
                    entity,
                    psp_id: "BCITITMM",
                    iuf,
                    revision: 1,
                    source: "rest",
                    flow_time: Some("2026-12-01T08:00:00Z"),
                    flow_date: Some("2026-12-01"),
                    regulation_id: Some("SCT-1"),
                    regulation_date: Some("2026-12-02"),
                    header: None,
                    declared_count: Some(1),
                    declared_cents: Some(4200),
                    published: None,
                })
                .unwrap();
            let row = ReportRow {
                row_no: 1,
                iuv: "01000000000099988",
                iur: "IUR-CONSOLE-1",
                transfer_index: Some(1),
                link_index: 1,
                amount_cents: 4200,
                esito: 0,
                pay_date: "2026-11-30",
                receipt: None,
                receipt_transfer: None,
            };
            let anomaly = NewAnomaly {
                row_no: Some(1),
                code: "RT_NOT_FOUND",
                severity: "anomaly",
                message: "no receipt of the hub settles this payment",
            };
            store
                .add_report_rows(flow.id, 0, &[row], &[anomaly])
                .unwrap();
            let totals = ReportTotals {
                computed_count: 1,
                computed_cents: 4200,
                linked: 0,
            };
            assert!(store.finish_report(flow.id, &totals, &[], &[]).unwrap());
        }
    }

    let _hub = Hub::start_serving(&home);

    // Entity A's flow through its pipeline: two accepted rows, two rejected.
    let rows = vec![
        Row::tari("CONSOLE-1", 1, 12050),
        Row::tari("CONSOLE-2", 2, 700),
        Row::tari("CONSOLE-BAD1", 3, 500).set(3, "RSSMRA85T10A562X"),
        Row::tari("CONSOLE-BAD2", 4, 500).set(13, "12,50"),
    ];
    let staged = write_zip(
        home.path(),
        "c_g224-CONSOLE1-1_4",
        csv_text(&rows).as_bytes(),
    );
    let inbox = home.path().join("var/c_g224/in");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::copy(&staged, inbox.join(".c_g224-CONSOLE1-1_4.zip.part")).unwrap();
    std::fs::rename(
        inbox.join(".c_g224-CONSOLE1-1_4.zip.part"),
        inbox.join("c_g224-CONSOLE1-1_4.zip"),
    )
    .unwrap();
    assert!(
        wait_for(30, || flows(&home, "c_g224").iter().any(|f| f["iuf"]
            == "CONSOLE1"
            && f["status"] == "IMPORT_ESEGUITO")),
        "the pipeline imports the flow"
    );
    let a_flow = flows(&home, "c_g224")
        .into_iter()
        .find(|f| f["iuf"] == "CONSOLE1")
        .unwrap();
    assert_eq!(a_flow["progress"]["rejected"], 2, "{a_flow}");

    // A receipt the receiver refuses with 400: a dead letter at once.
    let notice = home.positions(&["--iud", "CONSOLE-1"])[0]["notice_number"]
        .as_str()
        .unwrap()
        .to_string();
    let rt = post_soap(
        home.port,
        "paSendRTV2",
        &send_rt_v2(&notice, "RCPT-CONSOLE-1", "120.50"),
    );
    assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");
    assert!(
        wait_for(15, || {
            let o = home.snodo(&["dlq", "list", "-c", "config.toml", "--entity", "c_g224"]);
            stdout(&o).contains("RCPT-CONSOLE-1")
        }),
        "the refused receipt becomes a dead letter"
    );
    status.store(200, Ordering::SeqCst);
    // A receipt for a notice nobody issued: kept, flagged, held by the MyPay export.
    post_soap(
        home.port,
        "paSendRTV2",
        &send_rt_v2("301000000000012373", "RCPT-CONSOLE-STRAY", "5.00"),
    );
    assert!(
        wait_for(10, || {
            let o = home.snodo(&[
                "receipts",
                "-c",
                "config.toml",
                "--entity",
                "c_g224",
                "--held",
            ]);
            stdout(&o).contains("RCPT-CONSOLE-STRAY")
        }),
        "the stray receipt is held"
    );

    let active_notice = home.positions(&["--iud", "CONSOLE-2"])[0]["notice_number"]
        .as_str()
        .unwrap()
        .to_string();
    // The CLI finds a position by its debtor too (the console's search, the same operation).
    let by_payer = home.positions(&["--fiscal-code", &fiscal_code(2)]);
    assert_eq!(by_payer.len(), 1, "{by_payer:?}");
    assert_eq!(by_payer[0]["iud"], "CONSOLE-2");

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../console-screenshots");
    let out = Command::new("node")
        .arg("console.spec.mjs")
        .current_dir(&tests)
        .env("HUB_URL", format!("http://127.0.0.1:{}", home.port))
        .env("HUB_HOME", home.path())
        .env("SNODO_BIN", BIN)
        .env("ADMIN_TOKEN", ADMIN)
        .env("KEY_A", KEY_PADOVA)
        .env("ENTITY_A", "c_g224")
        .env("ENTITY_B", "c_d530")
        .env("FLOW_A", a_flow["id"].to_string())
        .env("FLOW_B", b[0]["id"].to_string())
        .env("FLOW_B_FILE", "c_d530-FELTRESECRET-1_4.zip")
        .env("REJECTED_IUD", "CONSOLE-BAD1")
        .env("REJECTED_CODE", "PAA_IMPORT_")
        .env("DEAD_KEY", "RCPT-CONSOLE-1")
        .env("HELD_KEY", "RCPT-CONSOLE-STRAY")
        .env("REPORT_A", "FDR-CONSOLE-A")
        .env("REPORT_B", "FDR-CONSOLE-B")
        .env("PAID_IUD", "CONSOLE-1")
        .env("ACTIVE_IUD", "CONSOLE-2")
        .env("ACTIVE_PAYER", fiscal_code(2))
        .env("ACTIVE_NOTICE", &active_notice)
        .env("SHOTS_DIR", &shots)
        .output()
        .expect("run node (ops/setup.sh installs Node.js' npm packages; Debian's nodejs)");
    let said = format!("{}{}", stdout(&out), stderr(&out));
    println!("{said}");
    assert!(out.status.success(), "the browser test failed:\n{said}");
    assert!(said.contains("all checks passed"), "{said}");
    for name in [
        "01-overview",
        "03-flow",
        "08-delivered",
        "09-events",
        "13-entity-refused",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}.png in {}",
            shots.display()
        );
    }
}
