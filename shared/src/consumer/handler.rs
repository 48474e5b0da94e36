//! What a service implements ([`Handler`]) and what its handler gets for each message
//! ([`MessageContext`]): the open transaction, the message, and the means to publish what the
//! message causes through the outbox, in that transaction.

use std::future::Future;

use serde::Serialize;
use uuid::Uuid;

use super::HandlerError;
use crate::contracts;
use crate::db::Tx;
use crate::envelope::Envelope;
use crate::event_store::{Aggregate, EventStore, StreamRef};
use crate::metrics as m;
use crate::outbox::{OutboxMessage, enqueue};

/// What a handler gets for one message: the open transaction and the message.
pub struct MessageContext<'a> {
    pub tx: &'a mut Tx,
    pub message: &'a Envelope,
    pub(super) source: &'static str,
}

impl MessageContext<'_> {
    /// Publish an event caused by this message (through the outbox, in this transaction).
    pub async fn publish<T: Serialize>(
        &mut self,
        topic: &str,
        event_type: &str,
        payload: &T,
    ) -> Result<Uuid, HandlerError> {
        let envelope =
            Envelope::caused_by(self.message, event_type, 1, self.source, payload).map_err(HandlerError::permanent)?;
        enqueue(self.tx, &OutboxMessage::from_envelope(topic, &envelope)).await?;
        Ok(envelope.id)
    }

    /// Run an admin command (this message) on one aggregate's stream through
    /// [`EventStore::execute`], and publish its outcome on `topic`: the events it recorded, or
    /// why the domain refused it. A store failure fails the message (it is retried).
    pub async fn execute_command<A: Aggregate, E: std::fmt::Display>(
        &mut self,
        store: &EventStore,
        topic: &str,
        command_id: Uuid,
        stream: &str,
        decide: impl FnOnce(&A) -> Result<Vec<A::Event>, E>,
    ) -> Result<(), HandlerError> {
        let metadata = self.command_metadata(command_id);
        let outcome = store.execute::<A, E>(self.tx, stream, &metadata, decide).await?;
        let outcome = outcome.map(|types| types.into_iter().map(str::to_owned).collect()).map_err(|e| e.to_string());
        self.publish_command_outcome(topic, command_id, outcome).await?;
        Ok(())
    }

    /// Publish an admin command's outcome on `topic` (the owning service's event topic): the
    /// events it recorded, or why it was refused. The command is this message.
    pub async fn publish_command_outcome(
        &mut self,
        topic: &str,
        command_id: Uuid,
        outcome: Result<Vec<String>, String>,
    ) -> Result<Uuid, HandlerError> {
        let command_type = self.message.event_type.clone();
        let service = self.source.to_owned();
        let published = match outcome {
            Ok(events) => {
                m::admin_command(self.source, &command_type, "applied");
                tracing::info!(command.id = %command_id, command.r#type = %command_type, ?events, "admin command applied");
                let payload = contracts::AdminCommandApplied { command_id, command_type, service, events };
                self.publish(topic, contracts::event_type::ADMIN_COMMAND_APPLIED, &payload).await?
            }
            Err(reason) => {
                m::admin_command(self.source, &command_type, "rejected");
                tracing::info!(command.id = %command_id, command.r#type = %command_type, %reason, "admin command rejected");
                let payload = contracts::AdminCommandRejected { command_id, command_type, service, reason };
                self.publish(topic, contracts::event_type::ADMIN_COMMAND_REJECTED, &payload).await?
            }
        };
        Ok(published)
    }

    /// A command must be keyed by the target it names (so that commands on one target stay in
    /// order): refuse one that is not.
    pub fn check_subject(&self, target: &str) -> Result<(), HandlerError> {
        if self.message.subject == target {
            Ok(())
        } else {
            Err(HandlerError::permanent(anyhow::anyhow!(
                "{} is keyed {:?} but targets {target:?}",
                self.message.event_type,
                self.message.subject
            )))
        }
    }

    /// Metadata to store with the events an admin command records: the causing message and
    /// the command's id (its audit stream in order-svc).
    pub fn command_metadata(&self, command_id: Uuid) -> serde_json::Value {
        let mut metadata = self.event_metadata();
        metadata["admin_command_id"] = serde_json::json!(command_id);
        metadata
    }

    /// Metadata to store with events this message causes.
    pub fn event_metadata(&self) -> serde_json::Value {
        serde_json::json!({
            "causation_id": self.message.id,
            "correlation_id": self.message.correlation_id,
            "traceparent": self.message.traceparent,
        })
    }
}

/// A service's message handler.
pub trait Handler: Send + Sync + 'static {
    /// Work that must not hold a database transaction open (a slow external call whose result
    /// the decision does not need). Runs before each attempt; the default does nothing.
    fn before_transaction(&self, _message: &Envelope) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The event streams handling `message` will load, as far as the message alone tells. The
    /// transaction that handles it (alone, or with a run of messages sharing it) reads all of
    /// them ahead in one go ([`crate::event_store::prefetch`]), instead of a read per load; a
    /// stream not named is read when it is loaded. The default names none.
    fn streams(&self, _message: &Envelope) -> Vec<StreamRef> {
        Vec::new()
    }

    /// Decide and record the message's effects inside the open transaction.
    fn handle(&self, ctx: &mut MessageContext<'_>) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// May several messages share one transaction? Only when `handle` acts on nothing but the
    /// transaction: a shared transaction that fails for one message is rolled back and its
    /// messages are handled again one at a time, which would repeat an external call (a
    /// webhook) made for the others, and it would hold the transaction open across all their
    /// calls. A handler that calls out answers false and gets one transaction per message
    /// (offsets are still committed once per batch).
    fn shares_transactions(&self) -> bool {
        true
    }
}
