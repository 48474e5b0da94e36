//! What the fault suite's reader (and `sagactl`) assume of a broker: the end offset it reports
//! for a partition (ListOffsets, latest) lies past every record it acknowledged, so that
//! reading up to that end returns every acknowledged record, including each record of a batch
//! that carried several.
//!
//! Runs against our mock-broker process, or an external broker with
//! `SAGA_TEST_KAFKA_BROKERS=host:port`: Nisshi 0.6.0 fails it (see the README).

use crate::common;

use std::collections::BTreeMap;

use common::kafka;
use shared::broker::KafkaConfig;
use shared::topics::Topics;

const RECORDS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_offset_covers_every_record_of_an_acknowledged_batch() -> anyhow::Result<()> {
    // Arrange: a fresh topic with one partition.
    let prefix = format!("bo{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (_broker, bootstrap, create_topics) = common::topology::start_broker(1, &prefix).await?;
    let topic = Topics::with_prefix(&prefix).orders;
    if create_topics == "true" {
        KafkaConfig { partitions: 1, ..KafkaConfig::new(bootstrap.as_str()) }
            .create_topics(std::slice::from_ref(&topic))
            .await?;
    }

    // Act: send the records at once, so that the producer batches them, and read the topic
    // back up to the end the broker reports.
    let producer = kafka::producer(&bootstrap)?;
    let keys: Vec<String> = (0..RECORDS).map(|i| format!("key-{i}")).collect();
    let sends = keys.iter().map(|key| kafka::produce(&producer, &topic, key, &[], b"payload"));
    let acknowledged: BTreeMap<i64, String> = futures::future::try_join_all(sends)
        .await?
        .into_iter()
        .map(|(_, offset)| offset)
        .zip(keys.iter().cloned())
        .collect();
    let end = kafka::ends(&bootstrap, &[topic.as_str()]).await?[&(topic.clone(), 0)];
    let read: BTreeMap<i64, String> = kafka::read(&bootstrap, &[topic.as_str()], None)
        .await?
        .into_iter()
        .map(|r| (r.offset, String::from_utf8_lossy(&r.key.unwrap_or_default()).into_owned()))
        .collect();

    // Assert
    let last = acknowledged.keys().max().copied().unwrap_or(-1);
    anyhow::ensure!(
        end > last,
        "the broker acknowledged offsets {:?} but reports the partition's end at {end}",
        acknowledged.keys().collect::<Vec<_>>()
    );
    anyhow::ensure!(read == acknowledged, "acknowledged {acknowledged:?}, read back {read:?}");
    Ok(())
}
