//! Events in (docs/topics.md) on the real binary: an event published to the host's log starts
//! the sagas it triggers, exactly one execution per saga and key however often it (or another
//! event with that key) arrives, also across a kill -9; an event with a key resumes the waits
//! of the running executions with that business key; ids de-duplicate; bad events get JSON
//! errors.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, HostProcess, data_dir, wasm};

async fn publish(url: &str, topic: &str, payload: &Value, id: Option<&str>, key: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(format!("{url}/v1/events/{topic}")).body(payload.to_string());
    if let Some(id) = id {
        req = req.header("Event-Id", id);
    }
    if let Some(key) = key {
        req = req.header("Event-Key", key);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Executions with business key `key`, newest first: (saga, id).
async fn keyed(api: &Api, key: &str) -> Vec<(String, String)> {
    let (_, list) = api.call(Method::GET, &format!("/v1/executions?key={key}"), None).await;
    list["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["saga"].as_str().unwrap().to_owned(), e["id"].as_str().unwrap().to_owned()))
        .collect()
}

async fn until_keyed(api: &Api, key: &str, saga: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Some((_, id)) = keyed(api, key).await.into_iter().find(|(s, _)| s == saga) {
            return id;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no {saga} execution with key {key}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn define(api: &Api) {
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga(
        "customer",
        &json!({"triggers": [{"topic": "OrderCreated", "key": "order_id"}],
                "steps": [{"name": "reserve_credit", "plugin": "testkit@1.0.0"}]}),
    )
    .await;
    api.put_saga(
        "order",
        &json!({"steps": [
            {"name": "create", "plugin": "testkit@1.0.0"},
            {"name": "await_credit", "wait_for": {"topics": ["CreditReserved", "CreditLimitExceeded"], "timeout_ms": 60000},
             "fail_on": ["CreditLimitExceeded"]},
            {"name": "approve", "plugin": "testkit@1.0.0"}]}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_trigger_sagas_once_per_key_and_resume_waits_by_business_key() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    define(&api).await;

    // The order saga runs under its business key and waits for the customer's answer.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sagas/order/executions", host.url))
        .header("Execution-Key", "o-1")
        .body("{}")
        .send()
        .await
        .unwrap();
    let order = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    api.wait_for(&order, Duration::from_secs(30), |e| e["steps"][1]["status"] == "running").await;

    // OrderCreated starts one customer execution with the key read from the payload, whose
    // input is the event.
    let created = json!({"order_id": "o-1", "amount": 40});
    let (status, first) = publish(&host.url, "OrderCreated", &created, Some("evt-1"), None).await;
    assert_eq!((status, &first["duplicate"]), (202, &json!(false)), "{first}");
    let customer = until_keyed(&api, "o-1", "customer").await;
    let done = api.wait_terminal(&customer).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["input"]["event"]["payload"], created);
    assert_eq!(done["input"]["event"]["id"], "evt-1");
    // The same id again, and another event with the same key: still one customer execution.
    let (_, again) = publish(&host.url, "OrderCreated", &created, Some("evt-1"), None).await;
    assert_eq!((again["duplicate"].as_bool(), again["seq"].as_u64()), (Some(true), first["seq"].as_u64()));
    publish(&host.url, "OrderCreated", &json!({"order_id": "o-1", "amount": 41}), Some("evt-2"), None).await;
    // An event without the trigger's key starts nothing.
    publish(&host.url, "OrderCreated", &json!({"amount": 1}), Some("evt-3"), None).await;

    // CreditReserved with the order's key ends its wait; the payload is the wait's result.
    let (status, _) = publish(&host.url, "CreditReserved", &json!({"limit": 100}), Some("evt-4"), Some("o-1")).await;
    assert_eq!(status, 202);
    let done = api.wait_terminal(&order).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["steps"][1]["result"], json!({"topic": "CreditReserved", "payload": {"limit": 100}}));
    let events = api.events(&order).await;
    let signal = events.iter().find(|e| e["type"] == "signal_received").unwrap();
    assert_eq!(signal["signal_id"], "evt-4");

    // Every event is in the log, in order; the later ones have been dealt with by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sagas: Vec<String> = keyed(&api, "o-1").await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(sagas.iter().filter(|s| *s == "customer").count(), 1, "one customer execution per key: {sagas:?}");
    let (_, log) = api.call(Method::GET, "/v1/events", None).await;
    let ids: Vec<&str> = log["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["evt-1", "evt-2", "evt-3", "evt-4"]);
    let seqs: Vec<u64> = log["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let (_, page) = api.call(Method::GET, &format!("/v1/events?after={}&limit=1", seqs[1]), None).await;
    assert_eq!(page["events"][0]["id"], "evt-3");
    assert_eq!(page["next"].as_u64(), Some(seqs[2]));

    // Bad events: JSON errors, nothing recorded.
    for (topic, body, id, code) in [
        ("bad%20topic", "{}", None, "bad_request"),
        ("OrderCreated", "", None, "bad_request"),
        ("OrderCreated", "{oops", None, "bad_request"),
        ("OrderCreated", "{}", Some("x".repeat(257)), "bad_request"),
    ] {
        let mut req = reqwest::Client::new().post(format!("{}/v1/events/{topic}", host.url)).body(body);
        if let Some(id) = id {
            req = req.header("Event-Id", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{topic} {body}");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], code);
    }
    let (_, log) = api.call(Method::GET, "/v1/events", None).await;
    assert_eq!(log["events"].as_array().unwrap().len(), 4);
}

/// Events recorded just before a kill -9 are delivered after the restart, and an event
/// delivered before the kill but not yet marked delivered starts nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_delivered_once_per_key_across_a_kill() {
    let (_tmp, dir) = data_dir();
    let mut host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    define(&api).await;
    for i in 0..20 {
        publish(&host.url, "OrderCreated", &json!({"order_id": format!("k-{i}")}), Some(&format!("e-{i}")), None).await;
    }
    host.kill();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    for i in 0..20 {
        let key = format!("k-{i}");
        let id = until_keyed(&api, &key, "customer").await;
        assert_eq!(api.wait_terminal(&id).await["status"], "completed");
    }
    // Published again after the restart: nothing new.
    for i in 0..20 {
        publish(&host.url, "OrderCreated", &json!({"order_id": format!("k-{i}")}), Some(&format!("again-{i}")), None)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, list) = api.call(Method::GET, "/v1/executions?saga=customer&limit=100", None).await;
    assert_eq!(list["executions"].as_array().unwrap().len(), 20, "one per key: {list}");

    // The CLI publishes too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sagahost"))
        .args(["publish", "OrderCreated", "--payload", r#"{"order_id": "k-cli"}"#, "--id", "cli-1"])
        .env("SAGAHOST_URL", &host.url)
        .output()
        .unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("event cli-1 published"), "{out:?}");
    until_keyed(&api, "k-cli", "customer").await;
}

/// Sagas talking through emitted events only: the order's `create` step emits OrderCreated
/// (its first attempt fails after emitting, so that one leaves nothing), which starts the
/// customer saga; the customer's step emits CreditReserved without a key, so it carries the
/// customer execution's business key, the order id, back to the order's wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emitted_events_are_an_outbox_that_drives_choreography() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    define(&api).await;
    api.put_saga(
        "order",
        &json!({"steps": [
            {"name": "create", "plugin": "testkit@1.0.0",
             "retry": {"max_attempts": 3, "initial_backoff_ms": 10, "multiplier": 1.0, "max_backoff_ms": 10}},
            {"name": "await_credit", "wait_for": {"topics": ["CreditReserved", "CreditLimitExceeded"], "timeout_ms": 60000},
             "fail_on": ["CreditLimitExceeded"]}]}),
    )
    .await;
    // testkit reads a triggered execution's behaviour from its event's payload: the customer's
    // step emits what OrderCreated carries in `emit`.
    let input = json!({
        "emit": {"create": [["OrderCreated", null, {"order_id": "o-9", "amount": 5, "emit": {"reserve_credit": [["CreditReserved", null, {"ok": true}]]}}]]},
        "behaviors": {"create": "fail_until:2"},
    });
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sagas/order/executions?wait=30000", host.url))
        .header("Execution-Key", "o-9")
        .body(input.to_string())
        .send()
        .await
        .unwrap();
    let order: Value = resp.json().await.unwrap();
    let order_id = order["id"].as_str().unwrap().to_owned();
    let done = api.wait_terminal(&order_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["steps"][0]["attempts"], 2);
    assert_eq!(done["steps"][1]["result"]["topic"], "CreditReserved");

    let (_, log) = api.call(Method::GET, "/v1/events", None).await;
    let log = log["events"].as_array().unwrap().clone();
    let created: Vec<&Value> = log.iter().filter(|e| e["topic"] == "OrderCreated").collect();
    assert_eq!(created.len(), 1, "the failed attempt emitted nothing: {log:?}");
    assert_eq!(created[0]["id"], format!("{order_id}:create:execute:0"));
    assert_eq!(created[0]["key"], "o-9", "the execution's business key");
    assert_eq!(
        created[0]["source"],
        json!({"execution_id": order_id, "saga": "order", "step": "create", "side": "execute"})
    );
    let customer = until_keyed(&api, "o-9", "customer").await;
    let reserved: Vec<&Value> = log.iter().filter(|e| e["topic"] == "CreditReserved").collect();
    assert_eq!(reserved.len(), 1);
    assert_eq!(reserved[0]["id"], format!("{customer}:reserve_credit:execute:0"));
    assert_eq!(reserved[0]["key"], "o-9", "the customer execution's key is the order id");
    let signal = api.events(&order_id).await.into_iter().find(|e| e["type"] == "signal_received").unwrap();
    assert_eq!(signal["signal_id"], reserved[0]["id"]);
}
