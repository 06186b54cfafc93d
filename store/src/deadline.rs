//! A time limit on the store calls a thread makes, for callers that must answer in time whatever
//! the database does (the node's calls, `/readyz`): PostgreSQL's pool wait, connect and statements
//! all end by it, and the call fails with [`StoreError::Timeout`](crate::StoreError::Timeout).
//! [`priority`] calls may also take PostgreSQL connections the others leave free.
//! SQLite is local and ignores both.

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static PRIORITY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with its store calls allowed the share of PostgreSQL's pool kept for the node.
pub fn priority<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PRIORITY.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(PRIORITY.with(|p| p.replace(true)));
    f()
}

pub(crate) fn is_priority() -> bool {
    PRIORITY.with(Cell::get)
}

/// Runs `f` with its store calls ending within `budget` (or an earlier limit already set).
pub fn within<T>(budget: Duration, f: impl FnOnce() -> T) -> T {
    let outer = DEADLINE.with(Cell::get);
    let mine = Instant::now() + budget;
    let limit = outer.map_or(mine, |o| o.min(mine));
    // Restored even if `f` panics: the thread goes back to a pool.
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(outer);
    DEADLINE.with(|d| d.set(Some(limit)));
    f()
}

/// Runs `f` with a fresh limit of `budget` from now, whatever limit was set: for store calls
/// after a wait on something else (an entity's system) that the caller budgets apart.
pub fn renew<T>(budget: Duration, f: impl FnOnce() -> T) -> T {
    let outer = DEADLINE.with(Cell::get);
    if outer.is_none() {
        return f();
    }
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(outer);
    DEADLINE.with(|d| d.set(Some(Instant::now() + budget)));
    f()
}

/// `wait`, cut to what is left of the thread's limit; `None` when the limit has passed.
pub(crate) fn cap(wait: Duration) -> Option<Duration> {
    match DEADLINE.with(Cell::get) {
        None => Some(wait),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| wait.min(left))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_nest_and_are_restored() {
        assert_eq!(cap(Duration::from_secs(9)), Some(Duration::from_secs(9)));
        within(Duration::from_secs(2), || {
            assert!(cap(Duration::from_secs(9)).unwrap() <= Duration::from_secs(2));
            within(Duration::from_secs(60), || {
                assert!(cap(Duration::from_secs(9)).unwrap() <= Duration::from_secs(2));
            });
            within(Duration::ZERO, || {
                assert_eq!(cap(Duration::from_secs(9)), None);
                renew(Duration::from_secs(5), || {
                    assert!(cap(Duration::from_secs(9)).unwrap() > Duration::from_secs(4));
                });
                assert_eq!(cap(Duration::from_secs(9)), None);
            });
        });
        assert_eq!(cap(Duration::from_secs(9)), Some(Duration::from_secs(9)));
        assert!(!is_priority());
        priority(|| assert!(is_priority()));
        assert!(!is_priority());
        // Without a limit, renewing sets none.
        renew(Duration::ZERO, || {
            assert_eq!(cap(Duration::from_secs(9)), Some(Duration::from_secs(9)))
        });
    }
}
