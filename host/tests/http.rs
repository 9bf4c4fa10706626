//! The runtime's outbound HTTP on the real `testkit` plugin against a server on 127.0.0.1:
//! the per-attempt count and body limits, and the record of every call, refused ones included.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::any;
use sagahost::domain::{FailureKind, HttpGrant, Side};
use sagahost::runtime::{Attempted, Call, HttpAccess, HttpLimits, Limits, PluginCache, Runtime};
use sagahost::store::MemoryStore;
use serde_json::{Value, json};

const PLUGIN_DIR: &str = env!("SAGAHOST_PLUGIN_DIR");

/// A server answering `/ok` with "hello", counting requests.
async fn server() -> (String, Arc<AtomicU32>) {
    let hits = Arc::new(AtomicU32::new(0));
    let counted = hits.clone();
    let app = Router::new().route(
        "/ok",
        any(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { "hello" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, hits)
}

async fn attempt(http: HttpLimits, grants: &[&str], input: Value) -> Attempted {
    let limits = Limits { max_instances: 4, http, ..Limits::default() };
    let cache = PluginCache::new(Runtime::new(limits).unwrap(), Arc::new(MemoryStore::new()));
    let r: sagahost::domain::PluginRef = "testkit@1.0.0".parse().unwrap();
    let bytes = std::fs::read(format!("{PLUGIN_DIR}/testkit.wasm")).unwrap();
    cache.upload(r.name.clone(), r.version.clone(), bytes, 0).await.unwrap();
    let pre = cache.get(&r).await.unwrap();
    let call = Call {
        side: Side::Execute,
        execution_id: "exec-1".into(),
        saga: "s".into(),
        step: "step".into(),
        attempt: 1,
        idempotency_key: "exec-1/step/execute".into(),
        deadline_unix_ms: 0,
        timeout: Duration::from_secs(10),
        input: json!({ "input": input, "results": {} }).to_string(),
        state: None,
        config: Default::default(),
        http: HttpAccess { grants: grants.iter().map(|g| HttpGrant::parse(g).unwrap()).collect(), traceparent: None },
    };
    cache.runtime().invoke_recorded(&pre, call).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_request_is_recorded() {
    let (base, hits) = server().await;
    let done =
        attempt(HttpLimits::default(), &[&base], json!({"behaviors": {"step": format!("http:GET:{base}/ok?q=1")}}))
            .await;
    let out: Value = serde_json::from_str(&done.result.expect("granted").output).unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], "hello");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let [call] = done.http.as_slice() else { panic!("{:?}", done.http) };
    assert_eq!((call.method.as_str(), call.path.as_str(), call.status), ("GET", "/ok", Some(200)));
    assert_eq!(call.response_bytes, 5);
    assert_eq!(call.error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_count_limit_fail_the_attempt() {
    let (base, hits) = server().await;
    let limits = HttpLimits { max_requests: 2, ..HttpLimits::default() };
    let input = json!({"behaviors": {"step": format!("http:GET:{base}/ok")}, "http_repeat": {"step": 3}});
    let done = attempt(limits, &[&base], input).await;
    let failure = done.result.expect_err("third request is over the limit");
    assert_eq!(failure.kind, FailureKind::Limit);
    assert!(failure.message.contains("request limit of 2 per attempt"), "{}", failure.message);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(done.http.len(), 3);
    assert!(done.http[2].error.is_some() && done.http[2].status.is_none(), "{:?}", done.http[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_past_the_limit_fails_the_attempt() {
    let (base, _hits) = server().await;
    let limits = HttpLimits { max_request_body_bytes: 16, ..HttpLimits::default() };
    let input = json!({"behaviors": {"step": format!("http:POST:{base}/ok")}, "http_body": {"step": "x".repeat(1000)}});
    let failure = attempt(limits, &[&base], input).await.result.expect_err("body too large");
    assert_eq!(failure.kind, FailureKind::Limit);
    assert!(failure.message.contains("larger than the limit of 16 bytes"), "{}", failure.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_grants_nothing_is_reachable() {
    let (base, hits) = server().await;
    let done = attempt(HttpLimits::default(), &[], json!({"behaviors": {"step": format!("http:GET:{base}/ok")}})).await;
    let failure = done.result.expect_err("no grant");
    assert_eq!(failure.kind, FailureKind::Permission);
    assert!(failure.message.contains(&format!("{base}/ok")), "{}", failure.message);
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert_eq!(done.http.len(), 1);
}
