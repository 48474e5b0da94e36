//! The OpenAPI 3.1 document of the order API, generated from the handlers' annotations and
//! served at `/openapi.json`.

use axum::Json;
use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;

use super::orders;
use super::problem::{Problem, Violation};

/// The order API's OpenAPI document. `ApiDoc::openapi()` builds it.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "order-svc",
        description = "Place orders and follow their saga. Every error is `application/problem+json` (RFC 9457): \
            400 malformed JSON, 415 missing or non-JSON Content-Type, 422 a body or query that breaks the rules \
            (including a body over 64 KiB), 404 an unknown order or route, 405 a known path with an unsupported \
            method, 500 an internal error with no details."
    ),
    paths(orders::place_order, orders::get_order, orders::list_orders, openapi_json),
    components(schemas(Problem, Violation)),
    tags((name = "orders", description = "The order saga's public API"))
)]
pub struct ApiDoc;

pub(super) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
