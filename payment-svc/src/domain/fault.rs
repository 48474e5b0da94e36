//! The fault profile: declines and latency layered on top of the real payment rules, for demos
//! and load tests.
//!
//! Whether an order is declined is a pure function of its id, not a random draw, so a
//! redelivered or replayed message decides the same way, and raising the rate only adds
//! declines (an order declined at rate r is declined at any rate above r).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::DomainError;

/// The namespace the decline draw is hashed in, distinct from payment ids.
const FAULT_NAMESPACE: Uuid = Uuid::from_u128(0x2b8e_5f70_c1d4_4a96_8e3f_0d6a_71b2_c945);

/// What the fault profile says about one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultDecision {
    /// Apply the real rules only.
    Proceed,
    /// Decline the payment (reason `PaymentDeclined`) whatever the balance.
    Decline,
}

/// A validated fault profile. The default injects no faults.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "FaultProfileFields")]
pub struct FaultProfile {
    decline_rate: f64,
    latency_ms: u64,
}

/// The unvalidated shape of a profile, as read from configuration.
#[derive(Debug, Deserialize)]
struct FaultProfileFields {
    #[serde(default)]
    decline_rate: f64,
    #[serde(default)]
    latency_ms: u64,
}

impl TryFrom<FaultProfileFields> for FaultProfile {
    type Error = DomainError;

    fn try_from(fields: FaultProfileFields) -> Result<Self, Self::Error> {
        FaultProfile::new(fields.decline_rate, fields.latency_ms)
    }
}

impl FaultProfile {
    /// A profile declining about `decline_rate` (within `0..=1`) of orders and adding
    /// `latency_ms` to each payment decision.
    pub fn new(decline_rate: f64, latency_ms: u64) -> Result<Self, DomainError> {
        if !(0.0..=1.0).contains(&decline_rate) {
            return Err(DomainError::InvalidDeclineRate { rate: decline_rate });
        }
        Ok(FaultProfile { decline_rate, latency_ms })
    }

    /// No faults.
    pub fn none() -> Self {
        FaultProfile::default()
    }

    pub fn decline_rate(&self) -> f64 {
        self.decline_rate
    }

    pub fn latency_ms(&self) -> u64 {
        self.latency_ms
    }

    /// The latency to add before deciding (the handler sleeps; the domain never does).
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    /// Whether this order is one of the declined fraction: the same answer for the same order,
    /// every time.
    pub fn decides_decline(&self, order_id: Uuid) -> bool {
        if self.decline_rate <= 0.0 {
            return false;
        }
        if self.decline_rate >= 1.0 {
            return true;
        }
        draw(order_id) < self.decline_rate
    }

    /// [`Self::decides_decline`] as a [`FaultDecision`], for [`super::capture`].
    pub fn decision_for(&self, order_id: Uuid) -> FaultDecision {
        if self.decides_decline(order_id) { FaultDecision::Decline } else { FaultDecision::Proceed }
    }
}

/// A number in `[0, 1)` derived from the order id: the top 53 bits of a SHA-1 based UUID v5,
/// stable across platforms and Rust versions (unlike `std`'s hasher).
fn draw(order_id: Uuid) -> f64 {
    let hashed = Uuid::new_v5(&FAULT_NAMESPACE, order_id.as_bytes());
    let (high, _) = hashed.as_u64_pair();
    (high >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders(n: u128) -> impl Iterator<Item = Uuid> {
        (0..n).map(|i| Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
    }

    #[test]
    fn the_default_profile_injects_no_faults() {
        let profile = FaultProfile::default();
        assert_eq!(profile, FaultProfile::none());
        assert_eq!(profile.latency(), Duration::ZERO);
        assert!(orders(1000).all(|order| profile.decision_for(order) == FaultDecision::Proceed));
    }

    #[test]
    fn a_full_decline_rate_declines_every_order() {
        let profile = FaultProfile::new(1.0, 0).expect("profile");
        assert!(orders(1000).all(|order| profile.decides_decline(order)));
    }

    #[test]
    fn the_decision_for_an_order_is_the_same_every_time() {
        let profile = FaultProfile::new(0.5, 0).expect("profile");
        for order in orders(200) {
            assert_eq!(profile.decides_decline(order), profile.decides_decline(order));
        }
    }

    #[test]
    fn about_the_configured_fraction_of_orders_is_declined() {
        let profile = FaultProfile::new(0.3, 0).expect("profile");
        let declined = orders(10_000).filter(|order| profile.decides_decline(*order)).count();
        assert!((2_700..=3_300).contains(&declined), "declined {declined} of 10000");
    }

    #[test]
    fn rates_outside_zero_to_one_are_refused() {
        for rate in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(FaultProfile::new(rate, 0).is_err(), "rate {rate} accepted");
        }
        assert!(FaultProfile::new(0.0, 0).is_ok());
        assert!(FaultProfile::new(1.0, 0).is_ok());
    }

    #[test]
    fn latency_is_in_milliseconds() {
        let profile = FaultProfile::new(0.0, 250).expect("profile");
        assert_eq!(profile.latency_ms(), 250);
        assert_eq!(profile.latency(), Duration::from_millis(250));
    }

    #[test]
    fn a_profile_deserializes_with_defaults_and_validation() {
        let profile: FaultProfile = serde_json::from_str(r#"{"decline_rate": 0.25, "latency_ms": 10}"#).expect("parse");
        assert_eq!(profile, FaultProfile::new(0.25, 10).expect("profile"));
        let empty: FaultProfile = serde_json::from_str("{}").expect("parse");
        assert_eq!(empty, FaultProfile::none());
        assert!(serde_json::from_str::<FaultProfile>(r#"{"decline_rate": 2.0}"#).is_err());
    }

    proptest::proptest! {
        #[test]
        fn raising_the_rate_only_adds_declines(id in proptest::num::u128::ANY, low in 0.0f64..=1.0, high in 0.0f64..=1.0) {
            let (low, high) = if low <= high { (low, high) } else { (high, low) };
            let order = Uuid::from_u128(id);
            let low = FaultProfile::new(low, 0).expect("profile");
            let high = FaultProfile::new(high, 0).expect("profile");
            proptest::prop_assert!(!low.decides_decline(order) || high.decides_decline(order));
        }
    }
}
