//! The shipping domain: which carrier ships an order, on which day, and whether it can at all.
//!
//! Pure decisions over three kinds of aggregate, no I/O:
//!
//! - [`Network`] (stream [`Network::STREAM_ID`]): the carriers, the countries each serves and
//!   its daily capacity. Seeded from [`NetworkSeed`], changed by [`set_destinations`].
//! - [`CarrierDay`] (stream `carrier-{carrier}-{yyyy-mm-dd}`, see [`CarrierDayId`]): how many
//!   slots of one carrier's day are booked. Its stream version is what keeps two concurrent
//!   bookings from overfilling a day: both read version N, only one appends N + 1.
//! - [`Shipment`] (stream `shipment-{order_id}`): what was decided for one order.
//!
//! A handler loads the states a decision needs ([`ScheduleShipment::candidate_slots`] names the
//! carrier days), calls [`schedule`] or [`cancel`], appends the returned [`Decision`]'s events
//! to their streams in one transaction, and publishes its [`PublicEvent`].
//!
//! Domain events serialize with an internal `"type"` tag equal to their `event_type()`, so a
//! stored payload decodes on its own with `serde_json::from_value`. States serialize too, for
//! the event store's snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};
use shared::contracts::{
    self, CancelReason, PaymentCaptured, ShipTo, ShipmentCancelled, ShipmentFailed, ShipmentScheduled,
};
use uuid::Uuid;

/// How many days, today included, a shipment may be pushed out when a carrier's day is full.
pub const BOOKING_HORIZON_DAYS: u64 = 7;

/// Namespace of the UUID v5 shipment ids, so a redelivered payment yields the same shipment id.
const SHIPMENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_1c3e_8a52_4c0b_9e7d_5b2a_0c84_1f37);

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

// ---- value types ----

/// An ISO 3166-1 alpha-2 country code, upper case (`"nl"` parses as `NL`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode(String);

impl CountryCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for CountryCode {
    type Error = DomainError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let code = value.trim();
        if code.len() == 2 && code.chars().all(|c| c.is_ascii_alphabetic()) {
            Ok(Self(code.to_ascii_uppercase()))
        } else {
            Err(DomainError::InvalidCountry(value.to_owned()))
        }
    }
}

impl TryFrom<String> for CountryCode {
    type Error = DomainError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::try_from(value.as_str())
    }
}

impl From<CountryCode> for String {
    fn from(code: CountryCode) -> Self {
        code.0
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A carrier's name. Restricted to `[a-z0-9_-]{1,40}` because it is part of stream ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CarrierName(String);

impl CarrierName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for CarrierName {
    type Error = DomainError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let valid = (1..=40).contains(&value.len())
            && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid { Ok(Self(value.to_owned())) } else { Err(DomainError::InvalidCarrierName(value.to_owned())) }
    }
}

impl TryFrom<String> for CarrierName {
    type Error = DomainError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::try_from(value.as_str())
    }
}

impl From<CarrierName> for String {
    fn from(name: CarrierName) -> Self {
        name.0
    }
}

impl fmt::Display for CarrierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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

// ---- network: carriers, destinations, capacity ----

/// One carrier as the seed file describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarrierSeed {
    pub name: CarrierName,
    pub countries: BTreeSet<CountryCode>,
    /// Shipments per day.
    pub daily_capacity: u32,
}

/// The carrier network to start from (`seed/network.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSeed {
    pub carriers: Vec<CarrierSeed>,
}

impl NetworkSeed {
    /// Parses a seed; names and country codes are validated while parsing.
    pub fn from_json(json: &str) -> Result<Self, DomainError> {
        serde_json::from_str(json).map_err(DomainError::InvalidSeed)
    }

    /// The demo network: postnl serves NL and DE, ups serves FR and US, each 1 000 000 a day.
    pub fn demo() -> Self {
        let carrier = |name: &str, countries: [&str; 2]| CarrierSeed {
            name: CarrierName(name.to_owned()),
            countries: countries.into_iter().map(|c| CountryCode(c.to_owned())).collect(),
            daily_capacity: 1_000_000,
        };
        Self { carriers: vec![carrier("postnl", ["NL", "DE"]), carrier("ups", ["FR", "US"])] }
    }
}

/// A carrier in the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carrier {
    pub name: CarrierName,
    pub countries: BTreeSet<CountryCode>,
    pub daily_capacity: u32,
}

/// Events of the [`Network`] aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum NetworkEvent {
    CarrierRegistered { carrier: CarrierName, countries: BTreeSet<CountryCode>, daily_capacity: u32 },
    DestinationsSet { carrier: CarrierName, countries: BTreeSet<CountryCode> },
}

impl NetworkEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            NetworkEvent::CarrierRegistered { .. } => "CarrierRegistered",
            NetworkEvent::DestinationsSet { .. } => "DestinationsSet",
        }
    }
}

/// The carriers shipping-svc can book, in preference order (registration order).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Network {
    carriers: Vec<Carrier>,
}

impl Network {
    pub const STREAM_ID: &'static str = "network";

    /// The network a seed describes, as if [`seed_network`] had been applied to an empty one.
    pub fn from_seed(seed: &NetworkSeed) -> Result<Self, DomainError> {
        Ok(seed_network(&Self::default(), seed)?.iter().fold(Self::default(), Self::apply))
    }

    pub fn carriers(&self) -> &[Carrier] {
        &self.carriers
    }

    pub fn carrier(&self, name: &CarrierName) -> Option<&Carrier> {
        self.carriers.iter().find(|c| &c.name == name)
    }

    /// The carriers serving a country, in preference order.
    pub fn serving<'a>(&'a self, country: &'a CountryCode) -> impl Iterator<Item = &'a Carrier> {
        self.carriers.iter().filter(move |c| c.countries.contains(country))
    }

    pub fn apply(mut self, event: &NetworkEvent) -> Self {
        match event {
            NetworkEvent::CarrierRegistered { carrier, countries, daily_capacity } => {
                if self.carrier(carrier).is_none() {
                    self.carriers.push(Carrier {
                        name: carrier.clone(),
                        countries: countries.clone(),
                        daily_capacity: *daily_capacity,
                    });
                }
            }
            NetworkEvent::DestinationsSet { carrier, countries } => {
                if let Some(c) = self.carriers.iter_mut().find(|c| &c.name == carrier) {
                    c.countries = countries.clone();
                }
            }
        }
        self
    }
}

/// Registers the seed's carriers that the network does not know yet. Carriers already
/// registered keep their current settings, so re-seeding at every start-up is harmless and an
/// admin's changes survive it.
pub fn seed_network(network: &Network, seed: &NetworkSeed) -> Result<Vec<NetworkEvent>, DomainError> {
    let mut seen = BTreeSet::new();
    for carrier in &seed.carriers {
        if !seen.insert(&carrier.name) {
            return Err(DomainError::DuplicateCarrier(carrier.name.clone()));
        }
    }
    Ok(seed
        .carriers
        .iter()
        .filter(|c| network.carrier(&c.name).is_none())
        .map(|c| NetworkEvent::CarrierRegistered {
            carrier: c.name.clone(),
            countries: c.countries.clone(),
            daily_capacity: c.daily_capacity,
        })
        .collect())
}

/// Admin command: the full set of countries a carrier serves from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetDestinations {
    pub carrier: CarrierName,
    pub countries: BTreeSet<CountryCode>,
}

/// Replaces a carrier's served countries. Shipments already scheduled are not affected.
/// Setting the countries it already serves is a no-op.
pub fn set_destinations(network: &Network, command: SetDestinations) -> Result<Vec<NetworkEvent>, DomainError> {
    let carrier =
        network.carrier(&command.carrier).ok_or_else(|| DomainError::UnknownCarrier(command.carrier.clone()))?;
    if carrier.countries == command.countries {
        return Ok(Vec::new());
    }
    Ok(vec![NetworkEvent::DestinationsSet { carrier: command.carrier, countries: command.countries }])
}

// ---- carrier days ----

/// One carrier's shipping day: the identity of a [`CarrierDay`] stream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CarrierDayId {
    pub carrier: CarrierName,
    pub day: NaiveDate,
}

impl CarrierDayId {
    /// `carrier-{carrier}-{yyyy-mm-dd}`.
    pub fn stream_id(&self) -> String {
        format!("carrier-{}-{}", self.carrier, self.day.format("%Y-%m-%d"))
    }
}

impl fmt::Display for CarrierDayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stream_id())
    }
}

/// Events of the [`CarrierDay`] aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum CarrierDayEvent {
    SlotBooked { order_id: Uuid },
    SlotFreed { order_id: Uuid },
}

impl CarrierDayEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            CarrierDayEvent::SlotBooked { .. } => "SlotBooked",
            CarrierDayEvent::SlotFreed { .. } => "SlotFreed",
        }
    }
}

/// How many slots of one carrier's day are booked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CarrierDay {
    booked: u32,
}

impl CarrierDay {
    pub fn booked(&self) -> u32 {
        self.booked
    }

    pub fn apply(self, event: &CarrierDayEvent) -> Self {
        let booked = match event {
            CarrierDayEvent::SlotBooked { .. } => self.booked.saturating_add(1),
            CarrierDayEvent::SlotFreed { .. } => self.booked.saturating_sub(1),
        };
        Self { booked }
    }
}

/// The carrier days a decision looked at, as the handler loaded them (an empty stream is
/// [`CarrierDay::default()`]).
pub type CarrierDays = BTreeMap<CarrierDayId, CarrierDay>;

// ---- shipments ----

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

/// What a decision wants written: append `shipment` to the order's shipment stream and
/// `slot.event` to `slot.slot`'s stream, in one transaction, then publish `public`.
/// An empty decision (a redelivery, or a step that no longer applies) writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub shipment: Vec<ShipmentEvent>,
    pub slot: Option<SlotChange>,
    pub public: Option<PublicEvent>,
}

impl Decision {
    pub fn is_empty(&self) -> bool {
        self.shipment.is_empty() && self.slot.is_none() && self.public.is_none()
    }

    fn failed(command: &ScheduleShipment, reason: FailureReason) -> Self {
        Self {
            shipment: vec![ShipmentEvent::Failed { reason }],
            slot: None,
            public: Some(PublicEvent::Failed(ShipmentFailed {
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
        public: Some(PublicEvent::Scheduled(ShipmentScheduled {
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
            public: Some(PublicEvent::Cancelled(ShipmentCancelled {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn carrier(name: &str) -> CarrierName {
        CarrierName::try_from(name).expect("valid carrier name")
    }

    fn countries(codes: &[&str]) -> BTreeSet<CountryCode> {
        codes.iter().map(|c| CountryCode::try_from(*c).expect("valid country")).collect()
    }

    fn network(carriers: &[(&str, &[&str], u32)]) -> Network {
        Network::from_seed(&NetworkSeed {
            carriers: carriers
                .iter()
                .map(|(name, codes, capacity)| CarrierSeed {
                    name: carrier(name),
                    countries: countries(codes),
                    daily_capacity: *capacity,
                })
                .collect(),
        })
        .expect("valid network")
    }

    fn command(order: u128, country: &str) -> ScheduleShipment {
        ScheduleShipment {
            order_id: Uuid::from_u128(order),
            customer_id: "alice".to_owned(),
            ship_to: ShipTo { country: country.to_owned(), ..ShipTo::default() },
            today: date(2025, 3, 10),
        }
    }

    /// Loads every candidate slot from `booked`, defaulting to an empty day.
    fn load(command: &ScheduleShipment, network: &Network, booked: &BTreeMap<CarrierDayId, CarrierDay>) -> CarrierDays {
        command
            .candidate_slots(network)
            .into_iter()
            .map(|slot| {
                let day = booked.get(&slot).copied().unwrap_or_default();
                (slot, day)
            })
            .collect()
    }

    fn full_day(capacity: u32) -> CarrierDay {
        (0..capacity).fold(CarrierDay::default(), |day, i| {
            day.apply(&CarrierDayEvent::SlotBooked { order_id: Uuid::from_u128(u128::from(i)) })
        })
    }

    fn scheduled(order: u128, carrier_name: &str, day: NaiveDate) -> Shipment {
        Shipment::Scheduled(Booking {
            shipment_id: shipment_id(Uuid::from_u128(order)),
            carrier: carrier(carrier_name),
            ship_date: day,
        })
    }

    #[test]
    fn a_served_destination_books_todays_slot_and_publishes_shipment_scheduled() {
        let network = Network::from_seed(&NetworkSeed::demo()).expect("demo network");
        let cmd = command(1, "NL");
        let days = load(&cmd, &network, &BTreeMap::new());

        let decision = schedule(&Shipment::Undecided, &cmd, &network, &days).expect("decide");

        let slot = CarrierDayId { carrier: carrier("postnl"), day: cmd.today };
        let id = shipment_id(cmd.order_id);
        assert_eq!(
            decision.shipment,
            vec![ShipmentEvent::Scheduled { shipment_id: id, carrier: carrier("postnl"), ship_date: cmd.today }]
        );
        assert_eq!(
            decision.slot,
            Some(SlotChange { slot, event: CarrierDayEvent::SlotBooked { order_id: cmd.order_id } })
        );
        assert_eq!(
            decision.public,
            Some(PublicEvent::Scheduled(ShipmentScheduled {
                order_id: cmd.order_id,
                customer_id: "alice".to_owned(),
                shipment_id: id,
                carrier: "postnl".to_owned(),
                ship_date: cmd.today,
                ship_to: cmd.ship_to.clone(),
            }))
        );
    }

    #[test]
    fn a_lower_case_destination_is_served_like_its_upper_case_code() {
        let network = Network::from_seed(&NetworkSeed::demo()).expect("demo network");
        let cmd = command(1, "fr");
        let days = load(&cmd, &network, &BTreeMap::new());

        let decision = schedule(&Shipment::Undecided, &cmd, &network, &days).expect("decide");

        assert_eq!(decision.slot.map(|s| s.slot.carrier), Some(carrier("ups")));
    }

    #[test]
    fn an_unserved_destination_fails_with_destination_not_served() {
        let network = Network::from_seed(&NetworkSeed::demo()).expect("demo network");
        let cmd = command(1, "JP");

        let decision = schedule(&Shipment::Undecided, &cmd, &network, &CarrierDays::new()).expect("decide");

        assert_eq!(decision.shipment, vec![ShipmentEvent::Failed { reason: FailureReason::DestinationNotServed }]);
        assert_eq!(decision.slot, None);
        assert_eq!(
            decision.public,
            Some(PublicEvent::Failed(ShipmentFailed {
                order_id: cmd.order_id,
                customer_id: "alice".to_owned(),
                reason: CancelReason::DestinationNotServed,
            }))
        );
    }

    #[test]
    fn a_destination_that_is_not_a_country_code_is_not_served() {
        let network = Network::from_seed(&NetworkSeed::demo()).expect("demo network");
        for country in ["", "NLD", "N1"] {
            let cmd = command(1, country);

            let decision = schedule(&Shipment::Undecided, &cmd, &network, &CarrierDays::new()).expect("decide");

            assert_eq!(
                decision.shipment,
                vec![ShipmentEvent::Failed { reason: FailureReason::DestinationNotServed }],
                "country {country:?}"
            );
        }
    }

    #[test]
    fn a_full_day_pushes_the_booking_to_the_next_day_with_room() {
        let network = network(&[("postnl", &["NL"], 2)]);
        let cmd = command(1, "NL");
        let mut booked = BTreeMap::new();
        for offset in 0..3 {
            booked.insert(CarrierDayId { carrier: carrier("postnl"), day: cmd.today + Days::new(offset) }, full_day(2));
        }
        let days = load(&cmd, &network, &booked);

        let decision = schedule(&Shipment::Undecided, &cmd, &network, &days).expect("decide");

        assert_eq!(decision.slot.map(|s| s.slot.day), Some(cmd.today + Days::new(3)));
    }

    #[test]
    fn a_full_first_carrier_falls_back_to_another_serving_carrier_on_the_same_day() {
        let network = network(&[("postnl", &["NL"], 1), ("dhl", &["NL"], 1)]);
        let cmd = command(1, "NL");
        let booked = BTreeMap::from([(CarrierDayId { carrier: carrier("postnl"), day: cmd.today }, full_day(1))]);
        let days = load(&cmd, &network, &booked);

        let decision = schedule(&Shipment::Undecided, &cmd, &network, &days).expect("decide");

        assert_eq!(decision.slot.map(|s| s.slot), Some(CarrierDayId { carrier: carrier("dhl"), day: cmd.today }));
    }

    #[test]
    fn every_day_of_the_horizon_full_fails_with_carrier_capacity_exhausted() {
        let network = network(&[("postnl", &["NL"], 1)]);
        let cmd = command(1, "NL");
        let booked = cmd.candidate_slots(&network).into_iter().map(|slot| (slot, full_day(1))).collect();
        let days = load(&cmd, &network, &booked);
        assert_eq!(days.len(), 7);

        let decision = schedule(&Shipment::Undecided, &cmd, &network, &days).expect("decide");

        assert_eq!(decision.shipment, vec![ShipmentEvent::Failed { reason: FailureReason::CarrierCapacityExhausted }]);
        assert_eq!(decision.slot, None);
        assert!(matches!(
            decision.public,
            Some(PublicEvent::Failed(ShipmentFailed { reason: CancelReason::CarrierCapacityExhausted, .. }))
        ));
    }

    #[test]
    fn a_carrier_with_zero_capacity_never_books() {
        let network = network(&[("postnl", &["NL"], 0)]);
        let cmd = command(1, "NL");
        let days = load(&cmd, &network, &BTreeMap::new());

        let decision = schedule(&Shipment::Undecided, &cmd, &network, &days).expect("decide");

        assert_eq!(decision.shipment, vec![ShipmentEvent::Failed { reason: FailureReason::CarrierCapacityExhausted }]);
    }

    #[test]
    fn a_missing_candidate_slot_is_an_error_not_an_empty_day() {
        let network = Network::from_seed(&NetworkSeed::demo()).expect("demo network");
        let cmd = command(1, "NL");

        let result = schedule(&Shipment::Undecided, &cmd, &network, &CarrierDays::new());

        assert!(matches!(result, Err(DomainError::SlotNotLoaded(slot)) if slot.day == cmd.today));
    }

    #[test]
    fn an_already_decided_shipment_is_not_scheduled_again() {
        let network = Network::from_seed(&NetworkSeed::demo()).expect("demo network");
        let cmd = command(1, "NL");
        let days = load(&cmd, &network, &BTreeMap::new());
        let states = [
            scheduled(1, "postnl", cmd.today),
            Shipment::Failed(FailureReason::DestinationNotServed),
            Shipment::Cancelled(Booking {
                shipment_id: shipment_id(cmd.order_id),
                carrier: carrier("postnl"),
                ship_date: cmd.today,
            }),
        ];

        for state in states {
            let decision = schedule(&state, &cmd, &network, &days).expect("decide");

            assert!(decision.is_empty(), "{state:?}");
        }
    }

    #[test]
    fn a_payment_after_the_cancellation_was_noted_is_not_scheduled() {
        let network = Network::from_seed(&NetworkSeed::demo()).expect("demo network");
        let cmd = command(1, "NL");
        let days = load(&cmd, &network, &BTreeMap::new());

        let decision = schedule(&Shipment::CancellationNoted, &cmd, &network, &days).expect("decide");

        assert!(decision.is_empty());
    }

    #[test]
    fn the_shipment_id_is_the_same_for_every_delivery_of_a_payment() {
        let order = Uuid::from_u128(42);

        assert_eq!(shipment_id(order), shipment_id(order));
        assert_ne!(shipment_id(order), shipment_id(Uuid::from_u128(43)));
        assert_eq!(shipment_id(order).get_version_num(), 5);
    }

    #[test]
    fn cancelling_a_scheduled_shipment_frees_its_slot_and_publishes_shipment_cancelled() {
        let day = date(2025, 3, 11);
        let state = scheduled(1, "ups", day);
        let order_id = Uuid::from_u128(1);

        let decision = cancel(&state, order_id);

        assert_eq!(decision.shipment, vec![ShipmentEvent::Cancelled]);
        assert_eq!(
            decision.slot,
            Some(SlotChange {
                slot: CarrierDayId { carrier: carrier("ups"), day },
                event: CarrierDayEvent::SlotFreed { order_id },
            })
        );
        assert_eq!(
            decision.public,
            Some(PublicEvent::Cancelled(ShipmentCancelled {
                order_id,
                shipment_id: shipment_id(order_id),
                carrier: "ups".to_owned(),
                ship_date: day,
            }))
        );
    }

    #[test]
    fn cancelling_before_anything_was_scheduled_notes_the_cancellation() {
        let decision = cancel(&Shipment::Undecided, Uuid::from_u128(1));

        assert_eq!(decision.shipment, vec![ShipmentEvent::CancellationNoted]);
        assert_eq!(decision.slot, None);
        assert_eq!(decision.public, None);
        assert_eq!(Shipment::Undecided.apply(&ShipmentEvent::CancellationNoted), Shipment::CancellationNoted);
    }

    #[test]
    fn cancelling_again_or_after_a_failure_decides_nothing() {
        let states = [
            Shipment::Failed(FailureReason::CarrierCapacityExhausted),
            Shipment::CancellationNoted,
            scheduled(1, "ups", date(2025, 3, 11)).apply(&ShipmentEvent::Cancelled),
        ];

        for state in states {
            assert!(cancel(&state, Uuid::from_u128(1)).is_empty(), "{state:?}");
        }
    }

    #[test]
    fn replaying_a_scheduled_then_cancelled_stream_holds_no_booking() {
        let events = [
            ShipmentEvent::Scheduled {
                shipment_id: shipment_id(Uuid::from_u128(1)),
                carrier: carrier("ups"),
                ship_date: date(2025, 3, 11),
            },
            ShipmentEvent::Cancelled,
        ];

        let state = events.iter().fold(Shipment::default(), Shipment::apply);

        assert!(matches!(state, Shipment::Cancelled(_)));
        assert_eq!(state.active_booking(), None);
    }

    #[test]
    fn freeing_a_slot_of_an_empty_day_does_not_underflow() {
        let day = CarrierDay::default().apply(&CarrierDayEvent::SlotFreed { order_id: Uuid::nil() });

        assert_eq!(day.booked(), 0);
    }

    #[test]
    fn candidate_slots_cover_seven_days_earliest_first_then_carrier_order() {
        let network = network(&[("postnl", &["NL"], 1), ("dhl", &["NL", "BE"], 1)]);
        let cmd = command(1, "NL");

        let slots = cmd.candidate_slots(&network);

        assert_eq!(slots.len(), 14);
        assert_eq!(slots[0].carrier, carrier("postnl"));
        assert_eq!(slots[1].carrier, carrier("dhl"));
        assert_eq!(slots[0].day, cmd.today);
        assert_eq!(slots[13].day, cmd.today + Days::new(6));
    }

    #[test]
    fn stream_ids_follow_the_documented_shapes() {
        let order = Uuid::from_u128(7);
        let slot = CarrierDayId { carrier: carrier("postnl"), day: date(2025, 1, 2) };

        assert_eq!(slot.stream_id(), "carrier-postnl-2025-01-02");
        assert_eq!(Shipment::stream_id(order), format!("shipment-{order}"));
        assert_eq!(Network::STREAM_ID, "network");
    }

    #[test]
    fn the_seed_file_is_the_demo_network() {
        let file = NetworkSeed::from_json(include_str!("../seed/network.json")).expect("parse");

        assert_eq!(file, NetworkSeed::demo());
    }

    #[test]
    fn the_demo_network_serves_nl_and_de_by_postnl_and_fr_and_us_by_ups() {
        let network = Network::from_seed(&NetworkSeed::demo()).expect("demo network");
        let serving = |code: &str| {
            let code = CountryCode::try_from(code).expect("valid country");
            network.serving(&code).map(|c| (c.name.to_string(), c.daily_capacity)).collect::<Vec<_>>()
        };

        assert_eq!(serving("NL"), vec![("postnl".to_owned(), 1_000_000)]);
        assert_eq!(serving("DE"), vec![("postnl".to_owned(), 1_000_000)]);
        assert_eq!(serving("FR"), vec![("ups".to_owned(), 1_000_000)]);
        assert_eq!(serving("US"), vec![("ups".to_owned(), 1_000_000)]);
        assert!(serving("BE").is_empty());
    }

    #[test]
    fn a_seed_with_an_invalid_country_or_carrier_name_is_rejected() {
        let bad_country = r#"{"carriers":[{"name":"ups","countries":["USA"],"daily_capacity":1}]}"#;
        let bad_name = r#"{"carriers":[{"name":"U P S","countries":["US"],"daily_capacity":1}]}"#;

        assert!(matches!(NetworkSeed::from_json(bad_country), Err(DomainError::InvalidSeed(_))));
        assert!(matches!(NetworkSeed::from_json(bad_name), Err(DomainError::InvalidSeed(_))));
    }

    #[test]
    fn a_seed_listing_a_carrier_twice_is_rejected() {
        let mut seed = NetworkSeed::demo();
        seed.carriers.push(seed.carriers[0].clone());

        assert!(matches!(
            Network::from_seed(&seed),
            Err(DomainError::DuplicateCarrier(name)) if name.as_str() == "postnl"
        ));
    }

    #[test]
    fn reseeding_keeps_known_carriers_as_they_are_and_registers_new_ones() {
        let network = Network::from_seed(&NetworkSeed::demo()).expect("demo network");
        let mut seed = NetworkSeed::demo();
        seed.carriers[0].daily_capacity = 5;
        seed.carriers.push(CarrierSeed { name: carrier("dhl"), countries: countries(&["BE"]), daily_capacity: 10 });

        let events = seed_network(&network, &seed).expect("decide");

        assert_eq!(
            events,
            vec![NetworkEvent::CarrierRegistered {
                carrier: carrier("dhl"),
                countries: countries(&["BE"]),
                daily_capacity: 10,
            }]
        );
    }

    #[test]
    fn setting_destinations_replaces_the_countries_a_carrier_serves() {
        let network = Network::from_seed(&NetworkSeed::demo()).expect("demo network");
        let command = SetDestinations { carrier: carrier("postnl"), countries: countries(&["NL", "BE"]) };

        let events = set_destinations(&network, command).expect("decide");
        let network = events.iter().fold(network, Network::apply);

        let postnl = network.carrier(&carrier("postnl")).expect("postnl");
        assert_eq!(postnl.countries, countries(&["BE", "NL"]));
        let de = CountryCode::try_from("DE").expect("valid country");
        assert_eq!(network.serving(&de).count(), 0);
    }

    #[test]
    fn setting_the_destinations_a_carrier_already_serves_changes_nothing() {
        let network = Network::from_seed(&NetworkSeed::demo()).expect("demo network");
        let command = SetDestinations { carrier: carrier("ups"), countries: countries(&["US", "FR"]) };

        assert_eq!(set_destinations(&network, command).expect("decide"), vec![]);
    }

    #[test]
    fn setting_destinations_of_an_unknown_carrier_is_rejected() {
        let network = Network::from_seed(&NetworkSeed::demo()).expect("demo network");
        let command = SetDestinations { carrier: carrier("dhl"), countries: countries(&["NL"]) };

        assert!(matches!(set_destinations(&network, command), Err(DomainError::UnknownCarrier(_))));
    }

    #[test]
    fn a_set_destinations_request_is_parsed_into_valid_codes() {
        let parsed: SetDestinations =
            serde_json::from_str(r#"{"carrier":"ups","countries":["us","fr"]}"#).expect("parse");
        let invalid = serde_json::from_str::<SetDestinations>(r#"{"carrier":"ups","countries":["usa"]}"#);

        assert_eq!(parsed.countries, countries(&["FR", "US"]));
        assert!(invalid.is_err());
    }

    #[test]
    fn every_domain_event_round_trips_with_its_event_type_as_tag() {
        fn check<E>(event: &E, event_type: &str)
        where
            E: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug,
        {
            let json = serde_json::to_value(event).expect("serialize");
            assert_eq!(json["type"], event_type);
            let back: E = serde_json::from_value(json).expect("deserialize");
            assert_eq!(&back, event);
        }
        let order_id = Uuid::from_u128(1);
        let shipment_events = [
            ShipmentEvent::Scheduled {
                shipment_id: shipment_id(order_id),
                carrier: carrier("ups"),
                ship_date: date(2025, 3, 11),
            },
            ShipmentEvent::Failed { reason: FailureReason::CarrierCapacityExhausted },
            ShipmentEvent::Cancelled,
            ShipmentEvent::CancellationNoted,
        ];
        for event in &shipment_events {
            check(event, event.event_type());
        }
        for event in [CarrierDayEvent::SlotBooked { order_id }, CarrierDayEvent::SlotFreed { order_id }] {
            check(&event, event.event_type());
        }
        for event in [
            NetworkEvent::CarrierRegistered {
                carrier: carrier("ups"),
                countries: countries(&["US"]),
                daily_capacity: 3,
            },
            NetworkEvent::DestinationsSet { carrier: carrier("ups"), countries: countries(&["US", "CA"]) },
        ] {
            check(&event, event.event_type());
        }
    }

    #[test]
    fn public_events_serialize_as_the_bare_contract_payload() {
        let decision = cancel(&scheduled(1, "ups", date(2025, 3, 11)), Uuid::from_u128(1));
        let public = decision.public.expect("public event");

        let json = serde_json::to_value(&public).expect("serialize");
        let payload: ShipmentCancelled = serde_json::from_value(json).expect("contract payload");

        assert_eq!(public.event_type(), "ShipmentCancelled");
        assert_eq!(public.order_id(), payload.order_id);
    }

    // ---- property: capacity is never exceeded; booked = scheduled − cancelled ----

    #[derive(Debug, Clone)]
    enum Op {
        Pay { order: u8, country: &'static str, today_offset: u8 },
        Cancel { order: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..24, prop::sample::select(vec!["NL", "DE", "FR", "BE", "JP"]), 0u8..4)
                .prop_map(|(order, country, today_offset)| Op::Pay { order, country, today_offset }),
            1 => (0u8..24).prop_map(|order| Op::Cancel { order }),
        ]
    }

    proptest! {
        #[test]
        fn capacity_is_never_exceeded_and_booked_equals_scheduled_minus_cancelled(
            capacities in (0u32..3, 0u32..3, 0u32..3),
            ops in prop::collection::vec(op(), 1..120),
        ) {
            let network = network(&[
                ("postnl", &["NL", "DE"], capacities.0),
                ("dhl", &["NL", "BE"], capacities.1),
                ("ups", &["FR"], capacities.2),
            ]);
            let start = date(2025, 3, 10);
            let mut shipments: BTreeMap<Uuid, Shipment> = BTreeMap::new();
            let mut days: BTreeMap<CarrierDayId, CarrierDay> = BTreeMap::new();
            let (mut scheduled_events, mut cancelled_events) = (0u32, 0u32);

            for op in ops {
                let (order_id, decision) = match op {
                    Op::Pay { order, country, today_offset } => {
                        let order_id = Uuid::from_u128(u128::from(order));
                        let cmd = ScheduleShipment {
                            today: start + Days::new(u64::from(today_offset)),
                            ..command(u128::from(order), country)
                        };
                        let loaded = load(&cmd, &network, &days);
                        let state = shipments.get(&order_id).cloned().unwrap_or_default();
                        (order_id, schedule(&state, &cmd, &network, &loaded).expect("decide"))
                    }
                    Op::Cancel { order } => {
                        let order_id = Uuid::from_u128(u128::from(order));
                        let state = shipments.get(&order_id).cloned().unwrap_or_default();
                        (order_id, cancel(&state, order_id))
                    }
                };
                for event in &decision.shipment {
                    match event {
                        ShipmentEvent::Scheduled { .. } => scheduled_events += 1,
                        ShipmentEvent::Cancelled => cancelled_events += 1,
                        _ => {}
                    }
                    let state = shipments.remove(&order_id).unwrap_or_default();
                    shipments.insert(order_id, state.apply(event));
                }
                if let Some(change) = &decision.slot {
                    let day = days.get(&change.slot).copied().unwrap_or_default();
                    days.insert(change.slot.clone(), day.apply(&change.event));
                }

                for (slot, day) in &days {
                    let capacity = network.carrier(&slot.carrier).map_or(0, |c| c.daily_capacity);
                    prop_assert!(day.booked() <= capacity, "{slot} booked {} of {capacity}", day.booked());
                    let holding = shipments
                        .values()
                        .filter_map(Shipment::active_booking)
                        .filter(|b| &b.carrier_day() == slot)
                        .count();
                    prop_assert_eq!(day.booked() as usize, holding, "{}", slot);
                }
                let booked: u32 = days.values().map(CarrierDay::booked).sum();
                prop_assert_eq!(booked, scheduled_events - cancelled_events);
            }
        }
    }
}

/// Property tests of the parsers: country codes, carrier names and the network seed accept
/// exactly what their rules say and never panic.
#[cfg(test)]
mod parser_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_country_code_is_two_ascii_letters_after_trimming(raw in "\\PC{0,4}|[ ]?[a-zA-Z]{2}[ ]?") {
            let trimmed = raw.trim();
            let expected = trimmed.len() == 2 && trimmed.chars().all(|c| c.is_ascii_alphabetic());
            match CountryCode::try_from(raw.as_str()) {
                Ok(code) => {
                    prop_assert!(expected);
                    prop_assert_eq!(code.as_str(), trimmed.to_ascii_uppercase());
                }
                Err(_) => prop_assert!(!expected),
            }
        }

        #[test]
        fn a_carrier_name_is_one_to_forty_of_the_allowed_characters(raw in "\\PC{0,45}|[a-z0-9_-]{0,42}") {
            let expected = (1..=40).contains(&raw.len())
                && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            prop_assert_eq!(CarrierName::try_from(raw.as_str()).is_ok(), expected);
        }

        #[test]
        fn any_text_as_a_network_seed_parses_or_fails_without_panicking(raw in "\\PC{0,80}") {
            let _ = NetworkSeed::from_json(&raw);
        }

        #[test]
        fn a_seed_with_generated_carriers_round_trips(
            names in proptest::collection::btree_set("[a-z]{1,8}", 1..4),
            capacity in any::<u32>(),
        ) {
            let seed = NetworkSeed {
                carriers: names
                    .iter()
                    .map(|n| CarrierSeed {
                        name: CarrierName::try_from(n.as_str()).expect("name"),
                        countries: BTreeSet::from([CountryCode::try_from("NL").expect("code")]),
                        daily_capacity: capacity,
                    })
                    .collect(),
            };
            let json = serde_json::to_string(&seed).expect("serialize");
            prop_assert_eq!(NetworkSeed::from_json(&json).expect("parse"), seed);
        }
    }
}
