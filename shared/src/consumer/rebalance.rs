//! What the consumer's librdkafka callbacks do, and how they reach the loop: assignments and
//! revocations arrive as [`KafkaEvent`]s on a channel that the loop drains between batches (as
//! quickwit's Kafka source does), so the callbacks share no state with the loop but a flag
//! that lives in the context itself.
//!
//! One thing must happen inside the callback: before partitions are taken away, the offsets
//! of what was processed on them are committed, while this member still owns them. The loop
//! stores a message's offset only after its transaction committed (and only processes whole
//! batches between polls, where callbacks run), so committing librdkafka's stored offsets
//! there commits exactly what is durable.

use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use tokio::sync::mpsc;

use super::offsets;
use crate::metrics as m;
use crate::outbox::OutboxSignal;

/// A rebalance, as the loop learns of it (an assignment needs nothing from the loop: a newly
/// assigned partition's first message is checked against the committed offset anyway).
#[derive(Debug)]
pub(super) enum KafkaEvent {
    Revoked(Vec<(String, i32)>),
    /// The assignment was lost or the rebalance failed: every position is stale.
    Lost,
}

/// The partitions taken from this member since the loop last looked: what it knows of their
/// positions is stale (another member may have consumed them meanwhile).
#[derive(Debug, Default)]
pub(super) struct Revoked {
    pub partitions: Vec<(String, i32)>,
    pub all: bool,
}

impl Revoked {
    /// Everything revoked in the events received so far.
    pub fn drain(events: &mut mpsc::UnboundedReceiver<KafkaEvent>) -> Self {
        let mut revoked = Revoked::default();
        while let Ok(event) = events.try_recv() {
            match event {
                KafkaEvent::Revoked(partitions) => revoked.partitions.extend(partitions),
                KafkaEvent::Lost => revoked.all = true,
            }
        }
        revoked
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.partitions.is_empty()
    }
}

/// The consumer's context: records lag from librdkafka's statistics, commits before a revoke,
/// and tells the loop about rebalances.
pub(super) struct LoopContext {
    pub service: &'static str,
    pub group: String,
    pub events: mpsc::UnboundedSender<KafkaEvent>,
    /// Set once the consumer leaves its group (or is dropped unfinished): its final commit is
    /// done or abandoned, and librdkafka must not be handed a synchronous commit while it tears
    /// the membership down (it has no timeout, and with the broker gone it never returns).
    closing: AtomicBool,
    /// Told of assignments: the relay must not send rows that follow from the previous
    /// owner's before those ([`OutboxSignal::partitions_assigned`]).
    outbox_signal: OutboxSignal,
}

impl LoopContext {
    pub fn new(
        service: &'static str,
        group: String,
        events: mpsc::UnboundedSender<KafkaEvent>,
        outbox_signal: OutboxSignal,
    ) -> Self {
        Self { service, group, events, closing: AtomicBool::new(false), outbox_signal }
    }

    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()
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
    /// Commit what was processed before partitions are taken away, while this member still
    /// owns them; otherwise their next owner would read those messages again (the inbox would
    /// skip them, at a cost).
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance
            && !self.closing.load(Ordering::SeqCst)
            && let Err(err) = offsets::commit_stored(consumer, CommitMode::Sync)
        {
            tracing::warn!(service = self.service, group = %self.group, error = %err, "commit before revoke failed");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(
                    service = self.service,
                    group = %self.group,
                    partitions = tpl.count(),
                    assigned = %partition_list(tpl),
                    "partitions assigned"
                );
                self.outbox_signal.partitions_assigned();
                return;
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(
                    service = self.service,
                    group = %self.group,
                    partitions = tpl.count(),
                    revoked = %partition_list(tpl),
                    "partitions revoked"
                );
                KafkaEvent::Revoked(partitions(tpl))
            }
            Rebalance::Error(e) => {
                tracing::warn!(service = self.service, error = %e, "rebalance error");
                KafkaEvent::Lost
            }
        };
        // The loop is gone only when the consumer is being dropped: nobody to tell.
        let _ = self.events.send(event);
    }
}

/// `topic[0,3] other[1]`: which partitions a rebalance moved, for the log.
fn partition_list(tpl: &TopicPartitionList) -> String {
    let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = std::collections::BTreeMap::new();
    for (topic, partition) in partitions(tpl) {
        by_topic.entry(topic).or_default().push(partition);
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
