//! The HTTP API without a socket (`Router::oneshot`): every bad input gets the status and
//! JSON error it deserves, and the happy paths answer as docs/api.md says.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use sagahost::api::ApiConfig;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

use common::{app_with, wasm};

fn app() -> Router {
    app_with(ApiConfig::default())
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    body: impl Into<Body>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app.clone().oneshot(req.body(body.into()).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

fn assert_error(resp: &(StatusCode, Value), status: StatusCode, code: &str, needle: &str) {
    assert_eq!(resp.0, status, "{}", resp.1);
    assert_eq!(resp.1["error"]["code"], code, "{}", resp.1);
    let message = resp.1["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
}

async fn with_testkit_saga(app: &Router) {
    assert_eq!(send(app, Method::PUT, "/v1/plugins/testkit/1.0.0", wasm("testkit"), None).await.0, StatusCode::CREATED);
    let def = json!({"steps": [{"name": "a", "plugin": "testkit@1.0.0"}, {"name": "b", "plugin": "testkit@1.0.0"}]});
    assert_eq!(send(app, Method::PUT, "/v1/sagas/s", def.to_string(), None).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let app = app();
    assert_eq!(send(&app, Method::GET, "/healthz", Body::empty(), None).await.0, StatusCode::OK);
    assert_error(
        &send(&app, Method::GET, "/v2/nothing", Body::empty(), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "route",
    );
    let (status, metrics) = send(&app, Method::GET, "/metrics", Body::empty(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.as_str().unwrap().contains("sagahost_active_executions"));
}

#[tokio::test]
async fn plugin_uploads() {
    let app = app();
    assert_error(
        &send(&app, Method::PUT, "/v1/plugins/p/1.0.0", "garbage", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_plugin",
        "not a valid saga plugin component",
    );
    assert_error(
        &send(&app, Method::PUT, "/v1/plugins/p/one", wasm("order"), None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "semver",
    );
    assert_error(
        &send(&app, Method::PUT, "/v1/plugins/p%20q/1.0.0", wasm("order"), None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "valid name",
    );
    for (plugin, reason) in [("wrong_world", "saga:plugin/step"), ("extra_import", "saga:plugin/vault")] {
        let resp = send(&app, Method::PUT, "/v1/plugins/other/1.0.0", wasm(plugin), None).await;
        assert_error(&resp, StatusCode::BAD_REQUEST, "invalid_plugin", reason);
    }
    let (status, meta) = send(&app, Method::PUT, "/v1/plugins/order/1.0.0", wasm("order"), None).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(meta["digest"].as_str().unwrap().len(), 64);
    assert_eq!(send(&app, Method::PUT, "/v1/plugins/order/1.0.0", wasm("order"), None).await.0, StatusCode::OK);
    assert_error(
        &send(&app, Method::PUT, "/v1/plugins/order/1.0.0", wasm("payment"), None).await,
        StatusCode::CONFLICT,
        "conflict",
        "already exists",
    );
    let (status, list) = send(&app, Method::GET, "/v1/plugins", Body::empty(), None).await;
    assert_eq!((status, list["plugins"].as_array().unwrap().len()), (StatusCode::OK, 1));
    assert_eq!(send(&app, Method::GET, "/v1/plugins/order/1.0.0", Body::empty(), None).await.1["size"], meta["size"]);
    assert_error(
        &send(&app, Method::GET, "/v1/plugins/order/9.9.9", Body::empty(), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "order@9.9.9",
    );
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = app_with(ApiConfig { max_plugin_bytes: 10_000, max_body_bytes: 1_000, ..ApiConfig::default() });
    assert_error(
        &send(&app, Method::PUT, "/v1/plugins/order/1.0.0", wasm("order"), None).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "too large",
    );
    let big = json!({"steps": [], "pad": "x".repeat(2_000)}).to_string();
    assert_error(
        &send(&app, Method::PUT, "/v1/sagas/s", big, None).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "too large",
    );
}

#[tokio::test]
async fn definitions_list_every_problem() {
    let app = app();
    send(&app, Method::PUT, "/v1/plugins/testkit/1.0.0", wasm("testkit"), None).await;
    assert_error(
        &send(&app, Method::PUT, "/v1/sagas/s", "{not json", None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "malformed",
    );
    assert_error(
        &send(
            &app,
            Method::PUT,
            "/v1/sagas/s",
            r#"{"steps": [{"name": "a", "plugin": "testkit@1.0.0", "timout_ms": 5}]}"#,
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "unknown field `timout_ms`",
    );
    assert_error(
        &send(
            &app,
            Method::PUT,
            "/v1/sagas/s",
            r#"{"steps": [{"name": "a", "plugin": "testkit@1.0.0", "timeout_ms": "5"}]}"#,
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid type",
    );
    let bad = json!({"steps": [
        {"name": "a", "plugin": "missing@1.0.0", "timeout_ms": 0},
        {"name": "a", "plugin": "testkit@1.0.0", "retry": {"max_attempts": -1}},
    ]});
    let resp = send(&app, Method::PUT, "/v1/sagas/s", bad.to_string(), None).await;
    assert_eq!(resp.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", resp.1);
    let problems: Vec<&str> =
        resp.1["error"]["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(problems.len(), 4, "{problems:?}");
    let all = problems.join("\n");
    for needle in [
        "missing@1.0.0 has not been uploaded",
        "steps[0].timeout_ms",
        "steps[1].retry.max_attempts",
        "\"a\" is used more than once",
    ] {
        assert!(all.contains(needle), "{needle} not in {all}");
    }
    let good = json!({"steps": [{"name": "a", "plugin": "testkit@1.0.0"}]});
    let (status, d) = send(&app, Method::PUT, "/v1/sagas/s", good.to_string(), None).await;
    assert_eq!((status, d["version"].as_u64()), (StatusCode::CREATED, Some(1)));
    assert_eq!(d["definition"]["steps"][0]["compensation"], "testkit@1.0.0", "defaults filled in");
    let changed = json!({"steps": [{"name": "a", "plugin": "testkit@1.0.0", "timeout_ms": 50}]});
    let (status, d) = send(&app, Method::PUT, "/v1/sagas/s", changed.to_string(), None).await;
    assert_eq!((status, d["version"].as_u64()), (StatusCode::OK, Some(2)));
    assert_eq!(send(&app, Method::GET, "/v1/sagas/s", Body::empty(), None).await.1["version"], 2);
    assert_eq!(send(&app, Method::GET, "/v1/sagas", Body::empty(), None).await.1["sagas"].as_array().unwrap().len(), 1);
    assert_error(
        &send(&app, Method::GET, "/v1/sagas/nope", Body::empty(), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "nope",
    );
}

#[tokio::test]
async fn triggers_and_reads() {
    let app = app();
    with_testkit_saga(&app).await;
    assert_error(
        &send(&app, Method::POST, "/v1/sagas/nope/executions", "{}", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "nope",
    );
    assert_error(
        &send(&app, Method::POST, "/v1/sagas/s/executions", "{oops", None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "not valid JSON",
    );
    assert_error(
        &send(&app, Method::POST, "/v1/sagas/s/executions?wait=abc", "{}", None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "query",
    );
    assert_error(
        &send(&app, Method::POST, "/v1/sagas/s/executions?wait=999999999", "{}", None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "wait",
    );

    let (status, done) = send(&app, Method::POST, "/v1/sagas/s/executions?wait=10000", "{}", None).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["steps"][1]["status"], "completed");
    let id = done["id"].as_str().unwrap();
    let (status, events) = send(&app, Method::GET, &format!("/v1/executions/{id}/events"), Body::empty(), None).await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<u64> = events.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());

    let (status, accepted) = send(&app, Method::POST, "/v1/sagas/s/executions", "{}", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(accepted["id"].is_string() && accepted["status"].is_string());

    assert_error(
        &send(&app, Method::GET, "/v1/executions/not-an-id", Body::empty(), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "not-an-id",
    );
    let unknown = uuid_like();
    assert_error(
        &send(&app, Method::GET, &format!("/v1/executions/{unknown}"), Body::empty(), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "not found",
    );
    assert_error(
        &send(&app, Method::GET, "/v1/executions?status=sleepy", Body::empty(), None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "unknown status",
    );
    assert_error(
        &send(&app, Method::GET, "/v1/executions?limit=0", Body::empty(), None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "limit",
    );
    assert_error(
        &send(&app, Method::GET, "/v1/executions?colour=red", Body::empty(), None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "colour",
    );
    let (_, list) = send(&app, Method::GET, "/v1/executions?saga=s&limit=1", Body::empty(), None).await;
    assert_eq!(list["executions"].as_array().unwrap().len(), 1);
    assert!(list["next"].is_string(), "a full page has a cursor");

    assert_error(
        &send(&app, Method::POST, &format!("/v1/executions/{id}/cancel"), Body::empty(), None).await,
        StatusCode::CONFLICT,
        "conflict",
        "completed",
    );
    assert_error(
        &send(&app, Method::POST, &format!("/v1/executions/{id}/resume"), Body::empty(), None).await,
        StatusCode::CONFLICT,
        "conflict",
        "failed",
    );
    assert_error(
        &send(&app, Method::POST, &format!("/v1/executions/{unknown}/cancel"), Body::empty(), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "not found",
    );
}

fn uuid_like() -> String {
    sagahost::domain::ExecutionId::new().to_string()
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_first_execution() {
    let app = app();
    with_testkit_saga(&app).await;
    let trigger = |key: &'static str| {
        let app = app.clone();
        async move {
            let req =
                Request::post("/v1/sagas/s/executions").header("idempotency-key", key).body(Body::from("{}")).unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&bytes).unwrap()["id"].as_str().unwrap().to_owned()
        }
    };
    // Racing triggers with one key: one execution.
    let (a, b) = tokio::join!(trigger("order-7"), trigger("order-7"));
    assert_eq!(a, b);
    assert_ne!(trigger("order-8").await, a);
}

#[tokio::test]
async fn tokens_guard_management_and_client_routes() {
    let app = app_with(ApiConfig {
        admin_token: Some("admin-secret".into()),
        client_token: Some("client-secret".into()),
        ..ApiConfig::default()
    });
    let upload = |token| send(&app, Method::PUT, "/v1/plugins/testkit/1.0.0", wasm("testkit"), token);
    assert_error(&upload(None).await, StatusCode::UNAUTHORIZED, "unauthorized", "bearer token");
    assert_error(&upload(Some("wrong")).await, StatusCode::UNAUTHORIZED, "unauthorized", "bearer token");
    assert_error(&upload(Some("client-secret")).await, StatusCode::UNAUTHORIZED, "unauthorized", "bearer token");
    assert_eq!(upload(Some("admin-secret")).await.0, StatusCode::CREATED);
    let def = json!({"steps": [{"name": "a", "plugin": "testkit@1.0.0"}]}).to_string();
    assert_eq!(send(&app, Method::PUT, "/v1/sagas/s", def, Some("admin-secret")).await.0, StatusCode::CREATED);
    assert_error(
        &send(&app, Method::POST, "/v1/sagas/s/executions", "{}", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "token",
    );
    assert_eq!(
        send(&app, Method::POST, "/v1/sagas/s/executions", "{}", Some("client-secret")).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(send(&app, Method::GET, "/v1/executions", Body::empty(), Some("admin-secret")).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, Method::GET, "/healthz", Body::empty(), None).await.0,
        StatusCode::OK,
        "liveness needs no token"
    );
}

#[tokio::test]
async fn every_route_is_served_and_in_the_openapi_document() {
    let app = app();
    let (status, doc) = send(&app, Method::GET, "/v1/openapi.json", Body::empty(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in sagahost::api::ROUTES {
        assert!(paths.get(*path).and_then(|p| p.get(*method)).is_some(), "{method} {path} missing from the document");
        // The router serves it: never the fallback's "no such route" (nor 405).
        let uri = path
            .replace("{name}", "n")
            .replace("{version}", "1.0.0")
            .replace("{id}", &sagahost::domain::ExecutionId::new().to_string());
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let resp =
            app.clone().oneshot(Request::builder().method(m).uri(&uri).body(Body::from("{}")).unwrap()).await.unwrap();
        assert_ne!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        if *path == "/v1/executions/feed" {
            // A live stream: it answers 200 and never ends.
            assert_eq!(resp.status(), StatusCode::OK);
            continue;
        }
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(!String::from_utf8_lossy(&body).contains("no such route"), "{method} {uri} is not routed");
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, sagahost::api::ROUTES.len(), "the document has routes the list does not");
    // Schemas are generated from the types the handlers exchange.
    for schema in ["ExecutionView", "EventRecord", "SagaDefinition", "PluginMeta", "ErrorBody"] {
        assert!(doc["components"]["schemas"].get(schema).is_some(), "{schema} missing");
    }
}

#[tokio::test]
async fn plugin_state_is_listed_for_operators_only() {
    let app = app_with(ApiConfig {
        admin_token: Some("admin-secret".into()),
        client_token: Some("client-secret".into()),
        ..ApiConfig::default()
    });
    let admin = Some("admin-secret");
    assert_eq!(
        send(&app, Method::PUT, "/v1/plugins/testkit/1.0.0", wasm("testkit"), admin).await.0,
        StatusCode::CREATED
    );
    let def = json!({"steps": [{"name": "a", "plugin": "testkit@1.0.0"}]}).to_string();
    assert_eq!(send(&app, Method::PUT, "/v1/sagas/s", def, admin).await.0, StatusCode::CREATED);
    let ops = json!([
        {"set": ["accounts", "alice", {"balance": 5}]},
        {"set": ["accounts", "bob", {"balance": 7}]},
        {"set_bytes": ["blobs", "b1", "hi"]},
    ]);
    let input = json!({"state": {"a": ops}}).to_string();
    let (status, done) = send(&app, Method::POST, "/v1/sagas/s/executions?wait=10000", input, admin).await;
    assert_eq!((status, done["status"].clone()), (StatusCode::OK, json!("completed")), "{done}");

    let list = |q: &str, token| {
        let uri = format!("/v1/plugins/testkit/state{q}");
        let app = app.clone();
        async move { send(&app, Method::GET, &uri, Body::empty(), token).await }
    };
    assert_error(&list("", None).await, StatusCode::UNAUTHORIZED, "unauthorized", "bearer token");
    assert_error(&list("", Some("client-secret")).await, StatusCode::UNAUTHORIZED, "unauthorized", "bearer token");
    let (status, all) = list("", admin).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["plugin"], "testkit");
    assert_eq!(all["truncated"], false);
    let entries = all["entries"].as_array().unwrap();
    let names: Vec<String> = entries.iter().map(|e| format!("{}/{}", e["collection"], e["key"])).collect();
    assert_eq!(names, ["\"accounts\"/\"alice\"", "\"accounts\"/\"bob\"", "\"blobs\"/\"b1\""]);
    assert_eq!(entries[0]["json"], json!({"balance": 5}));
    assert!(entries[0]["version"].as_u64().unwrap() > 0);
    assert_eq!(entries[2]["bytes_base64"], "aGk=");
    assert!(entries[2].get("json").is_none());

    let (_, one) = list("?collection=accounts&prefix=b", admin).await;
    assert_eq!(one["entries"].as_array().unwrap().len(), 1);
    assert_eq!(one["entries"][0]["key"], "bob");
    let (_, page) = list("?limit=1", admin).await;
    assert_eq!((page["entries"].as_array().unwrap().len(), page["truncated"].clone()), (1, json!(true)));
    let (_, none) = list("?collection=nothing", admin).await;
    assert_eq!(none["entries"], json!([]));

    assert_error(
        &send(&app, Method::GET, "/v1/plugins/ghost/state", Body::empty(), admin).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no plugin named ghost",
    );
    assert_error(
        &send(&app, Method::GET, "/v1/plugins/Bad%20Name/state", Body::empty(), admin).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "plugin name",
    );
    assert_error(&list("?limit=0", admin).await, StatusCode::BAD_REQUEST, "bad_request", "limit");
    assert_error(&list("?limit=1001", admin).await, StatusCode::BAD_REQUEST, "bad_request", "limit");
    assert_error(&list("?limit=many", admin).await, StatusCode::BAD_REQUEST, "bad_request", "query");
    assert_error(&list("?colection=accounts", admin).await, StatusCode::BAD_REQUEST, "bad_request", "colection");
}
