//! Retention through the real binary: ended executions go once their retention has passed
//! (archived first), a saga's own retention keeps its executions longer, idempotency keys are
//! forgotten after their window, and `sagahost export` writes the archive's format.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, HostProcess, data_dir, testkit_saga, wasm};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The NDJSON lines of `text`, each parsed.
fn lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

/// `(execution, seq)` of each line.
fn ids(lines: &[Value]) -> Vec<(String, u64)> {
    lines.iter().map(|l| (l["execution"].as_str().unwrap().to_owned(), l["seq"].as_u64().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_executions_are_archived_then_removed_and_keys_forgotten_after_their_window() {
    let (tmp, dir) = data_dir();
    let archive = tmp.path().join("archive");
    let archive_arg = archive.to_str().unwrap();
    let host = HostProcess::start(&dir, &["--retain", "3s", "--idempotency-window", "4s", "--archive", archive_arg]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("brief", &testkit_saga(&["a", "b"], json!({}))).await;
    let mut kept = testkit_saga(&["a"], json!({}));
    kept["retain_ms"] = json!(3_600_000);
    api.put_saga("kept", &kept).await;

    let started = Instant::now();
    let brief = api.trigger("brief", &json!({"n": 1}), Some("once")).await;
    let long = api.trigger("kept", &json!({}), None).await;
    let running = api.trigger("brief", &json!({"behaviors": {"b": "sleep:9000"}}), None).await;
    for id in [&brief, &long] {
        assert_eq!(api.wait_terminal(id).await["status"], "completed");
    }
    let brief_events = api.events(&brief).await;

    // Export before retention: both ended executions, in the order they ended.
    let out = tmp.path().join("export.ndjson");
    let export = Command::new(env!("CARGO_BIN_EXE_sagahost"))
        .args(["export", "--url", &host.url, "--before", &now_ms().to_string(), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let exported = lines(&std::fs::read_to_string(&out).unwrap());
    let exported_ids = ids(&exported);
    assert!(exported_ids.contains(&(brief.clone(), 1)) && exported_ids.contains(&(long.clone(), 1)));
    assert!(!exported_ids.iter().any(|(id, _)| *id == running), "unfinished executions are not exported");
    let first = exported.iter().find(|l| l["execution"] == brief.as_str()).unwrap();
    assert_eq!((first["saga"].as_str(), first["type"].as_str()), (Some("brief"), Some("execution_started")));
    assert_eq!(first["input"], json!({"n": 1}));

    // Retention: `brief` goes (3 s), `kept` (1 h) and the running one stay.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = api.call(Method::GET, &format!("/v1/executions/{brief}"), None).await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "not removed in 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = api.call(Method::GET, &format!("/v1/executions/{brief}/events"), None).await;
    assert_eq!(status, 404);
    assert_eq!(api.execution(&long).await["status"], "completed");
    let (_, list) = api.call(Method::GET, "/v1/executions?saga=brief", None).await;
    let listed: Vec<_> = list["executions"].as_array().unwrap().iter().map(|e| e["id"].clone()).collect();
    assert!(!listed.contains(&json!(brief)), "{list}");

    // Archived first, event for event as the API showed them.
    let files: Vec<_> = std::fs::read_dir(&archive).unwrap().flatten().map(|e| e.path()).collect();
    assert!(files.iter().all(|f| f.extension().is_some_and(|x| x == "ndjson")), "{files:?}");
    let archived: Vec<Value> = files.iter().flat_map(|f| lines(&std::fs::read_to_string(f).unwrap())).collect();
    let of_brief: Vec<_> = archived.iter().filter(|l| l["execution"] == brief.as_str()).collect();
    assert_eq!(of_brief.len(), brief_events.len());
    for (line, event) in of_brief.iter().zip(&brief_events) {
        let mut line = (*line).clone();
        let fields = line.as_object_mut().unwrap();
        assert_eq!(fields.remove("execution"), Some(json!(brief)));
        assert_eq!(fields.get("saga"), Some(&json!("brief")));
        if event.get("saga").is_none() {
            fields.remove("saga");
        }
        assert_eq!(&line, event);
    }
    assert!(!archived.iter().any(|l| l["execution"] == long.as_str()));

    // The key's window (4 s from the start) has passed by now or soon: the same key starts anew.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(started.elapsed())).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let again = api.trigger("brief", &json!({"n": 1}), Some("once")).await;
        if again != brief {
            break;
        }
        assert!(Instant::now() < deadline, "the key was not forgotten in 30 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, metrics) = api.call(Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(metrics.contains("sagahost_retention_removed_executions_total"), "{metrics}");
    assert!(metrics.contains("sagahost_retention_forgotten_keys_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_refuses_bad_queries_with_json_errors() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    for bad in [
        "",
        "?saga=s",
        "?before=",
        "?before=yesterday",
        "?before=99999999999999999999999",
        "?before=2026-02-30T00:00:00Z",
        "?before=1&saga=no%20spaces",
        "?before=1&limit=5",
        "?before=%FF%FE",
        "?before=1&before=2",
    ] {
        let (status, body) = api.call(Method::GET, &format!("/v1/export{bad}"), None).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{bad}: {body}");
    }
    let (status, body) = api.call(Method::GET, "/v1/export?before=2026-11-22T10:00:00Z", None).await;
    assert_eq!((status, body), (200, json!("")));
    let bad_cli = Command::new(env!("CARGO_BIN_EXE_sagahost"))
        .args(["export", "--url", &host.url, "--before", "tomorrow"])
        .output()
        .unwrap();
    assert!(!bad_cli.status.success());
    assert!(String::from_utf8_lossy(&bad_cli.stderr).contains("not a time"), "{bad_cli:?}");
}
