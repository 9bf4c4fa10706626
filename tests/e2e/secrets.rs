//! Secrets (docs/secrets.md) on the real binary: a plugin that echoes its secret everywhere it
//! can (log, stdout, stderr, state, result, failure message, an outbound request's path) must
//! leave no trace of the value in the data directory, the host's log, the exported traces, any
//! API answer about the execution, or the metrics; the plugin really did read it (the upstream server saw it). At
//! rest the value is sealed with the key; a host without the key, or with another, refuses to
//! start.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::routing::any;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, HostProcess, data_dir, wasm};

/// The secret's value: distinctive, so that finding it anywhere is a leak.
const CANARY: &str = "sk_test_CanaryValue_7f3a9c0d42";
const KEY: &str = "3b1c5f0e9d2a4b6c8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";

/// (path, `x-leak` header) of each request an upstream received.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// An upstream that records the path and `x-leak` header of every request.
async fn upstream() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new().fallback(any(|State(seen): State<Seen>, req: Request| async move {
        let leak = req.headers().get("x-leak").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        seen.lock().unwrap().push((req.uri().path().to_owned(), leak));
        "ok"
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let app = app.with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

/// A minimal OTLP/HTTP collector: the raw bodies of the trace exports it receives.
async fn collector() -> (String, Arc<Mutex<Vec<u8>>>) {
    let received: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            sink.lock().unwrap().extend_from_slice(&body);
            async { "" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (endpoint, received)
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if std::fs::read(&path).unwrap().windows(needle.len()).any(|w| w == needle) {
            found.push(path.display().to_string());
        }
    }
    found
}

/// `sagahost serve` that is expected to refuse to start: its exit status and stderr.
fn refused_start(dir: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sagahost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_echoed_by_its_plugin_is_found_nowhere_in_clear() {
    let (tmp, dir) = data_dir();
    let key_file = tmp.path().join("secret.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let key_flag = ["--secret-key-file", key_file.to_str().unwrap()];
    let (otlp, traces) = collector().await;
    let mut host = HostProcess::start(&dir, &[&key_flag[..], &["--otlp-endpoint", &otlp]].concat());
    let api = Api::new(&host.url);
    let (base, seen) = upstream().await;
    api.put_plugin("testkit", wasm("testkit")).await;

    // Written, never read back.
    let put = |name: &str, value: &str| {
        let body = json!({ "value": value }).to_string().into_bytes();
        let (api, path) = (api.clone(), format!("/v1/secrets/{name}"));
        async move { api.call(Method::PUT, &path, Some(body)).await }
    };
    let (status, answer) = put("gateway_key", CANARY).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["encrypted"], true);
    let mut answers = vec![answer];

    let step = |behavior_step: &str| {
        json!({ "name": behavior_step, "plugin": "testkit@1.0.0", "timeout_ms": 10000,
                "secrets": ["gateway_key"], "allow_http": [base.clone()],
                "retry": { "max_attempts": 1 } })
    };
    api.put_saga("leaky", &json!({ "steps": [step("echo"), step("refuse")] })).await;
    let input = json!({
        "behaviors": { "echo": "leak:gateway_key", "refuse": "leak_fail:gateway_key" },
        "compensations": { "echo": "leak:gateway_key" },
        "leak_url": { "echo": format!("{base}/charge") },
    });
    let id = api.trigger("leaky", &input, None).await;
    let view = api.wait_terminal(&id).await;
    assert_eq!(view["status"], "compensated", "{view}");

    // The plugin had the value: the upstream saw it, in the path and the header, twice
    // (execute, then compensate).
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for (path, header) in &requests {
        assert_eq!(path, &format!("/charge/{CANARY}"));
        assert_eq!(header, CANARY);
    }
    // What the plugin echoed is there, redacted.
    let events = api.events(&id).await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(text.contains("the key is [REDACTED:gateway_key]."), "{text}");
    assert!(text.contains("refusing, the value is [REDACTED:gateway_key]"), "{text}");
    assert!(text.contains("/charge/[REDACTED:gateway_key]"), "{text}");

    for path in [
        format!("/v1/executions/{id}"),
        format!("/v1/executions/{id}/events"),
        "/v1/executions".to_owned(),
        "/v1/plugins/testkit/state".to_owned(),
        "/v1/secrets".to_owned(),
        "/v1/sagas/leaky".to_owned(),
        "/metrics".to_owned(),
    ] {
        answers.push(api.call(Method::GET, &path, None).await.1);
    }
    // A definition naming a secret that is not stored is refused, naming it.
    let (status, refused) = api
        .call(
            Method::PUT,
            "/v1/sagas/typo",
            Some(
                json!({ "steps": [{ "name": "a", "plugin": "testkit@1.0.0",
            "secrets": ["gateway_kye"] }] })
                .to_string()
                .into_bytes(),
            ),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.to_string().contains("gateway_kye"), "{refused}");
    // A malformed body is refused without quoting it.
    let (status, bad) = api
        .call(Method::PUT, "/v1/secrets/other", Some(format!("{{\"value\": 7, \"x\": \"{CANARY}\"}}").into_bytes()))
        .await;
    assert_eq!(status, 400, "{bad}");
    answers.extend([refused, bad]);
    for answer in &answers {
        assert!(!answer.to_string().contains(CANARY), "an API answer holds the value: {answer}");
    }
    let state = &answers[4];
    assert!(state.to_string().contains("[REDACTED:gateway_key]"), "{state}");

    // A graceful stop flushes the batched spans.
    assert!(host.terminate().success());
    let traces = traces.lock().unwrap().clone();
    assert!(traces.windows(7).any(|w| w == b"attempt"), "the collector received the attempt spans");
    assert!(!traces.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()), "a trace holds the value");
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
    assert!(log.contains("the value is [REDACTED:gateway_key]"), "the plugin's log line is there, redacted");
    assert!(log.contains("stderr says [REDACTED:gateway_key]"));
    assert!(!log.contains(CANARY), "the host's log holds the value");
    assert_eq!(files_holding(&dir, CANARY.as_bytes()), Vec::<String>::new(), "files holding the value");

    // Sealed at rest: without the key, or with another, the host refuses to start.
    let (started, stderr) = refused_start(&dir, &[]);
    assert!(!started && stderr.contains("gateway_key") && stderr.contains("no key"), "{stderr}");
    let other = KEY.replace("2d", "00");
    let (started, stderr) = refused_start(&dir, &["--secret-key", &other]);
    assert!(!started && stderr.contains("does not open with this host's key"), "{stderr}");
    assert!(!stderr.contains(KEY) && !stderr.contains(&other));
    let (started, stderr) = refused_start(&dir, &["--secret-key", "not-a-key"]);
    assert!(!started && stderr.contains("64 hexadecimal characters") && !stderr.contains("not-a-key"), "{stderr}");

    // With the key, everything is readable again.
    let host = HostProcess::start(&dir, &key_flag);
    let api = Api::new(&host.url);
    assert_eq!(api.execution(&id).await["status"], "compensated");
    let (_, list) = api.call(Method::GET, "/v1/secrets", None).await;
    assert_eq!(list["secrets"][0]["name"], "gateway_key");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stored_in_clear_are_sealed_once_the_host_has_a_key() {
    let (_tmp, dir) = data_dir();
    let mut host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    let body = json!({ "value": CANARY }).to_string().into_bytes();
    let (status, answer) = api.call(Method::PUT, "/v1/secrets/token", Some(body)).await;
    assert_eq!((status, &answer["encrypted"]), (201, &json!(false)), "{answer}");
    assert!(host.terminate().success());
    assert!(!files_holding(&dir, CANARY.as_bytes()).is_empty(), "without a key the value is in clear (documented)");

    let mut host = HostProcess::start(&dir, &["--secret-key", KEY]);
    let api = Api::new(&host.url);
    let (_, list) = api.call(Method::GET, "/v1/secrets", None).await;
    assert_eq!(list["secrets"][0]["encrypted"], true, "{list}");
    assert!(host.terminate().success());
    // sled rewrites a key's value in new log segments; the old one is gone once compacted, which
    // this test does not wait for: it checks what the host answers, and docs/secrets.md says so.
    let (status, body) = refused_start(&dir, &[]);
    assert!(!status && body.contains("token"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_routes_need_the_admin_token_and_refuse_bad_input() {
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &["--admin-token", "adm1n", "--client-token", "cl1ent"]);
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", host.url);
    let put = |token: &str, name: &str, body: String| {
        http.put(url(&format!("/v1/secrets/{name}"))).bearer_auth(token).body(body).send()
    };
    let good = json!({ "value": "a-good-long-value" }).to_string();
    assert_eq!(put("cl1ent", "k", good.clone()).await.unwrap().status(), 401);
    assert_eq!(http.get(url("/v1/secrets")).bearer_auth("cl1ent").send().await.unwrap().status(), 401);
    assert_eq!(put("adm1n", "k", good.clone()).await.unwrap().status(), 201);
    assert_eq!(put("adm1n", "k", good.clone()).await.unwrap().status(), 200);
    for (name, body, status) in [
        ("bad%20name", good.clone(), 400),
        (&"n".repeat(129), good.clone(), 400),
        ("k", json!({ "value": "short" }).to_string(), 400),
        ("k", json!({ "value": "v".repeat(16 * 1024 + 1) }).to_string(), 400),
        ("k", json!({ "value": "a-good-long-value", "extra": 1 }).to_string(), 400),
        ("k", "[]".into(), 400),
        ("k", "{".into(), 400),
        ("k", format!("{}{}{}", "[".repeat(10_000), 1, "]".repeat(10_000)), 400),
    ] {
        let resp = put("adm1n", name, body).await.unwrap();
        assert_eq!(resp.status(), status, "{name}");
        let error: Value = resp.json().await.unwrap();
        assert!(error["error"]["code"].is_string(), "{error}");
    }
    let resp =
        http.put(url("/v1/secrets/k")).bearer_auth("adm1n").header("content-type", "text/plain").body(good).send();
    assert_eq!(resp.await.unwrap().status(), 415);
    let delete = |name: &str| http.delete(url(&format!("/v1/secrets/{name}"))).bearer_auth("adm1n").send();
    assert_eq!(delete("k").await.unwrap().status(), 204);
    assert_eq!(delete("k").await.unwrap().status(), 404);
}

#[test]
fn a_client_token_without_an_admin_token_is_refused() {
    let (_tmp, dir) = data_dir();
    let (started, stderr) = refused_start(&dir, &["--client-token", "cl1ent"]);
    assert!(!started && stderr.contains("no admin token"), "{stderr}");
}
