//! A steady stream of orders through the order API while faults happen.
//!
//! Order `i` is `invariants::order_for(i)` with its own `Idempotency-Key`. A placement that
//! fails (a replica killed mid-request, the database away, a 5xx) is retried with the same key
//! on the next replica until it is accepted, so every order the stream started is accepted
//! exactly once and the i-th accepted order is the i-th of the mix, as the invariants expect.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use shared::CancellationToken;
use tokio::task::JoinSet;

use super::invariants::order_for;
use super::topology::Apis;

/// How long one order may take to be accepted (it outlives any outage the suite injects).
const ACCEPT_WITHIN: Duration = Duration::from_secs(120);

type Ids = Arc<Mutex<BTreeMap<usize, String>>>;

/// A running stream.
pub struct OrderStream {
    stop: CancellationToken,
    accepted: Arc<AtomicUsize>,
    ids: Ids,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<String>>>,
}

impl OrderStream {
    /// Start `per_second` orders a second through the running order-svc replicas, round robin.
    pub fn start(http: reqwest::Client, apis: Apis, per_second: f64) -> Self {
        let stop = CancellationToken::new();
        let accepted = Arc::new(AtomicUsize::new(0));
        let ids = Ids::default();
        let task = tokio::spawn(run(http, apis, per_second, stop.clone(), accepted.clone(), ids.clone()));
        Self { stop, accepted, ids, task }
    }

    /// The ids of the orders accepted so far, by placement index.
    pub fn accepted_ids(&self) -> BTreeMap<usize, String> {
        self.ids.lock().map(|ids| ids.clone()).unwrap_or_default()
    }

    /// Orders accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Wait until at least `n` orders were accepted.
    pub async fn until_accepted(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        shared::testing::eventually(timeout, &format!("{n} orders accepted"), || async {
            (self.accepted() >= n).then_some(())
        })
        .await
    }

    /// Start no more orders, wait until every started one was accepted, and return their ids
    /// in placement order.
    pub async fn stop(self) -> anyhow::Result<Vec<String>> {
        self.stop.cancel();
        self.task.await.context("order stream panicked")?
    }
}

async fn run(
    http: reqwest::Client,
    apis: Apis,
    per_second: f64,
    stop: CancellationToken,
    accepted: Arc<AtomicUsize>,
    accepted_ids: Ids,
) -> anyhow::Result<Vec<String>> {
    let mut placing = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let (http, apis, accepted, accepted_ids) = (http.clone(), apis.clone(), accepted.clone(), accepted_ids.clone());
        placing.spawn(async move {
            let id = place(&http, &apis, i).await?;
            if let Ok(mut ids) = accepted_ids.lock() {
                ids.insert(i, id.clone());
            }
            accepted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, anyhow::Error>((i, id))
        });
        i += 1;
    }
    let mut ids = vec![String::new(); i];
    while let Some(joined) = placing.join_next().await {
        let (i, id) = joined.context("placing an order panicked")??;
        ids[i] = id;
    }
    Ok(ids)
}

/// Place order `i`, retrying with the same idempotency key until it is accepted.
async fn place(http: &reqwest::Client, apis: &Apis, i: usize) -> anyhow::Result<String> {
    let (customer, items, country, _) = order_for(i);
    let body = super::order_body(customer, &items, country);
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + ACCEPT_WITHIN;
    let mut last = String::new();
    let mut attempt = 0usize;
    loop {
        anyhow::ensure!(Instant::now() < deadline, "order {i} not accepted within {ACCEPT_WITHIN:?}: {last}");
        let live = apis.live();
        if live.is_empty() {
            last = "no order-svc replica running".to_owned();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let url = format!("{}/orders", live[(i + attempt) % live.len()]);
        match http.post(&url).header("idempotency-key", &key).json(&body).send().await {
            Ok(response) if response.status() == 202 => {
                let body: Value = response.json().await.context("unreadable 202 body")?;
                let id = body["id"].as_str().context("202 without an order id")?;
                return Ok(id.to_owned());
            }
            Ok(response) if response.status().is_client_error() => {
                anyhow::bail!("order {i} rejected with {}: {}", response.status(), response.text().await?)
            }
            Ok(response) => last = format!("{url} answered {}", response.status()),
            Err(err) => last = format!("{url}: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100 + 100 * (attempt as u64).min(9))).await;
        attempt += 1;
    }
}
