//! Bad input gets a clear message and a non-zero exit, never a panic.

use crate::harness::{TempDir, sagactl};

const ORDER: &str = "01a20194-eca3-7399-9986-fadaf374137b";

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_a_non_zero_exit() -> anyhow::Result<()> {
    let unreachable = ["--brokers", "127.0.0.1:1", "--kafka-timeout", "1s"];
    let dir = TempDir::new("errors")?;
    let missing_db = format!("sqlite://{}", dir.0.join("nope.db").display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["trace", "not-an-order"], "invalid order id"),
        (vec!["trace", "--since", "yesterday-ish", ORDER], "invalid time"),
        ([&unreachable[..], &["trace", ORDER]].concat(), "cannot reach Kafka at 127.0.0.1:1"),
        ([&unreachable[..], &["lag"]].concat(), "cannot reach Kafka"),
        ([&unreachable[..], &["dlq", "list"]].concat(), "cannot reach Kafka"),
        (vec!["replay"], "which topic?"),
        (
            vec!["replay", "--topic", "orders.events", "--from-offset", "5", "--to-offset", "2"],
            "is before --from-offset",
        ),
        (vec!["replay", "--topic", "orders.events", "--from-offset", "1", "--from-time", "1h"], "cannot be used with"),
        (vec!["replay", "--rebuild", "payment-svc", "--database-url", &missing_db], "has no projection"),
        (vec!["replay", "--rebuild", "order-svc"], "--database-url"),
        (vec!["rebuild", "order-svc", "--from-store", "--database-url", &missing_db], "no database at"),
        (vec!["rebuild", "nope-svc"], "unknown service"),
        (vec!["dlq", "show", "garbage"], "invalid dead letter id"),
        (vec!["dlq", "redrive"], "required"),
        (vec!["load", "--rate", "0", "--duration", "1s"], "--rate must be more than 0"),
        (vec!["load", "--rate", "10", "--duration", "ten"], "invalid duration"),
        (vec!["load", "--rate", "10", "--duration", "1s", "--mix", "deadline_exceeded=1"], "unknown scenario"),
        (
            vec!["load", "--rate", "10", "--duration", "1s", "--api-url", "http://127.0.0.1:1"],
            "cannot reach the order API",
        ),
        (vec!["tail", "--max-messages", "0"], "--max-messages must be at least 1"),
        (vec!["trace", ORDER, "--format", "html", "--follow"], "cannot be used with"),
        (vec!["trace", ORDER, "--format", "pdf"], "invalid value"),
        (vec!["group", "reset-offsets", "--group", "order-svc"], "required"),
        (
            vec!["group", "reset-offsets", "--group", "order-svc", "--to-offset", "1", "--to-time", "1h"],
            "cannot be used with",
        ),
        (vec!["group", "reset-offsets", "--group", "order-svc", "--to-offset=-3"], "--to-offset must be 0 or more"),
        (vec!["group", "reset-offsets", "--group", "order-svc", "--to-time", "soonish"], "invalid time"),
        (
            [&unreachable[..], &["group", "reset-offsets", "--group", "order-svc", "--to-time", "1h"]].concat(),
            "cannot reach Kafka",
        ),
    ];
    for (args, expected) in cases {
        let run = sagactl(&args).await?;
        assert!(run.code != 0, "{args:?} succeeded: {}", run.stdout);
        assert!(!run.stderr.contains("panicked"), "{args:?} panicked: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{args:?}: expected {expected:?} in {}", run.stderr);
    }
    Ok(())
}
