//! The one place a source's connection is looked after, for every connector and pipeline: connect
//! on the first poll; when a poll says the connection is lost, close it and connect again at
//! once (servers drop idle sessions), then, while the remote stays unreachable, try again after
//! the shared backoff ([`RetryPolicy`]: doubling waits with jitter, capped). It logs when the
//! state changes (connected, lost, back), not at every try.

use crate::{ConnectorError, Message, Result, RetryPolicy, Source};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Waits between connection tries of a source: 1 s, doubling, at most a minute.
pub const RECONNECT: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    initial: Duration::from_secs(1),
    max: Duration::from_secs(60),
    max_age: None,
};

#[derive(Debug, Clone, Copy)]
enum State {
    /// Never connected: the first poll connects.
    Idle,
    Up,
    /// `failures` tries in a row failed, the first at `since`; the next is due at `due`.
    Down {
        failures: u32,
        since: Instant,
        due: Instant,
    },
}

/// A source under supervision: what a pipeline polls.
pub struct Supervised<S: Source + ?Sized = dyn Source> {
    /// Names the source in the log (the pipeline).
    name: String,
    policy: RetryPolicy,
    state: State,
    source: Box<S>,
}

impl<S: Source + ?Sized> Supervised<S> {
    pub fn wrap(name: impl Into<String>, source: Box<S>) -> Self {
        Self {
            name: name.into(),
            policy: RECONNECT,
            state: State::Idle,
            source,
        }
    }

    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Connects if not connected, then polls. A lost connection is closed and opened again at
    /// once; if that fails, the poll's error is returned and [`Self::due_in`] says when to try
    /// again. Every call tries: the caller keeps to `due_in`.
    pub fn poll(&mut self) -> Result<Vec<Message>> {
        let was_up = matches!(self.state, State::Up);
        if !was_up {
            self.connect()?;
        }
        match self.source.poll() {
            Err(ConnectorError::Unavailable(why)) => {
                self.source.close();
                if !was_up {
                    // Connected just now and lost at once: not worth a second try straight away.
                    self.failed(&why);
                    return Err(ConnectorError::Unavailable(why));
                }
                warn!(source = %self.name, "connection lost, reconnecting: {why}");
                self.state = State::Idle;
                if self.connect().is_err() {
                    return Err(ConnectorError::Unavailable(why));
                }
                let again = self.source.poll();
                if let Err(ConnectorError::Unavailable(why)) = &again {
                    self.source.close();
                    self.failed(why);
                }
                again
            }
            other => other,
        }
    }

    /// How long to wait before the next poll: zero while connected (or never tried), else what is
    /// left of the backoff.
    pub fn due_in(&self) -> Duration {
        match self.state {
            State::Down { due, .. } => due.saturating_duration_since(Instant::now()),
            _ => Duration::ZERO,
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Up)
    }

    /// Lets the connection go (the pipeline stops); a later poll connects again.
    pub fn close(&mut self) {
        if matches!(self.state, State::Up) {
            self.source.close();
        }
        self.state = State::Idle;
    }

    fn connect(&mut self) -> Result<()> {
        match self.source.connect() {
            Ok(()) => {
                match self.state {
                    State::Down {
                        failures, since, ..
                    } => info!(
                        source = %self.name,
                        "connected again after {failures} failed tries in {:.0?}",
                        since.elapsed()
                    ),
                    State::Idle | State::Up => info!(source = %self.name, "connected"),
                }
                self.state = State::Up;
                Ok(())
            }
            Err(e) => {
                self.source.close();
                self.failed(&e.to_string());
                Err(e)
            }
        }
    }

    /// One more failed try: the next waits longer. Logged on the first only.
    fn failed(&mut self, why: &str) {
        let now = Instant::now();
        let (failures, since) = match self.state {
            State::Down {
                failures, since, ..
            } => (failures.saturating_add(1), since),
            State::Idle | State::Up => (1, now),
        };
        let wait = self.policy.delay(failures);
        if failures == 1 {
            warn!(source = %self.name, "cannot connect, trying again with growing waits (first {wait:.0?}): {why}");
        }
        self.state = State::Down {
            failures,
            since,
            due: now + wait,
        };
    }
}

/// The source itself (its own methods, for tests and tools).
impl<S: Source + ?Sized> std::ops::Deref for Supervised<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.source
    }
}

impl<S: Source + ?Sized> Drop for Supervised<S> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A scripted source: what `connect` and `poll` answer, and a log of the calls.
    #[derive(Default)]
    struct Fake {
        connects: Vec<Result<()>>,
        polls: Vec<Result<Vec<Message>>>,
        calls: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Source for Fake {
        fn connect(&mut self) -> Result<()> {
            self.calls.lock().unwrap().push("connect");
            if self.connects.is_empty() {
                Ok(())
            } else {
                self.connects.remove(0)
            }
        }
        fn poll(&mut self) -> Result<Vec<Message>> {
            self.calls.lock().unwrap().push("poll");
            if self.polls.is_empty() {
                Ok(Vec::new())
            } else {
                self.polls.remove(0)
            }
        }
        fn close(&mut self) {
            self.calls.lock().unwrap().push("close");
        }
    }

    fn lost() -> ConnectorError {
        ConnectorError::Unavailable("gone".into())
    }

    fn down() -> ConnectorError {
        ConnectorError::Unavailable("refused".into())
    }

    #[test]
    fn connects_on_the_first_poll_only() {
        let fake = Fake::default();
        let calls = fake.calls.clone();
        let mut s = Supervised::wrap("t", Box::new(fake));
        assert!(!s.is_connected());
        s.poll().unwrap();
        s.poll().unwrap();
        assert!(s.is_connected());
        assert_eq!(*calls.lock().unwrap(), ["connect", "poll", "poll"]);
        drop(s);
        assert_eq!(calls.lock().unwrap().last(), Some(&"close"));
    }

    #[test]
    fn a_lost_connection_is_reopened_at_once_and_polled_again() {
        let fake = Fake {
            polls: vec![Ok(Vec::new()), Err(lost())],
            ..Default::default()
        };
        let calls = fake.calls.clone();
        let mut s = Supervised::wrap("t", Box::new(fake));
        s.poll().unwrap();
        s.poll().unwrap();
        assert!(s.is_connected());
        assert_eq!(s.due_in(), Duration::ZERO);
        assert_eq!(
            *calls.lock().unwrap(),
            ["connect", "poll", "poll", "close", "connect", "poll"]
        );
    }

    #[test]
    fn an_unreachable_remote_is_tried_again_after_growing_waits() {
        let fake = Fake {
            connects: vec![Ok(()), Err(down()), Err(down()), Err(down())],
            polls: vec![Ok(Vec::new()), Err(lost())],
            ..Default::default()
        };
        let mut s = Supervised::wrap("t", Box::new(fake)).with_policy(RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(25),
            ..RECONNECT
        });
        s.poll().unwrap();
        // The poll's error, not the reconnect's: it says what broke.
        let err = s.poll().unwrap_err().to_string();
        assert_eq!(err, "gone");
        let first = s.due_in();
        assert!(
            first > Duration::from_secs(7) && first <= Duration::from_secs(12),
            "{first:?}"
        );
        assert_eq!(s.poll().unwrap_err().to_string(), "refused");
        let second = s.due_in();
        assert!(second > Duration::from_secs(15), "doubled: {second:?}");
        s.poll().unwrap_err();
        assert!(s.due_in() <= Duration::from_secs(25), "capped");
        // Back: connected, and no wait any more.
        s.poll().unwrap();
        assert!(s.is_connected());
        assert_eq!(s.due_in(), Duration::ZERO);
    }

    #[test]
    fn other_errors_keep_the_connection() {
        let fake = Fake {
            polls: vec![Err(ConnectorError::Refused("permission denied".into()))],
            ..Default::default()
        };
        let calls = fake.calls.clone();
        let mut s = Supervised::wrap("t", Box::new(fake));
        assert!(s.poll().is_err());
        assert!(s.is_connected());
        assert_eq!(s.due_in(), Duration::ZERO);
        s.poll().unwrap();
        assert_eq!(*calls.lock().unwrap(), ["connect", "poll", "poll"]);
    }
}
