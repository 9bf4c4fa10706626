//! Events emitted by plugins (docs/plugins.md, "events"), in the runtime on the real `testkit`
//! plugin: what a completed attempt hands back for the outbox, the checks on every emitted
//! field, the per-attempt limits, and that a failed attempt hands back nothing.

use std::sync::Arc;
use std::time::Duration;

use sagahost::domain::{EventSource, PluginRef, Side, StepFailure, TopicEvent};
use sagahost::runtime::{Call, EventLimits, Limits, PluginCache, Runtime};
use sagahost::secrets::SecretValue;
use sagahost::store::MemoryStore;
use serde_json::{Value, json};

const PLUGIN_DIR: &str = env!("SAGAHOST_PLUGIN_DIR");

async fn cache(limits: Limits) -> PluginCache {
    let cache = PluginCache::new(Runtime::new(limits).unwrap(), Arc::new(MemoryStore::new()));
    for (name, file) in [("testkit@1.0.0", "testkit"), ("legacy@0.2.0", "legacy_v0_2")] {
        let r: PluginRef = name.parse().unwrap();
        let bytes = std::fs::read(format!("{PLUGIN_DIR}/{file}.wasm")).unwrap();
        cache.upload(r.name, r.version, bytes, 0).await.unwrap();
    }
    cache
}

fn call(emits: Value, behavior: &str, key: Option<&str>) -> Call {
    Call {
        side: Side::Execute,
        execution_id: "exec-1".into(),
        saga: "orders".into(),
        step: "create".into(),
        attempt: 2,
        idempotency_key: "exec-1/create".into(),
        execution_key: key.map(str::to_owned),
        deadline_unix_ms: 0,
        timeout: Duration::from_secs(2),
        input: json!({ "input": { "emit": { "create": emits }, "behaviors": { "create": behavior } } }).to_string(),
        state: None,
        config: Default::default(),
        http: Default::default(),
    }
}

/// The attempt's answer and the events it hands back for the outbox.
async fn attempt(cache: &PluginCache, call: Call) -> Result<(Value, Vec<TopicEvent>), StepFailure> {
    let pre = cache.get(&"testkit@1.0.0".parse().unwrap()).await.unwrap();
    let done = cache.runtime().invoke(&pre, call).await?;
    Ok((serde_json::from_str(&done.output).unwrap(), done.effects.events))
}

#[tokio::test]
async fn emitted_events_leave_with_the_result_with_ids_keys_and_source() {
    let cache = cache(Limits::default()).await;
    let emits = json!([
        ["OrderCreated", null, {"order_id": "o-1", "amount": 40}],
        ["Audit.v2", "other-key", [1, "two", null]],
    ]);
    let (out, events) = attempt(&cache, call(emits, "ok", Some("o-1"))).await.unwrap();
    assert_eq!(out["execution_key"], "o-1", "the context carries the business key");
    assert_eq!(out["emitted"], json!([{"id": "exec-1:create:execute:0"}, {"id": "exec-1:create:execute:1"}]));
    let source = EventSource {
        execution_id: "exec-1".into(),
        saga: "orders".into(),
        step: "create".into(),
        side: "execute".into(),
    };
    assert_eq!(
        events,
        vec![
            TopicEvent {
                id: "exec-1:create:execute:0".into(),
                topic: "OrderCreated".into(),
                key: Some("o-1".into()),
                payload: json!({"order_id": "o-1", "amount": 40}),
                at: 0,
                source: Some(source.clone()),
            },
            TopicEvent {
                id: "exec-1:create:execute:1".into(),
                topic: "Audit.v2".into(),
                key: Some("other-key".into()),
                payload: json!([1, "two", null]),
                at: 0,
                source: Some(source),
            },
        ]
    );

    // Without a business key, an event without a key has none.
    let (out, events) = attempt(&cache, call(json!([["T", null, {}]]), "ok", None)).await.unwrap();
    assert_eq!(out["execution_key"], Value::Null);
    assert_eq!(events[0].key, None);
}

#[tokio::test]
async fn a_failed_attempt_hands_back_no_events() {
    let cache = cache(Limits::default()).await;
    for behavior in ["permanent", "retryable", "trap", "panic", "oom", "sleep:5000"] {
        let emits = json!([["OrderCreated", null, {"n": 1}]]);
        let mut c = call(emits, behavior, Some("k"));
        c.timeout = Duration::from_millis(500);
        assert!(attempt(&cache, c).await.is_err(), "{behavior} should fail");
    }
}

#[tokio::test]
async fn hostile_events_are_refused_one_by_one_and_the_attempt_goes_on() {
    let cache = cache(Limits::default()).await;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let emits = json!([
        ["", null, {}],
        ["has space", null, {}],
        ["x".repeat(65), null, {}],
        ["T", "", {}],
        ["T", "line\nbreak", {}],
        ["T", "k".repeat(257), {}],
        ["T", null, "not json"],
        ["T", null, deep],
        ["T", null, "12345678901234567890123"],
        ["T", null, "{\"a\": 1} trailing"],
        ["Fine", null, {"ok": true}],
    ]);
    let (out, events) = attempt(&cache, call(emits, "ok", None)).await.unwrap();
    let emitted = out["emitted"].as_array().unwrap();
    for (i, e) in emitted[..10].iter().enumerate() {
        let error = e["error"].as_str().unwrap_or_else(|| panic!("#{i} was accepted: {e}"));
        assert!(error.starts_with("EmitError::Invalid("), "#{i}: {error}");
    }
    // The refused ones took no number: the one accepted is the attempt's first.
    assert_eq!(emitted[10], json!({"id": "exec-1:create:execute:0"}));
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn the_per_attempt_limits_are_limit_errors() {
    let limits = Limits { events: EventLimits { max_events: 3, max_bytes: 1_000 }, ..Limits::default() };
    let cache = cache(limits).await;
    let four: Vec<Value> = (0..4).map(|i| json!(["T", null, {"i": i}])).collect();
    let (out, events) = attempt(&cache, call(json!(four), "ok", None)).await.unwrap();
    assert_eq!(events.len(), 3);
    assert!(out["emitted"][3]["error"].as_str().unwrap().starts_with("EmitError::Limit("), "{out}");

    let big = json!([["T", null, {"blob": "x".repeat(600)}], ["T", null, {"blob": "y".repeat(600)}]]);
    let (out, events) = attempt(&cache, call(big, "ok", None)).await.unwrap();
    assert_eq!(events.len(), 1);
    assert!(out["emitted"][1]["error"].as_str().unwrap().contains("1000 bytes"), "{out}");
}

#[tokio::test]
async fn secrets_are_redacted_from_emitted_events() {
    let cache = cache(Limits::default()).await;
    let mut c = call(json!([["T", "s3cr3t-value", {"token": "s3cr3t-value"}]]), "ok", None);
    c.config.secrets = vec![("api_key".into(), SecretValue::from("s3cr3t-value".to_owned()))];
    let (_, events) = attempt(&cache, c).await.unwrap();
    assert_eq!(events[0].payload, json!({"token": "[REDACTED:api_key]"}));
    assert_eq!(events[0].key.as_deref(), Some("[REDACTED:api_key]"));
}

#[tokio::test]
async fn a_plugin_built_against_0_2_0_runs_with_its_state() {
    let cache = cache(Limits::default()).await;
    let pre = cache.get(&"legacy@0.2.0".parse().unwrap()).await.unwrap();
    assert_eq!(pre.world(), "saga:plugin@0.2.0");
    let store: Arc<dyn sagahost::store::Store> = Arc::new(MemoryStore::new());
    let c = Call {
        state: Some(sagahost::runtime::StateScope {
            plugin: sagahost::domain::PluginName::parse("legacy").unwrap(),
            store,
        }),
        ..call(json!([]), "ok", Some("k"))
    };
    let done = cache.runtime().invoke(&pre, c).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&done.output).unwrap(),
        json!({"world": "0.2.0", "step": "create", "count": 1})
    );
    assert_eq!(done.effects.writes.len(), 1, "its state write is handed back: {:?}", done.effects);
    assert!(done.effects.events.is_empty());
}
