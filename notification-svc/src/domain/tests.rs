//! Every notification decision, and as a property: whatever order the saga's decisions
//! arrive in, a customer is told one thing at most.

use chrono::NaiveDate;
use proptest::prelude::*;
use shared::contracts::{
    CancelReason, CompletedShipment, NotificationKind, NotificationSent, OrderCancelled, OrderCompleted,
};
use uuid::Uuid;

use super::notification::explain;
use super::*;

fn order() -> Uuid {
    Uuid::from_u128(1)
}

fn completed() -> OrderCompleted {
    OrderCompleted {
        order_id: order(),
        customer_id: "alice".to_owned(),
        total_minor: 3000,
        currency: "EUR".to_owned(),
        shipment: Some(CompletedShipment {
            shipment_id: Uuid::from_u128(99),
            carrier: "postnl".to_owned(),
            ship_date: NaiveDate::from_ymd_opt(2025, 3, 10).expect("valid date"),
        }),
    }
}

fn confirmed(state: &Notifications) -> Decision {
    confirm(state, &completed()).expect("no contradiction")
}

fn noticed(state: &Notifications) -> Decision {
    cancel_notice(state, &cancelled()).expect("no contradiction")
}

fn cancelled() -> OrderCancelled {
    OrderCancelled {
        order_id: order(),
        customer_id: "alice".to_owned(),
        reason: CancelReason::PaymentDeclined,
        compensations: vec!["InventoryReleased".to_owned()],
    }
}

fn recorded(kind: NotificationKind) -> NotificationEvent {
    NotificationEvent::DeliveryRecorded {
        kind,
        notification_id: notification_id(order(), kind),
        sinks: vec!["log".to_owned()],
    }
}

fn fold(events: &[NotificationEvent]) -> Notifications {
    events.iter().fold(Notifications::default(), Notifications::apply)
}

#[test]
fn a_completed_order_owes_a_confirmation_with_its_shipment_and_total() {
    let decision = confirmed(&Notifications::default());

    assert!(decision.events.is_empty());
    let delivery = decision.delivery.expect("a delivery");
    assert_eq!(delivery.kind, NotificationKind::Confirmation);
    assert_eq!(delivery.order_id, order());
    assert_eq!(delivery.customer_id, "alice");
    assert_eq!(delivery.notification_id, notification_id(order(), NotificationKind::Confirmation));
    assert_eq!(delivery.carrier.as_deref(), Some("postnl"));
    assert!(delivery.body.contains("2025-03-10"), "{}", delivery.body);
    assert_eq!(delivery.total_minor, Some(3000));
    assert_eq!(delivery.reason, None);
}

#[test]
fn a_completion_recorded_without_its_shipment_is_still_confirmed() {
    let completed = OrderCompleted { shipment: None, ..completed() };

    let delivery = confirm(&Notifications::default(), &completed).expect("no contradiction").delivery;

    let delivery = delivery.expect("a delivery");
    assert_eq!(delivery.carrier, None);
    assert!(delivery.body.contains(&order().to_string()), "{}", delivery.body);
}

#[test]
fn a_confirmation_already_recorded_is_not_sent_again() {
    let state = fold(&[recorded(NotificationKind::Confirmation)]);

    assert!(confirmed(&state).is_empty());
}

#[test]
fn a_completion_after_a_cancellation_is_refused_as_a_contradiction() {
    let noted = fold(&[NotificationEvent::CancellationNoted]);
    let notice_sent = fold(&[recorded(NotificationKind::Cancellation)]);

    for state in [noted, notice_sent] {
        let refused = confirm(&state, &completed()).expect_err("a contradiction");
        assert_eq!(refused.told, "cancelled");
        assert_eq!(refused.refused, "OrderCompleted");
    }
}

#[test]
fn a_cancellation_notes_it_and_owes_a_notice_with_the_reason() {
    let decision = noticed(&Notifications::default());

    assert_eq!(decision.events, vec![NotificationEvent::CancellationNoted]);
    let delivery = decision.delivery.expect("a delivery");
    assert_eq!(delivery.kind, NotificationKind::Cancellation);
    assert_eq!(delivery.reason, Some(CancelReason::PaymentDeclined));
    assert_eq!(delivery.notification_id, notification_id(order(), NotificationKind::Cancellation));
    assert!(delivery.body.contains("payment was declined"), "{}", delivery.body);
}

#[test]
fn a_notice_whose_delivery_failed_is_owed_again_without_noting_twice() {
    let state = fold(&[NotificationEvent::CancellationNoted]);

    let decision = noticed(&state);

    assert!(decision.events.is_empty());
    assert!(decision.delivery.is_some());
}

#[test]
fn a_cancellation_notice_already_recorded_is_not_sent_again() {
    let state = fold(&[NotificationEvent::CancellationNoted, recorded(NotificationKind::Cancellation)]);

    assert!(noticed(&state).is_empty());
}

#[test]
fn a_cancellation_after_a_confirmation_is_refused_as_a_contradiction() {
    let state = fold(&[recorded(NotificationKind::Confirmation)]);

    let refused = cancel_notice(&state, &cancelled()).expect_err("a contradiction");

    assert_eq!(refused, Contradiction { order_id: order(), told: "confirmed", refused: "OrderCancelled" });
}

#[test]
fn notification_ids_are_stable_per_order_and_kind() {
    let other = Uuid::from_u128(2);
    let confirmation = notification_id(order(), NotificationKind::Confirmation);

    assert_eq!(confirmation, notification_id(order(), NotificationKind::Confirmation));
    assert_ne!(confirmation, notification_id(order(), NotificationKind::Cancellation));
    assert_ne!(confirmation, notification_id(other, NotificationKind::Confirmation));
    assert_eq!(confirmation.get_version_num(), 5);
}

#[test]
fn recording_a_delivery_publishes_notification_sent_with_the_sinks() {
    let delivery = confirmed(&Notifications::default()).delivery.expect("a delivery");
    let sinks = vec!["log".to_owned(), "webhook".to_owned()];

    let recorded = record_delivery(&Notifications::default(), &delivery, sinks.clone());

    assert_eq!(
        recorded.events,
        vec![NotificationEvent::DeliveryRecorded {
            kind: NotificationKind::Confirmation,
            notification_id: delivery.notification_id,
            sinks: sinks.clone(),
        }]
    );
    assert_eq!(
        recorded.publish,
        Some(NotificationSent {
            order_id: order(),
            customer_id: "alice".to_owned(),
            kind: NotificationKind::Confirmation,
            notification_id: delivery.notification_id,
            sinks,
        })
    );
}

#[test]
fn recording_a_delivery_already_recorded_writes_nothing() {
    let state = fold(&[recorded(NotificationKind::Confirmation)]);
    let delivery = confirmed(&Notifications::default()).delivery.expect("a delivery");

    let recorded = record_delivery(&state, &delivery, vec!["log".to_owned()]);

    assert_eq!(recorded, Recorded::default());
}

#[test]
fn the_stream_id_is_notifications_dash_order_id() {
    assert_eq!(Notifications::stream_id(order()), format!("notifications-{}", order()));
}

#[test]
fn events_round_trip_with_their_event_type_as_tag() {
    for event in [recorded(NotificationKind::Cancellation), NotificationEvent::CancellationNoted] {
        let json = serde_json::to_value(&event).expect("serialize");
        assert_eq!(json["type"], event.event_type());
        let back: NotificationEvent = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, event);
    }
}

#[test]
fn every_cancel_reason_has_an_explanation() {
    for reason in CancelReason::ALL {
        assert!(!explain(reason).is_empty());
    }
}

// ---- property: one message per order, whatever the order and number of (re)deliveries of
// the decisions (even contradicting ones, which order-svc never makes) ----

#[derive(Debug, Clone, Copy)]
enum Incoming {
    Completed,
    Cancelled,
}

proptest! {
    #[test]
    fn the_customer_hears_one_thing_once(
        incoming in prop::collection::vec(
            prop_oneof![Just(Incoming::Completed), Just(Incoming::Cancelled)], 1..12),
        failures in prop::collection::vec(any::<bool>(), 12),
    ) {
        let mut state = Notifications::default();
        let mut delivered: Vec<NotificationKind> = Vec::new();
        let mut cancellation_seen = false;
        for (message, delivery_fails) in incoming.iter().zip(failures) {
            let decided = match message {
                Incoming::Completed => confirm(&state, &completed()),
                Incoming::Cancelled => {
                    cancellation_seen = true;
                    cancel_notice(&state, &cancelled())
                }
            };
            let Ok(decision) = decided else { continue };
            let loaded = state;
            state = decision.events.iter().fold(state, Notifications::apply);
            let Some(notification) = decision.delivery else { continue };
            if delivery_fails {
                continue;
            }
            if notification.kind == NotificationKind::Confirmation {
                prop_assert!(!cancellation_seen);
            }
            let recorded = record_delivery(&loaded, &notification, vec!["log".to_owned()]);
            if recorded.publish.is_some() {
                delivered.push(notification.kind);
            }
            state = recorded.events.iter().fold(state, Notifications::apply);
        }
        prop_assert!(delivered.len() <= 1, "delivered {:?}", delivered);
    }
}
