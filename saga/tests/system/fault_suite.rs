//! The fault suite: the production topology — the broker as its own process, a PostgreSQL
//! database per service, two replicas of every service as OS processes — under a steady stream
//! of orders, with one fault per case:
//!
//! 1. `kill9`: kill -9 of every service at random moments, each followed by a restart;
//! 2. `broker_outage`: the broker down for 20 s; the outbox backlog grows, then drains;
//! 3. `database_outage`: PostgreSQL unreachable for 20 s (a proxy cuts and refuses
//!    connections); consumers pause, commit nothing early and recover by themselves;
//! 4. `redelivery`: each service's input topics replayed from offset 0 into its group;
//! 5. `poison`: malformed and unknown-type messages on every input topic go to the
//!    dead-letter topics and are counted, and the saga stream goes on;
//! 6. `rebalance`: a replica of every service added, then removed, mid-stream;
//! 7. `sigterm`: SIGTERM to a replica of every service mid-stream: it exits cleanly within
//!    10 s, leaving no message half-processed;
//! 8. `chaos`: a random replica SIGKILLed every 2 s and started again 0.2–1.5 s later, at a
//!    higher order rate: no saga may stand still long enough to miss its deadline;
//! 9. `rolling_restart`: every replica in turn SIGTERMed and started again, each ready before
//!    the next, as a deploy does.
//!
//! Each case owns its topology and its orders, and ends by asserting every invariant of
//! docs/architecture.md after recovery and printing one summary line:
//! `case=<name> sent=N completed=N cancelled=N lost=N doubled_charges=N doubled_refunds=N
//! doubled_notifications=N missing_notifications=N notices_redelivered=N stock=ok money=ok
//! carrier_capacity=ok unhandled_messages=N dead_letters=N deadline=...` (+ what the case
//! measured), computed from the data; a dead letter outside the poison case fails it. Cases run
//! with the services' default saga deadline unless their fault lasts longer than it allows; the
//! line then says which deadline and why. Cases run one at a time (they would starve each other
//! of CPU).
//!
//! `FAULT_SUITE_PROFILE=short` (default, for CI) or `long` (more orders and kills);
//! `FAULT_SUITE_SEED` repeats a run's random choices (the seed is printed).

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use common::WAIT;
use common::kafka;
use common::load::OrderStream;
use common::topology::{self, Options, Replica, Topology, report};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use shared::contracts::event_type;
use shared::envelope::header;
use shared::metrics as m;
use shared::testing::eventually;
use shared::topics::service;

/// How long, after the last fault, every accepted order has to become terminal.
const SETTLE: Duration = Duration::from_secs(180);
/// The issue's outage length.
const OUTAGE: Duration = Duration::from_secs(20);

/// The suite's length.
#[derive(Debug)]
struct Profile {
    name: String,
    /// Orders a second in the steady stream.
    rate: f64,
    /// Orders accepted before a case injects its fault.
    warmup: usize,
    /// kill -9 per service.
    kills_per_service: usize,
    /// Time between one service's kills, in milliseconds (uniform).
    kill_gap_ms: (u64, u64),
    /// Orders accepted after a fault healed, before the stream stops.
    after: usize,
    /// The chaos case: orders a second, and how long replicas are killed (one every 2 s).
    chaos_rate: f64,
    chaos_for: Duration,
    /// The rolling restart's order rate, how many times every replica is restarted, and the
    /// pause after each replica is ready again before the next is stopped.
    rolling_rate: f64,
    rolling_rounds: usize,
    rolling_pause: Duration,
    seed: u64,
}

fn profile() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(|| {
        let name = std::env::var("FAULT_SUITE_PROFILE").unwrap_or_else(|_| "short".to_owned());
        let seed = std::env::var("FAULT_SUITE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        let profile = match name.as_str() {
            "long" => Profile {
                name,
                rate: 8.0,
                warmup: 40,
                kills_per_service: 30,
                kill_gap_ms: (500, 4000),
                after: 120,
                chaos_rate: 30.0,
                chaos_for: Duration::from_secs(110),
                rolling_rate: 30.0,
                rolling_rounds: 2,
                rolling_pause: Duration::from_secs(4),
                seed,
            },
            _ => Profile {
                name: "short".to_owned(),
                rate: 4.0,
                warmup: 12,
                kills_per_service: 10,
                kill_gap_ms: (600, 2200),
                after: 20,
                chaos_rate: 12.0,
                chaos_for: Duration::from_secs(30),
                rolling_rate: 12.0,
                rolling_rounds: 1,
                rolling_pause: Duration::from_secs(1),
                seed,
            },
        };
        report(&format!(
            "fault-suite profile={} seed={} (FAULT_SUITE_PROFILE, FAULT_SUITE_SEED)\n",
            profile.name, profile.seed
        ));
        profile
    })
}

/// A case's random choices: from the suite's seed and the case's name.
fn rng(case: &str) -> StdRng {
    let salt = case.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    StdRng::seed_from_u64(profile().seed ^ salt)
}

/// Start the order stream and wait until the warm-up orders went all the way through the
/// saga: every group has joined and works before a fault is injected.
async fn steady_stream(t: &Topology, rate: f64) -> anyhow::Result<OrderStream> {
    let p = profile();
    let stream = OrderStream::start(t.http.clone(), t.apis.clone(), rate);
    stream.until_accepted(p.warmup, WAIT).await?;
    let warmup: Vec<String> = stream.accepted_ids().into_values().take(p.warmup).collect();
    let settled = t.settle(&warmup, WAIT).await?;
    if !settled.lost.is_empty() {
        // What each stuck order had seen, to tell a slow start from a lost message.
        let stuck: Vec<String> = settled
            .orders
            .iter()
            .filter(|(id, _)| settled.lost.contains(id))
            .map(|(id, view)| format!("{id}: status {} events {:?}", view["status"], common::event_types(view)))
            .collect();
        let dir = t.dump_logs();
        anyhow::bail!(
            "the warm-up orders did not finish within {WAIT:?}: {stuck:?} (the replicas' logs are in {})",
            dir.display()
        );
    }
    Ok(stream)
}

/// Keep the stream going for the profile's `after` more orders, then stop it and wait until
/// every accepted order is terminal.
async fn finish(t: &Topology, stream: OrderStream) -> anyhow::Result<common::topology::Settled> {
    let target = stream.accepted() + profile().after;
    stream.until_accepted(target, SETTLE).await?;
    let ids = stream.stop().await?;
    t.settle(&ids, SETTLE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_every_service_at_random_moments_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let _alone = common::alone().await;
    let p = profile();
    let mut t = Topology::start(Options::default()).await?;
    let stream = steady_stream(&t, profile().rate).await?;

    // One killer per service, all at once: kill -9 a random replica at a random moment, then
    // restart it with the same environment and database. Before each kill, read how many
    // redelivered messages the victim's inbox skipped: each is a message whose effects a killed
    // replica had committed, but not its offset.
    let mut killers = Vec::new();
    for (n, name) in service::ALL.into_iter().enumerate() {
        let replicas = t.replicas.remove(name).context("replicas")?;
        let mut rng = rng(&format!("kill9/{n}"));
        let (kills, gap) = (p.kills_per_service, p.kill_gap_ms);
        let http = t.http.clone();
        killers.push(tokio::spawn(async move {
            let mut replicas: Vec<Replica> = replicas;
            let mut redelivered = 0.0;
            for _ in 0..kills {
                tokio::time::sleep(Duration::from_millis(rng.random_range(gap.0..=gap.1))).await;
                let victim = rng.random_range(0..replicas.len());
                redelivered += replicas[victim].metric(&http, m::MESSAGES_HANDLED, &["outcome=\"duplicate\""]).await?;
                replicas[victim].kill9().await?;
                replicas[victim].start().await?;
            }
            Ok::<_, anyhow::Error>((name, replicas, kills, redelivered))
        }));
    }
    let mut kills = BTreeMap::new();
    let mut redelivered = 0.0;
    for killer in killers {
        let (name, replicas, killed, skipped) = killer.await??;
        t.replicas.insert(name, replicas);
        kills.insert(name, killed);
        redelivered += skipped;
    }

    let settled = finish(&t, stream).await?;
    for name in service::ALL {
        redelivered += t.metric(name, m::MESSAGES_HANDLED, &["outcome=\"duplicate\""]).await?;
    }
    let kills: Vec<String> = service::ALL.iter().map(|s| format!("{s}:{}", kills[s])).collect();
    let extra = format!("kills={} redelivered_after_kills={redelivered}", kills.join(","));
    t.verdict("kill9", &settled, &extra).await?;
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outage_grows_the_outbox_backlog_which_drains_once_the_broker_is_back() -> anyhow::Result<()> {
    let _alone = common::alone().await;
    let deadline = (Duration::from_secs(180), "orders placed during the 20 s outage wait it out, then the backlog");
    let t = Topology::start(Options { deadline: Some(deadline), ..Options::default() }).await?;
    let stream = steady_stream(&t, profile().rate).await?;
    let orders_db = &t.dbs[service::ORDER].db;

    // Act: the broker refuses connections for 20 s while orders keep coming.
    t.broker()?.down()?;
    let down_at = Instant::now();
    let accepted_at_outage = stream.accepted();
    let mut peak = 0;
    while down_at.elapsed() < OUTAGE {
        peak = peak.max(shared::outbox::backlog(orders_db).await?);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let backlog_at_end = shared::outbox::backlog(orders_db).await?;
    let accepted_during = stream.accepted() - accepted_at_outage;
    t.broker()?.up()?;

    // Assert: orders were accepted during the outage and their OrderPlaced rows piled up in
    // the outbox (nothing can be acknowledged by a broker that is down) …
    anyhow::ensure!(accepted_during > 0, "no order was accepted while the broker was down");
    anyhow::ensure!(
        backlog_at_end as usize >= accepted_during.saturating_sub(2),
        "the outbox backlog ({backlog_at_end}) did not grow with the orders accepted during the outage ({accepted_during})"
    );
    peak = peak.max(backlog_at_end);
    // … and the backlog drains once the broker is back, without a restart.
    let drain_started = Instant::now();
    eventually(SETTLE, "the order-svc outbox backlog to drain", || async {
        (shared::outbox::backlog(orders_db).await.ok()? < backlog_at_end / 4 + 1).then_some(())
    })
    .await?;
    let settled = finish(&t, stream).await?;
    for name in service::ALL {
        let db = &t.dbs[name].db;
        eventually(WAIT, &format!("{name}'s outbox backlog to reach 0"), || async {
            (shared::outbox::backlog(db).await.ok()? == 0).then_some(())
        })
        .await?;
    }
    let extra = format!(
        "accepted_during_outage={accepted_during} outbox_backlog_peak={peak} outbox_backlog_after=0 drained_in={:.1}s",
        drain_started.elapsed().as_secs_f64()
    );
    t.verdict("broker_outage", &settled, &extra).await?;
    t.stop().await
}

/// How a group's committed offsets relate to what its service recorded as processed (the
/// inbox) right now.
struct GroupVsInbox {
    /// Messages below the committed offsets (each must be in the inbox).
    committed: usize,
    /// Messages at or past the committed offsets that are in the inbox: processed, offset not
    /// committed (redelivered later and skipped). None may be left by a group whose members
    /// all stopped gracefully.
    processed_uncommitted: Vec<(String, i32, i64)>,
}

/// Check that every message below a group's committed offsets is recorded in the service's
/// inbox — the group never committed past a message whose effects were not durable — and
/// report which processed messages are not committed.
async fn group_vs_inbox(t: &Topology, name: &str) -> anyhow::Result<GroupVsInbox> {
    let topics = t.inputs(name);
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let committed = kafka::committed(t.bootstrap(), &t.topics.group(name), &topics).await?;
    let ends = kafka::ends(t.bootstrap(), &topics).await?;
    // The inbox only grows: read it after the offsets.
    let inbox = t.inbox(name).await?;
    let records = kafka::read(t.bootstrap(), &topics, Some(&ends)).await?;
    let mut out = GroupVsInbox { committed: 0, processed_uncommitted: Vec::new() };
    // Messages of a type the service does not act on leave no inbox record (nothing to dedupe).
    for r in records.iter().filter(|r| topology::acts_on(name, r)) {
        let id = r.header(header::ID).and_then(|id| uuid::Uuid::parse_str(id).ok());
        let in_inbox = id.is_some_and(|id| inbox.contains(&id));
        if r.offset < committed.get(&(r.topic.clone(), r.partition)).copied().unwrap_or(0) {
            if !in_inbox {
                let dir = t.dump_logs();
                anyhow::bail!(
                    "{name} committed past {}/{}@{} (message {id:?}, {:?}) whose effects are not in its inbox \
                     (the replicas' logs are in {})",
                    r.topic,
                    r.partition,
                    r.offset,
                    r.header(header::TYPE),
                    dir.display()
                );
            }
            out.committed += 1;
        } else if in_inbox {
            out.processed_uncommitted.push((r.topic.clone(), r.partition, r.offset));
        }
    }
    Ok(out)
}

async fn all_committed(t: &Topology) -> anyhow::Result<HashMap<&'static str, kafka::Offsets>> {
    let mut out = HashMap::new();
    for name in service::ALL {
        let topics = t.inputs(name);
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        out.insert(name, kafka::committed(t.bootstrap(), &t.topics.group(name), &topics).await?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_pauses_consumers_without_committing_and_they_recover_alone() -> anyhow::Result<()> {
    let _alone = common::alone().await;
    let deadline = (Duration::from_secs(180), "orders in flight wait out the 20 s outage, then the backlog");
    let t = Topology::start(Options { db_proxy: true, deadline: Some(deadline), ..Options::default() }).await?;
    let proxy = t.proxy.as_ref().context("proxy")?;
    let stream = steady_stream(&t, profile().rate).await?;

    // Act: every connection to PostgreSQL is cut, and new ones refused, for 20 s …
    let frozen = all_committed(&t).await?;
    proxy.down().await?;
    let down_at = Instant::now();
    // Nothing is recorded in an inbox from here on. Taken once the cut is complete: a message
    // processed while the offsets above were being read (the database still up) was processed
    // before the cut, and its offset may be committed after they were read.
    let cut_at = chrono::Utc::now();
    // … while every input topic holds messages to process: a redelivered copy of the latest
    // message of each type on each event topic (so that every service has messages it acts
    // on; the inbox must skip them once the database is back).
    let producer = kafka::producer(t.bootstrap())?;
    for topic in t.topics.event_topics() {
        let records = kafka::read(t.bootstrap(), &[topic], None).await?;
        let mut latest: HashMap<&str, &kafka::Record> = HashMap::new();
        for r in &records {
            let kind = r.header(header::TYPE).unwrap_or_default();
            if latest.get(kind).is_none_or(|seen| seen.offset < r.offset) {
                latest.insert(kind, r);
            }
        }
        anyhow::ensure!(!latest.is_empty(), "an empty event topic {topic}");
        for r in latest.values() {
            let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            kafka::produce(&producer, topic, &key, &headers, r.payload.as_deref().unwrap_or_default()).await?;
        }
    }
    let mut waiting = 0;
    for name in service::ALL {
        let topics = t.inputs(name);
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let behind = kafka::read(t.bootstrap(), &topics, None)
            .await?
            .iter()
            .filter(|r| r.offset >= frozen[name].get(&(r.topic.clone(), r.partition)).copied().unwrap_or(0))
            .filter(|r| topology::acts_on(name, r))
            .count();
        anyhow::ensure!(behind > 0, "{name} has nothing left to process: the outage would prove nothing");
        waiting += behind;
    }
    let mut covered = 0;
    for name in service::ALL {
        covered += group_vs_inbox(&t, name).await?.committed;
    }
    tokio::time::sleep(OUTAGE.saturating_sub(down_at.elapsed())).await;
    let before_up = all_committed(&t).await?;
    let accepted_during = stream.accepted();
    proxy.up().await?;
    let outage = down_at.elapsed();

    // Assert: since the snapshot the offsets moved only over messages whose effects were
    // committed before the cut (an offset commit sent just before it may land after it), or of
    // types the service does not act on (they need no database) …
    for name in service::ALL {
        let topics = t.inputs(name);
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let processed = t.inbox_times(name).await?;
        for r in kafka::read(t.bootstrap(), &topics, None).await? {
            let tp = (r.topic.clone(), r.partition);
            let (from, to) =
                (frozen[name].get(&tp).copied().unwrap_or(0), before_up[name].get(&tp).copied().unwrap_or(0));
            if !(from..to).contains(&r.offset) || !topology::acts_on(name, &r) {
                continue;
            }
            let id = r.header(header::ID).and_then(|id| uuid::Uuid::parse_str(id).ok());
            let before_the_cut = id.and_then(|id| processed.get(&id)).is_some_and(|at| *at < cut_at);
            anyhow::ensure!(
                before_the_cut,
                "{name} committed past {}/{}@{} ({:?}) during the database outage, not processed before it",
                r.topic,
                r.partition,
                r.offset,
                r.header(header::TYPE)
            );
        }
    }
    // … and the services recover by themselves: orders are accepted and offsets move again.
    stream.until_accepted(accepted_during + 1, WAIT).await?;
    eventually(WAIT, "consumer groups to move on after the outage", || async {
        let now = all_committed(&t).await.ok()?;
        service::ALL.iter().all(|s| now[s] != before_up[s]).then_some(())
    })
    .await?;
    let settled = finish(&t, stream).await?;
    for name in service::ALL {
        covered += group_vs_inbox(&t, name).await?.committed;
    }
    let extra = format!(
        "outage={:.1}s messages_waiting_during_outage={waiting} offsets_frozen=ok committed_messages_in_inbox={covered}",
        outage.as_secs_f64()
    );
    t.verdict("database_outage", &settled, &extra).await?;
    t.stop().await
}

/// Stop every replica of `name`, commit offset 0 on every partition of its input topics in its
/// group, start the replicas again, and wait until the group caught up. Returns how many
/// messages were replayed (the group had processed them before), how many of those the service
/// acts on, and how many redeliveries its inbox skipped as duplicates.
async fn replay_group(t: &Topology, name: &str, replicas: &mut [Replica]) -> anyhow::Result<(usize, usize, i64)> {
    let topics = t.inputs(name);
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    // Arrange: the group has no members left. They stop one after the other, as in a rolling
    // scale-down to zero: each stops once the last one took its partitions over, and each
    // commits what it processed. (Stopped at the same instant on the mock cluster, a member's
    // final commit can be refused: the mock refuses commits until the members rejoined, where
    // Kafka accepts the current generation's; those messages would be read again, and skipped
    // by the inbox.)
    let mut stops = Vec::new();
    for i in 0..replicas.len() {
        let last = replicas.len() - 1;
        let survivor_assignments = assignments(&replicas[last]);
        stops.push(replicas[i].terminate(Duration::from_secs(10)).await?);
        if i < last {
            let survivor = &replicas[last];
            eventually(WAIT, &format!("{} to take the partitions over", survivor.name), || async {
                (assignments(survivor) > survivor_assignments).then_some(())
            })
            .await?;
        }
    }
    for (took, clean, p) in &stops {
        anyhow::ensure!(*clean, "{} failed to stop: {:?}", p.name, p.log_lines().last());
        anyhow::ensure!(*took < Duration::from_secs(10), "{} took {took:?} to stop", p.name);
    }
    let before = kafka::committed(t.bootstrap(), &t.topics.group(name), &topics).await?;
    // The replayed range: every record below the group's offsets.
    let replayed: Vec<kafka::Record> = kafka::read(t.bootstrap(), &topics, Some(&before)).await?;
    let acted_on = replayed.iter().filter(|r| topology::acts_on(name, r)).count();
    anyhow::ensure!(acted_on > 0, "{name} had processed nothing it acts on: the replay would prove nothing");
    // Graceful stops committed everything they processed: nothing is left half-processed.
    let stopped = group_vs_inbox(t, name).await?;
    if !stopped.processed_uncommitted.is_empty() {
        let dir = std::env::temp_dir().join(format!("fault-suite-{}", t.prefix.trim_end_matches('.')));
        std::fs::create_dir_all(&dir)?;
        for (_, _, p) in &stops {
            std::fs::write(dir.join(format!("{}.log", p.name)), p.log_lines().join("\n"))?;
        }
        anyhow::bail!(
            "{name}'s replicas stopped gracefully without committing the offsets of processed messages {:?} \
             (their logs are in {})",
            stopped.processed_uncommitted,
            dir.display()
        );
    }

    // Act: commit offset 0 on every partition of every input topic in the service's group, as
    // an operator would, then start the replicas again.
    eventually(WAIT, &format!("{name}'s group offsets reset to 0"), || async {
        kafka::commit_all(t.bootstrap(), &t.topics.group(name), &topics, 0).await.ok()?;
        let now = kafka::committed(t.bootstrap(), &t.topics.group(name), &topics).await.ok()?;
        now.values().all(|o| *o == 0).then_some(())
    })
    .await?;
    let ends = kafka::ends(t.bootstrap(), &topics).await?;
    for replica in replicas.iter_mut() {
        replica.start().await?;
    }

    // Assert: the group reads everything again and every message it had processed is
    // recognised as a duplicate (the inbox), so none is applied twice.
    eventually(SETTLE, &format!("{name} to catch up with the replay"), || async {
        let now = kafka::committed(t.bootstrap(), &t.topics.group(name), &topics).await.ok()?;
        ends.iter().all(|(tp, end)| now.get(tp).is_some_and(|o| o >= end)).then_some(())
    })
    .await?;
    // Every message below the old offsets comes back: each one the service acts on must be
    // skipped by the inbox (one of a type it does not act on is acknowledged again, with no
    // effect). The restarted replicas process nothing else twice, but a partition handed from
    // one to the other before its offset commit landed is skipped again by the second.
    let mut skipped = 0.0;
    for replica in replicas.iter() {
        skipped += duplicates(t, replica).await?;
    }
    let duplicates = skipped as i64;
    anyhow::ensure!(
        duplicates >= acted_on as i64,
        "{name}: {acted_on} replayed messages it acts on had been processed, {duplicates} were recognised as \
         duplicates"
    );
    Ok((replayed.len(), acted_on, duplicates))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivery_of_every_input_topic_from_offset_zero_applies_no_effect_twice() -> anyhow::Result<()> {
    let _alone = common::alone().await;
    let mut t = Topology::start(Options::default()).await?;
    let stream = steady_stream(&t, profile().rate).await?;

    // Every service's group at once (each replay concerns its own group only; together they
    // take the time of one).
    let mut groups: Vec<(&'static str, Vec<Replica>)> =
        service::ALL.iter().map(|name| (*name, t.replicas.remove(name).unwrap_or_default())).collect();
    let replayed =
        futures::future::try_join_all(groups.iter_mut().map(|(name, replicas)| replay_group(&t, name, replicas))).await;
    for (name, replicas) in groups {
        t.replicas.insert(name, replicas);
    }
    let replays: Vec<String> = replayed?
        .iter()
        .zip(service::ALL)
        .map(|((replayed, acted_on, duplicates), name)| format!("{name}:{replayed}/{acted_on}/{duplicates}"))
        .collect();

    let settled = finish(&t, stream).await?;
    let extra = format!("replayed/acted_on/skipped_as_duplicates={}", replays.join(","));
    let tally = t.verdict("redelivery", &settled, &extra).await?;
    anyhow::ensure!(tally.notices_redelivered == 0, "a replay delivered a notice again");
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_are_dead_lettered_and_counted_while_the_saga_goes_on() -> anyhow::Result<()> {
    let _alone = common::alone().await;
    let t = Topology::start(Options::default()).await?;
    let stream = steady_stream(&t, profile().rate).await?;

    // Act: on every event topic, a record that is no envelope at all, an envelope whose JSON
    // payload is cut off, and a well-formed envelope of a type nobody knows.
    let producer = kafka::producer(t.bootstrap())?;
    let owners = [
        (&t.topics.orders, service::ORDER, event_type::ORDER_PLACED),
        (&t.topics.inventory, service::INVENTORY, event_type::INVENTORY_RESERVED),
        (&t.topics.payments, service::PAYMENT, event_type::PAYMENT_CAPTURED),
        (&t.topics.shipping, service::SHIPPING, event_type::SHIPMENT_SCHEDULED),
        (&t.topics.notifications, service::NOTIFICATION, event_type::NOTIFICATION_SENT),
    ];
    // Per topic: where each poison record landed (partition, offset), and the type its headers
    // name.
    type Landed<'a> = Vec<(i32, i64, Option<&'a str>)>;
    let mut injected: HashMap<String, Landed<'_>> = HashMap::new();
    for (topic, owner, known_type) in owners {
        let now = chrono::Utc::now().to_rfc3339();
        for (ce_type, payload) in [
            (None, b"\x00\x01 not an envelope".to_vec()),
            (Some(known_type), br#"{"order_id": "#.to_vec()),
            (Some("OrderTeleported"), br#"{"order_id": "00000000-0000-0000-0000-000000000000"}"#.to_vec()),
        ] {
            let key = uuid::Uuid::new_v4().to_string();
            let id = uuid::Uuid::new_v4().to_string();
            let headers: Vec<(&str, &str)> = match ce_type {
                None => vec![],
                Some(ce_type) => vec![
                    (header::SPEC_VERSION, "1.0"),
                    (header::ID, &id),
                    (header::TYPE, ce_type),
                    (header::SOURCE, owner),
                    (header::TIME, &now),
                    (header::SUBJECT, &key),
                    (header::CONTENT_TYPE, "application/json"),
                ],
            };
            let (partition, offset) = kafka::produce(&producer, topic, &key, &headers, &payload).await?;
            injected.entry(topic.clone()).or_default().push((partition, offset, ce_type));
        }
    }
    let after_injection = stream.accepted();

    // Assert: each consuming service dead-letters exactly the poison on its input topics that
    // it would have to read (no envelope, an unknown type, or a broken payload of a type it
    // acts on: a service sets aside the types it does not act on by their headers, unread),
    // with the origin recorded, and counts it; the saga stream goes on.
    let mut dead_lettered = 0;
    let mut caught: HashSet<(String, i32, i64)> = HashSet::new();
    for name in service::ALL {
        let expected: HashSet<(String, i32, i64)> = t
            .inputs(name)
            .iter()
            .flat_map(|topic| {
                injected[topic]
                    .iter()
                    .filter(move |(_, _, ce_type)| {
                        ce_type.is_none_or(|ce_type| {
                            !event_type::ALL.contains(&ce_type) || shared::topology::acts_on(name, ce_type)
                        })
                    })
                    .map(move |(p, o, _)| (topic.clone(), *p, *o))
            })
            .collect();
        caught.extend(expected.iter().cloned());
        let dlq = t.topics.dead_letter(name);
        let found = eventually(WAIT, &format!("the poison in {dlq}"), || async {
            let records = kafka::read(t.bootstrap(), &[dlq.as_str()], None).await.ok()?;
            let found: Vec<(String, i32, i64)> = records
                .iter()
                .filter_map(|r| {
                    let h = |k: &str| r.header(k).map(str::to_owned);
                    Some((
                        h("dlq_original_topic")?,
                        h("dlq_original_partition")?.parse().ok()?,
                        h("dlq_original_offset")?.parse().ok()?,
                    ))
                })
                .collect();
            expected.iter().all(|e| found.contains(e)).then_some(found)
        })
        .await
        .map_err(|e| {
            e.context(format!("expected {expected:?} (the replicas' logs are in {})", t.dump_logs().display()))
        })?;
        let unexpected: Vec<_> = found.iter().filter(|f| !expected.contains(*f)).collect();
        anyhow::ensure!(unexpected.is_empty(), "{dlq} holds messages that are not poison: {unexpected:?}");
        anyhow::ensure!(found.len() == expected.len(), "{dlq} holds a poison message twice: {found:?}");
        let counted = t.metric(name, m::DEAD_LETTERS, &[]).await? as usize;
        anyhow::ensure!(
            counted == expected.len(),
            "{name}: {} = {counted}, expected {}",
            m::DEAD_LETTERS,
            expected.len()
        );
        dead_lettered += counted;
    }
    // Every poison record was dead-lettered somewhere: a broken payload by a service that acts
    // on its type.
    let uncaught: Vec<_> = injected
        .iter()
        .flat_map(|(topic, records)| records.iter().map(move |(p, o, _)| (topic.clone(), *p, *o)))
        .filter(|record| !caught.contains(record))
        .collect();
    anyhow::ensure!(uncaught.is_empty(), "poison no service dead-lettered: {uncaught:?}");
    stream.until_accepted(after_injection + profile().after, SETTLE).await?;
    let settled = finish(&t, stream).await?;
    let injected_count: usize = injected.values().map(Vec::len).sum();
    let extra = format!("poison_injected={injected_count} dead_lettered={dead_lettered}");
    let tally = t.verdict("poison", &settled, &extra).await?;
    anyhow::ensure!(tally.notices_redelivered == 0, "poison made a notice go out twice");
    t.stop().await
}

/// How many times this process was assigned partitions ("partitions assigned" log lines with
/// a non-zero count).
fn assignments(replica: &Replica) -> usize {
    replica.process.as_ref().map_or(0, |p| {
        p.log_lines()
            .iter()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| {
                    v["message"] == "partitions assigned" && v["partitions"].as_u64().is_some_and(|n| n > 0)
                })
            })
            .count()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalance_by_a_replica_added_and_removed_mid_stream_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let _alone = common::alone().await;
    let mut t = Topology::start(Options::default()).await?;
    let stream = steady_stream(&t, profile().rate).await?;

    // Act: a third replica of every service joins its group mid-stream …
    let mut added = Vec::new();
    for name in service::ALL {
        added.push((name, t.add_replica(name).await?));
    }
    // … takes over partitions and does work …
    for (name, index) in &added {
        let replica = &t.replicas[name][*index];
        eventually(SETTLE, &format!("{} to be assigned partitions and handle messages", replica.name), || async {
            let handled = replica.metric(&t.http, m::MESSAGES_HANDLED, &["outcome=\"ok\""]).await.ok()?;
            (assignments(replica) > 0 && handled > 0.0).then_some(())
        })
        .await?;
    }
    // … and leaves again, mid-stream (within 10 s, even while its group still rebalances).
    let mut slowest = Duration::ZERO;
    let mut skips_reported = 0.0;
    for (name, index) in &added {
        let replica = t.replicas.get_mut(name).and_then(|r| r.get_mut(*index)).context("added replica")?;
        skips_reported += replica.metric(&t.http, m::OFFSET_GAP, &[]).await?;
        let (took, clean, p) = replica.terminate(Duration::from_secs(10)).await?;
        anyhow::ensure!(clean, "{} failed to stop: {:?}", p.name, p.log_lines().last());
        slowest = slowest.max(took);
        t.retired.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))?.push(p);
    }

    let settled = finish(&t, stream).await?;
    for name in service::ALL {
        skips_reported += t.metric(name, m::OFFSET_GAP, &[]).await?;
    }
    let extra = format!(
        "added={} removed={} slowest_stop={:.1}s skipped_offsets_reported={skips_reported}",
        added.len(),
        added.len(),
        slowest.as_secs_f64()
    );
    let tally = t.verdict("rebalance", &settled, &extra).await?;
    anyhow::ensure!(tally.notices_redelivered == 0, "a graceful rebalance delivered a notice again");
    // Nothing was skipped (every message was handled, above): a consumer that reports skipped
    // offsets after a rebalance raises a false alarm.
    anyhow::ensure!(skips_reported == 0.0, "consumers reported {skips_reported} skipped offsets that were not skipped");
    t.stop().await
}

/// Messages a replica recognised as already processed (skipped by the inbox).
async fn duplicates(t: &Topology, replica: &Replica) -> anyhow::Result<f64> {
    replica.metric(&t.http, m::MESSAGES_HANDLED, &["outcome=\"duplicate\""]).await
}

/// SIGTERM replica 0 of `name` after `delay`, check how it stopped and what it left behind,
/// then start it again. Returns how long the exit took and how many of its messages the
/// replica that took its partitions over saw again.
async fn sigterm_one(
    t: &Topology,
    stream: &OrderStream,
    name: &str,
    replicas: &mut [Replica],
    delay: Duration,
) -> anyhow::Result<(Duration, f64)> {
    tokio::time::sleep(delay).await;
    let survivor_duplicates = duplicates(t, &replicas[1]).await?;
    let survivor_assignments = assignments(&replicas[1]);
    let accepted = stream.accepted();

    // Act: SIGTERM replica 0 while orders flow.
    let (took, clean, stopped) = replicas[0].terminate(Duration::from_secs(10)).await?;

    // Assert: a clean exit within 10 s, after draining the consumer and the relay …
    anyhow::ensure!(clean, "{} exited with an error after SIGTERM: {:?}", stopped.name, stopped.log_lines().last());
    anyhow::ensure!(took < Duration::from_secs(10), "{} took {took:?} to exit", stopped.name);
    let logs = stopped.log_lines();
    anyhow::ensure!(logs.iter().any(|l| l.contains("consumer stopped")), "{} did not stop its consumer", stopped.name);
    anyhow::ensure!(
        !logs.iter().any(|l| l.contains("final offset commit failed")),
        "{}: the final offset commit failed",
        stopped.name
    );
    // … having committed no offset past a message whose effects were not durable …
    group_vs_inbox(t, name).await?;
    // … and the offset of every message it processed: the replica that takes its partitions
    // over sees none of them again.
    let survivor = &replicas[1];
    eventually(WAIT, &format!("{} to take the partitions over", survivor.name), || async {
        (assignments(survivor) > survivor_assignments).then_some(())
    })
    .await?;
    stream.until_accepted(accepted + 8, WAIT).await?;
    let handover_duplicates = duplicates(t, survivor).await? - survivor_duplicates;

    replicas[0].start().await?;
    Ok((took, handover_duplicates))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_stream_exits_within_ten_seconds_and_leaves_no_message_half_processed() -> anyhow::Result<()> {
    let _alone = common::alone().await;
    let mut t = Topology::start(Options::default()).await?;
    let stream = steady_stream(&t, profile().rate).await?;
    let mut rng = rng("sigterm");

    // Every service's replica 0 at its own random moment (the services' groups are
    // independent, so they overlap to save time).
    let mut groups: Vec<(&'static str, Vec<Replica>, Duration)> = service::ALL
        .iter()
        .map(|name| {
            let delay = Duration::from_millis(rng.random_range(300..=4000));
            (*name, t.replicas.remove(name).unwrap_or_default(), delay)
        })
        .collect();
    let stopped = futures::future::try_join_all(
        groups.iter_mut().map(|(name, replicas, delay)| sigterm_one(&t, &stream, name, replicas, *delay)),
    )
    .await;
    for (name, replicas, _) in groups {
        t.replicas.insert(name, replicas);
    }
    let stopped = stopped?;
    let exits: Vec<String> =
        stopped.iter().zip(service::ALL).map(|((took, _), name)| format!("{name}:{}ms", took.as_millis())).collect();
    let handover_duplicates: f64 = stopped.iter().map(|(_, d)| d).sum();

    let settled = finish(&t, stream).await?;
    let extra = format!("exits={} handover_duplicates={handover_duplicates}", exits.join(","));
    let tally = t.verdict("sigterm", &settled, &extra).await?;
    anyhow::ensure!(handover_duplicates == 0.0, "a stopped replica left processed messages uncommitted");
    anyhow::ensure!(tally.notices_redelivered == 0, "a graceful stop delivered a notice again");
    t.stop().await
}

/// How the orders placed between `from` and `to` fared, for the summary line.
struct Fared {
    /// Orders whose outcome is not the one their inputs call for.
    wrong_outcomes: usize,
    /// Of those, cancelled by the saga deadline.
    deadline_exceeded: usize,
    /// Placed→terminal of the orders placed in the window: p50, p99, max.
    latency: (Duration, Duration, Duration),
    /// When the last order became terminal.
    last_terminal: Option<chrono::DateTime<chrono::Utc>>,
}

fn time(v: &serde_json::Value) -> Option<chrono::DateTime<chrono::Utc>> {
    v.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&chrono::Utc))
}

fn fared(
    settled: &common::topology::Settled,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Fared {
    let mut wrong_outcomes = 0;
    let mut deadline_exceeded = 0;
    let mut latencies = Vec::new();
    let mut last_terminal = None;
    for (i, (_, order)) in settled.orders.iter().enumerate() {
        let right = match common::invariants::order_for(i).3 {
            "completed" => order["status"] == "completed",
            "poster" => order["status"] == "completed" || order["reason"] == "out_of_stock",
            reason => order["reason"] == reason,
        };
        if !right {
            wrong_outcomes += 1;
            deadline_exceeded += usize::from(order["reason"] == "deadline_exceeded");
        }
        let (placed, ended) = (time(&order["created_at"]), time(&order["ended_at"]));
        last_terminal = last_terminal.max(ended);
        if let (Some(placed), Some(ended)) = (placed, ended)
            && (from..=to).contains(&placed)
        {
            latencies.push((ended - placed).to_std().unwrap_or_default());
        }
    }
    latencies.sort();
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied();
    let latency = (at(0.5).unwrap_or_default(), at(0.99).unwrap_or_default(), at(1.0).unwrap_or_default());
    Fared { wrong_outcomes, deadline_exceeded, latency, last_terminal }
}

impl Fared {
    /// `wrong_outcomes=N deadline_exceeded=N placed_to_terminal_ms=p50/p99/max`.
    fn line(&self) -> String {
        let ms = |d: Duration| d.as_millis();
        format!(
            "wrong_outcomes={} deadline_exceeded={} placed_to_terminal_ms={}/{}/{}",
            self.wrong_outcomes,
            self.deadline_exceeded,
            ms(self.latency.0),
            ms(self.latency.1),
            ms(self.latency.2)
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_kill9_of_a_random_replica_every_two_seconds_keeps_every_saga_moving() -> anyhow::Result<()> {
    let _alone = common::alone().await;
    let p = profile();
    // Sagas stand still while a killed replica's partitions wait for its session to expire; the
    // deadline is the one the chaos targets are set for.
    let deadline = (Duration::from_secs(60), "the chaos targets' deadline");
    let mut t = Topology::start(Options { deadline: Some(deadline), ..Options::default() }).await?;
    let stream = steady_stream(&t, p.chaos_rate).await?;
    let mut rng = rng("chaos");

    // Act: every 2 s, SIGKILL a random replica of a random service and start it again
    // 0.2–1.5 s later. Before each kill, read how many redeliveries its inbox skipped (messages a
    // killed replica had applied without committing their offsets).
    let http = t.http.clone();
    let (chaos_from, started) = (chrono::Utc::now(), Instant::now());
    let mut kills: BTreeMap<&str, usize> = service::ALL.iter().map(|s| (*s, 0)).collect();
    let mut redelivered = 0.0;
    let mut last_restart = chaos_from;
    let mut tick = 1u32;
    while started.elapsed() + Duration::from_secs(2) <= p.chaos_for {
        tokio::time::sleep_until((started + Duration::from_secs(2) * tick).into()).await;
        tick += 1;
        let name = service::ALL[rng.random_range(0..service::ALL.len())];
        let replicas = t.replicas.get_mut(name).context("replicas")?;
        let victim = rng.random_range(0..replicas.len());
        redelivered += replicas[victim].metric(&http, m::MESSAGES_HANDLED, &["outcome=\"duplicate\""]).await?;
        let killed = replicas[victim].kill9().await?;
        t.retired.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))?.extend(killed);
        *kills.entry(name).or_default() += 1;
        let killed_at = chrono::Utc::now();
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..=1500))).await;
        replicas[victim].start().await?;
        last_restart = chrono::Utc::now();
        eprintln!(
            "chaos: killed {} at {}, started again at {}",
            replicas[victim].name,
            killed_at.format("%H:%M:%S%.3f"),
            last_restart.format("%H:%M:%S%.3f")
        );
    }
    let chaos_to = chrono::Utc::now();

    // Assert: every order ends as its inputs call for, none by the deadline, and its customer
    // is told once (the verdict checks each; the line reports them).
    let settled = finish(&t, stream).await?;
    for name in service::ALL {
        redelivered += t.metric(name, m::MESSAGES_HANDLED, &["outcome=\"duplicate\""]).await?;
    }
    let fared = fared(&settled, chaos_from, chaos_to);
    let settled_after = fared.last_terminal.map_or(0.0, |at| (at - last_restart).as_seconds_f64().max(0.0));
    let kills_line: Vec<String> = kills.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    let extra = format!(
        "kills={} total_kills={} {} last_restart_to_all_terminal={settled_after:.1}s redelivered_after_kills={redelivered}",
        kills_line.join(","),
        kills.values().sum::<usize>(),
        fared.line(),
    );
    t.verdict("chaos", &settled, &extra).await?;
    anyhow::ensure!(
        fared.wrong_outcomes == 0,
        "{} orders ended otherwise than their inputs call for",
        fared.wrong_outcomes
    );
    t.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_of_every_replica_in_turn_keeps_sagas_moving_and_customers_told_once() -> anyhow::Result<()> {
    let _alone = common::alone().await;
    let p = profile();
    let mut t = Topology::start(Options::default()).await?;
    let stream = steady_stream(&t, p.rolling_rate).await?;

    // Act: as a deploy does it, one replica at a time: SIGTERM, wait for the exit, start it
    // again and wait until it is ready, then the next.
    let http = t.http.clone();
    let from = chrono::Utc::now();
    let mut restarts = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..p.rolling_rounds {
        for name in service::ALL {
            let replicas = t.replicas.get_mut(name).context("replicas")?;
            for replica in replicas.iter_mut() {
                let (took, clean, stopped) = replica.terminate(Duration::from_secs(10)).await?;
                anyhow::ensure!(clean, "{} failed to stop: {:?}", stopped.name, stopped.log_lines().last());
                slowest = slowest.max(took);
                t.retired.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))?.push(stopped);
                replica.start().await?;
                replica.until_ready(&http).await?;
                restarts += 1;
                tokio::time::sleep(p.rolling_pause).await;
            }
        }
    }
    let to = chrono::Utc::now();

    let settled = finish(&t, stream).await?;
    let fared = fared(&settled, from, to);
    let extra = format!("restarts={restarts} slowest_stop={:.1}s {}", slowest.as_secs_f64(), fared.line());
    let tally = t.verdict("rolling_restart", &settled, &extra).await?;
    anyhow::ensure!(
        fared.wrong_outcomes == 0,
        "{} orders ended otherwise than their inputs call for",
        fared.wrong_outcomes
    );
    anyhow::ensure!(tally.notices_redelivered == 0, "a graceful restart delivered a notice again");
    t.stop().await
}
