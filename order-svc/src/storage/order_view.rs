//! The `order_view` projection: one row per order, written in the same transaction as the
//! order's events. Listing and the deadline scan read it instead of folding every stream; it is
//! derived from the streams and can be rebuilt from them ([`super::Orders::rebuild_projection`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shared::db::{BoxFuture, Db, DeferredWrite, Tx, TxConn, value_rows};
use shared::on_tx;
use sqlx::types::Json;
use uuid::Uuid;

use super::paging::Cursor;
use super::repository::ListQuery;
use super::views::{OrderPage, OrderSummary};
use crate::domain::OrderState;

/// Write the order's row in `order_view`: at once, or, in a transaction that defers its writes,
/// with the other rows that transaction writes, in one statement at its flush ([`Pending`]).
pub async fn upsert(tx: &mut Tx, state: &OrderState) -> Result<(), sqlx::Error> {
    let row = Row::from(state);
    if let Some(pending) = tx.deferred_write::<Pending>() {
        pending.rows.insert(row.order_id, row);
        return Ok(());
    }
    write(tx, &[row]).await
}

/// The `order_view` rows a deferring transaction writes at its flush: the last state of each
/// order it changed (a run of messages often changes one order more than once).
#[derive(Debug, Default)]
pub struct Pending {
    rows: BTreeMap<Uuid, Row>,
}

impl DeferredWrite for Pending {
    fn write<'a>(self: Box<Self>, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let rows: Vec<Row> = self.rows.into_values().collect();
            write(tx, &rows).await
        })
    }
}

/// An `order_view` row, as written.
#[derive(Debug)]
struct Row {
    order_id: Uuid,
    customer_id: String,
    status: &'static str,
    terminal: bool,
    deadline_at: DateTime<Utc>,
    summary: OrderSummary,
    updated_at: DateTime<Utc>,
}

impl From<&OrderState> for Row {
    fn from(state: &OrderState) -> Self {
        Self {
            order_id: state.order_id(),
            customer_id: state.customer_id().to_owned(),
            status: state.status().as_str(),
            terminal: state.is_terminal(),
            deadline_at: state.deadline_at(),
            summary: OrderSummary::from(state),
            updated_at: state.updated_at(),
        }
    }
}

/// Rows per statement on SQLite: 7 parameters each, well under its limit.
const ROWS_PER_UPSERT: usize = 512;

/// What an upsert changes in a row that exists (its order, customer and deadline stay).
const ON_CONFLICT: &str = "ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, terminal = excluded.terminal,
     summary = excluded.summary, updated_at = excluded.updated_at";

/// Insert or update `rows` (one per order). On PostgreSQL in one statement whose columns are
/// arrays (one shape whatever the number of rows, prepared once per connection); on SQLite in
/// statements of up to [`ROWS_PER_UPSERT`] rows.
async fn write(tx: &mut Tx, rows: &[Row]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let sql = format!(
                "INSERT INTO order_view (order_id, customer_id, status, terminal, deadline_at, summary, updated_at)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[], $6::jsonb[],
                     $7::timestamptz[])
                 {ON_CONFLICT}"
            );
            sqlx::query(&sql)
                .bind(rows.iter().map(|r| r.order_id).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.customer_id.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.status).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.terminal).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.deadline_at).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| Json(&r.summary)).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
                .execute(&mut **conn)
                .await?;
        }
        TxConn::Sqlite(conn) => {
            for chunk in rows.chunks(ROWS_PER_UPSERT) {
                let sql = format!(
                    "INSERT INTO order_view (order_id, customer_id, status, terminal, deadline_at, summary, updated_at)
                     VALUES {} {ON_CONFLICT}",
                    value_rows(chunk.len(), 7)
                );
                let mut query = sqlx::query(&sql);
                for row in chunk {
                    query = query
                        .bind(row.order_id)
                        .bind(&row.customer_id)
                        .bind(row.status)
                        .bind(row.terminal)
                        .bind(row.deadline_at)
                        .bind(Json(&row.summary))
                        .bind(row.updated_at);
                }
                query.execute(&mut **conn).await?;
            }
        }
    }
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
