//! Limits that keep one client, or a burst, from taking the API down. Outermost first:
//!
//! 1. **Concurrency**: at most [`ApiLimits::max_concurrent_requests`] requests are served at
//!    once; one more is answered 503 with `Retry-After` at once instead of queueing, so overload
//!    degrades to fast refusals rather than unbounded latency and memory.
//! 2. **Timeout**: a request that takes longer than [`ApiLimits::request_timeout`] is abandoned
//!    with a 503 (its database transaction, if still open, rolls back).
//! 3. **Rate** (after authentication, per API key): a token bucket of `burst` requests refilled
//!    at `per_second`; an empty bucket is a 429 with `Retry-After`.
//!
//! The body size limit is the JSON extractor's (`BODY_LIMIT_BYTES`), and list endpoints bound
//! their `limit` parameter.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::Semaphore;

use super::auth::Principal;
use super::problem::AppError;

/// A per-key request budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests that may be made at once after a quiet period.
    pub burst: NonZeroU32,
}

/// The API's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiLimits {
    /// Per API key; `None` = unlimited.
    pub rate: Option<RateLimit>,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            rate: Some(RateLimit { per_second: non_zero(200), burst: non_zero(400) }),
            request_timeout: Duration::from_secs(15),
            max_concurrent_requests: 512,
        }
    }
}

/// `n`, or 1 for 0.
pub const fn non_zero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// Per-key token buckets. Keys are configured API keys (their ids), so the map stays small.
#[derive(Clone)]
pub struct RateLimiter {
    buckets: Arc<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Self { buckets: Arc::new(DefaultKeyedRateLimiter::keyed(quota)), clock: DefaultClock::default() }
    }

    /// Take one request from `key`'s bucket, or say in how many whole seconds to retry.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.buckets.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Middleware (after authentication): one request from the caller's bucket, or 429.
pub async fn rate_limit(State(limiter): State<RateLimiter>, request: Request, next: Next) -> Response {
    let key = request.extensions().get::<Principal>().map_or("anonymous", |p| p.key_id.as_str()).to_owned();
    match limiter.check(&key) {
        Ok(()) => next.run(request).await,
        Err(retry_after_secs) => {
            tracing::info!(key_id = %key, retry_after_secs, "rate limited");
            AppError::RateLimited { retry_after_secs: retry_after_secs.max(1) }.into_response()
        }
    }
}

/// Middleware: abandon a request that runs longer than the timeout.
pub async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_ms = limit.as_millis() as u64, "request timed out");
            AppError::TimedOut.into_response()
        }
    }
}

/// Middleware: serve at most the semaphore's permits at once, refuse the rest at once.
pub async fn concurrency(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    match permits.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => AppError::Overloaded.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_says_when_to_retry() {
        let limiter = RateLimiter::new(RateLimit { per_second: non_zero(1), burst: non_zero(2) });
        assert_eq!(limiter.check("a"), Ok(()));
        assert_eq!(limiter.check("a"), Ok(()));
        assert_eq!(limiter.check("a"), Err(1), "one request a second: retry within a second");
        assert_eq!(limiter.check("b"), Ok(()), "each key has its own bucket");
    }
}
