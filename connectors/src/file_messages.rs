//! A file sink (`dir`, `sftp`) used as a message sink: each message becomes one file named by
//! its key, published whole by the sink. This lets a pipeline that hands on one document per
//! subject (a settlement flow's report) write to any sink through the outbox, with its retries
//! and dead letters, instead of a scheduler of its own.

use crate::{
    ConnectorError, DeliveryResult, MessageSink, MessageSinkConfig, Outgoing, Result, RetryPolicy,
    Sending, SinkConfig,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long one file may take to publish (an SFTP upload of a large flow included).
const TIMEOUT: Duration = Duration::from_secs(120);

pub struct FileMessagesConfig {
    pub sink: Arc<dyn SinkConfig>,
    pub policy: RetryPolicy,
}

impl MessageSinkConfig for FileMessagesConfig {
    fn check(&self) -> Vec<String> {
        self.sink.check()
    }

    fn build(&self) -> Result<Arc<dyn MessageSink>> {
        Ok(Arc::new(FileMessages {
            sink: self.sink.clone(),
            policy: self.policy,
        }))
    }
}

struct FileMessages {
    sink: Arc<dyn SinkConfig>,
    policy: RetryPolicy,
}

/// Spool files of this process, told apart by a counter.
static SPOOLED: AtomicU64 = AtomicU64::new(0);

fn spool_path() -> PathBuf {
    let n = SPOOLED.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("snodo-message-{}-{n}", std::process::id()))
}

/// Writes `body` to a spool file and publishes it as `name`; the spool file is removed either way.
fn publish(sink: &dyn SinkConfig, name: &str, body: &[u8]) -> Result<()> {
    let spool = spool_path();
    let result = std::fs::write(&spool, body)
        .map_err(|e| ConnectorError::io(spool.display(), e))
        .and_then(|()| sink.build()?.put_file(name, &spool));
    let _ = std::fs::remove_file(&spool);
    result
}

impl MessageSink for FileMessages {
    fn send<'a>(&'a self, message: Outgoing<'a>) -> Sending<'a> {
        let sink = self.sink.clone();
        let name = message.key.to_owned();
        let body = message.body.to_vec();
        Box::pin(async move {
            let work = tokio::task::spawn_blocking(move || publish(&*sink, &name, &body));
            match tokio::time::timeout(TIMEOUT, work).await {
                Ok(Ok(Ok(()))) => DeliveryResult::Delivered { status: 0 },
                // A name the sink refuses, a file of that name with other content: a person
                // must look.
                Ok(Ok(Err(ConnectorError::Refused(reason)))) => {
                    DeliveryResult::Permanent { reason }
                }
                Ok(Ok(Err(ConnectorError::Config(reason)))) => DeliveryResult::Permanent { reason },
                Ok(Ok(Err(e))) => DeliveryResult::Retry {
                    reason: e.to_string(),
                    after: None,
                },
                Ok(Err(e)) => DeliveryResult::Retry {
                    reason: format!("writing the file failed: {e}"),
                    after: None,
                },
                Err(_) => DeliveryResult::Retry {
                    reason: format!("writing the file took longer than {TIMEOUT:?}"),
                    after: None,
                },
            }
        })
    }

    fn timeout(&self) -> Duration {
        TIMEOUT
    }

    fn retry_policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::DirSinkConfig;

    fn dir_sink(root: &std::path::Path) -> Arc<dyn SinkConfig> {
        let cfg: DirSinkConfig =
            serde_json::from_value(serde_json::json!({ "path": root })).unwrap();
        Arc::new(cfg)
    }

    fn send(sink: &Arc<dyn MessageSink>, key: &str, body: &[u8]) -> DeliveryResult {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(sink.send(Outgoing {
            key,
            body,
            headers: &[],
        }))
    }

    #[test]
    fn each_message_is_a_file_named_by_its_key_and_a_clash_is_permanent() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileMessagesConfig {
            sink: dir_sink(dir.path()),
            policy: RetryPolicy::default(),
        }
        .build()
        .unwrap();
        assert_eq!(
            send(&sink, "a.json", b"{}"),
            DeliveryResult::Delivered { status: 0 }
        );
        assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), b"{}");
        // The same file again (a redelivery) is fine; other content under that name is not.
        assert_eq!(
            send(&sink, "a.json", b"{}"),
            DeliveryResult::Delivered { status: 0 }
        );
        assert!(matches!(
            send(&sink, "a.json", b"[]"),
            DeliveryResult::Permanent { .. }
        ));
        assert!(matches!(
            send(&sink, "../escape", b"x"),
            DeliveryResult::Permanent { .. }
        ));
        // No spool file is left behind.
        let prefix = format!("snodo-message-{}-", std::process::id());
        let left = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .count();
        assert_eq!(left, 0);
    }
}
