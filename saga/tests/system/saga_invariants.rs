//! The saga's invariants (docs/architecture.md, "Invariants"), checked after a burst of mixed orders on the embedded broker and
//! both backends: every order terminal, stock conserved, money conserved, one notification per
//! order at the sink's dedupe key.

use crate::common;

use shared::both_backends;

use common::invariants::{self, Run, order_for};
use common::{Options, TestSystem};
use shared::db::Backend;
use shared::topics::service;

const ORDERS: usize = 500;

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
    for id in ids {
        let order = system.terminal(&id).await?;
        orders.push((id, order));
    }
    let notices = common::eventually_notified(&system.sink, &orders).await?;

    invariants::check(&Run {
        orders: &orders,
        inventory: system.db(service::INVENTORY),
        payment: system.db(service::PAYMENT),
        shipping: system.db(service::SHIPPING),
        deliveries: &notices,
    })
    .await?;
    system.stop().await
}
