//! Service runtime: what every service does around its business handler. Connect (retrying
//! until the database is reachable), migrate, create owned topics, then run the consumer loop,
//! the outbox relay and the operational HTTP server until shutdown, stopping them in the order
//! that loses nothing: HTTP and the consumer first (they finish in-flight work and commit),
//! then the relay (it publishes what they committed and flushes), then the database.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::producer::FutureProducer;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{ServiceConfig, redact_url};
use crate::consumer::{ConsumerLoop, Handler};
use crate::db::{Db, Migrations, Tx, shared_migrations};
use crate::event_store::{EventStore, StoreError, StreamCache, Upcaster};
use crate::http_server::Endpoint;
use crate::ops::{Readiness, ReadinessChecks};
use crate::outbox::{Backoff, OutboxSignal, Relay};
use crate::retention::{self, Pruner, Table};
use std::sync::Arc;

/// Reference data a service writes at start-up (its catalogue, accounts or carrier network),
/// through its own handler, in the transaction [`ServiceContext::seed`] opens.
pub trait Seeder: Sync {
    type Seed: Sync;

    /// Write what of `seed` is not there yet; running it again must append nothing.
    fn seed(&self, tx: &mut Tx, seed: &Self::Seed) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A connected service: its database, event store, outbox and broker clients.
#[derive(Clone)]
pub struct ServiceContext {
    pub config: ServiceConfig,
    pub db: Db,
    pub store: EventStore,
    pub outbox_signal: OutboxSignal,
    pub producer: FutureProducer,
    /// The tables pruned by age while the service runs, each with how long its rows are kept:
    /// the inbox, and whatever the service adds before it runs.
    pub retained: Vec<(Table, Duration)>,
    /// Checks the service adds to `/readyz` (e.g. in [`WorkerSpec::start`]).
    pub readiness_checks: ReadinessChecks,
}

/// Retry `attempt` with capped backoff until it succeeds or `shutdown`; after the first
/// failure, serve a "starting" ops endpoint on the service's address.
async fn retry<T, F, Fut>(
    config: &ServiceConfig,
    what: &str,
    shutdown: &CancellationToken,
    starting: &mut Option<Starting>,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(err) => {
                tracing::warn!(
                    service = config.service,
                    database = %redact_url(&config.database_url),
                    brokers = %config.kafka.brokers,
                    error = format!("{err:#}"),
                    "{what}, retrying"
                );
                if starting.is_none() {
                    *starting = Starting::serve(config).await;
                }
                tokio::select! {
                    () = shutdown.cancelled() => anyhow::bail!("shut down while starting ({what})"),
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

/// The ops endpoint of a service that is still connecting: alive, not ready.
struct Starting {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Starting {
    async fn serve(config: &ServiceConfig) -> Option<Self> {
        let addr = config.ops_listen_addr();
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(addr = %addr, error = %err, "cannot serve the starting endpoint");
                return None;
            }
        };
        let metrics = crate::metrics::install();
        let router = axum::Router::new()
            .route("/livez", axum::routing::get(crate::ops::healthz))
            .route("/healthz", axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "starting"})) }))
            .route(
                "/readyz",
                axum::routing::get(|| async {
                    let body =
                        serde_json::json!({"status": "not_ready", "reason": "starting: dependencies unreachable"});
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
                }),
            )
            .route("/metrics", axum::routing::get(move || std::future::ready(metrics.render())));
        let stop = CancellationToken::new();
        let endpoint = Endpoint { service: config.service, role: "starting", limits: config.http.clone() };
        let task = tokio::spawn(crate::http_server::serve(listener, router, endpoint, stop.clone()));
        Some(Self { stop, task })
    }
}

/// Stop the starting endpoint (so the service can bind its real one), passing `result` on.
async fn stop_starting<T>(starting: Option<Starting>, result: anyhow::Result<T>) -> anyhow::Result<T> {
    if let Some(s) = starting {
        s.stop.cancel();
        let _ = s.task.await;
    }
    result
}

impl ServiceContext {
    /// Connect and migrate, retrying with backoff while the database is unreachable (until
    /// `shutdown`), and create the topics this service owns when allowed.
    pub async fn connect(
        config: ServiceConfig,
        migrations: &[Migrations],
        upcaster: Upcaster,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        // While dependencies are unreachable, answer /healthz and say "not ready" on /readyz
        // instead of crashing in a restart loop.
        let mut starting = None;
        let db = retry(&config, "database unreachable", shutdown, &mut starting, || async {
            let db = Db::connect(&config.database_url, &config.db).await?;
            db.migrate(&shared_migrations()).await?;
            for m in migrations {
                db.migrate(m).await?;
            }
            Ok(db)
        })
        .await;
        let db = match db {
            // Observed once connected and migrated: a pool dropped by a failed attempt above
            // is not kept alive by its sampler.
            Ok(db) => db.observed(config.service),
            Err(err) => return stop_starting(starting, Err(err)).await,
        };
        if config.kafka.create_topics {
            let mut owned: Vec<String> =
                config.topics.published_by(config.service).into_iter().map(str::to_owned).collect();
            owned.push(config.topics.dead_letter(config.service));
            let created = retry(&config, "cannot create topics yet", shutdown, &mut starting, || {
                config.kafka.create_topics(&owned)
            })
            .await;
            if let Err(err) = created {
                return stop_starting(starting, Err(err)).await;
            }
        }
        stop_starting(starting, Ok(())).await?;
        let producer = config.kafka.producer()?;
        let retained = vec![(retention::INBOX, config.retention.inbox)];
        Ok(Self {
            config,
            db,
            store: EventStore::new(upcaster),
            outbox_signal: OutboxSignal::default(),
            producer,
            retained,
            readiness_checks: ReadinessChecks::default(),
        })
    }

    /// Write reference data at start-up in one transaction, again when it lost an
    /// optimistic-concurrency race: replicas starting together seed the same streams, and a
    /// seed is idempotent, so the retry finds the other replica's events and appends nothing.
    pub async fn seed<S: Seeder>(&self, seeder: &S, seed: &S::Seed) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let seeded = async {
                let mut tx = self.db.begin().await?;
                seeder.seed(&mut tx, seed).await?;
                Ok::<_, anyhow::Error>(tx.commit().await?)
            };
            match seeded.await {
                Err(err)
                    if attempt < 5
                        && err.chain().any(|c| matches!(c.downcast_ref(), Some(StoreError::Conflict { .. }))) =>
                {
                    tracing::info!(
                        service = self.config.service,
                        attempt,
                        "another replica seeded concurrently, seeding again"
                    );
                }
                other => return other.context("failed to seed"),
            }
        }
    }

    pub fn readiness(&self) -> Readiness {
        Readiness::new(self.db.clone(), self.producer.clone(), self.readiness_checks.clone())
    }

    pub fn relay(&self) -> Relay {
        Relay::new(
            self.config.service,
            self.db.clone(),
            self.producer.clone(),
            self.outbox_signal.clone(),
            self.config.relay.clone(),
        )
    }

    /// The consumer loop for this service's group over the topics it subscribes to
    /// ([`crate::topology`]).
    pub fn consumer<H: Handler>(&self, handler: Arc<H>) -> ConsumerLoop<H> {
        ConsumerLoop {
            service: self.config.service,
            group: self.config.topics.group(self.config.service),
            topics: self.config.topics.subscriptions(self.config.service),
            dead_letter_topic: self.config.topics.dead_letter(self.config.service),
            db: self.db.clone(),
            kafka: self.config.kafka.clone(),
            handler,
            outbox_signal: self.outbox_signal.clone(),
            stream_cache: StreamCache::new(self.config.consumer.stream_cache),
            options: self.config.consumer.clone(),
            crash_hook: Default::default(),
        }
    }
}

/// Run a service's tasks until `shutdown`. `front` tasks (HTTP, consumer, timers) get
/// `shutdown` directly; the relay is stopped only after they all finished, so everything they
/// committed is published before the process exits.
pub async fn run(
    ctx: ServiceContext,
    front: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let relay_stop = CancellationToken::new();
    let relay = tokio::spawn(ctx.relay().run(relay_stop.clone()));
    let mut tasks = JoinSet::new();
    for task in front {
        tasks.spawn(task);
    }
    let pruner = Pruner {
        service: ctx.config.service,
        db: ctx.db.clone(),
        tables: ctx.retained.clone(),
        options: ctx.config.retention.clone(),
    };
    tasks.spawn(pruner.run(shutdown.clone()));
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.context("service task panicked").and_then(|r| r);
        if let Err(err) = result {
            tracing::error!(service = ctx.config.service, error = format!("{err:#}"), "service task failed");
            first_error.get_or_insert(err);
            // One failed task takes the service down cleanly.
            shutdown.cancel();
        }
    }
    relay_stop.cancel();
    relay.await.context("outbox relay panicked")?;
    ctx.db.close().await;
    tracing::info!(service = ctx.config.service, "stopped");
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Run a Kafka-only service (inventory, payment, shipping, notification): its consumer loop
/// and its operational HTTP server, plus the relay, until `shutdown`.
pub async fn run_worker<H: Handler>(
    ctx: ServiceContext,
    listener: tokio::net::TcpListener,
    consumer: ConsumerLoop<H>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let ops = ops_router(&ctx);
    let endpoint = Endpoint { service: ctx.config.service, role: "ops", limits: ctx.config.http.clone() };
    let http_stop = shutdown.clone();
    let consumer_stop = shutdown.clone();
    let front: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>> = vec![
        Box::pin(crate::http_server::serve(listener, ops, endpoint, http_stop)),
        Box::pin(async move { consumer.run(consumer_stop).await.map(|_| ()) }),
    ];
    run(ctx, front, shutdown).await
}

/// `/livez`, `/healthz`, `/readyz` and `/metrics` for this service, with request metrics.
pub fn ops_router(ctx: &ServiceContext) -> axum::Router {
    let service = ctx.config.service;
    crate::ops::router(ctx.readiness(), crate::metrics::install())
        .layer(axum::middleware::from_fn(move |req, next| crate::ops::track_http(service, req, next)))
}

/// The `main` of a standalone service process: telemetry from `config`, SIGINT/SIGTERM as the
/// shutdown signal, `run` until it returns, then the tracer flushed.
pub async fn run_process<F, Fut>(config: &ServiceConfig, run: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let telemetry = crate::telemetry::init(config.service, config.otlp_endpoint.as_deref(), config.log_format)?;
    tracing::info!(service = config.service, config = ?config, "starting");
    let shutdown = crate::shutdown::on_signal();
    let result = run(shutdown).await;
    if let Err(err) = &result {
        tracing::error!(service = config.service, error = format!("{err:#}"), "exiting with an error");
    }
    telemetry.shutdown();
    result
}

/// What distinguishes one Kafka-only service from another; [`Worker`] does the rest.
pub trait WorkerSpec: Send + Sync + 'static {
    /// The service's configuration (embeds a [`ServiceConfig`]).
    type Config: Send;
    type Handler: Handler;

    fn service_config(config: &Self::Config) -> &ServiceConfig;

    /// Build the handler once connected (and load seed data, in its own transaction).
    fn start(
        ctx: &ServiceContext,
        config: Self::Config,
    ) -> impl std::future::Future<Output = anyhow::Result<Self::Handler>> + Send;
}

/// A built Kafka-only service (inventory, payment, shipping, notification), ready to run.
pub struct Worker<S: WorkerSpec> {
    pub ctx: ServiceContext,
    pub handler: Arc<S::Handler>,
    listener: tokio::net::TcpListener,
}

impl<S: WorkerSpec> Worker<S> {
    /// Connect (retrying while dependencies are unreachable), migrate, start the handler, and
    /// bind the ops listener (port 0 picks a free port).
    pub async fn build(config: S::Config, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let service_config = S::service_config(&config).clone();
        let ctx = ServiceContext::connect(service_config, &[], Upcaster::default(), shutdown).await?;
        let handler = Arc::new(S::start(&ctx, config).await?);
        let listener = tokio::net::TcpListener::bind(ctx.config.http_addr)
            .await
            .with_context(|| format!("failed to bind {}", ctx.config.http_addr))?;
        Ok(Self { ctx, handler, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Consume, publish and serve /livez, /healthz, /readyz, /metrics until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let consumer = self.ctx.consumer(self.handler.clone());
        run_worker(self.ctx, self.listener, consumer, shutdown).await
    }
}
