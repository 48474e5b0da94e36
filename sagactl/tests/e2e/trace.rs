//! `sagactl trace` (and `tail`) on completed, cancelled and stuck orders.

use serde_json::Value;
use shared::topics::service;

use crate::harness::{Options, Partial, Running, System, api_types, sorted, traced_types};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_finds_every_event_of_a_completed_and_a_cancelled_order_and_their_verdicts() -> anyhow::Result<()> {
    let system = System::start(Options::default()).await?;
    let tail = Running::start(
        &system.args(&["tail", "-o", "json", "--max-messages", "6", "--timeout", "30s"]),
        Some("tailing"),
    )
    .await?;

    // A completed order, followed live until it is settled.
    let completed = system.api.place("cust-rich", &[("sku-tee", 2)], "NL").await?;
    let follow =
        Running::start(&system.args(&["trace", &completed, "--follow", "--timeout", "30s", "-o", "json"]), None)
            .await?;
    let report = follow.finish().await?.json()?;
    assert_eq!(report["verdict"]["state"], "completed", "{report:#}");
    assert_eq!(report["verdict"]["settled"], true);
    assert_eq!(report["verdict"]["total_minor"], 3000);
    let order = system.api.terminal(&completed).await?;
    assert_eq!(sorted(traced_types(&report)), sorted(api_types(&order)), "the trace holds every event of the order");
    assert_eq!(
        traced_types(&report),
        [
            "OrderPlaced",
            "InventoryReserved",
            "PaymentCaptured",
            "ShipmentScheduled",
            "OrderCompleted",
            "NotificationSent"
        ]
    );
    for event in report["events"].as_array().into_iter().flatten() {
        assert!(event["topic"].as_str().is_some_and(|t| t.ends_with(".events")), "{event}");
        assert!(event["offset"].as_i64().is_some(), "{event}");
        assert!(event["message_id"].as_str().is_some(), "{event}");
    }

    // The tail saw the same six messages as they happened.
    let tailed = tail.finish().await?.lines()?;
    assert_eq!(tailed.len(), 6);
    assert!(tailed.iter().all(|m| m["key"] == completed.as_str()), "{tailed:?}");

    // A cancelled order: the payment is declined and the stock released.
    let cancelled = system.api.place("cust-poor", &[("sku-tee", 2)], "NL").await?;
    let report =
        Running::start(&system.args(&["trace", &cancelled, "--follow", "--timeout", "30s", "-o", "json"]), None)
            .await?
            .finish()
            .await?
            .json()?;
    assert_eq!(report["verdict"]["state"], "cancelled", "{report:#}");
    assert_eq!(report["verdict"]["reason"], "payment_declined");
    assert_eq!(report["verdict"]["settled"], true, "{report:#}");
    let types = traced_types(&report);
    for expected in [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentDeclined",
        "InventoryReleased",
        "OrderCancelled",
        "NotificationSent",
    ] {
        assert!(types.contains(&expected.to_owned()), "{expected} missing from {types:?}");
    }
    let declined = report["events"].as_array().into_iter().flatten().find(|e| e["event_type"] == "PaymentDeclined");
    assert_eq!(declined.map(|e| e["details"]["reason"].clone()), Some(Value::from("payment_declined")));
    assert_eq!(declined.map(|e| e["details"]["amount_minor"].clone()), Some(Value::from(3000)));
    // The API folds the last fact (the cancellation notice) a moment after the trace saw it on
    // Kafka: wait for the read model to have as many events, then compare them.
    let order = shared::testing::eventually(crate::harness::WAIT, "the API to show every traced event", || async {
        let order = system.api.get(&cancelled).await.ok()?;
        (api_types(&order).len() >= types.len()).then_some(order)
    })
    .await?;
    assert_eq!(sorted(types), sorted(api_types(&order)));

    // The table says it in words.
    let table = system.cli(&["trace", &cancelled]).await?;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("PaymentDeclined"), "{}", table.stdout);
    assert!(table.stdout.contains("verdict: cancelled (payment_declined)"), "{}", table.stdout);
    system.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_says_an_order_is_stuck_waiting_for_shipping_when_shipping_is_down() -> anyhow::Result<()> {
    let system = Partial::without(service::SHIPPING).await?;
    let id = system.api.place("cust-rich", &[("sku-mug", 1)], "DE").await?;
    system.api.status(&id, "paid").await?;

    let report = system.cli(&["trace", &id, "--stuck-after", "0s", "-o", "json"]).await?.json()?;
    assert_eq!(traced_types(&report), ["OrderPlaced", "InventoryReserved", "PaymentCaptured"]);
    let verdict = &report["verdict"];
    assert_eq!(verdict["state"], "stuck", "{verdict:#}");
    assert_eq!(verdict["status"], "paid");
    assert_eq!(verdict["waiting_for"][0]["from"], "shipping-svc");
    assert_eq!(verdict["waiting_for"][0]["events"], serde_json::json!(["ShipmentScheduled", "ShipmentFailed"]));

    // Nobody consumed what shipping-svc subscribes to: its lag is everything published there.
    let lag = system.cli(&["lag", "--group", service::SHIPPING, "-o", "json"]).await?.json()?;
    let group = &lag["groups"][0];
    assert_eq!(group["total_lag"], 2, "OrderPlaced and PaymentCaptured wait for shipping-svc: {group:#}");
    let rows = group["partitions"].as_array().cloned().unwrap_or_default();
    assert!(rows.iter().all(|r| r["committed"].is_null()), "shipping-svc never committed: {rows:?}");
    assert!(rows.iter().filter(|r| r["lag"].as_i64() > Some(0)).all(|r| r["time_lag_seconds"].as_f64().is_some()));
    system.stop().await
}

/// The element id the drawing gives each event: its index in the report's timeline.
fn drawn_arrows(page: &str, class: &str) -> Vec<(usize, usize)> {
    let marker = format!(r#"<path class="arrow {class}" data-from="ev-"#);
    page.match_indices(&marker)
        .filter_map(|(at, _)| {
            let rest = &page[at + marker.len()..];
            let (from, rest) = rest.split_once('"')?;
            let to = rest.strip_prefix(r#" data-to="ev-"#)?.split_once('"')?.0;
            Some((from.parse().ok()?, to.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_draws_the_saga_as_a_swimlane_page_with_every_event_and_causation_arrow() -> anyhow::Result<()> {
    let system = System::start(Options::default()).await?;
    // A shipment to Japan fails: the payment is refunded and the stock released.
    let id = system.api.place("cust-rich", &[("sku-mug", 1)], "JP").await?;
    let report = Running::start(&system.args(&["trace", &id, "--follow", "--timeout", "30s", "-o", "json"]), None)
        .await?
        .finish()
        .await?
        .json()?;
    assert_eq!(report["verdict"]["settled"], true, "{report:#}");
    let events: Vec<Value> = report["events"].as_array().cloned().unwrap_or_default();

    let page = system.cli(&["trace", &id, "--format", "html"]).await?;
    assert_eq!(page.code, 0, "{}", page.stderr);
    let page = page.stdout;
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    for lane in service::ALL {
        assert!(page.contains(&format!(r#"<g class="lane" data-service="{lane}">"#)), "lane {lane}");
    }
    // Every event of the order, in its publisher's lane, at its position.
    for (i, event) in events.iter().enumerate() {
        let position = format!("{}/{}/{}", event["topic"].as_str().unwrap_or(""), event["partition"], event["offset"]);
        let element = format!(
            r#"id="ev-{i}" data-type="{}" data-service="{}" data-position="{position}""#,
            event["event_type"].as_str().unwrap_or(""),
            event["service"].as_str().unwrap_or("")
        );
        assert!(page.contains(&element), "{element} missing");
    }
    // One arrow per event whose cause is in the trace, from the cause to it.
    let ids: Vec<Option<&str>> = events.iter().map(|e| e["message_id"].as_str()).collect();
    let mut expected: Vec<(usize, usize)> = events
        .iter()
        .enumerate()
        .filter_map(|(to, e)| {
            let cause = e["causation_id"].as_str()?;
            Some((ids.iter().position(|id| *id == Some(cause))?, to))
        })
        .collect();
    let mut drawn = drawn_arrows(&page, "causation");
    expected.sort_unstable();
    drawn.sort_unstable();
    assert_eq!(drawn, expected);
    assert!(drawn.len() >= events.len() - 1, "all but OrderPlaced have their cause here: {drawn:?}");
    // The compensations are marked, and the verdict is on top.
    let compensations: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e["event_type"].as_str(), Some("PaymentRefunded" | "InventoryReleased")))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(compensations.len(), 2);
    for i in compensations {
        assert!(page.contains(&format!(r#"<g class="event compensation" id="ev-{i}""#)), "ev-{i} marked");
    }
    let verdict = page.find(r#"<header class="verdict cancelled""#);
    assert!(verdict.is_some_and(|at| page.find("<svg").is_some_and(|svg| at < svg)), "the verdict comes first");
    assert!(page.contains("verdict: cancelled (destination_not_served)"));

    // The drawing alone, as SVG.
    let svg = system.cli(&["trace", &id, "--format", "svg"]).await?.stdout;
    assert!(svg.starts_with("<?xml") && svg.contains(r#"<g class="lane" data-service="shipping-svc">"#));
    assert_eq!(drawn_arrows(&svg, "causation").len(), expected.len());
    system.stop().await
}
