//! Against a real broker at `SNODO_TEST_KAFKA` (default 127.0.0.1:9092), started by
//! `ops/kafka.sh`; every test uses topics and groups of its own.

use super::*;
use std::collections::BTreeSet;

fn broker() -> String {
    std::env::var("SNODO_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The test broker's connection; fails the test (not skips it) when nothing answers.
fn conn() -> KafkaConnection {
    let brokers = broker();
    let reachable = brokers.split(',').any(|b| {
        use std::net::ToSocketAddrs;
        b.trim()
            .to_socket_addrs()
            .ok()
            .into_iter()
            .flatten()
            .any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    });
    assert!(
        reachable,
        "no Kafka broker answers at {brokers}: start one with ops/kafka.sh \
         (or point SNODO_TEST_KAFKA at one)"
    );
    KafkaConnection::new(brokers)
}

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("snodo-test-{what}-{}-{nanos}", std::process::id())
}

fn source_config(conn: &KafkaConnection, topic: &str, group: &str) -> KafkaSourceConfig {
    KafkaSourceConfig {
        brokers: conn.brokers.clone(),
        topic: topic.into(),
        group: group.into(),
        options: conn.options.clone(),
        replication: conn.replication,
        partitions: None,
        batch: None,
    }
}

fn records(n: usize, keys: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| (format!("k{}", i % keys), i.to_string().into_bytes()))
        .collect()
}

fn number(body: &Body) -> usize {
    let Body::Bytes(b) = body else {
        panic!("a kafka message comes as bytes")
    };
    std::str::from_utf8(b).unwrap().parse().unwrap()
}

/// Polls until `n` messages came or `within` passed.
fn poll_n(src: &mut KafkaSource, n: usize, within: Duration) -> Vec<Message> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(src.poll().unwrap());
    }
    got
}

#[test]
fn kafka_ensure_topics_is_idempotent_and_creates_the_partitions() {
    let conn = conn();
    let (a, b) = (unique("ensure-a"), unique("ensure-b"));
    let want = [(a.clone(), 3), (b.clone(), 1)];
    ensure_topics(&conn, &want, Duration::from_secs(10)).unwrap();
    ensure_topics(&conn, &want, Duration::from_secs(10)).unwrap();
    assert_eq!(partitions(&conn, &a).unwrap(), [0, 1, 2]);
    assert_eq!(partitions(&conn, &b).unwrap(), [0]);
    // Asking for more partitions later leaves the topic as it is.
    ensure_topics(&conn, &[(b.clone(), 4)], Duration::from_secs(10)).unwrap();
    assert_eq!(partitions(&conn, &b).unwrap(), [0]);
    let err = partitions(&conn, &unique("never-made"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn kafka_send_all_is_read_back_in_order_per_key() {
    let conn = conn();
    let topic = unique("sendall");
    ensure_topics(&conn, &[(topic.clone(), 3)], Duration::from_secs(10)).unwrap();
    let producer = KafkaProducer::new(&conn).unwrap();
    let sent = records(1000, 10);
    producer
        .send_all(&topic, &sent, Duration::from_secs(30))
        .unwrap();
    let ends = end_offsets(&conn, &topic).unwrap();
    assert_eq!(
        ends.values().sum::<i64>(),
        1000,
        "end offsets {ends:?}: a broker that answers ListOffsets with the last batch's base \
         offset + 1 (Tansu's memory:// and s3:// storage) is not fit for the tests"
    );

    let mut reader = KafkaReader::open(&conn, &topic, ReadFrom::Beginning).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 1000 && Instant::now() < deadline {
        if let Some(m) = reader.next(Duration::from_millis(500)).unwrap() {
            got.push(m);
        }
    }
    assert_eq!(got.len(), 1000);
    assert!(reader.next(Duration::from_millis(300)).unwrap().is_none());
    let mut last_offset: HashMap<i32, i64> = HashMap::new();
    let mut last_value: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut partition_of: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut values = BTreeSet::new();
    for m in &got {
        let key = m.key.clone().unwrap();
        let value: usize = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
        assert_eq!(key, format!("k{}", value % 10).into_bytes());
        if let Some(prev) = last_offset.insert(m.partition, m.offset) {
            assert!(m.offset > prev, "offsets grow within a partition");
        }
        if let Some(prev) = last_value.insert(key.clone(), value) {
            assert!(value > prev, "records of one key keep their order");
        }
        assert_eq!(
            *partition_of.entry(key).or_insert(m.partition),
            m.partition,
            "one key, one partition"
        );
        assert!(m.timestamp_ms.is_some());
        values.insert(value);
    }
    assert_eq!(values.len(), 1000);
    assert!(last_offset.len() > 1, "10 keys spread over the partitions");
}

#[test]
fn kafka_source_resumes_right_after_the_acked_messages() {
    let conn = conn();
    let topic = unique("resume");
    let group = unique("resume-group");
    let cfg = source_config(&conn, &topic, &group);
    let mut src = KafkaSource::new(&cfg).unwrap();
    KafkaProducer::new(&conn)
        .unwrap()
        .send_all(&topic, &records(20, 3), Duration::from_secs(30))
        .unwrap();

    let msgs = poll_n(&mut src, 20, Duration::from_secs(30));
    assert_eq!(msgs.len(), 20);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(number(&m.body), i);
        assert_eq!(m.name, format!("{topic}/0@{i}"));
        let at = m.offset.as_ref().unwrap();
        assert_eq!(
            (at.topic.as_str(), at.partition, at.offset),
            (topic.as_str(), 0, i as i64)
        );
        assert_eq!(m.key.as_deref(), Some(format!("k{}", i % 3).as_bytes()));
    }
    let mut msgs: Vec<Option<Message>> = msgs.into_iter().map(Some).collect();
    // The first half acked backwards (from another thread), and message 15 too: 10..14 are
    // not done, so nothing past 10 may be committed.
    let mut firsts: Vec<Message> = (0..10).filter_map(|i| msgs[i].take()).collect();
    firsts.reverse();
    std::thread::spawn(move || {
        for (n, m) in firsts.into_iter().enumerate() {
            if n == 5 {
                m.ack
                    .failed("a rejected one still moves the offset")
                    .unwrap();
            } else {
                m.ack.done().unwrap();
            }
        }
    })
    .join()
    .unwrap();
    msgs[15].take().unwrap().ack.done().unwrap();
    drop(msgs); // the rest never acked: a crash
    drop(src);

    let mut again = KafkaSource::new(&cfg).unwrap();
    let msgs = poll_n(&mut again, 10, Duration::from_secs(60));
    let numbers: Vec<usize> = msgs.iter().map(|m| number(&m.body)).collect();
    assert_eq!(
        numbers,
        (10..20).collect::<Vec<_>>(),
        "resumes at 10, skips none (nothing at all: does the broker answer a fetch from the \
         middle of a record batch? Tansu's memory:// and s3:// storage skip to the next batch)"
    );
    for m in msgs {
        m.ack.done().unwrap();
    }
    drop(again);
    let mut third = KafkaSource::new(&cfg).unwrap();
    assert!(
        poll_n(&mut third, 1, Duration::from_secs(5)).is_empty(),
        "all acked: nothing comes again"
    );
}

#[test]
fn kafka_two_sources_in_one_group_share_the_partitions() {
    let conn = conn();
    let topic = unique("split");
    let group = unique("split-group");
    let mut cfg = source_config(&conn, &topic, &group);
    cfg.partitions = Some(4);
    let mut a = KafkaSource::new(&cfg).unwrap();
    let mut b = KafkaSource::new(&cfg).unwrap();
    // Both must hold partitions before anything is written, else the first to join takes
    // messages that a rebalance then hands to the other as well.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(a.poll().unwrap().is_empty() && b.poll().unwrap().is_empty());
        let (pa, pb) = (a.assignment().unwrap(), b.assignment().unwrap());
        if !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stable assignment: {pa:?} {pb:?}"
        );
    }
    KafkaProducer::new(&conn)
        .unwrap()
        .send_all(&topic, &records(400, 40), Duration::from_secs(30))
        .unwrap();
    let (mut seen_a, mut seen_b) = (BTreeSet::new(), BTreeSet::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen_a.len() + seen_b.len() < 400 && Instant::now() < deadline {
        for (src, seen) in [(&mut a, &mut seen_a), (&mut b, &mut seen_b)] {
            for m in src.poll().unwrap() {
                assert!(seen.insert(number(&m.body)));
                m.ack.done().unwrap();
            }
        }
    }
    assert!(
        seen_a.is_disjoint(&seen_b),
        "a message went to both members"
    );
    assert_eq!(seen_a.len() + seen_b.len(), 400);
    assert!(
        !seen_a.is_empty() && !seen_b.is_empty(),
        "both members got some"
    );
}

#[test]
fn kafka_sink_delivers_a_receipt_with_headers() {
    let conn = conn();
    let topic = unique("receipts");
    let cfg = KafkaSinkConfig {
        brokers: conn.brokers.clone(),
        topic: topic.clone(),
        options: BTreeMap::new(),
        replication: None,
        partitions: Some(2),
        timeout: Some("5s".into()),
        retry: RetryPolicyConfig::default(),
    };
    assert!(cfg.check().is_empty(), "{:?}", cfg.check());
    let sink = cfg.build().unwrap();
    assert_eq!(sink.topic(), topic);
    assert_eq!(sink.timeout(), Duration::from_secs(5));
    assert_eq!(sink.retry_policy(), &RetryPolicy::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let results = rt.block_on(async {
        let mut all = Vec::new();
        for i in 0..3 {
            let payload = format!("{{\"receipt\":{i}}}").into_bytes();
            all.push(
                sink.deliver(
                    &format!("rcpt-{i}"),
                    payload,
                    &[("content-type", "application/json"), ("snodo-attempt", "1")],
                )
                .await,
            );
        }
        all
    });
    assert!(
        results
            .iter()
            .all(|r| *r == DeliveryResult::Delivered { status: 0 }),
        "{results:?}"
    );
    let mut reader = KafkaReader::open(&conn, &topic, ReadFrom::Beginning).unwrap();
    let mut keys = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while keys.len() < 3 && Instant::now() < deadline {
        if let Some(m) = reader.next(Duration::from_millis(500)).unwrap() {
            keys.insert(String::from_utf8(m.key.unwrap()).unwrap());
        }
    }
    assert_eq!(
        keys,
        ["rcpt-0", "rcpt-1", "rcpt-2"].map(String::from).into()
    );
}

#[test]
fn kafka_permanent_and_transient_errors_are_told_apart() {
    let conn = conn();
    let topic = unique("too-large");
    let mut small = conn.clone();
    // The client refuses a record over its own limit before sending: permanent.
    small
        .options
        .insert("message.max.bytes".into(), "2000".into());
    ensure_topics(&small, &[(topic.clone(), 1)], Duration::from_secs(10)).unwrap();
    let producer = KafkaProducer::with_delivery_timeout(&small, Duration::from_secs(5)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let result = rt.block_on(producer.deliver(&topic, "k", vec![b'x'; 10_000], &[]));
    assert!(
        matches!(&result, DeliveryResult::Permanent { reason } if reason.contains(&topic)),
        "{result:?}"
    );
    // No broker: worth retrying.
    let down = KafkaProducer::with_delivery_timeout(
        &KafkaConnection::new("127.0.0.1:1"),
        Duration::from_millis(500),
    )
    .unwrap();
    let result = rt.block_on(down.deliver("anything", "k", b"x".to_vec(), &[]));
    assert!(
        matches!(result, DeliveryResult::Retry { after: None, .. }),
        "{result:?}"
    );
}

#[test]
fn kafka_options_pass_verbatim_and_secrets_stay_hidden() {
    let mut c = conn();
    c.options
        .insert("client.id".into(), "snodo-env-test".into());
    c.options.insert("socket.timeout.ms".into(), "31000".into());
    c.options
        .insert("sasl.password".into(), "s3cr3t-pass".into());
    assert!(c.check().is_empty(), "{:?}", c.check());
    let config = c.build_config(Role::Admin, &[], &[]).unwrap();
    assert_eq!(config.get("client.id"), Some("snodo-env-test"));
    assert_eq!(config.get("socket.timeout.ms"), Some("31000"));
    assert_eq!(config.get("sasl.password"), Some("s3cr3t-pass"));
    c.options.remove("sasl.password");
    ensure_topics(&c, &[(unique("env"), 1)], Duration::from_secs(10)).unwrap();

    let mut shown = c.clone();
    shown
        .options
        .insert("sasl.password".into(), "hunter2-plain".into());
    shown
        .options
        .insert("ssl.key.password".into(), "hunter3-plain".into());
    let debug = format!("{shown:?}");
    assert!(!debug.contains("hunter"), "{debug}");
    assert!(debug.contains("snodo-env-test"), "{debug}");
}

#[test]
fn kafka_refused_topic_creation_and_a_silent_broker_are_clear_errors() {
    let conn = conn();
    let err =
        ensure_topics(&conn, &[("bad topic!".into(), 1)], Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, ConnectorError::Refused(_)));
    let err = err.to_string();
    assert!(
        err.starts_with("kafka broker refused to create topic bad topic!: "),
        "{err}"
    );

    let down = KafkaConnection::new("127.0.0.1:1");
    let err = ensure_topics(&down, &[(unique("x"), 1)], Duration::from_secs(2)).unwrap_err();
    assert!(matches!(err, ConnectorError::Unavailable(_)));
    assert!(
        err.to_string()
            .contains("kafka brokers 127.0.0.1:1 did not answer"),
        "{err}"
    );
}

/// `cargo test --release -p snodo-connectors kafka_throughput -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check"]
fn kafka_throughput_100k() {
    let conn = conn();
    let topic = unique("bench");
    ensure_topics(&conn, &[(topic.clone(), 4)], Duration::from_secs(10)).unwrap();
    let producer = KafkaProducer::new(&conn).unwrap();
    let n = 100_000;
    let sent: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("key-{}", i % 1000),
                format!("{{\"event\":{i},\"kind\":\"receipt.stored\"}}").into_bytes(),
            )
        })
        .collect();
    let t = Instant::now();
    producer
        .send_all(&topic, &sent, Duration::from_secs(120))
        .unwrap();
    let send = t.elapsed();
    let t = Instant::now();
    let mut reader = KafkaReader::open(&conn, &topic, ReadFrom::Beginning).unwrap();
    let mut got = 0;
    while got < n {
        match reader.next(Duration::from_secs(10)).unwrap() {
            Some(_) => got += 1,
            None => panic!("only {got} of {n} read"),
        }
    }
    let read = t.elapsed();
    println!(
        "send_all: {n} in {send:?} = {:.0}/s; KafkaReader: {n} in {read:?} = {:.0}/s",
        n as f64 / send.as_secs_f64(),
        n as f64 / read.as_secs_f64()
    );
}
