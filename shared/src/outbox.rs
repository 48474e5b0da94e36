//! The transactional outbox and its relay.
//!
//! A handler writes the messages it wants published as outbox rows in the same transaction as
//! its events ([`enqueue`]), so a message exists if and only if the state change committed.
//! The [`Relay`] then publishes the rows in id order with an idempotent producer and deletes
//! each row only after the broker acknowledged it: a row in the table is a row not yet
//! published (or published and not yet deleted, which a crash turns into a second copy).
//!
//! A transaction [handed over](crate::db::Tx::hand_over_to) to the process's [`OutboxSignal`]
//! passes the rows it wrote to the relay at its commit, and the relay sends them without
//! reading them back, as long as their ids continue those it has accounted for. It reads the
//! table (a sweep) only for what it cannot account for: at start, after a lost lease or a failed
//! send, behind a gap in the ids that does not close within [`RelayOptions::gap_grace`] (a row
//! another replica or a crashed process committed), when a commit notified without handing
//! over, and every [`RelayOptions::poll_interval`]. A key's rows commit in id order (they are
//! written by transactions on that key's stream, which its `(stream_id, version)` index
//! serialises), so a row behind a gap waits for the sweep that sends the gap first. A row
//! that follows from another process's row without a gap in between is one written after a
//! consumer took over that process's partitions, so an assignment makes the relay sweep before
//! it sends anything handed over after it ([`OutboxSignal::partitions_assigned`]). What that
//! leaves open is a member that lost its partitions without noticing and commits afterwards:
//! a row following from its last one can overtake it, once, until the next sweep.
//!
//! Several relays may run against one database (replicas): a lease row lets one of them publish
//! at a time, so a key's rows leave in order. A leaseholder that stalls past its lease (longer
//! than [`RelayOptions::lease`]: a stopped process, a long pause) while holding a batch it read
//! is fenced: it checks the lease by its own clock right before it sends, and sends nothing
//! once the lease lapsed, since another relay may have taken over and sent those rows and later
//! ones of the same keys. What fencing cannot stop is a stall in the instant between that check
//! and the hand-over to the producer, or records already queued inside the producer: such a
//! row is published twice, after later rows of its key. Consumers dedupe by message id (the
//! inbox), which makes the second copy harmless, and a key's first deliveries stay in order.
//!
//! Published rows are deleted, not kept: the topic holds them. Deleting measured cheaper than
//! marking them published and pruning them later (BENCHMARKS.md, optimisation 7): one dead
//! tuple per row instead of two, and no index entries written for the mark.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use sqlx::Arguments as _;
use sqlx::postgres::PgArguments;
use sqlx::types::Json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::db::{Db, Tx, TxConn};
use crate::envelope::Envelope;
use crate::event_store::{EventRow, StoreError};
use crate::metrics as m;
use crate::on_tx;
use crate::telemetry;

/// A message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub topic: String,
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl OutboxMessage {
    /// A saga message: keyed by its subject (the order id).
    pub fn from_envelope(topic: &str, envelope: &Envelope) -> Self {
        Self {
            topic: topic.to_owned(),
            key: envelope.subject.clone(),
            headers: envelope.headers(),
            payload: envelope.payload_bytes(),
        }
    }
}

/// How a relay learns of commits.
///
/// [`notify`](Self::notify) says "rows committed, look in the table": the relay sweeps.
/// A transaction [handed over](crate::db::Tx::hand_over_to) to the signal passes the rows it
/// wrote at its commit instead, and the relay sends them without reading them back. Rows stay
/// in the table until they are published and deleted, so a crash loses nothing: the next sweep
/// finds whatever was handed over and not yet deleted.
#[derive(Debug, Clone, Default)]
pub struct OutboxSignal(Arc<SignalInner>);

#[derive(Debug, Default)]
struct SignalInner {
    notify: Notify,
    handed: std::sync::Mutex<Handed>,
}

/// Rows handed over since the relay last took them.
#[derive(Debug, Default)]
struct Handed {
    rows: Vec<Row>,
    /// A commit notified without handing over its rows (or rows were dropped): sweep.
    sweep: bool,
    /// Streams this process did not write may have been written by another since the last
    /// sweep (a consumer was assigned partitions): account for everything afresh.
    forget: bool,
    /// A relay reads this signal; without one, rows are not kept.
    reader: bool,
}

/// Rows held for the relay at most; past it, later ones are dropped and the relay sweeps.
const HANDED_MAX: usize = 16_384;

impl OutboxSignal {
    /// Rows were committed that the relay must find in the table.
    pub fn notify(&self) {
        if let Ok(mut handed) = self.0.handed.lock() {
            handed.sweep = true;
        }
        self.0.notify.notify_one();
    }

    /// This process's consumer was just assigned partitions: the streams behind them were
    /// written by their previous owner, whose last rows may have committed after the relay's
    /// last sweep with ids below those it accounted for. Rows that follow from them must not
    /// overtake them: the relay sweeps before it sends anything handed over after this.
    pub fn partitions_assigned(&self) {
        if let Ok(mut handed) = self.0.handed.lock() {
            handed.forget = true;
        }
        self.0.notify.notify_one();
    }

    /// Rows just committed, in id order: the relay sends them without reading the table.
    pub(crate) fn hand_over(&self, rows: Vec<Row>) {
        if rows.is_empty() {
            return;
        }
        if let Ok(mut handed) = self.0.handed.lock() {
            if !handed.reader {
                return;
            }
            if handed.rows.len() + rows.len() > HANDED_MAX {
                handed.sweep = true;
            } else {
                handed.rows.extend(rows);
            }
        }
        self.0.notify.notify_one();
    }

    fn attach_reader(&self) {
        if let Ok(mut handed) = self.0.handed.lock() {
            handed.reader = true;
        }
    }

    /// What was handed over since the last call, whether a sweep was asked for, and whether
    /// the relay must account for everything afresh.
    fn take(&self) -> (Vec<Row>, bool, bool) {
        match self.0.handed.lock() {
            Ok(mut handed) => (
                std::mem::take(&mut handed.rows),
                std::mem::take(&mut handed.sweep),
                std::mem::take(&mut handed.forget),
            ),
            Err(_) => (Vec::new(), true, true),
        }
    }

    async fn notified(&self) {
        self.0.notify.notified().await;
    }
}

/// The outbox rows a transaction wrote, kept until its commit to hand over
/// ([`crate::db::Tx::hand_over_to`]).
#[derive(Debug)]
pub(crate) struct Handoff {
    pub(crate) signal: OutboxSignal,
    rows: Vec<Row>,
}

impl Handoff {
    pub(crate) fn new(signal: OutboxSignal) -> Self {
        Self { signal, rows: Vec::new() }
    }

    /// After the commit: pass the rows to the relay.
    pub(crate) fn committed(self) {
        self.signal.hand_over(self.rows);
    }
}

/// Write a message to the outbox inside the caller's transaction (at its flush, when it
/// defers its writes).
#[tracing::instrument(skip_all, fields(messaging.destination.name = %message.topic, order.id = %message.key))]
pub async fn enqueue(tx: &mut Tx, message: &OutboxMessage) -> Result<(), sqlx::Error> {
    if let Some(deferred) = tx.deferred_mut() {
        deferred.outbox.push(message.clone());
        return Ok(());
    }
    write(tx, vec![message.clone()]).await
}

/// Rows per insert statement on SQLite: 5 parameters each, well under its limit.
const ROWS_PER_INSERT: usize = 512;

/// The outbox insert on PostgreSQL: a column per array, so one statement shape whatever the
/// number of rows (prepared once per connection).
const PG_INSERT_OUTBOX: &str = "INSERT INTO outbox (topic, msg_key, headers, payload, created_at)
     SELECT topic, msg_key, headers, payload, $5::timestamptz
     FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::bytea[]) AS m(topic, msg_key, headers, payload)
     RETURNING id";

/// [`PG_INSERT_OUTBOX`] after the events insert ([`crate::event_store::PG_INSERT_EVENTS`], its
/// parameters first), in one statement: a data-modifying `WITH` runs to completion whether or
/// not the statement reads it, and a unique violation in it fails the whole statement.
const PG_INSERT_EVENTS_AND_OUTBOX: &str = concat!(
    "WITH appended AS (",
    crate::event_store::pg_insert_events!(),
    ")
     INSERT INTO outbox (topic, msg_key, headers, payload, created_at)
     SELECT topic, msg_key, headers, payload, $13::timestamptz
     FROM UNNEST($9::text[], $10::text[], $11::jsonb[], $12::bytea[]) AS m(topic, msg_key, headers, payload)
     RETURNING id"
);

/// Insert outbox rows in the order given (their ids follow it), and keep them for the relay if
/// the transaction hands its rows over.
pub(crate) async fn write(tx: &mut Tx, messages: Vec<OutboxMessage>) -> Result<(), sqlx::Error> {
    write_with_events(tx, &[], messages).await.map_err(|err| match err {
        StoreError::Db(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    })
}

/// Insert event rows, then outbox rows in the order given (their ids follow it), and keep the
/// outbox rows for the relay if the transaction hands its rows over. On PostgreSQL both go in
/// one statement, one round trip ([`PG_INSERT_EVENTS_AND_OUTBOX`]); on SQLite, which has
/// neither arrays nor data-modifying `WITH`s, in as few statements per table as their number
/// allows. A lost race on an event's version is a [`StoreError::Conflict`].
pub(crate) async fn write_with_events(
    tx: &mut Tx,
    events: &[EventRow],
    messages: Vec<OutboxMessage>,
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return crate::event_store::insert_rows(tx, events).await;
    }
    let now = Utc::now();
    let ids = if let TxConn::Postgres(conn) = &mut tx.conn {
        let mut args = PgArguments::default();
        let sql = if events.is_empty() {
            PG_INSERT_OUTBOX
        } else {
            crate::event_store::add_event_columns(&mut args, events)?;
            PG_INSERT_EVENTS_AND_OUTBOX
        };
        add_outbox_columns(&mut args, &messages, now)?;
        sqlx::query_scalar_with::<_, i64, _>(sql, args)
            .fetch_all(&mut **conn)
            .await
            .map_err(|e| crate::event_store::insert_error(e, events))?
    } else {
        crate::event_store::insert_rows(tx, events).await?;
        insert_sqlite(tx, &messages, now).await?
    };
    if let Some(handoff) = tx.handoff_mut() {
        // Both backends number a multi-row insert's rows in the order given (`VALUES`, or the
        // arrays `UNNEST` walks); RETURNING promises no order, so the ids are sorted to pair
        // them with the messages.
        let mut ids = ids;
        ids.sort_unstable();
        handoff.rows.extend(ids.into_iter().zip(messages).map(|(id, message)| Row {
            id,
            topic: message.topic,
            key: message.key,
            headers: message.headers,
            payload: message.payload,
            created_at: now,
        }));
    }
    Ok(())
}

/// Bind `messages` as the outbox columns of [`PG_INSERT_OUTBOX`], in its order, after whatever
/// `args` holds.
fn add_outbox_columns(
    args: &mut PgArguments,
    messages: &[OutboxMessage],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    args.add(messages.iter().map(|m| m.topic.as_str()).collect::<Vec<_>>()).map_err(sqlx::Error::Encode)?;
    args.add(messages.iter().map(|m| m.key.as_str()).collect::<Vec<_>>()).map_err(sqlx::Error::Encode)?;
    args.add(messages.iter().map(|m| Json(&m.headers)).collect::<Vec<_>>()).map_err(sqlx::Error::Encode)?;
    args.add(messages.iter().map(|m| m.payload.as_slice()).collect::<Vec<_>>()).map_err(sqlx::Error::Encode)?;
    args.add(now).map_err(sqlx::Error::Encode)
}

/// Insert outbox rows on SQLite, in as few statements as their number allows; their ids.
async fn insert_sqlite(tx: &mut Tx, messages: &[OutboxMessage], now: DateTime<Utc>) -> Result<Vec<i64>, sqlx::Error> {
    let mut ids = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO outbox (topic, msg_key, headers, payload, created_at) VALUES {} RETURNING id",
            crate::db::value_rows(chunk.len(), 5)
        );
        let chunk_ids: Vec<i64> = on_tx!(tx, |conn| {
            let mut query = sqlx::query_scalar(&sql);
            for message in chunk {
                query = query
                    .bind(&message.topic)
                    .bind(&message.key)
                    .bind(Json(&message.headers))
                    .bind(&message.payload)
                    .bind(now);
            }
            query.fetch_all(conn).await
        })?;
        ids.extend(chunk_ids);
    }
    Ok(ids)
}

/// How many rows are waiting to be published.
pub async fn backlog(db: &Db) -> Result<i64, sqlx::Error> {
    crate::on_db!(db, |pool| { sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox").fetch_one(pool).await })
}

#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Rows fetched and sent per sweep.
    pub batch_size: i64,
    /// Longest time between sweeps of the table when handed-over rows account for every commit.
    pub poll_interval: Duration,
    /// How long a relay holds the publishing lease without renewing it: also how long a
    /// replica's outbox stands still when its leaseholder is killed, before another takes over.
    /// The holder renews it every third of this.
    pub lease: Duration,
    /// How long one send may wait for the broker's acknowledgement.
    pub send_timeout: Duration,
    /// How long sent rows may wait to be deleted, so that one statement deletes many. A crash
    /// in between sends them again (consumers skip the copies).
    pub mark_interval: Duration,
    /// How long handed-over rows wait behind a gap in the ids (a transaction that took a
    /// lower id and has not committed yet) before the relay sweeps the table to close it.
    pub gap_grace: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            batch_size: 256,
            poll_interval: Duration::from_millis(200),
            lease: Duration::from_secs(2),
            send_timeout: Duration::from_secs(30),
            mark_interval: Duration::from_millis(50),
            gap_grace: Duration::from_millis(10),
        }
    }
}

type RawRow = (i64, String, String, Json<Vec<(String, String)>>, Vec<u8>, DateTime<Utc>);

/// An outbox row to send.
#[derive(Debug)]
pub(crate) struct Row {
    id: i64,
    topic: String,
    key: String,
    headers: Vec<(String, String)>,
    payload: Vec<u8>,
    created_at: DateTime<Utc>,
}

/// What a leaseholding relay knows of the table between rounds.
#[derive(Debug, Default)]
struct Progress {
    /// The lowest id not accounted for: every row below it that had committed by the last
    /// sweep is sent, and so is every handed-over row below it. None until a sweep read the
    /// whole backlog, and again after anything that makes it unsure.
    frontier: Option<i64>,
    /// Handed-over rows waiting behind a gap in the ids.
    waiting: BTreeMap<i64, Row>,
    /// Ids the last sweep sent: a row that committed before that sweep's read and was handed
    /// over after the relay took its handed-over rows was sent by it.
    swept: HashSet<i64>,
    /// Sent and acknowledged, not yet deleted, and since when.
    to_delete: Vec<i64>,
    to_delete_since: Option<Instant>,
    last_sweep: Option<Instant>,
    /// Whether the last round held the lease: one that did not waits a poll interval.
    held: bool,
}

impl Progress {
    /// Forget what the relay knew of the table (it lost the lease, or a send failed): the next
    /// round sweeps it.
    fn forget(&mut self) {
        self.frontier = None;
        self.waiting.clear();
        self.swept.clear();
    }

    /// Take in rows handed over; return those that may go now, in id order: the ones that
    /// continue the ids from the frontier, and late ones below it (committed after the sweep
    /// that passed their ids). What follows a gap waits.
    fn ready(&mut self, handed: Vec<Row>) -> Vec<Row> {
        for row in handed {
            if !self.swept.contains(&row.id) {
                self.waiting.insert(row.id, row);
            }
        }
        let Some(mut frontier) = self.frontier else {
            return Vec::new();
        };
        let mut ready = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            let id = *entry.key();
            if id > frontier {
                break;
            }
            frontier = frontier.max(id + 1);
            ready.push(entry.remove());
        }
        self.frontier = Some(frontier);
        ready
    }

    /// Why the table must be swept now, if it must.
    fn sweep_reason(&self, asked: bool, options: &RelayOptions) -> Option<&'static str> {
        if self.frontier.is_none() {
            Some("unknown")
        } else if asked {
            Some("notified")
        } else if self.waiting.first_key_value().is_some_and(|(_, row)| waited(row) >= options.gap_grace) {
            Some("gap")
        } else if self.last_sweep.is_none_or(|at| at.elapsed() >= options.poll_interval) {
            Some("poll")
        } else {
            None
        }
    }

    /// How long the run loop may wait for a signal before the next round is due.
    fn next_round_in(&self, options: &RelayOptions) -> Duration {
        if !self.held {
            return options.poll_interval;
        }
        let mut wait = options.poll_interval.saturating_sub(self.last_sweep.map_or(Duration::MAX, |at| at.elapsed()));
        if let Some((_, row)) = self.waiting.first_key_value() {
            wait = wait.min(options.gap_grace.saturating_sub(waited(row)));
        }
        if let Some(since) = self.to_delete_since {
            wait = wait.min(options.mark_interval.saturating_sub(since.elapsed()));
        }
        wait
    }
}

fn waited(row: &Row) -> Duration {
    (Utc::now() - row.created_at).to_std().unwrap_or_default()
}

/// Fault injection for the backbone's own tests (the `fault-injection` feature only): called
/// with the number of rows just sent, before they are deleted; returning true stops
/// the relay there, as if the process died.
#[cfg(feature = "fault-injection")]
pub type RelayCrashHook = Arc<dyn Fn(usize) -> bool + Send + Sync>;

/// Fault injection for the backbone's own tests (the `fault-injection` feature only): awaited
/// after each batch is read and before it is sent, as a process stopped there (`SIGSTOP`)
/// would wait.
#[cfg(feature = "fault-injection")]
pub type RelayStallHook = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Publishes one database's outbox to Kafka.
pub struct Relay {
    service: &'static str,
    db: Db,
    producer: FutureProducer,
    signal: OutboxSignal,
    options: RelayOptions,
    holder: Uuid,
    /// When this relay last renewed its lease (it holds it until then + the lease).
    renewed: std::sync::Mutex<Option<Instant>>,
    progress: tokio::sync::Mutex<Progress>,
    #[cfg(feature = "fault-injection")]
    crash_hook: Option<RelayCrashHook>,
    #[cfg(feature = "fault-injection")]
    stall_hook: Option<RelayStallHook>,
}

impl Relay {
    pub fn new(
        service: &'static str,
        db: Db,
        producer: FutureProducer,
        signal: OutboxSignal,
        options: RelayOptions,
    ) -> Self {
        signal.attach_reader();
        Self {
            service,
            db,
            producer,
            signal,
            options,
            holder: Uuid::now_v7(),
            renewed: std::sync::Mutex::new(None),
            progress: Default::default(),
            #[cfg(feature = "fault-injection")]
            crash_hook: None,
            #[cfg(feature = "fault-injection")]
            stall_hook: None,
        }
    }

    /// Install a crash hook (fault-injection tests only).
    #[cfg(feature = "fault-injection")]
    pub fn with_crash_hook(mut self, hook: RelayCrashHook) -> Self {
        self.crash_hook = Some(hook);
        self
    }

    /// Install a stall hook (fault-injection tests only).
    #[cfg(feature = "fault-injection")]
    pub fn with_stall_hook(mut self, hook: RelayStallHook) -> Self {
        self.stall_hook = Some(hook);
        self
    }

    /// Publish until `shutdown`; then finish the round in flight, delete what was sent and flush
    /// the producer.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut last_gauge = Instant::now();
        loop {
            match self.round().await {
                Err(err) if err.is::<Crashed>() => return,
                Ok(published) => {
                    backoff.reset();
                    if published as i64 >= self.options.batch_size {
                        continue; // more waiting: go again at once
                    }
                }
                Err(err) => {
                    m::outbox_errors(self.service);
                    tracing::warn!(service = self.service, error = format!("{err:#}"), "outbox relay round failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff.next_delay()) => continue,
                    }
                }
            }
            if last_gauge.elapsed() >= Duration::from_secs(5) {
                last_gauge = Instant::now();
                if let Ok(n) = backlog(&self.db).await {
                    m::outbox_backlog(self.service, n);
                }
            }
            let wait = self.progress.lock().await.next_round_in(&self.options);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.signal.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        // Drain what is committed but unsent, within a bound, then flush.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            self.signal.notify(); // sweep: what was committed last may not be handed over yet
            match self.round().await {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
        if let Err(err) = self.delete_sent(&mut *self.progress.lock().await, true).await {
            tracing::warn!(service = self.service, error = format!("{err:#}"), "failed to delete sent outbox rows");
        }
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
        self.release_lease().await;
    }

    /// One round: hold the lease; send the rows handed over that continue the ids already
    /// sent; sweep the table when something is unaccounted for (at start, a gap in the ids
    /// that does not close, a commit that did not hand its rows over, the poll interval);
    /// delete what the broker acknowledged. Returns how many rows were published.
    pub async fn round(&self) -> anyhow::Result<usize> {
        let mut progress = self.progress.lock().await;
        if !self.lease_current() {
            // Not held, or lapsed: another relay may have sent rows since.
            progress.forget();
        }
        progress.held = false;
        if !self.acquire_lease().await? {
            self.delete_sent(&mut progress, true).await?;
            progress.forget();
            self.signal.take(); // the leaseholder sweeps them
            return Ok(0);
        }
        progress.held = true;
        let (handed, asked, forget) = self.signal.take();
        if forget {
            progress.forget();
        }
        let ready = progress.ready(handed);
        let mut published = 0;
        if !ready.is_empty() {
            let sent = self.send(&mut progress, &ready).await?.unwrap_or_default();
            published += sent.len();
            progress.to_delete.extend(sent);
            progress.to_delete_since.get_or_insert_with(Instant::now);
        }
        if let Some(reason) = progress.sweep_reason(asked, &self.options) {
            published += self.sweep(&mut progress, reason).await?;
        }
        self.delete_sent(&mut progress, false).await?;
        Ok(published)
    }

    /// Read the oldest rows and send them. A sweep that read fewer rows than a batch
    /// saw the whole backlog: the handed-over rows continue from the highest id it sent.
    async fn sweep(&self, progress: &mut Progress, reason: &'static str) -> anyhow::Result<usize> {
        // Deleted first, or the read would return them again.
        self.delete_sent(progress, true).await?;
        m::outbox_sweep(self.service, reason);
        progress.last_sweep = Some(Instant::now());
        let rows = self.fetch_batch().await?;
        if rows.is_empty() {
            m::outbox_backlog(self.service, 0);
        }
        let whole_backlog = (rows.len() as i64) < self.options.batch_size;
        for row in &rows {
            progress.waiting.remove(&row.id);
        }
        let highest = rows.last().map(|row| row.id);
        #[cfg(feature = "fault-injection")]
        if !rows.is_empty()
            && let Some(stall) = &self.stall_hook
        {
            stall().await;
        }
        let Some(sent) = self.send(progress, &rows).await? else {
            return Ok(0); // fenced
        };
        self.delete_published(&sent).await?;
        progress.swept = sent.iter().copied().collect();
        progress.frontier = match (whole_backlog, progress.frontier.max(highest.map(|id| id + 1))) {
            (false, _) => None,
            (true, Some(frontier)) => Some(frontier),
            // Nothing to send and no frontier yet: the rows to come continue the table's ids.
            (true, None) => self.highest_id().await?.map(|id| id + 1),
        };
        if let Some(frontier) = progress.frontier {
            // Handed over before this read and not read by it: sent already.
            progress.waiting.retain(|id, _| *id >= frontier);
        }
        Ok(sent.len())
    }

    /// Send rows in id order and wait for the broker; return the ids it acknowledged, in order,
    /// up to the first failure. With an idempotent producer a failed send fails the ones queued
    /// behind it on that partition too, and stopping at the first failure keeps every key's
    /// order on the next round: the relay forgets what it knew and sweeps. None when fenced.
    async fn send(&self, progress: &mut Progress, rows: &[Row]) -> anyhow::Result<Option<Vec<i64>>> {
        if rows.is_empty() {
            return Ok(Some(Vec::new()));
        }
        // Fenced: a relay that stalled (a stopped process, a long pause) past its lease since
        // it last held it sends nothing, since another relay may hold the lease now and have
        // sent these rows and later ones of the same keys. It reads again once it holds the
        // lease again.
        if !self.lease_current() {
            m::outbox_lease_lapsed(self.service);
            tracing::warn!(
                service = self.service,
                rows = rows.len(),
                "the outbox lease lapsed before the batch was sent: not sending it"
            );
            progress.forget();
            return Ok(None);
        }
        // Each row is sent in a producer span under the context that enqueued it; the span's
        // own context replaces the row's `traceparent`, so consumers continue under it.
        let spans_and_headers: Vec<_> =
            rows.iter().map(|row| telemetry::producer_span(self.service, &row.topic, &row.key, &row.headers)).collect();
        let sends = rows.iter().zip(&spans_and_headers).map(|(row, (span, row_headers))| {
            let mut headers = OwnedHeaders::new_with_capacity(row_headers.len());
            for (k, v) in row_headers {
                headers = headers.insert(Header { key: k, value: Some(v) });
            }
            let record = FutureRecord::to(&row.topic).key(&row.key).payload(&row.payload).headers(headers);
            self.producer.send(record, self.options.send_timeout).instrument(span.clone())
        });
        let results = join_all(sends).await;
        for ((row, (span, _)), result) in rows.iter().zip(&spans_and_headers).zip(&results) {
            match result {
                Ok(delivery) => {
                    telemetry::record_send_result(span, Ok((delivery.partition, delivery.offset)));
                    // Where the broker says it put the row, to read back when a broker is
                    // suspected of losing records it acknowledged (offset -1: acknowledged
                    // without an offset, as librdkafka reports a duplicate-sequence answer).
                    tracing::debug!(
                        service = self.service,
                        outbox.id = row.id,
                        messaging.destination.name = %row.topic,
                        messaging.kafka.message.key = %row.key,
                        messaging.destination.partition.id = delivery.partition,
                        messaging.kafka.offset = delivery.offset,
                        "broker acknowledged outbox row"
                    );
                }
                Err((err, _)) => telemetry::record_send_result(span, Err(err)),
            }
        }
        drop(spans_and_headers);
        #[cfg(feature = "fault-injection")]
        if let Some(hook) = &self.crash_hook
            && hook(results.len())
        {
            return Err(Crashed.into());
        }

        let mut sent = Vec::with_capacity(rows.len());
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(_) => {
                    m::outbox_published(self.service, &row.topic, waited(row));
                    sent.push(row.id);
                }
                Err((err, _)) => {
                    // What was acknowledged is deleted; the rest is read again by a sweep.
                    let deleted = self.delete_published(&sent).await;
                    progress.forget();
                    deleted?;
                    return Err(anyhow::Error::new(err).context("broker did not acknowledge an outbox row"));
                }
            }
        }
        Ok(Some(sent))
    }

    /// Delete the rows sent since the last deletion: when `now`, else once they waited the
    /// mark interval or fill a batch.
    async fn delete_sent(&self, progress: &mut Progress, now: bool) -> Result<(), sqlx::Error> {
        let due = progress.to_delete_since.is_some_and(|since| since.elapsed() >= self.options.mark_interval)
            || progress.to_delete.len() as i64 >= self.options.batch_size;
        if progress.to_delete.is_empty() || !(now || due) {
            return Ok(());
        }
        self.delete_published(&progress.to_delete).await?;
        progress.to_delete.clear();
        progress.to_delete_since = None;
        Ok(())
    }

    async fn fetch_batch(&self) -> Result<Vec<Row>, sqlx::Error> {
        const SQL: &str = "SELECT id, topic, msg_key, headers, payload, created_at FROM outbox ORDER BY id LIMIT $1";
        crate::on_db!(&self.db, |pool| {
            let rows: Vec<RawRow> = sqlx::query_as(SQL).bind(self.options.batch_size).fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|(id, topic, key, Json(headers), payload, created_at)| Row {
                    id,
                    topic,
                    key,
                    headers,
                    payload,
                    created_at,
                })
                .collect())
        })
    }

    /// The highest id in the outbox.
    async fn highest_id(&self) -> Result<Option<i64>, sqlx::Error> {
        crate::on_db!(&self.db, |pool| sqlx::query_scalar("SELECT MAX(id) FROM outbox").fetch_one(pool).await)
    }

    /// Delete published rows: one statement, in no explicit transaction (deleting is
    /// idempotent, and a row left behind by a crash is only sent again). On PostgreSQL the ids
    /// are one array parameter, so the statement is prepared once per connection whatever the
    /// count.
    async fn delete_published(&self, ids: &[i64]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        match &self.db {
            Db::Postgres(pool) => {
                // The range keeps the primary-key index in the plan whatever the planner
                // guesses about the array (a cached generic plan once scanned the whole table).
                let (low, high) = (ids.iter().min(), ids.iter().max());
                sqlx::query("DELETE FROM outbox WHERE id BETWEEN $1 AND $2 AND id = ANY($3)")
                    .bind(low)
                    .bind(high)
                    .bind(ids)
                    .execute(pool)
                    .await?;
            }
            Db::Sqlite(pool) => {
                for chunk in ids.chunks(500) {
                    let sql = format!("DELETE FROM outbox WHERE id IN ({})", crate::db::placeholders(1, chunk.len()));
                    let mut q = sqlx::query(&sql);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    q.execute(pool).await?;
                }
            }
        }
        Ok(())
    }

    /// Take or renew the lease; false while another live relay holds it. A lease renewed less
    /// than a third of its length ago is still held (nobody may take it before it expires), so
    /// a busy relay writes the lease row a few times per lease rather than once per round.
    async fn acquire_lease(&self) -> anyhow::Result<bool> {
        let held = self.renewed.lock().ok().and_then(|r| *r).is_some_and(|at| at.elapsed() < self.options.lease / 3);
        if held {
            return Ok(true);
        }
        // Measured from before the request: the lease runs from no later than this.
        let asked_at = Instant::now();
        let now_ms = Utc::now().timestamp_millis();
        let expires = now_ms + self.options.lease.as_millis() as i64;
        let holder: anyhow::Result<Option<Uuid>> = crate::on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "INSERT INTO outbox_lease (name, holder, expires_at_ms) VALUES ('relay', $1, $2)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms
                 WHERE outbox_lease.holder = excluded.holder OR outbox_lease.expires_at_ms < $3
                 RETURNING holder",
            )
            .bind(self.holder)
            .bind(expires)
            .bind(now_ms)
            .fetch_optional(pool)
            .await
        })
        .context("failed to acquire the outbox lease");
        let held = matches!(holder, Ok(Some(h)) if h == self.holder);
        if let Ok(mut renewed) = self.renewed.lock() {
            *renewed = held.then_some(asked_at);
        }
        holder.map(|_| held)
    }

    /// Is the lease still this relay's by its own clock (renewed less than a lease ago)? A
    /// relay that finds it lapsed gives it up here, and asks the database again next round.
    fn lease_current(&self) -> bool {
        let Ok(mut renewed) = self.renewed.lock() else {
            return false;
        };
        let current = renewed.is_some_and(|at| at.elapsed() < self.options.lease);
        if !current {
            *renewed = None;
        }
        current
    }

    async fn release_lease(&self) {
        if let Ok(mut renewed) = self.renewed.lock() {
            *renewed = None;
        }
        let _ = crate::on_db!(&self.db, |pool| {
            sqlx::query("DELETE FROM outbox_lease WHERE name = 'relay' AND holder = $1")
                .bind(self.holder)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        });
    }
}

/// The relay stopped through its crash hook.
#[derive(Debug, thiserror::Error)]
#[error("relay crashed (fault injection)")]
struct Crashed;

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap, attempt: 0 }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: base·2ⁿ capped, with ±25 % jitter so replicas do not retry in step.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32.checked_shl(self.attempt.min(16)).unwrap_or(u32::MAX));
        self.attempt = self.attempt.saturating_add(1);
        let capped = exp.min(self.cap);
        let jitter = rand::random_range(0.75..1.25);
        capped.mul_f64(jitter).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(13));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(200)));
        assert!(delays[9] >= Duration::from_millis(150));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(13));
    }
}
