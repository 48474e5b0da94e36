//! Secrets never reach the logs or `/metrics`: a full saga run with a database password in
//! every service's URL, a SASL password passed through to every Kafka client, and API keys
//! (valid and invalid ones presented), its logs captured at debug level, then searched for
//! each secret and for the key digests.
//!
//! Logging is process-wide (one global subscriber), so its test runs in a
//! process of its own; its log lines go to a buffer the test reads.

use crate::common;

use common::{Captured, Options, TestSystem};
use serde_json::json;
use shared::db::Backend;
use shared::telemetry::{self, BoxMakeWriter, LogFormat};
use shared::testing::eventually;

own_process_test!(no_configured_secret_appears_in_the_logs_or_metrics_of_a_full_saga_run);
async fn no_configured_secret_appears_in_the_logs_or_metrics_of_a_full_saga_run() -> anyhow::Result<()> {
    // Arrange: every log line at debug level into a buffer; secrets in every place they go.
    let captured = Captured::default();
    let writer = captured.clone();
    let mut options = telemetry::Options::new("saga", None, LogFormat::Json);
    options.log_writer = BoxMakeWriter::new(move || writer.clone());
    options.log_filter = Some("debug,hyper=info,hyper_util=info,h2=info,reqwest=info,tower=info".to_owned());
    let _guard = telemetry::init_with(options)?;
    let db_password = format!("dbpw-{}", uuid::Uuid::new_v4().simple());
    let sasl_password = format!("saslpw-{}", uuid::Uuid::new_v4().simple());
    let wrong_key = order_svc::http::generate_key();
    let system_options = Options {
        kafka_properties: vec![
            ("sasl.username".to_owned(), "saga".to_owned()),
            ("sasl.password".to_owned(), sasl_password.clone()),
        ],
        ..Options::default()
    };
    // PostgreSQL here trusts local connections, so a password in the URL is accepted as is.
    let system = TestSystem::start_with_urls(Backend::Postgres, system_options, |url| {
        shared::config::with_password(url, &db_password).expect("a URL with a user")
    })
    .await?;
    let keys = system.keys.clone();

    // Act: a whole saga through a customer key, an admin command, a wrong key, the metrics.
    let placed = system
        .anonymous
        .post(system.url("/orders"))
        .bearer_auth(&keys.rich)
        .json(&common::order_body("cust-rich", &[("sku-tee", 1)], "NL"))
        .send()
        .await?;
    assert_eq!(placed.status(), 202);
    let id = placed.json::<serde_json::Value>().await?["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(system.terminal(&id).await?["status"], "completed");
    let credit = system
        .http
        .post(system.url("/admin/accounts/cust-poor/credits"))
        .json(&json!({"amount_minor": 100}))
        .send()
        .await?;
    assert_eq!(credit.status(), 202);
    let refused = system.anonymous.get(system.url("/orders")).bearer_auth(&wrong_key).send().await?;
    assert_eq!(refused.status(), 401);
    eventually(common::WAIT, "the admin command's line in the log", || async {
        captured.text().contains("admin command applied").then_some(())
    })
    .await?;
    let e = &system.endpoints;
    let mut metrics = String::new();
    for addr in [e.order_ops, e.inventory, e.payment, e.shipping, e.notification] {
        metrics.push_str(&system.anonymous.get(format!("http://{addr}/metrics")).send().await?.text().await?);
    }
    system.stop().await?;

    // Assert: the capture saw the run, and no secret in any form.
    let logs = captured.text();
    assert!(logs.lines().count() > 100, "the run was logged: {} lines", logs.lines().count());
    assert!(metrics.contains("saga_admin_commands_total"), "the metrics were read");
    let secrets = [
        ("the database password", db_password.clone()),
        ("the SASL password", sasl_password.clone()),
        ("the admin key", keys.admin.clone()),
        ("a customer key", keys.rich.clone()),
        ("an unused customer key", keys.poor.clone()),
        ("a wrong key presented", wrong_key.clone()),
        ("the admin key's digest", order_svc::http::hash_key(&keys.admin)),
        ("a customer key's digest", order_svc::http::hash_key(&keys.rich)),
    ];
    for (what, secret) in &secrets {
        assert!(!logs.contains(secret.as_str()), "{what} is in the logs");
        assert!(!metrics.contains(secret.as_str()), "{what} is in /metrics");
    }
    Ok(())
}
