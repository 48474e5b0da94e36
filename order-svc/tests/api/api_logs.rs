//! What the API logs about a refused or abandoned request names who caused it: the client
//! address of a failed authentication, the key id of a request that timed out; never a key.
//!
//! Log capture is per thread and tracing caches which call sites are enabled per process, so a
//! log line another test's thread hits first could be missed: this file holds one test.

use crate::common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use order_svc::http::{self, ApiConfig, ApiLimits, Auth, hash_key};
use uuid::Uuid;

#[tokio::test]
async fn failed_authentications_and_timeouts_are_logged_with_who_caused_them() {
    // Arrange: this test's log lines into a buffer.
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let held = HeldRepo::default();
    let api = ApiConfig {
        auth: Auth::Keys(test_keys()),
        limits: ApiLimits { rate: None, request_timeout: Duration::from_millis(50), ..ApiLimits::default() },
    };
    let app = http::router(held, InMemoryAdmin::default(), &api);

    // Act: a wrong key from an address, and a request that outlives the timeout.
    let mut wrong = get_as("sk_not_ours", "/orders");
    wrong.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([203, 0, 113, 9], 40000))));
    let refused = send(&app, wrong).await;
    let mut slow = get_as(RICH_KEY, &format!("/orders/{}", Uuid::now_v7()));
    slow.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([192, 0, 2, 1], 1))));
    let timed_out = send(&app, slow).await;

    // Assert: one line each, naming the address and the key; never the key itself.
    refused.assert_problem(StatusCode::UNAUTHORIZED);
    timed_out.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    let text = logs.text();
    let failure = text.lines().find(|l| l.contains("authentication failed")).unwrap_or_else(|| panic!("{text}"));
    assert!(failure.contains("client.address=203.0.113.9") && failure.contains("reason=\"unknown_key\""), "{failure}");
    let timeout = text.lines().find(|l| l.contains("request timed out")).unwrap_or_else(|| panic!("{text}"));
    assert!(timeout.contains(&format!("key_id=key-{}", &hash_key(RICH_KEY)[..12])), "{timeout}");
    assert!(!text.contains("sk_not_ours") && !text.contains(RICH_KEY), "no key is logged: {text}");
}

/// Log output written so far.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
