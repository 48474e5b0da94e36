//! What every sagactl test needs: a running saga of its own (the embedded system, or the
//! services built one by one so one can be left out), the order API, and the sagactl binary run
//! as an operator would run it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use saga::{Embedded, EmbeddedConfig};
use serde_json::{Value, json};
use shared::CancellationToken;
use shared::config::ServiceConfig;
use shared::testing::{TestBroker, eventually};
use shared::topics::service;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

pub const WAIT: Duration = Duration::from_secs(30);

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("sagactl-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One sagactl run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The JSON it printed; fails unless it exited 0.
    pub fn json(&self) -> anyhow::Result<Value> {
        if self.code != 0 {
            bail!("sagactl exited {}: {}{}", self.code, self.stderr, self.stdout);
        }
        serde_json::from_str(&self.stdout).with_context(|| format!("not JSON: {}", self.stdout))
    }

    /// The JSON lines it printed; fails unless it exited 0.
    pub fn lines(&self) -> anyhow::Result<Vec<Value>> {
        if self.code != 0 {
            bail!("sagactl exited {}: {}", self.code, self.stderr);
        }
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
            .collect()
    }

    /// It failed the way a person should see: non-zero, a message, no panic.
    pub fn assert_clear_failure(&self, expected: &str) {
        assert_ne!(self.code, 0, "expected a failure, got success: {}", self.stdout);
        assert!(!self.stderr.contains("panicked"), "panicked: {}", self.stderr);
        assert!(self.stderr.contains(expected), "expected {expected:?} in stderr: {}", self.stderr);
    }
}

fn command(args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sagactl"));
    command
        .args(args)
        .env_remove("KAFKA_BROKERS")
        .env_remove("TOPIC_PREFIX")
        .env_remove("DATABASE_URL")
        .env_remove("SAGA_API_URL")
        .env_remove("SAGA_API_KEY")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Run sagactl with `args` to completion (at most a minute).
pub async fn sagactl(args: &[&str]) -> anyhow::Result<Run> {
    sagactl_in(args, &[], None).await
}

/// Run sagactl with `args`, extra environment variables, and in `dir` if given.
pub async fn sagactl_in(args: &[&str], env: &[(&str, &str)], dir: Option<&std::path::Path>) -> anyhow::Result<Run> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let mut command = command(&args);
    command.env_remove("SAGA_DATA_DIR").envs(env.iter().copied());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .context("sagactl did not finish within a minute")??;
    Ok(Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A sagactl process left running (tail, trace --follow).
pub struct Running {
    child: Child,
}

impl Running {
    /// Start sagactl and wait until it printed `ready` on stderr (when given).
    pub async fn start(args: &[String], ready: Option<&str>) -> anyhow::Result<Self> {
        let mut child = command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        if let Some(ready) = ready {
            let stderr = child.stderr.take().context("no stderr")?;
            let mut lines = BufReader::new(stderr).lines();
            let seen = tokio::time::timeout(WAIT, async {
                while let Some(line) = lines.next_line().await? {
                    if line.contains(ready) {
                        return Ok::<_, anyhow::Error>(true);
                    }
                }
                Ok(false)
            })
            .await
            .context("sagactl did not get ready")??;
            anyhow::ensure!(seen, "sagactl ended before printing {ready:?}");
        }
        Ok(Self { child })
    }

    /// Wait for it to end by itself.
    pub async fn finish(self) -> anyhow::Result<Run> {
        let output = tokio::time::timeout(Duration::from_secs(60), self.child.wait_with_output())
            .await
            .context("sagactl did not end by itself")??;
        Ok(Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// The order API of a running system, with its admin key.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub key: String,
}

/// A fresh admin key, and the API configuration that accepts it.
fn admin_key() -> (String, order_svc::ApiConfig) {
    let key = order_svc::http::generate_key();
    let keys = order_svc::http::ApiKeys::from_keys([(key.as_str(), order_svc::http::Role::Admin)]);
    let defaults = order_svc::http::ApiLimits::default();
    let limits =
        order_svc::http::ApiLimits { rate: None, max_in_flight_per_key: defaults.max_concurrent_requests, ..defaults };
    (key, order_svc::ApiConfig { auth: order_svc::http::Auth::Keys(keys), limits })
}

impl Api {
    fn new(addr: SocketAddr, key: String) -> anyhow::Result<Self> {
        let http = sagactl::api_client(reqwest::Client::builder().timeout(Duration::from_secs(10)), Some(&key))?;
        Ok(Self { base: format!("http://{addr}"), http, key })
    }

    /// Place an order that must be accepted; returns its id.
    pub async fn place(&self, customer: &str, items: &[(&str, u32)], country: &str) -> anyhow::Result<String> {
        let body = json!({
            "customer_id": customer,
            "items": items.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect::<Vec<_>>(),
            "ship_to": {"country": country},
        });
        let response = self.http.post(format!("{}/orders", self.base)).json(&body).send().await?;
        anyhow::ensure!(response.status() == 202, "expected 202, got {}", response.status());
        let body: Value = response.json().await?;
        Ok(body["id"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Value> {
        Ok(self.http.get(format!("{}/orders/{id}", self.base)).send().await?.error_for_status()?.json().await?)
    }

    /// Wait until the order's status is `status`.
    pub async fn status(&self, id: &str, status: &str) -> anyhow::Result<Value> {
        eventually(WAIT, &format!("order {id} {status}"), || async {
            let order = self.get(id).await.ok()?;
            (order["status"] == status).then_some(order)
        })
        .await
    }

    /// Wait until the order is completed or cancelled.
    pub async fn terminal(&self, id: &str) -> anyhow::Result<Value> {
        eventually(WAIT, &format!("order {id} terminal"), || async {
            let order = self.get(id).await.ok()?;
            matches!(order["status"].as_str(), Some("completed" | "cancelled")).then_some(order)
        })
        .await
    }

    /// Every order the API lists.
    pub async fn all_orders(&self) -> anyhow::Result<Vec<Value>> {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = self.http.get(format!("{}/orders", self.base)).query(&[("limit", "200")]);
            if let Some(c) = &cursor {
                request = request.query(&[("cursor", c)]);
            }
            let page: Value = request.send().await?.error_for_status()?.json().await?;
            orders.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(orders),
            }
        }
    }
}

/// Options of a test system.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub webhook: Option<String>,
}

/// The whole embedded system (no topic prefix), on fresh SQLite files in `<root>/data`.
pub struct System {
    pub api: Api,
    pub brokers: String,
    /// A fresh directory holding `data`, as the working directory of `cargo run` does.
    pub root: PathBuf,
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: TempDir,
}

impl System {
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let dir = TempDir::new("system")?;
        let (key, api) = admin_key();
        let data_dir = dir.0.join("data");
        let config = EmbeddedConfig {
            data_dir: data_dir.clone(),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            partitions: 2,
            // Long enough that no test order is cancelled by the deadline scanner.
            saga_deadline: Duration::from_secs(600),
            notify_webhook_url: options.webhook,
            api,
            ..EmbeddedConfig::default()
        };
        let shutdown = CancellationToken::new();
        let system = Embedded::build(config, &shutdown).await?;
        let api = Api::new(system.endpoints.api, key)?;
        let brokers = system.endpoints.brokers.clone();
        let running = tokio::spawn(system.run_until_stopped(shutdown.clone()));
        Ok(Self { api, brokers, root: dir.0.clone(), data_dir, shutdown, running: Some(running), _dir: dir })
    }

    /// order-svc's database.
    pub fn order_db_url(&self) -> String {
        format!("sqlite://{}", saga::database_path(&self.data_dir, service::ORDER).display())
    }

    /// `sagactl --brokers <this system's> <args>`.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<Run> {
        let mut all = vec!["--brokers", self.brokers.as_str(), "--kafka-timeout", "5s"];
        all.extend_from_slice(args);
        sagactl(&all).await
    }

    pub fn args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["--brokers".to_owned(), self.brokers.clone()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(30), running).await???;
        }
        Ok(())
    }

    /// Stop, and hand over the directory (removed when the returned value is dropped) to look
    /// at what the system left in it.
    pub async fn stop_keeping_files(mut self) -> anyhow::Result<TempDir> {
        let dir = std::mem::replace(&mut self._dir, TempDir(PathBuf::new()));
        self.stop().await?;
        Ok(dir)
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The services built one by one on a broker with prefixed topics, one of them left out (a
/// service that is down).
pub struct Partial {
    pub api: Api,
    pub brokers: String,
    pub prefix: String,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    _broker: TestBroker,
    _dir: TempDir,
}

impl Partial {
    pub async fn without(missing: &'static str) -> anyhow::Result<Self> {
        let broker = TestBroker::new(2)?;
        let dir = TempDir::new("partial")?;
        let prefix = broker.topics.orders.trim_end_matches("orders.events").to_owned();
        let config = |name: &'static str| {
            let mut c = ServiceConfig::defaults(name, 0);
            c.database_url = format!("sqlite://{}", dir.0.join(format!("{name}.db")).display());
            c.kafka = broker.kafka.clone();
            c.topics = broker.topics.clone();
            c
        };
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let (key, api_config) = admin_key();
        let mut order_config = order_svc::Config::new(config(service::ORDER))?;
        order_config.saga_deadline = Duration::from_secs(600);
        order_config.api = api_config;
        let order = order_svc::App::build(order_config, &shutdown).await?;
        let api = Api::new(order.local_addr()?, key)?;
        tasks.spawn(order.run_until_stopped(shutdown.clone()));
        if missing != service::INVENTORY {
            let app =
                inventory_svc::App::build(inventory_svc::Config::new(config(service::INVENTORY))?, &shutdown).await?;
            tasks.spawn(app.run_until_stopped(shutdown.clone()));
        }
        if missing != service::PAYMENT {
            let app = payment_svc::App::build(payment_svc::Config::new(config(service::PAYMENT))?, &shutdown).await?;
            tasks.spawn(app.run_until_stopped(shutdown.clone()));
        }
        if missing != service::SHIPPING {
            let app =
                shipping_svc::App::build(shipping_svc::Config::new(config(service::SHIPPING))?, &shutdown).await?;
            tasks.spawn(app.run_until_stopped(shutdown.clone()));
        }
        if missing != service::NOTIFICATION {
            let app =
                notification_svc::App::build(notification_svc::Config::new(config(service::NOTIFICATION))?, &shutdown)
                    .await?;
            tasks.spawn(app.run_until_stopped(shutdown.clone()));
        }
        let brokers = broker.kafka.brokers.clone();
        Ok(Self { api, brokers, prefix, shutdown, tasks, _broker: broker, _dir: dir })
    }

    /// `sagactl --brokers <..> --topic-prefix <..> <args>`.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<Run> {
        let mut all =
            vec!["--brokers", self.brokers.as_str(), "--topic-prefix", self.prefix.as_str(), "--kafka-timeout", "5s"];
        all.extend_from_slice(args);
        sagactl(&all).await
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        while let Some(joined) = tokio::time::timeout(Duration::from_secs(30), self.tasks.join_next()).await? {
            joined??;
        }
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The event types of a trace report, in timeline order.
pub fn traced_types(report: &Value) -> Vec<String> {
    report["events"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["event_type"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The event types of an order's API timeline.
pub fn api_types(order: &Value) -> Vec<String> {
    order["events"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["type"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Sorted copy.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
