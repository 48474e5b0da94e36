//! The event backbone every saga service is built on, written once: the message envelope,
//! topic names, the event store, the transactional outbox and its relay, the inbox consumer
//! loop with retries and dead letters, the embedded broker, the HTTP server, telemetry, metrics, typed
//! configuration, shutdown and the service runtime that ties them together.

pub mod asyncapi;
pub mod broker;
pub mod config;
pub mod consumer;
pub mod contracts;
pub mod db;
pub mod envelope;
pub mod event_store;
pub mod http_server;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod request_id;
pub mod retention;
pub mod service;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topics;
pub mod topology;

pub use tokio_util::sync::CancellationToken;
