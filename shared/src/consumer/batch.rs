//! A batch: what is already fetched, processed in partition order. Messages that decode and
//! that the service acts on form runs that share one transaction each ([`ConsumerLoop::apply_run`]);
//! a run whose transaction fails goes again one message at a time (the `single` module), so one
//! bad message costs the others only a second try. Messages of types the service does not act
//! on are acknowledged without a transaction.

use std::time::Instant;

use futures::future::join_all;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::rebalance::LoopContext;
use super::{Applied, ConsumerLoop, Handler, HandlerError, MessageContext, Processed, inbox};
use crate::contracts;
use crate::envelope::{self, Envelope};
use crate::event_store::{self, StreamRef};
use crate::metrics as m;
use crate::outbox::Backoff;

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

impl<H: Handler> ConsumerLoop<H> {
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

    /// Reject what no handler should see: unknown types, commands on event topics (and events
    /// on command topics), schema versions newer than this code knows, forged sources.
    fn admit(&self, topic: &str, envelope: Envelope) -> Result<Envelope, HandlerError> {
        self.admit_type(topic, &envelope.event_type, &envelope.source)?;
        if envelope.schema_version > contracts::SCHEMA_VERSION {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "{} schema version {} is newer than the supported {}",
                envelope.event_type,
                envelope.schema_version,
                contracts::SCHEMA_VERSION
            )));
        }
        Ok(envelope)
    }

    /// The checks of [`Self::admit`] that need only the type and the source.
    fn admit_type(&self, topic: &str, message_type: &str, source: &str) -> Result<(), HandlerError> {
        if !contracts::is_known_type(message_type) {
            return Err(HandlerError::permanent(anyhow::anyhow!("unknown event type {message_type:?}")));
        }
        if contracts::is_command(message_type) != crate::topics::carries_commands(topic) {
            return Err(HandlerError::permanent(anyhow::anyhow!("{message_type} does not belong on {topic}")));
        }
        if let Some((_, expected)) = self.topics.iter().find(|(t, _)| t == topic)
            && source != expected
        {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "source {source:?} may not publish on {topic} (expected {expected:?})"
            )));
        }
        Ok(())
    }

    /// Sort a fetched message: `None` when its headers name a type this service does not act on
    /// (the topology), from the topic's publisher: it has no effect to apply, so it is
    /// acknowledged without decoding its payload. Anything else is decoded and admitted (a
    /// message whose headers are wrong fails there and is dead-lettered).
    fn sort(&self, message: &BorrowedMessage<'_>) -> Option<Result<Envelope, HandlerError>> {
        let ignored = envelope::header_value(message, envelope::header::TYPE).is_some_and(|message_type| {
            !crate::topology::acts_on(self.service, message_type)
                && envelope::header_value(message, envelope::header::SOURCE)
                    .is_some_and(|source| self.admit_type(message.topic(), message_type, source).is_ok())
        });
        (!ignored).then(|| self.decode(message))
    }

    /// Process a batch in order. Runs of messages that decode are applied in one transaction
    /// each ([`Self::apply_run`]); a run whose transaction fails is rolled back and its
    /// messages go one at a time through [`Self::process`] (retries, dead letters), so one bad
    /// message costs the others only a second try. Returns how many leading messages of the
    /// batch are done (their offsets may be stored) and why it stopped.
    pub(super) async fn process_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        consumer: &StreamConsumer<LoopContext>,
        shutdown: &CancellationToken,
    ) -> (usize, Processed) {
        let started = Instant::now();
        // `None`: a message of a type the service does not act on (the topology), acknowledged
        // unread, nothing else.
        let decoded: Vec<Option<Result<Envelope, HandlerError>>> = batch.iter().map(|m| self.sort(m)).collect();
        let spans = self.spans(batch, &decoded);
        let mut i = 0;
        while i < batch.len() {
            let run_end = (i..batch.len()).find(|&j| matches!(decoded[j], Some(Err(_)))).unwrap_or(batch.len());
            let handled: Vec<usize> = (i..run_end).filter(|&j| decoded[j].is_some()).collect();
            // A single message gains nothing from the shared path (its own path retries it),
            // and a handler that calls out never shares.
            if handled.len() >= 2 && self.handler.shares_transactions() {
                let envelopes: Vec<&Envelope> =
                    handled.iter().filter_map(|&j| decoded[j].as_ref().and_then(|d| d.as_ref().ok())).collect();
                let run_spans: Vec<tracing::Span> = handled.iter().map(|&j| spans[j].clone()).collect();
                match self.apply_run(&envelopes, &run_spans, started, shutdown).await {
                    RunOutcome::Applied => {
                        self.record_ignored(&batch[i..run_end], &decoded[i..run_end]);
                        i = run_end;
                        continue;
                    }
                    RunOutcome::Crashed => return (i, Processed::Crashed),
                    RunOutcome::Shutdown => return (i, Processed::Shutdown),
                    RunOutcome::Failed => {}
                }
            }
            // One at a time: the message that does not decode, a run of one, every message of
            // a handler that does not share, or of a run whose shared transaction failed.
            let end = run_end.max(i + 1);
            for j in i..end {
                let Some(decoded) = &decoded[j] else {
                    self.record_ignored(&batch[j..=j], &decoded[j..=j]);
                    continue;
                };
                match self.process(&batch[j], decoded, spans[j].clone(), started, consumer, shutdown).await {
                    Processed::Done => {}
                    outcome => return (j, outcome),
                }
            }
            i = end;
        }
        (batch.len(), Processed::Done)
    }

    /// A consumer span for each message the service acts on (none for the ones it ignores).
    fn spans(
        &self,
        batch: &[BorrowedMessage<'_>],
        decoded: &[Option<Result<Envelope, HandlerError>>],
    ) -> Vec<tracing::Span> {
        batch
            .iter()
            .zip(decoded)
            .map(|(m, d)| match d {
                None => tracing::Span::none(),
                Some(d) => crate::telemetry::consumer_span(self.service, &self.group, m, d.as_ref().ok()),
            })
            .collect()
    }

    fn record_ignored(&self, batch: &[BorrowedMessage<'_>], decoded: &[Option<Result<Envelope, HandlerError>>]) {
        for (message, _) in batch.iter().zip(decoded).filter(|(_, d)| d.is_none()) {
            if let Some(message_type) = envelope::header_value(message, envelope::header::TYPE) {
                m::message_ignored(self.service, message_type);
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
                    if envelopes.iter().any(|e| self.crash_hook.fires(e)) {
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

    /// One transaction for a run: the inbox records in one statement (a redelivery is skipped),
    /// the streams the handlers will load in one read ahead, the handler for each message under
    /// its span, then the events and outbox rows they wrote
    /// (deferred: one insert each) and one commit.
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
        // The run's events and outbox rows are written at the end (one statement on PostgreSQL), and
        // its outbox rows go to the relay at the commit.
        tx.keep_streams_in(&self.stream_cache);
        tx.hand_over_to(&self.outbox_signal);
        // Every inbox record of the run in one statement; the ids it did not insert were
        // processed before (or come twice in this run: the first one counts).
        let ids: Vec<Uuid> = envelopes.iter().map(|e| e.id).collect();
        let mut fresh = match inbox::record_all(&mut tx, self.service, &ids).await {
            Ok(fresh) => fresh,
            Err(err) => {
                tx.rollback().await.ok();
                return Err(err);
            }
        };
        // Every stream the run's handlers are known to load, in one read.
        let streams: Vec<StreamRef> =
            envelopes.iter().filter(|e| fresh.contains(&e.id)).flat_map(|e| self.handler.streams(e)).collect();
        if let Err(err) = event_store::prefetch(&mut tx, &streams).await {
            tx.rollback().await.ok();
            return Err(err.into());
        }
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
        if let Err(err) = tx.flush().await {
            tx.rollback().await.ok();
            return Err(err.into());
        }
        tx.commit().await.map_err(|e| HandlerError::Transient(e.into()))?;
        Ok(applied)
    }
}
