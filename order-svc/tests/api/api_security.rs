//! API keys and roles, per-customer isolation, the admin endpoints and the limits, black box:
//! the router driven with `oneshot` over in-memory repositories.

use crate::common;

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode, header};
use common::*;
use order_svc::http::{self, ApiConfig, ApiLimits, Auth, RateLimit, hash_key};
use serde_json::{Value, json};
use uuid::Uuid;

fn app_with(api: &ApiConfig) -> (Router, InMemoryRepo, InMemoryAdmin) {
    let (repo, admin) = (InMemoryRepo::default(), InMemoryAdmin::default());
    (http::router(repo.clone(), admin.clone(), api), repo, admin)
}

fn secured() -> (Router, InMemoryRepo, InMemoryAdmin) {
    app_with(&api_config())
}

async fn place_as(app: &Router, key: &str, customer: &str) -> Reply {
    send(app, json_as(key, Method::POST, "/orders", &order_for(customer))).await
}

fn challenge(reply: &Reply) -> String {
    reply.header("www-authenticate").unwrap_or_default().to_owned()
}

// ---- authentication ----

#[tokio::test]
async fn a_request_without_a_key_is_a_401_problem_with_a_bearer_challenge() {
    let (app, repo, admin) = secured();

    let replies = [
        send(&app, get_as("", "/orders")).await,
        send(&app, get_as("", &format!("/orders/{}", Uuid::now_v7()))).await,
        send(&app, json_as("", Method::POST, "/orders", &order_body())).await,
        send(&app, get_as("", "/admin/commands")).await,
        send(&app, json_as("", Method::POST, "/admin/products/sku-tee/stock-adjustments", &json!({"delta": 1}))).await,
    ];

    for reply in replies {
        reply.assert_problem(StatusCode::UNAUTHORIZED);
        assert_eq!(challenge(&reply), r#"Bearer realm="order-svc""#);
    }
    assert!(repo.store().orders.is_empty() && admin.all().is_empty(), "nothing was done");
}

#[tokio::test]
async fn a_wrong_or_malformed_key_is_a_401_invalid_token() {
    let (app, _, _) = secured();
    let wrong = [
        bearer("sk_not_a_key_we_know"),
        bearer(&hash_key(ADMIN_KEY)), // the digest is not the key
        format!("Basic {ADMIN_KEY}"),
        "Bearer".to_owned(),
        format!("Bearer {}", "k".repeat(600)),
    ];

    for authorization in wrong {
        let request = axum::http::Request::builder()
            .uri("/orders")
            .header(header::AUTHORIZATION, authorization.as_str())
            .body(axum::body::Body::empty())
            .expect("request");
        let reply = send(&app, request).await;

        reply.assert_problem(StatusCode::UNAUTHORIZED);
        assert!(challenge(&reply).contains(r#"error="invalid_token""#), "{authorization}");
        assert!(!reply.body.to_string().contains(ADMIN_KEY), "the key is not echoed");
    }
}

#[tokio::test]
async fn the_openapi_document_needs_no_key() {
    let (app, _, _) = secured();

    let reply = send(&app, get_as("", "/openapi.json")).await;

    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn open_mode_lets_every_caller_in_as_an_admin() {
    let (app, _, _) = app_with(&ApiConfig { auth: Auth::Open, limits: ApiLimits::default() });

    let placed = place_as(&app, "", "anyone").await;
    let listed = send(&app, get_as("", "/orders")).await;
    let admin =
        send(&app, json_as("", Method::PUT, "/admin/accounts/anyone/balance", &json!({"balance_minor": 5}))).await;

    assert_eq!(placed.status, StatusCode::ACCEPTED, "{}", placed.body);
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(admin.status, StatusCode::ACCEPTED, "{}", admin.body);
    assert_eq!(admin.body["issued_by"], "open");
}

/// `GET /orders` with `key` from `client`, as the server hands it to the router.
fn from_address(client: &str, key: &str) -> axum::http::Request<axum::body::Body> {
    let mut request = get_as(key, "/orders");
    let addr: std::net::SocketAddr = format!("{client}:40000").parse().expect("address");
    request.extensions_mut().insert(axum::extract::ConnectInfo(addr));
    request
}

#[tokio::test]
async fn an_address_that_fails_too_often_gets_429s_even_with_a_valid_key_and_others_do_not() {
    // Arrange: three failures in a burst per address, one more a second.
    let limits = ApiLimits {
        rate: None,
        auth_failures: Some(RateLimit { per_second: http::limits::non_zero(1), burst: http::limits::non_zero(3) }),
        ..ApiLimits::default()
    };
    let (app, _, _) = app_with(&ApiConfig { auth: Auth::Keys(test_keys()), limits });
    let (guesser, neighbour) = ("198.51.100.7", "198.51.100.8");

    // Act: three wrong keys from one address, then more, then its valid key.
    let mut failed = Vec::new();
    for key in ["sk_guess_1", "sk_guess_2", ""] {
        failed.push(send(&app, from_address(guesser, key)).await);
    }
    let throttled = send(&app, from_address(guesser, "sk_guess_4")).await;
    let valid_while_throttled = send(&app, from_address(guesser, ADMIN_KEY)).await;
    let elsewhere_valid = send(&app, from_address(neighbour, ADMIN_KEY)).await;
    let elsewhere_wrong = send(&app, from_address(neighbour, "sk_guess_5")).await;

    // Assert: 401s, then 429s with Retry-After for that address only, its key unchecked.
    for reply in &failed {
        reply.assert_problem(StatusCode::UNAUTHORIZED);
    }
    for reply in [&throttled, &valid_while_throttled] {
        reply.assert_problem(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.body["type"], "urn:problem:order-svc:too-many-failed-authentications");
        let retry_after: u64 = reply.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
        assert!((1..=2).contains(&retry_after), "{retry_after}");
    }
    assert_eq!(elsewhere_valid.status, StatusCode::OK);
    elsewhere_wrong.assert_problem(StatusCode::UNAUTHORIZED);
}

// ---- roles and isolation ----

#[tokio::test]
async fn a_customer_key_places_orders_for_its_own_customer_only() {
    let (app, repo, _) = secured();

    let own = place_as(&app, RICH_KEY, "cust-rich").await;
    let other = place_as(&app, RICH_KEY, "cust-poor").await;

    assert_eq!(own.status, StatusCode::ACCEPTED, "{}", own.body);
    other.assert_problem(StatusCode::FORBIDDEN);
    let customers: Vec<String> = repo.store().orders.values().map(|o| o.customer_id().to_owned()).collect();
    assert_eq!(customers, ["cust-rich"], "the forbidden order was not placed");
}

#[tokio::test]
async fn another_customers_order_is_a_404_exactly_like_a_missing_one() {
    let (app, _, _) = secured();
    let poor = place_as(&app, ADMIN_KEY, "cust-poor").await.body["id"].as_str().expect("id").to_owned();
    let rich = place_as(&app, ADMIN_KEY, "cust-rich").await.body["id"].as_str().expect("id").to_owned();

    let theirs = send(&app, get_as(RICH_KEY, &format!("/orders/{poor}"))).await;
    let missing = send(&app, get_as(RICH_KEY, &format!("/orders/{}", Uuid::now_v7()))).await;
    let own = send(&app, get_as(RICH_KEY, &format!("/orders/{rich}"))).await;

    theirs.assert_problem(StatusCode::NOT_FOUND);
    assert_eq!(theirs.body, missing.body, "nothing tells an existing order from a missing one");
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.body["customer_id"], "cust-rich");
}

#[tokio::test]
async fn a_customer_key_lists_only_its_own_customers_orders() {
    let (app, _, _) = secured();
    for customer in ["cust-rich", "cust-poor", "cust-rich"] {
        assert_eq!(place_as(&app, ADMIN_KEY, customer).await.status, StatusCode::ACCEPTED);
    }

    let own = send(&app, get_as(POOR_KEY, "/orders")).await;
    let named = send(&app, get_as(POOR_KEY, "/orders?customer_id=cust-poor")).await;
    let other = send(&app, get_as(POOR_KEY, "/orders?customer_id=cust-rich")).await;

    let customers = |reply: &Reply| -> Vec<Value> {
        reply.body["items"].as_array().expect("items").iter().map(|o| o["customer_id"].clone()).collect()
    };
    assert_eq!(customers(&own), [json!("cust-poor")]);
    assert_eq!(customers(&named), [json!("cust-poor")]);
    other.assert_problem(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_admin_key_reads_every_customers_orders() {
    let (app, _, _) = secured();
    let poor = place_as(&app, POOR_KEY, "cust-poor").await.body["id"].as_str().expect("id").to_owned();
    assert_eq!(place_as(&app, RICH_KEY, "cust-rich").await.status, StatusCode::ACCEPTED);

    let one = send(&app, get_as(ADMIN_KEY, &format!("/orders/{poor}"))).await;
    let all = send(&app, get_as(ADMIN_KEY, "/orders")).await;

    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(all.body["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn a_customer_key_on_any_admin_endpoint_is_a_403() {
    let (app, _, admin) = secured();
    let calls = [
        json_as(RICH_KEY, Method::PUT, "/admin/products/sku-new", &json!({"name": "New", "price_minor": 1})),
        json_as(RICH_KEY, Method::POST, "/admin/products/sku-tee/stock-adjustments", &json!({"delta": 1})),
        json_as(RICH_KEY, Method::POST, "/admin/accounts/cust-rich/credits", &json!({"amount_minor": 1})),
        json_as(RICH_KEY, Method::PUT, "/admin/accounts/cust-rich/balance", &json!({"balance_minor": 1})),
        json_as(RICH_KEY, Method::PUT, "/admin/carriers/ups/destinations", &json!({"countries": ["NL"]})),
        // Even with a body that breaks the rules: the role is checked first.
        json_as(RICH_KEY, Method::POST, "/admin/accounts/cust-rich/credits", &json!({"amount_minor": "lots"})),
        get_as(RICH_KEY, "/admin/commands"),
        get_as(RICH_KEY, &format!("/admin/commands/{}", Uuid::now_v7())),
    ];

    for request in calls {
        send(&app, request).await.assert_problem(StatusCode::FORBIDDEN);
    }
    assert!(admin.all().is_empty(), "no command was issued");
}

// ---- admin commands ----

#[tokio::test]
async fn each_admin_call_is_accepted_as_a_command_for_the_service_that_owns_its_target() {
    let (app, _, admin) = secured();
    let calls = [
        (
            Method::PUT,
            "/admin/products/sku-new",
            json!({"name": "New thing", "price_minor": 250}),
            "UpsertProduct",
            "inventory-svc",
            "sku-new",
        ),
        (
            Method::POST,
            "/admin/products/sku-tee/stock-adjustments",
            json!({"delta": -3}),
            "AdjustStock",
            "inventory-svc",
            "sku-tee",
        ),
        (
            Method::POST,
            "/admin/accounts/cust-poor/credits",
            json!({"amount_minor": 5000}),
            "CreditAccount",
            "payment-svc",
            "cust-poor",
        ),
        (
            Method::PUT,
            "/admin/accounts/cust-new/balance",
            json!({"balance_minor": 0}),
            "SetAccountBalance",
            "payment-svc",
            "cust-new",
        ),
        (
            Method::PUT,
            "/admin/carriers/ups/destinations",
            json!({"countries": ["us", "FR", "JP"]}),
            "SetDestinations",
            "shipping-svc",
            "ups",
        ),
    ];

    let mut ids = Vec::new();
    for (method, uri, body, command_type, service, target) in calls {
        let reply = send(&app, json_as(ADMIN_KEY, method, uri, &body)).await;

        assert_eq!(reply.status, StatusCode::ACCEPTED, "{uri}: {}", reply.body);
        let id = reply.body["id"].as_str().expect("id").to_owned();
        assert_eq!(reply.header("location"), Some(format!("/admin/commands/{id}").as_str()));
        assert_eq!(reply.body["type"], command_type);
        assert_eq!(reply.body["service"], service);
        assert_eq!(reply.body["target"], target);
        assert_eq!(reply.body["status"], "pending");
        assert_eq!(reply.body["issued_by"], format!("key-{}", &hash_key(ADMIN_KEY)[..12]));
        ids.push(id);
    }
    assert_eq!(admin.all().len(), 5);
    let destinations = &admin.all()[4].request;
    assert_eq!(destinations["countries"], json!(["FR", "JP", "US"]), "codes are upper-cased and sorted");

    let trail = send(&app, get_as(ADMIN_KEY, "/admin/commands?limit=2")).await;
    let listed: Vec<&str> =
        trail.body["items"].as_array().expect("items").iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(listed, [ids[4].as_str(), ids[3].as_str()], "newest first, bounded by limit");
    assert!(trail.body["next_cursor"].is_string());
    let one = send(&app, get_as(ADMIN_KEY, &format!("/admin/commands/{}", ids[0]))).await;
    assert_eq!(one.body["request"], json!({"sku": "sku-new", "name": "New thing", "price_minor": 250}));
}

#[tokio::test]
async fn admin_requests_that_break_the_rules_are_422_problems_and_issue_nothing() {
    let (app, _, admin) = secured();
    let cases = [
        (Method::PUT, "/admin/products/%20padded", json!({"name": "X", "price_minor": 1}), "sku"),
        (Method::PUT, "/admin/products/sku-x", json!({"name": " ", "price_minor": 1}), "#/name"),
        (Method::PUT, "/admin/products/sku-x", json!({"name": "X", "price_minor": -1}), "#/price_minor"),
        (Method::POST, "/admin/products/sku-x/stock-adjustments", json!({"delta": 0}), "#/delta"),
        (Method::POST, "/admin/products/sku-x/stock-adjustments", json!({"delta": 2_000_000_000_i64}), "#/delta"),
        (Method::POST, "/admin/accounts/cust-x/credits", json!({"amount_minor": 0}), "#/amount_minor"),
        (Method::PUT, "/admin/accounts/cust-x/balance", json!({"balance_minor": -5}), "#/balance_minor"),
        (Method::PUT, "/admin/carriers/UPS!/destinations", json!({"countries": ["NL"]}), "carrier"),
        (Method::PUT, "/admin/carriers/ups/destinations", json!({"countries": ["NLD"]}), "#/countries"),
    ];

    for (method, uri, body, at) in cases {
        let reply = send(&app, json_as(ADMIN_KEY, method, uri, &body)).await;

        reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        let errors = reply.body["errors"].as_array().expect("errors");
        assert!(
            errors.iter().any(|e| e["pointer"] == at || e["parameter"] == at),
            "{uri}: expected a violation at {at}: {}",
            reply.body
        );
    }
    let shape =
        send(&app, json_as(ADMIN_KEY, Method::POST, "/admin/accounts/c/credits", &json!({"amount_minor": "5"}))).await;
    shape.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let bad_limit = send(&app, get_as(ADMIN_KEY, "/admin/commands?limit=201")).await;
    bad_limit.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = send(&app, get_as(ADMIN_KEY, "/admin/commands/not-a-uuid")).await;
    unknown.assert_problem(StatusCode::NOT_FOUND);
    assert!(admin.all().is_empty());
}

#[tokio::test]
async fn an_oversized_admin_body_is_refused_unread() {
    let (app, _, admin) = secured();
    let body = json!({"name": "x".repeat(http::BODY_LIMIT_BYTES), "price_minor": 1});

    let reply = send(&app, json_as(ADMIN_KEY, Method::PUT, "/admin/products/sku-big", &body)).await;

    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["type"], "urn:problem:order-svc:body-too-large");
    assert!(admin.all().is_empty());
}

// ---- limits ----

#[tokio::test]
async fn a_key_over_its_rate_limit_gets_a_429_with_retry_after_and_other_keys_do_not() {
    // One request a second with a burst of two: the third at once is over the limit.
    let limits = ApiLimits {
        rate: Some(RateLimit { per_second: http::limits::non_zero(1), burst: http::limits::non_zero(2) }),
        ..ApiLimits::default()
    };
    let (app, _, _) = app_with(&ApiConfig { auth: Auth::Keys(test_keys()), limits });

    let first = send(&app, get_as(RICH_KEY, "/orders")).await;
    let second = send(&app, get_as(RICH_KEY, "/orders")).await;
    let third = send(&app, get_as(RICH_KEY, "/orders")).await;
    let someone_else = send(&app, get_as(POOR_KEY, "/orders")).await;

    assert_eq!((first.status, second.status), (StatusCode::OK, StatusCode::OK));
    third.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = third.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(someone_else.status, StatusCode::OK, "each key has its own budget");
}

#[tokio::test]
async fn a_request_beyond_the_concurrency_limit_is_a_503_at_once_instead_of_queueing() {
    let held = HeldRepo::default();
    let api = ApiConfig {
        auth: Auth::Keys(test_keys()),
        limits: ApiLimits { rate: None, max_concurrent_requests: 1, ..ApiLimits::default() },
    };
    let app = http::router(held.clone(), InMemoryAdmin::default(), &api);
    let uri = format!("/orders/{}", Uuid::now_v7());
    // Arrange: one request in flight, held inside the repository.
    let first = tokio::spawn({
        let (app, uri) = (app.clone(), uri.clone());
        async move { send(&app, get_as(ADMIN_KEY, &uri)).await }
    });
    held.entered.notified().await;

    // Act: a second request while the first holds the only slot.
    let second = send(&app, get_as(ADMIN_KEY, &uri)).await;

    // Assert: refused at once with Retry-After; the first completes once let go.
    second.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.body["type"], "urn:problem:order-svc:overloaded");
    assert_eq!(second.header("retry-after"), Some("1"));
    held.release.add_permits(1);
    let first = first.await.expect("first request");
    first.assert_problem(StatusCode::NOT_FOUND);
    held.release.add_permits(1);
    let third = send(&app, get_as(ADMIN_KEY, &uri)).await;
    third.assert_problem(StatusCode::NOT_FOUND);
}

/// `POST /orders` by `key` whose body never arrives: `entered` fires once the handler waits for
/// it, past every admission limit.
fn withheld_body(key: &str) -> (axum::http::Request<axum::body::Body>, tokio::sync::oneshot::Receiver<()>) {
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let body = axum::body::Body::from_stream(futures::stream::once(async move {
        let _ = entered_tx.send(());
        futures::future::pending::<Result<axum::body::Bytes, std::io::Error>>().await
    }));
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/orders")
        .header(header::AUTHORIZATION, bearer(key))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("request");
    (request, entered)
}

#[tokio::test]
async fn one_key_holding_its_whole_share_open_leaves_the_other_keys_served() {
    // Arrange: eight requests in flight for everyone, four for any one key.
    let api = ApiConfig {
        auth: Auth::Keys(test_keys()),
        limits: ApiLimits { rate: None, max_concurrent_requests: 8, max_in_flight_per_key: 4, ..ApiLimits::default() },
    };
    let app = http::router(InMemoryRepo::default(), InMemoryAdmin::default(), &api);

    // Act: one customer key sends as many withheld bodies as the shared limit allows.
    let (mut held, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        let (request, entered) = withheld_body(RICH_KEY);
        let mut task = tokio::spawn({
            let app = app.clone();
            async move { send(&app, request).await }
        });
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                Ok(()) = entered => None,
                reply = &mut task => Some(reply.expect("request task")),
            }
        })
        .await
        .expect("each request is either admitted or refused at once");
        match outcome {
            None => held.push(task),
            Some(reply) => refused.push(reply),
        }
    }
    let poor = send(&app, get_as(POOR_KEY, "/orders")).await;
    let admin = send(&app, post_json(&order_body())).await;
    let rich_again = send(&app, get_as(RICH_KEY, "/orders")).await;

    // Assert: the key got its share and no more; everyone else is still served.
    assert_eq!((held.len(), refused.len()), (4, 4));
    for reply in &refused {
        reply.assert_problem(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.body["type"], "urn:problem:order-svc:too-many-in-flight");
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    assert_eq!(poor.status, StatusCode::OK, "{}", poor.body);
    assert_eq!(admin.status, StatusCode::ACCEPTED, "{}", admin.body);
    rich_again.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    for task in held {
        task.abort();
    }
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_a_408_problem_that_closes_the_connection() {
    let (app, repo) = app();
    // What the server's body reader yields once the body read timeout passed.
    let body = axum::body::Body::from_stream(futures::stream::once(async {
        Err::<axum::body::Bytes, _>(shared::http_server::BodyReadTimeout(Duration::from_secs(10)))
    }));

    let reply = send(&app, post_raw(Some("application/json"), body)).await;

    reply.assert_problem(StatusCode::REQUEST_TIMEOUT);
    assert_eq!(reply.body["type"], "urn:problem:order-svc:body-timeout");
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(repo.store().orders.is_empty());
}

#[tokio::test]
async fn a_request_that_outlives_the_timeout_is_abandoned_with_a_503() {
    let held = HeldRepo::default();
    let api = ApiConfig {
        auth: Auth::Keys(test_keys()),
        limits: ApiLimits { rate: None, request_timeout: Duration::from_millis(50), ..ApiLimits::default() },
    };
    let app = http::router(held.clone(), InMemoryAdmin::default(), &api);

    // The repository never answers (nothing releases it), so only the timeout can end this.
    let reply = send(&app, get_as(ADMIN_KEY, &format!("/orders/{}", Uuid::now_v7()))).await;

    reply.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["type"], "urn:problem:order-svc:request-timeout");
    assert_eq!(reply.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn list_limits_are_bounded_everywhere() {
    let (app, _, _) = secured();

    for uri in ["/orders?limit=201", "/orders?limit=0", "/admin/commands?limit=1000", "/admin/commands?limit=-1"] {
        send(&app, get_as(ADMIN_KEY, uri)).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_eq!(send(&app, get_as(ADMIN_KEY, "/admin/commands?limit=200")).await.status, StatusCode::OK);
}

// ---- the document ----

#[tokio::test]
async fn the_openapi_document_declares_the_key_scheme_and_every_admin_operation() {
    let (app, _, _) = secured();

    let doc = send(&app, get_as("", "/openapi.json")).await.body;

    let scheme = &doc["components"]["securitySchemes"]["api_key"];
    assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")));
    let operations = [
        ("/orders", "post"),
        ("/orders", "get"),
        ("/orders/{id}", "get"),
        ("/admin/products/{sku}", "put"),
        ("/admin/products/{sku}/stock-adjustments", "post"),
        ("/admin/accounts/{customer_id}/credits", "post"),
        ("/admin/accounts/{customer_id}/balance", "put"),
        ("/admin/carriers/{carrier}/destinations", "put"),
        ("/admin/commands", "get"),
        ("/admin/commands/{id}", "get"),
    ];
    for (path, method) in operations {
        let operation = &doc["paths"][path][method];
        assert_eq!(operation["security"], json!([{"api_key": []}]), "{method} {path}");
        for status in ["401", "403", "429", "503"] {
            assert!(operation["responses"][status].is_object(), "{method} {path} documents {status}");
        }
        assert!(operation["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
        assert!(operation["responses"]["429"]["headers"]["Retry-After"].is_object());
    }
    assert!(doc["paths"]["/openapi.json"]["get"]["security"].is_null(), "the document itself is public");
    assert!(doc["components"]["schemas"]["AdminCommandView"].is_object());
}
