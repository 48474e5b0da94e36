//! Saga messages → notification decisions → delivery to the sinks → one transaction (events +
//! outbox).
//!
//! - `OrderCompleted`: confirm the order, unless it was confirmed already.
//! - `OrderCancelled`: note the cancellation and send the notice, unless it was sent already.
//!
//! Both come from order-svc, the one authority on the order's fate, on `orders.events`, keyed by
//! the order: one order's decisions arrive in the order they were made. A decision contradicting
//! what the customer was told is refused (dead-lettered), never told.
//!
//! A notification owed is delivered before anything is appended, so the events table is not
//! held while a webhook answers (the consumer's own transaction is open all along: on SQLite
//! that is the database's write lock). Once delivered, the decision's events and the delivery
//! record are appended together and `NotificationSent` goes to the outbox.
//!
//! A delivery that fails for good (the webhook refused it, or the retry budget ran out) is a
//! permanent handler error: the consumer rolls the transaction back and dead-letters the
//! message. A webhook behind an open circuit breaker is no fault of the message: that is
//! [`HandlerError::Unavailable`], and the consumer pauses its partitions and tries again
//! later, so a webhook outage loses and dead-letters nothing. The cancellation the decision noted is rolled back with it; a redrive decides
//! again from the same state and notes it then. Delivery is at least once: a crash between
//! delivering and committing delivers again on redelivery, with the same dedupe key. With a
//! webhook, each message has a transaction of its own (no batching with others; see
//! [`Handler::shares_transactions`]), so one message's failure never delivers another's again.
//! With the log sink alone, nothing leaves the process: messages share transactions like the
//! other services' (a run rolled back logs its notices again, as a redelivery would).

use chrono::{DateTime, Utc};
use shared::consumer::{Changes, Handler, HandlerError, MessageContext, Step};
use shared::contracts::{NotificationKind, OrderCancelled, OrderCompleted, event_type};
use shared::db::Tx;
use shared::envelope::Envelope;
use shared::event_store::{Aggregate, EventStore, Loaded, StreamRef};
use shared::topics::Topics;
use uuid::Uuid;

use crate::domain::{self, Decision, NotificationEvent, Notifications, Recorded};
use crate::sinks::{SinkError, Sinks};

impl Aggregate for Notifications {
    type Event = NotificationEvent;
    /// One stream per order (or command): a few events, never a snapshot.
    const SNAPSHOTS: bool = false;
    fn event_type(event: &NotificationEvent) -> &'static str {
        event.event_type()
    }
    fn apply(&mut self, event: &NotificationEvent) {
        *self = Notifications::apply(*self, event);
    }
}

/// A notification that reached every sink, as recorded in the order's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub kind: NotificationKind,
    /// The sinks' dedupe key.
    pub notification_id: Uuid,
    pub sinks: Vec<String>,
    pub recorded_at: DateTime<Utc>,
}

/// The notification-svc message handler.
#[derive(Debug, Clone)]
pub struct NotificationHandler {
    pub store: EventStore,
    pub topics: Topics,
    pub sinks: Sinks,
}

impl Handler for NotificationHandler {
    async fn handle(&self, ctx: &mut MessageContext<'_>) -> Result<(), HandlerError> {
        ctx.execute(self).await
    }

    /// The order's notification stream (a decision is keyed by its order; a wrong key costs a
    /// read, not a wrong decision).
    fn streams(&self, message: &Envelope) -> Vec<StreamRef> {
        match message.event_type.as_str() {
            event_type::ORDER_COMPLETED | event_type::ORDER_CANCELLED => message
                .subject
                .parse()
                .map(|order_id| StreamRef::of::<Notifications>(Notifications::stream_id(order_id)))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `handle` calls the sinks. A webhook is called from outside the transaction's reach: a
    /// shared transaction rolled back for another message would call it again for this one, so
    /// with a webhook each message gets its own. The log sink alone calls nothing outside.
    fn shares_transactions(&self) -> bool {
        !self.sinks.call_out()
    }
}

/// What a decision of order-svc asks the customer be told.
#[derive(Debug)]
pub enum Command {
    Confirm(OrderCompleted),
    CancelNotice(OrderCancelled),
}

impl Command {
    fn order_id(&self) -> Uuid {
        match self {
            Command::Confirm(completed) => completed.order_id,
            Command::CancelNotice(cancelled) => cancelled.order_id,
        }
    }
}

impl Step for NotificationHandler {
    type Command = Command;
    type Loaded = Loaded<Notifications>;
    type Decision = Decision;
    type Refusal = domain::Contradiction;

    fn store(&self) -> &EventStore {
        &self.store
    }

    fn command(&self, message: &Envelope) -> Result<Option<Command>, HandlerError> {
        Ok(match message.event_type.as_str() {
            event_type::ORDER_COMPLETED => Some(Command::Confirm(message.decode()?)),
            event_type::ORDER_CANCELLED => Some(Command::CancelNotice(message.decode()?)),
            // Other events on our topics are not ours to act on.
            _ => None,
        })
    }

    async fn load(&self, tx: &mut Tx, command: &Command) -> Result<Loaded<Notifications>, HandlerError> {
        Ok(self.store.load::<Notifications>(tx, &Notifications::stream_id(command.order_id())).await?)
    }

    fn decide(&self, command: &Command, state: &Loaded<Notifications>) -> Result<Decision, Self::Refusal> {
        match command {
            Command::Confirm(completed) => domain::confirm(&state.state, completed),
            Command::CancelNotice(cancelled) => domain::cancel_notice(&state.state, cancelled),
        }
    }

    /// A notification owed is delivered here, before anything is appended; once delivered,
    /// its delivery is recorded with the decision's events.
    async fn changes(
        &self,
        command: Command,
        state: Loaded<Notifications>,
        decision: Decision,
    ) -> Result<Changes<'_>, HandlerError> {
        let mut changes = Changes::new();
        if decision.is_empty() {
            return Ok(changes);
        }
        let recorded = match &decision.delivery {
            Some(notification) => {
                let sinks = self.sinks.deliver_all(notification).await.map_err(|err| {
                    let unavailable = matches!(err, SinkError::CircuitOpen);
                    let err = anyhow::Error::new(err).context(format!(
                        "failed to deliver the {} notification {}",
                        notification.kind.as_str(),
                        notification.notification_id
                    ));
                    if unavailable { HandlerError::Unavailable(err) } else { HandlerError::Permanent(err) }
                })?;
                // Recorded against the state as loaded, before the decision's own events.
                domain::record_delivery(&state.state, notification, sinks)
            }
            None => Recorded::default(),
        };
        let events: Vec<NotificationEvent> = decision.events.into_iter().chain(recorded.events).collect();
        changes.save(Notifications::stream_id(command.order_id()), state, events);
        if let Some(sent) = recorded.publish {
            changes.publish(&self.topics.notifications, event_type::NOTIFICATION_SENT, &sent)?;
        }
        Ok(changes)
    }
}

impl NotificationHandler {
    /// What has been told to an order's customer (for tests and operators).
    pub async fn notifications(&self, tx: &mut Tx, order_id: Uuid) -> anyhow::Result<Notifications> {
        Ok(self.store.load::<Notifications>(tx, &Notifications::stream_id(order_id)).await?.state)
    }

    /// The deliveries recorded for an order, oldest first (for tests and operators).
    pub async fn deliveries(&self, tx: &mut Tx, order_id: Uuid) -> anyhow::Result<Vec<Delivery>> {
        let mut deliveries = Vec::new();
        for recorded in self.store.read_stream(tx, &Notifications::stream_id(order_id), 0).await? {
            if let NotificationEvent::DeliveryRecorded { kind, notification_id, sinks } =
                serde_json::from_value(recorded.payload)?
            {
                deliveries.push(Delivery { kind, notification_id, sinks, recorded_at: recorded.recorded_at });
            }
        }
        Ok(deliveries)
    }
}
