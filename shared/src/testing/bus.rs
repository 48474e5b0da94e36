//! Driving one service from the outside: publish envelopes to its input topics as the
//! upstream services would, read what it publishes, and wait until it has consumed everything
//! and its outbox is drained. Every test owns its broker (random topic prefix) and database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{TestBroker, TestDb, eventually};
use crate::config::ServiceConfig;
use crate::db::Db;
use crate::envelope::{Envelope, header_map};
use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use serde::Serialize;
use uuid::Uuid;

/// The longest a test waits for any one outcome.
pub const WAIT: Duration = Duration::from_secs(20);

/// Run one async test body (`async fn name(backend: Backend) -> anyhow::Result<()>`) on both
/// backends, as `name::postgres` and `name::sqlite`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() -> anyhow::Result<()> {
                super::$name(shared::db::Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() -> anyhow::Result<()> {
                super::$name(shared::db::Backend::Sqlite).await
            }
        }
    };
}

/// A service configuration on the test's database and broker, listening on a free port.
pub fn service_config(service: &'static str, db: &TestDb, bus: &Bus) -> ServiceConfig {
    let mut config = ServiceConfig::defaults(service, 0);
    config.database_url = db.url.clone();
    config.kafka = bus.broker.kafka.clone();
    config.topics = bus.broker.topics.clone();
    config
}

/// A root message from `source` about `order_id`, as that service would publish it.
pub fn envelope<T: Serialize>(event_type: &str, source: &str, order_id: Uuid, payload: &T) -> anyhow::Result<Envelope> {
    Ok(Envelope::new(event_type, 1, source, order_id.to_string(), payload)?)
}

/// The broker seen from outside the service under test.
pub struct Bus {
    pub broker: TestBroker,
    producer: FutureProducer,
    /// The service's consumer group, whose committed offsets say what it has consumed.
    group: String,
    /// A group member that never joins: only reads the group's committed offsets.
    offsets: Arc<BaseConsumer>,
}

impl Bus {
    pub fn new(service: &str) -> anyhow::Result<Self> {
        let broker = TestBroker::new(2)?;
        let producer = broker.kafka.producer()?;
        let group = broker.topics.group(service);
        let offsets = Arc::new(broker.kafka.consumer_config(&group).create::<BaseConsumer>()?);
        Ok(Self { broker, producer, group, offsets })
    }

    /// Publish `envelope` to `topic`, keyed by its subject (the order id), with its headers.
    pub async fn publish(&self, topic: &str, envelope: &Envelope) -> anyhow::Result<()> {
        let mut headers = OwnedHeaders::new();
        for (k, v) in envelope.headers() {
            headers = headers.insert(Header { key: &k, value: Some(&v) });
        }
        let payload = envelope.payload_bytes();
        self.producer
            .send(
                FutureRecord::to(topic).key(&envelope.subject).payload(&payload).headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("failed to publish {} to {topic}", envelope.event_type))?;
        Ok(())
    }

    /// Publish a raw record, as a broken or hostile producer might: any key, any headers (in
    /// this order), any payload or none.
    pub async fn publish_raw(
        &self,
        topic: &str,
        key: &str,
        headers: &[(String, String)],
        payload: Option<&[u8]>,
    ) -> anyhow::Result<()> {
        let mut owned = OwnedHeaders::new();
        for (k, v) in headers {
            owned = owned.insert(Header { key: k, value: Some(v) });
        }
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key).headers(owned);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("failed to publish a raw record to {topic}"))?;
        Ok(())
    }

    /// A reader of everything on `topic`, from the beginning.
    pub fn reader(&self, topic: &str) -> anyhow::Result<Reader> {
        let consumer: BaseConsumer =
            self.broker.kafka.consumer_config(&format!("reader-{}", Uuid::new_v4())).create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.broker.kafka.partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        Ok(Reader {
            consumer,
            topic: topic.to_owned(),
            partitions: self.broker.kafka.partitions,
            seen: Mutex::new(Seen::default()),
        })
    }

    /// Wait until the service has consumed every message on `inputs` (its group's committed
    /// offsets reached the end of each partition: offsets follow the transaction, so all of
    /// them were applied) and published everything that committed (`db`'s outbox is empty).
    pub async fn settled(&self, db: &Db, inputs: &[&str]) -> anyhow::Result<()> {
        let topics: Vec<String> = inputs.iter().map(|t| (*t).to_owned()).collect();
        eventually(WAIT, &format!("{} to consume {inputs:?}", self.group), || {
            let offsets = self.offsets.clone();
            let topics = topics.clone();
            let partitions = self.broker.kafka.partitions;
            async move {
                let consumed = tokio::task::spawn_blocking(move || consumed_all(&offsets, &topics, partitions));
                consumed.await.ok()?.ok()?.then_some(())
            }
        })
        .await?;
        eventually(WAIT, "the outbox to drain", || async {
            (crate::outbox::backlog(db).await.ok()? == 0).then_some(())
        })
        .await
    }
}

fn consumed_all(offsets: &BaseConsumer, topics: &[String], partitions: i32) -> anyhow::Result<bool> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
    }
    let committed = offsets.committed_offsets(tpl, Duration::from_secs(5))?;
    for element in committed.elements() {
        let (_, high) = offsets.fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(5))?;
        let done = match element.offset() {
            Offset::Offset(at) => at >= high,
            _ => high == 0,
        };
        if !done {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A message read back: the envelope and every header (dead letters carry their origin there).
pub type Record = (Envelope, Vec<(String, String)>);

/// A message read back as bytes, whether or not it is a valid envelope (dead letters of hostile
/// input are not).
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Option<Vec<u8>>,
}

impl RawRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Everything published on one topic so far, in arrival order.
pub struct Reader {
    consumer: BaseConsumer,
    topic: String,
    partitions: i32,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    records: Vec<Record>,
    raw: Vec<RawRecord>,
    /// Messages that were not valid envelopes (only [`Reader::raw_records`] shows them).
    undecodable: usize,
    /// Partition → the offset after the last message read.
    next: HashMap<i32, i64>,
}

impl Reader {
    /// Read what arrived since the last look (never blocks).
    fn poll(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Seen>> {
        let mut seen = self.seen.lock().map_err(|_| anyhow::anyhow!("reader poisoned"))?;
        while let Some(message) = self.consumer.poll(Duration::ZERO) {
            let message = message?;
            seen.next.insert(message.partition(), message.offset() + 1);
            let headers = header_map(&message);
            seen.raw.push(RawRecord {
                key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                headers: headers.clone(),
                payload: message.payload().map(<[u8]>::to_vec),
            });
            match Envelope::from_message(&message) {
                Ok(envelope) => seen.records.push((envelope, headers)),
                Err(_) => seen.undecodable += 1,
            }
        }
        Ok(seen)
    }

    /// Every message read so far plus those that arrived since (never blocks). Fails if one
    /// of them is not a valid envelope.
    pub fn records(&self) -> anyhow::Result<Vec<Record>> {
        let seen = self.poll()?;
        anyhow::ensure!(
            seen.undecodable == 0,
            "{} message(s) on {} are not valid envelopes",
            seen.undecodable,
            self.topic
        );
        Ok(seen.records.clone())
    }

    /// Every message read so far plus those that arrived since, as bytes (never blocks).
    pub fn raw_records(&self) -> anyhow::Result<Vec<RawRecord>> {
        Ok(self.poll()?.raw.clone())
    }

    /// Wait until everything on the topic now has been read (after [`Bus::settled`], that is
    /// everything the service will have published).
    pub async fn caught_up(&self) -> anyhow::Result<()> {
        let ends = (0..self.partitions)
            .map(|p| Ok((p, self.consumer.fetch_watermarks(&self.topic, p, Duration::from_secs(5))?.1)))
            .collect::<anyhow::Result<Vec<(i32, i64)>>>()?;
        eventually(WAIT, &format!("reading {} to its end", self.topic), || async {
            let seen = self.poll().ok()?;
            ends.iter().all(|(p, end)| seen.next.get(p).copied().unwrap_or(0) >= *end).then_some(())
        })
        .await
    }

    /// Every envelope read so far plus those that arrived since (never blocks).
    pub fn all(&self) -> anyhow::Result<Vec<Envelope>> {
        Ok(self.records()?.into_iter().map(|(envelope, _)| envelope).collect())
    }

    /// The messages about one order.
    pub fn about(&self, order_id: Uuid) -> anyhow::Result<Vec<Envelope>> {
        let key = order_id.to_string();
        Ok(self.all()?.into_iter().filter(|e| e.subject == key).collect())
    }

    /// Wait until at least `n` messages about `order_id` arrived; returns all of them.
    pub async fn wait_for(&self, order_id: Uuid, n: usize) -> anyhow::Result<Vec<Envelope>> {
        eventually(WAIT, &format!("{n} message(s) about order {order_id}"), || async move {
            let found = self.about(order_id).ok()?;
            (found.len() >= n).then_some(found)
        })
        .await
    }
}
