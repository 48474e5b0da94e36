//! `sagactl load` against the orders the API reports.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::harness::{Options, System, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_reports_numbers_consistent_with_the_orders_the_api_reports() -> anyhow::Result<()> {
    let system = System::start(Options::default()).await?;
    let dir = TempDir::new("load")?;
    let out = dir.0.join("result.json");
    let out_arg = out.display().to_string();
    let run = system
        .cli(&[
            "load",
            "--api-url",
            &system.api.base,
            "--api-key",
            &system.api.key,
            "--rate",
            "25",
            "--duration",
            "2s",
            "--mix",
            "completed=60,out_of_stock=10,payment_declined=10,destination_not_served=10,unknown_customer=10",
            "--wait-timeout",
            "30s",
            "--out",
            &out_arg,
            "-o",
            "json",
        ])
        .await?;
    let report = run.json()?;
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    assert_eq!(written, report, "the result file holds the printed report");

    assert_eq!(report["planned"], 50);
    assert_eq!(report["sent"], 50);
    assert_eq!(report["accepted"], 50, "{report:#}");
    assert_eq!(report["finished"], 50);
    assert_eq!(report["not_terminal"], 0);
    assert_eq!(report["unexpected_outcomes"], 0, "{report:#}");
    assert_eq!(report["http_latency_ms"]["count"], 50);
    assert_eq!(report["saga_latency_ms"]["count"], 50);
    for latency in [&report["http_latency_ms"], &report["saga_latency_ms"]] {
        let p = |k: &str| latency[k].as_f64().unwrap_or(-1.0);
        assert!(
            0.0 < p("p50")
                && p("p50") <= p("p90")
                && p("p90") <= p("p99")
                && p("p99") <= p("p99_9")
                && p("p99_9") <= p("max"),
            "{latency}"
        );
    }
    // The rates are what the counts and the times say (how fast is the benchmark's business).
    let field = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    let send_seconds = field("send_seconds");
    assert!(send_seconds > 0.0, "{report:#}");
    assert!((field("accepted_per_sec") - 50.0 / send_seconds).abs() < 0.01 * field("accepted_per_sec"), "{report:#}");
    assert!(
        (field("achieved_rate") - field("sent") / send_seconds).abs() < 0.01 * field("achieved_rate"),
        "{report:#}"
    );

    // The API holds exactly these orders, with these outcomes.
    let orders = system.api.all_orders().await?;
    assert_eq!(orders.len(), 50);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for order in &orders {
        let outcome = match order["status"].as_str() {
            Some("completed") => "completed".to_owned(),
            Some("cancelled") => order["reason"].as_str().unwrap_or_default().to_owned(),
            other => panic!("order not terminal: {other:?}"),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    let reported: BTreeMap<String, u64> = serde_json::from_value(report["outcomes"].clone())?;
    assert_eq!(reported, outcomes);
    assert_eq!(outcomes.get("completed"), Some(&30));
    system.stop().await
}
