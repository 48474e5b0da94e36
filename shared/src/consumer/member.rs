//! This replica's consumer, a member of its service's group, and how it is closed.
//!
//! Closing a consumer (librdkafka's `rd_kafka_consumer_close`, then destroy) revokes its
//! partitions and waits on librdkafka's main thread without a timeout. It may never return:
//! with the broker gone, and, seen with librdkafka 2.12 under the KIP-848 protocol, when the
//! close's incremental unassign is queued after an unsubscribe that already tore the
//! membership down. On a runtime worker that would stall every task scheduled there, and in
//! tokio's blocking pool it would stall the runtime's shutdown. So whoever drops the last
//! handle, the close runs on a thread of its own, which a caller may wait for, within a bound.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use tokio::sync::oneshot;

use super::rebalance::LoopContext;

/// The loop's consumer, shared by the loop and the blocking calls it makes (commits, metadata).
pub(super) type Kafka = Arc<Member>;

/// A consumer that, once its last handle is dropped, is marked closing and closed on a
/// detached thread.
pub(super) struct Member {
    consumer: Option<StreamConsumer<LoopContext>>,
    /// Told when the close has finished (see [`Member::leave`]).
    closed: Mutex<Option<oneshot::Sender<()>>>,
}

impl Member {
    pub fn new(consumer: StreamConsumer<LoopContext>) -> Kafka {
        Arc::new(Self { consumer: Some(consumer), closed: Mutex::new(None) })
    }

    /// Leave the group: drop this handle, and learn when the consumer is closed (when every
    /// other handle, e.g. a commit still in flight, is gone too).
    pub fn leave(this: Kafka) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut closed) = this.closed.lock() {
            *closed = Some(tx);
        }
        drop(this);
        rx
    }
}

impl Deref for Member {
    type Target = StreamConsumer<LoopContext>;

    fn deref(&self) -> &Self::Target {
        self.consumer.as_ref().expect("the consumer is only taken when dropped")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let Some(consumer) = self.consumer.take() else { return };
        // No synchronous commit from the revoke callback from here on: it has no timeout.
        // What was processed and not committed is read again by the next owner and skipped
        // by the inbox.
        consumer.context().close();
        let closed = self.closed.lock().ok().and_then(|mut closed| closed.take());
        let closing = std::thread::Builder::new().name("consumer-close".to_owned()).spawn(move || {
            consumer.unsubscribe();
            drop(consumer);
            if let Some(closed) = closed {
                let _ = closed.send(());
            }
        });
        if let Err(err) = closing {
            tracing::warn!(error = %err, "could not start a thread to close the consumer: it is leaked");
        }
    }
}
