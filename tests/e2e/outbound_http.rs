//! Outbound HTTP from plugins (docs/plugins.md, "Outbound HTTP") against a small server on
//! 127.0.0.1 started by each test, which records every request it receives: grants, refusals
//! before connecting, per-request limits, the idempotency key across retries and across a
//! kill -9 of the host, and the record of each call in the events, the execution view and
//! /metrics.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::any;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, HostProcess, assert_gapless, data_dir, trace, wasm};

type Seen = Arc<Mutex<Vec<Value>>>;

/// A test server: `/ok`, `/flaky` (503 twice, then 200), `/slow` (3 s), `/huge` (1 MiB),
/// `/hold` (the first request is held for 60 s, the others answered at once). A request is
/// recorded as it arrives, before it is answered.
struct Upstream {
    base: String,
    port: u16,
    seen: Seen,
}

impl Upstream {
    async fn start() -> Self {
        let seen: Seen = Arc::default();
        let flaky = Arc::new(AtomicU32::new(0));
        let held = Arc::new(AtomicU32::new(0));
        let app = Router::new()
            .route("/ok", any(|| async { "hello" }))
            .route(
                "/flaky",
                any(move || {
                    let n = flaky.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n < 2 { (StatusCode::SERVICE_UNAVAILABLE, "busy") } else { (StatusCode::OK, "finally") }
                    }
                }),
            )
            .route(
                "/slow",
                any(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "late"
                }),
            )
            .route("/huge", any(|| async { "x".repeat(1 << 20) }))
            .route(
                "/redirect",
                any(|axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                    (StatusCode::FOUND, [("location", q.get("to").cloned().unwrap_or_default())], "moved")
                }),
            )
            .route(
                "/hold",
                any(move || {
                    let first = held.fetch_add(1, Ordering::SeqCst) == 0;
                    async move {
                        if first {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        "released"
                    }
                }),
            )
            .layer(middleware::from_fn_with_state(seen.clone(), record));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base: format!("http://127.0.0.1:{port}"), port, seen }
    }

    fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived (at most 10 s).
    async fn wait_for_requests(&self, n: usize) {
        let start = std::time::Instant::now();
        while self.seen().len() < n {
            assert!(start.elapsed() < Duration::from_secs(10), "only {:?} arrived", self.seen());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn record(State(seen): State<Seen>, req: Request, next: Next) -> Response {
    // In a block: a borrow of the request (whose body is not `Sync`) must not live across the await.
    {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let entry = json!({
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "idempotency_key": header("idempotency-key"),
            "traceparent": header("traceparent"),
        });
        seen.lock().unwrap().push(entry);
    }
    next.run(req).await
}

async fn host(flags: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, HostProcess, Api) {
    let (tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, flags);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    (tmp, dir, host, api)
}

/// A one-step saga `call` granted `grants`, with a quick retry policy.
fn one_step(grants: &[String]) -> Value {
    json!({"steps": [{
        "name": "call", "plugin": "testkit@1.0.0", "timeout_ms": 10000, "allow_http": grants,
        "retry": {"max_attempts": 3, "initial_backoff_ms": 50}
    }]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_call_succeeds_carries_the_idempotency_key_and_a_503_is_retried() {
    let up = Upstream::start().await;
    let (_tmp, _dir, _host, api) = host(&[]).await;
    api.put_saga("pay", &one_step(std::slice::from_ref(&up.base))).await;
    let id = api
        .trigger("pay", &json!({"behaviors": {"call": format!("http:POST:{}/flaky?secret=1", up.base)}}), None)
        .await;
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "completed", "{exec}");
    let step = &exec["steps"][0];
    assert_eq!(step["attempts"], 3, "two 503s, then 200: {exec}");
    assert_eq!(step["result"]["status"], 200);
    assert_eq!(step["result"]["body"], "finally");

    // The server saw the same key on every attempt, and a W3C traceparent.
    let seen = up.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let key = format!("{id}/call");
    for s in &seen {
        assert_eq!(s["method"], "POST");
        assert_eq!(s["idempotency_key"], key.as_str(), "{s}");
        let tp = s["traceparent"].as_str().unwrap_or_else(|| panic!("no traceparent: {s}"));
        assert!(tp.starts_with("00-") && tp.len() == 55, "{tp}");
    }

    // Each attempt's outcome event records its request, without the query string.
    let events = api.events(&id).await;
    let outcomes: Vec<&Value> =
        events.iter().filter(|e| e["type"] == "step_failed" || e["type"] == "step_completed").collect();
    assert_eq!(outcomes.len(), 3);
    let host_port = format!("127.0.0.1:{}", up.port);
    for (e, status) in outcomes.iter().zip([503, 503, 200]) {
        let calls = e["http"].as_array().unwrap_or_else(|| panic!("no http field: {e}"));
        assert_eq!(calls.len(), 1, "{e}");
        let c = &calls[0];
        assert_eq!((c["method"].as_str(), c["scheme"].as_str()), (Some("POST"), Some("http")));
        assert_eq!(c["host"], host_port.as_str());
        assert_eq!(c["path"], "/flaky");
        assert_eq!(c["status"], status);
        assert!(c["response_bytes"].as_u64().unwrap() > 0, "{c}");
    }
    assert_eq!(outcomes[0]["error"]["kind"], "retryable");
    assert_eq!(step["execute"]["http"][0]["status"], 200, "the view shows the last attempt's calls");
    assert!(events.iter().filter(|e| e["type"] == "step_started").all(|e| e.get("http").is_none()));

    let (_, metrics) = api.call(Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    for line in [
        format!("sagahost_http_requests_total{{host=\"{host_port}\",status=\"503\"}} 2"),
        format!("sagahost_http_requests_total{{host=\"{host_port}\",status=\"200\"}} 1"),
    ] {
        assert!(metrics.contains(&line), "{line} not in metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_may_set_its_own_idempotency_key() {
    let up = Upstream::start().await;
    let (_tmp, _dir, _host, api) = host(&[]).await;
    api.put_saga("own", &one_step(std::slice::from_ref(&up.base))).await;
    let input = json!({
        "behaviors": {"call": format!("http:GET:{}/ok", up.base)},
        "http_headers": {"call": {"Idempotency-Key": "mine", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
    });
    let id = api.trigger("own", &input, None).await;
    assert_eq!(api.wait_terminal(&id).await["status"], "completed");
    let seen = up.seen();
    assert_eq!(seen[0]["idempotency_key"], "mine");
    assert_eq!(seen[0]["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
}

/// A granted server redirects to one that is not granted: the host follows no redirect (the
/// plugin gets the 302), and a plugin that follows it itself is refused before connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_an_ungranted_origin_is_not_followed_and_following_it_is_refused() {
    let (granted, elsewhere) = (Upstream::start().await, Upstream::start().await);
    let (_tmp, _dir, _host, api) = host(&[]).await;
    api.put_saga("redirected", &one_step(std::slice::from_ref(&granted.base))).await;
    let target = format!("{}/ok", elsewhere.base);
    let input = json!({"behaviors": {"call": format!("http:GET:{}/redirect?to={target}", granted.base)}});
    let id = api.trigger("redirected", &input, None).await;
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "completed", "{exec}");
    let result = &exec["steps"][0]["result"];
    assert_eq!((result["status"].as_u64(), result["headers"]["location"].as_str()), (Some(302), Some(target.as_str())));
    assert_eq!(granted.seen().len(), 1);

    let step = refused(&api, "follows", std::slice::from_ref(&granted.base), &target).await;
    assert_eq!(step["error"]["kind"], "permission", "{step}");
    assert!(elsewhere.seen().is_empty(), "the redirect target saw a request: {:?}", elsewhere.seen());
}

/// Runs `url` under `grants` and returns the failed step; asserts it failed once, not retried.
async fn refused(api: &Api, saga: &str, grants: &[String], url: &str) -> Value {
    api.put_saga(saga, &one_step(grants)).await;
    let id = api.trigger(saga, &json!({"behaviors": {"call": format!("http:GET:{url}")}}), None).await;
    let exec = api.wait_terminal(&id).await;
    assert_ne!(exec["status"], "completed", "{exec}");
    let step = exec["steps"][0].clone();
    assert_eq!(step["attempts"], 1, "a permission failure is not retried: {exec}");
    let events = api.events(&id).await;
    let failed = events.iter().find(|e| e["type"] == "step_failed").unwrap();
    assert!(failed["http"][0]["error"].is_string(), "{failed}");
    step
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_origins_and_names_of_private_addresses_are_refused_before_connecting() {
    let up = Upstream::start().await;
    let (_tmp, dir, _host, api) = host(&[]).await;
    let by_ip = format!("http://127.0.0.1:{}", up.port);
    let by_name = format!("http://localhost:{}", up.port);

    // Not granted at all: another port of the same address.
    let step = refused(&api, "other-port", std::slice::from_ref(&by_ip), "http://127.0.0.1:1/ok").await;
    assert_eq!(step["error"]["kind"], "permission");
    let message = step["error"]["message"].as_str().unwrap();
    assert!(message.contains("http://127.0.0.1:1/ok") && message.contains("allow_http"), "{message}");

    // Granted by name, but the name resolves to loopback, which only a literal grant reaches.
    let step = refused(&api, "by-name", std::slice::from_ref(&by_name), &format!("{by_name}/ok")).await;
    assert_eq!(step["error"]["kind"], "permission");
    let message = step["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("{by_name}/ok")) && message.contains("loopback"), "{message}");

    assert!(up.seen().is_empty(), "the server saw a refused request: {:?}", up.seen());

    // The plugin itself got a wasi-http error code (testkit prints it on stderr).
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
    assert!(log.contains("HttpRequestDenied"), "no HttpRequestDenied in the host log");
    assert!(log.contains("DestinationIpProhibited"), "no DestinationIpProhibited in the host log");

    // The literal grant reaches the same server.
    api.put_saga("literal", &one_step(std::slice::from_ref(&by_ip))).await;
    let id = api.trigger("literal", &json!({"behaviors": {"call": format!("http:GET:{by_ip}/ok")}}), None).await;
    assert_eq!(api.wait_terminal(&id).await["status"], "completed");
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_hits_the_request_time_limit_and_a_huge_response_the_body_limit() {
    let up = Upstream::start().await;
    let (_tmp, _dir, _host, api) =
        host(&["--http-request-timeout-ms", "300", "--max-http-response-body-kib", "64"]).await;
    let grants = std::slice::from_ref(&up.base);

    let step = refused(&api, "slow", grants, &format!("{}/slow", up.base)).await;
    assert_eq!(step["error"]["kind"], "limit");
    assert!(step["error"]["message"].as_str().unwrap().contains("per-request time limit of 300 ms"), "{step}");

    let step = refused(&api, "huge", grants, &format!("{}/huge", up.base)).await;
    assert_eq!(step["error"]["kind"], "limit");
    assert!(step["error"]["message"].as_str().unwrap().contains("larger than the limit of 65536 bytes"), "{step}");
    assert_eq!(up.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_at_a_kill_is_made_again_after_restart_with_the_same_idempotency_key() {
    let up = Upstream::start().await;
    let (_tmp, dir, mut host, api) = host(&[]).await;
    let saga = json!({"steps": [{
        "name": "call", "plugin": "testkit@1.0.0", "timeout_ms": 30000, "allow_http": [up.base]
    }]});
    api.put_saga("held", &saga).await;
    let id = api.trigger("held", &json!({"behaviors": {"call": format!("http:POST:{}/hold", up.base)}}), None).await;
    // The first request has reached the server, which holds it: the attempt is in flight.
    up.wait_for_requests(1).await;
    let exec = api.execution(&id).await;
    assert_eq!(
        (exec["steps"][0]["status"].as_str(), exec["steps"][0]["attempts"].as_u64()),
        (Some("running"), Some(1))
    );
    host.kill();

    // Restarted on the same data directory, recovery runs the attempt again.
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    let exec = api.wait_terminal(&id).await;
    assert_eq!(exec["status"], "completed", "{exec}");
    assert_eq!(exec["steps"][0]["attempts"], 2, "the interrupted attempt ran again as attempt 2");
    assert_eq!(exec["steps"][0]["result"]["body"], "released");

    // The server saw the call twice, under the same key: it can tell the retry from a new call.
    let seen = up.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let key = format!("{id}/call");
    for s in &seen {
        assert_eq!((s["method"].as_str(), s["path"].as_str()), (Some("POST"), Some("/hold")));
        assert_eq!(s["idempotency_key"], key.as_str(), "{s}");
    }

    // The killed attempt left no outcome; the second's outcome records its call.
    let events = api.events(&id).await;
    assert_gapless(&events);
    let t = trace(&events);
    assert_eq!(t.iter().filter(|e| *e == "step_started(call)").count(), 2, "{t:?}");
    assert_eq!(t.iter().filter(|e| *e == "step_completed(call)").count(), 1, "{t:?}");
    let completed = events.iter().find(|e| e["type"] == "step_completed").unwrap();
    assert_eq!((completed["attempt"].as_u64(), completed["http"][0]["status"].as_u64()), (Some(2), Some(200)));
}
