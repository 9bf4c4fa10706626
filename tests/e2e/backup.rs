//! Online backup through the real binary: `sagahost backup DIR` while triggers keep coming;
//! a host started on the copy reads every execution that had ended exactly as the original
//! has it, and resumes every one that had not.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{Api, HostProcess, data_dir, testkit_saga, wasm};

/// Every execution the host lists: `(id, status)`.
async fn all_executions(api: &Api) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = api.call(Method::GET, &format!("/v1/executions?limit=1000{after}"), None).await;
        assert_eq!(status, 200, "{page}");
        for e in page["executions"].as_array().unwrap() {
            out.push((e["id"].as_str().unwrap().to_owned(), e["status"].as_str().unwrap().to_owned()));
        }
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return out,
        }
    }
}

fn terminal(status: &str) -> bool {
    matches!(status, "completed" | "compensated" | "failed")
}

fn backup(url: &str, dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sagahost")).args(["backup", "--url", url]).arg(dir).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_reads_back_ended_executions_and_resumes_the_rest() {
    let (tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("s", &testkit_saga(&["a", "b", "c"], json!({}))).await;
    // Ended before the backup: all must be in it, as they are.
    let mut ended_before = Vec::new();
    for i in 0..20 {
        let behaviors = if i % 4 == 0 { json!({"c": "permanent"}) } else { json!({}) };
        ended_before.push(api.trigger("s", &json!({"i": i, "behaviors": behaviors}), None).await);
    }
    for id in &ended_before {
        api.wait_terminal(id).await;
    }
    // Unfinished during the backup: they sleep in their second step.
    for i in 0..5 {
        api.trigger("s", &json!({"slow": i, "behaviors": {"b": "sleep:3000"}}), None).await;
    }
    // Load while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (api, stop) = (api.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                api.trigger("s", &json!({"worker": worker, "n": n}), None).await;
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let copy = tmp.path().join("copy");
    let url = host.url.clone();
    let copy_dir = copy.clone();
    let out = tokio::task::spawn_blocking(move || backup(&url, &copy_dir)).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("records written"), "{out:?}");
    stop.store(true, Ordering::Relaxed);
    let mut triggered = 0;
    for l in load {
        triggered += l.await.unwrap();
    }
    assert!(triggered > 0, "load ran during the backup");

    // A second host on the copy (the original keeps running on its own directory).
    let restored = HostProcess::start(&copy, &[]);
    let copy_api = Api::new(&restored.url);
    let in_copy = all_executions(&copy_api).await;
    let ids: Vec<&String> = in_copy.iter().map(|(id, _)| id).collect();
    for id in &ended_before {
        assert!(ids.contains(&id), "{id} ended before the backup and is missing from it");
    }
    let (mut ended, mut resumed) = (0, 0);
    for (id, status) in &in_copy {
        if terminal(status) {
            ended += 1;
            assert_eq!(copy_api.events(id).await, api.events(id).await, "{id} reads back differently");
        } else {
            resumed += 1;
            let done = copy_api.wait_terminal(id).await;
            assert!(terminal(done["status"].as_str().unwrap()), "{done}");
        }
    }
    assert!(resumed >= 5, "the sleeping executions were unfinished in the copy ({resumed} resumed, {ended} ended)");
    println!(
        "backup under load: {} executions in the copy ({ended} ended, {resumed} resumed), {triggered} triggered during it",
        in_copy.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_refuses_a_directory_that_is_not_empty_and_a_host_that_is_not_there() {
    let (tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let full = tmp.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("keep.txt"), "mine").unwrap();
    let out = backup(&host.url, &full);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"), "{out:?}");
    assert_eq!(std::fs::read_to_string(full.join("keep.txt")).unwrap(), "mine", "nothing of it was touched");
    let nowhere = tmp.path().join("nowhere");
    let out = backup("http://127.0.0.1:9", &nowhere);
    assert!(!out.status.success());
    assert!(!nowhere.exists(), "a failed backup leaves no directory behind");
    // The stream is binary and ends with its end record.
    let resp = reqwest::get(format!("{}/v1/backup", host.url)).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let body = resp.bytes().await.unwrap();
    assert!(body.starts_with(sagahost::store::backup::MAGIC));
    assert_eq!(body[body.len() - 41], b'E');
}
