//! The notification itself: what a customer is told about an order, with a deterministic id
//! per (order, kind) that sinks use to deliver it once.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use shared::contracts::{CancelReason, NotificationKind, OrderCancelled, OrderCompleted};
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
    pub(super) fn confirmation(completed: &OrderCompleted) -> Self {
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

    pub(super) fn cancellation(cancelled: &OrderCancelled) -> Self {
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
pub(super) fn explain(reason: CancelReason) -> &'static str {
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
