//! Other services' events → the order aggregate → its decision (complete or cancel), in one
//! transaction with the projection and the outbox. Admin command outcomes go to their audit
//! streams instead ([`crate::storage::admin_commands::record_outcome`]).

use shared::consumer::{Handler, HandlerError, MessageContext};
use shared::contracts::event_type;
use shared::envelope::Envelope;
use shared::event_store::{StoreError, StreamRef};
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
        let message = ctx.message;
        if matches!(message.event_type.as_str(), event_type::ADMIN_COMMAND_APPLIED | event_type::ADMIN_COMMAND_REJECTED)
        {
            return crate::storage::admin_commands::record_outcome(&self.orders.store, ctx).await;
        }
        let fact =
            OrderEvent::from_payload(&message.event_type, message.data.clone()).map_err(HandlerError::permanent)?;
        if fact.is_decided_by_order_svc() {
            return Ok(()); // our own decisions are not on the topics we consume
        }
        let order_id = fact.order_id();
        if message.subject != order_id.to_string() {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "subject {} does not match the payload's order {order_id}",
                message.subject
            )));
        }
        let state = self.orders.load(ctx.tx, order_id).await.map_err(HandlerError::Transient)?;
        let Some(current) = state.as_ref() else {
            return Err(HandlerError::permanent(anyhow::anyhow!("no order {order_id}")));
        };
        let events = domain::observe(current, fact).map_err(HandlerError::permanent)?;
        let metadata = ctx.event_metadata();
        self.orders.append(ctx.tx, order_id, state, &events, Some(message), metadata).await?;
        Ok(())
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
