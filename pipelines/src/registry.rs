//! Connectors by the name a config uses, each with what it can be. Adding a connector is its
//! folder in `connectors/src/` plus one line in [`CONNECTORS`]; codecs are in `codecs.rs`.

use crate::config::{deserialize_collecting, Problem};
use serde::de::DeserializeOwned;
use serde_json::Value;
use snodo_connectors::{dir, http, kafka, sftp, MessageSinkConfig, SinkConfig, SourceConfig};
use std::sync::Arc;

/// One line per connector: its name and what it can be.
#[rustfmt::skip]
pub const CONNECTORS: &[Connector] = &[
    Connector::new(dir::NAME).files_from::<dir::DirSourceConfig>().files_to::<dir::DirSinkConfig>(),
    Connector::new(sftp::NAME).files_from::<sftp::SftpSourceConfig>().files_to::<sftp::SftpSinkConfig>(),
    Connector::new(http::NAME).messages_to::<http::HttpSinkConfig>(),
    Connector::new(kafka::NAME).stream_from::<kafka::KafkaSourceConfig>().messages_to::<kafka::KafkaSinkConfig>(),
];

/// Built-in pipeline targets named by a string instead of a connector table.
pub const TARGETS: &[&str] = &["registry", "treasury", "reconciliation"];

type SourceParser = fn(Value, &str, &mut Vec<Problem>) -> Option<Arc<dyn SourceConfig>>;
type SinkParser = fn(Value, &str, &mut Vec<Problem>) -> Option<Arc<dyn SinkConfig>>;
type MessageSinkParser = fn(Value, &str, &mut Vec<Problem>) -> Option<Arc<dyn MessageSinkConfig>>;

/// How a source hands over its input, which decides the pipeline it can feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceShape {
    /// Whole files (flows), polled on a schedule.
    Files,
    /// Messages with a position in a stream, pushed as they come.
    Stream,
}

/// A connector and its capabilities: a source, a file sink, a message sink, or several.
pub struct Connector {
    pub name: &'static str,
    source: Option<(SourceShape, SourceParser)>,
    file_sink: Option<SinkParser>,
    message_sink: Option<MessageSinkParser>,
}

impl Connector {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            source: None,
            file_sink: None,
            message_sink: None,
        }
    }

    /// A source of files (flows).
    pub const fn files_from<C: SourceConfig + DeserializeOwned>(mut self) -> Self {
        self.source = Some((SourceShape::Files, source::<C>));
        self
    }

    /// A source of stream messages.
    pub const fn stream_from<C: SourceConfig + DeserializeOwned>(mut self) -> Self {
        self.source = Some((SourceShape::Stream, source::<C>));
        self
    }

    /// A sink of finished files.
    pub const fn files_to<C: SinkConfig + DeserializeOwned>(mut self) -> Self {
        self.file_sink = Some(sink::<C>);
        self
    }

    /// A sink of single messages.
    pub const fn messages_to<C: MessageSinkConfig + DeserializeOwned>(mut self) -> Self {
        self.message_sink = Some(message_sink::<C>);
        self
    }

    pub fn source_shape(&self) -> Option<SourceShape> {
        self.source.map(|(shape, _)| shape)
    }
}

pub fn connector(name: &str) -> Option<&'static Connector> {
    CONNECTORS.iter().find(|c| c.name == name)
}

/// The names of the connectors that can be what `can` says.
pub fn names(can: impl Fn(&Connector) -> bool) -> Vec<&'static str> {
    CONNECTORS
        .iter()
        .filter(|c| can(c))
        .map(|c| c.name)
        .collect()
}

fn source<C: SourceConfig + DeserializeOwned>(
    v: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn SourceConfig>> {
    let c: C = deserialize_collecting(v, path, problems)?;
    problems.extend(c.check().into_iter().map(|m| Problem::new(path, m)));
    Some(Arc::new(c))
}

fn sink<C: SinkConfig + DeserializeOwned>(
    v: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn SinkConfig>> {
    let c: C = deserialize_collecting(v, path, problems)?;
    problems.extend(c.check().into_iter().map(|m| Problem::new(path, m)));
    Some(Arc::new(c))
}

fn message_sink<C: MessageSinkConfig + DeserializeOwned>(
    v: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn MessageSinkConfig>> {
    let c: C = deserialize_collecting(v, path, problems)?;
    problems.extend(c.check().into_iter().map(|m| Problem::new(path, m)));
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

fn unknown_connector(
    kind: &str,
    what: &str,
    known: &[&str],
    path: &str,
    problems: &mut Vec<Problem>,
) {
    problems.push(Problem::new(
        format!("{path}.connector"),
        unknown(kind, what, known),
    ));
}

/// A source, with how it hands over its input.
pub fn parse_source(
    kind: &str,
    params: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<(SourceShape, Arc<dyn SourceConfig>)> {
    match connector(kind).and_then(|c| c.source) {
        Some((shape, parse)) => parse(params, path, problems).map(|s| (shape, s)),
        None => {
            let known = names(|c| c.source.is_some());
            unknown_connector(kind, "connector", &known, path, problems);
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
    match connector(kind).and_then(|c| c.file_sink) {
        Some(parse) => parse(params, path, problems),
        None => {
            let known = names(|c| c.file_sink.is_some());
            unknown_connector(kind, "connector", &known, path, problems);
            None
        }
    }
}

/// A message sink; `what` names the role in the message when `kind` cannot be one.
pub fn parse_message_sink(
    kind: &str,
    params: Value,
    path: &str,
    what: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn MessageSinkConfig>> {
    match connector(kind).and_then(|c| c.message_sink) {
        Some(parse) => parse(params, path, problems),
        None => {
            let known = names(|c| c.message_sink.is_some());
            unknown_connector(kind, what, &known, path, problems);
            None
        }
    }
}

/// Whether `kind` is a connector that can send messages.
pub fn is_message_sink(kind: &str) -> bool {
    connector(kind).is_some_and(|c| c.message_sink.is_some())
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
