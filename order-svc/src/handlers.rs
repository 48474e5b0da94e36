//! Other services' events → the order aggregate → its decision (complete or cancel), in one
//! transaction with the projection and the outbox. Admin command outcomes go to their audit
//! streams instead ([`crate::storage::admin_commands::record_outcome`]).

use std::future::Future;
use std::pin::Pin;

use shared::consumer::{Changes, Handler, HandlerError, MessageContext, Step, Write};
use shared::contracts::event_type;
use shared::db::Tx;
use shared::envelope::Envelope;
use shared::event_store::{EventStore, StoreError, StreamRef};
use uuid::Uuid;

use crate::domain::{self, OrderEvent, OrderState};
use crate::storage::{AppendError, Orders, order_view};

/// The order-svc message handler: folds every upstream fact into its order.
#[derive(Debug, Clone)]
pub struct OrderHandler {
    pub orders: Orders,
}

impl From<AppendError> for HandlerError {
    fn from(err: AppendError) -> Self {
        match err {
            AppendError::Store(e) => HandlerError::from(e),
            AppendError::Other(e) => HandlerError::Permanent(e),
        }
    }
}

impl Handler for OrderHandler {
    /// A saga fact is keyed by its order (the handler checks that): that order's stream.
    fn streams(&self, message: &Envelope) -> Vec<StreamRef> {
        let is_outcome = matches!(
            message.event_type.as_str(),
            event_type::ADMIN_COMMAND_APPLIED | event_type::ADMIN_COMMAND_REJECTED
        );
        match message.subject.parse::<Uuid>() {
            Ok(order_id) if !is_outcome => {
                vec![StreamRef { stream: OrderState::stream_id(order_id), snapshots: false }]
            }
            _ => Vec::new(),
        }
    }

    async fn handle(&self, ctx: &mut MessageContext<'_>) -> Result<(), HandlerError> {
        if matches!(
            ctx.message.event_type.as_str(),
            event_type::ADMIN_COMMAND_APPLIED | event_type::ADMIN_COMMAND_REJECTED
        ) {
            return crate::storage::admin_commands::record_outcome(&self.orders.store, ctx).await;
        }
        ctx.execute(self).await
    }
}

impl Step for OrderHandler {
    /// An upstream fact about an order.
    type Command = OrderEvent;
    /// The order, `None` if it was never placed.
    type Loaded = Option<OrderState>;
    /// The events the fact adds to the order's stream (its own decisions among them).
    type Decision = Vec<OrderEvent>;
    type Refusal = anyhow::Error;

    fn store(&self) -> &EventStore {
        &self.orders.store
    }

    /// A fact keyed by the order its payload names.
    fn command(&self, message: &Envelope) -> Result<Option<OrderEvent>, HandlerError> {
        let fact =
            OrderEvent::from_payload(&message.event_type, message.data.clone()).map_err(HandlerError::permanent)?;
        if fact.is_decided_by_order_svc() {
            return Ok(None); // our own decisions are not on the topics we consume
        }
        let order_id = fact.order_id();
        if message.subject != order_id.to_string() {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "subject {} does not match the payload's order {order_id}",
                message.subject
            )));
        }
        Ok(Some(fact))
    }

    async fn load(&self, tx: &mut Tx, fact: &OrderEvent) -> Result<Option<OrderState>, HandlerError> {
        self.orders.load(tx, fact.order_id()).await.map_err(HandlerError::Transient)
    }

    fn decide(&self, fact: &OrderEvent, state: &Option<OrderState>) -> Result<Vec<OrderEvent>, anyhow::Error> {
        let current = state.as_ref().ok_or_else(|| anyhow::anyhow!("no order {}", fact.order_id()))?;
        Ok(domain::observe(current, fact.clone())?)
    }

    async fn changes(
        &self,
        fact: OrderEvent,
        state: Option<OrderState>,
        events: Vec<OrderEvent>,
    ) -> Result<Changes<'_>, HandlerError> {
        let mut changes = Changes::new();
        if !events.is_empty() {
            changes.write(OrderAppend { orders: &self.orders, order_id: fact.order_id(), state, events });
        }
        Ok(changes)
    }
}

/// The order's new events, appended with its projection and the decisions it publishes
/// ([`Orders::append`]).
struct OrderAppend<'o> {
    orders: &'o Orders,
    order_id: Uuid,
    state: Option<OrderState>,
    events: Vec<OrderEvent>,
}

impl Write for OrderAppend<'_> {
    fn write<'a, 'm>(
        self: Box<Self>,
        ctx: &'a mut MessageContext<'m>,
        _store: &'a EventStore,
        metadata: &'a serde_json::Value,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>
    where
        'm: 'a,
        Self: 'a,
    {
        Box::pin(async move {
            let OrderAppend { orders, order_id, state, events } = *self;
            orders.append(ctx.tx, order_id, state, &events, Some(ctx.message), metadata.clone()).await?;
            Ok(())
        })
    }
}

/// Cancel one overdue order, if it still is (another replica may have done it).
pub async fn expire_one(orders: &Orders, order_id: Uuid) -> anyhow::Result<bool> {
    let mut tx = orders.db.begin().await?;
    let Some(state) = orders.load(&mut tx, order_id).await? else {
        return Ok(false);
    };
    let events = domain::expire(&state, chrono::Utc::now());
    if events.is_empty() {
        // Terminal already (the projection lagged): bring the row up to date.
        order_view::upsert(&mut tx, &state).await?;
        tx.commit().await?;
        return Ok(false);
    }
    let metadata = serde_json::json!({"cause": "saga_deadline"});
    match orders.append(&mut tx, order_id, Some(state), &events, None, metadata).await {
        Ok(_) => {}
        Err(AppendError::Store(StoreError::Conflict { .. })) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    tx.commit().await?;
    Ok(true)
}
