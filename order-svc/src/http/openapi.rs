//! The OpenAPI 3.1 document of the order API, generated from the handlers' annotations and
//! served at `/openapi.json`. [`CommonResponses`] adds what every protected operation shares:
//! the bearer security requirement and the 401, 403, 429, 500 and 503 answers.

use axum::Json;
use axum::Router;
use axum::routing::get;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use super::admin_routes;
use super::order_routes;
use super::problem::{Problem, Violation};

/// The order API's OpenAPI document. `ApiDoc::openapi()` builds it.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "order-svc",
        description = "Place orders and follow their saga; provision products, stock, accounts and destinations \
            (admin). Every operation but this document needs an API key as `Authorization: Bearer <key>`: a customer \
            key places and reads its own customer's orders only, an admin key does everything. Every error is \
            `application/problem+json` (RFC 9457): 400 malformed JSON or header, 401 a missing or invalid key (with \
            `WWW-Authenticate`), 403 a key whose role does not allow the call, 404 an unknown order, command or route \
            (also another customer's order), 405 a known path with an unsupported method, 408 a body that did not \
            arrive within the body read timeout, 415 a missing or non-JSON Content-Type, 422 a body or query that \
            breaks the rules (including a body over 64 KiB), 429 the key's rate limit or its limit of requests in \
            flight, or too many failed authentications from the address (with `Retry-After`), 500 an internal error \
            with no details, 503 overload or a request timeout (with `Retry-After`). Every response carries \
            `X-Request-Id`: the caller's when it sent a plain one, else a new one."
    ),
    paths(
        order_routes::place_order,
        order_routes::get_order,
        order_routes::list_orders,
        admin_routes::upsert_product,
        admin_routes::adjust_stock,
        admin_routes::credit_account,
        admin_routes::set_balance,
        admin_routes::set_destinations,
        admin_routes::get_command,
        admin_routes::list_commands,
        openapi_json
    ),
    components(schemas(Problem, Violation)),
    modifiers(&CommonResponses),
    tags(
        (name = "orders", description = "The order saga's public API"),
        (name = "admin", description = "Provisioning through admin commands (admin keys only)"),
        (name = "meta", description = "This document")
    )
)]
pub struct ApiDoc;

/// The name of the bearer security scheme.
pub const SECURITY_SCHEME: &str = "api_key";

/// Adds the security scheme, and to every operation but `/openapi.json` the security
/// requirement and the responses every protected operation can give.
struct CommonResponses;

/// Every response names its request (see `shared::request_id`).
fn request_id_header() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some("This request's id: the caller's X-Request-Id when it is a plain token, else a new one"))
        .build()
}

fn problem(description: &str, headers: &[(&str, &str)]) -> RefOr<Response> {
    let mut response =
        ResponseBuilder::new().description(description).header("X-Request-Id", request_id_header()).content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(RefOr::<utoipa::openapi::schema::Schema>::Ref(Ref::from_schema_name("Problem"))))
                .build(),
        );
    for (name, about) in headers {
        response = response.header(
            *name,
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(*about))
                .build(),
        );
    }
    RefOr::T(response.build())
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("API key")
                    .description(Some("An API key; the server keeps only its SHA-256 digest"))
                    .build(),
            ),
        );
        let common = [
            (
                "401",
                problem(
                    "No API key, or not a valid one",
                    &[(
                        "WWW-Authenticate",
                        "Bearer realm=\"order-svc\" (with error=\"invalid_token\" for a wrong key)",
                    )],
                ),
            ),
            ("403", problem("The key's role does not allow this call", &[])),
            (
                "429",
                problem(
                    "The key's rate limit is used up, the key has as many requests in flight as it may, or \
                     requests from this address failed authentication too often",
                    &[("Retry-After", "Seconds to wait")],
                ),
            ),
            ("500", problem("Internal error (no details)", &[])),
            (
                "503",
                problem("Too many requests in flight, or the request timed out", &[("Retry-After", "Seconds to wait")]),
            ),
        ];
        for (path, item) in openapi.paths.paths.iter_mut() {
            let protected = path != "/openapi.json";
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                for response in responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.headers.entry("X-Request-Id".to_owned()).or_insert_with(request_id_header);
                    }
                }
                if operation.request_body.is_some() {
                    responses.entry("408".to_owned()).or_insert_with(|| {
                        problem(
                            "The request body did not arrive within the server's body read timeout; the connection is \
                             closed",
                            &[],
                        )
                    });
                }
                if protected {
                    operation.security = Some(vec![SecurityRequirement::new(SECURITY_SCHEME, Vec::<String>::new())]);
                    for (status, response) in &common {
                        responses.entry((*status).to_owned()).or_insert_with(|| response.clone());
                    }
                } else {
                    // Public, but under the same concurrency limit and timeout.
                    responses.entry("503".to_owned()).or_insert_with(|| common[4].1.clone());
                }
            }
        }
    }
}

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
