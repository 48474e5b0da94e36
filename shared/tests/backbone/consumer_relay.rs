//! The backbone against a real Kafka-protocol broker (librdkafka's mock cluster) and both
//! database backends. Every test owns its database and its topics.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use serde_json::json;
use shared::CancellationToken;
use shared::consumer::{
    Changes, ConsumerLoop, ConsumerOptions, CrashHook, Handler, HandlerError, MessageContext, Step, Stopped, dlq_header,
};
use shared::contracts::event_type;
use shared::db::{Backend, Db};
use shared::envelope::{Envelope, header_map};
use shared::event_store::{EventStore, NewEvent, StoreError, StreamCache, StreamRef, Upcaster};
use shared::outbox::{OutboxMessage, OutboxSignal, Relay, RelayOptions, enqueue};
use shared::testing::{TestBroker, TestDb, eventually};
use shared::topics::service;

const WAIT: Duration = Duration::from_secs(30);

use shared::both_backends;

// ---------------------------------------------------------------- event store

both_backends!(event_store_appends_and_reads_a_stream_in_order);
async fn event_store_appends_and_reads_a_stream_in_order(backend: Backend) -> anyhow::Result<()> {
    let t = TestDb::new(backend, &[]).await?;
    let store = EventStore::default();
    let mut tx = t.db.begin().await?;
    let events = vec![NewEvent::new("Opened", 1, &json!({"n": 1}))?, NewEvent::new("Changed", 1, &json!({"n": 2}))?];
    let version = store.append(&mut tx, "s-1", 0, &events).await?;
    store.append(&mut tx, "other", 0, &[NewEvent::new("Opened", 1, &json!({}))?]).await?;
    tx.commit().await?;

    let mut tx = t.db.begin_read().await?;
    let read = store.read_stream(&mut tx, "s-1", 0).await?;
    assert_eq!(version, 2);
    assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(read[1].event_type, "Changed");
    assert_eq!(read[1].payload, json!({"n": 2}));
    assert_eq!(read[0].event_id, events[0].event_id);
    assert_eq!(store.read_stream(&mut tx, "s-1", 1).await?.len(), 1);
    let all = store.read_all(&mut tx, 0, 100).await?;
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position), "global positions increase");
    Ok(())
}

/// Commit `stream`'s first event, of type `event_type`.
async fn commit_first_event(t: &TestDb, store: &EventStore, stream: &str, event_type: &str) -> anyhow::Result<()> {
    let mut tx = t.db.begin().await?;
    store.append(&mut tx, stream, 0, &[NewEvent::new(event_type, 1, &json!({}))?]).await?;
    tx.commit().await?;
    Ok(())
}

both_backends!(event_store_rejects_an_append_at_a_stale_version_as_a_conflict);
async fn event_store_rejects_an_append_at_a_stale_version_as_a_conflict(backend: Backend) -> anyhow::Result<()> {
    let t = TestDb::new(backend, &[]).await?;
    let store = EventStore::default();
    commit_first_event(&t, &store, "s", "A").await?;

    // A writer that read version 0 loses the race against the one that wrote version 1.
    let mut tx = t.db.begin().await?;
    let err = store.append(&mut tx, "s", 0, &[NewEvent::new("B", 1, &json!({}))?]).await.expect_err("conflict");
    assert!(matches!(err, StoreError::Conflict { ref stream, expected: 0 } if stream == "s"), "{err:?}");
    assert!(err.is_transient());
    tx.rollback().await?;

    let mut tx = t.db.begin_read().await?;
    assert_eq!(store.read_stream(&mut tx, "s", 0).await?.len(), 1, "nothing of the loser was stored");
    Ok(())
}

both_backends!(event_store_upcasts_an_old_schema_version_when_read);
async fn event_store_upcasts_an_old_schema_version_when_read(backend: Backend) -> anyhow::Result<()> {
    let t = TestDb::new(backend, &[]).await?;
    // Written by an old release: v1 had `amount` in whole euros.
    let mut tx = t.db.begin().await?;
    EventStore::default().append(&mut tx, "p", 0, &[NewEvent::new("Charged", 1, &json!({"amount": 12}))?]).await?;
    tx.commit().await?;

    fn v1_to_v2(mut v: serde_json::Value) -> serde_json::Value {
        let euros = v["amount"].as_i64().unwrap_or_default();
        v["amount_minor"] = json!(euros * 100);
        v.as_object_mut().map(|o| o.remove("amount"));
        v
    }
    let store = EventStore::new(Upcaster::default().register("Charged", 1, v1_to_v2));
    let mut tx = t.db.begin_read().await?;
    let read = store.read_stream(&mut tx, "p", 0).await?;
    assert_eq!(read[0].schema_version, 2);
    assert_eq!(read[0].payload, json!({"amount_minor": 1200}));
    Ok(())
}

/// A test aggregate: the sum of the numbers added to its stream, snapshotted every 3 events.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Sum {
    total: i64,
    events: i64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Added {
    n: i64,
}

impl shared::event_store::Aggregate for Sum {
    type Event = Added;
    const SNAPSHOT_EVERY: i64 = 3;
    fn event_type(_: &Added) -> &'static str {
        "Added"
    }
    fn apply(&mut self, event: &Added) {
        self.total += event.n;
        self.events += 1;
    }
}

/// Commit "long" (8 events `Added` 1 to 8, saved one at a time: snapshots at 3 and 6) and
/// "short" (`short`, saved together: no snapshot).
async fn long_and_short_streams(t: &TestDb, store: &EventStore, short: &[Added]) -> anyhow::Result<()> {
    let mut tx = t.db.begin().await?;
    let mut long = store.load::<Sum>(&mut tx, "long").await?;
    for n in 1..=8 {
        store.save(&mut tx, "long", &mut long, &[Added { n }], &json!({})).await?;
    }
    let mut loaded = store.load::<Sum>(&mut tx, "short").await?;
    store.save(&mut tx, "short", &mut loaded, short, &json!({})).await?;
    tx.commit().await?;
    Ok(())
}

both_backends!(event_store_loads_many_streams_as_each_would_load_alone);
async fn event_store_loads_many_streams_as_each_would_load_alone(backend: Backend) -> anyhow::Result<()> {
    let t = TestDb::new(backend, &[]).await?;
    let store = EventStore::default();
    // Arrange: "long" passes two snapshots (saved one event at a time), "short" has none,
    // "empty" does not exist.
    long_and_short_streams(&t, &store, &[Added { n: 5 }, Added { n: 7 }]).await?;

    // Act
    let mut tx = t.db.begin_read().await?;
    let names: Vec<String> = ["short", "long", "empty", "long"].map(str::to_owned).to_vec();
    let many = store.load_many::<Sum>(&mut tx, &names).await?;

    // Assert: the same states and versions as loading each alone.
    assert_eq!(many.len(), 3, "one entry per distinct stream");
    for name in ["long", "short", "empty"] {
        let alone = store.load::<Sum>(&mut tx, name).await?;
        assert_eq!(many[name].state, alone.state, "{name}");
        assert_eq!(many[name].version, alone.version, "{name}");
    }
    assert_eq!(many["long"].state, Sum { total: 36, events: 8 });
    assert_eq!(many["long"].version, 8);
    assert_eq!(many["short"].state, Sum { total: 12, events: 2 });
    assert_eq!(many["empty"].version, 0);
    assert_eq!(store.load_many::<Sum>(&mut tx, &[]).await?.len(), 0);
    Ok(())
}

/// Rows of a table as the transaction sees them.
async fn count_rows(tx: &mut shared::db::Tx, table: &str) -> anyhow::Result<i64> {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    Ok(shared::on_tx!(tx, |conn| sqlx::query_scalar::<_, i64>(&sql).fetch_one(conn).await)?)
}

both_backends!(event_store_deferred_writes_are_seen_by_loads_in_their_transaction_and_written_at_the_flush);
async fn event_store_deferred_writes_are_seen_by_loads_in_their_transaction_and_written_at_the_flush(
    backend: Backend,
) -> anyhow::Result<()> {
    let t = TestDb::new(backend, &[]).await?;
    let store = EventStore::default();
    let mut tx = t.db.begin().await?;
    let mut long = store.load::<Sum>(&mut tx, "long").await?;
    store.save(&mut tx, "long", &mut long, &[Added { n: 1 }, Added { n: 2 }], &json!({})).await?;
    tx.commit().await?;

    // Act: a deferring transaction saves across a snapshot (held for the flush) and enqueues.
    let mut tx = t.db.begin().await?;
    tx.defer_writes();
    let mut long = store.load::<Sum>(&mut tx, "long").await?;
    for n in 3..=5 {
        store.save(&mut tx, "long", &mut long, &[Added { n }], &json!({})).await?;
    }
    let mut fresh = store.load::<Sum>(&mut tx, "fresh").await?;
    store.save(&mut tx, "fresh", &mut fresh, &[Added { n: 10 }], &json!({})).await?;
    for key in ["b", "a", "c"] {
        let message = OutboxMessage { topic: "t".into(), key: key.into(), headers: vec![], payload: vec![] };
        enqueue(&mut tx, &message).await?;
    }

    // Assert: nothing written yet, yet every load in the transaction sees the deferred events.
    assert_eq!(count_rows(&mut tx, "events").await?, 2, "only the committed events are rows");
    assert_eq!(count_rows(&mut tx, "outbox").await?, 0);
    assert_eq!(count_rows(&mut tx, "snapshots").await?, 0);
    let names: Vec<String> = ["long", "fresh"].map(str::to_owned).to_vec();
    let many = store.load_many::<Sum>(&mut tx, &names).await?;
    assert_eq!((many["long"].state.total, many["long"].version), (15, 5));
    assert_eq!((many["fresh"].state.total, many["fresh"].version), (10, 1));
    let alone = store.load::<Sum>(&mut tx, "long").await?;
    assert_eq!((alone.state.clone(), alone.version), (Sum { total: 15, events: 5 }, 5));
    let read = store.read_stream(&mut tx, "long", 1).await?;
    assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), vec![2, 3, 4, 5]);

    // The flush writes them all, the outbox rows in the order they were enqueued.
    tx.flush().await?;
    assert_eq!(count_rows(&mut tx, "events").await?, 6);
    let keys: Vec<String> = shared::on_tx!(&mut tx, |conn| {
        sqlx::query_scalar("SELECT msg_key FROM outbox ORDER BY id").fetch_all(conn).await
    })?;
    assert_eq!(keys, ["b", "a", "c"]);
    assert_eq!(count_rows(&mut tx, "snapshots").await?, 1, "the snapshot taken at version 3");
    tx.commit().await?;
    let mut tx = t.db.begin_read().await?;
    let read = store.read_stream(&mut tx, "long", 0).await?;
    assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert!(read.iter().all(|e| e.position > 0), "positions assigned at the flush");
    assert_eq!(store.load::<Sum>(&mut tx, "long").await?.state, Sum { total: 15, events: 5 });
    Ok(())
}

/// A service's own deferred write, for the test below: inbox rows whose consumer names how many
/// outbox rows existed when they were written (to show they come after the outbox's insert).
#[derive(Debug, Default)]
struct InboxRows {
    ids: Vec<uuid::Uuid>,
}

impl shared::db::DeferredWrite for InboxRows {
    fn write<'a>(self: Box<Self>, tx: &'a mut shared::db::Tx) -> shared::db::BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            for id in self.ids {
                shared::on_tx!(tx, |conn| {
                    sqlx::query(
                        "INSERT INTO inbox (consumer, message_id, processed_at)
                         SELECT 'after-' || (SELECT COUNT(*) FROM outbox), $1, $2",
                    )
                    .bind(id)
                    .bind(chrono::Utc::now())
                    .execute(conn)
                    .await
                    .map(|r| r.rows_affected())
                })?;
            }
            Ok(())
        })
    }
}

both_backends!(deferred_writes_of_a_service_are_held_until_the_flush_and_written_after_the_outbox);
async fn deferred_writes_of_a_service_are_held_until_the_flush_and_written_after_the_outbox(
    backend: Backend,
) -> anyhow::Result<()> {
    let t = TestDb::new(backend, &[]).await?;
    let (first, second, lost) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let message = OutboxMessage { topic: "t".into(), key: "k".into(), headers: vec![], payload: vec![] };

    // A transaction that does not defer has nothing to hold them in: the caller writes at once.
    let mut tx = t.db.begin().await?;
    assert!(tx.deferred_write::<InboxRows>().is_none());
    tx.rollback().await?;

    // Act: a deferring transaction takes its holder twice (one holder per type) and enqueues.
    let mut tx = t.db.begin().await?;
    tx.defer_writes();
    tx.deferred_write::<InboxRows>().expect("deferring").ids.push(first);
    enqueue(&mut tx, &message).await?;
    tx.deferred_write::<InboxRows>().expect("deferring").ids.push(second);

    // Assert: nothing written before the flush; then both rows, after the outbox row.
    assert_eq!(count_rows(&mut tx, "inbox").await?, 0);
    tx.flush().await?;
    tx.commit().await?;
    let mut tx = t.db.begin_read().await?;
    let consumers: Vec<String> =
        shared::on_tx!(&mut tx, |conn| sqlx::query_scalar("SELECT consumer FROM inbox").fetch_all(conn).await)?;
    assert_eq!(consumers, ["after-1", "after-1"]);
    tx.rollback().await?;

    // A deferring transaction rolled back writes nothing it held.
    let mut tx = t.db.begin().await?;
    tx.defer_writes();
    tx.deferred_write::<InboxRows>().expect("deferring").ids.push(lost);
    tx.rollback().await?;
    let mut tx = t.db.begin_read().await?;
    assert_eq!(count_rows(&mut tx, "inbox").await?, 2);
    Ok(())
}

both_backends!(event_store_deferred_append_that_lost_the_race_is_a_conflict_at_the_flush);
async fn event_store_deferred_append_that_lost_the_race_is_a_conflict_at_the_flush(
    backend: Backend,
) -> anyhow::Result<()> {
    let t = TestDb::new(backend, &[]).await?;
    let store = EventStore::default();
    commit_first_event(&t, &store, "s", "A").await?;

    // A deferring writer that read version 0 learns at its flush that version 1 is taken (its
    // outbox row goes in the same statement as its events on PostgreSQL).
    let mut tx = t.db.begin().await?;
    tx.defer_writes();
    store.append(&mut tx, "t", 0, &[NewEvent::new("T", 1, &json!({}))?]).await?;
    store.append(&mut tx, "s", 0, &[NewEvent::new("B", 1, &json!({}))?]).await?;
    enqueue(&mut tx, &OutboxMessage { topic: "t".into(), key: "s".into(), headers: vec![], payload: vec![] }).await?;
    // Appending again at a version its own deferred events moved past is a conflict at once.
    let stale = store.append(&mut tx, "t", 0, &[NewEvent::new("T", 1, &json!({}))?]).await.expect_err("stale");
    assert!(matches!(stale, StoreError::Conflict { ref stream, expected: 0 } if stream == "t"), "{stale:?}");
    let err = tx.flush().await.expect_err("conflict");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert!(err.is_transient(), "a lost race is retried");
    tx.rollback().await?;

    let mut tx = t.db.begin_read().await?;
    assert_eq!(store.read_stream(&mut tx, "s", 0).await?.len(), 1, "nothing of the loser was stored");
    assert_eq!(store.read_stream(&mut tx, "t", 0).await?.len(), 0);
    assert_eq!(count_rows(&mut tx, "outbox").await?, 0, "nor its message");
    Ok(())
}

both_backends!(event_store_loads_from_a_prefetch_equal_loads_from_the_tables);
async fn event_store_loads_from_a_prefetch_equal_loads_from_the_tables(backend: Backend) -> anyhow::Result<()> {
    let t = TestDb::new(backend, &[]).await?;
    let store = EventStore::default();
    // Arrange: "long" has a snapshot at 6 and two events after it, "short" none.
    long_and_short_streams(&t, &store, &[Added { n: 5 }]).await?;
    let names: Vec<String> = ["long", "short", "empty"].map(str::to_owned).to_vec();
    let mut plain = t.db.begin_read().await?;
    let expected = store.load_many::<Sum>(&mut plain, &names).await?;
    let expected_tail = store.read_stream(&mut plain, "long", 6).await?;
    plain.rollback().await?;

    // Act: read every stream ahead, then load them from that, before and after a save.
    let mut tx = t.db.begin().await?;
    tx.defer_writes();
    let refs: Vec<StreamRef> = names.iter().map(|n| StreamRef::of::<Sum>(n.as_str())).collect();
    shared::event_store::prefetch(&mut tx, &refs).await?;
    let ahead = store.load_many::<Sum>(&mut tx, &names).await?;
    for name in &names {
        assert_eq!(ahead[name].state, expected[name].state, "{name}");
        assert_eq!(ahead[name].version, expected[name].version, "{name}");
        let alone = store.load::<Sum>(&mut tx, name).await?;
        assert_eq!((alone.state, alone.version), (expected[name].state.clone(), expected[name].version));
    }
    assert_eq!(store.read_stream(&mut tx, "long", 6).await?, expected_tail);
    let mut long = store.load::<Sum>(&mut tx, "long").await?;
    store.save(&mut tx, "long", &mut long, &[Added { n: 100 }], &json!({})).await?;
    let after = store.load::<Sum>(&mut tx, "long").await?;
    assert_eq!((after.state.total, after.version), (136, 9), "the deferred event on top of the prefetch");
    tx.commit().await?;
    let mut tx = t.db.begin_read().await?;
    assert_eq!(store.load::<Sum>(&mut tx, "long").await?.version, 9);
    Ok(())
}

both_backends!(event_store_run_on_a_hot_stream_holds_one_snapshot_per_stream_for_its_flush);
async fn event_store_run_on_a_hot_stream_holds_one_snapshot_per_stream_for_its_flush(
    backend: Backend,
) -> anyhow::Result<()> {
    let t = TestDb::new(backend, &[]).await?;
    let store = EventStore::default();

    // Act: as a run of messages does, read the stream ahead, then load it afresh and save one
    // event per message, eight times (snapshots due every 3 events).
    let mut tx = t.db.begin().await?;
    tx.defer_writes();
    shared::event_store::prefetch(&mut tx, &[StreamRef::of::<Sum>("hot")]).await?;
    for n in 1..=8 {
        let mut hot = store.load::<Sum>(&mut tx, "hot").await?;
        store.save(&mut tx, "hot", &mut hot, &[Added { n }], &json!({})).await?;
    }

    // Assert: nothing written before the flush; then one snapshot, the last one due counting
    // from the one held (3, then 6), not one per save past the stored snapshot.
    assert_eq!(count_rows(&mut tx, "snapshots").await?, 0);
    tx.commit().await?;
    let mut tx = t.db.begin_read().await?;
    let (version, state): (i64, sqlx::types::Json<Sum>) = shared::on_tx!(&mut tx, |conn| {
        sqlx::query_as("SELECT version, state FROM snapshots WHERE stream_id = 'hot'").fetch_one(conn).await
    })?;
    assert_eq!((version, state.0), (6, Sum { total: 21, events: 6 }));
    let hot = store.load::<Sum>(&mut tx, "hot").await?;
    assert_eq!((hot.state, hot.version), (Sum { total: 36, events: 8 }, 8));
    Ok(())
}

/// A prefetch is as old as its read: a writer that commits after it wins, and the transaction
/// that decided on the older state loses the race at its flush. (PostgreSQL: SQLite's write
/// lock keeps the other writer out until the transaction ends.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_store_decision_on_a_prefetch_that_went_stale_is_a_conflict_at_the_flush() -> anyhow::Result<()> {
    let t = TestDb::new(Backend::Postgres, &[]).await?;
    let store = EventStore::default();
    commit_first_event(&t, &store, "s", "A").await?;

    let mut tx = t.db.begin().await?;
    tx.defer_writes();
    shared::event_store::prefetch(&mut tx, &[StreamRef::of::<Sum>("s")]).await?;
    let mut other = t.db.begin().await?;
    store.append(&mut other, "s", 1, &[NewEvent::new("B", 1, &json!({}))?]).await?;
    other.commit().await?;

    let seen = store.read_stream(&mut tx, "s", 0).await?;
    assert_eq!(seen.len(), 1, "the load comes from the prefetch, not the table");
    store.append(&mut tx, "s", 1, &[NewEvent::new("C", 1, &json!({}))?]).await?;
    let err = tx.flush().await.expect_err("conflict");
    assert!(matches!(err, StoreError::Conflict { .. }) && err.is_transient(), "{err:?}");
    tx.rollback().await?;
    let mut tx = t.db.begin_read().await?;
    let types: Vec<String> = store.read_stream(&mut tx, "s", 0).await?.into_iter().map(|e| e.event_type).collect();
    assert_eq!(types, ["A", "B"]);
    Ok(())
}

/// What a deferring transaction loads that it had not read ahead, it keeps as read ahead: the
/// run's later loads of the stream (the next message on a hot stream) start from it without a
/// read, and a decision on it that another writer overtook loses at the flush, as with a
/// prefetch. (PostgreSQL, as above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_store_load_in_a_deferring_transaction_is_kept_for_its_later_loads() -> anyhow::Result<()> {
    let t = TestDb::new(Backend::Postgres, &[]).await?;
    let store = EventStore::default();
    for (stream, first_load_many) in [("by-load", false), ("by-load-many", true)] {
        let added = || NewEvent::new("Added", 1, &Added { n: 1 });
        let mut first = t.db.begin().await?;
        store.append(&mut first, stream, 0, &[added()?]).await?;
        first.commit().await?;
        let mut tx = t.db.begin().await?;
        tx.defer_writes();
        let first = if first_load_many {
            store.load_many::<Sum>(&mut tx, &[stream.to_owned()]).await?.remove(stream).expect("loaded")
        } else {
            store.load::<Sum>(&mut tx, stream).await?
        };
        assert_eq!(first.version, 1, "{stream}");
        let mut other = t.db.begin().await?;
        store.append(&mut other, stream, 1, &[added()?]).await?;
        other.commit().await?;

        let mut again = store.load::<Sum>(&mut tx, stream).await?;
        assert_eq!(again.version, 1, "{stream}: the second load starts from the first one's read");
        store.save(&mut tx, stream, &mut again, &[Added { n: 1 }], &json!({})).await?;
        let err = tx.flush().await.expect_err("conflict");
        assert!(matches!(err, StoreError::Conflict { .. }), "{stream}: {err:?}");
        tx.rollback().await?;
    }
    Ok(())
}

/// Save `ns` to `stream`, one `Added` per save, in a transaction that keeps its streams in
/// `cache`, and commit.
async fn commit_through_cache(t: &TestDb, cache: &StreamCache, stream: &str, ns: &[i64]) -> anyhow::Result<()> {
    let store = EventStore::default();
    let mut tx = t.db.begin().await?;
    tx.keep_streams_in(cache);
    for &n in ns {
        let mut loaded = store.load::<Sum>(&mut tx, stream).await?;
        store.save(&mut tx, stream, &mut loaded, &[Added { n }], &json!({})).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Rewrite the stored payload of `stream`'s event `version` behind the store's back: a read
/// from the table sees `n`, a load that starts from the cache does not.
async fn overwrite_payload(t: &TestDb, stream: &str, version: i64, n: i64) -> anyhow::Result<()> {
    let mut tx = t.db.begin().await?;
    let sql = match t.db.backend() {
        Backend::Postgres => "UPDATE events SET payload = $1::jsonb WHERE stream_id = $2 AND version = $3",
        Backend::Sqlite => "UPDATE events SET payload = $1 WHERE stream_id = $2 AND version = $3",
    };
    let payload = json!({ "n": n }).to_string();
    let updated = shared::on_tx!(&mut tx, |conn| {
        sqlx::query(sql).bind(&payload).bind(stream).bind(version).execute(conn).await?.rows_affected()
    });
    assert_eq!(updated, 1);
    tx.commit().await?;
    Ok(())
}

both_backends!(event_store_stream_cache_starts_from_the_last_commit_and_reads_what_others_appended);
/// A consumer's stream cache: a hot stream starts from what its last commit left (its snapshot
/// and the events after it, the cached ones not read again), and what other writers appended
/// since is read. Without that read, a decision that appends nothing to the stream (a refusal
/// for want of stock another replica released) would be made on a stale state.
async fn event_store_stream_cache_starts_from_the_last_commit_and_reads_what_others_appended(
    backend: Backend,
) -> anyhow::Result<()> {
    let t = TestDb::new(backend, &[]).await?;
    let store = EventStore::default();
    let cache = StreamCache::new(16);
    // Four saves: the snapshot at 3 is written, and the cache holds it and event 4.
    commit_through_cache(&t, &cache, "hot", &[1, 2, 3, 4]).await?;
    assert_eq!(cache.len(), 1);
    overwrite_payload(&t, "hot", 4, 100).await?;
    let mut other = t.db.begin().await?;
    store.append(&mut other, "hot", 4, &[NewEvent::new("Added", 1, &Added { n: 5 })?]).await?;
    other.commit().await?;

    let mut tx = t.db.begin().await?;
    tx.keep_streams_in(&cache);
    let cached = store.load::<Sum>(&mut tx, "hot").await?;
    tx.rollback().await?;
    let mut tx = t.db.begin().await?;
    tx.defer_writes();
    let fresh = store.load::<Sum>(&mut tx, "hot").await?;
    tx.rollback().await?;

    assert_eq!((cached.state.total, cached.version), (1 + 2 + 3 + 4 + 5, 5), "events 1-4 from the cache, event 5 read");
    assert_eq!((fresh.state.total, fresh.version), (1 + 2 + 3 + 100 + 5, 5), "a read from the table");
    Ok(())
}

both_backends!(event_store_stream_cache_takes_commits_only_and_drops_what_lost_a_race);
/// The cache takes a transaction's streams back at its commit, not before: the next
/// transaction sees neither the events of one that flushed and rolled back, nor those of one
/// that lost a race at its flush (its retry reads the stream afresh).
async fn event_store_stream_cache_takes_commits_only_and_drops_what_lost_a_race(
    backend: Backend,
) -> anyhow::Result<()> {
    let t = TestDb::new(backend, &[]).await?;
    let store = EventStore::default();
    let cache = StreamCache::new(16);
    commit_through_cache(&t, &cache, "s", &[1]).await?;

    let mut tx = t.db.begin().await?;
    tx.keep_streams_in(&cache);
    let mut loaded = store.load::<Sum>(&mut tx, "s").await?;
    store.save(&mut tx, "s", &mut loaded, &[Added { n: 10 }], &json!({})).await?;
    tx.flush().await?;
    tx.rollback().await?;
    let mut tx = t.db.begin().await?;
    tx.keep_streams_in(&cache);
    let mut loaded = store.load::<Sum>(&mut tx, "s").await?;
    assert_eq!((loaded.state.total, loaded.version), (1, 1), "the rolled-back event is not in the cache");

    // Another writer takes version 2 after this transaction read the stream (on SQLite, by
    // writing version 2 in this transaction's place: its write lock keeps others out).
    match backend {
        Backend::Postgres => {
            let mut other = t.db.begin().await?;
            store.append(&mut other, "s", 1, &[NewEvent::new("Added", 1, &Added { n: 7 })?]).await?;
            other.commit().await?;
        }
        Backend::Sqlite => {
            shared::on_tx!(&mut tx, |conn| {
                sqlx::query(
                    "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload, metadata, recorded_at)
                     VALUES ('s', 2, $1, 'Added', 1, '{\"n\": 7}', '{}', CURRENT_TIMESTAMP)",
                )
                .bind(uuid::Uuid::new_v4())
                .execute(conn)
                .await?
                .rows_affected()
            });
        }
    }
    store.save(&mut tx, "s", &mut loaded, &[Added { n: 20 }], &json!({})).await?;
    let err = tx.flush().await.expect_err("conflict");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    match backend {
        Backend::Postgres => tx.rollback().await?,
        Backend::Sqlite => tx.commit().await?,
    }

    let mut tx = t.db.begin().await?;
    tx.keep_streams_in(&cache);
    let retried = store.load::<Sum>(&mut tx, "s").await?;
    assert_eq!((retried.state.total, retried.version), (8, 2), "the loser's event is not in the cache");
    Ok(())
}

// ---------------------------------------------------------------- outbox

struct Upstream {
    t: TestDb,
    broker: TestBroker,
    signal: OutboxSignal,
}

impl Upstream {
    async fn new(backend: Backend) -> anyhow::Result<Self> {
        Ok(Self { t: TestDb::new(backend, &[]).await?, broker: TestBroker::new(4)?, signal: OutboxSignal::default() })
    }

    fn relay(&self) -> anyhow::Result<Relay> {
        let options = RelayOptions { poll_interval: Duration::from_millis(20), batch_size: 16, ..Default::default() };
        Ok(Relay::new(service::ORDER, self.t.db.clone(), self.broker.kafka.producer()?, self.signal.clone(), options))
    }

    /// Commit `n` OrderPlaced messages (one transaction each) over `keys` keys.
    async fn commit_orders(&self, n: usize, keys: usize) -> anyhow::Result<Vec<Envelope>> {
        self.commit_orders_from(0, n, keys).await
    }

    /// Commit OrderPlaced messages `first..first + n` (one transaction each) over `keys` keys.
    async fn commit_orders_from(&self, first: usize, n: usize, keys: usize) -> anyhow::Result<Vec<Envelope>> {
        let mut sent = Vec::new();
        for i in first..first + n {
            let key = format!("order-{}", i % keys);
            let envelope = Envelope::new(event_type::ORDER_PLACED, 1, service::ORDER, key, &json!({"seq": i}))?;
            let mut tx = self.t.db.begin().await?;
            enqueue(&mut tx, &OutboxMessage::from_envelope(&self.broker.topics.orders, &envelope)).await?;
            tx.commit().await?;
            sent.push(envelope);
        }
        self.signal.notify();
        Ok(sent)
    }

    /// Commit OrderPlaced messages `first..first + n` of one key in one transaction, handed over
    /// to the relay at the commit or not (and then nobody is told).
    async fn commit_handed_over(&self, first: usize, n: usize, hand_over: bool) -> anyhow::Result<Vec<Envelope>> {
        let mut tx = self.t.db.begin().await?;
        if hand_over {
            tx.hand_over_to(&self.signal);
        }
        let mut sent = Vec::new();
        for i in first..first + n {
            let envelope = Envelope::new(event_type::ORDER_PLACED, 1, service::ORDER, "order-0", &json!({"seq": i}))?;
            enqueue(&mut tx, &OutboxMessage::from_envelope(&self.broker.topics.orders, &envelope)).await?;
            sent.push(envelope);
        }
        tx.commit().await?;
        Ok(sent)
    }

    async fn unpublished(&self) -> anyhow::Result<i64> {
        Ok(shared::outbox::backlog(&self.t.db).await?)
    }
}

/// Every message on `topic`, read with direct partition assignment (no group).
async fn read_topic(broker: &TestBroker, topic: &str) -> anyhow::Result<Vec<(Envelope, i32, i64)>> {
    let consumer: BaseConsumer = broker.kafka.consumer_config(&format!("reader-{}", uuid::Uuid::new_v4())).create()?;
    let total = end_offsets(broker, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..broker.kafka.partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let want: i64 = total.values().sum();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while (out.len() as i64) < want && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = header_map(&m);
            out.push((Envelope::from_parts(&headers, m.payload())?, m.partition(), m.offset()));
        }
    }
    anyhow::ensure!(out.len() as i64 == want, "read {} of {want} messages", out.len());
    Ok(out)
}

/// Partition → high watermark: exactly how many records each partition holds.
fn end_offsets(broker: &TestBroker, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    let consumer: BaseConsumer = broker.kafka.consumer_config("watermarks").create()?;
    (0..broker.kafka.partitions)
        .map(|p| Ok((p, consumer.fetch_watermarks(topic, p, Duration::from_secs(5))?.1)))
        .collect()
}

fn count_on(broker: &TestBroker, topic: &str) -> anyhow::Result<i64> {
    Ok(end_offsets(broker, topic)?.values().sum())
}

both_backends!(outbox_publishes_what_was_committed_exactly_once);
async fn outbox_publishes_what_was_committed_exactly_once(backend: Backend) -> anyhow::Result<()> {
    let up = Upstream::new(backend).await?;
    let stop = CancellationToken::new();
    let relay = tokio::spawn(up.relay()?.run(stop.clone()));
    let sent = up.commit_orders(40, 5).await?;

    eventually(WAIT, "outbox drained", || async { (up.unpublished().await.ok()? == 0).then_some(()) }).await?;
    stop.cancel();
    relay.await?;

    let received = read_topic(&up.broker, &up.broker.topics.orders).await?;
    let ids: HashSet<_> = received.iter().map(|(e, _, _)| e.id).collect();
    assert_eq!(received.len(), 40, "one record per committed row, no duplicates");
    assert_eq!(ids, sent.iter().map(|e| e.id).collect::<HashSet<_>>());
    Ok(())
}

both_backends!(outbox_rows_committed_while_the_relay_was_down_are_published_after_a_restart);
async fn outbox_rows_committed_while_the_relay_was_down_are_published_after_a_restart(
    backend: Backend,
) -> anyhow::Result<()> {
    let up = Upstream::new(backend).await?;
    // The relay dies after sending its first batch and before marking it published.
    let crashing = up.relay()?.with_crash_hook(Arc::new(|_| true));
    let sent = up.commit_orders(10, 3).await?;
    crashing.run(CancellationToken::new()).await;
    assert_eq!(up.unpublished().await?, 10, "nothing was marked published");

    let stop = CancellationToken::new();
    let relay = tokio::spawn(up.relay()?.run(stop.clone()));
    eventually(WAIT, "outbox drained after restart", || async { (up.unpublished().await.ok()? == 0).then_some(()) })
        .await?;
    stop.cancel();
    relay.await?;

    let received = read_topic(&up.broker, &up.broker.topics.orders).await?;
    let ids: HashSet<_> = received.iter().map(|(e, _, _)| e.id).collect();
    assert_eq!(ids, sent.iter().map(|e| e.id).collect::<HashSet<_>>(), "every committed row arrived");
    // The crashed batch was sent once before the crash and once after: at-least-once, which
    // consumers dedupe by id.
    assert_eq!(received.len(), 20);
    Ok(())
}

both_backends!(outbox_publishes_nothing_from_a_rolled_back_transaction);
async fn outbox_publishes_nothing_from_a_rolled_back_transaction(backend: Backend) -> anyhow::Result<()> {
    let up = Upstream::new(backend).await?;
    let envelope = Envelope::new(event_type::ORDER_PLACED, 1, service::ORDER, "order-x", &json!({}))?;
    let mut tx = up.t.db.begin().await?;
    enqueue(&mut tx, &OutboxMessage::from_envelope(&up.broker.topics.orders, &envelope)).await?;
    tx.rollback().await?;
    let committed = up.commit_orders(1, 1).await?;

    let stop = CancellationToken::new();
    let relay = tokio::spawn(up.relay()?.run(stop.clone()));
    eventually(WAIT, "outbox drained", || async { (up.unpublished().await.ok()? == 0).then_some(()) }).await?;
    stop.cancel();
    relay.await?;

    let received = read_topic(&up.broker, &up.broker.topics.orders).await?;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].0.id, committed[0].id, "only the committed row was published");
    Ok(())
}

both_backends!(outbox_two_relays_on_one_database_keep_each_keys_order);
async fn outbox_two_relays_on_one_database_keep_each_keys_order(backend: Backend) -> anyhow::Result<()> {
    let up = Upstream::new(backend).await?;
    let stop = CancellationToken::new();
    let a = tokio::spawn(up.relay()?.run(stop.clone()));
    let b = tokio::spawn(up.relay()?.run(stop.clone()));
    let sent = up.commit_orders(120, 6).await?;
    eventually(WAIT, "outbox drained", || async { (up.unpublished().await.ok()? == 0).then_some(()) }).await?;
    stop.cancel();
    a.await?;
    b.await?;

    let received = read_topic(&up.broker, &up.broker.topics.orders).await?;
    assert_each_key_in_commit_order(&received);
    assert_eq!(received.iter().map(|(e, _, _)| e.id).collect::<HashSet<_>>().len(), sent.len());
    Ok(())
}

/// Per key, the sequence numbers of [`Upstream::commit_orders`] arrive in commit order.
fn assert_each_key_in_commit_order(received: &[(Envelope, i32, i64)]) {
    let mut by_key: HashMap<String, Vec<(i64, u64)>> = HashMap::new();
    for (e, _, offset) in received {
        by_key.entry(e.subject.clone()).or_default().push((*offset, e.data["seq"].as_u64().unwrap_or(u64::MAX)));
    }
    for (key, mut seqs) in by_key {
        seqs.sort();
        let in_offset_order: Vec<u64> = seqs.iter().map(|(_, s)| *s).collect();
        let mut sorted = in_offset_order.clone();
        sorted.sort();
        assert_eq!(in_offset_order, sorted, "key {key} was reordered");
    }
}

both_backends!(outbox_relay_that_stalled_past_its_lease_does_not_send_the_batch_it_held);
/// A relay stops (as a process under `SIGSTOP` would) holding a batch it read, past its lease;
/// another relay takes over and publishes that batch and later rows of the same keys; then the
/// first resumes. Fenced by its lease, it must not send its stale batch: every row reaches the
/// topic once, each key in commit order.
async fn outbox_relay_that_stalled_past_its_lease_does_not_send_the_batch_it_held(
    backend: Backend,
) -> anyhow::Result<()> {
    let up = Upstream::new(backend).await?;
    let options = RelayOptions {
        poll_interval: Duration::from_millis(20),
        batch_size: 16,
        lease: Duration::from_millis(300),
        ..Default::default()
    };
    let relay = || -> anyhow::Result<Relay> {
        let producer = up.broker.kafka.producer()?;
        Ok(Relay::new(service::ORDER, up.t.db.clone(), producer, up.signal.clone(), options.clone()))
    };
    let stalled = Arc::new(tokio::sync::Notify::new());
    let resume = Arc::new(tokio::sync::Notify::new());
    let first_batch = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hook: shared::outbox::RelayStallHook = {
        let (stalled, resume) = (stalled.clone(), resume.clone());
        Arc::new(move || {
            let (stalled, resume, first_batch) = (stalled.clone(), resume.clone(), first_batch.clone());
            let stall: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
                if first_batch.swap(false, Ordering::SeqCst) {
                    stalled.notify_one();
                    resume.notified().await;
                }
            });
            stall
        })
    };
    let mut sent = up.commit_orders_from(0, 12, 3).await?;

    // Act: A reads the twelve rows and stops. B can take over only once A's lease lapsed; it
    // publishes them and twelve more of the same keys, and stops.
    let stop_a = CancellationToken::new();
    let a = tokio::spawn(relay()?.with_stall_hook(hook).run(stop_a.clone()));
    tokio::time::timeout(WAIT, stalled.notified()).await?;
    let stop_b = CancellationToken::new();
    let b = tokio::spawn(relay()?.run(stop_b.clone()));
    sent.extend(up.commit_orders_from(12, 12, 3).await?);
    eventually(WAIT, "the second relay drained the outbox", || async {
        (up.unpublished().await.ok()? == 0).then_some(())
    })
    .await?;
    stop_b.cancel();
    b.await?;
    // A resumes with its stale batch in hand, then stops (its producer flushed).
    resume.notify_one();
    stop_a.cancel();
    a.await?;

    // Assert
    let received = read_topic(&up.broker, &up.broker.topics.orders).await?;
    assert_eq!(received.len(), sent.len(), "each row once: the stalled relay sent nothing");
    assert_each_key_in_commit_order(&received);
    let ids: HashSet<uuid::Uuid> = received.iter().map(|(e, _, _)| e.id).collect();
    assert_eq!(ids, sent.iter().map(|e| e.id).collect::<HashSet<_>>());
    Ok(())
}

both_backends!(outbox_relay_sends_handed_over_rows_without_reading_the_table_and_sweeps_for_the_rest);
/// Rows a transaction hands over at its commit go out without the relay reading the outbox;
/// rows committed without (another replica's, say) wait for a sweep; handed-over rows behind
/// such a row wait for the sweep too, which sends them all in id order, each once.
async fn outbox_relay_sends_handed_over_rows_without_reading_the_table_and_sweeps_for_the_rest(
    backend: Backend,
) -> anyhow::Result<()> {
    // Arrange: sweeps only when asked or at the start; marks at once; a gap never times out.
    let up = Upstream::new(backend).await?;
    let options = RelayOptions {
        poll_interval: Duration::from_secs(3600),
        gap_grace: Duration::from_secs(3600),
        mark_interval: Duration::ZERO,
        ..Default::default()
    };
    let relay = Relay::new(service::ORDER, up.t.db.clone(), up.broker.kafka.producer()?, up.signal.clone(), options);
    let mut sent = up.commit_orders_from(0, 1, 1).await?; // not handed over: found by the first sweep
    assert_eq!(relay.round().await?, 1, "the first round sweeps");

    // Act 1: three rows handed over, then one row committed without.
    sent.extend(up.commit_handed_over(1, 3, true).await?);
    let elsewhere = up.commit_handed_over(4, 1, false).await?;
    let direct = relay.round().await?;

    // Assert 1: the handed-over rows went out; the other row waits for a sweep.
    assert_eq!(direct, 3);
    assert_eq!(up.unpublished().await?, 1, "a row not handed over waits for a sweep");
    assert_eq!(ids_of(&read_topic(&up.broker, &up.broker.topics.orders).await?), ids_of_sent(&sent));

    // Act 2: a sweep is asked for: the waiting row goes. Then one row committed without
    // hand-over and two handed over behind it, of one key: they wait for a sweep.
    up.signal.notify();
    assert_eq!(relay.round().await?, 1, "a notified round sweeps");
    sent.extend(elsewhere);
    let behind_a_gap = up.commit_handed_over(5, 1, false).await?;
    let handed_behind = up.commit_handed_over(6, 2, true).await?;
    assert_eq!(relay.round().await?, 0, "handed-over rows behind a gap wait");
    assert_eq!(up.unpublished().await?, 3);
    up.signal.notify();
    assert_eq!(relay.round().await?, 3, "the sweep sends the row in the gap and those behind it");
    sent.extend(behind_a_gap);
    sent.extend(handed_behind);
    // Handed-over rows continue from there, and nothing goes twice.
    sent.extend(up.commit_handed_over(8, 2, true).await?);
    assert_eq!(relay.round().await?, 2);
    assert_eq!(relay.round().await?, 0);

    // Assert 2
    assert_eq!(up.unpublished().await?, 0);
    let received = read_topic(&up.broker, &up.broker.topics.orders).await?;
    assert_eq!(received.len(), sent.len(), "each row once");
    assert_eq!(ids_of(&received), ids_of_sent(&sent));
    assert_each_key_in_commit_order(&received);
    Ok(())
}

both_backends!(outbox_rows_sent_from_a_hand_over_and_not_yet_marked_are_sent_again_after_a_crash);
/// A relay sends handed-over rows and is killed before deleting them from the outbox (deletes
/// wait up to `mark_interval`). Nothing is lost: the next relay's sweep sends them again, and each
/// key's first deliveries stay in commit order (the copies come after; consumers skip them).
async fn outbox_rows_sent_from_a_hand_over_and_not_yet_marked_are_sent_again_after_a_crash(
    backend: Backend,
) -> anyhow::Result<()> {
    // Arrange
    let up = Upstream::new(backend).await?;
    let options = RelayOptions {
        poll_interval: Duration::from_secs(3600),
        mark_interval: Duration::from_secs(3600),
        lease: Duration::from_millis(300),
        ..Default::default()
    };
    let relay = || -> anyhow::Result<Relay> {
        let producer = up.broker.kafka.producer()?;
        Ok(Relay::new(service::ORDER, up.t.db.clone(), producer, up.signal.clone(), options.clone()))
    };
    let first = relay()?;
    let mut sent = up.commit_orders_from(0, 1, 1).await?;
    assert_eq!(first.round().await?, 1, "the first round sweeps");
    sent.extend(up.commit_handed_over(1, 3, true).await?);
    assert_eq!(first.round().await?, 3, "handed over and sent");
    assert_eq!(up.unpublished().await?, 3, "sent, not yet marked");

    // Act: the relay dies holding the lease and its marks; the next one takes over.
    drop(first);
    let second = relay()?;
    eventually(WAIT, "the next relay took over and marked everything", || async {
        second.round().await.ok()?;
        (up.unpublished().await.ok()? == 0).then_some(())
    })
    .await?;

    // Assert: all four rows, the three unmarked ones twice; first deliveries in commit order.
    let received = read_topic(&up.broker, &up.broker.topics.orders).await?;
    assert_eq!(ids_of(&received), ids_of_sent(&sent));
    assert_eq!(received.len(), 7, "the rows sent but not marked went again");
    let mut by_offset: Vec<_> = received.iter().map(|(e, _, offset)| (*offset, e.id)).collect();
    by_offset.sort();
    let mut first_deliveries = Vec::new();
    for (_, id) in by_offset {
        if !first_deliveries.contains(&id) {
            first_deliveries.push(id);
        }
    }
    assert_eq!(first_deliveries, sent.iter().map(|e| e.id).collect::<Vec<_>>());
    Ok(())
}

/// Another writer's row that commits after the relay's sweep with an id below those the sweep
/// accounted for (the previous owner of partitions this process's consumer is then assigned)
/// is sent before the rows handed over after the assignment, which follow from it.
/// (PostgreSQL: SQLite's write lock keeps the other writer out while one is open.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_handed_over_after_an_assignment_do_not_overtake_the_previous_owners_late_row() -> anyhow::Result<()>
{
    // Arrange: the previous owner's transaction takes an id and stays open; another row after
    // it commits and is swept.
    let up = Upstream::new(Backend::Postgres).await?;
    let options = RelayOptions {
        poll_interval: Duration::from_secs(3600),
        gap_grace: Duration::from_secs(3600),
        mark_interval: Duration::ZERO,
        ..Default::default()
    };
    let relay = Relay::new(service::ORDER, up.t.db.clone(), up.broker.kafka.producer()?, up.signal.clone(), options);
    let late = Envelope::new(event_type::ORDER_PLACED, 1, service::ORDER, "order-0", &json!({"seq": 0}))?;
    let mut previous_owner = up.t.db.begin().await?;
    enqueue(&mut previous_owner, &OutboxMessage::from_envelope(&up.broker.topics.orders, &late)).await?;
    let mut sent = up.commit_orders_from(1, 1, 1).await?; // of the same key
    assert_eq!(relay.round().await?, 1, "the sweep sends the committed row and passes the open one's id");

    // Act: the previous owner commits; this process's consumer is assigned the partition and
    // writes a row of the same key, handed over.
    previous_owner.commit().await?;
    up.signal.partitions_assigned();
    let follows = up.commit_handed_over(2, 1, true).await?;
    let published = relay.round().await?;

    // Assert: the late row went before the row that follows from it, each once.
    assert_eq!(published, 2, "the assignment made the relay sweep");
    assert_eq!(up.unpublished().await?, 0);
    let mut received = read_topic(&up.broker, &up.broker.topics.orders).await?;
    received.sort_by_key(|(_, _, offset)| *offset);
    let in_topic_order: Vec<uuid::Uuid> = received.iter().map(|(e, _, _)| e.id).collect();
    sent.push(late);
    sent.extend(follows);
    assert_eq!(in_topic_order, sent.iter().map(|e| e.id).collect::<Vec<_>>());
    Ok(())
}

fn ids_of(received: &[(Envelope, i32, i64)]) -> HashSet<uuid::Uuid> {
    received.iter().map(|(e, _, _)| e.id).collect()
}

fn ids_of_sent(sent: &[Envelope]) -> HashSet<uuid::Uuid> {
    sent.iter().map(|e| e.id).collect()
}

// ---------------------------------------------------------------- consumer

/// A handler whose effect is one event per applied message in the stream `effects`.
#[derive(Default)]
struct Recorder {
    fail_first: AtomicU32,
    /// Lose this many optimistic-concurrency races first.
    conflicts_first: AtomicU32,
    /// Report a dependency unavailable this many times first.
    unavailable_first: AtomicU32,
    calls: AtomicUsize,
}

impl Handler for Recorder {
    async fn handle(&self, ctx: &mut MessageContext<'_>) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_first.load(Ordering::SeqCst) > 0 {
            self.fail_first.fetch_sub(1, Ordering::SeqCst);
            return Err(HandlerError::transient(anyhow::anyhow!("downstream hiccup")));
        }
        if self.unavailable_first.load(Ordering::SeqCst) > 0 {
            self.unavailable_first.fetch_sub(1, Ordering::SeqCst);
            return Err(HandlerError::unavailable(anyhow::anyhow!("webhook circuit open")));
        }
        if self.conflicts_first.load(Ordering::SeqCst) > 0 {
            self.conflicts_first.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Conflict { stream: "sku-hot".to_owned(), expected: 7 }.into());
        }
        if ctx.message.event_type != event_type::ORDER_PLACED {
            return Ok(());
        }
        let store = EventStore::default();
        let current = store.read_stream(ctx.tx, "effects", 0).await?.len() as i64;
        let effect = NewEvent::new("Applied", 1, &json!({"message_id": ctx.message.id}))?;
        store.append(ctx.tx, "effects", current, &[effect]).await?;
        Ok(())
    }
}

/// The message ids the downstream database applied, with their multiplicity.
async fn applied(db: &Db) -> anyhow::Result<HashMap<String, usize>> {
    let mut tx = db.begin_read().await?;
    let mut counts = HashMap::new();
    for e in EventStore::default().read_stream(&mut tx, "effects", 0).await? {
        *counts.entry(e.payload["message_id"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
    }
    Ok(counts)
}

fn consumer_loop(up: &Upstream, down: &TestDb, handler: Arc<Recorder>, crash: CrashHook) -> ConsumerLoop<Recorder> {
    consumer_loop_batching(up, down, handler, crash, ConsumerOptions::default().max_batch)
}

fn consumer_loop_batching<H: Handler>(
    up: &Upstream,
    down: &TestDb,
    handler: Arc<H>,
    crash: CrashHook,
    max_batch: usize,
) -> ConsumerLoop<H> {
    ConsumerLoop {
        service: service::INVENTORY,
        group: "inventory-test".into(),
        topics: vec![(up.broker.topics.orders.clone(), service::ORDER.into())],
        dead_letter_topic: up.broker.topics.dead_letter(service::INVENTORY),
        db: down.db.clone(),
        kafka: up.broker.kafka.clone(),
        handler,
        outbox_signal: OutboxSignal::default(),
        options: ConsumerOptions {
            max_attempts: 5,
            backoff_base: Duration::from_millis(5),
            backoff_cap: Duration::from_millis(50),
            max_batch,
            ..ConsumerOptions::default()
        },
        stream_cache: StreamCache::new(ConsumerOptions::default().stream_cache),
        crash_hook: crash,
    }
}

async fn publish_raw(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    headers: &[(String, String)],
    payload: &[u8],
) -> anyhow::Result<()> {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header { key: k, value: Some(v) });
    }
    producer
        .send(FutureRecord::to(topic).key(key).payload(payload).headers(h), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

async fn publish(producer: &FutureProducer, topic: &str, e: &Envelope) -> anyhow::Result<()> {
    publish_raw(producer, topic, &e.subject, &e.headers(), &e.payload_bytes()).await
}

fn placed(key: &str, seq: usize) -> anyhow::Result<Envelope> {
    Ok(Envelope::new(event_type::ORDER_PLACED, 1, service::ORDER, key, &json!({"seq": seq}))?)
}

both_backends!(consumer_applies_a_message_delivered_twice_once);
async fn consumer_applies_a_message_delivered_twice_once(backend: Backend) -> anyhow::Result<()> {
    let up = Upstream::new(backend).await?;
    let down = TestDb::new(backend, &[]).await?;
    let producer = up.broker.kafka.producer()?;
    let first = placed("order-1", 1)?;
    let second = placed("order-2", 2)?;
    publish(&producer, &up.broker.topics.orders, &first).await?;
    publish(&producer, &up.broker.topics.orders, &first).await?; // the redelivery
    publish(&producer, &up.broker.topics.orders, &second).await?;

    let stop = CancellationToken::new();
    let handler = Arc::new(Recorder::default());
    let run = tokio::spawn(consumer_loop(&up, &down, handler.clone(), CrashHook::default()).run(stop.clone()));
    let counts = eventually(WAIT, "both messages applied", || async {
        let c = applied(&down.db).await.ok()?;
        (c.len() == 2).then_some(c)
    })
    .await?;
    eventually(WAIT, "the duplicate was seen", || async { (handler.calls.load(Ordering::SeqCst) >= 2).then_some(()) })
        .await?;
    stop.cancel();
    assert_eq!(run.await??, Stopped::Shutdown);
    assert_eq!(counts.get(&first.id.to_string()), Some(&1), "applied once despite two deliveries");
    assert_eq!(counts.get(&second.id.to_string()), Some(&1));
    Ok(())
}

/// The offsets `group` committed on `topic`, summed over its partitions.
fn committed_total(broker: &TestBroker, group: &str, topic: &str) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = broker.kafka.consumer_config(group).create()?;
    let mut tpl = TopicPartitionList::new();
    for partition in end_offsets(broker, topic)?.keys() {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(5))?;
    Ok(committed.elements().iter().map(|e| e.offset().to_raw().unwrap_or_default().max(0)).sum())
}

both_backends!(consumer_acknowledges_types_its_service_does_not_act_on_without_a_transaction);
async fn consumer_acknowledges_types_its_service_does_not_act_on_without_a_transaction(
    backend: Backend,
) -> anyhow::Result<()> {
    let up = Upstream::new(backend).await?;
    let down = TestDb::new(backend, &[]).await?;
    let producer = up.broker.kafka.producer()?;
    // A backlog that mixes a type the consuming service (inventory-svc) acts on with one it
    // does not (the topology), on one key.
    let mut acted_on = Vec::new();
    for i in 0..3 {
        let placed = placed("order-1", i)?;
        publish(&producer, &up.broker.topics.orders, &placed).await?;
        acted_on.push(placed.id);
        let completed = Envelope::new(event_type::ORDER_COMPLETED, 1, service::ORDER, "order-1", &json!({"seq": i}))?;
        publish(&producer, &up.broker.topics.orders, &completed).await?;
    }

    let stop = CancellationToken::new();
    let handler = Arc::new(Recorder::default());
    let run = tokio::spawn(consumer_loop(&up, &down, handler.clone(), CrashHook::default()).run(stop.clone()));
    // Every message is acknowledged: the group's offsets cover all six.
    eventually(WAIT, "the group to commit past all six messages", || async {
        (committed_total(&up.broker, "inventory-test", &up.broker.topics.orders).ok()? == 6).then_some(())
    })
    .await?;
    stop.cancel();
    assert_eq!(run.await??, Stopped::Shutdown);

    // Only the messages it acts on reached the handler and left inbox records.
    assert_eq!(handler.calls.load(Ordering::SeqCst), 3);
    assert_eq!(applied(&down.db).await?.len(), 3);
    let inbox: Vec<uuid::Uuid> =
        shared::on_db!(&down.db, |pool| { sqlx::query_scalar("SELECT message_id FROM inbox").fetch_all(pool).await? });
    let inbox: HashSet<uuid::Uuid> = inbox.into_iter().collect();
    assert_eq!(inbox, acted_on.into_iter().collect::<HashSet<_>>());
    Ok(())
}

both_backends!(consumer_crash_after_the_database_commit_but_before_the_offset_commit_does_not_apply_twice);
async fn consumer_crash_after_the_database_commit_but_before_the_offset_commit_does_not_apply_twice(
    backend: Backend,
) -> anyhow::Result<()> {
    let up = Upstream::new(backend).await?;
    let down = TestDb::new(backend, &[]).await?;
    let producer = up.broker.kafka.producer()?;
    let messages: Vec<Envelope> = (0..6).map(|i| placed("same-key", i)).collect::<Result<_, _>>()?;
    for m in &messages {
        publish(&producer, &up.broker.topics.orders, m).await?;
    }

    // Crash right after committing the third message's transaction (one message per
    // transaction here; a crash after a batch's transaction is the next test).
    let committed = Arc::new(AtomicUsize::new(0));
    let c = committed.clone();
    let crash = CrashHook::new(move |_| c.fetch_add(1, Ordering::SeqCst) + 1 == 3);
    let handler = Arc::new(Recorder::default());
    let stopped = consumer_loop_batching(&up, &down, handler.clone(), crash, 1).run(CancellationToken::new()).await?;
    assert_eq!(stopped, Stopped::Crashed);
    assert_eq!(applied(&down.db).await?.len(), 3);

    // Restart in the same group: the third message is redelivered and skipped by the inbox.
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer_loop(&up, &down, handler.clone(), CrashHook::default()).run(stop.clone()));
    let counts = eventually(WAIT, "all six applied", || async {
        let c = applied(&down.db).await.ok()?;
        (c.len() == 6).then_some(c)
    })
    .await?;
    stop.cancel();
    run.await??;
    assert!(counts.values().all(|n| *n == 1), "no message applied twice: {counts:?}");
    assert!(handler.calls.load(Ordering::SeqCst) <= 6, "a redelivery never reaches the handler");
    Ok(())
}

both_backends!(consumer_crash_after_a_batch_commit_applies_each_message_of_the_batch_once);
async fn consumer_crash_after_a_batch_commit_applies_each_message_of_the_batch_once(
    backend: Backend,
) -> anyhow::Result<()> {
    let up = Upstream::new(backend).await?;
    let down = TestDb::new(backend, &[]).await?;
    let producer = up.broker.kafka.producer()?;
    // A backlog over several keys (so partitions), waiting before the consumer starts.
    let messages: Vec<Envelope> = (0..40).map(|i| placed(&format!("key-{}", i % 5), i)).collect::<Result<_, _>>()?;
    for m in &messages {
        publish(&producer, &up.broker.topics.orders, m).await?;
    }

    // Crash right after the first transaction committed, whatever batch it held.
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fired.clone();
    let crash = CrashHook::new(move |_| !f.swap(true, Ordering::SeqCst));
    let handler = Arc::new(Recorder::default());
    let stopped = consumer_loop(&up, &down, handler.clone(), crash).run(CancellationToken::new()).await?;
    assert_eq!(stopped, Stopped::Crashed);
    let first_batch = applied(&down.db).await?.len();
    assert!(first_batch >= 1, "the crash came after a commit");
    assert_eq!(handler.calls.load(Ordering::SeqCst), first_batch, "the crash came right after the first commit");

    // Restart in the same group: the whole batch is redelivered (its offsets were never
    // committed) and skipped by the inbox; the rest is applied once.
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer_loop(&up, &down, handler.clone(), CrashHook::default()).run(stop.clone()));
    let counts = eventually(WAIT, "all forty applied", || async {
        let c = applied(&down.db).await.ok()?;
        (c.len() == messages.len()).then_some(c)
    })
    .await?;
    stop.cancel();
    run.await??;
    assert!(counts.values().all(|n| *n == 1), "no message applied twice: {counts:?}");
    assert_eq!(handler.calls.load(Ordering::SeqCst), messages.len(), "a redelivery never reaches the handler");
    Ok(())
}

/// The relay of the service under test (its dead letters and what it publishes).
fn downstream_relay(up: &Upstream, down: &TestDb) -> anyhow::Result<Relay> {
    let options = RelayOptions { poll_interval: Duration::from_millis(20), ..Default::default() };
    Ok(Relay::new(service::INVENTORY, down.db.clone(), up.broker.kafka.producer()?, OutboxSignal::default(), options))
}

/// The headers of the first `n` dead letters on `dlq`, read with direct partition assignment.
fn dead_letters(broker: &TestBroker, dlq: &str, n: usize) -> anyhow::Result<Vec<Vec<(String, String)>>> {
    let reader: BaseConsumer = broker.kafka.consumer_config("dlq-reader").create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..broker.kafka.partitions {
        tpl.add_partition_offset(dlq, p, Offset::Beginning)?;
    }
    reader.assign(&tpl)?;
    let mut letters = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while letters.len() < n {
        anyhow::ensure!(std::time::Instant::now() < deadline, "read {} of {n} dead letters", letters.len());
        if let Some(m) = reader.poll(Duration::from_millis(200)) {
            letters.push(header_map(&m?));
        }
    }
    Ok(letters)
}

both_backends!(consumer_dead_letters_a_poison_message_with_its_origin_and_keeps_going);
async fn consumer_dead_letters_a_poison_message_with_its_origin_and_keeps_going(
    backend: Backend,
) -> anyhow::Result<()> {
    let up = Upstream::new(backend).await?;
    let down = TestDb::new(backend, &[]).await?;
    let producer = up.broker.kafka.producer()?;
    let orders = &up.broker.topics.orders;
    let good_before = placed("k", 1)?;
    let good_after = placed("k", 2)?;
    publish(&producer, orders, &good_before).await?;
    publish_raw(&producer, orders, "k", &good_before.headers(), b"{not json").await?; // bad payload
    publish_raw(&producer, orders, "k", &[], b"{}").await?; // no headers at all
    let mut unknown = placed("k", 3)?;
    unknown.event_type = "OrderTeleported".into(); // unknown type
    unknown.id = uuid::Uuid::now_v7();
    publish(&producer, orders, &unknown).await?;
    let mut forged = placed("k", 4)?;
    forged.source = "payment-svc".into(); // not the topic's publisher
    publish(&producer, orders, &forged).await?;
    publish(&producer, orders, &good_after).await?;

    let stop = CancellationToken::new();
    let run =
        tokio::spawn(consumer_loop(&up, &down, Arc::new(Recorder::default()), CrashHook::default()).run(stop.clone()));
    eventually(WAIT, "the good messages applied", || async {
        (applied(&down.db).await.ok()?.len() == 2).then_some(())
    })
    .await?;
    stop.cancel();
    run.await??;

    // The dead letters sit in the outbox until the relay publishes them.
    let relay_stop = CancellationToken::new();
    let relay = tokio::spawn(downstream_relay(&up, &down)?.run(relay_stop.clone()));
    let dlq = up.broker.topics.dead_letter(service::INVENTORY);
    eventually(WAIT, "four dead letters", || async { (count_on(&up.broker, &dlq).ok()? == 4).then_some(()) }).await?;
    relay_stop.cancel();
    relay.await?;

    let letters = dead_letters(&up.broker, &dlq, 4)?;
    for headers in &letters {
        let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get(dlq_header::ORIGINAL_TOPIC).as_deref(), Some(orders.as_str()));
        assert!(get(dlq_header::ORIGINAL_PARTITION).is_some());
        assert!(get(dlq_header::ORIGINAL_OFFSET).and_then(|o| o.parse::<i64>().ok()).is_some());
        assert!(get(dlq_header::ERROR).is_some_and(|e| !e.is_empty()));
        assert_eq!(get(dlq_header::ATTEMPTS).as_deref(), Some("1"), "permanent errors are not retried");
    }
    let errors: Vec<String> =
        letters.iter().filter_map(|h| h.iter().find(|(n, _)| n == dlq_header::ERROR).map(|(_, v)| v.clone())).collect();
    assert!(errors.iter().any(|e| e.contains("unknown event type")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("may not publish")), "{errors:?}");
    Ok(())
}

/// A saga step on [`Sum`] through the one executor: each `OrderPlaced` adds its `n` to its
/// key's sum and publishes the new total on the inventory topic, unless the sum would pass 10
/// (the domain refuses).
struct Tally {
    store: EventStore,
    topic: String,
}

impl Step for Tally {
    type Command = i64;
    type Loaded = shared::event_store::Loaded<Sum>;
    type Decision = Vec<Added>;
    type Refusal = anyhow::Error;

    fn store(&self) -> &EventStore {
        &self.store
    }

    fn command(&self, message: &Envelope) -> Result<Option<i64>, HandlerError> {
        if message.event_type != event_type::ORDER_PLACED {
            return Ok(None);
        }
        let n = message.data["n"].as_i64().ok_or_else(|| HandlerError::permanent(anyhow::anyhow!("no n")))?;
        Ok(Some(n))
    }

    async fn load(&self, tx: &mut shared::db::Tx, _: &i64) -> Result<Self::Loaded, HandlerError> {
        Ok(self.store.load::<Sum>(tx, "tally").await?)
    }

    fn decide(&self, n: &i64, sum: &Self::Loaded) -> Result<Vec<Added>, anyhow::Error> {
        anyhow::ensure!(sum.state.total + n <= 10, "adding {n} to {} passes the limit of 10", sum.state.total);
        Ok(vec![Added { n: *n }])
    }

    async fn changes(&self, _: i64, sum: Self::Loaded, added: Vec<Added>) -> Result<Changes<'_>, HandlerError> {
        let total = sum.state.total + added.iter().map(|a| a.n).sum::<i64>();
        let mut changes = Changes::new();
        changes.save("tally".to_owned(), sum, added);
        changes.publish(&self.topic, event_type::INVENTORY_RESERVED, &json!({ "total": total }))?;
        Ok(changes)
    }
}

impl Handler for Tally {
    async fn handle(&self, ctx: &mut MessageContext<'_>) -> Result<(), HandlerError> {
        ctx.execute(self).await
    }
}

both_backends!(step_executor_records_a_decision_and_dead_letters_a_refusal_with_nothing_written);
async fn step_executor_records_a_decision_and_dead_letters_a_refusal_with_nothing_written(
    backend: Backend,
) -> anyhow::Result<()> {
    let up = Upstream::new(backend).await?;
    let down = TestDb::new(backend, &[]).await?;
    let producer = up.broker.kafka.producer()?;
    let orders = &up.broker.topics.orders;
    let messages = [4, 5, 3, 1]
        .into_iter()
        .map(|n| Ok(Envelope::new(event_type::ORDER_PLACED, 1, service::ORDER, "t", &json!({ "n": n }))?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for message in &messages {
        publish(&producer, orders, message).await?;
    }

    let store = EventStore::default();
    let tally = Arc::new(Tally { store: store.clone(), topic: up.broker.topics.inventory.clone() });
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer_loop_batching(&up, &down, tally, CrashHook::default(), 64).run(stop.clone()));
    let relay_stop = CancellationToken::new();
    let relay = tokio::spawn(downstream_relay(&up, &down)?.run(relay_stop.clone()));
    let dlq = up.broker.topics.dead_letter(service::INVENTORY);
    let inventory = &up.broker.topics.inventory;
    eventually(WAIT, "three totals and one dead letter", || async {
        (count_on(&up.broker, inventory).ok()? == 3 && count_on(&up.broker, &dlq).ok()? == 1).then_some(())
    })
    .await?;
    stop.cancel();
    run.await??;
    relay_stop.cancel();
    relay.await?;

    // The decisions, each appended at the version it was loaded at, with its cause.
    let mut tx = down.db.begin_read().await?;
    let events = store.read_stream(&mut tx, "tally", 0).await?;
    let added: Vec<(i64, i64)> = events.iter().map(|e| (e.version, e.payload["n"].as_i64().unwrap_or(-1))).collect();
    assert_eq!(added, [(1, 4), (2, 5), (3, 1)], "the refused 3 appended nothing");
    let applied = [&messages[0], &messages[1], &messages[3]];
    for (event, message) in events.iter().zip(applied) {
        assert_eq!(event.metadata["causation_id"], json!(message.id));
    }
    // What they published, caused by the messages, in order.
    let published = read_topic(&up.broker, inventory).await?;
    let totals: Vec<i64> = published.iter().map(|(e, _, _)| e.data["total"].as_i64().unwrap_or(-1)).collect();
    assert_eq!(totals, [4, 9, 10]);
    let causes: Vec<Option<uuid::Uuid>> = published.iter().map(|(e, _, _)| e.causation_id).collect();
    assert_eq!(causes, applied.map(|m| Some(m.id)));
    assert!(published.iter().all(|(e, _, _)| e.source == service::INVENTORY));

    // The refusal: dead-lettered at once, with the domain's reason.
    let letter = dead_letters(&up.broker, &dlq, 1)?.remove(0);
    let get = |k: &str| letter.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert!(get(dlq_header::ERROR).is_some_and(|e| e.contains("adding 3 to 9 passes the limit")), "{letter:?}");
    assert_eq!(get(dlq_header::ATTEMPTS).as_deref(), Some("1"), "a refusal is not retried");
    assert_eq!(get(shared::envelope::header::ID).as_deref(), Some(messages[2].id.to_string().as_str()));
    Ok(())
}

both_backends!(consumer_retries_a_transient_failure_until_it_succeeds);
async fn consumer_retries_a_transient_failure_until_it_succeeds(backend: Backend) -> anyhow::Result<()> {
    let up = Upstream::new(backend).await?;
    let down = TestDb::new(backend, &[]).await?;
    let producer = up.broker.kafka.producer()?;
    let message = placed("k", 1)?;
    publish(&producer, &up.broker.topics.orders, &message).await?;

    let handler = Arc::new(Recorder { fail_first: AtomicU32::new(3), ..Default::default() });
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer_loop(&up, &down, handler.clone(), CrashHook::default()).run(stop.clone()));
    eventually(WAIT, "applied after retries", || async { (applied(&down.db).await.ok()?.len() == 1).then_some(()) })
        .await?;
    stop.cancel();
    run.await??;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 4, "three failures, then success");
    assert_eq!(count_on(&up.broker, &up.broker.topics.dead_letter(service::INVENTORY))?, 0);
    assert_eq!(shared::outbox::backlog(&down.db).await?, 0, "nothing was dead-lettered");
    Ok(())
}

both_backends!(consumer_retries_lost_concurrency_races_beyond_its_attempts_and_never_dead_letters_them);
async fn consumer_retries_lost_concurrency_races_beyond_its_attempts_and_never_dead_letters_them(
    backend: Backend,
) -> anyhow::Result<()> {
    // Arrange: the handler loses 12 races for a hot stream, more than the 5 attempts a
    // transient failure gets (replicas contending for one SKU after an outage).
    let up = Upstream::new(backend).await?;
    let down = TestDb::new(backend, &[]).await?;
    let producer = up.broker.kafka.producer()?;
    publish(&producer, &up.broker.topics.orders, &placed("k", 1)?).await?;
    let handler = Arc::new(Recorder { conflicts_first: AtomicU32::new(12), ..Default::default() });

    // Act
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer_loop(&up, &down, handler.clone(), CrashHook::default()).run(stop.clone()));
    eventually(WAIT, "applied after the lost races", || async {
        (applied(&down.db).await.ok()?.len() == 1).then_some(())
    })
    .await?;
    stop.cancel();
    run.await??;

    // Assert: applied once, after every race was retried; nothing dead-lettered.
    assert_eq!(handler.calls.load(Ordering::SeqCst), 13, "twelve lost races, then success");
    assert_eq!(count_on(&up.broker, &up.broker.topics.dead_letter(service::INVENTORY))?, 0);
    assert_eq!(shared::outbox::backlog(&down.db).await?, 0, "nothing was dead-lettered");
    Ok(())
}

both_backends!(consumer_pauses_while_a_dependency_is_unavailable_and_loses_and_dead_letters_nothing);
async fn consumer_pauses_while_a_dependency_is_unavailable_and_loses_and_dead_letters_nothing(
    backend: Backend,
) -> anyhow::Result<()> {
    // Arrange: the handler's dependency is unavailable for 12 tries, more than the 5 attempts a
    // transient failure gets; more messages arrive meanwhile.
    let up = Upstream::new(backend).await?;
    let down = TestDb::new(backend, &[]).await?;
    let producer = up.broker.kafka.producer()?;
    let first = placed("k", 1)?;
    publish(&producer, &up.broker.topics.orders, &first).await?;
    let handler = Arc::new(Recorder { unavailable_first: AtomicU32::new(12), ..Default::default() });

    // Act
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer_loop(&up, &down, handler.clone(), CrashHook::default()).run(stop.clone()));
    eventually(WAIT, "the dependency reported unavailable", || async {
        (handler.calls.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await?;
    let later: Vec<Envelope> = (2..=4).map(|seq| placed("k", seq)).collect::<Result<_, _>>()?;
    for message in &later {
        publish(&producer, &up.broker.topics.orders, message).await?;
    }
    eventually(WAIT, "every message applied once the dependency is back", || async {
        (applied(&down.db).await.ok()?.len() == 4).then_some(())
    })
    .await?;
    stop.cancel();
    run.await??;

    // Assert: each applied once, the first after 12 pauses that spent none of its attempts;
    // nothing dead-lettered.
    let applied = applied(&down.db).await?;
    for message in std::iter::once(&first).chain(&later) {
        assert_eq!(applied.get(&message.id.to_string()), Some(&1), "{} applied once", message.id);
    }
    assert_eq!(handler.calls.load(Ordering::SeqCst), 16, "twelve unavailable, then four applied");
    assert_eq!(count_on(&up.broker, &up.broker.topics.dead_letter(service::INVENTORY))?, 0);
    assert_eq!(shared::outbox::backlog(&down.db).await?, 0, "nothing was dead-lettered");
    Ok(())
}

/// A handler whose first attempt deadlocks against a rival transaction of the test's (on a
/// PostgreSQL advisory lock and the `effects` stream's next version), and is the victim.
struct Deadlocked {
    calls: AtomicUsize,
    /// The SQLSTATE of the error the first attempt's event-store append got.
    first_error: std::sync::Mutex<Option<String>>,
    /// The first attempt holds the advisory lock.
    holds_lock: tokio::sync::Notify,
    /// The rival waits for that lock: append now.
    rival_waits: tokio::sync::Notify,
}

const DEADLOCK_KEY: i64 = 4242;

impl Handler for Deadlocked {
    async fn handle(&self, ctx: &mut MessageContext<'_>) -> Result<(), HandlerError> {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        let shared::db::TxConn::Postgres(tx) = &mut ctx.tx.conn else {
            return Err(HandlerError::permanent(anyhow::anyhow!("this handler needs PostgreSQL")));
        };
        if first {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(DEADLOCK_KEY).execute(&mut **tx).await?;
            self.holds_lock.notify_one();
            self.rival_waits.notified().await;
            // Only this side checks for the cycle (the rival's timeout is an hour): it is the victim.
            sqlx::query("SET LOCAL deadlock_timeout = '10ms'").execute(&mut **tx).await?;
        }
        let store = EventStore::default();
        let current = store.read_stream(ctx.tx, "effects", 0).await?.len() as i64;
        let effect = NewEvent::new("Applied", 1, &json!({"message_id": ctx.message.id}))?;
        // The append is deferred to the flush, whose insert is the statement that waits.
        let result = match store.append(ctx.tx, "effects", current, &[effect]).await {
            Ok(_) => ctx.tx.flush().await,
            Err(err) => Err(err),
        };
        if first && let Err(StoreError::Db(sqlx::Error::Database(db))) = &result {
            *self.first_error.lock().expect("not poisoned") = db.code().map(|c| c.into_owned());
        }
        result?;
        Ok(())
    }
}

/// Two replicas' batches can lock the same streams in different orders; PostgreSQL then aborts
/// one transaction with a deadlock (40P01) raised by an event-store statement. That is a lost
/// race, not a broken message: it must be retried, never dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_retries_a_deadlocked_event_store_write_and_never_dead_letters_it() -> anyhow::Result<()> {
    // Arrange: the rival holds an uncommitted `effects` version 1, so the handler's append of
    // that version waits for it; the handler holds the advisory lock the rival will wait for.
    let up = Upstream::new(Backend::Postgres).await?;
    let down = TestDb::new(Backend::Postgres, &[]).await?;
    let store = EventStore::default();
    let mut rival = down.db.begin().await?;
    let shared::db::TxConn::Postgres(rival_tx) = &mut rival.conn else { anyhow::bail!("expected PostgreSQL") };
    sqlx::query("SET LOCAL deadlock_timeout = '1h'").execute(&mut **rival_tx).await?;
    store.append(&mut rival, "effects", 0, &[NewEvent::new("Rival", 1, &json!({}))?]).await?;
    let producer = up.broker.kafka.producer()?;
    let message = placed("k", 1)?;
    publish(&producer, &up.broker.topics.orders, &message).await?;
    let handler = Arc::new(Deadlocked {
        calls: AtomicUsize::new(0),
        first_error: std::sync::Mutex::new(None),
        holds_lock: tokio::sync::Notify::new(),
        rival_waits: tokio::sync::Notify::new(),
    });

    // Act: close the cycle. The rival asks for the handler's lock; once PostgreSQL shows it
    // waiting, the handler appends and waits for the rival.
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        consumer_loop_batching(&up, &down, handler.clone(), CrashHook::default(), ConsumerOptions::default().max_batch)
            .run(stop.clone()),
    );
    tokio::time::timeout(WAIT, handler.holds_lock.notified()).await?;
    let rival_done = tokio::spawn(async move {
        let shared::db::TxConn::Postgres(rival_tx) = &mut rival.conn else { anyhow::bail!("expected PostgreSQL") };
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(DEADLOCK_KEY).execute(&mut **rival_tx).await?;
        rival.rollback().await?;
        anyhow::Ok(())
    });
    let shared::db::Db::Postgres(pool) = &down.db else { anyhow::bail!("expected PostgreSQL") };
    eventually(WAIT, "the rival waits for the handler's lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(DEADLOCK_KEY)
        .fetch_one(pool)
        .await
        .ok()?;
        (waiting == 1).then_some(())
    })
    .await?;
    handler.rival_waits.notify_one();
    tokio::time::timeout(WAIT, rival_done).await???;
    eventually(WAIT, "applied after the deadlock", || async {
        (applied(&down.db).await.ok()?.len() == 1).then_some(())
    })
    .await?;
    stop.cancel();
    run.await??;

    // Assert: the first attempt was the deadlock victim; the retry applied the message once.
    assert_eq!(handler.first_error.lock().expect("not poisoned").as_deref(), Some("40P01"));
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2, "the deadlock, then success");
    assert_eq!(applied(&down.db).await?.get(&message.id.to_string()), Some(&1));
    assert_eq!(count_on(&up.broker, &up.broker.topics.dead_letter(service::INVENTORY))?, 0);
    assert_eq!(shared::outbox::backlog(&down.db).await?, 0, "nothing was dead-lettered");
    Ok(())
}

/// The mock broker keeps about 5 MiB per partition. A consumer group that starts after older
/// records were dropped must say so (error log + metric), not skip them silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_reports_offsets_dropped_before_it_read_them() -> anyhow::Result<()> {
    let metrics = shared::metrics::install();
    let broker = TestBroker::new(1)?;
    let down = TestDb::new(Backend::Sqlite, &[]).await?;
    let producer = broker.kafka.producer()?;
    let pad = "x".repeat(100 * 1024);
    for i in 0..80 {
        let e = Envelope::new(event_type::ORDER_PLACED, 1, service::ORDER, "k", &json!({"seq": i, "pad": pad}))?;
        publish(&producer, &broker.topics.orders, &e).await?;
    }
    let probe: BaseConsumer = broker.kafka.consumer_config("probe").create()?;
    let (low, high) = probe.fetch_watermarks(&broker.topics.orders, 0, Duration::from_secs(5))?;
    assert_eq!(high, 80);
    assert!(low > 0, "the broker dropped the oldest records (low watermark {low})");

    let up = Upstream { t: TestDb::new(Backend::Sqlite, &[]).await?, broker, signal: OutboxSignal::default() };
    let stop = CancellationToken::new();
    let run =
        tokio::spawn(consumer_loop(&up, &down, Arc::new(Recorder::default()), CrashHook::default()).run(stop.clone()));
    eventually(WAIT, "the retained records applied", || async {
        (applied(&down.db).await.ok()?.len() as i64 == high - low).then_some(())
    })
    .await?;
    stop.cancel();
    run.await??;

    let rendered = metrics.render();
    let line = rendered
        .lines()
        .find(|l| l.starts_with(shared::metrics::OFFSET_GAP) && l.contains(up.broker.topics.orders.as_str()))
        .unwrap_or_default();
    assert!(line.ends_with(&format!(" {low}")), "skipped offsets counted: {line:?}");
    Ok(())
}

// ---------------------------------------------------------------- retention

/// The inbox's message ids.
async fn inbox_ids(db: &Db) -> anyhow::Result<HashSet<uuid::Uuid>> {
    let ids: Vec<uuid::Uuid> =
        shared::on_db!(db, |pool| { sqlx::query_scalar("SELECT message_id FROM inbox").fetch_all(pool).await })?;
    Ok(ids.into_iter().collect())
}

both_backends!(retention_prunes_inbox_rows_past_it_in_batches_and_a_recent_redelivery_is_still_skipped);
async fn retention_prunes_inbox_rows_past_it_in_batches_and_a_recent_redelivery_is_still_skipped(
    backend: Backend,
) -> anyhow::Result<()> {
    use shared::retention::{INBOX, Pruner, RetentionOptions};
    let up = Upstream::new(backend).await?;
    let down = TestDb::new(backend, &[]).await?;
    let producer = up.broker.kafka.producer()?;
    let (old, recent) = (placed("order-1", 1)?, placed("order-2", 2)?);
    publish(&producer, &up.broker.topics.orders, &old).await?;
    publish(&producer, &up.broker.topics.orders, &recent).await?;
    let handler = Arc::new(Recorder::default());
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer_loop(&up, &down, handler.clone(), CrashHook::default()).run(stop.clone()));
    eventually(WAIT, "both messages applied", || async { (applied(&down.db).await.ok()?.len() == 2).then_some(()) })
        .await?;
    stop.cancel();
    run.await??;
    // Arrange: the first message, and four more, were processed 20 days ago.
    let long_ago = chrono::Utc::now() - chrono::TimeDelta::days(20);
    let older: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::new_v4()).collect();
    shared::on_db!(&down.db, |pool| {
        sqlx::query("UPDATE inbox SET processed_at = $1 WHERE message_id = $2")
            .bind(long_ago)
            .bind(old.id)
            .execute(pool)
            .await?;
        for id in &older {
            sqlx::query("INSERT INTO inbox (consumer, message_id, processed_at) VALUES ($1, $2, $3)")
                .bind(service::INVENTORY)
                .bind(*id)
                .bind(long_ago)
                .execute(pool)
                .await?;
        }
        Ok::<_, sqlx::Error>(())
    })?;

    // Act: prune with a 14-day retention, two rows per statement.
    let options = RetentionOptions { batch: 2, pause: Duration::ZERO, ..RetentionOptions::default() };
    let pruner = Pruner {
        service: service::INVENTORY,
        db: down.db.clone(),
        tables: vec![(INBOX, Duration::from_secs(14 * 24 * 3600))],
        options,
    };
    let pass = pruner.pass().await;

    // Assert: the five old rows went (two per statement); the recent one stayed …
    assert_eq!(pass.len(), 1);
    assert_eq!(pass[0].1.as_ref().ok(), Some(&5), "{:?}", pass[0].1);
    assert_eq!(inbox_ids(&down.db).await?, HashSet::from([recent.id]));
    // … so the recent message, delivered again within the retention period, is still skipped.
    publish(&producer, &up.broker.topics.orders, &recent).await?;
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer_loop(&up, &down, handler.clone(), CrashHook::default()).run(stop.clone()));
    eventually(WAIT, "the redelivery consumed", || async {
        (committed_total(&up.broker, "inventory-test", &up.broker.topics.orders).ok()? == 3).then_some(())
    })
    .await?;
    stop.cancel();
    run.await??;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2, "the redelivery never reached the handler");
    assert_eq!(applied(&down.db).await?.get(&recent.id.to_string()), Some(&1));
    Ok(())
}
