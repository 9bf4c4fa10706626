//! Wait steps and signals on the real binary (docs/definitions.md, "Wait steps"): a signal
//! ends a wait with its topic and payload as the result; a `fail_on` topic fails it and the
//! saga compensates; a signal that arrives before its wait is kept; a wait past its timeout
//! fails; a wait survives a kill -9; bad signals get JSON errors.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, HostProcess, data_dir, wasm};

fn credit_saga(timeout_ms: u64) -> Value {
    json!({"steps": [
        {"name": "reserve", "plugin": "testkit@1.0.0", "timeout_ms": 5000},
        {"name": "await_credit", "wait_for": {"topics": ["CreditReserved", "CreditLimitExceeded"], "timeout_ms": timeout_ms},
         "fail_on": ["CreditLimitExceeded"]},
        {"name": "approve", "plugin": "testkit@1.0.0", "timeout_ms": 5000},
    ]})
}

async fn signal(api: &Api, id: &str, topic: &str, payload: Value) -> (u16, Value) {
    api.call(Method::POST, &format!("/v1/executions/{id}/signals/{topic}"), Some(payload.to_string().into_bytes()))
        .await
}

/// Waits until the execution's wait step is running (the wait has begun).
async fn until_waiting(api: &Api, id: &str) {
    api.wait_for(id, Duration::from_secs(30), |e| e["steps"][1]["status"] == "running").await;
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_end_waits_with_their_payload_or_fail_them_and_early_signals_are_kept() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("credit", &credit_saga(60_000)).await;

    // Approved: the signal's topic and payload are the wait's result, seen by the next step.
    let id = api.trigger("credit", &json!({}), None).await;
    until_waiting(&api, &id).await;
    assert_eq!(api.execution(&id).await["status"], "running");
    let (status, body) = signal(&api, &id, "CreditReserved", json!({"customer": "c-1", "amount": 40})).await;
    assert_eq!(status, 202, "{body}");
    let done = api.wait_terminal(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["steps"][1]["result"],
        json!({"topic": "CreditReserved", "payload": {"customer": "c-1", "amount": 40}})
    );
    let events = api.events(&id).await;
    let t = types(&events);
    let received = t.iter().position(|t| *t == "signal_received").unwrap();
    let completed = events.iter().find(|e| e["type"] == "step_completed" && e["step"] == "await_credit").unwrap();
    assert_eq!(completed["signal"], events[received]["seq"], "{completed}");

    // Rejected: a fail_on topic fails the wait and the saga compensates what it did.
    let id = api.trigger("credit", &json!({}), None).await;
    until_waiting(&api, &id).await;
    assert_eq!(signal(&api, &id, "CreditLimitExceeded", json!({"limit": 10})).await.0, 202);
    let done = api.wait_terminal(&id).await;
    assert_eq!(done["status"], "compensated", "{done}");
    assert_eq!(done["steps"][0]["status"], "compensated");
    assert!(done["compensation_reason"].as_str().unwrap().contains("CreditLimitExceeded"), "{done}");

    // Early: the signal arrives while the step before the wait still runs, and is kept.
    let id = api.trigger("credit", &json!({"behaviors": {"reserve": "sleep:1500"}}), None).await;
    api.wait_for(&id, Duration::from_secs(30), |e| e["steps"][0]["status"] == "running").await;
    assert_eq!(signal(&api, &id, "CreditReserved", json!("early")).await.0, 202);
    let done = api.wait_terminal(&id).await;
    assert_eq!((done["status"].as_str(), &done["steps"][1]["result"]["payload"]), (Some("completed"), &json!("early")));
    let t = types(&api.events(&id).await).join(",");
    assert!(t.find("signal_received").unwrap() < t.find("step_completed").unwrap(), "{t}");

    // Bad signals: JSON errors, nothing recorded.
    let (status, body) = signal(&api, &id, "CreditReserved", json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "ended: {body}");
    let id = api.trigger("credit", &json!({}), None).await;
    until_waiting(&api, &id).await;
    for (topic, body, status, code) in [
        ("Unknown", Some(b"{}".to_vec()), 422, "invalid"),
        ("bad%20topic", Some(b"{}".to_vec()), 400, "bad_request"),
        ("CreditReserved", Some(Vec::new()), 400, "bad_request"),
        ("CreditReserved", Some(b"{oops".to_vec()), 400, "bad_request"),
        ("CreditReserved", Some(format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes()), 400, "bad_request"),
    ] {
        let (got, answer) = api.call(Method::POST, &format!("/v1/executions/{id}/signals/{topic}"), body).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{topic}: {answer}");
    }
    let missing = "019a0000-0000-7000-8000-000000000000";
    assert_eq!(signal(&api, missing, "CreditReserved", json!({})).await.0, 404);
    assert!(!types(&api.events(&id).await).contains(&"signal_received"));

    // The same Idempotency-Key twice: one signal.
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let resp = http
            .post(format!("{}/v1/executions/{id}/signals/CreditReserved", host.url))
            .header("Idempotency-Key", "callback-77")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
    }
    assert_eq!(api.wait_terminal(&id).await["status"], "completed");
    assert_eq!(types(&api.events(&id).await).iter().filter(|t| **t == "signal_received").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_times_out_and_a_wait_survives_a_kill() {
    let (_tmp, dir) = data_dir();
    let mut host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("quick", &credit_saga(300)).await;
    api.put_saga("credit", &credit_saga(600_000)).await;

    let timed_out = api.trigger("quick", &json!({}), None).await;
    let done = api.wait_terminal(&timed_out).await;
    assert_eq!(done["status"], "compensated", "{done}");
    assert_eq!(done["steps"][1]["error"]["kind"], "timeout");

    let waiting = api.trigger("credit", &json!({}), None).await;
    until_waiting(&api, &waiting).await;
    host.kill();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    assert_eq!(api.execution(&waiting).await["steps"][1]["status"], "running", "still waiting after the restart");
    // The CLI sends it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sagahost"))
        .args(["signal", &waiting, "CreditReserved", "--payload", r#"{"via": "cli"}"#])
        .env("SAGAHOST_URL", &host.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let done = api.wait_terminal(&waiting).await;
    assert_eq!(
        (done["status"].as_str(), &done["steps"][1]["result"]["payload"]["via"]),
        (Some("completed"), &json!("cli"))
    );
}
