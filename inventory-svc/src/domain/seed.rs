//! The catalogue a fresh inventory starts with: products, prices and initial stock.
//!
//! Seeding is itself a decision on each SKU's stream, so it is safe to run at every start-up:
//! a product seen for the first time gets its stock; one already in the store keeps its stock
//! (which orders have since moved) and only has its name or price brought up to date.

use serde::{Deserialize, Serialize};

use super::DomainError;
use super::sku::{SkuCommand, SkuEvent, SkuState};

/// The catalogue to seed, as read from JSON (`seed/catalogue.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueSeed {
    pub products: Vec<ProductSeed>,
}

/// One product to seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductSeed {
    pub sku: String,
    pub name: String,
    /// Unit price in EUR minor units.
    pub price_minor: i64,
    /// Units available when the product is first seeded.
    pub stock: i64,
}

impl CatalogueSeed {
    /// The demo catalogue: two products that never run out, one scarce, one sold out.
    pub fn demo() -> Self {
        let product = |sku: &str, name: &str, price_minor, stock| ProductSeed {
            sku: sku.to_owned(),
            name: name.to_owned(),
            price_minor,
            stock,
        };
        CatalogueSeed {
            products: vec![
                product("sku-tee", "T-shirt", 1500, 1_000_000),
                product("sku-mug", "Mug", 900, 1_000_000),
                product("sku-poster", "Poster", 1200, 5),
                product("sku-soldout", "Sold-out print", 5000, 0),
            ],
        }
    }

    /// Parses a catalogue from JSON.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

impl ProductSeed {
    /// The events seeding this product adds to its SKU stream (`state` is that stream's
    /// state): for an unknown SKU, the product and its initial stock; for a known one, at most
    /// a name or price update.
    pub fn decide(&self, state: &SkuState) -> Result<Vec<SkuEvent>, DomainError> {
        if self.stock < 0 {
            return Err(DomainError::NegativeSeedStock { stock: self.stock });
        }
        let was_known = state.known;
        let mut events =
            state.decide(SkuCommand::UpsertProduct { name: self.name.clone(), price_minor: self.price_minor })?;
        if !was_known {
            let upserted = events.iter().fold(state.clone(), SkuState::evolve);
            events.extend(upserted.decide(SkuCommand::AdjustStock { delta: self.stock })?);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_catalogue_has_the_four_demo_products() {
        let demo = CatalogueSeed::demo();
        let summary: Vec<_> =
            demo.products.iter().map(|p| (p.sku.as_str(), p.name.as_str(), p.price_minor, p.stock)).collect();
        assert_eq!(
            summary,
            vec![
                ("sku-tee", "T-shirt", 1500, 1_000_000),
                ("sku-mug", "Mug", 900, 1_000_000),
                ("sku-poster", "Poster", 1200, 5),
                ("sku-soldout", "Sold-out print", 5000, 0),
            ]
        );
    }

    #[test]
    fn the_shipped_seed_file_is_the_demo_catalogue() {
        let parsed = CatalogueSeed::from_json(include_str!("../../seed/catalogue.json")).expect("parse");
        assert_eq!(parsed, CatalogueSeed::demo());
    }

    #[test]
    fn seeding_a_new_product_creates_it_with_its_stock() {
        let seed = &CatalogueSeed::demo().products[2];
        let events = seed.decide(&SkuState::new("sku-poster")).expect("seed");
        assert_eq!(
            events,
            vec![
                SkuEvent::ProductUpserted { name: "Poster".into(), price_minor: 1200 },
                SkuEvent::StockAdjusted { delta: 5 },
            ]
        );
    }

    #[test]
    fn seeding_a_product_with_no_stock_only_creates_it() {
        let seed = &CatalogueSeed::demo().products[3];
        let events = seed.decide(&SkuState::new("sku-soldout")).expect("seed");
        assert_eq!(events, vec![SkuEvent::ProductUpserted { name: "Sold-out print".into(), price_minor: 5000 }]);
    }

    #[test]
    fn seeding_again_adds_no_stock() {
        let seed = &CatalogueSeed::demo().products[2];
        let state = SkuState::fold("sku-poster", &seed.decide(&SkuState::new("sku-poster")).expect("seed"));
        assert_eq!(seed.decide(&state), Ok(vec![]));
    }

    #[test]
    fn seeding_a_known_product_with_a_new_price_updates_only_the_price() {
        let mut seed = CatalogueSeed::demo().products[2].clone();
        let state = SkuState::fold("sku-poster", &seed.decide(&SkuState::new("sku-poster")).expect("seed"));
        seed.price_minor = 1300;
        seed.stock = 50;
        assert_eq!(
            seed.decide(&state),
            Ok(vec![SkuEvent::ProductUpserted { name: "Poster".into(), price_minor: 1300 }])
        );
    }

    #[test]
    fn seeding_negative_stock_is_refused() {
        let seed = ProductSeed { sku: "x".into(), name: "X".into(), price_minor: 1, stock: -1 };
        assert_eq!(seed.decide(&SkuState::new("x")), Err(DomainError::NegativeSeedStock { stock: -1 }));
    }

    #[test]
    fn a_malformed_catalogue_does_not_parse() {
        assert!(CatalogueSeed::from_json(r#"{"products": [{"sku": "x"}]}"#).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_as_a_catalogue_parses_or_fails_without_panicking(raw in "\\PC{0,80}") {
            let _ = CatalogueSeed::from_json(&raw);
        }

        #[test]
        fn a_seeded_product_is_refused_exactly_when_its_values_break_a_rule(
            sku in "\\PC{0,6}",
            name in "\\PC{0,6}",
            price_minor in any::<i64>(),
            stock in -3i64..3,
        ) {
            let seed = ProductSeed { sku: sku.clone(), name: name.clone(), price_minor, stock };
            let json = serde_json::to_string(&CatalogueSeed { products: vec![seed.clone()] }).expect("serialize");
            prop_assert_eq!(CatalogueSeed::from_json(&json).expect("parse").products, vec![seed.clone()]);
            let valid = !sku.trim().is_empty() && !name.trim().is_empty() && price_minor >= 0 && stock >= 0;
            prop_assert_eq!(seed.decide(&SkuState::new(sku)).is_ok(), valid);
        }
    }
}
