//! The carrier network (stream `network`): the carriers shipping-svc can book, the countries
//! each serves and its daily capacity. Seeded at start-up, changed by admin commands.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::DomainError;
use super::values::{CarrierName, CountryCode};

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
    /// The one network stream: `network`.
    pub fn stream_id() -> String {
        "network".to_owned()
    }

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
