//! `sagactl group reset-offsets`: move a consumer group's committed offsets to a time or an
//! offset, so that it replays (or skips) messages when it next starts.
//!
//! A dry run by default: it prints the plan (per topic and partition, the committed offset, the
//! new one, and how many messages that replays or skips). `--execute` commits it.
//!
//! **It refuses while the group has members.** Two checks, both the broker's:
//! 1. DescribeGroups: members listed there (classic-protocol groups) refuse at once, also in a
//!    dry run. Kafka describes a KIP-848 group as `Dead` with no members, and the embedded broker
//!    does not answer DescribeGroups, so an empty answer proves nothing.
//! 2. The commit itself is made from outside the group (a client under the group's id that never
//!    joins it, with no member id). Kafka accepts that only while the group has no members, on
//!    both protocols, and answers `UNKNOWN_MEMBER_ID` otherwise: the check and the write are one
//!    step, so no consumer can join in between. A refused commit writes nothing.
//!
//! The embedded broker (librdkafka's mock cluster) keeps a KIP-848 group, with or without
//! members, until it stops, and refuses every commit from outside a group it keeps: there, a
//! reset works only for a group that never had a member since the broker started (a stopped
//! service's group works after a broker restart). The embedded mode's groups always have live
//! members anyway: they run in the broker's own process.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::cli::{GroupCommand, ResetOffsetsArgs};
use crate::kafka::{Flow, Partition, ReadOptions, Reader, Sink, Start, Stop};
use crate::output::{self, OutputFormat};
use crate::record::Record;
use crate::{Ctx, saga, timespec};

pub async fn run(ctx: &Ctx, command: GroupCommand) -> anyhow::Result<ExitCode> {
    match command {
        GroupCommand::ResetOffsets(args) => reset_offsets(ctx, args).await,
    }
}

/// Where the group should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The first message at or after this time (the end if there is none).
    Time(DateTime<Utc>),
    /// This offset in every partition (kept within what the partition retains).
    Offset(i64),
}

/// One partition of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    /// The committed offset (`None`: never committed, so the group starts at the oldest
    /// retained offset).
    pub committed: Option<i64>,
    pub log_start: i64,
    pub end: i64,
    pub new: i64,
    /// Messages the group will read again (moving back).
    pub replays: i64,
    /// Messages the group will never read (moving forward).
    pub skips: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Move {
    /// A partition's move from its committed offset (or where the group would start) to `new`.
    pub fn new(key: &Partition, committed: Option<i64>, marks: (i64, i64), wanted: i64) -> Self {
        let (low, high) = marks;
        let new = wanted.clamp(low, high);
        let note = if wanted < low {
            Some(format!("offset {wanted} is no longer retained: the oldest is {low}"))
        } else if wanted > high {
            Some(format!("offset {wanted} is past the end: {high}"))
        } else {
            None
        };
        let from = committed.unwrap_or(low).clamp(low, high);
        Self {
            topic: key.0.clone(),
            partition: key.1,
            committed,
            log_start: low,
            end: high,
            new,
            replays: (from - new).max(0),
            skips: (new - from).max(0),
            note,
        }
    }

    fn changes(&self) -> bool {
        self.committed != Some(self.new)
    }
}

/// The whole answer.
#[derive(Debug, Clone, Serialize)]
pub struct ResetReport {
    pub group: String,
    pub target: Target,
    pub executed: bool,
    pub replays: i64,
    pub skips: i64,
    pub partitions: Vec<Move>,
    /// DescribeGroups' view (`None`: the broker does not answer it).
    pub described_state: Option<String>,
}

async fn reset_offsets(ctx: &Ctx, args: ResetOffsetsArgs) -> anyhow::Result<ExitCode> {
    let target = match (args.to_time, args.to_offset) {
        (_, Some(offset)) if offset < 0 => bail!("--to-offset must be 0 or more"),
        (_, Some(offset)) => Target::Offset(offset),
        (Some(time), None) => Target::Time(time),
        (None, None) => bail!("where to? pass --to-time or --to-offset"),
    };
    let (group, service) = saga::group_of(&args.group, ctx.kafka.topics());
    let reader = ctx.kafka.reader()?;
    let description = reader.describe_group(&group).await?;
    if let Some(d) = description.as_ref().filter(|d| !d.members.is_empty()) {
        bail!(
            "refusing to reset group {group}: it has {} live member(s) ({}; state {}): stop its consumers, then run again",
            d.members.len(),
            d.members.join(", "),
            d.state
        );
    }
    let partitions = partitions(ctx, &reader, &group, service, &args.topics).await?;
    let committed = ctx.kafka.group_reader(&group)?.committed(&partitions).await?;
    let marks = reader.watermarks(&partitions).await?;
    let wanted = match target {
        Target::Offset(offset) => partitions.iter().map(|p| (p.clone(), offset)).collect(),
        Target::Time(time) => offsets_at(ctx, &partitions, &marks, time).await?,
    };
    let moves: Vec<Move> = partitions
        .iter()
        .map(|key| {
            let marks = marks.get(key).copied().unwrap_or((0, 0));
            let wanted = wanted.get(key).copied().unwrap_or(marks.1);
            let mut m = Move::new(key, committed.get(key).copied().flatten(), marks, wanted);
            m.topic = ctx.kafka.short(&m.topic).to_owned();
            m
        })
        .collect();
    let mut report = ResetReport {
        group: group.clone(),
        target,
        executed: false,
        replays: moves.iter().map(|m| m.replays).sum(),
        skips: moves.iter().map(|m| m.skips).sum(),
        partitions: moves,
        described_state: description.map(|d| d.state),
    };
    if args.execute {
        commit(ctx, &report).await?;
        report.executed = true;
    }
    print(ctx, &report)?;
    Ok(ExitCode::SUCCESS)
}

/// The partitions to reset: `--topic`s, else a service group's subscriptions, else the saga
/// topics on which the group has committed offsets.
async fn partitions(
    ctx: &Ctx,
    reader: &Reader,
    group: &str,
    service: Option<&'static str>,
    asked: &[String],
) -> anyhow::Result<Vec<Partition>> {
    let existing = reader.topic_partitions().await?;
    let (topics, only_committed) = if !asked.is_empty() {
        (asked.iter().map(|t| ctx.kafka.topic(t)).collect(), false)
    } else if let Some(subscribed) = service.and_then(|s| saga::subscriptions(s, ctx.kafka.topics())) {
        (subscribed, false)
    } else {
        (ctx.kafka.topics().all(), true)
    };
    let mut partitions = Vec::new();
    for topic in &topics {
        match existing.get(topic) {
            Some(ids) => partitions.extend(ids.iter().map(|p| (topic.clone(), *p))),
            None if !asked.is_empty() => bail!("topic {topic} does not exist"),
            None => {}
        }
    }
    if only_committed {
        let committed = ctx.kafka.group_reader(group)?.committed(&partitions).await?;
        partitions.retain(|p| committed.get(p).copied().flatten().is_some());
        if partitions.is_empty() {
            bail!("group {group} has no committed offsets on the saga topics: name the topics to reset with --topic");
        }
    }
    if partitions.is_empty() {
        bail!("none of the topics of group {group} exist on {}", ctx.kafka.brokers());
    }
    Ok(partitions)
}

/// The first offset at or after `time` in each partition, the end offset when no message is
/// that recent. Asked of the broker first; where it cannot tell (the embedded broker never
/// can) and the partition's last message is that recent, the partition is scanned.
async fn offsets_at(
    ctx: &Ctx,
    partitions: &[Partition],
    marks: &HashMap<Partition, (i64, i64)>,
    time: DateTime<Utc>,
) -> anyhow::Result<HashMap<Partition, i64>> {
    // Kafka answers for every partition with a message that recent, so only a broker that
    // cannot look times up reaches the scan below.
    let found = ctx.kafka.reader()?.offsets_for_time(partitions, time).await?;
    let mut offsets = HashMap::new();
    let mut unknown = Vec::new();
    for key in partitions {
        let (low, high) = marks.get(key).copied().unwrap_or((0, 0));
        match found.get(key).copied().flatten() {
            Some(offset) => {
                offsets.insert(key.clone(), offset);
            }
            None if low >= high => {
                offsets.insert(key.clone(), high);
            }
            None => unknown.push((key.clone(), high - 1)),
        }
    }
    let last = ctx.kafka.reader()?.timestamps_at(&unknown).await?;
    let mut scan = Vec::new();
    for (key, _) in unknown {
        match last.get(&key) {
            Some(at) if *at < time => {
                let end = marks.get(&key).map_or(0, |m| m.1);
                offsets.insert(key, end);
            }
            _ => scan.push(key),
        }
    }
    if !scan.is_empty() {
        offsets.extend(scan_for_time(ctx, &scan, time).await?);
    }
    Ok(offsets)
}

/// Records, per partition, the first offset whose timestamp is at or after a time.
struct FirstAtOrAfter {
    time: DateTime<Utc>,
    wanted: usize,
    found: HashMap<Partition, i64>,
}

impl Sink for FirstAtOrAfter {
    async fn record(&mut self, record: Record) -> anyhow::Result<Flow> {
        let key = (record.topic.clone(), record.partition);
        if record.timestamp.is_some_and(|t| t >= self.time) && !self.found.contains_key(&key) {
            self.found.insert(key, record.offset);
        }
        Ok(if self.found.len() >= self.wanted { Flow::Stop } else { Flow::Continue })
    }
}

async fn scan_for_time(
    ctx: &Ctx,
    partitions: &[Partition],
    time: DateTime<Utc>,
) -> anyhow::Result<HashMap<Partition, i64>> {
    let reader = ctx.kafka.reader()?;
    let mut plan = crate::kafka::Plan::default();
    for (topic, partition) in partitions {
        let one = reader.plan(std::slice::from_ref(topic), Some(*partition), Start::Beginning, Stop::End).await?;
        plan.ranges.extend(one.ranges);
    }
    let bar = ctx.progress.bar(plan.len(), "finding time");
    let mut sink = FirstAtOrAfter { time, wanted: partitions.len(), found: HashMap::new() };
    let read = reader.read(&plan, ReadOptions::default(), &bar, &mut sink).await;
    bar.finish_and_clear();
    read.context("failed to scan for the time")?;
    // A partition with nothing that recent: the end.
    let mut found = sink.found;
    for r in &plan.ranges {
        found.entry((r.topic.clone(), r.partition)).or_insert(r.end);
    }
    Ok(found)
}

/// Commit the plan from outside the group, and read it back.
async fn commit(ctx: &Ctx, report: &ResetReport) -> anyhow::Result<()> {
    let group = &report.group;
    let changes: Vec<&Move> = report.partitions.iter().filter(|m| m.changes()).collect();
    if changes.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for m in &changes {
        tpl.add_partition_offset(&ctx.kafka.topic(&m.topic), m.partition, Offset::Offset(m.new))?;
    }
    let committer = ctx.kafka.outside_committer(group)?;
    let committed = tokio::task::spawn_blocking(move || committer.commit(&tpl, CommitMode::Sync))
        .await
        .context("kafka call panicked")?;
    match committed {
        Ok(()) => {}
        Err(KafkaError::ConsumerCommit(
            code @ (RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::StaleMemberEpoch),
        )) => bail!(
            "refusing to reset group {group}: the broker refused a commit from outside the group ({code}), so the \
             group has members. Stop every consumer of {group}, then run again; a consumer killed without leaving stays \
             a member for one session timeout (45 s by default on Kafka, 3 s on the embedded broker). The embedded \
             broker refuses this for any group that had a member since it started (see sagactl/README.md). Nothing \
             was committed"
        ),
        Err(err) => return Err(anyhow!(err).context(format!("failed to commit the new offsets of group {group}"))),
    }
    let keys: Vec<Partition> = changes.iter().map(|m| (ctx.kafka.topic(&m.topic), m.partition)).collect();
    let now = ctx.kafka.group_reader(group)?.committed(&keys).await?;
    for m in &changes {
        let seen = now.get(&(ctx.kafka.topic(&m.topic), m.partition)).copied().flatten();
        if seen != Some(m.new) {
            bail!(
                "committed group {group}'s offsets, but {}/{} reads back {} instead of {}",
                m.topic,
                m.partition,
                seen.map_or_else(|| "nothing".to_owned(), |s| s.to_string()),
                m.new
            );
        }
    }
    Ok(())
}

fn describe_target(target: Target) -> String {
    match target {
        Target::Time(t) => format!("the first message at or after {}", timespec::show(t)),
        Target::Offset(o) => format!("offset {o}"),
    }
}

fn print(ctx: &Ctx, report: &ResetReport) -> anyhow::Result<()> {
    if ctx.output == OutputFormat::Json {
        return output::print_json(report);
    }
    let mut table = output::table(&["topic", "partition", "committed", "new", "change", "note"]);
    let mut hidden = 0;
    for m in &report.partitions {
        // A partition nothing was ever written to and the group never read says nothing.
        if m.committed.is_none() && m.end == 0 {
            hidden += 1;
            continue;
        }
        let change = match (m.replays, m.skips) {
            (0, 0) => "unchanged".to_owned(),
            (r, 0) => format!("replays {r}"),
            (_, s) => format!("skips {s}"),
        };
        table.add_row(vec![
            m.topic.clone(),
            m.partition.to_string(),
            m.committed.map_or_else(|| format!("- (starts at {})", m.log_start), |c| c.to_string()),
            m.new.to_string(),
            change,
            m.note.clone().unwrap_or_default(),
        ]);
    }
    output::print_line(&format!("group {} → {}", report.group, describe_target(report.target)))?;
    output::print_table(&mut table, "no messages and no committed offsets on these partitions")?;
    if hidden > 0 {
        output::print_line(&format!("({hidden} empty partitions not shown; -o json lists them)"))?;
    }
    output::print_line("")?;
    let totals = format!("{} messages replayed, {} skipped", report.replays, report.skips);
    if report.executed {
        let changed = report.partitions.iter().filter(|m| m.changes()).count();
        output::print_line(&format!(
            "committed new offsets on {changed} partition(s) of group {} ({totals}); its consumers start there when they next join",
            report.group
        ))?;
    } else {
        output::print_line(&format!(
            "dry run: nothing committed ({totals} if executed). Stop the group's consumers, then run again with --execute"
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Partition {
        ("orders.events".to_owned(), 3)
    }

    #[test]
    fn moving_back_replays_and_moving_forward_skips() {
        let back = Move::new(&key(), Some(10), (0, 12), 4);
        assert_eq!((back.new, back.replays, back.skips), (4, 6, 0));
        let forward = Move::new(&key(), Some(4), (0, 12), 12);
        assert_eq!((forward.new, forward.replays, forward.skips), (12, 0, 8));
        let same = Move::new(&key(), Some(7), (0, 12), 7);
        assert_eq!((same.replays, same.skips, same.changes()), (0, 0, false));
    }

    #[test]
    fn a_group_that_never_committed_counts_from_the_oldest_retained_offset() {
        let m = Move::new(&key(), None, (5, 12), 12);
        assert_eq!((m.new, m.replays, m.skips), (12, 0, 7));
        assert!(m.changes(), "committing makes the position explicit");
        let m = Move::new(&key(), None, (5, 12), 5);
        assert_eq!((m.replays, m.skips, m.changes()), (0, 0, true));
    }

    #[test]
    fn offsets_outside_what_the_partition_retains_are_kept_within_it_and_said() {
        let low = Move::new(&key(), Some(9), (5, 12), 0);
        assert_eq!((low.new, low.replays), (5, 4));
        assert!(low.note.as_deref().is_some_and(|n| n.contains("no longer retained")));
        let high = Move::new(&key(), Some(9), (5, 12), 99);
        assert_eq!((high.new, high.skips), (12, 3));
        assert!(high.note.as_deref().is_some_and(|n| n.contains("past the end")));
    }
}
