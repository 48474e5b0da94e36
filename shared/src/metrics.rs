//! Every metric the backbone records, declared and documented in one place, and the Prometheus
//! recorder that serves them as text on `/metrics`.
//!
//! Labels are bounded: every label value comes from a fixed set, never from what a client or a
//! message chose. Service names, kinds and outcomes are constants; event and command types are
//! the contract's ([`message_type_label`]: anything else is `other`, an undecodable message
//! `undecodable`); topics, consumer groups and partitions are the configured ones (a consumer
//! only sees the topics it subscribed to, the relay only publishes to topics our code wrote);
//! HTTP routes are route templates (`unmatched` for any path no route matches), methods the
//! nine HTTP defines (anything else `other`, [`method_label`]) and status codes the ones our
//! handlers answer. Never ids, raw paths or header values.
//!
//! Series that go [`IDLE_SERIES_TIMEOUT`] without an update are dropped from `/metrics` if they
//! are gauges or histograms (a consumer's lag on a partition it no longer owns, the latency of
//! a route nobody calls) and come back with the next update. Counters never expire: a counter
//! that vanished and came back at 1 would read as a reset, and `increase()` over it would miss
//! the first event, so dead letters, outcomes and errors could go unnoticed.
//!
//! Process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, `process_threads`, `process_start_time_seconds`, ...) are collected on
//! each scrape; `process_cpu_seconds_total` is exposed as a gauge for sub-second resolution
//! (`rate()` works on it all the same).
//!
//! One process normally runs one service, and its `/metrics` serves everything it recorded.
//! When several services share a process and its recorder (the embedded mode,
//! [`serve_per_service`]), each service's `/metrics` serves the series labelled with its own
//! `service`, and one of them also serves the series without a `service` label (process and
//! saga metrics), so that a Prometheus scraping all five endpoints sees every series once.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::Method;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use crate::contracts::{command_type, event_type};

pub const MESSAGES_HANDLED: &str = "saga_messages_handled_total";
pub const HANDLER_DURATION: &str = "saga_handler_duration_seconds";
pub const MESSAGE_RETRIES: &str = "saga_message_retries_total";
pub const DEAD_LETTERS: &str = "saga_dead_letters_total";
pub const CONSUMER_ERRORS: &str = "saga_consumer_errors_total";
pub const OFFSET_GAP: &str = "saga_consumer_skipped_offsets_total";
pub const CONSUMER_LAG: &str = "saga_consumer_lag_messages";
pub const OUTBOX_BACKLOG: &str = "saga_outbox_backlog_messages";
pub const OUTBOX_PUBLISHED: &str = "saga_outbox_published_total";
pub const OUTBOX_PUBLISH_LATENCY: &str = "saga_outbox_publish_latency_seconds";
pub const OUTBOX_ERRORS: &str = "saga_outbox_errors_total";
pub const OUTBOX_LEASE_LAPSED: &str = "saga_outbox_lease_lapsed_total";
pub const OUTBOX_SWEEPS: &str = "saga_outbox_sweeps_total";
pub const COMPENSATIONS: &str = "saga_compensations_total";
pub const ADMIN_COMMANDS: &str = "saga_admin_commands_total";
pub const ROWS_PRUNED: &str = "saga_rows_pruned_total";
pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
pub const HTTP_CONNECTIONS_CLOSED: &str = "http_connections_closed_total";
pub const DB_POOL_CONNECTIONS: &str = "saga_db_pool_connections";
pub const DB_POOL_MAX_CONNECTIONS: &str = "saga_db_pool_max_connections";
pub const DB_POOL_ACQUIRE: &str = "saga_db_pool_acquire_seconds";
pub const DB_POOL_ACQUIRE_TIMEOUTS: &str = "saga_db_pool_acquire_timeouts_total";

/// How long a gauge or histogram series may go without an update before `/metrics` drops it
/// (see the module docs). Far longer than any scrape interval or periodic update here (lag
/// every 5 s, open orders every second, process metrics on every scrape).
pub const IDLE_SERIES_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The `type` label of a message that could not be decoded.
pub const UNDECODABLE: &str = "undecodable";

/// The `type` label of a message type outside the contract, and the `method` label of an HTTP
/// method outside the standard ones.
pub const OTHER: &str = "other";

/// Bucket bounds of every `_seconds` histogram. 0.2 s and 2 s are bounds because the alerts
/// compare p99s with them (`POST /orders` within 200 ms, sagas within 2 s): against a bound,
/// `histogram_quantile` says whether more than 1 % of observations exceeded it, where between
/// two bounds it would interpolate.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
static PER_SERVICE: OnceLock<&'static str> = OnceLock::new();

/// Several services share this process's recorder: split the series between their `/metrics`
/// endpoints by `service` label; `unlabelled_owner` also serves the series without one.
/// Process-wide and permanent (the first call wins).
pub fn serve_per_service(unlabelled_owner: &'static str) {
    let _ = PER_SERVICE.set(unlabelled_owner);
}

/// The Prometheus text for a `/metrics` endpoint of `service` (or of the whole process when
/// `None`), with the process metrics brought up to date.
pub fn render(handle: &PrometheusHandle, service: Option<&str>) -> String {
    PROCESS
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
    let text = handle.render();
    match (PER_SERVICE.get(), service) {
        (Some(owner), Some(service)) => only_service(&text, service, *owner == service),
        _ => text,
    }
}

/// Keep the samples whose `service` label is `service` (and those without one when
/// `with_unlabelled`), with the `# HELP`/`# TYPE` lines of the families that keep a sample.
fn only_service(text: &str, service: &str, with_unlabelled: bool) -> String {
    let mut out = String::with_capacity(text.len() / 4);
    let mut header = String::new();
    // True once a family's samples began: the next comment line starts a new family.
    let mut in_samples = false;
    for line in text.lines() {
        if line.starts_with('#') {
            if in_samples {
                header.clear();
                in_samples = false;
            }
            header.push_str(line);
            header.push('\n');
        } else if line.trim().is_empty() {
            header.clear();
            in_samples = false;
        } else {
            in_samples = true;
            let keep = match service_label(line) {
                Some(value) => value == service,
                None => with_unlabelled,
            };
            if keep {
                out.push_str(&header);
                header.clear();
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The value of the `service` label of one sample line, if it has one.
fn service_label(sample: &str) -> Option<String> {
    let open = sample.find('{')?;
    let name_end = sample.find(' ').unwrap_or(sample.len());
    if open > name_end {
        return None;
    }
    let mut chars = sample[open + 1..].chars().peekable();
    loop {
        let mut name = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            name.push(c);
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => value.push(chars.next()?),
                '"' => break,
                c => value.push(c),
            }
        }
        if name.trim() == "service" {
            return Some(value);
        }
        match chars.next()? {
            ',' if chars.peek() == Some(&'}') => return None,
            ',' => continue,
            _ => return None,
        }
    }
}

/// Install the process-wide recorder (once; later calls return the same handle).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let expiring = || {
                PrometheusBuilder::new()
                    .idle_timeout(MetricKindMask::GAUGE | MetricKindMask::HISTOGRAM, Some(IDLE_SERIES_TIMEOUT))
            };
            let recorder = expiring()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .unwrap_or_else(|_| expiring())
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours just renders empty.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        MESSAGES_HANDLED,
        "Messages consumed, by service, event type and outcome (ok, duplicate, dead_lettered, ignored: a type the service does not act on)"
    );
    describe_histogram!(HANDLER_DURATION, Unit::Seconds, "Time from receiving a message to committing its effects");
    describe_counter!(MESSAGE_RETRIES, "Handler attempts that failed and were retried");
    describe_counter!(DEAD_LETTERS, "Messages sent to the dead-letter topic, by origin topic and type");
    describe_counter!(CONSUMER_ERRORS, "Errors reported by the Kafka consumer");
    describe_counter!(OFFSET_GAP, "Offsets a consumer never saw (dropped by retention or skipped by an offset reset)");
    describe_gauge!(CONSUMER_LAG, "Messages between a group's committed offset and the partition end");
    describe_gauge!(OUTBOX_BACKLOG, "Outbox rows committed but not yet marked published (acknowledged by the broker)");
    describe_counter!(OUTBOX_PUBLISHED, "Outbox rows published, by topic");
    describe_histogram!(OUTBOX_PUBLISH_LATENCY, Unit::Seconds, "Time from outbox commit to broker acknowledgement");
    describe_counter!(OUTBOX_ERRORS, "Relay rounds that failed (broker or database unavailable)");
    describe_counter!(
        OUTBOX_LEASE_LAPSED,
        "Relay batches not sent because the relay stalled past its lease after reading them (fenced)"
    );
    describe_counter!(
        OUTBOX_SWEEPS,
        "Times the relay read the outbox table rather than sending rows handed over at commit, by reason"
    );
    describe_counter!(COMPENSATIONS, "Compensating actions performed, by kind");
    describe_counter!(ADMIN_COMMANDS, "Admin commands decided by their owning service, by command type and outcome");
    describe_counter!(ROWS_PRUNED, "Rows deleted by retention (older than the table's retention), by table");
    describe_counter!(HTTP_REQUESTS, "HTTP requests, by route template, method and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency, by route template, method and status");
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Connections of the service's database pool, by state (in_use: lent out; idle), sampled every second"
    );
    describe_gauge!(DB_POOL_MAX_CONNECTIONS, "The most connections the service's database pool opens");
    describe_histogram!(
        DB_POOL_ACQUIRE,
        Unit::Seconds,
        "Time a transaction waited for a connection from the pool (timed-out waits included)"
    );
    describe_counter!(DB_POOL_ACQUIRE_TIMEOUTS, "Waits for a pool connection that timed out (the acquire timeout)");
    describe_counter!(
        HTTP_CONNECTIONS_CLOSED,
        "Connections the server closed on its own, by reason (header_timeout, keep_alive_timeout, over_capacity)"
    );
}

/// The `method` label of an HTTP request: one of the methods HTTP defines, else [`OTHER`]
/// (a client can send any token as a method).
pub fn method_label(method: &Method) -> &'static str {
    standard_method(method).unwrap_or(OTHER)
}

/// The method's name if it is one HTTP defines (RFC 9110 and PATCH).
pub fn standard_method(method: &Method) -> Option<&'static str> {
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::CONNECT, "CONNECT"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::PATCH, "PATCH"),
    ];
    STANDARD.iter().find(|(m, _)| m == method).map(|(_, name)| *name)
}

/// The `type` label of a message: its type if the contract has it, [`UNDECODABLE`], else
/// [`OTHER`] (a message's type header is whatever its producer wrote).
pub fn message_type_label(message_type: &str) -> &'static str {
    event_type::ALL
        .iter()
        .chain(command_type::ALL.iter())
        .chain(std::iter::once(&UNDECODABLE))
        .find(|known| **known == message_type)
        .copied()
        .unwrap_or(OTHER)
}

pub fn rows_pruned(service: &'static str, table: &'static str, rows: u64) {
    counter!(ROWS_PRUNED, "service" => service, "table" => table).increment(rows);
}

pub fn message_handled(service: &'static str, event_type: &str, outcome: &'static str, elapsed: Duration) {
    let event_type = message_type_label(event_type);
    counter!(MESSAGES_HANDLED, "service" => service, "type" => event_type, "outcome" => outcome).increment(1);
    histogram!(HANDLER_DURATION, "service" => service, "type" => event_type).record(elapsed.as_secs_f64());
}

/// A message of a type its service does not act on, acknowledged without a transaction.
pub fn message_ignored(service: &'static str, event_type: &str) {
    counter!(MESSAGES_HANDLED, "service" => service, "type" => message_type_label(event_type), "outcome" => "ignored")
        .increment(1);
}

pub fn message_retried(service: &'static str, event_type: &str) {
    counter!(MESSAGE_RETRIES, "service" => service, "type" => message_type_label(event_type)).increment(1);
}

pub fn dead_lettered(service: &'static str, topic: &str, event_type: &str) {
    counter!(DEAD_LETTERS, "service" => service, "topic" => topic.to_owned(), "type" => message_type_label(event_type))
        .increment(1);
}

pub fn consumer_errors(service: &'static str, kind: &'static str) {
    counter!(CONSUMER_ERRORS, "service" => service, "kind" => kind).increment(1);
}

pub fn offset_gap(service: &'static str, topic: &str, skipped: i64) {
    counter!(OFFSET_GAP, "service" => service, "topic" => topic.to_owned()).increment(skipped.max(0) as u64);
}

pub fn consumer_lag(service: &'static str, group: &str, topic: &str, partition: i32, lag: i64) {
    gauge!(CONSUMER_LAG, "service" => service, "group" => group.to_owned(), "topic" => topic.to_owned(),
        "partition" => partition.to_string())
    .set(lag as f64);
}

pub fn outbox_backlog(service: &'static str, rows: i64) {
    gauge!(OUTBOX_BACKLOG, "service" => service).set(rows as f64);
}

pub fn outbox_published(service: &'static str, topic: &str, latency: Duration) {
    counter!(OUTBOX_PUBLISHED, "service" => service, "topic" => topic.to_owned()).increment(1);
    histogram!(OUTBOX_PUBLISH_LATENCY, "service" => service).record(latency.as_secs_f64());
}

pub fn outbox_errors(service: &'static str) {
    counter!(OUTBOX_ERRORS, "service" => service).increment(1);
}

/// The relay read the outbox table instead of sending rows handed over (`reason`: `unknown`,
/// `notified`, `gap`, `poll`).
pub fn outbox_sweep(service: &'static str, reason: &'static str) {
    counter!(OUTBOX_SWEEPS, "service" => service, "reason" => reason).increment(1);
}

pub fn outbox_lease_lapsed(service: &'static str) {
    counter!(OUTBOX_LEASE_LAPSED, "service" => service).increment(1);
}

/// A compensating action (`inventory_released`, `payment_refunded`, `shipment_cancelled`).
pub fn compensation(service: &'static str, kind: &'static str) {
    counter!(COMPENSATIONS, "service" => service, "kind" => kind).increment(1);
}

/// An owning service decided an admin command (`outcome`: `applied` or `rejected`).
pub fn admin_command(service: &'static str, command_type: &str, outcome: &'static str) {
    counter!(ADMIN_COMMANDS, "service" => service, "command" => message_type_label(command_type), "outcome" => outcome)
        .increment(1);
}

/// One HTTP request: `route` is the route template (or `unmatched`).
pub fn http_request(service: &'static str, route: &str, method: &Method, status: u16, elapsed: Duration) {
    let labels = [
        ("service", service.to_owned()),
        ("route", route.to_owned()),
        ("method", method_label(method).to_owned()),
        ("status", status.to_string()),
    ];
    counter!(HTTP_REQUESTS, &labels).increment(1);
    histogram!(HTTP_DURATION, &labels).record(elapsed.as_secs_f64());
}

/// The server closed a connection on its own (`reason`: `header_timeout`,
/// `keep_alive_timeout`, `over_capacity`).
pub fn http_connection_closed(service: &'static str, reason: &'static str) {
    counter!(HTTP_CONNECTIONS_CLOSED, "service" => service, "reason" => reason).increment(1);
}

/// A database pool is observed from now on: its timeout counter is shown at 0 until one
/// happens (so that `rate()` and `increase()` see the first).
pub fn db_pool_observed(service: &'static str) {
    // A service observes its pool before it serves /metrics: the recorder must be there first.
    install();
    counter!(DB_POOL_ACQUIRE_TIMEOUTS, "service" => service).increment(0);
}

/// One sample of a database pool's connections.
pub fn db_pool_sample(service: &'static str, in_use: u32, idle: u32, max: u32) {
    gauge!(DB_POOL_CONNECTIONS, "service" => service, "state" => "in_use").set(f64::from(in_use));
    gauge!(DB_POOL_CONNECTIONS, "service" => service, "state" => "idle").set(f64::from(idle));
    gauge!(DB_POOL_MAX_CONNECTIONS, "service" => service).set(f64::from(max));
}

/// A transaction got a pool connection after `waited`.
pub fn db_pool_acquired(service: &'static str, waited: Duration) {
    histogram!(DB_POOL_ACQUIRE, "service" => service).record(waited.as_secs_f64());
}

/// A transaction gave up waiting for a pool connection after `waited` (the acquire timeout).
pub fn db_pool_acquire_timed_out(service: &'static str, waited: Duration) {
    histogram!(DB_POOL_ACQUIRE, "service" => service).record(waited.as_secs_f64());
    counter!(DB_POOL_ACQUIRE_TIMEOUTS, "service" => service).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP saga_x_total X\n# TYPE saga_x_total counter\n\
saga_x_total{service=\"order-svc\",type=\"A\"} 1\n\
saga_x_total{type=\"a,service=\\\"inventory-svc\\\"\",service=\"inventory-svc\"} 2\n\
\n# TYPE process_threads gauge\nprocess_threads 9\n\
\n# HELP saga_outcomes_total Outcomes\n# TYPE saga_outcomes_total counter\n\
saga_outcomes_total{outcome=\"completed\",reason=\"none\"} 3\n";

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for token in ["get", "PROPFIND", "G", &"X".repeat(4096)] {
            let method = Method::from_bytes(token.as_bytes()).expect("a token");
            assert_eq!(method_label(&method), OTHER, "{token}");
        }
    }

    #[test]
    fn message_types_outside_the_contract_share_one_label() {
        assert_eq!(message_type_label("OrderPlaced"), "OrderPlaced");
        assert_eq!(message_type_label("SetDestinations"), "SetDestinations");
        assert_eq!(message_type_label(UNDECODABLE), UNDECODABLE);
        for hostile in ["", "orderplaced", "OrderPlaced ", &"T".repeat(10_000)] {
            assert_eq!(message_type_label(hostile), OTHER);
        }
    }

    #[test]
    fn the_service_label_is_read_past_escaped_quotes_and_commas() {
        assert_eq!(service_label("m{service=\"a\"} 1").as_deref(), Some("a"));
        assert_eq!(service_label("m{type=\"x,service=\\\"b\\\"\",service=\"c\"} 1").as_deref(), Some("c"));
        assert_eq!(service_label("m{type=\"x\"} 1"), None);
        assert_eq!(service_label("m 1"), None);
    }

    #[test]
    fn each_service_endpoint_serves_its_own_series_and_one_serves_the_unlabelled() {
        let inventory = only_service(TEXT, "inventory-svc", false);
        assert_eq!(
            inventory,
            "# HELP saga_x_total X\n# TYPE saga_x_total counter\n\
saga_x_total{type=\"a,service=\\\"inventory-svc\\\"\",service=\"inventory-svc\"} 2\n"
        );
        let order = only_service(TEXT, "order-svc", true);
        assert!(order.contains("saga_x_total{service=\"order-svc\",type=\"A\"} 1"));
        assert!(order.contains("# TYPE process_threads gauge\nprocess_threads 9"));
        assert!(
            order.contains(
                "# HELP saga_outcomes_total Outcomes\n# TYPE saga_outcomes_total counter\nsaga_outcomes_total"
            )
        );
        assert!(!order.contains("inventory-svc\"} 2"));
    }
}
