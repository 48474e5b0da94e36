//! `sagactl tail`: a live stream of saga events, one readable line each (or JSON lines), from
//! the end of each topic (or its beginning), until Ctrl-C, `--timeout` or `--max-messages`.

use std::io::{BufWriter, Stdout, Write as _};
use std::process::ExitCode;

use anyhow::bail;
use shared::envelope::header;

use crate::cli::TailArgs;
use crate::dlq::dead_letter_of;
use crate::kafka::{Flow, Kafka, ReadOptions, Sink, Start, Stop};
use crate::output::{self, OutputFormat};
use crate::record::{KeyFields, Record};
use crate::{Ctx, timespec};

struct Tail<'a> {
    kafka: &'a Kafka,
    format: OutputFormat,
    key: Option<String>,
    event_types: Vec<String>,
    max: Option<u64>,
    printed: u64,
    out: BufWriter<Stdout>,
}

impl Tail<'_> {
    fn line(&self, record: &Record) -> String {
        let time = record.envelope().ok().map(|e| e.time).or(record.timestamp).map(timespec::show).unwrap_or_default();
        let event = record.event_type().unwrap_or_else(|| "(undecodable)".to_owned());
        let (who, event, details) = match dead_letter_of(self.kafka, record) {
            Some(dead) => (
                dead.service.to_owned(),
                format!("DEAD-LETTERED {event}"),
                format!("id={} error={}", dead.id, output::truncate(&dead.error(), 80)),
            ),
            None => (
                record.header(header::SOURCE).unwrap_or_else(|| "?".to_owned()),
                event,
                record.payload_json().map(|p| KeyFields::of(&p).summary()).unwrap_or_default(),
            ),
        };
        let position = format!("{}/{}/{}", self.kafka.short(&record.topic), record.partition, record.offset);
        format!(
            "{time}  {position:<28} {who:<17} {event:<20} order={} {details}",
            record.key_text().unwrap_or_else(|| "-".to_owned())
        )
        .trim_end()
        .to_owned()
    }
}

impl Sink for Tail<'_> {
    async fn record(&mut self, record: Record) -> anyhow::Result<Flow> {
        if self.key.as_deref().is_some_and(|k| !record.has_key(k))
            || (!self.event_types.is_empty() && !record.event_type().is_some_and(|t| self.event_types.contains(&t)))
        {
            return Ok(Flow::Continue);
        }
        match self.format {
            OutputFormat::Json => output::print_json_line(&mut self.out, &record.to_json())?,
            OutputFormat::Table => writeln!(self.out, "{}", self.line(&record))?,
        }
        self.out.flush()?;
        self.printed += 1;
        Ok(if self.max.is_some_and(|max| self.printed >= max) { Flow::Stop } else { Flow::Continue })
    }

    async fn caught_up(&mut self) -> anyhow::Result<Flow> {
        Ok(Flow::Continue)
    }
}

pub async fn run(ctx: &Ctx, args: TailArgs) -> anyhow::Result<ExitCode> {
    if args.max_messages == Some(0) {
        bail!("--max-messages must be at least 1");
    }
    let reader = ctx.kafka.reader()?;
    let topics: Vec<String> = if args.topics.is_empty() {
        let existing = reader.topic_partitions().await?;
        ctx.kafka.topics().all().into_iter().filter(|t| existing.contains_key(t)).collect()
    } else {
        args.topics.iter().map(|t| ctx.kafka.topic(t)).collect()
    };
    if topics.is_empty() {
        bail!("none of the saga topics exist on {} (wrong --brokers or --topic-prefix?)", ctx.kafka.brokers());
    }
    let start = if args.from_beginning { Start::Beginning } else { Start::End };
    let plan = reader.plan(&topics, None, start, Stop::End).await?;
    // Printed once the start offsets are fixed: anything published from now on is shown.
    eprintln!("tailing {} topics (Ctrl-C to stop)", topics.len());
    let mut sink = Tail {
        kafka: &ctx.kafka,
        format: ctx.output,
        key: args.key,
        event_types: args.event_types,
        max: args.max_messages,
        printed: 0,
        out: BufWriter::new(std::io::stdout()),
    };
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    reader.read(&plan, ReadOptions { follow: true, deadline }, &indicatif::ProgressBar::hidden(), &mut sink).await?;
    sink.out.flush()?;
    Ok(ExitCode::SUCCESS)
}
