//! sagactl, the saga's operator CLI: trace an order across every topic (or draw it), replay topic
//! ranges (to stdout, another topic, or a projection rebuild), list/show/redrive dead letters,
//! show consumer lag, reset a stopped group's offsets, tail events, and generate load. `main.rs`
//! only parses and calls [`run`].

pub mod brokers;
pub mod cli;
pub mod dlq;
pub mod group;
pub mod kafka;
pub mod lag;
pub mod load;
pub mod output;
pub mod progress;
pub mod rebuild;
pub mod record;
pub mod replay;
pub mod saga;
pub mod swimlane;
pub mod tail;
pub mod timespec;
pub mod trace;
pub mod verdict;

use std::process::ExitCode;

use cli::{Cli, Command};
use kafka::Kafka;
use output::OutputFormat;
use progress::Progress;

/// What every command gets: how to reach Kafka, the output format, and whether to draw progress.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub kafka: Kafka,
    pub output: OutputFormat,
    pub progress: Progress,
}

/// Run one command; `Ok` carries the exit code (a report may exit non-zero, e.g. a rebuild that
/// found differences), `Err` is a failure to print.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    let ctx = Ctx {
        kafka: Kafka::with_brokers(
            brokers::resolve(g.brokers.as_deref(), Some(&g.data_dir)),
            &g.topic_prefix,
            g.kafka_timeout,
        )?,
        output: g.output,
        progress: Progress::new(g.no_progress),
    };
    match cli.command {
        Command::Trace(args) => trace::run(&ctx, args).await,
        Command::Replay(args) => replay::run(&ctx, args).await,
        Command::Rebuild(args) => rebuild::run(&ctx, args).await,
        Command::Dlq { command } => dlq::run(&ctx, command).await,
        Command::Lag(args) => lag::run(&ctx, args).await,
        Command::Group { command } => group::run(&ctx, command).await,
        Command::Tail(args) => tail::run(&ctx, args).await,
        Command::Load(args) => load::run(&ctx, args).await,
    }
}

/// An HTTP client for the order API that sends `api_key` (if any) with every request, marked
/// sensitive so that it never shows in debug output.
pub fn api_client(builder: reqwest::ClientBuilder, api_key: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| anyhow::anyhow!("the API key has characters a header cannot carry"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(builder.default_headers(headers).build()?)
}
