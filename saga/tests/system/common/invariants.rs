//! The saga's invariants (docs/architecture.md) as reusable checks over a finished run: the
//! orders as the API reports them, the inventory, payment and shipping databases, and every
//! delivery the notification sink saw.

use std::collections::{BTreeSet, HashMap, HashSet};

use inventory_svc::domain::{CatalogueSeed, SkuState};
use serde_json::Value;
use shared::db::Db;
use shared::event_store::EventStore;

use super::Delivery;

/// The order mix used by burst tests: mostly completing orders plus every failure outcome.
/// Returns (customer, items, country, expected outcome).
pub fn order_for(i: usize) -> (&'static str, Vec<(&'static str, u32)>, &'static str, &'static str) {
    match i % 10 {
        0 => ("cust-rich", vec![("sku-soldout", 1)], "NL", "out_of_stock"),
        1 => ("cust-poor", vec![("sku-tee", 3)], "DE", "payment_declined"),
        2 => ("cust-rich", vec![("sku-mug", 1)], "JP", "destination_not_served"),
        3 => ("cust-rich", vec![("sku-poster", 1)], "FR", "poster"),
        4 => ("cust-nobody", vec![("sku-tee", 1)], "US", "unknown_customer"),
        _ => ("cust-rich", vec![("sku-tee", 1 + (i % 3) as u32), ("sku-mug", 1)], "NL", "completed"),
    }
}

/// What a run produced, for the checks.
pub struct Run<'a> {
    /// (order id, order as GET /orders/{id} returned it once terminal), in placement order,
    /// the i-th placed with `order_for(i)`.
    pub orders: &'a [(String, Value)],
    pub inventory: &'a Db,
    pub payment: &'a Db,
    pub shipping: &'a Db,
    /// Every delivery the webhook sink saw, retries included.
    pub deliveries: &'a [Delivery],
}

/// What each order's customer was told: the distinct messages (kind, dedupe key) and how many
/// deliveries carried them (a retry after a crash carries the same key: the sink counts it once).
#[derive(Debug, Default)]
pub struct Told {
    pub messages: BTreeSet<(String, String)>,
    pub deliveries: usize,
}

/// The sink's deliveries per order.
pub fn told(deliveries: &[Delivery]) -> HashMap<String, Told> {
    let mut told: HashMap<String, Told> = HashMap::new();
    for d in deliveries {
        let t = told.entry(d.order_id.clone()).or_default();
        t.messages.insert((d.kind.clone(), d.idempotency_key.clone()));
        t.deliveries += 1;
    }
    told
}

/// Every invariant; panics with a precise message on the first violation.
pub async fn check(run: &Run<'_>) -> anyhow::Result<()> {
    outcomes_match_inputs(run);
    stock_is_conserved(run).await?;
    money_is_conserved(run).await?;
    capacity_is_conserved(run).await?;
    one_message_per_order(run);
    Ok(())
}

/// Invariant 1: Every accepted order is terminal, with the outcome its inputs call for, and no more
/// posters were sold than were in stock.
pub fn outcomes_match_inputs(run: &Run<'_>) {
    for (i, (id, order)) in run.orders.iter().enumerate() {
        assert!(order["status"] == "completed" || order["status"] == "cancelled", "{id} not terminal: {order}");
        match order_for(i).3 {
            "completed" => assert_eq!(order["status"], "completed", "{order}"),
            "poster" => assert!(order["status"] == "completed" || order["reason"] == "out_of_stock", "{order}"),
            reason => assert_eq!(order["reason"], reason, "{order}"),
        }
    }
    let posters_sold =
        run.orders.iter().enumerate().filter(|(i, (_, o))| i % 10 == 3 && o["status"] == "completed").count();
    let posters_ordered = run.orders.iter().enumerate().filter(|(i, _)| i % 10 == 3).count();
    assert_eq!(posters_sold, posters_ordered.min(5), "exactly the posters in stock were sold");
}

/// Invariant 2: Per SKU: initial = available + reserved + shipped, available ≥ 0, nothing left reserved,
/// and shipped = what completed orders bought.
pub async fn stock_is_conserved(run: &Run<'_>) -> anyhow::Result<()> {
    let mut shipped_by_sku: HashMap<&str, i64> = HashMap::new();
    for (i, (_, order)) in run.orders.iter().enumerate() {
        if order["status"] == "completed" {
            for (sku, q) in order_for(i).1 {
                *shipped_by_sku.entry(sku).or_default() += i64::from(q);
            }
        }
    }
    let store = EventStore::default();
    let mut tx = run.inventory.begin_read().await?;
    for product in CatalogueSeed::demo().products {
        let state = store.load::<SkuState>(&mut tx, &SkuState::stream_id(&product.sku)).await?.state;
        assert!(state.available >= 0, "{}: available {}", product.sku, state.available);
        assert_eq!(state.available + state.reserved + state.shipped, product.stock, "{} conserved", product.sku);
        assert_eq!(state.reserved, 0, "{}: nothing left reserved", product.sku);
        let expected = shipped_by_sku.get(product.sku.as_str()).copied().unwrap_or(0);
        assert_eq!(state.shipped, expected, "{} shipped", product.sku);
    }
    tx.rollback().await?;
    Ok(())
}

/// Invariant 3: Per order: captured − refunded = total if completed, else 0; at most one capture and one
/// refund. The rich customer's account moved by exactly its completed orders.
pub async fn money_is_conserved(run: &Run<'_>) -> anyhow::Result<()> {
    let mut tx = run.payment.begin_read().await?;
    let events = EventStore::default().read_all(&mut tx, 0, i64::MAX).await?;
    tx.rollback().await?;
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
    for (id, order) in run.orders {
        let c = captured.get(id).cloned().unwrap_or_default();
        let r = refunded.get(id).cloned().unwrap_or_default();
        assert!(c.len() <= 1 && r.len() <= 1, "{id}: captured {c:?}, refunded {r:?}");
        let net: i64 = c.iter().sum::<i64>() - r.iter().sum::<i64>();
        let expected = if order["status"] == "completed" { order["total_minor"].as_i64().unwrap_or(-1) } else { 0 };
        assert_eq!(net, expected, "{id}: money conserved for {}", order["status"]);
    }
    let charged: i64 = events
        .iter()
        .filter(|e| e.stream_id == "account-cust-rich")
        .map(|e| match e.event_type.as_str() {
            "Charged" => e.payload["amount_minor"].as_i64().unwrap_or_default(),
            "Refunded" => -e.payload["amount_minor"].as_i64().unwrap_or_default(),
            _ => 0,
        })
        .sum();
    let completed_total: i64 = run
        .orders
        .iter()
        .filter(|(_, o)| o["status"] == "completed" && o["customer_id"] == "cust-rich")
        .map(|(_, o)| o["total_minor"].as_i64().unwrap_or_default())
        .sum();
    assert_eq!(charged, completed_total, "cust-rich paid exactly for its completed orders");
    Ok(())
}

/// Carrier capacity is conserved (shipping-svc's store): one slot booked per completed order,
/// none left for a cancelled one, and every carrier day holds exactly its orders' bookings.
pub async fn capacity_is_conserved(run: &Run<'_>) -> anyhow::Result<()> {
    let mut tx = run.shipping.begin_read().await?;
    let events = EventStore::default().read_all(&mut tx, 0, i64::MAX).await?;
    tx.rollback().await?;
    let mut net: HashMap<String, i64> = HashMap::new();
    let mut booked: HashMap<String, usize> = HashMap::new();
    let mut per_day: HashMap<String, i64> = HashMap::new();
    for e in events.iter().filter(|e| e.stream_id.starts_with("carrier-")) {
        let order = e.payload["order_id"].as_str().unwrap_or_default().to_owned();
        let delta = match e.event_type.as_str() {
            "SlotBooked" => {
                *booked.entry(order.clone()).or_default() += 1;
                1
            }
            "SlotFreed" => -1,
            other => anyhow::bail!("unexpected carrier day event {other}"),
        };
        *net.entry(order).or_default() += delta;
        *per_day.entry(e.stream_id.clone()).or_default() += delta;
    }
    for (id, order) in run.orders {
        let expected = i64::from(order["status"] == "completed");
        let held = net.get(id).copied().unwrap_or(0);
        assert_eq!(held, expected, "{id} ({}) holds {held} carrier slots", order["status"]);
        let bookings = booked.get(id).copied().unwrap_or(0);
        assert!(bookings <= 1, "{id} was booked {bookings} times");
    }
    let mut tx = run.shipping.begin_read().await?;
    for (day, expected) in per_day {
        let state = EventStore::default().load::<shipping_svc::domain::CarrierDay>(&mut tx, &day).await?.state.booked();
        assert_eq!(i64::from(state), expected, "{day}: booked slots against its orders' bookings");
    }
    tx.rollback().await?;
    Ok(())
}

/// Invariant 4: every order's customer was told exactly one thing, matching its final status: one
/// confirmation per completed order, one cancellation notice per cancelled order, never both
/// (retries of that one message carry its dedupe key).
pub fn one_message_per_order(run: &Run<'_>) {
    let told = told(run.deliveries);
    for (id, order) in run.orders {
        let kind = if order["status"] == "completed" { "confirmation" } else { "cancellation" };
        let messages: Vec<&(String, String)> = told.get(id).map(|t| t.messages.iter().collect()).unwrap_or_default();
        assert_eq!(messages.len(), 1, "{id} ({}): the customer was told {messages:?}", order["status"]);
        assert_eq!(messages[0].0, kind, "{id} ({}): told {messages:?}", order["status"]);
    }
}

/// A run's numbers for the fault suite's summary line, computed from the data (the views, the
/// payment store, the sink), not assumed.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub sent: usize,
    pub completed: usize,
    pub cancelled: usize,
    /// Accepted orders that are neither completed nor cancelled.
    pub lost: usize,
    /// Orders charged (captured) more than once.
    pub doubled_charges: usize,
    /// Orders refunded more than once.
    pub doubled_refunds: usize,
    /// Orders whose customer was told more than one thing (two distinct messages).
    pub doubled_notifications: usize,
    /// Orders whose customer was told nothing.
    pub missing_notifications: usize,
    /// Deliveries that repeated a message already delivered (same dedupe key): at least once
    /// delivery after a crash between the sink's answer and the commit.
    pub notices_redelivered: usize,
    pub stock_ok: bool,
    pub money_ok: bool,
    pub capacity_ok: bool,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = |ok: bool| if ok { "ok" } else { "VIOLATED" };
        write!(
            f,
            "sent={} completed={} cancelled={} lost={} doubled_charges={} doubled_refunds={} \
             doubled_notifications={} missing_notifications={} notices_redelivered={} stock={} money={} \
             carrier_capacity={}",
            self.sent,
            self.completed,
            self.cancelled,
            self.lost,
            self.doubled_charges,
            self.doubled_refunds,
            self.doubled_notifications,
            self.missing_notifications,
            self.notices_redelivered,
            verdict(self.stock_ok),
            verdict(self.money_ok),
            verdict(self.capacity_ok),
        )
    }
}

/// Count what the summary line reports. Stock and money are judged by the same checks as
/// [`check`], caught instead of panicking so that the line can be printed before failing.
pub async fn tally(run: &Run<'_>) -> anyhow::Result<Tally> {
    use futures::FutureExt as _;
    use std::panic::AssertUnwindSafe;

    let status = |o: &Value| o["status"].as_str().unwrap_or_default().to_owned();
    let mut t = Tally { sent: run.orders.len(), ..Tally::default() };
    for (_, order) in run.orders {
        match status(order).as_str() {
            "completed" => t.completed += 1,
            "cancelled" => t.cancelled += 1,
            _ => t.lost += 1,
        }
    }

    let mut tx = run.payment.begin_read().await?;
    let events = EventStore::default().read_all(&mut tx, 0, i64::MAX).await?;
    tx.rollback().await?;
    // Per order: captures on its payment stream and charges on any account stream (and the
    // same for refunds); a double effect shows in either.
    let mut charges: HashMap<String, (usize, usize)> = HashMap::new();
    let mut refunds: HashMap<String, (usize, usize)> = HashMap::new();
    for e in &events {
        if let Some(order) = e.stream_id.strip_prefix("payment-") {
            match e.event_type.as_str() {
                "Captured" => charges.entry(order.to_owned()).or_default().0 += 1,
                "Refunded" => refunds.entry(order.to_owned()).or_default().0 += 1,
                _ => {}
            }
        } else if e.stream_id.starts_with("account-") {
            let order = e.payload["order_id"].as_str().unwrap_or_default().to_owned();
            match e.event_type.as_str() {
                "Charged" => charges.entry(order).or_default().1 += 1,
                "Refunded" => refunds.entry(order).or_default().1 += 1,
                _ => {}
            }
        }
    }
    let doubled = |counts: &HashMap<String, (usize, usize)>| {
        run.orders.iter().filter(|(id, _)| counts.get(id).is_some_and(|(a, b)| (*a).max(*b) > 1)).count()
    };
    t.doubled_charges = doubled(&charges);
    t.doubled_refunds = doubled(&refunds);
    let told = told(run.deliveries);
    let ids: HashSet<&String> = run.orders.iter().map(|(id, _)| id).collect();
    let ours = || told.iter().filter(|(id, _)| ids.contains(id)).map(|(_, t)| t);
    t.doubled_notifications = ours().filter(|t| t.messages.len() > 1).count();
    t.missing_notifications = run.orders.len() - ours().count();
    t.notices_redelivered = ours().map(|t| t.deliveries - t.messages.len()).sum();

    t.stock_ok = matches!(AssertUnwindSafe(stock_is_conserved(run)).catch_unwind().await, Ok(Ok(())));
    t.money_ok = matches!(AssertUnwindSafe(money_is_conserved(run)).catch_unwind().await, Ok(Ok(())));
    t.capacity_ok = matches!(AssertUnwindSafe(capacity_is_conserved(run)).catch_unwind().await, Ok(Ok(())));
    Ok(t)
}
