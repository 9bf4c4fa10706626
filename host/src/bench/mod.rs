//! `sagahost bench`: measures, in one run on this machine, the two raw limits a saga step is
//! built from — a fresh sandboxed instance running a no-op plugin, and a durable append
//! through the store's group commit — and then the host itself: three-step no-op sagas over
//! HTTP and in-process at a sweep of concurrencies. It prints a table (or `--json`) and,
//! last, the ratio of the host's steps/s to the lower raw limit. `--scale N` measures the
//! scale figures instead (see [`scale`]), `--http` what a plugin's HTTP call adds to a step
//! (see [`http`]), `--events` how fast emitted events reach subscribers (see [`events`]),
//! `--sustain` latency and memory over a long open-loop run (see [`sustain`]), `--store` sled
//! beside PostgreSQL with one and two hosts (see [`stores`]).
#![allow(clippy::print_stdout)]

mod client;
pub mod events;
pub mod failover;
pub mod http;
mod measure;
pub mod scale;
pub mod stores;
pub mod sustain;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;

use crate::domain::{Event, EventRecord, ExecutionId, SagaName, Side, StepName};
use crate::runtime::{Call, Limits, Runtime};
use crate::server::{Host, HostConfig};
use crate::store::{EventStore, SledStore};
use measure::{Driven, Progress, cpu_time, cpu_us_per, drive, percentile, spawn_progress};

/// The benchmark plugin: answers `{}` and does nothing else.
pub const NOOP_WASM: &[u8] = include_bytes!(concat!(env!("SAGAHOST_PLUGIN_DIR"), "/noop.wasm"));

/// The bench saga's trigger, answering when the execution has ended.
const TRIGGER_AND_WAIT: &str = "/v1/sagas/bench/executions?wait=30000";

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Length of each measured phase.
    pub phase: Duration,
    /// Concurrencies of the saga sweep.
    pub concurrency: Vec<usize>,
}

/// One saga load at one concurrency.
#[derive(Clone, Debug, Serialize)]
pub struct LoadResult {
    /// `http` or `in-process`.
    pub via: &'static str,
    /// Sagas in flight at once.
    pub concurrency: usize,
    /// Sagas completed durably.
    pub sagas: u64,
    /// Completed sagas per second.
    pub sagas_per_s: f64,
    /// Steps per second (three per saga).
    pub steps_per_s: f64,
    /// Trigger → terminal latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// CPU time the whole process (host and load generator) spent per saga, microseconds:
    /// steadier than throughput on a shared machine, so changes are compared by it.
    pub cpu_us_per_saga: f64,
}

impl LoadResult {
    /// The figures of one three-step saga load.
    fn new(via: &'static str, concurrency: usize, mut d: Driven) -> Self {
        d.lat.sort_by(f64::total_cmp);
        Self {
            via,
            concurrency,
            sagas: d.n,
            sagas_per_s: d.per_s,
            steps_per_s: d.per_s * 3.0,
            p50_ms: percentile(&d.lat, 0.50),
            p90_ms: percentile(&d.lat, 0.90),
            p99_ms: percentile(&d.lat, 0.99),
            cpu_us_per_saga: d.cpu_us_each,
        }
    }
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Cores the machine offers.
    pub cores: usize,
    /// Raw limit (a): fresh pooled instance + `execute` of the no-op plugin, per second.
    pub raw_instances_per_s: f64,
    /// Raw limit (b): durable ~200-byte appends per second through group commit.
    pub raw_appends_per_s: f64,
    /// Average appends per flush during (b).
    pub raw_appends_per_flush: f64,
    /// CPU microseconds per operation of (a) and of (b).
    pub raw_cpu_us: (f64, f64),
    /// The saga loads.
    pub loads: Vec<LoadResult>,
    /// Open-loop load over HTTP at half the peak rate (sagas started at a fixed rate,
    /// whatever the latency), the setting the latency targets name.
    pub half_peak: LoadResult,
    /// Best host steps/s (over HTTP) divided by the lower raw limit.
    pub ratio: f64,
    /// The same for the in-process loads (what the host reaches without HTTP).
    pub ratio_in_process: f64,
}

/// The part of a trigger's answer the load generator checks.
#[derive(serde::Deserialize)]
struct Ended {
    status: String,
}

async fn raw_instances(opts: &BenchOptions, cores: usize, progress: &Arc<Progress>) -> anyhow::Result<(f64, f64)> {
    progress.start("raw (a): fresh instance + execute".into());
    let runtime =
        Runtime::new(Limits { max_instances: 64, ..Limits::default() }).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let rt = runtime.clone();
    let (_, pre) = tokio::task::spawn_blocking(move || rt.compile(NOOP_WASM)).await?.map_err(anyhow::Error::msg)?;
    let pre = Arc::new(pre);
    let d = drive(cores * 4, opts.phase, progress, move |_| {
        let (runtime, pre) = (runtime.clone(), pre.clone());
        async move {
            let call = Call {
                side: Side::Execute,
                execution_id: "bench".into(),
                saga: "bench".into(),
                step: "noop".into(),
                attempt: 1,
                idempotency_key: "bench/noop".into(),
                execution_key: None,
                deadline_unix_ms: 0,
                timeout: Duration::from_secs(5),
                input: "{}".into(),
                state: None,
                config: Default::default(),
                http: Default::default(),
            };
            runtime.invoke(&pre, call).await.map(drop).map_err(|f| anyhow::anyhow!(f.message))
        }
    })
    .await?;
    Ok((d.per_s, d.cpu_us_each))
}

async fn raw_appends(opts: &BenchOptions, progress: &Arc<Progress>) -> anyhow::Result<(f64, f64, f64)> {
    progress.start("raw (b): durable appends through group commit".into());
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SledStore::open(dir.path())?);
    const PRODUCERS: usize = 64;
    let mut streams = Vec::new();
    for _ in 0..PRODUCERS {
        let id = ExecutionId::new();
        let first = EventRecord {
            seq: 1,
            at: 0,
            event: Event::ExecutionStarted {
                saga: SagaName::parse("bench").expect("name"),
                definition_version: 1,
                input: json!({}),
                deadline_unix_ms: None,
                idempotency_key: None,
                key: None,
            },
        };
        store.create(id, SagaName::parse("bench").expect("name"), first, None).await?;
        streams.push((id, AtomicU64::new(1)));
    }
    let streams = Arc::new(streams);
    let (b0, w0) =
        (store.commit_stats().batches.load(Ordering::Relaxed), store.commit_stats().writes.load(Ordering::Relaxed));
    let s = store.clone();
    let d = drive(PRODUCERS, opts.phase, progress, move |t| {
        let (store, streams) = (s.clone(), streams.clone());
        async move {
            let (id, version) = &streams[t];
            let v = version.load(Ordering::Relaxed);
            // A step_completed of about the size the host writes (~200 bytes).
            let event = Event::StepCompleted {
                step: StepName::parse("reserve_seat").map_err(anyhow::Error::msg)?,
                attempt: 1,
                result: json!({"seat": "A12", "state": "SEAT_RESERVED", "pad": "x".repeat(64)}),
                http: Vec::new(),
                signal: None,
            };
            store.append(*id, v, vec![EventRecord { seq: v + 1, at: 1_700_000_000_000, event }]).await?;
            version.store(v + 1, Ordering::Relaxed);
            Ok(())
        }
    })
    .await?;
    let stats = store.commit_stats();
    let (b, w) = (stats.batches.load(Ordering::Relaxed) - b0, stats.writes.load(Ordering::Relaxed) - w0);
    Ok((d.per_s, w as f64 / b.max(1) as f64, d.cpu_us_each))
}

async fn saga_load(
    via: &'static str,
    concurrency: usize,
    opts: &BenchOptions,
    host: &Host,
    progress: &Arc<Progress>,
) -> anyhow::Result<LoadResult> {
    progress.start(format!("{via} sagas at concurrency {concurrency}"));
    let d = if via == "http" {
        // One connection per client, opened before the clock starts.
        let mut conns = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let conn = client::Conn::connect(host.addr(), TRIGGER_AND_WAIT).await?;
            conns.push(tokio::sync::Mutex::new(conn));
        }
        let conns = Arc::new(conns);
        drive(concurrency, opts.phase, progress, move |t| {
            let conns = conns.clone();
            async move {
                let (status, body) = conns[t].lock().await.post(b"{}").await?;
                if status != 200 {
                    bail!("trigger answered {status}: {}", String::from_utf8_lossy(&body));
                }
                // Only the status is read: the load generator should cost little next to the host.
                let exec: Ended = serde_json::from_slice(&body)?;
                if exec.status != "completed" {
                    bail!("saga ended {}", exec.status);
                }
                Ok(())
            }
        })
        .await?
    } else {
        let orch = host.orchestrator().clone();
        let saga = SagaName::parse("bench").map_err(anyhow::Error::msg)?;
        drive(concurrency, opts.phase, progress, move |_| {
            let (orch, saga) = (orch.clone(), saga.clone());
            async move {
                // What the HTTP trigger with `?wait=` does, minus HTTP.
                let (_, exec) =
                    orch.start_and_wait(&saga, json!({}), Default::default(), Duration::from_secs(30)).await?;
                let exec = exec.context("saga did not finish")?;
                if !exec.status.is_terminal() {
                    bail!("saga ended {:?}", exec.status);
                }
                Ok(())
            }
        })
        .await?
    };
    Ok(LoadResult::new(via, concurrency, d))
}

/// Starts sagas over HTTP at a fixed `rate` per second for one phase (open loop: a slow saga
/// does not delay the next start) and measures trigger → terminal latency.
async fn open_loop(
    rate: f64,
    opts: &BenchOptions,
    host: &Host,
    progress: &Arc<Progress>,
) -> anyhow::Result<LoadResult> {
    progress.start(format!("http sagas at a fixed {rate:.0}/s (half the peak)"));
    let pool = Arc::new(client::Pool::new(host.addr(), TRIGGER_AND_WAIT, 64).await?);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let cpu = cpu_time();
    let start = Instant::now();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut runs = tokio::task::JoinSet::new();
    while start.elapsed() < opts.phase {
        ticks.tick().await;
        let (pool, progress) = (pool.clone(), progress.clone());
        runs.spawn(async move {
            let t0 = Instant::now();
            let (status, body) = pool.post(b"{}").await?;
            if status != 200 {
                bail!("trigger answered {status}: {}", String::from_utf8_lossy(&body));
            }
            progress.count.fetch_add(1, Ordering::Relaxed);
            Ok(t0.elapsed().as_secs_f64() * 1e3)
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = runs.join_next().await {
        lat.push(r??);
    }
    let n = lat.len() as u64;
    let per_s = n as f64 / start.elapsed().as_secs_f64();
    Ok(LoadResult::new("http-fixed-rate", 0, Driven { n, per_s, lat, cpu_us_each: cpu_us_per(cpu, n) }))
}

/// A host with the bench plugin and the three-step `bench` saga defined.
async fn start_bench_host(mut config: HostConfig) -> anyhow::Result<Host> {
    config.limits.max_instances = 512;
    config.orchestrator.max_concurrent_attempts = 256;
    let host = Host::start(config).await?;
    let client = reqwest::Client::new();
    let up = client.put(format!("{}/v1/plugins/noop/1.0.0", host.url())).body(NOOP_WASM).send().await?;
    if !up.status().is_success() {
        bail!("uploading the bench plugin: {}", up.text().await?);
    }
    let step = |name: &str| json!({"name": name, "plugin": "noop@1.0.0", "compensation": null, "timeout_ms": 5000});
    let def = json!({"steps": [step("one"), step("two"), step("three")]});
    let put = client.put(format!("{}/v1/sagas/bench", host.url())).json(&def).send().await?;
    if !put.status().is_success() {
        bail!("defining the bench saga: {}", put.text().await?);
    }
    Ok(host)
}

/// Sagas per second over HTTP at a concurrency of 64 for `phase`: the peak a fixed rate is a
/// share of.
async fn closed_loop_peak(host: &Host, phase: Duration) -> anyhow::Result<f64> {
    let opts = BenchOptions { phase, concurrency: vec![64] };
    let progress = Arc::new(Progress::default());
    Ok(saga_load("http", 64, &opts, host, &progress).await?.sagas_per_s)
}

/// Runs the whole benchmark.
pub async fn run(opts: BenchOptions) -> anyhow::Result<Report> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let progress =
        Arc::new(Progress { phase: Default::default(), count: AtomicU64::new(0), done: AtomicBool::new(false) });
    let ticker = spawn_progress(progress.clone());
    let (raw_instances_per_s, instance_cpu_us) = raw_instances(&opts, cores, &progress).await?;
    let (raw_appends_per_s, raw_appends_per_flush, append_cpu_us) = raw_appends(&opts, &progress).await?;

    let dir = tempfile::tempdir()?;
    let host = start_bench_host(HostConfig::new(dir.path())).await?;
    let mut loads = Vec::new();
    for via in ["http", "in-process"] {
        for &c in &opts.concurrency {
            loads.push(saga_load(via, c, &opts, &host, &progress).await?);
        }
    }
    let peak = loads.iter().filter(|l| l.via == "http").map(|l| l.sagas_per_s).fold(0.0, f64::max);
    let half_peak = open_loop(peak / 2.0, &opts, &host, &progress).await?;
    host.stop().await;
    progress.done.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    let lower_raw = raw_instances_per_s.min(raw_appends_per_s);
    let ratio = peak * 3.0 / lower_raw;
    let in_process_peak = loads.iter().filter(|l| l.via == "in-process").map(|l| l.sagas_per_s).fold(0.0, f64::max);
    let ratio_in_process = in_process_peak * 3.0 / lower_raw;
    Ok(Report {
        cores,
        raw_instances_per_s,
        raw_appends_per_s,
        raw_appends_per_flush,
        raw_cpu_us: (instance_cpu_us, append_cpu_us),
        loads,
        half_peak,
        ratio,
        ratio_in_process,
    })
}

/// Prints the report as a table.
pub fn print_table(r: &Report) {
    println!("sagahost bench — {} cores, durable settings (every append flushed before it is acknowledged)\n", r.cores);
    println!("raw limits");
    println!(
        "  (a) fresh pooled instance + execute (no-op plugin)   {:>10.0} /s   ({:.1} cpu µs each)",
        r.raw_instances_per_s, r.raw_cpu_us.0
    );
    println!(
        "  (b) durable append, ~200 B events, group commit     {:>10.0} /s   ({:.1} cpu µs each, {:.1} appends per flush)",
        r.raw_appends_per_s, r.raw_cpu_us.1, r.raw_appends_per_flush
    );
    println!("\nthree-step no-op sagas, trigger → terminal");
    println!(
        "  {:<11} {:>5} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>12}",
        "via", "conc", "sagas", "sagas/s", "steps/s", "p50 ms", "p90 ms", "p99 ms", "cpu µs/saga"
    );
    for l in &r.loads {
        println!(
            "  {:<11} {:>5} {:>9} {:>10.0} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>12.0}",
            l.via,
            l.concurrency,
            l.sagas,
            l.sagas_per_s,
            l.steps_per_s,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.cpu_us_per_saga
        );
    }
    let h = &r.half_peak;
    println!(
        "\nopen loop at half the peak: {:.0} sagas/s started at a fixed rate: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, cpu {:.0} µs/saga",
        h.sagas_per_s, h.p50_ms, h.p90_ms, h.p99_ms, h.cpu_us_per_saga
    );
    println!("\n(in-process, without HTTP: best host steps/s / lower raw limit = {:.3})", r.ratio_in_process);
    println!("\nratio: best host steps/s over HTTP / lower raw limit = {:.3}", r.ratio);
}
