//! The inbox: one row per message a service processed (or dead-lettered), written in the same
//! transaction as the message's effects, so a redelivery is recognised and skipped.

use std::collections::HashSet;

use uuid::Uuid;

use super::HandlerError;
use crate::db::{Tx, TxConn};
use crate::on_tx;

/// Insert the message id into the inbox; false when it was already there.
pub(super) async fn record(tx: &mut Tx, consumer: &str, message_id: Uuid) -> Result<bool, HandlerError> {
    let result = on_tx!(tx, |conn| {
        sqlx::query("INSERT INTO inbox (consumer, message_id, processed_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(consumer)
            .bind(message_id)
            .bind(chrono::Utc::now())
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(result == 1)
}

/// Insert the message ids into the inbox in one statement; returns the ids it inserted (the
/// others were already there). On PostgreSQL the ids are one array, so the statement has one
/// shape whatever their number (prepared once per connection).
pub(super) async fn record_all(tx: &mut Tx, consumer: &str, ids: &[Uuid]) -> Result<HashSet<Uuid>, HandlerError> {
    let now = chrono::Utc::now();
    let inserted: Vec<Uuid> = match &mut tx.conn {
        TxConn::Postgres(conn) => {
            sqlx::query_scalar(
                "INSERT INTO inbox (consumer, message_id, processed_at)
                 SELECT $1, message_id, $3 FROM UNNEST($2::uuid[]) AS m(message_id)
                 ON CONFLICT DO NOTHING RETURNING message_id",
            )
            .bind(consumer)
            .bind(ids)
            .bind(now)
            .fetch_all(&mut **conn)
            .await?
        }
        TxConn::Sqlite(conn) => {
            let sql = format!(
                "INSERT INTO inbox (consumer, message_id, processed_at) VALUES {} ON CONFLICT DO NOTHING RETURNING message_id",
                crate::db::value_rows(ids.len(), 3)
            );
            let mut query = sqlx::query_scalar(&sql);
            for id in ids {
                query = query.bind(consumer).bind(*id).bind(now);
            }
            query.fetch_all(&mut **conn).await?
        }
    };
    Ok(inserted.into_iter().collect())
}
