//! Dead letters: a message the loop gives up on goes, as it arrived, to the consuming service's
//! dead-letter topic with where it came from and why, through the outbox in a transaction of
//! its own; the inbox records that this delivery was dead-lettered.

use anyhow::Context as _;
use rdkafka::message::{BorrowedMessage, Message};
use uuid::Uuid;

use super::{ConsumerLoop, Handler, HandlerError, inbox};
use crate::envelope::header_map;
use crate::outbox::{OutboxMessage, enqueue};

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

impl<H: Handler> ConsumerLoop<H> {
    /// Write `message` to the dead-letter topic's outbox with its origin and `error`.
    pub(super) async fn dead_letter(
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
        tx.hand_over_to(&self.outbox_signal);
        // Dedupe the dead-lettering of this delivery (not of the message id, so that a
        // redriven copy is processed normally).
        let marker = dead_letter_marker(message.topic(), message.partition(), message.offset());
        if inbox::record(&mut tx, self.service, marker).await.map_err(|e| anyhow::anyhow!("{e}"))? {
            enqueue(&mut tx, &row).await.context("failed to enqueue dead letter")?;
        }
        tx.commit().await.context("failed to commit dead letter")?;
        Ok(())
    }
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
