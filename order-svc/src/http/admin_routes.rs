//! `/admin`: provision the other services' data through the API (admin keys only). Each call
//! becomes an admin command, audited in order-svc's event store and sent to the owning service
//! through the outbox; it answers `202 Accepted` with the command, whose `status` turns
//! `applied` or `rejected` once the owner has decided (`GET /admin/commands/{id}`).

use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Principal;
use super::extract::JsonBody;
use super::problem::{AppError, Problem, Violation};
use crate::domain::admin_command::{
    AdminCommand, Balance, CarrierName, CommandStatus, Credit, Destinations, Price, ProductName, StockDelta,
};
use crate::domain::{CustomerId, InvalidValue, Sku};
use crate::storage::{
    AdminCommandPage, AdminCommandView, AdminRepository, CommandQuery, CommandStatusSchema, Cursor, PageLimit,
};

pub(super) fn router<A: AdminRepository>() -> Router<A> {
    Router::new()
        .route("/admin/products/{sku}", put(upsert_product::<A>))
        .route("/admin/products/{sku}/stock-adjustments", post(adjust_stock::<A>))
        .route("/admin/accounts/{customer_id}/credits", post(credit_account::<A>))
        .route("/admin/accounts/{customer_id}/balance", put(set_balance::<A>))
        .route("/admin/carriers/{carrier}/destinations", put(set_destinations::<A>))
        .route("/admin/commands", get(list_commands::<A>))
        .route("/admin/commands/{id}", get(get_command::<A>))
}

/// An admin caller: any other key is refused (403) before the request is read further.
pub struct Admin(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        principal.require_admin()?;
        Ok(Admin(principal))
    }
}

// ---- requests ----

/// The body of `PUT /admin/products/{sku}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Mug", "price_minor": 900}))]
pub struct UpsertProductRequest {
    /// Free text without control or invisible (zero-width, bidi, tag) characters, and no
    /// surrounding whitespace.
    #[schema(min_length = 1, max_length = 200, example = "Mug")]
    pub name: String,
    /// Unit price in EUR minor units.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64, example = 900)]
    pub price_minor: i64,
}

/// The body of `POST /admin/products/{sku}/stock-adjustments`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"delta": 100}))]
pub struct StockAdjustmentRequest {
    /// Units added (positive) or written off (negative); not 0.
    #[schema(minimum = -1_000_000_000_i64, maximum = 1_000_000_000_i64, example = 100)]
    pub delta: i64,
}

/// The body of `POST /admin/accounts/{customer_id}/credits`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"amount_minor": 5000}))]
pub struct CreditRequest {
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64, example = 5000)]
    pub amount_minor: i64,
}

/// The body of `PUT /admin/accounts/{customer_id}/balance`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"balance_minor": 100000}))]
pub struct BalanceRequest {
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64, example = 100000)]
    pub balance_minor: i64,
}

/// The body of `PUT /admin/carriers/{carrier}/destinations`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"countries": ["NL", "DE", "BE"]}))]
pub struct DestinationsRequest {
    /// ISO 3166-1 alpha-2 codes (any case); the full set the carrier serves from now on.
    #[schema(max_items = 300, inline)]
    pub countries: Vec<CountryParam>,
}

/// A two-letter country code, for the schema only.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(pattern = "^[A-Za-z]{2}$", example = "NL")]
pub struct CountryParam(pub String);

// ---- handlers ----

/// A path segment parsed into a domain value: an unreadable one is a 404 (no such resource
/// path), an invalid one a 422 naming the parameter.
fn path_value<T>(
    raw: Result<Path<String>, PathRejection>,
    name: &str,
    parse: impl FnOnce(String) -> Result<T, InvalidValue>,
) -> Result<T, AppError> {
    let Path(raw) = raw.map_err(|_| AppError::RouteNotFound)?;
    parse(raw).map_err(|err| AppError::validation(vec![Violation::at_parameter(name, err.message())]))
}

fn body_value<T>(pointer: &str, parsed: Result<T, InvalidValue>) -> Result<T, AppError> {
    parsed.map_err(|err| AppError::validation(vec![Violation::at_pointer(pointer, err.message())]))
}

async fn accept<A: AdminRepository>(repo: &A, command: AdminCommand, admin: &Principal) -> Result<Response, AppError> {
    let view = repo.issue(command, admin.key_id.clone()).await?;
    tracing::info!(
        command.id = %view.id,
        command.r#type = %view.command_type,
        command.target = %view.target,
        key_id = %admin.key_id,
        "admin command issued"
    );
    let location =
        HeaderValue::try_from(format!("/admin/commands/{}", view.id)).map_err(|err| AppError::Internal(err.into()))?;
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(view)).into_response())
}

/// Create a product or change its name or price.
///
/// inventory-svc decides it: a new SKU starts with no stock (add some with a stock adjustment).
#[utoipa::path(
    put,
    path = "/admin/products/{sku}",
    tag = "admin",
    params(("sku" = String, Path, pattern = "^[A-Za-z0-9._:-]+$", description = "The SKU: 1 to 64 ASCII letters, digits, '.', '_', ':' or '-'")),
    request_body(content = UpsertProductRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Command accepted and sent to inventory-svc", body = AdminCommandView,
            headers(("Location" = String, description = "/admin/commands/{id}"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such route (an empty path segment)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type missing or not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid SKU, name or price, or a body that does not match the schema", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upsert_product<A: AdminRepository>(
    Admin(admin): Admin,
    State(repo): State<A>,
    sku: Result<Path<String>, PathRejection>,
    JsonBody(request): JsonBody<UpsertProductRequest>,
) -> Result<Response, AppError> {
    let sku = path_value(sku, "sku", Sku::parse)?;
    let name = body_value("#/name", ProductName::parse(request.name))?;
    let price = body_value("#/price_minor", Price::parse(request.price_minor))?;
    accept(&repo, AdminCommand::UpsertProduct { sku, name, price }, &admin).await
}

/// Add units of stock (positive delta) or write them off (negative).
///
/// inventory-svc refuses an unknown SKU, and a write-off of more units than are available.
#[utoipa::path(
    post,
    path = "/admin/products/{sku}/stock-adjustments",
    tag = "admin",
    params(("sku" = String, Path, pattern = "^[A-Za-z0-9._:-]+$", description = "The SKU: 1 to 64 ASCII letters, digits, '.', '_', ':' or '-'")),
    request_body(content = StockAdjustmentRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Command accepted and sent to inventory-svc", body = AdminCommandView,
            headers(("Location" = String, description = "/admin/commands/{id}"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such route (an empty path segment)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type missing or not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid SKU, a delta of 0 or beyond ±1 000 000 000, or a body that does not match the schema", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn adjust_stock<A: AdminRepository>(
    Admin(admin): Admin,
    State(repo): State<A>,
    sku: Result<Path<String>, PathRejection>,
    JsonBody(request): JsonBody<StockAdjustmentRequest>,
) -> Result<Response, AppError> {
    let sku = path_value(sku, "sku", Sku::parse)?;
    let delta = body_value("#/delta", StockDelta::parse(request.delta))?;
    accept(&repo, AdminCommand::AdjustStock { sku, delta }, &admin).await
}

/// Credit a customer's account.
///
/// payment-svc refuses a credit to an account that is not open (open it by setting its balance).
#[utoipa::path(
    post,
    path = "/admin/accounts/{customer_id}/credits",
    tag = "admin",
    params(("customer_id" = String, Path, pattern = "^[A-Za-z0-9._:-]+$", description = "The customer: 1 to 128 ASCII letters, digits, '.', '_', ':' or '-'")),
    request_body(content = CreditRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Command accepted and sent to payment-svc", body = AdminCommandView,
            headers(("Location" = String, description = "/admin/commands/{id}"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such route (an empty path segment)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type missing or not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid customer id or amount, or a body that does not match the schema", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn credit_account<A: AdminRepository>(
    Admin(admin): Admin,
    State(repo): State<A>,
    customer_id: Result<Path<String>, PathRejection>,
    JsonBody(request): JsonBody<CreditRequest>,
) -> Result<Response, AppError> {
    let customer_id = path_value(customer_id, "customer_id", CustomerId::parse)?;
    let amount = body_value("#/amount_minor", Credit::parse(request.amount_minor))?;
    accept(&repo, AdminCommand::CreditAccount { customer_id, amount }, &admin).await
}

/// Set a customer's balance, opening the account if it is not open yet.
#[utoipa::path(
    put,
    path = "/admin/accounts/{customer_id}/balance",
    tag = "admin",
    params(("customer_id" = String, Path, pattern = "^[A-Za-z0-9._:-]+$", description = "The customer: 1 to 128 ASCII letters, digits, '.', '_', ':' or '-'")),
    request_body(content = BalanceRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Command accepted and sent to payment-svc", body = AdminCommandView,
            headers(("Location" = String, description = "/admin/commands/{id}"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such route (an empty path segment)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type missing or not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid customer id or balance, or a body that does not match the schema", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_balance<A: AdminRepository>(
    Admin(admin): Admin,
    State(repo): State<A>,
    customer_id: Result<Path<String>, PathRejection>,
    JsonBody(request): JsonBody<BalanceRequest>,
) -> Result<Response, AppError> {
    let customer_id = path_value(customer_id, "customer_id", CustomerId::parse)?;
    let balance = body_value("#/balance_minor", Balance::parse(request.balance_minor))?;
    accept(&repo, AdminCommand::SetAccountBalance { customer_id, balance }, &admin).await
}

/// Set the countries a carrier serves (the full set, replacing the current one).
///
/// shipping-svc refuses an unknown carrier. Shipments already scheduled are not affected.
#[utoipa::path(
    put,
    path = "/admin/carriers/{carrier}/destinations",
    tag = "admin",
    params(("carrier" = String, Path, description = "The carrier, 1 to 40 of a-z, 0-9, '-', '_'")),
    request_body(content = DestinationsRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Command accepted and sent to shipping-svc", body = AdminCommandView,
            headers(("Location" = String, description = "/admin/commands/{id}"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such route (an empty path segment)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type missing or not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid carrier name or country code, more than 300 countries, or a body that does not match the schema", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_destinations<A: AdminRepository>(
    Admin(admin): Admin,
    State(repo): State<A>,
    carrier: Result<Path<String>, PathRejection>,
    JsonBody(request): JsonBody<DestinationsRequest>,
) -> Result<Response, AppError> {
    let carrier = path_value(carrier, "carrier", CarrierName::parse)?;
    let countries =
        body_value("#/countries", Destinations::parse(request.countries.into_iter().map(|c| c.0).collect()))?;
    accept(&repo, AdminCommand::SetDestinations { carrier, countries }, &admin).await
}

/// An admin command with its outcome.
#[utoipa::path(
    get,
    path = "/admin/commands/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "The command id (a UUID)")),
    responses(
        (status = 200, description = "The command", body = AdminCommandView),
        (status = 404, description = "No command has this id, or the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_command<A: AdminRepository>(
    Admin(_admin): Admin,
    State(repo): State<A>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<AdminCommandView>, AppError> {
    let id = id.ok().and_then(|Path(raw)| Uuid::try_parse(&raw).ok()).ok_or(AppError::CommandNotFound)?;
    let view = repo.command(id).await?.ok_or(AppError::CommandNotFound)?;
    Ok(Json(view))
}

/// The raw query of `GET /admin/commands`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CommandParams {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl TryFrom<CommandParams> for CommandQuery {
    type Error = Vec<Violation>;

    fn try_from(params: CommandParams) -> Result<Self, Self::Error> {
        let mut violations = Vec::new();
        let present = |value: Option<String>| value.filter(|v| !v.is_empty());
        let status = present(params.status).and_then(|raw| {
            let found = CommandStatus::ALL.into_iter().find(|s| s.as_str() == raw);
            if found.is_none() {
                violations.push(Violation::at_parameter("status", "status must be one of pending, applied, rejected"));
            }
            found
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
            Some(limit) if violations.is_empty() => Ok(Self { status, limit, cursor }),
            _ => Err(violations),
        }
    }
}

/// The audit trail: admin commands, newest first.
#[utoipa::path(
    get,
    path = "/admin/commands",
    tag = "admin",
    params(
        ("status" = Option<CommandStatusSchema>, Query, description = "Only commands in this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Page size, 1 to 200 (default 50)"),
        ("cursor" = Option<String>, Query, description = "The opaque `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of admin commands", body = AdminCommandPage),
        (status = 422, description = "An unknown status, a limit outside 1..=200, or a cursor this API did not hand out", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_commands<A: AdminRepository>(
    Admin(_admin): Admin,
    State(repo): State<A>,
    params: Result<Query<CommandParams>, QueryRejection>,
) -> Result<Json<AdminCommandPage>, AppError> {
    let Query(params) = params.map_err(|rejection| {
        AppError::validation(vec![Violation { detail: rejection.body_text(), pointer: None, parameter: None }])
    })?;
    let query = CommandQuery::try_from(params).map_err(AppError::validation)?;
    Ok(Json(repo.commands(query).await?))
}
