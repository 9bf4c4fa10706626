//! Optimistic concurrency where it matters: a cancel racing the last step's completion, and
//! two orchestrators driving the same executions. Exactly one outcome is recorded; nothing
//! is merged blindly.

use std::sync::Arc;
use std::time::Duration;

use sagahost::clock::SystemClock;
use sagahost::domain::{Event, EventRecord, ExecutionStatus, SagaName};
use sagahost::orchestrator::{Orchestrator, OrchestratorConfig, OrchestratorError};
use sagahost::runtime::{Limits, PluginCache, Runtime};
use sagahost::store::{MemoryStore, Store};
use serde_json::json;

const PLUGIN_DIR: &str = env!("SAGAHOST_PLUGIN_DIR");

/// An orchestrator on `store`, which other orchestrators in this test share.
fn orchestrator(store: Arc<dyn Store>) -> Arc<Orchestrator> {
    let runtime = Runtime::new(Limits { max_instances: 32, ..Limits::default() }).unwrap();
    let plugins = Arc::new(PluginCache::new(runtime, store.clone()));
    let config = OrchestratorConfig { shared_store: true, ..OrchestratorConfig::default() };
    Orchestrator::new(store, plugins, Arc::new(SystemClock), config)
}

async fn setup(steps: &[&str]) -> (Arc<dyn Store>, Arc<Orchestrator>, SagaName) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let orch = orchestrator(store.clone());
    let wasm = std::fs::read(format!("{PLUGIN_DIR}/testkit.wasm")).unwrap();
    let r: sagahost::domain::PluginRef = "testkit@1.0.0".parse().unwrap();
    orch.plugins().upload(r.name, r.version, wasm, 0).await.unwrap();
    let steps: Vec<_> = steps.iter().map(|s| json!({"name": s, "plugin": "testkit@1.0.0"})).collect();
    let saga = SagaName::parse("race").unwrap();
    orch.put_definition(saga.clone(), json!({ "steps": steps }).to_string().as_bytes()).await.unwrap();
    (store, orch, saga)
}

fn count(events: &[EventRecord], pred: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|r| pred(&r.event)).count()
}

fn terminal_events(events: &[EventRecord]) -> usize {
    count(events, |e| {
        matches!(e, Event::ExecutionCompleted | Event::ExecutionCompensated | Event::ExecutionFailed { .. })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_the_last_step_resolves_to_exactly_one_outcome() {
    let (_store, orch, saga) = setup(&["a", "b"]).await;
    let mut outcomes = (0, 0);
    for _ in 0..40 {
        let last_step = format!("sleep:{}", rand_below(8));
        let started = orch.start(&saga, json!({"behaviors": {"b": last_step}}), None).await.unwrap();
        // Fire the cancel while the last step runs or just as it finishes.
        tokio::time::sleep(Duration::from_micros(rand_below(10_000))).await;
        let cancel = orch.cancel(started.id).await;
        let exec = orch.wait_terminal(started.id, Duration::from_secs(10)).await.unwrap().expect("terminal");
        let events = orch.events(started.id, 0).await.unwrap();
        assert_eq!(terminal_events(&events), 1, "{events:?}");
        match cancel {
            // Accepted: the cancel was recorded before the execution ended, so it compensated.
            Ok(_) => {
                assert_eq!(exec.status, ExecutionStatus::Compensated);
                assert_eq!(count(&events, |e| matches!(e, Event::CancelRequested)), 1);
                outcomes.0 += 1;
            }
            // Refused: it had already ended, and nothing of the cancel was recorded.
            Err(OrchestratorError::Command(_)) => {
                assert_eq!(exec.status, ExecutionStatus::Completed);
                assert_eq!(count(&events, |e| matches!(e, Event::CancelRequested)), 0);
                outcomes.1 += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    println!("cancel accepted {} times, refused {} times", outcomes.0, outcomes.1);
    assert!(outcomes.0 > 0, "the race was never run: every cancel came too late");
}

fn rand_below(n: u64) -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 % n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_driving_one_execution_record_each_outcome_once() {
    let (store, first, saga) = setup(&["a", "b", "c"]).await;
    let second = orchestrator(store.clone());
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(first.start(&saga, json!({}), None).await.unwrap().id);
        // The second host finds the same unfinished executions and drives them too.
        second.recover().await.unwrap();
    }
    for id in ids {
        // Whichever orchestrator finishes it, the store shows it (waiters are per process).
        let mut exec = first.execution(id).await.unwrap();
        for _ in 0..400 {
            if exec.status.is_terminal() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            exec = first.execution(id).await.unwrap();
        }
        assert_eq!(exec.status, ExecutionStatus::Completed);
        let events = first.events(id, 0).await.unwrap();
        assert_eq!(events.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=events.len() as u64).collect::<Vec<_>>());
        for step in ["a", "b", "c"] {
            let completed = count(&events, |e| matches!(e, Event::StepCompleted { step: s, .. } if s.as_str() == step));
            assert_eq!(completed, 1, "{step}: {events:?}");
        }
        assert_eq!(terminal_events(&events), 1);
    }
}
