//! The ports the API calls: what it needs from storage, and the queries it passes in. The
//! database-backed implementations are [`super::Orders`] and [`super::AdminCommands`]; the API's
//! black-box tests use in-memory ones.

use std::future::Future;

use uuid::Uuid;

use super::idempotency::IdempotencyRequest;
use super::paging::{Cursor, PageLimit};
use super::views::{AdminCommandPage, AdminCommandView, OrderPage, OrderView};
use crate::domain::admin_command::{AdminCommand, CommandStatus};
use crate::domain::{CustomerId, OrderStatus, PlaceOrder};

/// Storage for the order API.
pub trait OrderRepository: Clone + Send + Sync + 'static {
    /// Starts a saga for `cmd`: picks the order id (UUIDv7, so ids sort by placement time),
    /// appends `domain::place`'s events and their outbox rows in one transaction, and returns
    /// the new order's view.
    ///
    /// With `idempotency`, the key is recorded in that same transaction. A key seen before
    /// with the same `body_fingerprint` returns the order it created, with `replayed: true`
    /// and nothing appended; with a different fingerprint it fails with
    /// [`RepoError::IdempotencyConflict`]. Concurrent requests with one key must resolve to one
    /// order (a unique constraint on the key does it).
    fn place(
        &self,
        cmd: PlaceOrder,
        idempotency: Option<IdempotencyRequest>,
    ) -> impl Future<Output = Result<Placed, RepoError>> + Send;

    /// The order with this id, or `None`.
    fn get(&self, id: Uuid) -> impl Future<Output = Result<Option<OrderView>, RepoError>> + Send;

    /// One page of orders matching the filters, newest first (id descending). Returns at most
    /// `q.limit` items, those with an id lower than `q.cursor`'s, and `next_cursor =
    /// Some(Cursor::after(last id))` when more may follow (e.g. fetch `limit + 1` rows).
    fn list(&self, q: ListQuery) -> impl Future<Output = Result<OrderPage, RepoError>> + Send;
}

/// Storage for admin commands.
pub trait AdminRepository: Clone + Send + Sync + 'static {
    /// In one transaction: record `AdminCommandIssued` (by `issued_by`, a key id) in a new
    /// audit stream, and put the command for its owning service in the outbox.
    fn issue(
        &self,
        command: AdminCommand,
        issued_by: String,
    ) -> impl Future<Output = Result<AdminCommandView, RepoError>> + Send;

    /// The command with this id, or `None`.
    fn command(&self, id: Uuid) -> impl Future<Output = Result<Option<AdminCommandView>, RepoError>> + Send;

    /// One page of commands, newest first, like [`OrderRepository::list`].
    fn commands(&self, q: CommandQuery) -> impl Future<Output = Result<AdminCommandPage, RepoError>> + Send;
}

/// Storage failures the API maps to a response.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The Idempotency-Key was used before with a different body: 422.
    #[error("idempotency key reused with a different request body")]
    IdempotencyConflict,
    /// Too many sagas are open (admission control): 503, nothing was placed.
    #[error("too many open sagas")]
    AtCapacity,
    /// Anything else: 500, cause logged, body opaque.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Any storage failure but an idempotency conflict: its cause is logged, never shown.
pub(super) fn internal(err: impl Into<anyhow::Error>) -> RepoError {
    RepoError::Internal(err.into())
}

/// The result of [`OrderRepository::place`].
#[derive(Debug, Clone)]
pub struct Placed {
    pub view: OrderView,
    /// True when an earlier request with the same Idempotency-Key created this order.
    pub replayed: bool,
}

/// Which orders to list (`GET /orders`, parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub customer_id: Option<CustomerId>,
    pub status: Option<OrderStatus>,
    pub limit: PageLimit,
    pub cursor: Option<Cursor>,
}

/// Which admin commands to list (`GET /admin/commands`, parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandQuery {
    pub status: Option<CommandStatus>,
    pub limit: PageLimit,
    pub cursor: Option<Cursor>,
}
