//! Killing the host (SIGKILL) and restarting it on the same data directory.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Api, HostProcess, assert_gapless, data_dir, testkit_saga, trace, wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_during_backoff_retries_at_the_recorded_time_after_restart() {
    let (_tmp, dir) = data_dir();
    let mut host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga(
        "backoff",
        &testkit_saga(
            &["a", "b"],
            json!({"retry": {"max_attempts": 3, "initial_backoff_ms": 1500, "multiplier": 1.0}}),
        ),
    )
    .await;
    let id = api.trigger("backoff", &json!({"behaviors": {"b": "fail_until:2"}}), Some("run-1")).await;
    api.wait_for(&id, Duration::from_secs(10), |e| {
        e["steps"][1]["attempts"] == 1 && e["steps"][1]["error"].is_object()
    })
    .await;
    host.kill();

    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "completed", "{exec}");
    assert_eq!(exec["steps"][1]["attempts"], 2);
    let events = api.events(&id).await;
    assert_gapless(&events);
    let failed = events.iter().find(|e| e["type"] == "step_failed").unwrap();
    let retried = events.iter().find(|e| e["type"] == "step_started" && e["attempt"] == 2).unwrap();
    assert!(retried["at"].as_u64() >= failed["retry_at_unix_ms"].as_u64(), "not before the recorded time");
    // The idempotency key still finds the execution after the restart.
    assert_eq!(api.trigger("backoff", &json!({"behaviors": {"b": "fail_until:2"}}), Some("run-1")).await, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_in_flight_at_a_kill_runs_again_with_the_same_key() {
    let (_tmp, dir) = data_dir();
    let mut host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("inflight", &testkit_saga(&["a", "b"], json!({}))).await;
    let id = api.trigger("inflight", &json!({"behaviors": {"b": "sleep:800"}}), None).await;
    api.wait_for(&id, Duration::from_secs(10), |e| e["steps"][1]["status"] == "running").await;
    host.kill();

    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "completed");
    let b = &exec["steps"][1];
    assert_eq!(b["attempts"], 2, "the interrupted attempt ran again as attempt 2");
    assert_eq!(b["result"]["idempotency_key"], format!("{id}/b"));
    let t = trace(&api.events(&id).await);
    assert_eq!(t.iter().filter(|e| *e == "step_completed(b)").count(), 1, "exactly one outcome recorded: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_passing_while_the_host_is_down_compensates_after_restart() {
    let (_tmp, dir) = data_dir();
    let mut host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    let mut def = testkit_saga(&["a", "b"], json!({"retry": {"max_attempts": 5, "initial_backoff_ms": 30000}}));
    def["deadline_ms"] = json!(2000);
    api.put_saga("deadline", &def).await;
    let id = api.trigger("deadline", &json!({"behaviors": {"b": "retryable"}}), None).await;
    api.wait_for(&id, Duration::from_secs(10), |e| {
        e["steps"][1]["attempts"] == 1 && e["steps"][1]["error"].is_object()
    })
    .await;
    host.kill();
    // Down past the deadline: on restart it fires at once.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "compensated", "{exec}");
    let t = trace(&api.events(&id).await);
    assert!(t.contains(&"deadline_exceeded".to_string()), "{t:?}");
    assert_eq!(exec["steps"][1]["attempts"], 1);
}
