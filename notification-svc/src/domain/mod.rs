//! The notification domain: which messages an order's customer is owed, and that each is
//! delivered once.
//!
//! order-svc is the one authority on an order's fate, and the customer is told its decision and
//! nothing else: a confirmation on `OrderCompleted`, a cancellation notice on `OrderCancelled`.
//! order-svc decides one of them per order, so an order's customer hears one thing; a second,
//! contradicting decision would be a broken invariant upstream, and is refused
//! ([`Contradiction`]) rather than told to the customer.
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

pub mod decisions;
pub mod notification;
pub mod notifications;

#[cfg(test)]
mod tests;

pub use decisions::{Contradiction, Decision, Recorded, cancel_notice, confirm, record_delivery};
pub use notification::{Notification, notification_id};
pub use notifications::{NotificationEvent, Notifications};
