//! inventory-svc: owns the catalogue (SKU, name, unit price, stock) and reserves stock for
//! orders, all-or-nothing, releasing it when a later step fails or the order is cancelled.

pub mod domain;
pub mod handlers;

use std::sync::Arc;

use anyhow::Context as _;
use shared::CancellationToken;
use shared::config::{ServiceConfig, env_opt};
use shared::event_store::Upcaster;
use shared::service::{ServiceContext, run_worker};
use shared::topics::service;

pub use handlers::InventoryHandler;

/// The demo catalogue shipped in the repository (`seed/catalogue.json`).
pub const DEMO_CATALOGUE: &str = include_str!("../seed/catalogue.json");

/// inventory-svc configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// `INVENTORY_SEED_FILE`: catalogue loaded at start-up (default: the demo catalogue).
    pub seed: domain::CatalogueSeed,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::from_env(service::INVENTORY, 8081)?,
            seed: load_seed(env_opt("INVENTORY_SEED_FILE"))?,
        })
    }

    pub fn new(service: ServiceConfig) -> anyhow::Result<Self> {
        Ok(Self { service, seed: load_seed(None)? })
    }
}

fn load_seed(path: Option<String>) -> anyhow::Result<domain::CatalogueSeed> {
    let text = match path {
        Some(path) => std::fs::read_to_string(&path).with_context(|| format!("failed to read seed file {path}"))?,
        None => DEMO_CATALOGUE.to_owned(),
    };
    domain::CatalogueSeed::from_json(&text).context("invalid catalogue seed")
}

/// A built inventory-svc, ready to run.
pub struct App {
    pub ctx: ServiceContext,
    pub handler: Arc<InventoryHandler>,
    listener: tokio::net::TcpListener,
}

impl App {
    /// Connect, migrate, seed, and bind the HTTP listener (port 0 picks a free port).
    pub async fn build(config: Config, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let ctx = ServiceContext::connect(config.service, &[], Upcaster::default(), shutdown).await?;
        let handler = Arc::new(InventoryHandler { store: ctx.store.clone(), topics: ctx.config.topics.clone() });
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
            (topics.orders.clone(), service::ORDER.to_owned()),
            (topics.payments.clone(), service::PAYMENT.to_owned()),
            (topics.shipping.clone(), service::SHIPPING.to_owned()),
        ];
        let consumer = self.ctx.consumer(subscriptions, self.handler.clone());
        run_worker(self.ctx, self.listener, consumer, shutdown).await
    }
}
