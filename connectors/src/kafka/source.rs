//! `from = { connector = "kafka", ... }`: a consumer-group member as a source.

use super::*;

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
    /// The consumer is made with the source and librdkafka keeps its broker connections itself:
    /// nothing to open again, and a new consumer would make the group rebalance. So `close` is
    /// the default (nothing) too, and after a failed poll the framework only waits its backoff.
    fn connect(&mut self) -> Result<()> {
        Ok(())
    }

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
