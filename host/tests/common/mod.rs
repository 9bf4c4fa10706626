//! What the router tests share: the router over a [`MemoryStore`] with real plugins, and one
//! request at a time through `Router::oneshot` (no socket).
#![allow(dead_code)] // each test binary uses a part of it

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use sagahost::api::{ApiConfig, AppState, router};
use sagahost::clock::SystemClock;
use sagahost::orchestrator::{Orchestrator, OrchestratorConfig};
use sagahost::runtime::{Limits, PluginCache, Runtime};
use sagahost::store::{MemoryStore, Store};
use serde_json::Value;
use tower::ServiceExt;

const PLUGIN_DIR: &str = env!("SAGAHOST_PLUGIN_DIR");

/// The bytes of a plugin built by host/build.rs.
pub fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(format!("{PLUGIN_DIR}/{name}.wasm")).unwrap()
}

/// The whole API over a fresh in-memory store.
pub fn app_with(config: ApiConfig) -> Router {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime =
        Runtime::new(Limits { max_instances: 16, max_plugin_bytes: config.max_plugin_bytes, ..Limits::default() })
            .unwrap();
    let plugins = Arc::new(PluginCache::new(runtime, store.clone()));
    let orch = Orchestrator::new(store, plugins, Arc::new(SystemClock), OrchestratorConfig::default());
    router(AppState { orch, config: Arc::new(config) })
}

/// An answer: its status, headers and body (JSON when it parses, else a JSON string; a
/// Server-Sent Events stream is not read, since it may never end).
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Value,
}

impl Answer {
    /// The `Content-Type`, without parameters.
    pub fn media_type(&self) -> String {
        let value = self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        value.split(';').next().unwrap_or_default().trim().to_owned()
    }

    /// Asserts an error of the documented shape: `{"error": {"code", "message"[, "problems"]}}`.
    pub fn assert_error(&self, status: StatusCode, code: &str, needle: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_error_shape(self);
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        let message = self.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

/// Asserts that an error answer is JSON of the shape docs/api.md gives, nothing more.
pub fn assert_error_shape(a: &Answer) {
    assert_eq!(a.media_type(), "application/json", "{} {}", a.status, a.body);
    let top = a.body.as_object().unwrap_or_else(|| panic!("not an object: {}", a.body));
    assert_eq!(top.keys().collect::<Vec<_>>(), ["error"], "{}", a.body);
    let error = a.body["error"].as_object().unwrap_or_else(|| panic!("error is not an object: {}", a.body));
    assert!(error["code"].is_string() && error["message"].is_string(), "{}", a.body);
    for key in error.keys() {
        assert!(["code", "message", "problems"].contains(&key.as_str()), "unexpected {key} in {}", a.body);
    }
    if let Some(problems) = error.get("problems") {
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "problems outside a 422: {}", a.body);
        assert!(problems.as_array().is_some_and(|p| !p.is_empty() && p.iter().all(Value::is_string)), "{}", a.body);
    }
}

/// Sends one request.
pub async fn request(app: &Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let streaming = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let body = if streaming {
        Value::Null
    } else {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Answer { status, headers, body }
}

/// Sends `method uri` with a body and headers.
pub async fn send(app: &Router, method: &str, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    request(app, req.body(body.into()).unwrap()).await
}
