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
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Tx, is_unique_violation};
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
    /// Returns the new stream version.
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
        // One statement for all the events (one round trip), with a row of 8 parameters each.
        let now = Utc::now();
        let sql = format!(
            "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload, metadata, recorded_at)
             VALUES {}",
            crate::db::value_rows(events.len(), 8)
        );
        let result = on_tx!(tx, |conn| {
            let mut query = sqlx::query(&sql);
            for (i, event) in events.iter().enumerate() {
                query = query
                    .bind(stream)
                    .bind(expected_version + 1 + i as i64)
                    .bind(event.event_id)
                    .bind(&event.event_type)
                    .bind(event.schema_version)
                    .bind(Json(&event.payload))
                    .bind(Json(&event.metadata))
                    .bind(now);
            }
            query.execute(conn).await.map(|r| r.rows_affected())
        });
        let version = expected_version + events.len() as i64;
        match result {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict { stream: stream.to_owned(), expected: expected_version });
            }
            Err(e) => return Err(e.into()),
        }
        Ok(version)
    }

    /// Read a stream's events after `after_version`, oldest first, upcast to current versions.
    #[tracing::instrument(skip_all, fields(stream = stream))]
    pub async fn read_stream(
        &self,
        tx: &mut Tx,
        stream: &str,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const SQL: &str =
            "SELECT position, stream_id, version, event_id, event_type, schema_version, payload, metadata, recorded_at
             FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version";
        let events = on_tx!(tx, |conn| {
            let rows = sqlx::query(SQL).bind(stream).bind(after_version).fetch_all(conn).await?;
            rows.iter().map(|row| self.decode_row(row)).collect::<Result<Vec<_>, StoreError>>()
        })?;
        Ok(events)
    }

    /// Read every stream's events after global `after_position`, at most `limit` of them.
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
            rows.iter().map(|row| self.decode_row(row)).collect::<Result<Vec<_>, StoreError>>()
        })?;
        Ok(events)
    }

    fn decode_row<R>(&self, row: &R) -> Result<RecordedEvent, StoreError>
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
        let event_type: String = row.try_get("event_type")?;
        let stored_version: i32 = row.try_get("schema_version")?;
        let Json(payload): Json<serde_json::Value> = row.try_get("payload")?;
        let (schema_version, payload) = self.upcaster.upcast(&event_type, stored_version, payload)?;
        let Json(metadata): Json<serde_json::Value> = row.try_get("metadata")?;
        Ok(RecordedEvent {
            position: row.try_get("position")?,
            stream_id: row.try_get("stream_id")?,
            version: row.try_get("version")?,
            event_id: row.try_get("event_id")?,
            event_type,
            schema_version,
            payload,
            metadata,
            recorded_at: row.try_get("recorded_at")?,
        })
    }

    /// Fold an aggregate: latest snapshot (if its schema matches) plus the events after it.
    #[tracing::instrument(skip_all, fields(stream = stream))]
    pub async fn load<A: Aggregate>(&self, tx: &mut Tx, stream: &str) -> Result<Loaded<A>, StoreError> {
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
        let mut out: HashMap<String, Loaded<A>> = HashMap::with_capacity(names.len());
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
        let conditions: Vec<String> =
            (0..names.len()).map(|i| format!("(stream_id = ${} AND version > ${})", 2 * i + 1, 2 * i + 2)).collect();
        let sql = format!(
            "SELECT position, stream_id, version, event_id, event_type, schema_version, payload, metadata, recorded_at
             FROM events WHERE {}",
            conditions.join(" OR ")
        );
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
            rows.iter().map(|row| self.decode_row(row)).collect::<Result<Vec<_>, StoreError>>()
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
        Ok(out)
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
            let state = serde_json::to_value(&loaded.state).map_err(StoreError::Encode)?;
            on_tx!(tx, |conn| {
                sqlx::query(
                    "INSERT INTO snapshots (stream_id, version, snapshot_schema, state, taken_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (stream_id) DO UPDATE
                     SET version = excluded.version, snapshot_schema = excluded.snapshot_schema,
                         state = excluded.state, taken_at = excluded.taken_at",
                )
                .bind(stream)
                .bind(loaded.version)
                .bind(A::SNAPSHOT_SCHEMA)
                .bind(Json(state))
                .bind(Utc::now())
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
            })?;
            loaded.snapshot_version = loaded.version;
        }
        Ok(())
    }
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
