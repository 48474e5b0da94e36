//! The read models: what an order or an admin command looks like to a reader. They are built
//! from the folded aggregate, stored as JSON in the projection rows (`order_view.summary`,
//! `admin_commands.view`) and returned by the API as they are, so one type serves the store,
//! the listing and the response, and the OpenAPI document describes the same shape.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::contracts::{self, CancelReason};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use super::paging::Cursor;
use crate::domain::admin_command::{AuditState, CommandStatus};
use crate::domain::{OrderState, OrderStatus};

// ---- orders ----

/// An order as `GET /orders/{id}` returns it (and `POST /orders` too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub customer_id: String,
    #[schema(value_type = OrderStatusSchema)]
    pub status: OrderStatus,
    pub items: Vec<ItemView>,
    /// Integer minor units (cents); `null` until inventory-svc priced the order.
    #[schema(required = true)]
    pub total_minor: Option<i64>,
    /// Always `EUR`.
    #[schema(example = "EUR")]
    pub currency: String,
    /// `null` unless the order is cancelled.
    #[schema(value_type = Option<CancelReasonSchema>, required = true)]
    pub reason: Option<CancelReason>,
    /// The compensating events that ran before the cancellation, e.g. `InventoryReleased`.
    pub compensations: Vec<String>,
    pub ship_to: ShipToView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the order became `completed` or `cancelled` (its `OrderCompleted` or
    /// `OrderCancelled` event); `null` while it is open. Later events (a cancellation notice,
    /// a late refund) move `updated_at`, not this.
    #[schema(required = true)]
    pub ended_at: Option<DateTime<Utc>>,
    /// The order's timeline, oldest first.
    pub events: Vec<EventView>,
}

/// An order in a `GET /orders` page: the view without its timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderSummary {
    pub id: Uuid,
    pub customer_id: String,
    #[schema(value_type = OrderStatusSchema)]
    pub status: OrderStatus,
    pub items: Vec<ItemView>,
    #[schema(required = true)]
    pub total_minor: Option<i64>,
    #[schema(example = "EUR")]
    pub currency: String,
    #[schema(value_type = Option<CancelReasonSchema>, required = true)]
    pub reason: Option<CancelReason>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the order became `completed` or `cancelled`; `null` while it is open. (Absent from
    /// projection rows written before the field existed: rebuild the projection to fill it.)
    #[serde(default)]
    #[schema(required = true)]
    pub ended_at: Option<DateTime<Utc>>,
}

/// A page of `GET /orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderSummary>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(value_type = Option<String>, required = true)]
    pub next_cursor: Option<Cursor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ItemView {
    pub sku: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShipToView {
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

/// One timeline entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// The event type, e.g. `InventoryReserved`.
    #[serde(rename = "type")]
    #[schema(example = "OrderPlaced")]
    pub event_type: String,
    /// The service that published it, e.g. `inventory-svc`.
    #[schema(example = "order-svc")]
    pub source: String,
    pub at: DateTime<Utc>,
}

fn item_views(state: &OrderState) -> Vec<ItemView> {
    state.items().iter().map(|line| ItemView { sku: line.sku.clone(), quantity: line.quantity }).collect()
}

impl From<&OrderState> for OrderView {
    fn from(state: &OrderState) -> Self {
        let ship_to = state.ship_to();
        Self {
            id: state.order_id(),
            customer_id: state.customer_id().to_owned(),
            status: state.status(),
            items: item_views(state),
            total_minor: state.total_minor(),
            currency: contracts::CURRENCY.to_owned(),
            reason: state.reason(),
            compensations: state.compensations().to_vec(),
            ship_to: ShipToView {
                country: ship_to.country.clone(),
                name: ship_to.name.clone(),
                line1: ship_to.line1.clone(),
                city: ship_to.city.clone(),
                postal_code: ship_to.postal_code.clone(),
            },
            created_at: state.placed_at(),
            updated_at: state.updated_at(),
            ended_at: state.ended_at(),
            events: state
                .timeline()
                .iter()
                .map(|entry| EventView {
                    event_type: entry.event_type.to_owned(),
                    source: entry.source.to_owned(),
                    at: entry.at,
                })
                .collect(),
        }
    }
}

impl From<&OrderState> for OrderSummary {
    fn from(state: &OrderState) -> Self {
        Self {
            id: state.order_id(),
            customer_id: state.customer_id().to_owned(),
            status: state.status(),
            items: item_views(state),
            total_minor: state.total_minor(),
            currency: contracts::CURRENCY.to_owned(),
            reason: state.reason(),
            created_at: state.placed_at(),
            updated_at: state.updated_at(),
            ended_at: state.ended_at(),
        }
    }
}

/// The OpenAPI schema of [`OrderStatus`], built from the enum so the two cannot drift.
pub struct OrderStatusSchema;

impl PartialSchema for OrderStatusSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(OrderStatus::ALL.map(OrderStatus::as_str)))
            .description(Some("Where the order is in the saga."))
            .into()
    }
}

impl ToSchema for OrderStatusSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OrderStatus")
    }
}

/// The OpenAPI schema of [`CancelReason`], built from the contract's list.
pub struct CancelReasonSchema;

impl PartialSchema for CancelReasonSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(CancelReason::ALL.map(CancelReason::as_str)))
            .description(Some("Why an order was cancelled."))
            .into()
    }
}

impl ToSchema for CancelReasonSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CancelReason")
    }
}

// ---- admin commands ----

/// An admin command and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdminCommandView {
    pub id: Uuid,
    /// `UpsertProduct`, `AdjustStock`, `CreditAccount`, `SetAccountBalance` or `SetDestinations`.
    #[serde(rename = "type")]
    #[schema(example = "AdjustStock")]
    pub command_type: String,
    /// The service that owns the target and decides the command.
    #[schema(example = "inventory-svc")]
    pub service: String,
    /// The SKU, customer or carrier the command changes.
    #[schema(example = "sku-tee")]
    pub target: String,
    #[schema(value_type = CommandStatusSchema)]
    pub status: CommandStatus,
    /// What was asked.
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    /// The owner's events the command recorded (once applied).
    pub events: Vec<String>,
    /// Why the owner refused it; `null` unless rejected.
    #[schema(required = true)]
    pub reason: Option<String>,
    /// The key id (not the key) of the admin who issued it.
    #[schema(example = "key-3f2a9c01b7de")]
    pub issued_by: String,
    pub issued_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&AuditState> for AdminCommandView {
    fn from(state: &AuditState) -> Self {
        let issued_at = state.issued_at.unwrap_or_default();
        Self {
            id: state.command_id,
            command_type: state.command_type.clone(),
            service: state.service.clone(),
            target: state.target.clone(),
            status: state.status.unwrap_or(CommandStatus::Pending),
            request: state.request.clone(),
            events: state.events.clone(),
            reason: state.reason.clone(),
            issued_by: state.issued_by.clone(),
            issued_at,
            updated_at: state.updated_at.unwrap_or(issued_at),
        }
    }
}

/// A page of `GET /admin/commands`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AdminCommandPage {
    pub items: Vec<AdminCommandView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(value_type = Option<String>, required = true)]
    pub next_cursor: Option<Cursor>,
}

/// The OpenAPI schema of [`CommandStatus`].
pub struct CommandStatusSchema;

impl PartialSchema for CommandStatusSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(CommandStatus::ALL.map(CommandStatus::as_str)))
            .description(Some("pending until the owning service decided; then applied or rejected."))
            .into()
    }
}

impl ToSchema for CommandStatusSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CommandStatus")
    }
}
