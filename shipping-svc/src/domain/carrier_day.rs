//! Carrier days (stream `carrier-{carrier}-{yyyy-mm-dd}`): how many slots of one carrier's day
//! are booked. The stream version is what keeps two concurrent bookings from overfilling a
//! day: both read version N, only one appends N + 1.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::CarrierName;

/// One carrier's shipping day: the identity of a [`CarrierDay`] stream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CarrierDayId {
    pub carrier: CarrierName,
    pub day: NaiveDate,
}

impl fmt::Display for CarrierDayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&CarrierDay::stream_id(self))
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
    /// The stream of one carrier's day: `carrier-{carrier}-{yyyy-mm-dd}`.
    pub fn stream_id(id: &CarrierDayId) -> String {
        format!("carrier-{}-{}", id.carrier, id.day.format("%Y-%m-%d"))
    }

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
