//! Receipts to an entity's Kafka topic and the ops event stream, against the real broker
//! (`ops/kafka.sh`): `snodo sim` pays imported notices; each receipt lands on the topic keyed by
//! notice number (read back with the project's reader and with `snodo topic`), and `snodo tail` shows
//! the payments' events live, with the correlation id the hub logs.

mod common;
use common::*;
use snodo_connectors::kafka::{KafkaConnection, KafkaReader, ReadFrom};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PAYMENTS: usize = 20;

#[test]
fn receipts_reach_the_topic_and_tail_shows_the_payments_live() {
    let brokers = kafka_brokers();
    let topic = unique("receipts");
    let events = unique("events");
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    let cfg = cfg.replace(
        "store = \"sqlite\"",
        &format!("store = \"sqlite\"\nevents_topic = \"{events}\""),
    );
    let cfg = format!(
        "{cfg}\n[kafka]\nbrokers = \"{brokers}\"\n\n[[pipelines]]\nname = \"padova-receipts-kafka\"\n\
         entity = \"c_g224\"\nfrom = \"receipts\"\nencode = \"json\"\n\
         to = {{ connector = \"kafka\", brokers = \"{brokers}\", topic = \"{topic}\", partitions = 2 }}\n"
    );
    std::fs::write(home.config(), cfg).unwrap();
    let rows: Vec<Row> = (0..PAYMENTS as u32)
        .map(|n| Row::tari(&format!("KR{n:02}"), 300 + n, 2_000 + u64::from(n)))
        .collect();
    home.import_rows("KR1", &rows);
    let hub = Hub::start_serving(&home);

    // `snodo tail` follows the event topic from now on.
    let mut tail = Command::new(BIN)
        .args(["tail", "-c", "config.toml"])
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("snodo tail");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    let out = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    // A bulk import stores its chunk's position events as one row; the stream still tells each.
    let bulk: Vec<Row> = (0..5u32)
        .map(|n| Row::tari(&format!("KB{n:02}"), 500 + n, 4_000 + u64::from(n)))
        .collect();
    home.import_rows("KB1", &bulk);

    let sim = Command::new(BIN)
        .args(["sim", "-c", "config.toml", "--from-config", "--count"])
        .arg(PAYMENTS.to_string())
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .output()
        .unwrap();
    assert!(sim.status.success(), "{}", stderr(&sim));

    // Live: the tail shows every receipt stored and every activation, with correlation ids.
    let seen = wait_for(30, || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(" receipt.stored "))
            .count()
            >= PAYMENTS
    });
    let _ = tail.kill();
    let _ = tail.wait();
    let shown = lines.lock().unwrap().clone();
    assert!(seen, "tail showed:\n{}", shown.join("\n"));
    let activated = shown
        .iter()
        .filter(|l| l.contains(" payment.activated "))
        .count();
    assert!(activated >= PAYMENTS, "{}", shown.join("\n"));
    for n in 0..5 {
        let iud = format!("KB{n:02}");
        let created: Vec<_> = shown
            .iter()
            .filter(|l| l.contains(" position.created ") && l.contains(&format!(" {iud} ")))
            .collect();
        assert_eq!(created.len(), 1, "{iud}: {}", shown.join("\n"));
        assert!(created[0].contains(" notice_number=3"), "{}", created[0]);
    }

    assert!(
        shown
            .iter()
            .filter(|l| l.contains(" receipt.stored ") || l.contains(" position.paid "))
            .all(|l| l.contains("c_g224") && l.contains(" corr=")),
        "{}",
        shown.join("\n")
    );

    // The receipts, read back with the project's reader: one per payment, keyed by notice.
    let conn = KafkaConnection::new(brokers.clone());
    let mut reader = KafkaReader::open(&conn, &topic, ReadFrom::Beginning).unwrap();
    let mut notices = HashSet::new();
    let mut receipts = HashSet::new();
    let got_all = wait_for(30, || {
        while let Ok(Some(m)) = reader.next(Duration::from_millis(200)) {
            let key = String::from_utf8(m.key.clone().unwrap_or_default()).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(v["notice_number"].as_str(), Some(key.as_str()), "{v}");
            notices.insert(key);
            receipts.insert(v["receipt_id"].as_str().unwrap().to_string());
        }
        receipts.len() >= PAYMENTS
    });
    assert!(got_all, "{} receipts on the topic", receipts.len());
    assert_eq!(notices.len(), PAYMENTS);

    // On the event topic: the bulk import's five events, one stored row told apart by `part`.
    let mut reader = KafkaReader::open(&conn, &events, ReadFrom::Beginning).unwrap();
    let mut bulk_events = Vec::new();
    wait_for(30, || {
        while let Ok(Some(m)) = reader.next(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            if v["kind"] == "position.created" && v["subject"].as_str().unwrap().starts_with("KB") {
                bulk_events.push(v);
            }
        }
        bulk_events.len() >= 5
    });
    assert_eq!(bulk_events.len(), 5, "{bulk_events:?}");
    let parts: Vec<_> = bulk_events
        .iter()
        .map(|v| v["part"].as_u64().unwrap())
        .collect();
    assert_eq!(parts, [1, 2, 3, 4, 5], "{bulk_events:?}");
    assert!(bulk_events.iter().all(|v| v["id"] == bulk_events[0]["id"]));
    for (n, v) in bulk_events.iter().enumerate() {
        assert_eq!(v["subject"], format!("KB{n:02}"));
        let iuv = v["payload"]["iuv"].as_str().unwrap();
        assert_eq!(v["payload"]["notice_number"], format!("3{iuv}"), "{v}");
        assert_eq!(v["payload"]["amount_cents"], 4_000 + n as u64);
        assert_eq!(v["payload"]["debt_type"], "TARI");
    }
    hub.terminate();

    // And with `snodo topic`, the operators' reader (Debian's kcat links librdkafka 2.0, which
    // cannot talk to the test broker: its ApiVersion answer underflows).
    let read = Command::new(BIN)
        .args([
            "topic",
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--from-beginning",
        ])
        .args(["--idle", "3s"])
        .output()
        .unwrap();
    assert!(read.status.success(), "snodo topic: {}", stderr(&read));
    let keys: HashSet<String> = stdout(&read)
        .lines()
        .filter_map(|l| l.split('\t').next())
        .map(str::to_string)
        .collect();
    assert_eq!(keys, notices, "snodo topic reads the same notices");
}

/// Without `[kafka]` the events stay in the store, and `snodo tail` follows them there.
#[test]
fn without_kafka_tail_follows_the_store() {
    let home = Home::new();
    let rows: Vec<Row> = (0..3)
        .map(|n| Row::tari(&format!("ST{n:02}"), 400 + n, 3_000 + u64::from(n)))
        .collect();
    home.import_rows("ST1", &rows);
    let hub = Hub::start_serving(&home);
    let mut tail = Command::new(BIN)
        .args(["tail", "-c", "config.toml", "--entity", "c_g224"])
        .args(["--kind", "receipt", "--count", "3"])
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("snodo tail");
    std::thread::sleep(Duration::from_millis(500));
    let sim = Command::new(BIN)
        .args(["sim", "-c", "config.toml", "--from-config", "--count", "3"])
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .output()
        .unwrap();
    assert!(sim.status.success(), "{}", stderr(&sim));
    let ended = wait_for(30, || matches!(tail.try_wait(), Ok(Some(_))));
    if !ended {
        let _ = tail.kill();
    }
    let out = tail.wait_with_output().unwrap();
    hub.terminate();
    assert!(ended, "tail did not see 3 receipts: {}", stdout(&out));
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.contains(" c_g224 ")
            && l.contains(" receipt.stored ")
            && l.contains(" corr=")),
        "{lines:?}"
    );
}
