//! The webhook and log sinks against a real HTTP server on loopback that answers from a script.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use notification_svc::domain::{Notification, notification_id};
use notification_svc::sinks::{AnySink, LogSink, NotifyConfig, RetryPolicy, Sink, SinkError, Sinks, WebhookSink};
use shared::contracts::NotificationKind;
use tracing::instrument::WithSubscriber;
use uuid::Uuid;

/// How the test server answers one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// Never answer, so the client's per-request timeout fires.
    Hang,
}

/// A request the server saw.
#[derive(Debug, Clone)]
struct Seen {
    idempotency_key: Option<String>,
    body: serde_json::Value,
}

#[derive(Clone)]
struct Script {
    /// Replies in order; the last one repeats.
    replies: Arc<Vec<Reply>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn handle(State(script): State<Script>, headers: HeaderMap, body: String) -> (StatusCode, &'static str) {
    let index = {
        let mut seen = script.seen.lock().expect("lock");
        seen.push(Seen {
            idempotency_key: headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned),
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        });
        seen.len() - 1
    };
    let reply = script.replies.get(index).or(script.replies.last()).copied().unwrap_or(Reply::Status(200));
    match reply {
        Reply::Status(code) => (StatusCode::from_u16(code).expect("valid status"), "scripted reply"),
        Reply::Hang => std::future::pending().await,
    }
}

/// Starts a webhook on 127.0.0.1:0 that answers `replies` in order; returns its url and the
/// requests it sees.
async fn webhook(replies: Vec<Reply>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Script { replies: Arc::new(replies), seen: Arc::clone(&seen) };
    let app = Router::new().route("/hook", post(handle)).with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        request_timeout: Duration::from_secs(5),
    }
}

fn notification() -> Notification {
    let order_id = Uuid::from_u128(7);
    let kind = NotificationKind::Confirmation;
    Notification {
        order_id,
        customer_id: "alice".to_owned(),
        kind,
        notification_id: notification_id(order_id, kind),
        subject: "Your order is confirmed".to_owned(),
        body: "It ships tomorrow.".to_owned(),
        reason: None,
        total_minor: Some(1999),
        carrier: Some("postnl".to_owned()),
        ship_date: None,
    }
}

fn seen(requests: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    requests.lock().expect("lock").clone()
}

#[tokio::test]
async fn a_webhook_failing_with_503_is_retried_with_the_same_idempotency_key_until_it_succeeds() {
    let (url, requests) =
        webhook(vec![Reply::Status(503), Reply::Status(503), Reply::Status(503), Reply::Status(200)]).await;
    let sink = WebhookSink::new(&url, fast_retries(5)).expect("sink");
    let notification = notification();

    let result = sink.deliver(&notification).await;

    assert!(result.is_ok(), "{result:?}");
    let requests = seen(&requests);
    assert_eq!(requests.len(), 4);
    let key = notification.notification_id.to_string();
    for request in &requests {
        assert_eq!(request.idempotency_key.as_deref(), Some(key.as_str()));
    }
}

#[tokio::test]
async fn the_webhook_body_is_the_notification_as_json() {
    let (url, requests) = webhook(vec![Reply::Status(204)]).await;
    let sink = WebhookSink::new(&url, fast_retries(5)).expect("sink");
    let notification = notification();

    sink.deliver(&notification).await.expect("delivered");

    let requests = seen(&requests);
    assert_eq!(requests.len(), 1);
    let body: Notification = serde_json::from_value(requests[0].body.clone()).expect("decode");
    assert_eq!(body, notification);
}

#[tokio::test]
async fn a_400_is_a_permanent_failure_and_not_retried() {
    let (url, requests) = webhook(vec![Reply::Status(400)]).await;
    let sink = WebhookSink::new(&url, fast_retries(5)).expect("sink");

    let result = sink.deliver(&notification()).await;

    assert!(
        matches!(result, Err(SinkError::Rejected { status: 400, ref body }) if body == "scripted reply"),
        "{result:?}"
    );
    assert_eq!(seen(&requests).len(), 1);
}

#[tokio::test]
async fn a_408_and_a_429_are_retried() {
    let (url, requests) = webhook(vec![Reply::Status(408), Reply::Status(429), Reply::Status(200)]).await;
    let sink = WebhookSink::new(&url, fast_retries(5)).expect("sink");

    let result = sink.deliver(&notification()).await;

    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen(&requests).len(), 3);
}

#[tokio::test]
async fn a_webhook_that_keeps_failing_exhausts_the_budget_and_reports_the_attempts() {
    let (url, requests) = webhook(vec![Reply::Status(500)]).await;
    let sink = WebhookSink::new(&url, fast_retries(3)).expect("sink");

    let result = sink.deliver(&notification()).await;

    match result {
        Err(SinkError::Exhausted { attempts, last_error }) => {
            assert_eq!(attempts, 3);
            assert!(last_error.contains("500"), "{last_error}");
        }
        other => panic!("expected exhaustion, got {other:?}"),
    }
    assert_eq!(seen(&requests).len(), 3);
}

#[tokio::test]
async fn an_unreachable_webhook_is_retried_until_the_budget_is_exhausted() {
    // A port that was just free and now has no listener: connections are refused.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    let sink = WebhookSink::new(&format!("http://{addr}/hook"), fast_retries(2)).expect("sink");

    let result = sink.deliver(&notification()).await;

    assert!(matches!(result, Err(SinkError::Exhausted { attempts: 2, .. })), "{result:?}");
}

#[tokio::test]
async fn an_attempt_that_times_out_is_retried_with_the_same_key() {
    let (url, requests) = webhook(vec![Reply::Hang, Reply::Status(200)]).await;
    let retry = RetryPolicy { request_timeout: Duration::from_secs(1), ..fast_retries(3) };
    let sink = WebhookSink::new(&url, retry).expect("sink");
    let notification = notification();

    let result = sink.deliver(&notification).await;

    assert!(result.is_ok(), "{result:?}");
    let requests = seen(&requests);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].idempotency_key, requests[1].idempotency_key);
}

#[tokio::test]
async fn deliver_all_goes_to_every_sink_and_names_them() {
    let (url, requests) = webhook(vec![Reply::Status(200)]).await;
    let sinks = Sinks::from_config(&NotifyConfig { webhook_url: Some(url), retry: fast_retries(2) }).expect("sinks");

    let delivered = sinks.deliver_all(&notification()).await.expect("delivered");

    assert_eq!(delivered, vec!["log", "webhook"]);
    assert_eq!(seen(&requests).len(), 1);
}

#[tokio::test]
async fn deliver_all_fails_when_the_webhook_rejects() {
    let (url, _requests) = webhook(vec![Reply::Status(404)]).await;
    let sinks = Sinks::new(vec![
        AnySink::Log(LogSink),
        AnySink::Webhook(WebhookSink::new(&url, fast_retries(2)).expect("sink")),
    ]);

    let result = sinks.deliver_all(&notification()).await;

    assert!(matches!(result, Err(SinkError::Rejected { status: 404, .. })), "{result:?}");
}

/// Collects what a subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_log_sink_logs_order_kind_and_notification_id_as_fields() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).finish();
    let notification = notification();

    LogSink.deliver(&notification).with_subscriber(subscriber).await.expect("delivered");

    let output = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    let line: serde_json::Value = serde_json::from_str(output.lines().next().expect("one log line")).expect("json");
    let fields = &line["fields"];
    assert_eq!(fields["order.id"], notification.order_id.to_string());
    assert_eq!(fields["kind"], "confirmation");
    assert_eq!(fields["notification_id"], notification.notification_id.to_string());
}
