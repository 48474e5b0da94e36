//! The operational HTTP surface every service serves: `/healthz` (the process is alive),
//! `/readyz` (its database and broker are reachable) and `/metrics` (Prometheus text), plus the
//! request-metrics middleware for any router.

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

mod checks;
pub use checks::{ReadinessCheck, ReadinessChecks};

/// What `/readyz` checks.
#[derive(Clone)]
pub struct Readiness {
    pub db: Db,
    pub producer: FutureProducer,
    /// The service's own checks, beside the database and the broker.
    pub extra: ReadinessChecks,
}

impl Readiness {
    /// `(database ok, broker ok)`.
    pub async fn check(&self) -> (bool, bool) {
        let db = tokio::time::timeout(Duration::from_secs(2), self.db.ping()).await.unwrap_or(false);
        let producer = self.producer.clone();
        let broker =
            tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, Duration::from_secs(2)).is_ok())
                .await
                .unwrap_or(false);
        (db, broker)
    }
}

#[derive(Clone)]
struct OpsState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn router(readiness: Readiness, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(OpsState { readiness, metrics })
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
const UNTRACED_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Middleware recording request count and latency by route template (never the raw path), and
/// serving each request in an HTTP server span (see [`crate::telemetry::http_server_span`]).
/// Applied twice (a service router merged into another one), it acts once.
pub async fn track_http(service: &'static str, mut request: Request, next: Next) -> Response {
    if request.extensions().get::<ServedBy>().is_some() {
        return next.run(request).await;
    }
    request.extensions_mut().insert(ServedBy(service));
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let response = if UNTRACED_ROUTES.contains(&route.as_str()) {
        next.run(request).await
    } else {
        let span = crate::telemetry::http_server_span(service, &method, &route, request.headers());
        let response = next.run(request).instrument(span.clone()).await;
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "error");
        }
        span.in_scope(|| tracing::debug!(status, elapsed_ms = started.elapsed().as_millis() as u64, "request handled"));
        response
    };
    crate::metrics::http_request(service, &route, &method, response.status().as_u16(), started.elapsed());
    response
}

/// Serve `router` on `listener` until `shutdown`, draining in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    // Tests and supervisors that start a service on port 0 read the address from this line.
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(addr = %addr, "listening");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(Into::into)
}
