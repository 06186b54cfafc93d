//! Reads a topic outside any group (tools, tests, benchmarks).

use super::*;

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

pub(super) fn reader_consumer(conn: &KafkaConnection) -> Result<BaseConsumer<Ctx>> {
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
