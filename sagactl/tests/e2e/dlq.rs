//! Dead letters end to end: a poison message injected into an input topic and a notification
//! the customer's webhook refused are dead-lettered; `dlq list` and `dlq show` explain them;
//! `dlq redrive` republishes them, and the refused notification goes through once the webhook
//! accepts it, completing its order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::Value;
use shared::broker::KafkaConfig;
use shared::testing::eventually;

use crate::harness::{Options, System, WAIT};

/// A webhook that refuses every notification (400) until told to accept.
async fn webhook(accept: Arc<AtomicBool>) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let accept = accept.clone();
            async move {
                if accept.load(Ordering::SeqCst) {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::BAD_REQUEST
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/hook"))
}

async fn dead_letters(system: &System, count: usize) -> anyhow::Result<Vec<Value>> {
    eventually(WAIT, &format!("{count} dead letters"), || async {
        let list = system.cli(&["dlq", "list", "-o", "json"]).await.ok()?.json().ok()?;
        let letters = list["dead_letters"].as_array()?.clone();
        (letters.len() == count).then_some(letters)
    })
    .await
}

fn header<'a>(message: &'a Value, name: &str) -> Option<&'a str> {
    message["headers"].as_array()?.iter().rev().find(|h| h[0] == name).and_then(|h| h[1].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_redriven_end_to_end() -> anyhow::Result<()> {
    let accept = Arc::new(AtomicBool::new(false));
    let system = System::start(Options { webhook: Some(webhook(accept.clone()).await?) }).await?;

    // A poison message on notifications.events (only order-svc reads it): valid headers, a
    // payload that is not JSON.
    let producer = KafkaConfig::new(&system.brokers).producer()?;
    let poison_id = uuid::Uuid::now_v7().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "ce_specversion", value: Some("1.0") })
        .insert(Header { key: "ce_id", value: Some(poison_id.as_str()) })
        .insert(Header { key: "ce_type", value: Some("NotificationSent") })
        .insert(Header { key: "ce_source", value: Some("notification-svc") })
        .insert(Header { key: "ce_time", value: Some("2026-01-01T00:00:00Z") })
        .insert(Header { key: "ce_subject", value: Some("poison-1") })
        .insert(Header { key: "content-type", value: Some("application/json") });
    let delivered = producer
        .send(
            FutureRecord::to("notifications.events").key("poison-1").payload("this is not json").headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;

    // An order whose confirmation the webhook refuses: notification-svc dead-letters its
    // OrderCompleted.
    let order = system.api.place("cust-rich", &[("sku-tee", 1)], "NL").await?;
    system.api.status(&order, "completed").await?;

    let letters = dead_letters(&system, 2).await?;
    let poison = letters.iter().find(|d| d["key"] == "poison-1").cloned().unwrap_or_default();
    assert_eq!(poison["service"], "order-svc");
    assert_eq!(poison["original_topic"], "notifications.events");
    assert_eq!(poison["original_partition"], delivered.partition);
    assert_eq!(poison["original_offset"], delivered.offset);
    assert!(poison["error"].as_str().is_some_and(|e| e.contains("not valid JSON")), "{poison:#}");
    let refused = letters.iter().find(|d| d["key"] == order.as_str()).cloned().unwrap_or_default();
    assert_eq!(refused["service"], "notification-svc");
    assert_eq!(refused["original_topic"], "orders.events");
    assert_eq!(refused["event_type"], "OrderCompleted");
    assert!(refused["attempts"].as_u64().is_some(), "{refused:#}");
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("400")), "{refused:#}");
    let (poison_dl, refused_dl) =
        (poison["id"].as_str().unwrap_or_default(), refused["id"].as_str().unwrap_or_default());

    // trace names the dead letter as the reason the completed order is not settled: its
    // customer was not told.
    let trace = system.cli(&["trace", &order, "-o", "json"]).await?.json()?;
    assert_eq!(trace["verdict"]["state"], "completed", "{trace:#}");
    assert_eq!(trace["verdict"]["settled"], false, "{trace:#}");
    assert_eq!(trace["verdict"]["waiting_for"][0]["from"], "notification-svc", "{trace:#}");
    assert!(
        trace["verdict"]["notes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n.as_str().is_some_and(|n| n.contains(refused_dl))),
        "{trace:#}"
    );

    // show: the whole message.
    let shown = system.cli(&["dlq", "show", poison_dl, "-o", "json"]).await?.json()?;
    assert_eq!(shown["payload_text"], "this is not json");
    assert_eq!(header(&shown, "ce_id"), Some(poison_id.as_str()));
    assert_eq!(header(&shown, "dlq_original_topic"), Some("notifications.events"));
    let table = system.cli(&["dlq", "show", refused_dl]).await?;
    assert!(table.stdout.contains("OrderCompleted") && table.stdout.contains("orders.events"), "{}", table.stdout);

    // A dry run publishes nothing.
    let dry = system.cli(&["dlq", "redrive", "--id", refused_dl, "--dry-run", "-o", "json"]).await?.json()?;
    assert_eq!(dry["redrives"][0]["result"], "would_redrive");
    let completions =
        |lines: Vec<Value>| -> Vec<Value> { lines.into_iter().filter(|m| m["type"] == "OrderCompleted").collect() };
    let decided = completions(system.cli(&["replay", "--topic", "orders.events", "--key", &order]).await?.lines()?);
    assert_eq!(decided.len(), 1);

    // The webhook is fixed; the redrive delivers the confirmation.
    accept.store(true, Ordering::SeqCst);
    let redriven = system.cli(&["dlq", "redrive", "--id", refused_dl, "-o", "json"]).await?.json()?;
    assert_eq!(redriven["redrives"][0]["result"], "redriven", "{redriven:#}");
    eventually(WAIT, "the confirmation recorded", || async {
        let order = system.api.get(&order).await.ok()?;
        crate::harness::api_types(&order).contains(&"NotificationSent".to_owned()).then_some(())
    })
    .await?;

    let decided = completions(system.cli(&["replay", "--topic", "orders.events", "--key", &order]).await?.lines()?);
    assert_eq!(decided.len(), 2, "the original and the redriven copy");
    let (original, copy) = (&decided[0], &decided[1]);
    assert_eq!(copy["id"], original["id"], "the copy keeps its message id");
    assert_eq!(copy["payload"], original["payload"]);
    assert_eq!(header(copy, "ce_correlationid"), header(original, "ce_correlationid"));
    assert_eq!(header(copy, "dlq_redriven_from"), Some(refused_dl));
    assert!(header(copy, "dlq_redriven_at").is_some());
    assert!(header(copy, "dlq_error").is_none(), "dead-letter headers are not carried over");
    let records = system.cli(&["replay", "--topic", "sagactl.redrives"]).await?.lines()?;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["key"], refused_dl);
    assert_eq!(records[0]["payload"]["original_topic"], "orders.events");

    // Redriving the poison: it fails again and is dead-lettered again, naming where it came from.
    let again = system.cli(&["dlq", "redrive", "--id", poison_dl, "-o", "json"]).await?.json()?;
    assert_eq!(again["redrives"][0]["result"], "redriven");
    let letters = dead_letters(&system, 3).await?;
    let second = letters.iter().find(|d| d["redriven_from"] == poison_dl).cloned().unwrap_or_default();
    assert_eq!(second["key"], "poison-1", "{letters:#?}");
    assert!(letters.iter().find(|d| d["id"] == refused_dl).is_some_and(|d| d["redriven"].is_object()));

    // --all redrives only what was not redriven yet; a second redrive of one is skipped.
    let all = system.cli(&["dlq", "redrive", "--all", "--dry-run", "-o", "json"]).await?.json()?;
    let results: Vec<(String, String)> = all["redrives"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["id"].as_str().unwrap_or_default().to_owned(), r["result"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert!(results.contains(&(second["id"].as_str().unwrap_or_default().to_owned(), "would_redrive".to_owned())));
    assert_eq!(results.iter().filter(|(_, r)| r == "skipped").count(), 2, "{results:?}");
    let twice = system.cli(&["dlq", "redrive", "--id", refused_dl, "-o", "json"]).await?.json()?;
    assert_eq!(twice["redrives"][0]["result"], "skipped");
    system.stop().await
}
