//! Threads kept for one kind of blocking work: the node's calls run here, not on the runtime's
//! shared blocking pool, so imports, pipeline ticks and a flood of API calls holding every thread
//! of that pool never leave `paVerifyPaymentNotice` waiting for one.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads taking jobs in arrival order.
pub struct Reserved {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

/// The job could not run (the pool is gone) or panicked.
#[derive(Debug, thiserror::Error)]
#[error("the {0} threads could not run the call")]
pub struct NotRun(&'static str);

impl Reserved {
    /// Starts `threads` threads named `name`; they end when the pool is dropped.
    pub fn new(name: &'static str, threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    // A panicking call loses its answer (the caller sees `NotRun`), not the
                    // thread.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                })?;
        }
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
        })
    }

    /// Runs `f` on one of the threads and waits for its value without blocking the caller's
    /// async worker.
    pub async fn run<T: Send + 'static>(
        &self,
        name: &'static str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NotRun> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|s| s.send(job).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(NotRun(name));
        }
        rx.await.map_err(|_| NotRun(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_run_and_a_panic_loses_only_its_answer() {
        let pool = Reserved::new("test", 2).unwrap();
        assert_eq!(pool.run("test", || 2 + 2).await.unwrap(), 4);
        assert!(pool.run("test", || panic!("boom")).await.is_err());
        // Both threads still serve.
        let (a, b) = tokio::join!(pool.run("test", || 1), pool.run("test", || 2));
        assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    }
}
