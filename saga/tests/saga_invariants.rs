//! ARCHITECTURE.md section 2, checked after a burst of mixed orders on the embedded broker and
//! both backends: every order terminal, stock conserved, money conserved, one notification per
//! order at the sink's dedupe key.

mod common;

use std::collections::HashMap;

use common::{Options, TestSystem};
use inventory_svc::domain::{CatalogueSeed, SkuState};
use serde_json::Value;
use shared::db::Backend;
use shared::event_store::EventStore;
use shared::topics::service;

const ORDERS: usize = 500;

/// The mix: mostly completing orders plus every failure outcome.
fn order_for(i: usize) -> (&'static str, Vec<(&'static str, u32)>, &'static str, &'static str) {
    match i % 10 {
        0 => ("cust-rich", vec![("sku-soldout", 1)], "NL", "out_of_stock"),
        1 => ("cust-poor", vec![("sku-tee", 3)], "DE", "payment_declined"),
        2 => ("cust-rich", vec![("sku-mug", 1)], "JP", "destination_not_served"),
        3 => ("cust-rich", vec![("sku-poster", 1)], "FR", "poster"),
        4 => ("cust-nobody", vec![("sku-tee", 1)], "US", "unknown_customer"),
        _ => ("cust-rich", vec![("sku-tee", 1 + (i % 3) as u32), ("sku-mug", 1)], "NL", "completed"),
    }
}

both_backends!(invariants_hold_after_a_burst_of_mixed_orders);
async fn invariants_hold_after_a_burst_of_mixed_orders(backend: Backend) -> anyhow::Result<()> {
    let system = TestSystem::start(backend, Options::default()).await?;

    // Act: a burst of orders, 16 in flight at a time.
    let mut ids = Vec::with_capacity(ORDERS);
    for chunk in (0..ORDERS).collect::<Vec<_>>().chunks(16) {
        let placing = chunk.iter().map(|i| {
            let (customer, items, country, _) = order_for(*i);
            let system = &system;
            async move { system.place_ok(customer, &items, country).await }
        });
        ids.extend(futures::future::try_join_all(placing).await?);
    }
    let mut orders = Vec::with_capacity(ORDERS);
    for id in &ids {
        orders.push(system.terminal(id).await?);
    }

    // 1. Every accepted order is terminal, with the outcome its inputs call for.
    for (i, order) in orders.iter().enumerate() {
        let (_, _, _, expected) = order_for(i);
        match expected {
            "completed" => assert_eq!(order["status"], "completed", "{order}"),
            "poster" => assert!(order["status"] == "completed" || order["reason"] == "out_of_stock", "{order}"),
            reason => assert_eq!(order["reason"], reason, "{order}"),
        }
    }
    let posters_sold = orders.iter().enumerate().filter(|(i, o)| i % 10 == 3 && o["status"] == "completed").count();
    assert_eq!(posters_sold, 5, "exactly the five posters in stock were sold");

    // Let the late compensations settle: every cancelled order's refunds/releases are
    // observed by order-svc (they are in its timeline) before we count money and stock.
    for (id, order) in ids.iter().zip(&orders) {
        if order["reason"] == "destination_not_served" || order["reason"] == "payment_declined" {
            let types = common::event_types(order);
            assert!(types.contains(&"InventoryReleased".to_owned()), "{id}: {types:?}");
        }
    }

    // 2. Stock is conserved and never negative; nothing stays reserved once all are terminal.
    let store = EventStore::default();
    let mut tx = system.db(service::INVENTORY).begin_read().await?;
    let mut shipped_by_sku: HashMap<&str, i64> = HashMap::new();
    for (i, order) in orders.iter().enumerate() {
        if order["status"] == "completed" {
            for (sku, q) in order_for(i).1 {
                *shipped_by_sku.entry(sku).or_default() += i64::from(q);
            }
        }
    }
    for product in CatalogueSeed::demo().products {
        let state = store.load::<SkuState>(&mut tx, &inventory_svc::domain::sku::stream_id(&product.sku)).await?.state;
        assert!(state.available >= 0, "{}: available {}", product.sku, state.available);
        assert_eq!(state.available + state.reserved + state.shipped, product.stock, "{} conserved", product.sku);
        assert_eq!(state.reserved, 0, "{}: nothing left reserved", product.sku);
        assert_eq!(
            state.shipped,
            shipped_by_sku.get(product.sku.as_str()).copied().unwrap_or(0),
            "{} shipped",
            product.sku
        );
    }
    drop(tx);

    // 3. Money: per order captured − refunded is the total if completed, else 0; at most one
    // capture and one refund per order.
    let mut tx = system.db(service::PAYMENT).begin_read().await?;
    let events = store.read_all(&mut tx, 0, i64::MAX).await?;
    let mut captured: HashMap<String, Vec<i64>> = HashMap::new();
    let mut refunded: HashMap<String, Vec<i64>> = HashMap::new();
    for e in events.iter().filter(|e| e.stream_id.starts_with("payment-")) {
        let order = e.stream_id.trim_start_matches("payment-").to_owned();
        let amount = e.payload["amount_minor"].as_i64().unwrap_or_default();
        match e.event_type.as_str() {
            "Captured" => captured.entry(order).or_default().push(amount),
            "Refunded" => refunded.entry(order).or_default().push(amount),
            _ => {}
        }
    }
    for (id, order) in ids.iter().zip(&orders) {
        let c = captured.get(id).cloned().unwrap_or_default();
        let r = refunded.get(id).cloned().unwrap_or_default();
        assert!(c.len() <= 1 && r.len() <= 1, "{id}: captured {c:?}, refunded {r:?}");
        let net: i64 = c.iter().sum::<i64>() - r.iter().sum::<i64>();
        let expected = if order["status"] == "completed" { order["total_minor"].as_i64().unwrap_or(-1) } else { 0 };
        assert_eq!(net, expected, "{id}: money conserved for {}", order["status"]);
    }
    // The customer's account moved by exactly the net of its orders.
    let charges: i64 = events
        .iter()
        .filter(|e| e.stream_id == "account-cust-rich")
        .map(|e| match e.event_type.as_str() {
            "Charged" => e.payload["amount_minor"].as_i64().unwrap_or_default(),
            "Refunded" => -e.payload["amount_minor"].as_i64().unwrap_or_default(),
            _ => 0,
        })
        .sum();
    let completed_total: i64 = orders
        .iter()
        .filter(|o| o["status"] == "completed")
        .map(|o| o["total_minor"].as_i64().unwrap_or_default())
        .sum();
    assert_eq!(charges, completed_total, "cust-rich paid exactly for its completed orders");
    drop(tx);

    // 4. One notification per order at the sink's dedupe key: a confirmation for completed
    // orders, a cancellation notice for cancelled ones.
    let notices = common::eventually_notified(&system, &ids, &orders).await?;
    for (id, order) in ids.iter().zip(&orders) {
        let kind = if order["status"] == "completed" { "confirmation" } else { "cancellation" };
        let keys = notices.get(&(id.clone(), kind.to_owned())).cloned().unwrap_or_default();
        assert_eq!(keys.len(), 1, "{id}: {kind} keys {keys:?}");
        let other = if kind == "confirmation" { "cancellation" } else { "confirmation" };
        assert!(!notices.contains_key(&(id.clone(), other.to_owned())), "{id}: unexpected {other}");
    }
    let _: Value = Value::Null;
    system.stop().await
}
