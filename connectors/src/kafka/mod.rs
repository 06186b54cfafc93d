//! The `kafka` connector: a topic as a source of messages (a consumer group), as the target of
//! receipt pushes ([`KafkaSink`]), and as a stream the hub writes to ([`KafkaProducer`]).
//!
//! `from = { connector = "kafka", brokers = "k1:9092,k2:9092", topic = "flows", group = "snodo",
//! partitions = 3, batch = 5000, options = { "security.protocol" = "SASL_SSL", ... } }`
//!
//! It speaks the Kafka protocol through librdkafka (built from source with the crate), so it
//! works with Apache Kafka, Redpanda, Tansu and anything else that speaks the protocol. The
//! `options` table is handed to librdkafka verbatim (`security.protocol`, `sasl.mechanism`,
//! `sasl.username`, `sasl.password`, `ssl.ca.location`, ...); a value may be `${VAR}` or
//! `${VAR:-default}` in the configuration file, which the loader replaces. Values of keys that
//! hold secrets (see [`is_secret_key`]) are never shown in logs, errors or `Debug` output.
//!
//! **At-least-once.** The source never moves the group's committed offset past a message the
//! pipeline has not finished: auto-commit is on but auto-*store* is off, and an offset is stored
//! only by [`Ack::done`]/[`Ack::failed`], and only once every message before it in its partition
//! is acknowledged too (acks may come in any order, from any thread). A crash, or an ack that is
//! never called, means the message is delivered again after the next start (an ack never called
//! also holds back the commits of its partition until then: later messages come again too).
//!
//! Topics are created when missing ([`ensure_topics`]): many brokers (Tansu among them) do not
//! create topics on first use, and a hub that starts on an empty cluster should just work.

use crate::duration::HumanDuration;
use crate::retry::{RetryPolicy, RetryPolicyConfig};
use crate::{
    Ack, Body, ConnectorError, DeliveryResult, Message, MessageSink, MessageSinkConfig, Outgoing,
    Result, Sending, Source, SourceConfig, StreamOffset,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

pub const NAME: &str = "kafka";

/// How long building a source or sink waits for the brokers (metadata, topic creation).
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Default partitions of a topic the hub creates.
const DEFAULT_PARTITIONS: i32 = 1;
/// Default most messages one [`Source::poll`] returns.
const DEFAULT_BATCH: usize = 5000;
/// How long one poll waits for the first message.
const FIRST_WAIT: Duration = Duration::from_millis(200);
/// How long one poll goes on taking what arrives after the first message.
const MORE_WAIT: Duration = Duration::from_millis(20);
/// Replication factor that asks the broker for its default (KIP-464, Kafka 2.4+).
const BROKER_DEFAULT_REPLICATION: i32 = -1;
/// Producer batching delay: small, so a lone receipt is not held back, yet enough to batch.
const LINGER_MS: &str = "5";

/// Options the connector sets itself (each for the clients it applies to): overriding them would break its
/// guarantees (the group's offsets, every write acknowledged by all in-sync replicas).
const RESERVED_ALWAYS: [&str; 2] = ["bootstrap.servers", "metadata.broker.list"];
const RESERVED_CONSUMER: [&str; 4] = [
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
];
const RESERVED_PRODUCER: [&str; 4] = [
    "acks",
    "request.required.acks",
    "message.timeout.ms",
    "delivery.timeout.ms",
];

/// True for option keys whose values are secrets: passwords, secrets, private keys, OAuth
/// settings. Their values are shown as `[redacted]`.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.ends_with("key.pem")
        || k.contains("oauthbearer.config")
}

/// Where the brokers are and how to talk to them; shared by sources, sinks, producers and
/// readers. Configs with their own keys (topic, group, ...) repeat these fields instead of
/// flattening this struct: serde cannot `flatten` under `deny_unknown_fields`, and a misspelt
/// key must be refused.
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConnection {
    /// `host:port[,host:port...]`: where to start; the cluster tells the rest.
    pub brokers: String,
    /// librdkafka properties, verbatim (the configuration loader has already replaced `${VAR}`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Replication factor of topics the hub creates. None: the broker's default
    /// (`default.replication.factor`), or 1 on a broker too old to have one.
    #[serde(default)]
    pub replication: Option<i32>,
}

impl std::fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConnection")
            .field("brokers", &self.brokers)
            .field("options", &shown_options(&self.options))
            .field("replication", &self.replication)
            .finish()
    }
}

/// The options as they may be shown: secret values blanked out.
fn shown_options(options: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    options
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_key(k) {
                "[redacted]"
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

/// Which client a config is for (for the logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Consumer,
    Producer,
    Reader,
}

impl KafkaConnection {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            ..Self::default()
        }
    }

    /// Semantic checks, each a message for the operator that never shows a secret.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.brokers.trim().is_empty() {
            errors.push("brokers is empty: give host:port[,host:port...]".into());
        }
        if let Some(r) = self.replication {
            if r != BROKER_DEFAULT_REPLICATION && r < 1 {
                errors.push(format!(
                    "replication must be at least 1 (or -1 for the broker's default), got {r}"
                ));
            }
        }
        match self.expanded_options() {
            Ok(options) => {
                for key in options.keys() {
                    if let Some(why) = reserved(key) {
                        errors.push(why);
                    }
                }
                // librdkafka refuses unknown properties and bad values here, without any I/O.
                if errors.is_empty() {
                    if let Err(e) = self.client_config(&options).create_native_config() {
                        errors.push(format!("options: {}", self.scrub(&e.to_string(), &options)));
                    }
                }
            }
            Err(e) => errors.extend(e),
        }
        errors
    }

    /// The options as librdkafka gets them. `${VAR}` references were replaced when the
    /// configuration was loaded (`snodo_pipelines::config`); expanding again here would break a
    /// secret that itself contains `${`.
    fn expanded_options(&self) -> std::result::Result<BTreeMap<String, String>, Vec<String>> {
        Ok(self.options.clone())
    }

    fn client_config(&self, options: &BTreeMap<String, String>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers.trim());
        // librdkafka's info chatter (each connection, each rebalance step) is not worth a line.
        config.set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in options {
            config.set(k, v);
        }
        config
    }

    /// A client config for `role`: the connector's `defaults` where the options say nothing,
    /// then the options, then the settings it `forces`.
    fn build_config(
        &self,
        role: Role,
        defaults: &[(&str, &str)],
        forced: &[(&str, &str)],
    ) -> Result<ClientConfig> {
        let errors = self.check();
        if !errors.is_empty() {
            return Err(ConnectorError::Config(errors.join("; ")));
        }
        let options = self
            .expanded_options()
            .map_err(|e| ConnectorError::Config(e.join("; ")))?;
        let mut config = self.client_config(&options);
        for (k, v) in defaults {
            if !options.contains_key(*k) {
                config.set(*k, *v);
            }
        }
        for (k, v) in forced {
            config.set(*k, *v);
        }
        debug!(
            brokers = %self.brokers,
            role = ?role,
            options = ?shown_options(&options),
            "kafka client configured"
        );
        Ok(config)
    }

    /// `text` with the values of secret options blanked out (librdkafka quotes bad values in
    /// its errors).
    fn scrub(&self, text: &str, options: &BTreeMap<String, String>) -> String {
        let mut out = text.to_string();
        for (k, v) in options {
            if is_secret_key(k) && v.len() >= 3 {
                out = out.replace(v.as_str(), "[redacted]");
            }
        }
        out
    }

    fn create<T, F>(
        &self,
        role: Role,
        defaults: &[(&str, &str)],
        forced: &[(&str, &str)],
        make: F,
    ) -> Result<T>
    where
        F: FnOnce(&ClientConfig) -> std::result::Result<T, KafkaError>,
    {
        let config = self.build_config(role, defaults, forced)?;
        make(&config).map_err(|e| {
            let options = self.expanded_options().unwrap_or_default();
            ConnectorError::Config(format!(
                "cannot set up the kafka {} client for {}: {}",
                format!("{role:?}").to_lowercase(),
                self.brokers,
                self.scrub(&e.to_string(), &options)
            ))
        })
    }

    fn admin(&self) -> Result<AdminClient<Ctx>> {
        self.create(Role::Admin, &[], &[], |c| c.create_with_context(Ctx))
    }
}

/// Why `key` may not be set in `options`: the connector sets it itself.
fn reserved(key: &str) -> Option<String> {
    let k = key.trim();
    if RESERVED_ALWAYS.contains(&k) {
        Some(format!(
            "options.\"{key}\": give the brokers with the `brokers` key"
        ))
    } else if RESERVED_CONSUMER.contains(&k) {
        Some(format!(
            "options.\"{key}\" is set by the connector (the source commits only what the \
             pipeline finished; the group is the `group` key)"
        ))
    } else if RESERVED_PRODUCER.contains(&k) {
        Some(format!(
            "options.\"{key}\" is set by the connector (every write waits for all in-sync \
             replicas; the sink's delivery timeout is its `timeout` key)"
        ))
    } else {
        None
    }
}

/// Problems with a topic name as Kafka sees them (legal characters `[A-Za-z0-9._-]`, at most
/// 249 of them, not `.` or `..`).
fn check_topic(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("topic is empty".into());
    }
    if topic == "." || topic == ".." {
        return Some(format!("topic {topic:?} is not a valid name"));
    }
    if topic.len() > 249 {
        return Some(format!("topic {topic:?} is longer than 249 characters"));
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some(format!(
            "topic {topic:?} may only hold letters, digits, '.', '_' and '-'"
        ));
    }
    None
}

fn check_partitions(partitions: Option<i32>) -> Option<String> {
    match partitions {
        Some(p) if p < 1 => Some(format!("partitions must be at least 1, got {p}")),
        _ => None,
    }
}

/// The client context: librdkafka's log lines and errors go to `tracing`, and the producer's
/// delivery reports wake whoever waits for them.
struct Ctx;

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => warn!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", "{fac}: {message}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", "{fac}: {message}"),
        }
    }

    // Broker down, connection refused: librdkafka retries by itself; the callers see timeouts.
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(target: "librdkafka", "{error}: {reason}");
    }
}

impl ConsumerContext for Ctx {}

/// Who waits for a produced record's delivery report.
enum Pending {
    /// One record of a [`KafkaProducer::send_all`] batch.
    Batch(Arc<Batch>),
    /// One [`KafkaProducer::deliver`] call.
    One(tokio::sync::oneshot::Sender<std::result::Result<(), KafkaError>>),
}

/// The records of one `send_all` not yet reported, and the first failure.
struct Batch {
    state: Mutex<BatchState>,
    all_reported: Condvar,
}

struct BatchState {
    outstanding: usize,
    failed: usize,
    first_error: Option<KafkaError>,
}

impl Batch {
    fn lock(&self) -> MutexGuard<'_, BatchState> {
        // A panic while holding this lock leaves only counters behind: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn report(&self, result: std::result::Result<(), KafkaError>) {
        let mut s = self.lock();
        s.outstanding = s.outstanding.saturating_sub(1);
        if let Err(e) = result {
            s.failed += 1;
            s.first_error.get_or_insert(e);
        }
        if s.outstanding == 0 {
            self.all_reported.notify_all();
        }
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, pending: Box<Pending>) {
        let result = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        match *pending {
            Pending::Batch(batch) => batch.report(result),
            // The caller may have gone (its future dropped): nothing to tell.
            Pending::One(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// Makes sure every `(topic, partitions)` exists, creating the missing ones with that many
/// partitions and the connection's replication factor. A topic that exists (or that another hub
/// creates at the same moment) is fine whatever its partition count (a smaller one is logged).
/// Blocking: call it from a blocking thread.
pub fn ensure_topics(
    conn: &KafkaConnection,
    topics: &[(String, i32)],
    timeout: Duration,
) -> Result<()> {
    for (topic, partitions) in topics {
        if let Some(e) = check_topic(topic).or_else(|| check_partitions(Some(*partitions))) {
            return Err(ConnectorError::Refused(format!(
                "kafka broker refused to create topic {topic}: {e}"
            )));
        }
    }
    let admin = conn.admin()?;
    let existing = topic_partitions(admin.inner(), conn, timeout)?;
    let mut missing = Vec::new();
    for (topic, partitions) in topics {
        match existing.get(topic.as_str()) {
            Some(&have) if have < *partitions => warn!(
                topic = %topic,
                "kafka topic has {have} partitions, fewer than the {partitions} configured; \
                 it is used as it is (add partitions with the broker's tools)"
            ),
            Some(_) => {}
            None => missing.push((topic.as_str(), *partitions)),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let replication = conn.replication.unwrap_or(BROKER_DEFAULT_REPLICATION);
    let mut retry_with_one = Vec::new();
    for (topic, result) in create_topics(&admin, conn, &missing, replication, timeout)? {
        match result {
            Ok(()) => info!(topic = %topic, "kafka topic created"),
            Err(RDKafkaErrorCode::TopicAlreadyExists) => {}
            // A broker older than Kafka 2.4 has no default replication factor to fall back on.
            Err(
                RDKafkaErrorCode::InvalidReplicationFactor
                | RDKafkaErrorCode::UnsupportedVersion
                | RDKafkaErrorCode::InvalidRequest,
            ) if conn.replication.is_none() => retry_with_one.push(topic),
            Err(code) => {
                return Err(ConnectorError::Refused(format!(
                    "kafka broker refused to create topic {topic}: {}",
                    KafkaError::AdminOp(code)
                )))
            }
        }
    }
    if !retry_with_one.is_empty() {
        warn!(
            "the kafka broker has no default replication factor: creating {} with replication 1 \
             (set `replication` to choose)",
            retry_with_one.join(", ")
        );
        let again: Vec<(&str, i32)> = missing
            .iter()
            .filter(|(t, _)| retry_with_one.contains(&t.to_string()))
            .copied()
            .collect();
        for (topic, result) in create_topics(&admin, conn, &again, 1, timeout)? {
            match result {
                Ok(()) => info!(topic = %topic, "kafka topic created"),
                Err(RDKafkaErrorCode::TopicAlreadyExists) => {}
                Err(code) => {
                    return Err(ConnectorError::Refused(format!(
                        "kafka broker refused to create topic {topic}: {}",
                        KafkaError::AdminOp(code)
                    )))
                }
            }
        }
    }
    wait_for_topics(admin.inner(), conn, &missing, timeout)
}

type CreateResults = Vec<(String, std::result::Result<(), RDKafkaErrorCode>)>;

fn create_topics(
    admin: &AdminClient<Ctx>,
    conn: &KafkaConnection,
    topics: &[(&str, i32)],
    replication: i32,
    timeout: Duration,
) -> Result<CreateResults> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(replication)))
        .collect();
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results =
        futures::executor::block_on(admin.create_topics(new.iter(), &opts)).map_err(|e| {
            if is_permanent(&e) {
                ConnectorError::Refused(format!("kafka topic creation refused: {e}"))
            } else {
                unreachable_brokers(conn, timeout, &e)
            }
        })?;
    Ok(results
        .into_iter()
        .map(|r| match r {
            Ok(t) => (t, Ok(())),
            Err((t, code)) => (t, Err(code)),
        })
        .collect())
}

/// Every topic of the cluster with its partition count; a cluster that does not answer is an
/// error naming the brokers.
fn topic_partitions<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    conn: &KafkaConnection,
    timeout: Duration,
) -> Result<HashMap<String, i32>> {
    let metadata = client
        .fetch_metadata(None, timeout)
        .map_err(|e| unreachable_brokers(conn, timeout, &e))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

fn unreachable_brokers(
    conn: &KafkaConnection,
    timeout: Duration,
    e: &KafkaError,
) -> ConnectorError {
    ConnectorError::Unavailable(format!(
        "kafka brokers {} did not answer within {timeout:?} ({e}): are they running and \
         reachable, and do security.protocol and the credentials match the listener?",
        conn.brokers
    ))
}

/// Waits until freshly created topics show up in the metadata with all their partitions led, so
/// that the first produce or subscribe finds them.
fn wait_for_topics<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    conn: &KafkaConnection,
    topics: &[(&str, i32)],
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let metadata = client
            .fetch_metadata(None, left.max(Duration::from_millis(100)))
            .map_err(|e| unreachable_brokers(conn, timeout, &e))?;
        let ready = topics.iter().all(|(name, _)| {
            metadata.topics().iter().any(|t| {
                t.name() == *name
                    && t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            })
        });
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let names: Vec<&str> = topics.iter().map(|(t, _)| *t).collect();
            return Err(ConnectorError::Unavailable(format!(
                "kafka topics {} were created but have no partition leaders after {timeout:?}",
                names.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The partitions of `topic`, sorted; an error when the topic does not exist.
pub fn partitions(conn: &KafkaConnection, topic: &str) -> Result<Vec<i32>> {
    let consumer = reader_consumer(conn)?;
    topic_partition_ids(&consumer, conn, topic, SETUP_TIMEOUT)
}

fn topic_partition_ids(
    consumer: &BaseConsumer<Ctx>,
    conn: &KafkaConnection,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| unreachable_brokers(conn, timeout, &e))?;
    let missing = || {
        ConnectorError::Refused(format!(
            "kafka topic {topic} does not exist on {}",
            conn.brokers
        ))
    };
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(missing());
    };
    if let Some(e) = t.error() {
        if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition {
            return Err(missing());
        }
        return Err(ConnectorError::Refused(format!(
            "kafka topic {topic} on {}: {}",
            conn.brokers,
            RDKafkaErrorCode::from(e)
        )));
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Each partition of `topic` with its end offset (the offset the next record will get), so a
/// reader knows when it has read everything there was.
pub fn end_offsets(conn: &KafkaConnection, topic: &str) -> Result<BTreeMap<i32, i64>> {
    let consumer = reader_consumer(conn)?;
    let mut out = BTreeMap::new();
    for p in topic_partition_ids(&consumer, conn, topic, SETUP_TIMEOUT)? {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, SETUP_TIMEOUT)
            .map_err(|e| unreachable_brokers(conn, SETUP_TIMEOUT, &e))?;
        out.insert(p, high);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Producer

/// Writes records to topics, every one acknowledged by all in-sync replicas (`acks=all`) and
/// idempotent (no duplicates or reordering from the client's own retries). Thread-safe: share
/// one per process and connection. Delivery reports are served by librdkafka's own thread.
pub struct KafkaProducer {
    producer: ThreadedProducer<Ctx>,
    brokers: String,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("brokers", &self.brokers)
            .finish()
    }
}

impl KafkaProducer {
    /// A producer whose records fail (and are reported) if not acknowledged within 5 minutes,
    /// librdkafka's default.
    pub fn new(conn: &KafkaConnection) -> Result<Self> {
        Self::with_delivery_timeout(conn, Duration::from_secs(300))
    }

    /// A producer whose records fail with a timeout when not acknowledged within `timeout` of
    /// being handed over (queueing, retries and the broker's answer included).
    pub fn with_delivery_timeout(conn: &KafkaConnection, timeout: Duration) -> Result<Self> {
        let timeout_ms = timeout.as_millis().clamp(10, i32::MAX as u128).to_string();
        let producer = conn.create(
            Role::Producer,
            // Overridable: e.g. a broker without idempotent producers, or compression wanted.
            &[
                ("enable.idempotence", "true"),
                ("linger.ms", LINGER_MS),
                ("compression.type", "none"),
            ],
            &[("acks", "all"), ("message.timeout.ms", &timeout_ms)],
            |c| c.create_with_context(Ctx),
        )?;
        Ok(Self {
            producer,
            brokers: conn.brokers.clone(),
        })
    }

    /// Writes every `(key, payload)` to `topic` and returns once the broker has acknowledged all
    /// of them, or with an error if any failed or `timeout` passed first. Records with one key
    /// land in one partition in the order given. Records are all handed over at once (librdkafka
    /// batches them), not one round trip at a time. After an error some records may have been
    /// written: the caller retries the batch, so readers must tolerate duplicates.
    pub fn send_all(
        &self,
        topic: &str,
        messages: &[(String, Vec<u8>)],
        timeout: Duration,
    ) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let batch = Arc::new(Batch {
            state: Mutex::new(BatchState {
                outstanding: messages.len(),
                failed: 0,
                first_error: None,
            }),
            all_reported: Condvar::new(),
        });
        for (key, payload) in messages {
            let mut record =
                BaseRecord::with_opaque_to(topic, Box::new(Pending::Batch(batch.clone())))
                    .key(key.as_str())
                    .payload(payload.as_slice());
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The local queue is full: wait for deliveries to make room.
                        if Instant::now() >= deadline {
                            return Err(self.not_acknowledged(
                                topic,
                                &batch,
                                messages.len(),
                                timeout,
                            ));
                        }
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    // Refused before sending (too large, unknown partition): the records
                    // already handed over still go; the caller retries the batch.
                    Err((e, _)) => return Err(self.refused(topic, &e)),
                }
            }
        }
        let mut s = batch.lock();
        while s.outstanding > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(s);
                return Err(self.not_acknowledged(topic, &batch, messages.len(), timeout));
            }
            s = batch
                .all_reported
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        match s.first_error.take() {
            None => Ok(()),
            Some(e) => {
                let failed = s.failed;
                drop(s);
                let err = self.refused(topic, &e);
                Err(match err {
                    ConnectorError::Unavailable(m) => ConnectorError::Unavailable(format!(
                        "{failed} of {} records not written: {m}",
                        messages.len()
                    )),
                    ConnectorError::Refused(m) => ConnectorError::Refused(format!(
                        "{failed} of {} records not written: {m}",
                        messages.len()
                    )),
                    other => other,
                })
            }
        }
    }

    fn not_acknowledged(
        &self,
        topic: &str,
        batch: &Batch,
        total: usize,
        timeout: Duration,
    ) -> ConnectorError {
        let s = batch.lock();
        ConnectorError::Unavailable(format!(
            "kafka {}: {} of {total} records to {topic} not acknowledged within {timeout:?}",
            self.brokers, s.outstanding
        ))
    }

    fn refused(&self, topic: &str, e: &KafkaError) -> ConnectorError {
        let reason = format!("kafka {}: writing to {topic}: {e}", self.brokers);
        if is_permanent(e) {
            ConnectorError::Refused(reason)
        } else {
            ConnectorError::Unavailable(reason)
        }
    }

    /// One attempt to write one record and have it acknowledged, classified for the outbox:
    /// a broker that is down, slow or busy is worth a retry; a record too large, a topic that is
    /// invalid or not authorised, a record the broker refuses are not.
    pub async fn deliver(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> DeliveryResult {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name,
                value: Some(*value),
            });
        }
        let record = BaseRecord::with_opaque_to(topic, Box::new(Pending::One(tx)))
            .key(key)
            .payload(payload.as_slice())
            .headers(owned);
        if let Err((e, _)) = self.producer.send(record) {
            return self.classify(topic, &e);
        }
        match rx.await {
            Ok(Ok(())) => DeliveryResult::Delivered { status: 0 },
            Ok(Err(e)) => self.classify(topic, &e),
            // The producer was torn down before reporting (the hub is stopping).
            Err(_) => DeliveryResult::Retry {
                reason: format!(
                    "kafka {}: the producer stopped before the broker answered",
                    self.brokers
                ),
                after: None,
            },
        }
    }

    fn classify(&self, topic: &str, e: &KafkaError) -> DeliveryResult {
        let reason = format!("kafka {}: writing to {topic}: {e}", self.brokers);
        if is_permanent(e) {
            DeliveryResult::Permanent { reason }
        } else {
            DeliveryResult::Retry {
                reason,
                after: None,
            }
        }
    }

    /// Waits until everything handed over has been reported, at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout).map_err(|e| {
            ConnectorError::Unavailable(format!(
                "kafka {}: records still unacknowledged after {timeout:?}: {e}",
                self.brokers
            ))
        })
    }
}

/// Errors that another attempt will not cure: the record, the topic or the permissions must
/// change first. Everything else (timeouts, brokers down, leader changes) is transient; so is a
/// fatal producer error, which condemns this producer instance, not the record.
fn is_permanent(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::MessageBatchTooLarge
                | C::InvalidMessage
                | C::InvalidRecord
                | C::InvalidTopic
                | C::InvalidTimestamp
                | C::InvalidRequiredAcks
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
                | C::SaslAuthenticationFailed
                | C::Authentication
                | C::UnsupportedSASLMechanism
                | C::UnsupportedForMessageFormat
                | C::UnsupportedCompressionType
                | C::PolicyViolation
                | C::BadMessage
                | C::InvalidArgument
        )
    )
}

// ---------------------------------------------------------------------------------------------
// Sink (receipt pushes)

/// `to = { connector = "kafka", brokers = "...", topic = "receipts", partitions = 3,
/// timeout = "10s", retry = { max_attempts = 12, initial = "1s", max = "1h" }, options = {...} }`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    pub brokers: String,
    pub topic: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Replication factor if the topic is created (None: the broker's default).
    #[serde(default)]
    pub replication: Option<i32>,
    /// Partitions if the topic is created (default 1).
    #[serde(default)]
    pub partitions: Option<i32>,
    /// How long one delivery may take, queueing and broker retries included (default 10s).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    #[serde(default)]
    pub retry: RetryPolicyConfig,
}

impl std::fmt::Debug for KafkaSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSinkConfig")
            .field("topic", &self.topic)
            .field("connection", &self.connection())
            .field("partitions", &self.partitions)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(10);

impl KafkaSinkConfig {
    pub fn connection(&self) -> KafkaConnection {
        KafkaConnection {
            brokers: self.brokers.clone(),
            options: self.options.clone(),
            replication: self.replication,
        }
    }

    fn timeout(&self) -> std::result::Result<Duration, String> {
        let Some(timeout) = &self.timeout else {
            return Ok(DEFAULT_SINK_TIMEOUT);
        };
        match timeout.get() {
            Ok(d) if d < Duration::from_millis(100) => {
                Err(format!("timeout ({timeout}) must be at least 100ms"))
            }
            Ok(d) if d.as_millis() > i32::MAX as u128 => {
                Err(format!("timeout ({timeout}) is too long"))
            }
            Ok(d) => Ok(d),
            Err(e) => Err(format!("timeout: {e}")),
        }
    }

    /// Semantic checks beyond types, each a message for the operator.
    pub fn check(&self) -> Vec<String> {
        let mut errors = self.connection().check();
        errors.extend(check_topic(&self.topic));
        errors.extend(check_partitions(self.partitions));
        errors.extend(self.timeout().err());
        errors.extend(self.retry.check());
        errors
    }

    /// The producer for this sink, once the topic exists. Blocking (it asks the brokers).
    pub fn build(&self) -> Result<KafkaSink> {
        let errors = self.check();
        if !errors.is_empty() {
            return Err(ConnectorError::Config(errors.join("; ")));
        }
        let timeout = self.timeout().map_err(ConnectorError::Config)?;
        let retry = self
            .retry
            .build()
            .map_err(|e| ConnectorError::Config(e.join("; ")))?;
        let conn = self.connection();
        ensure_topics(
            &conn,
            &[(
                self.topic.clone(),
                self.partitions.unwrap_or(DEFAULT_PARTITIONS),
            )],
            SETUP_TIMEOUT,
        )?;
        Ok(KafkaSink {
            producer: Arc::new(KafkaProducer::with_delivery_timeout(&conn, timeout)?),
            topic: self.topic.clone(),
            timeout,
            retry,
        })
    }
}

/// Delivers documents (receipts) to one topic, one record each, keyed by the caller (the
/// receipt's identity, so redeliveries of one receipt stay in one partition, in order).
/// Cheap to clone: clones share the producer.
#[derive(Clone, Debug)]
pub struct KafkaSink {
    producer: Arc<KafkaProducer>,
    topic: String,
    timeout: Duration,
    retry: RetryPolicy,
}

impl KafkaSink {
    /// One attempt; see [`KafkaProducer::deliver`]. A record not acknowledged within
    /// [`Self::timeout`] is reported as worth retrying.
    pub async fn deliver(
        &self,
        key: &str,
        payload: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> DeliveryResult {
        self.producer
            .deliver(&self.topic, key, payload, headers)
            .await
    }

    /// The longest one delivery can take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl MessageSinkConfig for KafkaSinkConfig {
    fn check(&self) -> Vec<String> {
        KafkaSinkConfig::check(self)
    }

    fn build(&self) -> Result<Arc<dyn MessageSink>> {
        Ok(Arc::new(KafkaSinkConfig::build(self)?))
    }
}

impl MessageSink for KafkaSink {
    /// One record keyed by the message's key, its headers as record headers.
    fn send<'a>(&'a self, message: Outgoing<'a>) -> Sending<'a> {
        Box::pin(async move {
            self.producer
                .deliver(
                    &self.topic,
                    message.key,
                    message.body.to_vec(),
                    message.headers,
                )
                .await
        })
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// All records handed over at once, then every acknowledgement awaited.
    fn send_all(&self, messages: &[(String, Vec<u8>)], timeout: Duration) -> Result<()> {
        self.producer.send_all(&self.topic, messages, timeout)
    }
}

// ---------------------------------------------------------------------------------------------
// Source (consumer group)

/// `from = { connector = "kafka", brokers = "...", topic = "flows", group = "snodo-flows",
/// partitions = 1, batch = 5000, options = {...} }` (the `connector` key already removed)
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    pub brokers: String,
    pub topic: String,
    /// The consumer group: hubs in one group share the partitions, each message goes to one.
    pub group: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Replication factor if the topic is created (None: the broker's default).
    #[serde(default)]
    pub replication: Option<i32>,
    /// Partitions if the topic is created (default 1).
    #[serde(default)]
    pub partitions: Option<i32>,
    /// Most messages one poll returns (default 5000).
    #[serde(default)]
    pub batch: Option<usize>,
}

impl std::fmt::Debug for KafkaSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSourceConfig")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("connection", &self.connection())
            .field("partitions", &self.partitions)
            .field("batch", &self.batch)
            .finish()
    }
}

impl KafkaSourceConfig {
    pub fn connection(&self) -> KafkaConnection {
        KafkaConnection {
            brokers: self.brokers.clone(),
            options: self.options.clone(),
            replication: self.replication,
        }
    }
}

impl SourceConfig for KafkaSourceConfig {
    /// A consumer has its messages pushed to it as they come; each poll takes what is there.
    fn schedule(&self) -> Option<&str> {
        None
    }

    fn check(&self) -> Vec<String> {
        let mut errors = self.connection().check();
        errors.extend(check_topic(&self.topic));
        if self.group.trim().is_empty() {
            errors.push("group is empty: name the consumer group the hubs share".into());
        }
        errors.extend(check_partitions(self.partitions));
        if self.batch == Some(0) {
            errors.push("batch must be at least 1".into());
        }
        errors
    }

    fn build(&self) -> Result<Box<dyn Source>> {
        Ok(Box::new(KafkaSource::new(self)?))
    }
}

/// A consumer-group member. Its messages carry acks that may be called from any thread, in any
/// order, after the poll that returned them.
pub struct KafkaSource {
    shared: Arc<SourceShared>,
    batch: usize,
}

/// What the source and its acks share.
struct SourceShared {
    consumer: BaseConsumer<Ctx>,
    topic: String,
    group: String,
    partitions: Mutex<HashMap<i32, PartitionTrack>>,
}

/// Per partition: the offsets handed out and not yet acknowledged, and how far the group's
/// offset may move.
#[derive(Default)]
struct PartitionTrack {
    /// Offset → how many handed-out copies await an ack (a rebalance can hand one out twice).
    outstanding: BTreeMap<i64, u32>,
    /// One past the highest acknowledged offset.
    done_to: i64,
    /// The offset last stored for commit.
    stored: i64,
}

impl PartitionTrack {
    /// The offset the group may commit now: the lowest still outstanding (every message before
    /// it is done), or one past the highest done when none is.
    fn committable(&self) -> i64 {
        self.outstanding
            .keys()
            .next()
            .copied()
            .unwrap_or(self.done_to)
    }
}

impl KafkaSource {
    /// Creates the topic if missing and joins the group; the partitions come with later polls.
    /// Blocking (it asks the brokers).
    pub fn new(cfg: &KafkaSourceConfig) -> Result<Self> {
        let errors = cfg.check();
        if !errors.is_empty() {
            return Err(ConnectorError::Config(errors.join("; ")));
        }
        let conn = cfg.connection();
        ensure_topics(
            &conn,
            &[(
                cfg.topic.clone(),
                cfg.partitions.unwrap_or(DEFAULT_PARTITIONS),
            )],
            SETUP_TIMEOUT,
        )?;
        let consumer: BaseConsumer<Ctx> = conn.create(
            Role::Consumer,
            &[],
            &[
                ("group.id", cfg.group.as_str()),
                // Commits happen in the background, but only of offsets stored by acks.
                ("enable.auto.commit", "true"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
            ],
            |c| c.create_with_context(Ctx),
        )?;
        consumer.subscribe(&[cfg.topic.as_str()]).map_err(|e| {
            ConnectorError::Refused(format!("kafka: cannot subscribe to {}: {e}", cfg.topic))
        })?;
        Ok(Self {
            shared: Arc::new(SourceShared {
                consumer,
                topic: cfg.topic.clone(),
                group: cfg.group.clone(),
                partitions: Mutex::new(HashMap::new()),
            }),
            batch: cfg.batch.unwrap_or(DEFAULT_BATCH),
        })
    }

    /// Commits what the acks stored so far, waiting for the broker's answer.
    pub fn commit(&self) -> Result<()> {
        match self.shared.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => Ok(()),
            // Nothing stored since the last commit.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => Ok(()),
            Err(e) => Err(ConnectorError::Unavailable(format!(
                "kafka: cannot commit the offsets of group {} on {}: {e}",
                self.shared.group, self.shared.topic
            ))),
        }
    }

    /// The partitions this member holds now (they change when hubs join or leave the group).
    pub fn assignment(&self) -> Result<Vec<i32>> {
        let tpl = self.shared.consumer.assignment().map_err(|e| {
            ConnectorError::Unavailable(format!(
                "kafka: assignment of group {}: {e}",
                self.shared.group
            ))
        })?;
        let mut ids: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn message(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Message {
        let (partition, offset) = (m.partition(), m.offset());
        self.shared
            .lock()
            .entry(partition)
            .or_default()
            .outstanding
            .entry(offset)
            .and_modify(|n| *n += 1)
            .or_insert(1);
        let name = format!("{}/{partition}@{offset}", m.topic());
        Message {
            name: name.clone(),
            body: Body::Bytes(m.payload().map(<[u8]>::to_vec).unwrap_or_default()),
            redelivered: false,
            key: m.key().map(<[u8]>::to_vec),
            offset: Some(StreamOffset {
                topic: m.topic().to_string(),
                partition,
                offset,
            }),
            ack: Box::new(KafkaAck {
                shared: self.shared.clone(),
                name,
                partition,
                offset,
            }),
        }
    }
}

impl SourceShared {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, PartitionTrack>> {
        // The map only holds offsets; after a panic elsewhere it is still consistent enough to
        // go on (at worst an offset is not stored and its message comes again).
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `offset` is finished and stores the partition's committable offset if it
    /// moved.
    fn acknowledge(&self, partition: i32, offset: i64, name: &str) -> Result<()> {
        let mut tracks = self.lock();
        let track = tracks.entry(partition).or_default();
        if let Some(n) = track.outstanding.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                track.outstanding.remove(&offset);
            }
        }
        track.done_to = track.done_to.max(offset + 1);
        let next = track.committable();
        if next <= track.stored {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(next))
            .map_err(|e| ConnectorError::Refused(format!("kafka: {name}: {e}")))?;
        // Stored under the lock, so two threads acking one partition store in order.
        match self.consumer.store_offsets(&tpl) {
            Ok(()) => {
                track.stored = next;
                Ok(())
            }
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::State) => {
                Err(ConnectorError::Refused(format!(
                    "kafka: {name} finished, but partition {partition} is no longer this hub's \
                     (the group rebalanced): its new owner will receive it again"
                )))
            }
            Err(e) => Err(ConnectorError::Refused(format!(
                "kafka: {name} finished, but its offset could not be stored: {e}"
            ))),
        }
    }
}

impl Source for KafkaSource {
    /// Waits up to 200 ms for a message, then takes what arrives within 20 ms more, at most
    /// `batch` messages. Rebalances are served here too, so poll regularly.
    fn poll(&mut self) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        let mut deadline = Instant::now() + FIRST_WAIT;
        let mut first = true;
        while out.len() < self.batch {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.shared.consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => {
                    out.push(self.message(&m));
                    if first {
                        first = false;
                        deadline = Instant::now() + MORE_WAIT;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) if out.is_empty() => {
                    return Err(ConnectorError::Unavailable(format!(
                        "kafka: consuming {} as group {}: {e}",
                        self.shared.topic, self.shared.group
                    )))
                }
                // Hand over what was taken; the error comes back at the next poll if it lasts.
                Some(Err(e)) => {
                    warn!(topic = %self.shared.topic, "kafka consumer: {e}");
                    break;
                }
            }
        }
        Ok(out)
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Acked offsets reach the broker now rather than at the next auto-commit; the consumer
        // itself leaves the group once the last outstanding ack is gone too.
        if let Err(e) = self.commit() {
            warn!("{e}");
        }
    }
}

struct KafkaAck {
    shared: Arc<SourceShared>,
    name: String,
    partition: i32,
    offset: i64,
}

impl Ack for KafkaAck {
    fn done(self: Box<Self>) -> Result<()> {
        self.shared
            .acknowledge(self.partition, self.offset, &self.name)
    }

    /// A topic has no `failed/` folder: the pipeline has already published its rejection of
    /// the message, so its offset is stored like a done one. Holding it back would stop the
    /// partition for good behind a message that can never succeed.
    fn failed(self: Box<Self>, reason: &str) -> Result<()> {
        warn!(message = %self.name, "kafka message set aside (its offset is committed): {reason}");
        self.shared
            .acknowledge(self.partition, self.offset, &self.name)
    }
}

// ---------------------------------------------------------------------------------------------
// Reader (tools, tests, benchmarks)

/// Where a [`KafkaReader`] starts in every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    Beginning,
    /// Only records written after the reader was opened.
    End,
}

/// One record as read by a [`KafkaReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub timestamp_ms: Option<i64>,
}

/// Reads every partition of one topic, outside any group: it commits nothing and disturbs no
/// one. For tools, tests and benchmarks.
pub struct KafkaReader {
    consumer: BaseConsumer<Ctx>,
}

fn reader_consumer(conn: &KafkaConnection) -> Result<BaseConsumer<Ctx>> {
    // librdkafka will not assign partitions without a group id, though with `assign` the group
    // is never joined and nothing is committed: a name of its own keeps it out of every group.
    let group = format!(
        "snodo-reader-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    conn.create(
        Role::Reader,
        &[],
        &[
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
        ],
        |c| c.create_with_context(Ctx),
    )
}

impl KafkaReader {
    pub fn open(conn: &KafkaConnection, topic: &str, from: ReadFrom) -> Result<Self> {
        let consumer = reader_consumer(conn)?;
        let ids = topic_partition_ids(&consumer, conn, topic, SETUP_TIMEOUT)?;
        let start = match from {
            ReadFrom::Beginning => Offset::Beginning,
            ReadFrom::End => Offset::End,
        };
        let mut tpl = TopicPartitionList::with_capacity(ids.len());
        for p in ids {
            tpl.add_partition_offset(topic, p, start)
                .map_err(|e| ConnectorError::Refused(format!("kafka: {topic}/{p}: {e}")))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| ConnectorError::Refused(format!("kafka: cannot read {topic}: {e}")))?;
        Ok(Self { consumer })
    }

    /// The next record, waiting at most `timeout`; `None` when none came in that time.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self, timeout: Duration) -> Result<Option<ReadMessage>> {
        match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(Ok(m)) => Ok(Some(ReadMessage {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                timestamp_ms: m.timestamp().to_millis(),
            })),
            Some(Err(KafkaError::PartitionEOF(_))) => Ok(None),
            Some(Err(e)) => Err(ConnectorError::Unavailable(format!("kafka reader: {e}"))),
        }
    }
}

/// Against a real server (ops/test.sh turns the feature on).
#[cfg(all(test, feature = "integration"))]
mod integration;
#[cfg(test)]
mod tests;
