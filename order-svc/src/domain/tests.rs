//! Every transition of the Order aggregate, and the saga's invariants as properties.

use super::*;
use chrono::NaiveDate;
use contracts::{CompensationTrigger, NotificationKind, PricedLine};
use proptest::prelude::*;

const TOTAL: i64 = 3000;

fn order_id() -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).unwrap_or_default()
}

fn at(seconds: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(seconds)
}

fn command() -> PlaceOrder {
    PlaceOrder {
        customer_id: CustomerId::parse("cust-rich").expect("valid"),
        items: OrderItems::parse(vec![OrderItem {
            sku: Sku::parse("sku-tee").expect("valid"),
            quantity: Quantity::parse(2).expect("valid"),
        }])
        .expect("valid"),
        ship_to: Destination::parse(CountryCode::parse("nl").expect("valid"), AddressLines::default()).expect("valid"),
    }
}

fn ship_to() -> ShipTo {
    ShipTo { country: "NL".into(), ..ShipTo::default() }
}

fn placed() -> OrderState {
    let events = place(command(), order_id(), t0(), TimeDelta::seconds(30));
    fold(events.iter().map(|e| (e, t0()))).expect("OrderPlaced opens the stream")
}

fn reserved() -> OrderEvent {
    OrderEvent::InventoryReserved(contracts::InventoryReserved {
        order_id: order_id(),
        customer_id: "cust-rich".into(),
        lines: vec![PricedLine { sku: "sku-tee".into(), quantity: 2, unit_price_minor: 1500, line_total_minor: TOTAL }],
        total_minor: TOTAL,
        currency: "EUR".into(),
        ship_to: ship_to(),
    })
}

fn rejected() -> OrderEvent {
    OrderEvent::InventoryRejected(contracts::InventoryRejected {
        order_id: order_id(),
        customer_id: "cust-rich".into(),
        reason: CancelReason::OutOfStock,
        skus: vec!["sku-tee".into()],
    })
}

fn captured() -> OrderEvent {
    OrderEvent::PaymentCaptured(contracts::PaymentCaptured {
        order_id: order_id(),
        customer_id: "cust-rich".into(),
        payment_id: Uuid::from_u128(2),
        amount_minor: TOTAL,
        currency: "EUR".into(),
        ship_to: ship_to(),
    })
}

fn declined() -> OrderEvent {
    OrderEvent::PaymentDeclined(contracts::PaymentDeclined {
        order_id: order_id(),
        customer_id: "cust-rich".into(),
        reason: CancelReason::PaymentDeclined,
        amount_minor: TOTAL,
    })
}

fn scheduled() -> OrderEvent {
    OrderEvent::ShipmentScheduled(contracts::ShipmentScheduled {
        order_id: order_id(),
        customer_id: "cust-rich".into(),
        shipment_id: Uuid::from_u128(3),
        carrier: "postnl".into(),
        ship_date: NaiveDate::from_ymd_opt(2025, 6, 16).unwrap_or_default(),
        ship_to: ship_to(),
    })
}

fn shipment_failed() -> OrderEvent {
    OrderEvent::ShipmentFailed(contracts::ShipmentFailed {
        order_id: order_id(),
        customer_id: "cust-rich".into(),
        reason: CancelReason::DestinationNotServed,
    })
}

fn released(trigger: CompensationTrigger) -> OrderEvent {
    OrderEvent::InventoryReleased(contracts::InventoryReleased {
        order_id: order_id(),
        lines: vec![OrderLine { sku: "sku-tee".into(), quantity: 2 }],
        trigger,
    })
}

fn refunded(trigger: CompensationTrigger) -> OrderEvent {
    OrderEvent::PaymentRefunded(contracts::PaymentRefunded {
        order_id: order_id(),
        customer_id: "cust-rich".into(),
        payment_id: Uuid::from_u128(2),
        amount_minor: TOTAL,
        currency: "EUR".into(),
        trigger,
    })
}

fn shipment_cancelled() -> OrderEvent {
    OrderEvent::ShipmentCancelled(contracts::ShipmentCancelled {
        order_id: order_id(),
        shipment_id: Uuid::from_u128(3),
        carrier: "postnl".into(),
        ship_date: NaiveDate::from_ymd_opt(2025, 6, 16).unwrap_or_default(),
    })
}

fn notified(kind: NotificationKind) -> OrderEvent {
    OrderEvent::NotificationSent(contracts::NotificationSent {
        order_id: order_id(),
        customer_id: "cust-rich".into(),
        kind,
        notification_id: Uuid::from_u128(4),
        sinks: vec!["log".into()],
    })
}

fn completed() -> OrderEvent {
    OrderEvent::OrderCompleted(contracts::OrderCompleted {
        order_id: order_id(),
        customer_id: "cust-rich".into(),
        total_minor: TOTAL,
        currency: "EUR".into(),
        shipment: Some(contracts::CompletedShipment {
            shipment_id: Uuid::from_u128(3),
            carrier: "postnl".into(),
            ship_date: NaiveDate::from_ymd_opt(2025, 6, 16).unwrap_or_default(),
        }),
    })
}

fn cancelled(reason: CancelReason, compensations: &[&str]) -> OrderEvent {
    OrderEvent::OrderCancelled(contracts::OrderCancelled {
        order_id: order_id(),
        customer_id: "cust-rich".into(),
        reason,
        compensations: compensations.iter().map(|c| (*c).to_owned()).collect(),
    })
}

/// Observes a fact and folds what was decided, as a handler would in one transaction.
fn step(state: &mut OrderState, fact: OrderEvent) -> Vec<OrderEvent> {
    let events = observe(state, fact).expect("an upstream fact for this order");
    let recorded_at = state.updated_at() + TimeDelta::seconds(1);
    for event in &events {
        state.apply(event, recorded_at);
    }
    events
}

fn run(facts: impl IntoIterator<Item = OrderEvent>) -> (OrderState, Vec<OrderEvent>) {
    let mut state = placed();
    let decided =
        facts.into_iter().flat_map(|fact| step(&mut state, fact)).filter(OrderEvent::is_decided_by_order_svc).collect();
    (state, decided)
}

// ---- placing ----

#[test]
fn placing_an_order_records_order_placed_due_at_the_deadline() {
    let events = place(command(), order_id(), t0(), TimeDelta::seconds(30));

    let [OrderEvent::OrderPlaced(placed)] = events.as_slice() else {
        panic!("expected exactly one OrderPlaced, got {events:?}");
    };
    assert_eq!(placed.order_id, order_id());
    assert_eq!(placed.customer_id, "cust-rich");
    assert_eq!(placed.items, vec![OrderLine { sku: "sku-tee".into(), quantity: 2 }]);
    assert_eq!(placed.ship_to.country, "NL");
    assert_eq!(placed.placed_at, t0());
    assert_eq!(placed.deadline_at, at(30));
}

#[test]
fn a_placed_order_is_pending_unpriced_and_without_reason() {
    let state = placed();

    assert_eq!(state.status(), OrderStatus::Pending);
    assert_eq!(state.total_minor(), None);
    assert_eq!(state.reason(), None);
    assert_eq!(state.version(), 1);
    assert_eq!(state.placed_at(), t0());
    assert_eq!(state.deadline_at(), at(30));
    assert!(!state.is_terminal());
}

#[test]
fn events_before_order_placed_do_not_open_a_stream() {
    assert_eq!(evolve(None, &reserved(), t0()), None);
}

// ---- the happy path ----

#[test]
fn inventory_reserved_makes_the_order_reserved_and_prices_it() {
    let (state, decided) = run([reserved()]);

    assert_eq!(state.status(), OrderStatus::Reserved);
    assert_eq!(state.total_minor(), Some(TOTAL));
    assert!(decided.is_empty());
}

#[test]
fn payment_captured_makes_the_order_paid() {
    let (state, decided) = run([reserved(), captured()]);

    assert_eq!(state.status(), OrderStatus::Paid);
    assert!(decided.is_empty());
}

#[test]
fn accepting_the_scheduled_shipment_completes_the_order_with_its_total_and_shipment() {
    let (state, decided) = run([reserved(), captured(), scheduled()]);

    assert_eq!(decided, vec![completed()]);
    assert_eq!(state.status(), OrderStatus::Completed);
    assert_eq!(state.total_minor(), Some(TOTAL));
    assert_eq!(state.reason(), None);
}

#[test]
fn observe_returns_the_fact_first_and_then_the_decision() {
    let (state, _) = run([reserved(), captured()]);

    let events = observe(&state, scheduled()).expect("valid");

    assert_eq!(events, vec![scheduled(), completed()]);
}

#[test]
fn a_shipment_seen_before_the_price_leaves_the_order_shipped_until_the_price_arrives() {
    let (state, decided) = run([scheduled()]);
    assert!(decided.is_empty());
    assert_eq!(state.status(), OrderStatus::Shipped);

    let (state, decided) = run([scheduled(), captured()]);
    assert_eq!(decided, vec![completed()]);
    assert_eq!(state.status(), OrderStatus::Completed);
}

#[test]
fn notifications_are_recorded_but_decide_nothing() {
    for kind in [NotificationKind::Confirmation, NotificationKind::Cancellation] {
        let (state, decided) = run([reserved(), captured(), notified(kind)]);

        assert!(decided.is_empty(), "{kind:?} decided {decided:?}");
        assert_eq!(state.status(), OrderStatus::Paid);
        assert_eq!(state.timeline().last().map(|e| e.event_type), Some("NotificationSent"));
    }
}

#[test]
fn a_redelivered_shipment_does_not_complete_the_order_twice() {
    let (state, decided) = run([reserved(), captured(), scheduled(), scheduled()]);

    assert_eq!(decided, vec![completed()]);
    assert_eq!(state.status(), OrderStatus::Completed);
}

// ---- failures and compensations ----

#[test]
fn inventory_rejected_cancels_at_once_with_nothing_to_compensate() {
    let (state, decided) = run([rejected()]);

    assert_eq!(decided, vec![cancelled(CancelReason::OutOfStock, &[])]);
    assert_eq!(state.status(), OrderStatus::Cancelled);
    assert_eq!(state.reason(), Some(CancelReason::OutOfStock));
    assert!(state.compensations().is_empty());
}

#[test]
fn a_second_rejection_does_not_cancel_the_order_twice() {
    let (_, decided) = run([rejected(), rejected()]);

    assert_eq!(decided, vec![cancelled(CancelReason::OutOfStock, &[])]);
}

#[test]
fn payment_declined_leaves_the_order_cancelling_until_inventory_is_released() {
    let (state, decided) = run([reserved(), declined()]);

    assert!(decided.is_empty());
    assert_eq!(state.status(), OrderStatus::Cancelling);
    assert_eq!(state.reason(), None, "reason stays null until cancelled");
}

#[test]
fn the_inventory_release_cancels_a_declined_order_as_payment_declined() {
    let (state, decided) = run([reserved(), declined(), released(CompensationTrigger::PaymentDeclined)]);

    assert_eq!(decided, vec![cancelled(CancelReason::PaymentDeclined, &["InventoryReleased"])]);
    assert_eq!(state.status(), OrderStatus::Cancelled);
    assert_eq!(state.reason(), Some(CancelReason::PaymentDeclined));
    assert_eq!(state.compensations(), ["InventoryReleased"]);
}

#[test]
fn a_release_observed_before_the_decline_cancels_on_the_decline() {
    let (state, decided) = run([reserved(), released(CompensationTrigger::PaymentDeclined), declined()]);

    assert_eq!(decided, vec![cancelled(CancelReason::PaymentDeclined, &["InventoryReleased"])]);
    assert_eq!(state.status(), OrderStatus::Cancelled);
}

#[test]
fn shipment_failed_waits_for_the_refund_and_the_release() {
    let (state, decided) = run([reserved(), captured(), shipment_failed()]);
    assert!(decided.is_empty());
    assert_eq!(state.status(), OrderStatus::Cancelling);

    let (state, decided) =
        run([reserved(), captured(), shipment_failed(), refunded(CompensationTrigger::ShipmentFailed)]);
    assert!(decided.is_empty());
    assert_eq!(state.status(), OrderStatus::Cancelling);

    let (state, decided) =
        run([reserved(), captured(), shipment_failed(), released(CompensationTrigger::ShipmentFailed)]);
    assert!(decided.is_empty());
    assert_eq!(state.status(), OrderStatus::Cancelling);
}

#[test]
fn shipment_failed_cancels_once_refund_then_release_are_observed() {
    let (state, decided) = run([
        reserved(),
        captured(),
        shipment_failed(),
        refunded(CompensationTrigger::ShipmentFailed),
        released(CompensationTrigger::ShipmentFailed),
    ]);

    assert_eq!(decided, vec![cancelled(CancelReason::DestinationNotServed, &["PaymentRefunded", "InventoryReleased"])]);
    assert_eq!(state.status(), OrderStatus::Cancelled);
    assert_eq!(state.reason(), Some(CancelReason::DestinationNotServed));
}

#[test]
fn shipment_failed_cancels_once_release_then_refund_are_observed() {
    let (state, decided) = run([
        reserved(),
        captured(),
        shipment_failed(),
        released(CompensationTrigger::ShipmentFailed),
        refunded(CompensationTrigger::ShipmentFailed),
    ]);

    assert_eq!(decided, vec![cancelled(CancelReason::DestinationNotServed, &["InventoryReleased", "PaymentRefunded"])]);
    assert_eq!(state.status(), OrderStatus::Cancelled);
}

#[test]
fn the_first_failure_decides_the_reason() {
    let (state, decided) =
        run([reserved(), declined(), shipment_failed(), released(CompensationTrigger::PaymentDeclined)]);

    assert_eq!(decided, vec![cancelled(CancelReason::PaymentDeclined, &["InventoryReleased"])]);
    assert_eq!(state.reason(), Some(CancelReason::PaymentDeclined));
}

#[test]
fn a_duplicate_compensation_is_listed_once() {
    let (state, _) = run([
        reserved(),
        released(CompensationTrigger::PaymentDeclined),
        released(CompensationTrigger::PaymentDeclined),
        declined(),
    ]);

    assert_eq!(state.compensations(), ["InventoryReleased"]);
}

// ---- the deadline ----

#[test]
fn the_deadline_does_not_fire_before_deadline_at() {
    let state = placed();

    assert!(expire(&state, at(29)).is_empty());
}

#[test]
fn the_deadline_cancels_a_pending_order_as_deadline_exceeded() {
    let state = placed();

    let events = expire(&state, at(30));

    assert_eq!(events, vec![cancelled(CancelReason::DeadlineExceeded, &[])]);
}

#[test]
fn the_deadline_cancels_a_paid_order_without_waiting_for_compensations() {
    let (mut state, _) = run([reserved(), captured()]);

    let events = expire(&state, at(31));
    for event in &events {
        state.apply(event, at(31));
    }

    assert_eq!(events, vec![cancelled(CancelReason::DeadlineExceeded, &[])]);
    assert_eq!(state.status(), OrderStatus::Cancelled);
    assert_eq!(state.reason(), Some(CancelReason::DeadlineExceeded));
}

#[test]
fn the_deadline_keeps_the_reason_of_a_failure_awaiting_compensation() {
    let (state, _) = run([reserved(), captured(), shipment_failed()]);

    let events = expire(&state, at(60));

    assert_eq!(events, vec![cancelled(CancelReason::DestinationNotServed, &[])]);
}

#[test]
fn the_deadline_does_nothing_to_a_terminal_order() {
    let (completed_order, _) = run([reserved(), captured(), scheduled()]);
    let (cancelled_order, _) = run([rejected()]);

    assert!(expire(&completed_order, at(3600)).is_empty());
    assert!(expire(&cancelled_order, at(3600)).is_empty());
}

#[test]
fn the_deadline_no_longer_applies_once_the_shipment_is_accepted() {
    let (state, decided) = run([reserved(), captured(), scheduled()]);
    assert_eq!(decided, vec![completed()]);

    assert!(expire(&state, state.deadline_at()).is_empty());
    assert!(expire(&state, at(3600)).is_empty());
}

#[test]
fn a_shipment_scheduled_after_the_deadline_cancelled_the_order_does_not_complete_it() {
    let (mut state, _) = run([reserved(), captured()]);
    for event in expire(&state, at(30)) {
        state.apply(&event, at(30));
    }

    let decided = step(&mut state, scheduled());

    assert_eq!(decided, vec![scheduled()], "recorded, nothing decided");
    assert_eq!(state.status(), OrderStatus::Cancelled);
    assert_eq!(state.reason(), Some(CancelReason::DeadlineExceeded));
}

#[test]
fn late_facts_after_cancellation_are_recorded_but_change_nothing() {
    let mut state = placed();
    for event in expire(&state, at(30)) {
        state.apply(&event, at(30));
    }

    let late = [
        reserved(),
        captured(),
        scheduled(),
        notified(NotificationKind::Confirmation),
        refunded(CompensationTrigger::OrderCancelled),
        released(CompensationTrigger::OrderCancelled),
        shipment_cancelled(),
        notified(NotificationKind::Cancellation),
    ];
    let mut decided = Vec::new();
    for fact in late {
        decided.extend(step(&mut state, fact).into_iter().filter(OrderEvent::is_decided_by_order_svc));
    }

    assert!(decided.is_empty());
    assert_eq!(state.status(), OrderStatus::Cancelled);
    assert_eq!(state.reason(), Some(CancelReason::DeadlineExceeded));
    assert!(state.compensations().is_empty(), "the compensations are those named when cancelling");
    assert_eq!(state.timeline().len(), 10);
}

#[test]
fn facts_after_completion_change_nothing() {
    let (state, decided) = run([
        reserved(),
        captured(),
        scheduled(),
        notified(NotificationKind::Confirmation),
        shipment_failed(),
        refunded(CompensationTrigger::ShipmentFailed),
        released(CompensationTrigger::ShipmentFailed),
    ]);

    assert_eq!(decided, vec![completed()]);
    assert_eq!(state.status(), OrderStatus::Completed);
    assert_eq!(state.reason(), None);
}

// ---- refusals ----

#[test]
fn observing_a_fact_about_another_order_is_refused() {
    let state = placed();
    let mut other = reserved();
    if let OrderEvent::InventoryReserved(e) = &mut other {
        e.order_id = Uuid::from_u128(99);
    }

    let result = observe(&state, other);

    assert_eq!(result, Err(DomainError::WrongOrder { expected: order_id(), got: Uuid::from_u128(99) }));
}

#[test]
fn observing_an_order_svc_decision_is_refused() {
    let state = placed();

    for decision in [
        completed(),
        cancelled(CancelReason::OutOfStock, &[]),
        place(command(), order_id(), t0(), TimeDelta::seconds(30)).remove(0),
    ] {
        let event_type = decision.event_type();
        assert_eq!(observe(&state, decision), Err(DomainError::NotAnUpstreamFact { event_type }));
    }
}

// ---- the stream ----

#[test]
fn the_timeline_lists_every_event_oldest_first_with_its_source() {
    let (state, _) = run([reserved(), captured(), scheduled(), notified(NotificationKind::Confirmation)]);

    let timeline: Vec<_> = state.timeline().iter().map(|entry| (entry.event_type, entry.source)).collect();
    assert_eq!(
        timeline,
        vec![
            ("OrderPlaced", "order-svc"),
            ("InventoryReserved", "inventory-svc"),
            ("PaymentCaptured", "payment-svc"),
            ("ShipmentScheduled", "shipping-svc"),
            ("OrderCompleted", "order-svc"),
            ("NotificationSent", "notification-svc"),
        ]
    );
    assert!(state.timeline().windows(2).all(|pair| pair[0].at <= pair[1].at));
    assert_eq!(state.version(), 6);
    assert_eq!(state.updated_at(), state.timeline().last().map(|e| e.at).unwrap_or_default());
}

#[test]
fn a_timeline_entry_serializes_as_type_source_and_at() {
    let entry = TimelineEntry { event_type: "OrderPlaced", source: "order-svc", at: t0() };

    let json = serde_json::to_value(&entry).expect("serialize");

    assert_eq!(json, serde_json::json!({"type": "OrderPlaced", "source": "order-svc", "at": "2025-06-15T15:06:40Z"}));
}

fn every_event() -> Vec<OrderEvent> {
    let mut events = place(command(), order_id(), t0(), TimeDelta::seconds(30));
    events.extend([
        reserved(),
        rejected(),
        captured(),
        declined(),
        scheduled(),
        shipment_failed(),
        released(CompensationTrigger::PaymentDeclined),
        refunded(CompensationTrigger::ShipmentFailed),
        shipment_cancelled(),
        notified(NotificationKind::Confirmation),
        completed(),
        cancelled(CancelReason::DeadlineExceeded, &["InventoryReleased"]),
    ]);
    events
}

#[test]
fn every_event_type_is_a_contract_name_with_a_stable_source() {
    let events = every_event();

    let types: Vec<_> = events.iter().map(OrderEvent::event_type).collect();
    assert_eq!(types, OrderEvent::TYPES);
    for event in &events {
        let expected = match event.event_type() {
            t if t.starts_with("Order") => "order-svc",
            t if t.starts_with("Inventory") => "inventory-svc",
            t if t.starts_with("Payment") => "payment-svc",
            t if t.starts_with("Shipment") => "shipping-svc",
            _ => "notification-svc",
        };
        assert_eq!(event.source(), expected, "{}", event.event_type());
        assert_eq!(event.order_id(), order_id());
    }
}

#[test]
fn every_event_round_trips_through_its_stored_contract_payload() {
    for event in every_event() {
        let payload = event.to_payload().expect("serialize");
        let contract_field = payload.get("order_id").and_then(|v| v.as_str());
        assert_eq!(contract_field, Some(order_id().to_string().as_str()));

        let decoded = OrderEvent::from_payload(event.event_type(), payload).expect("decode");

        assert_eq!(decoded, event);
    }
}

#[test]
fn decoding_an_unknown_type_or_a_mismatched_payload_is_an_error() {
    assert!(matches!(
        OrderEvent::from_payload("OrderTeleported", serde_json::json!({})),
        Err(EventDecodeError::UnknownType(_))
    ));
    assert!(matches!(
        OrderEvent::from_payload("PaymentCaptured", serde_json::json!({"order_id": 1})),
        Err(EventDecodeError::Payload { event_type: "PaymentCaptured", .. })
    ));
}

#[test]
fn order_status_parses_and_prints_its_api_name() {
    for status in OrderStatus::ALL {
        assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        assert_eq!(
            serde_json::to_value(status).expect("serialize"),
            serde_json::Value::String(status.as_str().to_owned())
        );
    }
    assert!("shipping".parse::<OrderStatus>().is_err());
}

// ---- properties ----

/// One way a saga can end, with every upstream fact that way produces.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    Completed,
    Rejected,
    Declined,
    ShipmentFailed,
}

impl Scenario {
    fn facts(self) -> Vec<OrderEvent> {
        match self {
            Scenario::Completed => vec![reserved(), captured(), scheduled(), notified(NotificationKind::Confirmation)],
            Scenario::Rejected => vec![rejected()],
            Scenario::Declined => vec![reserved(), declined(), released(CompensationTrigger::PaymentDeclined)],
            Scenario::ShipmentFailed => vec![
                reserved(),
                captured(),
                shipment_failed(),
                refunded(CompensationTrigger::ShipmentFailed),
                released(CompensationTrigger::ShipmentFailed),
            ],
        }
    }

    fn expected(self) -> (OrderStatus, Option<CancelReason>) {
        match self {
            Scenario::Completed => (OrderStatus::Completed, None),
            Scenario::Rejected => (OrderStatus::Cancelled, Some(CancelReason::OutOfStock)),
            Scenario::Declined => (OrderStatus::Cancelled, Some(CancelReason::PaymentDeclined)),
            Scenario::ShipmentFailed => (OrderStatus::Cancelled, Some(CancelReason::DestinationNotServed)),
        }
    }
}

fn scenario() -> impl Strategy<Value = Scenario> {
    prop_oneof![
        Just(Scenario::Completed),
        Just(Scenario::Rejected),
        Just(Scenario::Declined),
        Just(Scenario::ShipmentFailed),
    ]
}

/// A scenario's facts shuffled, some of them delivered twice.
fn interleaving() -> impl Strategy<Value = (Scenario, Vec<OrderEvent>)> {
    scenario().prop_flat_map(|scenario| {
        let facts = scenario.facts();
        let n = facts.len();
        (Just(scenario), proptest::collection::vec(0..n, 0..3), Just(facts)).prop_flat_map(
            |(scenario, duplicates, facts)| {
                let mut all = facts.clone();
                all.extend(duplicates.iter().map(|&i| facts[i].clone()));
                (Just(scenario), Just(all).prop_shuffle())
            },
        )
    })
}

fn any_fact() -> impl Strategy<Value = OrderEvent> {
    prop_oneof![
        Just(reserved()),
        Just(rejected()),
        Just(captured()),
        Just(declined()),
        Just(scheduled()),
        Just(shipment_failed()),
        Just(released(CompensationTrigger::PaymentDeclined)),
        Just(refunded(CompensationTrigger::ShipmentFailed)),
        Just(shipment_cancelled()),
        Just(notified(NotificationKind::Confirmation)),
        Just(notified(NotificationKind::Cancellation)),
    ]
}

/// Either a fact arrives or the deadline check runs.
#[derive(Debug, Clone)]
enum Tick {
    Fact(Box<OrderEvent>),
    DeadlineCheck { seconds: i64 },
}

fn tick() -> impl Strategy<Value = Tick> {
    prop_oneof![
        4 => any_fact().prop_map(|fact| Tick::Fact(Box::new(fact))),
        1 => (0i64..60).prop_map(|seconds| Tick::DeadlineCheck { seconds }),
    ]
}

proptest! {
    #[test]
    fn any_interleaving_of_a_sagas_facts_reaches_its_outcome_exactly_once(
        (scenario, facts) in interleaving()
    ) {
        let (state, decided) = run(facts);

        let (status, reason) = scenario.expected();
        prop_assert_eq!(decided.len(), 1, "decided {:?}", decided);
        prop_assert!(decided[0].is_terminal());
        prop_assert_eq!(state.status(), status);
        prop_assert_eq!(state.reason(), reason);
        if status == OrderStatus::Completed {
            prop_assert_eq!(state.total_minor(), Some(TOTAL));
        }
    }

    #[test]
    fn any_prefix_of_a_sagas_facts_leaves_the_order_undecided_or_at_its_outcome(
        (scenario, facts) in interleaving(),
        cut in 0usize..8,
    ) {
        let cut = cut.min(facts.len());
        let (state, decided) = run(facts.into_iter().take(cut));

        prop_assert!(decided.len() <= 1);
        if state.is_terminal() {
            let (status, reason) = scenario.expected();
            prop_assert_eq!(state.status(), status);
            prop_assert_eq!(state.reason(), reason);
        }
    }

    #[test]
    fn any_sequence_of_facts_and_deadline_checks_decides_at_most_once(
        ticks in proptest::collection::vec(tick(), 0..24)
    ) {
        let mut state = placed();
        let mut terminal_events = 0;
        let mut outcome_once_decided = None;
        for tick in ticks {
            let events = match tick {
                Tick::Fact(fact) => observe(&state, *fact).expect("upstream fact"),
                Tick::DeadlineCheck { seconds } => expire(&state, at(seconds)),
            };
            for event in &events {
                state.apply(event, state.updated_at());
            }
            terminal_events += events.iter().filter(|e| e.is_terminal()).count();
            if let Some(outcome) = &outcome_once_decided {
                prop_assert_eq!(Some(outcome), state.outcome(), "the outcome changed");
            }
            outcome_once_decided = state.outcome().cloned();
        }

        prop_assert!(terminal_events <= 1);
        prop_assert_eq!(state.is_terminal(), terminal_events == 1);
        prop_assert_eq!(state.status().is_terminal(), state.is_terminal());
    }
}
