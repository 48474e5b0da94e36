//! The order API, black box: the router driven with `oneshot` over an in-memory repository,
//! every request with the admin key unless a test says otherwise (`tests/common`).

use crate::common;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::*;
use order_svc::domain::{self, OrderEvent};
use serde_json::{Value, json};
use shared::contracts::{self, CancelReason};
use uuid::Uuid;

async fn assert_rejected_as_422(body: Value, pointer: &str) {
    let (app, repo) = app();

    let reply = send(&app, post_json(&body)).await;

    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let pointers: Vec<_> = reply.body["errors"]
        .as_array()
        .map(|errors| errors.iter().map(|e| e["pointer"].clone()).collect())
        .unwrap_or_default();
    assert!(pointers.contains(&json!(pointer)), "expected a violation at {pointer}: {}", reply.body);
    assert!(repo.store().orders.is_empty(), "nothing is placed");
}

// ---- POST /orders ----

#[tokio::test]
async fn placing_an_order_answers_202_with_its_location_and_a_pending_view() {
    let (app, _) = app();

    let reply = send(&app, post_json(&order_body())).await;

    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.content_type(), "application/json");
    let id = reply.body["id"].as_str().expect("id");
    assert!(Uuid::try_parse(id).is_ok());
    assert_eq!(reply.header("location"), Some(format!("/orders/{id}").as_str()));
    assert_eq!(reply.body["status"], "pending");
    assert_eq!(reply.body["customer_id"], "cust-rich");
    assert_eq!(reply.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn a_placed_order_reads_back_with_every_contract_field() {
    let (app, _) = app();
    let id = place(
        &app,
        &json!({
            "customer_id": "cust-rich",
            "items": [{"sku": "sku-tee", "quantity": 2}, {"sku": "sku-mug", "quantity": 1}],
            "ship_to": {"country": "nl", "name": "Ada", "line1": "Damrak 1", "city": "Amsterdam", "postal_code": "1012"}
        }),
    )
    .await;

    let reply = send(&app, get(&format!("/orders/{id}"))).await;

    assert_eq!(reply.status, StatusCode::OK);
    let order = &reply.body;
    assert_eq!(order["id"], id.to_string());
    assert_eq!(order["customer_id"], "cust-rich");
    assert_eq!(order["status"], "pending");
    assert_eq!(order["items"], json!([{"sku": "sku-tee", "quantity": 2}, {"sku": "sku-mug", "quantity": 1}]));
    assert_eq!(order["total_minor"], Value::Null);
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["reason"], Value::Null);
    assert_eq!(
        order["ship_to"],
        json!({"country": "NL", "name": "Ada", "line1": "Damrak 1", "city": "Amsterdam", "postal_code": "1012"})
    );
    assert!(order["created_at"].is_string());
    assert!(order["updated_at"].is_string());
    assert_eq!(order["events"][0]["type"], "OrderPlaced");
    assert_eq!(order["events"][0]["source"], "order-svc");
    assert!(order["events"][0]["at"].is_string());
}

#[tokio::test]
async fn a_cancelled_order_shows_its_reason_and_timeline_oldest_first() {
    let (app, repo) = app();
    let id = place(&app, &order_body()).await;
    repo.observe(
        id,
        OrderEvent::InventoryRejected(contracts::InventoryRejected {
            order_id: id,
            customer_id: "cust-rich".into(),
            reason: CancelReason::OutOfStock,
            skus: vec!["sku-tee".into()],
        }),
    );

    let reply = send(&app, get(&format!("/orders/{id}"))).await;

    assert_eq!(reply.body["status"], "cancelled");
    assert_eq!(reply.body["reason"], "out_of_stock");
    let timeline: Vec<_> = reply.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["type"].clone(), e["source"].clone()))
        .collect();
    assert_eq!(
        timeline,
        vec![
            (json!("OrderPlaced"), json!("order-svc")),
            (json!("InventoryRejected"), json!("inventory-svc")),
            (json!("OrderCancelled"), json!("order-svc")),
        ]
    );
}

#[tokio::test]
async fn a_content_type_with_a_charset_is_accepted() {
    let (app, _) = app();

    let reply = send(&app, post_raw(Some("application/json; charset=utf-8"), order_body().to_string())).await;

    assert_eq!(reply.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn unknown_body_fields_are_ignored() {
    let (app, _) = app();
    let mut body = order_body();
    body["coupon"] = json!("SUMMER");

    let reply = send(&app, post_json(&body)).await;

    assert_eq!(reply.status, StatusCode::ACCEPTED);
}

// ---- body errors ----

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let (app, _) = app();

    let reply = send(&app, post_raw(Some("application/json"), "{\"customer_id\": ")).await;

    reply.assert_problem(StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["type"], "urn:problem:order-svc:malformed-json");
}

#[tokio::test]
async fn a_syntax_error_and_an_empty_body_are_400_problems() {
    let (app, _) = app();

    for body in ["{customer_id: 1}", "", "not json"] {
        let reply = send(&app, post_raw(Some("application/json"), body)).await;

        reply.assert_problem(StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn a_missing_content_type_is_a_415_problem() {
    let (app, _) = app();

    let reply = send(&app, post_raw(None, order_body().to_string())).await;

    reply.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn a_wrong_content_type_is_a_415_problem() {
    let (app, _) = app();

    let reply = send(&app, post_raw(Some("text/plain"), order_body().to_string())).await;

    reply.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(reply.body["detail"].as_str().is_some_and(|d| d.contains("text/plain")));
}

#[tokio::test]
async fn empty_items_is_a_422_problem() {
    let mut body = order_body();
    body["items"] = json!([]);

    assert_rejected_as_422(body, "#/items").await;
}

#[tokio::test]
async fn more_than_100_lines_is_a_422_problem() {
    let mut body = order_body();
    body["items"] = json!(vec![json!({"sku": "sku-tee", "quantity": 1}); 101]);

    assert_rejected_as_422(body, "#/items").await;
}

#[tokio::test]
async fn a_quantity_below_one_is_a_422_problem() {
    for quantity in [0, -3] {
        let mut body = order_body();
        body["items"][0]["quantity"] = json!(quantity);

        assert_rejected_as_422(body, "#/items/0/quantity").await;
    }
}

#[tokio::test]
async fn a_quantity_above_1000_is_a_422_problem() {
    let mut body = order_body();
    body["items"][0]["quantity"] = json!(1001);

    assert_rejected_as_422(body, "#/items/0/quantity").await;
}

#[tokio::test]
async fn a_country_that_is_not_two_letters_is_a_422_problem() {
    for country in ["NLD", "N", "", "1L"] {
        let mut body = order_body();
        body["ship_to"]["country"] = json!(country);

        assert_rejected_as_422(body, "#/ship_to/country").await;
    }
}

#[tokio::test]
async fn a_blank_customer_or_sku_is_a_422_problem() {
    let mut body = order_body();
    body["customer_id"] = json!("  ");
    assert_rejected_as_422(body, "#/customer_id").await;

    let mut body = order_body();
    body["items"][0]["sku"] = json!("");
    assert_rejected_as_422(body, "#/items/0/sku").await;
}

#[tokio::test]
async fn ids_with_anything_but_plain_characters_are_422_problems() {
    for sku in ["sku-tee\u{200b}", "\u{202e}gnp.exe", "sku tee", "skü-tee"] {
        let mut body = order_body();
        body["items"][0]["sku"] = json!(sku);
        assert_rejected_as_422(body, "#/items/0/sku").await;
    }
    let mut body = order_body();
    body["customer_id"] = json!("cust-rich\u{2066}");
    assert_rejected_as_422(body, "#/customer_id").await;
}

#[tokio::test]
async fn names_and_addresses_with_invisible_or_bidi_characters_are_422_problems() {
    for (field, text) in [("name", "\u{202e}gnp.exe"), ("line1", "Damrak\u{200b} 1"), ("city", "\u{feff}Amsterdam")] {
        let mut body = order_body();
        body["ship_to"][field] = json!(text);
        assert_rejected_as_422(body, &format!("#/ship_to/{field}")).await;
    }
    let (app, _) = app();
    let mut body = order_body();
    body["ship_to"]["name"] = json!("Zoë Ødegård 山田");
    assert_eq!(send(&app, post_json(&body)).await.status, StatusCode::ACCEPTED, "other scripts are welcome");
}

#[tokio::test]
async fn a_missing_field_is_a_422_problem() {
    let (app, _) = app();
    for field in ["customer_id", "items", "ship_to"] {
        let mut body = order_body();
        body.as_object_mut().expect("object").remove(field);

        let reply = send(&app, post_json(&body)).await;

        reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(reply.body["detail"].as_str().is_some_and(|d| d.contains(field)), "{}", reply.body);
    }
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_a_422_problem() {
    let (app, _) = app();
    for (field, value) in [("customer_id", json!(42)), ("items", json!("sku-tee")), ("ship_to", json!("NL"))] {
        let mut body = order_body();
        body[field] = value;

        let reply = send(&app, post_json(&body)).await;

        reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let mut body = order_body();
    body["items"][0]["quantity"] = json!("two");
    send(&app, post_json(&body)).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_body_over_64_kib_is_a_422_problem() {
    let (app, repo) = app();
    let mut body = order_body();
    body["ship_to"]["padding"] = json!("x".repeat(64 * 1024));

    let reply = send(&app, post_json(&body)).await;

    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["type"], "urn:problem:order-svc:body-too-large");
    assert!(repo.store().orders.is_empty());
}

#[tokio::test]
async fn a_body_of_exactly_64_kib_is_accepted() {
    let (app, _) = app();
    let mut body = order_body();
    body["padding"] = json!("");
    let overhead = body.to_string().len();
    body["padding"] = json!("x".repeat(64 * 1024 - overhead));
    assert_eq!(body.to_string().len(), 64 * 1024);

    let reply = send(&app, post_json(&body)).await;

    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
}

#[tokio::test]
async fn every_broken_rule_is_reported_at_once() {
    let (app, _) = app();
    let body = json!({
        "customer_id": "",
        "items": [{"sku": "sku-tee", "quantity": 0}, {"sku": "sku-mug", "quantity": 5000}],
        "ship_to": {"country": "Netherlands"}
    });

    let reply = send(&app, post_json(&body)).await;

    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let pointers: Vec<_> = reply.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["pointer"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(pointers, ["#/customer_id", "#/items/0/quantity", "#/items/1/quantity", "#/ship_to/country"]);
}

// ---- Idempotency-Key ----

#[tokio::test]
async fn the_same_idempotency_key_and_body_return_the_same_order() {
    let (app, repo) = app();

    let first = send(&app, post_with_key("key-1", &order_body())).await;
    let second = send(&app, post_with_key("key-1", &order_body())).await;

    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(first.header("location"), second.header("location"));
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(repo.store().orders.len(), 1);
}

#[tokio::test]
async fn the_same_order_written_differently_is_still_a_replay() {
    let (app, repo) = app();
    let reordered = r#"{ "ship_to": {"country": "nl"}, "items": [{"quantity": 2, "sku": "sku-tee"}],
        "customer_id": "cust-rich" }"#;

    let first = send(&app, post_with_key("key-1", &order_body())).await;
    let second = send(
        &app,
        Request::builder()
            .method(Method::POST)
            .uri("/orders")
            .header(header::AUTHORIZATION, bearer(ADMIN_KEY))
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "key-1")
            .body(Body::from(reordered))
            .expect("request"),
    )
    .await;

    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(repo.store().orders.len(), 1);
}

#[tokio::test]
async fn the_same_idempotency_key_with_a_different_body_is_a_422_problem() {
    let (app, repo) = app();
    let mut other = order_body();
    other["items"][0]["quantity"] = json!(3);

    send(&app, post_with_key("key-1", &order_body())).await;
    let reply = send(&app, post_with_key("key-1", &other)).await;

    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["type"], "urn:problem:order-svc:idempotency-key-reused");
    assert_eq!(repo.store().orders.len(), 1);
}

#[tokio::test]
async fn different_idempotency_keys_create_different_orders() {
    let (app, repo) = app();

    let first = send(&app, post_with_key("key-1", &order_body())).await;
    let second = send(&app, post_with_key("key-2", &order_body())).await;

    assert_ne!(first.body["id"], second.body["id"]);
    assert_eq!(repo.store().orders.len(), 2);
}

#[tokio::test]
async fn an_empty_idempotency_key_is_a_400_problem() {
    let (app, repo) = app();

    let reply = send(&app, post_with_key("", &order_body())).await;

    reply.assert_problem(StatusCode::BAD_REQUEST);
    assert!(repo.store().orders.is_empty());
}

// ---- GET /orders/{id} ----

#[tokio::test]
async fn an_unknown_order_is_a_404_problem() {
    let (app, _) = app();

    let reply = send(&app, get(&format!("/orders/{}", Uuid::now_v7()))).await;

    reply.assert_problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_malformed_order_id_is_a_404_problem() {
    let (app, _) = app();

    for uri in ["/orders/not-a-uuid", "/orders/%FF%FE", "/orders/123"] {
        let reply = send(&app, get(uri)).await;

        reply.assert_problem(StatusCode::NOT_FOUND);
    }
}

// ---- GET /orders ----

async fn list(app: &Router, query: &str) -> Reply {
    send(app, get(&format!("/orders{query}"))).await
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().expect("items").iter().map(|o| o["id"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn listing_pages_through_every_order_newest_first_with_the_cursor() {
    let (app, _) = app();
    let mut placed = Vec::new();
    for _ in 0..5 {
        placed.push(place(&app, &order_body()).await.to_string());
    }
    placed.reverse();

    let first = list(&app, "?limit=2").await;
    let cursor = first.body["next_cursor"].as_str().expect("a next cursor");
    let second = list(&app, &format!("?limit=2&cursor={cursor}")).await;
    let cursor = second.body["next_cursor"].as_str().expect("a next cursor");
    let last = list(&app, &format!("?limit=2&cursor={cursor}")).await;

    assert_eq!(first.status, StatusCode::OK);
    let seen: Vec<_> = [&first, &second, &last].iter().flat_map(|page| ids(&page.body)).collect();
    assert_eq!(seen, placed);
    assert_eq!(last.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn listing_without_a_limit_returns_up_to_50_orders() {
    let (app, _) = app();
    for _ in 0..51 {
        place(&app, &order_body()).await;
    }

    let page = list(&app, "").await;

    assert_eq!(ids(&page.body).len(), 50);
    assert!(page.body["next_cursor"].is_string());
}

#[tokio::test]
async fn listing_filters_by_customer_and_status() {
    let (app, repo) = app();
    let rich = place(&app, &order_for("cust-rich")).await;
    let poor = place(&app, &order_for("cust-poor")).await;
    let poor_rejected = place(&app, &order_for("cust-poor")).await;
    repo.observe(
        poor_rejected,
        OrderEvent::InventoryRejected(contracts::InventoryRejected {
            order_id: poor_rejected,
            customer_id: "cust-poor".into(),
            reason: CancelReason::UnknownSku,
            skus: vec![],
        }),
    );

    let by_customer = list(&app, "?customer_id=cust-poor").await;
    let by_status = list(&app, "?status=cancelled").await;
    let by_both = list(&app, "?customer_id=cust-poor&status=pending").await;

    assert_eq!(ids(&by_customer.body), [poor_rejected.to_string(), poor.to_string()]);
    assert_eq!(ids(&by_status.body), [poor_rejected.to_string()]);
    assert_eq!(by_status.body["items"][0]["reason"], "unknown_sku");
    assert_eq!(ids(&by_both.body), [poor.to_string()]);
    assert!(!ids(&by_customer.body).contains(&rich.to_string()));
}

#[tokio::test]
async fn listing_treats_empty_parameters_as_absent() {
    let (app, _) = app();
    place(&app, &order_body()).await;

    let page = list(&app, "?customer_id=&status=&limit=&cursor=").await;

    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(ids(&page.body).len(), 1);
    assert_eq!(page.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn listing_with_a_limit_outside_1_to_200_is_a_422_problem() {
    let (app, _) = app();

    for query in ["?limit=201", "?limit=0", "?limit=-1", "?limit=many"] {
        let reply = list(&app, query).await;

        reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.body["errors"][0]["parameter"], "limit", "{query}");
    }
    assert_eq!(list(&app, "?limit=200").await.status, StatusCode::OK);
}

#[tokio::test]
async fn listing_with_an_unknown_status_is_a_422_problem() {
    let (app, _) = app();

    let reply = list(&app, "?status=lost").await;

    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["errors"][0]["parameter"], "status");
}

#[tokio::test]
async fn listing_with_a_cursor_the_api_did_not_hand_out_is_a_422_problem() {
    let (app, _) = app();

    let reply = list(&app, "?cursor=page-2").await;

    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["errors"][0]["parameter"], "cursor");
}

// ---- routing and internal errors ----

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let (app, _) = app();

    let reply = send(&app, get("/customers")).await;

    reply.assert_problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem_that_says_what_is_allowed() {
    let (app, _) = app();

    let reply = send(
        &app,
        Request::builder()
            .method(Method::DELETE)
            .uri("/orders")
            .header(header::AUTHORIZATION, bearer(ADMIN_KEY))
            .body(Body::empty())
            .expect("request"),
    )
    .await;

    reply.assert_problem(StatusCode::METHOD_NOT_ALLOWED);
    let allow = reply.header("allow").unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    let put = send(
        &app,
        Request::builder()
            .method(Method::PUT)
            .uri(format!("/orders/{}", Uuid::now_v7()))
            .header(header::AUTHORIZATION, bearer(ADMIN_KEY))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    put.assert_problem(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn an_internal_error_is_a_500_problem_that_leaks_nothing() {
    let app = order_svc::http::router(BrokenRepo, InMemoryAdmin::default(), &api_config());

    let replies = [
        send(&app, post_json(&order_body())).await,
        send(&app, get(&format!("/orders/{}", Uuid::now_v7()))).await,
        send(&app, get("/orders")).await,
    ];

    for reply in replies {
        reply.assert_problem(StatusCode::INTERNAL_SERVER_ERROR);
        let text = reply.body.to_string();
        for secret in ["hunter2", "postgres", "append", "connection"] {
            assert!(!text.contains(secret), "leaked {secret}: {text}");
        }
    }
}

// ---- OpenAPI ----

#[tokio::test]
async fn the_openapi_document_is_3_1_and_describes_every_route_and_status() {
    let (app, _) = app();

    let reply = send(&app, get("/openapi.json")).await;

    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.body;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let mut codes: Vec<_> = doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is documented"))
            .keys()
            .cloned()
            .collect();
        codes.sort();
        codes
    };
    assert_eq!(statuses("/orders", "post"), ["202", "400", "401", "403", "408", "415", "422", "429", "500", "503"]);
    assert_eq!(statuses("/orders/{id}", "get"), ["200", "401", "403", "404", "429", "500", "503"]);
    assert_eq!(statuses("/orders", "get"), ["200", "401", "403", "422", "429", "500", "503"]);
    assert!(doc["paths"]["/openapi.json"]["get"].is_object());
    assert!(doc["paths"]["/orders"]["post"]["responses"]["422"]["content"]["application/problem+json"].is_object());
    assert!(doc["paths"]["/orders"]["post"]["responses"]["202"]["headers"]["Location"].is_object());
    let request = &doc["components"]["schemas"];
    assert_eq!(request["PlaceOrderRequest"]["properties"]["customer_id"]["pattern"], domain::IDENTIFIER_PATTERN);
    assert_eq!(request["ItemRequest"]["properties"]["sku"]["pattern"], domain::IDENTIFIER_PATTERN);
    let sku_parameter = &doc["paths"]["/admin/products/{sku}"]["put"]["parameters"][0];
    assert_eq!(sku_parameter["schema"]["pattern"], domain::IDENTIFIER_PATTERN, "{sku_parameter}");
}

#[tokio::test]
async fn the_openapi_schemas_match_the_api_names() {
    let (app, _) = app();

    let doc = send(&app, get("/openapi.json")).await.body;

    let schemas = &doc["components"]["schemas"];
    for name in [
        "Problem",
        "Violation",
        "OrderView",
        "OrderSummary",
        "OrderPage",
        "PlaceOrderRequest",
        "OrderStatus",
        "CancelReason",
    ] {
        assert!(schemas[name].is_object(), "schema {name} is missing");
    }
    let statuses: Vec<_> = domain::OrderStatus::ALL.iter().map(|s| json!(s.as_str())).collect();
    assert_eq!(schemas["OrderStatus"]["enum"], json!(statuses));
    let reasons: Vec<_> = CancelReason::ALL.iter().map(|r| json!(r.as_str())).collect();
    assert_eq!(schemas["CancelReason"]["enum"], json!(reasons));
    let view_fields = schemas["OrderView"]["properties"].as_object().expect("properties");
    for field in [
        "id",
        "customer_id",
        "status",
        "items",
        "total_minor",
        "currency",
        "reason",
        "ship_to",
        "created_at",
        "updated_at",
        "events",
    ] {
        assert!(view_fields.contains_key(field), "OrderView.{field}");
    }
    let required = &schemas["OrderView"]["required"];
    for always_present in ["total_minor", "reason", "events"] {
        assert!(
            required.as_array().is_some_and(|r| r.contains(&json!(always_present))),
            "{always_present} is always present, even when null"
        );
    }
}
