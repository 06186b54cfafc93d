//! Debt positions over Kafka, end to end against the real broker (`ops/kafka.sh`): 10 000 JSON
//! positions, 2% of them invalid, go through `snodo run`; the hub is killed with SIGKILL mid-stream
//! and restarted; in the end every valid position is applied exactly once, every invalid one is
//! rejected with its MyPay code, and the outcomes topic holds one outcome for every message.

mod common;
use common::*;
use snodo_connectors::kafka::{self, KafkaConnection, KafkaProducer, KafkaReader, ReadFrom};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

const MESSAGES: u32 = 10_000;

fn message(n: u32) -> (String, Vec<u8>) {
    let iud = format!("K{n:06}");
    // MENSA needs no due date and generates IUVs.
    let mut row = Row::tari(&iud, n, 1_000 + u64::from(n))
        .set(12, "")
        .set(15, "MENSA")
        .set(17, &format!("Mensa 2026/27 alunno {n}"))
        .set(18, "9/0107101TS/");
    if n % 50 == 7 {
        row = row.set(3, "RSSMRA85T10A562X"); // wrong check character
    }
    (iud, row.json().into_bytes())
}

fn outcomes(conn: &KafkaConnection, topic: &str) -> Vec<serde_json::Value> {
    let end: i64 = kafka::end_offsets(conn, topic)
        .expect("end offsets")
        .values()
        .sum();
    let mut reader = KafkaReader::open(conn, topic, ReadFrom::Beginning).expect("reader");
    let mut out = Vec::new();
    let mut idle = 0;
    while (out.len() as i64) < end && idle < 20 {
        match reader.next(Duration::from_millis(500)).expect("read") {
            Some(m) => {
                let key = String::from_utf8(m.key.unwrap_or_default()).unwrap();
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                if let Some(iud) = v.get("iud").and_then(|i| i.as_str()) {
                    assert_eq!(key, iud, "outcomes are keyed by IUD");
                }
                out.push(v);
                idle = 0;
            }
            None => idle += 1,
        }
    }
    out
}

fn sqlite(home: &Home, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(home.path().join("var/snodo.db"))
        .arg(sql)
        .output()
        .expect("sqlite3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn ten_thousand_positions_over_kafka_survive_a_kill_and_apply_once() {
    let brokers = kafka_brokers();
    let conn = KafkaConnection::new(brokers.clone());
    let topic = unique("positions");
    let out_topic = unique("outcomes");
    kafka::ensure_topics(&conn, &[(topic.clone(), 3)], Duration::from_secs(10))
        .expect("the broker is up (ops/kafka.sh)");

    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    let cfg = format!(
        "{cfg}\n[[pipelines]]\nname = \"padova-kafka-in\"\nentity = \"c_g224\"\n\
         from = {{ connector = \"kafka\", brokers = \"{brokers}\", topic = \"{topic}\", group = \"{g}\", batch = 500 }}\n\
         decode = \"position-json\"\nto = \"registry\"\n\
         outcomes = {{ connector = \"kafka\", brokers = \"{brokers}\", topic = \"{out_topic}\", partitions = 2 }}\n",
        g = unique("hub")
    );
    std::fs::write(home.config(), cfg).unwrap();

    let producer = KafkaProducer::new(&conn).unwrap();
    let all: Vec<(String, Vec<u8>)> = (0..MESSAGES).map(message).collect();
    let (first, rest) = all.split_at(6_000);
    producer
        .send_all(&topic, first, Duration::from_secs(30))
        .unwrap();

    // Mid-stream: more messages arrive while the hub works, and it is killed.
    let hub = Hub::start(&home);
    let applied = wait_for(60, || {
        sqlite(&home, "SELECT count(*) FROM positions")
            .parse::<u32>()
            .unwrap_or(0)
            > 1_500
    });
    assert!(applied, "the hub applies positions from the topic");
    producer
        .send_all(&topic, rest, Duration::from_secs(30))
        .unwrap();
    Command::new("kill")
        .args(["-KILL", &hub.pid().to_string()])
        .status()
        .unwrap();
    drop(hub);
    let at_kill: u32 = sqlite(&home, "SELECT count(*) FROM positions")
        .parse()
        .unwrap();
    assert!(
        at_kill < 9_800,
        "the kill came mid-stream ({at_kill} applied)"
    );

    let hub = Hub::start(&home);
    let done = wait_for(120, || {
        sqlite(
            &home,
            "SELECT coalesce(sum(accepted + rejected), 0) FROM flows WHERE version = 'position-json'",
        ) == MESSAGES.to_string()
    });
    assert!(done, "every message is handled after the restart");
    let outs = wait_for(60, || {
        outcomes(&conn, &out_topic).len() >= MESSAGES as usize
    });
    hub.terminate();
    assert!(
        outs,
        "one outcome per message reaches the outcomes topic: {} read, end offsets {:?}, {} waiting in the store",
        outcomes(&conn, &out_topic).len(),
        kafka::end_offsets(&conn, &out_topic),
        sqlite(&home, "SELECT count(*) FROM flow_outbox")
    );

    // Nothing applied twice, nothing skipped.
    let invalid = (0..MESSAGES).filter(|n| n % 50 == 7).count() as u32;
    assert_eq!(invalid, 200);
    assert_eq!(
        sqlite(&home, "SELECT count(*) FROM positions"),
        (MESSAGES - invalid).to_string()
    );
    assert_eq!(
        sqlite(&home, "SELECT count(*) FROM position_history"),
        "0",
        "no position was changed after its creation"
    );
    assert_eq!(
        sqlite(&home, "SELECT count(DISTINCT iuv) FROM positions"),
        (MESSAGES - invalid).to_string(),
        "every IUV handed out once"
    );
    assert_eq!(
        sqlite(
            &home,
            "SELECT sum(accepted) || '/' || sum(rejected) FROM flows WHERE version = 'position-json'"
        ),
        format!("{}/{invalid}", MESSAGES - invalid)
    );

    // One outcome per message: by source offset, every message once; a message produced twice
    // (the hub died between producing and forgetting its outcomes) carries the same outcome.
    let mut by_source: HashMap<(i64, i64), serde_json::Value> = HashMap::new();
    for o in outcomes(&conn, &out_topic) {
        let at = (
            o["source"]["partition"].as_i64().unwrap(),
            o["source"]["offset"].as_i64().unwrap(),
        );
        if let Some(before) = by_source.insert(at, o.clone()) {
            assert_eq!(before, o, "a repeated outcome is the same outcome");
        }
    }
    assert_eq!(by_source.len(), MESSAGES as usize);
    let mut rejected = 0;
    for o in by_source.values() {
        let iud = o["iud"].as_str().unwrap();
        let n: u32 = iud[1..].parse().unwrap();
        if n % 50 == 7 {
            rejected += 1;
            assert_eq!(o["status"], "rejected", "{o}");
            assert_eq!(o["errors"][0]["code"], "PAA_IMPORT_COD_FISC", "{o}");
        } else {
            assert_eq!(o["status"], "accepted", "{o}");
            assert_eq!(o["notice_number"].as_str().unwrap().len(), 18, "{o}");
        }
    }
    assert_eq!(rejected, invalid);
}
