//! Typed configuration from environment variables. Defaults run the embedded mode; every
//! service embeds [`ServiceConfig`] in its own config struct. Secrets (database passwords in
//! `DATABASE_URL`, SASL credentials in `KAFKA_PROP_*`) are never logged: [`ServiceConfig`]'s
//! `Debug` redacts them.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::broker::KafkaConfig;
use crate::consumer::ConsumerOptions;
use crate::db::DbOptions;
use crate::outbox::RelayOptions;
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
pub fn env_millis(name: &str, default: Duration) -> anyhow::Result<Duration> {
    Ok(Duration::from_millis(env_or(name, default.as_millis() as u64)?))
}

/// What every service needs, whatever its business.
#[derive(Clone)]
pub struct ServiceConfig {
    pub service: &'static str,
    /// `HTTP_ADDR`: where /healthz, /readyz, /metrics (and order-svc's API) listen.
    pub http_addr: SocketAddr,
    /// `DATABASE_URL`: `postgres://…` or `sqlite://…`.
    pub database_url: String,
    pub db: DbOptions,
    /// `KAFKA_BROKERS`, `KAFKA_PARTITIONS`, `KAFKA_CREATE_TOPICS` and `KAFKA_PROP_<NAME>`
    /// pass-through properties (`KAFKA_PROP_SECURITY_PROTOCOL=SASL_SSL` → `security.protocol`).
    pub kafka: KafkaConfig,
    /// `TOPIC_PREFIX`: isolates topic names on a shared cluster.
    pub topics: Topics,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: OTLP gRPC endpoint; unset = no export.
    pub otlp_endpoint: Option<String>,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// `CONSUMER_MAX_ATTEMPTS`.
    pub consumer: ConsumerOptions,
    /// `OUTBOX_BATCH_SIZE`, `OUTBOX_POLL_MS`.
    pub relay: RelayOptions,
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("service", &self.service)
            .field("http_addr", &self.http_addr)
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
    /// Defaults for `service`: SQLite under `./data`, the given port, brokers on localhost.
    pub fn defaults(service: &'static str, port: u16) -> Self {
        Self {
            service,
            http_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            database_url: format!("sqlite://data/{service}.db"),
            db: DbOptions::default(),
            kafka: KafkaConfig::new("127.0.0.1:9092"),
            topics: Topics::default(),
            otlp_endpoint: None,
            log_format: LogFormat::Json,
            consumer: ConsumerOptions::default(),
            relay: RelayOptions::default(),
        }
    }

    /// Read the environment over [`ServiceConfig::defaults`].
    pub fn from_env(service: &'static str, default_port: u16) -> anyhow::Result<Self> {
        let mut c = Self::defaults(service, default_port);
        c.http_addr = env_or("HTTP_ADDR", c.http_addr)?;
        c.database_url = env_opt("DATABASE_URL").unwrap_or(c.database_url);
        c.db.max_connections = env_or("DATABASE_MAX_CONNECTIONS", c.db.max_connections)?;
        c.kafka.brokers = env_opt("KAFKA_BROKERS").unwrap_or(c.kafka.brokers);
        c.kafka.partitions = env_or("KAFKA_PARTITIONS", c.kafka.partitions)?;
        c.kafka.replication_factor = env_or("KAFKA_REPLICATION_FACTOR", c.kafka.replication_factor)?;
        c.kafka.create_topics = env_or("KAFKA_CREATE_TOPICS", c.kafka.create_topics)?;
        c.kafka.properties = kafka_properties_from(std::env::vars());
        c.topics = Topics::with_prefix(&env_opt("TOPIC_PREFIX").unwrap_or_default());
        c.otlp_endpoint = env_opt("OTEL_EXPORTER_OTLP_ENDPOINT");
        c.log_format = env_or("LOG_FORMAT", c.log_format)?;
        c.consumer.max_attempts = env_or("CONSUMER_MAX_ATTEMPTS", c.consumer.max_attempts)?;
        c.relay.batch_size = env_or("OUTBOX_BATCH_SIZE", c.relay.batch_size)?;
        c.relay.poll_interval = env_millis("OUTBOX_POLL_MS", c.relay.poll_interval)?;
        if c.kafka.partitions < 1 {
            anyhow::bail!("KAFKA_PARTITIONS must be at least 1");
        }
        Ok(c)
    }
}

/// `KAFKA_PROP_SASL_MECHANISMS=PLAIN` → `("sasl.mechanisms", "PLAIN")`.
pub fn kafka_properties_from(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut props: Vec<(String, String)> = vars
        .filter_map(|(k, v)| k.strip_prefix("KAFKA_PROP_").map(|name| (name.to_lowercase().replace('_', "."), v)))
        .collect();
    props.sort();
    props
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
            kafka_properties_from(vars.into_iter()),
            vec![
                ("sasl.mechanisms".to_owned(), "PLAIN".to_owned()),
                ("security.protocol".to_owned(), "SASL_SSL".to_owned())
            ]
        );
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
