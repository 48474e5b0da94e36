//! The decisions a handler calls: [`confirm`] on `OrderCompleted`, [`cancel_notice`] on
//! `OrderCancelled`, and [`record_delivery`] once a notification reached the sinks.

use shared::contracts::{NotificationKind, NotificationSent, OrderCancelled, OrderCompleted};
use uuid::Uuid;

use super::notification::Notification;
use super::notifications::{NotificationEvent, Notifications};

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
    pub publish: Option<NotificationSent>,
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
        publish: Some(NotificationSent {
            order_id: notification.order_id,
            customer_id: notification.customer_id.clone(),
            kind: notification.kind,
            notification_id: notification.notification_id,
            sinks,
        }),
    }
}
