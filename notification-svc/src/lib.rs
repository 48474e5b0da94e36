//! notification-svc: tells the customer what order-svc decided (confirmed or cancelled), once.

pub mod breaker;
pub mod domain;
pub mod handlers;
pub mod metrics;
pub mod sinks;

use anyhow::Context as _;
use shared::config::ServiceConfig;
use shared::service::{ServiceContext, Worker, WorkerSpec};
use shared::topics::service;

pub use handlers::NotificationHandler;

/// notification-svc configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// `NOTIFY_WEBHOOK_URL`, `NOTIFY_WEBHOOK_SECRET`, `NOTIFY_WEBHOOK_MAX_ATTEMPTS`,
    /// `NOTIFY_WEBHOOK_TIMEOUT_MS`, `NOTIFY_WEBHOOK_BREAKER_FAILURES`,
    /// `NOTIFY_WEBHOOK_BREAKER_OPEN_MS`: where notifications go besides the log (default: the
    /// log only), and how.
    pub notify: sinks::NotifyConfig,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::from_env(service::NOTIFICATION, 8084)?,
            notify: sinks::NotifyConfig::from_env().context("invalid notification sink configuration")?,
        })
    }

    /// The log sink only; set `notify.webhook_url` to add the webhook.
    pub fn new(service: ServiceConfig) -> anyhow::Result<Self> {
        Ok(Self { service, notify: sinks::NotifyConfig::default() })
    }
}

/// notification-svc as a [`Worker`].
#[derive(Debug)]
pub struct Notification;

/// A built notification-svc: `App::build(config, &shutdown)`, then `run_until_stopped`.
pub type App = Worker<Notification>;

impl WorkerSpec for Notification {
    type Config = Config;
    type Handler = NotificationHandler;

    fn service_config(config: &Config) -> &ServiceConfig {
        &config.service
    }

    async fn start(ctx: &ServiceContext, config: Config) -> anyhow::Result<NotificationHandler> {
        metrics::describe();
        let sinks = sinks::Sinks::from_config(&config.notify).context("failed to set up the notification sinks")?;
        if let Some(breaker) = sinks.webhook_breaker() {
            ctx.readiness_checks.add(breaker);
        }
        Ok(NotificationHandler { store: ctx.store.clone(), topics: ctx.config.topics.clone(), sinks })
    }
}
