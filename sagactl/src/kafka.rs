//! Kafka access for sagactl, built on the backbone's [`KafkaConfig`] (so `KAFKA_PROP_*`
//! pass-through properties such as SASL settings apply here too).
//!
//! Readers never touch a live consumer group: they assign partitions directly under a throwaway
//! group id (`sagactl-<uuid>`) and never subscribe or commit, so no group is joined and no
//! offset is written. [`Kafka::group_reader`] reads a group's committed offsets (an OffsetFetch,
//! as `kafka-consumer-groups --describe` does) without joining it either.
//!
//! A read is planned first ([`Reader::plan`]: each partition's range, fixed at the end offsets
//! seen when the read started, so a busy topic cannot make a scan endless), then run
//! ([`Reader::read`]) into a [`Sink`], optionally following new messages once caught up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shared::broker::KafkaConfig;
use shared::topics::Topics;

use crate::brokers::{Brokers, Origin};
use crate::record::Record;

/// A topic and partition.
pub type Partition = (String, i32);

/// How sagactl reaches the saga's Kafka.
#[derive(Debug, Clone)]
pub struct Kafka {
    config: KafkaConfig,
    /// How the brokers were found, for errors.
    origin: Origin,
    topics: Topics,
    prefix: String,
    timeout: Duration,
}

impl Kafka {
    /// Brokers named explicitly.
    pub fn new(brokers: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        Self::with_brokers(Brokers { servers: brokers.to_owned(), origin: Origin::Given }, prefix, timeout)
    }

    /// Brokers found as [`crate::brokers::resolve`] found them.
    pub fn with_brokers(brokers: Brokers, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut config = KafkaConfig::new(brokers.servers);
        config.properties = shared::config::kafka_properties_from(std::env::vars())?;
        config.create_topics = false;
        Ok(Self {
            config,
            origin: brokers.origin,
            topics: Topics::with_prefix(prefix),
            prefix: prefix.to_owned(),
            timeout,
        })
    }

    /// The saga's topic names (with the prefix).
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// A topic name as given by the operator (without the prefix) → the real name.
    pub fn topic(&self, name: &str) -> String {
        if self.prefix.is_empty() || name.starts_with(&self.prefix) {
            name.to_owned()
        } else {
            format!("{}{name}", self.prefix)
        }
    }

    /// The name without the prefix, for display.
    pub fn short<'a>(&self, topic: &'a str) -> &'a str {
        topic.strip_prefix(self.prefix.as_str()).unwrap_or(topic)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn brokers(&self) -> &str {
        &self.config.brokers
    }

    /// A reader under a throwaway group id that never joins a group or commits.
    pub fn reader(&self) -> anyhow::Result<Reader> {
        self.reader_in(&format!("sagactl-{}", uuid::Uuid::new_v4().simple()))
    }

    /// A reader whose group id is `group`, only to read that group's committed offsets: it
    /// never subscribes, so it never joins the group, and never commits.
    pub fn group_reader(&self, group: &str) -> anyhow::Result<Reader> {
        self.reader_in(group)
    }

    fn reader_in(&self, group: &str) -> anyhow::Result<Reader> {
        let mut config: ClientConfig = self.config.consumer_config(group);
        config
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("allow.auto.create.topics", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "0");
        let consumer: StreamConsumer = config.create().context("failed to create kafka consumer")?;
        let brokers = format!("{} ({})", self.config.brokers, self.origin);
        Ok(Reader { consumer: Arc::new(consumer), timeout: self.timeout, brokers })
    }

    /// A client under `group`'s id that commits offsets for it without joining it (no
    /// subscription, so no member id): the one client in sagactl that writes offsets, used only
    /// by `group reset-offsets --execute`. A broker accepts such a commit only while the group
    /// has no members (see [`crate::group`]).
    pub fn outside_committer(&self, group: &str) -> anyhow::Result<BaseConsumer> {
        let mut config: ClientConfig = self.config.consumer_config(group);
        config.set("enable.auto.commit", "false").set("statistics.interval.ms", "0");
        config.create().context("failed to create kafka consumer")
    }

    /// An idempotent producer (the backbone's settings).
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        self.config.producer()
    }

    /// Create `topic` with `partitions` partitions if the cluster allows it; an existing topic
    /// is left as it is. `Err` says why the cluster did not: one without the CreateTopics API,
    /// such as the embedded broker, creates the topic on first use instead, with its own default
    /// partition count.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let mut config = self.config.clone();
        config.partitions = partitions;
        match tokio::time::timeout(self.timeout, config.create_topics(&[topic.to_owned()])).await {
            Ok(created) => created,
            Err(_) => bail!("no answer to CreateTopics within {}", crate::timespec::human(self.timeout)),
        }
    }
}

/// A message to publish.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub key: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<Vec<u8>>)],
    pub payload: Option<&'a [u8]>,
}

/// Publish one message and wait for the broker's acknowledgement; returns its partition and
/// offset.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    message: Outgoing<'_>,
    timeout: Duration,
) -> anyhow::Result<(i32, i64)> {
    let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
    for (key, value) in message.headers {
        headers = headers.insert(Header { key, value: value.as_deref() });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(key) = message.key {
        record = record.key(key);
    }
    if let Some(payload) = message.payload {
        record = record.payload(payload);
    }
    let delivery =
        producer.send(record, timeout).await.map_err(|(err, _)| anyhow!("failed to publish to {topic}: {err}"))?;
    Ok((delivery.partition, delivery.offset))
}

/// What DescribeGroups says about a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: String,
    /// `member id (client id, host)`.
    pub members: Vec<String>,
}

/// Where a read starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    Offset(i64),
    Time(DateTime<Utc>),
    End,
}

/// Where a read stops in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The end offset when the read was planned.
    End,
    /// This offset, inclusive.
    Offset(i64),
    /// The first message at or after this time (exclusive).
    Time(DateTime<Utc>),
}

/// One partition's offsets to read: `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// Message timestamps to keep (the broker may not resolve times to offsets: the embedded
/// broker does not, so time bounds are also applied to each message).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl Window {
    pub fn contains(&self, timestamp: Option<DateTime<Utc>>) -> bool {
        let Some(t) = timestamp else { return true };
        self.from.is_none_or(|from| t >= from) && self.to.is_none_or(|to| t < to)
    }
}

/// A planned read.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub ranges: Vec<Range>,
    pub window: Window,
}

impl Plan {
    /// How many offsets the read covers.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|r| (r.end - r.start).max(0) as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the reader does with each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Receives a read's messages.
pub trait Sink {
    /// A message in the planned ranges, or any new message once following.
    fn record(&mut self, record: Record) -> impl Future<Output = anyhow::Result<Flow>>;

    /// Every range was read to its end. Return [`Flow::Continue`] to follow new messages (when
    /// the read follows).
    fn caught_up(&mut self) -> impl Future<Output = anyhow::Result<Flow>> {
        async { Ok(Flow::Stop) }
    }
}

/// How a read ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Keep reading new messages after the planned ranges.
    pub follow: bool,
    /// Stop following at this time.
    pub deadline: Option<tokio::time::Instant>,
}

/// A read-only consumer (see the module docs).
pub struct Reader {
    consumer: Arc<StreamConsumer>,
    timeout: Duration,
    /// The bootstrap servers and how they were found, for errors.
    brokers: String,
}

impl Reader {
    /// Run a blocking librdkafka call off the async runtime.
    async fn blocking<T, F>(&self, call: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&StreamConsumer) -> anyhow::Result<T> + Send + 'static,
    {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || call(&consumer)).await.context("kafka call panicked")?
    }

    /// Every topic on the cluster with its partitions.
    pub async fn topic_partitions(&self) -> anyhow::Result<BTreeMap<String, Vec<i32>>> {
        let (timeout, brokers) = (self.timeout, self.brokers.clone());
        self.blocking(move |consumer| {
            let metadata = consumer.fetch_metadata(None, timeout).map_err(|e| {
                anyhow!(
                    "cannot reach Kafka at {brokers}: {e} (is the saga running? pass --brokers or set KAFKA_BROKERS)"
                )
            })?;
            Ok(metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| {
                    let mut partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                    partitions.sort_unstable();
                    (t.name().to_owned(), partitions)
                })
                .collect())
        })
        .await
    }

    /// The group's members as DescribeGroups reports them: `Ok(None)` when the broker does not
    /// answer it (the embedded broker has no ListGroups/DescribeGroups). Only classic-protocol
    /// groups show their members there: Kafka describes a KIP-848 group as `Dead`, with none.
    pub async fn describe_group(&self, group: &str) -> anyhow::Result<Option<GroupDescription>> {
        let (timeout, group) = (self.timeout, group.to_owned());
        self.blocking(move |consumer| {
            let list = match consumer.fetch_group_list(Some(&group), timeout) {
                Ok(list) => list,
                Err(_) => return Ok(None),
            };
            Ok(list.groups().iter().find(|g| g.name() == group).map(|g| GroupDescription {
                state: g.state().to_owned(),
                members: g
                    .members()
                    .iter()
                    .map(|m| format!("{} ({}, {})", m.id(), m.client_id(), m.client_host()))
                    .collect(),
            }))
        })
        .await
    }

    /// Low and high watermarks (oldest retained offset, next offset to be written).
    pub async fn watermarks(&self, partitions: &[Partition]) -> anyhow::Result<HashMap<Partition, (i64, i64)>> {
        let (timeout, partitions) = (self.timeout, partitions.to_vec());
        self.blocking(move |consumer| {
            let mut marks = HashMap::new();
            for (topic, partition) in partitions {
                let mark = consumer
                    .fetch_watermarks(&topic, partition, timeout)
                    .with_context(|| format!("failed to read the offsets of {topic}/{partition}"))?;
                marks.insert((topic, partition), mark);
            }
            Ok(marks)
        })
        .await
    }

    /// The first offset at or after `time` per partition, when the broker can tell.
    pub async fn offsets_for_time(
        &self,
        partitions: &[Partition],
        time: DateTime<Utc>,
    ) -> anyhow::Result<HashMap<Partition, Option<i64>>> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(time.timestamp_millis()))?;
        }
        let timeout = self.timeout;
        self.blocking(move |consumer| {
            let found = consumer.offsets_for_times(tpl, timeout).context("failed to look up offsets by time")?;
            Ok(found
                .elements()
                .iter()
                .map(|e| {
                    let offset = match e.offset() {
                        Offset::Offset(o) if o >= 0 => Some(o),
                        _ => None,
                    };
                    ((e.topic().to_owned(), e.partition()), offset)
                })
                .collect())
        })
        .await
    }

    /// The reader's group's committed offsets (`None`: nothing committed).
    pub async fn committed(&self, partitions: &[Partition]) -> anyhow::Result<HashMap<Partition, Option<i64>>> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            tpl.add_partition(topic, *partition);
        }
        let timeout = self.timeout;
        self.blocking(move |consumer| {
            let committed =
                consumer.committed_offsets(tpl, timeout).context("failed to read the group's committed offsets")?;
            Ok(committed
                .elements()
                .iter()
                .map(|e| {
                    let offset = match e.offset() {
                        Offset::Offset(o) if o >= 0 => Some(o),
                        _ => None,
                    };
                    ((e.topic().to_owned(), e.partition()), offset)
                })
                .collect())
        })
        .await
    }

    /// Plan a read of `topics` (real names; each must exist) from `start` to `stop`.
    pub async fn plan(
        &self,
        topics: &[String],
        partition: Option<i32>,
        start: Start,
        stop: Stop,
    ) -> anyhow::Result<Plan> {
        let existing = self.topic_partitions().await?;
        let mut partitions = Vec::new();
        for topic in topics {
            let Some(ids) = existing.get(topic) else {
                let known: Vec<&str> = existing.keys().map(String::as_str).filter(|t| !t.starts_with("__")).collect();
                bail!("topic {topic} does not exist (topics: {})", known.join(", "));
            };
            partitions
                .extend(ids.iter().filter(|p| partition.is_none_or(|want| want == **p)).map(|p| (topic.clone(), *p)));
        }
        if let Some(p) = partition
            && partitions.is_empty()
        {
            bail!("partition {p} does not exist on {}", topics.join(", "));
        }
        let marks = self.watermarks(&partitions).await?;
        let starts = match start {
            Start::Time(t) => self.offsets_for_time(&partitions, t).await?,
            _ => HashMap::new(),
        };
        let stops = match stop {
            Stop::Time(t) => self.offsets_for_time(&partitions, t).await?,
            _ => HashMap::new(),
        };
        let ranges = partitions
            .into_iter()
            .map(|key| {
                let (low, high) = marks.get(&key).copied().unwrap_or((0, 0));
                let first = match start {
                    Start::Beginning => low,
                    Start::Offset(n) => n,
                    Start::Time(_) => starts.get(&key).copied().flatten().unwrap_or(low),
                    Start::End => high,
                }
                .clamp(low, high);
                let end = match stop {
                    Stop::End => high,
                    Stop::Offset(n) => n.saturating_add(1),
                    Stop::Time(_) => stops.get(&key).copied().flatten().unwrap_or(high),
                }
                .clamp(first, high);
                Range { topic: key.0, partition: key.1, start: first, end }
            })
            .collect();
        let window = Window {
            from: match start {
                Start::Time(t) => Some(t),
                _ => None,
            },
            to: match stop {
                Stop::Time(t) => Some(t),
                _ => None,
            },
        };
        Ok(Plan { ranges, window })
    }

    /// Read a plan into `sink`, advancing `bar` per offset read.
    pub async fn read(
        &self,
        plan: &Plan,
        options: ReadOptions,
        bar: &ProgressBar,
        sink: &mut impl Sink,
    ) -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        for r in &plan.ranges {
            tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.start))?;
        }
        self.consumer.assign(&tpl).context("failed to assign partitions")?;
        let ends: HashMap<Partition, i64> =
            plan.ranges.iter().map(|r| ((r.topic.clone(), r.partition), r.end)).collect();
        let mut pending: HashMap<Partition, i64> =
            plan.ranges.iter().filter(|r| r.start < r.end).map(|r| ((r.topic.clone(), r.partition), r.end)).collect();
        bar.set_length(plan.len());

        let mut caught_up = false;
        if pending.is_empty() {
            caught_up = true;
            if sink.caught_up().await? == Flow::Stop || !options.follow {
                return Ok(());
            }
        }
        // Only a follow listens for Ctrl-C: listening replaces the default handler for the rest
        // of the process, and a plain scan should stay killable by it.
        let ctrl_c = async {
            if options.follow {
                let _ = tokio::signal::ctrl_c().await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(ctrl_c);
        let mut last_progress = Instant::now();
        loop {
            if let Some(deadline) = options.deadline
                && tokio::time::Instant::now() >= deadline
            {
                return Ok(());
            }
            let received = tokio::select! {
                received = tokio::time::timeout(Duration::from_millis(250), self.consumer.recv()) => received,
                () = &mut ctrl_c => {
                    if caught_up { return Ok(()) }
                    bail!("interrupted");
                }
            };
            let message = match received {
                Err(_) => {
                    if !caught_up {
                        self.settle_positions(&mut pending, None)?;
                        if !pending.is_empty() && last_progress.elapsed() > self.timeout.max(Duration::from_secs(5)) {
                            let stalled: Vec<String> = pending.keys().map(|(t, p)| format!("{t}/{p}")).collect();
                            bail!("reading stalled: no data from {} (is the broker reachable?)", stalled.join(", "));
                        }
                    }
                    None
                }
                Ok(Err(KafkaError::PartitionEOF(partition))) => {
                    if !caught_up {
                        self.settle_positions(&mut pending, Some(partition))?;
                    }
                    None
                }
                Ok(Err(err)) => {
                    // Transient broker errors are retried by librdkafka; a read that stops
                    // making progress ends with the stall error above.
                    debug_log(&err);
                    None
                }
                Ok(Ok(message)) => Some(to_record(&message)),
            };
            if let Some(record) = message {
                last_progress = Instant::now();
                let key = (record.topic.clone(), record.partition);
                let in_plan = ends.get(&key).is_some_and(|end| record.offset < *end);
                if in_plan {
                    bar.inc(1);
                }
                if let Some(end) = pending.get(&key)
                    && record.offset + 1 >= *end
                {
                    pending.remove(&key);
                }
                if (in_plan || options.follow)
                    && plan.window.contains(record.timestamp)
                    && sink.record(record).await? == Flow::Stop
                {
                    return Ok(());
                }
            }
            if !caught_up && pending.is_empty() {
                caught_up = true;
                if sink.caught_up().await? == Flow::Stop || !options.follow {
                    return Ok(());
                }
            }
        }
    }

    /// Drop from `pending` the partitions (all, or those numbered `partition`) whose position
    /// reached their end: after an end-of-partition event, or when the log had gaps.
    fn settle_positions(&self, pending: &mut HashMap<Partition, i64>, partition: Option<i32>) -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let positions = self.consumer.position().context("failed to read the consumer's positions")?;
        for element in positions.elements() {
            if partition.is_some_and(|p| p != element.partition()) {
                continue;
            }
            let key = (element.topic().to_owned(), element.partition());
            if let (Some(end), Offset::Offset(position)) = (pending.get(&key), element.offset())
                && position >= *end
            {
                pending.remove(&key);
            }
        }
        Ok(())
    }

    /// The timestamp of the message at each given offset (to tell how old the oldest
    /// unconsumed message is). Partitions with no message there within the timeout are absent.
    pub async fn timestamps_at(
        &self,
        positions: &[(Partition, i64)],
    ) -> anyhow::Result<HashMap<Partition, DateTime<Utc>>> {
        let mut found = HashMap::new();
        if positions.is_empty() {
            return Ok(found);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in positions {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        self.consumer.assign(&tpl).context("failed to assign partitions")?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        while found.len() < positions.len() {
            let received = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => break,
                Ok(received) => received,
            };
            if let Ok(message) = received {
                let key = (message.topic().to_owned(), message.partition());
                if let Some(time) = message.timestamp().to_millis().and_then(DateTime::from_timestamp_millis) {
                    found.entry(key).or_insert(time);
                }
            }
        }
        Ok(found)
    }
}

/// Consumer errors that librdkafka retries by itself are not worth failing a read for; shown
/// with `SAGACTL_DEBUG=1`.
fn debug_log(err: &KafkaError) {
    if std::env::var_os("SAGACTL_DEBUG").is_some() {
        eprintln!("kafka: {err}");
    }
}

fn to_record(message: &BorrowedMessage<'_>) -> Record {
    Record {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis().and_then(DateTime::from_timestamp_millis),
        key: message.key().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
            .unwrap_or_default(),
        payload: message.payload().map(<[u8]>::to_vec),
    }
}

/// Collects every record of a read.
#[derive(Debug, Default)]
pub struct Collect {
    pub records: Vec<Record>,
}

impl Sink for Collect {
    async fn record(&mut self, record: Record) -> anyhow::Result<Flow> {
        self.records.push(record);
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_keeps_messages_in_its_half_open_interval() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).ok();
        let window = Window { from: t("2026-01-01T00:00:00Z"), to: t("2026-01-02T00:00:00Z") };
        assert!(window.contains(t("2026-01-01T00:00:00Z")));
        assert!(window.contains(t("2026-01-01T12:00:00Z")));
        assert!(!window.contains(t("2026-01-02T00:00:00Z")));
        assert!(!window.contains(t("2025-12-31T23:59:59Z")));
        assert!(window.contains(None), "messages without a timestamp are kept");
    }

    #[test]
    fn operator_topic_names_get_the_prefix_once() {
        let kafka = Kafka::new("127.0.0.1:1", "t1.", Duration::from_secs(1)).expect("kafka");
        assert_eq!(kafka.topic("orders.events"), "t1.orders.events");
        assert_eq!(kafka.topic("t1.orders.events"), "t1.orders.events");
        assert_eq!(kafka.short("t1.orders.events"), "orders.events");
    }
}
