//! Where notifications go: a log sink that is always on, and an HTTP webhook when
//! `NOTIFY_WEBHOOK_URL` is set.
//!
//! The webhook POSTs the [`Notification`] as JSON with an `Idempotency-Key` header carrying its
//! `notification_id`, which is the same on every retry and every redelivery, so the receiver
//! can count each notification once. Transient failures (network errors, timeouts, 408, 429,
//! 5xx) are retried with capped exponential backoff; other non-2xx answers are permanent. A
//! delivery that still fails ends in a [`SinkError`], which the handler dead-letters — unless
//! the webhook's circuit breaker ([`crate::breaker`]) opened: then it is
//! [`SinkError::CircuitOpen`], which pauses the consumer until the webhook is back.
//!
//! `http://` and `https://` webhooks are accepted; TLS is rustls (ring, the webpki roots), no
//! OpenSSL. With `NOTIFY_WEBHOOK_SECRET` set, every request carries a [`SIGNATURE_HEADER`]
//! (see [`signature`]). The webhook's URL may hold credentials (user info, a token in the
//! query), so logs and errors show only its origin ([`shown_url`]), and of an error response
//! at most [`MAX_ERROR_BODY_BYTES`] are read.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use sha2::Sha256;

use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use crate::domain::Notification;

/// The header that carries a notification's dedupe key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// The header that carries a request's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "Saga-Signature";

/// How much of a rejecting response's body is kept for the dead letter.
const MAX_ERROR_BODY_CHARS: usize = 512;

/// How much of a rejecting response's body is read at most: a receiver (or whatever answers in
/// its place) cannot make the service read, or hold, more than this.
pub const MAX_ERROR_BODY_BYTES: usize = 4 * 1024;

/// The shortest accepted `NOTIFY_WEBHOOK_SECRET`.
const MIN_SECRET_BYTES: usize = 16;

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
    /// The webhook is unavailable: its circuit breaker is open, or opened during this delivery.
    #[error("webhook unavailable: its circuit breaker is open")]
    CircuitOpen,
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

/// The key that signs webhook requests. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Arc<[u8]>);

impl WebhookSecret {
    /// At least 16 bytes (32 random bytes are recommended, e.g. `openssl rand -hex 32`).
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, SinkError> {
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SinkError::Config(format!(
                "NOTIFY_WEBHOOK_SECRET must be at least {MIN_SECRET_BYTES} bytes long"
            )));
        }
        Ok(Self(secret.into()))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// The [`SIGNATURE_HEADER`] value for `body` sent at `timestamp` (Unix seconds):
/// `t=<timestamp>,v1=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`.
///
/// A receiver recomputes the HMAC over the timestamp, a dot and the raw body bytes as received
/// (before any JSON parsing), compares it with `v1` in constant time, and rejects a timestamp
/// more than a few minutes from its own clock. The timestamp is signed so that a captured
/// request cannot be replayed later with a fresh timestamp; each retry is signed anew.
pub fn signature(secret: &WebhookSecret, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail; an empty MAC is never sent.
    let hex = match <Hmac<Sha256> as hmac::Mac>::new_from_slice(&secret.0) {
        Ok(mut mac) => {
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    format!("t={timestamp},v1={hex}")
}

/// The webhook URL as logs and errors may show it: scheme, host and port only. User info, query
/// and fragment can carry credentials (`https://user:token@host/hook?token=…`), and so can the
/// path of some services' webhooks, so none of them is shown.
pub fn shown_url(url: &reqwest::Url) -> String {
    match url.port() {
        Some(port) => format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or("")),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")),
    }
}

/// Notification sink settings, from the environment.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct NotifyConfig {
    /// `NOTIFY_WEBHOOK_URL`: the webhook to POST to (`http://` or `https://`); unset or empty
    /// means the log sink only.
    pub webhook_url: Option<String>,
    /// `NOTIFY_WEBHOOK_SECRET` (or `NOTIFY_WEBHOOK_SECRET_FILE`): signs every request; unset or
    /// empty means unsigned requests (a warning at start-up).
    pub secret: Option<WebhookSecret>,
    /// `NOTIFY_WEBHOOK_MAX_ATTEMPTS` (default 5) and `NOTIFY_WEBHOOK_TIMEOUT_MS` (per attempt,
    /// default 5000); the backoff is 100 ms doubling up to 2 s.
    pub retry: RetryPolicy,
    /// `NOTIFY_WEBHOOK_BREAKER_FAILURES` (default 5) and `NOTIFY_WEBHOOK_BREAKER_OPEN_MS`
    /// (default 30000): when the webhook's circuit breaker opens, and for how long.
    pub breaker: BreakerConfig,
}

/// The URL may hold credentials and the secret is one: neither is shown.
impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self.webhook_url.as_deref().map(|url| reqwest::Url::parse(url).map(|u| shown_url(&u)));
        f.debug_struct("NotifyConfig")
            .field("webhook", &url.map(|u| u.unwrap_or_else(|_| "<invalid>".to_owned())))
            .field("signed", &self.secret.is_some())
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .finish()
    }
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
        let secret = shared::config::secret_from("NOTIFY_WEBHOOK_SECRET", &lookup)
            .map_err(|e| SinkError::Config(format!("{e:#}")))?
            .filter(|secret| !secret.trim().is_empty())
            .map(|secret| WebhookSecret::new(secret.trim()))
            .transpose()?;
        let mut breaker = BreakerConfig::default();
        if let Some(failures) = lookup("NOTIFY_WEBHOOK_BREAKER_FAILURES") {
            breaker.failures_to_open = parse_positive("NOTIFY_WEBHOOK_BREAKER_FAILURES", &failures)?;
        }
        if let Some(open) = lookup("NOTIFY_WEBHOOK_BREAKER_OPEN_MS") {
            breaker.open_for = Duration::from_millis(parse_positive("NOTIFY_WEBHOOK_BREAKER_OPEN_MS", &open)?.into());
        }
        let config = Self { webhook_url, secret, retry, breaker };
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

/// `http://` or `https://` (the parse error never quotes the URL, which may hold credentials).
fn parse_webhook_url(url: &str) -> Result<reqwest::Url, SinkError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| SinkError::Config(format!("NOTIFY_WEBHOOK_URL is not a valid url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(SinkError::Config(format!(
            "NOTIFY_WEBHOOK_URL must be an http:// or https:// url, got scheme {:?}",
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
#[derive(Clone)]
pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    /// What logs and errors show of `url`.
    shown: String,
    retry: RetryPolicy,
    secret: Option<WebhookSecret>,
    breaker: Option<Arc<CircuitBreaker>>,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.shown)
            .field("retry", &self.retry)
            .field("signed", &self.secret.is_some())
            .field("breaker", &self.breaker.as_ref().map(|b| b.state()))
            .finish()
    }
}

/// The outcome of one failed attempt.
enum AttemptError {
    Retryable(String),
    Permanent(SinkError),
}

impl WebhookSink {
    /// A sink for `url` (`http://` or `https://`, trusting the webpki roots), retrying as
    /// `retry` says.
    pub fn new(url: &str, retry: RetryPolicy) -> Result<Self, SinkError> {
        Self::with_root_certificates(url, retry, Vec::new())
    }

    /// Like [`Self::new`], also trusting `roots` (a private CA, a test's certificate).
    pub fn with_root_certificates(
        url: &str,
        retry: RetryPolicy,
        roots: Vec<reqwest::Certificate>,
    ) -> Result<Self, SinkError> {
        if retry.max_attempts == 0 {
            return Err(SinkError::Config("max_attempts must be at least 1".to_owned()));
        }
        let url = parse_webhook_url(url)?;
        // A webhook that redirects a POST is misconfigured; following it would drop the body.
        let builder = reqwest::Client::builder().use_rustls_tls().redirect(reqwest::redirect::Policy::none());
        let client = roots
            .into_iter()
            .fold(builder, |b, root| b.add_root_certificate(root))
            .build()
            .map_err(SinkError::Client)?;
        Ok(Self { client, shown: shown_url(&url), url, retry, secret: None, breaker: None })
    }

    /// Sign every request with `secret` ([`SIGNATURE_HEADER`]).
    pub fn signed_with(mut self, secret: WebhookSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Let every attempt through `breaker` first (shared with other sinks' clones).
    pub fn guarded_by(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    pub fn breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.breaker.as_ref()
    }

    /// The webhook's origin, as logs show it (never its credentials).
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    async fn attempt(&self, body: &[u8], key: &HeaderValue) -> Result<(), AttemptError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(IDEMPOTENCY_KEY_HEADER, key.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, chrono::Utc::now().timestamp(), body));
        }
        let response = request
            .body(body.to_vec())
            .timeout(self.retry.request_timeout)
            .send()
            .await
            // reqwest's errors name the full URL: drop it, the error goes to logs and dead letters.
            .map_err(|e| AttemptError::Retryable(error_chain(&e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if is_transient(status) {
            return Err(AttemptError::Retryable(format!("status {status}")));
        }
        let body = read_at_most(response, MAX_ERROR_BODY_BYTES).await;
        Err(AttemptError::Permanent(SinkError::Rejected {
            status: status.as_u16(),
            body: body.chars().take(MAX_ERROR_BODY_CHARS).collect(),
        }))
    }
}

/// The start of a response's body, `limit` bytes at most (lossy UTF-8): the rest is never read,
/// and the connection is dropped with the response.
async fn read_at_most(mut response: reqwest::Response, limit: usize) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk[..chunk.len().min(limit - bytes.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), SinkError> {
        let key = HeaderValue::try_from(notification.notification_id.to_string())
            .map_err(|e| SinkError::Config(format!("invalid idempotency key: {e}")))?;
        let body = serde_json::to_vec(notification)
            .map_err(|e| SinkError::Config(format!("cannot encode the notification: {e}")))?;
        let mut last_error = String::new();
        for attempt in 1..=self.retry.max_attempts {
            if attempt > 1 {
                tokio::time::sleep(self.retry.backoff(attempt - 1)).await;
            }
            if let Some(breaker) = &self.breaker
                && breaker.admit().is_err()
            {
                return Err(SinkError::CircuitOpen);
            }
            let outcome = self.attempt(&body, &key).await;
            // Any answer but a transient failure shows the webhook is up.
            if let Some(breaker) = &self.breaker {
                match &outcome {
                    Err(AttemptError::Retryable(_)) => breaker.record_failure(),
                    Ok(()) | Err(AttemptError::Permanent(_)) => breaker.record_success(),
                }
            }
            match outcome {
                Ok(()) => {
                    tracing::debug!(
                        order.id = %notification.order_id,
                        notification_id = %notification.notification_id,
                        webhook = %self.shown,
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
                        webhook = %self.shown,
                        attempt,
                        max_attempts = self.retry.max_attempts,
                        error = %error,
                        "webhook delivery failed"
                    );
                    last_error = error;
                }
            }
        }
        // The failures opened the breaker: the webhook is down, not this notification.
        if self.breaker.as_ref().is_some_and(|b| b.state() != BreakerState::Closed) {
            return Err(SinkError::CircuitOpen);
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
            let mut webhook =
                WebhookSink::new(url, config.retry)?.guarded_by(Arc::new(CircuitBreaker::new(config.breaker)));
            match &config.secret {
                Some(secret) => webhook = webhook.signed_with(secret.clone()),
                None => tracing::warn!(
                    webhook = %webhook.shown_url(),
                    "webhook requests are not signed: set NOTIFY_WEBHOOK_SECRET so the receiver can verify them"
                ),
            }
            sinks.push(AnySink::Webhook(webhook));
        }
        Ok(Self(sinks))
    }

    pub fn new(sinks: Vec<AnySink>) -> Self {
        Self(sinks)
    }

    /// The webhook's circuit breaker, when there is a webhook.
    pub fn webhook_breaker(&self) -> Option<Arc<CircuitBreaker>> {
        self.0.iter().find_map(|sink| match sink {
            AnySink::Webhook(webhook) => webhook.breaker().cloned(),
            AnySink::Log(_) => None,
        })
    }

    /// Does a sink call out of the process (the webhook)? The log sink does not.
    pub fn call_out(&self) -> bool {
        self.0.iter().any(|sink| !matches!(sink, AnySink::Log(_)))
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
        assert_eq!(config.breaker, BreakerConfig { failures_to_open: 5, open_for: Duration::from_secs(30) });
    }

    #[test]
    fn config_reads_the_webhook_url_attempts_and_timeout() {
        let config = NotifyConfig::from_lookup(lookup(&[
            ("NOTIFY_WEBHOOK_URL", "http://127.0.0.1:9000/hook"),
            ("NOTIFY_WEBHOOK_MAX_ATTEMPTS", "3"),
            ("NOTIFY_WEBHOOK_TIMEOUT_MS", "250"),
            ("NOTIFY_WEBHOOK_BREAKER_FAILURES", "7"),
            ("NOTIFY_WEBHOOK_BREAKER_OPEN_MS", "1500"),
        ]))
        .expect("config");

        assert_eq!(config.breaker, BreakerConfig { failures_to_open: 7, open_for: Duration::from_millis(1500) });
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
            [("NOTIFY_WEBHOOK_URL", "ftp://example.com/hook")],
            [("NOTIFY_WEBHOOK_SECRET", "too short")],
            [("NOTIFY_WEBHOOK_BREAKER_FAILURES", "0")],
            [("NOTIFY_WEBHOOK_BREAKER_OPEN_MS", "soon")],
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
            ..NotifyConfig::default()
        })
        .expect("sinks");

        assert_eq!(log_only.names(), vec!["log"]);
        assert_eq!(both.names(), vec!["log", "webhook"]);
    }

    #[test]
    fn an_https_webhook_is_accepted_and_its_client_builds() {
        let config = NotifyConfig::from_lookup(lookup(&[("NOTIFY_WEBHOOK_URL", "https://hooks.example.com/notify")]))
            .expect("config");

        let sinks = Sinks::from_config(&config).expect("sinks with an https webhook");

        assert_eq!(sinks.names(), vec!["log", "webhook"]);
    }

    #[test]
    fn config_reads_the_signing_secret_and_never_shows_it_or_the_urls_credentials() {
        let secret = "0123456789abcdef0123456789abcdef";
        let config = NotifyConfig::from_lookup(lookup(&[
            ("NOTIFY_WEBHOOK_URL", "https://user:pass-word@hooks.example.com:8443/p/tok-en?token=q-secret#frag"),
            ("NOTIFY_WEBHOOK_SECRET", secret),
        ]))
        .expect("config");

        assert_eq!(config.secret, Some(WebhookSecret::new(secret).expect("secret")));
        let shown = format!("{config:?}");
        for hidden in [secret, "pass-word", "tok-en", "q-secret", "frag", "user"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        assert!(shown.contains("https://hooks.example.com:8443"), "{shown}");
    }

    #[test]
    fn an_empty_secret_means_unsigned_requests() {
        let config = NotifyConfig::from_lookup(lookup(&[("NOTIFY_WEBHOOK_SECRET", "")])).expect("config");

        assert_eq!(config.secret, None);
    }

    #[test]
    fn the_signature_is_the_hmac_of_the_timestamp_a_dot_and_the_body() {
        let secret = WebhookSecret(Arc::from(b"Jefe".as_slice()));

        let header = signature(&secret, 1, b"what do ya want for nothing?");

        // HMAC-SHA256("Jefe", "1.what do ya want for nothing?"), computed with Python's hmac.
        assert_eq!(header, "t=1,v1=a9049465ce89cfb8e9aac62333abda66f80e3403f51f57f6bae3c3a4485eca38");
        assert_ne!(header, signature(&secret, 2, b"what do ya want for nothing?"), "the timestamp is signed");
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
