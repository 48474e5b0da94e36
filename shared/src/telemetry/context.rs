//! What a span knows about the unit of work it belongs to: the order it is about (`order.id`),
//! the service doing the work (`service`) and, within an HTTP request, the request's id
//! (`request.id`), inherited from its ancestors.
//!
//! The spans that start a unit of work (an HTTP request, a message being processed or
//! published) declare both fields. Spans below them (event-store reads, outbox writes) do not
//! know the order; [`ContextLayer`] gives them their ancestor's values, both as OpenTelemetry
//! attributes (so every span of an order can be found by `order.id`, and in the embedded mode,
//! where five services share one tracer, by `service`) and for the log lines written inside
//! them ([`super::log_format`]).
//!
//! A span that declares a field (even as `Empty`, to record it later) is left alone: it is
//! responsible for its own value. Only spans that do not declare it are given the inherited
//! one, which starts their OpenTelemetry span at once, so such spans cannot take a remote
//! parent later (`set_parent`): spans that continue a remote trace declare both fields.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The span attribute naming the order a span is about.
pub const ORDER_ID: &str = "order.id";
/// The span attribute naming the service doing the work.
pub const SERVICE: &str = "service";
/// The span attribute naming the HTTP request a span serves (see `crate::request_id`).
pub const REQUEST_ID: &str = "request.id";

/// The attributes a span inherits from its ancestors.
const INHERITED: [&str; 3] = [ORDER_ID, SERVICE, REQUEST_ID];

/// Per-span data kept in the span's extensions: its own fields (for log lines) and the order,
/// service and request it works for (its own or inherited).
#[derive(Debug, Clone, Default)]
pub struct SpanInfo {
    pub fields: Map<String, Value>,
    pub order_id: Option<String>,
    pub service: Option<String>,
    pub request_id: Option<String>,
}

impl SpanInfo {
    fn absorb(&mut self, fields: Map<String, Value>) {
        for (key, value) in fields {
            if let Some(slot) = self.inherited_mut(&key) {
                *slot = value_text(&value);
            }
            self.fields.insert(key, value);
        }
    }

    /// The value of one of the [`INHERITED`] attributes.
    pub fn inherited(&self, name: &str) -> Option<&String> {
        match name {
            ORDER_ID => self.order_id.as_ref(),
            SERVICE => self.service.as_ref(),
            REQUEST_ID => self.request_id.as_ref(),
            _ => None,
        }
    }

    fn inherited_mut(&mut self, name: &str) -> Option<&mut Option<String>> {
        match name {
            ORDER_ID => Some(&mut self.order_id),
            SERVICE => Some(&mut self.service),
            REQUEST_ID => Some(&mut self.request_id),
            _ => None,
        }
    }
}

fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The tracing layer that maintains [`SpanInfo`]. Install it after (outside) the
/// OpenTelemetry layer, so that layer's span data exists when this one runs.
#[derive(Debug, Default)]
pub struct ContextLayer {
    dispatch: OnceLock<WeakDispatch>,
}

impl<S> Layer<S> for ContextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        let inherited = span.parent().and_then(|parent| {
            parent.extensions().get::<SpanInfo>().map(|info| INHERITED.map(|name| info.inherited(name).cloned()))
        });
        let mut info = SpanInfo::default();
        info.absorb(fields);

        let declares = |name: &str| attrs.metadata().fields().field(name).is_some();
        let mut attributes = Vec::new();
        for (name, parent_value) in INHERITED.into_iter().zip(inherited.into_iter().flatten()) {
            let (Some(slot), Some(value)) = (info.inherited_mut(name), parent_value) else { continue };
            if slot.is_none() {
                *slot = Some(value.clone());
                if !declares(name) {
                    attributes.push(KeyValue::new(name, value));
                }
            }
        }

        let mut extensions = span.extensions_mut();
        if !attributes.is_empty()
            && let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade)
            && let Some(cx) = tracing_opentelemetry::get_otel_context(&mut extensions, &dispatch)
        {
            let otel_span = cx.span();
            for attribute in attributes {
                otel_span.set_attribute(attribute);
            }
        }
        extensions.insert(info);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        values.record(&mut JsonVisitor(&mut fields));
        if let Some(info) = span.extensions_mut().get_mut::<SpanInfo>() {
            info.absorb(fields);
        }
    }
}

/// Records tracing fields as JSON values.
pub(crate) struct JsonVisitor<'a>(pub &'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().to_owned(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}
