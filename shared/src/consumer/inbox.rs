//! The inbox: one row per message a service processed (or dead-lettered), written in the same
//! transaction as the message's effects, so a redelivery is recognised and skipped.

use std::collections::HashSet;

use uuid::Uuid;

use super::HandlerError;
use crate::db::Tx;
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
/// others were already there).
pub(super) async fn record_all(tx: &mut Tx, consumer: &str, ids: &[Uuid]) -> Result<HashSet<Uuid>, HandlerError> {
    let sql = format!(
        "INSERT INTO inbox (consumer, message_id, processed_at) VALUES {} ON CONFLICT DO NOTHING RETURNING message_id",
        crate::db::value_rows(ids.len(), 3)
    );
    let now = chrono::Utc::now();
    let inserted: Vec<Uuid> = on_tx!(tx, |conn| {
        let mut query = sqlx::query_scalar(&sql);
        for id in ids {
            query = query.bind(consumer).bind(*id).bind(now);
        }
        query.fetch_all(conn).await
    })?;
    Ok(inserted.into_iter().collect())
}
