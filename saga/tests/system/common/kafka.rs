//! What the fault suite asks of the broker directly, with real rdkafka clients: a group's
//! committed offsets (and setting them), partition ends, reading a whole topic, and producing
//! raw records (poison).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shared::broker::KafkaConfig;

const TIMEOUT: Duration = Duration::from_secs(10);

/// (topic, partition) → offset.
pub type Offsets = HashMap<(String, i32), i64>;

/// A record as read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
    pub payload: Option<Vec<u8>>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A client of `group`, with the services' group protocol ([`super::topology::group_protocol`]):
/// it reads the group's committed offsets without joining it, or joins it to commit
/// ([`commit_all`]).
fn group_client(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    let mut kafka = KafkaConfig::new(bootstrap);
    kafka.properties.extend(super::topology::group_protocol().map(|p| ("group.protocol".to_owned(), p)));
    kafka.consumer_config(group).create().context("failed to create group client")
}

fn partitions(bootstrap: &str, topics: &[&str]) -> anyhow::Result<Vec<(String, i32)>> {
    let client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let mut out = Vec::new();
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), TIMEOUT).with_context(|| format!("metadata of {topic}"))?;
        for t in metadata.topics() {
            anyhow::ensure!(!t.partitions().is_empty(), "{topic} has no partitions");
            out.extend(t.partitions().iter().map(|p| ((*topic).to_owned(), p.id())));
        }
    }
    Ok(out)
}

/// `group`'s committed offsets on every partition of `topics` (0 where it never committed).
pub async fn committed(bootstrap: &str, group: &str, topics: &[&str]) -> anyhow::Result<Offsets> {
    let (bootstrap, group) = (bootstrap.to_owned(), group.to_owned());
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let client = group_client(&bootstrap, &group)?;
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions(&bootstrap, &topics)? {
            tpl.add_partition(&topic, partition);
        }
        let committed = client.committed_offsets(tpl, TIMEOUT).context("failed to fetch committed offsets")?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                ((e.topic().to_owned(), e.partition()), offset)
            })
            .collect())
    })
    .await?
}

/// Commit `offset` for every partition of `topics` in `group`, whose members must be gone: as
/// an operator's tool would, join the group as its only member, wait until it owns every
/// partition, commit, and leave. (The mock cluster, unlike Kafka, refuses commits from a
/// client that is not a member even when the group is empty.)
pub async fn commit_all(bootstrap: &str, group: &str, topics: &[&str], offset: i64) -> anyhow::Result<()> {
    let (bootstrap, group) = (bootstrap.to_owned(), group.to_owned());
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let all = partitions(&bootstrap, &topics)?;
        let member = group_client(&bootstrap, &group)?;
        member.subscribe(&topics)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            anyhow::ensure!(std::time::Instant::now() < deadline, "{group}: never got every partition assigned");
            let _ = member.poll(Duration::from_millis(100));
            let assigned = member.assignment()?;
            if all.iter().all(|(t, p)| assigned.find_partition(t, *p).is_some()) {
                break;
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &all {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(offset))?;
        }
        member.commit(&tpl, CommitMode::Sync).context("failed to commit offsets")?;
        member.unsubscribe();
        Ok(())
    })
    .await?
}

/// The end (high watermark) of every partition of `topics`.
pub async fn ends(bootstrap: &str, topics: &[&str]) -> anyhow::Result<Offsets> {
    let bootstrap = bootstrap.to_owned();
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create()?;
        let mut out = Offsets::new();
        for (topic, partition) in partitions(&bootstrap, &topics)? {
            let (_, high) = client.fetch_watermarks(&topic, partition, TIMEOUT)?;
            out.insert((topic, partition), high);
        }
        Ok(out)
    })
    .await?
}

/// Every record of `topics` below `until` (per partition; everything present when `None`).
pub async fn read(bootstrap: &str, topics: &[&str], until: Option<&Offsets>) -> anyhow::Result<Vec<Record>> {
    let ends = match until {
        Some(u) => u.clone(),
        None => ends(bootstrap, topics).await?,
    };
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("fault-suite-reader-{}", uuid::Uuid::new_v4().simple()))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "20")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        let mut pending: HashMap<(String, i32), i64> = HashMap::new();
        for ((topic, partition), end) in &ends {
            if *end > 0 {
                tpl.add_partition_offset(topic, *partition, Offset::Beginning)?;
                pending.insert((topic.clone(), *partition), *end);
            }
        }
        let mut records = Vec::new();
        if pending.is_empty() {
            return Ok(records);
        }
        consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !pending.is_empty() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "reading topics timed out; still pending {pending:?}"
            );
            let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
            let message = message?;
            let key = (message.topic().to_owned(), message.partition());
            let Some(end) = pending.get(&key).copied() else { continue };
            if message.offset() < end {
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    h.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    topic: key.0.clone(),
                    partition: key.1,
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    headers,
                    payload: message.payload().map(<[u8]>::to_vec),
                });
            }
            if message.offset() + 1 >= end {
                pending.remove(&key);
            }
        }
        Ok(records)
    })
    .await?
}

/// A producer for raw records (no envelope, no outbox).
pub fn producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    KafkaConfig::new(bootstrap).producer()
}

/// Produce one raw record; returns its (partition, offset).
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
) -> anyhow::Result<(i32, i64)> {
    let mut owned = OwnedHeaders::new();
    for (k, v) in headers {
        owned = owned.insert(Header { key: k, value: Some(*v) });
    }
    let record = FutureRecord::to(topic).key(key).payload(payload).headers(owned);
    let delivery = producer.send(record, TIMEOUT).await.map_err(|(e, _)| e).context("failed to produce")?;
    Ok((delivery.partition, delivery.offset))
}
