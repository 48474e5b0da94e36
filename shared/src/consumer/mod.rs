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
//! 5. only then store the messages' offsets (the ignored ones' too); stored offsets are
//!    committed every [`COMMIT_EVERY`], one request for all the batches since the last.
//!
//! If the shared transaction fails, it is rolled back and the batch's messages are processed
//! one at a time (one transaction each), so a failing message is retried and dead-lettered on
//! its own and the others are applied without it. A handler that calls out of the
//! transaction (a webhook) opts out of sharing ([`Handler::shares_transactions`]): each of its
//! messages gets a transaction of its own, and only the offset commit is batched.
//!
//! Failures: a message that is larger than [`ConsumerOptions::max_payload_bytes`], cannot be
//! decoded, has an unknown type (or a command type on an event topic, or the reverse),
//! announces a schema version newer than [`crate::contracts::SCHEMA_VERSION`], or does not
//! come from the topic's publisher is dead-lettered at once, before any handler sees it. A
//! [`HandlerError::Transient`] is retried with capped exponential backoff up to
//! [`ConsumerOptions::max_attempts`], then dead-lettered; a [`HandlerError::Permanent`] is
//! dead-lettered at once. An unreachable database, or a dependency the handler reports
//! [`HandlerError::Unavailable`] (a webhook behind an open circuit breaker), is not the
//! message's fault: the loop pauses its assigned partitions (so nothing more is fetched
//! meanwhile) and retries without counting attempts or committing, then resumes them. Nor is a
//! lost optimistic-concurrency race (replicas contending for one hot stream): another
//! transaction moved the stream on, so it is retried, with jittered backoff, however often.
//! Dead letters are written to the outbox in a transaction of their own (the relay publishes
//! them to the service's dead-letter topic with the origin in headers), then the loop moves on.
//!
//! Rebalances reach the loop as events on a channel (`rebalance`); offsets are stored and
//! committed by `offsets`. Shutdown finishes the batch in flight, commits offsets
//! synchronously and leaves the group.

mod batch;
mod dead_letter;
mod error;
mod handler;
mod inbox;
mod member;
mod offsets;
mod rebalance;
mod single;
mod step;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use dead_letter::{dead_letter_marker, dlq_header};
pub use error::HandlerError;
pub use handler::{Handler, MessageContext};
pub use offsets::FINAL_COMMIT_WITHIN;
pub use step::{Changes, Step, Write};

use crate::broker::KafkaConfig;
use crate::db::Db;
use crate::envelope::Envelope;
use crate::event_store::StreamCache;
use crate::metrics as m;
use crate::outbox::OutboxSignal;
use member::{Kafka, Member};
use offsets::Positions;
use rebalance::{KafkaEvent, LoopContext, Revoked};

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
    /// Hot streams whose state the consumer keeps between its transactions
    /// ([`crate::event_store::StreamCache`]); 0 keeps none.
    pub stream_cache: usize,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(5),
            max_payload_bytes: 256 * 1024,
            max_batch: 128,
            stream_cache: 1024,
        }
    }
}

/// How often stored offsets are committed: one commit request covers every batch processed
/// since the last (a commit per batch cost the broker a request per transaction), and a
/// commit the broker refused (the classic protocol refuses them while the group rebalances)
/// is covered by the next. A crash redelivers at most this much work, which the inbox skips.
const COMMIT_EVERY: Duration = Duration::from_millis(250);

/// How long leaving the group may take at shutdown.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// Fault injection for the backbone's own tests: a hook that returns true to simulate a
/// crash right after a message's database commit, before its offset commit (the loop stops as
/// if the process died). It exists only with the `fault-injection` feature; other builds carry
/// an empty hook that never fires.
#[derive(Clone, Default)]
pub struct CrashHook {
    #[cfg(feature = "fault-injection")]
    hook: Option<CrashFn>,
}

#[cfg(feature = "fault-injection")]
type CrashFn = Arc<dyn Fn(&Envelope) -> bool + Send + Sync>;

impl CrashHook {
    #[cfg(feature = "fault-injection")]
    pub fn new(hook: impl Fn(&Envelope) -> bool + Send + Sync + 'static) -> Self {
        Self { hook: Some(Arc::new(hook)) }
    }

    /// Should the loop crash after committing `envelope`'s effects?
    fn fires(&self, envelope: &Envelope) -> bool {
        #[cfg(feature = "fault-injection")]
        {
            self.hook.as_ref().is_some_and(|hook| hook(envelope))
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            let _ = envelope;
            false
        }
    }
}

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
    /// Empty outside the backbone's fault-injection tests.
    pub crash_hook: CrashHook,
    /// The hot streams' state between transactions ([`ConsumerOptions::stream_cache`]).
    pub stream_cache: StreamCache,
}

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Shutdown,
    /// The crash hook fired (tests).
    Crashed,
}

/// How processing a message (or a batch) ended.
enum Processed {
    Done,
    Shutdown,
    Crashed,
}

/// What became of one message in a transaction.
enum Applied {
    Yes,
    Duplicate,
}

impl<H: Handler> ConsumerLoop<H> {
    /// Subscribe and process messages until `shutdown` (or the crash hook) stops it.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<Stopped> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let context = LoopContext::new(self.service, self.group.clone(), events_tx, self.outbox_signal.clone());
        // Dropped unfinished (its task cancelled, the runtime shutting down), or on an error,
        // the consumer closes on a thread of its own (see `member`).
        let consumer = Member::new(
            self.kafka
                .consumer_config(&self.group)
                .create_with_context(context)
                .context("failed to create consumer")?,
        );
        let topic_names: Vec<&str> = self.topics.iter().map(|(t, _)| t.as_str()).collect();
        if !self.await_topics(&consumer, &topic_names, &shutdown).await {
            return Ok(Stopped::Shutdown);
        }
        consumer.subscribe(&topic_names).context("failed to subscribe")?;
        tracing::info!(service = self.service, group = %self.group, topics = ?topic_names, "consumer started");
        let stopped = self.consume(&consumer, &mut events, &shutdown).await?;
        if stopped == Stopped::Shutdown {
            offsets::final_commit(self.service, &consumer).await;
            self.leave(consumer).await;
        }
        Ok(stopped)
    }

    /// The loop itself: take a batch, process it, store and commit its offsets.
    async fn consume(
        &self,
        consumer: &Kafka,
        events: &mut mpsc::UnboundedReceiver<KafkaEvent>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Stopped> {
        let mut positions = Positions::default();
        let mut commit = tokio::time::interval(COMMIT_EVERY);
        commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // `recv` is cancel-safe: a message is either returned or left in the queue.
            let received = tokio::select! {
                () = shutdown.cancelled() => return Ok(Stopped::Shutdown),
                _ = commit.tick() => {
                    if let Err(err) = offsets::commit_stored(&***consumer, CommitMode::Async) {
                        tracing::debug!(service = self.service, error = %err, "offset commit failed");
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
                    offsets::final_commit(self.service, consumer).await;
                    anyhow::bail!("the consumer of group {} failed fatally: {code}", self.group);
                }
                Err(err) => {
                    self.consumer_error(&err);
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(Stopped::Shutdown),
                        () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            };
            let batch = self.fill(consumer, events, &mut positions, first);
            if batch.is_empty() {
                continue;
            }
            for message in &batch {
                positions.check(consumer, self.service, &self.group, message).await;
            }
            let (done, outcome) = self.process_batch(&batch, consumer, shutdown).await;
            match outcome {
                Processed::Crashed => return Ok(Stopped::Crashed),
                Processed::Done => offsets::store(self.service, consumer, &batch[..done]),
                Processed::Shutdown => {
                    offsets::store(self.service, consumer, &batch[..done]);
                    return Ok(Stopped::Shutdown);
                }
            }
        }
    }

    /// The batch: `first` and whatever else is already fetched, without waiting for more (under
    /// load a batch fills up and shares one transaction; when idle it is one message and adds
    /// no latency), less the messages of partitions a rebalance took away meanwhile (their next
    /// owner reads them from the committed offset).
    fn fill<'c>(
        &self,
        consumer: &'c Kafka,
        events: &mut mpsc::UnboundedReceiver<KafkaEvent>,
        positions: &mut Positions,
        first: BorrowedMessage<'c>,
    ) -> Vec<BorrowedMessage<'c>> {
        let mut batch = vec![first];
        while batch.len() < self.options.max_batch.max(1) {
            match consumer.recv().now_or_never() {
                Some(Ok(message)) => batch.push(message),
                Some(Err(err)) => {
                    self.consumer_error(&err);
                    break;
                }
                None => break,
            }
        }
        let revoked = Revoked::drain(events);
        if !revoked.is_empty() {
            match consumer.assignment() {
                Ok(assignment) => batch.retain(|m| assignment.find_partition(m.topic(), m.partition()).is_some()),
                Err(err) => tracing::warn!(service = self.service, error = %err, "failed to read the assignment"),
            }
        }
        positions.forget(&revoked);
        batch
    }

    fn consumer_error(&self, err: &KafkaError) {
        let kind = match err {
            KafkaError::MessageConsumption(_) => "consumption",
            KafkaError::PartitionEOF(_) => "partition_eof",
            _ => "other",
        };
        m::consumer_errors(self.service, kind);
        tracing::warn!(service = self.service, error = %err, "consumer error");
    }

    /// Leave the group. Closing the consumer waits on the group protocol, so it is bounded:
    /// the process must still stop in time. If it runs out, the group notices the member gone
    /// after its session timeout.
    async fn leave(&self, consumer: Kafka) {
        if tokio::time::timeout(CLOSE_WITHIN, Member::leave(consumer)).await.is_err() {
            tracing::warn!(service = self.service, group = %self.group, "leaving the consumer group timed out");
        }
        tracing::info!(service = self.service, group = %self.group, "consumer stopped");
    }

    /// Wait until every topic to consume exists (false: shut down meanwhile). Each service
    /// creates the topics it owns at start-up, so another service's topics may not exist yet;
    /// a group that subscribed before they did would not see them until librdkafka's next
    /// metadata refresh (minutes), and would miss nothing but serve nobody meanwhile.
    async fn await_topics(&self, consumer: &Kafka, topics: &[&str], shutdown: &CancellationToken) -> bool {
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
}
