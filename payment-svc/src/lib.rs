//! payment-svc: owns customer accounts and charges each reserved order's total to its
//! customer, declining what cannot be paid and refunding what a later failure or a
//! cancellation undoes.

pub mod domain;
pub mod handlers;

use std::sync::Arc;

use anyhow::Context as _;
use shared::CancellationToken;
use shared::config::{ServiceConfig, env_opt, env_or};
use shared::event_store::Upcaster;
use shared::service::{ServiceContext, run_worker};
use shared::topics::service;

pub use handlers::PaymentHandler;

/// The demo accounts shipped in the repository (`seed/accounts.json`).
pub const DEMO_ACCOUNTS: &str = include_str!("../seed/accounts.json");

/// payment-svc configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// `PAYMENT_SEED_FILE`: accounts opened at start-up (default: the demo accounts).
    pub seed: domain::AccountsSeed,
    /// `PAYMENT_DECLINE_RATE` (0..=1, default 0) and `PAYMENT_LATENCY_MS` (default 0): faults
    /// layered on top of the real payment rules, for demos and load tests.
    pub fault: domain::FaultProfile,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let fault = domain::FaultProfile::new(env_or("PAYMENT_DECLINE_RATE", 0.0)?, env_or("PAYMENT_LATENCY_MS", 0)?)
            .context("invalid payment fault profile")?;
        Ok(Self {
            service: ServiceConfig::from_env(service::PAYMENT, 8082)?,
            seed: load_seed(env_opt("PAYMENT_SEED_FILE"))?,
            fault,
        })
    }

    /// The demo accounts and no faults.
    pub fn new(service: ServiceConfig) -> anyhow::Result<Self> {
        Ok(Self { service, seed: load_seed(None)?, fault: domain::FaultProfile::none() })
    }
}

fn load_seed(path: Option<String>) -> anyhow::Result<domain::AccountsSeed> {
    let text = match path {
        Some(path) => std::fs::read_to_string(&path).with_context(|| format!("failed to read seed file {path}"))?,
        None => DEMO_ACCOUNTS.to_owned(),
    };
    domain::AccountsSeed::from_json(&text).context("invalid accounts seed")
}

/// A built payment-svc, ready to run.
pub struct App {
    pub ctx: ServiceContext,
    pub handler: Arc<PaymentHandler>,
    listener: tokio::net::TcpListener,
}

impl App {
    /// Connect, migrate, seed, and bind the HTTP listener (port 0 picks a free port).
    pub async fn build(config: Config, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let ctx = ServiceContext::connect(config.service, &[], Upcaster::default(), shutdown).await?;
        let handler = Arc::new(PaymentHandler {
            store: ctx.store.clone(),
            topics: ctx.config.topics.clone(),
            fault: config.fault,
        });
        let mut tx = ctx.db.begin().await?;
        handler.seed(&mut tx, &config.seed).await?;
        tx.commit().await?;
        let listener = tokio::net::TcpListener::bind(ctx.config.http_addr)
            .await
            .with_context(|| format!("failed to bind {}", ctx.config.http_addr))?;
        Ok(Self { ctx, handler, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let topics = &self.ctx.config.topics;
        let subscriptions = vec![
            (topics.inventory.clone(), service::INVENTORY.to_owned()),
            (topics.shipping.clone(), service::SHIPPING.to_owned()),
            (topics.orders.clone(), service::ORDER.to_owned()),
        ];
        let consumer = self.ctx.consumer(subscriptions, self.handler.clone());
        run_worker(self.ctx, self.listener, consumer, shutdown).await
    }
}
