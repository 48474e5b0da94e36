//! order-svc's storage and read models, between the domain and the API: the ports the API
//! calls ([`OrderRepository`], [`AdminRepository`]) and their queries, the read models they
//! return ([`views`]), and the database-backed implementations ([`Orders`], [`AdminCommands`]).
//!
//! Dependencies point one way: HTTP imports this layer, this layer imports the domain, and
//! nothing here knows about HTTP, so a change to a route never ripples into persistence.

pub mod admin_commands;
pub mod admission;
pub mod group_commit;
pub mod idempotency;
pub mod order_view;
pub mod orders;
pub mod paging;
pub mod repository;
pub mod views;

pub use admin_commands::AdminCommands;
pub use admission::Admission;
pub use idempotency::{IDEMPOTENCY_KEYS, IdempotencyKey, IdempotencyRequest, fingerprint};
pub use orders::{AppendError, Orders};
pub use paging::{Cursor, InvalidCursor, PageLimit};
pub use repository::{AdminRepository, CommandQuery, ListQuery, OrderRepository, Placed, RepoError};
pub use views::{
    AdminCommandPage, AdminCommandView, CancelReasonSchema, CommandStatusSchema, EventView, ItemView, OrderPage,
    OrderStatusSchema, OrderSummary, OrderView, ShipToView,
};
