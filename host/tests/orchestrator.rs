//! The orchestrator with real plugins, on a manual clock.
//!
//! Optimistic concurrency where it matters: a cancel racing the last step's completion, and
//! two orchestrators driving the same executions. Exactly one outcome is recorded; nothing
//! is merged blindly. Those races are real (the plugin sleeps, the cancel fires at a random
//! moment); the clock only stamps the events.
//!
//! Time: backoffs, parking past `PARK_AFTER_MS`, deadlines and shutdown. Every wait of the
//! orchestrator is on its injected clock, so these tests move a `ManualClock` instead of
//! sleeping: a minute's backoff passes in one `advance`. They still wait, in real time and
//! bounded, for the drivers' own progress (an attempt recorded, a driver parked).

use std::sync::Arc;
use std::time::Duration;

use sagahost::clock::ManualClock;
use sagahost::domain::{Event, EventRecord, ExecutionId, ExecutionStatus, SagaName};
use sagahost::orchestrator::{Orchestrator, OrchestratorConfig, OrchestratorError, PARK_AFTER_MS};
use sagahost::runtime::{Limits, PluginCache, Runtime};
use sagahost::store::{MemoryStore, Store};
use serde_json::{Value, json};

const PLUGIN_DIR: &str = env!("SAGAHOST_PLUGIN_DIR");

/// Where every manual clock starts.
const T0: u64 = 1_700_000_000_000;

/// Bound on any real-time wait for the drivers' progress.
const PATIENCE: Duration = Duration::from_secs(20);

/// An orchestrator on `store` and `clock`, which other orchestrators in a test may share.
fn orchestrator(store: Arc<dyn Store>, clock: Arc<ManualClock>, shared_store: bool) -> Arc<Orchestrator> {
    let runtime = Runtime::new(Limits { max_instances: 32, ..Limits::default() }).unwrap();
    let plugins = Arc::new(PluginCache::new(runtime, store.clone()));
    let config = OrchestratorConfig { shared_store, ..OrchestratorConfig::default() };
    Orchestrator::new(store, plugins, clock, config)
}

/// A store with the test plugin, and an orchestrator on it.
async fn host(shared_store: bool) -> (Arc<dyn Store>, Arc<Orchestrator>, Arc<ManualClock>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(T0));
    let orch = orchestrator(store.clone(), clock.clone(), shared_store);
    let wasm = std::fs::read(format!("{PLUGIN_DIR}/testkit.wasm")).unwrap();
    let r: sagahost::domain::PluginRef = "testkit@1.0.0".parse().unwrap();
    orch.plugins().upload(r.name, r.version, wasm, 0).await.unwrap();
    (store, orch, clock)
}

/// Defines saga `name`: its `steps` run the test plugin, with `extra` merged into each step.
async fn define(orch: &Orchestrator, name: &str, steps: &[&str], extra: Value, deadline_ms: Option<u64>) -> SagaName {
    let steps: Vec<_> = steps
        .iter()
        .map(|s| {
            let mut step = json!({"name": s, "plugin": "testkit@1.0.0"});
            step.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
            step
        })
        .collect();
    let mut doc = json!({ "steps": steps });
    if let Some(d) = deadline_ms {
        doc["deadline_ms"] = json!(d);
    }
    let saga = SagaName::parse(name).unwrap();
    orch.put_definition(saga.clone(), doc.to_string().as_bytes()).await.unwrap();
    saga
}

/// A backoff short enough for the driver to wait it out itself.
const SHORT_BACKOFF: u64 = PARK_AFTER_MS / 2;

/// Retries `backoff_ms` apart, three attempts in all.
fn backoff(backoff_ms: u64) -> Value {
    json!({"retry": {"max_attempts": 3, "initial_backoff_ms": backoff_ms, "max_backoff_ms": backoff_ms}})
}

fn count(events: &[EventRecord], pred: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|r| pred(&r.event)).count()
}

fn is_terminal(e: &Event) -> bool {
    matches!(e, Event::ExecutionCompleted | Event::ExecutionCompensated | Event::ExecutionFailed { .. })
}

fn terminal_events(events: &[EventRecord]) -> usize {
    count(events, is_terminal)
}

/// Waits until `cond` holds: for the drivers' progress, never for a time of the clock.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(tokio::time::Instant::now() < give_up, "gave up waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until an event matching `pred` is recorded for `id`; the one recorded.
async fn until_recorded(orch: &Orchestrator, id: ExecutionId, pred: impl Fn(&Event) -> bool) -> EventRecord {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = orch.events(id, 0).await.unwrap().into_iter().find(|r| pred(&r.event)) {
            return found;
        }
        assert!(tokio::time::Instant::now() < give_up, "gave up waiting for an event of {id}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn started(step: &str, attempt: u32) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::StepStarted { step: s, attempt: a } if s.as_str() == step && *a == attempt)
}

fn failed(step: &str) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::StepFailed { step: s, .. } if s.as_str() == step)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_the_last_step_resolves_to_exactly_one_outcome() {
    let (_store, orch, _clock) = host(true).await;
    let saga = define(&orch, "race", &["a", "b"], json!({}), None).await;
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
    eprintln!("cancel accepted {} times, refused {} times", outcomes.0, outcomes.1);
    assert!(outcomes.0 > 0, "the race was never run: every cancel came too late");
}

fn rand_below(n: u64) -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 % n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_driving_one_execution_record_each_outcome_once() {
    let (store, first, clock) = host(true).await;
    let saga = define(&first, "race", &["a", "b", "c"], json!({}), None).await;
    let second = orchestrator(store.clone(), clock, true);
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(first.start(&saga, json!({}), None).await.unwrap().id);
        // The second host finds the same unfinished executions and drives them too.
        second.recover().await.unwrap();
    }
    for id in ids {
        // Whichever orchestrator finishes it, the store shows it (waiters are per process).
        until_recorded(&first, id, is_terminal).await;
        assert_eq!(first.execution(id).await.unwrap().status, ExecutionStatus::Completed);
        let events = first.events(id, 0).await.unwrap();
        assert_eq!(events.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=events.len() as u64).collect::<Vec<_>>());
        for step in ["a", "b", "c"] {
            let completed = count(&events, |e| matches!(e, Event::StepCompleted { step: s, .. } if s.as_str() == step));
            assert_eq!(completed, 1, "{step}: {events:?}");
        }
        assert_eq!(terminal_events(&events), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backoff_parks_the_execution_until_the_clock_reaches_it() {
    let (_store, orch, clock) = host(false).await;
    let saga = define(&orch, "slow-retry", &["a"], backoff(60_000), None).await;
    let id = orch.start(&saga, json!({"behaviors": {"a": "fail_until:2"}}), None).await.unwrap().id;
    let failure = until_recorded(&orch, id, failed("a")).await;
    assert!(
        matches!(failure.event, Event::StepFailed { retry_at_unix_ms: Some(at), .. } if at == T0 + 60_000),
        "{failure:?}"
    );
    // A wait past PARK_AFTER_MS holds no task: the execution is on the timer, not in a driver.
    until("the execution is parked", || orch.parked() == 1 && orch.active_drivers() == 0).await;

    clock.advance(60_000);
    let exec = orch.wait_terminal(id, PATIENCE).await.unwrap().expect("ended once the clock moved");
    assert_eq!(exec.status, ExecutionStatus::Completed);
    // The retry ran at the moved clock's time: nothing ran it before the clock got there.
    let retry = until_recorded(&orch, id, started("a", 2)).await;
    assert_eq!(retry.at, T0 + 60_000);
    assert_eq!(orch.parked(), 0);
    until("its driver retired", || orch.active_drivers() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_backoff_waits_in_its_driver_until_the_clock_reaches_it() {
    let (_store, orch, clock) = host(false).await;
    let saga = define(&orch, "quick-retry", &["a"], backoff(SHORT_BACKOFF), None).await;
    let id = orch.start(&saga, json!({"behaviors": {"a": "fail_until:2"}}), None).await.unwrap().id;
    until_recorded(&orch, id, failed("a")).await;
    // Below PARK_AFTER_MS the driver itself waits: nothing is parked.
    assert_eq!((orch.parked(), orch.active_drivers()), (0, 1));

    clock.advance(SHORT_BACKOFF);
    let exec = orch.wait_terminal(id, PATIENCE).await.unwrap().expect("ended once the clock moved");
    assert_eq!(exec.status, ExecutionStatus::Completed);
    assert_eq!(until_recorded(&orch, id, started("a", 2)).await.at, T0 + SHORT_BACKOFF);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_reached_during_a_backoff_compensates_what_completed() {
    let (_store, orch, clock) = host(false).await;
    let saga = define(&orch, "deadline", &["a", "b"], backoff(60_000), Some(30_000)).await;
    let id = orch.start(&saga, json!({"behaviors": {"b": "retryable"}}), None).await.unwrap().id;
    until_recorded(&orch, id, failed("b")).await;
    // The wake-up is the deadline, the earlier of it and the retry.
    until("the execution is parked", || orch.parked() == 1 && orch.active_drivers() == 0).await;

    clock.advance(30_000);
    let exec = orch.wait_terminal(id, PATIENCE).await.unwrap().expect("ended at the deadline");
    assert_eq!(exec.status, ExecutionStatus::Compensated);
    let events = orch.events(id, 0).await.unwrap();
    let exceeded = events.iter().find(|r| matches!(r.event, Event::DeadlineExceeded)).expect("deadline recorded");
    assert_eq!(exceeded.at, T0 + 30_000);
    assert_eq!(
        count(&events, |e| matches!(e, Event::CompensationStepCompleted { step, .. } if step.as_str() == "a")),
        1
    );
    assert_eq!(count(&events, started("b", 2)), 0, "b was retried past the deadline: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_running_attempts_but_not_for_waiting_executions() {
    let (store, orch, clock) = host(false).await;
    let slow = define(&orch, "slow-retry", &["a"], backoff(60_000), None).await;
    let quick = define(&orch, "quick-retry", &["a"], backoff(SHORT_BACKOFF), None).await;
    let three = define(&orch, "three", &["a", "b", "c"], json!({}), None).await;
    let fail_once = json!({"behaviors": {"a": "fail_until:2"}});
    let parked = orch.start(&slow, fail_once.clone(), None).await.unwrap().id;
    let sleeping = orch.start(&quick, fail_once, None).await.unwrap().id;
    let running = orch.start(&three, json!({"behaviors": {"b": "sleep:1000"}}), None).await.unwrap().id;
    until_recorded(&orch, parked, failed("a")).await;
    until_recorded(&orch, sleeping, failed("a")).await;
    until("one execution is parked", || orch.parked() == 1).await;
    // Its driver recorded b's start and went straight on into the attempt, which takes 1 s.
    until_recorded(&orch, running, started("b", 1)).await;

    // No grace: the running attempt is left behind.
    orch.shutdown(Duration::ZERO).await;
    assert!(orch.active_drivers() >= 1);
    // A long grace: the call ends when the attempt does, long before the grace is over;
    // the waiting driver and the timer task left at once.
    tokio::time::timeout(PATIENCE, orch.shutdown(Duration::from_secs(3_600))).await.expect("waited for the grace");
    assert_eq!(orch.active_drivers(), 0);
    assert_eq!(orch.parked(), 1);
    // The attempt that ended during the grace has its outcome recorded; nothing new started.
    let events = store.read(running, 0).await.unwrap();
    assert_eq!(count(&events, |e| matches!(e, Event::StepCompleted { step, .. } if step.as_str() == "b")), 1);
    assert_eq!(count(&events, started("c", 1)), 0, "no attempt starts while stopping: {events:?}");

    // Nothing was lost: a new host on the same store finishes all three.
    let next = orchestrator(store, clock.clone(), false);
    assert_eq!(next.recover().await.unwrap(), 3);
    clock.advance(60_000);
    for id in [parked, sleeping, running] {
        let exec = next.wait_terminal(id, PATIENCE).await.unwrap().expect("ended after recovery");
        assert_eq!(exec.status, ExecutionStatus::Completed, "{id}");
    }
}

/// docs/topics.md, "Waits resumed by events": an event recorded with an execution's business
/// key before the execution existed resumes its wait when the wait begins — if it was recorded
/// at most ten minutes before the execution started; an older one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_recorded_before_an_execution_started_resume_its_wait_within_the_window() {
    use sagahost::domain::TopicEvent;
    use sagahost::orchestrator::TriggerKeys;
    let (_store, orch, clock) = host(false).await;
    let saga = SagaName::parse("order").unwrap();
    let doc = json!({"steps": [
        {"name": "create", "plugin": "testkit@1.0.0"},
        {"name": "await_credit", "wait_for": {"topics": ["CreditReserved"], "timeout_ms": 3_600_000}},
    ]});
    orch.put_definition(saga.clone(), doc.to_string().as_bytes()).await.unwrap();
    let publish = |id: &str, key: &str| TopicEvent {
        id: id.into(),
        topic: "CreditReserved".into(),
        key: Some(key.into()),
        payload: json!({"from": id}),
        at: sagahost::clock::Clock::now_ms(&*clock),
        source: None,
    };
    orch.publish_event(publish("old", "o-old")).await.unwrap();
    orch.publish_event(publish("other-key", "o-x")).await.unwrap();
    clock.advance(11 * 60 * 1_000);
    orch.publish_event(publish("early", "o-1")).await.unwrap();
    clock.advance(9 * 60 * 1_000);

    let start = |key: &str| {
        let (orch, saga, key) = (orch.clone(), saga.clone(), key.to_owned());
        async move {
            let keys = TriggerKeys { idempotency_key: None, key: Some(key) };
            orch.start_keyed(&saga, json!({}), keys).await.unwrap().id
        }
    };
    // Recorded 9 minutes before the execution started: taken when the wait begins.
    let id = start("o-1").await;
    let done = until_recorded(&orch, id, is_terminal).await;
    assert!(matches!(done.event, Event::ExecutionCompleted), "{done:?}");
    let exec = orch.execution(id).await.unwrap();
    assert_eq!(exec.signals.len(), 1);
    assert_eq!((exec.signals[0].id.as_deref(), &exec.signals[0].payload), (Some("early"), &json!({"from": "early"})));

    // Recorded 20 minutes before: not taken; the wait goes on.
    let id = start("o-old").await;
    until_recorded(&orch, id, started("await_credit", 1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exec = orch.execution(id).await.unwrap();
    assert!(exec.signals.is_empty() && exec.status == ExecutionStatus::Running, "{:?}", exec.signals);
}
