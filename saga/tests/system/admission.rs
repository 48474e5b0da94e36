//! Admission control: past the bound on open sagas, `POST /orders` is refused with 503 and
//! `Retry-After`, nothing is placed, the refusal is counted, and orders are taken again once
//! sagas end.

use std::time::Duration;

use shared::both_backends;
use shared::db::Backend;
use shared::testing::eventually;

use crate::common::{self, Options, TestSystem, order_body};

both_backends!(orders_past_the_bound_on_open_sagas_are_refused_until_sagas_end);
async fn orders_past_the_bound_on_open_sagas_are_refused_until_sagas_end(backend: Backend) -> anyhow::Result<()> {
    // Shipping holds each saga open for 2 s: three orders fill a bound of three.
    let options = Options { shipping_latency: Duration::from_secs(2), max_open_sagas: 3, ..Options::default() };
    let system = TestSystem::start(backend, options).await?;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(system.place_ok("cust-rich", &[("sku-mug", 1)], "NL").await?);
    }

    let refused =
        system.http.post(system.url("/orders")).json(&order_body("cust-rich", &[("sku-mug", 1)], "NL")).send().await?;

    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(refused.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let problem: serde_json::Value = refused.json().await?;
    assert!(problem["type"].as_str().is_some_and(|t| t.ends_with("sagas-at-capacity")), "{problem}");
    let listed = system.http.get(system.url("/orders")).send().await?.json::<serde_json::Value>().await?;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(3), "the refused order was not placed: {listed}");
    // Counted (the metrics recorder is the process's: a test beside this one may add its own).
    let metrics =
        system.http.get(format!("http://{}/metrics", system.endpoints.order_ops)).send().await?.text().await?;
    let refusals: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("saga_orders_refused_at_capacity_total ")?.parse().ok())
        .unwrap_or(0.0);
    assert!(refusals >= 1.0, "the refusal is counted: {refusals}");
    assert!(metrics.lines().any(|l| l.starts_with("saga_orders_open_max ")), "the bound is exported");

    // Once the sagas end, the count catches up and orders are taken again.
    for id in &open {
        system.terminal(id).await?;
    }
    let accepted = eventually(common::WAIT, "an order accepted after the sagas ended", || async {
        let (status, body) = system.place(&order_body("cust-rich", &[("sku-mug", 1)], "NL")).await.ok()?;
        (status == 202).then_some(body)
    })
    .await?;
    assert!(accepted["id"].is_string(), "{accepted}");
    system.stop().await
}
