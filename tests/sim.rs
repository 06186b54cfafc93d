//! `snodo sim` against a running hub: the node and its PSPs pay imported positions end to end,
//! and injected faults come back with the codes the hub owes.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

const PADOVA: &str = "00644060287";

fn sim(home: &Home, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("sim")
        .args(["-c", "config.toml"])
        .args(args)
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .output()
        .expect("run snodo sim")
}

/// Runs the simulator and returns its report, failing on a non-zero exit.
fn report(home: &Home, args: &[&str]) -> String {
    let out = sim(home, args);
    assert!(
        out.status.success(),
        "snodo sim failed ({}):\n{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The report line starting with `prefix` (operation lines start `<op> calls=`).
fn line<'a>(report: &'a str, prefix: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{report}"))
}

fn log_lines(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .expect("receipts log")
        .lines()
        .map(|l| l.split(';').map(str::to_string).collect())
        .collect()
}

#[test]
fn the_simulated_node_pays_every_active_position() {
    let home = Home::new();
    let rows: Vec<Row> = (0..30)
        .map(|n| Row::tari(&format!("SIM{n:02}"), 100 + n, 1000 + u64::from(n) * 137))
        .collect();
    home.import_rows("SIM1", &rows);
    let hub = Hub::start_serving(&home);

    // 30 payments, 8 at a time: every one verified, activated and paid.
    let r = report(
        &home,
        &[
            "--from-config",
            "--count",
            "30",
            "--concurrency",
            "8",
            "--receipts-log",
            "r.log",
        ],
    );
    for op in ["paVerifyPaymentNotice", "paGetPaymentV2", "paSendRTV2"] {
        assert!(
            line(&r, &format!("{op} calls="))
                .starts_with(&format!("{op} calls=30 ok=30 ko=0 err=0 ")),
            "{r}"
        );
    }
    assert!(
        !r.lines().any(|l| l
            .split_once(' ')
            .is_some_and(|(_, rest)| rest.starts_with("fault="))),
        "no faults expected:\n{r}"
    );
    assert!(
        line(&r, "total ").starts_with("total payments=30 completed=30 faulted=0 errors=0 "),
        "{r}"
    );
    let positions = home.positions(&[]);
    assert_eq!(positions.len(), 30);
    assert!(
        positions.iter().all(|p| p["status"] == "paid"),
        "{positions:?}"
    );
    let log = log_lines(&home.path().join("r.log"));
    assert_eq!(log.len(), 30);
    let notices: std::collections::HashSet<_> = positions
        .iter()
        .map(|p| p["notice_number"].as_str().unwrap().to_string())
        .collect();
    let mut ids = std::collections::HashSet::new();
    for l in &log {
        assert_eq!(l.len(), 3, "{l:?}");
        assert_eq!(l[2], "OK", "{l:?}");
        assert!(notices.contains(&l[1]), "{l:?}");
        assert!(l[0].len() == 32 && l[0].bytes().all(|b| b.is_ascii_hexdigit()));
        ids.insert(l[0].clone());
    }
    assert_eq!(ids.len(), 30, "one receipt id per payment");

    // Every receipt again: the hub must know it already has them.
    let more: Vec<Row> = (0..5)
        .map(|n| Row::tari(&format!("DUP{n}"), 200 + n, 2500))
        .collect();
    home.import_rows("SIM2", &more);
    let r = report(
        &home,
        &[
            "--from-config",
            "--concurrency",
            "4",
            "--fault",
            "duplicate-receipt",
            "--receipts-log",
            "d.log",
        ],
    );
    assert!(
        line(&r, "paSendRTV2 calls=").starts_with("paSendRTV2 calls=10 ok=5 ko=5 err=0 "),
        "{r}"
    );
    assert_eq!(
        line(&r, "paSendRTV2 fault="),
        "paSendRTV2 fault=PAA_RECEIPT_DUPLICATA count=5",
        "{r}"
    );
    assert_eq!(
        line(&r, "injection "),
        "injection fault=duplicate-receipt expected=PAA_RECEIPT_DUPLICATA at=paSendRTV2 injected=5 seen=5",
        "{r}"
    );
    assert!(
        line(&r, "total ").starts_with("total payments=5 completed=5 faulted=0 errors=0 "),
        "{r}"
    );
    let log = log_lines(&home.path().join("d.log"));
    assert_eq!(log.iter().filter(|l| l[2] == "OK").count(), 5);
    assert_eq!(
        log.iter()
            .filter(|l| l[2] == "PAA_RECEIPT_DUPLICATA")
            .count(),
        5
    );
    assert_eq!(
        home.positions(&[])
            .iter()
            .filter(|p| p["status"] == "paid")
            .count(),
        35
    );

    // A station that is not the broker's: refused at verify, nothing goes further.
    let notices: String = more
        .iter()
        .map(|row| {
            let iud = &row.0[0];
            let n = home.positions(&["--iud", iud])[0]["notice_number"]
                .as_str()
                .unwrap()
                .to_string();
            format!("{PADOVA};{n}\n")
        })
        .collect();
    std::fs::write(home.path().join("notices.txt"), notices).unwrap();
    let r = report(
        &home,
        &[
            "--notices",
            "notices.txt",
            "--count",
            "12",
            "--fault",
            "wrong-station",
        ],
    );
    assert!(
        line(&r, "paVerifyPaymentNotice calls=")
            .starts_with("paVerifyPaymentNotice calls=12 ok=0 ko=12 err=0 "),
        "{r}"
    );
    assert_eq!(
        line(&r, "paVerifyPaymentNotice fault="),
        "paVerifyPaymentNotice fault=PAA_STAZIONE_INT_ERRATA count=12",
        "{r}"
    );
    assert!(
        line(&r, "paGetPaymentV2 calls=").starts_with("paGetPaymentV2 calls=0 "),
        "{r}"
    );
    assert!(
        line(&r, "total ").starts_with("total payments=12 completed=0 faulted=12 errors=0 "),
        "{r}"
    );

    // Paid notices cycle into PAA_PAGAMENTO_DUPLICATO, still a normal run.
    let r = report(&home, &["--notices", "notices.txt", "--v1"]);
    assert_eq!(
        line(&r, "paVerifyPaymentNotice fault="),
        "paVerifyPaymentNotice fault=PAA_PAGAMENTO_DUPLICATO count=5",
        "{r}"
    );
    assert!(line(&r, "sim ").contains(" flow=v1 "), "{r}");

    assert!(hub.terminate().success());
}

#[test]
fn an_unreachable_hub_is_an_error() {
    let home = Home::new();
    std::fs::write(
        home.path().join("notices.txt"),
        format!("{PADOVA};300715700000000032\n"),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = sim(&home, &["--notices", "notices.txt", "--url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("could not be reached"),
        "{}",
        stderr(&out)
    );

    // Nothing to pay is an error too, before any call.
    let out = sim(&home, &["--from-config"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no notices"), "{}", stderr(&out));
}
