//! The guest SDK's HTTP client (`saga_guest::http`, docs/plugins.md "The guest SDK") through the
//! testkit's `sdk_http:` behaviour, against a JSON server on 127.0.0.1: a round trip, a 503 the
//! step's retry policy retries, a 404 that fails the step once, for good, and a slow server, a
//! 429 and a closed port, retried until the policy gives up. Then `sagahost new-plugin --http`'s
//! crate, built as its author would, against a small charges API.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, post};
use serde_json::{Value, json};

use crate::harness::{Api, HostProcess, data_dir, wasm};

/// `/echo` answers what it received; `/busy` 503 twice, then like `/echo`; `/missing` 404;
/// `/throttled` 429; `/slow` answers after 2 s.
async fn upstream() -> String {
    let busy = Arc::new(AtomicU32::new(0));
    let echo = |headers: HeaderMap, body: String| async move {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let received: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        axum::Json(json!({
            "received": received,
            "content_type": header("content-type"),
            "x_testkit": header("x-testkit"),
            "idempotency_key": header("idempotency-key"),
        }))
    };
    let app = Router::new()
        .route("/echo", post(echo))
        .route(
            "/busy",
            post(move |headers: HeaderMap, body: String| {
                let n = busy.fetch_add(1, Ordering::SeqCst);
                async move {
                    use axum::response::IntoResponse;
                    if n < 2 {
                        (StatusCode::SERVICE_UNAVAILABLE, "upstream   busy\n try later").into_response()
                    } else {
                        echo(headers, body).await.into_response()
                    }
                }
            }),
        )
        .route("/missing", post(|| async { (StatusCode::NOT_FOUND, "no such order") }))
        .route("/throttled", post(|| async { (StatusCode::TOO_MANY_REQUESTS, "slow down") }))
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                "{}"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://127.0.0.1:{port}")
}

/// Runs the one-step saga `name` calling `base` + `path`; answers the execution and its events.
async fn run(api: &Api, name: &str, base: &str, path: &str) -> (Value, Vec<Value>) {
    run_with(api, name, base, path, json!({})).await
}

/// [`run`] with more fields in the input.
async fn run_with(api: &Api, name: &str, base: &str, path: &str, mut input: Value) -> (Value, Vec<Value>) {
    let definition = json!({"steps": [{
        "name": "call", "plugin": "testkit@1.0.0", "timeout_ms": 10000, "allow_http": [base],
        "retry": {"max_attempts": 3, "initial_backoff_ms": 50}
    }]});
    api.put_saga(name, &definition).await;
    input["behaviors"] = json!({"call": format!("sdk_http:{base}{path}")});
    let id = api.trigger(name, &input, None).await;
    let exec = api.wait_terminal(&id).await;
    let events = api.events(&id).await;
    (exec, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_client_round_trips_json_retries_a_503_and_gives_up_on_a_404() {
    let base = upstream().await;
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;

    // 200: the JSON body went out with its content type and our header, and came back decoded.
    let (exec, _) = run(&api, "echo", &base, "/echo").await;
    assert_eq!(exec["status"], "completed", "{exec}");
    let api_answer = &exec["steps"][0]["result"]["api"];
    assert_eq!(api_answer["received"], json!({"step": "call", "attempt": 1}), "{exec}");
    assert_eq!(api_answer["content_type"], "application/json");
    assert_eq!(api_answer["x_testkit"], "sdk");
    assert!(api_answer["idempotency_key"].as_str().is_some_and(|k| k.ends_with("/call")), "{exec}");

    // 503 twice: retryable, with the status and a one-line excerpt; the third attempt succeeds.
    let (exec, events) = run(&api, "busy", &base, "/busy").await;
    assert_eq!(exec["status"], "completed", "{exec}");
    assert_eq!(exec["steps"][0]["attempts"], 3, "{exec}");
    assert_eq!(exec["steps"][0]["result"]["api"]["received"]["attempt"], 3, "{exec}");
    let failures: Vec<&Value> = events.iter().filter(|e| e["type"] == "step_failed").collect();
    assert_eq!(failures.len(), 2, "{events:?}");
    for f in failures {
        assert_eq!(f["error"]["kind"], "retryable", "{f}");
        let message = f["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("POST {base}/busy answered 503: upstream busy try later")), "{message}");
    }

    // 404: permanent, tried once.
    let (exec, _) = run(&api, "missing", &base, "/missing").await;
    assert_ne!(exec["status"], "completed", "{exec}");
    let step = &exec["steps"][0];
    assert_eq!(step["attempts"], 1, "a 404 is not retried: {exec}");
    assert_eq!(step["error"]["kind"], "permanent", "{exec}");
    let message = step["error"]["message"].as_str().unwrap();
    assert!(message.contains("answered 404: no such order"), "{message}");
}

/// Runs `path` and asserts the step failed retryable on all 3 attempts; answers the last message.
async fn retried_to_the_end(api: &Api, name: &str, base: &str, path: &str, input: Value) -> String {
    let (exec, events) = run_with(api, name, base, path, input).await;
    assert_ne!(exec["status"], "completed", "{exec}");
    assert_eq!(exec["steps"][0]["attempts"], 3, "{exec}");
    let failures: Vec<&Value> = events.iter().filter(|e| e["type"] == "step_failed").collect();
    assert_eq!(failures.len(), 3, "{events:?}");
    assert!(failures.iter().all(|f| f["error"]["kind"] == "retryable"), "{failures:?}");
    failures[2]["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_a_client_timeout_and_a_closed_port_are_retryable() {
    let base = upstream().await;
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;

    let message = retried_to_the_end(&api, "throttled", &base, "/throttled", json!({})).await;
    assert!(message.contains("answered 429: slow down"), "{message}");

    // The SDK's own timeout (200 ms) ends the request before the host's per-request limit (10 s).
    let input = json!({"sdk_http_timeout_ms": {"call": 200}});
    let message = retried_to_the_end(&api, "slow", &base, "/slow", input).await;
    assert!(message.contains("timed out") && message.contains("200 ms"), "{message}");

    // Nothing listens on a port just freed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let message = retried_to_the_end(&api, "closed", &closed, "/nothing", json!({})).await;
    assert!(message.contains("HTTP request failed") && message.contains("/nothing"), "{message}");
}

/// Scaffolds `new-plugin --http` as `name` in `dir` and builds it like an outside author would
/// (the project's plugin target dir and lock file, so no dependency is compiled or chosen anew).
fn build_http_template(name: &str, dir: &Path) -> Vec<u8> {
    sagahost::cli::new_plugin(name, dir, &sagahost::cli::default_sdk_path(), sagahost::cli::Template::Http).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let target_dir = Path::new(env!("SAGAHOST_PLUGIN_DIR")).ancestors().nth(2).unwrap().to_path_buf();
    let out = Command::new(env!("CARGO"))
        .current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(target_dir.join(format!("wasm32-wasip2/release/{name}.wasm"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_template_charges_and_its_compensation_takes_a_404_as_undone() {
    let tmp = tempfile::tempdir().unwrap();
    let charger = build_http_template("charger", &tmp.path().join("charger"));

    // The charges API: POST /charges answers an id; the charge is already gone when deleted.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (on_post, on_delete) = (seen.clone(), seen.clone());
    let app = Router::new()
        .route(
            "/charges",
            post(move |body: String| async move {
                on_post.lock().unwrap().push(format!("POST {body}"));
                axum::Json(json!({"id": "ch_1", "status": "captured"}))
            }),
        )
        .route(
            "/charges/{id}",
            delete(move |UrlPath(id): UrlPath<String>| async move {
                on_delete.lock().unwrap().push(format!("DELETE {id}"));
                StatusCode::NOT_FOUND
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("charger", charger).await;
    api.put_plugin("testkit", wasm("testkit")).await;
    let def = json!({"steps": [
        {"name": "charge", "plugin": "charger@1.0.0", "allow_http": [base]},
        {"name": "ship", "plugin": "testkit@1.0.0", "compensation": null}
    ]});
    api.put_saga("charge", &def).await;

    let id = api.trigger("charge", &json!({"amount": 42, "api": base}), None).await;
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "completed", "{exec}");
    assert_eq!(exec["steps"][0]["result"], json!({"charge_id": "ch_1", "state": "CHARGED"}));
    let posted = seen.lock().unwrap()[0].clone();
    assert!(posted.contains(r#""amount":42"#) && posted.contains(&format!("{id}/charge")), "{posted}");

    // A later step fails: the compensation's DELETE answers 404, which the template takes as undone.
    let input = json!({"amount": 7, "api": base, "behaviors": {"ship": "permanent"}});
    let id = api.trigger("charge", &input, None).await;
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "compensated", "{exec}");
    assert_eq!(exec["steps"][0]["compensation"]["result"]["state"], "REFUNDED", "{exec}");
    assert_eq!(seen.lock().unwrap().last().unwrap(), "DELETE ch_1");
}
