//! A stream made undecodable on purpose: the host sets the execution aside once (failed in
//! listings, in the quarantine list and metrics, one log line) and answers for it with a JSON
//! error naming the problem, instead of retrying it every 500 ms and answering 500.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::*;

/// Overwrites the newest stored write of execution `id`'s stream with bytes that are not JSON.
fn corrupt_last_write(dir: &std::path::Path, id: &str) {
    let db = sled::open(dir).expect("open the store while no host runs");
    let uuid: uuid::Uuid = id.parse().unwrap();
    // Event keys are `e ‖ id ‖ seq` (host/src/store/keys.rs).
    let prefix = [&[b'e'][..], uuid.as_bytes()].concat();
    let (last, _) = db.scan_prefix(&prefix).last().expect("the stream has events").unwrap();
    db.insert(last, &b"{\"seq\": not json"[..]).unwrap();
    db.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_stream_is_quarantined_once_and_answered_with_a_json_error() {
    let (_tmp, dir) = data_dir();
    let mut host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    let retry = json!({"retry": {"max_attempts": 5, "initial_backoff_ms": 600000}});
    api.put_saga("waits", &testkit_saga(&["a"], retry)).await;
    let id = api.trigger("waits", &json!({"behaviors": {"a": "retryable"}}), None).await;
    api.wait_for(&id, Duration::from_secs(30), |e| {
        e["steps"][0]["attempts"] == 1 && e["steps"][0]["error"].is_object()
    })
    .await;
    host.terminate();

    corrupt_last_write(&dir, &id);
    let log_before = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default().lines().count();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    // Recovery finds it at once; give a retry loop time to show itself (it used to log every 500 ms).
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    for path in [format!("/v1/executions/{id}"), format!("/v1/executions/{id}/events")] {
        let (status, body) = api.call(Method::GET, &path, None).await;
        assert_eq!(status, 409, "{path}: {body}");
        assert_eq!(body["error"]["code"], "execution_quarantined", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&id) && message.contains("corrupt"), "{message}");
    }
    let (status, body) = api.call(Method::POST, &format!("/v1/executions/{id}/cancel"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("execution_quarantined")), "{body}");

    let (status, listed) = api.call(Method::GET, "/v1/executions?status=failed", None).await;
    assert_eq!(status, 200);
    assert!(listed["executions"].as_array().unwrap().iter().any(|e| e["id"] == id.as_str()), "{listed}");
    let (status, quarantine) = api.call(Method::GET, "/v1/quarantine", None).await;
    assert_eq!(status, 200, "{quarantine}");
    let entries = quarantine["executions"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{quarantine}");
    assert_eq!(entries[0]["id"], id.as_str());
    assert!(entries[0]["reason"].as_str().unwrap().contains("corrupt"), "{quarantine}");
    let (_, metrics) = api.call(Method::GET, "/metrics", None).await;
    assert!(metrics.as_str().unwrap().contains("sagahost_quarantined_executions 1"), "{metrics}");

    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
    let new_lines: Vec<&str> = log.lines().skip(log_before).filter(|l| l.contains(&id)).collect();
    let errors: Vec<&&str> = new_lines.iter().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line for the execution:\n{}", new_lines.join("\n"));
    assert!(errors[0].contains("quarantined"), "{}", errors[0]);
    assert!(!log.contains("retrying"), "no retry loop:\n{log}");
}
