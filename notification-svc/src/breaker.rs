//! A circuit breaker in front of the webhook.
//!
//! Closed, it lets every attempt through and counts consecutive transient failures; at
//! [`BreakerConfig::failures_to_open`] it opens. Open, it refuses every attempt for
//! [`BreakerConfig::open_for`], so a webhook that is down costs no requests, no retry budget and
//! no dead letters: the handler reports the webhook unavailable and the consumer loop pauses
//! its partitions until the breaker lets a probe through. Then it is half-open: one attempt
//! goes through; its success closes the breaker, its failure opens it again for another
//! `open_for`. Any answer from the webhook that is not a transient failure (a 2xx, or a 4xx
//! refusal of one notification) shows that it is up, and counts as a success.
//!
//! Its state is a gauge (`saga_webhook_circuit_state`: 0 closed, 1 half-open, 2 open), each
//! change counts in `saga_webhook_circuit_transitions_total{to}`, and `/readyz` shows it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// `NOTIFY_WEBHOOK_BREAKER_FAILURES`: consecutive transient failures (network errors,
    /// timeouts, 408, 429, 5xx) that open the breaker (at least 1).
    pub failures_to_open: u32,
    /// `NOTIFY_WEBHOOK_BREAKER_OPEN_MS`: how long it stays open before a half-open probe.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failures_to_open: 5, open_for: Duration::from_secs(30) }
    }
}

/// The breaker's state, as the gauge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// The gauge's value: 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// Why an attempt was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// How long until a probe may go through (zero while another probe is in flight).
    pub retry_in: Duration,
}

#[derive(Debug)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

impl Phase {
    fn state(&self) -> BreakerState {
        match self {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// A circuit breaker shared by every delivery of one sink.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    phase: Mutex<Phase>,
}

impl CircuitBreaker {
    /// A closed breaker (and its gauge set to closed).
    pub fn new(config: BreakerConfig) -> Self {
        metrics::webhook_circuit_state(BreakerState::Closed);
        Self { config, phase: Mutex::new(Phase::Closed { failures: 0 }) }
    }

    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    pub fn state(&self) -> BreakerState {
        self.with_phase(|phase| phase.state())
    }

    /// May an attempt go now? An open breaker whose time is up turns half-open and lets this
    /// one attempt through as its probe.
    pub fn admit(&self) -> Result<(), Refused> {
        self.admit_at(Instant::now())
    }

    /// [`Self::admit`] at `now` (tests pass their own clock).
    pub fn admit_at(&self, now: Instant) -> Result<(), Refused> {
        self.with_phase(|phase| match *phase {
            Phase::Closed { .. } => Ok(()),
            Phase::Open { until } => {
                if now < until {
                    return Err(Refused { retry_in: until - now });
                }
                transition(phase, Phase::HalfOpen { probing: true });
                Ok(())
            }
            Phase::HalfOpen { probing: true } => Err(Refused { retry_in: Duration::ZERO }),
            Phase::HalfOpen { probing: false } => {
                *phase = Phase::HalfOpen { probing: true };
                Ok(())
            }
        })
    }

    /// The webhook answered (a 2xx, or a refusal that is not transient): close.
    pub fn record_success(&self) {
        self.with_phase(|phase| match phase {
            Phase::Closed { failures } => *failures = 0,
            _ => transition(phase, Phase::Closed { failures: 0 }),
        })
    }

    /// An attempt failed transiently: count it, and open at the threshold (or at once when
    /// it was the half-open probe).
    pub fn record_failure(&self) {
        self.record_failure_at(Instant::now());
    }

    /// [`Self::record_failure`] at `now` (tests pass their own clock).
    pub fn record_failure_at(&self, now: Instant) {
        let open = Phase::Open { until: now + self.config.open_for };
        self.with_phase(|phase| match phase {
            Phase::Closed { failures } => {
                *failures += 1;
                if *failures >= self.config.failures_to_open {
                    transition(phase, open);
                }
            }
            Phase::HalfOpen { .. } => transition(phase, open),
            // An attempt let through before the breaker opened: it stays open as it is.
            Phase::Open { .. } => {}
        })
    }

    fn with_phase<T>(&self, f: impl FnOnce(&mut Phase) -> T) -> T {
        // A panic while holding the lock cannot leave the phase half-written (every change is
        // one assignment), so a poisoned lock is used as it is.
        let mut phase = self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut phase)
    }
}

fn transition(phase: &mut Phase, to: Phase) {
    let (from, to_state) = (phase.state(), to.state());
    *phase = to;
    if from != to_state {
        metrics::webhook_circuit_transition(to_state);
        tracing::warn!(from = from.as_str(), to = to_state.as_str(), "webhook circuit breaker changed state");
    }
}

impl shared::ops::ReadinessCheck for CircuitBreaker {
    fn name(&self) -> &'static str {
        "webhook_circuit"
    }

    /// Informational: an open breaker keeps the service ready. It is doing what it should
    /// (holding its backlog until the webhook is back), and a restart or a removal from a
    /// load balancer would not bring the webhook back.
    fn report(&self) -> (serde_json::Value, bool) {
        (serde_json::Value::from(self.state().as_str()), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn breaker(failures_to_open: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig { failures_to_open, open_for: Duration::from_secs(10) })
    }

    #[test]
    fn it_opens_after_the_consecutive_failures_and_refuses_until_the_open_time_is_up() {
        let (breaker, t0) = (breaker(3), Instant::now());

        for _ in 0..2 {
            breaker.record_failure_at(t0);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.record_failure_at(t0);

        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.admit_at(t0), Err(Refused { retry_in: 10 * SECOND }));
        assert_eq!(breaker.admit_at(t0 + 4 * SECOND), Err(Refused { retry_in: 6 * SECOND }));
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let breaker = breaker(3);

        breaker.record_failure();
        breaker.record_failure();
        breaker.record_success();
        breaker.record_failure();
        breaker.record_failure();

        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.admit(), Ok(()));
    }

    #[test]
    fn after_the_open_time_one_probe_goes_through_and_its_success_closes_the_breaker() {
        let (breaker, t0) = (breaker(1), Instant::now());
        breaker.record_failure_at(t0);

        assert_eq!(breaker.admit_at(t0 + 10 * SECOND), Ok(()), "the probe");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(
            breaker.admit_at(t0 + 11 * SECOND),
            Err(Refused { retry_in: Duration::ZERO }),
            "one probe at a time"
        );
        breaker.record_success();

        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.admit(), Ok(()));
    }

    #[test]
    fn a_failed_probe_opens_the_breaker_for_another_open_time() {
        let (breaker, t0) = (breaker(2), Instant::now());
        breaker.record_failure_at(t0);
        breaker.record_failure_at(t0);
        assert_eq!(breaker.admit_at(t0 + 10 * SECOND), Ok(()));

        breaker.record_failure_at(t0 + 12 * SECOND);

        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.admit_at(t0 + 12 * SECOND), Err(Refused { retry_in: 10 * SECOND }));
    }

    #[test]
    fn the_gauge_values_are_zero_closed_one_half_open_two_open() {
        let values: Vec<f64> =
            [BreakerState::Closed, BreakerState::HalfOpen, BreakerState::Open].map(BreakerState::gauge_value).into();

        assert_eq!(values, vec![0.0, 1.0, 2.0]);
    }
}
