//! Where notifications go: a log sink that is always on, and an HTTP webhook when
//! `NOTIFY_WEBHOOK_URL` is set.
//!
//! The webhook POSTs the [`Notification`] as JSON with an `Idempotency-Key` header carrying its
//! `notification_id`, which is the same on every retry and every redelivery, so the receiver
//! can count each notification once. Transient failures (network errors, timeouts, 408, 429,
//! 5xx) are retried with capped exponential backoff; other non-2xx answers are permanent. A
//! delivery that still fails ends in a [`SinkError`], which the handler dead-letters.

use std::future::Future;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderValue;

use crate::domain::Notification;

/// The header that carries a notification's dedupe key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// How much of a rejecting response's body is kept for the dead letter.
const MAX_ERROR_BODY_CHARS: usize = 512;

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The receiver refused the notification for good (a 4xx other than 408 and 429, or an
    /// unexpected redirect); retrying cannot help.
    #[error("webhook rejected the notification with status {status}: {body}")]
    Rejected { status: u16, body: String },
    /// Every attempt of the retry budget failed transiently.
    #[error("webhook delivery gave up after {attempts} attempts: {last_error}")]
    Exhausted { attempts: u32, last_error: String },
    #[error("invalid notification config: {0}")]
    Config(String),
    #[error("failed to build the webhook http client")]
    Client(#[source] reqwest::Error),
}

/// How the webhook retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles for each further retry.
    pub base_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
    /// How long one attempt may take, connecting included.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the retry after the first attempt):
    /// `base_delay * 2^(retry - 1)`, at most `max_delay`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.base_delay.checked_mul(factor).map_or(self.max_delay, |delay| delay.min(self.max_delay))
    }
}

/// Notification sink settings, from the environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotifyConfig {
    /// `NOTIFY_WEBHOOK_URL`: the webhook to POST to (plain `http://`); unset or empty means the
    /// log sink only.
    pub webhook_url: Option<String>,
    /// `NOTIFY_WEBHOOK_MAX_ATTEMPTS` (default 5) and `NOTIFY_WEBHOOK_TIMEOUT_MS` (per attempt,
    /// default 5000); the backoff is 100 ms doubling up to 2 s.
    pub retry: RetryPolicy,
}

impl NotifyConfig {
    pub fn from_env() -> Result<Self, SinkError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Self::from_env`], reading variables through `lookup` (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SinkError> {
        let webhook_url = lookup("NOTIFY_WEBHOOK_URL").map(|url| url.trim().to_owned()).filter(|url| !url.is_empty());
        let mut retry = RetryPolicy::default();
        if let Some(attempts) = lookup("NOTIFY_WEBHOOK_MAX_ATTEMPTS") {
            retry.max_attempts = parse_positive("NOTIFY_WEBHOOK_MAX_ATTEMPTS", &attempts)?;
        }
        if let Some(timeout) = lookup("NOTIFY_WEBHOOK_TIMEOUT_MS") {
            let millis = parse_positive("NOTIFY_WEBHOOK_TIMEOUT_MS", &timeout)?;
            retry.request_timeout = Duration::from_millis(millis.into());
        }
        let config = Self { webhook_url, retry };
        if let Some(url) = &config.webhook_url {
            parse_webhook_url(url)?;
        }
        Ok(config)
    }
}

fn parse_positive(name: &str, value: &str) -> Result<u32, SinkError> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| SinkError::Config(format!("{name} must be a positive integer, got {value:?}")))
}

/// Only plain http is accepted: the build has no TLS backend (the webhook is expected on
/// loopback or inside the deployment's network).
fn parse_webhook_url(url: &str) -> Result<reqwest::Url, SinkError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| SinkError::Config(format!("NOTIFY_WEBHOOK_URL is not a valid url: {e}")))?;
    if parsed.scheme() != "http" {
        return Err(SinkError::Config(format!(
            "NOTIFY_WEBHOOK_URL must be an http:// url (no tls backend is built in), got scheme {:?}",
            parsed.scheme()
        )));
    }
    Ok(parsed)
}

/// Something that delivers notifications.
pub trait Sink {
    /// A short, stable name, recorded with each delivery (`DeliveryRecorded.sinks`).
    fn name(&self) -> &'static str;

    /// Delivers one notification. Delivering the same notification again must be harmless.
    fn deliver(&self, notification: &Notification) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Writes each notification to the log as structured fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

impl Sink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), SinkError> {
        tracing::info!(
            order.id = %notification.order_id,
            customer.id = %notification.customer_id,
            kind = notification.kind.as_str(),
            notification_id = %notification.notification_id,
            subject = %notification.subject,
            "notification delivered"
        );
        Ok(())
    }
}

/// POSTs each notification to a webhook, retrying transient failures.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    retry: RetryPolicy,
}

/// The outcome of one failed attempt.
enum AttemptError {
    Retryable(String),
    Permanent(SinkError),
}

impl WebhookSink {
    /// A sink for `url` (plain `http://`), retrying as `retry` says.
    pub fn new(url: &str, retry: RetryPolicy) -> Result<Self, SinkError> {
        if retry.max_attempts == 0 {
            return Err(SinkError::Config("max_attempts must be at least 1".to_owned()));
        }
        let url = parse_webhook_url(url)?;
        // A webhook that redirects a POST is misconfigured; following it would drop the body.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(SinkError::Client)?;
        Ok(Self { client, url, retry })
    }

    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    async fn attempt(&self, notification: &Notification, key: &HeaderValue) -> Result<(), AttemptError> {
        let response = self
            .client
            .post(self.url.clone())
            .header(IDEMPOTENCY_KEY_HEADER, key.clone())
            .json(notification)
            .timeout(self.retry.request_timeout)
            .send()
            .await
            .map_err(|e| AttemptError::Retryable(error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if is_transient(status) {
            return Err(AttemptError::Retryable(format!("status {status}")));
        }
        let body = response.text().await.unwrap_or_default();
        Err(AttemptError::Permanent(SinkError::Rejected {
            status: status.as_u16(),
            body: body.chars().take(MAX_ERROR_BODY_CHARS).collect(),
        }))
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), SinkError> {
        let key = HeaderValue::try_from(notification.notification_id.to_string())
            .map_err(|e| SinkError::Config(format!("invalid idempotency key: {e}")))?;
        let mut last_error = String::new();
        for attempt in 1..=self.retry.max_attempts {
            if attempt > 1 {
                tokio::time::sleep(self.retry.backoff(attempt - 1)).await;
            }
            match self.attempt(notification, &key).await {
                Ok(()) => {
                    tracing::debug!(
                        order.id = %notification.order_id,
                        notification_id = %notification.notification_id,
                        attempt,
                        "webhook delivered"
                    );
                    return Ok(());
                }
                Err(AttemptError::Permanent(error)) => return Err(error),
                Err(AttemptError::Retryable(error)) => {
                    tracing::warn!(
                        order.id = %notification.order_id,
                        notification_id = %notification.notification_id,
                        attempt,
                        max_attempts = self.retry.max_attempts,
                        error = %error,
                        "webhook delivery failed"
                    );
                    last_error = error;
                }
            }
        }
        Err(SinkError::Exhausted { attempts: self.retry.max_attempts, last_error })
    }
}

/// Timeouts, throttling and server errors pass; other refusals do not.
fn is_transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS
}

/// An error with its causes, `outer: inner: root`, since reqwest's top-level message alone
/// rarely says what went wrong.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Any of the sinks, so a handler can hold a list of them.
#[derive(Debug, Clone)]
pub enum AnySink {
    Log(LogSink),
    Webhook(WebhookSink),
}

impl Sink for AnySink {
    fn name(&self) -> &'static str {
        match self {
            AnySink::Log(sink) => sink.name(),
            AnySink::Webhook(sink) => sink.name(),
        }
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), SinkError> {
        match self {
            AnySink::Log(sink) => sink.deliver(notification).await,
            AnySink::Webhook(sink) => sink.deliver(notification).await,
        }
    }
}

/// The sinks every notification goes to, in order.
#[derive(Debug, Clone)]
pub struct Sinks(Vec<AnySink>);

impl Sinks {
    /// The log sink, plus the webhook when configured.
    pub fn from_config(config: &NotifyConfig) -> Result<Self, SinkError> {
        let mut sinks = vec![AnySink::Log(LogSink)];
        if let Some(url) = &config.webhook_url {
            sinks.push(AnySink::Webhook(WebhookSink::new(url, config.retry)?));
        }
        Ok(Self(sinks))
    }

    pub fn new(sinks: Vec<AnySink>) -> Self {
        Self(sinks)
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|s| s.name().to_owned()).collect()
    }

    /// Delivers to every sink in turn and returns their names (for `DeliveryRecorded`). Stops at
    /// the first failure; a later redrive delivers again to all, which the dedupe key absorbs.
    pub async fn deliver_all(&self, notification: &Notification) -> Result<Vec<String>, SinkError> {
        for sink in &self.0 {
            sink.deliver(notification).await?;
        }
        Ok(self.names())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn backoff_doubles_from_the_base_delay_and_is_capped() {
        let policy = RetryPolicy::default();

        let delays: Vec<u128> = (1..=7).map(|n| policy.backoff(n).as_millis()).collect();

        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn config_without_variables_is_the_log_sink_with_default_retries() {
        let config = NotifyConfig::from_lookup(lookup(&[])).expect("config");

        assert_eq!(config, NotifyConfig::default());
        assert_eq!(config.retry.max_attempts, 5);
        assert_eq!(config.retry.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn config_reads_the_webhook_url_attempts_and_timeout() {
        let config = NotifyConfig::from_lookup(lookup(&[
            ("NOTIFY_WEBHOOK_URL", "http://127.0.0.1:9000/hook"),
            ("NOTIFY_WEBHOOK_MAX_ATTEMPTS", "3"),
            ("NOTIFY_WEBHOOK_TIMEOUT_MS", "250"),
        ]))
        .expect("config");

        assert_eq!(config.webhook_url.as_deref(), Some("http://127.0.0.1:9000/hook"));
        assert_eq!(config.retry.max_attempts, 3);
        assert_eq!(config.retry.request_timeout, Duration::from_millis(250));
    }

    #[test]
    fn an_empty_webhook_url_means_no_webhook() {
        let config = NotifyConfig::from_lookup(lookup(&[("NOTIFY_WEBHOOK_URL", " ")])).expect("config");

        assert_eq!(config.webhook_url, None);
    }

    #[test]
    fn invalid_settings_are_config_errors() {
        for vars in [
            [("NOTIFY_WEBHOOK_MAX_ATTEMPTS", "0")],
            [("NOTIFY_WEBHOOK_MAX_ATTEMPTS", "many")],
            [("NOTIFY_WEBHOOK_TIMEOUT_MS", "-1")],
            [("NOTIFY_WEBHOOK_URL", "not a url")],
            [("NOTIFY_WEBHOOK_URL", "https://example.com/hook")],
        ] {
            let result = NotifyConfig::from_lookup(lookup(&vars));

            assert!(matches!(result, Err(SinkError::Config(_))), "{vars:?}");
        }
    }

    #[test]
    fn the_sinks_are_the_log_sink_plus_the_webhook_when_configured() {
        let log_only = Sinks::from_config(&NotifyConfig::default()).expect("sinks");
        let both = Sinks::from_config(&NotifyConfig {
            webhook_url: Some("http://127.0.0.1:9/hook".to_owned()),
            retry: RetryPolicy::default(),
        })
        .expect("sinks");

        assert_eq!(log_only.names(), vec!["log"]);
        assert_eq!(both.names(), vec!["log", "webhook"]);
    }

    #[test]
    fn transient_statuses_are_timeouts_throttling_and_server_errors() {
        for status in [408, 429, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(status).expect("status");
            assert!(is_transient(status), "{status}");
        }
        for status in [301, 400, 401, 403, 404, 409, 422] {
            let status = StatusCode::from_u16(status).expect("status");
            assert!(!is_transient(status), "{status}");
        }
    }
}
