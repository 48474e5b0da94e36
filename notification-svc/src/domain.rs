//! The notification domain: which messages an order's customer is owed, and that each is
//! delivered once.
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
use shared::contracts::{CancelReason, NotificationKind, NotificationSent, OrderCancelled, ShipmentScheduled};
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
    /// The order total in minor units, when the handler knows it (neither triggering event
    /// carries it).
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
    fn confirmation(shipment: &ShipmentScheduled) -> Self {
        let kind = NotificationKind::Confirmation;
        Self {
            order_id: shipment.order_id,
            customer_id: shipment.customer_id.clone(),
            kind,
            notification_id: notification_id(shipment.order_id, kind),
            subject: format!("Your order {} is confirmed", shipment.order_id),
            body: format!(
                "Your order {} ships with {} on {}.",
                shipment.order_id,
                shipment.carrier,
                shipment.ship_date.format("%Y-%m-%d")
            ),
            reason: None,
            total_minor: None,
            carrier: Some(shipment.carrier.clone()),
            ship_date: Some(shipment.ship_date),
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

/// On `ShipmentScheduled`: confirm the order, unless it was confirmed already or its
/// cancellation was noted first (events from different topics may arrive in either order).
pub fn confirm(state: &Notifications, shipment: &ShipmentScheduled) -> Decision {
    if state.is_recorded(NotificationKind::Confirmation) || state.cancellation_noted() {
        return Decision::default();
    }
    Decision { events: Vec::new(), delivery: Some(Notification::confirmation(shipment)) }
}

/// On `OrderCancelled`: note the cancellation and send the notice, unless it was sent already.
/// A notice whose earlier delivery failed is owed again.
pub fn cancel_notice(state: &Notifications, cancelled: &OrderCancelled) -> Decision {
    if state.is_recorded(NotificationKind::Cancellation) {
        return Decision::default();
    }
    let events = if state.cancellation_noted() { Vec::new() } else { vec![NotificationEvent::CancellationNoted] };
    Decision { events, delivery: Some(Notification::cancellation(cancelled)) }
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
    use shared::contracts::ShipTo;

    fn order() -> Uuid {
        Uuid::from_u128(1)
    }

    fn scheduled() -> ShipmentScheduled {
        ShipmentScheduled {
            order_id: order(),
            customer_id: "alice".to_owned(),
            shipment_id: Uuid::from_u128(99),
            carrier: "postnl".to_owned(),
            ship_date: NaiveDate::from_ymd_opt(2025, 3, 10).expect("valid date"),
            ship_to: ShipTo { country: "NL".to_owned(), ..ShipTo::default() },
        }
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
    fn a_scheduled_shipment_owes_a_confirmation() {
        let decision = confirm(&Notifications::default(), &scheduled());

        assert!(decision.events.is_empty());
        let delivery = decision.delivery.expect("a delivery");
        assert_eq!(delivery.kind, NotificationKind::Confirmation);
        assert_eq!(delivery.order_id, order());
        assert_eq!(delivery.customer_id, "alice");
        assert_eq!(delivery.notification_id, notification_id(order(), NotificationKind::Confirmation));
        assert_eq!(delivery.carrier.as_deref(), Some("postnl"));
        assert!(delivery.body.contains("2025-03-10"), "{}", delivery.body);
        assert_eq!(delivery.reason, None);
    }

    #[test]
    fn a_confirmation_already_recorded_is_not_sent_again() {
        let state = fold(&[recorded(NotificationKind::Confirmation)]);

        assert!(confirm(&state, &scheduled()).is_empty());
    }

    #[test]
    fn no_confirmation_goes_out_after_the_cancellation_was_noted() {
        let noted = fold(&[NotificationEvent::CancellationNoted]);
        let notice_sent = fold(&[recorded(NotificationKind::Cancellation)]);

        assert!(confirm(&noted, &scheduled()).is_empty());
        assert!(confirm(&notice_sent, &scheduled()).is_empty());
    }

    #[test]
    fn a_cancellation_notes_it_and_owes_a_notice_with_the_reason() {
        let decision = cancel_notice(&Notifications::default(), &cancelled());

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

        let decision = cancel_notice(&state, &cancelled());

        assert!(decision.events.is_empty());
        assert!(decision.delivery.is_some());
    }

    #[test]
    fn a_cancellation_notice_already_recorded_is_not_sent_again() {
        let state = fold(&[NotificationEvent::CancellationNoted, recorded(NotificationKind::Cancellation)]);

        assert!(cancel_notice(&state, &cancelled()).is_empty());
    }

    #[test]
    fn a_cancellation_after_a_confirmation_still_owes_its_notice() {
        let state = fold(&[recorded(NotificationKind::Confirmation)]);

        let decision = cancel_notice(&state, &cancelled());

        assert_eq!(decision.delivery.map(|n| n.kind), Some(NotificationKind::Cancellation));
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
        let delivery = confirm(&Notifications::default(), &scheduled()).delivery.expect("a delivery");
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
        let delivery = confirm(&Notifications::default(), &scheduled()).delivery.expect("a delivery");

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

    // ---- property: one confirmation or one notice per order, never a confirmation after a
    // noted cancellation, whatever the order and number of (re)deliveries ----

    #[derive(Debug, Clone, Copy)]
    enum Incoming {
        Scheduled,
        Cancelled,
    }

    proptest! {
        #[test]
        fn each_kind_is_delivered_once_and_no_confirmation_follows_a_cancellation(
            incoming in prop::collection::vec(
                prop_oneof![Just(Incoming::Scheduled), Just(Incoming::Cancelled)], 1..12),
            failures in prop::collection::vec(any::<bool>(), 12),
        ) {
            let mut state = Notifications::default();
            let mut delivered: Vec<NotificationKind> = Vec::new();
            let mut cancellation_seen = false;
            for (message, delivery_fails) in incoming.iter().zip(failures) {
                let decision = match message {
                    Incoming::Scheduled => confirm(&state, &scheduled()),
                    Incoming::Cancelled => {
                        cancellation_seen = true;
                        cancel_notice(&state, &cancelled())
                    }
                };
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
            for kind in [NotificationKind::Confirmation, NotificationKind::Cancellation] {
                prop_assert!(delivered.iter().filter(|k| **k == kind).count() <= 1);
            }
        }
    }
}
