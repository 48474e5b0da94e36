//! Random interleavings of relay and consumer crashes and restarts: the effects applied must
//! equal the commands committed: nothing lost, nothing doubled.
//!
//! The pipeline under test is the whole backbone path: commands committed to an upstream
//! outbox, a [`Relay`] publishing them to Kafka (librdkafka's mock cluster), and a
//! [`ConsumerLoop`] in one fixed consumer group applying them to a downstream database, whose
//! handler records one effect per applied message. A relay "crash" happens after a batch was
//! sent and acknowledged but before it was marked published (the batch is sent again after the
//! restart); a consumer "crash" happens after a message's database commit but before its
//! offset commit (the message is delivered again after the restart).
//!
//! Each case owns its broker and databases. Steps run one after another; each step runs until
//! it is done (or crashed), which is awaited with a deadline, never with a fixed sleep.
//!
//! Runtime note: consumer starts dominate the runtime (joining the group and being assigned its
//! partitions takes a heartbeat or two), so a consumer step with nothing new to apply is skipped
//! (it could only re-join and stop again), the final restart is skipped when there is nothing
//! left to do, and scenarios are built from rounds that keep most consumer runs busy.
//! `PROPTEST_CASES=n` runs more cases.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use serde_json::json;
use shared::CancellationToken;
use shared::broker::KafkaConfig;
use shared::consumer::{ConsumerLoop, ConsumerOptions, CrashHook, Handler, HandlerError, MessageContext, Stopped};
use shared::contracts::event_type;
use shared::db::{Backend, Db};
use shared::envelope::{Envelope, header_map};
use shared::event_store::{EventStore, NewEvent, StreamCache, StreamRef};
use shared::outbox::{OutboxMessage, OutboxSignal, Relay, RelayOptions, backlog, enqueue};
use shared::testing::{TestBroker, TestDb, eventually};
use shared::topics::service;
use uuid::Uuid;

/// Deadline for anything awaited.
const WAIT: Duration = Duration::from_secs(30);
/// The consumer group every consumer run joins: a restart resumes from its committed offsets.
const GROUP: &str = "inventory-crash-test";
/// Commands are keyed over this many order ids.
const KEYS: usize = 6;
/// A crashed relay does not release its lease: a restarted one waits for it to expire.
const LEASE: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------- the scenario

#[derive(Debug, Clone)]
enum Step {
    /// Commit this many commands to the upstream outbox, each in its own transaction.
    Commit(usize),
    /// Run a relay until the outbox is drained, or until it crashes after sending its k-th
    /// batch (before marking it published).
    RelayRun { crash_after_batches: Option<u8> },
    /// Run a consumer until it applied everything on the topic, or until it crashes after its
    /// k-th database commit (before the offset commit).
    ConsumerRun { crash_after_commits: Option<u8> },
}

#[derive(Debug, Clone)]
struct Scenario {
    partitions: i32,
    batch_size: i64,
    /// Most messages the consumer applies in one transaction (a crash after a commit then
    /// leaves that many delivered again).
    consumer_batch: usize,
    steps: Vec<Step>,
}

/// A relay run that asks for a crash nine times in ten (a crash asked for after more batches
/// than the run has does not happen: a case that crashes nothing proves nothing about crashes).
fn relay_step() -> impl Strategy<Value = Step> {
    proptest::option::weighted(0.9, 1u8..=3).prop_map(|k| Step::RelayRun { crash_after_batches: k })
}

/// A consumer run that asks for a crash almost always, for the same reason.
fn consumer_step() -> impl Strategy<Value = Step> {
    proptest::option::weighted(0.95, 1u8..=3).prop_map(|k| Step::ConsumerRun { crash_after_commits: k })
}

/// One round: commit some commands, then a relay run and usually a consumer run, in either
/// order. Rounds keep most consumer runs busy: each consumer start costs seconds (the
/// group join), so a consumer run with nothing new to apply is wasted time.
fn round() -> impl Strategy<Value = Vec<Step>> {
    (1usize..=10, relay_step(), proptest::option::weighted(0.6, consumer_step()), any::<bool>()).prop_map(
        |(n, relay, consumer, consumer_first)| {
            let mut steps = vec![Step::Commit(n)];
            match consumer {
                Some(consumer) if consumer_first => steps.extend([consumer, relay]),
                Some(consumer) => steps.extend([relay, consumer]),
                None => steps.push(relay),
            }
            steps
        },
    )
}

/// One to three rounds (at most 9 steps) on 1–3 partitions with relay batches of 2–4 rows.
fn scenario() -> impl Strategy<Value = Scenario> {
    (1i32..=3, 2i64..=4, proptest::sample::select(vec![1usize, 2, 128]), proptest::collection::vec(round(), 1..=3))
        .prop_map(|(partitions, batch_size, consumer_batch, rounds)| Scenario {
            partitions,
            batch_size,
            consumer_batch,
            steps: rounds.into_iter().flatten().collect(),
        })
}

// ---------------------------------------------------------------- the downstream effect

/// One event in the stream `effects` per applied message.
#[derive(Default)]
struct Recorder {
    calls: AtomicUsize,
}

impl Handler for Recorder {
    /// Named, so that runs read `effects` ahead of their handlers (the prefetch is under test
    /// too), as a hot stream: the consumer's stream cache is under test as well.
    fn streams(&self, message: &Envelope) -> Vec<StreamRef> {
        if message.event_type == event_type::ORDER_PLACED {
            vec![StreamRef { stream: "effects".to_owned(), snapshots: true }]
        } else {
            Vec::new()
        }
    }

    async fn handle(&self, ctx: &mut MessageContext<'_>) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
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
async fn applied(db: &Db) -> anyhow::Result<HashMap<Uuid, usize>> {
    let mut tx = db.begin_read().await?;
    let mut counts = HashMap::new();
    for e in EventStore::default().read_stream(&mut tx, "effects", 0).await? {
        let id = e.payload["message_id"]
            .as_str()
            .and_then(|s| s.parse::<Uuid>().ok())
            .ok_or_else(|| anyhow::anyhow!("effect without a message id: {}", e.payload))?;
        *counts.entry(id).or_insert(0) += 1;
    }
    Ok(counts)
}

// ---------------------------------------------------------------- broker inspection

/// A consumer that reads by partition assignment (it never joins its group).
fn groupless(kafka: &KafkaConfig) -> anyhow::Result<BaseConsumer> {
    Ok(kafka.consumer_config(&format!("reader-{}", Uuid::new_v4())).create()?)
}

/// Partition → high watermark (how many records each partition holds).
fn end_offsets(consumer: &BaseConsumer, kafka: &KafkaConfig, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    (0..kafka.partitions).map(|p| Ok((p, consumer.fetch_watermarks(topic, p, Duration::from_secs(5))?.1))).collect()
}

/// Every message id on `topic` (with repetitions), read by partition assignment, and the
/// partitions' high watermarks.
fn read_topic(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<(Vec<Uuid>, HashMap<i32, i64>)> {
    let consumer = groupless(kafka)?;
    let ends = end_offsets(&consumer, kafka, topic)?;
    let want: i64 = ends.values().sum();
    let mut tpl = TopicPartitionList::new();
    for p in 0..kafka.partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while (out.len() as i64) < want && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            out.push(Envelope::from_parts(&header_map(&m), m.payload())?.id);
        }
    }
    anyhow::ensure!(out.len() as i64 == want, "read {} of {want} records", out.len());
    Ok((out, ends))
}

/// Partition → the group's committed offset (0 when it never committed).
fn group_offsets(observer: &BaseConsumer, topic: &str, partitions: i32) -> anyhow::Result<HashMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = observer.committed_offsets(tpl, Duration::from_secs(5))?;
    (0..partitions)
        .map(|p| {
            let offset = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            Ok((p, offset))
        })
        .collect()
}

// ---------------------------------------------------------------- the world of one case

struct World {
    upstream: TestDb,
    downstream: TestDb,
    broker: TestBroker,
    signal: OutboxSignal,
    batch_size: i64,
    consumer_batch: usize,
    handler: Arc<Recorder>,
    /// Every command committed upstream, in commit order.
    committed: Vec<Uuid>,
    relay_crashes: usize,
    consumer_crashes: usize,
    consumer_starts: usize,
    /// What happened, for failure messages.
    log: String,
    /// When the last note was written.
    last_note: Instant,
}

/// What a consumer step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsumerRun {
    /// Nothing new on the topic: not started.
    Skipped,
    Stopped(Stopped),
}

impl World {
    async fn new(backend: Backend, partitions: i32, batch_size: i64, consumer_batch: usize) -> anyhow::Result<Self> {
        let broker = TestBroker::new(partitions)?;
        Ok(Self {
            upstream: TestDb::new(backend, &[]).await?,
            downstream: TestDb::new(backend, &[]).await?,
            broker,
            signal: OutboxSignal::default(),
            batch_size,
            consumer_batch,
            handler: Arc::new(Recorder::default()),
            committed: Vec::new(),
            relay_crashes: 0,
            consumer_crashes: 0,
            consumer_starts: 0,
            log: String::new(),
            last_note: Instant::now(),
        })
    }

    fn note(&mut self, line: String) {
        let _ = writeln!(self.log, "  [{:>5.2} s] {line}", self.last_note.elapsed().as_secs_f64());
        self.last_note = Instant::now();
    }

    fn kafka(&self) -> KafkaConfig {
        self.broker.kafka.clone()
    }

    fn topic(&self) -> String {
        self.broker.topics.orders.clone()
    }

    /// Commit `n` commands, each in its own transaction, keyed over a few order ids.
    async fn commit(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            let seq = self.committed.len();
            let key = format!("order-{}", seq % KEYS);
            let envelope = Envelope::new(event_type::ORDER_PLACED, 1, service::ORDER, key, &json!({"seq": seq}))?;
            let mut tx = self.upstream.db.begin().await?;
            enqueue(&mut tx, &OutboxMessage::from_envelope(&self.broker.topics.orders, &envelope)).await?;
            tx.commit().await?;
            self.committed.push(envelope.id);
        }
        self.note(format!("commit {n}: {} committed", self.committed.len()));
        Ok(())
    }

    /// Run a relay until the outbox is drained or it crashed; true when it crashed.
    async fn relay_run(&mut self, crash_after_batches: Option<u8>) -> anyhow::Result<bool> {
        let options = RelayOptions {
            batch_size: self.batch_size,
            poll_interval: Duration::from_millis(20),
            lease: LEASE,
            ..Default::default()
        };
        let mut relay = Relay::new(
            service::ORDER,
            self.upstream.db.clone(),
            self.broker.kafka.producer()?,
            self.signal.clone(),
            options,
        );
        let crashed = Arc::new(AtomicBool::new(false));
        if let Some(k) = crash_after_batches {
            let batches = AtomicUsize::new(0);
            let flag = crashed.clone();
            relay = relay.with_crash_hook(Arc::new(move |_sent| {
                let crash = batches.fetch_add(1, Ordering::SeqCst) + 1 == usize::from(k);
                if crash {
                    flag.store(true, Ordering::SeqCst);
                }
                crash
            }));
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(relay.run(stop.clone()));
        let (task_ref, db) = (&task, &self.upstream.db);
        eventually(WAIT, "the relay drained the outbox or crashed", move || async move {
            (task_ref.is_finished() || backlog(db).await.ok()? == 0).then_some(())
        })
        .await?;
        stop.cancel();
        task.await?;
        let crashed = crashed.load(Ordering::SeqCst);
        self.relay_crashes += usize::from(crashed);
        let left = backlog(&self.upstream.db).await?;
        anyhow::ensure!(crashed || left == 0, "a relay that did not crash left {left} rows unpublished");
        self.note(format!(
            "relay (crash after {crash_after_batches:?} batches): {}, backlog {left}",
            if crashed { "crashed" } else { "drained" }
        ));
        Ok(crashed)
    }

    fn consumer(&self, crash_hook: CrashHook) -> ConsumerLoop<Recorder> {
        ConsumerLoop {
            service: service::INVENTORY,
            group: GROUP.into(),
            topics: vec![(self.topic(), service::ORDER.into())],
            dead_letter_topic: self.broker.topics.dead_letter(service::INVENTORY),
            db: self.downstream.db.clone(),
            kafka: self.kafka(),
            handler: self.handler.clone(),
            outbox_signal: OutboxSignal::default(),
            options: ConsumerOptions {
                max_attempts: 5,
                backoff_base: Duration::from_millis(5),
                backoff_cap: Duration::from_millis(50),
                max_batch: self.consumer_batch,
                ..ConsumerOptions::default()
            },
            stream_cache: StreamCache::new(ConsumerOptions::default().stream_cache),
            crash_hook,
        }
    }

    /// The distinct message ids on the topic and the number of records.
    async fn on_topic(&self) -> anyhow::Result<(HashSet<Uuid>, usize)> {
        let (kafka, topic) = (self.kafka(), self.topic());
        let (ids, _) = tokio::task::spawn_blocking(move || read_topic(&kafka, &topic)).await??;
        Ok((ids.iter().copied().collect(), ids.len()))
    }

    /// Run a consumer until it applied everything published so far, or crashed.
    async fn consumer_run(&mut self, crash_after_commits: Option<u8>) -> anyhow::Result<ConsumerRun> {
        let (available, records) = self.on_topic().await?;
        let before = applied(&self.downstream.db).await?;
        if available.iter().all(|id| before.contains_key(id)) {
            self.note(format!("consumer (crash after {crash_after_commits:?} commits): nothing new, not started"));
            return Ok(ConsumerRun::Skipped);
        }
        let hook = crash_after_commits.map(|k| {
            let commits = AtomicUsize::new(0);
            CrashHook::new(move |_: &Envelope| commits.fetch_add(1, Ordering::SeqCst) + 1 == usize::from(k))
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.consumer(hook.unwrap_or_default()).run(stop.clone()));
        self.consumer_starts += 1;
        let (task_ref, db, available_ref) = (&task, &self.downstream.db, &available);
        eventually(WAIT, "the consumer applied everything published or crashed", move || async move {
            if task_ref.is_finished() {
                return Some(());
            }
            let now = applied(db).await.ok()?;
            available_ref.iter().all(|id| now.contains_key(id)).then_some(())
        })
        .await?;
        stop.cancel();
        let stopped = task.await??;
        self.consumer_crashes += usize::from(stopped == Stopped::Crashed);
        let after = applied(&self.downstream.db).await?;
        self.note(format!(
            "consumer (crash after {crash_after_commits:?} commits): {stopped:?}, applied {} → {} of {} distinct \
             ({records} records) on the topic",
            before.len(),
            after.len(),
            available.len(),
        ));
        Ok(ConsumerRun::Stopped(stopped))
    }

    /// Nothing applied that was not committed, nothing applied twice (checked after every step).
    async fn check_invariants(&self) -> anyhow::Result<()> {
        let counts = applied(&self.downstream.db).await?;
        let committed: HashSet<Uuid> = self.committed.iter().copied().collect();
        let foreign: Vec<_> = counts.keys().filter(|id| !committed.contains(id)).collect();
        anyhow::ensure!(foreign.is_empty(), "applied messages that were never committed: {foreign:?}");
        let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
        anyhow::ensure!(doubled.is_empty(), "applied more than once: {doubled:?}");
        Ok(())
    }

    /// Restart everything healthy and let it finish: a relay until the outbox is drained, then
    /// a consumer until every committed command is applied and the group's offsets reached the
    /// end of every partition (every record, duplicates included, has been through the inbox).
    async fn finish(&mut self) -> anyhow::Result<HashMap<Uuid, usize>> {
        if backlog(&self.upstream.db).await? > 0 {
            self.relay_run(None).await?;
        }
        let (kafka, topic) = (self.kafka(), self.topic());
        let ends = {
            let (kafka, topic) = (kafka.clone(), topic.clone());
            tokio::task::spawn_blocking(move || end_offsets(&groupless(&kafka)?, &kafka, &topic)).await??
        };
        let observer: Arc<BaseConsumer> = Arc::new(kafka.consumer_config(GROUP).create()?);
        let caught_up = {
            let (observer, topic, ends) = (observer.clone(), topic.clone(), ends.clone());
            let partitions = kafka.partitions;
            move || {
                let (observer, topic, ends) = (observer.clone(), topic.clone(), ends.clone());
                async move {
                    let offsets =
                        tokio::task::spawn_blocking(move || group_offsets(&observer, &topic, partitions)).await.ok()?;
                    (offsets.ok()? == ends).then_some(())
                }
            }
        };
        let want = self.committed.len();
        let done = caught_up().await.is_some() && applied(&self.downstream.db).await?.len() == want;
        if done {
            self.note("final consumer: everything applied and committed already, not started".into());
        } else {
            let stop = CancellationToken::new();
            let task = tokio::spawn(self.consumer(CrashHook::default()).run(stop.clone()));
            self.consumer_starts += 1;
            let db = &self.downstream.db;
            eventually(WAIT, "every committed command applied", move || async move {
                (applied(db).await.ok()?.len() == want).then_some(())
            })
            .await?;
            eventually(WAIT, "the group's offsets at the end of every partition", caught_up).await?;
            stop.cancel();
            anyhow::ensure!(task.await?? == Stopped::Shutdown, "the healthy consumer did not shut down cleanly");
            self.note(format!("final consumer: {want} applied, offsets at {ends:?}"));
        }
        // Dropping a group consumer closes it, which blocks: not on a runtime thread.
        tokio::task::spawn_blocking(move || drop(observer)).await?;
        self.check_invariants().await?;
        applied(&self.downstream.db).await
    }
}

// ---------------------------------------------------------------- the property

/// What a case ended with.
struct Outcome {
    committed: Vec<Uuid>,
    applied: HashMap<Uuid, usize>,
    handler_calls: usize,
    /// Crashes that happened (a planned crash may not fire: a relay that drains in fewer
    /// batches, a consumer run with fewer commits).
    crashes: usize,
    log: String,
}

async fn run_scenario(backend: Backend, s: &Scenario) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut w = World::new(backend, s.partitions, s.batch_size, s.consumer_batch).await?;
    w.note(format!("{backend:?}, {} partitions, relay batches of {}", s.partitions, s.batch_size));
    let applied = match play(&mut w, &s.steps).await {
        Ok(applied) => applied,
        Err(e) => anyhow::bail!("{e:#}\n{}", w.log),
    };
    let (_, records) = w.on_topic().await?;
    eprintln!(
        "{backend:?} case: {} commands, {records} records on the topic, {} relay crashes, {} consumer crashes, \
         {} consumer starts, {:.1} s\n{}",
        w.committed.len(),
        w.relay_crashes,
        w.consumer_crashes,
        w.consumer_starts,
        started.elapsed().as_secs_f64(),
        w.log,
    );
    Ok(Outcome {
        committed: w.committed.clone(),
        applied,
        handler_calls: w.handler.calls.load(Ordering::SeqCst),
        crashes: w.relay_crashes + w.consumer_crashes,
        log: w.log.clone(),
    })
}

/// Run the steps, checking the invariants after each, then restart everything healthy.
async fn play(w: &mut World, steps: &[Step]) -> anyhow::Result<HashMap<Uuid, usize>> {
    for step in steps {
        match *step {
            Step::Commit(n) => w.commit(n).await?,
            Step::RelayRun { crash_after_batches } => {
                w.relay_run(crash_after_batches).await?;
            }
            Step::ConsumerRun { crash_after_commits } => {
                w.consumer_run(crash_after_commits).await?;
            }
        }
        w.check_invariants().await?;
    }
    w.finish().await
}

/// Cases run so far and those among them in which no crash happened, per backend: a run of
/// cases that mostly crashed nothing would prove nothing about crashes.
struct CrashTally {
    cases: AtomicUsize,
    crashless: AtomicUsize,
}

static SQLITE_CASES: CrashTally = CrashTally { cases: AtomicUsize::new(0), crashless: AtomicUsize::new(0) };
static POSTGRES_CASES: CrashTally = CrashTally { cases: AtomicUsize::new(0), crashless: AtomicUsize::new(0) };

fn check(backend: Backend, s: &Scenario) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(format!("cannot build a runtime: {e}")))?;
    let outcome = runtime.block_on(run_scenario(backend, s)).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    let committed: HashSet<Uuid> = outcome.committed.iter().copied().collect();
    let applied: HashSet<Uuid> = outcome.applied.keys().copied().collect();
    prop_assert_eq!(committed.len(), outcome.committed.len(), "command ids are unique");
    prop_assert_eq!(
        &applied,
        &committed,
        "nothing lost: the applied ids are the committed ids (missing {:?}, extra {:?})\n{}",
        committed.difference(&applied).collect::<Vec<_>>(),
        applied.difference(&committed).collect::<Vec<_>>(),
        outcome.log
    );
    let doubled: Vec<_> = outcome.applied.iter().filter(|(_, n)| **n != 1).collect();
    prop_assert!(doubled.is_empty(), "nothing doubled: {:?}\n{}", doubled, outcome.log);
    prop_assert_eq!(
        outcome.handler_calls,
        outcome.committed.len(),
        "the handler ran once per command: the inbox stops redeliveries before the handler\n{}",
        outcome.log
    );
    let tally = match backend {
        Backend::Sqlite => &SQLITE_CASES,
        Backend::Postgres => &POSTGRES_CASES,
    };
    let cases = tally.cases.fetch_add(1, Ordering::SeqCst) + 1;
    let crashless = tally.crashless.fetch_add(usize::from(outcome.crashes == 0), Ordering::SeqCst)
        + usize::from(outcome.crashes == 0);
    prop_assert!(
        cases < 2 || crashless * 2 <= cases,
        "{crashless} of {cases} cases injected no crash: the scenarios prove too little\n{}",
        outcome.log
    );
    Ok(())
}

/// `cases` by default (a case takes seconds: each consumer start waits for its group join), or
/// `PROPTEST_CASES` for a longer hunt. Shrinking is kept short for the same reason.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig {
        cases,
        max_shrink_iters: 16,
        // Failures are saved next to this file (tests/crash_interleavings.proptest-regressions).
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

// (libtest runs tests in name order on 2 threads here: the two proptests start together and the
// shorter worst case follows the PostgreSQL one, which keeps the file's wall time down.)
proptest! {
    #![proptest_config(config(6))]
    #[test]
    fn sqlite_random_relay_and_consumer_crashes_apply_every_committed_command_exactly_once(s in scenario()) {
        check(Backend::Sqlite, &s)?;
    }
}

proptest! {
    #![proptest_config(config(3))]
    #[test]
    fn postgres_random_relay_and_consumer_crashes_apply_every_committed_command_exactly_once(s in scenario()) {
        check(Backend::Postgres, &s)?;
    }
}

// ---------------------------------------------------------------- the worst case, spelled out

/// The relay sends every row and dies before marking any published; the consumer dies after
/// every single database commit; then everything restarts. Every row reaches the topic twice and
/// every message is delivered again after the crash that followed its commit, yet each command
/// is applied exactly once and the handler never sees a redelivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worst_case_relay_crash_after_sending_everything_and_consumer_crash_after_every_commit_then_restart()
-> anyhow::Result<()> {
    const N: usize = 3;
    // One message per consumer transaction, so that each run commits exactly one.
    let mut w = World::new(Backend::Sqlite, 2, 8, 1).await?;
    w.commit(N).await?;

    // One batch holds every row: it is sent, acknowledged, and never marked published.
    assert!(w.relay_run(Some(1)).await?, "the relay crashed");
    assert_eq!(backlog(&w.upstream.db).await?, N as i64, "nothing was marked published");
    let (ids, records) = w.on_topic().await?;
    assert_eq!((ids.len(), records), (N, N), "every row is on the topic once");

    // Each consumer run commits one message and dies before committing its offset; the next run
    // gets that message again (a duplicate for the inbox) and then applies one more.
    for i in 1..=N {
        let run = w.consumer_run(Some(1)).await?;
        assert_eq!(run, ConsumerRun::Stopped(Stopped::Crashed), "consumer run {i} crashed");
        let counts = applied(&w.downstream.db).await?;
        assert_eq!(counts.len(), i, "run {i} applied exactly one more command");
        assert!(counts.values().all(|n| *n == 1), "nothing applied twice: {counts:?}");
    }

    // The relay restarts once the dead one's lease expired and sends the whole batch again.
    assert!(!w.relay_run(None).await?, "the restarted relay drained the outbox");
    let (ids, records) = w.on_topic().await?;
    assert_eq!((ids.len(), records), (N, 2 * N), "every row is on the topic twice");

    // The consumer restarts, reads the crashed run's message and the N re-sent rows, and applies
    // none of them again.
    let counts = w.finish().await?;
    assert_eq!(counts.keys().copied().collect::<HashSet<_>>(), w.committed.iter().copied().collect::<HashSet<_>>());
    assert!(counts.values().all(|n| *n == 1), "each command applied exactly once: {counts:?}");
    assert_eq!(w.handler.calls.load(Ordering::SeqCst), N, "a redelivery never reaches the handler");
    eprintln!("{}", w.log);
    Ok(())
}
