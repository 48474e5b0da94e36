//! Every service's database pool shows on its `/metrics`: connections in use and idle (with
//! the pool's maximum), each transaction's wait for a connection, and the waits that timed out.
//! Every service connects through `ServiceContext::connect`, which observes the pool; the
//! tests below go through it, or observe a pool the same way.

use std::time::Duration;

use shared::CancellationToken;
use shared::config::ServiceConfig;
use shared::db::{Backend, Db, DbOptions};
use shared::event_store::Upcaster;
use shared::service::{ServiceContext, ops_router};
use shared::testing::{TestBroker, TestDb, eventually};

const WAIT: Duration = Duration::from_secs(20);

/// The value of the sample `name{labels}` in Prometheus text, if present.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let head = format!("{name}{{{labels}}} ");
    text.lines().find_map(|line| line.strip_prefix(&head)).and_then(|value| value.trim().parse().ok())
}

/// `GET /metrics` from an ops endpoint on `addr`.
async fn scrape(http: &reqwest::Client, addr: std::net::SocketAddr) -> anyhow::Result<String> {
    Ok(http.get(format!("http://{addr}/metrics")).send().await?.error_for_status()?.text().await?)
}

async fn a_service_shows_its_pool_on_metrics(backend: Backend, service: &'static str) -> anyhow::Result<()> {
    let t = TestDb::new(backend, &[]).await?;
    let broker = TestBroker::new(1)?;
    let mut config = ServiceConfig::defaults(service, 0);
    config.database_url = t.url.clone();
    config.kafka = broker.kafka.clone();
    config.topics = broker.topics.clone();
    let shutdown = CancellationToken::new();
    let ctx = ServiceContext::connect(config, &[], Upcaster::default(), &shutdown).await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = ops_router(&ctx);
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::new();
    let labels = format!("service=\"{service}\"");

    // Some database work: three write transactions and one read.
    for _ in 0..3 {
        ctx.db.begin().await?.commit().await?;
    }
    ctx.db.begin_read().await?.commit().await?;
    let text = scrape(&http, addr).await?;
    let acquired = sample(&text, "saga_db_pool_acquire_seconds_count", &labels);
    assert!(acquired.is_some_and(|n| n >= 4.0), "four timed acquires, got {acquired:?} in\n{text}");
    assert!(
        text.contains(&format!("saga_db_pool_acquire_seconds_bucket{{{labels},le=\"0.001\"}}")),
        "the wait is a histogram"
    );
    assert_eq!(sample(&text, "saga_db_pool_acquire_timeouts_total", &labels), Some(0.0), "shown before any timeout");

    // A transaction holds a connection: the sampler shows it in use, then idle once it ends.
    let held = ctx.db.begin().await?;
    let in_use = format!("{labels},state=\"in_use\"");
    let idle = format!("{labels},state=\"idle\"");
    let max = if backend == Backend::Postgres { 8.0 } else { 4.0 };
    eventually(WAIT, "one connection in use", || async {
        let text = scrape(&http, addr).await.ok()?;
        (sample(&text, "saga_db_pool_connections", &in_use)? >= 1.0
            && sample(&text, "saga_db_pool_max_connections", &labels)? == max)
            .then_some(())
    })
    .await?;
    held.commit().await?;
    eventually(WAIT, "no connection in use, one idle at least", || async {
        let text = scrape(&http, addr).await.ok()?;
        (sample(&text, "saga_db_pool_connections", &in_use)? == 0.0
            && sample(&text, "saga_db_pool_connections", &idle)? >= 1.0)
            .then_some(())
    })
    .await?;

    server.abort();
    ctx.db.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_service_shows_its_pool_on_metrics() -> anyhow::Result<()> {
    a_service_shows_its_pool_on_metrics(Backend::Postgres, "inventory-svc").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_service_shows_its_pool_on_metrics() -> anyhow::Result<()> {
    a_service_shows_its_pool_on_metrics(Backend::Sqlite, "payment-svc").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_a_connection_that_times_out_is_counted_and_timed() -> anyhow::Result<()> {
    let t = TestDb::new(Backend::Postgres, &[]).await?;
    let options = DbOptions { max_connections: 1, acquire_timeout: Duration::from_millis(200) };
    let db = Db::connect(&t.url, &options).await?.observed("pool-timeout-test");
    let handle = shared::metrics::install();
    let labels = "service=\"pool-timeout-test\"";

    let held = db.begin().await?;
    let refused = db.begin().await.expect_err("the only connection is held");
    assert!(matches!(refused, sqlx::Error::PoolTimedOut), "{refused}");

    let text = shared::metrics::render(&handle, None);
    assert_eq!(sample(&text, "saga_db_pool_acquire_timeouts_total", labels), Some(1.0), "{text}");
    assert_eq!(sample(&text, "saga_db_pool_acquire_seconds_count", labels), Some(2.0), "both waits are timed");
    // The timed-out wait lasted the acquire timeout: it is in the histogram's sum.
    let sum = sample(&text, "saga_db_pool_acquire_seconds_sum", labels).unwrap_or_default();
    assert!(sum >= 0.2, "the timed-out wait took the acquire timeout, sum {sum}");

    held.commit().await?;
    db.begin().await?.commit().await?;
    let text = shared::metrics::render(&handle, None);
    assert_eq!(
        sample(&text, "saga_db_pool_acquire_timeouts_total", labels),
        Some(1.0),
        "a free connection: no timeout"
    );
    assert_eq!(sample(&text, "saga_db_pool_acquire_seconds_count", labels), Some(3.0));
    db.close().await;
    Ok(())
}
