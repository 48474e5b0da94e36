//! The saga's public language: the integration events every service publishes and the value
//! types they carry. Services read each other's events, so the payload shapes live here, once.
//!
//! Payloads are JSON. Decoding tolerates unknown fields (serde ignores them by default), so a
//! newer producer can add fields without breaking an older consumer. Breaking changes bump the
//! schema version on the envelope and get an upcaster (see [`crate::event_store::Upcaster`]).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The currency every amount is in. Amounts are integer minor units (cents).
pub const CURRENCY: &str = "EUR";

/// Event type names, as carried in `ce_type` and shown in an order's timeline.
pub mod event_type {
    pub const ORDER_PLACED: &str = "OrderPlaced";
    pub const ORDER_COMPLETED: &str = "OrderCompleted";
    pub const ORDER_CANCELLED: &str = "OrderCancelled";
    pub const INVENTORY_RESERVED: &str = "InventoryReserved";
    pub const INVENTORY_REJECTED: &str = "InventoryRejected";
    pub const INVENTORY_RELEASED: &str = "InventoryReleased";
    pub const PAYMENT_CAPTURED: &str = "PaymentCaptured";
    pub const PAYMENT_DECLINED: &str = "PaymentDeclined";
    pub const PAYMENT_REFUNDED: &str = "PaymentRefunded";
    pub const SHIPMENT_SCHEDULED: &str = "ShipmentScheduled";
    pub const SHIPMENT_FAILED: &str = "ShipmentFailed";
    pub const SHIPMENT_CANCELLED: &str = "ShipmentCancelled";
    pub const NOTIFICATION_SENT: &str = "NotificationSent";
    /// An owning service applied an admin command (on its own event topic).
    pub const ADMIN_COMMAND_APPLIED: &str = "AdminCommandApplied";
    /// An owning service refused an admin command, with the reason (on its own event topic).
    pub const ADMIN_COMMAND_REJECTED: &str = "AdminCommandRejected";

    /// Every type an event topic may carry; anything else is dead-lettered.
    pub const ALL: [&str; 15] = [
        ORDER_PLACED,
        ORDER_COMPLETED,
        ORDER_CANCELLED,
        INVENTORY_RESERVED,
        INVENTORY_REJECTED,
        INVENTORY_RELEASED,
        PAYMENT_CAPTURED,
        PAYMENT_DECLINED,
        PAYMENT_REFUNDED,
        SHIPMENT_SCHEDULED,
        SHIPMENT_FAILED,
        SHIPMENT_CANCELLED,
        NOTIFICATION_SENT,
        ADMIN_COMMAND_APPLIED,
        ADMIN_COMMAND_REJECTED,
    ];
}

/// Admin command type names (`ce_type` on the command topics). order-svc publishes them
/// through its outbox; the owning service applies or rejects each one and says so with
/// [`event_type::ADMIN_COMMAND_APPLIED`] or [`event_type::ADMIN_COMMAND_REJECTED`].
pub mod command_type {
    /// inventory-svc: create a product or change its name or price.
    pub const UPSERT_PRODUCT: &str = "UpsertProduct";
    /// inventory-svc: add or remove units of stock.
    pub const ADJUST_STOCK: &str = "AdjustStock";
    /// payment-svc: add an amount to an open account.
    pub const CREDIT_ACCOUNT: &str = "CreditAccount";
    /// payment-svc: set an account's balance, opening the account if needed.
    pub const SET_ACCOUNT_BALANCE: &str = "SetAccountBalance";
    /// shipping-svc: the full set of countries a carrier serves.
    pub const SET_DESTINATIONS: &str = "SetDestinations";

    /// Every command type; a command topic carries nothing else.
    pub const ALL: [&str; 5] = [UPSERT_PRODUCT, ADJUST_STOCK, CREDIT_ACCOUNT, SET_ACCOUNT_BALANCE, SET_DESTINATIONS];
}

/// The schema version of every contract type (events and commands) this code reads and
/// writes. A message announcing a newer version is not guessed at: it is dead-lettered.
pub const SCHEMA_VERSION: i32 = 1;

/// Is `message_type` a type the saga's topics may carry (an event or a command)?
pub fn is_known_type(message_type: &str) -> bool {
    event_type::ALL.contains(&message_type) || command_type::ALL.contains(&message_type)
}

/// Is `message_type` an admin command (rather than an event)?
pub fn is_command(message_type: &str) -> bool {
    command_type::ALL.contains(&message_type)
}

/// A line of an order as the customer asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: u32,
}

/// A line priced by inventory-svc, which owns the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PricedLine {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

/// Where an order ships to. Only `country` (ISO 3166-1 alpha-2) is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
pub struct ShipTo {
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
}

/// Why an order was cancelled. The snake_case names are part of the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    OutOfStock,
    UnknownSku,
    UnknownCustomer,
    PaymentDeclined,
    DestinationNotServed,
    CarrierCapacityExhausted,
    DeadlineExceeded,
}

impl CancelReason {
    pub const ALL: [CancelReason; 7] = [
        CancelReason::OutOfStock,
        CancelReason::UnknownSku,
        CancelReason::UnknownCustomer,
        CancelReason::PaymentDeclined,
        CancelReason::DestinationNotServed,
        CancelReason::CarrierCapacityExhausted,
        CancelReason::DeadlineExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::OutOfStock => "out_of_stock",
            CancelReason::UnknownSku => "unknown_sku",
            CancelReason::UnknownCustomer => "unknown_customer",
            CancelReason::PaymentDeclined => "payment_declined",
            CancelReason::DestinationNotServed => "destination_not_served",
            CancelReason::CarrierCapacityExhausted => "carrier_capacity_exhausted",
            CancelReason::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

/// Which failure made a service undo its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompensationTrigger {
    PaymentDeclined,
    ShipmentFailed,
    OrderCancelled,
}

// ---- orders.events (order-svc) ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: String,
    pub items: Vec<OrderLine>,
    pub ship_to: ShipTo,
    pub placed_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
}

/// order-svc accepted the order's `ShipmentScheduled`: the point of no return. The saga
/// deadline no longer applies, and notification-svc confirms the order to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCompleted {
    pub order_id: Uuid,
    pub customer_id: String,
    pub total_minor: i64,
    pub currency: String,
    /// The shipment the order completed with, for the customer's confirmation. Absent on
    /// events recorded before order-svc completed on the shipment itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<CompletedShipment>,
}

/// The shipment an order completed with, as shipping-svc scheduled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CompletedShipment {
    pub shipment_id: Uuid,
    pub carrier: String,
    pub ship_date: chrono::NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub customer_id: String,
    pub reason: CancelReason,
    /// The compensating events observed before the cancellation (e.g. `InventoryReleased`).
    #[serde(default)]
    pub compensations: Vec<String>,
}

// ---- inventory.events (inventory-svc) ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryReserved {
    pub order_id: Uuid,
    pub customer_id: String,
    pub lines: Vec<PricedLine>,
    pub total_minor: i64,
    pub currency: String,
    pub ship_to: ShipTo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryRejected {
    pub order_id: Uuid,
    pub customer_id: String,
    /// `OutOfStock` or `UnknownSku`.
    pub reason: CancelReason,
    /// The SKUs that caused the rejection.
    #[serde(default)]
    pub skus: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryReleased {
    pub order_id: Uuid,
    pub lines: Vec<OrderLine>,
    pub trigger: CompensationTrigger,
}

// ---- payments.events (payment-svc) ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentCaptured {
    pub order_id: Uuid,
    pub customer_id: String,
    pub payment_id: Uuid,
    pub amount_minor: i64,
    pub currency: String,
    pub ship_to: ShipTo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentDeclined {
    pub order_id: Uuid,
    pub customer_id: String,
    /// `PaymentDeclined` (insufficient funds, or the fault profile) or `UnknownCustomer`.
    pub reason: CancelReason,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentRefunded {
    pub order_id: Uuid,
    pub customer_id: String,
    pub payment_id: Uuid,
    pub amount_minor: i64,
    pub currency: String,
    pub trigger: CompensationTrigger,
}

// ---- shipping.events (shipping-svc) ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShipmentScheduled {
    pub order_id: Uuid,
    pub customer_id: String,
    pub shipment_id: Uuid,
    pub carrier: String,
    pub ship_date: chrono::NaiveDate,
    pub ship_to: ShipTo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShipmentFailed {
    pub order_id: Uuid,
    pub customer_id: String,
    /// `DestinationNotServed` or `CarrierCapacityExhausted`.
    pub reason: CancelReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShipmentCancelled {
    pub order_id: Uuid,
    pub shipment_id: Uuid,
    pub carrier: String,
    pub ship_date: chrono::NaiveDate,
}

// ---- notifications.events (notification-svc) ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Confirmation,
    Cancellation,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Confirmation => "confirmation",
            NotificationKind::Cancellation => "cancellation",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationSent {
    pub order_id: Uuid,
    pub customer_id: String,
    pub kind: NotificationKind,
    /// Stable per (order, kind): the sink's dedupe key (`Idempotency-Key` on the webhook).
    pub notification_id: Uuid,
    pub sinks: Vec<String>,
}

// ---- admin commands (<service>.commands, published by order-svc) ----
//
// Each command carries the id order-svc gave it (also its audit stream's id) and is keyed by
// its target (the SKU, customer or carrier), so commands on one target stay in order.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UpsertProduct {
    pub command_id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AdjustStock {
    pub command_id: Uuid,
    pub sku: String,
    /// Units added (positive) or removed (negative).
    pub delta: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreditAccount {
    pub command_id: Uuid,
    pub customer_id: String,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SetAccountBalance {
    pub command_id: Uuid,
    pub customer_id: String,
    pub balance_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SetDestinations {
    pub command_id: Uuid,
    pub carrier: String,
    /// ISO 3166-1 alpha-2 codes, upper case.
    pub countries: Vec<String>,
}

/// An admin command's outcome, published by the service that owns its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AdminCommandApplied {
    pub command_id: Uuid,
    pub command_type: String,
    pub service: String,
    /// The owner's events the command recorded (empty when it changed nothing).
    #[serde(default)]
    pub events: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AdminCommandRejected {
    pub command_id: Uuid,
    pub command_type: String,
    pub service: String,
    /// Why the owner refused it (e.g. `unknown sku sku-x`).
    pub reason: String,
}

/// Every message type's payload, for the AsyncAPI document: its JSON Schema (draft 07, the
/// AsyncAPI schema format's base), registered with `generator` so that shared types become
/// references.
pub fn payload_schemas(generator: &mut schemars::SchemaGenerator) -> Vec<(&'static str, schemars::Schema)> {
    use command_type as c;
    use event_type as e;
    vec![
        (e::ORDER_PLACED, generator.subschema_for::<OrderPlaced>()),
        (e::ORDER_COMPLETED, generator.subschema_for::<OrderCompleted>()),
        (e::ORDER_CANCELLED, generator.subschema_for::<OrderCancelled>()),
        (e::INVENTORY_RESERVED, generator.subschema_for::<InventoryReserved>()),
        (e::INVENTORY_REJECTED, generator.subschema_for::<InventoryRejected>()),
        (e::INVENTORY_RELEASED, generator.subschema_for::<InventoryReleased>()),
        (e::PAYMENT_CAPTURED, generator.subschema_for::<PaymentCaptured>()),
        (e::PAYMENT_DECLINED, generator.subschema_for::<PaymentDeclined>()),
        (e::PAYMENT_REFUNDED, generator.subschema_for::<PaymentRefunded>()),
        (e::SHIPMENT_SCHEDULED, generator.subschema_for::<ShipmentScheduled>()),
        (e::SHIPMENT_FAILED, generator.subschema_for::<ShipmentFailed>()),
        (e::SHIPMENT_CANCELLED, generator.subschema_for::<ShipmentCancelled>()),
        (e::NOTIFICATION_SENT, generator.subschema_for::<NotificationSent>()),
        (e::ADMIN_COMMAND_APPLIED, generator.subschema_for::<AdminCommandApplied>()),
        (e::ADMIN_COMMAND_REJECTED, generator.subschema_for::<AdminCommandRejected>()),
        (c::UPSERT_PRODUCT, generator.subschema_for::<UpsertProduct>()),
        (c::ADJUST_STOCK, generator.subschema_for::<AdjustStock>()),
        (c::CREDIT_ACCOUNT, generator.subschema_for::<CreditAccount>()),
        (c::SET_ACCOUNT_BALANCE, generator.subschema_for::<SetAccountBalance>()),
        (c::SET_DESTINATIONS, generator.subschema_for::<SetDestinations>()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_reason_serializes_to_its_api_name() {
        for reason in CancelReason::ALL {
            let json = serde_json::to_value(reason).expect("serialize");
            assert_eq!(json, serde_json::Value::String(reason.as_str().to_owned()));
        }
    }

    #[test]
    fn decoding_tolerates_unknown_fields() {
        let json = serde_json::json!({
            "order_id": Uuid::nil(),
            "lines": [],
            "trigger": "order_cancelled",
            "added_by_a_newer_producer": 42
        });
        let decoded: InventoryReleased = serde_json::from_value(json).expect("decode");
        assert_eq!(decoded.trigger, CompensationTrigger::OrderCancelled);
    }

    #[test]
    fn every_message_type_has_a_payload_schema() {
        let mut generator = schemars::SchemaGenerator::default();
        let schemas = payload_schemas(&mut generator);
        let types: Vec<&str> = schemas.iter().map(|(t, _)| *t).collect();
        for t in event_type::ALL.iter().chain(&command_type::ALL) {
            assert_eq!(types.iter().filter(|x| *x == t).count(), 1, "{t}");
        }
        assert_eq!(types.len(), event_type::ALL.len() + command_type::ALL.len());
    }

    #[test]
    fn commands_and_events_are_known_types_and_nothing_else_is() {
        assert!(is_known_type(event_type::ORDER_PLACED));
        assert!(is_known_type(command_type::ADJUST_STOCK));
        assert!(is_command(command_type::SET_DESTINATIONS));
        assert!(!is_command(event_type::ADMIN_COMMAND_APPLIED));
        assert!(!is_known_type("DropTables"));
    }
}
