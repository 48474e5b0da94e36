//! The shipment of one order (stream `shipment-{order_id}`): what was decided for it, and the
//! deterministic shipment id a redelivered payment maps to again.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use shared::contracts::CancelReason;
use uuid::Uuid;

use super::carrier_day::CarrierDayId;
use super::values::CarrierName;

/// Namespace of the UUID v5 shipment ids, so a redelivered payment yields the same shipment id.
const SHIPMENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_1c3e_8a52_4c0b_9e7d_5b2a_0c84_1f37);

/// Why a shipment could not be scheduled: a business outcome, published as `ShipmentFailed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// No carrier serves the destination country (or it is not a country code at all).
    DestinationNotServed,
    /// Every serving carrier is full on every day of the booking horizon.
    CarrierCapacityExhausted,
}

impl From<FailureReason> for CancelReason {
    fn from(reason: FailureReason) -> Self {
        match reason {
            FailureReason::DestinationNotServed => CancelReason::DestinationNotServed,
            FailureReason::CarrierCapacityExhausted => CancelReason::CarrierCapacityExhausted,
        }
    }
}

/// The deterministic shipment id of an order: UUID v5 of the order id.
pub fn shipment_id(order_id: Uuid) -> Uuid {
    Uuid::new_v5(&SHIPMENT_ID_NAMESPACE, order_id.as_bytes())
}

/// Where and when an order ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    pub shipment_id: Uuid,
    pub carrier: CarrierName,
    pub ship_date: NaiveDate,
}

impl Booking {
    pub fn carrier_day(&self) -> CarrierDayId {
        CarrierDayId { carrier: self.carrier.clone(), day: self.ship_date }
    }
}

/// Events of the [`Shipment`] aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ShipmentEvent {
    Scheduled {
        shipment_id: Uuid,
        carrier: CarrierName,
        ship_date: NaiveDate,
    },
    Failed {
        reason: FailureReason,
    },
    /// A scheduled shipment was called off and its slot freed.
    Cancelled,
    /// The order was cancelled before anything was scheduled; a late payment must not be.
    CancellationNoted,
}

impl ShipmentEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            ShipmentEvent::Scheduled { .. } => "Scheduled",
            ShipmentEvent::Failed { .. } => "Failed",
            ShipmentEvent::Cancelled => "Cancelled",
            ShipmentEvent::CancellationNoted => "CancellationNoted",
        }
    }
}

/// What has been decided for one order's shipment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Shipment {
    #[default]
    Undecided,
    Scheduled(Booking),
    Failed(FailureReason),
    /// Was scheduled, then cancelled; the slot has been freed.
    Cancelled(Booking),
    /// Cancelled before anything was scheduled.
    CancellationNoted,
}

impl Shipment {
    /// `shipment-{order_id}`.
    pub fn stream_id(order_id: Uuid) -> String {
        format!("shipment-{order_id}")
    }

    /// The booking that currently holds a slot, if any.
    pub fn active_booking(&self) -> Option<&Booking> {
        match self {
            Shipment::Scheduled(booking) => Some(booking),
            _ => None,
        }
    }

    pub fn apply(self, event: &ShipmentEvent) -> Self {
        match (self, event) {
            (Shipment::Undecided, ShipmentEvent::Scheduled { shipment_id, carrier, ship_date }) => {
                Shipment::Scheduled(Booking {
                    shipment_id: *shipment_id,
                    carrier: carrier.clone(),
                    ship_date: *ship_date,
                })
            }
            (Shipment::Undecided, ShipmentEvent::Failed { reason }) => Shipment::Failed(*reason),
            (Shipment::Undecided, ShipmentEvent::CancellationNoted) => Shipment::CancellationNoted,
            (Shipment::Scheduled(booking), ShipmentEvent::Cancelled) => Shipment::Cancelled(booking),
            // `decide` never emits any other transition; a stray event leaves the state as is.
            (state, _) => state,
        }
    }
}
