//! The decisions a handler calls for a saga message: [`schedule`] a paid order's shipment or
//! [`cancel`] it. Each returns a [`Decision`]: the events to append per stream and the public
//! event to publish, written by the handler in one transaction.

use chrono::{Days, NaiveDate};
use serde::Serialize;
use shared::contracts::{self, PaymentCaptured, ShipTo, ShipmentCancelled, ShipmentFailed, ShipmentScheduled};
use uuid::Uuid;

use super::DomainError;
use super::carrier_day::{CarrierDayEvent, CarrierDayId, CarrierDays};
use super::network::{Carrier, Network};
use super::shipment::{FailureReason, Shipment, ShipmentEvent, shipment_id};
use super::values::CountryCode;

/// How many days, today included, a shipment may be pushed out when a carrier's day is full.
pub const BOOKING_HORIZON_DAYS: u64 = 7;

/// Command: schedule the shipment of a paid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleShipment {
    pub order_id: Uuid,
    pub customer_id: String,
    pub ship_to: ShipTo,
    /// The first day a shipment may be booked on.
    pub today: NaiveDate,
}

impl ScheduleShipment {
    pub fn from_payment(payment: &PaymentCaptured, today: NaiveDate) -> Self {
        Self {
            order_id: payment.order_id,
            customer_id: payment.customer_id.clone(),
            ship_to: payment.ship_to.clone(),
            today,
        }
    }

    /// The carrier days [`schedule`] may book, in preference order: earliest day first, then
    /// the network's carrier order. The handler loads each of these into [`CarrierDays`].
    /// Empty when no carrier serves the destination.
    pub fn candidate_slots(&self, network: &Network) -> Vec<CarrierDayId> {
        let Ok(country) = CountryCode::try_from(self.ship_to.country.as_str()) else {
            return Vec::new();
        };
        let carriers: Vec<&Carrier> = network.serving(&country).collect();
        (0..BOOKING_HORIZON_DAYS)
            .filter_map(|offset| self.today.checked_add_days(Days::new(offset)))
            .flat_map(|day| carriers.iter().map(move |c| CarrierDayId { carrier: c.name.clone(), day }))
            .collect()
    }
}

/// The public event a decision publishes through the outbox (payload of `shipping.events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PublicEvent {
    Scheduled(ShipmentScheduled),
    Failed(ShipmentFailed),
    Cancelled(ShipmentCancelled),
}

impl PublicEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            PublicEvent::Scheduled(_) => contracts::event_type::SHIPMENT_SCHEDULED,
            PublicEvent::Failed(_) => contracts::event_type::SHIPMENT_FAILED,
            PublicEvent::Cancelled(_) => contracts::event_type::SHIPMENT_CANCELLED,
        }
    }

    /// The message key.
    pub fn order_id(&self) -> Uuid {
        match self {
            PublicEvent::Scheduled(e) => e.order_id,
            PublicEvent::Failed(e) => e.order_id,
            PublicEvent::Cancelled(e) => e.order_id,
        }
    }
}

/// A booked or freed slot on one carrier day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotChange {
    pub slot: CarrierDayId,
    pub event: CarrierDayEvent,
}

/// What a decision wants written, all in one transaction: `shipment` appended to the order's
/// shipment stream, `slot.event` to `slot.slot`'s stream, and `publish` put in the outbox.
/// An empty decision (a redelivery, or a step that no longer applies) writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub shipment: Vec<ShipmentEvent>,
    pub slot: Option<SlotChange>,
    pub publish: Option<PublicEvent>,
}

impl Decision {
    pub fn is_empty(&self) -> bool {
        self.shipment.is_empty() && self.slot.is_none() && self.publish.is_none()
    }

    fn failed(command: &ScheduleShipment, reason: FailureReason) -> Self {
        Self {
            shipment: vec![ShipmentEvent::Failed { reason }],
            slot: None,
            publish: Some(PublicEvent::Failed(ShipmentFailed {
                order_id: command.order_id,
                customer_id: command.customer_id.clone(),
                reason: reason.into(),
            })),
        }
    }
}

/// Decides a paid order's shipment: book the first candidate slot with room
/// ([`ScheduleShipment::candidate_slots`]), or fail with a reason. Nothing happens when the
/// shipment was already decided or the order's cancellation was noted first.
///
/// `carrier_days` must hold every candidate slot; a missing one is an error rather than
/// assumed empty, so a handler bug cannot overbook a day.
pub fn schedule(
    shipment: &Shipment,
    command: &ScheduleShipment,
    network: &Network,
    carrier_days: &CarrierDays,
) -> Result<Decision, DomainError> {
    if !matches!(shipment, Shipment::Undecided) {
        return Ok(Decision::default());
    }
    let candidates = command.candidate_slots(network);
    if candidates.is_empty() {
        return Ok(Decision::failed(command, FailureReason::DestinationNotServed));
    }
    for slot in candidates {
        let day = carrier_days.get(&slot).ok_or_else(|| DomainError::SlotNotLoaded(slot.clone()))?;
        let capacity = network.carrier(&slot.carrier).map_or(0, |carrier| carrier.daily_capacity);
        if day.booked() < capacity {
            return Ok(book(command, slot));
        }
    }
    Ok(Decision::failed(command, FailureReason::CarrierCapacityExhausted))
}

fn book(command: &ScheduleShipment, slot: CarrierDayId) -> Decision {
    let shipment_id = shipment_id(command.order_id);
    Decision {
        shipment: vec![ShipmentEvent::Scheduled { shipment_id, carrier: slot.carrier.clone(), ship_date: slot.day }],
        publish: Some(PublicEvent::Scheduled(ShipmentScheduled {
            order_id: command.order_id,
            customer_id: command.customer_id.clone(),
            shipment_id,
            carrier: slot.carrier.to_string(),
            ship_date: slot.day,
            ship_to: command.ship_to.clone(),
        })),
        slot: Some(SlotChange { slot, event: CarrierDayEvent::SlotBooked { order_id: command.order_id } }),
    }
}

/// Undoes an order's shipment on `OrderCancelled`: a scheduled shipment is cancelled and its
/// slot freed (the handler appends to [`Booking::carrier_day`] of
/// [`Shipment::active_booking`]); with nothing scheduled yet the cancellation is noted so a
/// late payment is not shipped. Idempotent: a second cancellation decides nothing.
///
/// Freeing a slot needs no look at the carrier day's state, only its stream (for the version).
pub fn cancel(shipment: &Shipment, order_id: Uuid) -> Decision {
    match shipment {
        Shipment::Undecided => Decision { shipment: vec![ShipmentEvent::CancellationNoted], ..Decision::default() },
        Shipment::Scheduled(booking) => Decision {
            shipment: vec![ShipmentEvent::Cancelled],
            slot: Some(SlotChange { slot: booking.carrier_day(), event: CarrierDayEvent::SlotFreed { order_id } }),
            publish: Some(PublicEvent::Cancelled(ShipmentCancelled {
                order_id,
                shipment_id: booking.shipment_id,
                carrier: booking.carrier.to_string(),
                ship_date: booking.ship_date,
            })),
        },
        // A failed shipment holds nothing to undo and already blocks a later schedule.
        Shipment::Failed(_) | Shipment::Cancelled(_) | Shipment::CancellationNoted => Decision::default(),
    }
}
