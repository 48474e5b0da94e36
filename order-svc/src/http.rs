//! The order API: `POST /orders`, `GET /orders/{id}`, `GET /orders`, the admin endpoints under
//! `/admin`, and the OpenAPI document at `/openapi.json`. Handlers talk to storage only
//! through the ports [`OrderRepository`] and [`AdminRepository`] of [`crate::storage`], and
//! return its read models; every error leaves as `application/problem+json` (RFC 9457).
//!
//! Every route but `/openapi.json` needs an API key ([`auth`]); every route runs under the
//! limits of [`limits`].

mod admin_routes;
pub mod auth;
mod extract;
pub mod failed_auth;
pub mod limits;
mod openapi;
mod order_routes;
mod problem;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use tokio::sync::Semaphore;

use crate::storage::{AdminRepository, OrderRepository};

pub use admin_routes::{
    BalanceRequest, CreditRequest, DestinationsRequest, StockAdjustmentRequest, UpsertProductRequest,
};
pub use auth::{ApiKeys, Auth, KeyConfigError, Principal, Role, generate_key, hash_key};
pub use extract::{BODY_LIMIT_BYTES, JsonBody};
pub use limits::{ApiLimits, RateLimit, RateLimiter};
pub use openapi::ApiDoc;
pub use order_routes::{PlaceOrderRequest, ShipToRequest};
pub use problem::{AppError, Problem, Violation};

/// How the API admits requests: who may call it, and how much.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub auth: Auth,
    pub limits: ApiLimits,
}

impl ApiConfig {
    /// These keys, the default limits.
    pub fn with_keys(keys: ApiKeys) -> Self {
        Self { auth: Auth::Keys(keys), limits: ApiLimits::default() }
    }
}

/// The whole API with its problem+json fallbacks, ready to serve.
pub fn router<R: OrderRepository, A: AdminRepository>(orders: R, admin: A, api: &ApiConfig) -> Router {
    with_problem_fallbacks(routes(orders, admin, api))
}

/// The API's routes without fallbacks, for a caller that adds its own routes (`/healthz`)
/// before calling [`with_problem_fallbacks`].
///
/// Every route but `/openapi.json`, outermost first: authentication (with its own limit on
/// failures per client address, see [`failed_auth`]), the per-key rate limit,
/// the in-flight limits (the key's own, then the shared one), the timeout, the body limit.
/// `/openapi.json`: the shared in-flight limit and the timeout. See [`limits`].
pub fn routes<R: OrderRepository, A: AdminRepository>(orders: R, admin: A, api: &ApiConfig) -> Router {
    let shared = Arc::new(Semaphore::new(api.limits.max_concurrent_requests.max(1)));
    let timeout = api.limits.request_timeout;
    let mut protected: Router = order_routes::router::<R>()
        .with_state(orders)
        .merge(admin_routes::router::<A>().with_state(admin))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(from_fn_with_state(timeout, limits::timeout))
        .layer(from_fn_with_state(
            limits::InFlight::new(api.limits.max_in_flight_per_key, shared.clone()),
            limits::in_flight,
        ));
    if let Some(rate) = api.limits.rate {
        protected = protected.layer(from_fn_with_state(RateLimiter::new(rate), limits::rate_limit));
    }
    let public = openapi::router()
        .layer(from_fn_with_state(timeout, limits::timeout))
        .layer(from_fn_with_state(shared, limits::concurrency));
    let authenticator = auth::Authenticator::new(api.auth.clone(), api.limits.auth_failures);
    protected.layer(from_fn_with_state(Arc::new(authenticator), auth::authenticate)).merge(public)
}

/// Answers unknown paths with a 404 problem and known paths with an unsupported method with a
/// 405 problem (axum still sets `Allow`). Call it last: the 405 fallback only reaches the
/// routes registered before it.
pub fn with_problem_fallbacks(router: Router) -> Router {
    router.fallback(problem::route_not_found).method_not_allowed_fallback(problem::method_not_allowed)
}
