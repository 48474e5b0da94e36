//! The API's one error type and its RFC 9457 problem details rendering.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:problem:order-svc:validation-error",
    "title": "Request body breaks the order rules",
    "status": 422,
    "detail": "items must contain at least one line",
    "errors": [{"detail": "items must contain at least one line", "pointer": "#/items"}]
}))]
pub struct Problem {
    /// A URI naming the problem type; `about:blank` when the status code says it all.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A URI reference for this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// For validation errors: every rule the body broke.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Violation>,
}

/// One broken rule, shaped like RFC 9457's own example: what is wrong and where, as a JSON
/// Pointer into the body (`#/items/0/quantity`) or the name of a query parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Violation {
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

impl Violation {
    /// A rule broken by the body at `pointer` (RFC 6901, as a URI fragment: `#/items`).
    pub fn at_pointer(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { detail: detail.into(), pointer: Some(pointer.into()), parameter: None }
    }

    /// A rule broken by a query parameter.
    pub fn at_parameter(parameter: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { detail: detail.into(), pointer: None, parameter: Some(parameter.into()) }
    }
}

/// Everything a request can fail with. [`IntoResponse`] maps each variant to its status and a
/// problem body; the `Display` text is for logs.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The body is not JSON (syntax error or truncated): 400.
    #[error("malformed json: {0}")]
    MalformedJson(String),
    /// The body could not be read at all: 400.
    #[error("unreadable request body")]
    UnreadableBody,
    /// A header the API reads is malformed: 400.
    #[error("invalid {header} header: {message}")]
    InvalidHeader { header: &'static str, message: String },
    /// The body did not arrive within the server's body read timeout: 408, and the connection
    /// is closed (the rest of the body may still be on its way).
    #[error("request body not received in time")]
    BodyTimedOut,
    /// Content-Type is missing or not JSON: 415.
    #[error("unsupported media type {found:?}")]
    UnsupportedMediaType { found: Option<String> },
    /// The body is larger than the limit: 422, not 413, since the API documents an oversized
    /// body as one more body that breaks the rules (see [`super::JsonBody`]).
    #[error("request body over {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// Well-formed JSON whose shape does not match (missing field, wrong type): 422.
    #[error("request body does not match the schema: {0}")]
    BodyShape(String),
    /// Well-formed input that breaks the rules: 422.
    #[error("validation failed: {violations:?}")]
    Validation { violations: Vec<Violation> },
    /// An Idempotency-Key reused with a different body: 422.
    #[error("idempotency key reused with a different request body")]
    IdempotencyConflict,
    /// No API key, or one that is not ours: 401 with `WWW-Authenticate`.
    #[error("unauthorized (invalid key: {invalid_key})")]
    Unauthorized { invalid_key: bool },
    /// The client address failed authentication too often: 429 with `Retry-After`, its key
    /// unchecked.
    #[error("too many failed authentications, retry after {retry_after_secs} s")]
    AuthThrottled { retry_after_secs: u64 },
    /// A valid key whose role does not allow this: 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The key used up its request budget: 429 with `Retry-After`.
    #[error("rate limited, retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Too many requests of this key in flight: 429 with `Retry-After`, at once.
    #[error("too many requests in flight for this key")]
    KeyBusy,
    /// Too many requests in flight: 503 with `Retry-After`, at once, rather than queueing.
    #[error("overloaded")]
    Overloaded,
    /// The request took longer than the configured timeout: 503 with `Retry-After`.
    #[error("request timed out")]
    TimedOut,
    /// Too many sagas are open to take another order (admission control): 503 with
    /// `Retry-After`, nothing placed.
    #[error("too many open sagas")]
    SagasAtCapacity,
    /// No order with that id (or the id is not a UUID, or the caller may not see it): 404.
    #[error("order not found")]
    OrderNotFound,
    /// No admin command with that id: 404.
    #[error("admin command not found")]
    CommandNotFound,
    /// No route for that path: 404.
    #[error("route not found")]
    RouteNotFound,
    /// The path exists but not with that method: 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Anything else: 500, logged with its cause chain, opaque to the client.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn validation(violations: Vec<Violation>) -> Self {
        AppError::Validation { violations }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::MalformedJson(_) | AppError::UnreadableBody | AppError::InvalidHeader { .. } => {
                StatusCode::BAD_REQUEST
            }
            AppError::BodyTimedOut => StatusCode::REQUEST_TIMEOUT,
            AppError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::BodyTooLarge { .. }
            | AppError::BodyShape(_)
            | AppError::Validation { .. }
            | AppError::IdempotencyConflict => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::RateLimited { .. } | AppError::KeyBusy | AppError::AuthThrottled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AppError::Overloaded | AppError::TimedOut | AppError::SagasAtCapacity => StatusCode::SERVICE_UNAVAILABLE,
            AppError::OrderNotFound | AppError::CommandNotFound | AppError::RouteNotFound => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem body. Never includes an internal error's cause.
    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        let (slug, title, detail, errors) = match self {
            AppError::MalformedJson(detail) => {
                (Some("malformed-json"), "Request body is not valid JSON", Some(detail.clone()), Vec::new())
            }
            AppError::UnreadableBody => (Some("unreadable-body"), "Request body could not be read", None, Vec::new()),
            AppError::BodyTimedOut => (
                Some("body-timeout"),
                "Request body not received in time",
                Some("the request body did not arrive within the server's body read timeout".to_owned()),
                Vec::new(),
            ),
            AppError::InvalidHeader { header, message } => {
                (Some("invalid-header"), "Invalid request header", Some(format!("{header}: {message}")), Vec::new())
            }
            AppError::UnsupportedMediaType { found } => (
                Some("unsupported-media-type"),
                "Unsupported media type",
                Some(match found {
                    Some(found) => {
                        format!("expected Content-Type: application/json, got {found:?}")
                    }
                    None => "expected Content-Type: application/json, got none".to_owned(),
                }),
                Vec::new(),
            ),
            AppError::BodyTooLarge { limit } => (
                Some("body-too-large"),
                "Request body is too large",
                Some(format!("the request body must be at most {limit} bytes")),
                Vec::new(),
            ),
            AppError::BodyShape(detail) => {
                (Some("validation-error"), "Request body breaks the order rules", Some(detail.clone()), Vec::new())
            }
            AppError::Validation { violations } => (
                Some("validation-error"),
                "Request body breaks the order rules",
                Some(violations.iter().map(|v| v.detail.as_str()).collect::<Vec<_>>().join("; ")),
                violations.clone(),
            ),
            AppError::IdempotencyConflict => (
                Some("idempotency-key-reused"),
                "Idempotency key reused",
                Some("this Idempotency-Key was already used with a different request body".to_owned()),
                Vec::new(),
            ),
            AppError::Unauthorized { invalid_key: false } => (
                Some("unauthorized"),
                "API key required",
                Some("send an API key as Authorization: Bearer <key>".to_owned()),
                Vec::new(),
            ),
            AppError::Unauthorized { invalid_key: true } => (
                Some("unauthorized"),
                "Invalid API key",
                Some("the Authorization header does not carry a valid API key".to_owned()),
                Vec::new(),
            ),
            AppError::Forbidden(detail) => (Some("forbidden"), "Forbidden", Some(detail.clone()), Vec::new()),
            AppError::RateLimited { retry_after_secs } => (
                Some("rate-limited"),
                "Too many requests",
                Some(format!("this API key's request budget is used up; retry in {retry_after_secs} s")),
                Vec::new(),
            ),
            AppError::AuthThrottled { retry_after_secs } => (
                Some("too-many-failed-authentications"),
                "Too many failed authentications",
                Some(format!(
                    "too many requests from this address failed authentication; retry in {retry_after_secs} s"
                )),
                Vec::new(),
            ),
            AppError::KeyBusy => (
                Some("too-many-in-flight"),
                "Too many requests in flight",
                Some("this API key has as many requests in flight as it may; retry when one finished".to_owned()),
                Vec::new(),
            ),
            AppError::Overloaded => (
                Some("overloaded"),
                "Service overloaded",
                Some("too many requests are in flight; retry shortly".to_owned()),
                Vec::new(),
            ),
            AppError::SagasAtCapacity => (
                Some("sagas-at-capacity"),
                "Too many orders in progress",
                Some("the system is at its bound on open sagas; nothing was placed, retry shortly".to_owned()),
                Vec::new(),
            ),
            AppError::TimedOut => (
                Some("request-timeout"),
                "Request timed out",
                Some(
                    "the request took too long and was abandoned; retry it (with an Idempotency-Key for POST /orders)"
                        .to_owned(),
                ),
                Vec::new(),
            ),
            AppError::OrderNotFound => {
                (Some("order-not-found"), "Order not found", Some("no order has this id".to_owned()), Vec::new())
            }
            AppError::CommandNotFound => (
                Some("command-not-found"),
                "Admin command not found",
                Some("no admin command has this id".to_owned()),
                Vec::new(),
            ),
            AppError::RouteNotFound => (None, "Not Found", None, Vec::new()),
            AppError::MethodNotAllowed => (None, "Method Not Allowed", None, Vec::new()),
            AppError::Internal(_) => (None, "Internal Server Error", None, Vec::new()),
        };
        Problem {
            problem_type: slug.map_or_else(|| "about:blank".to_owned(), |slug| format!("urn:problem:order-svc:{slug}")),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            instance: None,
            errors,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let status = self.status();
        let body = self.to_problem();
        let mut response = match serde_json::to_vec(&body) {
            Ok(bytes) => {
                (status, [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))], bytes).into_response()
            }
            // A struct of strings always serializes; keep the status if it ever does not.
            Err(_) => status.into_response(),
        };
        let headers = response.headers_mut();
        match &self {
            AppError::Unauthorized { invalid_key } => {
                let challenge = if *invalid_key {
                    r#"Bearer realm="order-svc", error="invalid_token""#
                } else {
                    r#"Bearer realm="order-svc""#
                };
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            }
            AppError::RateLimited { retry_after_secs } | AppError::AuthThrottled { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            AppError::Overloaded | AppError::TimedOut | AppError::SagasAtCapacity | AppError::KeyBusy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            AppError::BodyTimedOut => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

pub(crate) async fn route_not_found() -> AppError {
    AppError::RouteNotFound
}

pub(crate) async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}
