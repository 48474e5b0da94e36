//! A service whose database is unreachable at start-up stays alive, says "not ready" on
//! /readyz, and connects by itself once the database is reachable.

use std::time::Duration;

use shared::CancellationToken;
use shared::config::ServiceConfig;
use shared::db::Backend;
use shared::event_store::Upcaster;
use shared::service::ServiceContext;
use shared::testing::{TestBroker, TestDb, admin_url, eventually};
use tokio::net::{TcpListener, TcpStream};

/// Forward connections from `listener` to PostgreSQL.
async fn forward_to_postgres(listener: TcpListener, target: String) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

async fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_waits_for_its_database_and_reports_not_ready_meanwhile() -> anyhow::Result<()> {
    let t = TestDb::new(Backend::Postgres, &[]).await?;
    let broker = TestBroker::new(1)?;
    let db_port = free_port().await?; // nothing listens here yet
    let http_port = free_port().await?;
    let mut config = ServiceConfig::defaults("inventory-svc", http_port);
    config.database_url = t.url.replacen("127.0.0.1:5432", &format!("127.0.0.1:{db_port}"), 1);
    anyhow::ensure!(config.database_url != t.url, "TEST_DATABASE_URL must use 127.0.0.1:5432 for this test");
    config.kafka = broker.kafka.clone();
    config.topics = broker.topics.clone();

    let shutdown = CancellationToken::new();
    let connecting = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { ServiceContext::connect(config, &[], Upcaster::default(), &shutdown).await }
    });

    let http = reqwest::Client::new();
    let readyz = format!("http://127.0.0.1:{http_port}/readyz");
    let status = eventually(Duration::from_secs(20), "the starting endpoint", || async {
        http.get(&readyz).send().await.ok().map(|r| r.status().as_u16())
    })
    .await?;
    assert_eq!(status, 503, "not ready while the database is unreachable");
    let health = http.get(format!("http://127.0.0.1:{http_port}/healthz")).send().await?;
    assert_eq!(health.status(), 200, "alive meanwhile");
    assert!(!connecting.is_finished(), "still retrying, not crashed");

    // The database becomes reachable: the service connects by itself.
    let target = admin_url().split('@').nth(1).and_then(|h| h.split('/').next()).unwrap_or("127.0.0.1:5432").to_owned();
    let proxy = tokio::spawn(forward_to_postgres(TcpListener::bind(("127.0.0.1", db_port)).await?, target));
    let ctx = tokio::time::timeout(Duration::from_secs(30), connecting).await???;
    assert!(ctx.db.ping().await);
    proxy.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_reaches_its_database_stops_on_shutdown() -> anyhow::Result<()> {
    let broker = TestBroker::new(1)?;
    let mut config = ServiceConfig::defaults("payment-svc", 0);
    config.database_url = format!("postgres://postgres@127.0.0.1:{}/none", free_port().await?);
    config.kafka = broker.kafka.clone();
    let shutdown = CancellationToken::new();
    let connecting = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { ServiceContext::connect(config, &[], Upcaster::default(), &shutdown).await }
    });
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), connecting).await??;
    let err = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("shut down while starting"), "{err}");
    Ok(())
}
