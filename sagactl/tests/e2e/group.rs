//! `sagactl group reset-offsets`: the plan, the commit, and the refusal while a group has
//! members.

use std::collections::HashMap;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use shared::broker::KafkaConfig;
use shared::testing::eventually;
use shared::topics::service;

use crate::harness::{Options, Partial, System, WAIT};

/// `(partition, committed)` of a group on one topic, as `lag` reads it.
async fn committed(system: &System, group: &str, topic: &str) -> anyhow::Result<HashMap<i64, Value>> {
    let lag = system.cli(&["lag", "--group", group, "--topic", topic, "-o", "json"]).await?.json()?;
    Ok(lag["groups"][0]["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["partition"].as_i64().unwrap_or(-1), r["committed"].clone()))
        .collect())
}

fn totals(report: &Value) -> (i64, i64) {
    (report["replays"].as_i64().unwrap_or(-1), report["skips"].as_i64().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_offsets_plans_commits_an_empty_group_and_refuses_a_group_with_members() -> anyhow::Result<()> {
    let system = System::start(Options::default()).await?;
    let first = system.api.place("cust-rich", &[("sku-tee", 1)], "NL").await?;
    system.api.terminal(&first).await?;
    // Kafka timestamps are milliseconds: the first order's messages are before this boundary,
    // the next two orders' after it.
    let boundary = chrono::Utc::now().timestamp_millis() + 2;
    eventually(WAIT, "the clock to pass the boundary", || async {
        (chrono::Utc::now().timestamp_millis() > boundary).then_some(())
    })
    .await?;
    let between = chrono::DateTime::from_timestamp_millis(boundary).map(|t| t.to_rfc3339()).unwrap_or_default();
    for country in ["DE", "FR"] {
        let id = system.api.place("cust-rich", &[("sku-mug", 1)], country).await?;
        system.api.terminal(&id).await?;
    }
    // Three completed orders: six messages on orders.events, over two partitions.
    let ends: Vec<i64> = eventually(WAIT, "six messages on orders.events", || async {
        let lines = system.cli(&["replay", "--topic", "orders.events"]).await.ok()?.lines().ok()?;
        (lines.len() == 6)
            .then(|| (0..2).map(|p| lines.iter().filter(|m| m["partition"] == p).count() as i64).collect::<Vec<_>>())
    })
    .await?;

    // A group outside the saga (it assigns partitions itself, so it has no members) that read
    // everything.
    let group = format!("replayer-{}", uuid::Uuid::new_v4().simple());
    let outsider: BaseConsumer = KafkaConfig::new(&system.brokers).consumer_config(&group).create()?;
    let mut at_end = TopicPartitionList::new();
    for (partition, end) in ends.iter().enumerate() {
        at_end.add_partition_offset("orders.events", partition as i32, Offset::Offset(*end))?;
    }
    outsider.commit(&at_end, CommitMode::Sync)?;
    drop(outsider);

    // A dry run: the plan, and nothing committed.
    let plan =
        system.cli(&["group", "reset-offsets", "--group", &group, "--to-offset", "0", "-o", "json"]).await?.json()?;
    assert_eq!(plan["executed"], false);
    assert_eq!(totals(&plan), (6, 0), "{plan:#}");
    for row in plan["partitions"].as_array().into_iter().flatten() {
        let end = ends[row["partition"].as_u64().unwrap_or(9) as usize];
        assert_eq!(
            (row["topic"].as_str(), row["committed"].as_i64(), row["new"].as_i64()),
            (Some("orders.events"), Some(end), Some(0))
        );
        assert_eq!(row["replays"], end);
    }
    let table = system.cli(&["group", "reset-offsets", "--group", &group, "--to-offset", "0"]).await?;
    assert!(table.stdout.contains("dry run: nothing committed (6 messages replayed, 0 skipped"), "{}", table.stdout);
    let unchanged = committed(&system, &group, "orders.events").await?;
    assert_eq!(unchanged.get(&0).and_then(Value::as_i64), Some(ends[0]), "{unchanged:?}");

    // Executed: back to the start, so all six are replayed.
    let done = system
        .cli(&["group", "reset-offsets", "--group", &group, "--to-offset", "0", "--execute", "-o", "json"])
        .await?
        .json()?;
    assert_eq!(done["executed"], true);
    let now = committed(&system, &group, "orders.events").await?;
    assert!(now.values().all(|c| c == 0), "{now:?}");

    // To a time the broker cannot look up (the embedded broker never can): the partitions are
    // scanned, and the first order's two messages are skipped.
    let by_time = system
        .cli(&["group", "reset-offsets", "--group", &group, "--to-time", &between, "--execute", "-o", "json"])
        .await?
        .json()?;
    assert_eq!(totals(&by_time), (0, 2), "{by_time:#}");
    let after_first: Vec<Value> =
        system.cli(&["replay", "--topic", "orders.events", "--from-time", &between]).await?.lines()?;
    let now = committed(&system, &group, "orders.events").await?;
    for (partition, end) in ends.iter().enumerate() {
        let left = after_first.iter().filter(|m| m["partition"] == partition).count() as i64;
        assert_eq!(now.get(&(partition as i64)).and_then(Value::as_i64), Some(end - left), "partition {partition}");
    }
    // A time after the last message: every partition to its end.
    let to_now = system
        .cli(&["group", "reset-offsets", "--group", &group, "--to-time", "now", "--execute", "-o", "json"])
        .await?
        .json()?;
    assert_eq!(totals(&to_now), (0, 4), "{to_now:#}");

    // A service's name is its group, on the topics it subscribes to; a dry run plans it.
    let service_plan = system
        .cli(&["group", "reset-offsets", "--group", service::INVENTORY, "--to-time", "1h", "-o", "json"])
        .await?
        .json()?;
    assert_eq!(service_plan["group"], "inventory-svc");
    let topics: Vec<&str> =
        service_plan["partitions"].as_array().into_iter().flatten().filter_map(|r| r["topic"].as_str()).collect();
    assert_eq!(topics.len(), 8, "four subscribed topics, two partitions each: {topics:?}");
    assert!(topics.contains(&"orders.events") && topics.contains(&"inventory.commands"));

    // Executing it while inventory-svc runs is refused, and changes nothing.
    let before = committed(&system, service::INVENTORY, "orders.events").await?;
    let refused =
        system.cli(&["group", "reset-offsets", "--group", service::INVENTORY, "--to-offset", "0", "--execute"]).await?;
    refused.assert_clear_failure("refusing to reset group inventory-svc");
    assert!(refused.stderr.contains("Nothing was committed"), "{}", refused.stderr);
    assert_eq!(committed(&system, service::INVENTORY, "orders.events").await?, before);
    system.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_services_group_is_reset_under_the_topic_prefix_and_a_running_ones_is_not() -> anyhow::Result<()> {
    let system = Partial::without(service::SHIPPING).await?;
    let id = system.api.place("cust-rich", &[("sku-mug", 1)], "DE").await?;
    system.api.status(&id, "paid").await?;
    // shipping-svc is down: OrderPlaced and PaymentCaptured wait for it.
    let lag = system.cli(&["lag", "--group", service::SHIPPING, "-o", "json"]).await?.json()?;
    assert_eq!(lag["groups"][0]["total_lag"], 2, "{lag:#}");

    // Skip what it missed: it starts after them.
    let done = system
        .cli(&["group", "reset-offsets", "--group", service::SHIPPING, "--to-time", "now", "--execute", "-o", "json"])
        .await?
        .json()?;
    assert_eq!(done["group"], format!("{}{}", system.prefix, service::SHIPPING), "the prefix is applied");
    assert_eq!(totals(&done), (0, 2), "{done:#}");
    let lag = system.cli(&["lag", "--group", service::SHIPPING, "-o", "json"]).await?.json()?;
    assert_eq!(lag["groups"][0]["total_lag"], 0, "{lag:#}");

    let refused =
        system.cli(&["group", "reset-offsets", "--group", service::PAYMENT, "--to-offset", "0", "--execute"]).await?;
    refused.assert_clear_failure(&format!("refusing to reset group {}{}", system.prefix, service::PAYMENT));
    system.stop().await
}
