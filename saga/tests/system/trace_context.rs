//! A caller's trace context cannot be amplified or chosen: a 400 KB `tracestate` is refused at
//! the door (the server's cap on request heads), and a caller's `traceparent` and `tracestate`
//! within that cap reach none of the messages an order causes, as any service published them.

use crate::common;

use common::{Options, TestSystem, kafka, order_body};
use shared::db::{Backend, Db};
use shared::envelope::header;
use shared::testing::eventually;
use shared::topics::{Topics, service};

/// The caller's trace id: it must not appear in any message.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A `tracestate` of `entries` members of about `member_bytes` bytes each.
fn tracestate(entries: usize, member_bytes: usize) -> String {
    (0..entries).map(|i| format!("vendor{i}={}", "x".repeat(member_bytes))).collect::<Vec<_>>().join(",")
}

/// Every message published about `order_id` on the event topics, as (its publishing service,
/// the text of its headers), read back from the broker.
async fn published_headers(bootstrap: &str, order_id: &str) -> anyhow::Result<Vec<(String, String)>> {
    let topics = Topics::default();
    let records = kafka::read(bootstrap, &topics.event_topics(), None).await?;
    Ok(records
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(order_id.as_bytes()))
        .map(|r| {
            let source = r.header(header::SOURCE).unwrap_or_default().to_owned();
            let text = r.headers.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n");
            (source, text)
        })
        .collect())
}

/// Rows written to order-svc's outbox (published or not) so far: its identity's high mark.
async fn outbox_rows_written(db: &Db) -> anyhow::Result<i64> {
    let Db::Postgres(pool) = db else { anyhow::bail!("this test runs on PostgreSQL") };
    Ok(sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM outbox").fetch_one(pool).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callers_trace_context_is_bounded_and_never_carried_into_messages() -> anyhow::Result<()> {
    // Arrange
    let system = TestSystem::start(Backend::Postgres, Options::default()).await?;
    let traceparent = format!("00-{CALLER_TRACE}-00f067aa0ba902b7-01");
    let body = order_body("cust-rich", &[("sku-tee", 1)], "NL");
    // About 400 KB: under the 408 KiB hyper buffered by default, so the old server took it.
    let huge = tracestate(1_400, 276);
    assert!(huge.len() >= 400_000, "{} bytes", huge.len());

    // Act: a 400 KB tracestate, then one of 4 KB (over the tracestate bounds, under the head cap).
    let refused = system
        .http
        .post(system.url("/orders"))
        .header("traceparent", &traceparent)
        .header("tracestate", &huge)
        .json(&body)
        .send()
        .await;
    let refused_status = refused.as_ref().map(|r| r.status().as_u16()).ok();
    let rows_after_refused = outbox_rows_written(system.db(service::ORDER)).await?;
    let placed = system
        .http
        .post(system.url("/orders"))
        .header("traceparent", &traceparent)
        .header("tracestate", tracestate(40, 100))
        .json(&body)
        .send()
        .await?;
    assert_eq!(placed.status(), 202);
    let id = placed.json::<serde_json::Value>().await?["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(system.terminal(&id).await?["status"], "completed");
    // The confirmation follows the completion: wait until notification-svc has published it.
    let bootstrap = system.endpoints.brokers.clone();
    let rows = eventually(common::WAIT, "the confirmation published", || async {
        let rows = published_headers(&bootstrap, &id).await.ok()?;
        rows.iter().any(|(source, _)| source == service::NOTIFICATION).then_some(rows)
    })
    .await?;
    system.stop().await?;

    // Assert: the huge one was refused before it placed anything (a 431, or the connection
    // closed while the client was still sending it).
    assert!(matches!(refused_status, None | Some(431)), "the 400 KB tracestate got {refused_status:?}");
    assert_eq!(rows_after_refused, 0, "the refused request placed no order");
    // Every service published for the order, and no row carries the caller's context.
    let publishers: std::collections::BTreeSet<&str> = rows.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(publishers.len(), service::ALL.len(), "{publishers:?}");
    let largest = rows.iter().map(|(_, headers)| headers.len()).max().unwrap_or_default();
    println!("{} messages for the order; the largest headers: {largest} bytes", rows.len());
    for (name, headers) in &rows {
        assert!(headers.len() <= 1024, "{name}: {} bytes of headers: {headers}", headers.len());
        assert!(!headers.contains(CALLER_TRACE), "{name} continued the caller's trace: {headers}");
        assert!(!headers.contains("vendor0="), "{name} carries the caller's tracestate: {headers}");
    }
    Ok(())
}
