//! Projection rebuilds: fold a service's events into a fresh read model, in memory, and compare
//! it with the live one. order-svc is the service with a projection (`order_view`).
//!
//! Two sources of events:
//! - Kafka (`replay --rebuild order-svc`, `rebuild order-svc`): the order stream is OrderPlaced,
//!   every upstream event and the terminal events, which are exactly the messages keyed by the
//!   order on the five event topics. Each order's messages are folded OrderPlaced first, then by
//!   event time, each message id once, with order-svc's own [`domain::evolve`].
//! - the event store (`rebuild order-svc --from-store`): every stream in order-svc's `events`
//!   table, folded as [`order_svc::Orders::rebuild_projection`] folds them. `--apply` then runs
//!   that function to replace the live projection.
//!
//! Two live read models: the `order_view` rows of order-svc's database (`--database-url`), or
//! `GET /orders/{id}` (`--api-url`). Fields compared: the order's summary (customer, status,
//! items, total, currency, reason, created_at) plus, from the database, the `status`,
//! `terminal` and `deadline_at` columns, or, from the API, the compensations, the address and
//! the event types of the timeline. Not compared: `updated_at` and `ended_at`, which are when
//! order-svc recorded the last and the terminal event, times a replay from Kafka cannot know.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use order_svc::domain::{self, OrderEvent, OrderState};
use order_svc::storage::OrderView;
use serde::Serialize;
use serde_json::{Map, Value, json};
use shared::contracts::event_type as ev;
use shared::db::{Db, DbOptions};
use shared::event_store::EventStore;
use shared::topics::service;
use sqlx::types::Json;
use uuid::Uuid;

use crate::cli::{LiveArgs, RebuildArgs};
use crate::kafka::{Collect, ReadOptions, Start, Stop};
use crate::output::{self, OutputFormat};
use crate::record::Record;
use crate::{Ctx, progress::Progress};

/// The only service with a projection.
pub fn check_service(service: &str) -> anyhow::Result<()> {
    if service == service::ORDER {
        return Ok(());
    }
    bail!(
        "{service} has no projection to rebuild: only order-svc keeps a read model (order_view); \
         the other services fold their aggregates from their event stores on every read"
    )
}

/// A fresh read model, folded from events.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub orders: BTreeMap<Uuid, OrderState>,
    /// Orders with events but no OrderPlaced among them (outside the range read, or no longer
    /// retained): nothing to compare.
    pub incomplete: BTreeSet<Uuid>,
    pub events: u64,
    pub undecodable: u64,
}

impl Rebuilt {
    fn apply(&mut self, order_id: Uuid, event: &OrderEvent, at: DateTime<Utc>) {
        let state = self.orders.remove(&order_id);
        match domain::evolve(state, event, at) {
            Some(state) => {
                self.incomplete.remove(&order_id);
                self.orders.insert(order_id, state);
            }
            None => {
                self.incomplete.insert(order_id);
            }
        }
    }
}

/// An order's event as replayed: OrderPlaced sorts first, then by event time and message id.
type Replayed = (bool, DateTime<Utc>, Uuid, OrderEvent);

/// Fold replayed Kafka messages (any topics, any order).
pub fn from_records(records: &[Record]) -> Rebuilt {
    let mut rebuilt = Rebuilt::default();
    let mut by_order: HashMap<Uuid, Vec<Replayed>> = HashMap::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for record in records {
        let decoded = record.envelope().ok().and_then(|envelope| {
            let event = OrderEvent::from_payload(&envelope.event_type, envelope.data.clone()).ok()?;
            Some((envelope, event))
        });
        let Some((envelope, event)) = decoded else {
            rebuilt.undecodable += 1;
            continue;
        };
        rebuilt.events += 1;
        if !seen.insert(envelope.id) {
            continue; // a republished copy (outbox relay retry, redrive) of a message already read
        }
        by_order.entry(event.order_id()).or_default().push((
            envelope.event_type != ev::ORDER_PLACED,
            envelope.time,
            envelope.id,
            event,
        ));
    }
    for (order_id, mut events) in by_order {
        events.sort_by_key(|(not_placed, time, id, _)| (*not_placed, *time, *id));
        for (_, time, _, event) in &events {
            rebuilt.apply(order_id, event, *time);
        }
    }
    rebuilt
}

/// Fold order-svc's event store, as `rebuild_projection` does.
pub async fn from_store(db: &Db, store: &EventStore, progress: Progress) -> anyhow::Result<Rebuilt> {
    let total: i64 = shared::on_db!(db, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await)
        .context("failed to count the events (is this order-svc's database?)")?;
    let bar = progress.bar(total.max(0) as u64, "folding");
    let mut rebuilt = Rebuilt::default();
    let mut after = 0;
    loop {
        let mut tx = db.begin_read().await.context("failed to open a read transaction")?;
        let batch = store.read_all(&mut tx, after, 1000).await.context("failed to read the event store")?;
        tx.rollback().await.ok();
        let Some(last) = batch.last() else { break };
        after = last.position;
        for recorded in batch {
            bar.inc(1);
            let Ok(order_id) = Uuid::parse_str(&recorded.stream_id) else { continue };
            match OrderEvent::from_payload(&recorded.event_type, recorded.payload) {
                Ok(event) => {
                    rebuilt.events += 1;
                    rebuilt.apply(order_id, &event, recorded.recorded_at);
                }
                Err(_) => rebuilt.undecodable += 1,
            }
        }
    }
    bar.finish_and_clear();
    Ok(rebuilt)
}

/// The rebuilt order as fields to compare.
fn fresh_fields(state: &OrderState) -> Map<String, Value> {
    let view = OrderView::from(state);
    let mut fields = match serde_json::to_value(&view) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let mut types: Vec<String> = view.events.iter().map(|e| e.event_type.clone()).collect();
    types.sort();
    fields.insert("event_types".into(), json!(types));
    fields.insert("row.status".into(), json!(state.status().as_str()));
    fields.insert("row.terminal".into(), json!(state.is_terminal()));
    fields.insert("row.deadline_at".into(), json!(state.deadline_at()));
    fields
}

/// Where the live read model is.
pub enum Live {
    Database { db: Db },
    Api { client: reqwest::Client, base: String },
}

impl Live {
    pub fn name(&self) -> &'static str {
        match self {
            Live::Database { .. } => "database",
            Live::Api { .. } => "api",
        }
    }
}

/// Connect to order-svc's database for reading (a missing SQLite file is an error, never
/// created).
pub async fn connect(url: &str) -> anyhow::Result<Db> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        let path = path.split('?').next().unwrap_or(path);
        if !path.is_empty() && path != ":memory:" && !Path::new(path).exists() {
            bail!("no database at {path} (check --database-url)");
        }
    }
    let options = DbOptions { max_connections: 2, acquire_timeout: Duration::from_secs(10) };
    let db = Db::connect(url, &options)
        .await
        .with_context(|| format!("failed to connect to {}", shared::config::redact_url(url)))?;
    let has_view = shared::on_db!(&db, |pool| {
        sqlx::query("SELECT COUNT(*) FROM order_view").execute(pool).await.map(|r| r.rows_affected())
    });
    has_view.map_err(|_| {
        anyhow!("{} has no order_view table: is it order-svc's database?", shared::config::redact_url(url))
    })?;
    Ok(db)
}

pub async fn live(args: &LiveArgs) -> anyhow::Result<Live> {
    if let Some(url) = &args.database_url {
        return Ok(Live::Database { db: connect(url).await? });
    }
    if let Some(base) = &args.api_url {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("invalid --api-url {base:?}: expected http://host:port");
        }
        let client =
            crate::api_client(reqwest::Client::builder().timeout(Duration::from_secs(10)), args.api_key.as_deref())?;
        return Ok(Live::Api { client, base });
    }
    bail!("where is the live read model? pass --database-url (order-svc's database) or --api-url (the order API)")
}

/// The live `order_view` rows as fields to compare.
async fn live_rows(db: &Db) -> anyhow::Result<HashMap<Uuid, Map<String, Value>>> {
    type Row = (Uuid, String, bool, DateTime<Utc>, Json<Value>);
    let rows: Vec<Row> = shared::on_db!(db, |pool| {
        sqlx::query_as("SELECT order_id, status, terminal, deadline_at, summary FROM order_view").fetch_all(pool).await
    })
    .context("failed to read order_view")?;
    Ok(rows
        .into_iter()
        .map(|(id, status, terminal, deadline_at, Json(summary))| {
            let mut fields = match summary {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            fields.insert("row.status".into(), json!(status));
            fields.insert("row.terminal".into(), json!(terminal));
            fields.insert("row.deadline_at".into(), json!(deadline_at));
            (id, fields)
        })
        .collect())
}

/// `GET /orders/{id}` as fields to compare (`None`: 404).
async fn live_order(client: &reqwest::Client, base: &str, id: Uuid) -> anyhow::Result<Option<Map<String, Value>>> {
    let response =
        client.get(format!("{base}/orders/{id}")).send().await.with_context(|| format!("GET {base}/orders/{id}"))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        bail!("GET {base}/orders/{id} answered {}", response.status());
    }
    let Value::Object(mut fields) = response.json::<Value>().await? else {
        bail!("GET {base}/orders/{id} did not answer an object");
    };
    let mut types: Vec<String> = fields
        .get("events")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|e| e["type"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    types.sort();
    fields.insert("event_types".into(), json!(types));
    Ok(Some(fields))
}

/// One field that differs.
#[derive(Debug, Clone, Serialize)]
pub struct FieldDiff {
    pub field: String,
    pub rebuilt: Value,
    pub live: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub order_id: Uuid,
    /// `fields`, `missing_in_live`, or `live_only` (a live row no stream explains).
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldDiff>,
}

const NOT_COMPARED: [&str; 4] = ["updated_at", "ended_at", "events", "id"];

/// Compare the fields the live side has (except [`NOT_COMPARED`]).
fn diff(fresh: &Map<String, Value>, live: &Map<String, Value>) -> Vec<FieldDiff> {
    let mut fields: Vec<&String> = live.keys().filter(|k| !NOT_COMPARED.contains(&k.as_str())).collect();
    fields.sort();
    fields
        .into_iter()
        .filter_map(|field| {
            let live_value = live.get(field).cloned().unwrap_or(Value::Null);
            let fresh_value = fresh.get(field).cloned().unwrap_or(Value::Null);
            (!same(&fresh_value, &live_value)).then(|| FieldDiff {
                field: field.clone(),
                rebuilt: fresh_value,
                live: live_value,
            })
        })
        .collect()
}

/// Equal, with times compared at microsecond precision (PostgreSQL keeps microseconds).
fn same(a: &Value, b: &Value) -> bool {
    let time = |v: &Value| v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.timestamp_micros());
    match (time(a), time(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    pub service: &'static str,
    /// `kafka` or `event_store`.
    pub source: &'static str,
    /// `database` or `api`.
    pub live: &'static str,
    pub events_read: u64,
    pub undecodable: u64,
    pub orders_rebuilt: usize,
    pub incomplete_streams: usize,
    pub compared: usize,
    pub matching: usize,
    pub differences: Vec<Difference>,
    /// Live rows with no rebuilt order (only when the whole source was read; informational for
    /// Kafka, whose retention may have dropped old orders).
    pub live_only: Option<Vec<Uuid>>,
    /// `--apply`: rows written by `rebuild_projection`, and the differences left afterwards.
    pub applied: Option<usize>,
    pub differences_after_apply: Option<usize>,
}

/// Compare a rebuilt model with the live one.
pub async fn compare(
    rebuilt: &Rebuilt,
    live: &Live,
    whole_source: bool,
    source: &'static str,
    progress: Progress,
) -> anyhow::Result<RebuildReport> {
    let mut differences = Vec::new();
    let mut matching = 0;
    let mut live_only = None;
    match live {
        Live::Database { db } => {
            let rows = live_rows(db).await?;
            for (id, state) in &rebuilt.orders {
                match rows.get(id) {
                    None => differences.push(Difference { order_id: *id, kind: "missing_in_live", fields: Vec::new() }),
                    Some(row) => {
                        let fields = diff(&fresh_fields(state), row);
                        if fields.is_empty() {
                            matching += 1;
                        } else {
                            differences.push(Difference { order_id: *id, kind: "fields", fields });
                        }
                    }
                }
            }
            if whole_source {
                let mut only: Vec<Uuid> = rows
                    .keys()
                    .filter(|id| !rebuilt.orders.contains_key(id) && !rebuilt.incomplete.contains(id))
                    .copied()
                    .collect();
                only.sort();
                if source == "event_store" {
                    differences.extend(only.iter().map(|id| Difference {
                        order_id: *id,
                        kind: "live_only",
                        fields: Vec::new(),
                    }));
                }
                live_only = Some(only);
            }
        }
        Live::Api { client, base } => {
            let bar = progress.bar(rebuilt.orders.len() as u64, "comparing");
            let mut answers = futures::stream::iter(rebuilt.orders.keys().copied())
                .map(|id| async move { (id, live_order(client, base, id).await) })
                .buffer_unordered(8);
            let mut live = HashMap::new();
            while let Some((id, answer)) = answers.next().await {
                bar.inc(1);
                live.insert(id, answer?);
            }
            bar.finish_and_clear();
            for (id, state) in &rebuilt.orders {
                match live.get(id).and_then(Option::as_ref) {
                    None => differences.push(Difference { order_id: *id, kind: "missing_in_live", fields: Vec::new() }),
                    Some(view) => {
                        let fields = diff(&fresh_fields(state), view);
                        if fields.is_empty() {
                            matching += 1;
                        } else {
                            differences.push(Difference { order_id: *id, kind: "fields", fields });
                        }
                    }
                }
            }
        }
    }
    Ok(RebuildReport {
        service: service::ORDER,
        source,
        live: live.name(),
        events_read: rebuilt.events,
        undecodable: rebuilt.undecodable,
        orders_rebuilt: rebuilt.orders.len(),
        incomplete_streams: rebuilt.incomplete.len(),
        compared: rebuilt.orders.len(),
        matching,
        differences,
        live_only,
        applied: None,
        differences_after_apply: None,
    })
}

/// Print a report; exit 1 when the models differ.
pub fn print(ctx: &Ctx, report: &RebuildReport) -> anyhow::Result<ExitCode> {
    let left = report.differences_after_apply.unwrap_or(report.differences.len());
    match ctx.output {
        OutputFormat::Json => output::print_json(report)?,
        OutputFormat::Table => {
            let source = if report.source == "kafka" { "Kafka" } else { "the event store" };
            output::print_line(&format!(
                "rebuilt {}'s order_view from {source}: {} events, {} orders ({} without OrderPlaced, {} undecodable messages)",
                report.service,
                report.events_read,
                report.orders_rebuilt,
                report.incomplete_streams,
                report.undecodable
            ))?;
            let only = report.live_only.as_ref().map_or_else(|| "-".to_owned(), |o| o.len().to_string());
            output::print_line(&format!(
                "compared with the live read model ({}): {} matching, {} different, {} only in the live model",
                report.live,
                report.matching,
                report.differences.len(),
                only
            ))?;
            if !report.differences.is_empty() {
                let mut table = output::table(&["order", "difference", "field", "rebuilt", "live"]);
                for d in &report.differences {
                    if d.fields.is_empty() {
                        table.add_row(vec![
                            d.order_id.to_string(),
                            d.kind.replace('_', " "),
                            String::new(),
                            String::new(),
                            String::new(),
                        ]);
                    }
                    for f in &d.fields {
                        table.add_row(vec![
                            d.order_id.to_string(),
                            "field".to_owned(),
                            f.field.clone(),
                            output::truncate(&f.rebuilt.to_string(), 60),
                            output::truncate(&f.live.to_string(), 60),
                        ]);
                    }
                }
                output::print_line("")?;
                output::print_table(&mut table, "")?;
            }
            if let Some(applied) = report.applied {
                output::print_line(&format!(
                    "\napplied: order_view rebuilt from the event store ({applied} rows); {left} differences left"
                ))?;
            }
        }
    }
    Ok(if left == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `sagactl rebuild <service>`.
pub async fn run(ctx: &Ctx, args: RebuildArgs) -> anyhow::Result<ExitCode> {
    check_service(args.service)?;
    if args.from_store {
        let url = args.live.database_url.as_deref().ok_or_else(|| anyhow!("--from-store needs --database-url"))?;
        let db = connect(url).await?;
        let store = EventStore::new(order_svc::upcaster());
        let rebuilt = from_store(&db, &store, ctx.progress).await?;
        let live = Live::Database { db: db.clone() };
        let mut report = compare(&rebuilt, &live, true, "event_store", ctx.progress).await?;
        if args.apply {
            // A rebuild folds and writes the projection only: it publishes nothing and places
            // nothing, so the topics, the outbox signal and the deadline go unused.
            let orders = order_svc::Orders {
                db: db.clone(),
                store: store.clone(),
                topics: shared::topics::Topics::default(),
                outbox_signal: shared::outbox::OutboxSignal::default(),
                saga_deadline: chrono::TimeDelta::zero(),
                admission: order_svc::storage::Admission::unbounded(),
                group_commit: None,
            };
            let applied = orders.rebuild_projection().await.context("failed to rebuild order_view")?;
            let after = compare(&rebuilt, &live, true, "event_store", ctx.progress).await?;
            report.applied = Some(applied);
            report.differences_after_apply = Some(after.differences.len());
        }
        return print(ctx, &report);
    }
    let live = live(&args.live).await?;
    let topics: Vec<String> = ctx.kafka.topics().event_topics().iter().map(|t| (*t).to_owned()).collect();
    let reader = ctx.kafka.reader()?;
    let plan = reader.plan(&topics, None, Start::Beginning, Stop::End).await?;
    let bar = ctx.progress.bar(plan.len(), "replaying");
    let mut collect = Collect::default();
    let read = reader.read(&plan, ReadOptions::default(), &bar, &mut collect).await;
    bar.finish_and_clear();
    read?;
    let rebuilt = from_records(&collect.records);
    let report = compare(&rebuilt, &live, true, "kafka", ctx.progress).await?;
    print(ctx, &report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_compared_at_microsecond_precision() {
        assert!(same(&json!("2026-01-01T00:00:00.123456789Z"), &json!("2026-01-01T00:00:00.123456Z")));
        assert!(same(&json!("2026-01-01T01:00:00+01:00"), &json!("2026-01-01T00:00:00Z")));
        assert!(!same(&json!("2026-01-01T00:00:00.1Z"), &json!("2026-01-01T00:00:00.2Z")));
        assert!(same(&json!(3), &json!(3)));
        assert!(!same(&json!("paid"), &json!("pending")));
    }

    #[test]
    fn only_fields_the_live_model_has_are_compared_and_updated_at_never() {
        let fresh = json!({"status": "paid", "updated_at": "2026-01-01T00:00:00Z", "extra": 1});
        let live = json!({"status": "pending", "updated_at": "2026-02-01T00:00:00Z"});
        let (Value::Object(fresh), Value::Object(live)) = (fresh, live) else { unreachable!() };
        let diffs = diff(&fresh, &live);
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].field, "status");
    }

    #[test]
    fn only_order_svc_has_a_projection() {
        assert!(check_service(service::ORDER).is_ok());
        assert!(check_service(service::PAYMENT).is_err());
    }
}
