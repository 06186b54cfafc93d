use super::*;

#[test]
fn kafka_config_checks() {
    let mut c = KafkaConnection::new("");
    c.options.insert("group.id".into(), "x".into());
    c.options.insert("no.such.property".into(), "1".into());
    let problems = c.check().join("\n");
    assert!(problems.contains("brokers is empty"), "{problems}");
    assert!(problems.contains("group.id"), "{problems}");

    let mut c = KafkaConnection::new("127.0.0.1:9092");
    c.options.insert("no.such.property".into(), "1".into());
    let problems = c.check().join("\n");
    assert!(problems.contains("no.such.property"), "{problems}");

    let mut c = KafkaConnection::new("127.0.0.1:9092");
    c.options
        .insert("security.protocol".into(), "carrier-pigeon".into());
    assert_eq!(c.check().len(), 1, "{:?}", c.check());

    let src: KafkaSourceConfig = serde_json::from_value(serde_json::json!({
        "brokers": "h:9092", "topic": "bad topic", "group": " ", "batch": 0, "partitions": 0
    }))
    .unwrap();
    let problems = src.check().join("\n");
    for want in ["bad topic", "group is empty", "batch", "partitions"] {
        assert!(problems.contains(want), "{want}: {problems}");
    }
    assert!(
        serde_json::from_value::<KafkaSourceConfig>(serde_json::json!({
            "brokers": "h:9092", "topic": "t", "group": "g", "gruop": "x"
        }))
        .is_err()
    );
    let sink: KafkaSinkConfig = serde_json::from_value(serde_json::json!({
        "brokers": "h:9092", "topic": "t", "timeout": "10",
        "retry": { "max_attempts": 0 }
    }))
    .unwrap();
    let problems = sink.check().join("\n");
    assert!(problems.contains("timeout"), "{problems}");
    assert!(problems.contains("max_attempts"), "{problems}");
}
