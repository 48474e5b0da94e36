//! `sagactl lag` against what was produced and what the groups consumed.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use shared::broker::KafkaConfig;
use shared::testing::eventually;
use shared::topics::service;

use crate::harness::{Options, System, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_matches_what_was_produced_and_consumed() -> anyhow::Result<()> {
    let system = System::start(Options::default()).await?;
    let ids = [
        system.api.place("cust-rich", &[("sku-tee", 1)], "NL").await?,
        system.api.place("cust-rich", &[("sku-mug", 2)], "US").await?,
        system.api.place("cust-rich", &[("sku-tee", 1)], "DE").await?,
    ];
    for id in &ids {
        assert_eq!(system.api.terminal(id).await?["status"], "completed");
    }

    // Three completed orders produce two messages each on orders.events (placed, completed)
    // and one on each other topic; every service group consumes all of it.
    let produced: HashMap<&str, i64> = HashMap::from([
        ("orders.events", 6),
        ("inventory.events", 3),
        ("payments.events", 3),
        ("shipping.events", 3),
        ("notifications.events", 3),
        // No admin command was issued: the command topics the owners subscribe to are empty.
        ("inventory.commands", 0),
        ("payments.commands", 0),
        ("shipping.commands", 0),
    ]);
    let report = eventually(WAIT, "every group caught up", || async {
        let report = system.cli(&["lag", "-o", "json"]).await.ok()?.json().ok()?;
        let groups = report["groups"].as_array()?;
        (groups.len() == 5 && groups.iter().all(|g| g["total_lag"] == 0)).then_some(report)
    })
    .await?;
    for group in report["groups"].as_array().into_iter().flatten() {
        let name = group["group"].as_str().unwrap_or_default();
        let mut ends: HashMap<String, i64> = HashMap::new();
        for row in group["partitions"].as_array().into_iter().flatten() {
            let end = row["end"].as_i64().unwrap_or(-1);
            *ends.entry(row["topic"].as_str().unwrap_or_default().to_owned()).or_default() += end;
            if end > 0 {
                assert_eq!(row["committed"].as_i64(), Some(end), "{name} committed what it consumed: {row}");
            }
            assert_eq!(row["lag"], 0);
            assert_eq!(row["time_lag_seconds"], 0.0);
        }
        let subscribed = sagactl::saga::subscriptions(name, &shared::topics::Topics::default()).unwrap_or_default();
        assert_eq!(ends.len(), subscribed.len(), "{name}: {ends:?}");
        for (topic, end) in &ends {
            assert_eq!(Some(end), produced.get(topic.as_str()), "{name} on {topic}");
        }
    }

    // A group of our own that consumed one message per partition of orders.events.
    let kafka = KafkaConfig::new(&system.brokers);
    let probe: BaseConsumer = kafka.consumer_config("lag-probe").create()?;
    let mut commits = TopicPartitionList::new();
    let ends: Vec<(i32, i64)> = (0..2)
        .map(|p| probe.fetch_watermarks("orders.events", p, Duration::from_secs(5)).map(|(_, high)| (p, high)))
        .collect::<Result<_, _>>()?;
    for (partition, end) in &ends {
        if *end > 0 {
            commits.add_partition_offset("orders.events", *partition, Offset::Offset(1))?;
        }
    }
    probe.commit(&commits, CommitMode::Sync)?;
    let lag = system.cli(&["lag", "--group", "lag-probe", "--topic", "orders.events", "-o", "json"]).await?.json()?;
    let group = &lag["groups"][0];
    let expected: i64 = ends.iter().map(|(_, end)| if *end > 0 { end - 1 } else { 0 }).sum();
    assert_eq!(group["total_lag"], expected, "{group:#}");
    for row in group["partitions"].as_array().into_iter().flatten() {
        let end = ends.iter().find(|(p, _)| Some(i64::from(*p)) == row["partition"].as_i64()).map(|(_, e)| *e);
        assert_eq!(row["end"].as_i64(), end);
        if end > Some(0) {
            assert_eq!(row["committed"], 1);
            assert_eq!(row["lag"].as_i64(), end.map(|e| e - 1));
            assert!(row["time_lag_seconds"].as_f64().is_some_and(|t| t >= 0.0), "{row}");
            assert!(row["oldest_unconsumed_at"].is_string() || row["lag"] == 0, "{row}");
        }
    }
    // The service groups were left alone: still caught up, still five.
    let after = system.cli(&["lag", "-o", "json"]).await?.json()?;
    let groups: Vec<&Value> = after["groups"].as_array().into_iter().flatten().collect();
    assert_eq!(groups.len(), service::ALL.len());
    assert!(groups.iter().all(|g| g["total_lag"] == 0));
    system.stop().await
}
