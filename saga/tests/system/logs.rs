//! Log lines are JSON, and every line written while handling an order carries `trace_id`,
//! `span_id` and `order.id`, so logs join to the order and to its trace; every line written
//! while serving a request carries its `request.id`.
//!
//! Logging is process-wide (one global subscriber), so its test runs in a
//! process of its own; its log lines go to a buffer the test reads.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Captured, Options, TestSystem};
use serde_json::Value;
use shared::db::Backend;
use shared::telemetry::{self, BoxMakeWriter, LogFormat};
use shared::testing::eventually;
use shared::topics::service;

/// The request id the order is placed with.
const REQUEST_ID: &str = "logs-test-0001";

own_process_test!(every_line_written_while_handling_an_order_has_its_trace_span_and_order_ids);
async fn every_line_written_while_handling_an_order_has_its_trace_span_and_order_ids() -> anyhow::Result<()> {
    // Arrange: JSON logs into a buffer, with the per-message debug lines on.
    let captured = Captured::default();
    let writer = captured.clone();
    let mut options = telemetry::Options::new("saga", None, LogFormat::Json);
    options.log_writer = BoxMakeWriter::new(move || writer.clone());
    options.log_filter = Some("info,shared=debug,notification_svc=debug,sqlx=warn,rdkafka=warn".to_owned());
    let _guard = telemetry::init_with(options)?;
    let system = TestSystem::start(Backend::Sqlite, Options::default()).await?;

    // Act: an order that takes every step, undone at the last (a refund and a release), placed
    // with the caller's request id; and a request with an id that is not a plain token.
    let placed = system
        .http
        .post(system.url("/orders"))
        .header("x-request-id", REQUEST_ID)
        .json(&common::order_body("cust-rich", &[("sku-mug", 1)], "JP"))
        .send()
        .await?;
    assert_eq!(placed.status(), 202);
    assert_eq!(placed.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some(REQUEST_ID));
    let id = placed.json::<Value>().await?["id"].as_str().unwrap_or_default().to_owned();
    let replaced = system.http.get(system.url("/openapi.json")).header("x-request-id", "not a {token}").send().await?;
    let replaced_id = replaced.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(uuid::Uuid::parse_str(replaced_id).is_ok(), "a new id replaces it: {replaced_id:?}");
    let order = system.terminal(&id).await?;
    assert_eq!(order["reason"], "destination_not_served", "{order}");
    // Wait for the lines of every service's handling (the last hops land after the terminal
    // state is visible).
    let lines =
        eventually(Duration::from_secs(30), "a processed-message line from every service and the notice", || async {
            let lines: Vec<Value> = captured.lines().iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
            let services: BTreeSet<&str> = lines
                .iter()
                .filter(|l| l["order.id"] == id.as_str() && l["message"] == "message processed")
                .filter_map(|l| l["service"].as_str())
                .collect();
            let notified = lines.iter().any(|l| {
                l["order.id"] == id.as_str() && l["message"].as_str().is_some_and(|m| m.contains("delivered"))
            });
            (services.len() == service::ALL.len() && notified).then_some(lines)
        })
        .await?;
    system.stop().await?;

    // Assert: every line is JSON.
    for line in captured.lines() {
        assert!(serde_json::from_str::<Value>(&line).is_ok(), "not JSON: {line}");
    }
    // Every line about this order has the three ids; outside the API's GET requests (each its
    // own trace), they share the trace that POST /orders started.
    let about_order: Vec<&Value> = lines.iter().filter(|l| l["order.id"] == id.as_str()).collect();
    assert!(about_order.len() >= 10, "lines about the order: {}", about_order.len());
    let post = about_order
        .iter()
        .find(|l| l["span"]["http.request.method"] == "POST")
        .unwrap_or_else(|| panic!("a line from POST /orders: {about_order:#?}"));
    let trace_id = post["trace_id"].as_str().unwrap_or_default();
    assert_eq!(trace_id.len(), 32, "{post}");
    // Every line written while serving POST /orders names the request.
    for line in about_order.iter().filter(|l| l["span"]["http.request.method"] == "POST") {
        assert_eq!(line["request.id"], REQUEST_ID, "request.id on {line}");
    }
    for line in &about_order {
        let span_id = line["span_id"].as_str().unwrap_or_default();
        assert_eq!(span_id.len(), 16, "span_id on {line}");
        assert!(line["service"].is_string(), "service on {line}");
        if line["span"]["http.request.method"] != "GET" {
            assert_eq!(line["trace_id"], trace_id, "trace_id on {line}");
        }
    }
    // Every line written inside a span of any order's handling (a message processed or sent,
    // a request served) has the ids too.
    for line in lines.iter().filter(|l| {
        matches!(l["span"]["name"].as_str(), Some("process" | "send" | "place"))
            || l["span"]["http.route"].as_str().is_some_and(|r| r.starts_with("/orders"))
    }) {
        assert!(line["trace_id"].is_string() && line["span_id"].is_string(), "ids on {line}");
        assert!(line["order.id"].is_string(), "order.id on {line}");
    }
    // The webhook notice, the refund and the release are among them, from their services.
    let says = |service: &str, message: &str| {
        about_order
            .iter()
            .any(|l| l["service"] == service && l["message"].as_str().is_some_and(|m| m.contains(message)))
    };
    assert!(says(service::NOTIFICATION, "delivered"), "a notification delivery line");
    for service in service::ALL {
        assert!(says(service, "message processed"), "{service} processed a message of the order");
    }
    Ok(())
}
