//! API keys, roles and admin commands through the whole embedded system, on both backends:
//! customer isolation end to end, and each admin command travelling to its owning service as a
//! command message and changing what the saga does next.

use crate::common;

use shared::both_backends;

use common::{TestSystem, WAIT};
use serde_json::{Value, json};
use shared::db::Backend;
use shared::testing::eventually;

/// Send an admin call with the admin key; it must be accepted. Returns the command id.
async fn issue(system: &TestSystem, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<String> {
    let response = system.http.request(method, system.url(path)).json(&body).send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    anyhow::ensure!(status == 202, "{path}: expected 202, got {status}: {body}");
    anyhow::ensure!(body["status"] == "pending", "{body}");
    Ok(body["id"].as_str().unwrap_or_default().to_owned())
}

/// Wait until the owning service decided the command; returns it.
async fn decided(system: &TestSystem, id: &str) -> anyhow::Result<Value> {
    eventually(WAIT, &format!("admin command {id} decided"), || async {
        let command: Value =
            system.http.get(system.url(&format!("/admin/commands/{id}"))).send().await.ok()?.json().await.ok()?;
        (command["status"] != "pending" && command["status"].is_string()).then_some(command)
    })
    .await
}

async fn place_as(system: &TestSystem, key: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let response = system.anonymous.post(system.url("/orders")).bearer_auth(key).json(body).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

both_backends!(keys_and_roles_isolate_customers_through_the_whole_system);
async fn keys_and_roles_isolate_customers_through_the_whole_system(backend: Backend) -> anyhow::Result<()> {
    let system = TestSystem::start(backend, common::Options::default()).await?;
    let keys = system.keys.clone();

    // No key, or a wrong one: 401 with a challenge.
    let anonymous = system.anonymous.get(system.url("/orders")).send().await?;
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous.headers().get("www-authenticate").is_some_and(|v| v.to_str().is_ok_and(|v| v.starts_with("Bearer")))
    );
    let wrong = system.anonymous.get(system.url("/orders")).bearer_auth("sk_guess").send().await?;
    assert_eq!(wrong.status(), 401);

    // A customer key places for its own customer only.
    let (status, rich_order) =
        place_as(&system, &keys.rich, &common::order_body("cust-rich", &[("sku-mug", 1)], "NL")).await?;
    assert_eq!(status, 202, "{rich_order}");
    let (status, _) = place_as(&system, &keys.rich, &common::order_body("cust-poor", &[("sku-mug", 1)], "NL")).await?;
    assert_eq!(status, 403);
    let (status, poor_order) =
        place_as(&system, &keys.poor, &common::order_body("cust-poor", &[("sku-mug", 1)], "NL")).await?;
    assert_eq!(status, 202, "{poor_order}");
    let rich_id = rich_order["id"].as_str().unwrap_or_default();
    let poor_id = poor_order["id"].as_str().unwrap_or_default();

    // Another customer's order is a 404; one's own and the admin's reads are 200.
    let read = |key: &str, id: &str| {
        system.anonymous.get(system.url(&format!("/orders/{id}"))).bearer_auth(key.to_owned()).send()
    };
    assert_eq!(read(&keys.poor, rich_id).await?.status(), 404);
    assert_eq!(read(&keys.rich, rich_id).await?.status(), 200);
    assert_eq!(read(&keys.admin, poor_id).await?.status(), 200);

    // Lists: a customer sees its own orders, the admin sees all.
    let list = |key: &str| system.anonymous.get(system.url("/orders")).bearer_auth(key.to_owned()).send();
    let own: Value = list(&keys.poor).await?.json().await?;
    let ids: Vec<&str> = own["items"].as_array().into_iter().flatten().filter_map(|o| o["id"].as_str()).collect();
    assert_eq!(ids, [poor_id]);
    let all: Value = list(&keys.admin).await?.json().await?;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2), "the admin sees both customers' orders");

    // Idempotency keys are per customer: the same key from two customers is two orders, and
    // neither learns that the other used it.
    let keyed = |key: &str, customer: &str| {
        system
            .anonymous
            .post(system.url("/orders"))
            .bearer_auth(key.to_owned())
            .header("Idempotency-Key", "checkout-1")
            .json(&common::order_body(customer, &[("sku-tee", 1)], "DE"))
            .send()
    };
    let first: Value = keyed(&keys.rich, "cust-rich").await?.json().await?;
    let second = keyed(&keys.poor, "cust-poor").await?;
    assert_eq!(second.status(), 202);
    let second: Value = second.json().await?;
    assert_ne!(first["id"], second["id"]);

    // Admin endpoints: 403 for a customer key.
    let admin_only = system.anonymous.get(system.url("/admin/commands")).bearer_auth(&keys.rich).send().await?;
    assert_eq!(admin_only.status(), 403);
    assert_eq!(
        admin_only.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    system.stop().await
}

both_backends!(a_product_upserted_and_stocked_through_the_api_can_be_ordered);
async fn a_product_upserted_and_stocked_through_the_api_can_be_ordered(backend: Backend) -> anyhow::Result<()> {
    let system = TestSystem::start(backend, common::Options::default()).await?;

    let upserted =
        issue(&system, reqwest::Method::PUT, "/admin/products/sku-lamp", json!({"name": "Lamp", "price_minor": 2500}))
            .await?;
    let upserted = decided(&system, &upserted).await?;
    assert_eq!(upserted["status"], "applied", "{upserted}");
    assert_eq!(upserted["events"], json!(["ProductUpserted"]));
    let stocked =
        issue(&system, reqwest::Method::POST, "/admin/products/sku-lamp/stock-adjustments", json!({"delta": 3}))
            .await?;
    assert_eq!(decided(&system, &stocked).await?["status"], "applied");
    // Removing more than is available is refused by inventory-svc, with its reason.
    let too_many =
        issue(&system, reqwest::Method::POST, "/admin/products/sku-lamp/stock-adjustments", json!({"delta": -10}))
            .await?;
    let too_many = decided(&system, &too_many).await?;
    assert_eq!(too_many["status"], "rejected");
    assert!(too_many["reason"].as_str().is_some_and(|r| r.contains("negative")), "{too_many}");

    let id = system.place_ok("cust-rich", &[("sku-lamp", 2)], "NL").await?;
    let order = system.terminal(&id).await?;
    assert_eq!(order["status"], "completed", "{order}");
    assert_eq!(order["total_minor"], 5000, "priced at the upserted price");
    // Only one lamp is left: three cannot be reserved.
    let id = system.place_ok("cust-rich", &[("sku-lamp", 3)], "NL").await?;
    assert_eq!(system.terminal(&id).await?["reason"], "out_of_stock");

    // The audit trail lists the three commands, newest first; inventory-svc recorded the
    // command's id with the events it caused.
    let trail: Value = system.http.get(system.url("/admin/commands")).send().await?.json().await?;
    let types: Vec<&str> = trail["items"].as_array().into_iter().flatten().filter_map(|c| c["type"].as_str()).collect();
    assert_eq!(types, ["AdjustStock", "AdjustStock", "UpsertProduct"]);
    let audited: i64 = shared::on_db!(system.db(shared::topics::service::INVENTORY), |pool| {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE stream_id = 'sku-sku-lamp' AND CAST(metadata AS TEXT) LIKE $1",
        )
        .bind(format!("%{}%", upserted["id"].as_str().unwrap_or_default()))
        .fetch_one(pool)
        .await
    })?;
    assert_eq!(audited, 1, "the product's event names the command that caused it");
    system.stop().await
}

both_backends!(crediting_or_setting_an_account_decides_whether_a_payment_succeeds);
async fn crediting_or_setting_an_account_decides_whether_a_payment_succeeds(backend: Backend) -> anyhow::Result<()> {
    let system = TestSystem::start(backend, common::Options::default()).await?;

    // cust-poor has 1000; three mugs cost 2700. A credit of 2000 makes it affordable.
    let credit =
        issue(&system, reqwest::Method::POST, "/admin/accounts/cust-poor/credits", json!({"amount_minor": 2000}))
            .await?;
    assert_eq!(decided(&system, &credit).await?["status"], "applied");
    let id = system.place_ok("cust-poor", &[("sku-mug", 3)], "NL").await?;
    assert_eq!(system.terminal(&id).await?["status"], "completed");

    // A customer payment-svc does not know: a credit is refused, setting a balance opens it.
    let refused =
        issue(&system, reqwest::Method::POST, "/admin/accounts/cust-new/credits", json!({"amount_minor": 100})).await?;
    let refused = decided(&system, &refused).await?;
    assert_eq!(refused["status"], "rejected");
    assert!(refused["reason"].as_str().is_some_and(|r| r.contains("no account")), "{refused}");
    let opened =
        issue(&system, reqwest::Method::PUT, "/admin/accounts/cust-new/balance", json!({"balance_minor": 1500}))
            .await?;
    assert_eq!(decided(&system, &opened).await?["events"], json!(["AccountOpened"]));
    let id = system.place_ok("cust-new", &[("sku-tee", 1)], "NL").await?;
    assert_eq!(system.terminal(&id).await?["status"], "completed");
    // The balance is now 0: the next order is declined.
    let id = system.place_ok("cust-new", &[("sku-tee", 1)], "NL").await?;
    assert_eq!(system.terminal(&id).await?["reason"], "payment_declined");
    system.stop().await
}

both_backends!(setting_a_carriers_destinations_decides_whether_a_country_is_served);
async fn setting_a_carriers_destinations_decides_whether_a_country_is_served(backend: Backend) -> anyhow::Result<()> {
    let system = TestSystem::start(backend, common::Options::default()).await?;

    let id = system.place_ok("cust-rich", &[("sku-mug", 1)], "JP").await?;
    assert_eq!(system.terminal(&id).await?["reason"], "destination_not_served");
    let set = issue(
        &system,
        reqwest::Method::PUT,
        "/admin/carriers/ups/destinations",
        json!({"countries": ["fr", "US", "JP"]}),
    )
    .await?;
    let set = decided(&system, &set).await?;
    assert_eq!(set["status"], "applied");
    assert_eq!(set["request"]["countries"], json!(["FR", "JP", "US"]));
    let id = system.place_ok("cust-rich", &[("sku-mug", 1)], "JP").await?;
    assert_eq!(system.terminal(&id).await?["status"], "completed");

    let unknown =
        issue(&system, reqwest::Method::PUT, "/admin/carriers/dhl/destinations", json!({"countries": ["JP"]})).await?;
    let unknown = decided(&system, &unknown).await?;
    assert_eq!(unknown["status"], "rejected");
    assert!(unknown["reason"].as_str().is_some_and(|r| r.contains("unknown carrier")), "{unknown}");
    system.stop().await
}
