//! One SKU of the catalogue: the product (name, unit price) and its stock.
//!
//! Stock sits in three buckets: `available` (may be reserved), `reserved` (held for an order
//! that has not shipped) and `shipped`. Only `StockAdjusted` changes the total; every other
//! event moves units between buckets, which is what keeps
//! `sum(adjustments) == available + reserved + shipped`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::DomainError;

/// Prefix of an SKU's stream id in the event store.
pub const STREAM_PREFIX: &str = "sku-";

/// What happened to one SKU. The `type` tag is the stored event type (see [`Self::event_type`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SkuEvent {
    /// The product was created or its name or price changed.
    ProductUpserted { name: String, price_minor: i64 },
    /// Units entered (positive) or left (negative) the catalogue: seeding, restock, write-off.
    StockAdjusted { delta: i64 },
    /// Units moved from available to reserved for an order.
    StockReserved { order_id: Uuid, quantity: u32 },
    /// Units went back to available: from reserved, or from shipped when `from_shipped`.
    StockReleased { order_id: Uuid, quantity: u32, from_shipped: bool },
    /// Units moved from reserved to shipped.
    StockShipped { order_id: Uuid, quantity: u32 },
}

impl SkuEvent {
    /// Every event type name, for registering decoders and for tests.
    pub const TYPES: [&'static str; 5] =
        ["ProductUpserted", "StockAdjusted", "StockReserved", "StockReleased", "StockShipped"];

    /// The stable name stored in the event store's type column.
    pub fn event_type(&self) -> &'static str {
        match self {
            SkuEvent::ProductUpserted { .. } => "ProductUpserted",
            SkuEvent::StockAdjusted { .. } => "StockAdjusted",
            SkuEvent::StockReserved { .. } => "StockReserved",
            SkuEvent::StockReleased { .. } => "StockReleased",
            SkuEvent::StockShipped { .. } => "StockShipped",
        }
    }
}

/// A request to change one SKU. Cross-SKU rules (all-or-nothing reservation) live in
/// [`super::decisions`]; this enforces what must hold for the SKU alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkuCommand {
    UpsertProduct { name: String, price_minor: i64 },
    AdjustStock { delta: i64 },
    Reserve { order_id: Uuid, quantity: u32 },
    Release { order_id: Uuid, quantity: u32, from_shipped: bool },
    Ship { order_id: Uuid, quantity: u32 },
}

/// An SKU's state, folded from its stream. Fields are public for reading; change it only by
/// applying events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SkuState {
    pub sku: String,
    /// A `ProductUpserted` has been seen: the SKU is in the catalogue and can be ordered.
    pub known: bool,
    pub name: String,
    /// Unit price in EUR minor units.
    pub price_minor: i64,
    pub available: i64,
    pub reserved: i64,
    pub shipped: i64,
}

impl SkuState {
    /// The event-store stream id of an SKU: `sku-{sku}`.
    pub fn stream_id(sku: &str) -> String {
        format!("{STREAM_PREFIX}{sku}")
    }

    /// The state of an SKU whose stream is empty.
    pub fn new(sku: impl Into<String>) -> Self {
        SkuState { sku: sku.into(), ..SkuState::default() }
    }

    /// Folds a stream into its state.
    pub fn fold<'a>(sku: impl Into<String>, events: impl IntoIterator<Item = &'a SkuEvent>) -> Self {
        events.into_iter().fold(SkuState::new(sku), SkuState::evolve)
    }

    /// `evolve(state, event) -> state`.
    pub fn evolve(mut self, event: &SkuEvent) -> Self {
        self.apply(event);
        self
    }

    /// Applies one event. Never fails: events are facts; [`Self::decide`] checks the rules.
    pub fn apply(&mut self, event: &SkuEvent) {
        match event {
            SkuEvent::ProductUpserted { name, price_minor } => {
                self.known = true;
                self.name.clone_from(name);
                self.price_minor = *price_minor;
            }
            SkuEvent::StockAdjusted { delta } => {
                self.available = self.available.saturating_add(*delta);
            }
            SkuEvent::StockReserved { quantity, .. } => {
                let q = i64::from(*quantity);
                self.available = self.available.saturating_sub(q);
                self.reserved = self.reserved.saturating_add(q);
            }
            SkuEvent::StockReleased { quantity, from_shipped, .. } => {
                let q = i64::from(*quantity);
                if *from_shipped {
                    self.shipped = self.shipped.saturating_sub(q);
                } else {
                    self.reserved = self.reserved.saturating_sub(q);
                }
                self.available = self.available.saturating_add(q);
            }
            SkuEvent::StockShipped { quantity, .. } => {
                let q = i64::from(*quantity);
                self.reserved = self.reserved.saturating_sub(q);
                self.shipped = self.shipped.saturating_add(q);
            }
        }
    }

    /// Every unit the catalogue holds for this SKU, whatever its bucket: equal to the sum of
    /// all `StockAdjusted` deltas.
    pub fn on_hand(&self) -> i64 {
        self.available.saturating_add(self.reserved).saturating_add(self.shipped)
    }

    /// `decide(state, command) -> events`.
    pub fn decide(&self, command: SkuCommand) -> Result<Vec<SkuEvent>, DomainError> {
        match command {
            SkuCommand::UpsertProduct { name, price_minor } => {
                if self.sku.trim().is_empty() {
                    return Err(DomainError::BlankSku);
                }
                let name = name.trim();
                if name.is_empty() {
                    return Err(DomainError::BlankName);
                }
                if price_minor < 0 {
                    return Err(DomainError::NegativePrice { price_minor });
                }
                if self.known && self.name == name && self.price_minor == price_minor {
                    return Ok(Vec::new());
                }
                Ok(vec![SkuEvent::ProductUpserted { name: name.to_owned(), price_minor }])
            }
            SkuCommand::AdjustStock { delta } => {
                self.require_known()?;
                let negative =
                    || DomainError::NegativeStock { sku: self.sku.clone(), available: self.available, delta };
                let after = self.available.checked_add(delta).ok_or_else(negative)?;
                if after < 0 {
                    return Err(negative());
                }
                // The total on hand must stay representable too, or the conservation check
                // (sum of adjustments) could overflow.
                self.on_hand().checked_add(delta).ok_or(DomainError::QuantityOverflow { sku: self.sku.clone() })?;
                if delta == 0 {
                    return Ok(Vec::new());
                }
                Ok(vec![SkuEvent::StockAdjusted { delta }])
            }
            SkuCommand::Reserve { order_id, quantity } => {
                self.require_known()?;
                self.require_positive(quantity)?;
                if self.available < i64::from(quantity) {
                    return Err(DomainError::InsufficientStock {
                        sku: self.sku.clone(),
                        available: self.available,
                        requested: quantity,
                    });
                }
                Ok(vec![SkuEvent::StockReserved { order_id, quantity }])
            }
            SkuCommand::Release { order_id, quantity, from_shipped } => {
                self.require_positive(quantity)?;
                let (bucket, held) = if from_shipped { ("shipped", self.shipped) } else { ("reserved", self.reserved) };
                self.require_held(order_id, bucket, held, quantity)?;
                Ok(vec![SkuEvent::StockReleased { order_id, quantity, from_shipped }])
            }
            SkuCommand::Ship { order_id, quantity } => {
                self.require_positive(quantity)?;
                self.require_held(order_id, "reserved", self.reserved, quantity)?;
                Ok(vec![SkuEvent::StockShipped { order_id, quantity }])
            }
        }
    }

    fn require_known(&self) -> Result<(), DomainError> {
        if self.known { Ok(()) } else { Err(DomainError::UnknownSku { sku: self.sku.clone() }) }
    }

    fn require_positive(&self, quantity: u32) -> Result<(), DomainError> {
        if quantity == 0 { Err(DomainError::ZeroQuantity { sku: self.sku.clone() }) } else { Ok(()) }
    }

    fn require_held(&self, order_id: Uuid, bucket: &'static str, held: i64, quantity: u32) -> Result<(), DomainError> {
        if held < i64::from(quantity) {
            Err(DomainError::StockInconsistent { sku: self.sku.clone(), order_id, bucket, held, quantity })
        } else {
            Ok(())
        }
    }
}

/// Admin: create a product or change its name or price. Unchanged → no events.
pub fn upsert_product(
    state: &SkuState,
    name: impl Into<String>,
    price_minor: i64,
) -> Result<Vec<SkuEvent>, DomainError> {
    state.decide(SkuCommand::UpsertProduct { name: name.into(), price_minor })
}

/// Admin: add (positive) or remove (negative) units. Refused if the SKU is unknown or if
/// `available` would go negative; a zero delta yields no events.
pub fn adjust_stock(state: &SkuState, delta: i64) -> Result<Vec<SkuEvent>, DomainError> {
    state.decide(SkuCommand::AdjustStock { delta })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Uuid {
        Uuid::from_u128(7)
    }

    fn stocked(sku: &str, price_minor: i64, stock: i64) -> SkuState {
        SkuState::fold(
            sku,
            &[
                SkuEvent::ProductUpserted { name: "Thing".into(), price_minor },
                SkuEvent::StockAdjusted { delta: stock },
            ],
        )
    }

    #[test]
    fn stream_id_is_prefixed_with_sku() {
        assert_eq!(SkuState::stream_id("sku-tee"), "sku-sku-tee");
        assert_eq!(SkuState::stream_id("abc"), "sku-abc");
    }

    #[test]
    fn an_empty_stream_is_an_unknown_sku_with_no_stock() {
        let state = SkuState::new("x");
        assert_eq!(state.sku, "x");
        assert!(!state.known);
        assert_eq!((state.available, state.reserved, state.shipped), (0, 0, 0));
    }

    #[test]
    fn upserting_a_new_product_makes_it_known() {
        let state = SkuState::new("x");
        let events = upsert_product(&state, "  Mug ", 900).expect("upsert");
        assert_eq!(events, vec![SkuEvent::ProductUpserted { name: "Mug".into(), price_minor: 900 }]);
        let state = SkuState::fold("x", &events);
        assert!(state.known);
        assert_eq!(state.name, "Mug");
        assert_eq!(state.price_minor, 900);
    }

    #[test]
    fn upserting_an_unchanged_product_yields_no_events() {
        let state = stocked("x", 900, 1);
        assert_eq!(upsert_product(&state, "Thing", 900), Ok(vec![]));
    }

    #[test]
    fn upserting_a_new_price_changes_only_the_price() {
        let state = stocked("x", 900, 3);
        let events = upsert_product(&state, "Thing", 950).expect("upsert");
        let state = events.iter().fold(state, SkuState::evolve);
        assert_eq!(state.price_minor, 950);
        assert_eq!(state.available, 3);
    }

    #[test]
    fn upsert_refuses_blank_names_negative_prices_and_blank_skus() {
        let state = SkuState::new("x");
        assert_eq!(upsert_product(&state, " ", 1), Err(DomainError::BlankName));
        assert_eq!(upsert_product(&state, "ok", -1), Err(DomainError::NegativePrice { price_minor: -1 }));
        assert_eq!(upsert_product(&SkuState::new(""), "ok", 1), Err(DomainError::BlankSku));
    }

    #[test]
    fn a_free_product_is_allowed() {
        assert!(upsert_product(&SkuState::new("x"), "Sticker", 0).is_ok());
    }

    #[test]
    fn adjusting_stock_adds_and_removes_available_units() {
        let state = stocked("x", 1, 10);
        let events = adjust_stock(&state, -4).expect("adjust");
        assert_eq!(events, vec![SkuEvent::StockAdjusted { delta: -4 }]);
        let state = events.iter().fold(state, SkuState::evolve);
        assert_eq!(state.available, 6);
    }

    #[test]
    fn adjusting_stock_below_zero_available_is_refused() {
        let state = stocked("x", 1, 3);
        assert_eq!(
            adjust_stock(&state, -4),
            Err(DomainError::NegativeStock { sku: "x".into(), available: 3, delta: -4 })
        );
    }

    #[test]
    fn adjusting_cannot_remove_reserved_units() {
        let state = stocked("x", 1, 3).evolve(&SkuEvent::StockReserved { order_id: order(), quantity: 2 });
        assert!(matches!(adjust_stock(&state, -2), Err(DomainError::NegativeStock { .. })));
        assert!(adjust_stock(&state, -1).is_ok());
    }

    #[test]
    fn adjusting_an_unknown_sku_is_refused() {
        assert_eq!(adjust_stock(&SkuState::new("x"), 5), Err(DomainError::UnknownSku { sku: "x".into() }));
    }

    #[test]
    fn a_zero_adjustment_yields_no_events() {
        assert_eq!(adjust_stock(&stocked("x", 1, 3), 0), Ok(vec![]));
    }

    #[test]
    fn an_overflowing_adjustment_is_refused() {
        let state = stocked("x", 1, i64::MAX);
        assert!(adjust_stock(&state, 1).is_err());
        let state = stocked("x", 1, 5).evolve(&SkuEvent::StockReserved { order_id: order(), quantity: 5 });
        let state = state.evolve(&SkuEvent::StockAdjusted { delta: i64::MAX - 5 });
        assert_eq!(adjust_stock(&state, 1), Err(DomainError::QuantityOverflow { sku: "x".into() }));
    }

    #[test]
    fn reserving_moves_units_from_available_to_reserved() {
        let state = stocked("x", 1, 5);
        let events = state.decide(SkuCommand::Reserve { order_id: order(), quantity: 5 }).expect("reserve");
        let state = events.iter().fold(state, SkuState::evolve);
        assert_eq!((state.available, state.reserved, state.shipped), (0, 5, 0));
    }

    #[test]
    fn reserving_more_than_available_is_refused() {
        let state = stocked("x", 1, 5);
        assert_eq!(
            state.decide(SkuCommand::Reserve { order_id: order(), quantity: 6 }),
            Err(DomainError::InsufficientStock { sku: "x".into(), available: 5, requested: 6 })
        );
    }

    #[test]
    fn reserving_zero_or_an_unknown_sku_is_refused() {
        let state = stocked("x", 1, 5);
        assert_eq!(
            state.decide(SkuCommand::Reserve { order_id: order(), quantity: 0 }),
            Err(DomainError::ZeroQuantity { sku: "x".into() })
        );
        assert_eq!(
            SkuState::new("y").decide(SkuCommand::Reserve { order_id: order(), quantity: 1 }),
            Err(DomainError::UnknownSku { sku: "y".into() })
        );
    }

    #[test]
    fn shipping_moves_reserved_units_to_shipped() {
        let state = stocked("x", 1, 5).evolve(&SkuEvent::StockReserved { order_id: order(), quantity: 3 });
        let events = state.decide(SkuCommand::Ship { order_id: order(), quantity: 3 }).expect("ship");
        let state = events.iter().fold(state, SkuState::evolve);
        assert_eq!((state.available, state.reserved, state.shipped), (2, 0, 3));
    }

    #[test]
    fn shipping_more_than_reserved_is_an_inconsistency() {
        let state = stocked("x", 1, 5);
        assert!(matches!(
            state.decide(SkuCommand::Ship { order_id: order(), quantity: 1 }),
            Err(DomainError::StockInconsistent { bucket: "reserved", held: 0, quantity: 1, .. })
        ));
    }

    #[test]
    fn releasing_returns_reserved_units_to_available() {
        let state = stocked("x", 1, 5).evolve(&SkuEvent::StockReserved { order_id: order(), quantity: 3 });
        let events =
            state.decide(SkuCommand::Release { order_id: order(), quantity: 3, from_shipped: false }).expect("release");
        let state = events.iter().fold(state, SkuState::evolve);
        assert_eq!((state.available, state.reserved, state.shipped), (5, 0, 0));
    }

    #[test]
    fn releasing_from_shipped_returns_shipped_units_to_available() {
        let state = stocked("x", 1, 5)
            .evolve(&SkuEvent::StockReserved { order_id: order(), quantity: 3 })
            .evolve(&SkuEvent::StockShipped { order_id: order(), quantity: 3 });
        let events =
            state.decide(SkuCommand::Release { order_id: order(), quantity: 3, from_shipped: true }).expect("release");
        let state = events.iter().fold(state, SkuState::evolve);
        assert_eq!((state.available, state.reserved, state.shipped), (5, 0, 0));
    }

    #[test]
    fn releasing_more_than_held_is_an_inconsistency() {
        let state = stocked("x", 1, 5).evolve(&SkuEvent::StockReserved { order_id: order(), quantity: 3 });
        assert!(matches!(
            state.decide(SkuCommand::Release { order_id: order(), quantity: 3, from_shipped: true }),
            Err(DomainError::StockInconsistent { bucket: "shipped", .. })
        ));
        assert!(matches!(
            state.decide(SkuCommand::Release { order_id: order(), quantity: 4, from_shipped: false }),
            Err(DomainError::StockInconsistent { bucket: "reserved", .. })
        ));
    }

    #[test]
    fn on_hand_is_the_sum_of_the_buckets() {
        let state = stocked("x", 1, 10)
            .evolve(&SkuEvent::StockReserved { order_id: order(), quantity: 4 })
            .evolve(&SkuEvent::StockShipped { order_id: order(), quantity: 3 });
        assert_eq!((state.available, state.reserved, state.shipped), (6, 1, 3));
        assert_eq!(state.on_hand(), 10);
    }

    #[test]
    fn every_event_serializes_with_its_event_type_as_tag_and_round_trips() {
        let events = [
            SkuEvent::ProductUpserted { name: "Mug".into(), price_minor: 900 },
            SkuEvent::StockAdjusted { delta: -3 },
            SkuEvent::StockReserved { order_id: order(), quantity: 2 },
            SkuEvent::StockReleased { order_id: order(), quantity: 2, from_shipped: true },
            SkuEvent::StockShipped { order_id: order(), quantity: 2 },
        ];
        let types: Vec<_> = events.iter().map(SkuEvent::event_type).collect();
        assert_eq!(types, SkuEvent::TYPES);
        for event in events {
            let json = serde_json::to_value(&event).expect("serialize");
            assert_eq!(json["type"], event.event_type());
            let back: SkuEvent = serde_json::from_value(json).expect("deserialize");
            assert_eq!(back, event);
        }
    }

    #[test]
    fn decoding_an_event_tolerates_unknown_fields() {
        let json = serde_json::json!({"type": "StockAdjusted", "delta": 4, "reason": "restock"});
        let event: SkuEvent = serde_json::from_value(json).expect("decode");
        assert_eq!(event, SkuEvent::StockAdjusted { delta: 4 });
    }
}
