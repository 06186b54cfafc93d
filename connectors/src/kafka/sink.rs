//! `to = { connector = "kafka", ... }`: a message sink, one record per message.

use super::*;

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
