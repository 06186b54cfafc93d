//! A Kafka topic read or written by hand, outside any consumer group: for operators, tests and
//! the intake benchmark.

use super::{OpsError, Result};
use snodo_connectors::kafka::{self, KafkaConnection, KafkaProducer, KafkaReader, ReadFrom};
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

/// How many messages went through and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Tally {
    pub messages: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: String,
    /// From the oldest message, else only new ones.
    pub from_beginning: bool,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Stop when nothing arrived for this long.
    pub idle: Option<Duration>,
}

/// Reads every partition, committing nothing; writes each message to `out` (when given) as a
/// `key<TAB>value` line.
pub fn read(opts: &ReadOptions, mut out: Option<&mut dyn Write>) -> Result<Tally> {
    let from = if opts.from_beginning {
        ReadFrom::Beginning
    } else {
        ReadFrom::End
    };
    let mut reader = KafkaReader::open(&KafkaConnection::new(&opts.brokers), &opts.topic, from)
        .map_err(|source| OpsError::Connector {
            context: format!("reading {} on {}", opts.topic, opts.brokers),
            source,
        })?;
    let started = Instant::now();
    let mut last = Instant::now();
    let mut read = 0u64;
    while opts.count.is_none_or(|c| read < c) {
        match reader.next(Duration::from_millis(200))? {
            Some(m) => {
                read += 1;
                last = Instant::now();
                if let Some(out) = out.as_deref_mut() {
                    out.write_all(m.key.as_deref().unwrap_or_default())?;
                    out.write_all(b"\t")?;
                    out.write_all(&m.payload)?;
                    out.write_all(b"\n")?;
                }
            }
            None if opts.idle.is_some_and(|i| last.elapsed() >= i) => break,
            None => {}
        }
    }
    if let Some(out) = out {
        out.flush()?;
    }
    Ok(Tally {
        messages: read,
        elapsed: started.elapsed(),
    })
}

/// Produces the `key<TAB>value` lines of `input` (a line without a tab: no key), creating the
/// topic with `partitions` when missing.
pub fn produce(
    brokers: &str,
    topic: &str,
    partitions: i32,
    input: &mut dyn BufRead,
) -> Result<Tally> {
    let conn = KafkaConnection::new(brokers);
    let timeout = Duration::from_secs(60);
    kafka::ensure_topics(&conn, &[(topic.to_string(), partitions)], timeout)?;
    let producer = KafkaProducer::new(&conn)?;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    let mut sent = 0u64;
    for line in input.lines() {
        let line = line?;
        let (key, value) = line.split_once('\t').unwrap_or(("", line.as_str()));
        batch.push((key.to_string(), value.as_bytes().to_vec()));
        if batch.len() == 10_000 {
            producer.send_all(topic, &batch, timeout)?;
            sent += batch.len() as u64;
            batch.clear();
        }
    }
    producer.send_all(topic, &batch, timeout)?;
    sent += batch.len() as u64;
    Ok(Tally {
        messages: sent,
        elapsed: started.elapsed(),
    })
}
