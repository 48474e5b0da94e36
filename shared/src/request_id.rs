//! Request ids: every HTTP request gets one, so that a caller, a log line and a span can name
//! the same request. A caller's `X-Request-Id` is kept when it is a plain token (at most
//! [`MAX_LEN`] of ASCII letters, digits and `.`, `_`, `~`, `:`, `/`, `+`, `=`, `-`: UUIDs and
//! the usual vendor formats), since it may join our logs to the caller's; anything else is
//! replaced by a new UUID v7, so a header cannot smuggle text into log lines. The id is
//! returned as `X-Request-Id` on every response, recorded as `request.id` on the request's
//! span, inherited by its child spans, and written on every log line inside them
//! ([`crate::telemetry::ContextLayer`]).

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The header a request id travels in, both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a caller.
pub const MAX_LEN: usize = 128;

/// One request's id (also in the request's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The caller's `X-Request-Id` when it is a plain token, else a new id.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(HEADER)
            .filter(|value| is_plain(value.as_bytes()))
            .map_or_else(Self::generate, |value| Self(value.clone()))
    }

    /// A new id: a UUID v7 (time-ordered, so ids sort like the requests).
    pub fn generate() -> Self {
        // A UUID's text is always a valid header value.
        Self(HeaderValue::from_str(&uuid::Uuid::now_v7().to_string()).unwrap_or(HeaderValue::from_static("unknown")))
    }

    pub fn as_str(&self) -> &str {
        // Only plain ASCII gets in (`is_plain`, or a UUID).
        self.0.to_str().unwrap_or_default()
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

fn is_plain(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b':' | b'/' | b'+' | b'=' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_str(value).expect("header value"));
        headers
    }

    #[test]
    fn a_plain_caller_id_is_kept() {
        for id in ["req-123", "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "Root=1-5f84c7a3-abc;", "a/b+c=="] {
            let kept = RequestId::from_headers(&with(id));
            assert_eq!(kept.as_str() == id, !id.contains(';'), "{id}");
        }
    }

    #[test]
    fn anything_else_is_replaced_by_a_new_uuid() {
        let long = "x".repeat(MAX_LEN + 1);
        for id in ["", "two words", "line\tbreak", "{\"json\":1}", long.as_str()] {
            let replaced = RequestId::from_headers(&with(id));
            assert!(uuid::Uuid::parse_str(replaced.as_str()).is_ok(), "{id:?} became {}", replaced.as_str());
        }
        assert!(uuid::Uuid::parse_str(RequestId::from_headers(&HeaderMap::new()).as_str()).is_ok());
        assert_ne!(RequestId::generate(), RequestId::generate());
    }
}
