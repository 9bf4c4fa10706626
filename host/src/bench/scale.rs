//! `sagahost bench --scale N`: memory per execution waiting in backoff with N waiting, the
//! time to resume N unfinished executions after a restart, and the read latency of one
//! execution with 1,000 versus 1,000,000 events in the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;

use crate::domain::{Event, EventRecord, ExecutionId, SagaName, StepName};
use crate::orchestrator::Orchestrator;
use crate::server::{Host, HostConfig};

/// A plugin that fails as told: here, "retryable", so executions wait in backoff.
const TESTKIT_WASM: &[u8] = include_bytes!(concat!(env!("SAGAHOST_PLUGIN_DIR"), "/testkit.wasm"));

/// The scale figures.
#[derive(Debug, Serialize)]
pub struct ScaleReport {
    /// Executions waiting in backoff.
    pub waiting: usize,
    /// Resident memory added by them, per execution, bytes.
    pub bytes_per_waiting_execution: f64,
    /// Seconds from start until every unfinished execution was read back and re-armed.
    pub resume_seconds: f64,
    /// Median read (load + fold) of one 10-event execution with ~1,000 events stored, µs.
    pub read_us_1k_events: f64,
    /// The same with ~1,000,000 events stored, µs.
    pub read_us_1m_events: f64,
}

fn resident_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("reading /proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).context("statm")?.parse()?;
    Ok(pages * 4096)
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let until = Instant::now() + limit;
    while !done() {
        if Instant::now() > until {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn trigger_waiting(orch: &Arc<Orchestrator>, n: usize) -> anyhow::Result<()> {
    let saga = SagaName::parse("wait").map_err(anyhow::Error::msg)?;
    let input = json!({"behaviors": {"a": "retryable"}});
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (orch, saga, input, next) = (orch.clone(), saga.clone(), input.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                orch.start(&saga, input.clone(), None).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn read_median(orch: &Arc<Orchestrator>, id: ExecutionId) -> anyhow::Result<f64> {
    // Warm up first (the blocking pool's threads, the allocator, sled's cache), so that both
    // sizes are measured in the same steady state.
    for _ in 0..200 {
        orch.execution(id).await?;
    }
    let mut samples = Vec::new();
    for _ in 0..1_000 {
        let t = Instant::now();
        orch.execution(id).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// Runs the scale measurements with `n` waiting executions.
pub async fn run(n: usize) -> anyhow::Result<ScaleReport> {
    let dir = tempfile::tempdir()?;
    let mut config = HostConfig::new(dir.path());
    config.orchestrator.max_active_executions = n + 1_000;
    let host = Host::start(config.clone()).await?;
    let orch = host.orchestrator().clone();
    let plugin: crate::domain::PluginRef = "testkit@1.0.0".parse().map_err(anyhow::Error::msg)?;
    orch.plugins().upload(plugin.name, plugin.version, TESTKIT_WASM.to_vec(), 0).await?;
    let def = json!({"steps": [{"name": "a", "plugin": "testkit@1.0.0", "retry": {"max_attempts": 2, "initial_backoff_ms": 3_600_000}}]});
    orch.put_definition(SagaName::parse("wait").map_err(anyhow::Error::msg)?, def.to_string().as_bytes()).await?;
    // Warm up (instance pool, caches) so that the baseline is fair.
    trigger_waiting(&orch, 200).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = resident_bytes()?;
    eprintln!("[bench --scale] starting {n} executions that will wait in backoff");
    trigger_waiting(&orch, n).await?;
    let total = n + 200;
    // Each waits after its first attempt failed: execution_started, step_started, step_failed.
    let store = orch.store().clone();
    let until = Instant::now() + Duration::from_secs(600);
    loop {
        let waiting = store
            .list(&crate::store::ListFilter {
                status: Some(crate::domain::ExecutionStatus::Running),
                limit: total,
                ..Default::default()
            })
            .await?
            .iter()
            .filter(|s| s.version >= 3)
            .count();
        if waiting >= total {
            break;
        }
        if Instant::now() > until {
            bail!("only {waiting} of {total} executions reached their backoff");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = resident_bytes()?;
    let bytes_per_waiting_execution = after.saturating_sub(before) as f64 / n as f64;
    host.stop().await;
    drop(orch);
    drop(store);

    eprintln!("[bench --scale] restarting on the same store");
    let started = Instant::now();
    let host = loop {
        // The previous store lets go of its directory once its writer thread has stopped.
        match Host::start(config.clone()).await {
            Ok(h) => break h,
            Err(e) if started.elapsed() < Duration::from_secs(10) && format!("{e:#}").contains("opening the store") => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e),
        }
    };
    let orch = host.orchestrator().clone();
    wait_until("recovery", Duration::from_secs(600), || orch.streams_loaded() >= total as u64).await?;
    let resume_seconds = started.elapsed().as_secs_f64();
    host.stop().await;

    eprintln!("[bench --scale] read latency with 1,000 and 1,000,000 events stored");
    let dir = tempfile::tempdir()?;
    let mut config = HostConfig::new(dir.path());
    config.limits.max_instances = 8;
    let host = Host::start(config).await?;
    let orch = host.orchestrator().clone();
    let plugin: crate::domain::PluginRef = "testkit@1.0.0".parse().map_err(anyhow::Error::msg)?;
    orch.plugins().upload(plugin.name, plugin.version, TESTKIT_WASM.to_vec(), 0).await?;
    let ten = json!({"steps": (0..4).map(|i| json!({"name": format!("s{i}"), "plugin": "testkit@1.0.0"})).collect::<Vec<_>>()});
    orch.put_definition(SagaName::parse("ten").map_err(anyhow::Error::msg)?, ten.to_string().as_bytes()).await?;
    let target = orch.start(&SagaName::parse("ten").map_err(anyhow::Error::msg)?, json!({}), None).await?.id;
    orch.wait_terminal(target, Duration::from_secs(10)).await?.context("target execution did not finish")?;
    // Fill through the host's own store (sled locks its directory against a second handle).
    let store = orch.store().clone();
    let fill_store = store.clone();
    let filler = |streams: usize| {
        let s = fill_store.clone();
        async move { fill_any(&*s, streams, 100).await }
    };
    filler(10).await?;
    let read_us_1k_events = read_median(&orch, target).await?;
    for chunk in 0..10 {
        eprintln!("[bench --scale] filling: {}0% of 1,000,000 events", chunk);
        filler(999).await?;
    }
    let read_us_1m_events = read_median(&orch, target).await?;
    host.stop().await;
    drop(store);
    Ok(ScaleReport { waiting: n, bytes_per_waiting_execution, resume_seconds, read_us_1k_events, read_us_1m_events })
}

async fn fill_any(store: &dyn crate::store::Store, streams: usize, per_stream: u64) -> anyhow::Result<()> {
    let saga = SagaName::parse("filler").map_err(anyhow::Error::msg)?;
    let step = StepName::parse("s").map_err(anyhow::Error::msg)?;
    for _ in 0..streams {
        let id = ExecutionId::new();
        let first = EventRecord {
            seq: 1,
            at: 1,
            event: Event::ExecutionStarted {
                saga: saga.clone(),
                definition_version: 1,
                input: json!({}),
                deadline_unix_ms: None,
                idempotency_key: None,
                key: None,
            },
        };
        store.create(id, saga.clone(), first, None).await?;
        let mut records: Vec<EventRecord> = (2..per_stream)
            .map(|seq| EventRecord {
                seq,
                at: 2,
                event: Event::StepStarted { step: step.clone(), attempt: seq as u32 },
            })
            .collect();
        // End the stream so that recovery leaves it alone.
        records.push(EventRecord { seq: per_stream, at: 2, event: Event::ExecutionCompleted });
        store.append(id, 1, records).await?;
    }
    Ok(())
}

/// Prints the scale report.
#[allow(clippy::print_stdout)]
pub fn print(r: &ScaleReport) {
    println!("sagahost bench --scale {}\n", r.waiting);
    println!(
        "  memory per execution waiting in backoff   {:>10.0} bytes   (target ≤ 2048)",
        r.bytes_per_waiting_execution
    );
    println!(
        "  resume {} unfinished executions          {:>10.2} s       (target ≤ 10 s for 100,000)",
        r.waiting, r.resume_seconds
    );
    println!("  read one execution, ~1,000 events stored  {:>10.1} µs", r.read_us_1k_events);
    println!("  read one execution, ~1,000,000 stored     {:>10.1} µs      (target: within ±20%)", r.read_us_1m_events);
}
