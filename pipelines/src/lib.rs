//! The engine: reads the configuration, checks it into a [`plan::Plan`], and runs each pipeline:
//! a connector brings a message, an adapter decodes it, the registry applies it, outcome files go
//! back out through another connector.

pub mod api;
pub mod codecs;
pub mod config;
pub mod console;
pub mod deliver;
pub mod demand;
pub mod engine;
pub mod events;
pub mod expiry;
pub mod export;
pub mod external;
pub mod http;
pub mod import;
pub mod intake;
pub mod listen;
pub mod metrics;
pub mod node;
pub mod notices;
pub mod ops;
pub mod plan;
pub mod reconcile_export;
pub mod reconciler;
pub mod registry;
pub mod reload;
pub mod reports;
pub mod reserved;
pub mod stored_report;
pub mod stream;
pub mod ticks;
pub mod treasury;

/// Test hook: when `SNODO_FAILPOINT` names this point, the process aborts here, as a power cut
/// would, so tests can prove what survives a crash at the worst moment.
pub fn failpoint(name: &str) {
    if std::env::var("SNODO_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
