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
