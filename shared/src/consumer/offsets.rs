//! Offsets: a message's offset is stored in librdkafka's offset store only after its
//! transaction committed, and only stored offsets are committed (every
//! [`super::COMMIT_EVERY`], before a revoke, and at shutdown), so a commit never covers a
//! message whose effects are not durable. Also the check that no offset was skipped unseen.

use std::collections::{HashMap, HashSet};

use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::rebalance::{LoopContext, Revoked};
use crate::metrics as m;

/// How long a stopping consumer keeps trying to commit what it processed while its group
/// rebalances, and how long it then waits to leave the group: bounded so that a stop (with
/// the relay's drain after it) stays within a supervisor's grace period of 10 s.
pub const FINAL_COMMIT_WITHIN: Duration = Duration::from_secs(6);

/// Commit the stored offsets; nothing stored since the last commit is not an error.
pub(super) fn commit_stored<C: Consumer<LoopContext>>(consumer: &C, mode: CommitMode) -> Result<(), KafkaError> {
    match consumer.commit_consumer_state(mode) {
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        other => other,
    }
}

/// Store the offsets of messages whose effects committed. They are committed with the next
/// periodic commit (asynchronously, one request for every batch since the last: a failure is
/// covered by the next commit, and a redelivery after a crash is skipped by the inbox).
pub(super) fn store(service: &'static str, consumer: &StreamConsumer<LoopContext>, done: &[BorrowedMessage<'_>]) {
    if let Err(err) = done.iter().try_for_each(|message| consumer.store_offset_from_message(message)) {
        tracing::warn!(service, error = %err, "offset store failed");
    }
}

/// Commit the offsets of everything processed, before leaving the group. While the group
/// rebalances (the classic protocol; another replica just left or joined) the broker may
/// refuse commits until this member has rejoined, which needs the consumer served: keep
/// serving it — a message it delivers meanwhile is dropped unprocessed, so its offset is never
/// stored — and commit again once the group has settled, within [`FINAL_COMMIT_WITHIN`].
pub(super) async fn final_commit(service: &'static str, consumer: &super::member::Kafka) {
    let deadline = Instant::now() + FINAL_COMMIT_WITHIN;
    loop {
        let committing = consumer.clone();
        // A synchronous commit can block while the group rebalances: bound the wait by the
        // deadline (a commit still in flight then completes or fails on its own).
        let remaining = deadline.saturating_duration_since(Instant::now());
        let committing = tokio::task::spawn_blocking(move || commit_stored(&**committing, CommitMode::Sync));
        let committed = match tokio::time::timeout(remaining, committing).await {
            Ok(joined) => joined.unwrap_or(Err(KafkaError::Canceled)),
            Err(_) => {
                tracing::warn!(service, "final offset commit failed: no answer in time");
                return;
            }
        };
        match committed {
            Ok(()) => return,
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::RebalanceInProgress | RDKafkaErrorCode::IllegalGeneration,
            )) if Instant::now() < deadline => {
                let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
            }
            Err(err) => {
                tracing::warn!(service, error = %err, "final offset commit failed");
                return;
            }
        }
    }
}

/// Tracks each partition's next expected offset so that skipped data (retention dropped it,
/// or an offset reset jumped past it) is reported instead of passing silently.
#[derive(Default)]
pub(super) struct Positions {
    next: HashMap<(String, i32), i64>,
    checked: HashSet<(String, i32)>,
}

impl Positions {
    /// Stop tracking partitions this consumer lost. Partitions it kept through a rebalance
    /// stay tracked: their committed offset may lag behind what it processed, so checking them
    /// against it would report skips that did not happen.
    pub fn forget(&mut self, revoked: &Revoked) {
        if revoked.all {
            self.next.clear();
            self.checked.clear();
        }
        for key in &revoked.partitions {
            self.next.remove(key);
            self.checked.remove(key);
        }
    }

    pub async fn check(
        &mut self,
        consumer: &super::member::Kafka,
        service: &'static str,
        group: &str,
        message: &BorrowedMessage<'_>,
    ) {
        let key = (message.topic().to_owned(), message.partition());
        let offset = message.offset();
        let expected = match self.next.get(&key) {
            Some(next) => Some(*next),
            None if self.checked.insert(key.clone()) => committed_offset(consumer, &key.0, key.1).await,
            None => None,
        };
        if let Some(expected) = expected
            && offset > expected
        {
            let skipped = offset - expected;
            m::offset_gap(service, &key.0, skipped);
            tracing::error!(
                service,
                group,
                topic = %key.0,
                partition = key.1,
                expected,
                offset,
                skipped,
                "offsets skipped: messages were dropped before this consumer read them (retention or offset reset)"
            );
        }
        self.next.insert(key, offset + 1);
    }
}

/// The group's committed offset for a partition (0 when it never committed: a new group is
/// expected to start at the beginning of the log).
async fn committed_offset(consumer: &super::member::Kafka, topic: &str, partition: i32) -> Option<i64> {
    let consumer = consumer.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, partition);
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
        let elem = committed.find_partition(&topic, partition)?;
        match elem.offset() {
            Offset::Offset(o) => Some(o),
            _ => Some(0),
        }
    })
    .await
    .ok()
    .flatten()
}
