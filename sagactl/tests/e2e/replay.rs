//! `sagactl replay` by offset, by time and by key, to stdout and into another topic.

use serde_json::Value;
use shared::testing::eventually;

use crate::harness::{Options, System, WAIT};

fn header<'a>(message: &'a Value, name: &str) -> Option<&'a str> {
    message["headers"].as_array()?.iter().rev().find(|h| h[0] == name).and_then(|h| h[1].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_a_topic_by_offset_by_time_and_by_key_and_republishes_with_provenance() -> anyhow::Result<()> {
    let system = System::start(Options::default()).await?;
    let first = system.api.place("cust-rich", &[("sku-tee", 1)], "NL").await?;
    system.api.terminal(&first).await?;
    // A millisecond boundary (Kafka timestamps are milliseconds): the first order's OrderPlaced
    // was published before it, everything from here on after it.
    let boundary = chrono::Utc::now().timestamp_millis() + 2;
    eventually(WAIT, "the clock to pass the boundary", || async {
        (chrono::Utc::now().timestamp_millis() > boundary).then_some(())
    })
    .await?;
    let between = chrono::DateTime::from_timestamp_millis(boundary).map(|t| t.to_rfc3339()).unwrap_or_default();
    let second = system.api.place("cust-rich", &[("sku-mug", 1)], "FR").await?;
    system.api.terminal(&second).await?;

    // By key: the order's own messages on orders.events, once its OrderCompleted is out.
    let by_key = eventually(WAIT, "the first order's two messages", || async {
        let lines = system.cli(&["replay", "--topic", "orders.events", "--key", &first]).await.ok()?.lines().ok()?;
        (lines.len() == 2).then_some(lines)
    })
    .await?;
    assert_eq!(by_key[0]["type"], "OrderPlaced");
    assert_eq!(by_key[1]["type"], "OrderCompleted");
    assert!(by_key.iter().all(|m| m["key"] == first.as_str() && m["topic"] == "orders.events"));

    // By time, with a type filter.
    let after = system
        .cli(&["replay", "--topic", "orders.events", "--type", "OrderPlaced", "--from-time", &between])
        .await?
        .lines()?;
    let keys: Vec<&str> = after.iter().filter_map(|m| m["key"].as_str()).collect();
    assert_eq!(keys, [second.as_str()]);
    let before = system
        .cli(&["replay", "--topic", "orders.events", "--type", "OrderPlaced", "--to-time", &between])
        .await?
        .lines()?;
    let keys: Vec<&str> = before.iter().filter_map(|m| m["key"].as_str()).collect();
    assert_eq!(keys, [first.as_str()]);

    // By offset: exactly the one message at that position.
    let placed = &by_key[0];
    let (partition, offset) = (placed["partition"].to_string(), placed["offset"].to_string());
    let at = system
        .cli(&[
            "replay",
            "--topic",
            "orders.events",
            "--partition",
            &partition,
            "--from-offset",
            &offset,
            "--to-offset",
            &offset,
        ])
        .await?
        .lines()?;
    assert_eq!(at.len(), 1);
    assert_eq!(at[0]["id"], placed["id"]);
    assert_eq!(at[0]["payload"]["order_id"], first.as_str());
    let tail_of_partition = system
        .cli(&["replay", "--topic", "orders.events", "--partition", &partition, "--from-offset", &offset])
        .await?
        .lines()?;
    assert!(tail_of_partition.iter().all(|m| m["offset"].as_i64() >= placed["offset"].as_i64()));
    assert!(tail_of_partition.len() >= 2);

    // Into another topic: the same messages, original headers kept, provenance added.
    let summary = system
        .cli(&["replay", "--topic", "orders.events", "--key", &first, "--into-topic", "debug.orders", "-o", "json"])
        .await?
        .json()?;
    assert_eq!(summary["published"], 2);
    // debug.orders did not exist: created for orders.events' two partitions, or, where the broker
    // takes no CreateTopics (the embedded broker), by the broker itself on the first publish.
    let created = &summary["created"];
    assert_eq!(created["requested_partitions"], 2, "{summary:#}");
    match created["by"].as_str() {
        Some("sagactl") => assert_eq!(created["partitions"], 2, "{summary:#}"),
        Some("broker") => assert!(created["create_topics_error"].is_string(), "{summary:#}"),
        other => panic!("created by {other:?}: {summary:#}"),
    }
    let partitions = created["partitions"].as_i64().unwrap_or(0);
    let lag = system.cli(&["lag", "--group", "nobody", "--topic", "debug.orders", "-o", "json"]).await?.json()?;
    assert_eq!(lag["groups"][0]["partitions"].as_array().map(|p| p.len() as i64), Some(partitions), "{lag:#}");
    let copies = system.cli(&["replay", "--topic", "debug.orders"]).await?.lines()?;
    assert_eq!(copies.len(), 2);
    for (copy, original) in copies.iter().zip(&by_key) {
        assert_eq!(copy["id"], original["id"]);
        assert_eq!(copy["key"], original["key"]);
        assert_eq!(copy["payload"], original["payload"]);
        assert_eq!(header(copy, "traceparent"), header(original, "traceparent"));
        assert_eq!(header(copy, "ce_correlationid"), header(original, "ce_correlationid"));
        assert_eq!(header(copy, "replay_original_topic"), Some("orders.events"));
        assert_eq!(header(copy, "replay_original_offset"), Some(original["offset"].to_string().as_str()));
        assert_eq!(header(copy, "replay_original_partition"), Some(original["partition"].to_string().as_str()));
    }

    // Into a topic that exists: nothing to create.
    let again = system
        .cli(&["replay", "--topic", "orders.events", "--key", &first, "--into-topic", "debug.orders", "-o", "json"])
        .await?
        .json()?;
    assert_eq!(again["published"], 2);
    assert!(again.get("created").is_none(), "{again:#}");

    // Republishing into a live saga topic takes --force.
    let refused = system
        .cli(&["replay", "--topic", "orders.events", "--key", &first, "--into-topic", "inventory.events"])
        .await?;
    refused.assert_clear_failure("refusing to replay into the live saga topic inventory.events");
    system.stop().await
}
