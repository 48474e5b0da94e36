//! `sagactl load`: POST /orders at a fixed arrival rate (an open model: order `i` leaves at
//! `start + i / rate` whatever the earlier responses do), then wait for every accepted order to
//! reach a terminal state, and report throughput, latency percentiles (HdrHistogram) and
//! outcomes, on the terminal and as a JSON result file.
//!
//! Terminal states are found through the API: `GET /orders?status=completed|cancelled` pages,
//! newest first, down to the oldest order still open (ids are UUIDv7, ordered by time). Each
//! page item carries the outcome and `ended_at`, so watching costs the system under load a few
//! list queries per poll, not a read per order (a server without `ended_at` is asked
//! `GET /orders/{id}` per finished order instead). The placed→terminal latency is the server's
//! own: from `created_at` to the time of the terminal event.
//!
//! The run is bounded: orders are sent for `--duration`, then awaited for at most
//! `--wait-timeout`; Ctrl-C stops sending and reports what it has.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::{Value, json};
use shared::CancellationToken;
use uuid::Uuid;

use crate::Ctx;
use crate::cli::LoadArgs;
use crate::output::{self, OutputFormat};

/// What a generated order is meant to do, mapped to the demo data (README, "Demo data").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    Completed,
    OutOfStock,
    UnknownSku,
    PaymentDeclined,
    UnknownCustomer,
    DestinationNotServed,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Completed,
        Scenario::OutOfStock,
        Scenario::UnknownSku,
        Scenario::PaymentDeclined,
        Scenario::UnknownCustomer,
        Scenario::DestinationNotServed,
    ];

    /// The scenario's name, which is also the outcome it should end with (`completed` or the
    /// cancellation reason).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Completed => "completed",
            Scenario::OutOfStock => "out_of_stock",
            Scenario::UnknownSku => "unknown_sku",
            Scenario::PaymentDeclined => "payment_declined",
            Scenario::UnknownCustomer => "unknown_customer",
            Scenario::DestinationNotServed => "destination_not_served",
        }
    }

    /// The `POST /orders` body of the `i`-th order of this scenario.
    pub fn body(self, i: u64) -> Value {
        let order = |customer: &str, items: Value, country: &str| {
            json!({
                "customer_id": customer,
                "items": items,
                "ship_to": {"country": country},
            })
        };
        match self {
            // Served by both carriers, round-robin.
            Scenario::Completed => {
                let country = ["NL", "DE", "FR", "US"][(i % 4) as usize];
                order(
                    "cust-rich",
                    json!([{"sku": "sku-tee", "quantity": 1}, {"sku": "sku-mug", "quantity": 1}]),
                    country,
                )
            }
            Scenario::OutOfStock => order("cust-rich", json!([{"sku": "sku-soldout", "quantity": 1}]), "NL"),
            Scenario::UnknownSku => order("cust-rich", json!([{"sku": "sku-does-not-exist", "quantity": 1}]), "NL"),
            // Two T-shirts cost 30.00 EUR; cust-poor has 10.00 EUR.
            Scenario::PaymentDeclined => order("cust-poor", json!([{"sku": "sku-tee", "quantity": 2}]), "NL"),
            Scenario::UnknownCustomer => order("cust-load-unknown", json!([{"sku": "sku-tee", "quantity": 1}]), "NL"),
            Scenario::DestinationNotServed => order("cust-rich", json!([{"sku": "sku-mug", "quantity": 1}]), "JP"),
        }
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Scenario::ALL.into_iter().find(|s| s.name() == raw.trim()).ok_or_else(|| {
            let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
            format!("unknown scenario {raw:?} (one of {})", names.join(", "))
        })
    }
}

/// Weighted scenarios: `completed=80,out_of_stock=5,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Scenario, u32)>,
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let mut weights: Vec<(Scenario, u32)> = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) =
                part.split_once('=').ok_or_else(|| format!("invalid mix entry {part:?}: expected scenario=weight"))?;
            let scenario: Scenario = name.parse()?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("invalid weight {weight:?} for {name}: expected a whole number"))?;
            if weights.iter().any(|(s, _)| *s == scenario) {
                return Err(format!("scenario {name} appears twice in the mix"));
            }
            if weight > 0 {
                weights.push((scenario, weight));
            }
        }
        if weights.is_empty() {
            return Err("the mix has no scenario with a positive weight".to_owned());
        }
        Ok(Self { weights })
    }
}

impl Mix {
    /// Scenarios in a fixed, evenly spread sequence (smooth weighted round-robin): every
    /// `sum(weights)` orders hold each scenario exactly `weight` times.
    pub fn sequence(&self) -> impl Iterator<Item = Scenario> + '_ {
        let total: i64 = self.weights.iter().map(|(_, w)| i64::from(*w)).sum();
        let mut current = vec![0i64; self.weights.len()];
        std::iter::from_fn(move || {
            let mut best = 0;
            for (i, (_, weight)) in self.weights.iter().enumerate() {
                current[i] += i64::from(*weight);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            Some(self.weights[best].0)
        })
    }

    fn as_map(&self) -> BTreeMap<String, u32> {
        self.weights.iter().map(|(s, w)| (s.name().to_owned(), *w)).collect()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(micros: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        let empty = micros.is_empty();
        let q = |q: f64| if empty { 0.0 } else { ms(micros.value_at_quantile(q)) };
        Self {
            count: micros.len(),
            mean: if empty { 0.0 } else { micros.mean().round() / 1000.0 },
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p99_9: q(0.999),
            max: if empty { 0.0 } else { ms(micros.max()) },
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioReport {
    pub sent: u64,
    pub accepted: u64,
    pub outcomes: BTreeMap<String, u64>,
    /// Orders that ended otherwise than the scenario meant.
    pub unexpected: u64,
}

/// The result file.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub started_at: DateTime<Utc>,
    pub api_url: String,
    pub target_rate: f64,
    pub duration_seconds: f64,
    pub mix: BTreeMap<String, u32>,
    pub planned: u64,
    /// Requests sent, and what came back.
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub server_errors: u64,
    pub transport_errors: u64,
    /// Arrivals not sent because --max-in-flight requests were outstanding.
    pub dropped: u64,
    pub send_seconds: f64,
    pub achieved_rate: f64,
    pub accepted_per_sec: f64,
    /// From the first request to the last saga observed finished.
    pub window_seconds: f64,
    pub completed_per_sec: f64,
    pub finished_per_sec: f64,
    pub finished: u64,
    pub not_terminal: u64,
    pub http_latency_ms: Percentiles,
    pub saga_latency_ms: Percentiles,
    /// Finished orders by outcome: `completed` or the cancellation reason.
    pub outcomes: BTreeMap<String, u64>,
    pub scenarios: BTreeMap<String, ScenarioReport>,
    pub unexpected_outcomes: u64,
    /// Non-202 answers and transport errors, by kind.
    pub errors: BTreeMap<String, u64>,
    pub interrupted: bool,
}

/// Everything the request tasks and the poller record.
struct Tracker {
    pending: BTreeMap<Uuid, Scenario>,
    outcomes: Vec<(Scenario, String)>,
    http: Histogram<u64>,
    saga: Histogram<u64>,
    sent: u64,
    accepted: u64,
    rejected: u64,
    server_errors: u64,
    transport_errors: u64,
    dropped: u64,
    per_scenario: HashMap<Scenario, (u64, u64)>,
    errors: BTreeMap<String, u64>,
    last_finished: Option<Instant>,
    poll_errors: u64,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| anyhow!("failed to create a histogram: {e}"))
}

impl Tracker {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            pending: BTreeMap::new(),
            outcomes: Vec::new(),
            http: histogram()?,
            saga: histogram()?,
            sent: 0,
            accepted: 0,
            rejected: 0,
            server_errors: 0,
            transport_errors: 0,
            dropped: 0,
            per_scenario: HashMap::new(),
            errors: BTreeMap::new(),
            last_finished: None,
            poll_errors: 0,
        })
    }
}

type Shared = Arc<Mutex<Tracker>>;

fn lock(tracker: &Shared) -> MutexGuard<'_, Tracker> {
    // A panic while holding the lock cannot leave the counters half-updated in a way that
    // matters for a report: keep going with them.
    tracker.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Send one order and record what came back.
async fn place(client: reqwest::Client, url: String, scenario: Scenario, body: Value, tracker: Shared) {
    let started = Instant::now();
    let response = client.post(&url).json(&body).send().await;
    let result = match response {
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            Ok((status, text))
        }
        Err(err) => Err(err),
    };
    let latency = started.elapsed();
    let mut t = lock(&tracker);
    t.sent += 1;
    t.per_scenario.entry(scenario).or_default().0 += 1;
    match result {
        Ok((status, text)) if status == reqwest::StatusCode::ACCEPTED => {
            t.http.saturating_record(duration_micros(latency));
            let id = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()));
            match id {
                Some(id) => {
                    t.accepted += 1;
                    t.per_scenario.entry(scenario).or_default().1 += 1;
                    t.pending.insert(id, scenario);
                }
                None => *t.errors.entry("202 without an order id".to_owned()).or_default() += 1,
            }
        }
        Ok((status, _)) => {
            t.http.saturating_record(duration_micros(latency));
            if status.is_server_error() {
                t.server_errors += 1;
            } else {
                t.rejected += 1;
            }
            *t.errors.entry(format!("HTTP {}", status.as_u16())).or_default() += 1;
        }
        Err(err) => {
            t.transport_errors += 1;
            let kind = if err.is_timeout() {
                "timeout"
            } else if err.is_connect() {
                "connection failed"
            } else {
                "transport error"
            };
            *t.errors.entry(kind.to_owned()).or_default() += 1;
        }
    }
}

/// A finished order as a `GET /orders?status=` page shows it: its id, and its outcome and
/// placed→terminal latency when the server reports `ended_at` (older servers do not: those
/// orders are read one by one).
type Listed = (Uuid, Option<(String, Duration)>);

/// One `GET /orders?status=` page.
async fn page(
    client: &reqwest::Client,
    base: &str,
    status: &str,
    cursor: Option<&str>,
) -> anyhow::Result<(Vec<Listed>, Option<String>)> {
    let mut request = client.get(format!("{base}/orders")).query(&[("status", status), ("limit", "200")]);
    if let Some(cursor) = cursor {
        request = request.query(&[("cursor", cursor)]);
    }
    let response = request.send().await?.error_for_status()?;
    let body: Value = response.json().await?;
    let listed = body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    let id = item["id"].as_str().and_then(|id| Uuid::parse_str(id).ok())?;
                    Some((id, outcome_of(item, &item["ended_at"])))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((listed, body["next_cursor"].as_str().map(str::to_owned)))
}

fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
}

/// `(outcome, placed→terminal)` of an order (a page item or a whole view) that ended at `ended`;
/// `None` while it is open or when the end time is unknown.
fn outcome_of(order: &Value, ended: &Value) -> Option<(String, Duration)> {
    let outcome = match order["status"].as_str() {
        Some("completed") => "completed".to_owned(),
        Some("cancelled") => order["reason"].as_str().unwrap_or("cancelled").to_owned(),
        _ => return None,
    };
    let latency = (time_of(ended)? - time_of(&order["created_at"])?).to_std().unwrap_or_default();
    Some((outcome, latency))
}

/// `(outcome, placed→terminal)` of a finished order, from its timeline.
async fn finished(client: &reqwest::Client, base: &str, id: Uuid) -> anyhow::Result<Option<(String, Duration)>> {
    let view: Value = client.get(format!("{base}/orders/{id}")).send().await?.error_for_status()?.json().await?;
    let terminal = view["events"].as_array().and_then(|events| {
        events.iter().rev().find(|e| matches!(e["type"].as_str(), Some("OrderCompleted" | "OrderCancelled"))).cloned()
    });
    let ended = terminal.map_or(Value::Null, |e| e["at"].clone());
    Ok(outcome_of(&view, &ended).or_else(|| {
        // Terminal, but without a terminal event's time: count it with no latency.
        matches!(view["status"].as_str(), Some("completed" | "cancelled"))
            .then(|| outcome_of(&view, &view["created_at"]))
            .flatten()
    }))
}

/// One poll: find our finished orders and record their outcomes.
async fn poll_once(client: &reqwest::Client, base: &str, tracker: &Shared) -> anyhow::Result<()> {
    let Some(oldest) = lock(tracker).pending.keys().next().copied() else {
        return Ok(());
    };
    let mut listed = Vec::new();
    let mut unknown = Vec::new();
    for status in ["completed", "cancelled"] {
        let mut cursor: Option<String> = None;
        loop {
            let (items, next) = page(client, base, status, cursor.as_deref()).await?;
            let reached_oldest = items.last().is_none_or(|(last, _)| *last < oldest);
            {
                let t = lock(tracker);
                for (id, outcome) in items.into_iter().filter(|(id, _)| t.pending.contains_key(id)) {
                    match outcome {
                        Some(outcome) => listed.push((id, outcome)),
                        None => unknown.push(id),
                    }
                }
            }
            match next {
                Some(next) if !reached_oldest => cursor = Some(next),
                _ => break,
            }
        }
    }
    let record = |id: Uuid, (outcome, latency): (String, Duration)| {
        let mut t = lock(tracker);
        if let Some(scenario) = t.pending.remove(&id) {
            t.saga.saturating_record(duration_micros(latency));
            t.outcomes.push((scenario, outcome));
            t.last_finished = Some(Instant::now());
        }
    };
    for (id, outcome) in listed {
        record(id, outcome);
    }
    let mut details = futures::stream::iter(unknown)
        .map(|id| async move { (id, finished(client, base, id).await) })
        .buffer_unordered(8);
    while let Some((id, result)) = details.next().await {
        if let Some(outcome) = result? {
            record(id, outcome);
        }
    }
    Ok(())
}

async fn poll_until(client: reqwest::Client, base: String, tracker: Shared, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if poll_once(&client, &base, &tracker).await.is_err() {
            lock(&tracker).poll_errors += 1;
        }
    }
}

fn validate(args: &LoadArgs) -> anyhow::Result<u64> {
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 100_000.0) {
        bail!("--rate must be more than 0 and at most 100000 orders per second");
    }
    if args.duration.is_zero() {
        bail!("--duration must be more than 0");
    }
    if args.max_in_flight == 0 {
        bail!("--max-in-flight must be at least 1");
    }
    if args.poll_interval < Duration::from_millis(10) {
        bail!("--poll-interval must be at least 10ms");
    }
    let planned = (args.rate * args.duration.as_secs_f64()).round();
    if planned < 1.0 {
        bail!("--rate × --duration gives no order at all");
    }
    if planned > 10_000_000.0 {
        bail!("--rate × --duration gives more than 10 million orders");
    }
    Ok(planned as u64)
}

fn api_base(raw: &str) -> anyhow::Result<String> {
    let base = raw.trim().trim_end_matches('/').to_owned();
    let url = reqwest::Url::parse(&base).map_err(|e| anyhow!("invalid --api-url {raw:?}: {e}"))?;
    if url.scheme() != "http" {
        bail!("invalid --api-url {raw:?}: only http:// is supported");
    }
    Ok(base)
}

pub async fn run(ctx: &Ctx, args: LoadArgs) -> anyhow::Result<ExitCode> {
    let planned = validate(&args)?;
    let base = api_base(&args.api_url)?;
    let client = crate::api_client(
        reqwest::Client::builder().timeout(args.http_timeout).pool_max_idle_per_host(args.max_in_flight.min(256)),
        args.api_key.as_deref(),
    )
    .context("failed to create the HTTP client")?;
    client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| anyhow!("cannot reach the order API at {base}: {e} (is the saga running? pass --api-url)"))?;
    let probe = client
        .get(format!("{base}/orders"))
        .query(&[("limit", "1")])
        .send()
        .await
        .map_err(|e| anyhow!("cannot reach the order API at {base}: {e}"))?;
    if matches!(probe.status().as_u16(), 401 | 403) {
        bail!(
            "the order API at {base} answered {} to an admin read: pass an admin key with --api-key or SAGA_API_KEY",
            probe.status()
        );
    }

    let tracker: Shared = Arc::new(Mutex::new(Tracker::new()?));
    let bar = ctx.progress.bar(planned, "sagas");
    let stop = CancellationToken::new();
    let poller =
        tokio::spawn(poll_until(client.clone(), base.clone(), tracker.clone(), args.poll_interval, stop.clone()));
    let started_at = Utc::now();
    let started = Instant::now();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut requests = tokio::task::JoinSet::new();
    let mut scenarios = args.mix.sequence();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    let url = format!("{base}/orders");
    for i in 0..planned {
        let due = started + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::select! {
            () = tokio::time::sleep_until(due.into()) => {}
            _ = &mut ctrl_c => { interrupted = true; break; }
        }
        while requests.try_join_next().is_some() {}
        let Some(scenario) = scenarios.next() else { break };
        if in_flight.load(Ordering::SeqCst) >= args.max_in_flight {
            lock(&tracker).dropped += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::SeqCst);
        let (client, url, shared, counter) = (client.clone(), url.clone(), tracker.clone(), in_flight.clone());
        requests.spawn(async move {
            place(client, url, scenario, scenario.body(i), shared).await;
            counter.fetch_sub(1, Ordering::SeqCst);
        });
        if i % 16 == 0 {
            show_progress(&bar, &tracker, &in_flight);
        }
    }
    // The sending window is the whole --duration: the last arrival is one interval before its end.
    if !interrupted {
        tokio::select! {
            () = tokio::time::sleep_until((started + args.duration).into()) => {}
            _ = &mut ctrl_c => interrupted = true,
        }
    }
    let send_seconds = started.elapsed().as_secs_f64();
    while requests.join_next().await.is_some() {
        show_progress(&bar, &tracker, &in_flight);
    }
    let wait_until = Instant::now() + args.wait_timeout;
    while !interrupted && !lock(&tracker).pending.is_empty() && Instant::now() < wait_until {
        show_progress(&bar, &tracker, &in_flight);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut ctrl_c => interrupted = true,
        }
    }
    stop.cancel();
    let _ = poller.await;
    bar.finish_and_clear();

    let report = report(&args, &base, planned, started_at, started, send_seconds, interrupted, &tracker);
    if let Some(path) = &args.out {
        write_report(path, &report)?;
    }
    match ctx.output {
        OutputFormat::Json => output::print_json(&report)?,
        OutputFormat::Table => print_report(&report, args.out.as_ref())?,
    }
    if report.not_terminal > 0 {
        eprintln!(
            "error: {} accepted orders did not reach a terminal state within --wait-timeout {}",
            report.not_terminal,
            crate::timespec::human(args.wait_timeout)
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn show_progress(bar: &ProgressBar, tracker: &Shared, in_flight: &AtomicUsize) {
    let t = lock(tracker);
    bar.set_position(t.outcomes.len() as u64);
    bar.set_prefix(format!(
        "sent {} accepted {} errors {} in flight {} open {}",
        t.sent,
        t.accepted,
        t.rejected + t.server_errors + t.transport_errors,
        in_flight.load(Ordering::SeqCst),
        t.pending.len()
    ));
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &LoadArgs,
    base: &str,
    planned: u64,
    started_at: DateTime<Utc>,
    started: Instant,
    send_seconds: f64,
    interrupted: bool,
    tracker: &Shared,
) -> LoadReport {
    let t = lock(tracker);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut scenarios: BTreeMap<String, ScenarioReport> = BTreeMap::new();
    for (scenario, (sent, accepted)) in &t.per_scenario {
        let entry = scenarios.entry(scenario.name().to_owned()).or_default();
        entry.sent = *sent;
        entry.accepted = *accepted;
    }
    for (scenario, outcome) in &t.outcomes {
        *outcomes.entry(outcome.clone()).or_default() += 1;
        let entry = scenarios.entry(scenario.name().to_owned()).or_default();
        *entry.outcomes.entry(outcome.clone()).or_default() += 1;
        if outcome != scenario.name() {
            entry.unexpected += 1;
        }
    }
    let window_seconds = t.last_finished.map_or(0.0, |at| (at - started).as_secs_f64());
    let per_sec = |n: u64, secs: f64| if secs > 0.0 { ((n as f64 / secs) * 100.0).round() / 100.0 } else { 0.0 };
    let completed = outcomes.get("completed").copied().unwrap_or(0);
    let finished = t.outcomes.len() as u64;
    LoadReport {
        started_at,
        api_url: base.to_owned(),
        target_rate: args.rate,
        duration_seconds: args.duration.as_secs_f64(),
        mix: args.mix.as_map(),
        planned,
        sent: t.sent,
        accepted: t.accepted,
        rejected: t.rejected,
        server_errors: t.server_errors,
        transport_errors: t.transport_errors,
        dropped: t.dropped,
        send_seconds: (send_seconds * 1000.0).round() / 1000.0,
        achieved_rate: per_sec(t.sent, send_seconds),
        accepted_per_sec: per_sec(t.accepted, send_seconds),
        window_seconds: (window_seconds * 1000.0).round() / 1000.0,
        completed_per_sec: per_sec(completed, window_seconds),
        finished_per_sec: per_sec(finished, window_seconds),
        finished,
        not_terminal: t.pending.len() as u64,
        http_latency_ms: Percentiles::of(&t.http),
        saga_latency_ms: Percentiles::of(&t.saga),
        unexpected_outcomes: scenarios.values().map(|s| s.unexpected).sum(),
        outcomes,
        scenarios,
        errors: t.errors.clone(),
        interrupted,
    }
}

fn write_report(path: &PathBuf, report: &LoadReport) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
    serde_json::to_writer_pretty(std::io::BufWriter::new(file), report)
        .with_context(|| format!("failed to write {}", path.display()))
}

fn print_report(r: &LoadReport, out: Option<&PathBuf>) -> anyhow::Result<()> {
    output::print_line(&format!(
        "load: {} orders planned at {}/s for {}s against {}{}",
        r.planned,
        r.target_rate,
        r.duration_seconds,
        r.api_url,
        if r.interrupted { " (interrupted)" } else { "" }
    ))?;
    let mut summary = output::table(&["", ""]);
    summary.add_row(vec![
        "requests".to_owned(),
        format!(
            "sent {}, accepted {}, rejected {}, 5xx {}, transport errors {}, dropped {}",
            r.sent, r.accepted, r.rejected, r.server_errors, r.transport_errors, r.dropped
        ),
    ]);
    summary.add_row(vec![
        "rates".to_owned(),
        format!(
            "sent {}/s, accepted {}/s over {}s; completed {}/s, finished {}/s over {}s",
            r.achieved_rate,
            r.accepted_per_sec,
            r.send_seconds,
            r.completed_per_sec,
            r.finished_per_sec,
            r.window_seconds
        ),
    ]);
    summary.add_row(vec![
        "sagas".to_owned(),
        format!(
            "finished {}, not terminal {}, unexpected outcomes {}",
            r.finished, r.not_terminal, r.unexpected_outcomes
        ),
    ]);
    if !r.errors.is_empty() {
        let errors: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        summary.add_row(vec!["errors".to_owned(), errors.join(", ")]);
    }
    output::print_table(&mut summary, "")?;
    output::print_line("")?;
    let mut latency = output::table(&["latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"]);
    for (name, p) in [("HTTP POST /orders", &r.http_latency_ms), ("placed → terminal", &r.saga_latency_ms)] {
        latency.add_row(vec![
            name.to_owned(),
            p.count.to_string(),
            format!("{:.1}", p.p50),
            format!("{:.1}", p.p90),
            format!("{:.1}", p.p99),
            format!("{:.1}", p.p99_9),
            format!("{:.1}", p.max),
        ]);
    }
    output::print_table(&mut latency, "")?;
    output::print_line("")?;
    let mut outcomes = output::table(&["scenario", "sent", "accepted", "outcomes", "unexpected"]);
    for (name, s) in &r.scenarios {
        let ended: Vec<String> = s.outcomes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outcomes.add_row(vec![
            name.clone(),
            s.sent.to_string(),
            s.accepted.to_string(),
            ended.join(" "),
            s.unexpected.to_string(),
        ]);
    }
    output::print_table(&mut outcomes, "no order sent")?;
    if let Some(path) = out {
        output::print_line(&format!("\nresult written to {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_parses_and_rejects_what_it_cannot_map() {
        let mix: Mix = "completed=80,out_of_stock=5,payment_declined=5,destination_not_served=5,unknown_customer=5"
            .parse()
            .expect("valid mix");
        assert_eq!(mix.as_map().values().sum::<u32>(), 100);
        for bad in ["", "completed", "completed=x", "deadline_exceeded=1", "completed=1,completed=2", "completed=0"] {
            assert!(bad.parse::<Mix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sequence_holds_each_scenario_its_weight_in_every_cycle() {
        let mix: Mix = "completed=3,out_of_stock=1,payment_declined=1".parse().expect("valid mix");
        let first: Vec<Scenario> = mix.sequence().take(10).collect();
        for cycle in first.chunks(5) {
            let count = |s| cycle.iter().filter(|c| **c == s).count();
            assert_eq!(count(Scenario::Completed), 3);
            assert_eq!(count(Scenario::OutOfStock), 1);
            assert_eq!(count(Scenario::PaymentDeclined), 1);
        }
    }

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut h = histogram().expect("histogram");
        for v in 1..=1000u64 {
            h.record(v * 1000).expect("record");
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(Percentiles::of(&histogram().expect("histogram")).p99, 0.0);
    }
}
