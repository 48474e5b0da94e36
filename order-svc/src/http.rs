//! The order API (issue 3, section 4): `POST /orders`, `GET /orders/{id}`, `GET /orders`, and
//! the OpenAPI document at `/openapi.json`. Handlers talk to storage only through
//! [`OrderRepository`]; every error leaves as `application/problem+json` (RFC 9457).

mod extract;
mod openapi;
mod orders;
mod problem;
mod repository;

use axum::Router;
use axum::extract::DefaultBodyLimit;

pub use extract::{BODY_LIMIT_BYTES, JsonBody};
pub use openapi::ApiDoc;
pub use orders::{ItemView, OrderPage, OrderSummary, OrderView, PlaceOrderRequest, ShipToRequest, fingerprint};
pub use problem::{AppError, Problem, Violation};
pub use repository::{
    Cursor, IdempotencyKey, IdempotencyRequest, InvalidCursor, ListQuery, OrderRepository, PageLimit, Placed, RepoError,
};

/// The whole order API with its problem+json fallbacks, ready to serve.
pub fn router<R: OrderRepository>(repo: R) -> Router {
    with_problem_fallbacks(routes(repo))
}

/// The API's routes without fallbacks, for a caller that adds its own routes (`/healthz`,
/// `/metrics`) before calling [`with_problem_fallbacks`].
pub fn routes<R: OrderRepository>(repo: R) -> Router {
    orders::router::<R>().merge(openapi::router()).layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES)).with_state(repo)
}

/// Answers unknown paths with a 404 problem and known paths with an unsupported method with a
/// 405 problem (axum still sets `Allow`). Call it last: the 405 fallback only reaches the
/// routes registered before it.
pub fn with_problem_fallbacks(router: Router) -> Router {
    router.fallback(problem::route_not_found).method_not_allowed_fallback(problem::method_not_allowed)
}
