//! `sagactl trace <order-id>`: every message keyed by the order on every saga topic and
//! dead-letter topic, as one timeline, and a verdict ([`crate::verdict`]).

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared::envelope::header;
use uuid::Uuid;

use crate::cli::TraceArgs;
use crate::dlq::{dead_letter_of, redrive_header};
use crate::kafka::{Flow, Kafka, ReadOptions, Sink, Start, Stop};
use crate::output::{self, OutputFormat};
use crate::record::{KeyFields, Record, trace_id};
use crate::swimlane::{self, Drawing, Mark};
use crate::verdict::{self, Blocked, Fact, Verdict};
use crate::{Ctx, timespec};

/// One line of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The event's time (`ce_time`); for a dead letter, when it failed.
    pub time: DateTime<Utc>,
    /// The publishing service; for a dead letter, the service that gave up on it.
    pub service: String,
    pub event_type: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub trace_id: Option<String>,
    pub message_id: Option<String>,
    /// The id of the message that caused this one (`ce_causationid`).
    pub causation_id: Option<String>,
    pub details: KeyFields,
    /// Set when this is a dead letter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterInfo>,
    /// A redriven copy of a dead letter (`dlq_redriven_from`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redriven_from: Option<String>,
    #[serde(skip)]
    payload: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterInfo {
    pub id: String,
    pub error: String,
    pub attempts: Option<u32>,
}

/// The whole answer.
#[derive(Debug, Clone, Serialize)]
pub struct TraceReport {
    pub order_id: String,
    pub topics: Vec<String>,
    pub messages_scanned: u64,
    pub events: Vec<Entry>,
    pub verdict: Verdict,
}

impl Entry {
    fn of(kafka: &Kafka, record: &Record) -> Self {
        let envelope = record.envelope().ok();
        let payload = record.payload_json().unwrap_or(Value::Null);
        let dead = dead_letter_of(kafka, record);
        let event_type = record.event_type().unwrap_or_else(|| "(undecodable)".to_owned());
        let time = match &dead {
            Some(d) => d.failed_at(),
            None => envelope.as_ref().map(|e| e.time).or(record.timestamp),
        }
        .unwrap_or_else(Utc::now);
        let service = match &dead {
            Some(d) => d.service.to_owned(),
            None => record.header(header::SOURCE).unwrap_or_else(|| "?".to_owned()),
        };
        Self {
            time,
            service,
            event_type,
            topic: kafka.short(&record.topic).to_owned(),
            partition: record.partition,
            offset: record.offset,
            trace_id: record.header(header::TRACEPARENT).and_then(|tp| trace_id(&tp)),
            message_id: record.header(header::ID),
            causation_id: record.header(header::CAUSATION_ID),
            details: KeyFields::of(&payload),
            dead_letter: dead.as_ref().map(|d| DeadLetterInfo {
                id: d.id.clone(),
                error: d.error(),
                attempts: d.attempts(),
            }),
            redriven_from: record.header(redrive_header::REDRIVEN_FROM),
            payload,
        }
    }

    fn row(&self) -> Vec<String> {
        let (event, details) = match &self.dead_letter {
            Some(d) => (
                format!("DEAD-LETTERED {}", self.event_type),
                format!("id={} attempts={} error={}", d.id, d.attempts.unwrap_or(0), output::truncate(&d.error, 80)),
            ),
            None => {
                let mut details = self.details.summary();
                if let Some(from) = &self.redriven_from {
                    details = format!("{details} (redriven from {from})").trim().to_owned();
                }
                (self.event_type.clone(), details)
            }
        };
        vec![
            timespec::show(self.time),
            self.service.clone(),
            event,
            format!("{}/{}/{}", self.topic, self.partition, self.offset),
            self.trace_id.clone().unwrap_or_else(|| "-".into()),
            details,
        ]
    }
}

impl TraceReport {
    /// What the swimlane drawing shows.
    pub fn drawing(&self) -> Drawing {
        let state = serde_json::to_value(self.verdict.state).ok().and_then(|v| v.as_str().map(str::to_owned));
        Drawing {
            order_id: self.order_id.clone(),
            state: state.unwrap_or_default(),
            verdict: self.verdict.summary.clone(),
            notes: self.verdict.notes.clone(),
            events: self
                .events
                .iter()
                .map(|e| Mark {
                    time: e.time,
                    service: e.service.clone(),
                    event_type: e.event_type.clone(),
                    position: format!("{}/{}/{}", e.topic, e.partition, e.offset),
                    message_id: e.message_id.clone(),
                    causation_id: e.causation_id.clone(),
                    details: match &e.dead_letter {
                        Some(d) => format!("attempts={} error={}", d.attempts.unwrap_or(0), d.error),
                        None => e.details.summary(),
                    },
                    dead_letter: e.dead_letter.as_ref().map(|d| d.id.clone()),
                    redriven_from: e.redriven_from.clone(),
                })
                .collect(),
        }
    }
}

const COLUMNS: [&str; 6] = ["time", "service", "event", "topic/partition/offset", "trace id", "details"];

/// Collects the order's messages; when following, prints new ones as they come.
struct Tracer<'a> {
    kafka: &'a Kafka,
    bar: indicatif::ProgressBar,
    key: String,
    entries: Vec<Entry>,
    scanned: u64,
    follow: bool,
    format: OutputFormat,
    caught_up: bool,
    stuck_after: std::time::Duration,
}

impl Tracer<'_> {
    fn verdict(&self) -> Verdict {
        let facts: Vec<Fact> = self
            .entries
            .iter()
            .filter(|e| e.dead_letter.is_none() && e.event_type != "(undecodable)")
            .map(|e| Fact { event_type: e.event_type.clone(), time: e.time, payload: e.payload.clone() })
            .collect();
        let blocked: Vec<Blocked> = self
            .entries
            .iter()
            .filter_map(|e| {
                let dead = e.dead_letter.as_ref()?;
                let redriven = self.entries.iter().any(|c| c.redriven_from.as_deref() == Some(dead.id.as_str()));
                Some(Blocked {
                    id: dead.id.clone(),
                    service: e.service.clone(),
                    event_type: Some(e.event_type.clone()),
                    error: dead.error.clone(),
                    redriven,
                })
            })
            .collect();
        verdict::judge(&facts, &blocked, Utc::now(), self.stuck_after)
    }

    fn print_timeline(&mut self) -> anyhow::Result<()> {
        self.entries.sort_by(|a, b| (a.time, &a.topic, a.offset).cmp(&(b.time, &b.topic, b.offset)));
        let mut table = output::table(&COLUMNS);
        for e in &self.entries {
            table.add_row(e.row());
        }
        output::print_table(&mut table, &format!("no message keyed {} found", self.key))?;
        Ok(())
    }
}

impl Sink for Tracer<'_> {
    async fn record(&mut self, record: Record) -> anyhow::Result<Flow> {
        self.scanned += 1;
        if !record.has_key(&self.key) {
            return Ok(Flow::Continue);
        }
        let entry = Entry::of(self.kafka, &record);
        if self.caught_up && self.format == OutputFormat::Table {
            output::print_line(&entry.row().join("  "))?;
        }
        self.entries.push(entry);
        if self.caught_up && self.verdict().settled {
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }

    async fn caught_up(&mut self) -> anyhow::Result<Flow> {
        self.caught_up = true;
        self.bar.finish_and_clear();
        if !self.follow {
            return Ok(Flow::Stop);
        }
        let verdict = self.verdict();
        if self.format == OutputFormat::Table {
            self.print_timeline()?;
            if !verdict.settled {
                eprintln!("following new events of {} (Ctrl-C to stop): {}", self.key, verdict.summary);
            }
        }
        Ok(if verdict.settled { Flow::Stop } else { Flow::Continue })
    }
}

pub async fn run(ctx: &Ctx, args: TraceArgs) -> anyhow::Result<ExitCode> {
    let order_id = Uuid::parse_str(args.order_id.trim())
        .map_err(|_| anyhow!("invalid order id {:?}: expected a UUID, as POST /orders returned", args.order_id))?;
    let key = order_id.to_string();
    let reader = ctx.kafka.reader()?;
    let existing = reader.topic_partitions().await?;
    let topics: Vec<String> = ctx.kafka.topics().all().into_iter().filter(|t| existing.contains_key(t)).collect();
    if topics.is_empty() {
        bail!("none of the saga topics exist on {} (wrong --brokers or --topic-prefix?)", ctx.kafka.brokers());
    }
    let start = args.since.map_or(Start::Beginning, Start::Time);
    let plan = reader.plan(&topics, None, start, Stop::End).await?;
    let bar = ctx.progress.bar(plan.len(), "scanning");
    let mut tracer = Tracer {
        kafka: &ctx.kafka,
        bar: bar.clone(),
        key: key.clone(),
        entries: Vec::new(),
        scanned: 0,
        follow: args.follow,
        format: ctx.output,
        caught_up: false,
        stuck_after: args.stuck_after,
    };
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let read = reader.read(&plan, ReadOptions { follow: args.follow, deadline }, &bar, &mut tracer).await;
    bar.finish_and_clear();
    read?;

    let verdict = tracer.verdict();
    let found = verdict.state != verdict::State::NotFound;
    tracer.entries.sort_by(|a, b| (a.time, &a.topic, a.offset).cmp(&(b.time, &b.topic, b.offset)));
    let report = TraceReport {
        order_id: key,
        topics: topics.iter().map(|t| ctx.kafka.short(t).to_owned()).collect(),
        messages_scanned: tracer.scanned,
        events: std::mem::take(&mut tracer.entries),
        verdict,
    };
    if let Some(format) = args.format {
        let text = swimlane::render(&report.drawing(), format);
        std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?;
    } else {
        match ctx.output {
            OutputFormat::Json => output::print_json(&report)?,
            OutputFormat::Table => {
                if !args.follow {
                    tracer.entries = report.events;
                    tracer.print_timeline()?;
                }
                output::print_line("")?;
                output::print_line(&format!("verdict: {}", report.verdict.summary))?;
                for note in &report.verdict.notes {
                    output::print_line(&format!("  note: {note}"))?;
                }
            }
        }
    }
    // Like `kubectl get` of something that does not exist: the answer is printed, and scripts
    // can tell.
    Ok(if found { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
