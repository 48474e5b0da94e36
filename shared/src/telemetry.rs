//! Logs and traces.
//!
//! Logs are JSON lines through `tracing` (or human-readable with `LOG_FORMAT=pretty`), filtered
//! by `RUST_LOG`. Spans always carry an OpenTelemetry context, so the W3C trace context can be
//! propagated through Kafka headers even when nothing is exported; with an OTLP endpoint
//! configured, spans are batched and exported over gRPC.

use std::collections::HashMap;

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rdkafka::message::Message;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::envelope::{Envelope, header};

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

/// Flushes the tracer when dropped (or explicitly through [`TelemetryGuard::shutdown`]).
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("tracer shutdown: {err}");
        }
    }
}

/// Install the global subscriber. Call once per process.
pub fn init(service_name: &str, otlp_endpoint: Option<&str>, format: LogFormat) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = Resource::builder().with_service_name(service_name.to_owned()).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .context("failed to build the OTLP span exporter")?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer(service_name.to_owned());
    opentelemetry::global::set_tracer_provider(provider.clone());

    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rdkafka=warn,h2=warn,tower=warn,hyper=warn"));
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer().compact()).try_init(),
    };
    result.context("a global tracing subscriber is already installed")?;
    Ok(TelemetryGuard { provider })
}

/// The current span's W3C trace context as `(traceparent, tracestate)`.
pub fn current_trace_headers() -> (Option<String>, Option<String>) {
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut MapCarrier(&mut carrier));
    (carrier.remove(header::TRACEPARENT), carrier.remove(header::TRACESTATE).filter(|s| !s.is_empty()))
}

/// Continue the trace carried by `traceparent`/`tracestate` in `span`.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let mut carrier = HashMap::new();
    carrier.insert(header::TRACEPARENT.to_owned(), traceparent.to_owned());
    if let Some(ts) = tracestate {
        carrier.insert(header::TRACESTATE.to_owned(), ts.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&MapCarrier(&mut carrier));
    let _ = span.set_parent(cx);
}

/// The span a consumer processes one message in, following the OpenTelemetry messaging
/// semantic conventions, as a child of the producer's trace.
pub fn consumer_span<M: Message>(
    service: &'static str,
    group: &str,
    message: &M,
    envelope: Option<&Envelope>,
) -> tracing::Span {
    let topic = message.topic();
    let span = tracing::info_span!(
        "process",
        otel.name = format!("{topic} process"),
        otel.kind = "consumer",
        service,
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = topic,
        messaging.destination.partition.id = message.partition(),
        messaging.kafka.offset = message.offset(),
        messaging.consumer.group.name = group,
        messaging.message.id = envelope.map(|e| e.id.to_string()),
        event.type = envelope.map(|e| e.event_type.clone()),
        order.id = envelope.map(|e| e.subject.clone()),
    );
    if let Some(e) = envelope {
        continue_trace(&span, e.traceparent.as_deref(), e.tracestate.as_deref());
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
