//! `sagactl dlq`: list, show and redrive dead letters.
//!
//! A dead letter is a message a consumer gave up on, published by the backbone to
//! `<service>.dlq` with the original key, headers and payload plus `dlq_*` headers naming its
//! origin, the error and the attempts. Its id here is `<service>/<partition>/<offset>` in that
//! topic: stable, and enough to find it again.
//!
//! A redrive republishes the message to its original topic with its original key, payload and
//! headers (the `dlq_*` ones removed), and records the redrive twice:
//! - on the copy itself: `dlq_redriven_at` (RFC 3339) and `dlq_redriven_from` (the dead letter's
//!   id), so a consumer, `trace` and a second dead-lettering all show where it came from;
//! - in the `sagactl.redrives` topic (with the topic prefix), one JSON record per redrive keyed
//!   by the dead letter's id: `dlq list` reads it to show what was redriven, and `redrive`
//!   skips those unless `--force`.
//!
//! The copy keeps its message id (`ce_id`): the failed attempt rolled back, so the consumer's
//! inbox has not seen it and processes it normally.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::consumer::dlq_header;
use shared::envelope::header;
use shared::topics::service;

use crate::cli::{DlqCommand, DlqListArgs, DlqRedriveArgs, DlqShowArgs};
use crate::kafka::{Collect, Kafka, Outgoing, ReadOptions, Start, Stop, publish};
use crate::output::{self, OutputFormat};
use crate::record::Record;
use crate::{Ctx, saga};

/// Headers a redrive adds to the republished copy.
pub mod redrive_header {
    /// When the copy was republished (RFC 3339).
    pub const REDRIVEN_AT: &str = "dlq_redriven_at";
    /// The dead letter it was republished from (`<service>/<partition>/<offset>`).
    pub const REDRIVEN_FROM: &str = "dlq_redriven_from";
}

/// The topic where redrives are recorded (without the prefix).
pub const REDRIVES_TOPIC: &str = "sagactl.redrives";

/// A dead letter as read from `<service>.dlq`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: String,
    /// The consuming service that dead-lettered it.
    pub service: &'static str,
    pub record: Record,
}

impl DeadLetter {
    pub fn new(service: &'static str, record: Record) -> Self {
        Self { id: format!("{service}/{}/{}", record.partition, record.offset), service, record }
    }

    pub fn original_topic(&self) -> Option<String> {
        self.record.header(dlq_header::ORIGINAL_TOPIC)
    }

    pub fn original_partition(&self) -> Option<i32> {
        self.record.header(dlq_header::ORIGINAL_PARTITION).and_then(|v| v.parse().ok())
    }

    pub fn original_offset(&self) -> Option<i64> {
        self.record.header(dlq_header::ORIGINAL_OFFSET).and_then(|v| v.parse().ok())
    }

    pub fn error(&self) -> String {
        self.record.header(dlq_header::ERROR).unwrap_or_default()
    }

    pub fn attempts(&self) -> Option<u32> {
        self.record.header(dlq_header::ATTEMPTS).and_then(|v| v.parse().ok())
    }

    pub fn failed_at(&self) -> Option<DateTime<Utc>> {
        self.record
            .header(dlq_header::FAILED_AT)
            .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
            .map(|t| t.with_timezone(&Utc))
            .or(self.record.timestamp)
    }

    pub fn event_type(&self) -> Option<String> {
        self.record.event_type()
    }

    /// The original headers: everything but the `dlq_*` ones.
    pub fn original_headers(&self) -> Vec<(String, Option<Vec<u8>>)> {
        self.record.headers.iter().filter(|(k, _)| !k.starts_with("dlq_")).cloned().collect()
    }

    fn summary(&self, redrive: Option<&RedriveRecord>) -> DeadLetterSummary {
        DeadLetterSummary {
            id: self.id.clone(),
            service: self.service.to_owned(),
            failed_at: self.failed_at(),
            original_topic: self.original_topic(),
            original_partition: self.original_partition(),
            original_offset: self.original_offset(),
            consumer_group: self.record.header(dlq_header::CONSUMER_GROUP),
            event_type: self.event_type(),
            message_id: self.record.header(header::ID),
            key: self.record.key_text(),
            attempts: self.attempts(),
            error: self.error(),
            redriven_from: self.record.header(redrive_header::REDRIVEN_FROM),
            redriven: redrive.cloned(),
        }
    }
}

/// One line of `dlq list`.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterSummary {
    pub id: String,
    pub service: String,
    pub failed_at: Option<DateTime<Utc>>,
    pub original_topic: Option<String>,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    pub consumer_group: Option<String>,
    pub event_type: Option<String>,
    pub message_id: Option<String>,
    pub key: Option<String>,
    pub attempts: Option<u32>,
    pub error: String,
    /// Set when this dead letter is itself a redriven copy that failed again.
    pub redriven_from: Option<String>,
    /// The last redrive of this dead letter, if any.
    pub redriven: Option<RedriveRecord>,
}

/// What `sagactl.redrives` records per redrive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedriveRecord {
    pub dead_letter: String,
    pub original_topic: String,
    pub republished_partition: i32,
    pub republished_offset: i64,
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    pub key: Option<String>,
    pub redriven_at: DateTime<Utc>,
    pub redriven_by: String,
}

/// `<service>/<partition>/<offset>`.
pub fn parse_id(raw: &str) -> anyhow::Result<(&'static str, i32, i64)> {
    let bad =
        || anyhow!("invalid dead letter id {raw:?}: expected <service>/<partition>/<offset>, as `dlq list` prints");
    let mut parts = raw.trim().split('/');
    let (Some(name), Some(partition), Some(offset), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let service = service::ALL.into_iter().find(|s| *s == name).ok_or_else(|| {
        anyhow!("invalid dead letter id {raw:?}: unknown service {name:?} (one of {})", service::ALL.join(", "))
    })?;
    let partition: i32 = partition.parse().map_err(|_| bad())?;
    let offset: i64 = offset.parse().map_err(|_| bad())?;
    if partition < 0 || offset < 0 {
        return Err(bad());
    }
    Ok((service, partition, offset))
}

pub async fn run(ctx: &Ctx, command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List(args) => list(ctx, args).await,
        DlqCommand::Show(args) => show(ctx, args).await,
        DlqCommand::Redrive(args) => redrive(ctx, args).await,
    }
}

/// Every dead letter of `services` (their topics that exist).
pub async fn read_all(ctx: &Ctx, services: &[&'static str]) -> anyhow::Result<Vec<DeadLetter>> {
    let reader = ctx.kafka.reader()?;
    let existing = reader.topic_partitions().await?;
    let topics: Vec<String> =
        services.iter().map(|s| ctx.kafka.topics().dead_letter(s)).filter(|t| existing.contains_key(t)).collect();
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let plan = reader.plan(&topics, None, Start::Beginning, Stop::End).await?;
    let bar = ctx.progress.bar(plan.len(), "dead letters");
    let mut collect = Collect::default();
    reader.read(&plan, ReadOptions::default(), &bar, &mut collect).await?;
    bar.finish_and_clear();
    let mut letters: Vec<DeadLetter> = collect
        .records
        .into_iter()
        .filter_map(|r| saga::dead_letter_owner(&r.topic, ctx.kafka.topics()).map(|s| DeadLetter::new(s, r)))
        .collect();
    letters.sort_by_key(|d| (d.failed_at(), d.id.clone()));
    Ok(letters)
}

/// The latest redrive of each dead letter, from `sagactl.redrives`.
pub async fn redrives(ctx: &Ctx) -> anyhow::Result<HashMap<String, RedriveRecord>> {
    let topic = ctx.kafka.topic(REDRIVES_TOPIC);
    let reader = ctx.kafka.reader()?;
    if !reader.topic_partitions().await?.contains_key(&topic) {
        return Ok(HashMap::new());
    }
    let plan = reader.plan(&[topic], None, Start::Beginning, Stop::End).await?;
    let mut collect = Collect::default();
    reader.read(&plan, ReadOptions::default(), &indicatif::ProgressBar::hidden(), &mut collect).await?;
    Ok(collect
        .records
        .iter()
        .filter_map(|r| r.payload.as_deref().and_then(|p| serde_json::from_slice::<RedriveRecord>(p).ok()))
        .map(|r| (r.dead_letter.clone(), r))
        .collect())
}

async fn list(ctx: &Ctx, args: DlqListArgs) -> anyhow::Result<ExitCode> {
    let services: Vec<&'static str> = args.service.map_or_else(|| service::ALL.to_vec(), |s| vec![s]);
    let letters = read_all(ctx, &services).await?;
    let redrives = redrives(ctx).await?;
    let summaries: Vec<DeadLetterSummary> = letters.iter().map(|d| d.summary(redrives.get(&d.id))).collect();
    match ctx.output {
        OutputFormat::Json => output::print_json(&json!({ "dead_letters": summaries }))?,
        OutputFormat::Table => {
            let mut table =
                output::table(&["id", "failed at", "original", "type", "key", "attempts", "error", "redriven"]);
            for s in &summaries {
                let original = match (&s.original_topic, s.original_partition, s.original_offset) {
                    (Some(t), Some(p), Some(o)) => format!("{}/{p}/{o}", ctx.kafka.short(t)),
                    (Some(t), _, _) => ctx.kafka.short(t).to_owned(),
                    _ => "?".to_owned(),
                };
                table.add_row(vec![
                    s.id.clone(),
                    s.failed_at.map(crate::timespec::show).unwrap_or_default(),
                    original,
                    s.event_type.clone().unwrap_or_else(|| "(undecodable)".into()),
                    s.key.clone().unwrap_or_default(),
                    s.attempts.map(|a| a.to_string()).unwrap_or_default(),
                    output::truncate(&s.error, 60),
                    s.redriven.as_ref().map(|r| crate::timespec::show(r.redriven_at)).unwrap_or_else(|| "-".into()),
                ]);
            }
            output::print_table(&mut table, "no dead letters")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Read one dead letter by id.
async fn find(ctx: &Ctx, id: &str) -> anyhow::Result<DeadLetter> {
    let (service, partition, offset) = parse_id(id)?;
    let topic = ctx.kafka.topics().dead_letter(service);
    let reader = ctx.kafka.reader()?;
    if !reader.topic_partitions().await?.contains_key(&topic) {
        bail!("no dead letter {id}: topic {topic} does not exist");
    }
    let plan =
        reader.plan(std::slice::from_ref(&topic), Some(partition), Start::Offset(offset), Stop::Offset(offset)).await?;
    let mut collect = Collect::default();
    reader.read(&plan, ReadOptions::default(), &indicatif::ProgressBar::hidden(), &mut collect).await?;
    collect
        .records
        .into_iter()
        .find(|r| r.offset == offset)
        .map(|r| DeadLetter::new(service, r))
        .ok_or_else(|| anyhow!("no dead letter {id} (no message at offset {offset} of {topic}/{partition})"))
}

async fn show(ctx: &Ctx, args: DlqShowArgs) -> anyhow::Result<ExitCode> {
    let letter = find(ctx, &args.id).await?;
    let redrives = redrives(ctx).await?;
    let summary = letter.summary(redrives.get(&letter.id));
    let payload = letter.record.payload_json();
    match ctx.output {
        OutputFormat::Json => {
            let mut value = serde_json::to_value(&summary)?;
            value["headers"] = serde_json::to_value(letter.record.text_headers())?;
            value["payload"] = payload.unwrap_or(Value::Null);
            if letter.record.payload_json().is_none() {
                value["payload_text"] =
                    letter.record.payload.as_deref().map(|p| String::from_utf8_lossy(p).into_owned()).into();
            }
            output::print_json(&value)?;
        }
        OutputFormat::Table => {
            let mut table = output::table(&["field", "value"]);
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            table.add_row(vec!["id".into(), summary.id.clone()]);
            table.add_row(vec!["dead-lettered by".into(), summary.service.clone()]);
            table.add_row(vec!["failed at".into(), opt(summary.failed_at.map(crate::timespec::show))]);
            table.add_row(vec!["original topic".into(), opt(summary.original_topic.clone())]);
            table.add_row(vec!["original partition".into(), opt(summary.original_partition.map(|p| p.to_string()))]);
            table.add_row(vec!["original offset".into(), opt(summary.original_offset.map(|o| o.to_string()))]);
            table.add_row(vec!["consumer group".into(), opt(summary.consumer_group.clone())]);
            table.add_row(vec!["event type".into(), opt(summary.event_type.clone())]);
            table.add_row(vec!["message id".into(), opt(summary.message_id.clone())]);
            table.add_row(vec!["key".into(), opt(summary.key.clone())]);
            table.add_row(vec!["attempts".into(), opt(summary.attempts.map(|a| a.to_string()))]);
            table.add_row(vec!["error".into(), summary.error.clone()]);
            if let Some(from) = &summary.redriven_from {
                table.add_row(vec!["redriven copy of".into(), from.clone()]);
            }
            table.add_row(vec![
                "redriven".into(),
                summary.redriven.as_ref().map_or_else(
                    || "no".to_owned(),
                    |r| {
                        format!(
                            "{} to {}/{}/{} by {}",
                            crate::timespec::show(r.redriven_at),
                            r.original_topic,
                            r.republished_partition,
                            r.republished_offset,
                            r.redriven_by
                        )
                    },
                ),
            ]);
            output::print_table(&mut table, "")?;
            output::print_line("\nheaders:")?;
            for (k, v) in letter.record.text_headers() {
                output::print_line(&format!("  {k}: {v}"))?;
            }
            output::print_line("\npayload:")?;
            let text = match payload {
                Some(json) => serde_json::to_string_pretty(&json)?,
                None => letter
                    .record
                    .payload
                    .as_deref()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default(),
            };
            output::print_line(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What happened to one dead letter in a redrive.
#[derive(Debug, Clone, Serialize)]
pub struct RedriveOutcome {
    pub id: String,
    pub original_topic: Option<String>,
    /// `redriven`, `would_redrive`, `skipped` or `failed`.
    pub result: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<RedriveRecord>,
}

async fn redrive(ctx: &Ctx, args: DlqRedriveArgs) -> anyhow::Result<ExitCode> {
    let redriven = redrives(ctx).await?;
    let letters: Vec<DeadLetter> = if args.all {
        let services: Vec<&'static str> = args.service.map_or_else(|| service::ALL.to_vec(), |s| vec![s]);
        read_all(ctx, &services).await?
    } else {
        // Check every id before redriving any.
        for id in &args.ids {
            parse_id(id)?;
        }
        let mut letters = Vec::new();
        for id in &args.ids {
            letters.push(find(ctx, id).await?);
        }
        letters
    };
    let producer = if args.dry_run { None } else { Some(ctx.kafka.producer()?) };
    let redrives_topic = ctx.kafka.topic(REDRIVES_TOPIC);
    if producer.is_some() {
        // Best effort: a broker without CreateTopics creates it on first use.
        let _ = ctx.kafka.create_topic(&redrives_topic, 1).await;
    }
    let by = format!("sagactl ({})", std::env::var("USER").unwrap_or_else(|_| "unknown user".into()));
    let mut outcomes = Vec::new();
    for letter in &letters {
        let original_topic = letter.original_topic();
        let outcome = |result, detail: String, record| RedriveOutcome {
            id: letter.id.clone(),
            original_topic: original_topic.clone(),
            result,
            detail,
            record,
        };
        if let Some(previous) = redriven.get(&letter.id).filter(|_| !args.force) {
            outcomes.push(outcome(
                "skipped",
                format!(
                    "redriven before at {} (--force to redrive again)",
                    crate::timespec::show(previous.redriven_at)
                ),
                None,
            ));
            continue;
        }
        let Some(topic) = original_topic.clone() else {
            outcomes.push(outcome("failed", "no dlq_original_topic header: origin unknown".into(), None));
            continue;
        };
        let Some(producer) = &producer else {
            outcomes.push(outcome("would_redrive", format!("would republish to {topic}"), None));
            continue;
        };
        let now = Utc::now();
        let mut headers = letter.original_headers();
        headers.push((redrive_header::REDRIVEN_AT.to_owned(), Some(now.to_rfc3339().into_bytes())));
        headers.push((redrive_header::REDRIVEN_FROM.to_owned(), Some(letter.id.clone().into_bytes())));
        let message = Outgoing {
            key: letter.record.key.as_deref(),
            headers: &headers,
            payload: letter.record.payload.as_deref(),
        };
        let (partition, offset) = match publish(producer, &topic, message, ctx.kafka.timeout()).await {
            Ok(position) => position,
            Err(err) => {
                outcomes.push(outcome("failed", format!("{err:#}"), None));
                continue;
            }
        };
        let record = RedriveRecord {
            dead_letter: letter.id.clone(),
            original_topic: topic.clone(),
            republished_partition: partition,
            republished_offset: offset,
            message_id: letter.record.header(header::ID),
            event_type: letter.event_type(),
            key: letter.record.key_text(),
            redriven_at: now,
            redriven_by: by.clone(),
        };
        let body = serde_json::to_vec(&record)?;
        let logged = publish(
            producer,
            &redrives_topic,
            Outgoing { key: Some(letter.id.as_bytes()), headers: &[], payload: Some(&body) },
            ctx.kafka.timeout(),
        )
        .await
        .with_context(|| format!("republished {} but failed to record the redrive", letter.id));
        match logged {
            Ok(_) => outcomes.push(outcome(
                "redriven",
                format!("republished to {}/{partition}/{offset}", ctx.kafka.short(&topic)),
                Some(record),
            )),
            Err(err) => outcomes.push(outcome("failed", format!("{err:#}"), Some(record))),
        }
    }
    let failed = outcomes.iter().any(|o| o.result == "failed");
    match ctx.output {
        OutputFormat::Json => output::print_json(&json!({ "dry_run": args.dry_run, "redrives": outcomes }))?,
        OutputFormat::Table => {
            let mut table = output::table(&["id", "original topic", "result", "detail"]);
            for o in &outcomes {
                table.add_row(vec![
                    o.id.clone(),
                    o.original_topic.as_deref().map(|t| ctx.kafka.short(t).to_owned()).unwrap_or_default(),
                    o.result.to_owned(),
                    o.detail.clone(),
                ]);
            }
            output::print_table(&mut table, "no dead letters to redrive")?;
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Used by `trace`: the kafka side of a dead letter in an order's timeline.
pub fn dead_letter_of(kafka: &Kafka, record: &Record) -> Option<DeadLetter> {
    saga::dead_letter_owner(&record.topic, kafka.topics()).map(|s| DeadLetter::new(s, record.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_ids_name_a_service_partition_and_offset() {
        assert_eq!(parse_id("payment-svc/2/17").expect("valid"), (service::PAYMENT, 2, 17));
        for bad in [
            "",
            "payment-svc",
            "payment-svc/2",
            "payment-svc/x/1",
            "nope-svc/0/0",
            "payment-svc/0/1/2",
            "payment-svc/-1/0",
        ] {
            assert!(parse_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_redrive_keeps_the_original_headers_only() {
        let record = Record {
            topic: "order-svc.dlq".into(),
            partition: 0,
            offset: 4,
            timestamp: None,
            key: None,
            headers: vec![
                ("ce_id".into(), Some(b"x".to_vec())),
                (dlq_header::ERROR.into(), Some(b"boom".to_vec())),
                (redrive_header::REDRIVEN_AT.into(), Some(b"t".to_vec())),
            ],
            payload: None,
        };
        let letter = DeadLetter::new(service::ORDER, record);
        assert_eq!(letter.id, "order-svc/0/4");
        assert_eq!(letter.original_headers(), vec![("ce_id".to_owned(), Some(b"x".to_vec()))]);
    }
}
