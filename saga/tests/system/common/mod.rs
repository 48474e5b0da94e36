//! Whole-system test harness: the embedded system on a fresh set of databases (one per
//! service, on either backend), a webhook sink that records every notification delivery, and
//! a small API client.

pub mod invariants;
pub mod kafka;
pub mod load;
pub mod processes;
pub mod proxy;
pub mod topology;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use saga::{Embedded, EmbeddedConfig, Endpoints};
use serde_json::{Value, json};
use shared::CancellationToken;
use shared::db::{Backend, Db};
use shared::testing::{TestDb, eventually};
use shared::topics::service;

pub const WAIT: Duration = Duration::from_secs(60);

/// One notification delivery as the webhook saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub idempotency_key: String,
    pub order_id: String,
    pub kind: String,
}

/// A webhook that records deliveries.
#[derive(Clone, Default)]
pub struct Sink {
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl Sink {
    /// A sink that records each delivery as it arrives and answers after `delay(kind)`.
    pub async fn start(delay: fn(&str) -> Duration) -> anyhow::Result<(Self, SocketAddr)> {
        let sink = Sink::default();
        let recorded = sink.deliveries.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::Json<Value>| {
                let recorded = recorded.clone();
                async move {
                    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
                    let kind = body["kind"].as_str().unwrap_or_default().to_owned();
                    recorded.lock().expect("sink lock").push(Delivery {
                        idempotency_key: key.to_owned(),
                        order_id: body["order_id"].as_str().unwrap_or_default().to_owned(),
                        kind: kind.clone(),
                    });
                    tokio::time::sleep(delay(&kind)).await;
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((sink, addr))
    }

    /// Every delivery so far, retries included.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

/// The API keys of one test's system: an admin key and a customer key for each demo account.
#[derive(Debug, Clone)]
pub struct TestKeys {
    pub admin: String,
    pub rich: String,
    pub poor: String,
}

impl TestKeys {
    pub fn generate() -> Self {
        use order_svc::http::generate_key;
        Self { admin: generate_key(), rich: generate_key(), poor: generate_key() }
    }

    /// The keys as order-svc checks them (no rate limit, and a key may fill the shared in-flight
    /// limit: tests send bursts on purpose; the limits are tested in order-svc's own tests).
    pub fn api_config(&self) -> order_svc::ApiConfig {
        use order_svc::http::{ApiKeys, ApiLimits, Auth, Role};
        let customer = |id: &str| Role::Customer(order_svc::domain::CustomerId::parse(id).expect("customer id"));
        let keys = ApiKeys::from_keys([
            (self.admin.as_str(), Role::Admin),
            (self.rich.as_str(), customer("cust-rich")),
            (self.poor.as_str(), customer("cust-poor")),
        ]);
        let limits = ApiLimits {
            rate: None,
            max_in_flight_per_key: ApiLimits::default().max_concurrent_requests,
            ..ApiLimits::default()
        };
        order_svc::ApiConfig { auth: Auth::Keys(keys), limits }
    }
}

/// An HTTP client that sends `key` with every request (unless a request sets its own).
pub fn client_with_key(key: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))?;
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(10)).default_headers(headers).build()?)
}

/// Log output written so far, for tests that send the process's logs to a buffer.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }

    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The machine, shared by the systems that tests run at once.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A test's share of the machine: while it lives, no test that runs [`alone`] starts.
pub type MachineShare = tokio::sync::RwLockReadGuard<'static, ()>;

/// Wait until no other system under test runs, and keep the machine so while the guard lives:
/// for the fault suite's cases and the multi-process topology, whose deadlines and latency
/// figures assume the two cores to themselves. The lock is fair: a waiting `alone` holds back
/// new shares, so it is not starved.
pub async fn alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// Share the machine with other tests, but not with one that runs [`alone`].
pub async fn beside_others() -> MachineShare {
    MACHINE.read().await
}

/// A test that installs process-wide telemetry (one global subscriber and tracer provider), run
/// in a child process of its own: this test binary, started again on this one test. The
/// parent holds a share of the machine while the child runs.
macro_rules! own_process_test {
    ($name:ident) => {
        mod $name {
            #[test]
            fn in_own_process() {
                fn in_child() {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(4)
                        .enable_all()
                        .build()
                        .expect("a runtime for the test");
                    if let Err(e) = runtime.block_on(super::$name()) {
                        panic!("{e:?}");
                    }
                }
                let _machine = $crate::common::machine_share_blocking();
                rusty_fork::fork(
                    rusty_fork::rusty_fork_test_name!(in_own_process),
                    rusty_fork::rusty_fork_id!(),
                    |_| {},
                    |child, _| {
                        let status = child.wait().expect("waiting for the test's own process");
                        assert!(status.success(), "the test's own process exited with {status}");
                    },
                    in_child,
                )
                .expect("starting the test's own process");
            }
        }
    };
}

/// [`beside_others`], for a synchronous test.
pub fn machine_share_blocking() -> MachineShare {
    MACHINE.blocking_read()
}

/// A running embedded system owned by one test.
pub struct TestSystem {
    pub endpoints: Endpoints,
    /// Sends the admin key with every request.
    pub http: reqwest::Client,
    /// Sends no key.
    pub anonymous: reqwest::Client,
    pub keys: TestKeys,
    pub sink: Sink,
    pub dbs: HashMap<&'static str, TestDb>,
    shutdown: CancellationToken,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _data_dir: TempDir,
    _machine: MachineShare,
}

pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options a test may change.
#[derive(Debug, Clone)]
pub struct Options {
    pub saga_deadline: Duration,
    pub payment_latency: Duration,
    pub shipping_latency: Duration,
    /// How long the webhook sink takes to answer a notification of each kind.
    pub sink_delay: fn(&str) -> Duration,
    /// librdkafka properties for every client.
    pub kafka_properties: Vec<(String, String)>,
    /// The bound on open sagas (`ORDER_API_MAX_OPEN_SAGAS`).
    pub max_open_sagas: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            saga_deadline: Duration::from_secs(60),
            payment_latency: Duration::ZERO,
            shipping_latency: Duration::ZERO,
            sink_delay: |_| Duration::ZERO,
            kafka_properties: Vec::new(),
            max_open_sagas: order_svc::http::ApiLimits::default().max_open_sagas,
        }
    }
}

impl TestSystem {
    pub async fn start(backend: Backend, options: Options) -> anyhow::Result<Self> {
        Self::start_with_urls(backend, options, |url| url.to_owned()).await
    }

    /// Like [`TestSystem::start`], with each service's database URL passed through `url` first
    /// (a test puts a password in it).
    pub async fn start_with_urls(
        backend: Backend,
        options: Options,
        url: impl Fn(&str) -> String,
    ) -> anyhow::Result<Self> {
        let machine = beside_others().await;
        let (sink, sink_addr) = Sink::start(options.sink_delay).await?;
        let mut dbs = HashMap::new();
        let mut urls = HashMap::new();
        for name in service::ALL {
            let db = TestDb::new(backend, &[]).await?;
            urls.insert(name.to_owned(), url(&db.url));
            dbs.insert(name, db);
        }
        let keys = TestKeys::generate();
        let mut api = keys.api_config();
        api.limits.max_open_sagas = options.max_open_sagas;
        let data_dir = TempDir(std::env::temp_dir().join(format!("saga-e2e-{}", uuid::Uuid::new_v4().simple())));
        let config = EmbeddedConfig {
            data_dir: data_dir.0.clone(),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            partitions: 4,
            saga_deadline: options.saga_deadline,
            payment_latency: options.payment_latency,
            shipping_latency: options.shipping_latency,
            notify_webhook_url: Some(format!("http://{sink_addr}/hook")),
            database_urls: urls,
            api,
            kafka_properties: options.kafka_properties,
            ..EmbeddedConfig::default()
        };
        let shutdown = CancellationToken::new();
        let system = Embedded::build(config, &shutdown).await?;
        let endpoints = system.endpoints.clone();
        let running = tokio::spawn(system.run_until_stopped(shutdown.clone()));
        let http = client_with_key(&keys.admin)?;
        let anonymous = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Self {
            endpoints,
            http,
            anonymous,
            keys,
            sink,
            dbs,
            shutdown,
            running: Some(running),
            _data_dir: data_dir,
            _machine: machine,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.endpoints.api)
    }

    pub fn db(&self, service: &str) -> &Db {
        &self.dbs[service].db
    }

    /// POST /orders with a JSON body; returns (status, body).
    pub async fn place(&self, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self.http.post(self.url("/orders")).json(body).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Place an order that must be accepted; returns its id.
    pub async fn place_ok(&self, customer: &str, items: &[(&str, u32)], country: &str) -> anyhow::Result<String> {
        let body = order_body(customer, items, country);
        let (status, body) = self.place(&body).await?;
        anyhow::ensure!(status == 202, "expected 202, got {status}: {body}");
        Ok(body["id"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<(u16, Value)> {
        let response = self.http.get(self.url(&format!("/orders/{id}"))).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Wait until the order is completed or cancelled; returns its view.
    pub async fn terminal(&self, id: &str) -> anyhow::Result<Value> {
        eventually(WAIT, &format!("order {id} terminal"), || async {
            let (_, order) = self.get(id).await.ok()?;
            matches!(order["status"].as_str(), Some("completed" | "cancelled")).then_some(order)
        })
        .await
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(30), running).await???;
        }
        Ok(())
    }
}

impl Drop for TestSystem {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn order_body(customer: &str, items: &[(&str, u32)], country: &str) -> Value {
    json!({
        "customer_id": customer,
        "items": items.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect::<Vec<_>>(),
        "ship_to": {"country": country},
    })
}

pub fn event_types(order: &Value) -> Vec<String> {
    order["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["type"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Wait until the sink saw the notice every terminal order calls for, then return every
/// delivery it saw.
pub async fn eventually_notified(sink: &Sink, orders: &[(String, Value)]) -> anyhow::Result<Vec<Delivery>> {
    eventually(WAIT, "a notice for every order", || async {
        let deliveries = sink.deliveries();
        let told: std::collections::HashSet<(&str, &str)> =
            deliveries.iter().map(|d| (d.order_id.as_str(), d.kind.as_str())).collect();
        let all = orders.iter().all(|(id, o)| {
            let kind = if o["status"] == "completed" { "confirmation" } else { "cancellation" };
            told.contains(&(id.as_str(), kind))
        });
        all.then_some(deliveries.clone())
    })
    .await
}
