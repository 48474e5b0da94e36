//! The decisions inventory-svc takes for saga messages, across an order's reservation and the
//! SKUs it touches.
//!
//! A handler loads the reservation (`reservation-{order_id}`) and each SKU involved
//! (`sku-{sku}`; an empty stream is [`SkuState::new`]), calls one function here, and appends
//! the returned events to their streams, expecting the versions it loaded, together with the
//! public event in the outbox, in one transaction. A concurrent change to any of those streams
//! fails the append and the message is retried against fresh state, so stock is never
//! oversold.
//!
//! | message             | function          | public event                               |
//! |---------------------|-------------------|--------------------------------------------|
//! | `OrderPlaced`       | [`reserve`]       | `InventoryReserved` or `InventoryRejected` |
//! | `PaymentDeclined`   | [`release`]       | `InventoryReleased`                        |
//! | `ShipmentFailed`    | [`release`]       | `InventoryReleased`                        |
//! | `OrderCancelled`    | [`release`]       | `InventoryReleased` (if anything was held) |
//! | `ShipmentScheduled` | [`mark_shipped`]  | none                                       |
//!
//! Every function is idempotent on the state: once its effect is in the reservation, calling it
//! again decides nothing.

use std::collections::{BTreeMap, HashMap};

use shared::contracts::{
    self, CancelReason, CompensationTrigger, InventoryRejected, InventoryReleased, InventoryReserved, OrderLine,
    PricedLine, ShipTo,
};
use uuid::Uuid;

use super::DomainError;
use super::reservation::{ReservationEvent, ReservationState, ReservationStatus};
use super::sku::{SkuCommand, SkuEvent, SkuState};

/// An integration event for `inventory.events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicEvent {
    Reserved(InventoryReserved),
    Rejected(InventoryRejected),
    Released(InventoryReleased),
}

impl PublicEvent {
    /// The public type name (`ce_type`), from [`contracts::event_type`].
    pub fn event_type(&self) -> &'static str {
        match self {
            PublicEvent::Reserved(_) => contracts::event_type::INVENTORY_RESERVED,
            PublicEvent::Rejected(_) => contracts::event_type::INVENTORY_REJECTED,
            PublicEvent::Released(_) => contracts::event_type::INVENTORY_RELEASED,
        }
    }

    /// The order the event is about: the message key.
    pub fn order_id(&self) -> Uuid {
        match self {
            PublicEvent::Reserved(e) => e.order_id,
            PublicEvent::Rejected(e) => e.order_id,
            PublicEvent::Released(e) => e.order_id,
        }
    }

    /// The JSON payload, without any tag (the type travels in the envelope).
    pub fn payload(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            PublicEvent::Reserved(e) => serde_json::to_value(e),
            PublicEvent::Rejected(e) => serde_json::to_value(e),
            PublicEvent::Released(e) => serde_json::to_value(e),
        }
    }
}

/// The outcome of one decision: events to append per stream, and what to publish.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InventoryDecision {
    /// Events for `reservation-{order_id}`.
    pub reservation: Vec<ReservationEvent>,
    /// Events per SKU (key: the SKU; stream id [`super::SkuState::stream_id`]). Sorted by SKU, so
    /// appending in map order takes row locks in one global order across handlers.
    pub skus: BTreeMap<String, Vec<SkuEvent>>,
    /// The integration event to put in the outbox, if any.
    pub publish: Option<PublicEvent>,
}

impl InventoryDecision {
    /// Nothing to append and nothing to publish: the message was already handled.
    pub fn is_empty(&self) -> bool {
        self.reservation.is_empty() && self.skus.is_empty() && self.publish.is_none()
    }
}

/// `OrderPlaced`: reserve every line or none.
///
/// `skus` holds the state of each SKU in `lines` (a missing entry counts as unknown). Unknown
/// SKUs reject the order with `UnknownSku`; otherwise SKUs with fewer available units than the
/// order asks for (duplicate lines summed) reject it with `OutOfStock`; the rejected SKUs are
/// listed in sorted order. Otherwise one `StockReserved` per SKU and a `Reserved` carrying the
/// lines as ordered, priced from the catalogue.
///
/// Nothing is decided for a reservation already decided, or for an order whose cancellation was
/// already noted. Errors are for orders that should not exist (no lines, a zero quantity) and
/// for amounts that overflow.
pub fn reserve(
    order_id: Uuid,
    customer_id: &str,
    lines: &[OrderLine],
    ship_to: &ShipTo,
    reservation: &ReservationState,
    skus: &HashMap<String, SkuState>,
) -> Result<InventoryDecision, DomainError> {
    if reservation.is_decided() || reservation.cancelled {
        return Ok(InventoryDecision::default());
    }
    let wanted = quantities_by_sku(lines.iter().map(|l| (l.sku.as_str(), l.quantity)))?;

    let known = |sku: &str| skus.get(sku).filter(|state| state.known);
    let unknown: Vec<String> = wanted.keys().filter(|sku| known(sku).is_none()).cloned().collect();
    if !unknown.is_empty() {
        return Ok(rejected(order_id, customer_id, CancelReason::UnknownSku, unknown));
    }
    let short: Vec<String> = wanted
        .iter()
        .filter(|(sku, qty)| known(sku).is_none_or(|state| state.available < i64::from(**qty)))
        .map(|(sku, _)| sku.clone())
        .collect();
    if !short.is_empty() {
        return Ok(rejected(order_id, customer_id, CancelReason::OutOfStock, short));
    }

    let mut priced = Vec::with_capacity(lines.len());
    let mut total_minor: i64 = 0;
    for line in lines {
        let state = known(&line.sku).ok_or_else(|| DomainError::UnknownSku { sku: line.sku.clone() })?;
        let line_total_minor =
            state.price_minor.checked_mul(i64::from(line.quantity)).ok_or(DomainError::AmountOverflow)?;
        total_minor = total_minor.checked_add(line_total_minor).ok_or(DomainError::AmountOverflow)?;
        priced.push(PricedLine {
            sku: line.sku.clone(),
            quantity: line.quantity,
            unit_price_minor: state.price_minor,
            line_total_minor,
        });
    }

    let mut sku_events = BTreeMap::new();
    for (sku, quantity) in wanted {
        let state = known(&sku).ok_or_else(|| DomainError::UnknownSku { sku: sku.clone() })?;
        let events = state.decide(SkuCommand::Reserve { order_id, quantity })?;
        sku_events.insert(sku, events);
    }

    Ok(InventoryDecision {
        reservation: vec![ReservationEvent::Reserved {
            customer_id: customer_id.to_owned(),
            lines: priced.clone(),
            total_minor,
        }],
        skus: sku_events,
        publish: Some(PublicEvent::Reserved(InventoryReserved {
            order_id,
            customer_id: customer_id.to_owned(),
            lines: priced,
            total_minor,
            currency: contracts::CURRENCY.to_owned(),
            ship_to: ship_to.clone(),
        })),
    })
}

/// `PaymentDeclined`, `ShipmentFailed`, `OrderCancelled`: give the order's stock back.
///
/// - Reserved: every line goes back from reserved to available, whatever the trigger.
/// - Shipped: only an `OrderCancelled` (the saga deadline passed after the shipment was
///   scheduled) gives the units back, from shipped.
/// - Pending and `OrderCancelled`: `CancellationNoted`, so a late `OrderPlaced` reserves
///   nothing; nothing is published.
/// - Anything else (rejected, already released, already noted): nothing.
///
/// `skus` must hold the state of every SKU in [`ReservationState::skus_involved`]; a store that
/// holds fewer units than the reservation says is a [`DomainError::StockInconsistent`].
pub fn release(
    order_id: Uuid,
    trigger: CompensationTrigger,
    reservation: &ReservationState,
    skus: &HashMap<String, SkuState>,
) -> Result<InventoryDecision, DomainError> {
    let cancelled = trigger == CompensationTrigger::OrderCancelled;
    match &reservation.status {
        ReservationStatus::Reserved { lines, .. } => give_back(order_id, trigger, false, lines, skus),
        ReservationStatus::Shipped { lines, .. } if cancelled => give_back(order_id, trigger, true, lines, skus),
        ReservationStatus::Pending if cancelled && !reservation.cancelled => Ok(InventoryDecision {
            reservation: vec![ReservationEvent::CancellationNoted],
            ..InventoryDecision::default()
        }),
        _ => Ok(InventoryDecision::default()),
    }
}

/// `ShipmentScheduled`: the reserved units leave with the shipment (reserved → shipped). Nothing
/// is published. Anything but a live reservation (already shipped, released after a
/// cancellation, rejected, pending) decides nothing.
pub fn mark_shipped(
    order_id: Uuid,
    reservation: &ReservationState,
    skus: &HashMap<String, SkuState>,
) -> Result<InventoryDecision, DomainError> {
    let ReservationStatus::Reserved { lines, .. } = &reservation.status else {
        return Ok(InventoryDecision::default());
    };
    let sku_events = per_sku(lines, skus, |quantity| SkuCommand::Ship { order_id, quantity })?;
    Ok(InventoryDecision { reservation: vec![ReservationEvent::MarkedShipped], skus: sku_events, publish: None })
}

fn rejected(order_id: Uuid, customer_id: &str, reason: CancelReason, skus: Vec<String>) -> InventoryDecision {
    InventoryDecision {
        reservation: vec![ReservationEvent::Rejected {
            customer_id: customer_id.to_owned(),
            reason,
            skus: skus.clone(),
        }],
        skus: BTreeMap::new(),
        publish: Some(PublicEvent::Rejected(InventoryRejected {
            order_id,
            customer_id: customer_id.to_owned(),
            reason,
            skus,
        })),
    }
}

fn give_back(
    order_id: Uuid,
    trigger: CompensationTrigger,
    from_shipped: bool,
    lines: &[PricedLine],
    skus: &HashMap<String, SkuState>,
) -> Result<InventoryDecision, DomainError> {
    let sku_events = per_sku(lines, skus, |quantity| SkuCommand::Release { order_id, quantity, from_shipped })?;
    Ok(InventoryDecision {
        reservation: vec![ReservationEvent::Released { trigger, from_shipped }],
        skus: sku_events,
        publish: Some(PublicEvent::Released(InventoryReleased {
            order_id,
            lines: lines.iter().map(|line| OrderLine { sku: line.sku.clone(), quantity: line.quantity }).collect(),
            trigger,
        })),
    })
}

/// Runs one SKU command per SKU of `lines` (duplicate lines summed).
fn per_sku(
    lines: &[PricedLine],
    skus: &HashMap<String, SkuState>,
    command: impl Fn(u32) -> SkuCommand,
) -> Result<BTreeMap<String, Vec<SkuEvent>>, DomainError> {
    let wanted = quantities_by_sku(lines.iter().map(|l| (l.sku.as_str(), l.quantity)))?;
    let mut events = BTreeMap::new();
    for (sku, quantity) in wanted {
        let decided = match skus.get(&sku) {
            Some(state) => state.decide(command(quantity))?,
            None => SkuState::new(sku.clone()).decide(command(quantity))?,
        };
        events.insert(sku, decided);
    }
    Ok(events)
}

/// Sums the quantity asked per SKU. Refuses an empty order and zero quantities.
fn quantities_by_sku<'a>(
    lines: impl IntoIterator<Item = (&'a str, u32)>,
) -> Result<BTreeMap<String, u32>, DomainError> {
    let mut wanted: BTreeMap<String, u32> = BTreeMap::new();
    for (sku, quantity) in lines {
        if quantity == 0 {
            return Err(DomainError::ZeroQuantity { sku: sku.to_owned() });
        }
        let total = wanted.entry(sku.to_owned()).or_insert(0);
        *total = total.checked_add(quantity).ok_or_else(|| DomainError::QuantityOverflow { sku: sku.to_owned() })?;
    }
    if wanted.is_empty() {
        return Err(DomainError::EmptyOrder);
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEE: &str = "sku-tee";
    const POSTER: &str = "sku-poster";
    const SOLDOUT: &str = "sku-soldout";

    fn order() -> Uuid {
        Uuid::from_u128(0xabc)
    }

    fn ship_to() -> ShipTo {
        ShipTo { country: "DE".into(), ..ShipTo::default() }
    }

    fn line(sku: &str, quantity: u32) -> OrderLine {
        OrderLine { sku: sku.into(), quantity }
    }

    fn product(sku: &str, price_minor: i64, stock: i64) -> SkuState {
        SkuState::fold(
            sku,
            &[SkuEvent::ProductUpserted { name: sku.into(), price_minor }, SkuEvent::StockAdjusted { delta: stock }],
        )
    }

    fn catalogue() -> HashMap<String, SkuState> {
        [product(TEE, 1500, 100), product(POSTER, 1200, 5), product(SOLDOUT, 5000, 0)]
            .into_iter()
            .map(|s| (s.sku.clone(), s))
            .collect()
    }

    /// Applies a decision to the states, as the store would after the append.
    fn commit(decision: &InventoryDecision, reservation: &mut ReservationState, skus: &mut HashMap<String, SkuState>) {
        for event in &decision.reservation {
            reservation.apply(event);
        }
        for (sku, events) in &decision.skus {
            let state = skus.entry(sku.clone()).or_insert_with(|| SkuState::new(sku.clone()));
            for event in events {
                state.apply(event);
            }
        }
    }

    fn reserve_lines(
        lines: &[OrderLine],
        reservation: &ReservationState,
        skus: &HashMap<String, SkuState>,
    ) -> Result<InventoryDecision, DomainError> {
        reserve(order(), "cust-rich", lines, &ship_to(), reservation, skus)
    }

    /// A reservation of 2 tees and 1 poster, committed.
    fn reserved_order() -> (ReservationState, HashMap<String, SkuState>) {
        let mut skus = catalogue();
        let mut reservation = ReservationState::default();
        let decision = reserve_lines(&[line(TEE, 2), line(POSTER, 1)], &reservation, &skus).expect("reserve");
        commit(&decision, &mut reservation, &mut skus);
        (reservation, skus)
    }

    #[test]
    fn reserving_available_lines_reserves_each_sku_and_prices_the_order() {
        let skus = catalogue();
        let decision =
            reserve_lines(&[line(TEE, 2), line(POSTER, 1)], &ReservationState::default(), &skus).expect("reserve");

        let expected_lines = vec![
            PricedLine { sku: TEE.into(), quantity: 2, unit_price_minor: 1500, line_total_minor: 3000 },
            PricedLine { sku: POSTER.into(), quantity: 1, unit_price_minor: 1200, line_total_minor: 1200 },
        ];
        assert_eq!(
            decision.reservation,
            vec![ReservationEvent::Reserved {
                customer_id: "cust-rich".into(),
                lines: expected_lines.clone(),
                total_minor: 4200,
            }]
        );
        assert_eq!(
            decision.skus,
            BTreeMap::from([
                (POSTER.to_owned(), vec![SkuEvent::StockReserved { order_id: order(), quantity: 1 }]),
                (TEE.to_owned(), vec![SkuEvent::StockReserved { order_id: order(), quantity: 2 }]),
            ])
        );
        assert_eq!(
            decision.publish,
            Some(PublicEvent::Reserved(InventoryReserved {
                order_id: order(),
                customer_id: "cust-rich".into(),
                lines: expected_lines,
                total_minor: 4200,
                currency: "EUR".into(),
                ship_to: ship_to(),
            }))
        );
    }

    #[test]
    fn reserving_moves_stock_to_reserved() {
        let (reservation, skus) = reserved_order();
        assert!(matches!(reservation.status, ReservationStatus::Reserved { total_minor: 4200, .. }));
        assert_eq!((skus[TEE].available, skus[TEE].reserved), (98, 2));
        assert_eq!((skus[POSTER].available, skus[POSTER].reserved), (4, 1));
    }

    #[test]
    fn duplicate_skus_are_summed_for_the_stock_check() {
        let skus = catalogue();
        let decision =
            reserve_lines(&[line(POSTER, 3), line(POSTER, 3)], &ReservationState::default(), &skus).expect("reserve");
        assert!(decision.skus.is_empty());
        assert_eq!(
            decision.publish,
            Some(PublicEvent::Rejected(InventoryRejected {
                order_id: order(),
                customer_id: "cust-rich".into(),
                reason: CancelReason::OutOfStock,
                skus: vec![POSTER.into()],
            }))
        );
    }

    #[test]
    fn duplicate_skus_reserve_one_summed_quantity_and_keep_the_lines_as_ordered() {
        let skus = catalogue();
        let decision =
            reserve_lines(&[line(POSTER, 2), line(POSTER, 3)], &ReservationState::default(), &skus).expect("reserve");
        assert_eq!(decision.skus[POSTER], vec![SkuEvent::StockReserved { order_id: order(), quantity: 5 }]);
        let Some(PublicEvent::Reserved(published)) = decision.publish else {
            panic!("expected InventoryReserved");
        };
        assert_eq!(published.lines.len(), 2);
        assert_eq!(published.total_minor, 6000);
    }

    #[test]
    fn an_unknown_sku_rejects_the_whole_order() {
        let skus = catalogue();
        let decision =
            reserve_lines(&[line(TEE, 1), line("sku-nope", 1)], &ReservationState::default(), &skus).expect("reserve");
        assert!(decision.skus.is_empty());
        assert_eq!(
            decision.reservation,
            vec![ReservationEvent::Rejected {
                customer_id: "cust-rich".into(),
                reason: CancelReason::UnknownSku,
                skus: vec!["sku-nope".into()],
            }]
        );
        assert_eq!(decision.publish.as_ref().map(PublicEvent::event_type), Some("InventoryRejected"));
    }

    #[test]
    fn a_sku_with_an_empty_stream_counts_as_unknown() {
        let mut skus = catalogue();
        skus.insert("sku-ghost".into(), SkuState::new("sku-ghost"));
        let decision = reserve_lines(&[line("sku-ghost", 1)], &ReservationState::default(), &skus).expect("reserve");
        assert!(matches!(
            decision.publish,
            Some(PublicEvent::Rejected(InventoryRejected { reason: CancelReason::UnknownSku, .. }))
        ));
    }

    #[test]
    fn unknown_skus_take_precedence_over_shortages() {
        let skus = catalogue();
        let decision =
            reserve_lines(&[line(SOLDOUT, 1), line("sku-b", 1), line("sku-a", 1)], &ReservationState::default(), &skus)
                .expect("reserve");
        assert_eq!(
            decision.reservation,
            vec![ReservationEvent::Rejected {
                customer_id: "cust-rich".into(),
                reason: CancelReason::UnknownSku,
                skus: vec!["sku-a".into(), "sku-b".into()],
            }]
        );
    }

    #[test]
    fn a_short_sku_rejects_the_whole_order_and_names_every_short_sku() {
        let skus = catalogue();
        let decision =
            reserve_lines(&[line(TEE, 1), line(SOLDOUT, 1), line(POSTER, 6)], &ReservationState::default(), &skus)
                .expect("reserve");
        assert!(decision.skus.is_empty());
        assert_eq!(
            decision.reservation,
            vec![ReservationEvent::Rejected {
                customer_id: "cust-rich".into(),
                reason: CancelReason::OutOfStock,
                skus: vec![POSTER.into(), SOLDOUT.into()],
            }]
        );
    }

    #[test]
    fn reserving_exactly_the_available_stock_succeeds() {
        let skus = catalogue();
        let decision = reserve_lines(&[line(POSTER, 5)], &ReservationState::default(), &skus).expect("reserve");
        assert!(matches!(decision.publish, Some(PublicEvent::Reserved(_))));
    }

    #[test]
    fn a_decided_reservation_decides_nothing_again() {
        let (reservation, skus) = reserved_order();
        let again = reserve_lines(&[line(TEE, 2), line(POSTER, 1)], &reservation, &skus).expect("reserve");
        assert!(again.is_empty());

        let mut rejected = ReservationState::default();
        let decision = reserve_lines(&[line(SOLDOUT, 1)], &rejected, &skus).expect("reserve");
        commit(&decision, &mut rejected, &mut catalogue());
        assert!(reserve_lines(&[line(SOLDOUT, 1)], &rejected, &skus).expect("reserve").is_empty());
    }

    #[test]
    fn an_order_cancelled_before_reservation_is_not_reserved() {
        let skus = catalogue();
        let reservation = ReservationState::fold(&[ReservationEvent::CancellationNoted]);
        let decision = reserve_lines(&[line(TEE, 1)], &reservation, &skus).expect("reserve");
        assert!(decision.is_empty());
    }

    #[test]
    fn an_order_without_lines_or_with_a_zero_quantity_is_an_error() {
        let skus = catalogue();
        let fresh = ReservationState::default();
        assert_eq!(reserve_lines(&[], &fresh, &skus), Err(DomainError::EmptyOrder));
        assert_eq!(
            reserve_lines(&[line(TEE, 1), line(POSTER, 0)], &fresh, &skus),
            Err(DomainError::ZeroQuantity { sku: POSTER.into() })
        );
    }

    #[test]
    fn an_overflowing_total_is_an_error() {
        let mut skus = catalogue();
        skus.insert("sku-gold".into(), product("sku-gold", i64::MAX / 2, 10));
        assert_eq!(
            reserve_lines(&[line("sku-gold", 3)], &ReservationState::default(), &skus),
            Err(DomainError::AmountOverflow)
        );
        assert_eq!(
            reserve_lines(
                &[line("sku-gold", 1), line("sku-gold", 1), line(TEE, 1)],
                &ReservationState::default(),
                &skus
            ),
            Err(DomainError::AmountOverflow)
        );
    }

    #[test]
    fn an_overflowing_summed_quantity_is_an_error() {
        let skus = catalogue();
        assert_eq!(
            reserve_lines(&[line(TEE, u32::MAX), line(TEE, 1)], &ReservationState::default(), &skus),
            Err(DomainError::QuantityOverflow { sku: TEE.into() })
        );
    }

    #[test]
    fn releasing_a_reservation_returns_every_line_and_publishes_it() {
        let (mut reservation, mut skus) = reserved_order();
        let decision = release(order(), CompensationTrigger::PaymentDeclined, &reservation, &skus).expect("release");
        assert_eq!(
            decision.reservation,
            vec![ReservationEvent::Released { trigger: CompensationTrigger::PaymentDeclined, from_shipped: false }]
        );
        assert_eq!(
            decision.skus[TEE],
            vec![SkuEvent::StockReleased { order_id: order(), quantity: 2, from_shipped: false }]
        );
        assert_eq!(
            decision.publish,
            Some(PublicEvent::Released(InventoryReleased {
                order_id: order(),
                lines: vec![line(TEE, 2), line(POSTER, 1)],
                trigger: CompensationTrigger::PaymentDeclined,
            }))
        );

        commit(&decision, &mut reservation, &mut skus);
        assert_eq!((skus[TEE].available, skus[TEE].reserved), (100, 0));
        assert_eq!((skus[POSTER].available, skus[POSTER].reserved), (5, 0));
        assert!(!reservation.cancelled);
    }

    #[test]
    fn releasing_twice_releases_once() {
        let (mut reservation, mut skus) = reserved_order();
        for trigger in [CompensationTrigger::ShipmentFailed, CompensationTrigger::OrderCancelled] {
            let decision = release(order(), trigger, &reservation, &skus).expect("release");
            commit(&decision, &mut reservation, &mut skus);
        }
        assert!(matches!(
            reservation.status,
            ReservationStatus::Released { trigger: CompensationTrigger::ShipmentFailed, .. }
        ));
        assert!(
            release(order(), CompensationTrigger::ShipmentFailed, &reservation, &skus).expect("release").is_empty()
        );
        assert_eq!(skus[TEE].available, 100);
    }

    #[test]
    fn cancelling_a_reservation_releases_it_and_marks_it_cancelled() {
        let (mut reservation, mut skus) = reserved_order();
        let decision = release(order(), CompensationTrigger::OrderCancelled, &reservation, &skus).expect("release");
        assert_eq!(decision.publish.as_ref().map(PublicEvent::event_type), Some("InventoryReleased"));
        commit(&decision, &mut reservation, &mut skus);
        assert!(reservation.cancelled);
    }

    #[test]
    fn cancelling_before_anything_was_reserved_only_notes_the_cancellation() {
        let skus = catalogue();
        let mut reservation = ReservationState::default();
        let decision = release(order(), CompensationTrigger::OrderCancelled, &reservation, &skus).expect("release");
        assert_eq!(
            decision,
            InventoryDecision { reservation: vec![ReservationEvent::CancellationNoted], ..Default::default() }
        );
        commit(&decision, &mut reservation, &mut catalogue());
        assert!(reservation.cancelled);
        assert!(release(order(), CompensationTrigger::OrderCancelled, &reservation, &skus).expect("again").is_empty());
    }

    #[test]
    fn other_triggers_before_anything_was_reserved_decide_nothing() {
        let skus = catalogue();
        for trigger in [CompensationTrigger::PaymentDeclined, CompensationTrigger::ShipmentFailed] {
            assert!(release(order(), trigger, &ReservationState::default(), &skus).expect("release").is_empty());
        }
    }

    #[test]
    fn releasing_a_rejected_order_decides_nothing() {
        let skus = catalogue();
        let reservation = ReservationState::fold(&[ReservationEvent::Rejected {
            customer_id: "c".into(),
            reason: CancelReason::OutOfStock,
            skus: vec![SOLDOUT.into()],
        }]);
        for trigger in [CompensationTrigger::OrderCancelled, CompensationTrigger::PaymentDeclined] {
            assert!(release(order(), trigger, &reservation, &skus).expect("release").is_empty());
        }
    }

    #[test]
    fn shipping_moves_reserved_stock_to_shipped_without_publishing() {
        let (mut reservation, mut skus) = reserved_order();
        let decision = mark_shipped(order(), &reservation, &skus).expect("ship");
        assert_eq!(decision.reservation, vec![ReservationEvent::MarkedShipped]);
        assert_eq!(decision.skus[POSTER], vec![SkuEvent::StockShipped { order_id: order(), quantity: 1 }]);
        assert_eq!(decision.publish, None);
        commit(&decision, &mut reservation, &mut skus);
        assert_eq!((skus[TEE].available, skus[TEE].reserved, skus[TEE].shipped), (98, 0, 2));
        assert!(mark_shipped(order(), &reservation, &skus).expect("again").is_empty());
    }

    #[test]
    fn shipping_a_released_or_unreserved_order_decides_nothing() {
        let (mut reservation, mut skus) = reserved_order();
        let decision = release(order(), CompensationTrigger::OrderCancelled, &reservation, &skus).expect("release");
        commit(&decision, &mut reservation, &mut skus);
        assert!(mark_shipped(order(), &reservation, &skus).expect("ship").is_empty());
        assert!(mark_shipped(order(), &ReservationState::default(), &skus).expect("ship").is_empty());
    }

    #[test]
    fn a_shipped_order_is_released_from_shipped_only_on_cancellation() {
        let (mut reservation, mut skus) = reserved_order();
        let decision = mark_shipped(order(), &reservation, &skus).expect("ship");
        commit(&decision, &mut reservation, &mut skus);

        for trigger in [CompensationTrigger::PaymentDeclined, CompensationTrigger::ShipmentFailed] {
            assert!(release(order(), trigger, &reservation, &skus).expect("release").is_empty());
        }

        let decision = release(order(), CompensationTrigger::OrderCancelled, &reservation, &skus).expect("release");
        assert_eq!(
            decision.reservation,
            vec![ReservationEvent::Released { trigger: CompensationTrigger::OrderCancelled, from_shipped: true }]
        );
        assert_eq!(
            decision.skus[TEE],
            vec![SkuEvent::StockReleased { order_id: order(), quantity: 2, from_shipped: true }]
        );
        commit(&decision, &mut reservation, &mut skus);
        assert_eq!((skus[TEE].available, skus[TEE].reserved, skus[TEE].shipped), (100, 0, 0));
        assert!(reservation.cancelled);
    }

    #[test]
    fn a_store_holding_less_than_the_reservation_is_an_inconsistency() {
        let (reservation, _) = reserved_order();
        let skus = catalogue();
        assert!(matches!(
            release(order(), CompensationTrigger::ShipmentFailed, &reservation, &skus),
            Err(DomainError::StockInconsistent { .. })
        ));
        assert!(matches!(
            mark_shipped(order(), &reservation, &HashMap::new()),
            Err(DomainError::StockInconsistent { .. })
        ));
    }

    #[test]
    fn public_events_carry_their_contract_type_and_order_and_a_plain_payload() {
        let (reservation, skus) = reserved_order();
        let decision = release(order(), CompensationTrigger::ShipmentFailed, &reservation, &skus).expect("release");
        let public = decision.publish.expect("published");
        assert_eq!(public.event_type(), contracts::event_type::INVENTORY_RELEASED);
        assert_eq!(public.order_id(), order());
        let payload = public.payload().expect("payload");
        let decoded: InventoryReleased = serde_json::from_value(payload).expect("decode");
        assert_eq!(decoded.trigger, CompensationTrigger::ShipmentFailed);
    }
}
