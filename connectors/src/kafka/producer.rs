//! An idempotent producer: batches for the hub's own streams, single records for the outbox.

use super::*;

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
pub(super) fn is_permanent(e: &KafkaError) -> bool {
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
