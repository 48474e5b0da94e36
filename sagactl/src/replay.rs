//! `sagactl replay`: read a range of topics (by offset or time, optionally one key and some event
//! types) and write it to stdout as JSON lines, republish it to another topic with provenance
//! headers, or fold it into a projection rebuild ([`crate::rebuild`]).

use std::io::{BufWriter, Stdout, Write as _};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use chrono::Utc;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use crate::cli::{RangeArgs, ReplayArgs};
use crate::kafka::{Flow, Kafka, Plan, ReadOptions, Reader, Sink, Start, Stop};
use crate::output::{self, OutputFormat};
use crate::record::Record;
use crate::{Ctx, rebuild};

/// Headers added to every message republished by `--into-topic`.
pub mod replay_header {
    pub const ORIGINAL_TOPIC: &str = "replay_original_topic";
    pub const ORIGINAL_PARTITION: &str = "replay_original_partition";
    pub const ORIGINAL_OFFSET: &str = "replay_original_offset";
    /// The original Kafka timestamp, in milliseconds since the epoch.
    pub const ORIGINAL_TIMESTAMP: &str = "replay_original_timestamp";
    pub const REPLAYED_AT: &str = "replayed_at";
    pub const REPLAYED_BY: &str = "replayed_by";
}

/// Which messages of the range to keep.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub key: Option<String>,
    pub event_types: Vec<String>,
}

impl Filter {
    fn matches(&self, record: &Record) -> bool {
        self.key.as_deref().is_none_or(|k| record.has_key(k))
            && (self.event_types.is_empty() || record.event_type().is_some_and(|t| self.event_types.contains(&t)))
    }
}

/// Counts matches and stops at the limit.
#[derive(Debug, Clone)]
struct Selection {
    filter: Filter,
    limit: Option<u64>,
    matched: u64,
}

impl Selection {
    /// Whether to keep `record`, and whether the limit is reached after it.
    fn take(&mut self, record: &Record) -> (bool, Flow) {
        if !self.filter.matches(record) {
            return (false, Flow::Continue);
        }
        self.matched += 1;
        let done = self.limit.is_some_and(|limit| self.matched >= limit);
        (true, if done { Flow::Stop } else { Flow::Continue })
    }
}

struct ToStdout {
    selection: Selection,
    out: BufWriter<Stdout>,
}

impl Sink for ToStdout {
    async fn record(&mut self, record: Record) -> anyhow::Result<Flow> {
        let (keep, flow) = self.selection.take(&record);
        if keep {
            output::print_json_line(&mut self.out, &record.to_json())?;
        }
        Ok(flow)
    }
}

/// Republishes with provenance headers, a window of deliveries in flight.
struct ToTopic<'a> {
    selection: Selection,
    producer: &'a FutureProducer,
    topic: String,
    in_flight: Vec<DeliveryFuture>,
    published: u64,
}

impl ToTopic<'_> {
    async fn settle(&mut self) -> anyhow::Result<()> {
        for delivery in futures::future::join_all(self.in_flight.drain(..)).await {
            match delivery {
                Ok(Ok(_)) => self.published += 1,
                Ok(Err((err, _))) => bail!("failed to publish to {}: {err}", self.topic),
                Err(_) => bail!("the producer stopped before acknowledging a message"),
            }
        }
        Ok(())
    }
}

impl Sink for ToTopic<'_> {
    async fn record(&mut self, record: Record) -> anyhow::Result<Flow> {
        let (keep, flow) = self.selection.take(&record);
        if !keep {
            return Ok(flow);
        }
        let provenance = [
            (replay_header::ORIGINAL_TOPIC, record.topic.clone()),
            (replay_header::ORIGINAL_PARTITION, record.partition.to_string()),
            (replay_header::ORIGINAL_OFFSET, record.offset.to_string()),
            (
                replay_header::ORIGINAL_TIMESTAMP,
                record.timestamp.map(|t| t.timestamp_millis().to_string()).unwrap_or_default(),
            ),
            (replay_header::REPLAYED_AT, Utc::now().to_rfc3339()),
            (replay_header::REPLAYED_BY, "sagactl".to_owned()),
        ];
        for attempt in 0..2 {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + provenance.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header { key, value: value.as_deref() });
            }
            for (key, value) in &provenance {
                headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
            }
            let mut message: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
            if let Some(key) = record.key.as_deref() {
                message = message.key(key);
            }
            if let Some(payload) = record.payload.as_deref() {
                message = message.payload(payload);
            }
            match self.producer.send_result(message) {
                Ok(delivery) => {
                    self.in_flight.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) if attempt == 0 => {
                    self.settle().await?;
                }
                Err((err, _)) => bail!("failed to publish to {}: {err}", self.topic),
            }
        }
        if self.in_flight.len() >= 512 {
            self.settle().await?;
        }
        Ok(flow)
    }
}

/// Collects the matching messages for a rebuild.
struct ToRebuild {
    selection: Selection,
    records: Vec<Record>,
}

impl Sink for ToRebuild {
    async fn record(&mut self, record: Record) -> anyhow::Result<Flow> {
        let (keep, flow) = self.selection.take(&record);
        if keep {
            self.records.push(record);
        }
        Ok(flow)
    }
}

/// `--into-topic`'s summary.
#[derive(Debug, Serialize)]
struct Republished {
    into_topic: String,
    matched: u64,
    published: u64,
    /// Set when the target did not exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<Creation>,
}

/// How a missing target topic came to be.
#[derive(Debug, Clone, Serialize)]
pub struct Creation {
    /// The source topics' partition count (the largest, if several), asked for.
    pub requested_partitions: i32,
    /// What the topic has now (`None`: not found after publishing).
    pub partitions: Option<i32>,
    /// `sagactl` (CreateTopics) or `broker` (it created the topic on first use).
    pub by: &'static str,
    /// Why CreateTopics did not do it, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_topics_error: Option<String>,
}

impl Creation {
    fn describe(&self, topic: &str) -> String {
        let Some(now) = self.partitions else {
            return format!(
                "{topic} does not exist: CreateTopics failed ({}) and nothing was published that would create it",
                self.create_topics_error.as_deref().unwrap_or("no error")
            );
        };
        match &self.create_topics_error {
            None => format!("created {topic} with {now} partitions, as its source"),
            Some(err) => format!(
                "{topic} did not exist and the broker refused CreateTopics ({err}); it created the topic on first \
                 use with its default of {now} partitions instead of the source's {} (each key still maps to one \
                 partition, so per-key order holds)",
                self.requested_partitions
            ),
        }
    }
}

/// The partition count a new target gets: its sources' (the largest, if several).
fn requested_partitions(existing: &std::collections::BTreeMap<String, Vec<i32>>, sources: &[String]) -> i32 {
    sources.iter().filter_map(|t| existing.get(t)).map(|p| p.len() as i32).max().unwrap_or(1).max(1)
}

/// Create `target` with the largest partition count among `sources` unless it exists; the
/// publish that follows lets a broker without CreateTopics create it instead.
async fn create_target(
    kafka: &Kafka,
    existing: &std::collections::BTreeMap<String, Vec<i32>>,
    sources: &[String],
    target: &str,
) -> Option<Creation> {
    if existing.contains_key(target) {
        return None;
    }
    let requested = requested_partitions(existing, sources);
    let error = kafka.create_topic(target, requested).await.err().map(|e| format!("{e:#}"));
    Some(Creation {
        requested_partitions: requested,
        partitions: None,
        by: if error.is_none() { "sagactl" } else { "broker" },
        create_topics_error: error,
    })
}

fn range(args: &RangeArgs) -> (Start, Stop) {
    let start = match (args.from_offset, args.from_time) {
        (Some(offset), _) => Start::Offset(offset),
        (None, Some(time)) => Start::Time(time),
        (None, None) => Start::Beginning,
    };
    let stop = match (args.to_offset, args.to_time) {
        (Some(offset), _) => Stop::Offset(offset),
        (None, Some(time)) => Stop::Time(time),
        (None, None) => Stop::End,
    };
    (start, stop)
}

fn validate(args: &RangeArgs) -> anyhow::Result<()> {
    if args.from_offset.is_some_and(|o| o < 0) || args.to_offset.is_some_and(|o| o < 0) {
        bail!("offsets must be 0 or more");
    }
    if let (Some(from), Some(to)) = (args.from_offset, args.to_offset)
        && to < from
    {
        bail!("--to-offset {to} is before --from-offset {from}");
    }
    if let (Some(from), Some(to)) = (args.from_time, args.to_time)
        && to <= from
    {
        bail!("--to-time is not after --from-time");
    }
    if args.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    if args.partition.is_some_and(|p| p < 0) {
        bail!("--partition must be 0 or more");
    }
    Ok(())
}

/// Refuse to republish into the saga's own topics unless forced.
fn check_target(kafka: &Kafka, target: &str, force: bool) -> anyhow::Result<()> {
    let live = kafka.topics().all().iter().any(|t| t == target);
    if live && !force {
        bail!(
            "refusing to replay into the live saga topic {target}: its consumers would see these messages again \
             (their inboxes skip message ids they processed); pass --force to do it anyway"
        );
    }
    Ok(())
}

/// A replay into another topic.
struct Into<'a> {
    reader: &'a Reader,
    plan: &'a Plan,
    bar: &'a indicatif::ProgressBar,
    sources: &'a [String],
    target: String,
}

/// `--into-topic`: create the target if it is missing, republish the selection into it, and
/// say what was done.
async fn republish(ctx: &Ctx, into: Into<'_>, selection: Selection) -> anyhow::Result<ExitCode> {
    let Into { reader, plan, bar, sources, target } = into;
    let existing = reader.topic_partitions().await?;
    let spinner = ctx.progress.spinner(&format!("creating {target} if missing"));
    let mut created = create_target(&ctx.kafka, &existing, sources, &target).await;
    spinner.finish_and_clear();
    let producer = ctx.kafka.producer()?;
    let mut sink =
        ToTopic { selection, producer: &producer, topic: target.clone(), in_flight: Vec::new(), published: 0 };
    let read = reader.read(plan, ReadOptions::default(), bar, &mut sink).await;
    let settled = sink.settle().await;
    bar.finish_and_clear();
    read?;
    if let (Err(err), Some(c)) = (&settled, &created) {
        bail!(
            "{err:#}: {target} did not exist, and neither CreateTopics ({}) nor the broker on first use created it",
            c.create_topics_error.as_deref().unwrap_or("accepted")
        );
    }
    settled?;
    if let Some(c) = created.as_mut() {
        c.partitions = ctx.kafka.reader()?.topic_partitions().await?.get(&target).map(|p| p.len() as i32);
    }
    let summary =
        Republished { into_topic: target, matched: sink.selection.matched, published: sink.published, created };
    match ctx.output {
        OutputFormat::Json => output::print_json(&summary)?,
        OutputFormat::Table => {
            if let Some(c) = &summary.created {
                output::print_line(&c.describe(&summary.into_topic))?;
            }
            output::print_line(&format!(
                "republished {} of {} matching messages to {}",
                summary.published, summary.matched, summary.into_topic
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(ctx: &Ctx, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    validate(&args.range)?;
    if let Some(service) = args.rebuild {
        rebuild::check_service(service)?;
    }
    let topics: Vec<String> = if args.topics.is_empty() {
        if args.rebuild.is_none() {
            bail!("which topic? pass --topic (e.g. --topic orders.events), or --rebuild order-svc");
        }
        ctx.kafka.topics().event_topics().iter().map(|t| (*t).to_owned()).collect()
    } else {
        args.topics.iter().map(|t| ctx.kafka.topic(t)).collect()
    };
    let live = match args.rebuild {
        Some(_) => Some(rebuild::live(&args.live).await?),
        None => None,
    };
    let (start, stop) = range(&args.range);
    let selection = Selection {
        filter: Filter { key: args.range.key.clone(), event_types: args.range.event_types.clone() },
        limit: args.range.limit,
        matched: 0,
    };
    let reader = ctx.kafka.reader()?;
    let plan = reader.plan(&topics, args.range.partition, start, stop).await?;
    let bar = ctx.progress.bar(plan.len(), "replaying");

    if let Some(target) = &args.into_topic {
        let target = ctx.kafka.topic(target);
        check_target(&ctx.kafka, &target, args.force)?;
        if topics.contains(&target) {
            bail!("--into-topic {target} is one of the topics being replayed");
        }
        let into = Into { reader: &reader, plan: &plan, bar: &bar, sources: &topics, target };
        return republish(ctx, into, selection).await;
    }

    if let Some(live) = live {
        let whole = args.range.key.is_none()
            && args.range.event_types.is_empty()
            && args.range.limit.is_none()
            && args.range.partition.is_none()
            && start == Start::Beginning
            && stop == Stop::End
            && args.topics.is_empty();
        let mut sink = ToRebuild { selection, records: Vec::new() };
        let read = reader.read(&plan, ReadOptions::default(), &bar, &mut sink).await;
        bar.finish_and_clear();
        read?;
        let rebuilt = rebuild::from_records(&sink.records);
        let report = rebuild::compare(&rebuilt, &live, whole, "kafka", ctx.progress).await?;
        return rebuild::print(ctx, &report);
    }

    let mut sink = ToStdout { selection, out: BufWriter::new(std::io::stdout()) };
    let read = reader.read(&plan, ReadOptions::default(), &bar, &mut sink).await;
    bar.finish_and_clear();
    read?;
    sink.out.flush().context("failed to write to stdout")?;
    if ctx.progress.enabled() {
        eprintln!("{} messages", sink.selection.matched);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_target_gets_its_sources_partition_count() {
        let existing = std::collections::BTreeMap::from([
            ("orders.events".to_owned(), (0..8).collect::<Vec<i32>>()),
            ("payments.events".to_owned(), (0..3).collect()),
        ]);
        assert_eq!(requested_partitions(&existing, &["orders.events".to_owned()]), 8);
        assert_eq!(requested_partitions(&existing, &["payments.events".to_owned()]), 3);
        let both = ["payments.events".to_owned(), "orders.events".to_owned()];
        assert_eq!(requested_partitions(&existing, &both), 8, "the largest of several");
    }
}
