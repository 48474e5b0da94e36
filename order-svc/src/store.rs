//! Orders in the event store, and the `order_view` projection kept in the same transaction.
//!
//! An order is its event stream (stream id = order id). Reads of one order fold the stream;
//! listing and the deadline scan use `order_view`, which is derived from the stream and can be
//! rebuilt from it ([`rebuild_projection`]).

use chrono::{DateTime, Utc};
use shared::contracts::event_type;
use shared::db::{Db, Tx};
use shared::envelope::Envelope;
use shared::event_store::{EventStore, NewEvent, StoreError};
use shared::on_tx;
use shared::outbox::{OutboxMessage, OutboxSignal, enqueue};
use shared::topics::{Topics, service};
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::{self, OrderEvent, OrderState, PlaceOrder};
use crate::http::{
    Cursor, IdempotencyRequest, ListQuery, OrderPage, OrderRepository, OrderSummary, OrderView, Placed, RepoError,
};

/// The order repository over one service database.
#[derive(Debug, Clone)]
pub struct Orders {
    pub db: Db,
    pub streams: OrderStreams,
    pub outbox_signal: OutboxSignal,
    pub saga_deadline: chrono::TimeDelta,
}

/// Load and fold an order's stream.
pub async fn load(store: &EventStore, tx: &mut Tx, order_id: Uuid) -> Result<Option<OrderState>, anyhow::Error> {
    let recorded = store.read_stream(tx, &order_id.to_string(), 0).await?;
    let mut state: Option<OrderState> = None;
    for r in recorded {
        let event = OrderEvent::from_payload(&r.event_type, r.payload)
            .map_err(|e| anyhow::anyhow!("order {order_id} event {} undecodable: {e}", r.version))?;
        state = domain::evolve(state, &event, r.recorded_at);
    }
    Ok(state)
}

/// Where order streams are stored and their decisions published.
#[derive(Debug, Clone)]
pub struct OrderStreams {
    pub store: EventStore,
    pub topics: Topics,
}

impl OrderStreams {
    pub async fn load(&self, tx: &mut Tx, order_id: Uuid) -> Result<Option<OrderState>, anyhow::Error> {
        load(&self.store, tx, order_id).await
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
        self.store.append(tx, &order_id.to_string(), expected, &new_events).await?;
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
                record_outcome(e, ended);
            }
        }
        if let Some(s) = &state {
            upsert_view(tx, s).await.map_err(StoreError::from)?;
        }
        Ok(state)
    }
}

fn record_outcome(event: &OrderEvent, state: &OrderState) {
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

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Other(anyhow::Error),
}

/// Write the order's row in `order_view`.
pub async fn upsert_view(tx: &mut Tx, state: &OrderState) -> Result<(), sqlx::Error> {
    let summary = OrderSummary::from(state);
    on_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO order_view (order_id, customer_id, status, terminal, deadline_at, summary, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, terminal = excluded.terminal,
                 summary = excluded.summary, updated_at = excluded.updated_at",
        )
        .bind(state.order_id())
        .bind(state.customer_id())
        .bind(state.status().as_str())
        .bind(state.is_terminal())
        .bind(state.deadline_at())
        .bind(Json(&summary))
        .bind(state.updated_at())
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Rebuild `order_view` from the event store: fold every order stream again.
pub async fn rebuild_projection(db: &Db, store: &EventStore) -> anyhow::Result<usize> {
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, |conn| sqlx::query("DELETE FROM order_view").execute(conn).await.map(|r| r.rows_affected()))?;
    let ids: Vec<String> =
        on_tx!(&mut tx, |conn| sqlx::query_scalar("SELECT DISTINCT stream_id FROM events").fetch_all(conn).await)?;
    let mut rebuilt = 0;
    for id in ids {
        let Ok(order_id) = Uuid::parse_str(&id) else { continue };
        if let Some(state) = load(store, &mut tx, order_id).await? {
            upsert_view(&mut tx, &state).await?;
            rebuilt += 1;
        }
    }
    tx.commit().await?;
    Ok(rebuilt)
}

/// Orders past their deadline that are not terminal yet.
pub async fn overdue(db: &Db, now: DateTime<Utc>, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    shared::on_db!(db, |pool| {
        sqlx::query_scalar(
            "SELECT order_id FROM order_view WHERE terminal = $1 AND deadline_at < $2 ORDER BY deadline_at LIMIT $3",
        )
        .bind(false)
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}

/// Open (non-terminal) orders: how many, how many are past their deadline, and the earliest
/// deadline among them.
pub async fn open_orders(db: &Db, now: DateTime<Utc>) -> Result<(i64, i64, Option<DateTime<Utc>>), sqlx::Error> {
    shared::on_db!(db, |pool| {
        let (open, earliest): (i64, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT COUNT(*), MIN(deadline_at) FROM order_view WHERE terminal = $1")
                .bind(false)
                .fetch_one(pool)
                .await?;
        let overdue: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM order_view WHERE terminal = $1 AND deadline_at < $2")
                .bind(false)
                .bind(now)
                .fetch_one(pool)
                .await?;
        Ok((open, overdue, earliest))
    })
}

/// The `Idempotency-Key` records, pruned by age (`IDEMPOTENCY_KEY_RETENTION_DAYS`).
pub const IDEMPOTENCY_KEYS: shared::retention::Table =
    shared::retention::Table { name: "idempotency_keys", key: "idempotency_key", written_at: "created_at" };

impl Orders {
    async fn place_in_tx(
        &self,
        tx: &mut Tx,
        cmd: PlaceOrder,
        idem: Option<&IdempotencyRequest>,
    ) -> Result<Placed, RepoError> {
        // Keys are scoped per customer: one customer's key never collides with (or reveals)
        // another's. A newline can be in neither a customer id nor a header value.
        let scoped_key = idem.map(|idem| format!("{}\n{}", cmd.customer_id.as_str(), idem.key.as_str()));
        if let (Some(idem), Some(scoped_key)) = (idem, &scoped_key) {
            let inserted = on_tx!(&mut *tx, |conn| {
                sqlx::query(
                    "INSERT INTO idempotency_keys (idempotency_key, fingerprint, order_id, created_at)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
                )
                .bind(scoped_key)
                .bind(&idem.body_fingerprint)
                .bind(Uuid::nil())
                .bind(Utc::now())
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
            })
            .map_err(internal)?;
            if inserted == 0 {
                let (fingerprint, order_id): (String, Uuid) = on_tx!(&mut *tx, |conn| {
                    sqlx::query_as("SELECT fingerprint, order_id FROM idempotency_keys WHERE idempotency_key = $1")
                        .bind(scoped_key)
                        .fetch_one(conn)
                        .await
                })
                .map_err(internal)?;
                if fingerprint != idem.body_fingerprint {
                    return Err(RepoError::IdempotencyConflict);
                }
                tracing::Span::current().record("order.id", order_id.to_string());
                let state = self.streams.load(tx, order_id).await.map_err(RepoError::Internal)?;
                let state =
                    state.ok_or_else(|| internal(anyhow::anyhow!("idempotency key points at a missing order")))?;
                return Ok(Placed { view: OrderView::from(&state), replayed: true });
            }
        }
        let order_id = Uuid::now_v7();
        // The spans below (event store, outbox) inherit it from here.
        tracing::Span::current().record("order.id", order_id.to_string());
        let events = domain::place(cmd, order_id, Utc::now(), self.saga_deadline);
        let state = self
            .streams
            .append(tx, order_id, None, &events, None, serde_json::json!({}))
            .await
            .map_err(|e| internal(anyhow::Error::new(e)))?
            .ok_or_else(|| internal(anyhow::anyhow!("placing produced no order")))?;
        if let Some(scoped_key) = &scoped_key {
            on_tx!(&mut *tx, |conn| {
                sqlx::query("UPDATE idempotency_keys SET order_id = $1 WHERE idempotency_key = $2")
                    .bind(order_id)
                    .bind(scoped_key)
                    .execute(conn)
                    .await
                    .map(|r| r.rows_affected())
            })
            .map_err(internal)?;
        }
        Ok(Placed { view: OrderView::from(&state), replayed: false })
    }
}

fn internal(err: impl Into<anyhow::Error>) -> RepoError {
    RepoError::Internal(err.into())
}

impl OrderRepository for Orders {
    #[tracing::instrument(skip_all, fields(customer.id = %cmd.customer_id.as_str(), order.id = tracing::field::Empty))]
    async fn place(&self, cmd: PlaceOrder, idempotency: Option<IdempotencyRequest>) -> Result<Placed, RepoError> {
        let mut tx = self.db.begin().await.map_err(internal)?;
        let placed = self.place_in_tx(&mut tx, cmd, idempotency.as_ref()).await?;
        tx.commit().await.map_err(internal)?;
        if !placed.replayed {
            self.outbox_signal.notify();
            crate::metrics::order_placed();
        }
        Ok(placed)
    }

    async fn get(&self, id: Uuid) -> Result<Option<OrderView>, RepoError> {
        let mut tx = self.db.begin_read().await.map_err(internal)?;
        let state = self.streams.load(&mut tx, id).await.map_err(RepoError::Internal)?;
        tx.rollback().await.ok();
        Ok(state.as_ref().map(OrderView::from))
    }

    async fn list(&self, q: ListQuery) -> Result<OrderPage, RepoError> {
        let limit = i64::from(q.limit.get());
        let mut sql = String::from("SELECT summary FROM order_view WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if q.customer_id.is_some() {
            sql.push_str(&format!(" AND customer_id = {}", next()));
        }
        if q.status.is_some() {
            sql.push_str(&format!(" AND status = {}", next()));
        }
        if q.cursor.is_some() {
            sql.push_str(&format!(" AND order_id < {}", next()));
        }
        sql.push_str(&format!(" ORDER BY order_id DESC LIMIT {}", next()));
        let rows: Vec<Json<OrderSummary>> = shared::on_db!(&self.db, |pool| {
            let mut query = sqlx::query_scalar(&sql);
            if let Some(c) = &q.customer_id {
                query = query.bind(c.as_str().to_owned());
            }
            if let Some(s) = q.status {
                query = query.bind(s.as_str());
            }
            if let Some(cursor) = q.cursor {
                query = query.bind(cursor.last_id());
            }
            query.bind(limit + 1).fetch_all(pool).await
        })
        .map_err(internal)?;
        let mut items: Vec<OrderSummary> = rows.into_iter().map(|Json(s)| s).collect();
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|s| Cursor::after(s.id))
        } else {
            None
        };
        Ok(OrderPage { items, next_cursor })
    }
}
