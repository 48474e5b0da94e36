//! Why a handler failed, and how the loop treats each failure: retried (transient), retried
//! without spending attempts (a lost race, an unreachable dependency), or dead-lettered
//! (permanent).

use crate::db::is_unavailable;
use crate::envelope::DecodeError;
use crate::event_store::StoreError;

/// Why a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying (a lost optimistic-concurrency race, a sink that is down).
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help (a payload that breaks the contract): dead-letter it.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
    /// A dependency the handler needs is down (a webhook behind an open circuit breaker): not
    /// the message's fault. The loop pauses its partitions and retries without spending the
    /// message's attempts, as for an unreachable database.
    #[error("{0:#}")]
    Unavailable(anyhow::Error),
}

impl HandlerError {
    pub fn permanent(err: impl Into<anyhow::Error>) -> Self {
        HandlerError::Permanent(err.into())
    }

    pub fn transient(err: impl Into<anyhow::Error>) -> Self {
        HandlerError::Transient(err.into())
    }

    pub fn unavailable(err: impl Into<anyhow::Error>) -> Self {
        HandlerError::Unavailable(err.into())
    }

    /// Did the handler lose an optimistic-concurrency race or a deadlock (retry, don't count an
    /// attempt)? Someone else's transaction made progress on the stream, so retrying cannot
    /// livelock the system, and dead-lettering a message for contention would drop a valid
    /// saga step.
    pub(super) fn is_contention(&self) -> bool {
        let HandlerError::Transient(err) = self else {
            return false;
        };
        err.chain().any(|cause| {
            matches!(cause.downcast_ref::<StoreError>(), Some(StoreError::Conflict { .. }))
                || cause.downcast_ref::<sqlx::Error>().is_some_and(crate::db::is_lost_race)
                || matches!(cause.downcast_ref::<StoreError>(), Some(StoreError::Db(db)) if crate::db::is_lost_race(db))
        })
    }

    /// Is the database or another dependency unreachable (pause, don't count an attempt)?
    pub(super) fn is_unavailable(&self) -> bool {
        let err = match self {
            HandlerError::Unavailable(_) => return true,
            HandlerError::Transient(err) => err,
            HandlerError::Permanent(_) => return false,
        };
        err.chain().any(|cause| {
            cause.downcast_ref::<sqlx::Error>().is_some_and(is_unavailable)
                || cause
                    .downcast_ref::<StoreError>()
                    .is_some_and(|e| matches!(e, StoreError::Db(db) if is_unavailable(db)))
        })
    }
}

impl From<StoreError> for HandlerError {
    fn from(err: StoreError) -> Self {
        if err.is_transient() { HandlerError::Transient(err.into()) } else { HandlerError::Permanent(err.into()) }
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(err: sqlx::Error) -> Self {
        // Statement errors inside a handler are retried too: most are serialization
        // failures or lost races, and a real bug still ends in the dead-letter topic.
        HandlerError::Transient(err.into())
    }
}

impl From<DecodeError> for HandlerError {
    fn from(err: DecodeError) -> Self {
        HandlerError::Permanent(err.into())
    }
}
