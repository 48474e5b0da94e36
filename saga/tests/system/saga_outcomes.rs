//! Every saga outcome through the public API, on the embedded broker and both backends.

use crate::common;

use shared::both_backends;

use std::time::Duration;

use common::{Options, TestSystem, event_types, order_body};
use serde_json::json;
use shared::db::Backend;
use shared::testing::eventually;

both_backends!(a_rich_customer_ordering_in_stock_items_to_a_served_country_completes);
async fn a_rich_customer_ordering_in_stock_items_to_a_served_country_completes(backend: Backend) -> anyhow::Result<()> {
    let system = TestSystem::start(backend, Options::default()).await?;
    let id = system.place_ok("cust-rich", &[("sku-tee", 2), ("sku-mug", 1)], "NL").await?;
    let order = system.terminal(&id).await?;
    assert_eq!(order["status"], "completed");
    // The confirmation follows the completion: wait for it to be recorded in the timeline.
    let order = eventually(common::WAIT, "the confirmation recorded", || async {
        let (_, order) = system.get(&id).await.ok()?;
        event_types(&order).contains(&"NotificationSent".to_owned()).then_some(order)
    })
    .await?;
    assert_eq!(order["status"], "completed");
    assert_eq!(order["total_minor"], 2 * 1500 + 900);
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["reason"], serde_json::Value::Null);
    let types = event_types(&order);
    for expected in [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentCaptured",
        "ShipmentScheduled",
        "NotificationSent",
        "OrderCompleted",
    ] {
        assert!(types.contains(&expected.to_owned()), "{expected} missing from {types:?}");
    }
    assert_eq!(types.first().map(String::as_str), Some("OrderPlaced"));
    // order-svc completes the order when it accepts the shipment, and the customer is told so:
    // the confirmation always follows the completion.
    let position = |name: &str| types.iter().position(|t| t == name);
    let (scheduled, completed) = (position("ShipmentScheduled"), position("OrderCompleted"));
    assert!(scheduled < completed && completed < position("NotificationSent"), "{types:?}");
    assert_eq!(types.iter().filter(|t| *t == "OrderCompleted").count(), 1);
    // `ended_at` is the completion's time, in the order and in its list item (the projection
    // takes the time when it is written, within moments of the event's recorded time).
    let completed_at = &order["events"][completed.unwrap_or_default()]["at"];
    assert_eq!(&order["ended_at"], completed_at);
    let page: serde_json::Value =
        system.http.get(system.url("/orders?status=completed")).send().await?.error_for_status()?.json().await?;
    let listed = page["items"].as_array().and_then(|items| items.iter().find(|i| i["id"] == id.as_str()));
    let time = |v: &serde_json::Value| v.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let (listed_at, event_at) = (listed.and_then(|i| time(&i["ended_at"])), time(completed_at));
    assert!(
        matches!((listed_at, event_at), (Some(l), Some(e)) if (l - e).num_milliseconds().abs() < 1000),
        "list item ended_at {listed_at:?} against the completion at {event_at:?}: {page}"
    );
    system.stop().await
}

both_backends!(an_order_for_a_sold_out_item_is_cancelled_as_out_of_stock);
async fn an_order_for_a_sold_out_item_is_cancelled_as_out_of_stock(backend: Backend) -> anyhow::Result<()> {
    let system = TestSystem::start(backend, Options::default()).await?;
    let id = system.place_ok("cust-rich", &[("sku-tee", 1), ("sku-soldout", 1)], "NL").await?;
    let order = system.terminal(&id).await?;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["reason"], "out_of_stock");
    let types = event_types(&order);
    assert!(types.contains(&"InventoryRejected".to_owned()));
    assert!(!types.contains(&"PaymentCaptured".to_owned()));
    let unknown = system.place_ok("cust-rich", &[("sku-nope", 1)], "NL").await?;
    assert_eq!(system.terminal(&unknown).await?["reason"], "unknown_sku");
    system.stop().await
}

both_backends!(a_payment_the_customer_cannot_afford_is_declined_and_the_stock_released);
async fn a_payment_the_customer_cannot_afford_is_declined_and_the_stock_released(
    backend: Backend,
) -> anyhow::Result<()> {
    let system = TestSystem::start(backend, Options::default()).await?;
    // cust-poor has 1000 cents; two T-shirts cost 3000.
    let id = system.place_ok("cust-poor", &[("sku-tee", 2)], "NL").await?;
    let order = system.terminal(&id).await?;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["reason"], "payment_declined");
    let types = event_types(&order);
    assert!(types.contains(&"PaymentDeclined".to_owned()));
    assert!(types.contains(&"InventoryReleased".to_owned()), "stock released before the cancellation: {types:?}");
    let released = types.iter().position(|t| t == "InventoryReleased");
    let cancelled = types.iter().position(|t| t == "OrderCancelled");
    assert!(released < cancelled, "cancelled only after the compensation was observed: {types:?}");
    let unknown = system.place_ok("cust-nobody", &[("sku-tee", 1)], "NL").await?;
    assert_eq!(system.terminal(&unknown).await?["reason"], "unknown_customer");
    system.stop().await
}

both_backends!(a_shipment_to_an_unserved_country_fails_and_the_payment_is_refunded);
async fn a_shipment_to_an_unserved_country_fails_and_the_payment_is_refunded(backend: Backend) -> anyhow::Result<()> {
    let system = TestSystem::start(backend, Options::default()).await?;
    let id = system.place_ok("cust-rich", &[("sku-mug", 1)], "JP").await?;
    let order = system.terminal(&id).await?;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["reason"], "destination_not_served");
    let types = event_types(&order);
    for expected in ["PaymentCaptured", "ShipmentFailed", "PaymentRefunded", "InventoryReleased", "OrderCancelled"] {
        assert!(types.contains(&expected.to_owned()), "{expected} missing from {types:?}");
    }
    system.stop().await
}

both_backends!(a_saga_past_its_deadline_is_cancelled_and_a_late_capture_is_refunded);
async fn a_saga_past_its_deadline_is_cancelled_and_a_late_capture_is_refunded(backend: Backend) -> anyhow::Result<()> {
    // Payments take longer than the whole saga may: the capture lands after the cancellation.
    let options = Options {
        saga_deadline: Duration::from_secs(2),
        payment_latency: Duration::from_secs(4),
        ..Options::default()
    };
    let system = TestSystem::start(backend, options).await?;
    // Warm up: until every consumer joined its group, the first hops take longer than the
    // deadline. Once payment-svc recorded anything about a first order, the path from the API
    // to payment runs, and a reservation reaches payment well within the deadline.
    let warm_up = system.place_ok("cust-rich", &[("sku-mug", 1)], "NL").await?;
    let payment_db = system.db(shared::topics::service::PAYMENT);
    eventually(common::WAIT, "the payment path warmed up", || async {
        let mut tx = payment_db.begin_read().await.ok()?;
        let stream = format!("payment-{warm_up}");
        let events = shared::event_store::EventStore::default().read_stream(&mut tx, &stream, 0).await.ok()?;
        (!events.is_empty()).then_some(())
    })
    .await?;
    system.terminal(&warm_up).await?;

    let id = system.place_ok("cust-rich", &[("sku-tee", 1)], "NL").await?;
    let order = system.terminal(&id).await?;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["reason"], "deadline_exceeded");
    // The late capture is refunded and the reservation released, after the cancellation.
    let late = eventually(common::WAIT, "late compensations observed", || async {
        let (_, order) = system.get(&id).await.ok()?;
        let types = event_types(&order);
        (types.contains(&"PaymentRefunded".to_owned()) && types.contains(&"InventoryReleased".to_owned()))
            .then_some(order)
    })
    .await;
    let order = match late {
        Ok(order) => order,
        Err(err) => anyhow::bail!("{err}; timeline: {:?}", event_types(&system.get(&id).await?.1)),
    };
    let types = event_types(&order);
    let cancelled = types.iter().position(|t| t == "OrderCancelled").unwrap_or(usize::MAX);
    let captured = types.iter().position(|t| t == "PaymentCaptured").unwrap_or(0);
    assert!(captured > cancelled, "the capture completed after the cancellation: {types:?}");
    assert_eq!(order["status"], "cancelled", "late steps never change the outcome");
    system.stop().await
}

/// The customer messages the webhook received about one order: (kind, idempotency key), in
/// the order they arrived.
fn messages_about(system: &TestSystem, id: &str) -> Vec<(String, String)> {
    let deliveries = system.sink.deliveries.lock().map(|d| d.clone()).unwrap_or_default();
    deliveries.into_iter().filter(|d| d.order_id == id).map(|d| (d.kind, d.idempotency_key)).collect()
}

/// Warm up until shipping-svc decided a first order: every consumer joined its group, and the
/// path from the API to shipping runs within the deadline.
async fn warm_up_to_shipping(system: &TestSystem) -> anyhow::Result<()> {
    let warm_up = system.place_ok("cust-rich", &[("sku-mug", 1)], "NL").await?;
    let shipping_db = system.db(shared::topics::service::SHIPPING);
    eventually(common::WAIT, "the shipping path warmed up", || async {
        let mut tx = shipping_db.begin_read().await.ok()?;
        let stream = format!("shipment-{warm_up}");
        let events = shared::event_store::EventStore::default().read_stream(&mut tx, &stream, 0).await.ok()?;
        (!events.is_empty()).then_some(())
    })
    .await?;
    system.terminal(&warm_up).await?;
    Ok(())
}

both_backends!(a_shipment_scheduled_after_the_deadline_is_undone_and_the_customer_hears_only_the_cancellation);
async fn a_shipment_scheduled_after_the_deadline_is_undone_and_the_customer_hears_only_the_cancellation(
    backend: Backend,
) -> anyhow::Result<()> {
    // Shipping decides later than the whole saga may take: the deadline's OrderCancelled is
    // published while the shipment is being scheduled, and the ShipmentScheduled follows it.
    let options = Options {
        saga_deadline: Duration::from_secs(2),
        shipping_latency: Duration::from_secs(4),
        ..Options::default()
    };
    let system = TestSystem::start(backend, options).await?;
    warm_up_to_shipping(&system).await?;

    let id = system.place_ok("cust-rich", &[("sku-tee", 1)], "NL").await?;
    let order = system.terminal(&id).await?;

    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["reason"], "deadline_exceeded");
    // The late shipment is recorded and undone, the payment refunded and the stock released.
    let undone = ["ShipmentScheduled", "ShipmentCancelled", "PaymentRefunded", "InventoryReleased", "NotificationSent"];
    let order = eventually(common::WAIT, "the late shipment undone and the customer told", || async {
        let (_, order) = system.get(&id).await.ok()?;
        let types = event_types(&order);
        undone.iter().all(|t| types.contains(&(*t).to_owned())).then_some(order)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; the order's timeline: {:?}", event_types(&order)))?;
    let types = event_types(&order);
    let position = |name: &str| types.iter().position(|t| t == name);
    assert!(position("OrderCancelled") < position("ShipmentScheduled"), "the shipment came after: {types:?}");
    assert_eq!(order["status"], "cancelled", "a late shipment never completes a cancelled order");
    assert!(!types.contains(&"OrderCompleted".to_owned()), "{types:?}");
    // One customer message, and it matches the final status.
    let told = messages_about(&system, &id);
    assert_eq!(told.iter().map(|(kind, _)| kind.as_str()).collect::<Vec<_>>(), ["cancellation"], "{told:?}");
    system.stop().await
}

both_backends!(a_confirmation_slower_than_the_deadline_is_the_only_message_the_customer_gets);
async fn a_confirmation_slower_than_the_deadline_is_the_only_message_the_customer_gets(
    backend: Backend,
) -> anyhow::Result<()> {
    // The webhook takes longer to acknowledge a confirmation than the whole saga may take (but
    // less than the webhook client's 5 s request timeout). The
    // order was decided before the confirmation went out: the deadline no longer applies to it,
    // and the customer is not told a cancellation after the confirmation.
    let options = Options {
        saga_deadline: Duration::from_secs(3),
        sink_delay: |kind| if kind == "confirmation" { Duration::from_secs(4) } else { Duration::ZERO },
        ..Options::default()
    };
    let system = TestSystem::start(backend, options).await?;
    warm_up_to_shipping(&system).await?;

    let id = system.place_ok("cust-rich", &[("sku-tee", 1)], "NL").await?;
    let order = system.terminal(&id).await?;
    assert_eq!(order["status"], "completed", "{:?}", event_types(&order));

    // The confirmation is recorded once the webhook answered, past the deadline.
    let order = eventually(common::WAIT, "the confirmation recorded", || async {
        let (_, order) = system.get(&id).await.ok()?;
        event_types(&order).contains(&"NotificationSent".to_owned()).then_some(order)
    })
    .await?;
    let deadline = order["events"][0]["at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    assert!(deadline.is_some_and(|placed| chrono::Utc::now() > placed + chrono::TimeDelta::seconds(3)));
    let types = event_types(&order);
    assert_eq!(order["status"], "completed");
    assert!(!types.contains(&"OrderCancelled".to_owned()), "{types:?}");
    let told = messages_about(&system, &id);
    assert_eq!(told.iter().map(|(kind, _)| kind.as_str()).collect::<Vec<_>>(), ["confirmation"], "{told:?}");
    system.stop().await
}

both_backends!(ten_concurrent_orders_for_five_posters_complete_exactly_five);
async fn ten_concurrent_orders_for_five_posters_complete_exactly_five(backend: Backend) -> anyhow::Result<()> {
    let system = TestSystem::start(backend, Options::default()).await?;
    let placing = (0..10).map(|_| system.place_ok("cust-rich", &[("sku-poster", 1)], "DE"));
    let ids = futures::future::try_join_all(placing).await?;
    let mut completed = 0;
    let mut out_of_stock = 0;
    for id in &ids {
        let order = system.terminal(id).await?;
        match (order["status"].as_str(), order["reason"].as_str()) {
            (Some("completed"), _) => completed += 1,
            (Some("cancelled"), Some("out_of_stock")) => out_of_stock += 1,
            other => anyhow::bail!("unexpected outcome {other:?} for {id}"),
        }
    }
    assert_eq!((completed, out_of_stock), (5, 5));
    system.stop().await
}

both_backends!(an_idempotency_key_replays_the_same_order_and_rejects_a_different_body);
async fn an_idempotency_key_replays_the_same_order_and_rejects_a_different_body(
    backend: Backend,
) -> anyhow::Result<()> {
    let system = TestSystem::start(backend, Options::default()).await?;
    let body = order_body("cust-rich", &[("sku-tee", 1)], "FR");
    let post = |body: serde_json::Value| {
        system.http.post(system.url("/orders")).header("Idempotency-Key", "checkout-42").json(&body).send()
    };
    let first = post(body.clone()).await?;
    assert_eq!(first.status(), 202);
    let location = first.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let first: serde_json::Value = first.json().await?;
    let again = post(body.clone()).await?;
    assert_eq!(again.status(), 202);
    let again: serde_json::Value = again.json().await?;
    assert_eq!(again["id"], first["id"], "same key and body: same order");
    assert_eq!(location, Some(format!("/orders/{}", first["id"].as_str().unwrap_or_default())));
    let conflict = post(order_body("cust-rich", &[("sku-tee", 2)], "FR")).await?;
    assert_eq!(conflict.status(), 422);
    assert_eq!(conflict.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
    let (_, list) = {
        let r = system.http.get(system.url("/orders?customer_id=cust-rich")).send().await?;
        (r.status(), r.json::<serde_json::Value>().await?)
    };
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "one order, not two");
    system.stop().await
}

both_backends!(an_idempotency_key_is_remembered_for_its_retention_and_forgotten_after);
async fn an_idempotency_key_is_remembered_for_its_retention_and_forgotten_after(
    backend: Backend,
) -> anyhow::Result<()> {
    use shared::retention::{Pruner, RetentionOptions};
    let system = TestSystem::start(backend, Options::default()).await?;
    let body = order_body("cust-rich", &[("sku-tee", 1)], "FR");
    let post =
        |key: &'static str| system.http.post(system.url("/orders")).header("Idempotency-Key", key).json(&body).send();
    let id = |r: serde_json::Value| r["id"].as_str().unwrap_or_default().to_owned();
    let old = id(post("checkout-old").await?.error_for_status()?.json().await?);
    let recent = id(post("checkout-recent").await?.error_for_status()?.json().await?);
    // Arrange: the first key was used 20 days ago.
    let orders_db = system.db(shared::topics::service::ORDER);
    let long_ago = chrono::Utc::now() - chrono::TimeDelta::days(20);
    shared::on_db!(orders_db, |pool| {
        sqlx::query("UPDATE idempotency_keys SET created_at = $1 WHERE order_id = $2")
            .bind(long_ago)
            .bind(uuid::Uuid::parse_str(&old)?)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;

    // Act: prune with the default 14-day retention.
    let pruner = Pruner {
        service: shared::topics::service::ORDER,
        db: orders_db.clone(),
        tables: vec![(order_svc::storage::IDEMPOTENCY_KEYS, Duration::from_secs(14 * 24 * 3600))],
        options: RetentionOptions::default(),
    };
    let pruned = pruner.pass().await;

    // Assert: the old key is forgotten (a retry with it places a new order), the recent one is
    // still honoured (the same order, replayed).
    assert_eq!(pruned[0].1.as_ref().ok(), Some(&1), "{:?}", pruned[0].1);
    let replayed = post("checkout-recent").await?;
    assert_eq!(replayed.headers().get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    assert_eq!(id(replayed.json().await?), recent);
    let again = post("checkout-old").await?;
    assert_eq!(again.status(), 202);
    assert!(again.headers().get("idempotent-replayed").is_none(), "a forgotten key is a new request");
    assert_ne!(id(again.json().await?), old);
    system.stop().await
}

both_backends!(every_api_error_class_is_a_problem_document);
async fn every_api_error_class_is_a_problem_document(backend: Backend) -> anyhow::Result<()> {
    let system = TestSystem::start(backend, Options::default()).await?;
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (system.http.post(system.url("/orders")).header("content-type", "application/json").body("{oops"), 400),
        (system.http.post(system.url("/orders")).body(order_body("c", &[("s", 1)], "NL").to_string()), 415),
        (system.http.post(system.url("/orders")).json(&json!({"customer_id": "c", "items": [], "ship_to": {"country": "NL"}})), 422),
        (system.http.post(system.url("/orders")).json(&order_body("c", &[("s", 0)], "NL")), 422),
        (system.http.post(system.url("/orders")).json(&order_body("c", &[("s", 1001)], "NL")), 422),
        (system.http.post(system.url("/orders")).json(&order_body("c", &[("s", 1)], "NLD")), 422),
        (system.http.post(system.url("/orders")).json(&json!({"items": [{"sku": "s", "quantity": 1}], "ship_to": {"country": "NL"}})), 422),
        (
            system.http.post(system.url("/orders")).header("content-type", "application/json").body(format!(
                "{{\"customer_id\": \"{}\", \"items\": [{{\"sku\": \"s\", \"quantity\": 1}}], \"ship_to\": {{\"country\": \"NL\"}}}}",
                "x".repeat(70 * 1024)
            )),
            422,
        ),
        (system.http.get(system.url(&format!("/orders/{}", uuid::Uuid::now_v7()))), 404),
        (system.http.get(system.url("/orders?limit=5000")), 422),
    ];
    for (request, expected) in cases {
        let response = request.send().await?;
        let status = response.status().as_u16();
        assert!(response.headers().contains_key("x-request-id"), "every response names its request");
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body: serde_json::Value = response.json().await?;
        assert_eq!(status, expected, "{body}");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
        assert_eq!(body["status"], expected);
    }
    let openapi: serde_json::Value = system.http.get(system.url("/openapi.json")).send().await?.json().await?;
    assert!(openapi["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    // The ops endpoints are on their own port; the API's port keeps only /healthz.
    assert_eq!(system.http.get(system.url("/healthz")).send().await?.status(), 200);
    for path in ["/readyz", "/metrics", "/livez"] {
        assert_eq!(system.anonymous.get(system.url(path)).send().await?.status(), 404, "{path} on the API port");
    }
    for path in ["/livez", "/healthz", "/readyz", "/metrics"] {
        let url = format!("http://{}{path}", system.endpoints.order_ops);
        assert_eq!(system.anonymous.get(url).send().await?.status(), 200, "{path} on the ops port");
    }
    system.stop().await
}

both_backends!(concurrent_orders_sharing_transactions_keep_their_idempotency_keys);
async fn concurrent_orders_sharing_transactions_keep_their_idempotency_keys(backend: Backend) -> anyhow::Result<()> {
    // Concurrent POSTs share transactions (group commit). Twenty keys are each sent twice at
    // once with the same body, five more twice with different bodies: whichever group each
    // request lands in, a key makes one order.
    let system = TestSystem::start(backend, Options::default()).await?;
    let post = |key: String, quantity: u32| {
        let body = order_body("cust-rich", &[("sku-tee", quantity)], "FR");
        let request = system.http.post(system.url("/orders")).header("Idempotency-Key", key).json(&body);
        async move {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await?;
            anyhow::Ok((status, body["id"].as_str().map(str::to_owned)))
        }
    };
    let same = (0..20).flat_map(|k| [post(format!("same-{k}"), 1), post(format!("same-{k}"), 1)]);
    let differing = (0..5).flat_map(|k| [post(format!("diff-{k}"), 1), post(format!("diff-{k}"), 2)]);
    let answers = futures::future::try_join_all(same.chain(differing)).await?;

    for pair in answers[..40].chunks(2) {
        assert_eq!((pair[0].0, pair[1].0), (202, 202), "{pair:?}");
        assert_eq!(pair[0].1, pair[1].1, "same key and body: same order");
    }
    for pair in answers[40..].chunks(2) {
        let mut statuses = [pair[0].0, pair[1].0];
        statuses.sort_unstable();
        assert_eq!(statuses, [202, 422], "same key, another body: one order, one refusal: {pair:?}");
    }
    let listed = system.http.get(system.url("/orders?customer_id=cust-rich&limit=200")).send().await?;
    let listed: serde_json::Value = listed.json().await?;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(25), "one order per key");
    system.stop().await
}
