//! One message on its own transaction: retried with backoff while it fails transiently (a
//! lost race or an unreachable dependency don't spend its attempts; an unreachable one pauses
//! the consumer's partitions meanwhile), then dead-lettered.

use std::time::Instant;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::rebalance::LoopContext;
use super::{Applied, ConsumerLoop, Handler, HandlerError, MessageContext, Processed, inbox};
use crate::envelope::Envelope;
use crate::event_store;
use crate::metrics as m;
use crate::outbox::Backoff;

impl<H: Handler> ConsumerLoop<H> {
    /// Process one message on its own: retries with backoff, then the dead-letter topic.
    /// While a dependency is unavailable the consumer's partitions are paused (see [`Paused`]).
    pub(super) async fn process(
        &self,
        message: &BorrowedMessage<'_>,
        decoded: &Result<Envelope, HandlerError>,
        span: tracing::Span,
        started: Instant,
        consumer: &StreamConsumer<LoopContext>,
        shutdown: &CancellationToken,
    ) -> Processed {
        async {
            let event_type =
                decoded.as_ref().map(|e| e.event_type.clone()).unwrap_or_else(|_| m::UNDECODABLE.to_owned());
            let mut backoff = Backoff::new(self.options.backoff_base, self.options.backoff_cap);
            let (error, attempts) =
                match self.retry(message, decoded, &event_type, started, consumer, &mut backoff, shutdown).await {
                    Ok(outcome) => return outcome,
                    Err(failed) => failed,
                };
            self.dead_letter_until_done(message, &event_type, &error, attempts, started, &mut backoff, shutdown).await
        }
        .instrument(span)
        .await
    }

    /// Attempt the message until it is applied or skipped (`Ok`), the loop must stop (`Ok`
    /// too), or it is to be dead-lettered (`Err`: why, and after how many attempts).
    #[allow(clippy::too_many_arguments)]
    async fn retry(
        &self,
        message: &BorrowedMessage<'_>,
        decoded: &Result<Envelope, HandlerError>,
        event_type: &str,
        started: Instant,
        consumer: &StreamConsumer<LoopContext>,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> Result<Processed, (HandlerError, u32)> {
        let mut paused = Paused { consumer, service: self.service, partitions: None };
        let envelope = match decoded {
            Ok(envelope) => envelope,
            Err(err) => return Err((HandlerError::Permanent(anyhow::anyhow!("{err:#}")), 1)),
        };
        let message_id = envelope.id;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match self.attempt(message_id, envelope).await {
                Ok(applied) => return Ok(self.applied(envelope, event_type, applied, attempts, started)),
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
            if !retry {
                return Err((error, attempts));
            }
            m::message_retried(self.service, event_type);
            tracing::warn!(attempt = attempts, error = %error, topic = message.topic(), "handler failed, retrying");
            tokio::select! {
                () = shutdown.cancelled() => return Ok(Processed::Shutdown),
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Count a message applied or skipped as a duplicate; the crash hook may stop the loop.
    fn applied(
        &self,
        envelope: &Envelope,
        event_type: &str,
        applied: Applied,
        attempts: u32,
        started: Instant,
    ) -> Processed {
        match applied {
            Applied::Yes => {
                m::message_handled(self.service, event_type, "ok", started.elapsed());
                let elapsed_ms = started.elapsed().as_millis() as u64;
                tracing::debug!(outcome = "ok", attempts, elapsed_ms, "message processed");
                if self.crash_hook.fires(envelope) { Processed::Crashed } else { Processed::Done }
            }
            Applied::Duplicate => {
                m::message_handled(self.service, event_type, "duplicate", started.elapsed());
                tracing::debug!(outcome = "duplicate", "message skipped: already processed");
                Processed::Done
            }
        }
    }

    /// Dead-letter the message; if even that fails (database down), keep trying.
    #[allow(clippy::too_many_arguments)]
    async fn dead_letter_until_done(
        &self,
        message: &BorrowedMessage<'_>,
        event_type: &str,
        error: &HandlerError,
        attempts: u32,
        started: Instant,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> Processed {
        loop {
            match self.dead_letter(message, error, attempts.max(1)).await {
                Ok(()) => {
                    m::dead_lettered(self.service, message.topic(), event_type);
                    tracing::Span::current().record("otel.status_code", "error");
                    m::message_handled(self.service, event_type, "dead_lettered", started.elapsed());
                    tracing::error!(error = %error, attempts, "message dead-lettered");
                    return Processed::Done;
                }
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "failed to dead-letter message, retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return Processed::Shutdown,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    /// One transaction: inbox record, handler, commit.
    async fn attempt(&self, message_id: Uuid, envelope: &Envelope) -> Result<Applied, HandlerError> {
        self.handler.before_transaction(envelope).await;
        let mut tx = self.db.begin().await.map_err(|e| HandlerError::Transient(e.into()))?;
        // As in a run: the streams the handler names read in one go, its events and outbox rows
        // written at the end (one statement on PostgreSQL).
        tx.keep_streams_in(&self.stream_cache);
        tx.hand_over_to(&self.outbox_signal);
        if !inbox::record(&mut tx, self.service, message_id).await? {
            tx.rollback().await.ok();
            return Ok(Applied::Duplicate);
        }
        event_store::prefetch(&mut tx, &self.handler.streams(envelope)).await?;
        let mut ctx = MessageContext { tx: &mut tx, message: envelope, source: self.service };
        self.handler.handle(&mut ctx).await?;
        tx.flush().await?;
        tx.commit().await.map_err(|e| HandlerError::Transient(e.into()))?;
        Ok(Applied::Yes)
    }
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
