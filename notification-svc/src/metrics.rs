//! notification-svc's own metrics: the webhook's circuit breaker. Labelled with the service,
//! so that the embedded mode serves them on notification-svc's `/metrics`.

use metrics::{counter, describe_counter, describe_gauge, gauge};
use shared::topics::service;

use crate::breaker::BreakerState;

pub const WEBHOOK_CIRCUIT_STATE: &str = "saga_webhook_circuit_state";
pub const WEBHOOK_CIRCUIT_TRANSITIONS: &str = "saga_webhook_circuit_transitions_total";

/// Describe the metrics (once per process is enough; again is harmless).
pub fn describe() {
    describe_gauge!(WEBHOOK_CIRCUIT_STATE, "The notification webhook's circuit breaker: 0 closed, 1 half-open, 2 open");
    describe_counter!(
        WEBHOOK_CIRCUIT_TRANSITIONS,
        "Changes of the notification webhook's circuit breaker, by new state"
    );
}

pub fn webhook_circuit_state(state: BreakerState) {
    gauge!(WEBHOOK_CIRCUIT_STATE, "service" => service::NOTIFICATION).set(state.gauge_value());
}

pub fn webhook_circuit_transition(to: BreakerState) {
    webhook_circuit_state(to);
    counter!(WEBHOOK_CIRCUIT_TRANSITIONS, "service" => service::NOTIFICATION, "to" => to.as_str()).increment(1);
}
