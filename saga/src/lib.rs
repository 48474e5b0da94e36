//! The embedded deployment: all five services in one process, on an embedded Kafka-protocol
//! broker (librdkafka's mock cluster, reached through real rdkafka clients on loopback) and one
//! SQLite database per service in a data directory. Only configuration differs from the
//! production deployment: the services are the same libraries.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use shared::CancellationToken;
use shared::broker::{AddressFile, EmbeddedBroker, KafkaConfig};
use shared::config::ServiceConfig;
use shared::telemetry::LogFormat;
use shared::topics::{Topics, service};
use tokio::task::JoinSet;

/// How to run the embedded system.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Where the SQLite databases live.
    pub data_dir: PathBuf,
    /// The API (order-svc) address; the other services' ops endpoints take the next four ports,
    /// order-svc's the fifth (or free ports when this one is 0).
    pub api_addr: SocketAddr,
    pub partitions: i32,
    pub saga_deadline: Duration,
    pub otlp_endpoint: Option<String>,
    pub log_format: LogFormat,
    /// Payment fault profile: share of payments declined on purpose, and added latency.
    pub payment_decline_rate: f64,
    pub payment_latency: Duration,
    /// Shipping fault profile: latency added before each shipment decision.
    pub shipping_latency: Duration,
    /// Optional webhook for notifications.
    pub notify_webhook_url: Option<String>,
    /// Per-service database URLs overriding the SQLite files in `data_dir` (tests run the
    /// same system on PostgreSQL this way).
    pub database_urls: std::collections::HashMap<String, String>,
    /// Who may call the order API, and its limits. The default has no key, so every API call
    /// is refused until keys (or [`DemoKeys`]) are set.
    pub api: order_svc::ApiConfig,
    /// librdkafka properties for every client (as `KAFKA_PROP_*` are in production).
    pub kafka_properties: Vec<(String, String)>,
    /// The limits of every listener (`HTTP_*` as in production).
    pub http: shared::http_server::ServerLimits,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            partitions: 8,
            saga_deadline: Duration::from_secs(30),
            otlp_endpoint: None,
            log_format: LogFormat::Json,
            payment_decline_rate: 0.0,
            payment_latency: Duration::ZERO,
            shipping_latency: Duration::ZERO,
            notify_webhook_url: None,
            database_urls: Default::default(),
            api: order_svc::ApiConfig::with_keys(order_svc::http::ApiKeys::default()),
            kafka_properties: Vec::new(),
            http: Default::default(),
        }
    }
}

/// Keys for trying the system out, made at start-up when none are configured: one admin key and
/// one customer key per demo account. They live in memory only (as digests) and are printed
/// once, on the terminal.
#[derive(Clone)]
pub struct DemoKeys {
    pub admin: String,
    /// `(customer id, key)`.
    pub customers: Vec<(String, String)>,
}

impl std::fmt::Debug for DemoKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoKeys").field("customers", &self.customers.len()).finish_non_exhaustive()
    }
}

impl DemoKeys {
    /// Fresh random keys for the demo accounts.
    pub fn generate() -> anyhow::Result<Self> {
        let accounts = payment_svc::domain::AccountsSeed::from_json(payment_svc::DEMO_ACCOUNTS)
            .context("invalid demo accounts")?;
        Ok(Self {
            admin: order_svc::http::generate_key(),
            customers: accounts
                .accounts
                .iter()
                .map(|a| (a.customer_id.clone(), order_svc::http::generate_key()))
                .collect(),
        })
    }

    /// The keys as the API checks them.
    pub fn api_keys(&self) -> anyhow::Result<order_svc::http::ApiKeys> {
        use order_svc::http::{ApiKeys, Role};
        let mut keys = vec![(self.admin.as_str(), Role::Admin)];
        for (customer, key) in &self.customers {
            let id = order_svc::domain::CustomerId::parse(customer.as_str())
                .map_err(|e| anyhow::anyhow!("demo customer id: {}", e.message()))?;
            keys.push((key.as_str(), Role::Customer(id)));
        }
        Ok(ApiKeys::from_keys(keys))
    }
}

/// Where each service listens.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// order-svc's API (and `/healthz`).
    pub api: SocketAddr,
    /// order-svc's ops endpoints: `/livez`, `/healthz`, `/readyz`, `/metrics`.
    pub order_ops: SocketAddr,
    pub inventory: SocketAddr,
    pub payment: SocketAddr,
    pub shipping: SocketAddr,
    pub notification: SocketAddr,
    pub brokers: String,
}

/// order-svc's ops endpoints are this many ports above the API.
pub const ORDER_OPS_OFFSET: u16 = 5;

/// The running system: join it with [`Embedded::run_until_stopped`].
pub struct Embedded {
    pub endpoints: Endpoints,
    pub topics: Topics,
    broker: EmbeddedBroker,
    /// `<data dir>/broker.addr`, removed when the system stops (or is dropped).
    address_file: AddressFile,
    order: order_svc::App,
    inventory: inventory_svc::App,
    payment: payment_svc::App,
    shipping: shipping_svc::App,
    notification: notification_svc::App,
}

fn service_config(
    config: &EmbeddedConfig,
    name: &'static str,
    kafka: &KafkaConfig,
    topics: &Topics,
    offset: u16,
) -> ServiceConfig {
    let mut c = ServiceConfig::defaults(name, 0);
    c.database_url = match config.database_urls.get(name) {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", database_path(&config.data_dir, name).display()),
    };
    let port = |offset| if config.api_addr.port() == 0 { 0 } else { config.api_addr.port() + offset };
    c.http_addr = SocketAddr::new(config.api_addr.ip(), port(offset));
    if name == service::ORDER {
        c.ops_addr = Some(SocketAddr::new(config.api_addr.ip(), port(ORDER_OPS_OFFSET)));
    }
    c.http = config.http.clone();
    c.kafka = kafka.clone();
    c.topics = topics.clone();
    c.otlp_endpoint = config.otlp_endpoint.clone();
    c.log_format = config.log_format;
    c.kafka.properties.extend(config.kafka_properties.iter().cloned());
    c
}

impl Embedded {
    /// Start the broker, open the databases, seed, and bind every listener.
    pub async fn build(config: EmbeddedConfig, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create data directory {}", config.data_dir.display()))?;
        // The five services share this process's metrics recorder: each /metrics endpoint
        // serves its own service's series (order-svc also those without a service label).
        shared::metrics::serve_per_service(service::ORDER);
        let topics = Topics::default();
        let broker = EmbeddedBroker::start(&topics.all(), config.partitions)?;
        let mut kafka = KafkaConfig::new(broker.bootstrap_servers());
        kafka.partitions = config.partitions;
        kafka.create_topics = false; // created above through the mock API

        let cfg = |name, offset| service_config(&config, name, &kafka, &topics, offset);
        let mut order_config = order_svc::Config::new(cfg(service::ORDER, 0))?;
        order_config.saga_deadline = config.saga_deadline;
        order_config.api = config.api.clone();
        let mut payment_config = payment_svc::Config::new(cfg(service::PAYMENT, 2))?;
        payment_config.fault = payment_svc::domain::FaultProfile::new(
            config.payment_decline_rate,
            config.payment_latency.as_millis() as u64,
        )
        .map_err(|e| anyhow::anyhow!("invalid payment fault profile: {e}"))?;
        let mut notification_config = notification_svc::Config::new(cfg(service::NOTIFICATION, 4))?;
        if let Some(url) = &config.notify_webhook_url {
            notification_config.notify.webhook_url = Some(url.clone());
        }

        let order = order_svc::App::build(order_config, shutdown).await?;
        let inventory =
            inventory_svc::App::build(inventory_svc::Config::new(cfg(service::INVENTORY, 1))?, shutdown).await?;
        let payment = payment_svc::App::build(payment_config, shutdown).await?;
        let mut shipping_config = shipping_svc::Config::new(cfg(service::SHIPPING, 3))?;
        shipping_config.latency = config.shipping_latency;
        let shipping = shipping_svc::App::build(shipping_config, shutdown).await?;
        let notification = notification_svc::App::build(notification_config, shutdown).await?;
        let endpoints = Endpoints {
            api: order.local_addr()?,
            order_ops: order.ops_addr()?,
            inventory: inventory.local_addr()?,
            payment: payment.local_addr()?,
            shipping: shipping.local_addr()?,
            notification: notification.local_addr()?,
            brokers: broker.bootstrap_servers().to_owned(),
        };
        // Last, so that a system that failed to start leaves no address behind.
        let address_file = AddressFile::publish(&broker_address_path(&config.data_dir), &endpoints.brokers)?;
        Ok(Self { endpoints, topics, broker, address_file, order, inventory, payment, shipping, notification })
    }

    /// The embedded broker (fault-injection tests take it down and up).
    pub fn broker(&self) -> &EmbeddedBroker {
        &self.broker
    }

    /// Run every service until `shutdown`; each drains its work before the broker stops.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Embedded { broker, address_file, order, inventory, payment, shipping, notification, .. } = self;
        let mut services = JoinSet::new();
        services.spawn(order.run_until_stopped(shutdown.clone()));
        services.spawn(inventory.run_until_stopped(shutdown.clone()));
        services.spawn(payment.run_until_stopped(shutdown.clone()));
        services.spawn(shipping.run_until_stopped(shutdown.clone()));
        services.spawn(notification.run_until_stopped(shutdown.clone()));
        let mut first_error = None;
        while let Some(joined) = services.join_next().await {
            let result = joined.context("service panicked").and_then(|r| r);
            if let Err(err) = result {
                tracing::error!(error = format!("{err:#}"), "service failed; stopping the system");
                shutdown.cancel();
                first_error.get_or_insert(err);
            }
        }
        drop(address_file);
        drop(broker);
        first_error.map_or(Ok(()), Err)
    }
}

/// Where the running system publishes its broker's address (see [`shared::broker::ADDRESS_FILE`]).
pub fn broker_address_path(data_dir: &Path) -> PathBuf {
    data_dir.join(shared::broker::ADDRESS_FILE)
}

/// The data directory's SQLite file for a service.
pub fn database_path(data_dir: &Path, service: &str) -> PathBuf {
    data_dir.join(format!("{service}.db"))
}
