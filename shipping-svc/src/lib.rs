//! shipping-svc: schedules a shipment for every paid order from the carrier network it owns,
//! and cancels it when the order is cancelled.

pub mod domain;
pub mod handlers;

use std::sync::Arc;

use anyhow::Context as _;
use shared::CancellationToken;
use shared::config::{ServiceConfig, env_opt};
use shared::event_store::Upcaster;
use shared::service::{ServiceContext, run_worker};
use shared::topics::service;

pub use handlers::ShippingHandler;

/// The demo carrier network shipped in the repository (`seed/network.json`).
pub const DEMO_NETWORK: &str = include_str!("../seed/network.json");

/// shipping-svc configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// `SHIPPING_SEED_FILE`: carriers registered at start-up (default: the demo network).
    pub seed: domain::NetworkSeed,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::from_env(service::SHIPPING, 8083)?,
            seed: load_seed(env_opt("SHIPPING_SEED_FILE"))?,
        })
    }

    pub fn new(service: ServiceConfig) -> anyhow::Result<Self> {
        Ok(Self { service, seed: load_seed(None)? })
    }
}

fn load_seed(path: Option<String>) -> anyhow::Result<domain::NetworkSeed> {
    let text = match path {
        Some(path) => std::fs::read_to_string(&path).with_context(|| format!("failed to read seed file {path}"))?,
        None => DEMO_NETWORK.to_owned(),
    };
    domain::NetworkSeed::from_json(&text).context("invalid network seed")
}

/// A built shipping-svc, ready to run.
pub struct App {
    pub ctx: ServiceContext,
    pub handler: Arc<ShippingHandler>,
    listener: tokio::net::TcpListener,
}

impl App {
    /// Connect, migrate, seed, and bind the HTTP listener (port 0 picks a free port).
    pub async fn build(config: Config, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let ctx = ServiceContext::connect(config.service, &[], Upcaster::default(), shutdown).await?;
        let handler = Arc::new(ShippingHandler { store: ctx.store.clone(), topics: ctx.config.topics.clone() });
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
            (topics.payments.clone(), service::PAYMENT.to_owned()),
            (topics.orders.clone(), service::ORDER.to_owned()),
        ];
        let consumer = self.ctx.consumer(subscriptions, self.handler.clone());
        run_worker(self.ctx, self.listener, consumer, shutdown).await
    }
}
