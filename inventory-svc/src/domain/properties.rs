//! Property tests: random interleavings of saga messages (including redeliveries and messages
//! for orders in any state) across several orders and SKUs keep stock conserved and never
//! oversell, and a reservation is all-or-nothing.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use shared::contracts::{CompensationTrigger, OrderLine, ShipTo};
use uuid::Uuid;

use super::decisions::{InventoryDecision, mark_shipped, release, reserve};
use super::reservation::{ReservationEvent, ReservationState, ReservationStatus};
use super::sku::{SkuEvent, SkuState, adjust_stock};

const SKUS: [&str; 3] = ["sku-a", "sku-b", "sku-c"];
const UNKNOWN: &str = "sku-unknown";
const ORDERS: u128 = 4;

#[derive(Debug, Clone)]
enum Op {
    Reserve { order: u128, lines: Vec<(usize, u32)> },
    Release { order: u128, trigger: CompensationTrigger },
    Ship { order: u128 },
    Adjust { sku: usize, delta: i64 },
}

fn trigger() -> impl Strategy<Value = CompensationTrigger> {
    prop_oneof![
        Just(CompensationTrigger::PaymentDeclined),
        Just(CompensationTrigger::ShipmentFailed),
        Just(CompensationTrigger::OrderCancelled),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    // Index SKUS.len() stands for an SKU missing from the catalogue.
    let lines = prop::collection::vec((0..=SKUS.len(), 1u32..4), 1..4);
    prop_oneof![
        4 => (0..ORDERS, lines).prop_map(|(order, lines)| Op::Reserve { order, lines }),
        2 => (0..ORDERS, trigger()).prop_map(|(order, trigger)| Op::Release { order, trigger }),
        2 => (0..ORDERS).prop_map(|order| Op::Ship { order }),
        1 => (0..SKUS.len(), -3i64..5).prop_map(|(sku, delta)| Op::Adjust { sku, delta }),
    ]
}

/// The store: every stream's state, plus the sum of adjustments per SKU.
struct World {
    skus: HashMap<String, SkuState>,
    reservations: HashMap<u128, ReservationState>,
    adjusted: HashMap<String, i64>,
}

/// Events go through their JSON form, as they would through the event store.
fn stored<T: serde::Serialize + serde::de::DeserializeOwned>(event: &T) -> T {
    let json = serde_json::to_string(event).expect("serialize");
    serde_json::from_str(&json).expect("deserialize")
}

impl World {
    fn new(initial: [i64; 3]) -> Self {
        let mut world = World { skus: HashMap::new(), reservations: HashMap::new(), adjusted: HashMap::new() };
        for (i, sku) in SKUS.iter().enumerate() {
            let price = 100 * (i as i64 + 1);
            world.apply_sku(sku, &SkuEvent::ProductUpserted { name: sku.to_string(), price_minor: price });
            world.apply_sku(sku, &SkuEvent::StockAdjusted { delta: initial[i] });
        }
        world
    }

    fn apply_sku(&mut self, sku: &str, event: &SkuEvent) {
        if let SkuEvent::StockAdjusted { delta } = event {
            *self.adjusted.entry(sku.to_owned()).or_insert(0) += delta;
        }
        self.skus.entry(sku.to_owned()).or_insert_with(|| SkuState::new(sku)).apply(&stored(event));
    }

    fn commit(&mut self, order: u128, decision: &InventoryDecision) {
        let reservation = self.reservations.entry(order).or_default();
        for event in &decision.reservation {
            reservation.apply(&stored::<ReservationEvent>(event));
        }
        for (sku, events) in &decision.skus {
            for event in events {
                self.apply_sku(sku, event);
            }
        }
    }

    fn reservation(&self, order: u128) -> ReservationState {
        self.reservations.get(&order).cloned().unwrap_or_default()
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        let mut held_reserved: BTreeMap<&str, i64> = BTreeMap::new();
        let mut held_shipped: BTreeMap<&str, i64> = BTreeMap::new();
        for reservation in self.reservations.values() {
            let bucket = match &reservation.status {
                ReservationStatus::Reserved { .. } => &mut held_reserved,
                ReservationStatus::Shipped { .. } => &mut held_shipped,
                _ => continue,
            };
            for line in reservation.held_lines() {
                *bucket.entry(line.sku.as_str()).or_insert(0) += i64::from(line.quantity);
            }
        }
        for sku in SKUS {
            let state = &self.skus[sku];
            prop_assert!(state.available >= 0, "{sku} available {}", state.available);
            prop_assert!(state.reserved >= 0 && state.shipped >= 0);
            prop_assert_eq!(state.on_hand(), self.adjusted[sku], "{} not conserved", sku);
            prop_assert_eq!(state.reserved, held_reserved.get(sku).copied().unwrap_or(0));
            prop_assert_eq!(state.shipped, held_shipped.get(sku).copied().unwrap_or(0));
        }
        prop_assert!(!self.skus.contains_key(UNKNOWN));
        Ok(())
    }
}

fn order_id(order: u128) -> Uuid {
    Uuid::from_u128(order + 1)
}

fn sku_name(index: usize) -> &'static str {
    SKUS.get(index).copied().unwrap_or(UNKNOWN)
}

proptest! {
    #[test]
    fn stock_is_conserved_never_oversold_and_reserved_all_or_nothing(
        initial in [0i64..8, 0i64..8, 0i64..8],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut world = World::new(initial);
        world.check_invariants()?;
        let ship_to = ShipTo { country: "FR".into(), ..ShipTo::default() };

        for op in ops {
            match op {
                Op::Reserve { order, lines } => {
                    let lines: Vec<OrderLine> = lines
                        .into_iter()
                        .map(|(sku, quantity)| OrderLine { sku: sku_name(sku).to_owned(), quantity })
                        .collect();
                    let before = world.reservation(order);
                    let decision = reserve(order_id(order), "cust", &lines, &ship_to, &before, &world.skus)
                        .expect("valid orders never fail");

                    let mut wanted: BTreeMap<String, u32> = BTreeMap::new();
                    for line in &lines {
                        *wanted.entry(line.sku.clone()).or_insert(0) += line.quantity;
                    }
                    match decision.reservation.as_slice() {
                        [] => {
                            prop_assert!(before.is_decided() || before.cancelled);
                            prop_assert!(decision.is_empty());
                        }
                        [ReservationEvent::Rejected { .. }] => {
                            prop_assert!(decision.skus.is_empty(), "a rejection reserves nothing");
                        }
                        [ReservationEvent::Reserved { lines: priced, total_minor, .. }] => {
                            let reserved: BTreeMap<String, u32> = decision
                                .skus
                                .iter()
                                .map(|(sku, events)| match events.as_slice() {
                                    [SkuEvent::StockReserved { quantity, .. }] => Ok((sku.clone(), *quantity)),
                                    other => Err(TestCaseError::fail(format!("unexpected {other:?}"))),
                                })
                                .collect::<Result<_, _>>()?;
                            prop_assert_eq!(reserved, wanted, "every sku reserved in full");
                            prop_assert_eq!(priced.len(), lines.len());
                            prop_assert_eq!(*total_minor, priced.iter().map(|l| l.line_total_minor).sum::<i64>());
                        }
                        other => prop_assert!(false, "unexpected reservation events {:?}", other),
                    }
                    world.commit(order, &decision);
                }
                Op::Release { order, trigger } => {
                    let decision = release(order_id(order), trigger, &world.reservation(order), &world.skus)
                        .expect("a consistent store never fails a release");
                    world.commit(order, &decision);
                }
                Op::Ship { order } => {
                    let decision = mark_shipped(order_id(order), &world.reservation(order), &world.skus)
                        .expect("a consistent store never fails a shipment");
                    world.commit(order, &decision);
                }
                Op::Adjust { sku, delta } => {
                    let name = sku_name(sku);
                    if let Ok(events) = adjust_stock(&world.skus[name], delta) {
                        for event in &events {
                            world.apply_sku(name, event);
                        }
                    }
                }
            }
            world.check_invariants()?;
        }
    }

    #[test]
    fn replaying_a_decision_after_it_was_committed_decides_nothing(
        initial in [0i64..8, 0i64..8, 0i64..8],
        lines in prop::collection::vec((0..=SKUS.len(), 1u32..4), 1..4),
        trigger in trigger(),
    ) {
        let mut world = World::new(initial);
        let ship_to = ShipTo::default();
        let lines: Vec<OrderLine> = lines
            .into_iter()
            .map(|(sku, quantity)| OrderLine { sku: sku_name(sku).to_owned(), quantity })
            .collect();
        let id = order_id(0);

        let first = reserve(id, "c", &lines, &ship_to, &world.reservation(0), &world.skus).expect("reserve");
        world.commit(0, &first);
        prop_assert!(reserve(id, "c", &lines, &ship_to, &world.reservation(0), &world.skus).expect("again").is_empty());

        let shipped = mark_shipped(id, &world.reservation(0), &world.skus).expect("ship");
        world.commit(0, &shipped);
        prop_assert!(mark_shipped(id, &world.reservation(0), &world.skus).expect("again").is_empty());

        let released = release(id, trigger, &world.reservation(0), &world.skus).expect("release");
        world.commit(0, &released);
        prop_assert!(release(id, trigger, &world.reservation(0), &world.skus).expect("again").is_empty());
        world.check_invariants()?;
    }
}
