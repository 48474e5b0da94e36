//! order-svc: the order aggregate (the saga's authority on an order's fate) and the public
//! order API. It places orders (OrderPlaced through the outbox), folds every other service's
//! events into the order, decides OrderCompleted or OrderCancelled, and cancels orders whose
//! saga deadline passed. It is also the only REST entry point for operators: admin commands
//! travel from here to the owning services as command messages (see [`AdminCommands`]).
//!
//! Layers, inner first: [`domain`] (pure), [`storage`] (the event store, projections, read
//! models and the ports the API calls), [`http`] (routes over those ports), and [`handlers`]
//! (messages into the domain through storage). This file wires them.

pub mod domain;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod storage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shared::CancellationToken;
use shared::config::{ServiceConfig, env_days, env_millis, env_opt, env_or, env_secret};
use shared::db::Migrations;
use shared::event_store::Upcaster;
use shared::http_server::Endpoint;
use shared::service::{ServiceContext, ops_router};
use shared::topics::service;

pub use handlers::OrderHandler;
pub use http::ApiConfig;
pub use storage::{AdminCommands, Orders};

/// order-svc's own tables.
pub fn migrations() -> Migrations {
    Migrations::new(sqlx::migrate!("./migrations/postgres"), sqlx::migrate!("./migrations/sqlite"))
}

/// How order-svc reads old schema versions of its stored events (none so far). Everything that
/// folds order-svc's event store outside the service (sagactl's rebuild) uses the same one.
pub fn upcaster() -> Upcaster {
    Upcaster::default()
}

/// `OPS_ADDR` by default: `/livez`, `/healthz`, `/readyz` and `/metrics`, on loopback, away from
/// the public API's port.
pub const DEFAULT_OPS_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9080);

/// order-svc configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// `SAGA_DEADLINE_MS`: a non-terminal order older than this is cancelled
    /// (`deadline_exceeded`). Default 30 s.
    pub saga_deadline: Duration,
    /// `DEADLINE_SCAN_MS`: how often overdue orders are looked for. Default 1 s.
    pub deadline_scan_interval: Duration,
    /// Who may call the API and how much: see [`api_from_env`].
    pub api: ApiConfig,
    /// `IDEMPOTENCY_KEY_RETENTION_DAYS`: how long an `Idempotency-Key` is remembered (a retry
    /// with it gets the same order back). Default 14 days.
    pub idempotency_key_retention: Duration,
}

impl Config {
    /// The production configuration: it refuses to start without an API key unless open mode
    /// was asked for explicitly (`ORDER_API_AUTH=open`). `OPS_ADDR` places the ops endpoints
    /// (default: see [`Config::new`]).
    pub fn from_env() -> anyhow::Result<Self> {
        let mut service_config = ServiceConfig::from_env(service::ORDER, 8080)?;
        if let Some(raw) = env_opt("OPS_ADDR") {
            service_config.ops_addr =
                Some(raw.trim().parse().map_err(|e| anyhow::anyhow!("invalid value for OPS_ADDR: {e}"))?);
        }
        let mut c = Self::new(service_config)?;
        c.saga_deadline = env_millis("SAGA_DEADLINE_MS", c.saga_deadline)?;
        c.deadline_scan_interval = env_millis("DEADLINE_SCAN_MS", c.deadline_scan_interval)?;
        c.idempotency_key_retention = env_days("IDEMPOTENCY_KEY_RETENTION_DAYS", c.idempotency_key_retention)?;
        c.api = api_from_env()?;
        if let http::Auth::Keys(keys) = &c.api.auth
            && keys.is_empty()
        {
            anyhow::bail!(
                "no API key is configured: set ORDER_API_KEYS or ORDER_API_KEYS_FILE to admin:<sha256> and \
                 customer:<id>:<sha256> entries (see the README), or ORDER_API_AUTH=open on a trusted machine"
            );
        }
        Ok(c)
    }

    /// Defaults: no API key yet, so every API request is refused (401) until keys are set. The
    /// ops endpoints listen on `service.ops_addr`, else on [`DEFAULT_OPS_ADDR`], or on any free
    /// port of the API's address when the API asks for any free port (tests).
    pub fn new(mut service: ServiceConfig) -> anyhow::Result<Self> {
        if service.ops_addr.is_none() {
            service.ops_addr = Some(match service.http_addr.port() {
                0 => SocketAddr::new(service.http_addr.ip(), 0),
                _ => DEFAULT_OPS_ADDR,
            });
        }
        Ok(Self {
            service,
            saga_deadline: Duration::from_secs(30),
            deadline_scan_interval: Duration::from_secs(1),
            api: ApiConfig::with_keys(http::ApiKeys::default()),
            idempotency_key_retention: Duration::from_secs(14 * 24 * 3600),
        })
    }
}

/// The API's authentication and limits from the environment:
///
/// - `ORDER_API_AUTH`: `keys` (default) or `open` (no authentication; every caller is an admin).
/// - `ORDER_API_KEYS` or `ORDER_API_KEYS_FILE`: `admin:<sha256 hex>` and
///   `customer:<customer id>:<sha256 hex>` entries, separated by commas or newlines. The
///   result may hold no key; [`Config::from_env`] refuses that, the embedded mode makes demo keys.
///   The digest of the compose stack's published demo key is refused unless
///   `ORDER_API_ALLOW_DEMO_KEY=true` (its laptop profile sets it).
/// - `ORDER_API_RATE_LIMIT_PER_SEC` (default 200; 0 turns rate limiting off) and
///   `ORDER_API_RATE_LIMIT_BURST` (default twice the rate): per key.
/// - `ORDER_API_REQUEST_TIMEOUT_MS` (default 15000), `ORDER_API_MAX_CONCURRENT_REQUESTS`
///   (default 512, all keys together) and `ORDER_API_MAX_IN_FLIGHT_PER_KEY` (default 32).
/// - `ORDER_API_MAX_OPEN_SAGAS` (default 500; 0 turns it off): past this many open sagas,
///   `POST /orders` answers 503 with `Retry-After` (admission control, see
///   [`storage::admission`]).
/// - `ORDER_API_AUTH_FAILURES_PER_SEC` (default 10; 0 turns throttling off) and
///   `ORDER_API_AUTH_FAILURES_BURST` (default the same): failed authentications per client
///   address before it gets 429s.
pub fn api_from_env() -> anyhow::Result<ApiConfig> {
    let auth = match env_opt("ORDER_API_AUTH").as_deref().map(str::trim) {
        None | Some("keys") => {
            let text = env_secret("ORDER_API_KEYS")?.unwrap_or_default();
            let keys = http::ApiKeys::parse(&text).context("invalid ORDER_API_KEYS")?;
            refuse_published_demo_key(&keys, env_opt("ORDER_API_ALLOW_DEMO_KEY").as_deref())?;
            http::Auth::Keys(keys)
        }
        Some("open") => http::Auth::Open,
        Some(other) => anyhow::bail!("ORDER_API_AUTH must be keys or open, not {other:?}"),
    };
    let defaults = http::ApiLimits::default();
    let default_rate = defaults.rate.map_or(0, |r| r.per_second.get());
    let per_second: u32 = env_or("ORDER_API_RATE_LIMIT_PER_SEC", default_rate)?;
    let burst: u32 = env_or("ORDER_API_RATE_LIMIT_BURST", per_second.saturating_mul(2))?;
    let rate = std::num::NonZeroU32::new(per_second).map(|per_second| http::RateLimit {
        per_second,
        burst: std::num::NonZeroU32::new(burst).unwrap_or(per_second),
    });
    let max_concurrent_requests = env_or("ORDER_API_MAX_CONCURRENT_REQUESTS", defaults.max_concurrent_requests)?;
    anyhow::ensure!(max_concurrent_requests >= 1, "ORDER_API_MAX_CONCURRENT_REQUESTS must be at least 1");
    let default_failures = defaults.auth_failures.map_or(0, |r| r.per_second.get());
    let failures_per_second: u32 = env_or("ORDER_API_AUTH_FAILURES_PER_SEC", default_failures)?;
    let failures_burst: u32 = env_or("ORDER_API_AUTH_FAILURES_BURST", failures_per_second)?;
    let auth_failures = std::num::NonZeroU32::new(failures_per_second).map(|per_second| http::RateLimit {
        per_second,
        burst: std::num::NonZeroU32::new(failures_burst).unwrap_or(per_second),
    });
    let max_in_flight_per_key = env_or("ORDER_API_MAX_IN_FLIGHT_PER_KEY", defaults.max_in_flight_per_key)?;
    anyhow::ensure!(max_in_flight_per_key >= 1, "ORDER_API_MAX_IN_FLIGHT_PER_KEY must be at least 1");
    let request_timeout = env_millis("ORDER_API_REQUEST_TIMEOUT_MS", defaults.request_timeout)?;
    anyhow::ensure!(!request_timeout.is_zero(), "ORDER_API_REQUEST_TIMEOUT_MS must be positive");
    let max_open_sagas = env_or("ORDER_API_MAX_OPEN_SAGAS", defaults.max_open_sagas)?;
    Ok(ApiConfig {
        auth,
        limits: http::ApiLimits {
            rate,
            request_timeout,
            max_concurrent_requests,
            max_in_flight_per_key,
            auth_failures,
            max_open_sagas,
        },
    })
}

/// Refuses configured keys that accept the compose stack's published demo key, unless
/// `allow` (`ORDER_API_ALLOW_DEMO_KEY`) is `true`: the key is in the repository, so a stack
/// that accepts it outside a laptop is open to anyone who read it.
fn refuse_published_demo_key(keys: &http::ApiKeys, allow: Option<&str>) -> anyhow::Result<()> {
    let allowed = match allow.map(str::trim) {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(other) => anyhow::bail!("ORDER_API_ALLOW_DEMO_KEY must be true or false, not {other:?}"),
    };
    anyhow::ensure!(
        allowed || !keys.accepts(http::auth::PUBLISHED_DEMO_KEY),
        "ORDER_API_KEYS holds the digest of the compose stack's published demo key: configure keys of \
         your own (see the README), or set ORDER_API_ALLOW_DEMO_KEY=true on a laptop"
    );
    Ok(())
}

/// A built order-svc, ready to run.
pub struct App {
    pub ctx: ServiceContext,
    pub orders: Orders,
    pub admin: AdminCommands,
    config: Config,
    listener: tokio::net::TcpListener,
    ops_listener: tokio::net::TcpListener,
}

impl App {
    /// Connect, migrate, and bind the API and ops listeners (port 0 picks a free port).
    pub async fn build(config: Config, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        metrics::describe();
        let mut ctx = ServiceContext::connect(config.service.clone(), &[migrations()], upcaster(), shutdown).await?;
        ctx.retained.push((storage::IDEMPOTENCY_KEYS, config.idempotency_key_retention));
        let orders = Orders {
            db: ctx.db.clone(),
            store: ctx.store.clone(),
            topics: ctx.config.topics.clone(),
            outbox_signal: ctx.outbox_signal.clone(),
            saga_deadline: chrono::TimeDelta::from_std(config.saga_deadline).context("saga deadline out of range")?,
            admission: storage::Admission::new(config.api.limits.max_open_sagas),
            group_commit: None,
        }
        .with_group_commit();
        metrics::max_open_sagas(config.api.limits.max_open_sagas);
        let admin = AdminCommands {
            db: ctx.db.clone(),
            store: ctx.store.clone(),
            topics: ctx.config.topics.clone(),
            outbox_signal: ctx.outbox_signal.clone(),
        };
        let listener = tokio::net::TcpListener::bind(ctx.config.http_addr)
            .await
            .with_context(|| format!("failed to bind {}", ctx.config.http_addr))?;
        let ops_addr = ctx.config.ops_listen_addr();
        let ops_listener =
            tokio::net::TcpListener::bind(ops_addr).await.with_context(|| format!("failed to bind {ops_addr}"))?;
        tracing::info!(auth = ?config.api.auth, limits = ?config.api.limits, "order API admission");
        Ok(Self { ctx, orders, admin, config, listener, ops_listener })
    }

    /// The API's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The ops endpoints' address.
    pub fn ops_addr(&self) -> std::io::Result<SocketAddr> {
        self.ops_listener.local_addr()
    }

    /// Serve the API (with `/healthz` for load balancers) and, on the ops listener, `/livez`,
    /// `/healthz`, `/readyz` and `/metrics`; consume upstream events, and cancel overdue
    /// orders, until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let App { ctx, orders, admin, config, listener, ops_listener } = self;
        let handler = Arc::new(OrderHandler { orders: orders.clone() });
        let consumer = ctx.consumer(handler);
        // Load balancers may probe the API's own port; /healthz there reads and writes nothing.
        let api = http::routes(orders.clone(), admin, &config.api)
            .route("/healthz", axum::routing::get(shared::ops::healthz));
        let router = http::with_problem_fallbacks(api)
            .layer(axum::middleware::from_fn(|req, next| shared::ops::track_http(service::ORDER, req, next)));
        let endpoint = |role| Endpoint { service: service::ORDER, role, limits: ctx.config.http.clone() };
        let (api_endpoint, ops_endpoint) = (endpoint("api"), endpoint("ops"));
        let ops = ops_router(&ctx);
        let (http_stop, ops_stop, consumer_stop, scan_stop) =
            (shutdown.clone(), shutdown.clone(), shutdown.clone(), shutdown.clone());
        let front: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>> = vec![
            Box::pin(shared::http_server::serve(listener, router, api_endpoint, http_stop)),
            Box::pin(shared::http_server::serve(ops_listener, ops, ops_endpoint, ops_stop)),
            Box::pin(async move { consumer.run(consumer_stop).await.map(|_| ()) }),
            Box::pin(deadline_scanner(orders, config.deadline_scan_interval, scan_stop)),
        ];
        shared::service::run(ctx, front, shutdown).await
    }
}

/// Cancel orders whose saga deadline passed, every `interval`, until `shutdown`.
async fn deadline_scanner(orders: Orders, interval: Duration, shutdown: CancellationToken) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
        record_open_orders(&orders).await;
        let overdue = match storage::order_view::overdue(&orders.db, chrono::Utc::now(), 200).await {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(error = %err, "deadline scan failed");
                continue;
            }
        };
        for order_id in overdue {
            match handlers::expire_one(&orders, order_id).await {
                Ok(true) => {
                    orders.outbox_signal.notify();
                    tracing::info!(order.id = %order_id, "saga deadline passed, order cancelled");
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(order.id = %order_id, error = format!("{err:#}"), "failed to expire order"),
            }
        }
    }
}

/// Publish the open-order gauges (the "stuck saga" alert watches them), and give admission
/// control its count.
async fn record_open_orders(orders: &Orders) {
    let now = chrono::Utc::now();
    let included = orders.admission.begin_count();
    match storage::order_view::open_orders(&orders.db, now).await {
        Ok((open, overdue, earliest_deadline)) => {
            orders.admission.observe(included, u64::try_from(open).unwrap_or(0));
            let deadline = orders.saga_deadline.to_std().unwrap_or_default();
            // An order's deadline is its placement time plus the saga deadline.
            let oldest_age = earliest_deadline
                .map(|d| (now - (d - orders.saga_deadline)).to_std().unwrap_or_default())
                .unwrap_or_default();
            metrics::open_orders(open, overdue, oldest_age, deadline);
        }
        Err(err) => {
            orders.admission.count_failed(included);
            tracing::warn!(error = %err, "open order count failed");
        }
    }
}
