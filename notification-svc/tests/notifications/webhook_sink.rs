//! The webhook and log sinks against a real HTTP server on loopback that answers from a script.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use futures::StreamExt as _;
use hmac::{Hmac, Mac};
use notification_svc::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use notification_svc::domain::{Notification, notification_id};
use notification_svc::sinks::{
    AnySink, LogSink, NotifyConfig, RetryPolicy, Sink, SinkError, Sinks, WebhookSecret, WebhookSink,
};
use sha2::Sha256;
use shared::contracts::NotificationKind;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    signature: Option<String>,
    /// The body as it came over the wire (what a signature covers).
    raw_body: String,
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
            signature: headers.get("saga-signature").and_then(|v| v.to_str().ok()).map(str::to_owned),
            raw_body: body.clone(),
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

/// The scripted webhook's routes.
fn scripted(replies: Vec<Reply>) -> (Router, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Script { replies: Arc::new(replies), seen: Arc::clone(&seen) };
    (Router::new().route("/hook", post(handle)).with_state(script), seen)
}

/// Starts a webhook on 127.0.0.1:0 that answers `replies` in order; returns its url and the
/// requests it sees.
async fn webhook(replies: Vec<Reply>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let (app, seen) = scripted(replies);
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
    let sinks =
        Sinks::from_config(&NotifyConfig { webhook_url: Some(url), retry: fast_retries(2), ..NotifyConfig::default() })
            .expect("sinks");

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

const SECRET: &str = "whsec-test-0123456789abcdef";

#[tokio::test]
async fn a_signed_request_verifies_with_the_secret_over_the_timestamp_and_the_raw_body() {
    let (url, requests) = webhook(vec![Reply::Status(200)]).await;
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let sink = WebhookSink::new(&url, fast_retries(2)).expect("sink").signed_with(secret);

    sink.deliver(&notification()).await.expect("delivered");

    // Verify as a receiver would: HMAC-SHA256 of "<t>.<raw body>" with the shared secret.
    let request = seen(&requests).pop().expect("one request");
    let header = request.signature.expect("a Saga-Signature header");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1.strip_prefix("v1=")?)))
        .expect("t=<unix>,v1=<hex>");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(format!("{t}.{}", request.raw_body).as_bytes());
    mac.verify_slice(&hex::decode(v1).expect("hex")).expect("the signature verifies with the secret");
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().expect("unix seconds");
    assert!((0..60).contains(&age), "signed {age}s ago");
    let mut wrong = <Hmac<Sha256> as Mac>::new_from_slice(b"another-secret-0123456789").expect("hmac key");
    wrong.update(format!("{t}.{}", request.raw_body).as_bytes());
    assert!(wrong.verify_slice(&hex::decode(v1).expect("hex")).is_err(), "another secret does not verify");
}

#[tokio::test]
async fn without_a_secret_requests_carry_no_signature() {
    let (url, requests) = webhook(vec![Reply::Status(200)]).await;
    let sink = WebhookSink::new(&url, fast_retries(2)).expect("sink");

    sink.deliver(&notification()).await.expect("delivered");

    assert_eq!(seen(&requests).pop().expect("one request").signature, None);
}

#[tokio::test]
async fn credentials_in_the_url_reach_neither_the_error_nor_the_logs() {
    // Nothing listens on the port, so every attempt fails with a connection error, whose text
    // (from reqwest) would name the URL.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    let url = format!("http://hook-user:pw-in-userinfo@{addr}/hook?token=tok-in-query#frag-secret");
    let sink = WebhookSink::new(&url, fast_retries(2)).expect("sink");
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).finish();

    let result = sink.deliver(&notification()).with_subscriber(subscriber).await;

    let error = match result {
        Err(error @ SinkError::Exhausted { .. }) => error.to_string(),
        other => panic!("expected exhaustion, got {other:?}"),
    };
    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(logs.contains("webhook delivery failed"), "the failures were logged: {logs}");
    for secret in ["hook-user", "pw-in-userinfo", "tok-in-query", "frag-secret", "/hook"] {
        assert!(!error.contains(secret), "{secret} in the error: {error}");
        assert!(!logs.contains(secret), "{secret} in the logs: {logs}");
    }
    assert!(logs.contains(&format!("http://{addr}")), "the logs name the webhook's origin: {logs}");
}

#[tokio::test]
async fn a_huge_error_body_is_read_only_up_to_the_cap() {
    // A 400 whose body would go on for 1 GiB; the server counts what it managed to send.
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    let chunk = bytes_of(64 * 1024);
    let app = Router::new().route(
        "/hook",
        post(move || {
            let counter = Arc::clone(&counter);
            let chunk = chunk.clone();
            async move {
                let stream = futures::stream::iter(0..16 * 1024).map(move |_| {
                    counter.fetch_add(chunk.len(), Ordering::SeqCst);
                    Ok::<_, std::io::Error>(chunk.clone())
                });
                (StatusCode::BAD_REQUEST, axum::body::Body::from_stream(stream))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let retry = RetryPolicy { request_timeout: Duration::from_secs(60), ..fast_retries(1) };
    let sink = WebhookSink::new(&format!("http://{addr}/hook"), retry).expect("sink");

    let result = tokio::time::timeout(Duration::from_secs(30), sink.deliver(&notification())).await;

    match result {
        Ok(Err(SinkError::Rejected { status: 400, body })) => {
            assert_eq!(body, "x".repeat(512), "the dead letter keeps 512 characters")
        }
        other => panic!("expected a rejection read up to the cap, got {other:?}"),
    }
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent < 64 * 1024 * 1024, "the client read on: the server sent {sent} bytes");
}

fn bytes_of(len: usize) -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b'x'; len])
}

/// A TLS listener for `axum::serve`: TCP on 127.0.0.1:0, then a rustls handshake with a
/// certificate for 127.0.0.1 (a failed handshake is dropped, the next connection accepted).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Starts an https webhook with a fresh self-signed certificate; returns its url, the
/// certificate (to trust) and the requests it sees.
async fn tls_webhook(replies: Vec<Reply>) -> (String, reqwest::Certificate, Arc<Mutex<Vec<Seen>>>) {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    // The build's only rustls provider is ring (no aws-lc-rs), so it is the default.
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("local addr");
    let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) };
    let (app, seen) = scripted(replies);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let root = reqwest::Certificate::from_der(&cert).expect("root certificate");
    (format!("https://{addr}/hook"), root, seen)
}

#[tokio::test]
async fn an_https_webhook_receives_the_notification_over_tls() {
    let (url, root, requests) = tls_webhook(vec![Reply::Status(200)]).await;
    let sink = WebhookSink::with_root_certificates(&url, fast_retries(2), vec![root]).expect("sink");
    let notification = notification();

    sink.deliver(&notification).await.expect("delivered over tls");

    let requests = seen(&requests);
    assert_eq!(requests.len(), 1);
    let body: Notification = serde_json::from_value(requests[0].body.clone()).expect("decode");
    assert_eq!(body, notification);
}

#[tokio::test]
async fn an_https_webhook_whose_certificate_is_not_trusted_is_never_sent_the_notification() {
    let (url, _root, requests) = tls_webhook(vec![Reply::Status(200)]).await;
    let sink = WebhookSink::new(&url, fast_retries(2)).expect("sink");

    let result = sink.deliver(&notification()).await;

    assert!(matches!(result, Err(SinkError::Exhausted { .. })), "{result:?}");
    assert!(seen(&requests).is_empty(), "no request got through");
}

#[tokio::test]
async fn failures_that_open_the_breaker_report_the_webhook_unavailable_and_send_nothing_more() {
    let (url, requests) = webhook(vec![Reply::Status(503)]).await;
    let breaker =
        Arc::new(CircuitBreaker::new(BreakerConfig { failures_to_open: 3, open_for: Duration::from_secs(600) }));
    let sink = WebhookSink::new(&url, fast_retries(5)).expect("sink").guarded_by(Arc::clone(&breaker));

    let first = sink.deliver(&notification()).await;
    let second = sink.deliver(&notification()).await;

    assert!(matches!(first, Err(SinkError::CircuitOpen)), "not exhausted, not dead-lettered: {first:?}");
    assert!(matches!(second, Err(SinkError::CircuitOpen)), "{second:?}");
    assert_eq!(seen(&requests).len(), 3, "the attempts up to the opening, none while open");
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test]
async fn a_refusal_shows_the_webhook_is_up_and_does_not_count_toward_opening() {
    let (url, _requests) =
        webhook(vec![Reply::Status(503), Reply::Status(503), Reply::Status(400), Reply::Status(503)]).await;
    let breaker =
        Arc::new(CircuitBreaker::new(BreakerConfig { failures_to_open: 3, open_for: Duration::from_secs(600) }));
    let sink = WebhookSink::new(&url, fast_retries(5)).expect("sink").guarded_by(Arc::clone(&breaker));

    let refused = sink.deliver(&notification()).await;
    let next = sink.deliver(&notification()).await;

    assert!(matches!(refused, Err(SinkError::Rejected { status: 400, .. })), "{refused:?}");
    assert!(matches!(next, Err(SinkError::CircuitOpen)), "three failures after the refusal: {next:?}");
}
