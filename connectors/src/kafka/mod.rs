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

mod producer;
mod reader;
mod sink;
mod source;

use producer::is_permanent;
pub use producer::KafkaProducer;
use reader::reader_consumer;
pub use reader::{KafkaReader, ReadFrom, ReadMessage};
pub use sink::{KafkaSink, KafkaSinkConfig};
pub use source::{KafkaSource, KafkaSourceConfig};

#[cfg(test)]
mod tests;

/// Against a real server (ops/test.sh turns the feature on).
#[cfg(all(test, feature = "integration"))]
mod integration;
