//! shipping-svc as a black box: saga messages in through the mock broker, shipping events out,
//! on both database backends. The network is the demo one (postnl: NL, DE; ups: FR, US) plus,
//! where a test says so, a carrier with no capacity at all.

use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use shared::CancellationToken;
use shared::both_backends;
use shared::contracts::{
    CURRENCY, CancelReason, OrderCancelled, PaymentCaptured, ShipTo, ShipmentCancelled, ShipmentFailed,
    ShipmentScheduled, event_type,
};
use shared::db::Backend;
use shared::envelope::Envelope;
use shared::testing::{Bus, Reader, WAIT, envelope, service_config};
use shared::testing::{TestDb, eventually};
use shared::topics::service;
use shipping_svc::domain::{CarrierDayId, CarrierName, FailureReason, NetworkSeed, Shipment, shipment_id};
use shipping_svc::{App, Config, ShippingHandler};
use uuid::Uuid;

/// A running shipping-svc with its own database and broker.
struct Shipping {
    db: TestDb,
    bus: Bus,
    handler: Arc<ShippingHandler>,
    shipping: Reader,
    stop: CancellationToken,
    run: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Shipping {
    async fn start(backend: Backend) -> anyhow::Result<Self> {
        Self::start_with(backend, None).await
    }

    async fn start_with(backend: Backend, seed: Option<NetworkSeed>) -> anyhow::Result<Self> {
        let db = TestDb::new(backend, &[]).await?;
        let bus = Bus::new(service::SHIPPING)?;
        let stop = CancellationToken::new();
        let mut config = Config::new(service_config(service::SHIPPING, &db, &bus))?;
        if let Some(seed) = seed {
            config.seed = seed;
        }
        let app = App::build(config, &stop).await?;
        let handler = app.handler.clone();
        let run = tokio::spawn(app.run_until_stopped(stop.clone()));
        let shipping = bus.reader(&bus.broker.topics.shipping)?;
        Ok(Self { db, bus, handler, shipping, stop, run })
    }

    async fn paid(&self, order_id: Uuid, country: &str) -> anyhow::Result<Envelope> {
        let payload = PaymentCaptured {
            order_id,
            customer_id: "cust-rich".to_owned(),
            payment_id: Uuid::new_v4(),
            amount_minor: 900,
            currency: CURRENCY.to_owned(),
            ship_to: ShipTo { country: country.to_owned(), city: Some("Somewhere".to_owned()), ..ShipTo::default() },
        };
        let e = envelope(event_type::PAYMENT_CAPTURED, service::PAYMENT, order_id, &payload)?;
        self.bus.publish(&self.bus.broker.topics.payments, &e).await?;
        Ok(e)
    }

    async fn cancelled(&self, order_id: Uuid) -> anyhow::Result<Envelope> {
        let payload = OrderCancelled {
            order_id,
            customer_id: "cust-rich".to_owned(),
            reason: CancelReason::DeadlineExceeded,
            compensations: Vec::new(),
        };
        let e = envelope(event_type::ORDER_CANCELLED, service::ORDER, order_id, &payload)?;
        self.bus.publish(&self.bus.broker.topics.orders, &e).await?;
        Ok(e)
    }

    async fn shipment(&self, order_id: Uuid) -> anyhow::Result<Shipment> {
        let mut tx = self.db.db.begin_read().await?;
        let shipment = self.handler.shipment(&mut tx, order_id).await?;
        tx.rollback().await?;
        Ok(shipment)
    }

    async fn booked(&self, carrier: &str, day: NaiveDate) -> anyhow::Result<u32> {
        let id = CarrierDayId { carrier: CarrierName::try_from(carrier)?, day };
        let mut tx = self.db.db.begin_read().await?;
        let booked = self.handler.carrier_day(&mut tx, &id).await?.booked();
        tx.rollback().await?;
        Ok(booked)
    }

    /// Wait until every input message was consumed and every resulting event published.
    async fn settled(&self) -> anyhow::Result<()> {
        let topics = &self.bus.broker.topics;
        self.bus.settled(&self.db.db, &[&topics.payments, &topics.orders]).await?;
        self.shipping.caught_up().await
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.run.await?
    }
}

fn types(events: &[Envelope]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

/// Schedule `order_id` to NL and return the booked ship date.
async fn scheduled(svc: &Shipping, order_id: Uuid) -> anyhow::Result<NaiveDate> {
    svc.paid(order_id, "NL").await?;
    let scheduled: ShipmentScheduled = svc.shipping.wait_for(order_id, 1).await?[0].decode()?;
    Ok(scheduled.ship_date)
}

both_backends!(a_paid_order_is_scheduled_with_the_first_carrier_serving_its_destination);
async fn a_paid_order_is_scheduled_with_the_first_carrier_serving_its_destination(
    backend: Backend,
) -> anyhow::Result<()> {
    let svc = Shipping::start(backend).await?;
    let order_id = Uuid::now_v7();
    let before = Utc::now().date_naive();

    let cause = svc.paid(order_id, "NL").await?;

    let out = svc.shipping.wait_for(order_id, 1).await?;
    let after = Utc::now().date_naive();
    assert_eq!(types(&out), ["ShipmentScheduled"]);
    let scheduled: ShipmentScheduled = out[0].decode()?;
    assert_eq!(scheduled.carrier, "postnl");
    assert_eq!(scheduled.shipment_id, shipment_id(order_id));
    assert!((before..=after).contains(&scheduled.ship_date), "ships today: {}", scheduled.ship_date);
    assert_eq!(scheduled.ship_to.city.as_deref(), Some("Somewhere"));
    assert_eq!(scheduled.customer_id, "cust-rich");
    assert_eq!(out[0].causation_id, Some(cause.id));
    assert!(matches!(svc.shipment(order_id).await?, Shipment::Scheduled(b) if b.carrier.as_str() == "postnl"));
    assert_eq!(svc.booked("postnl", scheduled.ship_date).await?, 1);
    svc.stop().await
}

both_backends!(an_unserved_destination_or_a_full_carrier_fails_the_shipment);
async fn an_unserved_destination_or_a_full_carrier_fails_the_shipment(backend: Backend) -> anyhow::Result<()> {
    let seed = NetworkSeed::from_json(
        r#"{"carriers": [
            {"name": "postnl", "countries": ["NL", "DE"], "daily_capacity": 1000000},
            {"name": "closed", "countries": ["BE"], "daily_capacity": 0}
        ]}"#,
    )?;
    let svc = Shipping::start_with(backend, Some(seed)).await?;
    let (unserved, full) = (Uuid::now_v7(), Uuid::now_v7());

    svc.paid(unserved, "JP").await?;
    svc.paid(full, "BE").await?;

    let out = svc.shipping.wait_for(unserved, 1).await?;
    assert_eq!(types(&out), ["ShipmentFailed"]);
    let failed: ShipmentFailed = out[0].decode()?;
    assert_eq!(failed.reason, CancelReason::DestinationNotServed);
    assert_eq!(svc.shipment(unserved).await?, Shipment::Failed(FailureReason::DestinationNotServed));
    let failed: ShipmentFailed = svc.shipping.wait_for(full, 1).await?[0].decode()?;
    assert_eq!(failed.reason, CancelReason::CarrierCapacityExhausted);
    assert_eq!(svc.shipment(full).await?, Shipment::Failed(FailureReason::CarrierCapacityExhausted));
    svc.stop().await
}

both_backends!(a_cancelled_order_cancels_its_shipment_and_frees_the_slot);
async fn a_cancelled_order_cancels_its_shipment_and_frees_the_slot(backend: Backend) -> anyhow::Result<()> {
    let svc = Shipping::start(backend).await?;
    let order_id = Uuid::now_v7();
    let day = scheduled(&svc, order_id).await?;

    svc.cancelled(order_id).await?;

    let out = svc.shipping.wait_for(order_id, 2).await?;
    assert_eq!(types(&out), ["ShipmentScheduled", "ShipmentCancelled"]);
    let cancelled: ShipmentCancelled = out[1].decode()?;
    assert_eq!(
        (cancelled.shipment_id, cancelled.carrier.as_str(), cancelled.ship_date),
        (shipment_id(order_id), "postnl", day)
    );
    assert!(matches!(svc.shipment(order_id).await?, Shipment::Cancelled(_)));
    assert_eq!(svc.booked("postnl", day).await?, 0, "the slot is free again");
    svc.stop().await
}

both_backends!(a_payment_arriving_after_the_cancellation_is_not_shipped);
async fn a_payment_arriving_after_the_cancellation_is_not_shipped(backend: Backend) -> anyhow::Result<()> {
    let svc = Shipping::start(backend).await?;
    let order_id = Uuid::now_v7();
    svc.cancelled(order_id).await?;
    eventually(WAIT, "the cancellation noted", || async {
        (svc.shipment(order_id).await.ok()? == Shipment::CancellationNoted).then_some(())
    })
    .await?;

    svc.paid(order_id, "NL").await?;
    svc.settled().await?;

    assert_eq!(svc.shipping.about(order_id)?, Vec::<Envelope>::new(), "nothing scheduled, nothing to cancel");
    assert_eq!(svc.shipment(order_id).await?, Shipment::CancellationNoted);
    assert_eq!(svc.booked("postnl", Utc::now().date_naive()).await?, 0);
    svc.stop().await
}

both_backends!(a_redelivered_message_changes_nothing);
async fn a_redelivered_message_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let svc = Shipping::start(backend).await?;
    let (order_id, other) = (Uuid::now_v7(), Uuid::now_v7());
    let paid = svc.paid(order_id, "NL").await?;
    let day = svc.shipping.wait_for(order_id, 1).await?[0].decode::<ShipmentScheduled>()?.ship_date;
    // Another order on (normally) the same carrier day, so a slot freed twice would show.
    let still_booked = u32::from(scheduled(&svc, other).await? == day);
    let cancelled = svc.cancelled(order_id).await?;
    svc.shipping.wait_for(order_id, 2).await?;

    // The same messages again (a redelivery), and copies with new ids (a replay upstream).
    svc.bus.publish(&svc.bus.broker.topics.payments, &paid).await?;
    svc.bus.publish(&svc.bus.broker.topics.orders, &cancelled).await?;
    svc.paid(order_id, "NL").await?;
    svc.cancelled(order_id).await?;
    svc.settled().await?;

    assert_eq!(types(&svc.shipping.about(order_id)?), ["ShipmentScheduled", "ShipmentCancelled"]);
    assert!(matches!(svc.shipment(order_id).await?, Shipment::Cancelled(_)));
    assert_eq!(
        svc.booked("postnl", day).await?,
        still_booked,
        "booked once, freed once: only the other order holds a slot"
    );
    svc.stop().await
}
