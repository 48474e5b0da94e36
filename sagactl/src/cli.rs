//! The command line: global options, and one subcommand per operator task. Every value is parsed
//! here (durations, times, service names, the load mix), so a command starts from typed input.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::load::Mix;
use crate::output::OutputFormat;
use crate::timespec::{parse_duration, parse_time};

/// Operate the order saga: trace an order across every topic (or draw it), replay topic ranges,
/// rebuild projections, inspect and redrive dead letters, watch consumer lag, reset a stopped
/// group's offsets, tail events, and generate load.
///
/// Read-only commands read Kafka by direct partition assignment under a throwaway group id
/// that never joins a group or commits, so live consumer groups are never touched. Only
/// `group reset-offsets --execute` writes a group's offsets, and only while it has no members.
#[derive(Debug, Parser)]
#[command(name = "sagactl", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Kafka bootstrap servers. Without this flag and KAFKA_BROKERS, sagactl reads the address
    /// the embedded system (`cargo run`) writes while it runs: broker.addr in $SAGA_DATA_DIR,
    /// else in ./data; with none of these, 127.0.0.1:9092. When the broker cannot be reached,
    /// the error says which of these it used and what it looked at.
    #[arg(long, global = true, env = "KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// The embedded system's data directory, where it publishes its broker's address
    /// (broker.addr) while it runs; read only when no broker is given.
    #[arg(long, global = true, env = "SAGA_DATA_DIR", default_value = "data", hide_default_value = true)]
    pub data_dir: std::path::PathBuf,
    /// Prefix of every saga topic name, as the services' TOPIC_PREFIX. Topic names given to
    /// sagactl are taken without it.
    #[arg(long, global = true, env = "TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Output format: human-readable tables, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// How long to wait for the broker on each request (e.g. 500ms, 10s).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub kafka_timeout: Duration,
    /// Never draw progress bars (they are drawn only when stderr is a terminal anyway).
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print one order's timeline across every saga topic and its dead letters, and say where
    /// the order stands: its outcome, or where it is stuck and which event it waits for.
    Trace(TraceArgs),
    /// Replay a range of a topic: to stdout as JSON lines, to another topic, or into a
    /// projection rebuild compared with the live read model.
    Replay(ReplayArgs),
    /// Rebuild a service's projection from Kafka (default) or from its event store into a
    /// fresh read model and compare it with the live one.
    Rebuild(RebuildArgs),
    /// List, show and redrive dead letters (`<service>.dlq`).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Consumer lag per group and partition: committed offset, end offset, lag and time lag.
    Lag(LagArgs),
    /// Consumer group operations: reset a stopped group's offsets to replay (or skip) messages.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Follow saga events live, one readable line each (JSON lines with `-o json`).
    Tail(TailArgs),
    /// Drive POST /orders at a fixed arrival rate (open model), wait for every saga to end, and
    /// report throughput, latency percentiles and outcomes.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The order id (the Kafka key of every message of its saga).
    pub order_id: String,
    /// Only read messages from this time on: RFC 3339 (2026-01-31T12:00:00Z) or an age (15m).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// After the timeline, keep printing the order's new events until it is settled (its outcome
    /// and every compensation and notice observed), --timeout passes, or Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: stop following after this long (e.g. 30s).
    #[arg(long, value_parser = parse_duration, requires = "follow")]
    pub timeout: Option<Duration>,
    /// Call an unfinished order stuck (rather than in progress) once its last event is this old.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub stuck_after: Duration,
    /// Draw the saga instead of listing it: `html`, one self-contained page (an SVG swimlane,
    /// one lane per service, causation arrows, compensations and dead letters marked, the
    /// verdict on top, the timeline as a table; no script, nothing fetched), or `svg`, the
    /// drawing alone. Printed on stdout: `> trace.html`.
    #[arg(long, value_enum, conflicts_with = "follow")]
    pub format: Option<crate::swimlane::DrawFormat>,
}

/// Where a range starts and ends. Offsets apply to every selected partition.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("start").args(["from_offset", "from_time"])))]
#[command(group(ArgGroup::new("end").args(["to_offset", "to_time"])))]
pub struct RangeArgs {
    /// Only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// First offset to read (default: the oldest retained).
    #[arg(long)]
    pub from_offset: Option<i64>,
    /// Read messages with a timestamp at or after this time (RFC 3339 or an age such as 15m).
    #[arg(long, value_parser = parse_time)]
    pub from_time: Option<DateTime<Utc>>,
    /// Last offset to read, inclusive (default: the end of the partition when the replay
    /// started).
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// Read messages with a timestamp before this time (RFC 3339 or an age).
    #[arg(long, value_parser = parse_time)]
    pub to_time: Option<DateTime<Utc>>,
    /// Only messages with this key (an order id).
    #[arg(long)]
    pub key: Option<String>,
    /// Only messages of this event type (`ce_type`); repeat for several.
    #[arg(long = "type", value_name = "EVENT_TYPE")]
    pub event_types: Vec<String>,
    /// Stop after this many matching messages.
    #[arg(long)]
    pub limit: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Topic to replay (without the prefix); repeat for several. With --rebuild it defaults to
    /// every saga event topic.
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    #[command(flatten)]
    pub range: RangeArgs,
    /// Republish the messages to this topic with their original key, headers and payload, plus
    /// replay provenance headers (`replay_original_topic`, ...).
    #[arg(long, conflicts_with = "rebuild")]
    pub into_topic: Option<String>,
    /// Allow --into-topic to be a live saga topic (its consumers will see the messages again;
    /// their inboxes skip message ids they processed).
    #[arg(long, requires = "into_topic")]
    pub force: bool,
    /// Fold the replayed events into a fresh read model of this service and compare it with
    /// the live one (given by --database-url or --api-url).
    #[arg(long, value_name = "SERVICE", value_parser = parse_service)]
    pub rebuild: Option<&'static str>,
    #[command(flatten)]
    pub live: LiveArgs,
}

/// Where the live read model is.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// The service's database (postgres://… or sqlite://…); its read model is compared.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The order API (e.g. http://127.0.0.1:8080); `GET /orders/{id}` is compared, when no
    /// --database-url is given.
    #[arg(long)]
    pub api_url: Option<String>,
    /// The API key sent with --api-url (an admin key reads every order).
    #[arg(long, env = "SAGA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The service whose projection to rebuild (order-svc has `order_view`).
    #[arg(value_parser = parse_service)]
    pub service: &'static str,
    /// Fold the service's event store (in --database-url) instead of replaying Kafka.
    #[arg(long, requires = "database_url")]
    pub from_store: bool,
    /// With --from-store: after comparing, replace the live projection by the rebuilt one
    /// (`order_svc::Orders::rebuild_projection`, one transaction) and compare again.
    #[arg(long, requires = "from_store")]
    pub apply: bool,
    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters: original topic, partition and offset, error, attempts, redrive state.
    List(DlqListArgs),
    /// Show one dead letter in full: headers, payload and error.
    Show(DlqShowArgs),
    /// Republish dead letters to their original topic with their original headers, and record
    /// the redrive.
    Redrive(DlqRedriveArgs),
}

#[derive(Debug, Args)]
pub struct DlqListArgs {
    /// Only this service's dead letters.
    #[arg(long, value_parser = parse_service)]
    pub service: Option<&'static str>,
}

#[derive(Debug, Args)]
pub struct DlqShowArgs {
    /// The dead letter's id, as `dlq list` prints it (`<service>/<partition>/<offset>`).
    pub id: String,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["all", "ids"])))]
pub struct DlqRedriveArgs {
    /// Every dead letter not redriven yet (of --service, if given).
    #[arg(long)]
    pub all: bool,
    /// A dead letter to redrive; repeat for several.
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<String>,
    /// With --all: only this service's dead letters.
    #[arg(long, value_parser = parse_service)]
    pub service: Option<&'static str>,
    /// Say what would be redriven, publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Redrive again a dead letter that was redriven before.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct LagArgs {
    /// Consumer group; repeat for several (default: the five service groups). A service's name
    /// stands for its group (`<topic prefix><service>`); any other name is a group id.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Only these topics (without the prefix); default: the group's subscriptions for a
    /// service group, every saga event topic otherwise.
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Move a group's committed offsets to a time or an offset, so that it replays (or skips)
    /// messages when its consumers next start. A dry run unless --execute; refuses while the
    /// group has members (see sagactl/README.md for what that checks).
    ResetOffsets(ResetOffsetsArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("to").required(true).args(["to_time", "to_offset"])))]
pub struct ResetOffsetsArgs {
    /// The group: a service's name stands for its group (`<topic prefix><service>`); any other
    /// name is a group id.
    #[arg(long)]
    pub group: String,
    /// Move to the first message at or after this time: RFC 3339 (2026-01-31T12:00:00Z), `now`,
    /// or an age (15m); a partition with nothing that recent moves to its end.
    #[arg(long, value_parser = parse_time)]
    pub to_time: Option<DateTime<Utc>>,
    /// Move every selected partition to this offset (kept within what the partition retains).
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// Only these topics (without the prefix); repeat for several. Default: a service group's
    /// subscriptions; for another group, the saga topics it has committed offsets on.
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Commit the new offsets (without it, only print the plan).
    #[arg(long)]
    pub execute: bool,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Topic to follow (without the prefix); repeat for several (default: every saga event
    /// topic and dead-letter topic).
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Only messages with this key (an order id).
    #[arg(long)]
    pub key: Option<String>,
    /// Only messages of this event type; repeat for several.
    #[arg(long = "type", value_name = "EVENT_TYPE")]
    pub event_types: Vec<String>,
    /// Start from the oldest retained message instead of the end.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop after this long (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Orders per second (the arrival rate, kept whatever the response times).
    #[arg(long)]
    pub rate: f64,
    /// How long to send orders (e.g. 30s, 2m).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Duration,
    /// Weighted scenarios mapped to the demo data: completed, out_of_stock, unknown_sku,
    /// payment_declined, unknown_customer, destination_not_served.
    #[arg(long, default_value = "completed=100")]
    pub mix: Mix,
    /// The order API.
    #[arg(long, env = "SAGA_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,
    /// The API key to send (an admin key: the load places orders for several customers and
    /// lists every order). Without one, the API must run in open mode.
    #[arg(long, env = "SAGA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// After the last order is sent, wait at most this long for every saga to end.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// Requests allowed in flight; an arrival beyond it is counted as dropped, not delayed.
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Timeout of one HTTP request.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub http_timeout: Duration,
    /// How often to look for orders that reached their end.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
}

/// A saga service name (`order-svc`, ...).
pub fn parse_service(raw: &str) -> Result<&'static str, String> {
    shared::topics::service::ALL
        .into_iter()
        .find(|s| *s == raw)
        .ok_or_else(|| format!("unknown service {raw:?} (one of {})", shared::topics::service::ALL.join(", ")))
}
