//! Every service's `/metrics` on the running embedded system serves the series the dashboards
//! and alerts use, and they move when orders flow. In the embedded mode the five services
//! share one recorder; each endpoint serves its own service's series, and order-svc's also
//! those without a service label (saga and process metrics), so each series is scraped once.
//!
//! Counters are process-wide: this file holds one test and runs as its own process.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Options, TestSystem};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use shared::db::Backend;
use shared::testing::eventually;
use shared::topics::service;

/// One scrape: series (name with labels, as written) → value.
type Scrape = HashMap<String, f64>;

async fn scrape(http: &reqwest::Client, addr: std::net::SocketAddr) -> anyhow::Result<Scrape> {
    let text = http.get(format!("http://{addr}/metrics")).send().await?.error_for_status()?.text().await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect())
}

/// The sum over the series of `name` whose labels include every `labels` pair.
fn total(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = scrape
        .iter()
        .filter(|(series, _)| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
            series_name == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_serves_its_series_and_they_move() -> anyhow::Result<()> {
    // Arrange
    let system = TestSystem::start(Backend::Sqlite, Options::default()).await?;
    let e = system.endpoints.clone();
    let ports = [
        (service::ORDER, e.order_ops),
        (service::INVENTORY, e.inventory),
        (service::PAYMENT, e.payment),
        (service::SHIPPING, e.shipping),
        (service::NOTIFICATION, e.notification),
    ];
    let mut before = HashMap::new();
    for (name, addr) in ports {
        before.insert(name, scrape(&system.http, addr).await?);
    }

    // Act: every outcome (so every compensation), one request the API rejects, and one
    // message nobody can decode (so every consumer of the order topic dead-letters it).
    let ids = [
        system.place_ok("cust-rich", &[("sku-tee", 1)], "NL").await?,
        system.place_ok("cust-rich", &[("sku-soldout", 1)], "NL").await?,
        system.place_ok("cust-poor", &[("sku-tee", 2)], "NL").await?,
        system.place_ok("cust-rich", &[("sku-mug", 1)], "JP").await?,
    ];
    let (status, _) = system.place(&serde_json::json!({"items": []})).await?;
    assert_eq!(status, 422);
    let refused = system.anonymous.get(system.url("/orders")).bearer_auth("sk_not_a_key").send().await?;
    assert_eq!(refused.status(), 401);
    for id in &ids {
        system.terminal(id).await?;
    }
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &e.brokers).create()?;
    producer
        .send(
            FutureRecord::<str, [u8]>::to("orders.events").key("garbage").payload(&b"{not json"[..]),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(err, _)| err)?;

    // Assert: each endpoint's series exist and moved (lag comes from librdkafka statistics,
    // every 5 s; dead letters are counted once the dead-letter row is committed).
    let after = eventually(Duration::from_secs(30), "every service's series to move", || async {
        let mut after = HashMap::new();
        for (name, addr) in ports {
            after.insert(name, scrape(&system.http, addr).await.ok()?);
        }
        let ready = ports.iter().all(|(name, _)| {
            let s = &after[name];
            total(s, "saga_consumer_lag_messages", &[("service", name)]).is_some()
                && total(s, "saga_outbox_backlog_messages", &[("service", name)]).is_some()
                && (*name == service::ORDER || total(s, "saga_dead_letters_total", &[("service", name)]).is_some())
        }) && total(&after[service::ORDER], "saga_orders_open", &[]).is_some();
        ready.then_some(after)
    })
    .await?;
    system.stop().await?;

    let moved = |service: &str, name: &str, labels: &[(&str, &str)]| {
        let was = total(&before[service], name, labels).unwrap_or(0.0);
        let now = total(&after[service], name, labels);
        assert!(now.is_some_and(|now| now > was), "{service}: {name}{labels:?} did not move ({was} → {now:?})");
    };
    let exists = |service: &str, name: &str, labels: &[(&str, &str)]| {
        assert!(total(&after[service], name, labels).is_some(), "{service}: no {name}{labels:?}");
    };

    for (name, _) in ports {
        let own = [("service", name)];
        moved(name, "saga_messages_handled_total", &[("service", name), ("outcome", "ok")]);
        moved(name, "saga_handler_duration_seconds_count", &own);
        moved(name, "saga_handler_duration_seconds_bucket", &[("service", name), ("le", "+Inf")]);
        moved(name, "saga_outbox_published_total", &own);
        moved(name, "saga_outbox_publish_latency_seconds_count", &own);
        moved(name, "http_requests_total", &[("service", name), ("route", "/metrics"), ("status", "200")]);
        // Per partition (partitions no offset was committed on yet report no lag).
        exists(name, "saga_consumer_lag_messages", &own);
        assert!(after[name].keys().any(|s| s.starts_with("saga_consumer_lag_messages{") && s.contains("partition=\"")));
        exists(name, "saga_outbox_backlog_messages", &own);
        // Each endpoint serves only its own service's series.
        for (other, _) in ports.iter().filter(|(other, _)| *other != name) {
            assert!(
                !after[name].keys().any(|series| series.contains(&format!("service=\"{other}\""))),
                "{name}'s endpoint serves {other}'s series"
            );
        }
    }
    for name in [service::INVENTORY, service::PAYMENT, service::SHIPPING, service::NOTIFICATION] {
        moved(name, "saga_dead_letters_total", &[("service", name), ("topic", "orders.events")]);
        moved(name, "saga_messages_handled_total", &[("service", name), ("outcome", "dead_lettered")]);
        assert!(total(&after[name], "process_resident_memory_bytes", &[]).is_none(), "{name}: process metrics twice");
    }

    // The API: request rate, errors and latency by route template and status.
    let order = service::ORDER;
    moved(order, "http_requests_total", &[("route", "/orders"), ("method", "POST"), ("status", "202")]);
    moved(order, "http_requests_total", &[("route", "/orders"), ("method", "POST"), ("status", "422")]);
    moved(order, "http_requests_total", &[("route", "/orders/{id}"), ("method", "GET"), ("status", "200")]);
    moved(order, "http_request_duration_seconds_count", &[("route", "/orders"), ("method", "POST")]);
    moved(order, "http_request_duration_seconds_bucket", &[("route", "/orders"), ("le", "+Inf")]);
    // Failed authentications by reason.
    moved(order, "saga_http_auth_failures_total", &[("reason", "unknown_key")]);
    // Saga outcomes by reason, end-to-end duration, placements.
    moved(order, "saga_orders_placed_total", &[]);
    moved(order, "saga_outcomes_total", &[("outcome", "completed"), ("reason", "none")]);
    for reason in ["out_of_stock", "payment_declined", "destination_not_served"] {
        moved(order, "saga_outcomes_total", &[("outcome", "cancelled"), ("reason", reason)]);
    }
    moved(order, "saga_duration_seconds_count", &[("outcome", "completed")]);
    moved(order, "saga_duration_seconds_bucket", &[("outcome", "cancelled"), ("le", "+Inf")]);
    exists(order, "saga_orders_overdue", &[]);
    exists(order, "saga_oldest_open_order_age_seconds", &[]);
    exists(order, "saga_deadline_seconds", &[]);
    // Compensations by kind.
    moved(service::INVENTORY, "saga_compensations_total", &[("kind", "inventory_released")]);
    moved(service::PAYMENT, "saga_compensations_total", &[("kind", "payment_refunded")]);
    // Process metrics (once, on order-svc's endpoint in the embedded mode).
    moved(order, "process_cpu_seconds_total", &[]);
    for name in ["process_resident_memory_bytes", "process_open_fds", "process_threads", "process_start_time_seconds"] {
        exists(order, name, &[]);
    }
    Ok(())
}
