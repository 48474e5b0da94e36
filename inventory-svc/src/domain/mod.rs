//! The pure core of inventory-svc: the catalogue and its stock, and the per-order reservation.
//!
//! Two kinds of event stream live here:
//!
//! - [`sku`]: one stream per SKU (`sku-{sku}`) holding the product (name, unit price) and its
//!   stock split into available, reserved and shipped units.
//! - [`reservation`]: one stream per order (`reservation-{order_id}`) recording what inventory
//!   decided for that order.
//!
//! [`decisions`] holds the functions a handler calls for a saga message: each takes the states
//! it needs (already folded from the store) and returns an [`InventoryDecision`], the events to
//! append per stream plus the public integration event to publish. Nothing in this module does
//! I/O; a handler loads, decides, and commits the result in one transaction.
//!
//! Stock is conserved by construction: every stock event moves units between the three buckets,
//! except `StockAdjusted`, which is the only way units enter or leave the catalogue, so per SKU
//! the sum of adjustments always equals `available + reserved + shipped`, and every decision
//! refuses to take `available` below zero.

pub mod decisions;
pub mod reservation;
pub mod seed;
pub mod sku;

#[cfg(test)]
mod properties;

pub use decisions::{InventoryDecision, PublicEvent, mark_shipped, release, reserve};
pub use reservation::{ReservationEvent, ReservationState, ReservationStatus};
pub use seed::{CatalogueSeed, ProductSeed};
pub use sku::{SkuCommand, SkuEvent, SkuState, adjust_stock, upsert_product};

use uuid::Uuid;

/// Why a command was refused. These are programming or data errors (a bad admin request, an
/// order that should never have been accepted, a store that disagrees with itself), not
/// business outcomes: an order that cannot be served is a `Rejected` event, not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("order has no lines")]
    EmptyOrder,
    #[error("line for sku {sku} has a zero quantity")]
    ZeroQuantity { sku: String },
    #[error("quantity for sku {sku} overflows")]
    QuantityOverflow { sku: String },
    #[error("amount overflows")]
    AmountOverflow,
    #[error("unknown sku {sku}")]
    UnknownSku { sku: String },
    #[error("product name must not be blank")]
    BlankName,
    #[error("sku must not be blank")]
    BlankSku,
    #[error("price must not be negative, got {price_minor}")]
    NegativePrice { price_minor: i64 },
    #[error("seeded stock must not be negative, got {stock}")]
    NegativeSeedStock { stock: i64 },
    #[error("adjusting sku {sku} by {delta} would leave {available} available units negative")]
    NegativeStock { sku: String, available: i64, delta: i64 },
    #[error("sku {sku} has {available} units available, {requested} requested")]
    InsufficientStock { sku: String, available: i64, requested: u32 },
    #[error("sku {sku} holds {held} {bucket} units, order {order_id} needs {quantity}")]
    StockInconsistent { sku: String, order_id: Uuid, bucket: &'static str, held: i64, quantity: u32 },
}
