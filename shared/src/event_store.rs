//! The append-only event store: every state change of every aggregate is an event in a
//! stream, with a global position, a per-stream version and a schema version.
//!
//! Appends use optimistic concurrency: the caller says which version it read, and a writer
//! that lost the race gets [`StoreError::Conflict`] (the unique `(stream_id, version)` index
//! decides). Old schema versions are upcast on read by the registered [`Upcaster`]s.
//!
//! [`EventStore::load`] and [`EventStore::save`] fold an [`Aggregate`] from a snapshot plus the
//! events after it, so hot streams (a popular SKU) are not re-folded from the start.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Arguments as _;
use sqlx::postgres::PgArguments;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Tx, TxConn, is_unique_violation};
use crate::on_tx;

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
}

impl NewEvent {
    pub fn new<T: Serialize>(event_type: &str, schema_version: i32, payload: &T) -> Result<Self, StoreError> {
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            schema_version,
            payload: serde_json::to_value(payload).map_err(StoreError::Encode)?,
            metadata: serde_json::Value::Object(Default::default()),
        })
    }

    /// Attach metadata (e.g. the causing message id and the trace context).
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: i64,
    pub stream_id: String,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("concurrency conflict on stream {stream}: version {expected} is no longer current")]
    Conflict { stream: String, expected: i64 },
    #[error("failed to encode event")]
    Encode(#[source] serde_json::Error),
    #[error("failed to decode event {event_type} v{schema_version} at position {position}")]
    Decode {
        event_type: String,
        schema_version: i32,
        position: i64,
        #[source]
        source: serde_json::Error,
    },
    #[error("no upcaster from {event_type} v{from} (current is v{current})")]
    MissingUpcaster { event_type: String, from: i32, current: i32 },
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

impl StoreError {
    /// Worth retrying the whole unit of work (a lost race or an unreachable database)?
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Conflict { .. } => true,
            StoreError::Db(e) => crate::db::is_unavailable(e) || crate::db::is_lost_race(e),
            _ => false,
        }
    }
}

/// Turns an old schema version of one event type into the next one.
pub type UpcastFn = fn(serde_json::Value) -> serde_json::Value;

/// The registered upcasters: `(event type, from version) -> step to from+1`, plus the current
/// version per type. Reading an event below current applies every step in turn.
#[derive(Debug, Default, Clone)]
pub struct Upcaster {
    steps: HashMap<(String, i32), UpcastFn>,
    current: HashMap<String, i32>,
}

impl Upcaster {
    /// Register the step from `from` to `from + 1` for `event_type`.
    pub fn register(mut self, event_type: &str, from: i32, step: UpcastFn) -> Self {
        self.steps.insert((event_type.to_owned(), from), step);
        let current = self.current.entry(event_type.to_owned()).or_insert(from + 1);
        *current = (*current).max(from + 1);
        self
    }

    /// The current schema version of a type (1 when it was never changed).
    pub fn current_version(&self, event_type: &str) -> i32 {
        self.current.get(event_type).copied().unwrap_or(1)
    }

    /// Bring `(version, payload)` up to the current version.
    pub fn upcast(
        &self,
        event_type: &str,
        mut version: i32,
        mut payload: serde_json::Value,
    ) -> Result<(i32, serde_json::Value), StoreError> {
        let current = self.current_version(event_type);
        while version < current {
            let step = self.steps.get(&(event_type.to_owned(), version)).ok_or_else(|| {
                StoreError::MissingUpcaster { event_type: event_type.to_owned(), from: version, current }
            })?;
            payload = step(payload);
            version += 1;
        }
        Ok((version, payload))
    }
}

/// A domain aggregate folded from its stream.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send {
    type Event: Serialize + DeserializeOwned + Send + Sync;
    /// Bump when the aggregate's state shape changes, to ignore older snapshots.
    const SNAPSHOT_SCHEMA: i32 = 1;
    /// Take a snapshot once the stream has grown this many events past the last one. Hot
    /// streams (a SKU's stock, a carrier's day, a customer's account) are loaded once per
    /// saga step and grow by one event per order: a load reads on average half this many
    /// events (payloads decoded on both sides of the connection), and a save writes one
    /// snapshot per this many events. 16 measured cheaper than 64 (BENCHMARKS.md).
    const SNAPSHOT_EVERY: i64 = 16;
    /// False for streams that stay short (one per order: a handful of events for its whole
    /// life): their loads skip the snapshot lookup, a round trip that would find nothing, and
    /// their saves never write one.
    const SNAPSHOTS: bool = true;
    fn event_type(event: &Self::Event) -> &'static str;
    fn apply(&mut self, event: &Self::Event);
}

/// An aggregate's state and the stream version it reflects.
#[derive(Debug, Clone, Default)]
pub struct Loaded<A> {
    pub state: A,
    pub version: i64,
    snapshot_version: i64,
}

/// The event store of one service's database.
#[derive(Debug, Clone, Default)]
pub struct EventStore {
    upcaster: Arc<Upcaster>,
}

impl EventStore {
    pub fn new(upcaster: Upcaster) -> Self {
        Self { upcaster: Arc::new(upcaster) }
    }

    pub fn upcaster(&self) -> &Upcaster {
        &self.upcaster
    }

    /// Append `events` to `stream`, which the caller read at `expected_version` (0 = new).
    /// Returns the new stream version. In a transaction that defers its writes, the rows are
    /// written at its flush (where a lost race shows); loads in it see them meanwhile.
    #[tracing::instrument(skip_all, fields(stream = stream))]
    pub async fn append(
        &self,
        tx: &mut Tx,
        stream: &str,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<i64, StoreError> {
        if events.is_empty() {
            return Ok(expected_version);
        }
        let now = Utc::now();
        let rows: Vec<EventRow> = events
            .iter()
            .enumerate()
            .map(|(i, event)| EventRow {
                stream_id: stream.to_owned(),
                version: expected_version + 1 + i as i64,
                event: event.clone(),
                recorded_at: now,
            })
            .collect();
        if let Some(deferred) = tx.deferred_mut() {
            // The caller read the stream in this transaction, deferred events included: a
            // version other than the last one deferred is a race lost already.
            let last = deferred.events.iter().rev().find(|r| r.stream_id == stream).map(|r| r.version);
            if last.is_some_and(|last| last != expected_version) {
                return Err(StoreError::Conflict { stream: stream.to_owned(), expected: expected_version });
            }
            deferred.events.extend(rows);
        } else {
            insert_rows(tx, &rows).await?;
        }
        Ok(expected_version + events.len() as i64)
    }

    /// Read a stream's events after `after_version`, oldest first, upcast to current versions.
    #[tracing::instrument(skip_all, fields(stream = stream))]
    pub async fn read_stream(
        &self,
        tx: &mut Tx,
        stream: &str,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if let Some(events) = self.read_prefetched(tx, stream, after_version)? {
            return Ok(events);
        }
        const SQL: &str =
            "SELECT position, stream_id, version, event_id, event_type, schema_version, payload, metadata, recorded_at
             FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version";
        let mut events = on_tx!(tx, |conn| {
            let rows = sqlx::query(SQL).bind(stream).bind(after_version).fetch_all(conn).await?;
            rows.iter().map(|row| raw_row(row).and_then(|e| self.upcast(e))).collect::<Result<Vec<_>, StoreError>>()
        })?;
        let last = events.last().map_or(after_version, |e| e.version);
        events.extend(deferred_after(tx, stream, last));
        Ok(events)
    }

    /// Read every stream's events after global `after_position`, at most `limit` of them
    /// (committed or flushed ones only: not the deferred writes of `tx`).
    #[tracing::instrument(skip_all)]
    pub async fn read_all(
        &self,
        tx: &mut Tx,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const SQL: &str =
            "SELECT position, stream_id, version, event_id, event_type, schema_version, payload, metadata, recorded_at
             FROM events WHERE position > $1 ORDER BY position LIMIT $2";
        let events = on_tx!(tx, |conn| {
            let rows = sqlx::query(SQL).bind(after_position).bind(limit).fetch_all(conn).await?;
            rows.iter().map(|row| raw_row(row).and_then(|e| self.upcast(e))).collect::<Result<Vec<_>, StoreError>>()
        })?;
        Ok(events)
    }

    /// An event as stored, brought to its type's current schema version.
    fn upcast(&self, mut event: RecordedEvent) -> Result<RecordedEvent, StoreError> {
        let (schema_version, payload) =
            self.upcaster.upcast(&event.event_type, event.schema_version, std::mem::take(&mut event.payload))?;
        event.schema_version = schema_version;
        event.payload = payload;
        Ok(event)
    }

    /// A stream as the transaction read it ahead ([`prefetch`]), folded, with its deferred
    /// events; `None` when it was not read ahead in a form this aggregate can start from.
    fn load_prefetched<A: Aggregate>(&self, tx: &Tx, stream: &str) -> Result<Option<Loaded<A>>, StoreError> {
        let Some(ahead) = tx.deferred().and_then(|d| d.prefetched.get(stream)) else {
            return Ok(None);
        };
        let mut loaded = match (&ahead.snapshot, A::SNAPSHOTS) {
            (None, _) if A::SNAPSHOTS && !ahead.snapshots_read => return Ok(None),
            (None, _) => Loaded::default(),
            (Some(_), false) => return Ok(None),
            (Some((version, schema, state)), true) => {
                if *schema != A::SNAPSHOT_SCHEMA {
                    return Ok(None);
                }
                let Ok(state) = serde_json::from_value::<A>(state.clone()) else {
                    return Ok(None);
                };
                Loaded { state, version: *version, snapshot_version: *version }
            }
        };
        let events = ahead.events.iter().map(|e| self.upcast(e.clone())).collect::<Result<Vec<_>, _>>()?;
        fold_into(&mut loaded, events)?;
        let deferred = deferred_after(tx, stream, loaded.version);
        fold_into(&mut loaded, deferred)?;
        Ok(Some(loaded))
    }

    /// A stream's events after `after_version` from what the transaction read ahead, if that
    /// covers them.
    fn read_prefetched(
        &self,
        tx: &Tx,
        stream: &str,
        after_version: i64,
    ) -> Result<Option<Vec<RecordedEvent>>, StoreError> {
        let Some(ahead) = tx.deferred().and_then(|d| d.prefetched.get(stream)) else {
            return Ok(None);
        };
        let from = ahead.snapshot.as_ref().map_or(0, |(version, _, _)| *version);
        if from > after_version {
            return Ok(None);
        }
        let mut events = ahead
            .events
            .iter()
            .filter(|e| e.version > after_version)
            .map(|e| self.upcast(e.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let last = events.last().map_or(after_version, |e| e.version);
        events.extend(deferred_after(tx, stream, last));
        Ok(Some(events))
    }

    /// Fold an aggregate: latest snapshot (if its schema matches) plus the events after it.
    #[tracing::instrument(skip_all, fields(stream = stream))]
    pub async fn load<A: Aggregate>(&self, tx: &mut Tx, stream: &str) -> Result<Loaded<A>, StoreError> {
        // In a deferring transaction, into its read-ahead (if not there already), for the
        // run's later loads of this stream.
        prefetch(tx, &[StreamRef::of::<A>(stream)]).await?;
        if let Some(loaded) = self.load_prefetched::<A>(tx, stream)? {
            return Ok(loaded);
        }
        const SQL: &str = "SELECT version, state FROM snapshots WHERE stream_id = $1 AND snapshot_schema = $2";
        let snapshot: Option<(i64, Json<serde_json::Value>)> = if A::SNAPSHOTS {
            on_tx!(tx, |conn| sqlx::query_as(SQL).bind(stream).bind(A::SNAPSHOT_SCHEMA).fetch_optional(conn).await?)
        } else {
            None
        };
        let mut loaded = from_snapshot::<A>(snapshot);
        let events = self.read_stream(tx, stream, loaded.version).await?;
        fold_into(&mut loaded, events)?;
        Ok(loaded)
    }

    /// Fold several aggregates of one kind in two queries whatever their number (their
    /// snapshots, then every stream's events after its snapshot), instead of two per stream.
    /// Every stream asked for is in the result (a stream with no events folds to the default).
    #[tracing::instrument(skip_all, fields(streams = streams.len()))]
    pub async fn load_many<A: Aggregate>(
        &self,
        tx: &mut Tx,
        streams: &[String],
    ) -> Result<HashMap<String, Loaded<A>>, StoreError> {
        let mut names: Vec<String> = streams.to_vec();
        names.sort();
        names.dedup();
        // In a deferring transaction, those not read ahead yet go into its read-ahead: the
        // run's later loads of them (the next message on a hot stream) need no read.
        let refs: Vec<StreamRef> = names.iter().map(|name| StreamRef::of::<A>(name.as_str())).collect();
        prefetch(tx, &refs).await?;
        let mut out: HashMap<String, Loaded<A>> = HashMap::with_capacity(names.len());
        let mut unread = Vec::with_capacity(names.len());
        for name in names {
            match self.load_prefetched::<A>(tx, &name)? {
                Some(loaded) => {
                    out.insert(name, loaded);
                }
                None => unread.push(name),
            }
        }
        let names = unread;
        if names.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT stream_id, version, state FROM snapshots WHERE snapshot_schema = $1 AND stream_id IN ({})",
            crate::db::placeholders(2, names.len())
        );
        let snapshots: Vec<(String, i64, Json<serde_json::Value>)> = if A::SNAPSHOTS {
            on_tx!(tx, |conn| {
                let mut query = sqlx::query_as(&sql).bind(A::SNAPSHOT_SCHEMA);
                for name in &names {
                    query = query.bind(name.as_str());
                }
                query.fetch_all(conn).await?
            })
        } else {
            Vec::new()
        };
        let mut snapshots: HashMap<String, (i64, Json<serde_json::Value>)> =
            snapshots.into_iter().map(|(stream, version, state)| (stream, (version, state))).collect();
        for name in &names {
            out.insert(name.clone(), from_snapshot::<A>(snapshots.remove(name)));
        }
        // Each stream after its own snapshot's version, as read above (a snapshot written
        // meanwhile must not move the starting point of the events read next).
        let after: Vec<i64> = names.iter().map(|name| out[name].version).collect();
        // One bitmap of index range scans (ORed), one per stream. No ORDER BY: it can make the
        // planner walk the whole (stream, version) index in order instead; each stream's events
        // are sorted below. (Measured worse on PostgreSQL: a join against an array of names, or
        // an `= ANY(array)` arm: with a few huge streams the planner's generic plan for them
        // scans the table.)
        let sql = events_after_sql(names.len());
        // Planned with its values on every call (an unnamed statement, no extra round trip): a
        // connection's cached generic plan, chosen while the events table was small, scanned
        // the whole table ever after (auto_explain under load: a Seq Scan removing 2,158 rows
        // to return 12; 2.9 ms of PostgreSQL's time per saga in shipping-svc alone).
        let events = on_tx!(tx, |conn| {
            let mut query = sqlx::query(&sql).persistent(false);
            for (name, after) in names.iter().zip(&after) {
                query = query.bind(name.as_str()).bind(*after);
            }
            let rows = query.fetch_all(conn).await?;
            rows.iter().map(|row| raw_row(row).and_then(|e| self.upcast(e))).collect::<Result<Vec<_>, StoreError>>()
        })?;
        let mut by_stream: HashMap<String, Vec<RecordedEvent>> = HashMap::new();
        for event in events {
            by_stream.entry(event.stream_id.clone()).or_default().push(event);
        }
        for (stream, mut events) in by_stream {
            events.sort_by_key(|e| e.version);
            if let Some(loaded) = out.get_mut(&stream) {
                fold_into(loaded, events)?;
            }
        }
        for name in &names {
            if let Some(loaded) = out.get_mut(name) {
                let deferred = deferred_after(tx, name, loaded.version);
                fold_into(loaded, deferred)?;
            }
        }
        Ok(out)
    }

    /// Run a command on one aggregate: load its stream, `decide` on its state, save what was
    /// decided (with `metadata`). Modelled on esrs's `handle_command`: the outer result is the
    /// store's (a failure to load or save, a lost race: nothing is saved, the caller retries
    /// or fails), the inner one the domain's (a refused command saves nothing and is an answer,
    /// not a failure). Returns the types of the events saved.
    pub async fn execute<A: Aggregate, E>(
        &self,
        tx: &mut Tx,
        stream: &str,
        metadata: &serde_json::Value,
        decide: impl FnOnce(&A) -> Result<Vec<A::Event>, E>,
    ) -> Result<Result<Vec<&'static str>, E>, StoreError> {
        let mut loaded = self.load::<A>(tx, stream).await?;
        let events = match decide(&loaded.state) {
            Ok(events) => events,
            Err(refused) => return Ok(Err(refused)),
        };
        self.save(tx, stream, &mut loaded, &events, metadata).await?;
        Ok(Ok(events.iter().map(A::event_type).collect()))
    }

    /// Append an aggregate's new events, apply them to `loaded`, and snapshot when due.
    #[tracing::instrument(skip_all, fields(stream = stream))]
    pub async fn save<A: Aggregate>(
        &self,
        tx: &mut Tx,
        stream: &str,
        loaded: &mut Loaded<A>,
        events: &[A::Event],
        metadata: &serde_json::Value,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let new_events = events
            .iter()
            .map(|e| {
                let event_type = A::event_type(e);
                let version = self.upcaster.current_version(event_type);
                NewEvent::new(event_type, version, e).map(|n| n.with_metadata(metadata.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        loaded.version = self.append(tx, stream, loaded.version, &new_events).await?;
        for event in events {
            loaded.state.apply(event);
        }
        if A::SNAPSHOTS && loaded.version - loaded.snapshot_version >= A::SNAPSHOT_EVERY {
            let snapshot = |loaded: &Loaded<A>| -> Result<Snapshot, StoreError> {
                let state = serde_json::to_value(&loaded.state).map_err(StoreError::Encode)?;
                Ok(Snapshot { version: loaded.version, schema: A::SNAPSHOT_SCHEMA, state })
            };
            match tx.deferred_write::<PendingSnapshots>() {
                // A run saves a hot stream once per message, and each load starts from the
                // snapshot stored before the run: hold one snapshot per stream, the latest, and
                // take the next only once the stream has grown past the one held.
                Some(pending) => {
                    let held = pending.streams.get(stream).map_or(0, |s| s.version).max(loaded.snapshot_version);
                    if loaded.version - held >= A::SNAPSHOT_EVERY {
                        pending.streams.insert(stream.to_owned(), snapshot(loaded)?);
                        loaded.snapshot_version = loaded.version;
                    } else {
                        loaded.snapshot_version = held;
                    }
                }
                None => {
                    write_snapshots(tx, &[(stream, &snapshot(loaded)?)]).await?;
                    loaded.snapshot_version = loaded.version;
                }
            }
        }
        Ok(())
    }
}

/// A snapshot about to be written.
#[derive(Debug)]
struct Snapshot {
    version: i64,
    schema: i32,
    state: serde_json::Value,
}

/// The snapshots a transaction that defers its writes takes, written at its flush in one
/// statement, after its events: at most one per stream, the latest.
#[derive(Debug, Default)]
struct PendingSnapshots {
    streams: HashMap<String, Snapshot>,
}

impl crate::db::DeferredWrite for PendingSnapshots {
    fn write<'a>(self: Box<Self>, tx: &'a mut Tx) -> crate::db::BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let snapshots: Vec<(&str, &Snapshot)> = self.streams.iter().map(|(k, v)| (k.as_str(), v)).collect();
            write_snapshots(tx, &snapshots).await.map_err(|err| match err {
                StoreError::Db(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })
        })
    }
}

/// What a snapshot write changes in a stream's row that exists.
const SNAPSHOT_ON_CONFLICT: &str = "ON CONFLICT (stream_id) DO UPDATE
     SET version = excluded.version, snapshot_schema = excluded.snapshot_schema,
         state = excluded.state, taken_at = excluded.taken_at";

/// Write `snapshots` (one per stream): on PostgreSQL in one statement whose columns are arrays,
/// on SQLite in statements of up to [`ROWS_PER_INSERT`] rows.
async fn write_snapshots(tx: &mut Tx, snapshots: &[(&str, &Snapshot)]) -> Result<(), StoreError> {
    if snapshots.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let sql = format!(
                "INSERT INTO snapshots (stream_id, version, snapshot_schema, state, taken_at)
                 SELECT stream_id, version, snapshot_schema, state, $5
                 FROM UNNEST($1::text[], $2::int8[], $3::int4[], $4::jsonb[])
                     AS s(stream_id, version, snapshot_schema, state)
                 {SNAPSHOT_ON_CONFLICT}"
            );
            sqlx::query(&sql)
                .bind(snapshots.iter().map(|(stream, _)| *stream).collect::<Vec<_>>())
                .bind(snapshots.iter().map(|(_, s)| s.version).collect::<Vec<_>>())
                .bind(snapshots.iter().map(|(_, s)| s.schema).collect::<Vec<_>>())
                .bind(snapshots.iter().map(|(_, s)| Json(&s.state)).collect::<Vec<_>>())
                .bind(now)
                .execute(&mut **conn)
                .await?;
        }
        TxConn::Sqlite(conn) => {
            for chunk in snapshots.chunks(ROWS_PER_INSERT) {
                let sql = format!(
                    "INSERT INTO snapshots (stream_id, version, snapshot_schema, state, taken_at)
                     VALUES {} {SNAPSHOT_ON_CONFLICT}",
                    crate::db::value_rows(chunk.len(), 5)
                );
                let mut query = sqlx::query(&sql);
                for (stream, snapshot) in chunk {
                    query = query
                        .bind(*stream)
                        .bind(snapshot.version)
                        .bind(snapshot.schema)
                        .bind(Json(&snapshot.state))
                        .bind(now);
                }
                query.execute(&mut **conn).await?;
            }
        }
    }
    Ok(())
}

/// The events of `streams` streams, each after its own version: parameters `$2i+1` (the stream)
/// and `$2i+2` (the version), one ORed range condition per stream.
fn events_after_sql(streams: usize) -> String {
    let conditions: Vec<String> =
        (0..streams).map(|i| format!("(stream_id = ${} AND version > ${})", 2 * i + 1, 2 * i + 2)).collect();
    format!(
        "SELECT position, stream_id, version, event_id, event_type, schema_version, payload, metadata, recorded_at
         FROM events WHERE {}",
        conditions.join(" OR ")
    )
}

/// An event row as stored (its payload at the stored schema version).
fn raw_row<R>(row: &R) -> Result<RecordedEvent, StoreError>
where
    R: sqlx::Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Json<serde_json::Value>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let Json(payload): Json<serde_json::Value> = row.try_get("payload")?;
    let Json(metadata): Json<serde_json::Value> = row.try_get("metadata")?;
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        stream_id: row.try_get("stream_id")?,
        version: row.try_get("version")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        payload,
        metadata,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// A stream a handler is about to load, named ahead so that a run of messages sharing one
/// transaction reads all of them in one go ([`prefetch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRef {
    pub stream: String,
    /// May it have a snapshot (the aggregate's [`Aggregate::SNAPSHOTS`])?
    pub snapshots: bool,
}

impl StreamRef {
    /// The stream `stream` of aggregate `A`.
    pub fn of<A: Aggregate>(stream: impl Into<String>) -> Self {
        Self { stream: stream.into(), snapshots: A::SNAPSHOTS }
    }
}

/// A stream as a transaction read it ahead: its snapshot (of whatever schema, if it was looked
/// for) and the events after it, as stored.
#[derive(Debug, Default)]
pub(crate) struct Prefetched {
    snapshot: Option<(i64, i32, serde_json::Value)>,
    snapshots_read: bool,
    events: Vec<RecordedEvent>,
}

impl Prefetched {
    /// The stream version this reflects (0: no events).
    fn version(&self) -> i64 {
        self.events.last().map(|e| e.version).or(self.snapshot.as_ref().map(|(version, _, _)| *version)).unwrap_or(0)
    }
}

/// Hot streams (those of aggregates that take [snapshots](Aggregate::SNAPSHOTS): a SKU's stock,
/// a customer's account, the carrier network) as the last transactions of one consumer that
/// committed left them: their snapshot and the events after it, as stored. A transaction that
/// [keeps its streams here](Tx::keep_streams_in) starts its read ahead ([`prefetch`]) of a
/// cached stream from the cache: no snapshot lookup, and only the events appended after the
/// cached version are read, in the statement that reads the run's other streams.
///
/// Write-through: a transaction takes the streams it reads out of the cache, and its commit
/// puts them back with the events it appended and the snapshot it took. A transaction that
/// does not commit (a lost race at its flush, a failed handler) leaves them out: its retry
/// reads them afresh.
///
/// The events after the cached version are always read, never assumed absent. The consumer is
/// not the only writer of these streams: orders are keyed by order, so every replica of a
/// service appends to the same SKUs and accounts, and admin commands do too. A lost race on an
/// append shows at the flush, but a decision that appends nothing to the stream it read (an
/// order refused for stock that another replica had meanwhile released) would not: with the
/// read, a decision sees what a read from scratch in the same transaction would.
///
/// Bounded: past its capacity in streams, the eighth put back longest ago is dropped. Events
/// this consumer appended are held without their global position (0), which a commit does not
/// read back; loads do not use it.
#[derive(Debug, Clone)]
pub struct StreamCache {
    capacity: usize,
    inner: Arc<std::sync::Mutex<CacheInner>>,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// Each stream with the tick of its last put.
    streams: HashMap<String, (u64, Prefetched)>,
    tick: u64,
}

impl StreamCache {
    /// A cache of up to `capacity` streams; 0 keeps none.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, inner: Arc::default() }
    }

    /// Does it keep any?
    pub fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    /// How many streams it holds.
    pub fn len(&self) -> usize {
        self.lock().streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding the lock leaves whole entries behind (each is replaced at once).
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take `stream` out, for a transaction: its commit puts it back (a transaction that does
    /// not commit leaves it out, and the next one reads it afresh).
    fn take(&self, stream: &str) -> Option<Prefetched> {
        self.lock().streams.remove(stream).map(|(_, entry)| entry)
    }

    pub(crate) fn put(&self, entries: Vec<(String, Prefetched)>) {
        if !self.is_enabled() {
            return;
        }
        let mut inner = self.lock();
        for (stream, entry) in entries {
            inner.tick += 1;
            let tick = inner.tick;
            inner.streams.insert(stream, (tick, entry));
        }
        if inner.streams.len() > self.capacity {
            let mut ticks: Vec<u64> = inner.streams.values().map(|(used, _)| *used).collect();
            ticks.sort_unstable();
            let dropped = inner.streams.len() - self.capacity + self.capacity / 8;
            let keep_after = ticks[dropped.min(ticks.len()) - 1];
            inner.streams.retain(|_, (used, _)| *used > keep_after);
        }
    }
}

impl Default for StreamCache {
    /// Keeps none.
    fn default() -> Self {
        Self::new(0)
    }
}

/// The snapshots a transaction's flush writes (`others`), by stream.
pub(crate) fn held_snapshots(
    others: &[Box<dyn crate::db::DeferredWrite>],
) -> HashMap<String, (i64, i32, serde_json::Value)> {
    others
        .iter()
        .find_map(|w| (&**w as &dyn std::any::Any).downcast_ref::<PendingSnapshots>())
        .map(|pending| {
            pending.streams.iter().map(|(stream, s)| (stream.clone(), (s.version, s.schema, s.state.clone()))).collect()
        })
        .unwrap_or_default()
}

/// What a transaction's flush leaves of the hot streams it read ahead, for its [`StreamCache`]
/// once it commits: each with the events `written` appended to it and, when the flush also
/// wrote a newer snapshot of it (`held`, from [`held_snapshots`]), starting from that one.
pub(crate) fn cache_entries(
    prefetched: HashMap<String, Prefetched>,
    written: Vec<EventRow>,
    mut held: HashMap<String, (i64, i32, serde_json::Value)>,
) -> Vec<(String, Prefetched)> {
    let mut hot: HashMap<String, Prefetched> =
        prefetched.into_iter().filter(|(_, ahead)| ahead.snapshots_read).collect();
    for row in written {
        if let Some(entry) = hot.get_mut(&row.stream_id)
            && row.version > entry.version()
        {
            entry.events.push(row.into_recorded());
        }
    }
    hot.into_iter()
        .map(|(stream, mut entry)| {
            if let Some(snapshot) = held.remove(&stream) {
                let from = entry.snapshot.as_ref().map_or(0, |(version, _, _)| *version);
                if snapshot.0 > from && snapshot.0 <= entry.version() {
                    entry.events.retain(|e| e.version > snapshot.0);
                    entry.snapshot = Some(snapshot);
                }
            }
            (stream, entry)
        })
        .collect()
}

/// Streams per prefetch statement: 2 parameters each.
const STREAMS_PER_READ: usize = 1024;

/// Read `streams` ahead for a transaction that defers its writes: the snapshots of those that
/// may have one in one statement, then every stream's events after its snapshot in another,
/// whatever their number. Loads in the transaction then start from what was read (and its
/// deferred events) without a round trip. Does nothing in a transaction that does not defer
/// its writes (it would have nothing to keep them in).
#[tracing::instrument(skip_all, fields(streams = streams.len()))]
pub async fn prefetch(tx: &mut Tx, streams: &[StreamRef]) -> Result<(), StoreError> {
    let Some(deferred) = tx.deferred() else {
        return Ok(());
    };
    let mut wanted: Vec<StreamRef> =
        streams.iter().filter(|s| !deferred.prefetched.contains_key(&s.stream)).cloned().collect();
    wanted.sort_by(|a, b| a.stream.cmp(&b.stream).then(b.snapshots.cmp(&a.snapshots)));
    wanted.dedup_by(|later, first| later.stream == first.stream);
    let cache = deferred.cache.clone();
    for chunk in wanted.chunks(STREAMS_PER_READ) {
        // A hot stream this consumer committed last starts from the cache: no snapshot lookup,
        // and only the events appended since are read.
        let mut hits = std::collections::HashSet::new();
        let mut ahead: HashMap<String, Prefetched> = chunk
            .iter()
            .map(|s| {
                let entry = match cache.as_ref().filter(|_| s.snapshots).and_then(|c| c.take(&s.stream)) {
                    Some(entry) => {
                        hits.insert(s.stream.as_str());
                        entry
                    }
                    None => Prefetched { snapshots_read: s.snapshots, ..Prefetched::default() },
                };
                (s.stream.clone(), entry)
            })
            .collect();
        let with_snapshots: Vec<&str> = chunk
            .iter()
            .filter(|s| s.snapshots && !hits.contains(s.stream.as_str()))
            .map(|s| s.stream.as_str())
            .collect();
        if !with_snapshots.is_empty() {
            let sql = format!(
                "SELECT stream_id, version, snapshot_schema, state FROM snapshots WHERE stream_id IN ({})",
                crate::db::placeholders(1, with_snapshots.len())
            );
            let rows: Vec<(String, i64, i32, Json<serde_json::Value>)> = on_tx!(tx, |conn| {
                let mut query = sqlx::query_as(&sql);
                for name in &with_snapshots {
                    query = query.bind(*name);
                }
                query.fetch_all(conn).await?
            });
            for (stream, version, schema, Json(state)) in rows {
                if let Some(entry) = ahead.get_mut(&stream) {
                    entry.snapshot = Some((version, schema, state));
                }
            }
        }
        // As in `load_many`: one range condition per stream, planned with its values.
        let sql = events_after_sql(chunk.len());
        let after: Vec<i64> = chunk.iter().map(|s| ahead[&s.stream].version()).collect();
        let events = on_tx!(tx, |conn| {
            let mut query = sqlx::query(&sql).persistent(false);
            for (s, after) in chunk.iter().zip(&after) {
                query = query.bind(s.stream.as_str()).bind(*after);
            }
            let rows = query.fetch_all(conn).await?;
            rows.iter().map(raw_row).collect::<Result<Vec<_>, StoreError>>()
        })?;
        for event in events {
            if let Some(entry) = ahead.get_mut(&event.stream_id) {
                entry.events.push(event);
            }
        }
        let Some(deferred) = tx.deferred_mut() else {
            return Ok(());
        };
        for (stream, mut entry) in ahead {
            entry.events.sort_by_key(|e| e.version);
            deferred.prefetched.insert(stream, entry);
        }
    }
    Ok(())
}

/// A row of the `events` table about to be written.
#[derive(Debug, Clone)]
pub(crate) struct EventRow {
    pub(crate) stream_id: String,
    pub(crate) version: i64,
    pub(crate) event: NewEvent,
    pub(crate) recorded_at: DateTime<Utc>,
}

impl EventRow {
    /// [`Self::recorded`], taking the row.
    fn into_recorded(self) -> RecordedEvent {
        RecordedEvent {
            position: 0,
            stream_id: self.stream_id,
            version: self.version,
            event_id: self.event.event_id,
            event_type: self.event.event_type,
            schema_version: self.event.schema_version,
            payload: self.event.payload,
            metadata: self.event.metadata,
            recorded_at: self.recorded_at,
        }
    }

    /// The row as a read would return it, but for its global position, which is not known
    /// before it is written (0).
    fn recorded(&self) -> RecordedEvent {
        self.clone().into_recorded()
    }
}

/// Rows per insert statement on SQLite: 8 parameters each, well under its limit.
const ROWS_PER_INSERT: usize = 512;

/// The text of [`PG_INSERT_EVENTS`], as a literal, so that `concat!` can build the statement
/// that also inserts outbox rows ([`crate::outbox`]) from the one copy.
macro_rules! pg_insert_events {
    () => {
        "INSERT INTO events
             (stream_id, version, event_id, event_type, schema_version, payload, metadata, recorded_at)
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::uuid[], $4::text[], $5::int4[], $6::jsonb[], $7::jsonb[],
             $8::timestamptz[])"
    };
}
pub(crate) use pg_insert_events;

/// The events insert on PostgreSQL, parameters `$1`–`$8`: a column per array
/// ([`add_event_columns`]), so the statement has one shape whatever the number of rows, and is
/// prepared once per connection (a `VALUES` list has a shape per row count, each prepared on
/// first use, and evicted from a connection's statement cache by the others).
pub(crate) const PG_INSERT_EVENTS: &str = pg_insert_events!();

/// Bind `rows` as the eight column arrays of [`PG_INSERT_EVENTS`], in its order.
pub(crate) fn add_event_columns(args: &mut PgArguments, rows: &[EventRow]) -> Result<(), sqlx::Error> {
    fn column<'a, T: 'a>(rows: &'a [EventRow], f: impl Fn(&'a EventRow) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    args.add(column(rows, |r| r.stream_id.as_str())).map_err(sqlx::Error::Encode)?;
    args.add(column(rows, |r| r.version)).map_err(sqlx::Error::Encode)?;
    args.add(column(rows, |r| r.event.event_id)).map_err(sqlx::Error::Encode)?;
    args.add(column(rows, |r| r.event.event_type.as_str())).map_err(sqlx::Error::Encode)?;
    args.add(column(rows, |r| r.event.schema_version)).map_err(sqlx::Error::Encode)?;
    args.add(column(rows, |r| Json(&r.event.payload))).map_err(sqlx::Error::Encode)?;
    args.add(column(rows, |r| Json(&r.event.metadata))).map_err(sqlx::Error::Encode)?;
    args.add(column(rows, |r| r.recorded_at)).map_err(sqlx::Error::Encode)?;
    Ok(())
}

/// What a failed insert of `rows` means: a unique violation is another writer's append of a
/// version one of them has (a lost race), anything else a database error.
pub(crate) fn insert_error(err: sqlx::Error, rows: &[EventRow]) -> StoreError {
    if !is_unique_violation(&err) {
        return err.into();
    }
    let mut streams: Vec<&str> = rows.iter().map(|r| r.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let expected = rows.first().map_or(0, |first| first.version - 1);
    StoreError::Conflict { stream: streams.join(" or "), expected }
}

/// Insert event rows: on PostgreSQL in one statement, on SQLite in as few as their number
/// allows. A unique violation (another writer appended one of these versions first) is a
/// [`StoreError::Conflict`].
pub(crate) async fn insert_rows(tx: &mut Tx, rows: &[EventRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let mut args = PgArguments::default();
            add_event_columns(&mut args, rows)?;
            sqlx::query_with(PG_INSERT_EVENTS, args).execute(&mut **conn).await.map_err(|e| insert_error(e, rows))?;
        }
        TxConn::Sqlite(conn) => {
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let sql = format!(
                    "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload, metadata, recorded_at)
                     VALUES {}",
                    crate::db::value_rows(chunk.len(), 8)
                );
                let mut query = sqlx::query(&sql);
                for row in chunk {
                    query = query
                        .bind(&row.stream_id)
                        .bind(row.version)
                        .bind(row.event.event_id)
                        .bind(&row.event.event_type)
                        .bind(row.event.schema_version)
                        .bind(Json(&row.event.payload))
                        .bind(Json(&row.event.metadata))
                        .bind(row.recorded_at);
                }
                query.execute(&mut **conn).await.map_err(|e| insert_error(e, chunk))?;
            }
        }
    }
    Ok(())
}

/// The events `tx` deferred on `stream` after `version`, as a read would return them (their
/// position is not known before the flush: 0).
fn deferred_after(tx: &Tx, stream: &str, version: i64) -> Vec<RecordedEvent> {
    let Some(deferred) = tx.deferred() else {
        return Vec::new();
    };
    deferred.events.iter().filter(|r| r.stream_id == stream && r.version > version).map(EventRow::recorded).collect()
}

/// The starting point of a fold: the snapshot if there is one that decodes, else the default
/// state at version 0 (a snapshot that no longer decodes is ignored, and the stream folded from
/// the start).
fn from_snapshot<A: Aggregate>(snapshot: Option<(i64, Json<serde_json::Value>)>) -> Loaded<A> {
    let (state, version) = match snapshot {
        Some((version, Json(state))) => match serde_json::from_value::<A>(state) {
            Ok(state) => (state, version),
            Err(_) => (A::default(), 0),
        },
        None => (A::default(), 0),
    };
    Loaded { state, version, snapshot_version: version }
}

/// Apply `events` (oldest first, all after `loaded.version`) to `loaded`.
fn fold_into<A: Aggregate>(loaded: &mut Loaded<A>, events: Vec<RecordedEvent>) -> Result<(), StoreError> {
    for recorded in events {
        let event: A::Event = serde_json::from_value(recorded.payload).map_err(|source| StoreError::Decode {
            event_type: recorded.event_type.clone(),
            schema_version: recorded.schema_version,
            position: recorded.position,
            source,
        })?;
        loaded.state.apply(&event);
        loaded.version = recorded.version;
    }
    Ok(())
}
