//! The events of an order's stream. order-svc records its own decisions (`OrderPlaced`,
//! `OrderCompleted`, `OrderCancelled`) and, as facts, every event the other services published
//! about the order. Each payload is stored as its public contract struct, so the stream, the
//! outbox and the topics all speak the same shapes.

use serde::Serialize;
use shared::contracts::{self, event_type};
use uuid::Uuid;

/// The service names shown as an event's `source` in the timeline.
pub mod source {
    pub const ORDER: &str = "order-svc";
    pub const INVENTORY: &str = "inventory-svc";
    pub const PAYMENT: &str = "payment-svc";
    pub const SHIPPING: &str = "shipping-svc";
    pub const NOTIFICATION: &str = "notification-svc";
}

/// One event in an order's stream. Serializes as the bare contract payload (untagged);
/// the type travels beside it ([`OrderEvent::event_type`]) and [`OrderEvent::from_payload`]
/// reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum OrderEvent {
    OrderPlaced(contracts::OrderPlaced),
    InventoryReserved(contracts::InventoryReserved),
    InventoryRejected(contracts::InventoryRejected),
    PaymentCaptured(contracts::PaymentCaptured),
    PaymentDeclined(contracts::PaymentDeclined),
    ShipmentScheduled(contracts::ShipmentScheduled),
    ShipmentFailed(contracts::ShipmentFailed),
    InventoryReleased(contracts::InventoryReleased),
    PaymentRefunded(contracts::PaymentRefunded),
    ShipmentCancelled(contracts::ShipmentCancelled),
    NotificationSent(contracts::NotificationSent),
    OrderCompleted(contracts::OrderCompleted),
    OrderCancelled(contracts::OrderCancelled),
}

/// A stored payload that does not decode into an [`OrderEvent`].
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("payload of {event_type} does not match its contract")]
    Payload {
        event_type: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl OrderEvent {
    /// Every event type name, as in [`contracts::event_type`].
    pub const TYPES: [&'static str; 13] = [
        event_type::ORDER_PLACED,
        event_type::INVENTORY_RESERVED,
        event_type::INVENTORY_REJECTED,
        event_type::PAYMENT_CAPTURED,
        event_type::PAYMENT_DECLINED,
        event_type::SHIPMENT_SCHEDULED,
        event_type::SHIPMENT_FAILED,
        event_type::INVENTORY_RELEASED,
        event_type::PAYMENT_REFUNDED,
        event_type::SHIPMENT_CANCELLED,
        event_type::NOTIFICATION_SENT,
        event_type::ORDER_COMPLETED,
        event_type::ORDER_CANCELLED,
    ];

    /// The stable type name: the event store's `type` column, `ce_type`, the timeline's `type`.
    pub fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderPlaced(_) => event_type::ORDER_PLACED,
            OrderEvent::InventoryReserved(_) => event_type::INVENTORY_RESERVED,
            OrderEvent::InventoryRejected(_) => event_type::INVENTORY_REJECTED,
            OrderEvent::PaymentCaptured(_) => event_type::PAYMENT_CAPTURED,
            OrderEvent::PaymentDeclined(_) => event_type::PAYMENT_DECLINED,
            OrderEvent::ShipmentScheduled(_) => event_type::SHIPMENT_SCHEDULED,
            OrderEvent::ShipmentFailed(_) => event_type::SHIPMENT_FAILED,
            OrderEvent::InventoryReleased(_) => event_type::INVENTORY_RELEASED,
            OrderEvent::PaymentRefunded(_) => event_type::PAYMENT_REFUNDED,
            OrderEvent::ShipmentCancelled(_) => event_type::SHIPMENT_CANCELLED,
            OrderEvent::NotificationSent(_) => event_type::NOTIFICATION_SENT,
            OrderEvent::OrderCompleted(_) => event_type::ORDER_COMPLETED,
            OrderEvent::OrderCancelled(_) => event_type::ORDER_CANCELLED,
        }
    }

    /// The service that published the event.
    pub fn source(&self) -> &'static str {
        match self {
            OrderEvent::OrderPlaced(_) | OrderEvent::OrderCompleted(_) | OrderEvent::OrderCancelled(_) => source::ORDER,
            OrderEvent::InventoryReserved(_) | OrderEvent::InventoryRejected(_) | OrderEvent::InventoryReleased(_) => {
                source::INVENTORY
            }
            OrderEvent::PaymentCaptured(_) | OrderEvent::PaymentDeclined(_) | OrderEvent::PaymentRefunded(_) => {
                source::PAYMENT
            }
            OrderEvent::ShipmentScheduled(_) | OrderEvent::ShipmentFailed(_) | OrderEvent::ShipmentCancelled(_) => {
                source::SHIPPING
            }
            OrderEvent::NotificationSent(_) => source::NOTIFICATION,
        }
    }

    /// The order (and stream, and Kafka key) the event belongs to.
    pub fn order_id(&self) -> Uuid {
        match self {
            OrderEvent::OrderPlaced(e) => e.order_id,
            OrderEvent::InventoryReserved(e) => e.order_id,
            OrderEvent::InventoryRejected(e) => e.order_id,
            OrderEvent::PaymentCaptured(e) => e.order_id,
            OrderEvent::PaymentDeclined(e) => e.order_id,
            OrderEvent::ShipmentScheduled(e) => e.order_id,
            OrderEvent::ShipmentFailed(e) => e.order_id,
            OrderEvent::InventoryReleased(e) => e.order_id,
            OrderEvent::PaymentRefunded(e) => e.order_id,
            OrderEvent::ShipmentCancelled(e) => e.order_id,
            OrderEvent::NotificationSent(e) => e.order_id,
            OrderEvent::OrderCompleted(e) => e.order_id,
            OrderEvent::OrderCancelled(e) => e.order_id,
        }
    }

    /// True for the events order-svc decides itself (and publishes to `orders.events`);
    /// false for the facts it observes from the other services.
    pub fn is_decided_by_order_svc(&self) -> bool {
        self.source() == source::ORDER
    }

    /// True for `OrderCompleted` and `OrderCancelled`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, OrderEvent::OrderCompleted(_) | OrderEvent::OrderCancelled(_))
    }

    /// The stored JSON payload: the contract struct.
    pub fn to_payload(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    /// Reads a stored or received payload back, by its type name. Unknown fields are ignored.
    pub fn from_payload(event_type: &str, payload: serde_json::Value) -> Result<Self, EventDecodeError> {
        fn decode<T: serde::de::DeserializeOwned>(
            event_type: &'static str,
            payload: serde_json::Value,
            wrap: fn(T) -> OrderEvent,
        ) -> Result<OrderEvent, EventDecodeError> {
            serde_json::from_value(payload).map(wrap).map_err(|source| EventDecodeError::Payload { event_type, source })
        }
        match event_type {
            event_type::ORDER_PLACED => decode(event_type::ORDER_PLACED, payload, Self::OrderPlaced),
            event_type::INVENTORY_RESERVED => decode(event_type::INVENTORY_RESERVED, payload, Self::InventoryReserved),
            event_type::INVENTORY_REJECTED => decode(event_type::INVENTORY_REJECTED, payload, Self::InventoryRejected),
            event_type::PAYMENT_CAPTURED => decode(event_type::PAYMENT_CAPTURED, payload, Self::PaymentCaptured),
            event_type::PAYMENT_DECLINED => decode(event_type::PAYMENT_DECLINED, payload, Self::PaymentDeclined),
            event_type::SHIPMENT_SCHEDULED => decode(event_type::SHIPMENT_SCHEDULED, payload, Self::ShipmentScheduled),
            event_type::SHIPMENT_FAILED => decode(event_type::SHIPMENT_FAILED, payload, Self::ShipmentFailed),
            event_type::INVENTORY_RELEASED => decode(event_type::INVENTORY_RELEASED, payload, Self::InventoryReleased),
            event_type::PAYMENT_REFUNDED => decode(event_type::PAYMENT_REFUNDED, payload, Self::PaymentRefunded),
            event_type::SHIPMENT_CANCELLED => decode(event_type::SHIPMENT_CANCELLED, payload, Self::ShipmentCancelled),
            event_type::NOTIFICATION_SENT => decode(event_type::NOTIFICATION_SENT, payload, Self::NotificationSent),
            event_type::ORDER_COMPLETED => decode(event_type::ORDER_COMPLETED, payload, Self::OrderCompleted),
            event_type::ORDER_CANCELLED => decode(event_type::ORDER_CANCELLED, payload, Self::OrderCancelled),
            other => Err(EventDecodeError::UnknownType(other.to_owned())),
        }
    }
}
