//! Failed authentications cost the caller something and leave a trace: each is counted
//! (`saga_http_auth_failures_total` by reason), logged (at most one line a second, with the
//! client address and how many lines were left out), and spends a token of the client
//! address's bucket. An address whose bucket is empty gets 429 with `Retry-After` on every
//! request that needs a key, without its key being checked (so a guessed key cannot be told
//! from a wrong one while throttled), until the bucket refills.
//!
//! The address is the connecting one (behind a proxy, the proxy's; `X-Forwarded-For` is not
//! trusted). IPv6 addresses count by their /64 prefix, which one host usually holds whole.
//! Requests without a known address (tests driving the router directly) share one bucket. At
//! most [`MAX_TRACKED`] addresses are tracked; past that, buckets that are full again are
//! dropped, and new addresses go untracked (but counted and logged) until some are.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::limits::RateLimit;

/// The most client addresses tracked at once.
pub const MAX_TRACKED: usize = 10_000;

/// Why authentication failed (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No `Authorization` header.
    MissingKey,
    /// An `Authorization` header that is not a bearer token we could read.
    Malformed,
    /// A well-formed key that is not one of ours.
    UnknownKey,
    /// Refused unchecked: the address failed too often.
    Throttled,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::MissingKey => "missing_key",
            Failure::Malformed => "malformed",
            Failure::UnknownKey => "unknown_key",
            Failure::Throttled => "throttled",
        }
    }
}

/// Per-address failure buckets, the sampled log and the counter.
#[derive(Debug)]
pub struct FailedAuth {
    limit: Option<RateLimit>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    log: Sampler,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl FailedAuth {
    /// `limit`: failures per second per address and the burst allowed; `None` counts and logs
    /// failures but throttles nobody.
    pub fn new(limit: Option<RateLimit>) -> Self {
        Self { limit, buckets: Mutex::default(), log: Sampler::new(Duration::from_secs(1)) }
    }

    /// Seconds until `client` may try again, while its bucket is empty.
    pub fn blocked(&self, client: Option<IpAddr>, now: Instant) -> Option<u64> {
        let limit = self.limit?;
        let buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = refilled(*buckets.get(&bucket_key(client))?, limit, now);
        (bucket.tokens < 1.0).then(|| {
            let wait = (1.0 - bucket.tokens) / f64::from(limit.per_second.get());
            (wait.ceil() as u64).max(1)
        })
    }

    /// Record a failure from `client`: counted, logged (sampled), and, unless it was refused
    /// unchecked, taken from the address's bucket.
    pub fn record(&self, client: Option<IpAddr>, failure: Failure, now: Instant) {
        crate::metrics::auth_failure(failure.as_str());
        if let Some(suppressed) = self.log.sample(now) {
            tracing::warn!(
                client.address = %client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
                reason = failure.as_str(),
                suppressed,
                "authentication failed"
            );
        }
        if failure != Failure::Throttled
            && let Some(limit) = self.limit
        {
            self.spend(bucket_key(client), limit, now);
        }
    }

    fn spend(&self, key: IpAddr, limit: RateLimit, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&key) {
            buckets.retain(|_, bucket| refilled(*bucket, limit, now).tokens < f64::from(limit.burst.get()));
            if buckets.len() >= MAX_TRACKED {
                return;
            }
        }
        let full = Bucket { tokens: f64::from(limit.burst.get()), at: now };
        let bucket = refilled(*buckets.get(&key).unwrap_or(&full), limit, now);
        buckets.insert(key, Bucket { tokens: (bucket.tokens - 1.0).max(0.0), at: now });
    }
}

/// The bucket as it stands at `now`: refilled at the limit's rate, up to its burst.
fn refilled(bucket: Bucket, limit: RateLimit, now: Instant) -> Bucket {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    let tokens = (bucket.tokens + elapsed * f64::from(limit.per_second.get())).min(f64::from(limit.burst.get()));
    Bucket { tokens, at: now }
}

/// The address a client is counted under: IPv4 as is, IPv6 by its /64 prefix, an unknown
/// address as the unspecified one.
fn bucket_key(client: Option<IpAddr>) -> IpAddr {
    match client.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V6(v6)) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        Some(v4) => v4,
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Lets one event through per period, and counts the others.
#[derive(Debug)]
struct Sampler {
    period: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Sampler {
    fn new(period: Duration) -> Self {
        Self { period, last: Mutex::new(None), suppressed: AtomicU64::new(0) }
    }

    /// `Some(events left out since the last one let through)` if this one goes through.
    fn sample(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| now.saturating_duration_since(at) < self.period) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::limits::non_zero;

    fn limit(per_second: u32, burst: u32) -> Option<RateLimit> {
        Some(RateLimit { per_second: non_zero(per_second), burst: non_zero(burst) })
    }

    #[test]
    fn an_address_is_blocked_after_its_burst_of_failures_until_one_refills() {
        let failures = FailedAuth::new(limit(2, 3));
        let (a, b) = (Some("192.0.2.1".parse().expect("ip")), Some("192.0.2.2".parse().expect("ip")));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(failures.blocked(a, t0), None);
            failures.record(a, Failure::UnknownKey, t0);
        }
        assert_eq!(failures.blocked(a, t0), Some(1), "half a second at 2 a second, rounded up");
        assert_eq!(failures.blocked(b, t0), None, "each address has its own bucket");
        assert_eq!(failures.blocked(a, t0 + Duration::from_millis(500)), None, "one failure refilled");
        failures.record(a, Failure::Throttled, t0 + Duration::from_millis(500));
        assert_eq!(failures.blocked(a, t0 + Duration::from_millis(500)), None, "refusals spend nothing");
    }

    #[test]
    fn ipv6_clients_count_by_their_64_prefix_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_prefix: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert_eq!(bucket_key(Some(one)), bucket_key(Some(same_prefix)));
        assert_ne!(bucket_key(Some(one)), bucket_key(Some("2001:db8:1:3::1".parse().expect("ip"))));
        assert_eq!(
            bucket_key(Some("::ffff:192.0.2.1".parse().expect("ip"))),
            "192.0.2.1".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn tracking_is_bounded_and_full_buckets_make_room() {
        let failures = FailedAuth::new(limit(1000, 1));
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            failures.record(Some(IpAddr::from(i.to_be_bytes())), Failure::UnknownKey, t0);
        }
        let newcomer = Some(IpAddr::from([203, 0, 113, 7]));
        failures.record(newcomer, Failure::UnknownKey, t0);
        assert_eq!(failures.blocked(newcomer, t0), None, "untracked while every bucket is empty");
        let later = t0 + Duration::from_secs(1);
        failures.record(newcomer, Failure::UnknownKey, later);
        assert_eq!(failures.blocked(newcomer, later), Some(1), "refilled buckets were dropped to make room");
        assert!(failures.buckets.lock().expect("lock").len() <= MAX_TRACKED);
    }

    #[test]
    fn the_log_lets_one_line_through_a_period_and_counts_the_rest() {
        let sampler = Sampler::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(sampler.sample(t0), Some(0));
        assert_eq!(sampler.sample(t0 + Duration::from_millis(10)), None);
        assert_eq!(sampler.sample(t0 + Duration::from_millis(20)), None);
        assert_eq!(sampler.sample(t0 + Duration::from_secs(1)), Some(2));
    }
}
