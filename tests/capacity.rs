//! The node's calls keep their answers in time while everything else is busy: 20 Kafka stream
//! intakes (each holding a thread for good) with messages to apply, an import of a large flow,
//! and a flood of entity API calls, all at once, while `snodo sim --verify-only --rate 200`
//! verifies notices: no errors, and p99 within 1 s.

mod common;
use common::*;
use snodo_connectors::kafka::{self, KafkaConnection, KafkaProducer};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const STREAMS: usize = 20;
const MESSAGES_PER_STREAM: u32 = 300;
const FLOOD_CLIENTS: usize = 6;
const IMPORT_ROWS: u32 = 20_000;

/// `key=value` of a report line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn verify_answers_in_time_while_streams_imports_and_an_api_flood_run() {
    let brokers = kafka_brokers();
    let conn = KafkaConnection::new(brokers.clone());
    let topics: Vec<String> = (0..STREAMS).map(|i| unique(&format!("cap{i}"))).collect();
    let specs: Vec<(String, i32)> = topics.iter().map(|t| (t.clone(), 1)).collect();
    kafka::ensure_topics(&conn, &specs, Duration::from_secs(20))
        .expect("the broker is up (ops/kafka.sh)");

    let home = Home::new();
    let mut cfg = std::fs::read_to_string(home.config()).unwrap();
    // Unthrottled keys: the flood must reach the store, not stop at 429.
    cfg.push_str("\n[api]\nrate_per_second = 1000000\nrate_burst = 1000000\n");
    for (i, topic) in topics.iter().enumerate() {
        cfg.push_str(&format!(
            "\n[[pipelines]]\nname = \"stream-{i}\"\nentity = \"c_g224\"\n\
             from = {{ connector = \"kafka\", brokers = \"{brokers}\", topic = \"{topic}\", group = \"{g}\" }}\n\
             decode = \"position-json\"\nto = \"registry\"\n",
            g = unique("capg")
        ));
    }
    std::fs::write(home.config(), cfg).unwrap();

    // The notices the sim verifies.
    let rows: Vec<Row> = (1..=200)
        .map(|n| Row::tari(&format!("V{n}"), n, 5_000))
        .collect();
    home.import_rows("CAPV", &rows);
    let notices: String = home
        .positions(&["--limit", "1000"])
        .iter()
        .filter_map(|p| p["notice_number"].as_str())
        .map(|n| format!("{PADOVA};{n}\n"))
        .collect();
    let notices_file = home.path().join("notices.txt");
    std::fs::write(&notices_file, notices).unwrap();

    let hub = Hub::start_serving(&home);

    // Work for every stream intake.
    let producer = KafkaProducer::new(&conn).unwrap();
    for (i, topic) in topics.iter().enumerate() {
        let batch: Vec<(String, Vec<u8>)> = (0..MESSAGES_PER_STREAM)
            .map(|n| {
                let iud = format!("S{i:02}-{n:05}");
                let row = Row::tari(&iud, n + 1, 1_000)
                    .set(12, "")
                    .set(15, "MENSA")
                    .set(17, "Mensa")
                    .set(18, "9/0107101TS/");
                (iud, row.json().into_bytes())
            })
            .collect();
        producer
            .send_all(topic, &batch, Duration::from_secs(60))
            .unwrap();
    }
    // A large import for the import pipeline.
    let big: Vec<Row> = (1..=IMPORT_ROWS)
        .map(|n| Row::tari(&format!("BIG{n}"), n, 1_000))
        .collect();
    let inbox = home.path().join("var/c_g224/in");
    std::fs::create_dir_all(&inbox).unwrap();
    let staged = write_zip(home.path(), "c_g224-CAPBIG-1_4", csv_text(&big).as_bytes());
    std::fs::rename(&staged, inbox.join("c_g224-CAPBIG-1_4.zip")).unwrap();

    // The flood: closed-loop clients reading pages and creating positions, as fast as answered.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = (0..FLOOD_CLIENTS)
        .map(|c| {
            let (stop, answered, port) = (stop.clone(), answered.clone(), home.port);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let a = if n & 1 == 0 {
                        get(
                            port,
                            "/api/v1/entities/c_g224/positions?limit=100",
                            KEY_PADOVA,
                        )
                    } else {
                        let body = api_position(&format!("F{c}-{n}"), 1_000).to_string();
                        http(
                            port,
                            "POST",
                            "/api/v1/entities/c_g224/positions",
                            Some(KEY_PADOVA),
                            &[],
                            Some(&body),
                        )
                    };
                    assert!(a.status < 500, "API answered {}: {}", a.status, a.body);
                    answered.fetch_add(1, Ordering::SeqCst);
                    n += 1;
                }
            })
        })
        .collect();

    let sim = Command::new(BIN)
        .args(["sim", "-c", "config.toml", "--verify-only", "--rate", "200"])
        .args(["--count", "2000", "--concurrency", "64", "--timeout", "10"])
        .arg("--notices")
        .arg(&notices_file)
        .current_dir(home.path())
        .env("SNODO_LOG", "error")
        .output()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    for t in flood {
        t.join().expect("a flood client failed");
    }
    let report = String::from_utf8_lossy(&sim.stdout).to_string();
    assert!(sim.status.success(), "{report}\n{}", stderr(&sim));
    let line = report
        .lines()
        .find(|l| l.starts_with("paVerifyPaymentNotice "))
        .unwrap_or_else(|| panic!("no verify line in the report:\n{report}"));
    eprintln!(
        "{line}\nAPI calls answered meanwhile: {}",
        answered.load(Ordering::SeqCst)
    );
    assert_eq!(field(line, "calls"), Some("2000"), "{line}");
    assert_eq!(field(line, "ok"), Some("2000"), "{line}");
    assert_eq!(field(line, "err"), Some("0"), "{line}");
    let p99: f64 = field(line, "p99_ms").and_then(|v| v.parse().ok()).unwrap();
    assert!(p99 <= 1000.0, "p99 {p99} ms: {line}");
    // The load was real: the flood was served and the intakes applied their messages.
    assert!(answered.load(Ordering::SeqCst) > 100);
    let streamed = home
        .positions(&["--limit", "1000000"])
        .iter()
        .filter(|p| p["iud"].as_str().is_some_and(|i| i.starts_with('S')))
        .count();
    assert!(streamed > 0, "no stream message was applied");
    drop(hub);
}
