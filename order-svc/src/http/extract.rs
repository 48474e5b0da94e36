//! A JSON body extractor whose every rejection is a problem (axum's `Json` answers in text and
//! folds some cases together).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use shared::http_server::BodyReadTimeout;

use super::problem::AppError;

/// The largest request body accepted: 64 KiB. Enforced with `DefaultBodyLimit` on the router.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// A JSON request body, checked in this order:
///
/// 1. `Content-Type` is `application/json` or `application/*+json` (parameters such as
///    `charset` allowed), else 415, also when the header is missing;
/// 2. the body is at most [`BODY_LIMIT_BYTES`], else 422: the API's documented contract (the
///    README's "The API" and "Limits") counts an oversized body among the rule-breaking bodies,
///    so it answers 422 where HTTP would suggest 413; and it arrives within the server's body
///    read timeout, else 408;
/// 3. the bytes are JSON, else 400 (syntax errors, truncated input, empty body);
/// 4. the JSON has the expected shape, else 422 (missing field, wrong type).
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                AppError::BodyTooLarge { limit: BODY_LIMIT_BYTES }
            }
            other if BodyReadTimeout::in_chain(&other) => AppError::BodyTimedOut,
            _ => AppError::UnreadableBody,
        })?;
        // Belt and braces: a router without the DefaultBodyLimit layer still gets the limit.
        if bytes.len() > BODY_LIMIT_BYTES {
            return Err(AppError::BodyTooLarge { limit: BODY_LIMIT_BYTES });
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|err| match err.classify() {
            Category::Data => AppError::BodyShape(err.to_string()),
            Category::Syntax | Category::Eof | Category::Io => AppError::MalformedJson(err.to_string()),
        })
    }
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), AppError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(AppError::UnsupportedMediaType { found: None });
    };
    let raw = value.to_str().unwrap_or_default();
    let essence = raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let is_json = essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json { Ok(()) } else { Err(AppError::UnsupportedMediaType { found: Some(raw.to_owned()) }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_content_type(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn json_content_types_with_parameters_and_suffixes_are_accepted() {
        for value in
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
        {
            assert!(check_json_content_type(&with_content_type(value)).is_ok(), "{value}");
        }
    }

    #[test]
    fn other_or_missing_content_types_are_unsupported() {
        for value in ["text/plain", "application/x-www-form-urlencoded", "json"] {
            assert!(
                matches!(
                    check_json_content_type(&with_content_type(value)),
                    Err(AppError::UnsupportedMediaType { found: Some(_) })
                ),
                "{value}"
            );
        }
        assert!(matches!(
            check_json_content_type(&HeaderMap::new()),
            Err(AppError::UnsupportedMediaType { found: None })
        ));
    }
}
