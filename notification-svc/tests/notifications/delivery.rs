//! notification-svc as a black box: saga messages in through the mock broker, notifications
//! out to the sinks and `NotificationSent` on the broker, on both database backends. Where a
//! test needs the webhook, it runs one on loopback that refuses customer `cust-refused`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::NaiveDate;
use notification_svc::breaker::{BreakerConfig, BreakerState};
use notification_svc::domain::notification_id;
use notification_svc::handlers::Delivery;
use notification_svc::sinks::RetryPolicy;
use notification_svc::{App, Config, NotificationHandler};
use shared::CancellationToken;
use shared::both_backends;
use shared::consumer::dlq_header;
use shared::contracts::{
    CancelReason, CompletedShipment, NotificationKind, NotificationSent, OrderCancelled, OrderCompleted, event_type,
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

/// The test webhook: what it saw, what it accepted, and a switch that takes it down.
#[derive(Clone, Default)]
struct Hook {
    /// Every request, whatever the answer.
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The requests answered with a 2xx: the notifications that reached the customer.
    accepted: Arc<Mutex<Vec<Seen>>>,
    /// While set, every request gets a 503 (the webhook is down).
    down: Arc<AtomicBool>,
}

async fn hook(State(hook): State<Hook>, headers: HeaderMap, body: String) -> StatusCode {
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let refuse = body["customer_id"] == REFUSED;
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Ok(mut seen) = hook.seen.lock() {
        seen.push((key.clone(), body.clone()));
    }
    if hook.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if refuse {
        return StatusCode::BAD_REQUEST;
    }
    if let Ok(mut accepted) = hook.accepted.lock() {
        accepted.push((key, body));
    }
    StatusCode::OK
}

/// A webhook on 127.0.0.1:0; returns its url and its state.
async fn webhook() -> anyhow::Result<(String, Hook)> {
    let state = Hook::default();
    let app = Router::new().route("/hook", post(hook)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/hook?token={WEBHOOK_TOKEN}"), state))
}

/// A running notification-svc with its own database and broker.
struct Notification {
    db: TestDb,
    bus: Bus,
    handler: Arc<NotificationHandler>,
    sent: Reader,
    dead_letters: Reader,
    webhook: Option<Hook>,
    /// `/healthz`, `/readyz`, `/metrics`.
    ops: std::net::SocketAddr,
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

    /// `backlog`: orders completed (order, customer) before the service starts, so that its
    /// first fetch holds them all.
    async fn start_with(backend: Backend, with_webhook: bool, backlog: &[(Uuid, &str)]) -> anyhow::Result<Self> {
        Self::launch(backend, with_webhook, backlog, |_| {}).await
    }

    /// Like [`Self::start_with`], with `tune` applied to the configuration last.
    async fn launch(
        backend: Backend,
        with_webhook: bool,
        backlog: &[(Uuid, &str)],
        tune: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let db = TestDb::new(backend, &[]).await?;
        let bus = Bus::new(service::NOTIFICATION)?;
        for (order_id, customer_id) in backlog {
            bus.publish(&bus.broker.topics.orders, &completed(*order_id, customer_id)?).await?;
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
        tune(&mut config);
        let app = App::build(config, &stop).await?;
        let ops = app.local_addr()?;
        let handler = app.handler.clone();
        let run = tokio::spawn(app.run_until_stopped(stop.clone()));
        let sent = bus.reader(&bus.broker.topics.notifications)?;
        let dead_letters = bus.reader(&bus.broker.topics.dead_letter(service::NOTIFICATION))?;
        Ok(Self { db, bus, handler, sent, dead_letters, webhook: webhook_seen, ops, stop, run })
    }

    async fn completed(&self, order_id: Uuid, customer_id: &str) -> anyhow::Result<Envelope> {
        let e = completed(order_id, customer_id)?;
        self.bus.publish(&self.bus.broker.topics.orders, &e).await?;
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
        let Some(hook) = &self.webhook else { return Vec::new() };
        about(&hook.seen, order_id)
    }

    /// The webhook requests about one order that it accepted (2xx).
    fn accepted_requests(&self, order_id: Uuid) -> Vec<Seen> {
        let Some(hook) = &self.webhook else { return Vec::new() };
        about(&hook.accepted, order_id)
    }

    /// `/readyz`'s status code and body.
    async fn readyz(&self) -> anyhow::Result<(u16, serde_json::Value)> {
        let response = reqwest::get(format!("http://{}/readyz", self.ops)).await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    /// Wait until every input message was consumed and every resulting event published.
    async fn settled(&self) -> anyhow::Result<()> {
        let topics = &self.bus.broker.topics;
        self.bus.settled(&self.db.db, &[&topics.orders]).await?;
        self.sent.caught_up().await?;
        self.dead_letters.caught_up().await
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.run.await?
    }
}

fn completed(order_id: Uuid, customer_id: &str) -> anyhow::Result<Envelope> {
    let payload = OrderCompleted {
        order_id,
        customer_id: customer_id.to_owned(),
        total_minor: 3000,
        currency: "EUR".to_owned(),
        shipment: Some(CompletedShipment {
            shipment_id: Uuid::new_v4(),
            carrier: "postnl".to_owned(),
            ship_date: NaiveDate::from_ymd_opt(2030, 1, 2).ok_or_else(|| anyhow::anyhow!("bad date"))?,
        }),
    };
    envelope(event_type::ORDER_COMPLETED, service::ORDER, order_id, &payload)
}

fn about(requests: &Mutex<Vec<Seen>>, order_id: Uuid) -> Vec<Seen> {
    let requests = requests.lock().map(|r| r.clone()).unwrap_or_default();
    requests.into_iter().filter(|(_, body)| body["order_id"] == order_id.to_string()).collect()
}

fn kinds(deliveries: &[Delivery]) -> Vec<NotificationKind> {
    deliveries.iter().map(|d| d.kind).collect()
}

both_backends!(a_completed_order_is_confirmed_to_the_customer_through_every_sink);
async fn a_completed_order_is_confirmed_to_the_customer_through_every_sink(backend: Backend) -> anyhow::Result<()> {
    let svc = Notification::start_with_webhook(backend).await?;
    let order_id = Uuid::now_v7();

    let cause = svc.completed(order_id, "cust-rich").await?;

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
    assert_eq!(requests[0].1["total_minor"], 3000);
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

both_backends!(a_completion_contradicting_a_cancellation_is_dead_lettered_not_told);
async fn a_completion_contradicting_a_cancellation_is_dead_lettered_not_told(backend: Backend) -> anyhow::Result<()> {
    let svc = Notification::start_with_webhook(backend).await?;
    let order_id = Uuid::now_v7();
    svc.cancelled(order_id, "cust-poor").await?;
    svc.sent.wait_for(order_id, 1).await?;

    let contradiction = svc.completed(order_id, "cust-poor").await?;
    eventually(WAIT, "the contradicting decision dead-lettered", || async {
        (!svc.dead_letters.records().ok()?.is_empty()).then_some(())
    })
    .await?;
    svc.settled().await?;

    let sent: Vec<NotificationSent> = svc.sent.about(order_id)?.iter().map(|e| e.decode()).collect::<Result<_, _>>()?;
    assert_eq!(sent.iter().map(|s| s.kind).collect::<Vec<_>>(), [NotificationKind::Cancellation]);
    assert_eq!(kinds(&svc.deliveries(order_id).await?), [NotificationKind::Cancellation]);
    let told: Vec<_> = svc.webhook_requests(order_id).iter().map(|(_, body)| body["kind"].clone()).collect();
    assert_eq!(told, ["cancellation"], "the customer heard one thing");
    let letters = svc.dead_letters.records()?;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].0.id, contradiction.id);
    svc.stop().await
}

both_backends!(with_the_log_sink_alone_a_contradiction_among_others_is_dead_lettered_and_the_others_told_once);
async fn with_the_log_sink_alone_a_contradiction_among_others_is_dead_lettered_and_the_others_told_once(
    backend: Backend,
) -> anyhow::Result<()> {
    // The log sink alone: messages fetched together share one transaction, and one that is
    // refused rolls the others back, to be handled again one at a time.
    let svc = Notification::start(backend).await?;
    let (first, cancelled, last) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    svc.cancelled(cancelled, "cust-poor").await?;
    svc.sent.wait_for(cancelled, 1).await?;

    // Act: three decisions back to back, the middle one contradicting what was told.
    svc.completed(first, "cust-rich").await?;
    let contradiction = svc.completed(cancelled, "cust-poor").await?;
    svc.completed(last, "cust-rich").await?;

    // Assert
    svc.sent.wait_for(first, 1).await?;
    svc.sent.wait_for(last, 1).await?;
    eventually(WAIT, "the contradicting decision dead-lettered", || async {
        (!svc.dead_letters.records().ok()?.is_empty()).then_some(())
    })
    .await?;
    svc.settled().await?;
    for order_id in [first, last] {
        assert_eq!(svc.sent.about(order_id)?.len(), 1, "one NotificationSent for {order_id}");
        assert_eq!(kinds(&svc.deliveries(order_id).await?), [NotificationKind::Confirmation]);
    }
    assert_eq!(svc.sent.about(cancelled)?.len(), 1, "the cancellation notice only");
    assert_eq!(kinds(&svc.deliveries(cancelled).await?), [NotificationKind::Cancellation]);
    let letters = svc.dead_letters.records()?;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].0.id, contradiction.id);
    svc.stop().await
}

both_backends!(a_redelivered_message_changes_nothing);
async fn a_redelivered_message_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let svc = Notification::start_with_webhook(backend).await?;
    let order_id = Uuid::now_v7();
    let completed = svc.completed(order_id, "cust-rich").await?;
    svc.sent.wait_for(order_id, 1).await?;

    // The same message again (a redelivery), and a copy with a new id (a replay upstream).
    svc.bus.publish(&svc.bus.broker.topics.orders, &completed).await?;
    svc.completed(order_id, "cust-rich").await?;
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

    let poison = svc.completed(refused, REFUSED).await?;
    svc.completed(accepted, "cust-rich").await?;

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
    assert_eq!(header(dlq_header::ORIGINAL_TOPIC), Some(svc.bus.broker.topics.orders.as_str()));
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

both_backends!(a_webhook_outage_opens_the_breaker_pauses_and_every_notice_is_delivered_once_after_it);
async fn a_webhook_outage_opens_the_breaker_pauses_and_every_notice_is_delivered_once_after_it(
    backend: Backend,
) -> anyhow::Result<()> {
    // Arrange: the webhook is down; three failed attempts open the breaker for 200 ms; the
    // consumer retries a paused message at least every 100 ms.
    let svc = Notification::launch(backend, true, &[], |config| {
        config.notify.breaker = BreakerConfig { failures_to_open: 3, open_for: Duration::from_millis(200) };
        config.service.consumer.backoff_cap = Duration::from_millis(100);
    })
    .await?;
    let hook = svc.webhook.clone().ok_or_else(|| anyhow::anyhow!("no webhook"))?;
    let breaker = svc.handler.sinks.webhook_breaker().ok_or_else(|| anyhow::anyhow!("no breaker"))?;
    hook.down.store(true, Ordering::SeqCst);
    let confirmed: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let cancelled: Vec<Uuid> = (0..2).map(|_| Uuid::now_v7()).collect();

    // Act: orders while the webhook is down...
    for order_id in &confirmed {
        svc.completed(*order_id, "cust-rich").await?;
    }
    for order_id in &cancelled {
        svc.cancelled(*order_id, "cust-poor").await?;
    }
    eventually(WAIT, "the breaker opened", || async { (breaker.state() == BreakerState::Open).then_some(()) }).await?;
    let (status, body) = svc.readyz().await?;
    assert_eq!(status, 200, "an open breaker keeps the service ready: {body}");
    assert_eq!(body["checks"]["webhook_circuit"], "open", "{body}");
    // ... and half-open probes failing for a while: at least two more requests after opening.
    let at_open = hook.seen.lock().map(|s| s.len()).unwrap_or(0);
    eventually(WAIT, "half-open probes", || async { (hook.seen.lock().ok()?.len() >= at_open + 2).then_some(()) })
        .await?;
    assert!(svc.sent.records()?.is_empty(), "nothing was sent while the webhook was down");
    assert!(svc.dead_letters.records()?.is_empty(), "nothing was dead-lettered while the webhook was down");
    // ... then the webhook recovers.
    hook.down.store(false, Ordering::SeqCst);
    for order_id in confirmed.iter().chain(&cancelled) {
        svc.sent.wait_for(*order_id, 1).await?;
    }
    svc.settled().await?;

    // Assert: every order's notice reached the customer once; each order's requests (retries
    // included) carried one idempotency key, so a receiver would count it once too.
    for order_id in confirmed.iter().chain(&cancelled) {
        let accepted = svc.accepted_requests(*order_id);
        assert_eq!(accepted.len(), 1, "order {order_id}: {} accepted deliveries", accepted.len());
        let keys: HashSet<Option<String>> = svc.webhook_requests(*order_id).into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys.len(), 1, "order {order_id}: one notice, its retries under the same key: {keys:?}");
        assert_eq!(svc.sent.about(*order_id)?.len(), 1, "order {order_id}: one NotificationSent");
        assert_eq!(svc.deliveries(*order_id).await?.len(), 1, "order {order_id}: one delivery recorded");
    }
    assert!(svc.dead_letters.records()?.is_empty(), "nothing was dead-lettered");
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(svc.readyz().await?.1["checks"]["webhook_circuit"], "closed");
    svc.stop().await
}
