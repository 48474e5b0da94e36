//! The operational HTTP surface every service serves on its ops listener: `/livez` and
//! `/healthz` (the process is alive and answering; no dependency is checked), `/readyz` (its
//! database and broker are reachable; cached for [`READINESS_TTL`]) and `/metrics` (Prometheus
//! text), plus the request-metrics middleware for any router.
//!
//! order-svc serves these on their own listener (`OPS_ADDR`), away from the public API, which
//! keeps only [`healthz`] for load balancers; the other services have no API, so their one
//! listener is the ops listener.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::producer::{FutureProducer, Producer as _};
use serde_json::json;
use tracing::Instrument as _;

use crate::db::Db;
use crate::request_id::RequestId;

mod checks;
pub use checks::{ReadinessCheck, ReadinessChecks};

/// How long a `/readyz` answer is reused: each check pings the database and fetches broker
/// metadata, and a prober (or anyone who can reach the ops port) may ask often.
pub const READINESS_TTL: Duration = Duration::from_secs(1);

/// What `/readyz` checks: the database answers a ping, the broker returns metadata, and the
/// service's own checks (in memory, never cached).
#[derive(Clone)]
pub struct Readiness {
    db: Db,
    producer: FutureProducer,
    cache: Arc<CachedCheck>,
    /// The service's own checks, beside the database and the broker.
    extra: ReadinessChecks,
}

impl Readiness {
    pub fn new(db: Db, producer: FutureProducer, extra: ReadinessChecks) -> Self {
        Self { db, producer, cache: Arc::new(CachedCheck::new(READINESS_TTL)), extra }
    }

    /// `(database ok, broker ok)`, checked at most once per [`READINESS_TTL`]; callers that
    /// arrive during a check wait for it and share its answer.
    pub async fn check(&self) -> (bool, bool) {
        self.cache.get_or_run(|| self.probe()).await
    }

    async fn probe(&self) -> (bool, bool) {
        let db = tokio::time::timeout(Duration::from_secs(2), self.db.ping()).await.unwrap_or(false);
        let producer = self.producer.clone();
        let broker =
            tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, Duration::from_secs(2)).is_ok())
                .await
                .unwrap_or(false);
        (db, broker)
    }
}

/// The last answer of a check, reused while younger than its time to live; one check at a time.
struct CachedCheck {
    ttl: Duration,
    last: tokio::sync::Mutex<Option<(Instant, (bool, bool))>>,
}

impl CachedCheck {
    fn new(ttl: Duration) -> Self {
        Self { ttl, last: tokio::sync::Mutex::new(None) }
    }

    async fn get_or_run<F, Fut>(&self, run: F) -> (bool, bool)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = (bool, bool)>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = *last
            && at.elapsed() < self.ttl
        {
            return answer;
        }
        let answer = run().await;
        *last = Some((Instant::now(), answer));
        answer
    }
}

#[derive(Clone)]
struct OpsState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

/// `/livez`, `/healthz`, `/readyz`, `/metrics`.
pub fn router(readiness: Readiness, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/livez", get(healthz))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(OpsState { readiness, metrics })
}

/// Liveness: answering at all shows the process is up and its runtime is not wedged. No
/// dependency is checked (a database outage must not get a healthy process restarted), and
/// nothing is read or written.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<OpsState>) -> Response {
    let (db, broker) = state.readiness.check().await;
    let mut body = json!({ "checks": { "database": db, "broker": broker } });
    let extra = state.readiness.extra.add_to(&mut body);
    let status = if db && broker && extra { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    body["status"] = json!(if status == StatusCode::OK { "ready" } else { "not_ready" });
    (status, Json(body)).into_response()
}

async fn render_metrics(State(state): State<OpsState>, served_by: Option<axum::Extension<ServedBy>>) -> Response {
    let body = crate::metrics::render(&state.metrics, served_by.map(|axum::Extension(ServedBy(service))| service));
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// Which service's router a request came in through (set by [`track_http`]).
#[derive(Debug, Clone, Copy)]
struct ServedBy(&'static str);

/// Routes that are polled by machines: no span for them (a scrape every few seconds would
/// bury the order traces), only metrics.
const UNTRACED_ROUTES: [&str; 4] = ["/livez", "/healthz", "/readyz", "/metrics"];

/// Middleware recording request count and latency by route template (never the raw path),
/// serving each request in an HTTP server span (see [`crate::telemetry::http_server_span`]),
/// and giving each its request id ([`RequestId`]: in the request's headers and extensions, on
/// its span and on the response). Applied twice (a service router merged into another one), it
/// acts once.
pub async fn track_http(service: &'static str, mut request: Request, next: Next) -> Response {
    if request.extensions().get::<ServedBy>().is_some() {
        return next.run(request).await;
    }
    request.extensions_mut().insert(ServedBy(service));
    let request_id = RequestId::from_headers(request.headers());
    request.headers_mut().insert(crate::request_id::HEADER, request_id.header_value().clone());
    request.extensions_mut().insert(request_id.clone());
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let mut response = if UNTRACED_ROUTES.contains(&route.as_str()) {
        next.run(request).await
    } else {
        let span = crate::telemetry::http_server_span(service, &method, &route, request.headers(), request_id.as_str());
        let response = next.run(request).instrument(span.clone()).await;
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "error");
        }
        span.in_scope(|| tracing::debug!(status, elapsed_ms = started.elapsed().as_millis() as u64, "request handled"));
        response
    };
    response.headers_mut().insert(crate::request_id::HEADER, request_id.header_value().clone());
    crate::metrics::http_request(service, &route, &method, response.status().as_u16(), started.elapsed());
    response
}
