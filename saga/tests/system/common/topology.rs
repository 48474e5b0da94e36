//! The production topology as a fault-injection target: the broker process, a PostgreSQL
//! database per service (optionally reached through a [`DbProxy`]), and replicas of every
//! service as OS processes that can be killed, stopped, restarted and added — each restart
//! with the same environment and the same database — plus a webhook sink, the order API and
//! the end-of-case verdict (every invariant, and the summary line).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use shared::db::Backend;
use shared::testing::{TestDb, eventually};
use shared::topics::{Topics, service};

use super::invariants::{self, Run};
use super::kafka;
use super::processes::{BrokerProcess, Process};
use super::proxy::{DbProxy, upstream_of};
use super::{Sink, WAIT};

/// How long, once every order is terminal, the steps off their critical path may take.
const SETTLE_MESSAGES: Duration = Duration::from_secs(60);

/// How a topology is built.
#[derive(Debug, Clone)]
pub struct Options {
    pub replicas: usize,
    pub partitions: i32,
    /// Put a [`DbProxy`] between the services and PostgreSQL.
    pub db_proxy: bool,
    /// A saga deadline other than the services' default (30 s), and why the case needs it: it
    /// is printed in the case's summary line.
    pub deadline: Option<(Duration, &'static str)>,
}

impl Default for Options {
    fn default() -> Self {
        Self { replicas: 2, partitions: 4, db_proxy: false, deadline: None }
    }
}

impl Options {
    /// The deadline's part of a summary line.
    fn deadline_note(&self) -> String {
        match self.deadline {
            None => "deadline=default(30s)".to_owned(),
            Some((deadline, why)) => format!("deadline={}s why=\"{why}\"", deadline.as_secs()),
        }
    }
}

/// One service process slot: its environment never changes, the process comes and goes.
/// An order-svc replica is in the order stream's rotation exactly while it runs.
pub struct Replica {
    pub name: String,
    pub service: &'static str,
    index: usize,
    env: Vec<(&'static str, String)>,
    pub process: Option<Process>,
    apis: Apis,
}

impl Replica {
    /// Start (or restart) the process and wait until it listens.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.process.is_none(), "{} is running already", self.name);
        self.process = Some(Process::service(&self.name, self.service, &self.env, WAIT).await?);
        if self.service == service::ORDER {
            self.apis.set(self.index, self.base_url());
        }
        Ok(())
    }

    fn withdraw(&self) {
        if self.service == service::ORDER {
            self.apis.set(self.index, None);
        }
    }

    /// kill -9; returns the killed process (for its logs).
    pub async fn kill9(&mut self) -> anyhow::Result<Option<Process>> {
        self.withdraw();
        let mut killed = self.process.take();
        if let Some(p) = &mut killed {
            p.kill9().await?;
        }
        Ok(killed)
    }

    /// SIGTERM; returns how long the exit took, whether it succeeded, and the process (for
    /// its logs).
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<(Duration, bool, Process)> {
        self.withdraw();
        let mut p = self.process.take().ok_or_else(|| anyhow::anyhow!("{} is not running", self.name))?;
        let (took, clean) = p.terminate(timeout).await?;
        Ok((took, clean, p))
    }

    /// Wait until the running process says it is ready (`/readyz` answers 200).
    pub async fn until_ready(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.ops_url().context("not running")?);
        eventually(WAIT, &format!("{} ready", self.name), || async {
            let response = http.get(&url).send().await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await
    }

    pub fn base_url(&self) -> Option<String> {
        self.process.as_ref().and_then(|p| p.addr).map(|a| format!("http://{a}"))
    }

    /// The ops endpoints (`/metrics`, `/readyz`).
    pub fn ops_url(&self) -> Option<String> {
        self.process.as_ref().and_then(|p| p.ops_addr).map(|a| format!("http://{a}"))
    }

    /// The sum of `metric` samples whose labels contain every one of `labels`
    /// (e.g. `outcome="duplicate"`); 0 when the process is not running.
    pub async fn metric(&self, http: &reqwest::Client, metric: &str, labels: &[&str]) -> anyhow::Result<f64> {
        let Some(url) = self.ops_url() else { return Ok(0.0) };
        let text = http.get(format!("{url}/metrics")).send().await?.error_for_status()?.text().await?;
        Ok(sum_metric(&text, metric, labels))
    }
}

/// Sum the samples of `metric` in Prometheus text whose label set contains all of `labels`.
pub fn sum_metric(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(metric).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The order API's live replicas, shared with an order stream: a replica being restarted is
/// left out.
#[derive(Clone, Default)]
pub struct Apis(Arc<RwLock<Vec<Option<String>>>>);

impl Apis {
    pub fn live(&self) -> Vec<String> {
        self.0.read().map(|v| v.iter().flatten().cloned().collect()).unwrap_or_default()
    }

    fn set(&self, slot: usize, url: Option<String>) {
        if let Ok(mut v) = self.0.write() {
            if v.len() <= slot {
                v.resize(slot + 1, None);
            }
            v[slot] = url;
        }
    }
}

/// An external Kafka-compatible broker to run against instead of our mock-broker process
/// (`SAGA_TEST_KAFKA_BROKERS=host:port`, e.g. Nisshi): its services create their topics.
pub fn external_broker() -> Option<String> {
    std::env::var("SAGA_TEST_KAFKA_BROKERS").ok().filter(|b| !b.is_empty())
}

/// The consumer group protocol to use instead of KIP-848, for a broker without it (e.g.
/// Nisshi): `SAGA_TEST_KAFKA_GROUP_PROTOCOL=classic`.
pub fn group_protocol() -> Option<String> {
    std::env::var("SAGA_TEST_KAFKA_GROUP_PROTOCOL").ok().filter(|p| !p.is_empty())
}

/// The services' `KAFKA_PROP_GROUP_PROTOCOL` for [`group_protocol`].
pub fn group_protocol_env() -> Option<(&'static str, String)> {
    group_protocol().map(|protocol| ("KAFKA_PROP_GROUP_PROTOCOL", protocol))
}

/// The broker for a multi-process run: our mock-broker process (which creates the topics of
/// `prefix`: the mock cluster has no CreateTopics), or the external one of
/// [`external_broker`]. Returns it, its bootstrap address, and the services'
/// `KAFKA_CREATE_TOPICS`.
pub async fn start_broker(
    partitions: i32,
    prefix: &str,
) -> anyhow::Result<(Option<BrokerProcess>, String, &'static str)> {
    if let Some(external) = external_broker() {
        return Ok((None, external, "true"));
    }
    let broker = BrokerProcess::start(&HashMap::from([
        ("KAFKA_PARTITIONS", partitions.to_string()),
        ("TOPIC_PREFIX", prefix.to_owned()),
    ]))
    .await?;
    let bootstrap = broker.bootstrap.clone();
    Ok((Some(broker), bootstrap, "false"))
}

/// A whole running system owned by one fault-suite case.
pub struct Topology {
    pub prefix: String,
    pub topics: Topics,
    /// Our mock-cluster broker process, or None on an external broker
    /// (`SAGA_TEST_KAFKA_BROKERS`).
    broker: Option<BrokerProcess>,
    bootstrap: String,
    pub sink: Sink,
    pub dbs: HashMap<&'static str, TestDb>,
    pub proxy: Option<DbProxy>,
    pub replicas: HashMap<&'static str, Vec<Replica>>,
    pub http: reqwest::Client,
    pub apis: Apis,
    base_env: Vec<(&'static str, String)>,
    /// Processes that were stopped or killed, kept for their logs.
    pub retired: std::sync::Mutex<Vec<Process>>,
    /// The saga deadline the services run with, for the summary line.
    deadline_note: String,
}

/// The topics a service's group consumes (the topology's), without its command topic: the
/// suite sends no admin command.
pub fn inputs(topics: &Topics, name: &str) -> Vec<String> {
    topics
        .subscriptions(name)
        .into_iter()
        .map(|(topic, _)| topic)
        .filter(|t| !shared::topics::carries_commands(t))
        .collect()
}

impl Topology {
    /// Broker, databases, sink, and `options.replicas` of every service, all started.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let prefix = format!("fs{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let admin_key = order_svc::http::generate_key();
        let partitions = options.partitions.to_string();
        let (broker, bootstrap, create_topics) = start_broker(options.partitions, &prefix).await?;
        let (sink, sink_addr) = Sink::start(|_| Duration::ZERO).await?;
        let mut dbs = HashMap::new();
        for name in service::ALL {
            dbs.insert(name, TestDb::new(Backend::Postgres, &[]).await?);
        }
        let proxy = match options.db_proxy {
            true => Some(DbProxy::start(&upstream_of(&shared::testing::admin_url())).await?),
            false => None,
        };
        let base_env = vec![
            ("KAFKA_BROKERS", bootstrap.clone()),
            ("KAFKA_CREATE_TOPICS", create_topics.to_owned()),
            ("KAFKA_PARTITIONS", partitions),
            ("TOPIC_PREFIX", prefix.clone()),
            // Ten processes share one PostgreSQL server (and its 100 connections) with other
            // tests: a few connections each are plenty for one consumer, one relay and the API.
            ("DATABASE_MAX_CONNECTIONS", "4".to_owned()),
            ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("NOTIFY_WEBHOOK_URL", format!("http://{sink_addr}/hook")),
            // The production path: keys configured as digests, the client sends the key.
            ("ORDER_API_KEYS", format!("admin:{}", order_svc::http::hash_key(&admin_key))),
            // The suite sends bursts on purpose (and requests pile up while a fault lasts);
            // limits are tested elsewhere.
            ("ORDER_API_RATE_LIMIT_PER_SEC", "0".to_owned()),
            ("ORDER_API_MAX_IN_FLIGHT_PER_KEY", "512".to_owned()),
            ("RUST_LOG", std::env::var("FS_RUST_LOG").unwrap_or_else(|_| "info".to_owned())),
        ];
        let mut base_env = base_env;
        if let Some((deadline, _)) = options.deadline {
            base_env.push(("SAGA_DEADLINE_MS", deadline.as_millis().to_string()));
        }
        base_env.extend(group_protocol_env());
        // librdkafka's debug contexts in the services' logs (e.g. `FS_KAFKA_DEBUG=cgrp,eos`).
        if let Ok(debug) = std::env::var("FS_KAFKA_DEBUG") {
            base_env.push(("KAFKA_PROP_DEBUG", debug));
            if let Some((_, filter)) = base_env.iter_mut().find(|(k, _)| *k == "RUST_LOG") {
                filter.push_str(",librdkafka=debug");
            }
        }
        let http = super::client_with_key(&admin_key)?;
        let mut topology = Self {
            topics: Topics::with_prefix(&prefix),
            prefix,
            broker,
            bootstrap,
            sink,
            dbs,
            proxy,
            replicas: HashMap::new(),
            http,
            apis: Apis::default(),
            base_env,
            retired: Default::default(),
            deadline_note: options.deadline_note(),
        };
        let mut starting = Vec::new();
        for name in service::ALL {
            for index in 0..options.replicas {
                starting.push(topology.new_replica(name, index));
            }
        }
        // Start them all at once.
        futures::future::try_join_all(starting.iter_mut().map(Replica::start)).await?;
        for replica in starting {
            topology.replicas.entry(replica.service).or_default().push(replica);
        }
        Ok(topology)
    }

    fn new_replica(&self, name: &'static str, index: usize) -> Replica {
        let url = match &self.proxy {
            Some(proxy) => proxy.url(&self.dbs[name].url),
            None => self.dbs[name].url.clone(),
        };
        let mut env = self.base_env.clone();
        env.push(("DATABASE_URL", url));
        Replica { name: format!("{name}#{index}"), service: name, index, env, process: None, apis: self.apis.clone() }
    }

    /// Add and start one more replica of `name`; returns its index.
    pub async fn add_replica(&mut self, name: &'static str) -> anyhow::Result<usize> {
        let index = self.replicas.get(name).map_or(0, Vec::len);
        let mut replica = self.new_replica(name, index);
        replica.start().await?;
        self.replicas.entry(name).or_default().push(replica);
        Ok(index)
    }

    /// Write every running process's log lines under `$TMPDIR/fault-suite-<prefix>/` (for a
    /// failing case); returns the directory.
    pub fn dump_logs(&self) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fault-suite-{}", self.prefix.trim_end_matches('.')));
        let _ = std::fs::create_dir_all(&dir);
        for replica in self.replicas.values().flatten() {
            if let Some(p) = &replica.process {
                let _ = std::fs::write(dir.join(format!("{}.log", p.name)), p.log_lines().join("\n"));
            }
        }
        if let Ok(retired) = self.retired.lock() {
            for (i, p) in retired.iter().enumerate() {
                let _ = std::fs::write(dir.join(format!("{}.retired{i}.log", p.name)), p.log_lines().join("\n"));
            }
        }
        dir
    }

    /// Write every service's event store (one JSON event a line) into `dir`, for a case whose
    /// invariants failed: the databases are dropped with the topology.
    async fn dump_event_stores(&self, dir: &std::path::Path) {
        for name in service::ALL {
            let Ok(mut tx) = self.dbs[name].db.begin_read().await else { continue };
            let events = shared::event_store::EventStore::default().read_all(&mut tx, 0, i64::MAX).await;
            let _ = tx.rollback().await;
            let lines: Vec<String> = events
                .into_iter()
                .flatten()
                .map(|e| {
                    serde_json::json!({"position": e.position, "stream": e.stream_id, "version": e.version,
                        "type": e.event_type, "payload": e.payload, "metadata": e.metadata, "at": e.recorded_at})
                    .to_string()
                })
                .collect();
            let _ = std::fs::write(dir.join(format!("{name}.events.jsonl")), lines.join("\n"));
        }
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Our broker process, which can be taken down and brought back (not an external broker).
    pub fn broker(&self) -> anyhow::Result<&BrokerProcess> {
        self.broker.as_ref().context(
            "this case takes the broker down and up, which needs our mock-broker process, not an external broker",
        )
    }

    pub fn inputs(&self, name: &str) -> Vec<String> {
        inputs(&self.topics, name)
    }

    /// `metric` summed over the running replicas of `name`.
    pub async fn metric(&self, name: &str, metric: &str, labels: &[&str]) -> anyhow::Result<f64> {
        let mut sum = 0.0;
        for replica in self.replicas.get(name).into_iter().flatten() {
            sum += replica.metric(&self.http, metric, labels).await?;
        }
        Ok(sum)
    }

    /// The message ids `name` recorded as processed (its inbox), read from its database.
    pub async fn inbox(&self, name: &str) -> anyhow::Result<HashSet<uuid::Uuid>> {
        let shared::db::Db::Postgres(pool) = &self.dbs[name].db else {
            anyhow::bail!("the fault suite runs on PostgreSQL")
        };
        let ids: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT message_id FROM inbox WHERE consumer = $1").bind(name).fetch_all(pool).await?;
        Ok(ids.into_iter().collect())
    }

    /// When `name` recorded each message id as processed (its inbox).
    pub async fn inbox_times(&self, name: &str) -> anyhow::Result<HashMap<uuid::Uuid, chrono::DateTime<chrono::Utc>>> {
        let shared::db::Db::Postgres(pool) = &self.dbs[name].db else {
            anyhow::bail!("the fault suite runs on PostgreSQL")
        };
        let rows: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> =
            sqlx::query_as("SELECT message_id, processed_at FROM inbox WHERE consumer = $1")
                .bind(name)
                .fetch_all(pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Messages on a service's input topics that its group never handled: neither processed
    /// (their id in its inbox) nor dead-lettered (the dead-letter marker of their position in
    /// its inbox). A group that skipped offsets lost them. Messages of a type the service does
    /// not act on ([`shared::contracts::acts_on`]) leave no inbox record and are not counted.
    pub async fn unhandled_messages(&self) -> anyhow::Result<Vec<String>> {
        let mut unhandled = Vec::new();
        for name in service::ALL {
            let topics = self.inputs(name);
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            let inbox = self.inbox(name).await?;
            for r in kafka::read(self.bootstrap(), &topics, None).await? {
                if !acts_on(name, &r) {
                    continue;
                }
                let id = r.header(shared::envelope::header::ID).and_then(|id| uuid::Uuid::parse_str(id).ok());
                let marker = shared::consumer::dead_letter_marker(&r.topic, r.partition, r.offset);
                if !id.is_some_and(|id| inbox.contains(&id)) && !inbox.contains(&marker) {
                    unhandled.push(format!(
                        "{name} never handled {}/{}@{} ({:?} for {:?})",
                        r.topic,
                        r.partition,
                        r.offset,
                        r.header(shared::envelope::header::TYPE),
                        r.header(shared::envelope::header::SUBJECT)
                    ));
                }
            }
        }
        Ok(unhandled)
    }

    /// An order as the API shows it (through any running order-svc replica).
    pub async fn order(&self, id: &str) -> Option<Value> {
        for api in self.apis.live() {
            if let Ok(response) = self.http.get(format!("{api}/orders/{id}")).send().await
                && response.status() == 200
                && let Ok(order) = response.json::<Value>().await
            {
                return Some(order);
            }
        }
        None
    }

    /// Wait (up to `timeout`) until every order in `ids` is completed or cancelled; returns
    /// each one's last view and which ones never got there.
    pub async fn settle(&self, ids: &[String], timeout: Duration) -> anyhow::Result<Settled> {
        use futures::StreamExt as _;
        let views: std::sync::Mutex<HashMap<String, Value>> = Default::default();
        let is_terminal = |o: &Value| matches!(o["status"].as_str(), Some("completed" | "cancelled"));
        // Running out of time is not an error here: the orders still open are `lost`.
        let _ = eventually(timeout, "every accepted order completed or cancelled", || async {
            let pending: Vec<&String> = {
                let views = views.lock().ok()?;
                ids.iter().filter(|id| !views.get(*id).is_some_and(is_terminal)).collect()
            };
            let fetched: Vec<(String, Option<Value>)> = futures::stream::iter(pending)
                .map(|id| async move { (id.clone(), self.order(id).await) })
                .buffer_unordered(16)
                .collect()
                .await;
            let done = {
                let mut views = views.lock().ok()?;
                for (id, view) in fetched {
                    if let Some(view) = view {
                        views.insert(id, view);
                    }
                }
                ids.iter().all(|id| views.get(id).is_some_and(is_terminal))
            };
            if done {
                return Some(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            None
        })
        .await;
        let views = views.into_inner().unwrap_or_default();
        let orders: Vec<(String, Value)> =
            ids.iter().map(|id| (id.clone(), views.get(id).cloned().unwrap_or(Value::Null))).collect();
        let lost = orders.iter().filter(|(_, o)| !is_terminal(o)).map(|(id, _)| id.clone()).collect();
        Ok(Settled { orders, lost })
    }

    /// The end of a case: print its summary line (from the data), then assert every invariant.
    /// Returns the tally, for what a case checks beyond the invariants.
    pub async fn verdict(&self, case: &str, settled: &Settled, extra: &str) -> anyhow::Result<invariants::Tally> {
        let deliveries = match settled.lost.is_empty() {
            // Every terminal order calls for its notice: wait for them (a failure shows in
            // the checks below with the order named).
            true => {
                super::eventually_notified(&self.sink, &settled.orders).await.unwrap_or_else(|_| self.sink.deliveries())
            }
            false => self.sink.deliveries(),
        };
        let run = Run {
            orders: &settled.orders,
            inventory: &self.dbs[service::INVENTORY].db,
            payment: &self.dbs[service::PAYMENT].db,
            shipping: &self.dbs[service::SHIPPING].db,
            deliveries: &deliveries,
        };
        // Steps off the orders' critical path (inventory applying a shipment, order-svc
        // recording a cancellation notice) may still be under way: the checks are about the
        // state once everything was handled. Invariant 5 at the transport level: every message
        // reaches every group subscribed to it, and every outbox drains.
        let quiet =
            eventually(SETTLE_MESSAGES, "every message handled by every group, every outbox drained", || async {
                for name in service::ALL {
                    if shared::outbox::backlog(&self.dbs[name].db).await.ok()? != 0 {
                        return None;
                    }
                }
                let unhandled = self.unhandled_messages().await.ok()?;
                if unhandled.is_empty() {
                    return Some(());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                None
            })
            .await;
        let unhandled = self.unhandled_messages().await?;
        anyhow::ensure!(quiet.is_ok() || !unhandled.is_empty(), "case {case}: an outbox did not drain");
        let tally = invariants::tally(&run).await?;
        // A dead letter is a saga step that did not happen: only the poison case may cause any.
        let mut dead_letters = 0;
        for name in service::ALL {
            let dlq = self.topics.dead_letter(name);
            dead_letters += kafka::read(self.bootstrap(), &[dlq.as_str()], None).await?.len();
        }
        let unexpected_dead_letters = if case == "poison" { 0 } else { dead_letters };
        let line = format!(
            "case={case} {tally} unhandled_messages={} dead_letters={dead_letters} {}{}{extra}\n",
            unhandled.len(),
            self.deadline_note,
            if extra.is_empty() { "" } else { " " }
        );
        report(&line);
        let suspicious = tally.lost
            + tally.doubled_charges
            + tally.doubled_refunds
            + tally.doubled_notifications
            + tally.missing_notifications
            > 0
            || !tally.stock_ok
            || !tally.money_ok
            || !tally.capacity_ok
            || !unhandled.is_empty()
            || unexpected_dead_letters > 0;
        if suspicious || std::env::var_os("FAULT_SUITE_LOGS").is_some() {
            let dir = self.dump_logs();
            self.dump_event_stores(&dir).await;
            let views: Vec<String> = settled.orders.iter().map(|(_, order)| order.to_string()).collect();
            let _ = std::fs::write(dir.join("orders.jsonl"), views.join("\n"));
            report(&format!("case={case} service logs and event stores in {}\n", dir.display()));
        }
        anyhow::ensure!(unhandled.is_empty(), "case {case}: messages skipped by a group: {unhandled:#?}");
        anyhow::ensure!(
            unexpected_dead_letters == 0,
            "case {case}: {unexpected_dead_letters} messages were dead-lettered (see the services' logs)"
        );
        anyhow::ensure!(
            settled.lost.is_empty(),
            "case {case}: {} accepted orders never completed nor were cancelled, e.g. {:?}",
            settled.lost.len(),
            settled.lost.iter().take(5).collect::<Vec<_>>()
        );
        invariants::check(&run).await?;
        Ok(tally)
    }

    /// SIGTERM every process; each must exit cleanly within 10 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for name in service::ALL {
            for replica in self.replicas.get_mut(name).into_iter().flatten() {
                if replica.process.is_some() {
                    let (took, clean, p) = replica.terminate(Duration::from_secs(10)).await?;
                    anyhow::ensure!(clean, "{} exited with an error after SIGTERM: {:?}", p.name, p.log_lines().last());
                    anyhow::ensure!(took < Duration::from_secs(10), "{} took {took:?} to stop", p.name);
                }
            }
        }
        Ok(())
    }
}

/// Orders after a case: each one's last view, and those that are not terminal.
pub struct Settled {
    pub orders: Vec<(String, Value)>,
    pub lost: Vec<String>,
}

/// Print a summary line (the harness shows it with --nocapture, or when the test fails) and
/// append it to [`summary_file`].
pub fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(summary_file()) {
        let _ = file.write_all(line.as_bytes());
    }
}

/// Where [`report`] keeps the summary lines: `target/tmp/fault-suite-summary.txt`.
pub fn summary_file() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-suite-summary.txt")
}

/// Does `service` act on this record? A record of a known type it has no use for is
/// acknowledged without an inbox record; anything else (its own types, unknown or missing
/// types) must be processed or dead-lettered.
pub fn acts_on(service: &str, record: &kafka::Record) -> bool {
    record
        .header(shared::envelope::header::TYPE)
        .is_none_or(|t| !shared::contracts::is_known_type(t) || shared::topology::acts_on(service, t))
}
