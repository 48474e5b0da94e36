//! `sagactl lag`: per consumer group and partition, the committed offset, the end offset, the
//! lag between them, and the time lag (how old the oldest unconsumed message is).
//!
//! Committed offsets are read with an OffsetFetch under the group's id, without joining the
//! group (see [`crate::kafka`]). A partition the group never committed counts from the oldest
//! retained offset, where a new group starts (`auto.offset.reset=earliest`).

use std::collections::HashMap;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::topics::service;

use crate::cli::LagArgs;
use crate::kafka::Partition;
use crate::output::{self, OutputFormat};
use crate::{Ctx, saga, timespec};

#[derive(Debug, Clone, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The next offset the group will read (`None`: it never committed on this partition).
    pub committed: Option<i64>,
    /// The oldest retained offset.
    pub log_start: i64,
    /// The next offset to be written.
    pub end: i64,
    pub lag: i64,
    /// When the oldest unconsumed message was written (when there is one).
    pub oldest_unconsumed_at: Option<DateTime<Utc>>,
    pub time_lag_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupLag {
    pub group: String,
    pub total_lag: i64,
    pub max_time_lag_seconds: Option<f64>,
    pub partitions: Vec<PartitionLag>,
}

/// The lag of one group on `topics`. For a group that is not a saga service, partitions it
/// never committed are left out unless the topics were asked for explicitly.
pub async fn group_lag(ctx: &Ctx, group: &str, topics: &[String], all_partitions: bool) -> anyhow::Result<GroupLag> {
    let reader = ctx.kafka.reader()?;
    let existing = reader.topic_partitions().await?;
    let partitions: Vec<Partition> = topics
        .iter()
        .filter_map(|t| existing.get(t).map(|ps| (t, ps)))
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .collect();
    let committed = ctx.kafka.group_reader(group)?.committed(&partitions).await?;
    let marks = reader.watermarks(&partitions).await?;
    let mut rows: Vec<PartitionLag> = partitions
        .iter()
        .filter(|key| all_partitions || committed.get(*key).copied().flatten().is_some())
        .map(|key| {
            let (low, high) = marks.get(key).copied().unwrap_or((0, 0));
            let committed = committed.get(key).copied().flatten();
            let from = committed.unwrap_or(low).max(low);
            PartitionLag {
                topic: ctx.kafka.short(&key.0).to_owned(),
                partition: key.1,
                committed,
                log_start: low,
                end: high,
                lag: (high - from).max(0),
                oldest_unconsumed_at: None,
                time_lag_seconds: None,
            }
        })
        .collect();
    // The time lag: the age of the first message the group has not consumed yet.
    let lagging: Vec<(Partition, i64)> = rows
        .iter()
        .filter(|r| r.lag > 0)
        .map(|r| ((ctx.kafka.topic(&r.topic), r.partition), r.committed.unwrap_or(r.log_start).max(r.log_start)))
        .collect();
    let stamps: HashMap<Partition, DateTime<Utc>> = ctx.kafka.reader()?.timestamps_at(&lagging).await?;
    let now = Utc::now();
    for row in &mut rows {
        if row.lag == 0 {
            row.time_lag_seconds = Some(0.0);
        } else if let Some(at) = stamps.get(&(ctx.kafka.topic(&row.topic), row.partition)) {
            row.oldest_unconsumed_at = Some(*at);
            row.time_lag_seconds = Some(((now - *at).num_milliseconds().max(0) as f64) / 1000.0);
        }
    }
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(GroupLag {
        group: group.to_owned(),
        total_lag: rows.iter().map(|r| r.lag).sum(),
        max_time_lag_seconds: rows.iter().filter_map(|r| r.time_lag_seconds).reduce(f64::max),
        partitions: rows,
    })
}

pub async fn run(ctx: &Ctx, args: LagArgs) -> anyhow::Result<ExitCode> {
    let saga_topics = ctx.kafka.topics();
    // Each group with the service it belongs to. A service's name stands for its group
    // (`<prefix><service>`); any other name is a group id as it is.
    let groups: Vec<(String, Option<&'static str>)> = if args.groups.is_empty() {
        service::ALL.iter().map(|s| (saga_topics.group(s), Some(*s))).collect()
    } else {
        args.groups.iter().map(|g| saga::group_of(g, saga_topics)).collect()
    };
    let asked: Vec<String> = args.topics.iter().map(|t| ctx.kafka.topic(t)).collect();
    let mut report = Vec::new();
    for (group, service) in &groups {
        let (topics, all_partitions) = if !asked.is_empty() {
            (asked.clone(), true)
        } else if let Some(subscribed) = service.and_then(|s| saga::subscriptions(s, saga_topics)) {
            (subscribed, true)
        } else {
            (saga_topics.all(), false)
        };
        report.push(group_lag(ctx, group, &topics, all_partitions).await?);
    }
    match ctx.output {
        OutputFormat::Json => output::print_json(&serde_json::json!({ "groups": report }))?,
        OutputFormat::Table => {
            let mut table = output::table(&["group", "topic", "partition", "committed", "end", "lag", "time lag"]);
            let mut hidden = 0;
            for group in &report {
                for row in &group.partitions {
                    // A partition nothing was ever written to and the group never read says nothing.
                    if row.committed.is_none() && row.end == 0 {
                        hidden += 1;
                        continue;
                    }
                    table.add_row(vec![
                        group.group.clone(),
                        row.topic.clone(),
                        row.partition.to_string(),
                        row.committed.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                        row.end.to_string(),
                        row.lag.to_string(),
                        time_lag(row.time_lag_seconds),
                    ]);
                }
            }
            output::print_table(&mut table, "no messages and no committed offsets for these groups")?;
            if hidden > 0 {
                output::print_line(&format!("({hidden} empty partitions not shown; -o json lists them)"))?;
            }
            output::print_line("")?;
            for group in &report {
                let note = if group.partitions.is_empty() { " (no committed offsets)" } else { "" };
                output::print_line(&format!(
                    "{}: total lag {}, max time lag {}{note}",
                    group.group,
                    group.total_lag,
                    time_lag(group.max_time_lag_seconds)
                ))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn time_lag(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s <= 0.0 => "0s".to_owned(),
        Some(s) => timespec::human(std::time::Duration::from_secs_f64(s)),
        None => "-".to_owned(),
    }
}
