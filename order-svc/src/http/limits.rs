//! Limits that keep one client, or a burst, from taking the API down. In the order a request
//! meets them (after authentication, which has its own limit on failures per client address,
//! see [`super::failed_auth`]):
//!
//! 1. **Rate** (per API key): a token bucket of `burst` requests refilled at `per_second`; an
//!    empty bucket is a 429 with `Retry-After`.
//! 2. **In flight per key**: at most [`ApiLimits::max_in_flight_per_key`] requests of one key
//!    are served at once; one more is a 429 with `Retry-After` at once. Checked before the
//!    shared limit, so one key holding its whole share open (say, bodies it never sends) leaves
//!    the rest of the shared limit to the other keys.
//! 3. **In flight, shared**: at most [`ApiLimits::max_concurrent_requests`] requests are served
//!    at once; one more is answered 503 with `Retry-After` at once instead of queueing, so
//!    overload degrades to fast refusals rather than unbounded latency and memory.
//! 4. **Timeout**: a request that takes longer than [`ApiLimits::request_timeout`] is abandoned
//!    with a 503 (its database transaction, if still open, rolls back).
//!
//! `/openapi.json` needs no key: it meets only the shared limit and the timeout. The body size
//! limit is the JSON extractor's (`BODY_LIMIT_BYTES`), a body that arrives too slowly is the
//! server's business (`HTTP_BODY_READ_TIMEOUT_MS`, a 408), and list endpoints bound their
//! `limit` parameter.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// All keys together.
    pub max_concurrent_requests: usize,
    /// Each key on its own (the open mode's one caller, `open`, too).
    pub max_in_flight_per_key: usize,
    /// Failed authentications per client address; `None` = never throttled (still counted and
    /// logged).
    pub auth_failures: Option<RateLimit>,
    /// Open sagas past which new orders are refused (503); 0 = no bound. Size it to the rate
    /// the system sustains times the saga latency you accept: 500 is two and a half seconds of work
    /// at 200 sagas/s.
    pub max_open_sagas: u64,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            rate: Some(RateLimit { per_second: non_zero(200), burst: non_zero(400) }),
            request_timeout: Duration::from_secs(15),
            max_concurrent_requests: 512,
            max_in_flight_per_key: 32,
            auth_failures: Some(RateLimit { per_second: non_zero(10), burst: non_zero(10) }),
            max_open_sagas: 500,
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
    let key = key_of(&request);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(key_id = %key, timeout_ms = limit.as_millis() as u64, "request timed out");
            AppError::TimedOut.into_response()
        }
    }
}

/// The calling key's id, or `anonymous` on a route that needs none.
fn key_of(request: &Request) -> String {
    request.extensions().get::<Principal>().map_or("anonymous", |p| p.key_id.as_str()).to_owned()
}

/// Middleware for routes without a key: serve at most the semaphore's permits at once, refuse
/// the rest at once.
pub async fn concurrency(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    match permits.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => AppError::Overloaded.into_response(),
    }
}

/// The in-flight limits of keyed routes: each key's own, then the shared one.
#[derive(Clone)]
pub struct InFlight {
    per_key: usize,
    /// Requests in flight per key id; a key with none has no entry. Keys are configured API
    /// keys, so the map stays small.
    by_key: Arc<Mutex<HashMap<String, usize>>>,
    shared: Arc<Semaphore>,
}

impl InFlight {
    /// `shared` is the semaphore every route shares (`/openapi.json` takes its permits too).
    pub fn new(per_key: usize, shared: Arc<Semaphore>) -> Self {
        Self { per_key: per_key.max(1), by_key: Arc::default(), shared }
    }

    /// A slot for one request of `key`, or why there is none.
    fn admit(&self, key: &str) -> Result<(KeySlot, OwnedSemaphorePermit), AppError> {
        let slot = {
            let mut by_key = self.by_key.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let count = by_key.entry(key.to_owned()).or_default();
            if *count >= self.per_key {
                return Err(AppError::KeyBusy);
            }
            *count += 1;
            KeySlot { key: key.to_owned(), by_key: self.by_key.clone() }
        };
        // Dropping `slot` on refusal gives the key's slot back.
        let permit = self.shared.clone().try_acquire_owned().map_err(|_| AppError::Overloaded)?;
        Ok((slot, permit))
    }
}

/// One request's place in its key's count, given back when dropped.
struct KeySlot {
    key: String,
    by_key: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let mut by_key = self.by_key.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = by_key.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                by_key.remove(&self.key);
            }
        }
    }
}

/// Middleware (after authentication): a slot of the caller's key and one of the shared limit,
/// or a refusal at once (429 when the key is at its limit, 503 when everyone is).
pub async fn in_flight(State(limits): State<InFlight>, request: Request, next: Next) -> Response {
    let key = key_of(&request);
    match limits.admit(&key) {
        Ok((_slot, _permit)) => next.run(request).await,
        Err(refusal) => {
            if matches!(refusal, AppError::KeyBusy) {
                tracing::info!(key_id = %key, limit = limits.per_key, "too many requests in flight for one key");
            }
            refusal.into_response()
        }
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

    #[test]
    fn a_key_at_its_in_flight_limit_is_refused_and_its_slots_come_back() {
        let limits = InFlight::new(2, Arc::new(Semaphore::new(3)));
        let a1 = limits.admit("a").expect("first");
        let _a2 = limits.admit("a").expect("second");
        assert!(matches!(limits.admit("a"), Err(AppError::KeyBusy)));
        let _b = limits.admit("b").expect("another key");
        assert!(matches!(limits.admit("c"), Err(AppError::Overloaded)), "the shared limit is reached");
        drop(a1);
        assert!(limits.admit("a").is_ok(), "a finished request frees its key's slot and the shared one");
        let by_key = limits.by_key.lock().expect("lock");
        assert_eq!(by_key.get("c"), None, "a refused key keeps no count");
    }
}
