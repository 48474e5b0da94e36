//! notification-svc: tells the customer that an order ships or was cancelled, once per kind.

pub mod domain;
pub mod handlers;
pub mod sinks;

use std::sync::Arc;

use anyhow::Context as _;
use shared::CancellationToken;
use shared::config::ServiceConfig;
use shared::event_store::Upcaster;
use shared::service::{ServiceContext, run_worker};
use shared::topics::service;

pub use handlers::NotificationHandler;

/// notification-svc configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// `NOTIFY_WEBHOOK_URL`, `NOTIFY_WEBHOOK_MAX_ATTEMPTS`, `NOTIFY_WEBHOOK_TIMEOUT_MS`: where
    /// notifications go besides the log (default: the log only).
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

/// A built notification-svc, ready to run.
pub struct App {
    pub ctx: ServiceContext,
    pub handler: Arc<NotificationHandler>,
    listener: tokio::net::TcpListener,
}

impl App {
    /// Connect, migrate, set up the sinks, and bind the HTTP listener (port 0 picks a free
    /// port).
    pub async fn build(config: Config, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let sinks = sinks::Sinks::from_config(&config.notify).context("failed to set up the notification sinks")?;
        let ctx = ServiceContext::connect(config.service, &[], Upcaster::default(), shutdown).await?;
        let handler =
            Arc::new(NotificationHandler { store: ctx.store.clone(), topics: ctx.config.topics.clone(), sinks });
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
            (topics.shipping.clone(), service::SHIPPING.to_owned()),
            (topics.orders.clone(), service::ORDER.to_owned()),
        ];
        let consumer = self.ctx.consumer(subscriptions, self.handler.clone());
        run_worker(self.ctx, self.listener, consumer, shutdown).await
    }
}
