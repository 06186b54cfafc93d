//! When to try a failed delivery again, and when to stop: shared by every message sink (the
//! outbox applies it to whatever the sink answered). Exponential backoff with ±20% jitter,
//! capped; a wait the receiver asked for (`Retry-After`) is honoured up to the cap.

use crate::duration::HumanDuration;
use serde::Deserialize;
use std::time::Duration;

/// `retry = { max_attempts = 12, initial = "1s", max = "1h", max_age = "2d" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicyConfig {
    /// Attempts in all, the first one included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    #[serde(default = "default_initial")]
    pub initial: HumanDuration,
    /// The longest wait between two attempts.
    #[serde(default = "default_max")]
    pub max: HumanDuration,
    /// Give up once the first attempt is this old, whatever the count.
    pub max_age: Option<HumanDuration>,
}

fn default_max_attempts() -> u32 {
    12
}
fn default_initial() -> HumanDuration {
    "1s".into()
}
fn default_max() -> HumanDuration {
    "1h".into()
}

impl Default for RetryPolicyConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial: default_initial(),
            max: default_max(),
            max_age: None,
        }
    }
}

impl RetryPolicyConfig {
    /// Semantic checks, each a message for the operator.
    pub fn check(&self) -> Vec<String> {
        self.build().err().unwrap_or_default()
    }

    pub fn build(&self) -> std::result::Result<RetryPolicy, Vec<String>> {
        let mut errors = Vec::new();
        if self.max_attempts < 1 {
            errors.push("retry.max_attempts must be at least 1".to_string());
        }
        let mut duration = |field: &str, value: &HumanDuration| match value.get() {
            Ok(d) if d.is_zero() => {
                errors.push(format!("retry.{field} must be more than 0"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(format!("retry.{field}: {e}"));
                None
            }
        };
        let initial = duration("initial", &self.initial);
        let max = duration("max", &self.max);
        let max_age = match &self.max_age {
            Some(s) => duration("max_age", s).map(Some),
            None => Some(None),
        };
        if let (Some(i), Some(m)) = (initial, max) {
            if i > m {
                errors.push(format!(
                    "retry.initial ({}) is longer than retry.max ({})",
                    self.initial, self.max
                ));
            }
        }
        match (initial, max, max_age) {
            (Some(initial), Some(max), Some(max_age)) if errors.is_empty() => Ok(RetryPolicy {
                max_attempts: self.max_attempts,
                initial,
                max,
                max_age,
            }),
            _ => Err(errors),
        }
    }
}

/// When to try a failed delivery again, and when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
    /// Give up once the first attempt is this old.
    pub max_age: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            max_age: None,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1 for the first), before jitter:
    /// `initial * 2^(attempt-1)`, capped at `max`. Attempt 0 counts as 1.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1);
        if doublings >= 32 {
            return self.max;
        }
        self.initial
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// [`Self::base_delay`] with ±20% random jitter, so that many deliveries failing together
    /// do not all come back at the same instant. Never more than `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 0.8 + 0.4 * random_unit();
        self.base_delay(attempt).mul_f64(factor).min(self.max)
    }

    /// The wait before the next attempt given what the server asked for: its `Retry-After`
    /// when it gave one (capped at `max`, so a bogus value cannot stall the outbox), else
    /// [`Self::delay`].
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(after) => after.min(self.max),
            None => self.delay(attempt),
        }
    }

    /// True when a delivery that has failed `attempts` times, the first of them `age` ago,
    /// should not be tried again.
    pub fn gives_up(&self, attempts: u32, age: Duration) -> bool {
        attempts >= self.max_attempts || self.max_age.is_some_and(|max_age| age >= max_age)
    }
}

/// A uniform number in [0, 1) from the standard library's per-instance random hash keys: enough
/// for jitter, with no dependency.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After` as delta-seconds or an HTTP-date (IMF-fixdate, RFC 850 or asctime, read by
/// `httpdate`); a date in the past means now. `None` when it is neither.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let when: chrono::DateTime<chrono::Utc> = httpdate::parse_http_date(value).ok()?.into();
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_age: Option<Duration>) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            max_age,
        }
    }

    #[test]
    fn delays_double_and_cap_at_max() {
        let p = policy(None);
        let base: Vec<u64> = (1..=6).map(|a| p.base_delay(a).as_secs()).collect();
        assert_eq!(base, [1, 2, 4, 8, 10, 10]);
        assert_eq!(p.base_delay(0), Duration::from_secs(1));
        assert_eq!(p.base_delay(40), Duration::from_secs(10));
        assert_eq!(p.base_delay(u32::MAX), Duration::from_secs(10));
        let huge = RetryPolicy {
            initial: Duration::from_secs(u64::MAX / 2),
            max: Duration::from_secs(u64::MAX),
            ..p
        };
        assert_eq!(huge.base_delay(3), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn jitter_stays_within_20_percent_and_under_max() {
        let p = policy(None);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = p.delay(3);
            assert!(
                d >= Duration::from_millis(3200) && d <= Duration::from_millis(4800),
                "{d:?}"
            );
            seen.insert(d);
            let capped = p.delay(10);
            assert!(
                capped >= Duration::from_secs(8) && capped <= Duration::from_secs(10),
                "{capped:?}"
            );
        }
        assert!(
            seen.len() > 100,
            "delays are jittered: {} distinct",
            seen.len()
        );
    }

    #[test]
    fn wait_prefers_the_servers_retry_after_capped_at_max() {
        let p = policy(None);
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(99_999))),
            Duration::from_secs(10)
        );
        let w = p.wait(2, None);
        assert!(w >= Duration::from_millis(1600) && w <= Duration::from_millis(2400));
    }

    #[test]
    fn gives_up_by_attempts_and_by_age() {
        let p = policy(None);
        assert!(!p.gives_up(4, Duration::from_secs(1_000_000)));
        assert!(p.gives_up(5, Duration::ZERO));
        let p = policy(Some(Duration::from_secs(3600)));
        assert!(!p.gives_up(1, Duration::from_secs(3599)));
        assert!(p.gives_up(1, Duration::from_secs(3600)));
    }

    #[test]
    fn retry_after_values() {
        let now = chrono::DateTime::parse_from_rfc3339("2025-03-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let secs = |s: &str| parse_retry_after(s, now);
        assert_eq!(secs("7"), Some(Duration::from_secs(7)));
        assert_eq!(secs(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            secs("Sat, 01 Mar 2025 10:01:30 GMT"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            secs("Saturday, 01-Mar-25 10:00:20 GMT"),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            secs("Sat Mar  1 10:00:05 2025"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(secs("Sat, 01 Mar 2025 09:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(secs("-3"), None);
        assert_eq!(secs("soon"), None);
        assert_eq!(secs(""), None);
    }
}
