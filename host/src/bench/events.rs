//! `sagahost bench --events`: how fast events that steps emit reach subscribers, on this
//! machine, for a webhook on `127.0.0.1` and (when one answers) a Redis stream.
//!
//! An embedded host runs a one-step saga whose step (the example `order` plugin) records an
//! order in its state and emits `OrderCreated`. For each target:
//! - **live**: a subscription starting now; sagas run at a concurrency of 16 for one phase, then
//!   the bench waits for every emitted event to arrive. It reports events delivered per second
//!   over the phase and the latency from emit (the event's `at`: the commit of the step that
//!   emitted it, in ms) to its arrival at the receiver;
//! - **backlog**: a second subscription starting at the log's first event, so that the whole
//!   log is waiting for it: events delivered per second while it catches up — what delivery
//!   alone sustains.
//!
//! The webhook receiver is a hyper server in this process answering 204; the Redis receiver a
//! task reading the stream with `XREAD BLOCK`.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::measure::{Progress, drive, percentile};
use crate::domain::{PluginName, PluginVersion, SagaName};
use crate::orchestrator::{Orchestrator, TriggerKeys};
use crate::server::{Host, HostConfig};

/// Sagas in flight during the live phase.
const CONCURRENCY: usize = 16;
/// Longest wait for the last deliveries.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// One target's figures.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    /// `webhook` or `redis_stream`.
    pub target: &'static str,
    /// Events emitted (and delivered) in the live phase.
    pub live_events: usize,
    /// Live phase: events delivered per second (phase start to last arrival).
    pub live_per_s: f64,
    /// Emit → arrival, median, ms.
    pub p50_ms: f64,
    /// Emit → arrival, 99th percentile, ms.
    pub p99_ms: f64,
    /// Backlog: events delivered.
    pub backlog_events: usize,
    /// Backlog: events delivered per second.
    pub backlog_per_s: f64,
}

/// What `bench --events` measured.
#[derive(Clone, Debug, Serialize)]
pub struct EventsReport {
    /// Cores the machine offers.
    pub cores: usize,
    /// Live phase length, seconds.
    pub phase_s: f64,
    /// One entry per target measured.
    pub targets: Vec<TargetReport>,
    /// Why Redis was not measured, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_skipped: Option<String>,
}

/// Arrivals: event id → (arrival time in unix ms, the event's `at`).
type Arrivals = Arc<Mutex<HashMap<String, (f64, u64)>>>;

fn now_ms() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Runs the bench; `redis_url` names the Redis to measure (`None`: not measured).
pub async fn run(phase: Duration, redis_url: Option<String>) -> anyhow::Result<EventsReport> {
    let dir = tempfile::tempdir()?;
    let host = Host::start(HostConfig::new(dir.path())).await?;
    let orch = host.orchestrator().clone();
    let order = crate::demo::PLUGINS.iter().find(|p| p.name == "order").context("the order example plugin")?;
    orch.plugins()
        .upload(PluginName::parse("order")?, PluginVersion::parse("1.0.0")?, order.wasm.to_vec(), orch.now_ms())
        .await
        .map_err(|e| anyhow::anyhow!("uploading the order plugin: {e}"))?;
    let saga = SagaName::parse("bench-emit")?;
    let definition = json!({"steps": [{"name": "create_order", "plugin": "order@1.0.0", "timeout_ms": 5000}]});
    orch.put_definition(saga.clone(), definition.to_string().as_bytes()).await?;
    let mut targets = Vec::new();
    let (webhook, arrivals) = webhook_receiver().await?;
    targets.push(measure(&orch, &saga, "webhook", json!({"webhook": {"url": webhook}}), &arrivals, phase, "w").await?);
    let mut redis_skipped = None;
    match redis_url {
        None => redis_skipped = Some("no Redis URL given".into()),
        Some(url) => match redis_receiver(&url).await {
            Ok((stream, arrivals)) => {
                let target = json!({"redis_stream": {"url": url, "stream": stream}});
                targets.push(measure(&orch, &saga, "redis_stream", target, &arrivals, phase, "r").await?);
            }
            Err(e) => redis_skipped = Some(format!("Redis at {url} did not answer: {e:#}")),
        },
    }
    host.stop().await;
    Ok(EventsReport {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        phase_s: phase.as_secs_f64(),
        targets,
        redis_skipped,
    })
}

/// The live and backlog figures of one target.
async fn measure(
    orch: &Arc<Orchestrator>,
    saga: &SagaName,
    kind: &'static str,
    target: Value,
    arrivals: &Arrivals,
    phase: Duration,
    prefix: &'static str,
) -> anyhow::Result<TargetReport> {
    let subscribe = |name: &str, from: &str| {
        let mut doc = target.clone();
        doc["topics"] = json!(["OrderCreated"]);
        doc["from"] = json!(from);
        (name.to_owned(), doc.to_string())
    };
    let (name, doc) = subscribe(&format!("bench-{kind}-live"), "now");
    orch.put_subscription(&name, doc.as_bytes()).await?;
    arrivals.lock().expect("arrivals").clear();
    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let (o, s) = (orch.clone(), saga.clone());
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let driven = drive(CONCURRENCY, phase, &progress, move |_| {
        let (orch, saga, counter) = (o.clone(), s.clone(), counter.clone());
        async move {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let input = json!({"order_id": format!("{prefix}-{n}"), "customer_id": "c", "amount": 1});
            let (_, done) = orch.start_and_wait(&saga, input, TriggerKeys::default(), Duration::from_secs(30)).await?;
            match done.map(|e| e.status) {
                Some(crate::domain::ExecutionStatus::Completed) => Ok(()),
                other => bail!("a bench saga ended {other:?}"),
            }
        }
    })
    .await?;
    let emitted = driven.n as usize;
    wait_for(arrivals, emitted).await?;
    let live = arrivals.lock().expect("arrivals").clone();
    let last_arrival = live.values().map(|(t, _)| *t).fold(f64::MIN, f64::max);
    let first_emit = live.values().map(|(_, at)| *at as f64).fold(f64::MAX, f64::min);
    let mut lat: Vec<f64> = live.values().map(|(t, at)| (t - *at as f64).max(0.0)).collect();
    lat.sort_by(f64::total_cmp);
    let live_s = ((last_arrival - first_emit) / 1e3).max(started.elapsed().as_secs_f64().min(phase.as_secs_f64()));
    orch.delete_subscription(&name).await?;

    // Backlog: the whole log is waiting for a new subscription from its start.
    let total = orch.store().topic_events(0, usize::MAX).await?.len();
    arrivals.lock().expect("arrivals").clear();
    let (name, doc) = subscribe(&format!("bench-{kind}-backlog"), "start");
    let t0 = Instant::now();
    orch.put_subscription(&name, doc.as_bytes()).await?;
    wait_for(arrivals, total).await?;
    let backlog_s = t0.elapsed().as_secs_f64();
    orch.delete_subscription(&name).await?;
    Ok(TargetReport {
        target: kind,
        live_events: emitted,
        live_per_s: emitted as f64 / live_s,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        backlog_events: total,
        backlog_per_s: total as f64 / backlog_s,
    })
}

async fn wait_for(arrivals: &Arrivals, n: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let got = arrivals.lock().expect("arrivals").len();
        if got >= n {
            return Ok(());
        }
        if start.elapsed() > DRAIN_TIMEOUT {
            bail!("{got} of {n} events delivered after {DRAIN_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A webhook on 127.0.0.1 recording arrivals: its URL.
async fn webhook_receiver() -> anyhow::Result<(String, Arrivals)> {
    let arrivals: Arrivals = Arc::default();
    let state = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let t = now_ms();
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    let id = v["id"].as_str().unwrap_or_default().to_owned();
                    state.lock().expect("arrivals").insert(id, (t, v["at"].as_u64().unwrap_or(0)));
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, arrivals))
}

/// A task reading a fresh stream on the Redis at `url`, recording arrivals: the stream's name.
async fn redis_receiver(url: &str) -> anyhow::Result<(String, Arrivals)> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(5)));
    let mut conn =
        tokio::time::timeout(Duration::from_secs(3), client.get_multiplexed_async_connection_with_config(&config))
            .await
            .context("connecting timed out")??;
    let stream = format!("sagahost-bench-{}", uuid::Uuid::now_v7());
    let arrivals: Arrivals = Arc::default();
    let state = arrivals.clone();
    let key = stream.clone();
    tokio::spawn(async move {
        let mut last = "0".to_owned();
        loop {
            let reply: Result<Option<redis::streams::StreamReadReply>, _> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1000)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(&key)
                .arg(&last)
                .query_async(&mut conn)
                .await;
            let Ok(reply) = reply else { return };
            let t = now_ms();
            for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                let id: String = entry.get("id").unwrap_or_default();
                let at: u64 = entry.get::<String>("at").and_then(|a| a.parse().ok()).unwrap_or(0);
                state.lock().expect("arrivals").insert(id, (t, at));
                last = entry.id;
            }
        }
    });
    Ok((stream, arrivals))
}

/// Prints the report as a table.
pub fn print(r: &EventsReport) {
    println!(
        "sagahost bench --events — {} cores; live: one-step sagas emitting one event each at concurrency {CONCURRENCY} for {:.1} s\n",
        r.cores, r.phase_s
    );
    println!(
        "  {:<14} {:>12} {:>14} {:>12} {:>12} {:>14} {:>16}",
        "target", "live events", "live events/s", "p50 ms", "p99 ms", "backlog events", "backlog events/s"
    );
    for t in &r.targets {
        println!(
            "  {:<14} {:>12} {:>14.0} {:>12.1} {:>12.1} {:>14} {:>16.0}",
            t.target, t.live_events, t.live_per_s, t.p50_ms, t.p99_ms, t.backlog_events, t.backlog_per_s
        );
    }
    if let Some(why) = &r.redis_skipped {
        println!("\n  redis_stream: not measured ({why})");
    }
    println!("\n  latency: from the emitting step's commit (the event's `at`, ms) to its arrival at the receiver");
}
