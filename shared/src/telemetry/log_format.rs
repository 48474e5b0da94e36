//! JSON log lines. One object per line:
//!
//! ```json
//! {"timestamp":"2026-01-01T12:00:00.000000Z","level":"INFO","target":"notification_svc::sinks",
//!  "message":"notification sent","kind":"confirmation",
//!  "span":{"name":"process","messaging.destination.name":"shipping.events",...},
//!  "trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7",
//!  "order.id":"0199...","service":"notification-svc"}
//! ```
//!
//! The event's own fields are at the top level (as before, so `message` and e.g. `addr` are
//! easy to pick out). A line written inside a span also carries the span's name and fields,
//! the OpenTelemetry `trace_id` and `span_id` of that span, and the `order.id`, `service` and
//! (within an HTTP request) `request.id` the span works for (its own or inherited, see
//! [`super::context`]), so every line written while handling an order can be joined to the
//! order, to its trace and to the request that started it. An event field of the
//! same name wins over the span's.

use std::fmt;

use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OtelData;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::context::{JsonVisitor, ORDER_ID, REQUEST_ID, SERVICE, SpanInfo};

/// The JSON line format (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::from(metadata.level().as_str()));
        line.insert("target".into(), Value::from(metadata.target()));

        if let Some(span) = ctx.event_scope().and_then(|mut scope| scope.next()) {
            let extensions = span.extensions();
            let info = extensions.get::<SpanInfo>();
            let mut span_object = Map::new();
            span_object.insert("name".into(), Value::from(span.name()));
            if let Some(info) = info {
                span_object.extend(info.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            line.insert("span".into(), Value::Object(span_object));
            if let Some(otel) = extensions.get::<OtelData>() {
                if let Some(trace_id) = otel.trace_id() {
                    line.insert("trace_id".into(), Value::from(trace_id.to_string()));
                }
                if let Some(span_id) = otel.span_id() {
                    line.insert("span_id".into(), Value::from(span_id.to_string()));
                }
            }
            if let Some(info) = info {
                if let Some(order_id) = &info.order_id {
                    line.insert(ORDER_ID.into(), Value::from(order_id.clone()));
                }
                if let Some(service) = &info.service {
                    line.insert(SERVICE.into(), Value::from(service.clone()));
                }
                if let Some(request_id) = &info.request_id {
                    line.insert(REQUEST_ID.into(), Value::from(request_id.clone()));
                }
            }
        }

        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        line.extend(fields);

        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}
