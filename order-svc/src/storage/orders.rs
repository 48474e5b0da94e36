//! Orders in the event store: one type, [`Orders`], that loads an order by folding its stream,
//! appends to it together with the `order_view` row and the outbox, and places new orders.

use chrono::Utc;
use shared::contracts::event_type;
use shared::db::{Db, Tx};
use shared::envelope::Envelope;
use shared::event_store::{EventStore, NewEvent, StoreError};
use shared::on_tx;
use shared::outbox::{OutboxMessage, OutboxSignal, enqueue};
use shared::topics::{Topics, service};
use uuid::Uuid;

use super::group_commit::GroupCommit;
use super::idempotency::{self, IdempotencyRequest};
use super::order_view;
use super::repository::{ListQuery, OrderRepository, Placed, RepoError, internal};
use super::views::{OrderPage, OrderView};
use crate::domain::{self, OrderEvent, OrderState, PlaceOrder};

/// The orders in order-svc's database: their streams, their projection, and the outbox their
/// decisions leave through. The API's [`OrderRepository`], the message handler and the
/// deadline scan all go through it, so an order is loaded one way everywhere.
#[derive(Debug, Clone)]
pub struct Orders {
    pub db: Db,
    pub store: EventStore,
    pub topics: Topics,
    pub outbox_signal: OutboxSignal,
    /// How long a new order's saga may take before it is cancelled.
    pub saga_deadline: chrono::TimeDelta,
    /// The bound on open sagas new orders must fit under.
    pub admission: super::Admission,
    /// Concurrent placements share a transaction through it ([`Orders::with_group_commit`]);
    /// `None` places each order in a transaction of its own.
    pub group_commit: Option<GroupCommit>,
}

/// Why appending to an order's stream failed: a store failure (a version conflict among them)
/// the caller may retry, or anything else.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Other(anyhow::Error),
}

impl Orders {
    /// The order as folded from its stream, or `None` when the stream does not exist.
    pub async fn load(&self, tx: &mut Tx, order_id: Uuid) -> Result<Option<OrderState>, anyhow::Error> {
        let recorded = self.store.read_stream(tx, &OrderState::stream_id(order_id), 0).await?;
        let mut state: Option<OrderState> = None;
        for r in recorded {
            let event = OrderEvent::from_payload(&r.event_type, r.payload)
                .map_err(|e| anyhow::anyhow!("order {order_id} event {} undecodable: {e}", r.version))?;
            state = domain::evolve(state, &event, r.recorded_at);
        }
        Ok(state)
    }

    /// Append `events` to the order's stream (read at `state.version()`, or new), update the
    /// projection, and put the events order-svc decides (OrderPlaced, OrderCompleted,
    /// OrderCancelled) in the outbox. `cause` links published events to the message that led to
    /// them. Returns the new state.
    pub async fn append(
        &self,
        tx: &mut Tx,
        order_id: Uuid,
        state: Option<OrderState>,
        events: &[OrderEvent],
        cause: Option<&Envelope>,
        metadata: serde_json::Value,
    ) -> Result<Option<OrderState>, AppendError> {
        if events.is_empty() {
            return Ok(state);
        }
        let expected = state.as_ref().map_or(0, |s| s.version() as i64);
        let mut new_events = Vec::with_capacity(events.len());
        for e in events {
            let payload = e.to_payload().map_err(|e| AppendError::Other(e.into()))?;
            new_events.push(NewEvent::new(e.event_type(), 1, &payload)?.with_metadata(metadata.clone()));
        }
        self.store.append(tx, &OrderState::stream_id(order_id), expected, &new_events).await?;
        let now = Utc::now();
        let mut state = state;
        for e in events {
            state = domain::evolve(state, e, now);
            if !e.is_decided_by_order_svc() {
                continue;
            }
            let payload = e.to_payload().map_err(|e| AppendError::Other(e.into()))?;
            let envelope = match cause {
                Some(cause) => Envelope::caused_by(cause, e.event_type(), 1, service::ORDER, &payload),
                None => Envelope::new(e.event_type(), 1, service::ORDER, order_id.to_string(), &payload),
            }
            .map_err(|e| AppendError::Other(e.into()))?;
            enqueue(tx, &OutboxMessage::from_envelope(&self.topics.orders, &envelope))
                .await
                .map_err(StoreError::from)?;
            if let Some(ended) = state.as_ref() {
                record_saga_end(e, ended);
            }
        }
        if let Some(s) = &state {
            order_view::upsert(tx, s).await.map_err(StoreError::from)?;
        }
        Ok(state)
    }

    /// Rebuild `order_view` from the event store: fold every order stream again, in one
    /// transaction. Returns how many rows were written.
    pub async fn rebuild_projection(&self) -> anyhow::Result<usize> {
        let mut tx = self.db.begin().await?;
        order_view::clear(&mut tx).await?;
        let ids: Vec<String> =
            on_tx!(&mut tx, |conn| sqlx::query_scalar("SELECT DISTINCT stream_id FROM events").fetch_all(conn).await)?;
        let mut rebuilt = 0;
        for id in ids {
            let Ok(order_id) = Uuid::parse_str(&id) else { continue };
            if let Some(state) = self.load(&mut tx, order_id).await? {
                order_view::upsert(&mut tx, &state).await?;
                rebuilt += 1;
            }
        }
        tx.commit().await?;
        Ok(rebuilt)
    }

    /// These orders, with `POST /orders` placing through group commit (see
    /// [`super::group_commit`]). Needs a Tokio runtime: it starts the writers.
    pub fn with_group_commit(self) -> Self {
        let writers = Self { group_commit: None, ..self.clone() };
        Self { group_commit: Some(GroupCommit::start(writers)), ..self }
    }

    /// Place one order inside `tx` (replaying the order of an `Idempotency-Key` used before).
    pub(super) async fn place_in_tx(
        &self,
        tx: &mut Tx,
        cmd: PlaceOrder,
        idem: Option<&IdempotencyRequest>,
    ) -> Result<Placed, RepoError> {
        let scoped_key = idem.map(|idem| idempotency::scoped_key(&cmd.customer_id, &idem.key));
        if let (Some(idem), Some(scoped_key)) = (idem, &scoped_key)
            && let Some((fingerprint, order_id)) =
                idempotency::claim(tx, scoped_key, &idem.body_fingerprint).await.map_err(internal)?
        {
            if fingerprint != idem.body_fingerprint {
                return Err(RepoError::IdempotencyConflict);
            }
            tracing::Span::current().record("order.id", order_id.to_string());
            let state = self.load(tx, order_id).await.map_err(RepoError::Internal)?;
            let state = state.ok_or_else(|| internal(anyhow::anyhow!("idempotency key points at a missing order")))?;
            return Ok(Placed { view: OrderView::from(&state), replayed: true });
        }
        let order_id = Uuid::now_v7();
        // The spans below (event store, outbox) inherit it from here.
        tracing::Span::current().record("order.id", order_id.to_string());
        let events = domain::place(cmd, order_id, Utc::now(), self.saga_deadline);
        let state = self
            .append(tx, order_id, None, &events, None, serde_json::json!({}))
            .await
            .map_err(|e| internal(anyhow::Error::new(e)))?
            .ok_or_else(|| internal(anyhow::anyhow!("placing produced no order")))?;
        if let Some(scoped_key) = &scoped_key {
            idempotency::bind_order(tx, scoped_key, order_id).await.map_err(internal)?;
        }
        Ok(Placed { view: OrderView::from(&state), replayed: false })
    }
}

/// Count an ended saga (OrderCompleted or OrderCancelled) with its duration.
fn record_saga_end(event: &OrderEvent, state: &OrderState) {
    let duration = (state.updated_at() - state.placed_at()).to_std().unwrap_or_default();
    match event.event_type() {
        event_type::ORDER_COMPLETED => crate::metrics::saga_ended("completed", "none", duration),
        event_type::ORDER_CANCELLED => {
            let reason = state.reason().map_or("unknown", |r| r.as_str());
            crate::metrics::saga_ended("cancelled", reason, duration);
        }
        _ => {}
    }
}

impl OrderRepository for Orders {
    #[tracing::instrument(skip_all, fields(customer.id = %cmd.customer_id.as_str(), order.id = tracing::field::Empty))]
    async fn place(&self, cmd: PlaceOrder, idempotency: Option<IdempotencyRequest>) -> Result<Placed, RepoError> {
        if !self.admission.try_admit() {
            crate::metrics::order_refused_at_capacity();
            return Err(RepoError::AtCapacity);
        }
        let placed = match &self.group_commit {
            Some(group) => group.place(cmd, idempotency).await,
            None => {
                async {
                    let mut tx = self.db.begin().await.map_err(internal)?;
                    tx.hand_over_to(&self.outbox_signal);
                    let placed = self.place_in_tx(&mut tx, cmd, idempotency.as_ref()).await?;
                    tx.commit().await.map_err(internal)?;
                    Ok(placed)
                }
                .await
            }
        };
        match &placed {
            Ok(placed) if !placed.replayed => {
                self.admission.placed();
                crate::metrics::order_placed();
            }
            _ => self.admission.give_back(),
        }
        placed
    }

    async fn get(&self, id: Uuid) -> Result<Option<OrderView>, RepoError> {
        let mut tx = self.db.begin_read().await.map_err(internal)?;
        let state = self.load(&mut tx, id).await.map_err(RepoError::Internal)?;
        tx.rollback().await.ok();
        Ok(state.as_ref().map(OrderView::from))
    }

    async fn list(&self, q: ListQuery) -> Result<OrderPage, RepoError> {
        order_view::page(&self.db, q).await.map_err(internal)
    }
}
