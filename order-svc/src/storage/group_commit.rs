//! Group commit for `POST /orders`: concurrent placements share one transaction. A request
//! queues its order and waits; a writer takes everything queued (up to [`MAX_GROUP`]), places
//! each order in one transaction, commits once, and then answers every request. Under load a
//! commit, its round trips and its WAL flush are paid once per group instead of once per order;
//! alone, a request is a group of one and waits for nothing.
//!
//! What a request sees does not change:
//! - Idempotency: a key's first request claims it inside the group's transaction, so a second
//!   request with the same key in the same group sees the claim and replays the first's order;
//!   in another writer's group it waits for that commit, as with one transaction per request.
//! - Errors: a refused `Idempotency-Key` (reused with another body) is that request's answer
//!   and writes nothing, so the others go on. Any other failure rolls the group back, and its
//!   orders are placed again one transaction each, so one failing order costs the others only
//!   a second try and its own error is the one its request gets.
//! - A request that went away before its group began (its client left, or it timed out) is not
//!   placed. Once its group began it may be: as with any request that times out, retry it with
//!   its `Idempotency-Key`.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument as _;

use super::idempotency::IdempotencyRequest;
use super::orders::Orders;
use super::repository::{Placed, RepoError, internal};
use crate::domain::PlaceOrder;

/// Most orders in one transaction.
pub const MAX_GROUP: usize = 64;
/// Writers taking groups at once: while one commits, the next group gathers and starts.
pub const WRITERS: usize = 2;
/// Orders waiting for a writer, at most (the API's in-flight limits stay well under it).
const QUEUE: usize = 4096;

/// One order waiting for its group.
struct Job {
    cmd: PlaceOrder,
    idempotency: Option<IdempotencyRequest>,
    /// The request's span: the order is placed under it.
    span: tracing::Span,
    reply: oneshot::Sender<Result<Placed, RepoError>>,
}

/// The queue the writers take groups from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("cmd", &self.cmd).finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Start the writers on `orders` (which must not group-commit itself). They stop when
    /// every clone of the returned queue is dropped.
    pub fn start(orders: Orders) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(write_groups(orders.clone(), receiver.clone()));
        }
        Self { queue }
    }

    /// Place one order in the next group; answers once that group committed.
    pub async fn place(&self, cmd: PlaceOrder, idempotency: Option<IdempotencyRequest>) -> Result<Placed, RepoError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { cmd, idempotency, span: tracing::Span::current(), reply };
        self.queue.send(job).await.map_err(|_| internal(anyhow::anyhow!("the order writers have stopped")))?;
        answer.await.map_err(|_| internal(anyhow::anyhow!("the order writer dropped the order")))?
    }
}

/// A writer: take what is queued, place it as one group, answer; until the queue closes.
async fn write_groups(orders: Orders, receiver: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    loop {
        let taken = receiver.lock().await.recv_many(&mut jobs, MAX_GROUP).await;
        if taken == 0 {
            return;
        }
        // Requests that went away before their group began are not placed.
        jobs.retain(|job| !job.reply.is_closed());
        place_group(&orders, std::mem::take(&mut jobs)).await;
    }
}

/// Place `jobs` in one transaction and answer each; if the transaction fails, place each alone.
async fn place_group(orders: &Orders, jobs: Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    match place_together(orders, &jobs).await {
        Ok(results) => {
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(_) if jobs.len() > 1 => {
            tracing::debug!(orders = jobs.len(), "group commit failed, placing its orders one at a time");
            for job in jobs {
                let result = place_together(orders, std::slice::from_ref(&job)).await;
                let _ = job.reply.send(result.and_then(|mut results| results.pop().unwrap_or_else(|| Err(dropped()))));
            }
        }
        Err(err) => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(err));
            }
        }
    }
}

fn dropped() -> RepoError {
    internal(anyhow::anyhow!("an order of the group has no result"))
}

/// One transaction for every job: each job's result (a refused key is a result), or the
/// error that failed the transaction (nothing committed).
async fn place_together(orders: &Orders, jobs: &[Job]) -> Result<Vec<Result<Placed, RepoError>>, RepoError> {
    let mut tx = orders.db.begin().await.map_err(internal)?;
    // The group's events and outbox rows are written at the commit, in one statement on PostgreSQL (a
    // replayed key finds an order placed earlier in the group among them).
    tx.defer_writes();
    tx.hand_over_to(&orders.outbox_signal);
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        let result =
            orders.place_in_tx(&mut tx, job.cmd.clone(), job.idempotency.as_ref()).instrument(job.span.clone()).await;
        if let Err(RepoError::Internal(err)) = result {
            tx.rollback().await.ok();
            return Err(RepoError::Internal(err));
        }
        results.push(result);
    }
    tx.commit().await.map_err(internal)?;
    Ok(results)
}
