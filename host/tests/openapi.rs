//! The OpenAPI document says what the server does: it passes an OpenAPI 3 validator, its
//! patterns accept what the parsers accept, its bounds are the ones enforced, and every answer
//! to a sample of generated requests (valid, bad path values, bad queries, wrong content types,
//! wrong tokens, oversized bodies) has a status it lists for that route, with a body of the
//! type and shape it lists.
#![allow(clippy::print_stdout)] // a skipped check says why on stdout

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use axum::Router;
use axum::http::StatusCode;
use common::{Answer, app_with, assert_error_shape, send, wasm};
use sagahost::api::ApiConfig;
use sagahost::domain::{DefinitionLimits, ExecutionId, PluginName, PluginRef, PluginVersion, SagaName, StepName};
use serde_json::{Value, json};

const ADMIN: &str = "Bearer admin-secret";
const MAX_BODY: usize = 4096;

async fn document() -> Value {
    let answer = send(&app_with(ApiConfig::default()), "GET", "/v1/openapi.json", &[], "").await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.body
}

/// Runs a Python snippet with `input` on its stdin; `None` when there is no `python3`.
fn python(args: &[&str], input: &str) -> Option<std::process::Output> {
    let mut child = Command::new("python3")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    Some(child.wait_with_output().unwrap())
}

#[tokio::test]
async fn the_document_passes_an_openapi_validator() {
    let doc = document().await;
    match python(&["-c", "import openapi_spec_validator"], "") {
        None => return println!("SKIPPED: python3 cannot be run, so openapi-spec-validator cannot either"),
        Some(o) if !o.status.success() => {
            return println!(
                "SKIPPED: the Python package openapi-spec-validator is not installed \
                 (pip install openapi-spec-validator): {}",
                String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or_default()
            );
        }
        Some(_) => {}
    }
    let validate = |doc: &Value| {
        let mut file = tempfile::NamedTempFile::with_suffix(".json").unwrap();
        file.write_all(serde_json::to_string_pretty(doc).unwrap().as_bytes()).unwrap();
        let out = python(&["-m", "openapi_spec_validator", file.path().to_str().unwrap()], "").unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), said.trim().to_owned())
    };
    let (valid, said) = validate(&doc);
    assert!(valid, "the validator refused the document:\n{said}");
    println!("openapi-spec-validator: {said}");
    // The check has teeth: the same document with a duplicated operationId is refused.
    let mut broken = doc.clone();
    broken["paths"]["/v1/sagas"]["get"]["operationId"] = json!("listPlugins");
    let (valid, said) = validate(&broken);
    assert!(!valid && said.contains("not unique"), "a broken document passed: {said}");
}

#[tokio::test]
async fn every_operation_has_a_unique_id() {
    let doc = document().await;
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} used twice");
        }
    }
    assert_eq!(ids.len(), sagahost::api::ROUTES.len());
}

/// Strings around the edges of each rule, with what the parser says of them.
fn pattern_cases(schemas: &Value) -> Vec<Value> {
    let names =
        ["a", "A9", "order-saga_1.v2", "9", &"x".repeat(64), &"x".repeat(65), "", "-x", "_x", ".x", "a b", "a/b"];
    let names = names.iter().chain(&["a@b", "é", "a\u{0}"]);
    let versions = ["1.0.0", "0.0.0", "10.20.30-rc.1+b7", "1.0.0+b", "1.0", "1.0.0.0", "x.y.z", "01.1.1", "1.0.0 ", ""];
    let long_version = format!("1.0.0-{}", "a".repeat(60));
    let versions = versions.iter().copied().chain([long_version.as_str(), "1234567890.0.0", "1.0.0-é"]);
    let mut cases = Vec::new();
    let mut case = |schema: &str, text: &str, ok: bool| {
        let s = &schemas[schema];
        cases.push(
            json!({"schema": schema, "pattern": s["pattern"], "max": s.get("maxLength"), "text": text, "ok": ok}),
        );
    };
    for n in names {
        case("SagaName", n, SagaName::parse(n).is_ok());
        case("PluginName", n, PluginName::parse(n).is_ok());
        case("StepName", n, StepName::parse(n).is_ok());
        case("PluginRef", &format!("{n}@1.0.0"), format!("{n}@1.0.0").parse::<PluginRef>().is_ok());
    }
    for v in versions {
        case("PluginVersion", v, PluginVersion::parse(v).is_ok());
        case("PluginRef", &format!("p@{v}"), format!("p@{v}").parse::<PluginRef>().is_ok());
    }
    case("PluginRef", "p1.0.0", false);
    cases
}

#[tokio::test]
async fn the_patterns_accept_what_the_parsers_accept() {
    let doc = document().await;
    let cases = pattern_cases(&doc["components"]["schemas"]);
    let script = "import json, re, sys\n\
        cases = json.load(sys.stdin)\n\
        wrong = [c for c in cases if (re.search(c['pattern'], c['text']) is not None\n\
                 and len(c['text']) <= (c['max'] or 10**9)) != c['ok']]\n\
        print(json.dumps(wrong))\n\
        sys.exit(1 if wrong else 0)";
    let Some(out) = python(&["-c", script], &Value::from(cases).to_string()) else {
        return println!("SKIPPED: python3 cannot be run to evaluate the patterns");
    };
    assert!(out.status.success(), "pattern and parser disagree on {}", String::from_utf8_lossy(&out.stdout));
}

fn param<'a>(doc: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
    let p = params.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{method} {path}: no {name}"));
    &p["schema"]
}

#[tokio::test]
async fn the_document_states_the_bounds_the_server_enforces() {
    let doc = document().await;
    let trigger = "/v1/sagas/{name}/executions";
    assert_eq!(param(&doc, trigger, "post", "wait")["maximum"], 300_000);
    let key = param(&doc, trigger, "post", "Idempotency-Key");
    assert_eq!((key["minLength"].clone(), key["maxLength"].clone()), (json!(1), json!(256)));
    for (path, default) in [("/v1/executions", 50), ("/v1/plugins/{name}/state", 100)] {
        let limit = param(&doc, path, "get", "limit");
        assert_eq!((limit["minimum"].clone(), limit["maximum"].clone()), (json!(1), json!(1000)), "{path}");
        assert!(doc["paths"][path]["get"]["parameters"].to_string().contains(&format!("default {default}")));
    }
    let schemas = &doc["components"]["schemas"];
    let l = DefinitionLimits::default();
    let max = |schema: &str, field: &str| schemas[schema]["properties"][field]["oneOf"][0]["maximum"].clone();
    assert_eq!(max("DefinitionRequest", "deadline_ms"), json!(l.max_deadline_ms));
    assert_eq!(max("StepRequest", "timeout_ms"), json!(l.max_timeout_ms));
    assert_eq!(max("RetryRequest", "max_attempts"), json!(l.max_attempts));
    assert_eq!(max("RetryRequest", "max_backoff_ms"), json!(l.max_backoff_ms));
    assert_eq!(schemas["DefinitionRequest"]["properties"]["steps"]["maxItems"], json!(l.max_steps));
    for s in ["DefinitionRequest", "StepRequest", "RetryRequest"] {
        assert_eq!(schemas[s]["additionalProperties"], false, "{s}: unknown fields are refused");
    }
    let body = |path: &str, method: &str| doc["paths"][path][method]["requestBody"]["content"].clone();
    assert!(body("/v1/plugins/{name}/{version}", "put").get("application/wasm").is_some());
    assert!(body("/v1/sagas/{name}", "put").get("application/json").is_some());
    assert!(body(trigger, "post").get("application/json").is_some());

    // At each bound and one past it, the server agrees with the document.
    let app = guarded_app();
    let id = prepare(&app).await;
    let at = |uri: String, headers: Vec<(&'static str, String)>| {
        let app = app.clone();
        async move {
            let mut h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h.push(("authorization", ADMIN));
            let method = if uri.starts_with("/v1/executions") { "GET" } else { "POST" };
            send(&app, method, &uri, &h, "{}").await.status
        }
    };
    assert_eq!(at("/v1/sagas/s/executions?wait=300000".into(), vec![]).await, StatusCode::OK);
    assert_eq!(at("/v1/sagas/s/executions?wait=300001".into(), vec![]).await, StatusCode::BAD_REQUEST);
    assert_eq!(
        at("/v1/sagas/s/executions".into(), vec![("idempotency-key", "k".repeat(256))]).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        at("/v1/sagas/s/executions".into(), vec![("idempotency-key", "k".repeat(257))]).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        at("/v1/sagas/s/executions".into(), vec![("idempotency-key", String::new())]).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(at("/v1/executions?limit=1000".into(), vec![]).await, StatusCode::OK);
    assert_eq!(at("/v1/executions?limit=1001".into(), vec![]).await, StatusCode::BAD_REQUEST);
    assert_eq!(at(format!("/v1/sagas/{}/executions", "n".repeat(64)), vec![]).await, StatusCode::NOT_FOUND);
    assert_eq!(at(format!("/v1/sagas/{}/executions", "n".repeat(65)), vec![]).await, StatusCode::BAD_REQUEST);
    let step = |field: &str, v: u64| {
        let mut step = json!({"name": "a", "plugin": "testkit@1.0.0"});
        step[field] = json!(v);
        json!({ "steps": [step] })
    };
    for (def, ok) in [
        (step("timeout_ms", l.max_timeout_ms), true),
        (step("timeout_ms", l.max_timeout_ms + 1), false),
        (json!({"deadline_ms": l.max_deadline_ms, "steps": [{"name": "a", "plugin": "testkit@1.0.0"}]}), true),
        (json!({"deadline_ms": l.max_deadline_ms + 1, "steps": [{"name": "a", "plugin": "testkit@1.0.0"}]}), false),
    ] {
        let status = send(&app, "PUT", "/v1/sagas/bounds", &[("authorization", ADMIN)], def.to_string()).await.status;
        assert_eq!(status.is_success(), ok, "{def}: {status}");
        assert!(ok || status == StatusCode::UNPROCESSABLE_ENTITY, "{def}: {status}");
    }
    assert!(!id.is_empty());
}

fn guarded_app() -> Router {
    app_with(ApiConfig {
        admin_token: Some("admin-secret".into()),
        client_token: Some("client-secret".into()),
        metrics_token: Some("metrics-secret".into()),
        max_body_bytes: MAX_BODY,
        max_plugin_bytes: wasm("testkit").len() + 64,
    })
}

/// A plugin, a saga and one ended execution, whose id is returned.
async fn prepare(app: &Router) -> String {
    let admin = [("authorization", ADMIN)];
    assert_eq!(
        send(app, "PUT", "/v1/plugins/testkit/1.0.0", &admin, wasm("testkit")).await.status,
        StatusCode::CREATED
    );
    let def = json!({"steps": [{"name": "a", "plugin": "testkit@1.0.0"}]}).to_string();
    assert_eq!(send(app, "PUT", "/v1/sagas/s", &admin, def).await.status, StatusCode::CREATED);
    let done = send(app, "POST", "/v1/sagas/s/executions?wait=10000", &admin, "{}").await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    done.body["id"].as_str().unwrap().to_owned()
}

/// Path values to try for each placeholder: valid ones first, then unknown and malformed ones.
fn path_values(path: &str, placeholder: &str, id: &str) -> Vec<String> {
    let name = if path.starts_with("/v1/plugins") { "testkit" } else { "s" };
    let values: Vec<String> = match placeholder {
        "name" => vec![
            name.into(),
            "nope".into(),
            "Bad%20Name".into(),
            "-x".into(),
            "%2E%2E".into(),
            "%FF".into(),
            "n".repeat(65),
        ],
        "version" => vec!["1.0.0".into(), "9.9.9".into(), "one".into(), "1.0".into(), "%FF".into()],
        "id" => vec![id.into(), ExecutionId::new().to_string(), "not-an-id".into(), "%FF".into()],
        "topic" => vec!["Go".into(), "Bad%20Topic".into(), "-x".into(), "%FF".into(), "t".repeat(65)],
        other => panic!("no values for {{{other}}}"),
    };
    values
}

/// Every URI for a path template: all values valid, then each placeholder varied alone.
fn uris(path: &str, id: &str) -> Vec<String> {
    let placeholders: Vec<&str> = path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
    let valid = |p: &str| path_values(path, p, id).remove(0);
    let fill = |varied: Option<(&str, &str)>| {
        placeholders.iter().fold(path.to_owned(), |uri, p| {
            let value = match varied {
                Some((v, value)) if v == *p => value.to_owned(),
                _ => valid(p),
            };
            uri.replace(&format!("{{{p}}}"), &value)
        })
    };
    let mut all = vec![fill(None)];
    for p in &placeholders {
        all.extend(path_values(path, p, id).iter().skip(1).map(|v| fill(Some((p, v)))));
    }
    all
}

/// One request's variations: (query, headers, body).
type Variant = (String, Vec<(&'static str, String)>, Vec<u8>);

fn variants(path: &str, method: &str, has_body: bool) -> Vec<Variant> {
    let admin = || vec![("authorization", ADMIN.to_owned())];
    let with = |extra: Vec<(&'static str, String)>| [admin(), extra].concat();
    let good_body: Vec<u8> = match (method, path) {
        ("put", "/v1/plugins/{name}/{version}") => wasm("testkit"),
        ("put", "/v1/secrets/{name}") => json!({"value": "a-long-enough-value"}).to_string().into_bytes(),
        ("put", _) => json!({"steps": [{"name": "a", "plugin": "testkit@1.0.0"}]}).to_string().into_bytes(),
        ("post", "/v1/sagas/{name}/executions") => b"{}".to_vec(),
        _ => Vec::new(),
    };
    let mut all: Vec<Variant> = vec![(String::new(), admin(), good_body.clone())];
    for auth in ["", "Bearer wrong", "Bearer client-secret", "Bearer metrics-secret", "bearer admin-secret", "Basic x"]
    {
        let headers = if auth.is_empty() { vec![] } else { vec![("authorization", auth.to_owned())] };
        all.push((String::new(), headers, good_body.clone()));
    }
    for query in [
        "?limit=0",
        "?limit=1",
        "?limit=1001",
        "?limit=x",
        "?bogus=1",
        "?wait=0",
        "?wait=300001",
        "?wait=-1",
        "?follow=maybe",
        "?follow=true",
        "?after=x",
        "?after=2",
        "?status=sleepy",
        "?status=completed",
        "?saga=-x",
        "?collection=c&prefix=p",
        "?limit=%FF",
    ] {
        all.push((query.to_owned(), admin(), good_body.clone()));
    }
    for key in [String::new(), "k".repeat(257), "order-1".into(), "caf\u{e9}".into()] {
        all.push((String::new(), with(vec![("idempotency-key", key)]), good_body.clone()));
    }
    // Limits on any request: a body announced too large (even where none is read), a head too big.
    let big = if path.starts_with("/v1/plugins/{name}/{version}") { wasm("testkit").len() + 65 } else { MAX_BODY + 1 };
    all.push((String::new(), with(vec![("content-length", big.to_string())]), vec![b' '; big]));
    all.push((String::new(), with(vec![("x-padding", "p".repeat(17 << 10))]), good_body.clone()));
    all.push((format!("?pad={}", "p".repeat(sagahost::api::MAX_URI_BYTES)), admin(), good_body.clone()));
    if has_body {
        for body in
            [Vec::new(), b"{oops".to_vec(), b"[]".to_vec(), b"null".to_vec(), b"garbage".to_vec(), vec![b' '; big]]
        {
            all.push((String::new(), admin(), body));
        }
        for media in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/problem+json",
            "application/json; charset=utf-8",
            "application/wasm",
        ] {
            all.push((String::new(), with(vec![("content-type", media.to_owned())]), good_body.clone()));
        }
    }
    all
}

/// Checks one answer against the document's responses for its operation.
fn check(op: &Value, what: &str, answer: &Answer) {
    let status = answer.status.as_u16().to_string();
    let documented = &op["responses"][&status];
    assert!(documented.is_object(), "{what}: answered {status}, which is not documented: {}", answer.body);
    let content = documented["content"].as_object().map(|c| c.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    assert!(
        content.contains(&answer.media_type()),
        "{what}: {status} as {:?}, documented {content:?}",
        answer.media_type()
    );
    if answer.status.is_client_error() || answer.status.is_server_error() {
        assert_error_shape(answer);
    }
    if answer.status == StatusCode::UNAUTHORIZED {
        assert_eq!(answer.headers["www-authenticate"], "Bearer", "{what}");
    }
}

#[tokio::test]
async fn generated_requests_get_only_documented_answers() {
    let doc = document().await;
    let app = guarded_app();
    let id = prepare(&app).await;
    let mut seen: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    let mut count = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let has_body = op.get("requestBody").is_some();
            for uri in uris(path, &id) {
                for (query, headers, body) in variants(path, method, has_body) {
                    let uri = format!("{uri}{query}");
                    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let answer = send(&app, &method.to_uppercase(), &uri, &h, body).await;
                    let what = format!("{} {uri} {headers:?}", method.to_uppercase());
                    check(op, &what, &answer);
                    seen.entry(format!("{method} {path}")).or_default().insert(answer.status.as_u16());
                    count += 1;
                }
            }
        }
    }
    println!("{count} requests; statuses by route: {seen:#?}");
    let all: BTreeSet<u16> = seen.values().flatten().copied().collect();
    for status in [200, 201, 202, 400, 401, 404, 409, 413, 414, 415, 422, 431] {
        assert!(all.contains(&status), "no request was answered {status}: the sample misses a case");
    }
}
