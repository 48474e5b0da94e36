//! Every shipping decision, and as a property: capacity is never exceeded, and the slots
//! booked equal the shipments scheduled minus those cancelled.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{Days, NaiveDate};
use proptest::prelude::*;
use serde::Serialize;
use shared::contracts::{CancelReason, ShipTo, ShipmentCancelled, ShipmentFailed, ShipmentScheduled};
use uuid::Uuid;

use super::*;

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
    assert_eq!(decision.slot, Some(SlotChange { slot, event: CarrierDayEvent::SlotBooked { order_id: cmd.order_id } }));
    assert_eq!(
        decision.publish,
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
        decision.publish,
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
        decision.publish,
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
        decision.publish,
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
    assert_eq!(decision.publish, None);
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

    assert_eq!(CarrierDay::stream_id(&slot), "carrier-postnl-2025-01-02");
    assert_eq!(Shipment::stream_id(order), format!("shipment-{order}"));
    assert_eq!(Network::stream_id(), "network");
}

#[test]
fn the_seed_file_is_the_demo_network() {
    let file = NetworkSeed::from_json(include_str!("../../seed/network.json")).expect("parse");

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
    let parsed: SetDestinations = serde_json::from_str(r#"{"carrier":"ups","countries":["us","fr"]}"#).expect("parse");
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
        NetworkEvent::CarrierRegistered { carrier: carrier("ups"), countries: countries(&["US"]), daily_capacity: 3 },
        NetworkEvent::DestinationsSet { carrier: carrier("ups"), countries: countries(&["US", "CA"]) },
    ] {
        check(&event, event.event_type());
    }
}

#[test]
fn public_events_serialize_as_the_bare_contract_payload() {
    let decision = cancel(&scheduled(1, "ups", date(2025, 3, 11)), Uuid::from_u128(1));
    let public = decision.publish.expect("public event");

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
