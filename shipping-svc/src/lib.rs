//! shipping-svc: schedules a shipment for every paid order from the carrier network it owns,
//! and cancels it when the order is cancelled.

pub mod domain;
pub mod handlers;

use std::time::Duration;

use anyhow::Context as _;
use shared::config::{ServiceConfig, env_millis, seed_text};
use shared::service::{ServiceContext, Worker, WorkerSpec};
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
    /// `SHIPPING_LATENCY_MS` (default 0): the fault profile's latency added before every
    /// shipment decision, as a slow carrier API would (for demos and tests of late shipments).
    pub latency: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::from_env(service::SHIPPING, 8083)?,
            seed: parse_seed(&seed_text("SHIPPING_SEED_FILE", DEMO_NETWORK)?)?,
            latency: env_millis("SHIPPING_LATENCY_MS", Duration::ZERO)?,
        })
    }

    pub fn new(service: ServiceConfig) -> anyhow::Result<Self> {
        Ok(Self { service, seed: parse_seed(DEMO_NETWORK)?, latency: Duration::ZERO })
    }
}

fn parse_seed(text: &str) -> anyhow::Result<domain::NetworkSeed> {
    domain::NetworkSeed::from_json(text).context("invalid network seed")
}

/// shipping-svc as a [`Worker`].
#[derive(Debug)]
pub struct Shipping;

/// A built shipping-svc: `App::build(config, &shutdown)`, then `run_until_stopped`.
pub type App = Worker<Shipping>;

impl WorkerSpec for Shipping {
    type Config = Config;
    type Handler = ShippingHandler;

    fn service_config(config: &Config) -> &ServiceConfig {
        &config.service
    }

    async fn start(ctx: &ServiceContext, config: Config) -> anyhow::Result<ShippingHandler> {
        let handler =
            ShippingHandler { store: ctx.store.clone(), topics: ctx.config.topics.clone(), latency: config.latency };
        ctx.seed(&handler, &config.seed).await?;
        Ok(handler)
    }
}
