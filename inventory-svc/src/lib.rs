//! inventory-svc: owns the catalogue (SKU, name, unit price, stock) and reserves stock for
//! orders, all-or-nothing, releasing it when a later step fails or the order is cancelled.

pub mod domain;
pub mod handlers;

use anyhow::Context as _;
use shared::config::{ServiceConfig, seed_text};
use shared::service::{ServiceContext, Worker, WorkerSpec};
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
        let seed = seed_text("INVENTORY_SEED_FILE", DEMO_CATALOGUE)?;
        Ok(Self { service: ServiceConfig::from_env(service::INVENTORY, 8081)?, seed: parse_seed(&seed)? })
    }

    pub fn new(service: ServiceConfig) -> anyhow::Result<Self> {
        Ok(Self { service, seed: parse_seed(DEMO_CATALOGUE)? })
    }
}

fn parse_seed(text: &str) -> anyhow::Result<domain::CatalogueSeed> {
    domain::CatalogueSeed::from_json(text).context("invalid catalogue seed")
}

/// inventory-svc as a [`Worker`].
#[derive(Debug)]
pub struct Inventory;

/// A built inventory-svc: `App::build(config, &shutdown)`, then `run_until_stopped`.
pub type App = Worker<Inventory>;

impl WorkerSpec for Inventory {
    type Config = Config;
    type Handler = InventoryHandler;

    fn service_config(config: &Config) -> &ServiceConfig {
        &config.service
    }

    async fn start(ctx: &ServiceContext, config: Config) -> anyhow::Result<InventoryHandler> {
        let handler = InventoryHandler { store: ctx.store.clone(), topics: ctx.config.topics.clone() };
        ctx.seed(&handler, &config.seed).await?;
        Ok(handler)
    }
}
