//! What the host accepts it can read back: poison nesting and lossy numbers are refused on
//! every JSON route and in plugin results; an Idempotency-Key reused with another request is
//! refused; every unfinished execution counts against the active limit.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_inputs_are_refused_on_every_json_route_and_the_host_reads_everything_back() {
    let (_tmp, dir) = data_dir();
    let mut host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("s", &testkit_saga(&["a"], json!({"retry": {"max_attempts": 1}}))).await;

    for depth in [65, 126, 127, 128, 129, 5_000] {
        let input = format!("{{\"x\": {}}}", nested(depth));
        let (status, body) = api.call(Method::POST, "/v1/sagas/s/executions", Some(input.into_bytes())).await;
        assert_eq!((status, code(&body)), (400, "bad_request"), "depth {depth}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("nested deeper than 64"), "{body}");
        let def =
            format!("{{\"steps\": [{{\"name\": \"a\", \"plugin\": \"testkit@1.0.0\", \"x\": {}}}]}}", nested(depth));
        let (status, body) = api.call(Method::PUT, "/v1/sagas/deep", Some(def.into_bytes())).await;
        assert_eq!(status, 400, "definition at depth {depth}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("nested deeper than 64"), "{body}");
    }
    for big in ["12345678901234567890123", "18446744073709551616", "-9223372036854775809", "1e400"] {
        let input = format!("{{\"amount\": {big}}}");
        let (status, body) = api.call(Method::POST, "/v1/sagas/s/executions", Some(input.into_bytes())).await;
        assert_eq!((status, code(&body)), (400, "bad_request"), "{big}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(big), "{body}");
    }
    // The deepest accepted input and the largest 64-bit numbers come back exactly.
    let input = format!("{{\"x\": {}, \"max\": 18446744073709551615, \"min\": -9223372036854775808}}", nested(63));
    let (status, body) = api.call(Method::POST, "/v1/sagas/s/executions?wait=10000", Some(input.into_bytes())).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("completed")), "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["input"]["max"].as_u64(), Some(u64::MAX));
    assert_eq!(body["input"]["min"].as_i64(), Some(i64::MIN));

    // Plugin results: too deep, or a number that would be rounded, fail the step as `limit`.
    for (behavior, needle) in [("deep_result:65", "nested deeper"), ("big_number", "64 bits")] {
        let input = json!({"behaviors": {"a": behavior}}).to_string().into_bytes();
        let (status, body) = api.call(Method::POST, "/v1/sagas/s/executions?wait=10000", Some(input)).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("compensated")), "{body}");
        let error = &body["steps"][0]["error"];
        assert_eq!(error["kind"], "limit", "{body}");
        assert!(error["message"].as_str().unwrap().contains(needle), "{body}");
    }
    let input = json!({"behaviors": {"a": "deep_result:60"}}).to_string().into_bytes();
    let (status, body) = api.call(Method::POST, "/v1/sagas/s/executions?wait=10000", Some(input)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("completed")), "{body}");

    // After a restart everything accepted reads back: views, events, the listing.
    host.terminate();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    let exec = api.execution(&id).await;
    assert_eq!(exec["status"], "completed");
    assert_eq!(api.events(&id).await.len(), 4);
    let (status, list) = api.call(Method::GET, "/v1/executions?limit=100", None).await;
    assert_eq!(status, 200);
    for e in list["executions"].as_array().unwrap() {
        let (status, body) =
            api.call(Method::GET, &format!("/v1/executions/{}", e["id"].as_str().unwrap()), None).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_with_another_body_is_refused() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("pay", &testkit_saga(&["a"], json!({}))).await;
    let first = api.trigger("pay", &json!({"amount": 10, "card": "4242"}), Some("order-1")).await;
    // Same key, same body (keys in another order): the first execution.
    let again = api.trigger("pay", &json!({"card": "4242", "amount": 10}), Some("order-1")).await;
    assert_eq!(again, first);
    // Same key, another body: 422 naming the first execution; nothing started.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/sagas/pay/executions", host.url))
        .header("Idempotency-Key", "order-1")
        .json(&json!({"amount": 99, "card": "4242"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "idempotency_key_reused", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(&first), "{body}");
    let (_, list) = api.call(Method::GET, "/v1/executions?saga=pay", None).await;
    assert_eq!(list["executions"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_waiting_to_retry_count_as_active() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &["--max-active-executions", "3"]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    let retry = json!({"retry": {"max_attempts": 5, "initial_backoff_ms": 600000}});
    api.put_saga("waits", &testkit_saga(&["a"], retry)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let key = format!("order-{i}");
        ids.push(api.trigger("waits", &json!({"behaviors": {"a": "retryable"}}), Some(&key)).await);
    }
    for id in &ids {
        api.wait_for(id, Duration::from_secs(30), |e| e["steps"][0]["error"].is_object()).await;
    }
    // All three are parked on their 10-minute backoff: no driver, but unfinished.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, metrics) = api.call(Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(metrics.lines().any(|l| l == "sagahost_active_executions 3"), "{metrics}");
    let input = json!({"behaviors": {"a": "ok"}}).to_string().into_bytes();
    let (status, body) = api.call(Method::POST, "/v1/sagas/waits/executions", Some(input.clone())).await;
    assert_eq!((status, code(&body)), (429, "busy"), "{body}");
    // At the limit, a retried trigger still gets the execution it made; a reused key with
    // another request is still refused as such.
    let retried = json!({"behaviors": {"a": "retryable"}}).to_string().into_bytes();
    let trigger = |body: Vec<u8>| {
        reqwest::Client::new()
            .post(format!("{}/v1/sagas/waits/executions", host.url))
            .header("Idempotency-Key", "order-1")
            .body(body)
            .send()
    };
    let resp = trigger(retried).await.unwrap();
    assert_eq!(resp.status().as_u16(), 202, "found by its key, as documented");
    assert_eq!(resp.json::<Value>().await.unwrap()["id"], ids[1].as_str());
    let resp = trigger(input).await.unwrap();
    assert_eq!(resp.status().as_u16(), 422);
}

/// Clients that close their connection at any moment of a trigger (before, during or after the
/// durable write) never orphan an execution: every stored one is driven to its end, counted,
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_whose_clients_vanish_leave_no_orphan() {
    use tokio::io::AsyncWriteExt;
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("quick", &testkit_saga(&["a", "b"], json!({}))).await;
    let addr = host.url.trim_start_matches("http://").to_owned();
    let mut tasks = Vec::new();
    for i in 0..400u64 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("{{\"n\": {i}}}");
            let request = format!(
                "POST /v1/sagas/quick/executions?wait=5000 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            // Spread the close over the whole life of the request: from right after sending
            // to well after the write is durable.
            stream.write_all(request.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_micros((i * 7_919) % 3_000)).await;
            drop(stream);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, list) = api.call(Method::GET, "/v1/executions?saga=quick&limit=1000", None).await;
    let ids: Vec<String> =
        list["executions"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert!(!ids.is_empty(), "some triggers got as far as the store");
    for id in &ids {
        let exec = api.wait_for(id, Duration::from_secs(30), |e| e["status"] == "completed").await;
        assert_eq!(exec["status"], "completed");
    }
    let (_, metrics) = api.call(Method::GET, "/metrics", None).await;
    let started = format!("sagahost_executions_started_total{{saga=\"quick\"}} {}", ids.len());
    assert!(metrics.as_str().unwrap().lines().any(|l| l == started), "{started} in\n{metrics}");
    println!("vanishing clients: {} of 400 triggers stored, all completed", ids.len());
}

/// A business key (`Execution-Key`) is kept with the execution: listed by it, shown in its
/// view and summary, read back after a restart; a bad key is refused; the same idempotency key
/// with another business key is another request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_carry_a_business_key_and_are_found_by_it() {
    let (_tmp, dir) = data_dir();
    let mut host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("order", &testkit_saga(&["a"], json!({}))).await;
    let http = reqwest::Client::new();
    let trigger = |key: &str, idem: Option<&str>| {
        let mut req =
            http.post(format!("{}/v1/sagas/order/executions", host.url)).header("Execution-Key", key).body("{}");
        if let Some(i) = idem {
            req = req.header("Idempotency-Key", i);
        }
        req.send()
    };
    let first: Value = trigger("order-1001", Some("t-1")).await.unwrap().json().await.unwrap();
    let other: Value = trigger("order-1002", None).await.unwrap().json().await.unwrap();
    let again: Value = trigger("order-1001", None).await.unwrap().json().await.unwrap();
    let (id, again_id) = (first["id"].as_str().unwrap(), again["id"].as_str().unwrap());
    assert_eq!(api.wait_terminal(id).await["key"], "order-1001");
    let reused = trigger("order-1003", Some("t-1")).await.unwrap();
    assert_eq!(reused.status().as_u16(), 422, "the same idempotency key with another business key");

    let (_, list) = api.call(Method::GET, "/v1/executions?key=order-1001", None).await;
    let ids: Vec<&str> = list["executions"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [again_id, id], "{list}");
    assert_eq!(list["executions"][0]["key"], "order-1001");
    let (_, none) = api.call(Method::GET, "/v1/executions?key=order-9&saga=order", None).await;
    assert_eq!(none["executions"], json!([]));
    assert_ne!(other["id"], first["id"]);

    for bad in ["", &"k".repeat(257)] {
        let resp = trigger(bad, None).await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{bad:?}");
        assert_eq!(code(&resp.json().await.unwrap()), "bad_request");
    }
    let (status, body) = api.call(Method::GET, &format!("/v1/executions?key={}", "k".repeat(257)), None).await;
    assert_eq!((status, code(&body)), (400, "bad_request"));

    assert!(host.terminate().success());
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    let (_, list) = api.call(Method::GET, "/v1/executions?key=order-1001", None).await;
    assert_eq!(list["executions"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(api.execution(id).await["key"], "order-1001");
}
