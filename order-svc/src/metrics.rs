//! order-svc's own metrics: how sagas end and how long they take. Everything else (HTTP,
//! consumer, outbox) is recorded by the shared backbone (`shared::metrics`).

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

pub const SAGA_OUTCOMES: &str = "saga_outcomes_total";
pub const SAGA_DURATION: &str = "saga_duration_seconds";
pub const ORDERS_PLACED: &str = "saga_orders_placed_total";

pub fn describe() {
    describe_counter!(SAGA_OUTCOMES, "Sagas that reached a terminal state, by outcome and cancellation reason");
    describe_histogram!(SAGA_DURATION, Unit::Seconds, "End-to-end saga duration, from placement to the terminal event");
    describe_counter!(ORDERS_PLACED, "Orders accepted by the API");
}

pub fn order_placed() {
    counter!(ORDERS_PLACED).increment(1);
}

/// A saga ended: `outcome` is `completed` or `cancelled`, `reason` is `none` or a cancel reason.
pub fn saga_ended(outcome: &'static str, reason: &'static str, duration: Duration) {
    counter!(SAGA_OUTCOMES, "outcome" => outcome, "reason" => reason).increment(1);
    histogram!(SAGA_DURATION, "outcome" => outcome).record(duration.as_secs_f64());
}
