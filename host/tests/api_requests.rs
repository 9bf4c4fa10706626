//! What the API reads and how it refuses the rest (`Router::oneshot`): JSON bodies by their
//! `Content-Type`, a trigger's required input, definitions of the wrong shape, and `/metrics`
//! by the scraper's `Accept` and behind its own token (docs/api.md, docs/operations.md).

mod common;

use axum::http::StatusCode;
use common::{app_with, send, wasm};
use sagahost::api::ApiConfig;
use serde_json::json;

const STEP: &str = r#"{"name": "a", "plugin": "testkit@1.0.0"}"#;

async fn with_testkit_saga(app: &axum::Router) {
    assert_eq!(send(app, "PUT", "/v1/plugins/testkit/1.0.0", &[], wasm("testkit")).await.status, StatusCode::CREATED);
    let def = format!(r#"{{"steps": [{STEP}]}}"#);
    assert_eq!(send(app, "PUT", "/v1/sagas/s", &[], def).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_trigger_needs_a_json_input() {
    let app = app_with(ApiConfig::default());
    with_testkit_saga(&app).await;
    let trigger = "/v1/sagas/s/executions";
    for empty in ["", " \n\t"] {
        send(&app, "POST", trigger, &[], empty).await.assert_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the input is required: send JSON, e.g. {}",
        );
    }
    // What `curl -d` sends, and other types that are not JSON.
    for refused in ["application/x-www-form-urlencoded", "text/plain", "application/xml", "application/jsonx", "json"] {
        let answer = send(&app, "POST", trigger, &[("content-type", refused)], "{}").await;
        answer.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", refused);
    }
    // The type is checked before the body: an empty form is still a 415.
    let answer = send(&app, "POST", trigger, &[("content-type", "text/plain")], "").await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for accepted in
        [None, Some("application/json"), Some("Application/JSON; charset=utf-8"), Some("application/vnd.x+json")]
    {
        let headers: Vec<(&str, &str)> = accepted.map(|t| ("content-type", t)).into_iter().collect();
        let answer = send(&app, "POST", &format!("{trigger}?wait=10000"), &headers, r#"{"n": 1}"#).await;
        assert_eq!(answer.status, StatusCode::OK, "{accepted:?}: {}", answer.body);
        assert_eq!(answer.body["input"], json!({"n": 1}), "stored as sent");
    }
    // `null` sent on purpose is an input like any other.
    let answer = send(&app, "POST", &format!("{trigger}?wait=10000"), &[], "null").await;
    assert_eq!((answer.status, answer.body["input"].clone()), (StatusCode::OK, json!(null)));
}

#[tokio::test]
async fn a_definition_is_json_by_its_content_type_and_an_object_by_its_shape() {
    let app = app_with(ApiConfig::default());
    with_testkit_saga(&app).await;
    let def = format!(r#"{{"steps": [{STEP}]}}"#);
    let answer =
        send(&app, "PUT", "/v1/sagas/t", &[("content-type", "application/x-www-form-urlencoded")], def.clone()).await;
    answer.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "not JSON");
    assert_eq!(send(&app, "GET", "/v1/sagas/t", &[], "").await.status, StatusCode::NOT_FOUND, "nothing stored");
    let answer = send(&app, "PUT", "/v1/sagas/t", &[("content-type", "application/json")], def).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);

    for (body, what) in [
        (format!("[{STEP}]"), "got an array"),
        ("[]".to_owned(), "got an array"),
        (r#""steps""#.to_owned(), "got a string"),
        ("7".to_owned(), "got a number"),
        ("null".to_owned(), "got null"),
    ] {
        let answer = send(&app, "PUT", "/v1/sagas/t", &[], body.clone()).await;
        answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "must be a JSON object");
        let problems = answer.body["error"]["problems"].as_array().unwrap();
        assert!(problems.len() == 1 && problems[0].as_str().unwrap().ends_with(what), "{body}: {problems:?}");
    }
    // Inside the object, a wrong type is still malformed.
    send(&app, "PUT", "/v1/sagas/t", &[], r#"{"steps": {}}"#).await.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "malformed definition",
    );
}

#[tokio::test]
async fn metrics_come_in_the_format_the_scraper_asks_for() {
    let app = app_with(ApiConfig::default());
    // The counters of a family appear once it has a sample.
    with_testkit_saga(&app).await;
    assert_eq!(send(&app, "POST", "/v1/sagas/s/executions", &[], "{}").await.status, StatusCode::ACCEPTED);
    let openmetrics = send(&app, "GET", "/metrics", &[], "").await;
    assert_eq!(openmetrics.status, StatusCode::OK);
    assert_eq!(openmetrics.headers["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert_eq!(openmetrics.headers["vary"], "accept");
    let text = openmetrics.body.as_str().unwrap();
    assert!(text.ends_with("# EOF\n") && text.contains("# TYPE sagahost_executions_started counter\n"), "{text}");

    let scraper = "text/plain;version=0.0.4;q=0.9,*/*;q=0.1";
    let prometheus = send(&app, "GET", "/metrics", &[("accept", scraper)], "").await;
    assert_eq!(prometheus.status, StatusCode::OK);
    assert_eq!(prometheus.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = prometheus.body.as_str().unwrap();
    assert!(!text.contains("# EOF"), "{text}");
    assert!(text.contains("# TYPE sagahost_executions_started_total counter\n"), "{text}");
    assert!(text.contains("# TYPE sagahost_active_executions gauge\n"), "{text}");
}

#[tokio::test]
async fn metrics_can_have_their_own_token() {
    let app = app_with(ApiConfig {
        admin_token: Some("admin-secret".into()),
        client_token: Some("client-secret".into()),
        metrics_token: Some("scrape-secret".into()),
        ..ApiConfig::default()
    });
    for refused in
        [None, Some("Bearer wrong"), Some("Bearer client-secret"), Some("Basic scrape-secret"), Some("Bearer")]
    {
        let headers: Vec<(&str, &str)> = refused.map(|v| ("authorization", v)).into_iter().collect();
        let answer = send(&app, "GET", "/metrics", &headers, "").await;
        answer.assert_error(StatusCode::UNAUTHORIZED, "unauthorized", "bearer token");
        assert_eq!(answer.headers["www-authenticate"], "Bearer", "{refused:?}");
    }
    for accepted in ["Bearer scrape-secret", "bearer scrape-secret", "BEARER  scrape-secret", "Bearer admin-secret"] {
        let answer = send(&app, "GET", "/metrics", &[("authorization", accepted)], "").await;
        assert_eq!(answer.status, StatusCode::OK, "{accepted}: {}", answer.body);
    }
    // The metrics token opens nothing else.
    let answer = send(&app, "GET", "/v1/executions", &[("authorization", "Bearer scrape-secret")], "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    // Without a metrics token, /metrics stays open even when the other routes are guarded.
    let open = app_with(ApiConfig { admin_token: Some("admin-secret".into()), ..ApiConfig::default() });
    assert_eq!(send(&open, "GET", "/metrics", &[], "").await.status, StatusCode::OK);
}
