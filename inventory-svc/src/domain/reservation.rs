//! What inventory decided for one order: its reservation, and what became of it.
//!
//! The reservation is what makes the saga messages idempotent at the business level: a
//! reservation that was already decided is never decided again, a release happens at most once,
//! and a cancellation seen before anything was reserved is remembered so a late reservation
//! request does nothing.
//!
//! ```text
//! Pending ──Reserved──► Reserved ──MarkedShipped──► Shipped
//!    │                     │                           │ (only on OrderCancelled)
//!    └──Rejected──► Rejected└──────Released──► Released ◄┘
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use shared::contracts::{CancelReason, CompensationTrigger, PricedLine};
use uuid::Uuid;

/// Prefix of a reservation's stream id in the event store.
pub const STREAM_PREFIX: &str = "reservation-";

/// What happened to an order's reservation. The `type` tag is the stored event type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ReservationEvent {
    /// Every line was reserved and priced from the catalogue.
    Reserved { customer_id: String, lines: Vec<PricedLine>, total_minor: i64 },
    /// Nothing was reserved: `skus` are the ones unknown or short of stock.
    Rejected { customer_id: String, reason: CancelReason, skus: Vec<String> },
    /// The reserved (or, when `from_shipped`, shipped) units went back to available.
    Released { trigger: CompensationTrigger, from_shipped: bool },
    /// The reserved units left with the shipment.
    MarkedShipped,
    /// The order was cancelled before anything was reserved.
    CancellationNoted,
}

impl ReservationEvent {
    /// Every event type name, for registering decoders and for tests.
    pub const TYPES: [&'static str; 5] = ["Reserved", "Rejected", "Released", "MarkedShipped", "CancellationNoted"];

    /// The stable name stored in the event store's type column.
    pub fn event_type(&self) -> &'static str {
        match self {
            ReservationEvent::Reserved { .. } => "Reserved",
            ReservationEvent::Rejected { .. } => "Rejected",
            ReservationEvent::Released { .. } => "Released",
            ReservationEvent::MarkedShipped => "MarkedShipped",
            ReservationEvent::CancellationNoted => "CancellationNoted",
        }
    }
}

/// Where an order's reservation stands.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ReservationStatus {
    /// Nothing decided yet (an empty stream, or only a noted cancellation).
    #[default]
    Pending,
    Reserved {
        customer_id: String,
        lines: Vec<PricedLine>,
        total_minor: i64,
    },
    Rejected {
        reason: CancelReason,
        skus: Vec<String>,
    },
    Shipped {
        customer_id: String,
        lines: Vec<PricedLine>,
        total_minor: i64,
    },
    /// The stock went back; `lines` are the ones that were released.
    Released {
        lines: Vec<PricedLine>,
        total_minor: i64,
        trigger: CompensationTrigger,
        from_shipped: bool,
    },
}

/// An order's reservation, folded from its stream.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReservationState {
    pub status: ReservationStatus,
    /// An `OrderCancelled` was observed (noted, or the trigger of the release).
    pub cancelled: bool,
}

impl ReservationState {
    /// The event-store stream id of an order's reservation: `reservation-{order_id}`.
    pub fn stream_id(order_id: Uuid) -> String {
        format!("{STREAM_PREFIX}{order_id}")
    }

    /// Folds a stream into its state.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a ReservationEvent>) -> Self {
        events.into_iter().fold(ReservationState::default(), ReservationState::evolve)
    }

    /// `evolve(state, event) -> state`.
    pub fn evolve(mut self, event: &ReservationEvent) -> Self {
        self.apply(event);
        self
    }

    /// Applies one event. Never fails: events are facts; the decisions check the rules.
    pub fn apply(&mut self, event: &ReservationEvent) {
        match event {
            ReservationEvent::Reserved { customer_id, lines, total_minor } => {
                self.status = ReservationStatus::Reserved {
                    customer_id: customer_id.clone(),
                    lines: lines.clone(),
                    total_minor: *total_minor,
                };
            }
            ReservationEvent::Rejected { reason, skus, .. } => {
                self.status = ReservationStatus::Rejected { reason: *reason, skus: skus.clone() };
            }
            ReservationEvent::Released { trigger, from_shipped } => {
                let (lines, total_minor) = match std::mem::take(&mut self.status) {
                    ReservationStatus::Reserved { lines, total_minor, .. }
                    | ReservationStatus::Shipped { lines, total_minor, .. }
                    | ReservationStatus::Released { lines, total_minor, .. } => (lines, total_minor),
                    ReservationStatus::Pending | ReservationStatus::Rejected { .. } => (Vec::new(), 0),
                };
                self.status =
                    ReservationStatus::Released { lines, total_minor, trigger: *trigger, from_shipped: *from_shipped };
                if *trigger == CompensationTrigger::OrderCancelled {
                    self.cancelled = true;
                }
            }
            ReservationEvent::MarkedShipped => {
                if let ReservationStatus::Reserved { customer_id, lines, total_minor } =
                    std::mem::take(&mut self.status)
                {
                    self.status = ReservationStatus::Shipped { customer_id, lines, total_minor };
                }
            }
            ReservationEvent::CancellationNoted => self.cancelled = true,
        }
    }

    /// The lines currently holding stock (reserved or shipped), if any.
    pub fn held_lines(&self) -> &[PricedLine] {
        match &self.status {
            ReservationStatus::Reserved { lines, .. } | ReservationStatus::Shipped { lines, .. } => lines,
            _ => &[],
        }
    }

    /// The SKUs whose streams a release or a shipment of this order touches: what the handler
    /// loads before calling [`super::release`] or [`super::mark_shipped`].
    pub fn skus_involved(&self) -> BTreeSet<String> {
        self.held_lines().iter().map(|line| line.sku.clone()).collect()
    }

    /// Whether the reservation was decided (reserved or rejected) at some point.
    pub fn is_decided(&self) -> bool {
        !matches!(self.status, ReservationStatus::Pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: u32, unit: i64) -> PricedLine {
        PricedLine { sku: sku.into(), quantity, unit_price_minor: unit, line_total_minor: unit * i64::from(quantity) }
    }

    fn reserved() -> ReservationEvent {
        ReservationEvent::Reserved {
            customer_id: "cust".into(),
            lines: vec![line("a", 2, 100), line("b", 1, 50)],
            total_minor: 250,
        }
    }

    #[test]
    fn stream_id_is_prefixed_with_reservation() {
        assert_eq!(ReservationState::stream_id(Uuid::nil()), "reservation-00000000-0000-0000-0000-000000000000");
    }

    #[test]
    fn an_empty_stream_is_pending_and_not_cancelled() {
        let state = ReservationState::fold(&[]);
        assert_eq!(state.status, ReservationStatus::Pending);
        assert!(!state.cancelled);
        assert!(!state.is_decided());
        assert!(state.skus_involved().is_empty());
    }

    #[test]
    fn reserved_holds_the_priced_lines() {
        let state = ReservationState::fold(&[reserved()]);
        assert!(state.is_decided());
        assert_eq!(state.held_lines().len(), 2);
        assert_eq!(state.skus_involved().into_iter().collect::<Vec<_>>(), vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn rejected_holds_the_reason_and_no_lines() {
        let state = ReservationState::fold(&[ReservationEvent::Rejected {
            customer_id: "c".into(),
            reason: CancelReason::OutOfStock,
            skus: vec!["a".into()],
        }]);
        assert_eq!(
            state.status,
            ReservationStatus::Rejected { reason: CancelReason::OutOfStock, skus: vec!["a".into()] }
        );
        assert!(state.held_lines().is_empty());
    }

    #[test]
    fn marked_shipped_keeps_the_lines() {
        let state = ReservationState::fold(&[reserved(), ReservationEvent::MarkedShipped]);
        assert!(matches!(state.status, ReservationStatus::Shipped { total_minor: 250, .. }));
        assert_eq!(state.skus_involved().len(), 2);
    }

    #[test]
    fn released_keeps_the_lines_it_released_and_holds_none() {
        let state = ReservationState::fold(&[
            reserved(),
            ReservationEvent::Released { trigger: CompensationTrigger::PaymentDeclined, from_shipped: false },
        ]);
        match &state.status {
            ReservationStatus::Released { lines, total_minor, trigger, from_shipped } => {
                assert_eq!(lines.len(), 2);
                assert_eq!(*total_minor, 250);
                assert_eq!(*trigger, CompensationTrigger::PaymentDeclined);
                assert!(!from_shipped);
            }
            other => panic!("unexpected status {other:?}"),
        }
        assert!(!state.cancelled);
        assert!(state.held_lines().is_empty());
    }

    #[test]
    fn a_release_on_cancellation_marks_the_order_cancelled() {
        let state = ReservationState::fold(&[
            reserved(),
            ReservationEvent::MarkedShipped,
            ReservationEvent::Released { trigger: CompensationTrigger::OrderCancelled, from_shipped: true },
        ]);
        assert!(state.cancelled);
        assert!(matches!(state.status, ReservationStatus::Released { from_shipped: true, .. }));
    }

    #[test]
    fn a_noted_cancellation_leaves_the_status_pending() {
        let state = ReservationState::fold(&[ReservationEvent::CancellationNoted]);
        assert!(state.cancelled);
        assert_eq!(state.status, ReservationStatus::Pending);
    }

    #[test]
    fn marked_shipped_without_a_reservation_changes_nothing() {
        let state = ReservationState::fold(&[ReservationEvent::MarkedShipped]);
        assert_eq!(state, ReservationState::default());
    }

    #[test]
    fn every_event_serializes_with_its_event_type_as_tag_and_round_trips() {
        let events = [
            reserved(),
            ReservationEvent::Rejected {
                customer_id: "c".into(),
                reason: CancelReason::UnknownSku,
                skus: vec!["zzz".into()],
            },
            ReservationEvent::Released { trigger: CompensationTrigger::ShipmentFailed, from_shipped: false },
            ReservationEvent::MarkedShipped,
            ReservationEvent::CancellationNoted,
        ];
        let types: Vec<_> = events.iter().map(ReservationEvent::event_type).collect();
        assert_eq!(types, ReservationEvent::TYPES);
        for event in events {
            let json = serde_json::to_value(&event).expect("serialize");
            assert_eq!(json["type"], event.event_type());
            let back: ReservationEvent = serde_json::from_value(json).expect("deserialize");
            assert_eq!(back, event);
        }
    }

    #[test]
    fn released_payload_uses_the_public_snake_case_trigger() {
        let json = serde_json::to_value(ReservationEvent::Released {
            trigger: CompensationTrigger::OrderCancelled,
            from_shipped: false,
        })
        .expect("serialize");
        assert_eq!(json, serde_json::json!({"type": "Released", "trigger": "order_cancelled", "from_shipped": false}));
    }
}
