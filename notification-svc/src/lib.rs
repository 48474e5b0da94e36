//! notification-svc: tells the customer that an order ships or was cancelled, once per kind.

pub mod domain;
pub mod sinks;
