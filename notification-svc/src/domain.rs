//! The notification domain: which messages an order's customer is owed, and that each is
//! delivered once.
//!
//! order-svc is the one authority on an order's fate, and the customer is told its decision and
//! nothing else: a confirmation on `OrderCompleted`, a cancellation notice on `OrderCancelled`.
//! order-svc decides one of them per order, so an order's customer hears one thing; a second,
//! contradicting decision would be a broken invariant upstream, and is refused
//! ([`Contradiction`]) rather than told to the customer.
//!
//! One [`Notifications`] aggregate per order (stream `notifications-{order_id}`). A handler
//! folds it, calls [`confirm`] or [`cancel_notice`], appends the decision's `events` whatever
//! happens next, delivers its `delivery` (if any) to the sinks, and on success appends
//! [`record_delivery`]'s events and publishes its `NotificationSent`.
//!
//! Delivery is at least once: a crash between delivering and recording delivers again on
//! redelivery. The [`Notification::notification_id`] is derived from (order, kind) only, so
//! every such retry carries the same dedupe key and the sink counts it once.
//!
//! Domain events serialize with an internal `"type"` tag equal to their `event_type()`, so a
//! stored payload decodes on its own with `serde_json::from_value`.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use shared::contracts::{CancelReason, NotificationKind, NotificationSent, OrderCancelled, OrderCompleted};
use uuid::Uuid;

/// Namespace of the UUID v5 notification ids.
const NOTIFICATION_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3b0c_94d2_71e5_4a8f_b6c1_2d9e_58f0_a713);

/// The deterministic id of an order's notification of one kind: the sink's dedupe key.
pub fn notification_id(order_id: Uuid, kind: NotificationKind) -> Uuid {
    let name = [order_id.as_bytes().as_slice(), b":", kind.as_str().as_bytes()].concat();
    Uuid::new_v5(&NOTIFICATION_ID_NAMESPACE, &name)
}

/// A message to the customer, as sinks deliver it (and as the webhook's JSON body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub order_id: Uuid,
    pub customer_id: String,
    pub kind: NotificationKind,
    /// Stable per (order, kind): the dedupe key.
    pub notification_id: Uuid,
    pub subject: String,
    pub body: String,
    /// Why the order was cancelled (cancellations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<CancelReason>,
    /// The order total in minor units (confirmations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_minor: Option<i64>,
    /// The shipment's carrier (confirmations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// The shipment's date (confirmations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_date: Option<NaiveDate>,
}

impl Notification {
    fn confirmation(completed: &OrderCompleted) -> Self {
        let kind = NotificationKind::Confirmation;
        let order_id = completed.order_id;
        let body = match &completed.shipment {
            Some(shipment) => {
                format!(
                    "Your order {order_id} ships with {} on {}.",
                    shipment.carrier,
                    shipment.ship_date.format("%Y-%m-%d")
                )
            }
            None => format!("Your order {order_id} is on its way."),
        };
        Self {
            order_id,
            customer_id: completed.customer_id.clone(),
            kind,
            notification_id: notification_id(order_id, kind),
            subject: format!("Your order {order_id} is confirmed"),
            body,
            reason: None,
            total_minor: Some(completed.total_minor),
            carrier: completed.shipment.as_ref().map(|s| s.carrier.clone()),
            ship_date: completed.shipment.as_ref().map(|s| s.ship_date),
        }
    }

    fn cancellation(cancelled: &OrderCancelled) -> Self {
        let kind = NotificationKind::Cancellation;
        Self {
            order_id: cancelled.order_id,
            customer_id: cancelled.customer_id.clone(),
            kind,
            notification_id: notification_id(cancelled.order_id, kind),
            subject: format!("Your order {} was cancelled", cancelled.order_id),
            body: format!(
                "We cancelled your order {} because {}. Any payment for it is refunded.",
                cancelled.order_id,
                explain(cancelled.reason)
            ),
            reason: Some(cancelled.reason),
            total_minor: None,
            carrier: None,
            ship_date: None,
        }
    }
}

/// A customer-facing explanation of a cancellation reason.
fn explain(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::OutOfStock => "an item is out of stock",
        CancelReason::UnknownSku => "an item is not in our catalogue",
        CancelReason::UnknownCustomer => "we could not find your customer account",
        CancelReason::PaymentDeclined => "the payment was declined",
        CancelReason::DestinationNotServed => "we do not ship to the destination",
        CancelReason::CarrierCapacityExhausted => "no carrier could ship it within a week",
        CancelReason::DeadlineExceeded => "it could not be completed in time",
    }
}

/// Events of the [`Notifications`] aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum NotificationEvent {
    /// A notification reached every sink.
    DeliveryRecorded { kind: NotificationKind, notification_id: Uuid, sinks: Vec<String> },
    /// The order was cancelled: no confirmation may go out after this.
    CancellationNoted,
}

impl NotificationEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            NotificationEvent::DeliveryRecorded { .. } => "DeliveryRecorded",
            NotificationEvent::CancellationNoted => "CancellationNoted",
        }
    }
}

/// What has been told to one order's customer (serializable for the event store's snapshots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Notifications {
    confirmation_recorded: bool,
    cancellation_recorded: bool,
    cancellation_noted: bool,
}

impl Notifications {
    /// `notifications-{order_id}`.
    pub fn stream_id(order_id: Uuid) -> String {
        format!("notifications-{order_id}")
    }

    pub fn is_recorded(&self, kind: NotificationKind) -> bool {
        match kind {
            NotificationKind::Confirmation => self.confirmation_recorded,
            NotificationKind::Cancellation => self.cancellation_recorded,
        }
    }

    pub fn cancellation_noted(&self) -> bool {
        self.cancellation_noted
    }

    pub fn apply(mut self, event: &NotificationEvent) -> Self {
        match event {
            NotificationEvent::DeliveryRecorded { kind, .. } => match kind {
                NotificationKind::Confirmation => self.confirmation_recorded = true,
                NotificationKind::Cancellation => {
                    self.cancellation_recorded = true;
                    self.cancellation_noted = true;
                }
            },
            NotificationEvent::CancellationNoted => self.cancellation_noted = true,
        }
        self
    }
}

/// A decision on an incoming event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Append these whatever the delivery's outcome: a cancellation stays noted even when its
    /// notice ends in a dead letter, so a late confirmation still cannot go out.
    pub events: Vec<NotificationEvent>,
    /// The notification to deliver now, if one is owed.
    pub delivery: Option<Notification>,
}

impl Decision {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.delivery.is_none()
    }
}

/// order-svc decided both outcomes for one order: the customer was (or is about to be) told one
/// of them, and is not told the other. Refused, so that an operator sees it (dead letter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order {order_id} was {told} already: {refused} contradicts it, and the customer is not told both")]
pub struct Contradiction {
    pub order_id: Uuid,
    pub told: &'static str,
    pub refused: &'static str,
}

/// On `OrderCompleted`: confirm the order, unless it was confirmed already.
pub fn confirm(state: &Notifications, completed: &OrderCompleted) -> Result<Decision, Contradiction> {
    if state.cancellation_noted() {
        return Err(Contradiction { order_id: completed.order_id, told: "cancelled", refused: "OrderCompleted" });
    }
    if state.is_recorded(NotificationKind::Confirmation) {
        return Ok(Decision::default());
    }
    Ok(Decision { events: Vec::new(), delivery: Some(Notification::confirmation(completed)) })
}

/// On `OrderCancelled`: note the cancellation and send the notice, unless it was sent already.
/// A notice whose earlier delivery failed is owed again.
pub fn cancel_notice(state: &Notifications, cancelled: &OrderCancelled) -> Result<Decision, Contradiction> {
    if state.is_recorded(NotificationKind::Confirmation) {
        return Err(Contradiction { order_id: cancelled.order_id, told: "confirmed", refused: "OrderCancelled" });
    }
    if state.is_recorded(NotificationKind::Cancellation) {
        return Ok(Decision::default());
    }
    let events = if state.cancellation_noted() { Vec::new() } else { vec![NotificationEvent::CancellationNoted] };
    Ok(Decision { events, delivery: Some(Notification::cancellation(cancelled)) })
}

/// What to write once a delivery succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    pub events: Vec<NotificationEvent>,
    /// Publish on `notifications.events`.
    pub public: Option<NotificationSent>,
}

/// Records that `notification` reached `sinks`. `state` is the aggregate as loaded (before the
/// decision's own events); a notification already recorded is recorded once only.
pub fn record_delivery(state: &Notifications, notification: &Notification, sinks: Vec<String>) -> Recorded {
    if state.is_recorded(notification.kind) {
        return Recorded::default();
    }
    Recorded {
        events: vec![NotificationEvent::DeliveryRecorded {
            kind: notification.kind,
            notification_id: notification.notification_id,
            sinks: sinks.clone(),
        }],
        public: Some(NotificationSent {
            order_id: notification.order_id,
            customer_id: notification.customer_id.clone(),
            kind: notification.kind,
            notification_id: notification.notification_id,
            sinks,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shared::contracts::CompletedShipment;

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
            recorded.public,
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
                if recorded.public.is_some() {
                    delivered.push(notification.kind);
                }
                state = recorded.events.iter().fold(state, Notifications::apply);
            }
            prop_assert!(delivered.len() <= 1, "delivered {:?}", delivered);
        }
    }
}
