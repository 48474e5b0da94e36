//! The `order_view` projection: one row per order, written in the same transaction as the
//! order's events. Listing and the deadline scan read it instead of folding every stream; it is
//! derived from the streams and can be rebuilt from them ([`super::Orders::rebuild_projection`]).

use chrono::{DateTime, Utc};
use shared::db::{Db, Tx};
use shared::on_tx;
use sqlx::types::Json;
use uuid::Uuid;

use super::paging::Cursor;
use super::repository::ListQuery;
use super::views::{OrderPage, OrderSummary};
use crate::domain::OrderState;

/// Write the order's row in `order_view`.
pub async fn upsert(tx: &mut Tx, state: &OrderState) -> Result<(), sqlx::Error> {
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

/// Delete every row, before a rebuild writes them again.
pub(super) async fn clear(tx: &mut Tx) -> Result<(), sqlx::Error> {
    on_tx!(tx, |conn| sqlx::query("DELETE FROM order_view").execute(conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// One page of order summaries, as [`super::OrderRepository::list`] promises it.
pub(super) async fn page(db: &Db, q: ListQuery) -> Result<OrderPage, sqlx::Error> {
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
    let rows: Vec<Json<OrderSummary>> = shared::on_db!(db, |pool| {
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
    })?;
    let mut items: Vec<OrderSummary> = rows.into_iter().map(|Json(s)| s).collect();
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|s| Cursor::after(s.id))
    } else {
        None
    };
    Ok(OrderPage { items, next_cursor })
}

/// Orders past their deadline that are not terminal yet.
///
/// Here and below, `NOT terminal` is written out, not bound, so that the partial index on open
/// orders can serve the query, and each statement is planned anew on every call (unnamed,
/// `persistent(false)`): a plan cached while the table was small scans the whole table, every
/// order ever placed, once it has grown (10 ms a call under load). These run once a second.
pub async fn overdue(db: &Db, now: DateTime<Utc>, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    shared::on_db!(db, |pool| {
        sqlx::query_scalar(
            "SELECT order_id FROM order_view WHERE NOT terminal AND deadline_at < $1 ORDER BY deadline_at LIMIT $2",
        )
        .persistent(false)
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
            sqlx::query_as("SELECT COUNT(*), MIN(deadline_at) FROM order_view WHERE NOT terminal")
                .persistent(false)
                .fetch_one(pool)
                .await?;
        let overdue: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM order_view WHERE NOT terminal AND deadline_at < $1")
                .persistent(false)
                .bind(now)
                .fetch_one(pool)
                .await?;
        Ok((open, overdue, earliest))
    })
}
