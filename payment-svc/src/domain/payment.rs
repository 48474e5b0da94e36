//! What payment decided for one order: captured, declined, refunded.
//!
//! The payment is what makes the saga messages idempotent at the business level: an order is
//! captured or declined once, refunded at most once and only after a capture, and a
//! cancellation seen before any capture is remembered so a late `InventoryReserved` is not
//! charged.
//!
//! ```text
//! Pending ──Captured──► Captured ──Refunded──► Refunded
//!    └────Declined──► Declined
//! ```

use serde::{Deserialize, Serialize};
use shared::contracts::{CancelReason, CompensationTrigger};
use uuid::Uuid;

/// Prefix of a payment's stream id in the event store.
pub const STREAM_PREFIX: &str = "payment-";

/// The namespace of payment ids (a random v4, fixed forever).
const PAYMENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_2c3e_9a4b_4c8d_b2e1_57a0_93c4_d6e8);

/// The payment id of an order: a UUID v5 of the order id, so a retried or replayed decision
/// produces the same id.
pub fn payment_id(order_id: Uuid) -> Uuid {
    Uuid::new_v5(&PAYMENT_ID_NAMESPACE, order_id.as_bytes())
}

/// Why a payment was declined, in more detail than the public [`CancelReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineCause {
    /// No account is open for the customer.
    UnknownCustomer,
    /// The balance does not cover the amount.
    InsufficientFunds,
    /// The fault profile chose to decline this order.
    FaultInjected,
}

impl DeclineCause {
    /// The public reason carried by `PaymentDeclined`.
    pub fn reason(self) -> CancelReason {
        match self {
            DeclineCause::UnknownCustomer => CancelReason::UnknownCustomer,
            DeclineCause::InsufficientFunds | DeclineCause::FaultInjected => CancelReason::PaymentDeclined,
        }
    }

    /// A bounded label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineCause::UnknownCustomer => "unknown_customer",
            DeclineCause::InsufficientFunds => "insufficient_funds",
            DeclineCause::FaultInjected => "fault_injected",
        }
    }
}

/// What happened to an order's payment. The `type` tag is the stored event type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PaymentEvent {
    /// The amount was charged to the customer's account.
    Captured { payment_id: Uuid, customer_id: String, amount_minor: i64 },
    /// Nothing was charged.
    Declined { customer_id: String, reason: CancelReason, cause: DeclineCause, amount_minor: i64 },
    /// The captured amount went back to the customer's account.
    Refunded { payment_id: Uuid, amount_minor: i64, trigger: CompensationTrigger },
    /// The order was cancelled before anything was captured.
    CancellationNoted,
}

impl PaymentEvent {
    /// Every event type name, for registering decoders and for tests.
    pub const TYPES: [&'static str; 4] = ["Captured", "Declined", "Refunded", "CancellationNoted"];

    /// The stable name stored in the event store's type column.
    pub fn event_type(&self) -> &'static str {
        match self {
            PaymentEvent::Captured { .. } => "Captured",
            PaymentEvent::Declined { .. } => "Declined",
            PaymentEvent::Refunded { .. } => "Refunded",
            PaymentEvent::CancellationNoted => "CancellationNoted",
        }
    }
}

/// Where an order's payment stands.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PaymentStatus {
    /// Nothing decided yet (an empty stream, or only a noted cancellation).
    #[default]
    Pending,
    Captured {
        payment_id: Uuid,
        customer_id: String,
        amount_minor: i64,
    },
    Declined {
        customer_id: String,
        reason: CancelReason,
        cause: DeclineCause,
        amount_minor: i64,
    },
    Refunded {
        payment_id: Uuid,
        customer_id: String,
        amount_minor: i64,
        trigger: CompensationTrigger,
    },
}

/// An order's payment, folded from its stream.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PaymentState {
    pub status: PaymentStatus,
    /// An `OrderCancelled` was observed (noted, or the trigger of the refund).
    pub cancelled: bool,
}

impl PaymentState {
    /// The event-store stream id of an order's payment: `payment-{order_id}`.
    pub fn stream_id(order_id: Uuid) -> String {
        format!("{STREAM_PREFIX}{order_id}")
    }

    /// Folds a stream into its state.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a PaymentEvent>) -> Self {
        events.into_iter().fold(PaymentState::default(), PaymentState::evolve)
    }

    /// `evolve(state, event) -> state`.
    pub fn evolve(mut self, event: &PaymentEvent) -> Self {
        self.apply(event);
        self
    }

    /// Applies one event. Never fails: events are facts; the decisions check the rules.
    pub fn apply(&mut self, event: &PaymentEvent) {
        match event {
            PaymentEvent::Captured { payment_id, customer_id, amount_minor } => {
                self.status = PaymentStatus::Captured {
                    payment_id: *payment_id,
                    customer_id: customer_id.clone(),
                    amount_minor: *amount_minor,
                };
            }
            PaymentEvent::Declined { customer_id, reason, cause, amount_minor } => {
                self.status = PaymentStatus::Declined {
                    customer_id: customer_id.clone(),
                    reason: *reason,
                    cause: *cause,
                    amount_minor: *amount_minor,
                };
            }
            PaymentEvent::Refunded { payment_id, amount_minor, trigger } => {
                let customer_id = self.customer_id().map(str::to_owned).unwrap_or_default();
                self.status = PaymentStatus::Refunded {
                    payment_id: *payment_id,
                    customer_id,
                    amount_minor: *amount_minor,
                    trigger: *trigger,
                };
                if *trigger == CompensationTrigger::OrderCancelled {
                    self.cancelled = true;
                }
            }
            PaymentEvent::CancellationNoted => self.cancelled = true,
        }
    }

    /// The customer the payment was decided for: whose account a refund goes back to.
    pub fn customer_id(&self) -> Option<&str> {
        match &self.status {
            PaymentStatus::Pending => None,
            PaymentStatus::Captured { customer_id, .. }
            | PaymentStatus::Declined { customer_id, .. }
            | PaymentStatus::Refunded { customer_id, .. } => Some(customer_id),
        }
    }

    /// Whether the payment was decided (captured or declined) at some point.
    pub fn is_decided(&self) -> bool {
        !matches!(self.status, PaymentStatus::Pending)
    }

    /// The amount captured and not refunded: the order's net effect on the customer.
    pub fn net_captured_minor(&self) -> i64 {
        match self.status {
            PaymentStatus::Captured { amount_minor, .. } => amount_minor,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured() -> PaymentEvent {
        PaymentEvent::Captured { payment_id: payment_id(Uuid::nil()), customer_id: "c".into(), amount_minor: 500 }
    }

    #[test]
    fn stream_id_is_prefixed_with_payment() {
        assert_eq!(PaymentState::stream_id(Uuid::nil()), "payment-00000000-0000-0000-0000-000000000000");
    }

    #[test]
    fn payment_id_is_deterministic_per_order_and_distinct_across_orders() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert_eq!(payment_id(a), payment_id(a));
        assert_ne!(payment_id(a), payment_id(b));
        assert_ne!(payment_id(a), a);
        assert_eq!(payment_id(a).get_version_num(), 5);
    }

    #[test]
    fn an_empty_stream_is_pending() {
        let state = PaymentState::fold(&[]);
        assert_eq!(state.status, PaymentStatus::Pending);
        assert!(!state.cancelled && !state.is_decided());
        assert_eq!(state.customer_id(), None);
        assert_eq!(state.net_captured_minor(), 0);
    }

    #[test]
    fn captured_holds_the_amount_and_customer() {
        let state = PaymentState::fold(&[captured()]);
        assert!(state.is_decided());
        assert_eq!(state.customer_id(), Some("c"));
        assert_eq!(state.net_captured_minor(), 500);
    }

    #[test]
    fn declined_holds_the_reason_and_nets_nothing() {
        let state = PaymentState::fold(&[PaymentEvent::Declined {
            customer_id: "c".into(),
            reason: CancelReason::UnknownCustomer,
            cause: DeclineCause::UnknownCustomer,
            amount_minor: 500,
        }]);
        assert!(state.is_decided());
        assert_eq!(state.customer_id(), Some("c"));
        assert_eq!(state.net_captured_minor(), 0);
    }

    #[test]
    fn refunded_keeps_the_customer_and_nets_nothing() {
        let state = PaymentState::fold(&[
            captured(),
            PaymentEvent::Refunded {
                payment_id: payment_id(Uuid::nil()),
                amount_minor: 500,
                trigger: CompensationTrigger::ShipmentFailed,
            },
        ]);
        assert_eq!(state.customer_id(), Some("c"));
        assert_eq!(state.net_captured_minor(), 0);
        assert!(!state.cancelled);
    }

    #[test]
    fn a_refund_on_cancellation_marks_the_order_cancelled() {
        let state = PaymentState::fold(&[
            captured(),
            PaymentEvent::Refunded {
                payment_id: payment_id(Uuid::nil()),
                amount_minor: 500,
                trigger: CompensationTrigger::OrderCancelled,
            },
        ]);
        assert!(state.cancelled);
    }

    #[test]
    fn a_noted_cancellation_leaves_the_status_pending() {
        let state = PaymentState::fold(&[PaymentEvent::CancellationNoted]);
        assert!(state.cancelled);
        assert!(!state.is_decided());
    }

    #[test]
    fn decline_causes_map_to_public_reasons() {
        assert_eq!(DeclineCause::UnknownCustomer.reason(), CancelReason::UnknownCustomer);
        assert_eq!(DeclineCause::InsufficientFunds.reason(), CancelReason::PaymentDeclined);
        assert_eq!(DeclineCause::FaultInjected.reason(), CancelReason::PaymentDeclined);
        for cause in [DeclineCause::UnknownCustomer, DeclineCause::InsufficientFunds, DeclineCause::FaultInjected] {
            assert_eq!(serde_json::to_value(cause).expect("serialize"), cause.as_str());
        }
    }

    #[test]
    fn every_event_serializes_with_its_event_type_as_tag_and_round_trips() {
        let events = [
            captured(),
            PaymentEvent::Declined {
                customer_id: "c".into(),
                reason: CancelReason::PaymentDeclined,
                cause: DeclineCause::FaultInjected,
                amount_minor: 1,
            },
            PaymentEvent::Refunded {
                payment_id: Uuid::nil(),
                amount_minor: 1,
                trigger: CompensationTrigger::OrderCancelled,
            },
            PaymentEvent::CancellationNoted,
        ];
        let types: Vec<_> = events.iter().map(PaymentEvent::event_type).collect();
        assert_eq!(types, PaymentEvent::TYPES);
        for event in events {
            let json = serde_json::to_value(&event).expect("serialize");
            assert_eq!(json["type"], event.event_type());
            let back: PaymentEvent = serde_json::from_value(json).expect("deserialize");
            assert_eq!(back, event);
        }
    }
}
