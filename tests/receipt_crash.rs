//! Kill -9 while `snodo sim` sends receipts: every receipt the hub answered OK is in the store
//! after a restart (a receipt is committed before its OK is sent).

mod common;
use common::*;
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn every_receipt_answered_ok_survives_a_kill_9() {
    let home = Home::new();
    let rows: Vec<Row> = (1..=3000)
        .map(|i| Row::tari(&format!("K{i}"), i, 1000 + i as u64))
        .collect();
    let flow = write_zip(home.path(), "c_g224-KILL1-1_4", csv_text(&rows).as_bytes());
    let o = home.import(&flow, &home.path().join("out"));
    assert!(o.status.success(), "{}", stderr(&o));

    let hub = Hub::start_serving(&home);
    let log = home.path().join("receipts.log");
    let mut sim = Command::new(BIN)
        .args([
            "sim",
            "-c",
            "config.toml",
            "--from-config",
            "--count",
            "3000",
            "--concurrency",
            "2",
            "--receipts-log",
        ])
        .arg(&log)
        .current_dir(home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start snodo sim");
    // Kill the hub once receipts are flowing.
    let flowing = wait_for(60, || {
        std::fs::read_to_string(&log)
            .map(|t| t.lines().count() >= 200)
            .unwrap_or(false)
    });
    assert!(flowing, "the simulator sent no receipts");
    let mut hub = hub;
    hub.0.kill().expect("SIGKILL the hub");
    let _ = hub.0.wait();
    let _ = sim.wait();

    let answered_ok: HashSet<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(';').collect();
            (f.len() == 3 && f[2] == "OK").then(|| f[0].to_string())
        })
        .collect();
    assert!(
        answered_ok.len() >= 200,
        "only {} receipts answered OK before the kill",
        answered_ok.len()
    );
    assert!(
        answered_ok.len() < 3000,
        "the kill came after every receipt: nothing was tested"
    );

    // Restart (recovery of the store included) and look for every OK'd receipt.
    let again = Hub::start_serving(&home);
    std::thread::sleep(Duration::from_millis(100));
    let store = snodo_store::SqliteStore::open(&home.path().join("var/snodo.db")).unwrap();
    use snodo_store::prelude::*;
    let stored: HashSet<String> = store
        .events_after(0, 100_000)
        .unwrap()
        .iter()
        .filter_map(|e| e.payload["receipt_id"].as_str().map(str::to_string))
        .collect();
    let lost: Vec<&String> = answered_ok.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "receipts answered OK but not stored: {lost:?}"
    );
    let paid = home
        .positions(&["--limit", "10000"])
        .iter()
        .filter(|p| p["status"] == "paid")
        .count();
    assert!(
        paid >= answered_ok.len(),
        "{paid} paid positions for {} OK receipts",
        answered_ok.len()
    );
    drop(again);
}
