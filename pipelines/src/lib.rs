//! The engine: reads the configuration, checks it into a [`plan::Plan`], and runs each pipeline:
//! a connector brings a message, an adapter decodes it, the registry applies it, outcome files go
//! back out through another connector.

pub mod config;
pub mod deliver;
pub mod engine;
pub mod http;
pub mod import;
pub mod metrics;
pub mod node;
pub mod plan;
pub mod registry;
