//! One order is one trace across all five services: the embedded system exports its spans over
//! OTLP to an in-process collector, and the test follows one order's spans from the API's
//! `POST /orders` span through every Kafka hop. A caller's own `traceparent` is linked to, not
//! continued.
//!
//! Telemetry is process-wide (one global subscriber and tracer provider), so its test
//! runs in a process of its own. In the embedded mode the five services share that
//! provider and its resource (`service.name` = `saga`): the `service` span attribute tells them
//! apart (a standalone service process also has its own `service.name`).

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Options, TestSystem, WAIT};
use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use shared::db::Backend;
use shared::telemetry::{self, BoxMakeWriter, LogFormat};
use shared::testing::eventually;
use shared::topics::service;

/// The trace and span a caller names in its `traceparent`.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

const KIND_SERVER: &str = "SPAN_KIND_SERVER";
const KIND_PRODUCER: &str = "SPAN_KIND_PRODUCER";
const KIND_CONSUMER: &str = "SPAN_KIND_CONSUMER";

/// An attribute's value as text. The fake collector keeps attribute values as their `Debug`
/// form (`Some(AnyValue { value: Some(StringValue("kafka")) })`); this takes the inner value.
fn attr(span: &ExportedSpan, key: &str) -> Option<String> {
    let debug = span.attributes.get(key)?;
    let start = debug.find("Value(")? + "Value(".len();
    let inner = debug.get(start..)?.strip_suffix(")) })")?;
    Some(inner.trim_matches('"').to_owned())
}

own_process_test!(one_order_is_one_trace_across_all_five_services);
async fn one_order_is_one_trace_across_all_five_services() -> anyhow::Result<()> {
    // Arrange: a collector, telemetry exporting to it, the embedded system.
    let mut collector = FakeCollectorServer::start().await.map_err(|e| anyhow::anyhow!("collector: {e}"))?;
    let mut options = telemetry::Options::new("saga", Some(&collector.endpoint()), LogFormat::Json);
    options.log_writer = BoxMakeWriter::new(std::io::sink);
    let guard = telemetry::init_with(options)?;
    let system = TestSystem::start(Backend::Sqlite, Options::default()).await?;
    let system_keys = system.keys.clone();

    // Act: one order, through to its end; and one whose caller sent its own trace context.
    let id = system.place_ok("cust-rich", &[("sku-tee", 1)], "NL").await?;
    let linked = system
        .http
        .post(system.url("/orders"))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", "caller=1")
        .json(&common::order_body("cust-rich", &[("sku-mug", 1)], "NL"))
        .send()
        .await?;
    assert_eq!(linked.status(), 202);
    let linked_id = linked.json::<serde_json::Value>().await?["id"].as_str().unwrap_or_default().to_owned();
    let order = system.terminal(&id).await?;
    assert_eq!(order["status"], "completed", "{order}");

    // Collect spans until the saga's last hop (notification-svc's NotificationSent, consumed by
    // order-svc for the order's timeline) has been exported. The collector is drained all along: it holds
    // only a few batches, and a full collector would hold up the exporter.
    let received: Arc<Mutex<Vec<ExportedSpan>>> = Arc::default();
    let drain = tokio::spawn({
        let received = received.clone();
        async move {
            loop {
                let batch = collector.exported_spans(1, Duration::from_millis(100)).await;
                received.lock().expect("spans").extend(batch);
            }
        }
    });
    let trace = eventually(WAIT, &format!("the spans of order {id}"), || async {
        tokio::task::block_in_place(|| guard.flush());
        whole_trace(&received.lock().expect("spans"), &id)
    })
    .await
    .map_err(|err| {
        let spans = received.lock().expect("spans");
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for s in spans.iter() {
            *names
                .entry(format!("{} {:?} {:?}", s.name, attr(s, "service"), attr(s, "order.id").map(|o| o == id)))
                .or_default() += 1;
        }
        anyhow::anyhow!("{err}; {} spans received: {names:#?}", spans.len())
    })?;
    let linked_root = eventually(WAIT, "the span of the order placed with a traceparent", || async {
        tokio::task::block_in_place(|| guard.flush());
        let spans = received.lock().expect("spans");
        spans.iter().find(|s| s.name == "POST /orders" && attr(s, "order.id") == Some(linked_id.clone())).cloned()
    })
    .await?;
    drain.abort();
    let spans = received.lock().expect("spans").clone();
    system.stop().await?;

    // Assert: the root is the API's server span, with the order id.
    let by_id: HashMap<&str, &ExportedSpan> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let roots: Vec<&ExportedSpan> = trace.iter().filter(|s| !by_id.contains_key(s.parent_span_id.as_str())).collect();
    assert_eq!(roots.len(), 1, "one root: {:?}", roots.iter().map(|s| &s.name).collect::<Vec<_>>());
    let root = roots[0];
    assert_eq!(root.name, "POST /orders");
    assert_eq!(root.kind, KIND_SERVER);
    assert!(root.parent_span_id.is_empty(), "the API span starts the trace");
    assert_eq!(attr(root, "http.route").as_deref(), Some("/orders"));
    assert_eq!(attr(root, "http.response.status_code").as_deref(), Some("202"));
    let key_id = format!("key-{}", &order_svc::http::hash_key(&system_keys.admin)[..12]);
    assert_eq!(attr(root, "enduser.id"), Some(key_id), "the caller's key id");
    // The request's id is on its span and on the spans below it, up to the first message.
    let request_id = attr(root, "request.id").expect("request.id on the API span");
    let place = trace.iter().find(|s| s.name == "place").expect("the place span");
    assert_eq!(attr(place, "request.id"), Some(request_id));

    // Every span of the trace is about this order and names its service.
    for span in &trace {
        assert_eq!(
            attr(span, "order.id").as_deref(),
            Some(id.as_str()),
            "order.id on {} {:?}",
            span.name,
            span.attributes
        );
        assert!(attr(span, "service").is_some(), "service on {} {:?}", span.name, span.attributes);
    }
    // And every span about this order outside the API's GET requests is in this trace.
    for span in spans.iter().filter(|s| attr(s, "order.id").as_deref() == Some(id.as_str())) {
        let polled = spans.iter().any(|r| r.trace_id == span.trace_id && r.name == "GET /orders/{id}");
        assert!(polled || span.trace_id == root.trace_id, "{} is in another trace", span.name);
    }

    // All five services took part, each consuming at least one message of this order.
    let consuming: BTreeSet<String> =
        trace.iter().filter(|s| s.kind == KIND_CONSUMER).filter_map(|s| attr(s, "service")).collect();
    let expected: BTreeSet<String> = service::ALL.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(consuming, expected);

    // Messaging spans follow the semantic conventions, and each consumer span is a child of the
    // producer span that sent its message; each producer span is a child of the work that
    // produced the message, in the publishing service.
    for span in trace.iter().filter(|s| s.kind == KIND_PRODUCER || s.kind == KIND_CONSUMER) {
        assert_eq!(attr(span, "messaging.system").as_deref(), Some("kafka"), "{span:?}");
        for key in [
            "messaging.destination.name",
            "messaging.destination.partition.id",
            "messaging.kafka.offset",
            "messaging.operation.type",
            "messaging.message.id",
        ] {
            assert!(attr(span, key).is_some(), "{key} on {} {:?}", span.name, span.attributes);
        }
        let parent = by_id[span.parent_span_id.as_str()];
        if span.kind == KIND_CONSUMER {
            assert!(attr(span, "messaging.consumer.group.name").is_some());
            assert_eq!(attr(span, "messaging.operation.type").as_deref(), Some("process"));
            assert_eq!(parent.kind, KIND_PRODUCER, "{} under {}", span.name, parent.name);
            assert_eq!(attr(parent, "messaging.message.id"), attr(span, "messaging.message.id"));
            assert_eq!(
                attr(parent, "messaging.destination.partition.id"),
                attr(span, "messaging.destination.partition.id")
            );
            assert_eq!(attr(parent, "messaging.kafka.offset"), attr(span, "messaging.kafka.offset"));
        } else {
            assert_eq!(attr(span, "messaging.operation.type").as_deref(), Some("send"));
            assert_eq!(attr(parent, "service"), attr(span, "service"), "{} under {}", span.name, parent.name);
            if attr(span, "cloudevents.event_type").as_deref() == Some("OrderPlaced") {
                assert_eq!(parent.name, "place");
            } else {
                assert_eq!(parent.kind, KIND_CONSUMER, "{} under {}", span.name, parent.name);
            }
        }
    }
    // The saga's hops, in causal order.
    let sent: BTreeSet<String> =
        trace.iter().filter(|s| s.kind == KIND_PRODUCER).filter_map(|s| attr(s, "cloudevents.event_type")).collect();
    for event in [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentCaptured",
        "ShipmentScheduled",
        "OrderCompleted",
        "NotificationSent",
    ] {
        assert!(sent.contains(event), "{event} sent in the trace: {sent:?}");
    }

    // A caller's trace context is a link from a new trace, never the parent: the caller cannot
    // choose our trace id.
    assert!(linked_root.parent_span_id.is_empty(), "the API span starts its own trace");
    assert_ne!(linked_root.trace_id, CALLER_TRACE);
    let links: Vec<(&str, &str, &str)> =
        linked_root.links.iter().map(|l| (l.trace_id.as_str(), l.span_id.as_str(), l.trace_state.as_str())).collect();
    assert_eq!(links, [(CALLER_TRACE, CALLER_SPAN, "caller=1")]);

    println!("span tree of order {id} (trace {}):\n{}", root.trace_id, render_tree(&trace, root));
    Ok(())
}

/// The spans of the trace started by the order's `POST /orders`, once its last hop is in:
/// the confirmation's NotificationSent consumed by order-svc.
fn whole_trace(spans: &[ExportedSpan], id: &str) -> Option<Vec<ExportedSpan>> {
    let root = spans.iter().find(|s| s.name == "POST /orders" && attr(s, "order.id").as_deref() == Some(id))?;
    let trace: Vec<ExportedSpan> = spans.iter().filter(|s| s.trace_id == root.trace_id).cloned().collect();
    // The last hop is order-svc recording the NotificationSent that confirms the order.
    let last_hop = trace
        .iter()
        .filter(|s| s.kind == KIND_CONSUMER && attr(s, "cloudevents.event_type").as_deref() == Some("NotificationSent"))
        .filter(|s| attr(s, "service").as_deref() == Some("order-svc"))
        .count();
    (last_hop == 1).then_some(trace)
}

/// The trace as an indented tree, children in start order; store and outbox spans (internal)
/// are counted on their parent's line rather than listed.
fn render_tree(trace: &[ExportedSpan], root: &ExportedSpan) -> String {
    let mut children: BTreeMap<&str, Vec<&ExportedSpan>> = BTreeMap::new();
    for span in trace {
        children.entry(span.parent_span_id.as_str()).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_time_unix_nano);
    }
    fn subtree_size(children: &BTreeMap<&str, Vec<&ExportedSpan>>, span: &ExportedSpan) -> usize {
        1 + children.get(span.span_id.as_str()).map_or(0, |l| l.iter().map(|c| subtree_size(children, c)).sum())
    }
    let mut out = String::new();
    let mut stack = vec![(root, 0usize)];
    while let Some((span, depth)) = stack.pop() {
        let kind = span.kind.trim_start_matches("SPAN_KIND_").to_lowercase();
        let event = attr(span, "cloudevents.event_type").map(|t| format!(" {t}")).unwrap_or_default();
        let list = children.get(span.span_id.as_str()).cloned().unwrap_or_default();
        let (shown, hidden): (Vec<&ExportedSpan>, Vec<&ExportedSpan>) =
            list.into_iter().partition(|c| c.kind != "SPAN_KIND_INTERNAL" || c.name == "place");
        let hidden: usize = hidden.iter().map(|c| subtree_size(&children, c)).sum();
        let hidden = if hidden > 0 { format!(" (+{hidden} store/outbox spans)") } else { String::new() };
        let service = attr(span, "service").unwrap_or_default();
        out.push_str(&format!("{}{} [{kind}] {service}{event}{hidden}\n", "  ".repeat(depth), span.name));
        for child in shown.iter().rev() {
            stack.push((child, depth + 1));
        }
    }
    out
}
