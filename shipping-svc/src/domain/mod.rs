//! The shipping domain: which carrier ships an order, on which day, and whether it can at all.
//!
//! Pure decisions over three kinds of aggregate, no I/O:
//!
//! - [`Network`] (stream `network`): the carriers, the countries each serves and
//!   its daily capacity. Seeded from [`NetworkSeed`], changed by [`set_destinations`].
//! - [`CarrierDay`] (stream `carrier-{carrier}-{yyyy-mm-dd}`, see [`CarrierDayId`]): how many
//!   slots of one carrier's day are booked. Its stream version is what keeps two concurrent
//!   bookings from overfilling a day: both read version N, only one appends N + 1.
//! - [`Shipment`] (stream `shipment-{order_id}`): what was decided for one order.
//!
//! Each aggregate names its stream with an associated `stream_id`, as in every service.
//!
//! A handler loads the states a decision needs ([`ScheduleShipment::candidate_slots`] names the
//! carrier days), calls [`schedule`] or [`cancel`], appends the returned [`Decision`]'s events
//! to their streams in one transaction, and publishes its [`PublicEvent`].
//!
//! Domain events serialize with an internal `"type"` tag equal to their `event_type()`, so a
//! stored payload decodes on its own with `serde_json::from_value`. States serialize too, for
//! the event store's snapshots.

pub mod carrier_day;
pub mod decisions;
pub mod network;
pub mod shipment;
pub mod values;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

pub use carrier_day::{CarrierDay, CarrierDayEvent, CarrierDayId, CarrierDays};
pub use decisions::{BOOKING_HORIZON_DAYS, Decision, PublicEvent, ScheduleShipment, SlotChange, cancel, schedule};
pub use network::{
    Carrier, CarrierSeed, Network, NetworkEvent, NetworkSeed, SetDestinations, seed_network, set_destinations,
};
pub use shipment::{Booking, FailureReason, Shipment, ShipmentEvent, shipment_id};
pub use values::{CarrierName, CountryCode};

/// Everything that can make a shipping decision impossible (as opposed to a business failure,
/// which is an event).
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("invalid country code {0:?}: expected an ISO 3166-1 alpha-2 code")]
    InvalidCountry(String),
    #[error("invalid carrier name {0:?}: expected 1 to 40 characters of a-z, 0-9, '-' or '_'")]
    InvalidCarrierName(String),
    #[error("carrier {0} is listed more than once")]
    DuplicateCarrier(CarrierName),
    #[error("unknown carrier {0}")]
    UnknownCarrier(CarrierName),
    #[error("carrier day {0} must be loaded before deciding")]
    SlotNotLoaded(CarrierDayId),
    #[error("invalid network seed")]
    InvalidSeed(#[source] serde_json::Error),
}
