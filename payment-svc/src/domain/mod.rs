//! The pure core of payment-svc: customer accounts and the per-order payment.
//!
//! Two kinds of event stream live here:
//!
//! - [`account`]: one stream per customer (`account-{customer_id}`) holding the balance, in EUR
//!   minor units, that orders are charged against.
//! - [`payment`]: one stream per order (`payment-{order_id}`) recording what payment decided
//!   for that order: captured, declined, refunded.
//!
//! [`decisions`] holds the functions a handler calls for a saga message; each takes the states
//! it needs and returns a [`PaymentDecision`]: the events to append per stream plus the public
//! integration event to publish. [`fault`] is the optional, deterministic fault profile layered
//! on top for demos and load tests. Nothing in this module does I/O.
//!
//! Money is conserved by construction: a payment is captured at most once and refunded at most
//! once, and only after it was captured, and every charge or refund on the account carries the
//! same amount as the payment event beside it.

pub mod account;
pub mod decisions;
pub mod fault;
pub mod payment;
pub mod seed;

#[cfg(test)]
mod properties;

pub use account::{AccountCommand, AccountEvent, AccountState, credit, open_account, set_balance};
pub use decisions::{PaymentDecision, PublicEvent, capture, refund};
pub use fault::{FaultDecision, FaultProfile};
pub use payment::{DeclineCause, PaymentEvent, PaymentState, PaymentStatus, payment_id};
pub use seed::{AccountSeed, AccountsSeed};

/// Why a command was refused. These are programming or data errors (a bad admin request, a
/// message that should not exist, a store that disagrees with itself), not business outcomes:
/// a payment that cannot be made is a `Declined` event, not an error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    #[error("customer id must not be blank")]
    BlankCustomerId,
    #[error("the account is already open")]
    AccountAlreadyOpen,
    #[error("no account is open")]
    NoAccount,
    #[error("no account is open for customer {customer_id}, who paid for order {order_id}")]
    AccountMissing { customer_id: String, order_id: uuid::Uuid },
    #[error("balance must not be negative, got {balance_minor}")]
    NegativeBalance { balance_minor: i64 },
    #[error("amount must be positive, got {amount_minor}")]
    NonPositiveAmount { amount_minor: i64 },
    #[error("amount must not be negative, got {amount_minor}")]
    NegativeAmount { amount_minor: i64 },
    #[error("amount overflows")]
    AmountOverflow,
    #[error("balance {balance_minor} does not cover {amount_minor}")]
    InsufficientFunds { balance_minor: i64, amount_minor: i64 },
    #[error("currency {currency} is not supported")]
    UnsupportedCurrency { currency: String },
    #[error("decline rate must be within 0..=1, got {rate}")]
    InvalidDeclineRate { rate: f64 },
}
