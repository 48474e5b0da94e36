//! order-svc's own metrics: how sagas end and how long they take, and failed authentications
//! on the API. Everything else (HTTP, consumer, outbox) is recorded by the shared backbone
//! (`shared::metrics`).

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

pub const SAGA_OUTCOMES: &str = "saga_outcomes_total";
pub const SAGA_DURATION: &str = "saga_duration_seconds";
pub const ORDERS_PLACED: &str = "saga_orders_placed_total";
pub const ORDERS_OPEN: &str = "saga_orders_open";
pub const ORDERS_OVERDUE: &str = "saga_orders_overdue";
pub const OLDEST_OPEN_AGE: &str = "saga_oldest_open_order_age_seconds";
pub const DEADLINE: &str = "saga_deadline_seconds";
pub const AUTH_FAILURES: &str = "saga_http_auth_failures_total";
pub const ORDERS_REFUSED_AT_CAPACITY: &str = "saga_orders_refused_at_capacity_total";
pub const MAX_OPEN_SAGAS: &str = "saga_orders_open_max";

pub fn describe() {
    describe_counter!(SAGA_OUTCOMES, "Sagas that reached a terminal state, by outcome and cancellation reason");
    describe_histogram!(SAGA_DURATION, Unit::Seconds, "End-to-end saga duration, from placement to the terminal event");
    describe_counter!(ORDERS_PLACED, "Orders accepted by the API");
    describe_counter!(
        ORDERS_REFUSED_AT_CAPACITY,
        "POST /orders refused with 503 because the open sagas reached ORDER_API_MAX_OPEN_SAGAS (admission control)"
    );
    describe_gauge!(MAX_OPEN_SAGAS, "The configured bound on open sagas (ORDER_API_MAX_OPEN_SAGAS; 0 = none)");
    describe_gauge!(ORDERS_OPEN, "Orders whose saga has not reached a terminal state (as of the last deadline scan)");
    describe_gauge!(
        ORDERS_OVERDUE,
        "Orders past their saga deadline and still not terminal (as of the last deadline scan); the scanner cancels them, so this stays 0 unless it cannot"
    );
    describe_gauge!(OLDEST_OPEN_AGE, Unit::Seconds, "Age of the oldest order whose saga is not terminal (0 when none)");
    describe_gauge!(DEADLINE, Unit::Seconds, "The configured saga deadline");
    describe_counter!(
        AUTH_FAILURES,
        "API requests refused for their key, by reason (missing_key, malformed, unknown_key; throttled: refused unchecked because the client address failed too often)"
    );
}

pub fn order_placed() {
    counter!(ORDERS_PLACED).increment(1);
}

/// A new order refused by admission control.
pub fn order_refused_at_capacity() {
    counter!(ORDERS_REFUSED_AT_CAPACITY).increment(1);
}

/// The configured bound on open sagas.
pub fn max_open_sagas(max: u64) {
    gauge!(MAX_OPEN_SAGAS).set(max as f64);
}

/// A saga ended: `outcome` is `completed` or `cancelled`, `reason` is `none` or a cancel reason.
pub fn saga_ended(outcome: &'static str, reason: &'static str, duration: Duration) {
    counter!(SAGA_OUTCOMES, "outcome" => outcome, "reason" => reason).increment(1);
    histogram!(SAGA_DURATION, "outcome" => outcome).record(duration.as_secs_f64());
}

/// What the deadline scanner saw: open (non-terminal) orders, those past their deadline, and
/// the age of the oldest open one.
pub fn open_orders(open: i64, overdue: i64, oldest_age: Duration, deadline: Duration) {
    gauge!(ORDERS_OPEN).set(open as f64);
    gauge!(ORDERS_OVERDUE).set(overdue as f64);
    gauge!(OLDEST_OPEN_AGE).set(oldest_age.as_secs_f64());
    gauge!(DEADLINE).set(deadline.as_secs_f64());
}

/// A request refused for its key. `reason` is one of `missing_key`, `malformed`, `unknown_key`
/// and `throttled`, a bounded set the API's authentication picks from.
pub fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}
