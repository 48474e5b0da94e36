//! `/metrics` stays small whatever clients send: 10,000 requests with random methods, paths and
//! headers, over real connections, leave a bounded number of series behind (every label value
//! comes from a fixed set).
//!
//! The metrics recorder is process-wide: this file holds one test and runs as its own process.

use crate::common;

use std::collections::BTreeMap;

use common::*;
use futures::StreamExt as _;
use order_svc::http;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use shared::CancellationToken;

/// What `/metrics` may weigh after the storm. The fixed label sets (services, route templates,
/// ten method values, status codes) leave far less.
const METRICS_LIMIT_BYTES: usize = 128 * 1024;
const REQUESTS: usize = 10_000;

const TOKEN: &[u8] = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PATH: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-._~";

fn random_from(rng: &mut StdRng, alphabet: &[u8], len: usize) -> String {
    (0..len).map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())])).collect()
}

/// A method token: mostly short, one in twenty up to 4 KiB (as in the finding).
fn random_method(rng: &mut StdRng) -> reqwest::Method {
    let len = if rng.random_ratio(1, 20) { rng.random_range(1..=4096) } else { rng.random_range(1..=12) };
    let token = match rng.random_range(0..4) {
        0 => ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"][rng.random_range(0..7)].to_owned(),
        _ => random_from(rng, TOKEN, len),
    };
    reqwest::Method::from_bytes(token.as_bytes()).unwrap_or(reqwest::Method::GET)
}

fn random_path(rng: &mut StdRng) -> String {
    let segment = |rng: &mut StdRng| {
        let len = rng.random_range(1..=40);
        random_from(rng, PATH, len)
    };
    match rng.random_range(0..5) {
        0 => format!("/orders/{}", segment(rng)),
        1 => format!("/admin/products/{}", segment(rng)),
        2 => "/orders".to_owned(),
        _ => (0..rng.random_range(1..4)).map(|_| format!("/{}", segment(rng))).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stay_bounded_under_random_methods_paths_and_headers() -> anyhow::Result<()> {
    // Arrange: the order API with request metrics, on a real listener.
    let handle = shared::metrics::install();
    let (repo, admin) = (InMemoryRepo::default(), InMemoryAdmin::default());
    let router = http::router(repo, admin, &api_config())
        .layer(axum::middleware::from_fn(|req, next| shared::ops::track_http("order-svc", req, next)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let endpoint = shared::http_server::Endpoint {
        service: "order-svc",
        role: "api",
        limits: shared::http_server::ServerLimits::default(),
    };
    let server = tokio::spawn(shared::http_server::serve(listener, router, endpoint, stop.clone()));
    let before = shared::metrics::render(&handle, None).len();

    // Act: 10,000 requests, random method, path and headers, half of them with a valid key.
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let mut rng = StdRng::seed_from_u64(14);
    let requests: Vec<reqwest::Request> = (0..REQUESTS)
        .map(|_| {
            let mut request =
                client.request(random_method(&mut rng), format!("http://{addr}{}", random_path(&mut rng)));
            for _ in 0..rng.random_range(0..6) {
                let name = format!("x-{}", random_from(&mut rng, &TOKEN[15..], 12));
                request = request.header(name, random_from(&mut rng, PATH, 30));
            }
            let trace_id = random_from(&mut rng, b"0123456789abcdef", 32);
            request = request
                .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
                .header("tracestate", format!("k{}={}", rng.random::<u16>(), random_from(&mut rng, PATH, 20)))
                .header("x-request-id", random_from(&mut rng, PATH, 36));
            if rng.random_bool(0.5) {
                request = request.bearer_auth(ADMIN_KEY);
            }
            request.body("{}").build()
        })
        .collect::<Result<_, _>>()?;
    let statuses: BTreeMap<String, usize> = futures::stream::iter(requests)
        .map(|request| {
            let client = client.clone();
            async move {
                match client.execute(request).await {
                    Ok(response) => response.status().as_u16().to_string(),
                    Err(_) => "error".to_owned(),
                }
            }
        })
        .buffer_unordered(16)
        .fold(BTreeMap::new(), |mut counts, status| async move {
            *counts.entry(status).or_default() += 1;
            counts
        })
        .await;
    let text = shared::metrics::render(&handle, None);
    stop.cancel();
    server.await??;

    // Assert: the server answered, and /metrics stayed small.
    println!("responses: {statuses:?}");
    println!("/metrics: {before} bytes before, {} bytes after {REQUESTS} requests", text.len());
    let answered: usize = statuses.iter().filter(|(status, _)| *status != "error").map(|(_, n)| n).sum();
    assert!(answered >= REQUESTS * 9 / 10, "the server answered: {statuses:?}");
    assert!(text.len() <= METRICS_LIMIT_BYTES, "/metrics grew to {} bytes (limit {METRICS_LIMIT_BYTES})", text.len());
    Ok(())
}
