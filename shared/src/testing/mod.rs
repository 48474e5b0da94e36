//! Test support (feature `testing`): a fresh database per test on either backend, a fresh
//! broker per test, waiting for a condition with a deadline instead of sleeping, and a
//! [`Bus`] to drive one service from the outside.

mod bus;
pub mod hostile;

pub use bus::{Bus, RawRecord, Reader, Record, WAIT, envelope, service_config};

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::Connection as _;

use crate::broker::{EmbeddedBroker, KafkaConfig};
use crate::db::{Backend, Db, DbOptions, Migrations, shared_migrations};
use crate::topics::Topics;

/// The server tests create their databases on (`TEST_DATABASE_URL`).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database owned by one test: a new PostgreSQL database or a new SQLite file, dropped
/// afterwards.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pub db: Db,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Postgres { name: String },
    Sqlite { dir: PathBuf },
}

impl TestDb {
    /// A fresh, migrated database (backbone tables plus `extra`).
    pub async fn new(backend: Backend, extra: &[Migrations]) -> anyhow::Result<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let (url, cleanup) = match backend {
            Backend::Postgres => {
                let name = format!("saga_test_{suffix}");
                let mut admin = sqlx::PgConnection::connect(&admin_url())
                    .await
                    .context("cannot reach PostgreSQL for tests (set TEST_DATABASE_URL)")?;
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
                admin.close().await.ok();
                (replace_db_name(&admin_url(), &name), Cleanup::Postgres { name })
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("saga-test-{suffix}"));
                std::fs::create_dir_all(&dir)?;
                (format!("sqlite://{}", dir.join("test.db").display()), Cleanup::Sqlite { dir })
            }
        };
        let db = Db::connect(&url, &DbOptions::default()).await?;
        db.migrate(&shared_migrations()).await?;
        for m in extra {
            db.migrate(m).await?;
        }
        Ok(Self { url, db, cleanup })
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rsplit_once('/') {
        Some((prefix, _)) if prefix.contains("://") && prefix.len() > prefix.find("://").unwrap_or(0) + 3 => prefix,
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { name } => {
                let name = name.clone();
                // Drop runs inside the test's runtime: use a thread with its own.
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                        return;
                    };
                    rt.block_on(async move {
                        if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url()).await {
                            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut admin)
                                .await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// A broker owned by one test, with the saga topics under a random prefix.
#[derive(Debug)]
pub struct TestBroker {
    pub broker: EmbeddedBroker,
    pub topics: Topics,
    pub kafka: KafkaConfig,
}

impl TestBroker {
    pub fn new(partitions: i32) -> anyhow::Result<Self> {
        let topics = Topics::with_prefix(&format!("t{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]));
        let broker = EmbeddedBroker::start(&topics.all(), partitions)?;
        let mut kafka = KafkaConfig::new(broker.bootstrap_servers());
        kafka.partitions = partitions;
        // The mock cluster has no CreateTopics handler: topics exist already.
        kafka.create_topics = false;
        Ok(Self { broker, topics, kafka })
    }
}

/// Poll `condition` until it returns `Some`, failing after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut condition: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = condition().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
