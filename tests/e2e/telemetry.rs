//! Traces over OTLP/HTTP: a host started with `--otlp-endpoint` sends its execution and
//! attempt spans to the collector (here a minimal one that records what it receives).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use serde_json::json;

use crate::harness::{Api, HostProcess, data_dir, testkit_saga, wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_an_otlp_collector() {
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let sink = received.clone();
    let collector = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await.unwrap() });

    let (_tmp, dir) = data_dir();
    let mut host = HostProcess::start(&dir, &["--otlp-endpoint", &endpoint]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga("traced", &testkit_saga(&["a", "b"], json!({}))).await;
    let id = api.trigger("traced", &json!({}), None).await;
    assert_eq!(api.wait_terminal(&id).await["status"], "completed");
    // A graceful stop flushes the batched spans.
    assert!(host.terminate().success());

    let bodies = received.lock().unwrap().clone();
    assert!(!bodies.is_empty(), "the collector received nothing");
    let all: Vec<u8> = bodies.concat();
    let text = String::from_utf8_lossy(&all);
    for needle in ["sagahost", "execution", "attempt", id.as_str()] {
        assert!(text.contains(needle), "{needle:?} not in the exported spans");
    }
}
