//! Saga semantics over HTTP with the testkit plugin: reverse compensation, cancel, deadline,
//! failed and resume, idempotency, correlation.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{Api, HostProcess, assert_gapless, compensated_steps, data_dir, testkit_saga, trace, wasm};

async fn host_with_testkit() -> (tempfile::TempDir, HostProcess, Api) {
    let (tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    (tmp, host, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_step_failing_permanently_compensates_three_two_one() {
    let (_tmp, _host, api) = host_with_testkit().await;
    api.put_saga("four", &testkit_saga(&["one", "two", "three", "four"], json!({}))).await;
    let id = api.trigger("four", &json!({"behaviors": {"four": "permanent"}}), None).await;
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "compensated");
    let events = api.events(&id).await;
    assert_gapless(&events);
    assert_eq!(compensated_steps(&events), ["three", "two", "one"]);
    let t = trace(&events);
    assert!(
        !t.iter().any(|e| e.starts_with("compensation_step") && e.ends_with("(four)")),
        "no compensation for the failed step: {t:?}"
    );
    assert_eq!(t.last().unwrap(), "execution_compensated");
    // Correlation: each compensation saw the execution id and its own stable key.
    for step in &exec["steps"].as_array().unwrap()[..3] {
        let undone = &step["compensation"]["result"];
        assert_eq!(undone["execution_id"], id.as_str());
        assert_eq!(undone["idempotency_key"], format!("{id}/{}/compensate", step["name"].as_str().unwrap()));
        assert_eq!(step["status"], "compensated");
    }
    assert_eq!(exec["steps"][3]["status"], "failed");
    assert_eq!(exec["compensation_reason"], "step four failed: four said no");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_saga_and_compensates() {
    let (_tmp, _host, api) = host_with_testkit().await;
    api.put_saga("slow", &testkit_saga(&["a", "b", "c"], json!({}))).await;
    let id = api.trigger("slow", &json!({"behaviors": {"b": "sleep:1500"}}), None).await;
    api.wait_for(&id, Duration::from_secs(10), |e| e["steps"][1]["status"] == "running").await;
    let (status, body) = api.call(Method::POST, &format!("/v1/executions/{id}/cancel"), None).await;
    assert_eq!(status, 202, "{body}");
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "compensated");
    assert_eq!(exec["compensation_reason"], "cancelled by request");
    let events = api.events(&id).await;
    assert_gapless(&events);
    let t = trace(&events);
    assert!(t.contains(&"cancel_requested".to_string()));
    assert!(!t.contains(&"step_started(c)".to_string()), "nothing goes forward after a cancel: {t:?}");
    assert_eq!(compensated_steps(&events), ["b", "a"]);
    let (status, _) = api.call(Method::POST, &format!("/v1/executions/{id}/cancel"), None).await;
    assert_eq!(status, 409, "already terminal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_passing_during_backoff_compensates() {
    let (_tmp, _host, api) = host_with_testkit().await;
    let mut def = testkit_saga(&["a", "b"], json!({"retry": {"max_attempts": 5, "initial_backoff_ms": 30000}}));
    def["deadline_ms"] = json!(1500);
    api.put_saga("hurry", &def).await;
    let id = api.trigger("hurry", &json!({"behaviors": {"b": "retryable"}}), None).await;
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "compensated");
    let t = trace(&api.events(&id).await);
    assert!(t.contains(&"deadline_exceeded".to_string()), "{t:?}");
    assert_eq!(exec["steps"][1]["attempts"], 1, "the 30 s backoff never fired");
    assert_eq!(exec["compensation_reason"], "deadline exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_compensation_fails_and_resume_finishes_it() {
    let (_tmp, _host, api) = host_with_testkit().await;
    let def = testkit_saga(
        &["a", "b"],
        json!({"compensation_retry": {"max_attempts": 2, "initial_backoff_ms": 10, "max_backoff_ms": 10}}),
    );
    api.put_saga("stuck", &def).await;
    let input = json!({"behaviors": {"b": "permanent"}, "compensations": {"a": "fail_until:4"}});
    let id = api.trigger("stuck", &input, None).await;
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "failed", "{exec}");
    assert!(exec["failure_reason"].as_str().unwrap().contains("compensation of step a failed"));
    assert_eq!(exec["steps"][0]["compensation"]["attempts"], 2);
    let (status, _) = api.call(Method::POST, &format!("/v1/executions/{id}/cancel"), None).await;
    assert_eq!(status, 409);
    let (status, body) = api.call(Method::POST, &format!("/v1/executions/{id}/resume"), None).await;
    assert_eq!(status, 202, "{body}");
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "compensated", "{exec}");
    assert_eq!(exec["steps"][0]["compensation"]["attempts"], 4);
    let (status, _) = api.call(Method::POST, &format!("/v1/executions/{id}/resume"), None).await;
    assert_eq!(status, 409, "only failed executions resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_step_is_retried_then_compensated_as_unknown() {
    let (_tmp, _host, api) = host_with_testkit().await;
    api.put_saga("traps", &testkit_saga(&["a", "b"], json!({"retry": {"max_attempts": 2, "initial_backoff_ms": 10}})))
        .await;
    let id = api.trigger("traps", &json!({"behaviors": {"b": "trap"}}), None).await;
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "compensated");
    assert_eq!(exec["steps"][1]["error"]["kind"], "trap");
    assert_eq!(exec["steps"][1]["attempts"], 2);
    // Its outcome is unknown, so it is compensated too, with a null result.
    assert_eq!(compensated_steps(&api.events(&id).await), ["b", "a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_the_terminal_execution_and_keys_deduplicate() {
    let (_tmp, _host, api) = host_with_testkit().await;
    api.put_saga("quick", &testkit_saga(&["a"], json!({}))).await;
    let (status, exec) = api.call(Method::POST, "/v1/sagas/quick/executions?wait=10000", Some(b"{}".to_vec())).await;
    assert_eq!(status, 200);
    assert_eq!(exec["status"], "completed");
    let first = api.trigger("quick", &json!({}), Some("k-1")).await;
    let again = api.trigger("quick", &json!({}), Some("k-1")).await;
    assert_eq!(first, again, "same key, same input: same execution");
    let (_, list) = api.call(Method::GET, "/v1/executions?saga=quick&limit=10", None).await;
    assert_eq!(list["executions"].as_array().unwrap().len(), 2, "one from wait, one from the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_interrupts_the_running_attempt() {
    let (_tmp, _host, api) = host_with_testkit().await;
    let mut def = testkit_saga(&["a", "b"], json!({"timeout_ms": 30000}));
    def["deadline_ms"] = json!(1000);
    api.put_saga("late", &def).await;
    let id = api.trigger("late", &json!({"behaviors": {"b": "loop"}}), None).await;
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "compensated", "{exec}");
    assert_eq!(exec["steps"][1]["error"]["kind"], "timeout", "cut at the deadline, not its 30 s timeout");
    let t = trace(&api.events(&id).await);
    assert!(t.contains(&"deadline_exceeded".to_string()), "{t:?}");
    // A runaway step has an unknown outcome: it is compensated too.
    assert_eq!(compensated_steps(&api.events(&id).await), ["b", "a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_host_answers_429_with_retry_after() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &["--max-active-executions", "1"]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("slow", &testkit_saga(&["a"], json!({}))).await;
    let first = api.trigger("slow", &json!({"behaviors": {"a": "sleep:1500"}}), None).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sagas/slow/executions", api.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "busy");
    api.wait_terminal(&first).await;
    // Once the running one is done, triggers are accepted again (as a client honouring
    // Retry-After would find).
    let mut status = 0;
    for _ in 0..50 {
        status = api.call(Method::POST, "/v1/sagas/slow/executions?wait=5000", Some(b"{}".to_vec())).await.0;
        if status != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_feed_streams_status_changes() {
    let (_tmp, _host, api) = host_with_testkit().await;
    api.put_saga("fed", &testkit_saga(&["a", "b"], json!({}))).await;
    let mut feed = reqwest::Client::new().get(format!("{}/v1/executions/feed", api.url)).send().await.unwrap();
    assert_eq!(feed.status().as_u16(), 200);
    let id = api.trigger("fed", &json!({"behaviors": {"b": "permanent"}}), None).await;
    let mut text = String::new();
    while !text.contains("\"compensated\"") {
        let chunk =
            tokio::time::timeout(Duration::from_secs(10), feed.chunk()).await.expect("feed stalled").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let statuses: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter(|d| d.contains(id.as_str()))
        .map(|d| {
            if d.contains("\"running\"") {
                "running"
            } else if d.contains("\"compensating\"") {
                "compensating"
            } else {
                "compensated"
            }
        })
        .collect();
    assert_eq!(statuses, ["running", "compensating", "compensated"], "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backoff_parks_the_execution_and_the_timer_or_a_cancel_wakes_it() {
    let (_tmp, _host, api) = host_with_testkit().await;
    // 2.5 s is past the parking threshold: the driver lets go and the timer restarts it.
    let def =
        testkit_saga(&["a", "b"], json!({"retry": {"max_attempts": 3, "initial_backoff_ms": 2500, "multiplier": 1.0}}));
    api.put_saga("parked", &def).await;
    let timed = api.trigger("parked", &json!({"behaviors": {"b": "fail_until:2"}}), None).await;
    let cancelled = api.trigger("parked", &json!({"behaviors": {"b": "retryable"}}), None).await;
    api.wait_for(&cancelled, Duration::from_secs(10), |e| e["steps"][1]["error"].is_object()).await;
    let (status, _) = api.call(Method::POST, &format!("/v1/executions/{cancelled}/cancel"), None).await;
    assert_eq!(status, 202);
    // The cancel wakes the parked execution long before its 2.5 s backoff ends,
    let exec = api.wait_for(&cancelled, Duration::from_millis(2000), |e| e["status"] == "compensated").await;
    assert_eq!(exec["steps"][1]["attempts"], 1);
    // and the timer restarts the other one when its backoff is over.
    let exec = api.wait_terminal(&timed).await;
    assert_eq!(exec["status"], "completed", "{exec}");
    assert_eq!(exec["steps"][1]["attempts"], 2);
    let events = api.events(&timed).await;
    let failed = events.iter().find(|e| e["type"] == "step_failed").unwrap();
    let retried = events.iter().find(|e| e["type"] == "step_started" && e["attempt"] == 2).unwrap();
    assert!(retried["at"].as_u64() >= failed["retry_at_unix_ms"].as_u64());
}

/// Following an ended execution from past its last event ends at once (it used to wait forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_an_ended_execution_past_its_end_closes_at_once() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("quick", &testkit_saga(&["a"], json!({}))).await;
    let id = api.trigger("quick", &json!({}), None).await;
    let last = api.wait_terminal(&id).await["version"].as_u64().unwrap();
    for after in [last, last + 5] {
        let url = format!("{}/v1/executions/{id}/events?follow=true&after={after}", host.url);
        let resp = tokio::time::timeout(Duration::from_secs(5), reqwest::get(&url)).await.unwrap().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let body = tokio::time::timeout(Duration::from_secs(5), resp.text()).await.expect("the stream ends").unwrap();
        assert!(!body.contains("data:"), "{body}");
    }
    // From before its end, the stream still delivers the rest and ends with the terminal event.
    let url = format!("{}/v1/executions/{id}/events?follow=true&after={}", host.url, last - 1);
    let body =
        tokio::time::timeout(Duration::from_secs(5), reqwest::get(&url).await.unwrap().text()).await.unwrap().unwrap();
    assert!(body.contains("execution_completed"), "{body}");
}
