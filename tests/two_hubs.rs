//! Two hubs on one PostgreSQL store and one Kafka broker, as a Region runs them for availability:
//! 5 000 positions arrive on a topic both consume in one group; `snodo sim` pays them through
//! both hubs; one hub is killed with SIGKILL mid-way and restarted. Afterwards every position is
//! applied once, every receipt reached the entity system (5 000 distinct idempotency keys), and
//! the receipt exports written by either hub hold every receipt exactly once.

mod common;
use common::*;
use snodo_connectors::kafka::{self, KafkaConnection, KafkaProducer};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const POSITIONS: u32 = 5_000;

fn message(n: u32) -> (String, Vec<u8>) {
    let iud = format!("H{n:06}");
    let row = Row::tari(&iud, n, 1_000 + u64::from(n))
        .set(12, "")
        .set(15, "MENSA")
        .set(17, &format!("Mensa alunno {n}"))
        .set(18, "9/0107101TS/");
    (iud, row.json().into_bytes())
}

/// A hub home sharing the store, the topic and the export folder with its twin.
fn home(name: &str, store: &str, extra: &str) -> Home {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    let cfg = cfg.replace(
        "store = \"sqlite\"",
        &format!("store = \"{store}\"\ninstance = \"{name}\""),
    );
    // The demo's nightly export runs every 5 s here, into the shared folder (see `extra`).
    let cfg = cfg
        .replace("schedule = \"0 0 2 * * *\"", "schedule = \"*/5 * * * * *\"")
        .replace("path = \"var/c_g224/export\"", "path = \"@EXPORTS@\"");
    std::fs::write(home.config(), format!("{cfg}\n{extra}")).unwrap();
    home
}

fn receiver(log: &Path) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            "receiver",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log",
        ])
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(10, || std::net::TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_ok()));
    (child, port)
}

fn sim(home: &Home, notices: &Path) -> Child {
    Command::new(BIN)
        .args(["sim", "-c", "config.toml", "--notices"])
        .arg(notices)
        .args(["--concurrency", "8", "--retry-for", "90s"])
        .current_dir(home.path())
        .env("SNODO_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn keys(log: &Path) -> HashMap<String, u32> {
    let mut seen = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        if let Some(key) = line.split(';').nth(1) {
            *seen.entry(key.to_string()).or_insert(0) += 1;
        }
    }
    seen
}

fn exported_receipts(dir: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for f in std::fs::read_dir(dir).unwrap().flatten() {
        let p = f.path();
        if p.extension().is_some_and(|e| e == "zip") {
            let text = unzip_text(&p);
            // ESTRAZIONE_DOVUTI: header, then one row per receipt (quoted fields).
            let mut lines = text.lines();
            let header: Vec<String> = lines
                .next()
                .unwrap_or_default()
                .split(';')
                .map(|f| f.trim_matches('"').to_string())
                .collect();
            let col = header
                .iter()
                .position(|h| h == "identificativoMessaggioRicevuta")
                .expect("receipt id column");
            ids.extend(lines.map(|l| {
                l.split(';')
                    .nth(col)
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string()
            }));
        }
    }
    ids
}

#[test]
fn two_hubs_share_the_work_and_lose_nothing_when_one_dies() {
    let db = PgDb::new("twohubs");
    let brokers = kafka_brokers();
    let topic = unique("positions");
    let group = unique("hubs");
    let exports = tempfile::tempdir().unwrap();
    let log: PathBuf = exports.path().join("../receiver-two-hubs.log");
    let _ = std::fs::remove_file(&log);
    let (mut recv, recv_port) = receiver(&log);
    let extra = format!(
        "[[pipelines]]\nname = \"padova-kafka-in\"\nentity = \"c_g224\"\n\
         from = {{ connector = \"kafka\", brokers = \"{brokers}\", topic = \"{topic}\", group = \"{group}\", partitions = 4 }}\n\
         decode = \"position-json\"\nto = \"registry\"\n\n\
         [[pipelines]]\nname = \"padova-receipts-push\"\nentity = \"c_g224\"\nfrom = \"receipts\"\nencode = \"json\"\n\
         to = {{ connector = \"http\", url = \"http://127.0.0.1:{recv_port}/receipts\", timeout = \"5s\", retry = {{ initial = \"200ms\", max = \"2s\" }} }}\n"
    );
    let a = home("hub-a", &db.url, &extra);
    let b = home("hub-b", &db.url, &extra);
    for h in [&a, &b] {
        let cfg = std::fs::read_to_string(h.config()).unwrap();
        let cfg = cfg.replace("@EXPORTS@", &exports.path().display().to_string());
        std::fs::write(h.config(), cfg).unwrap();
    }

    let conn = KafkaConnection::new(brokers.clone());
    kafka::ensure_topics(&conn, &[(topic.clone(), 4)], Duration::from_secs(10)).unwrap();
    let mut hub_a = Hub::start_serving(&a);
    let hub_b = Hub::start_serving(&b);
    let all: Vec<(String, Vec<u8>)> = (0..POSITIONS).map(message).collect();
    KafkaProducer::new(&conn)
        .unwrap()
        .send_all(&topic, &all, Duration::from_secs(60))
        .unwrap();
    let applied = wait_for(120, || {
        db.query("SELECT count(*) FROM positions") == POSITIONS.to_string()
    });
    assert!(
        applied,
        "{} positions applied",
        db.query("SELECT count(*) FROM positions")
    );

    // Notices split in two halves, one per hub.
    let list = a.positions(&["--limit", "100000"]);
    let notices: Vec<String> = list
        .iter()
        .map(|p| format!("00644060287;{}", p["notice_number"].as_str().unwrap()))
        .collect();
    assert_eq!(notices.len(), POSITIONS as usize);
    let (half_a, half_b) = notices.split_at(notices.len() / 2);
    std::fs::write(a.path().join("notices"), half_a.join("\n") + "\n").unwrap();
    std::fs::write(b.path().join("notices"), half_b.join("\n") + "\n").unwrap();
    let mut sim_a = sim(&a, &a.path().join("notices"));
    let mut sim_b = sim(&b, &b.path().join("notices"));

    // Mid-way, hub A dies; it comes back (the sim resends what got no answer, as the node does).
    assert!(wait_for(120, || keys(&log).len() > 1_000));
    Command::new("kill")
        .args(["-KILL", &hub_a.pid().to_string()])
        .status()
        .unwrap();
    let _ = hub_a.0.wait();
    std::thread::sleep(Duration::from_secs(2));
    hub_a = Hub::start_serving(&a);

    assert!(sim_a.wait().unwrap().success(), "sim through hub A failed");
    assert!(sim_b.wait().unwrap().success(), "sim through hub B failed");
    let delivered = wait_for(180, || keys(&log).len() >= POSITIONS as usize);
    let seen = keys(&log);
    assert!(delivered, "{} distinct receipts delivered", seen.len());
    hub_a.terminate();
    hub_b.terminate();
    let _ = recv.kill();
    let _ = recv.wait();

    // Every position applied once, every receipt stored once and delivered.
    assert_eq!(
        db.query("SELECT count(*) FROM positions"),
        POSITIONS.to_string()
    );
    assert_eq!(
        db.query("SELECT sum(accepted) || '/' || sum(rejected) FROM flows WHERE version = 'position-json'"),
        format!("{POSITIONS}/0"),
        "each message applied once (a second insert of an IUD would be rejected)"
    );
    assert_eq!(
        db.query("SELECT count(*) FROM receipts"),
        POSITIONS.to_string()
    );
    assert_eq!(seen.len(), POSITIONS as usize);
    let receipt_ids: HashSet<String> = seen.keys().cloned().collect();

    // The last export, then: every receipt in exactly one export file.
    let out = a.snodo(&[
        "export",
        "-c",
        "config.toml",
        "--pipeline",
        "padova-receipts-export",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files = std::fs::read_dir(exports.path()).unwrap().count();
    assert!(
        files >= 2,
        "exports ran on their 5 s schedule during the run ({files} files)"
    );
    let exported = exported_receipts(exports.path());
    let distinct: HashSet<String> = exported.iter().cloned().collect();
    assert_eq!(
        exported.len(),
        distinct.len(),
        "a receipt was exported twice"
    );
    assert_eq!(distinct, receipt_ids, "every receipt exported once");
    let _ = std::fs::remove_file(&log);
}
