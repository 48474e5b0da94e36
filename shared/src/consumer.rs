//! The inbox consumer loop, written once for every service.
//!
//! For each batch of messages (what is already fetched, up to [`ConsumerOptions::max_batch`]:
//! one message when the consumer keeps up), in partition order:
//! 1. set aside the messages of types the service does not act on ([`crate::topology::acts_on`]):
//!    a group reads whole topics, but no message of such a type has an effect to apply, so it
//!    needs no transaction and no inbox record (`outcome="ignored"`);
//! 2. open a transaction;
//! 3. record the other messages' ids in the inbox (one statement); an id that was already
//!    there is a redelivery: skip it; run the handler for the rest, which appends events and
//!    outbox rows through [`MessageContext`];
//! 4. commit;
//! 5. only then store and commit the messages' offsets (the ignored ones' too).
//!
//! If the shared transaction fails, it is rolled back and the batch's messages are processed
//! one at a time (one transaction each), so a failing message is retried and dead-lettered on
//! its own and the others are applied without it. A handler that calls out of the
//! transaction (a webhook) opts out of sharing ([`Handler::shares_transactions`]): each of its
//! messages gets a transaction of its own, and only the offset commit is batched.
//!
//! Failures: a message that is larger than [`ConsumerOptions::max_payload_bytes`], cannot be
//! decoded, has an unknown type (or a command type on an event topic, or the reverse),
//! announces a schema version newer than [`contracts::SCHEMA_VERSION`], or does not come from
//! the topic's publisher is dead-lettered at once, before any handler sees it. A [`HandlerError::Transient`] is retried with
//! capped exponential backoff up to [`ConsumerOptions::max_attempts`], then dead-lettered; a
//! [`HandlerError::Permanent`] is dead-lettered at once. An unreachable database, or a
//! dependency the handler reports [`HandlerError::Unavailable`] (a webhook behind an open
//! circuit breaker), is not the message's fault: the loop pauses its assigned partitions (so
//! nothing more is fetched meanwhile) and retries without counting attempts or committing,
//! then resumes them. Nor
//! is a lost optimistic-concurrency race (replicas contending for one hot stream): another
//! transaction moved the stream on, so it is retried, with jittered backoff, however often.
//! Dead letters are written to the outbox in a transaction of their own (the relay publishes
//! them to the service's dead-letter topic with the origin in headers), then the loop moves on.
//!
//! Shutdown finishes the batch in flight, commits offsets synchronously and leaves the group.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::FutureExt as _;
use futures::future::join_all;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::broker::KafkaConfig;
use crate::contracts;
use crate::db::{Db, Tx, is_unavailable};
use crate::envelope::{DecodeError, Envelope, header_map};
use crate::event_store::StoreError;
use crate::metrics as m;
use crate::on_tx;
use crate::outbox::{Backoff, OutboxMessage, OutboxSignal, enqueue};

/// Header names on dead-lettered messages (besides the original headers).
pub mod dlq_header {
    pub const ORIGINAL_TOPIC: &str = "dlq_original_topic";
    pub const ORIGINAL_PARTITION: &str = "dlq_original_partition";
    pub const ORIGINAL_OFFSET: &str = "dlq_original_offset";
    pub const CONSUMER_GROUP: &str = "dlq_consumer_group";
    pub const ERROR: &str = "dlq_error";
    pub const ATTEMPTS: &str = "dlq_attempts";
    pub const FAILED_AT: &str = "dlq_failed_at";
    /// Set when the payload was over the size limit and left out: its size in bytes.
    pub const PAYLOAD_OMITTED_BYTES: &str = "dlq_payload_omitted_bytes";
}

/// Why a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying (a lost optimistic-concurrency race, a sink that is down).
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help (a payload that breaks the contract): dead-letter it.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
    /// A dependency outside the message is unavailable (a sink behind an open circuit breaker):
    /// pause and retry, however long it takes, without spending the message's attempts.
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

    /// Did the handler lose an optimistic-concurrency race or a deadlock (retry, don't count an attempt)?
    /// Someone else's transaction made progress on the stream, so retrying cannot livelock the
    /// system, and dead-lettering a message for contention would drop a valid saga step.
    fn is_contention(&self) -> bool {
        let HandlerError::Transient(err) = self else {
            return false;
        };
        err.chain().any(|cause| {
            matches!(cause.downcast_ref::<StoreError>(), Some(StoreError::Conflict { .. }))
                || cause.downcast_ref::<sqlx::Error>().is_some_and(crate::db::is_lost_race)
                || matches!(cause.downcast_ref::<StoreError>(), Some(StoreError::Db(db)) if crate::db::is_lost_race(db))
        })
    }

    pub fn unavailable(err: impl Into<anyhow::Error>) -> Self {
        HandlerError::Unavailable(err.into())
    }

    /// Is the database or another dependency unreachable (pause, don't count an attempt)?
    fn is_unavailable(&self) -> bool {
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

/// What a handler gets for one message: the open transaction and the message.
pub struct MessageContext<'a> {
    pub tx: &'a mut Tx,
    pub message: &'a Envelope,
    source: &'static str,
}

impl MessageContext<'_> {
    /// Publish an event caused by this message (through the outbox, in this transaction).
    pub async fn publish<T: Serialize>(
        &mut self,
        topic: &str,
        event_type: &str,
        payload: &T,
    ) -> Result<Uuid, HandlerError> {
        let envelope =
            Envelope::caused_by(self.message, event_type, 1, self.source, payload).map_err(HandlerError::permanent)?;
        enqueue(self.tx, &OutboxMessage::from_envelope(topic, &envelope)).await?;
        Ok(envelope.id)
    }

    /// Publish an admin command's outcome on `topic` (the owning service's event topic): the
    /// events it recorded, or why it was refused. The command is this message.
    pub async fn publish_command_outcome(
        &mut self,
        topic: &str,
        command_id: Uuid,
        outcome: Result<Vec<String>, String>,
    ) -> Result<Uuid, HandlerError> {
        let command_type = self.message.event_type.clone();
        let service = self.source.to_owned();
        let published = match outcome {
            Ok(events) => {
                m::admin_command(self.source, &command_type, "applied");
                tracing::info!(command.id = %command_id, command.r#type = %command_type, ?events, "admin command applied");
                let payload = contracts::AdminCommandApplied { command_id, command_type, service, events };
                self.publish(topic, contracts::event_type::ADMIN_COMMAND_APPLIED, &payload).await?
            }
            Err(reason) => {
                m::admin_command(self.source, &command_type, "rejected");
                tracing::info!(command.id = %command_id, command.r#type = %command_type, %reason, "admin command rejected");
                let payload = contracts::AdminCommandRejected { command_id, command_type, service, reason };
                self.publish(topic, contracts::event_type::ADMIN_COMMAND_REJECTED, &payload).await?
            }
        };
        Ok(published)
    }

    /// A command must be keyed by the target it names (so that commands on one target stay in
    /// order): refuse one that is not.
    pub fn check_subject(&self, target: &str) -> Result<(), HandlerError> {
        if self.message.subject == target {
            Ok(())
        } else {
            Err(HandlerError::permanent(anyhow::anyhow!(
                "{} is keyed {:?} but targets {target:?}",
                self.message.event_type,
                self.message.subject
            )))
        }
    }

    /// Metadata to store with the events an admin command records: the causing message and
    /// the command's id (its audit stream in order-svc).
    pub fn command_metadata(&self, command_id: Uuid) -> serde_json::Value {
        let mut metadata = self.event_metadata();
        metadata["admin_command_id"] = serde_json::json!(command_id);
        metadata
    }

    /// Metadata to store with events this message causes.
    pub fn event_metadata(&self) -> serde_json::Value {
        serde_json::json!({
            "causation_id": self.message.id,
            "correlation_id": self.message.correlation_id,
            "traceparent": self.message.traceparent,
        })
    }
}

/// A service's message handler.
pub trait Handler: Send + Sync + 'static {
    /// Work that must not hold a database transaction open (a slow external call whose result
    /// the decision does not need). Runs before each attempt; the default does nothing.
    fn before_transaction(&self, _message: &Envelope) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Decide and record the message's effects inside the open transaction.
    fn handle(&self, ctx: &mut MessageContext<'_>) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// May several messages share one transaction? Only when `handle` acts on nothing but the
    /// transaction: a shared transaction that fails for one message is rolled back and its
    /// messages are handled again one at a time, which would repeat an external call (a
    /// webhook) made for the others, and it would hold the transaction open across all their
    /// calls. A handler that calls out answers false and gets one transaction per message
    /// (offsets are still committed once per batch).
    fn shares_transactions(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Attempts for a message whose handler fails transiently, before it is dead-lettered.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Payloads larger than this are dead-lettered unread (without their payload). The largest
    /// legitimate message, an `OrderPlaced` with 100 lines and a full address, is about 12 KiB.
    pub max_payload_bytes: usize,
    /// Most messages applied in one transaction. The loop takes what is already fetched, up to
    /// this, so a batch is one message when the consumer keeps up and grows under load.
    pub max_batch: usize,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(5),
            max_payload_bytes: 256 * 1024,
            max_batch: 128,
        }
    }
}

/// How often stored offsets are committed again (see the consumer loop).
const RECOMMIT_EVERY: Duration = Duration::from_secs(2);

/// How long a stopping consumer keeps trying to commit what it processed while its group
/// rebalances, and how long it then waits to leave the group: bounded so that a stop (with
/// the relay's drain after it) stays within a supervisor's grace period of 10 s.
pub const FINAL_COMMIT_WITHIN: Duration = Duration::from_secs(6);
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// Test-only fault injection: return true to simulate a crash right after the database
/// commit, before the offset commit (the loop stops as if the process died).
pub type CrashHook = Arc<dyn Fn(&Envelope) -> bool + Send + Sync>;

/// Everything the loop needs, before it subscribes.
pub struct ConsumerLoop<H> {
    pub service: &'static str,
    pub group: String,
    /// Subscribed topics, each with the only `ce_source` allowed on it.
    pub topics: Vec<(String, String)>,
    pub dead_letter_topic: String,
    pub db: Db,
    pub kafka: KafkaConfig,
    pub handler: Arc<H>,
    pub outbox_signal: OutboxSignal,
    pub options: ConsumerOptions,
    pub crash_hook: Option<CrashHook>,
}

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Shutdown,
    /// The crash hook fired (tests).
    Crashed,
}

enum Outcome {
    Done,
    Shutdown,
    Crashed,
}

/// Records lag from librdkafka statistics and notices which partitions rebalances take away.
pub struct LoopContext {
    service: &'static str,
    group: String,
    revoked: Arc<Mutex<Revoked>>,
    /// Set once the consumer leaves its group: the final commit is done, and librdkafka must
    /// not be handed a commit while it tears the group membership down.
    closing: Arc<AtomicBool>,
    uncommitted: Arc<Mutex<Uncommitted>>,
}

/// Where processing got to on each partition this member owns (the next offset to read) while
/// the group has not confirmed committing it. A commit can be refused while the group
/// rebalances (the mock cluster refuses every commit until the members rejoined, where Kafka
/// accepts the current generation's): with the cooperative protocol a member keeps its
/// partitions through a rebalance, so this record lets it commit them once the group settles.
/// Partitions taken away are dropped from it (their next owner reads from the committed offset,
/// and the inbox skips what was processed already).
#[derive(Debug, Default)]
struct Uncommitted(HashMap<(String, i32), i64>);

impl Uncommitted {
    fn processed(&mut self, topic: &str, partition: i32, offset: i64) {
        let next = self.0.entry((topic.to_owned(), partition)).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    /// The group committed these offsets.
    fn committed(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            if let (Ok(()), Offset::Offset(done)) = (e.error(), e.offset()) {
                let key = (e.topic().to_owned(), e.partition());
                if self.0.get(&key).is_some_and(|next| *next <= done) {
                    self.0.remove(&key);
                }
            }
        }
    }

    /// Partitions taken away (or lost): their positions are no longer this member's to commit.
    fn revoked(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            self.0.remove(&(e.topic().to_owned(), e.partition()));
        }
    }

    /// The positions on partitions assigned to this member now.
    fn to_commit(&self, assignment: &TopicPartitionList) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for e in assignment.elements() {
            if let Some(next) = self.0.get(&(e.topic().to_owned(), e.partition())) {
                let _ = tpl.add_partition_offset(e.topic(), e.partition(), Offset::Offset(*next));
            }
        }
        tpl
    }
}

/// Commit the processed positions of the partitions assigned to this member; returns how many
/// partitions it committed (0: nothing to commit).
fn commit_processed<C: Consumer<LoopContext>>(
    consumer: &C,
    uncommitted: &Mutex<Uncommitted>,
    mode: CommitMode,
) -> Result<usize, KafkaError> {
    let assignment = consumer.assignment()?;
    let tpl = match uncommitted.lock() {
        Ok(u) => u.to_commit(&assignment),
        Err(_) => return Ok(0),
    };
    if tpl.count() == 0 {
        return Ok(0);
    }
    consumer.commit(&tpl, mode)?;
    if let (CommitMode::Sync, Ok(mut u)) = (mode, uncommitted.lock()) {
        u.committed(&tpl);
    }
    Ok(tpl.count())
}

/// Marks the loop as closing when dropped. Destroying a consumer revokes its partitions, and
/// the revoke callback would commit synchronously; librdkafka's synchronous commit has no
/// timeout, so with the broker already gone (a test's mock cluster dropped with its runtime) it
/// never returns and the drop hangs. A closing loop skips that commit: what it processed
/// without committing is read again by the next owner and skipped by the inbox.
struct ClosingWhenDropped(Arc<AtomicBool>);

impl Drop for ClosingWhenDropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Partitions taken from this consumer since the loop last looked: what it knows of their
/// positions is stale (another member may have consumed them meanwhile).
#[derive(Default)]
struct Revoked {
    partitions: Vec<(String, i32)>,
    /// The assignment was lost or the rebalance failed: forget every position.
    all: bool,
}

impl ClientContext for LoopContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    m::consumer_lag(self.service, &self.group, topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for LoopContext {
    /// Before partitions are taken away, commit what was processed on them, while this member
    /// still owns them (the group accepts commits of the current generation until its members
    /// rejoin). Offsets stored but not committed are otherwise dropped with the partitions, and
    /// their next owner would read those messages again. The loop stores the offsets of a batch
    /// before it polls for the next, so nothing is half-processed here; messages of revoked
    /// partitions taken while a batch was filling are dropped from it (their next owner reads
    /// them from the committed offset).
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance
            && !self.closing.load(Ordering::SeqCst)
        {
            match commit_processed(consumer, &self.uncommitted, CommitMode::Sync) {
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(service = self.service, group = %self.group, error = %err, "commit before revoke failed")
                }
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let (Ok(()), Ok(mut uncommitted)) = (result, self.uncommitted.lock()) {
            uncommitted.committed(offsets);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(
                    service = self.service,
                    group = %self.group,
                    partitions = tpl.count(),
                    assigned = %partition_list(tpl),
                    "partitions assigned"
                )
            }
            Rebalance::Revoke(tpl) => {
                if let Ok(mut uncommitted) = self.uncommitted.lock() {
                    uncommitted.revoked(tpl);
                }
                if let Ok(mut revoked) = self.revoked.lock() {
                    revoked.partitions.extend(tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())));
                }
                tracing::info!(
                    service = self.service,
                    group = %self.group,
                    partitions = tpl.count(),
                    revoked = %partition_list(tpl),
                    "partitions revoked"
                )
            }
            Rebalance::Error(e) => {
                if let Ok(mut uncommitted) = self.uncommitted.lock() {
                    uncommitted.0.clear();
                }
                if let Ok(mut revoked) = self.revoked.lock() {
                    revoked.all = true;
                }
                tracing::warn!(service = self.service, error = %e, "rebalance error")
            }
        }
    }
}

impl<H: Handler> ConsumerLoop<H> {
    /// Subscribe and process messages until `shutdown` (or the crash hook) stops it.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<Stopped> {
        let revoked = Arc::new(Mutex::new(Revoked::default()));
        let closing = Arc::new(AtomicBool::new(false));
        let uncommitted = Arc::new(Mutex::new(Uncommitted::default()));
        let context = LoopContext {
            service: self.service,
            group: self.group.clone(),
            revoked: revoked.clone(),
            closing: closing.clone(),
            uncommitted: uncommitted.clone(),
        };
        let consumer: Arc<StreamConsumer<LoopContext>> = Arc::new(
            self.kafka
                .consumer_config(&self.group)
                .create_with_context(context)
                .context("failed to create consumer")?,
        );
        // Declared after the consumer, so dropped before it when this future is dropped
        // unfinished (its task cancelled, the runtime shutting down).
        let _closing_when_dropped = ClosingWhenDropped(closing.clone());
        let topic_names: Vec<&str> = self.topics.iter().map(|(t, _)| t.as_str()).collect();
        if !self.await_topics(&consumer, &topic_names, &shutdown).await {
            return Ok(Stopped::Shutdown);
        }
        consumer.subscribe(&topic_names).context("failed to subscribe")?;
        tracing::info!(service = self.service, group = %self.group, topics = ?topic_names, "consumer started");

        let mut positions = Positions::default();
        // Commits the broker refused (while the group rebalances) are not retried: commit the
        // stored offsets again now and then, so that the group's offsets catch up with what was
        // processed even when no further message arrives.
        let mut recommit = tokio::time::interval(RECOMMIT_EVERY);
        recommit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = loop {
            // `recv` is cancel-safe: a message is either returned or left in the queue.
            let received = tokio::select! {
                () = shutdown.cancelled() => break Stopped::Shutdown,
                _ = recommit.tick() => {
                    if let Err(err) = commit_processed(&*consumer, &uncommitted, CommitMode::Async) {
                        tracing::debug!(service = self.service, error = %err, "offset recommit failed");
                    }
                    continue;
                }
                received = consumer.recv() => received,
            };
            let first = match received {
                Ok(message) => message,
                // The consumer is unusable (librdkafka delivers nothing after a fatal error,
                // e.g. a fenced member): stop the service, with what it processed committed,
                // so that its supervisor starts it again as a new member.
                Err(KafkaError::MessageConsumptionFatal(code)) => {
                    m::consumer_errors(self.service, "fatal");
                    self.final_commit(&consumer, &uncommitted).await;
                    anyhow::bail!("the consumer of group {} failed fatally: {code}", self.group);
                }
                Err(err) => {
                    m::consumer_errors(self.service, kafka_error_kind(&err));
                    tracing::warn!(service = self.service, error = %err, "consumer error");
                    tokio::select! {
                        () = shutdown.cancelled() => break Stopped::Shutdown,
                        () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            };
            // Take whatever else is already fetched, without waiting for more: under load a
            // batch fills up and shares one transaction; when idle it is one message and adds
            // no latency.
            let mut batch = vec![first];
            while batch.len() < self.options.max_batch.max(1) {
                match consumer.recv().now_or_never() {
                    Some(Ok(message)) => batch.push(message),
                    Some(Err(err)) => {
                        m::consumer_errors(self.service, kafka_error_kind(&err));
                        tracing::warn!(service = self.service, error = %err, "consumer error");
                        break;
                    }
                    None => break,
                }
            }
            let revoked_now = revoked.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
            if revoked_now.all || !revoked_now.partitions.is_empty() {
                // A rebalance took partitions away while the batch was being taken: their
                // messages are their next owner's now (it reads them from the committed offset).
                match consumer.assignment() {
                    Ok(assignment) => batch.retain(|m| assignment.find_partition(m.topic(), m.partition()).is_some()),
                    Err(err) => tracing::warn!(service = self.service, error = %err, "failed to read the assignment"),
                }
            }
            positions.forget(revoked_now);
            if batch.is_empty() {
                continue;
            }
            for message in &batch {
                positions.check(&consumer, self.service, &self.group, message).await;
            }

            let (done, outcome) = self.process_batch(&batch, &consumer, &shutdown).await;
            if matches!(outcome, Outcome::Crashed) {
                drop(batch);
                return Ok(Stopped::Crashed);
            }
            // Store the offsets of what was processed, then commit the stored offsets. Only
            // stored offsets are ever committed, so the final synchronous commit at shutdown
            // never covers a message that was received but not processed.
            if done > 0 {
                if let Ok(mut u) = uncommitted.lock() {
                    for message in &batch[..done] {
                        u.processed(message.topic(), message.partition(), message.offset());
                    }
                }
                let committed = batch[..done]
                    .iter()
                    .try_for_each(|message| consumer.store_offset_from_message(message))
                    .and_then(|()| consumer.commit_consumer_state(CommitMode::Async));
                if let Err(err) = committed {
                    // The next commit covers it; a redelivery is skipped by the inbox.
                    tracing::warn!(service = self.service, error = %err, "offset commit failed");
                }
            }
            if matches!(outcome, Outcome::Shutdown) {
                break Stopped::Shutdown;
            }
        };
        self.final_commit(&consumer, &uncommitted).await;
        // Leave the group. Closing the consumer waits on the group protocol (a rebalance in
        // progress can hold it for seconds), so it is bounded: the process must still stop in
        // time. If it runs out, the group notices the member gone after its session timeout.
        // Set before the blocking task is queued: a runtime shutting down drops queued blocking
        // tasks unrun, and the consumer with them.
        closing.store(true, Ordering::SeqCst);
        let closing = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        });
        if tokio::time::timeout(CLOSE_WITHIN, closing).await.is_err() {
            tracing::warn!(service = self.service, group = %self.group, "leaving the consumer group timed out");
        }
        tracing::info!(service = self.service, group = %self.group, "consumer stopped");
        Ok(stopped)
    }

    /// Wait until every topic to consume exists (false: shut down meanwhile). Each service
    /// creates the topics it owns at start-up, so another service's topics may not exist yet;
    /// a group that subscribed before they did would not see them until librdkafka's next
    /// metadata refresh (minutes), and would miss nothing but serve nobody meanwhile.
    async fn await_topics(
        &self,
        consumer: &Arc<StreamConsumer<LoopContext>>,
        topics: &[&str],
        shutdown: &CancellationToken,
    ) -> bool {
        let mut attempt = 0u32;
        loop {
            let fetching = consumer.clone();
            let metadata =
                tokio::task::spawn_blocking(move || fetching.fetch_metadata(None, Duration::from_secs(5))).await;
            let missing: Vec<&str> = match &metadata {
                Ok(Ok(metadata)) => {
                    let present: HashSet<&str> = metadata
                        .topics()
                        .iter()
                        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                        .map(|t| t.name())
                        .collect();
                    topics.iter().copied().filter(|t| !present.contains(t)).collect()
                }
                _ => topics.to_vec(),
            };
            if missing.is_empty() {
                return true;
            }
            if attempt.is_multiple_of(20) {
                tracing::info!(service = self.service, group = %self.group, ?missing, "waiting for topics to exist");
            }
            attempt += 1;
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Commit the offsets of everything processed, before leaving the group. While the group
    /// rebalances (another replica just left or joined, e.g. when replicas stop together) the
    /// broker may refuse commits until this member has rejoined, which needs the consumer
    /// served: keep serving it — a message it delivers meanwhile is dropped unprocessed, so its
    /// offset is never committed — and commit again once the group has settled, within
    /// [`FINAL_COMMIT_WITHIN`]. Positions on partitions that went to another member are that
    /// member's (it reads them again and the inbox skips them).
    async fn final_commit(&self, consumer: &Arc<StreamConsumer<LoopContext>>, uncommitted: &Arc<Mutex<Uncommitted>>) {
        let deadline = Instant::now() + FINAL_COMMIT_WITHIN;
        loop {
            let (committing, positions) = (consumer.clone(), uncommitted.clone());
            // A synchronous commit can block while the group rebalances: bound the wait by the
            // deadline (a commit still in flight then completes or fails on its own).
            let remaining = deadline.saturating_duration_since(Instant::now());
            let committing =
                tokio::task::spawn_blocking(move || commit_processed(&*committing, &positions, CommitMode::Sync));
            let committed = match tokio::time::timeout(remaining, committing).await {
                Ok(joined) => joined.unwrap_or(Err(KafkaError::Canceled)),
                Err(_) => {
                    tracing::warn!(service = self.service, "final offset commit failed: no answer in time");
                    return;
                }
            };
            let left = uncommitted.lock().map(|u| u.0.len()).unwrap_or(0);
            match committed {
                Ok(_) if left == 0 => return,
                Ok(_)
                | Err(KafkaError::ConsumerCommit(
                    RDKafkaErrorCode::RebalanceInProgress | RDKafkaErrorCode::IllegalGeneration,
                )) if Instant::now() < deadline => {
                    let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
                }
                Ok(_) => {
                    tracing::warn!(
                        service = self.service,
                        partitions = left,
                        "final offset commit failed: the partitions were not assigned back in time"
                    );
                    return;
                }
                Err(err) => {
                    tracing::warn!(service = self.service, error = %err, "final offset commit failed");
                    return;
                }
            }
        }
    }

    /// Decode a message and check that it may be handled at all.
    fn decode(&self, message: &BorrowedMessage<'_>) -> Result<Envelope, HandlerError> {
        let payload_bytes = message.payload_len();
        if payload_bytes > self.options.max_payload_bytes {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "payload of {payload_bytes} bytes is over the limit of {} bytes",
                self.options.max_payload_bytes
            )));
        }
        Envelope::from_message(message).map_err(HandlerError::from).and_then(|e| self.admit(message.topic(), e))
    }

    /// Process a batch in order. Runs of messages that decode are applied in one transaction
    /// each ([`Self::apply_run`]); a run whose transaction fails is rolled back and its
    /// messages go one at a time through [`Self::process`] (retries, dead letters), so one bad
    /// message costs the others only a second try. Returns how many leading messages of the
    /// batch are done (their offsets may be stored) and why it stopped.
    async fn process_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        consumer: &StreamConsumer<LoopContext>,
        shutdown: &CancellationToken,
    ) -> (usize, Outcome) {
        let started = Instant::now();
        let decoded: Vec<Result<Envelope, HandlerError>> = batch.iter().map(|m| self.decode(m)).collect();
        // Admitted messages of a type the service does not act on (the topology): acknowledged,
        // nothing else.
        let ignored: Vec<bool> = decoded
            .iter()
            .map(|d| d.as_ref().is_ok_and(|e| !crate::topology::acts_on(self.service, &e.event_type)))
            .collect();
        let spans: Vec<tracing::Span> = batch
            .iter()
            .zip(&decoded)
            .zip(&ignored)
            .map(|((m, d), ignored)| {
                if *ignored {
                    tracing::Span::none()
                } else {
                    crate::telemetry::consumer_span(self.service, &self.group, m, d.as_ref().ok())
                }
            })
            .collect();
        let mut i = 0;
        while i < batch.len() {
            let run_end = (i..batch.len()).find(|&j| decoded[j].is_err()).unwrap_or(batch.len());
            let handled: Vec<usize> = (i..run_end).filter(|&j| !ignored[j]).collect();
            // A single message gains nothing from the shared path (its own path retries it),
            // and a handler that calls out never shares.
            if handled.len() >= 2 && self.handler.shares_transactions() {
                let envelopes: Vec<&Envelope> = handled.iter().filter_map(|&j| decoded[j].as_ref().ok()).collect();
                let run_spans: Vec<tracing::Span> = handled.iter().map(|&j| spans[j].clone()).collect();
                match self.apply_run(&envelopes, &run_spans, started, shutdown).await {
                    RunOutcome::Applied => {
                        self.record_ignored(&decoded[i..run_end], &ignored[i..run_end]);
                        i = run_end;
                        continue;
                    }
                    RunOutcome::Crashed => return (i, Outcome::Crashed),
                    RunOutcome::Shutdown => return (i, Outcome::Shutdown),
                    RunOutcome::Failed => {}
                }
            }
            // One at a time: the message that does not decode, a run of one, every message of
            // a handler that does not share, or of a run whose shared transaction failed.
            let end = run_end.max(i + 1);
            for j in i..end {
                if ignored[j] {
                    self.record_ignored(&decoded[j..=j], &ignored[j..=j]);
                    continue;
                }
                match self.process(&batch[j], &decoded[j], spans[j].clone(), started, consumer, shutdown).await {
                    Outcome::Done => {}
                    outcome => return (j, outcome),
                }
            }
            i = end;
        }
        (batch.len(), Outcome::Done)
    }

    fn record_ignored(&self, decoded: &[Result<Envelope, HandlerError>], ignored: &[bool]) {
        for (envelope, _) in decoded.iter().zip(ignored).filter(|(_, ignored)| **ignored) {
            if let Ok(envelope) = envelope {
                m::message_ignored(self.service, &envelope.event_type);
            }
        }
    }

    /// Apply a run of decoded messages in one transaction (an inbox record and the handler's
    /// effects for each). A lost optimistic-concurrency race retries the whole run a few times;
    /// any other failure reports [`RunOutcome::Failed`] with nothing applied.
    async fn apply_run(
        &self,
        envelopes: &[&Envelope],
        spans: &[tracing::Span],
        started: Instant,
        shutdown: &CancellationToken,
    ) -> RunOutcome {
        let mut backoff = Backoff::new(self.options.backoff_base, self.options.backoff_cap);
        for _ in 0..RUN_CONTENTION_RETRIES {
            let error = match self.attempt_run(envelopes, spans).await {
                Ok(applied) => {
                    for ((envelope, span), applied) in envelopes.iter().zip(spans).zip(applied) {
                        let _entered = span.enter();
                        let outcome = match applied {
                            Applied::Yes => "ok",
                            Applied::Duplicate => "duplicate",
                        };
                        m::message_handled(self.service, &envelope.event_type, outcome, started.elapsed());
                        tracing::debug!(outcome, batch = envelopes.len(), "message processed");
                    }
                    if let Some(hook) = &self.crash_hook
                        && envelopes.iter().any(|e| hook(e))
                    {
                        return RunOutcome::Crashed;
                    }
                    return RunOutcome::Applied;
                }
                Err(error) => error,
            };
            if !error.is_contention() {
                tracing::debug!(error = %error, batch = envelopes.len(), "batch failed, processing its messages one at a time");
                return RunOutcome::Failed;
            }
            for envelope in envelopes {
                m::message_retried(self.service, &envelope.event_type);
            }
            tokio::select! {
                () = shutdown.cancelled() => return RunOutcome::Shutdown,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
        RunOutcome::Failed
    }

    /// One transaction for a run: per message, the inbox record (a redelivery is skipped) and
    /// the handler, each under the message's span; then one commit.
    async fn attempt_run(
        &self,
        envelopes: &[&Envelope],
        spans: &[tracing::Span],
    ) -> Result<Vec<Applied>, HandlerError> {
        join_all(
            envelopes.iter().zip(spans).map(|(e, span)| self.handler.before_transaction(e).instrument(span.clone())),
        )
        .await;
        let mut tx = self.db.begin().await.map_err(|e| HandlerError::Transient(e.into()))?;
        // Every inbox record of the run in one statement; the ids it did not insert were
        // processed before (or come twice in this run: the first one counts).
        let ids: Vec<Uuid> = envelopes.iter().map(|e| e.id).collect();
        let mut fresh = match record_all_in_inbox(&mut tx, self.service, &ids).await {
            Ok(fresh) => fresh,
            Err(err) => {
                tx.rollback().await.ok();
                return Err(err);
            }
        };
        let mut applied = Vec::with_capacity(envelopes.len());
        for (envelope, span) in envelopes.iter().zip(spans) {
            if !fresh.remove(&envelope.id) {
                applied.push(Applied::Duplicate);
                continue;
            }
            let result = async {
                let mut ctx = MessageContext { tx: &mut tx, message: envelope, source: self.service };
                self.handler.handle(&mut ctx).await?;
                Ok(Applied::Yes)
            }
            .instrument(span.clone())
            .await;
            match result {
                Ok(a) => applied.push(a),
                Err(err) => {
                    tx.rollback().await.ok();
                    return Err(err);
                }
            }
        }
        tx.commit().await.map_err(|e| HandlerError::Transient(e.into()))?;
        self.outbox_signal.notify();
        Ok(applied)
    }

    /// Process one message on its own: retries with backoff, then the dead-letter topic.
    /// While a dependency is unavailable the consumer's partitions are paused (see [`Paused`]).
    async fn process(
        &self,
        message: &BorrowedMessage<'_>,
        decoded: &Result<Envelope, HandlerError>,
        span: tracing::Span,
        started: Instant,
        consumer: &StreamConsumer<LoopContext>,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let mut paused = Paused { consumer, service: self.service, partitions: None };
        let topic = message.topic().to_owned();
        let decoded = decoded.as_ref();
        async {
            let message_id = match &decoded {
                Ok(envelope) => envelope.id,
                Err(_) => position_id(&topic, message.partition(), message.offset()),
            };
            let event_type =
                decoded.as_ref().map(|e| e.event_type.clone()).unwrap_or_else(|_| m::UNDECODABLE.to_owned());
            let mut backoff = Backoff::new(self.options.backoff_base, self.options.backoff_cap);
            let mut attempts = 0u32;
            loop {
                let result = match &decoded {
                    Ok(envelope) => {
                        attempts += 1;
                        self.attempt(message_id, envelope).await
                    }
                    Err(err) => Err(HandlerError::Permanent(anyhow::anyhow!("{err:#}"))),
                };
                let error = match result {
                    Ok(Applied::Yes) => {
                        m::message_handled(self.service, &event_type, "ok", started.elapsed());
                        tracing::debug!(
                            outcome = "ok",
                            attempts,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "message processed"
                        );
                        if let (Some(hook), Ok(envelope)) = (&self.crash_hook, &decoded)
                            && hook(envelope)
                        {
                            return Outcome::Crashed;
                        }
                        return Outcome::Done;
                    }
                    Ok(Applied::Duplicate) => {
                        m::message_handled(self.service, &event_type, "duplicate", started.elapsed());
                        tracing::debug!(outcome = "duplicate", "message skipped: already processed");
                        return Outcome::Done;
                    }
                    Err(error) => error,
                };
                let retry = if error.is_unavailable() || error.is_contention() {
                    // Not this message's fault: pause without spending its attempts.
                    attempts = attempts.saturating_sub(1);
                    if error.is_unavailable() {
                        paused.pause();
                    }
                    true
                } else {
                    matches!(error, HandlerError::Transient(_)) && attempts < self.options.max_attempts
                };
                if retry {
                    m::message_retried(self.service, &event_type);
                    tracing::warn!(attempt = attempts, error = %error, "handler failed, retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return Outcome::Shutdown,
                        () = tokio::time::sleep(backoff.next_delay()) => continue,
                    }
                }
                // Dead-letter it; if even that fails (database down), keep trying.
                loop {
                    match self.dead_letter(message, &error, attempts.max(1)).await {
                        Ok(()) => {
                            m::dead_lettered(self.service, &topic, &event_type);
                            tracing::Span::current().record("otel.status_code", "error");
                            m::message_handled(self.service, &event_type, "dead_lettered", started.elapsed());
                            tracing::error!(error = %error, attempts, "message dead-lettered");
                            return Outcome::Done;
                        }
                        Err(err) => {
                            tracing::warn!(error = format!("{err:#}"), "failed to dead-letter message, retrying");
                            tokio::select! {
                                () = shutdown.cancelled() => return Outcome::Shutdown,
                                () = tokio::time::sleep(backoff.next_delay()) => {}
                            }
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Reject what no handler should see: unknown types, commands on event topics (and events
    /// on command topics), schema versions newer than this code knows, forged sources.
    fn admit(&self, topic: &str, envelope: Envelope) -> Result<Envelope, HandlerError> {
        let message_type = envelope.event_type.as_str();
        if !contracts::is_known_type(message_type) {
            return Err(HandlerError::permanent(anyhow::anyhow!("unknown event type {message_type:?}")));
        }
        if contracts::is_command(message_type) != crate::topics::carries_commands(topic) {
            return Err(HandlerError::permanent(anyhow::anyhow!("{message_type} does not belong on {topic}")));
        }
        if envelope.schema_version > contracts::SCHEMA_VERSION {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "{message_type} schema version {} is newer than the supported {}",
                envelope.schema_version,
                contracts::SCHEMA_VERSION
            )));
        }
        if let Some((_, source)) = self.topics.iter().find(|(t, _)| t == topic)
            && envelope.source != *source
        {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "source {:?} may not publish on {topic} (expected {source:?})",
                envelope.source
            )));
        }
        Ok(envelope)
    }

    /// One transaction: inbox record, handler, commit.
    async fn attempt(&self, message_id: Uuid, envelope: &Envelope) -> Result<Applied, HandlerError> {
        self.handler.before_transaction(envelope).await;
        let mut tx = self.db.begin().await.map_err(|e| HandlerError::Transient(e.into()))?;
        if !record_in_inbox(&mut tx, self.service, message_id).await? {
            tx.rollback().await.ok();
            return Ok(Applied::Duplicate);
        }
        let mut ctx = MessageContext { tx: &mut tx, message: envelope, source: self.service };
        self.handler.handle(&mut ctx).await?;
        tx.commit().await.map_err(|e| HandlerError::Transient(e.into()))?;
        self.outbox_signal.notify();
        Ok(Applied::Yes)
    }

    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        error: &HandlerError,
        attempts: u32,
    ) -> anyhow::Result<()> {
        let mut headers = header_map(message);
        headers.extend([
            (dlq_header::ORIGINAL_TOPIC.to_owned(), message.topic().to_owned()),
            (dlq_header::ORIGINAL_PARTITION.to_owned(), message.partition().to_string()),
            (dlq_header::ORIGINAL_OFFSET.to_owned(), message.offset().to_string()),
            (dlq_header::CONSUMER_GROUP.to_owned(), self.group.clone()),
            (dlq_header::ERROR.to_owned(), truncate(&error.to_string(), 2048)),
            (dlq_header::ATTEMPTS.to_owned(), attempts.to_string()),
            (dlq_header::FAILED_AT.to_owned(), chrono::Utc::now().to_rfc3339()),
        ]);
        let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
        // An oversized payload is not copied: the dead letter says how big it was instead (it
        // might not fit in a message, and a redrive could only dead-letter it again).
        let payload = match message.payload() {
            Some(bytes) if bytes.len() > self.options.max_payload_bytes => {
                headers.push((dlq_header::PAYLOAD_OMITTED_BYTES.to_owned(), bytes.len().to_string()));
                Vec::new()
            }
            Some(bytes) => bytes.to_vec(),
            None => Vec::new(),
        };
        let row = OutboxMessage { topic: self.dead_letter_topic.clone(), key, headers, payload };
        let mut tx = self.db.begin().await.context("failed to begin dead-letter transaction")?;
        // Dedupe the dead-lettering of this delivery (not of the message id, so that a
        // redriven copy is processed normally).
        let marker = dead_letter_marker(message.topic(), message.partition(), message.offset());
        if record_in_inbox(&mut tx, self.service, marker).await.map_err(|e| anyhow::anyhow!("{e}"))? {
            enqueue(&mut tx, &row).await.context("failed to enqueue dead letter")?;
        }
        tx.commit().await.context("failed to commit dead letter")?;
        self.outbox_signal.notify();
        Ok(())
    }
}

enum Applied {
    Yes,
    Duplicate,
}

/// The consumer's partitions paused while a dependency is unavailable: nothing more is fetched
/// (librdkafka drops what it had queued for them and fetches it again on resume, from the
/// position after the last message the loop received), so no backlog piles up in memory
/// meanwhile. Resumed when dropped, whichever way the message's processing ends. A rebalance
/// cannot happen meanwhile: the loop does not poll the consumer while it retries.
struct Paused<'a> {
    consumer: &'a StreamConsumer<LoopContext>,
    service: &'static str,
    partitions: Option<TopicPartitionList>,
}

impl Paused<'_> {
    fn pause(&mut self) {
        if self.partitions.is_some() {
            return;
        }
        let paused = self.consumer.assignment().and_then(|assignment| {
            self.consumer.pause(&assignment)?;
            Ok(assignment)
        });
        match paused {
            Ok(assignment) => {
                tracing::warn!(
                    service = self.service,
                    partitions = assignment.count(),
                    "a dependency is unavailable: consumer partitions paused"
                );
                self.partitions = Some(assignment);
            }
            Err(err) => tracing::warn!(service = self.service, error = %err, "failed to pause the consumer"),
        }
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        if let Some(partitions) = self.partitions.take() {
            match self.consumer.resume(&partitions) {
                Ok(()) => tracing::info!(service = self.service, "consumer partitions resumed"),
                Err(err) => tracing::warn!(service = self.service, error = %err, "failed to resume the consumer"),
            }
        }
    }
}

/// How a run of messages sharing one transaction ended.
enum RunOutcome {
    Applied,
    /// Nothing applied: process the run's messages one at a time.
    Failed,
    Shutdown,
    Crashed,
}

/// How often a run's shared transaction is retried after losing an optimistic-concurrency race
/// before its messages go one at a time (where each retries as often as it must).
const RUN_CONTENTION_RETRIES: u32 = 3;

/// Insert the message id into the inbox; false when it was already there.
async fn record_in_inbox(tx: &mut Tx, consumer: &str, message_id: Uuid) -> Result<bool, HandlerError> {
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
async fn record_all_in_inbox(tx: &mut Tx, consumer: &str, ids: &[Uuid]) -> Result<HashSet<Uuid>, HandlerError> {
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

/// The inbox entry that records the dead-lettering of the delivery at `topic`/`partition`/
/// `offset` (so that the message counts as handled, and a redelivery is not dead-lettered
/// twice).
pub fn dead_letter_marker(topic: &str, partition: i32, offset: i64) -> Uuid {
    Uuid::new_v5(&position_id(topic, partition, offset), b"dead-letter")
}

/// A stable id for a message that has none of its own (undecodable).
fn position_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, format!("kafka://{topic}/{partition}/{offset}").as_bytes())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `topic[0,3] other[1]`: which partitions a rebalance moved, for the log.
fn partition_list(tpl: &TopicPartitionList) -> String {
    let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = std::collections::BTreeMap::new();
    for e in tpl.elements() {
        by_topic.entry(e.topic().to_owned()).or_default().push(e.partition());
    }
    by_topic
        .into_iter()
        .map(|(topic, mut partitions)| {
            partitions.sort_unstable();
            let list: Vec<String> = partitions.iter().map(i32::to_string).collect();
            format!("{topic}[{}]", list.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn kafka_error_kind(err: &KafkaError) -> &'static str {
    match err {
        KafkaError::MessageConsumption(_) => "consumption",
        KafkaError::PartitionEOF(_) => "partition_eof",
        _ => "other",
    }
}

/// Tracks each partition's next expected offset so that skipped data (retention dropped it,
/// or an offset reset jumped past it) is reported instead of passing silently.
#[derive(Default)]
struct Positions {
    next: HashMap<(String, i32), i64>,
    checked: HashSet<(String, i32)>,
}

impl Positions {
    /// Stop tracking partitions this consumer lost. Partitions it kept through a rebalance
    /// stay tracked: their committed offset may lag behind what it processed (commits are
    /// refused during the rebalance), so checking them against it would report skips that did
    /// not happen.
    fn forget(&mut self, revoked: Revoked) {
        if revoked.all {
            self.next.clear();
            self.checked.clear();
        }
        for key in &revoked.partitions {
            self.next.remove(key);
            self.checked.remove(key);
        }
    }

    async fn check(
        &mut self,
        consumer: &Arc<StreamConsumer<LoopContext>>,
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
async fn committed_offset(consumer: &Arc<StreamConsumer<LoopContext>>, topic: &str, partition: i32) -> Option<i64> {
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
