//! Projection rebuilds (`replay --rebuild`, `rebuild --from-store`) against the live read model.

use serde_json::Value;
use shared::db::{Db, DbOptions};
use shared::testing::eventually;

use crate::harness::{Options, System, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_order_view_matches_the_live_one_and_a_tampered_row_is_found_and_repaired() -> anyhow::Result<()> {
    let system = System::start(Options::default()).await?;
    let ids = vec![
        system.api.place("cust-rich", &[("sku-tee", 1)], "NL").await?,
        system.api.place("cust-rich", &[("sku-soldout", 1)], "NL").await?,
        system.api.place("cust-poor", &[("sku-tee", 2)], "DE").await?,
        system.api.place("cust-rich", &[("sku-mug", 1)], "JP").await?,
    ];
    for id in &ids {
        system.api.terminal(id).await?;
    }
    let db_url = system.order_db_url();

    // From Kafka, against the database: once every late fact (cancellation notices) is in.
    let report = eventually(WAIT, "a rebuild from Kafka that matches", || async {
        let run =
            system.cli(&["replay", "--rebuild", "order-svc", "--database-url", &db_url, "-o", "json"]).await.ok()?;
        let report: Value = serde_json::from_str(&run.stdout).ok()?;
        (run.code == 0 && report["matching"] == 4).then_some(report)
    })
    .await?;
    assert_eq!(report["orders_rebuilt"], 4, "{report:#}");
    assert_eq!(report["differences"], serde_json::json!([]));
    assert_eq!(report["live_only"], serde_json::json!([]));

    // From Kafka, against the API (compensations, address and timeline compared too).
    let report = system
        .cli(&["rebuild", "order-svc", "--api-url", &system.api.base, "--api-key", &system.api.key, "-o", "json"])
        .await?
        .json()?;
    assert_eq!(report["matching"], 4, "{report:#}");
    assert_eq!(report["live"], "api");

    // From the event store.
    let report =
        system.cli(&["rebuild", "order-svc", "--from-store", "--database-url", &db_url, "-o", "json"]).await?.json()?;
    assert_eq!(report["source"], "event_store");
    assert_eq!(report["matching"], 4, "{report:#}");

    // Break the live projection: one row lies about its status, another is gone.
    let db = Db::connect(&db_url, &DbOptions::default()).await?;
    let (lying, missing) = (uuid::Uuid::parse_str(&ids[0])?, uuid::Uuid::parse_str(&ids[1])?);
    shared::on_db!(&db, |pool| {
        sqlx::query("UPDATE order_view SET status = 'pending', terminal = $1 WHERE order_id = $2")
            .bind(false)
            .bind(lying)
            .execute(pool)
            .await?;
        sqlx::query("DELETE FROM order_view WHERE order_id = $1").bind(missing).execute(pool).await.map(|_| ())
    })?;

    let found = system.cli(&["rebuild", "order-svc", "--from-store", "--database-url", &db_url, "-o", "json"]).await?;
    assert_eq!(found.code, 1, "differences exit 1: {}", found.stderr);
    let report: Value = serde_json::from_str(&found.stdout)?;
    assert_eq!(report["matching"], 2, "{report:#}");
    let differences = report["differences"].as_array().cloned().unwrap_or_default();
    let lie = differences.iter().find(|d| d["order_id"] == ids[0].as_str()).cloned().unwrap_or_default();
    let fields: Vec<&str> =
        lie["fields"].as_array().into_iter().flatten().filter_map(|f| f["field"].as_str()).collect();
    assert_eq!(fields, ["row.status", "row.terminal"], "{lie:#}");
    let gone = differences.iter().find(|d| d["order_id"] == ids[1].as_str()).cloned().unwrap_or_default();
    assert_eq!(gone["kind"], "missing_in_live");

    // Kafka tells the same story.
    let from_kafka = system.cli(&["replay", "--rebuild", "order-svc", "--database-url", &db_url, "-o", "json"]).await?;
    assert_eq!(from_kafka.code, 1);
    assert_eq!(serde_json::from_str::<Value>(&from_kafka.stdout)?["differences"].as_array().map(Vec::len), Some(2));

    // --apply rebuilds the live projection from the store; then everything matches again.
    let applied = system
        .cli(&["rebuild", "order-svc", "--from-store", "--apply", "--database-url", &db_url, "-o", "json"])
        .await?
        .json()?;
    assert_eq!(applied["applied"], 4, "{applied:#}");
    assert_eq!(applied["differences_after_apply"], 0);
    let report =
        system.cli(&["replay", "--rebuild", "order-svc", "--database-url", &db_url, "-o", "json"]).await?.json()?;
    assert_eq!(report["matching"], 4, "{report:#}");
    db.close().await;
    system.stop().await
}
