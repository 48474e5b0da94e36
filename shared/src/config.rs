//! Typed configuration from environment variables. Defaults run the embedded mode; every
//! service embeds [`ServiceConfig`] in its own config struct.
//!
//! Secrets (the database password, SASL credentials in `KAFKA_PROP_*`, order-svc's API keys)
//! come from the environment or from files: every secret-bearing variable `NAME` also reads as
//! `NAME_FILE`, the path of a file holding the value (Docker and Kubernetes secrets), see
//! [`env_secret`]. They are never logged: [`ServiceConfig`]'s and `KafkaConfig`'s `Debug`
//! redact them, and no error message quotes a secret's value.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::broker::KafkaConfig;
use crate::consumer::ConsumerOptions;
use crate::db::DbOptions;
use crate::http_server::ServerLimits;
use crate::outbox::RelayOptions;
use crate::retention::RetentionOptions;
use crate::telemetry::LogFormat;
use crate::topics::Topics;

/// Read `name`, or `default` when unset; a set but unparsable value is an error naming it.
pub fn env_or<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse::<T>().map_err(|e| anyhow::anyhow!("invalid value for {name}: {e}"))
        }
        _ => Ok(default),
    }
}

/// Read an optional variable.
pub fn env_opt(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A secret: the value of `name`, or the contents of the file named by `name_FILE` (one
/// trailing newline removed). Setting both is an error; so is an unreadable file. Error
/// messages name the variable and the file, never the value.
pub fn env_secret(name: &str) -> anyhow::Result<Option<String>> {
    secret_from(name, env_opt)
}

/// [`env_secret`] over any variable lookup (tests pass a map).
pub fn secret_from(name: &str, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<String>> {
    let file_var = format!("{name}_FILE");
    match (lookup(name), lookup(&file_var)) {
        (Some(_), Some(_)) => anyhow::bail!("set {name} or {file_var}, not both"),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => read_secret_file(&file_var, path.trim()).map(Some),
        (None, None) => Ok(None),
    }
}

fn read_secret_file(variable: &str, path: &str) -> anyhow::Result<String> {
    let mut text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("failed to read {variable}={path}: {e}"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// Put `password` into a URL's user info: `postgres://app@db/x` → `postgres://app:<pw>@db/x`,
/// percent-encoding what a URL cannot carry as is. The URL must name a user.
pub fn with_password(url: &str, password: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| anyhow::anyhow!("DATABASE_URL has no scheme"))?;
    let Some((userinfo, host)) = rest.split_once('@') else {
        anyhow::bail!("DATABASE_PASSWORD is set but DATABASE_URL names no user (postgres://USER@HOST/DB)");
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    let encoded: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    Ok(format!("{scheme}://{user}:{encoded}@{host}"))
}

/// Seed data: the file named by `variable` when set, else the copy bundled with the service.
pub fn seed_text(variable: &str, bundled: &str) -> anyhow::Result<String> {
    match env_opt(variable) {
        Some(path) => {
            std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("failed to read {variable}={path}: {e}"))
        }
        None => Ok(bundled.to_owned()),
    }
}

/// A duration given in milliseconds.
/// A positive number of days (fractions allowed) as a duration, or `default` when unset.
pub fn env_days(name: &str, default: Duration) -> anyhow::Result<Duration> {
    let days: f64 = env_or(name, default.as_secs_f64() / 86_400.0)?;
    if !(days.is_finite() && days > 0.0) {
        anyhow::bail!("{name} must be a positive number of days");
    }
    Ok(Duration::from_secs_f64(days * 86_400.0))
}

pub fn env_millis(name: &str, default: Duration) -> anyhow::Result<Duration> {
    Ok(Duration::from_millis(env_or(name, default.as_millis() as u64)?))
}

/// What every service needs, whatever its business.
#[derive(Clone)]
pub struct ServiceConfig {
    pub service: &'static str,
    /// `HTTP_ADDR`: where the service listens: order-svc's API, the ops endpoints
    /// (`/livez`, `/healthz`, `/readyz`, `/metrics`) of every other service.
    pub http_addr: SocketAddr,
    /// Where the ops endpoints listen when not on `http_addr`: order-svc's `OPS_ADDR`, which
    /// keeps them off the public API's port. `None` for the other services.
    pub ops_addr: Option<SocketAddr>,
    /// `HTTP_HEADER_READ_TIMEOUT_MS`, `HTTP_BODY_READ_TIMEOUT_MS`, `HTTP_KEEP_ALIVE_TIMEOUT_MS`,
    /// `HTTP_MAX_CONNECTIONS`, `HTTP_MAX_HEADER_BYTES`: the limits of every listener.
    pub http: ServerLimits,
    /// `DATABASE_URL` (or `DATABASE_URL_FILE`): `postgres://…` or `sqlite://…`, with the
    /// password of `DATABASE_PASSWORD` (or `DATABASE_PASSWORD_FILE`) put in when set.
    pub database_url: String,
    pub db: DbOptions,
    /// `KAFKA_BROKERS`, `KAFKA_PARTITIONS`, `KAFKA_CREATE_TOPICS` and `KAFKA_PROP_<NAME>`
    /// pass-through properties (`KAFKA_PROP_SECURITY_PROTOCOL=SASL_SSL` → `security.protocol`;
    /// `KAFKA_PROP_SASL_PASSWORD_FILE=/run/secrets/x` → `sasl.password` read from the file).
    pub kafka: KafkaConfig,
    /// `TOPIC_PREFIX`: isolates topic names on a shared cluster.
    pub topics: Topics,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: OTLP gRPC endpoint; unset = no export.
    pub otlp_endpoint: Option<String>,
    /// `LOG_FORMAT`: `json` or `pretty`; unset: pretty when standard output is a terminal, else
    /// JSON ([`LogFormat::choose`]).
    pub log_format: LogFormat,
    /// `CONSUMER_MAX_ATTEMPTS`, `CONSUMER_MAX_BATCH`, `CONSUMER_STREAM_CACHE`.
    pub consumer: ConsumerOptions,
    /// `OUTBOX_BATCH_SIZE`, `OUTBOX_POLL_MS`, `OUTBOX_LEASE_MS`, `OUTBOX_MARK_MS`.
    pub relay: RelayOptions,
    /// `INBOX_RETENTION_DAYS`.
    pub retention: RetentionOptions,
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("service", &self.service)
            .field("http_addr", &self.http_addr)
            .field("ops_addr", &self.ops_addr)
            .field("http", &self.http)
            .field("database_url", &redact_url(&self.database_url))
            .field("brokers", &self.kafka.brokers)
            .field("kafka_properties", &self.kafka.properties.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("topics", &self.topics)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .finish_non_exhaustive()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl ServiceConfig {
    /// Where the ops endpoints listen (also while the service is still connecting).
    pub fn ops_listen_addr(&self) -> SocketAddr {
        self.ops_addr.unwrap_or(self.http_addr)
    }

    /// Defaults for `service`: SQLite under `./data`, the given port, brokers on localhost.
    pub fn defaults(service: &'static str, port: u16) -> Self {
        Self {
            service,
            http_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            ops_addr: None,
            http: ServerLimits::default(),
            database_url: format!("sqlite://data/{service}.db"),
            db: DbOptions::default(),
            kafka: KafkaConfig::new("127.0.0.1:9092"),
            topics: Topics::default(),
            otlp_endpoint: None,
            log_format: LogFormat::Json,
            consumer: ConsumerOptions::default(),
            relay: RelayOptions::default(),
            retention: RetentionOptions::default(),
        }
    }

    /// Read the environment over [`ServiceConfig::defaults`].
    pub fn from_env(service: &'static str, default_port: u16) -> anyhow::Result<Self> {
        let mut c = Self::defaults(service, default_port);
        c.http_addr = env_or("HTTP_ADDR", c.http_addr)?;
        c.http = ServerLimits::from_env()?;
        c.database_url = env_secret("DATABASE_URL")?.unwrap_or(c.database_url);
        if let Some(password) = env_secret("DATABASE_PASSWORD")? {
            c.database_url = with_password(&c.database_url, &password)?;
        }
        c.db.max_connections = env_or("DATABASE_MAX_CONNECTIONS", c.db.max_connections)?;
        c.kafka.brokers = env_opt("KAFKA_BROKERS").unwrap_or(c.kafka.brokers);
        c.kafka.partitions = env_or("KAFKA_PARTITIONS", c.kafka.partitions)?;
        c.kafka.replication_factor = env_or("KAFKA_REPLICATION_FACTOR", c.kafka.replication_factor)?;
        c.kafka.create_topics = env_or("KAFKA_CREATE_TOPICS", c.kafka.create_topics)?;
        c.kafka.properties = kafka_properties_from(std::env::vars())?;
        c.topics = Topics::with_prefix(&env_opt("TOPIC_PREFIX").unwrap_or_default());
        c.otlp_endpoint = env_opt("OTEL_EXPORTER_OTLP_ENDPOINT");
        c.log_format = LogFormat::from_env()?;
        c.consumer.max_attempts = env_or("CONSUMER_MAX_ATTEMPTS", c.consumer.max_attempts)?;
        c.consumer.max_batch = env_or("CONSUMER_MAX_BATCH", c.consumer.max_batch)?;
        c.consumer.stream_cache = env_or("CONSUMER_STREAM_CACHE", c.consumer.stream_cache)?;
        if c.consumer.max_batch < 1 {
            anyhow::bail!("CONSUMER_MAX_BATCH must be at least 1");
        }
        c.relay.batch_size = env_or("OUTBOX_BATCH_SIZE", c.relay.batch_size)?;
        c.relay.poll_interval = env_millis("OUTBOX_POLL_MS", c.relay.poll_interval)?;
        c.relay.lease = env_millis("OUTBOX_LEASE_MS", c.relay.lease)?;
        c.relay.mark_interval = env_millis("OUTBOX_MARK_MS", c.relay.mark_interval)?;
        c.retention.inbox = env_days("INBOX_RETENTION_DAYS", c.retention.inbox)?;
        if c.relay.lease < Duration::from_millis(300) {
            anyhow::bail!("OUTBOX_LEASE_MS must be at least 300");
        }
        if c.kafka.partitions < 1 {
            anyhow::bail!("KAFKA_PARTITIONS must be at least 1");
        }
        Ok(c)
    }
}

/// `KAFKA_PROP_SASL_MECHANISMS=PLAIN` → `("sasl.mechanisms", "PLAIN")`;
/// `KAFKA_PROP_SASL_PASSWORD_FILE=/run/secrets/kafka` → `("sasl.password", <the file's text>)`
/// (no librdkafka property name ends in `.file`, so the suffix is unambiguous).
pub fn kafka_properties_from(vars: impl Iterator<Item = (String, String)>) -> anyhow::Result<Vec<(String, String)>> {
    let mut props = Vec::new();
    for (key, value) in vars {
        let Some(name) = key.strip_prefix("KAFKA_PROP_") else { continue };
        let (name, value) = match name.strip_suffix("_FILE") {
            Some(name) => (name, read_secret_file(&key, value.trim())?),
            None => (name, value),
        };
        props.push((name.to_lowercase().replace('_', "."), value));
    }
    props.sort();
    if let Some(w) = props.windows(2).find(|w| w[0].0 == w[1].0) {
        anyhow::bail!("kafka property {} is set twice (KAFKA_PROP_… and KAFKA_PROP_…_FILE)", w[0].0);
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_pass_through_properties_are_translated() {
        let vars = vec![
            ("KAFKA_PROP_SECURITY_PROTOCOL".to_owned(), "SASL_SSL".to_owned()),
            ("KAFKA_PROP_SASL_MECHANISMS".to_owned(), "PLAIN".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        assert_eq!(
            kafka_properties_from(vars.into_iter()).expect("properties"),
            vec![
                ("sasl.mechanisms".to_owned(), "PLAIN".to_owned()),
                ("security.protocol".to_owned(), "SASL_SSL".to_owned())
            ]
        );
    }

    fn secret_file(contents: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("saga-secret-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, contents).expect("write secret file");
        path
    }

    #[test]
    fn a_kafka_property_can_come_from_a_file() {
        let path = secret_file("s3cr3t-sasl\n");
        let vars = vec![("KAFKA_PROP_SASL_PASSWORD_FILE".to_owned(), path.display().to_string())];
        let props = kafka_properties_from(vars.into_iter()).expect("properties");
        std::fs::remove_file(&path).ok();
        assert_eq!(props, vec![("sasl.password".to_owned(), "s3cr3t-sasl".to_owned())]);
    }

    #[test]
    fn a_kafka_property_set_both_ways_is_refused() {
        let path = secret_file("x");
        let vars = vec![
            ("KAFKA_PROP_SASL_PASSWORD".to_owned(), "y".to_owned()),
            ("KAFKA_PROP_SASL_PASSWORD_FILE".to_owned(), path.display().to_string()),
        ];
        let result = kafka_properties_from(vars.into_iter());
        std::fs::remove_file(&path).ok();
        assert!(result.is_err());
    }

    #[test]
    fn a_secret_reads_from_its_variable_or_its_file_and_never_quotes_the_value() {
        let path = secret_file("hunter2\n");
        let vars = std::collections::HashMap::from([
            ("A".to_owned(), "direct".to_owned()),
            ("B_FILE".to_owned(), path.display().to_string()),
            ("C".to_owned(), "hunter2".to_owned()),
            ("C_FILE".to_owned(), path.display().to_string()),
            ("D_FILE".to_owned(), "/nonexistent/secret".to_owned()),
        ]);
        let lookup = |name: &str| vars.get(name).cloned();
        assert_eq!(secret_from("A", lookup).expect("A"), Some("direct".to_owned()));
        assert_eq!(secret_from("B", lookup).expect("B"), Some("hunter2".to_owned()));
        let both = secret_from("C", lookup).expect_err("both set");
        assert!(!format!("{both:#}").contains("hunter2"), "{both:#}");
        assert!(secret_from("D", lookup).is_err());
        assert_eq!(secret_from("E", lookup).expect("E"), None);
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn a_database_password_is_put_into_the_url_encoded() {
        assert_eq!(
            with_password("postgres://app@db:5432/orders", "p@ss:w/rd").expect("url"),
            "postgres://app:p%40ss%3Aw%2Frd@db:5432/orders"
        );
        assert_eq!(with_password("postgres://app:old@db/x", "new").expect("url"), "postgres://app:new@db/x");
        assert!(with_password("postgres://db/x", "pw").is_err());
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(redact_url("postgres://app:hunter2@db:5432/orders"), "postgres://app:***@db:5432/orders");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
        let mut c = ServiceConfig::defaults("order-svc", 8080);
        c.database_url = "postgres://app:hunter2@db/orders".into();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
