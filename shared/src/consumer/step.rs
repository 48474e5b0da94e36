//! The one executor of every service's decisions on saga messages: load → decide → append →
//! publish ([`MessageContext::execute`]).
//!
//! Modelled on esrs's `handle_command` (`src/manager.rs`): the domain's refusal and the store's
//! failure are different results. A refusal ([`Step::decide`]'s error: a message the domain
//! cannot act on, such as a contract violation) is permanent, and the message is
//! dead-lettered; a store failure (a lost race, an unreachable database) is the store's
//! [`HandlerError`], retried by the loop. A service writes what is its own: which message asks
//! what ([`Step::command`]), what deciding it needs ([`Step::load`]), the decision (a pure
//! function, [`Step::decide`]) and what it records ([`Step::changes`]). How the changes are
//! appended and published is written once, here.
//!
//! Admin commands, decided on one aggregate and answered with a published outcome, go through
//! [`EventStore::execute`] ([`MessageContext::execute_command`]).

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use super::{HandlerError, MessageContext};
use crate::db::Tx;
use crate::envelope::Envelope;
use crate::event_store::{Aggregate, EventStore, Loaded};
use crate::metrics as m;

/// A service's decisions on the saga messages it acts on.
pub trait Step: Send + Sync {
    /// What a message asks of the service, decoded from it.
    type Command: Send + Sync;
    /// The aggregates a command is decided on, as loaded.
    type Loaded: Send + Sync;
    /// What the domain decided.
    type Decision: Send;
    /// Why the domain refused to decide (the message is dead-lettered).
    type Refusal: Into<anyhow::Error>;

    /// The event store the service's aggregates live in.
    fn store(&self) -> &EventStore;

    /// What `message` asks; `None` for a message that is not the service's to act on.
    fn command(&self, message: &Envelope) -> Result<Option<Self::Command>, HandlerError>;

    /// Load what deciding `command` needs, in the message's transaction.
    fn load(
        &self,
        tx: &mut Tx,
        command: &Self::Command,
    ) -> impl Future<Output = Result<Self::Loaded, HandlerError>> + Send;

    /// Decide on the loaded state. Pure: no store, no clock the caller did not pass in.
    fn decide(&self, command: &Self::Command, loaded: &Self::Loaded) -> Result<Self::Decision, Self::Refusal>;

    /// What `decision` records: each stream's new events and what is published. The loaded
    /// aggregates are handed over, to be appended at the versions they were read at. This is
    /// where an effect outside the transaction happens, if the decision owes one (a
    /// notification delivered before it is recorded); it fails as a [`HandlerError`].
    fn changes(
        &self,
        command: Self::Command,
        loaded: Self::Loaded,
        decision: Self::Decision,
    ) -> impl Future<Output = Result<Changes<'_>, HandlerError>> + Send;
}

/// One stream's write, recorded by [`MessageContext::record`].
pub trait Write: Send {
    /// Append in `ctx`'s transaction (with `metadata`, the causing message's).
    fn write<'a, 'm>(
        self: Box<Self>,
        ctx: &'a mut MessageContext<'m>,
        store: &'a EventStore,
        metadata: &'a serde_json::Value,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>
    where
        'm: 'a,
        Self: 'a;
}

/// An aggregate's new events, appended at the version it was loaded at ([`EventStore::save`]).
struct Save<A: Aggregate> {
    stream: String,
    loaded: Loaded<A>,
    events: Vec<A::Event>,
}

impl<A: Aggregate + Sync + 'static> Write for Save<A>
where
    A::Event: 'static,
{
    fn write<'a, 'm>(
        mut self: Box<Self>,
        ctx: &'a mut MessageContext<'m>,
        store: &'a EventStore,
        metadata: &'a serde_json::Value,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>
    where
        'm: 'a,
        Self: 'a,
    {
        Box::pin(async move {
            store.save(ctx.tx, &self.stream, &mut self.loaded, &self.events, metadata).await?;
            Ok(())
        })
    }
}

/// An event a decision publishes (through the outbox, caused by the message).
#[derive(Debug)]
struct Publish {
    topic: String,
    event_type: &'static str,
    payload: serde_json::Value,
    /// The compensation it is, for the compensations counter.
    compensation: Option<&'static str>,
}

/// What a decision records: writes in the order they were added (one lock order everywhere:
/// the caller adds hot streams in a fixed order), then what it publishes.
#[derive(Default)]
pub struct Changes<'a> {
    writes: Vec<Box<dyn Write + 'a>>,
    publish: Vec<Publish>,
}

impl std::fmt::Debug for Changes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").field("writes", &self.writes.len()).field("publish", &self.publish).finish()
    }
}

impl<'a> Changes<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append `events` to `stream`, loaded as `loaded` (nothing when there are none).
    pub fn save<A: Aggregate + Sync + 'static>(&mut self, stream: String, loaded: Loaded<A>, events: Vec<A::Event>)
    where
        A::Event: 'static,
    {
        if !events.is_empty() {
            self.writes.push(Box::new(Save { stream, loaded, events }));
        }
    }

    /// A write of the service's own making (an aggregate with a projection to keep).
    pub fn write(&mut self, write: impl Write + 'a) {
        self.writes.push(Box::new(write));
    }

    /// Publish `payload` as `event_type` on `topic`.
    pub fn publish<T: Serialize>(
        &mut self,
        topic: &str,
        event_type: &'static str,
        payload: &T,
    ) -> Result<(), HandlerError> {
        self.publish_compensating(topic, event_type, payload, None)
    }

    /// Publish a compensation (`kind` labels it on the compensations counter).
    pub fn publish_compensating<T: Serialize>(
        &mut self,
        topic: &str,
        event_type: &'static str,
        payload: &T,
        compensation: Option<&'static str>,
    ) -> Result<(), HandlerError> {
        let payload = serde_json::to_value(payload).map_err(HandlerError::permanent)?;
        self.publish.push(Publish { topic: topic.to_owned(), event_type, payload, compensation });
        Ok(())
    }

    /// Nothing to record.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.publish.is_empty()
    }
}

impl MessageContext<'_> {
    /// Run `step` on this message: what it asks, load, decide, then record what was decided.
    pub async fn execute<S: Step>(&mut self, step: &S) -> Result<(), HandlerError> {
        let Some(command) = step.command(self.message)? else {
            return Ok(());
        };
        let loaded = step.load(self.tx, &command).await?;
        let decision = step.decide(&command, &loaded).map_err(HandlerError::permanent)?;
        let changes = step.changes(command, loaded, decision).await?;
        self.record(step.store(), changes).await
    }

    /// Record `changes` in this message's transaction: the writes in order, then the events
    /// published, each through the outbox.
    pub async fn record(&mut self, store: &EventStore, changes: Changes<'_>) -> Result<(), HandlerError> {
        if changes.is_empty() {
            return Ok(());
        }
        let metadata = self.event_metadata();
        for write in changes.writes {
            write.write(self, store, &metadata).await?;
        }
        for published in changes.publish {
            if let Some(kind) = published.compensation {
                m::compensation(self.source, kind);
            }
            self.publish(&published.topic, published.event_type, &published.payload).await?;
        }
        Ok(())
    }
}
