//! The real `sagahost` binary as a child process on `127.0.0.1:0`, and a small HTTP client.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const PLUGIN_DIR: &str = env!("SAGAHOST_PLUGIN_DIR");

pub fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(format!("{PLUGIN_DIR}/{name}.wasm")).unwrap_or_else(|e| panic!("{name}.wasm: {e}"))
}

/// A host process serving a data directory.
pub struct HostProcess {
    child: Child,
    pub url: String,
}

impl HostProcess {
    /// Starts `sagahost serve` on a free loopback port and waits until it listens.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.with_extension("log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sagahost"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start sagahost");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("sagahost printed nothing").unwrap();
        let url = line
            .strip_prefix("sagahost listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self { child, url }
    }

    /// SIGTERM, then wait for the graceful shutdown to finish.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill -TERM");
        self.child.wait().unwrap()
    }

    /// SIGKILL: no shutdown, no flush, nothing graceful.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A data directory that outlives host processes.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    (tmp, dir)
}

/// The API, over HTTP.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(url: &str) -> Self {
        Self { url: url.to_owned(), http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap() }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn put_plugin(&self, name: &str, bytes: Vec<u8>) {
        let (status, body) = self.call(reqwest::Method::PUT, &format!("/v1/plugins/{name}/1.0.0"), Some(bytes)).await;
        assert!(status == 201 || status == 200, "upload {name}: {status} {body}");
    }

    pub async fn put_saga(&self, name: &str, definition: &Value) {
        let (status, body) = self
            .call(reqwest::Method::PUT, &format!("/v1/sagas/{name}"), Some(definition.to_string().into_bytes()))
            .await;
        assert!(status == 201 || status == 200, "define {name}: {status} {body}");
    }

    /// Triggers and returns the id.
    pub async fn trigger(&self, saga: &str, input: &Value, key: Option<&str>) -> String {
        let headers: Vec<_> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        self.trigger_with(saga, input, &headers).await
    }

    /// Starts an execution with these request headers (`Execution-Key`, ...): its id.
    pub async fn trigger_with(&self, saga: &str, input: &Value, headers: &[(&str, &str)]) -> String {
        let mut req = self.http.post(format!("{}/v1/sagas/{saga}/executions", self.url)).json(input);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }

    pub async fn execution(&self, id: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, &format!("/v1/executions/{id}"), None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let (status, body) = self.call(reqwest::Method::GET, &format!("/v1/executions/{id}/events"), None).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().unwrap().clone()
    }

    /// Polls until `done` holds for the execution, at most `timeout`.
    pub async fn wait_for(&self, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let exec = self.execution(id).await;
            if done(&exec) {
                return exec;
            }
            assert!(start.elapsed() < timeout, "timed out waiting on {id}: {exec}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_terminal(&self, id: &str) -> Value {
        self.wait_for(id, Duration::from_secs(60), |e| {
            matches!(e["status"].as_str(), Some("completed" | "compensated" | "failed"))
        })
        .await
    }
}

/// `type(step)` for every event, for readable order assertions.
pub fn trace(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["step"].as_str() {
            Some(s) => format!("{}({s})", e["type"].as_str().unwrap()),
            None => e["type"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// Steps of a compensation, in the order they completed.
pub fn compensated_steps(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "compensation_step_completed")
        .map(|e| e["step"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts `seq` runs 1, 2, 3, ... with no gap or repeat.
pub fn assert_gapless(events: &[Value]) {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
}

/// A saga of testkit steps named `steps`, with `extra` merged into every step.
pub fn testkit_saga(steps: &[&str], extra: Value) -> Value {
    let steps: Vec<Value> = steps
        .iter()
        .map(|name| {
            let mut s = json!({ "name": name, "plugin": "testkit@1.0.0", "timeout_ms": 5000 });
            if let (Some(obj), Some(more)) = (s.as_object_mut(), extra.as_object()) {
                obj.extend(more.clone());
            }
            s
        })
        .collect();
    json!({ "steps": steps })
}
