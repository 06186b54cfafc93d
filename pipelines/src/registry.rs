//! Connectors and codecs by the name a config uses. Adding one is one line here plus its own file.

use crate::config::{deserialize_collecting, Problem};
use serde::de::DeserializeOwned;
use serde_json::Value;
use snodo_connectors::{dir, kafka, sftp, SinkConfig, SourceConfig};
use std::sync::Arc;

type SourceParser = fn(Value, &str, &mut Vec<Problem>) -> Option<Arc<dyn SourceConfig>>;
type SinkParser = fn(Value, &str, &mut Vec<Problem>) -> Option<Arc<dyn SinkConfig>>;

const SOURCES: &[(&str, SourceParser)] = &[
    (dir::NAME, source::<dir::DirSourceConfig>),
    (sftp::NAME, source::<sftp::SftpSourceConfig>),
    (kafka::NAME, source::<kafka::KafkaSourceConfig>),
];

const SINKS: &[(&str, SinkParser)] = &[
    (dir::NAME, sink::<dir::DirSinkConfig>),
    (sftp::NAME, sink::<sftp::SftpSinkConfig>),
];

/// Decoders that turn a source's messages into registry operations.
pub const DECODERS: &[&str] = &[snodo_adapters::mypay_import::MYPAY_IMPORT];

/// Decoders of one position per message, for stream sources.
pub const STREAM_DECODERS: &[&str] = &[snodo_adapters::position_json::POSITION_JSON];

/// Formats a receipts pipeline can write.
pub const RECEIPT_ENCODERS: &[&str] = &[
    snodo_adapters::receipt_json::JSON,
    snodo_adapters::mypay_push::MYPAY_PUSH,
    snodo_adapters::mypay_export::MYPAY_EXPORT,
];

/// Built-in pipeline targets named by a string instead of a connector table.
pub const TARGETS: &[&str] = &["registry"];

fn source<C: SourceConfig + DeserializeOwned>(
    v: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn SourceConfig>> {
    let c: C = deserialize_collecting(v, path, problems)?;
    let msgs = c.check();
    problems.extend(msgs.into_iter().map(|m| Problem::new(path, m)));
    Some(Arc::new(c))
}

fn sink<C: SinkConfig + DeserializeOwned>(
    v: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn SinkConfig>> {
    let c: C = deserialize_collecting(v, path, problems)?;
    let msgs = c.check();
    problems.extend(msgs.into_iter().map(|m| Problem::new(path, m)));
    Some(Arc::new(c))
}

fn unknown(kind: &str, what: &str, known: &[&str]) -> String {
    let mut msg = format!("unknown {what} {kind:?}");
    if let Some(best) = suggest(kind, known) {
        msg.push_str(&format!(" (did you mean {best:?}?)"));
    } else {
        msg.push_str(&format!(" (known: {})", known.join(", ")));
    }
    msg
}

pub fn parse_source(
    kind: &str,
    params: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn SourceConfig>> {
    match SOURCES.iter().find(|(n, _)| *n == kind) {
        Some((_, parse)) => parse(params, path, problems),
        None => {
            let known: Vec<&str> = SOURCES.iter().map(|(n, _)| *n).collect();
            problems.push(Problem::new(
                format!("{path}.connector"),
                unknown(kind, "connector", &known),
            ));
            None
        }
    }
}

pub fn parse_sink(
    kind: &str,
    params: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn SinkConfig>> {
    match SINKS.iter().find(|(n, _)| *n == kind) {
        Some((_, parse)) => parse(params, path, problems),
        None => {
            let known: Vec<&str> = SINKS.iter().map(|(n, _)| *n).collect();
            problems.push(Problem::new(
                format!("{path}.connector"),
                unknown(kind, "connector", &known),
            ));
            None
        }
    }
}

pub fn unknown_name(kind: &str, what: &str, known: &[&str]) -> String {
    unknown(kind, what, known)
}

/// The known name closest to a misspelt one, if any is close enough to be a typo.
pub fn suggest<'k>(given: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(given, k), *k))
        .filter(|(score, k)| *score > 0.8 || strsim::damerau_levenshtein(given, k) <= 1)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}
