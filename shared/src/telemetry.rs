//! Logs and traces.
//!
//! Logs are JSON lines ([`JsonLines`]: every line written inside a span carries `trace_id`,
//! `span_id`, `order.id` and `service`), or human-readable, filtered by `RUST_LOG`. Which one:
//! `LOG_FORMAT` (`json` or `pretty`) when set, else human-readable when standard output is a
//! terminal and JSON when it is not (a pipe, a file, a container's log) ([`LogFormat::choose`]). Spans always carry an OpenTelemetry context, so the W3C trace context can be
//! propagated through Kafka headers even when nothing is exported; with an OTLP endpoint
//! configured, spans are batched and exported over gRPC.
//!
//! One order is one trace: the API's `POST /orders` span ([`http_server_span`]) is its root;
//! a message's `traceparent` is taken from the span that produced it when it is enqueued in
//! the outbox, the relay sends it in a producer span ([`producer_span`]) under that context
//! and puts its own context in the Kafka headers, and each consumer processes it in a consumer
//! span ([`consumer_span`]) under the producer span. Every span has `order.id` and `service`
//! (inherited by spans that do not declare them, see [`ContextLayer`]), and every span of an
//! HTTP request its `request.id`; in the embedded mode
//! the five services share one process and one resource, and `service` tells them apart.
//!
//! Trace context from outside is bounded. An HTTP request always starts a new trace: a valid
//! `traceparent` from the caller becomes a span link, never the parent, so a client cannot
//! choose our trace ids or make its own trace carry every message an order causes. A
//! `tracestate` longer than [`MAX_TRACESTATE_BYTES`] or with more than
//! [`MAX_TRACESTATE_ENTRIES`] members is dropped whole, wherever a context is taken in (HTTP,
//! Kafka headers, outbox rows) or sent out; a malformed `traceparent` is ignored.

use std::collections::HashMap;

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rdkafka::message::Message;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
pub use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::envelope::{Envelope, header};

mod context;
mod log_format;

pub use context::{ContextLayer, ORDER_ID, REQUEST_ID, SERVICE, SpanInfo};
pub use log_format::JsonLines;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            other => Err(format!("unknown log format {other:?} (json or pretty)")),
        }
    }
}

impl LogFormat {
    /// The format for `LOG_FORMAT`'s value `configured` when standard output is (or is not) a
    /// terminal: `json` or `pretty` as configured; unset, empty or `auto`: pretty on a terminal,
    /// where a person reads the lines, and JSON elsewhere, where a program does.
    pub fn choose(configured: Option<&str>, stdout_is_terminal: bool) -> Result<Self, String> {
        match configured.map(str::trim) {
            None | Some("" | "auto") if stdout_is_terminal => Ok(LogFormat::Pretty),
            None | Some("" | "auto") => Ok(LogFormat::Json),
            Some(value) => value.parse(),
        }
    }

    /// [`LogFormat::choose`] for this process: `LOG_FORMAT` and its standard output.
    pub fn from_env() -> anyhow::Result<Self> {
        use std::io::IsTerminal as _;
        let configured = std::env::var("LOG_FORMAT").ok();
        Self::choose(configured.as_deref(), std::io::stdout().is_terminal())
            .map_err(|err| anyhow::anyhow!("invalid LOG_FORMAT: {err}"))
    }
}

/// Flushes the tracer when dropped (or explicitly through [`TelemetryGuard::shutdown`]).
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Export the spans that ended so far now, instead of at the next batch.
    pub fn flush(&self) {
        if let Err(err) = self.provider.force_flush() {
            eprintln!("tracer flush: {err}");
        }
    }

    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("tracer shutdown: {err}");
        }
    }
}

/// How to set up telemetry for a process.
pub struct Options {
    /// The OpenTelemetry resource's `service.name`.
    pub service_name: String,
    /// OTLP gRPC endpoint; `None` = spans are kept for propagation only, not exported.
    pub otlp_endpoint: Option<String>,
    pub log_format: LogFormat,
    /// Where log lines go (standard output by default; tests capture them).
    pub log_writer: BoxMakeWriter,
    /// A `RUST_LOG`-style filter; `None` = `RUST_LOG`, or the default below.
    pub log_filter: Option<String>,
}

impl Options {
    pub fn new(service_name: &str, otlp_endpoint: Option<&str>, log_format: LogFormat) -> Self {
        Self {
            service_name: service_name.to_owned(),
            otlp_endpoint: otlp_endpoint.map(str::to_owned),
            log_format,
            log_writer: BoxMakeWriter::new(std::io::stdout),
            log_filter: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("service_name", &self.service_name)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .finish_non_exhaustive()
    }
}

const DEFAULT_FILTER: &str = "info,sqlx=warn,rdkafka=warn,h2=warn,tower=warn,hyper=warn,opentelemetry=warn";

/// Install the global subscriber. Call once per process.
pub fn init(service_name: &str, otlp_endpoint: Option<&str>, format: LogFormat) -> anyhow::Result<TelemetryGuard> {
    init_with(Options::new(service_name, otlp_endpoint, format))
}

/// Install the global subscriber with every option. Call once per process (inside a Tokio
/// runtime when exporting: the OTLP client lives on it).
pub fn init_with(options: Options) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = Resource::builder().with_service_name(options.service_name.clone()).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &options.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .context("failed to build the OTLP span exporter")?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer(options.service_name.clone());
    opentelemetry::global::set_tracer_provider(provider.clone());

    let filter = match &options.log_filter {
        Some(directives) => EnvFilter::try_new(directives).context("invalid log filter")?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)),
    };
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    // The context layer goes after the OpenTelemetry layer: it reads that layer's span data.
    let registry = tracing_subscriber::registry().with(filter).with(otel).with(ContextLayer::default());
    let result = match options.log_format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().event_format(JsonLines).with_writer(options.log_writer))
            .try_init(),
        LogFormat::Pretty => {
            registry.with(tracing_subscriber::fmt::layer().compact().with_writer(options.log_writer)).try_init()
        }
    };
    result.context("a global tracing subscriber is already installed")?;
    Ok(TelemetryGuard { provider })
}

/// The longest `tracestate` taken in or sent out (W3C asks vendors to propagate at least 512
/// bytes); a longer one is dropped whole.
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// The most `tracestate` list members taken in or sent out (the W3C limit); more, and it is
/// dropped whole.
pub const MAX_TRACESTATE_ENTRIES: usize = 32;

/// `tracestate` if it is within [`MAX_TRACESTATE_BYTES`] and [`MAX_TRACESTATE_ENTRIES`].
pub fn bounded_tracestate(tracestate: &str) -> Option<&str> {
    let entries = tracestate.split(',').filter(|member| !member.trim().is_empty()).count();
    (tracestate.len() <= MAX_TRACESTATE_BYTES && entries <= MAX_TRACESTATE_ENTRIES).then_some(tracestate)
}

/// The current span's W3C trace context as `(traceparent, tracestate)`.
pub fn current_trace_headers() -> (Option<String>, Option<String>) {
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut MapCarrier(&mut carrier));
    let tracestate = carrier.remove(header::TRACESTATE).filter(|s| !s.is_empty() && bounded_tracestate(s).is_some());
    (carrier.remove(header::TRACEPARENT), tracestate)
}

/// The remote context `traceparent` names, with `tracestate` when it is within bounds; `None`
/// when `traceparent` is missing or malformed.
fn remote_context(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<opentelemetry::Context> {
    let mut carrier = HashMap::new();
    carrier.insert(header::TRACEPARENT.to_owned(), traceparent?.to_owned());
    if let Some(ts) = tracestate.and_then(bounded_tracestate) {
        carrier.insert(header::TRACESTATE.to_owned(), ts.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&MapCarrier(&mut carrier));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Continue the trace carried by `traceparent`/`tracestate` in `span` (a message from another
/// service); a missing or malformed `traceparent` leaves `span` a new root.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if let Some(cx) = remote_context(traceparent, tracestate) {
        let _ = span.set_parent(cx);
    }
}

/// The span a consumer processes one message in, following the OpenTelemetry messaging
/// semantic conventions, as a child of the span that published it (whose context travels in
/// the message's `traceparent`).
pub fn consumer_span<M: Message>(
    service: &'static str,
    group: &str,
    message: &M,
    envelope: Option<&Envelope>,
) -> tracing::Span {
    let topic = message.topic();
    let span = tracing::info_span!(
        "process",
        otel.name = format!("process {topic}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        service,
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = topic,
        messaging.destination.partition.id = message.partition().to_string(),
        messaging.kafka.offset = message.offset(),
        messaging.kafka.message.key = message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        messaging.consumer.group.name = group,
        messaging.message.id = envelope.map(|e| e.id.to_string()),
        messaging.message.conversation_id = envelope.map(|e| e.correlation_id.to_string()),
        cloudevents.event_type = envelope.map(|e| e.event_type.clone()),
        cloudevents.event_source = envelope.map(|e| e.source.clone()),
        order.id = envelope.map(|e| e.subject.clone()),
    );
    if let Some(e) = envelope {
        continue_trace(&span, e.traceparent.as_deref(), e.tracestate.as_deref());
    }
    span
}

/// The span the outbox relay sends one message in (messaging semantic conventions, operation
/// `send`), as a child of the context that produced the message: the `traceparent` stored with
/// the outbox row. Returns the span and the headers to send, whose `traceparent` is now this
/// span's, so consumers continue the trace under it. Record the broker's answer with
/// [`record_send_result`].
pub fn producer_span(
    service: &'static str,
    topic: &str,
    key: &str,
    headers: &[(String, String)],
) -> (tracing::Span, Vec<(String, String)>) {
    let header = |name: &str| headers.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let span = tracing::info_span!(
        "send",
        otel.name = format!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        service,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = topic,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
        messaging.kafka.message.key = key,
        messaging.message.id = header(header::ID),
        messaging.message.conversation_id = header(header::CORRELATION_ID),
        cloudevents.event_type = header(header::TYPE),
        cloudevents.event_source = header(header::SOURCE),
        order.id = Some(key).filter(|k| !k.is_empty()),
    );
    continue_trace(&span, header(header::TRACEPARENT), header(header::TRACESTATE));
    let cx = span.context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut MapCarrier(&mut carrier));
    let mut out: Vec<(String, String)> =
        headers.iter().filter(|(k, _)| k != header::TRACEPARENT && k != header::TRACESTATE).cloned().collect();
    if let Some(tp) = carrier.remove(header::TRACEPARENT) {
        out.push((header::TRACEPARENT.to_owned(), tp));
    }
    if let Some(ts) = carrier.remove(header::TRACESTATE).filter(|s| !s.is_empty()) {
        out.push((header::TRACESTATE.to_owned(), ts));
    }
    (span, out)
}

/// Record where the broker put a sent message, or why it did not take it.
pub fn record_send_result(span: &tracing::Span, result: Result<(i32, i64), &dyn std::fmt::Display>) {
    match result {
        Ok((partition, offset)) => {
            span.record("messaging.destination.partition.id", partition.to_string());
            span.record("messaging.kafka.offset", offset);
        }
        Err(err) => {
            span.record("otel.status_code", "error");
            span.record("error.type", "kafka_error");
            // The relay logs the failed round once; this line is for following one message.
            let _enter = span.enter();
            tracing::debug!(error = %err, "broker did not acknowledge the message");
        }
    }
}

/// The span an HTTP request is served in (HTTP semantic conventions): the root of a new trace,
/// linked to the caller's span when the request carries a valid `traceparent` (see the module
/// docs). `order.id` is recorded by the handler once known
/// (`tracing::Span::current().record("order.id", ...)`), `enduser.id` (the key id) by
/// authentication; `request.id` is inherited by every span below it.
pub fn http_server_span(
    service: &'static str,
    method: &axum::http::Method,
    route: &str,
    headers: &axum::http::HeaderMap,
    request_id: &str,
) -> tracing::Span {
    // The semantic conventions' name for a method outside the standard set: a client can send
    // any token, and a span name or attribute must not carry kilobytes of it.
    let method = crate::metrics::standard_method(method).unwrap_or("_OTHER");
    let span = tracing::info_span!(
        "http.server",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        service,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        order.id = tracing::field::Empty,
        enduser.id = tracing::field::Empty,
        request.id = request_id,
    );
    let _ = span.set_parent(opentelemetry::Context::new());
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(caller) = remote_context(value(header::TRACEPARENT), value(header::TRACESTATE)) {
        span.add_link(caller.span().span_context().clone());
    }
    span
}

struct MapCarrier<'a>(&'a mut HashMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for MapCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn logs_are_pretty_on_a_terminal_and_json_elsewhere_unless_log_format_says() {
        use LogFormat::{Json, Pretty};
        // (LOG_FORMAT, stdout is a terminal) -> format
        let cases = [
            (None, true, Pretty),
            (None, false, Json),
            (Some(""), true, Pretty),
            (Some(""), false, Json),
            (Some("auto"), true, Pretty),
            (Some("auto"), false, Json),
            (Some("json"), true, Json),
            (Some("json"), false, Json),
            (Some("pretty"), true, Pretty),
            (Some("pretty"), false, Pretty),
            (Some(" json "), true, Json),
            (Some("text"), false, Pretty),
        ];
        for (configured, terminal, expected) in cases {
            assert_eq!(
                LogFormat::choose(configured, terminal),
                Ok(expected),
                "{configured:?} on a terminal: {terminal}"
            );
        }
        for bad in ["JSON", "yaml", "prettty"] {
            let err = LogFormat::choose(Some(bad), true).expect_err(bad);
            assert!(err.contains("json or pretty"), "{err}");
        }
    }

    #[test]
    fn a_tracestate_within_bounds_is_kept_and_one_beyond_them_dropped_whole() {
        assert_eq!(bounded_tracestate("a=1,b=2"), Some("a=1,b=2"));
        let many: Vec<String> = (0..=MAX_TRACESTATE_ENTRIES).map(|i| format!("k{i}=v")).collect();
        assert_eq!(bounded_tracestate(&many.join(",")), None, "33 members");
        assert_eq!(bounded_tracestate(&many[1..].join(",")).map(str::len), Some(many[1..].join(",").len()));
        assert_eq!(bounded_tracestate(&format!("k={}", "v".repeat(MAX_TRACESTATE_BYTES))), None, "513 bytes");
    }

    #[test]
    fn a_malformed_traceparent_names_no_remote_context() {
        for bad in ["", "00-xyz", "00-00000000000000000000000000000000-b7ad6b7169203331-01", &"0".repeat(4096)] {
            assert!(remote_context(Some(bad), None).is_none(), "{bad}");
        }
        let cx = remote_context(Some(TRACEPARENT), Some(&"k=v,".repeat(400))).expect("valid");
        let span = cx.span();
        assert_eq!(span.span_context().trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(span.span_context().trace_state().header(), "", "the oversized tracestate is dropped");
    }
}
