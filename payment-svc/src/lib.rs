//! payment-svc: owns customer accounts and charges each reserved order's total to its
//! customer, declining what cannot be paid and refunding what a later failure or a
//! cancellation undoes.

pub mod domain;
pub mod handlers;

use anyhow::Context as _;
use shared::config::{ServiceConfig, env_or, seed_text};
use shared::service::{ServiceContext, Worker, WorkerSpec};
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
            seed: parse_seed(&seed_text("PAYMENT_SEED_FILE", DEMO_ACCOUNTS)?)?,
            fault,
        })
    }

    /// The demo accounts and no faults.
    pub fn new(service: ServiceConfig) -> anyhow::Result<Self> {
        Ok(Self { service, seed: parse_seed(DEMO_ACCOUNTS)?, fault: domain::FaultProfile::none() })
    }
}

fn parse_seed(text: &str) -> anyhow::Result<domain::AccountsSeed> {
    domain::AccountsSeed::from_json(text).context("invalid accounts seed")
}

/// payment-svc as a [`Worker`].
#[derive(Debug)]
pub struct Payment;

/// A built payment-svc: `App::build(config, &shutdown)`, then `run_until_stopped`.
pub type App = Worker<Payment>;

impl WorkerSpec for Payment {
    type Config = Config;
    type Handler = PaymentHandler;

    fn service_config(config: &Config) -> &ServiceConfig {
        &config.service
    }

    async fn start(ctx: &ServiceContext, config: Config) -> anyhow::Result<PaymentHandler> {
        let handler =
            PaymentHandler { store: ctx.store.clone(), topics: ctx.config.topics.clone(), fault: config.fault };
        ctx.seed(&handler, &config.seed).await?;
        Ok(handler)
    }
}
