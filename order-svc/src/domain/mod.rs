//! The Order aggregate: the saga's authority on an order's fate. Pure, no I/O.
//!
//! An order's stream (stream id = order id) holds `OrderPlaced`, every fact the other services
//! published about the order, and the one terminal event order-svc decides: `OrderCompleted`
//! when it accepts the order's `ShipmentScheduled` (the point of no return: from then on the
//! saga deadline no longer applies), or `OrderCancelled` once every compensation the failure
//! requires was observed (or at the saga deadline). notification-svc tells the customer that
//! decision and nothing else, so the customer hears one thing, once. The status is derived by
//! folding the stream; nothing here is a mutable column.
//!
//! Facts may arrive in any order: they come from different topics, and one order's events are
//! ordered only within one topic. So decisions look at which facts were observed, never at the
//! order they were observed in:
//!
//! | first failure        | compensations awaited                      |
//! |----------------------|--------------------------------------------|
//! | `InventoryRejected`  | none, cancelled at once                    |
//! | `PaymentDeclined`    | `InventoryReleased`                        |
//! | `ShipmentFailed`     | `PaymentRefunded` and `InventoryReleased`  |
//!
//! After a terminal event, facts are still recorded (the timeline shows a late capture and its
//! refund, or a shipment scheduled after the deadline and its cancellation) but never change
//! the outcome: the service that completed a step late undoes it on `OrderCancelled`.

pub mod admin_command;
mod command;
mod event;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use shared::contracts::{self, CancelReason, OrderLine, ShipTo};
use uuid::Uuid;

pub use command::{
    AddressField, AddressLines, CountryCode, CustomerId, Destination, IDENTIFIER_PATTERN, InvalidValue, OrderItem,
    OrderItems, PlaceOrder, Quantity, Sku, is_hidden_char,
};
pub use event::{EventDecodeError, OrderEvent, source};

/// Where an order is in the saga. Serialized with the API's snake_case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Reserved,
    Paid,
    Shipped,
    Completed,
    Cancelling,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Pending,
        OrderStatus::Reserved,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Completed,
        OrderStatus::Cancelling,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Reserved => "reserved",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelling => "cancelling",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Completed | OrderStatus::Cancelled)
    }
}

/// The text is not one of the status names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order status {0:?}")]
pub struct UnknownStatus(pub String);

impl std::str::FromStr for OrderStatus {
    type Err = UnknownStatus;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL.into_iter().find(|status| status.as_str() == raw).ok_or_else(|| UnknownStatus(raw.to_owned()))
    }
}

/// One line of the order's timeline: which event, from which service, when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub source: &'static str,
    pub at: DateTime<Utc>,
}

/// How the saga ended, as decided by order-svc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaOutcome {
    Completed { total_minor: i64 },
    Cancelled { reason: CancelReason, compensations: Vec<String> },
}

/// The first failure observed, which decides the cancellation reason and what must be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    InventoryRejected(CancelReason),
    PaymentDeclined(CancelReason),
    ShipmentFailed(CancelReason),
}

impl Failure {
    fn reason(self) -> CancelReason {
        match self {
            Failure::InventoryRejected(reason) | Failure::PaymentDeclined(reason) | Failure::ShipmentFailed(reason) => {
                reason
            }
        }
    }
}

/// Which facts have been observed. Sets, not counters: a fact seen twice counts once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Observed {
    reserved_total: Option<i64>,
    captured_amount: Option<i64>,
    shipment: Option<contracts::CompletedShipment>,
    inventory_released: bool,
    payment_refunded: bool,
    /// Compensating events in the order they were first observed.
    compensations: Vec<String>,
}

impl Observed {
    fn compensation(&mut self, event_type: &'static str) {
        if !self.compensations.iter().any(|seen| seen == event_type) {
            self.compensations.push(event_type.to_owned());
        }
    }
}

/// An order as folded from its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    order_id: Uuid,
    customer_id: String,
    items: Vec<OrderLine>,
    ship_to: ShipTo,
    placed_at: DateTime<Utc>,
    deadline_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// How many events were folded: the stream version to expect when appending.
    version: u64,
    failure: Option<Failure>,
    observed: Observed,
    outcome: Option<SagaOutcome>,
    timeline: Vec<TimelineEntry>,
}

impl OrderState {
    /// An order's stream is named by the order id alone: the id every service keys its
    /// messages about the order with.
    pub fn stream_id(order_id: Uuid) -> String {
        order_id.to_string()
    }

    /// The state right after `OrderPlaced`, recorded at `at`.
    pub fn from_placed(placed: &contracts::OrderPlaced, at: DateTime<Utc>) -> Self {
        Self {
            order_id: placed.order_id,
            customer_id: placed.customer_id.clone(),
            items: placed.items.clone(),
            ship_to: placed.ship_to.clone(),
            placed_at: placed.placed_at,
            deadline_at: placed.deadline_at,
            updated_at: at,
            version: 1,
            failure: None,
            observed: Observed::default(),
            outcome: None,
            timeline: vec![TimelineEntry {
                event_type: contracts::event_type::ORDER_PLACED,
                source: source::ORDER,
                at,
            }],
        }
    }

    /// Folds one more event of this order's stream, recorded at `at`.
    pub fn apply(&mut self, event: &OrderEvent, at: DateTime<Utc>) {
        self.absorb(event);
        self.version += 1;
        self.updated_at = at;
        self.timeline.push(TimelineEntry { event_type: event.event_type(), source: event.source(), at });
    }

    /// The business effect of an event, without the bookkeeping of the stream.
    fn absorb(&mut self, event: &OrderEvent) {
        let observed = &mut self.observed;
        match event {
            // A second OrderPlaced cannot be appended by `place`; if one is there it changes
            // nothing.
            OrderEvent::OrderPlaced(_) => {}
            OrderEvent::InventoryReserved(e) => observed.reserved_total = Some(e.total_minor),
            OrderEvent::PaymentCaptured(e) => observed.captured_amount = Some(e.amount_minor),
            OrderEvent::ShipmentScheduled(e) => {
                observed.shipment.get_or_insert_with(|| contracts::CompletedShipment {
                    shipment_id: e.shipment_id,
                    carrier: e.carrier.clone(),
                    ship_date: e.ship_date,
                });
            }
            // The customer was told the outcome: recorded in the timeline, it decides nothing.
            OrderEvent::NotificationSent(_) => {}
            OrderEvent::InventoryRejected(e) => {
                self.failure.get_or_insert(Failure::InventoryRejected(e.reason));
            }
            OrderEvent::PaymentDeclined(e) => {
                self.failure.get_or_insert(Failure::PaymentDeclined(e.reason));
            }
            OrderEvent::ShipmentFailed(e) => {
                self.failure.get_or_insert(Failure::ShipmentFailed(e.reason));
            }
            OrderEvent::InventoryReleased(_) => {
                observed.inventory_released = true;
                observed.compensation(contracts::event_type::INVENTORY_RELEASED);
            }
            OrderEvent::PaymentRefunded(_) => {
                observed.payment_refunded = true;
                observed.compensation(contracts::event_type::PAYMENT_REFUNDED);
            }
            OrderEvent::ShipmentCancelled(_) => {
                observed.compensation(contracts::event_type::SHIPMENT_CANCELLED);
            }
            OrderEvent::OrderCompleted(e) => {
                self.outcome.get_or_insert(SagaOutcome::Completed { total_minor: e.total_minor });
            }
            OrderEvent::OrderCancelled(e) => {
                self.outcome
                    .get_or_insert(SagaOutcome::Cancelled { reason: e.reason, compensations: e.compensations.clone() });
            }
        }
    }

    pub fn order_id(&self) -> Uuid {
        self.order_id
    }

    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    pub fn items(&self) -> &[OrderLine] {
        &self.items
    }

    pub fn ship_to(&self) -> &ShipTo {
        &self.ship_to
    }

    pub fn placed_at(&self) -> DateTime<Utc> {
        self.placed_at
    }

    pub fn deadline_at(&self) -> DateTime<Utc> {
        self.deadline_at
    }

    /// When the last event was recorded.
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }

    /// When the order reached its outcome (the time its `OrderCompleted` or `OrderCancelled`
    /// was recorded); `None` while it is open.
    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        use contracts::event_type::{ORDER_CANCELLED, ORDER_COMPLETED};
        self.timeline.iter().find(|e| matches!(e.event_type, ORDER_COMPLETED | ORDER_CANCELLED)).map(|e| e.at)
    }

    /// The number of events in the stream: the expected version for the next append.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every recorded event, oldest first.
    pub fn timeline(&self) -> &[TimelineEntry] {
        &self.timeline
    }

    pub fn outcome(&self) -> Option<&SagaOutcome> {
        self.outcome.as_ref()
    }

    pub fn status(&self) -> OrderStatus {
        match (&self.outcome, self.failure) {
            (Some(SagaOutcome::Completed { .. }), _) => OrderStatus::Completed,
            (Some(SagaOutcome::Cancelled { .. }), _) => OrderStatus::Cancelled,
            (None, Some(_)) => OrderStatus::Cancelling,
            (None, None) if self.observed.shipment.is_some() => OrderStatus::Shipped,
            (None, None) if self.observed.captured_amount.is_some() => OrderStatus::Paid,
            (None, None) if self.observed.reserved_total.is_some() => OrderStatus::Reserved,
            (None, None) => OrderStatus::Pending,
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.outcome.is_some()
    }

    /// The order total once priced by inventory-svc (or, if its event is not in yet, the
    /// amount payment-svc captured, which is that same total).
    pub fn total_minor(&self) -> Option<i64> {
        match &self.outcome {
            Some(SagaOutcome::Completed { total_minor }) => Some(*total_minor),
            _ => self.observed.reserved_total.or(self.observed.captured_amount),
        }
    }

    /// The cancellation reason; `None` unless the order is cancelled.
    pub fn reason(&self) -> Option<CancelReason> {
        match &self.outcome {
            Some(SagaOutcome::Cancelled { reason, .. }) => Some(*reason),
            _ => None,
        }
    }

    /// The compensations that ran: those named by `OrderCancelled` once cancelled, else the
    /// compensating events observed so far.
    pub fn compensations(&self) -> &[String] {
        match &self.outcome {
            Some(SagaOutcome::Cancelled { compensations, .. }) => compensations,
            _ => &self.observed.compensations,
        }
    }

    /// The terminal event the observed facts call for, if any and if none was decided yet.
    fn decide_outcome(&self) -> Option<OrderEvent> {
        if self.outcome.is_some() {
            return None;
        }
        match self.failure {
            Some(failure) => {
                let compensated = match failure {
                    Failure::InventoryRejected(_) => true,
                    Failure::PaymentDeclined(_) => self.observed.inventory_released,
                    Failure::ShipmentFailed(_) => self.observed.inventory_released && self.observed.payment_refunded,
                };
                compensated.then(|| self.cancelled(failure.reason()))
            }
            // The shipment is scheduled and nothing failed: accept it. Its price may not be in
            // yet (the facts come from different topics); then the price completes it.
            None => {
                let shipment = self.observed.shipment.clone()?;
                self.total_minor().map(|total_minor| {
                    OrderEvent::OrderCompleted(contracts::OrderCompleted {
                        order_id: self.order_id,
                        customer_id: self.customer_id.clone(),
                        total_minor,
                        currency: contracts::CURRENCY.to_owned(),
                        shipment: Some(shipment),
                    })
                })
            }
        }
    }

    fn cancelled(&self, reason: CancelReason) -> OrderEvent {
        OrderEvent::OrderCancelled(contracts::OrderCancelled {
            order_id: self.order_id,
            customer_id: self.customer_id.clone(),
            reason,
            compensations: self.observed.compensations.clone(),
        })
    }
}

/// A call that the aggregate refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{event_type} is decided by order-svc, it cannot be observed")]
    NotAnUpstreamFact { event_type: &'static str },
    #[error("event for order {got} observed on order {expected}")]
    WrongOrder { expected: Uuid, got: Uuid },
}

/// Starts a saga: the `OrderPlaced` that opens the stream `order_id`, due by
/// `now + saga_deadline`.
pub fn place(cmd: PlaceOrder, order_id: Uuid, now: DateTime<Utc>, saga_deadline: TimeDelta) -> Vec<OrderEvent> {
    vec![OrderEvent::OrderPlaced(contracts::OrderPlaced {
        order_id,
        customer_id: cmd.customer_id.as_str().to_owned(),
        items: cmd.items.to_contract(),
        ship_to: cmd.ship_to.to_contract(),
        placed_at: now,
        deadline_at: now + saga_deadline,
    })]
}

/// Records a fact another service published about this order and decides what follows.
///
/// Returns the fact itself, followed by `OrderCompleted` or `OrderCancelled` when the fact
/// settles the order's fate. Append all of them, in order, in one transaction. Observing a fact
/// again (a redelivery the inbox missed) records it again but never decides twice.
pub fn observe(state: &OrderState, fact: OrderEvent) -> Result<Vec<OrderEvent>, DomainError> {
    if fact.is_decided_by_order_svc() {
        return Err(DomainError::NotAnUpstreamFact { event_type: fact.event_type() });
    }
    if fact.order_id() != state.order_id {
        return Err(DomainError::WrongOrder { expected: state.order_id, got: fact.order_id() });
    }
    let mut next = state.clone();
    next.absorb(&fact);
    let decided = next.decide_outcome();
    Ok(std::iter::once(fact).chain(decided).collect())
}

/// Cancels an order whose saga deadline has passed without an outcome.
///
/// The reason is `deadline_exceeded`, unless a failure was already observed and the order is
/// only waiting for its compensations: then the failure's own reason is kept (it is what the
/// customer needs to hear) and the cancellation stops the wait. Either way every service undoes
/// its own step on seeing `OrderCancelled`. Returns nothing for a terminal order or before the
/// deadline.
pub fn expire(state: &OrderState, now: DateTime<Utc>) -> Vec<OrderEvent> {
    if state.is_terminal() || now < state.deadline_at {
        return Vec::new();
    }
    let reason = state.failure.map_or(CancelReason::DeadlineExceeded, Failure::reason);
    vec![state.cancelled(reason)]
}

/// The fold step: `None` is the state before the stream exists. Only `OrderPlaced` can open a
/// stream; any other event on a missing stream is ignored.
pub fn evolve(state: Option<OrderState>, event: &OrderEvent, at: DateTime<Utc>) -> Option<OrderState> {
    match (state, event) {
        (None, OrderEvent::OrderPlaced(placed)) => Some(OrderState::from_placed(placed, at)),
        (None, _) => None,
        (Some(mut state), event) => {
            state.apply(event, at);
            Some(state)
        }
    }
}

/// Folds a whole stream, oldest first, each event with the time it was recorded.
pub fn fold<'a>(events: impl IntoIterator<Item = (&'a OrderEvent, DateTime<Utc>)>) -> Option<OrderState> {
    events.into_iter().fold(None, |state, (event, at)| evolve(state, event, at))
}

#[cfg(test)]
mod tests;
