//! The production topology: the broker as its own process (our mock-cluster binary),
//! PostgreSQL with a database per service, and every service as separate OS processes — two
//! replicas of each in one consumer group on one database. Orders are driven through both
//! order-svc replicas' APIs, then every invariant is checked, both replicas of every service
//! must have done work (the partitions were split), and SIGTERM stops each process cleanly
//! within 10 s.
//!
//! `SAGA_TEST_KAFKA_BROKERS=host:port` runs the same test against an external Kafka-compatible
//! broker instead (e.g. Nisshi, see the README): the services then create their topics
//! themselves, as in production, and join their groups with the protocol of
//! `SAGA_TEST_KAFKA_GROUP_PROTOCOL` when it is set (`classic` for a broker without KIP-848).

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::invariants::{self, Run, order_for};
use common::processes::Process;
use common::{Sink, WAIT};
use serde_json::Value;
use shared::db::Backend;
use shared::testing::{TestDb, eventually};
use shared::topics::service;

const ORDERS: usize = 200;
const REPLICAS: usize = 2;

fn binary_of(service: &str) -> &str {
    service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_services_as_processes_with_two_replicas_each_keep_every_invariant() -> anyhow::Result<()> {
    let _alone = common::alone().await;
    // Arrange: broker process, one PostgreSQL database per service, a webhook sink.
    let prefix = format!("mp{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let admin_key = order_svc::http::generate_key();
    let (broker, bootstrap, create_topics) = common::topology::start_broker(4, &prefix).await?;
    let (sink, sink_addr) = Sink::start(|_| Duration::ZERO).await?;
    let mut dbs = HashMap::new();
    for name in service::ALL {
        dbs.insert(name, TestDb::new(Backend::Postgres, &[]).await?);
    }

    let mut processes: HashMap<&str, Vec<Process>> = HashMap::new();
    for name in service::ALL {
        for replica in 0..REPLICAS {
            let mut env = vec![
                ("DATABASE_URL", dbs[name].url.clone()),
                ("KAFKA_BROKERS", bootstrap.clone()),
                ("KAFKA_CREATE_TOPICS", create_topics.to_owned()),
                ("KAFKA_PARTITIONS", "4".to_owned()),
                ("TOPIC_PREFIX", prefix.clone()),
                ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
                ("NOTIFY_WEBHOOK_URL", format!("http://{sink_addr}/hook")),
                ("SAGA_DEADLINE_MS", "120000".to_owned()),
                ("ORDER_API_KEYS", format!("admin:{}", order_svc::http::hash_key(&admin_key))),
                ("ORDER_API_RATE_LIMIT_PER_SEC", "0".to_owned()),
                ("ORDER_API_MAX_IN_FLIGHT_PER_KEY", "512".to_owned()),
                ("RUST_LOG", "info".to_owned()),
            ];
            env.extend(common::topology::group_protocol_env());
            let process = Process::service(&format!("{name}#{replica}"), binary_of(name), &env, WAIT).await?;
            processes.entry(name).or_default().push(process);
        }
    }
    let apis: Vec<String> =
        processes[service::ORDER].iter().filter_map(|p| p.addr).map(|a| format!("http://{a}")).collect();
    let http = common::client_with_key(&admin_key)?;

    // Act: orders through both API replicas, 16 at a time.
    let mut ids = Vec::with_capacity(ORDERS);
    for chunk in (0..ORDERS).collect::<Vec<_>>().chunks(16) {
        let placing = chunk.iter().map(|i| {
            let (customer, items, country, _) = order_for(*i);
            let url = format!("{}/orders", apis[i % apis.len()]);
            let body = common::order_body(customer, &items, country);
            let http = &http;
            async move {
                let response = http.post(url).json(&body).send().await?;
                anyhow::ensure!(response.status() == 202, "POST /orders answered {}", response.status());
                let body: Value = response.json().await?;
                Ok::<_, anyhow::Error>(body["id"].as_str().unwrap_or_default().to_owned())
            }
        });
        ids.extend(futures::future::try_join_all(placing).await?);
    }
    let mut orders = Vec::with_capacity(ORDERS);
    for (i, id) in ids.into_iter().enumerate() {
        // Read through the other replica than the one that placed it.
        let url = format!("{}/orders/{id}", apis[(i + 1) % apis.len()]);
        let order = eventually(WAIT, &format!("order {id} terminal"), || async {
            let order: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            matches!(order["status"].as_str(), Some("completed" | "cancelled")).then_some(order)
        })
        .await?;
        orders.push((id, order));
    }
    let notices = common::eventually_notified(&sink, &orders).await?;

    // Assert: the invariants.
    invariants::check(&Run {
        orders: &orders,
        inventory: &dbs[service::INVENTORY].db,
        payment: &dbs[service::PAYMENT].db,
        shipping: &dbs[service::SHIPPING].db,
        deliveries: &notices,
    })
    .await?;

    // Both replicas of every consuming service handled messages: the group split the work.
    for name in service::ALL {
        for p in &processes[name] {
            let addr = p.ops_addr.map(|a| a.to_string()).unwrap_or_default();
            let metrics = http.get(format!("http://{addr}/metrics")).send().await?.text().await?;
            let handled: f64 = metrics
                .lines()
                .filter(|l| l.starts_with(shared::metrics::MESSAGES_HANDLED) && l.contains("outcome=\"ok\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            assert!(handled > 0.0, "{} handled no messages: partitions were not split", p.name);
        }
    }

    // SIGTERM: every process drains and exits cleanly within 10 s.
    for name in service::ALL {
        for p in processes.get_mut(name).into_iter().flatten() {
            let (took, clean) = p.terminate(Duration::from_secs(10)).await?;
            assert!(clean, "{} exited with an error after SIGTERM: {:?}", p.name, p.log_lines().last());
            assert!(took < Duration::from_secs(10), "{} took {took:?}", p.name);
        }
    }
    drop(broker);
    Ok(())
}
