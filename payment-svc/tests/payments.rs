//! payment-svc as a black box: saga messages in through the mock broker, payment events out,
//! on both database backends. The demo accounts are seeded: `cust-poor` holds 1000,
//! `cust-rich` 1 000 000 000.

use std::sync::Arc;

use payment_svc::domain::{AccountState, PaymentStatus, payment_id};
use payment_svc::{App, Config, PaymentHandler};
use shared::CancellationToken;
use shared::both_backends;
use shared::contracts::{
    CURRENCY, CancelReason, CompensationTrigger, InventoryReserved, OrderCancelled, PaymentCaptured, PaymentDeclined,
    PaymentRefunded, PricedLine, ShipTo, ShipmentFailed, event_type,
};
use shared::db::Backend;
use shared::envelope::Envelope;
use shared::testing::{Bus, Reader, WAIT, envelope, service_config};
use shared::testing::{TestDb, eventually};
use shared::topics::service;
use uuid::Uuid;

/// A running payment-svc with its own database and broker.
struct Payment {
    db: TestDb,
    bus: Bus,
    handler: Arc<PaymentHandler>,
    payments: Reader,
    stop: CancellationToken,
    run: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Payment {
    async fn start(backend: Backend) -> anyhow::Result<Self> {
        let db = TestDb::new(backend, &[]).await?;
        let bus = Bus::new(service::PAYMENT)?;
        let stop = CancellationToken::new();
        let app = App::build(Config::new(service_config(service::PAYMENT, &db, &bus))?, &stop).await?;
        let handler = app.handler.clone();
        let run = tokio::spawn(app.run_until_stopped(stop.clone()));
        let payments = bus.reader(&bus.broker.topics.payments)?;
        Ok(Self { db, bus, handler, payments, stop, run })
    }

    async fn reserved(&self, order_id: Uuid, customer_id: &str, total_minor: i64) -> anyhow::Result<Envelope> {
        let e = envelope(
            event_type::INVENTORY_RESERVED,
            service::INVENTORY,
            order_id,
            &reservation(order_id, customer_id, total_minor),
        )?;
        self.bus.publish(&self.bus.broker.topics.inventory, &e).await?;
        Ok(e)
    }

    async fn shipment_failed(&self, order_id: Uuid, customer_id: &str) -> anyhow::Result<Envelope> {
        let payload = ShipmentFailed {
            order_id,
            customer_id: customer_id.to_owned(),
            reason: CancelReason::DestinationNotServed,
        };
        let e = envelope(event_type::SHIPMENT_FAILED, service::SHIPPING, order_id, &payload)?;
        self.bus.publish(&self.bus.broker.topics.shipping, &e).await?;
        Ok(e)
    }

    async fn cancelled(&self, order_id: Uuid, customer_id: &str) -> anyhow::Result<Envelope> {
        let payload = OrderCancelled {
            order_id,
            customer_id: customer_id.to_owned(),
            reason: CancelReason::DeadlineExceeded,
            compensations: Vec::new(),
        };
        let e = envelope(event_type::ORDER_CANCELLED, service::ORDER, order_id, &payload)?;
        self.bus.publish(&self.bus.broker.topics.orders, &e).await?;
        Ok(e)
    }

    async fn balance(&self, customer_id: &str) -> anyhow::Result<Option<i64>> {
        let mut tx = self.db.db.begin_read().await?;
        let account = self.handler.account(&mut tx, customer_id).await?;
        tx.rollback().await?;
        Ok(account.map(|AccountState { balance_minor }| balance_minor))
    }

    async fn payment(&self, order_id: Uuid) -> anyhow::Result<payment_svc::domain::PaymentState> {
        let mut tx = self.db.db.begin_read().await?;
        let payment = self.handler.payment(&mut tx, order_id).await?;
        tx.rollback().await?;
        Ok(payment)
    }

    /// Wait until every input message was consumed and every resulting event published.
    async fn settled(&self) -> anyhow::Result<()> {
        let topics = &self.bus.broker.topics;
        self.bus.settled(&self.db.db, &[&topics.inventory, &topics.shipping, &topics.orders]).await?;
        self.payments.caught_up().await
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.run.await?
    }
}

fn reservation(order_id: Uuid, customer_id: &str, total_minor: i64) -> InventoryReserved {
    InventoryReserved {
        order_id,
        customer_id: customer_id.to_owned(),
        lines: vec![PricedLine {
            sku: "sku-mug".to_owned(),
            quantity: 1,
            unit_price_minor: total_minor,
            line_total_minor: total_minor,
        }],
        total_minor,
        currency: CURRENCY.to_owned(),
        ship_to: ShipTo { country: "NL".to_owned(), ..ShipTo::default() },
    }
}

fn types(events: &[Envelope]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

both_backends!(a_reserved_order_is_captured_and_charged_to_the_customer);
async fn a_reserved_order_is_captured_and_charged_to_the_customer(backend: Backend) -> anyhow::Result<()> {
    let svc = Payment::start(backend).await?;
    let order_id = Uuid::now_v7();

    let cause = svc.reserved(order_id, "cust-poor", 900).await?;

    let out = svc.payments.wait_for(order_id, 1).await?;
    assert_eq!(types(&out), ["PaymentCaptured"]);
    let captured: PaymentCaptured = out[0].decode()?;
    assert_eq!(captured.amount_minor, 900);
    assert_eq!(captured.customer_id, "cust-poor");
    assert_eq!(captured.payment_id, payment_id(order_id));
    assert_eq!(captured.ship_to.country, "NL");
    assert_eq!(out[0].source, service::PAYMENT);
    assert_eq!(out[0].causation_id, Some(cause.id));
    assert_eq!(out[0].correlation_id, cause.correlation_id);
    assert_eq!(svc.balance("cust-poor").await?, Some(100));
    assert!(matches!(svc.payment(order_id).await?.status, PaymentStatus::Captured { amount_minor: 900, .. }));
    svc.stop().await
}

both_backends!(an_unknown_customer_and_a_short_balance_are_declined);
async fn an_unknown_customer_and_a_short_balance_are_declined(backend: Backend) -> anyhow::Result<()> {
    let svc = Payment::start(backend).await?;
    let (stranger, short) = (Uuid::now_v7(), Uuid::now_v7());

    svc.reserved(stranger, "cust-nobody", 10).await?;
    svc.reserved(short, "cust-poor", 1001).await?;

    let declined: PaymentDeclined = svc.payments.wait_for(stranger, 1).await?[0].decode()?;
    assert_eq!(declined.reason, CancelReason::UnknownCustomer);
    let out = svc.payments.wait_for(short, 1).await?;
    assert_eq!(types(&out), ["PaymentDeclined"]);
    let declined: PaymentDeclined = out[0].decode()?;
    assert_eq!((declined.reason, declined.amount_minor), (CancelReason::PaymentDeclined, 1001));
    assert_eq!(svc.balance("cust-poor").await?, Some(1000), "nothing was charged");
    assert_eq!(svc.balance("cust-nobody").await?, None, "no account is opened by a payment");
    assert!(matches!(svc.payment(short).await?.status, PaymentStatus::Declined { .. }));
    svc.stop().await
}

both_backends!(a_failed_shipment_refunds_the_capture);
async fn a_failed_shipment_refunds_the_capture(backend: Backend) -> anyhow::Result<()> {
    let svc = Payment::start(backend).await?;
    let order_id = Uuid::now_v7();
    svc.reserved(order_id, "cust-poor", 900).await?;
    svc.payments.wait_for(order_id, 1).await?;

    svc.shipment_failed(order_id, "cust-poor").await?;

    let out = svc.payments.wait_for(order_id, 2).await?;
    assert_eq!(types(&out), ["PaymentCaptured", "PaymentRefunded"]);
    let refunded: PaymentRefunded = out[1].decode()?;
    assert_eq!(refunded.trigger, CompensationTrigger::ShipmentFailed);
    assert_eq!((refunded.amount_minor, refunded.payment_id), (900, payment_id(order_id)));
    assert_eq!(svc.balance("cust-poor").await?, Some(1000), "the money went back");
    let payment = svc.payment(order_id).await?;
    assert_eq!(payment.net_captured_minor(), 0);
    assert!(matches!(payment.status, PaymentStatus::Refunded { .. }));
    svc.stop().await
}

both_backends!(a_cancellation_after_the_capture_refunds_it_once);
async fn a_cancellation_after_the_capture_refunds_it_once(backend: Backend) -> anyhow::Result<()> {
    let svc = Payment::start(backend).await?;
    let order_id = Uuid::now_v7();
    svc.reserved(order_id, "cust-poor", 900).await?;
    svc.payments.wait_for(order_id, 1).await?;

    svc.cancelled(order_id, "cust-poor").await?;
    let out = svc.payments.wait_for(order_id, 2).await?;
    // A shipment failure reported after the cancellation has nothing left to refund.
    svc.shipment_failed(order_id, "cust-poor").await?;
    svc.settled().await?;

    assert_eq!(types(&out), ["PaymentCaptured", "PaymentRefunded"]);
    let refunded: PaymentRefunded = out[1].decode()?;
    assert_eq!(refunded.trigger, CompensationTrigger::OrderCancelled);
    assert_eq!(types(&svc.payments.about(order_id)?), ["PaymentCaptured", "PaymentRefunded"], "refunded once");
    assert_eq!(svc.balance("cust-poor").await?, Some(1000));
    assert!(svc.payment(order_id).await?.cancelled);
    svc.stop().await
}

both_backends!(a_reservation_arriving_after_the_cancellation_is_not_captured);
async fn a_reservation_arriving_after_the_cancellation_is_not_captured(backend: Backend) -> anyhow::Result<()> {
    let svc = Payment::start(backend).await?;
    let order_id = Uuid::now_v7();
    svc.cancelled(order_id, "cust-poor").await?;
    eventually(WAIT, "the cancellation noted", || async { svc.payment(order_id).await.ok()?.cancelled.then_some(()) })
        .await?;

    svc.reserved(order_id, "cust-poor", 900).await?;
    svc.settled().await?;

    assert_eq!(svc.payments.about(order_id)?, Vec::<Envelope>::new(), "nothing captured, nothing to refund");
    assert_eq!(svc.balance("cust-poor").await?, Some(1000));
    let payment = svc.payment(order_id).await?;
    assert_eq!(payment.status, PaymentStatus::Pending);
    assert!(payment.cancelled);
    svc.stop().await
}

both_backends!(a_redelivered_message_changes_nothing);
async fn a_redelivered_message_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let svc = Payment::start(backend).await?;
    let order_id = Uuid::now_v7();
    let reserved = svc.reserved(order_id, "cust-poor", 900).await?;
    svc.payments.wait_for(order_id, 1).await?;
    let failed = svc.shipment_failed(order_id, "cust-poor").await?;
    svc.payments.wait_for(order_id, 2).await?;

    // The same messages again (a redelivery), and copies with new ids (a replay upstream).
    svc.bus.publish(&svc.bus.broker.topics.inventory, &reserved).await?;
    svc.bus.publish(&svc.bus.broker.topics.shipping, &failed).await?;
    svc.reserved(order_id, "cust-poor", 900).await?;
    svc.shipment_failed(order_id, "cust-poor").await?;
    svc.settled().await?;

    assert_eq!(types(&svc.payments.about(order_id)?), ["PaymentCaptured", "PaymentRefunded"]);
    assert_eq!(svc.balance("cust-poor").await?, Some(1000), "charged once, refunded once");
    assert!(matches!(svc.payment(order_id).await?.status, PaymentStatus::Refunded { amount_minor: 900, .. }));
    svc.stop().await
}
