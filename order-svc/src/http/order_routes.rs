//! `/orders`: place an order, read one, list them. Request bodies are raw DTOs that become a
//! [`PlaceOrder`] through `TryFrom`; responses are the storage layer's read models
//! ([`OrderView`], [`OrderPage`]), built from the folded order.

use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Principal;
use super::extract::JsonBody;
use super::problem::{AppError, Problem, Violation};
use crate::domain::{
    AddressLines, CountryCode, CustomerId, Destination, OrderItem, OrderItems, OrderStatus, PlaceOrder, Quantity, Sku,
};
use crate::storage::{
    Cursor, IdempotencyKey, IdempotencyRequest, ListQuery, OrderPage, OrderRepository, OrderStatusSchema, OrderView,
    PageLimit, RepoError, fingerprint,
};

pub(super) fn router<R: OrderRepository>() -> Router<R> {
    Router::new()
        .route("/orders", post(place_order::<R>).get(list_orders::<R>))
        .route("/orders/{id}", get(get_order::<R>))
}

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

// ---- requests ----

/// The body of `POST /orders`. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({
    "customer_id": "cust-rich",
    "items": [{"sku": "sku-tee", "quantity": 2}],
    "ship_to": {"country": "NL"}
}))]
pub struct PlaceOrderRequest {
    /// ASCII letters, digits, `.`, `_`, `:` and `-`.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$", example = "cust-rich")]
    pub customer_id: String,
    /// 1 to 100 lines.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ItemRequest>,
    pub ship_to: ShipToRequest,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ItemRequest {
    /// ASCII letters, digits, `.`, `_`, `:` and `-`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._:-]+$", example = "sku-tee")]
    pub sku: String,
    /// A wide integer so that 0, -1 and 5000 get a rule violation rather than a type error.
    #[schema(minimum = 1, maximum = 1000, example = 2)]
    pub quantity: i64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ShipToRequest {
    /// ISO 3166-1 alpha-2, any case (stored uppercase).
    #[schema(pattern = "^[A-Za-z]{2}$", example = "NL")]
    pub country: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub line1: Option<String>,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub city: Option<String>,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub postal_code: Option<String>,
}

impl TryFrom<PlaceOrderRequest> for PlaceOrder {
    type Error = Vec<Violation>;

    /// Parses every field and reports every broken rule at once.
    fn try_from(request: PlaceOrderRequest) -> Result<Self, Self::Error> {
        let mut violations = Vec::new();

        let customer_id = CustomerId::parse(request.customer_id)
            .map_err(|err| violations.push(Violation::at_pointer("#/customer_id", err.message())))
            .ok();

        let mut items = Vec::with_capacity(request.items.len());
        for (i, item) in request.items.into_iter().enumerate() {
            let sku = Sku::parse(item.sku)
                .map_err(|err| violations.push(Violation::at_pointer(format!("#/items/{i}/sku"), err.message())))
                .ok();
            let quantity = Quantity::parse(item.quantity)
                .map_err(|err| violations.push(Violation::at_pointer(format!("#/items/{i}/quantity"), err.message())))
                .ok();
            if let (Some(sku), Some(quantity)) = (sku, quantity) {
                items.push(OrderItem { sku, quantity });
            }
        }
        let items = if violations.iter().any(|v| is_under(v, "#/items/")) {
            None
        } else {
            OrderItems::parse(items)
                .map_err(|err| violations.push(Violation::at_pointer("#/items", err.message())))
                .ok()
        };

        let ship_to = request.ship_to;
        let country = CountryCode::parse(&ship_to.country)
            .map_err(|err| violations.push(Violation::at_pointer("#/ship_to/country", err.message())))
            .ok();
        let lines = AddressLines {
            name: ship_to.name,
            line1: ship_to.line1,
            city: ship_to.city,
            postal_code: ship_to.postal_code,
        };
        let destination = country.and_then(|country| {
            Destination::parse(country, lines)
                .map_err(|errors| {
                    violations.extend(errors.into_iter().map(|(field, err)| {
                        Violation::at_pointer(format!("#/ship_to/{}", field.as_str()), err.message())
                    }))
                })
                .ok()
        });

        match (customer_id, items, destination) {
            (Some(customer_id), Some(items), Some(ship_to)) if violations.is_empty() => {
                Ok(Self { customer_id, items, ship_to })
            }
            _ => Err(violations),
        }
    }
}

fn is_under(violation: &Violation, prefix: &str) -> bool {
    violation.pointer.as_deref().is_some_and(|pointer| pointer.starts_with(prefix))
}

// ---- handlers ----

impl From<RepoError> for AppError {
    fn from(err: RepoError) -> Self {
        match err {
            RepoError::IdempotencyConflict => AppError::IdempotencyConflict,
            RepoError::AtCapacity => AppError::SagasAtCapacity,
            RepoError::Internal(cause) => AppError::Internal(cause),
        }
    }
}

/// Place an order.
///
/// Starts the saga and answers at once: the order is `pending` until the other services
/// have reacted. Follow `Location` to watch it. With an `Idempotency-Key`, repeating the
/// request returns the same order; reusing the key with a different body is a 422. A customer
/// key places orders for its own customer only (403 otherwise); an admin key for anyone.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    request_body(content = PlaceOrderRequest, content_type = "application/json"),
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "1 to 255 visible ASCII characters; the same key and body return the same order"),
    ),
    responses(
        (status = 202, description = "Order accepted; the saga has started", body = OrderView,
            headers(
                ("Location" = String, description = "/orders/{id}"),
                ("Idempotent-Replayed" = String, description = "`true` when an earlier request with this Idempotency-Key created the order"),
            )),
        (status = 400, description = "Malformed JSON, or a malformed Idempotency-Key header", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type missing or not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body breaks the rules: a missing field or wrong type, empty items, more than 100 lines, quantity outside 1..=1000, a country that is not two letters, a body over 64 KiB; or the Idempotency-Key was used with a different body", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (no details)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many orders in progress (the bound on open sagas), too many requests in flight, or the request timed out; nothing was placed", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn place_order<R: OrderRepository>(
    caller: Principal,
    State(repo): State<R>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<PlaceOrderRequest>,
) -> Result<Response, AppError> {
    let cmd = PlaceOrder::try_from(request).map_err(AppError::validation)?;
    if !caller.may_act_for(cmd.customer_id.as_str()) {
        return Err(AppError::Forbidden("a customer key places orders for its own customer only".to_owned()));
    }
    let idempotency = headers
        .get(IDEMPOTENCY_KEY)
        .map(|value| {
            IdempotencyKey::parse(value.as_bytes())
                .map_err(|message| AppError::InvalidHeader { header: "Idempotency-Key", message: message.to_owned() })
        })
        .transpose()?
        .map(|key| IdempotencyRequest { key, body_fingerprint: fingerprint(&cmd) });

    let placed = repo.place(cmd, idempotency).await?;
    tracing::Span::current().record("order.id", placed.view.id.to_string());

    let location =
        HeaderValue::try_from(format!("/orders/{}", placed.view.id)).map_err(|err| AppError::Internal(err.into()))?;
    let mut response = (StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(placed.view)).into_response();
    if placed.replayed {
        response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Get an order with its timeline.
///
/// With a customer key, another customer's order is a 404, like an order that does not exist.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    params(("id" = String, Path, description = "The order id (a UUID)")),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 404, description = "No order has this id, the id is not a UUID, or the order belongs to another customer than the key's", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (no details)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_order<R: OrderRepository>(
    caller: Principal,
    State(repo): State<R>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderView>, AppError> {
    let id = id.ok().and_then(|Path(raw)| Uuid::try_parse(&raw).ok()).ok_or(AppError::OrderNotFound)?;
    tracing::Span::current().record("order.id", id.to_string());
    let view = repo.get(id).await?.ok_or(AppError::OrderNotFound)?;
    // Another customer's order is not found, exactly like one that does not exist.
    if !caller.may_act_for(&view.customer_id) {
        return Err(AppError::OrderNotFound);
    }
    Ok(Json(view))
}

/// The raw query of `GET /orders`; every value is text until parsed.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListParams {
    customer_id: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl TryFrom<ListParams> for ListQuery {
    type Error = Vec<Violation>;

    /// An empty value counts as absent, so `?customer_id=&status=` lists everything.
    fn try_from(params: ListParams) -> Result<Self, Self::Error> {
        fn present(value: Option<String>) -> Option<String> {
            value.filter(|v| !v.is_empty())
        }
        let mut violations = Vec::new();
        let customer_id = present(params.customer_id).and_then(|raw| {
            CustomerId::parse(raw)
                .map_err(|err| violations.push(Violation::at_parameter("customer_id", err.message())))
                .ok()
        });
        let status = present(params.status).and_then(|raw| {
            raw.parse::<OrderStatus>()
                .map_err(|_| {
                    let names: Vec<_> = OrderStatus::ALL.map(OrderStatus::as_str).into();
                    violations
                        .push(Violation::at_parameter("status", format!("status must be one of {}", names.join(", "))))
                })
                .ok()
        });
        let limit = match present(params.limit) {
            None => Some(PageLimit::DEFAULT),
            Some(raw) => PageLimit::parse(&raw)
                .map_err(|message| violations.push(Violation::at_parameter("limit", message)))
                .ok(),
        };
        let cursor = present(params.cursor).and_then(|raw| {
            Cursor::decode(&raw).map_err(|err| violations.push(Violation::at_parameter("cursor", err.to_string()))).ok()
        });
        match limit {
            Some(limit) if violations.is_empty() => Ok(Self { customer_id, status, limit, cursor }),
            _ => Err(violations),
        }
    }
}

/// List orders, newest first.
///
/// Filter by customer and status; page with `limit` and the `next_cursor` of the previous
/// page. An empty parameter counts as absent. A customer key lists only its own customer's
/// orders (naming another customer is a 403).
#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    params(
        ("customer_id" = Option<String>, Query, pattern = "^[A-Za-z0-9._:-]+$", description = "Only this customer's orders"),
        ("status" = Option<OrderStatusSchema>, Query, description = "Only orders in this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Page size, 1 to 200 (default 50); more than 200 is a 422, not clamped"),
        ("cursor" = Option<String>, Query, description = "The opaque `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 422, description = "An unknown status, a limit outside 1..=200, or a cursor this API did not hand out", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error (no details)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_orders<R: OrderRepository>(
    caller: Principal,
    State(repo): State<R>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<OrderPage>, AppError> {
    let Query(params) = params.map_err(|rejection| {
        AppError::validation(vec![Violation { detail: rejection.body_text(), pointer: None, parameter: None }])
    })?;
    let mut query = ListQuery::try_from(params).map_err(AppError::validation)?;
    if let Some(own) = caller.customer() {
        match &query.customer_id {
            Some(asked) if asked != own => {
                return Err(AppError::Forbidden("a customer key lists its own customer's orders only".to_owned()));
            }
            _ => query.customer_id = Some(own.clone()),
        }
    }
    let page = repo.list(query).await?;
    Ok(Json(page))
}

/// Property tests of the request parsers: whatever JSON-shaped input arrives, parsing never
/// panics, and it fails exactly when some field breaks its rule, naming every such field.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn field() -> impl Strategy<Value = String> {
        prop_oneof!["\\PC{0,70}", "[a-z-]{1,10}", Just(String::new()), Just(" x".to_owned())]
    }

    proptest! {
        #[test]
        fn placing_parses_exactly_the_valid_requests_and_names_every_broken_rule(
            customer_id in field(),
            items in proptest::collection::vec((field(), -5i64..1100), 0..4),
            country in "\\PC{0,3}",
            name in proptest::option::of("\\PC{0,5}"),
        ) {
            let request = PlaceOrderRequest {
                customer_id: customer_id.clone(),
                items: items.iter().map(|(sku, quantity)| ItemRequest { sku: sku.clone(), quantity: *quantity }).collect(),
                ship_to: ShipToRequest { country: country.clone(), name, line1: None, city: None, postal_code: None },
            };
            match PlaceOrder::try_from(request) {
                Ok(cmd) => {
                    prop_assert_eq!(cmd.customer_id.as_str(), customer_id.as_str());
                    prop_assert_eq!(cmd.items.as_slice().len(), items.len());
                }
                Err(violations) => {
                    prop_assert!(!violations.is_empty());
                    for v in &violations {
                        prop_assert!(v.pointer.as_deref().is_some_and(|p| p.starts_with("#/")));
                    }
                    let customer_ok = CustomerId::parse(customer_id.clone()).is_ok();
                    let has = |p: &str| violations.iter().any(|v| v.pointer.as_deref() == Some(p));
                    prop_assert_eq!(has("#/customer_id"), !customer_ok);
                    prop_assert_eq!(has("#/ship_to/country"), CountryCode::parse(&country).is_err());
                }
            }
        }

        #[test]
        fn listing_parameters_parse_or_name_the_parameter(
            customer_id in proptest::option::of(field()),
            status in proptest::option::of("[a-z]{0,12}"),
            limit in proptest::option::of("\\PC{0,4}|[0-9]{1,3}"),
            cursor in proptest::option::of("\\PC{0,10}"),
        ) {
            let params = ListParams { customer_id, status, limit, cursor };
            if let Err(violations) = ListQuery::try_from(params) {
                prop_assert!(!violations.is_empty());
                for v in violations {
                    prop_assert!(matches!(v.parameter.as_deref(), Some("customer_id" | "status" | "limit" | "cursor")));
                }
            }
        }
    }
}
