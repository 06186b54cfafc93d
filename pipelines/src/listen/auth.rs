//! Secrets compared without leaking them, and a bound on failed authentications per peer.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Whether `given` is `expected`, in time independent of both (the SHA-256 digests are compared,
/// so neither the length nor the first differing byte shows).
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Failed authentications per peer address: a bucket of `per_minute` failures, refilled evenly.
/// A peer with an empty bucket is answered 429 before its credentials are looked at.
pub struct AuthFailures {
    per_minute: f64,
    peers: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Peers tracked before the full buckets are forgotten.
const MAX_PEERS: usize = 100_000;

impl AuthFailures {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn level(&self, tokens: f64, at: Instant, now: Instant) -> f64 {
        (tokens + now.duration_since(at).as_secs_f64() * self.per_minute / 60.0)
            .min(self.per_minute)
    }

    /// `None`: the peer may try; `Some(s)`: not before `s` seconds.
    pub fn check(&self, ip: IpAddr) -> Option<u64> {
        self.check_at(ip, Instant::now())
    }

    /// [`Self::check`] at `now` (tests move the clock instead of sleeping).
    fn check_at(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = *peers.get(&ip)?;
        let level = self.level(tokens, at, now);
        if level >= 1.0 {
            None
        } else {
            Some(((1.0 - level) * 60.0 / self.per_minute).ceil().max(1.0) as u64)
        }
    }

    /// Records one failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        self.failed_at(ip, Instant::now())
    }

    fn failed_at(&self, ip: IpAddr, now: Instant) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= MAX_PEERS {
            let per_minute = self.per_minute;
            peers.retain(|_, (t, at)| {
                *t + now.duration_since(*at).as_secs_f64() * per_minute / 60.0 < per_minute
            });
        }
        let (tokens, at) = peers.get(&ip).copied().unwrap_or((self.per_minute, now));
        let level = self.level(tokens, at, now);
        peers.insert(ip, ((level - 1.0).max(0.0), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_value_only() {
        assert!(same_secret("a-token", "a-token"));
        assert!(!same_secret("a-token", "a-token-longer"));
        assert!(!same_secret("", "x"));
    }

    #[test]
    fn a_peer_is_stopped_after_its_failures() {
        let f = AuthFailures::new(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(f.check(ip), None);
        for _ in 0..3 {
            f.failed(ip);
        }
        assert!(f.check(ip).is_some());
        assert_eq!(f.check(other), None);
    }

    #[test]
    fn a_stopped_peer_may_try_again_once_its_wait_is_over() {
        // 3 a minute: one failure is forgiven every 20 s.
        let f = AuthFailures::new(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            f.failed_at(ip, t0);
        }
        let after = |s: u64| t0 + std::time::Duration::from_secs(s);
        assert_eq!(
            f.check_at(ip, t0),
            Some(20),
            "refused (429), Retry-After 20"
        );
        assert!(f.check_at(ip, after(19)).is_some());
        assert_eq!(f.check_at(ip, after(20)), None, "let through again");
        // The one failure it earned back is spent at once; a minute restores all three.
        f.failed_at(ip, after(20));
        assert!(f.check_at(ip, after(21)).is_some());
        assert_eq!(f.check_at(ip, after(80)), None);
        for k in 0..3 {
            assert_eq!(f.check_at(ip, after(80)), None, "failure {k} of 3");
            f.failed_at(ip, after(80));
        }
        assert!(f.check_at(ip, after(80)).is_some());
    }
}
