//! notification-svc as a black box: saga messages in through the mock broker, notifications
//! out to the sinks and `NotificationSent` on the broker, on both database backends. Where a
//! test needs the webhook, it runs one on loopback that refuses customer `cust-refused`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::NaiveDate;
use notification_svc::domain::notification_id;
use notification_svc::handlers::Delivery;
use notification_svc::sinks::RetryPolicy;
use notification_svc::{App, Config, NotificationHandler};
use shared::CancellationToken;
use shared::both_backends;
use shared::consumer::dlq_header;
use shared::contracts::{
    CancelReason, NotificationKind, NotificationSent, OrderCancelled, ShipTo, ShipmentScheduled, event_type,
};
use shared::db::Backend;
use shared::envelope::Envelope;
use shared::testing::{Bus, Reader, WAIT, envelope, service_config};
use shared::testing::{TestDb, eventually};
use shared::topics::service;
use uuid::Uuid;

/// The customer whose notifications the test webhook refuses with a 400.
const REFUSED: &str = "cust-refused";

/// A credential in the test webhook's URL, which must never reach a dead letter.
const WEBHOOK_TOKEN: &str = "tok-3f9a1c";

/// A request the webhook saw: its idempotency key and its JSON body.
type Seen = (Option<String>, serde_json::Value);

async fn hook(State(seen): State<Arc<Mutex<Vec<Seen>>>>, headers: HeaderMap, body: String) -> StatusCode {
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let refuse = body["customer_id"] == REFUSED;
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Ok(mut seen) = seen.lock() {
        seen.push((key, body));
    }
    if refuse { StatusCode::BAD_REQUEST } else { StatusCode::OK }
}

/// A webhook on 127.0.0.1:0; returns its url and the requests it sees.
async fn webhook() -> anyhow::Result<(String, Arc<Mutex<Vec<Seen>>>)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().route("/hook", post(hook)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/hook?token={WEBHOOK_TOKEN}"), seen))
}

/// A running notification-svc with its own database and broker.
struct Notification {
    db: TestDb,
    bus: Bus,
    handler: Arc<NotificationHandler>,
    sent: Reader,
    dead_letters: Reader,
    webhook: Option<Arc<Mutex<Vec<Seen>>>>,
    stop: CancellationToken,
    run: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Notification {
    /// With the log sink only.
    async fn start(backend: Backend) -> anyhow::Result<Self> {
        Self::start_with(backend, false, &[]).await
    }

    /// With the log sink and the test webhook.
    async fn start_with_webhook(backend: Backend) -> anyhow::Result<Self> {
        Self::start_with(backend, true, &[]).await
    }

    /// `backlog`: shipments scheduled (order, customer) before the service starts, so that its
    /// first fetch holds them all.
    async fn start_with(backend: Backend, with_webhook: bool, backlog: &[(Uuid, &str)]) -> anyhow::Result<Self> {
        let db = TestDb::new(backend, &[]).await?;
        let bus = Bus::new(service::NOTIFICATION)?;
        for (order_id, customer_id) in backlog {
            bus.publish(&bus.broker.topics.shipping, &scheduled(*order_id, customer_id)?).await?;
        }
        let stop = CancellationToken::new();
        let mut config = Config::new(service_config(service::NOTIFICATION, &db, &bus))?;
        let mut webhook_seen = None;
        if with_webhook {
            let (url, seen) = webhook().await?;
            config.notify.webhook_url = Some(url);
            config.notify.retry = RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
                request_timeout: Duration::from_secs(5),
            };
            webhook_seen = Some(seen);
        }
        let app = App::build(config, &stop).await?;
        let handler = app.handler.clone();
        let run = tokio::spawn(app.run_until_stopped(stop.clone()));
        let sent = bus.reader(&bus.broker.topics.notifications)?;
        let dead_letters = bus.reader(&bus.broker.topics.dead_letter(service::NOTIFICATION))?;
        Ok(Self { db, bus, handler, sent, dead_letters, webhook: webhook_seen, stop, run })
    }

    async fn scheduled(&self, order_id: Uuid, customer_id: &str) -> anyhow::Result<Envelope> {
        let e = scheduled(order_id, customer_id)?;
        self.bus.publish(&self.bus.broker.topics.shipping, &e).await?;
        Ok(e)
    }

    async fn cancelled(&self, order_id: Uuid, customer_id: &str) -> anyhow::Result<Envelope> {
        let payload = OrderCancelled {
            order_id,
            customer_id: customer_id.to_owned(),
            reason: CancelReason::PaymentDeclined,
            compensations: vec!["InventoryReleased".to_owned()],
        };
        let e = envelope(event_type::ORDER_CANCELLED, service::ORDER, order_id, &payload)?;
        self.bus.publish(&self.bus.broker.topics.orders, &e).await?;
        Ok(e)
    }

    async fn deliveries(&self, order_id: Uuid) -> anyhow::Result<Vec<Delivery>> {
        let mut tx = self.db.db.begin_read().await?;
        let deliveries = self.handler.deliveries(&mut tx, order_id).await?;
        tx.rollback().await?;
        Ok(deliveries)
    }

    /// The webhook requests about one order.
    fn webhook_requests(&self, order_id: Uuid) -> Vec<Seen> {
        let Some(seen) = &self.webhook else { return Vec::new() };
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        seen.into_iter().filter(|(_, body)| body["order_id"] == order_id.to_string()).collect()
    }

    /// Wait until every input message was consumed and every resulting event published.
    async fn settled(&self) -> anyhow::Result<()> {
        let topics = &self.bus.broker.topics;
        self.bus.settled(&self.db.db, &[&topics.shipping, &topics.orders]).await?;
        self.sent.caught_up().await?;
        self.dead_letters.caught_up().await
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.run.await?
    }
}

fn scheduled(order_id: Uuid, customer_id: &str) -> anyhow::Result<Envelope> {
    let payload = ShipmentScheduled {
        order_id,
        customer_id: customer_id.to_owned(),
        shipment_id: Uuid::new_v4(),
        carrier: "postnl".to_owned(),
        ship_date: NaiveDate::from_ymd_opt(2030, 1, 2).ok_or_else(|| anyhow::anyhow!("bad date"))?,
        ship_to: ShipTo { country: "NL".to_owned(), ..ShipTo::default() },
    };
    envelope(event_type::SHIPMENT_SCHEDULED, service::SHIPPING, order_id, &payload)
}

fn kinds(deliveries: &[Delivery]) -> Vec<NotificationKind> {
    deliveries.iter().map(|d| d.kind).collect()
}

both_backends!(a_scheduled_shipment_is_confirmed_to_the_customer_through_every_sink);
async fn a_scheduled_shipment_is_confirmed_to_the_customer_through_every_sink(backend: Backend) -> anyhow::Result<()> {
    let svc = Notification::start_with_webhook(backend).await?;
    let order_id = Uuid::now_v7();

    let cause = svc.scheduled(order_id, "cust-rich").await?;

    let out = svc.sent.wait_for(order_id, 1).await?;
    assert_eq!(out[0].event_type, event_type::NOTIFICATION_SENT);
    assert_eq!(out[0].causation_id, Some(cause.id));
    let sent: NotificationSent = out[0].decode()?;
    let key = notification_id(order_id, NotificationKind::Confirmation);
    assert_eq!((sent.kind, sent.notification_id), (NotificationKind::Confirmation, key));
    assert_eq!(sent.sinks, ["log", "webhook"]);
    let requests = svc.webhook_requests(order_id);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, Some(key.to_string()), "the idempotency key is the notification id");
    assert_eq!(requests[0].1["carrier"], "postnl");
    let deliveries = svc.deliveries(order_id).await?;
    assert_eq!(kinds(&deliveries), [NotificationKind::Confirmation]);
    assert_eq!(deliveries[0].notification_id, key);
    assert_eq!(deliveries[0].sinks, ["log", "webhook"]);
    svc.stop().await
}

both_backends!(a_cancelled_order_gets_a_cancellation_notice);
async fn a_cancelled_order_gets_a_cancellation_notice(backend: Backend) -> anyhow::Result<()> {
    let svc = Notification::start(backend).await?;
    let order_id = Uuid::now_v7();

    svc.cancelled(order_id, "cust-poor").await?;

    let sent: NotificationSent = svc.sent.wait_for(order_id, 1).await?[0].decode()?;
    assert_eq!(sent.kind, NotificationKind::Cancellation);
    assert_eq!(sent.notification_id, notification_id(order_id, NotificationKind::Cancellation));
    assert_eq!(sent.customer_id, "cust-poor");
    assert_eq!(sent.sinks, ["log"], "the log sink alone by default");
    assert_eq!(kinds(&svc.deliveries(order_id).await?), [NotificationKind::Cancellation]);
    svc.stop().await
}

both_backends!(a_shipment_scheduled_after_the_cancellation_is_not_confirmed);
async fn a_shipment_scheduled_after_the_cancellation_is_not_confirmed(backend: Backend) -> anyhow::Result<()> {
    let svc = Notification::start(backend).await?;
    let order_id = Uuid::now_v7();
    svc.cancelled(order_id, "cust-poor").await?;
    svc.sent.wait_for(order_id, 1).await?;

    svc.scheduled(order_id, "cust-poor").await?;
    svc.settled().await?;

    let sent: Vec<NotificationSent> = svc.sent.about(order_id)?.iter().map(|e| e.decode()).collect::<Result<_, _>>()?;
    assert_eq!(sent.iter().map(|s| s.kind).collect::<Vec<_>>(), [NotificationKind::Cancellation]);
    assert_eq!(kinds(&svc.deliveries(order_id).await?), [NotificationKind::Cancellation]);
    svc.stop().await
}

both_backends!(a_redelivered_message_changes_nothing);
async fn a_redelivered_message_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let svc = Notification::start_with_webhook(backend).await?;
    let order_id = Uuid::now_v7();
    let scheduled = svc.scheduled(order_id, "cust-rich").await?;
    svc.sent.wait_for(order_id, 1).await?;

    // The same message again (a redelivery), and a copy with a new id (a replay upstream).
    svc.bus.publish(&svc.bus.broker.topics.shipping, &scheduled).await?;
    svc.scheduled(order_id, "cust-rich").await?;
    svc.settled().await?;

    assert_eq!(svc.sent.about(order_id)?.len(), 1, "one NotificationSent");
    assert_eq!(svc.webhook_requests(order_id).len(), 1, "the customer was told once");
    assert_eq!(kinds(&svc.deliveries(order_id).await?), [NotificationKind::Confirmation]);
    svc.stop().await
}

both_backends!(a_notification_the_sink_refuses_is_dead_lettered_and_the_next_one_goes_out);
async fn a_notification_the_sink_refuses_is_dead_lettered_and_the_next_one_goes_out(
    backend: Backend,
) -> anyhow::Result<()> {
    let svc = Notification::start_with_webhook(backend).await?;
    let (refused, accepted) = (Uuid::now_v7(), Uuid::now_v7());

    let poison = svc.scheduled(refused, REFUSED).await?;
    svc.scheduled(accepted, "cust-rich").await?;

    eventually(WAIT, "the refused notification dead-lettered", || async {
        (!svc.dead_letters.records().ok()?.is_empty()).then_some(())
    })
    .await?;
    svc.sent.wait_for(accepted, 1).await?;
    svc.settled().await?;

    let letters = svc.dead_letters.records()?;

    assert_eq!(letters.len(), 1);
    let (letter, headers) = &letters[0];
    assert_eq!(letter.id, poison.id, "the original message, as it arrived");
    let header = |name: &str| headers.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(header(dlq_header::ORIGINAL_TOPIC), Some(svc.bus.broker.topics.shipping.as_str()));
    assert!(header(dlq_header::ERROR).is_some_and(|e| e.contains("rejected")), "{:?}", header(dlq_header::ERROR));
    assert!(
        header(dlq_header::ERROR).is_some_and(|e| !e.contains(WEBHOOK_TOKEN)),
        "the webhook's credentials in the dead letter: {:?}",
        header(dlq_header::ERROR)
    );
    assert_eq!(header(dlq_header::ATTEMPTS), Some("1"), "a refusal is not retried");
    assert_eq!(svc.sent.about(refused)?, Vec::<Envelope>::new(), "nothing was sent");
    assert_eq!(svc.deliveries(refused).await?, Vec::<Delivery>::new(), "nothing was recorded");
    assert_eq!(svc.webhook_requests(refused).len(), 1, "a 400 is final");
    assert_eq!(kinds(&svc.deliveries(accepted).await?), [NotificationKind::Confirmation]);
    svc.stop().await
}

both_backends!(a_refusal_in_a_backlog_delivers_no_other_notification_twice);
async fn a_refusal_in_a_backlog_delivers_no_other_notification_twice(backend: Backend) -> anyhow::Result<()> {
    let (before, refused, after) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let backlog = [(before, "cust-rich"), (refused, REFUSED), (after, "cust-rich")];
    let svc = Notification::start_with(backend, true, &backlog).await?;

    svc.sent.wait_for(before, 1).await?;
    svc.sent.wait_for(after, 1).await?;
    eventually(WAIT, "the refused notification dead-lettered", || async {
        (!svc.dead_letters.records().ok()?.is_empty()).then_some(())
    })
    .await?;
    svc.settled().await?;

    for order_id in [before, after] {
        assert_eq!(svc.webhook_requests(order_id).len(), 1, "the customer of {order_id} was told once");
        assert_eq!(kinds(&svc.deliveries(order_id).await?), [NotificationKind::Confirmation]);
    }
    assert_eq!(svc.webhook_requests(refused).len(), 1, "a 400 is final");
    assert_eq!(svc.dead_letters.records()?.len(), 1);
    svc.stop().await
}
