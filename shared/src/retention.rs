//! Retention: tables that would otherwise grow forever are pruned of rows older than a
//! configured age, in small batches, off the hot path.
//!
//! - The inbox (every service): a message id is needed only while the message can still be
//!   delivered again, i.e. while it is on its topic. Kafka keeps a topic's records for 7 days by
//!   default, so the inbox keeps ids for 14 ([`RetentionOptions::inbox`], `INBOX_RETENTION_DAYS`).
//!   A message redelivered within that time is still skipped; one replayed from further back (an
//!   operator's offset reset past the retention) would be applied again.
//! - Idempotency keys (order-svc): a client retrying a `POST /orders` gets the same order back
//!   while the key is kept (`IDEMPOTENCY_KEY_RETENTION_DAYS`, 14 by default).
//!
//! Each replica runs a [`Pruner`]: every [`RetentionOptions::interval`] (jittered, so replicas
//! don't prune in step) it deletes at most [`RetentionOptions::batch`] rows per statement, one
//! statement after another until nothing is left to prune, pausing between them so that
//! writers are never held up for long. Replicas pruning together delete disjoint or already
//! deleted rows: harmless. `saga_rows_pruned_total{service, table}` counts what went.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::metrics as m;

/// A table pruned by age: its name, the columns of its primary key, and the column that says
/// when a row was written. Static names only: they become SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    pub key: &'static str,
    pub written_at: &'static str,
}

/// The backbone's inbox (every service).
pub const INBOX: Table = Table { name: "inbox", key: "consumer, message_id", written_at: "processed_at" };

#[derive(Debug, Clone)]
pub struct RetentionOptions {
    /// How long an inbox record is kept (`INBOX_RETENTION_DAYS`, default 14: twice Kafka's
    /// default topic retention).
    pub inbox: Duration,
    /// How often the tables are looked at.
    pub interval: Duration,
    /// Most rows one statement deletes.
    pub batch: i64,
    /// Pause between two statements of one pass.
    pub pause: Duration,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        Self {
            inbox: Duration::from_secs(14 * 24 * 3600),
            interval: Duration::from_secs(60),
            batch: 1000,
            pause: Duration::from_millis(20),
        }
    }
}

/// Delete at most `batch` rows of `table` written before `cutoff`; returns how many went.
pub async fn prune_batch(db: &Db, table: Table, cutoff: DateTime<Utc>, batch: i64) -> Result<u64, sqlx::Error> {
    let Table { name, key, written_at } = table;
    let sql =
        format!("DELETE FROM {name} WHERE ({key}) IN (SELECT {key} FROM {name} WHERE {written_at} < $1 LIMIT $2)");
    crate::on_db!(db, |pool| sqlx::query(&sql).bind(cutoff).bind(batch).execute(pool).await.map(|r| r.rows_affected()))
}

/// Delete every row of `table` written before `cutoff`, `batch` rows at a time with `pause`
/// between statements; returns how many went.
pub async fn prune(
    db: &Db,
    table: Table,
    cutoff: DateTime<Utc>,
    batch: i64,
    pause: Duration,
) -> Result<u64, sqlx::Error> {
    let mut pruned = 0;
    loop {
        let deleted = prune_batch(db, table, cutoff, batch).await?;
        pruned += deleted;
        if deleted < batch as u64 {
            return Ok(pruned);
        }
        tokio::time::sleep(pause).await;
    }
}

/// One service's pruning: its tables, each with how long its rows are kept.
#[derive(Debug, Clone)]
pub struct Pruner {
    pub service: &'static str,
    pub db: Db,
    pub tables: Vec<(Table, Duration)>,
    pub options: RetentionOptions,
}

impl Pruner {
    /// Prune every table once; returns the rows pruned per table.
    pub async fn pass(&self) -> Vec<(Table, Result<u64, sqlx::Error>)> {
        let mut out = Vec::with_capacity(self.tables.len());
        for (table, keep) in &self.tables {
            let cutoff = Utc::now() - *keep;
            let pruned = prune(&self.db, *table, cutoff, self.options.batch, self.options.pause).await;
            if let Ok(n) = &pruned {
                m::rows_pruned(self.service, table.name, *n);
            }
            out.push((*table, pruned));
        }
        out
    }

    /// Prune now and then until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            let jitter = rand::rng().random_range(0.5..1.5);
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.options.interval.mul_f64(jitter)) => {}
            }
            for (table, pruned) in self.pass().await {
                match pruned {
                    Ok(0) => {}
                    Ok(rows) => tracing::info!(service = self.service, table = table.name, rows, "pruned old rows"),
                    Err(err) => {
                        tracing::warn!(service = self.service, table = table.name, error = %err, "pruning failed")
                    }
                }
            }
        }
    }
}
