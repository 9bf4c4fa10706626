//! Plugin state on real plugins: what an attempt sees and hands back (runtime), and what the
//! orchestrator commits with the step's events — nothing from failed attempts, nothing lost
//! under concurrent read-modify-writes. On every store: memory, sled and PostgreSQL (when
//! `SAGAHOST_TEST_POSTGRES_URL` is set).

mod common {
    pub mod postgres;
}

use std::sync::Arc;
use std::time::Duration;

use sagahost::clock::SystemClock;
use sagahost::domain::{Event, ExecutionStatus, FailureKind, PluginName, PluginRef, SagaName, Side};
use sagahost::orchestrator::{Orchestrator, OrchestratorConfig};
use sagahost::runtime::{Call, Completed, Limits, PluginCache, Runtime, StateLimits, StateScope};
use sagahost::store::{Effects, MemoryStore, SledStore, StateKey, StateValue, Store};
use serde_json::{Value, json};

const PLUGIN_DIR: &str = env!("SAGAHOST_PLUGIN_DIR");

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(format!("{PLUGIN_DIR}/{name}.wasm")).unwrap()
}

fn name(s: &str) -> PluginName {
    PluginName::parse(s).unwrap()
}

fn key(plugin: &str, collection: &str, k: &str) -> StateKey {
    StateKey::new(name(plugin), collection, k).unwrap()
}

/// `testkit` (and the same bytes as `other`) in a cache over `store`.
async fn cache(limits: Limits, store: Arc<dyn Store>) -> PluginCache {
    let cache = PluginCache::new(Runtime::new(limits).unwrap(), store);
    for n in ["testkit", "other"] {
        cache
            .upload(name(n), sagahost::domain::PluginVersion::parse("1.0.0").unwrap(), wasm("testkit"), 0)
            .await
            .unwrap();
    }
    cache
}

/// Runs `ops` (then `behavior`) as `plugin`'s execute, with state in `store`.
async fn attempt(
    cache: &PluginCache,
    store: &Arc<dyn Store>,
    plugin: &str,
    ops: Value,
    behavior: &str,
) -> Result<(Value, Effects), sagahost::domain::StepFailure> {
    let r: PluginRef = format!("{plugin}@1.0.0").parse().unwrap();
    let pre = cache.get(&r).await.unwrap();
    let call = Call {
        side: Side::Execute,
        execution_id: "exec-1".into(),
        saga: "s".into(),
        step: "step".into(),
        attempt: 1,
        idempotency_key: "exec-1/step".into(),
        execution_key: None,
        deadline_unix_ms: 0,
        timeout: Duration::from_secs(2),
        input: json!({ "input": { "state": { "step": ops }, "behaviors": { "step": behavior } }, "results": {} })
            .to_string(),
        state: Some(StateScope { plugin: name(plugin), store: store.clone() }),
        config: Default::default(),
        http: Default::default(),
    };
    let Completed { output, effects: state } = cache.runtime().invoke(&pre, call).await?;
    let out: Value = serde_json::from_str(&output).unwrap();
    Ok((out["state"].clone(), state))
}

/// Commits `writes` as if a step had completed with them.
async fn commit(store: &Arc<dyn Store>, writes: Vec<(StateKey, Option<StateValue>)>) {
    let id = sagahost::domain::ExecutionId::new();
    let first = sagahost::domain::EventRecord {
        seq: 1,
        at: 0,
        event: Event::ExecutionStarted {
            saga: SagaName::parse("s").unwrap(),
            definition_version: 1,
            input: json!({}),
            deadline_unix_ms: None,
            idempotency_key: None,
            key: None,
        },
    };
    store.create(id, SagaName::parse("s").unwrap(), first.clone(), None).await.unwrap();
    let step = sagahost::domain::EventRecord {
        seq: 2,
        at: 0,
        event: Event::StepStarted { step: sagahost::domain::StepName::parse("a").unwrap(), attempt: 1 },
    };
    store.append_with_state(id, 1, vec![step], Effects { reads: vec![], writes, events: Vec::new() }).await.unwrap();
}

/// Runs the plugin-state suite against the store `make` returns (`None`: not configured).
macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn an_attempt_reads_committed_state_plus_its_own_writes() {
                let Some((store, _guard)) = $make else { return };
                super::an_attempt_reads_committed_state_plus_its_own_writes(store).await;
            }

            #[tokio::test]
            async fn compare_and_set_checks_the_version_the_attempt_sees() {
                let Some((store, _guard)) = $make else { return };
                super::compare_and_set_checks_the_version_the_attempt_sees(store).await;
            }

            #[tokio::test]
            async fn plugins_cannot_see_each_others_state() {
                let Some((store, _guard)) = $make else { return };
                super::plugins_cannot_see_each_others_state(store).await;
            }

            #[tokio::test]
            async fn bad_keys_values_and_sizes_are_refused_to_the_plugin() {
                let Some((store, _guard)) = $make else { return };
                super::bad_keys_values_and_sizes_are_refused_to_the_plugin(store).await;
            }

            #[tokio::test]
            async fn without_a_store_state_calls_answer_unavailable_and_0_1_plugins_still_run() {
                let Some((store, _guard)) = $make else { return };
                super::without_a_store_state_calls_answer_unavailable_and_0_1_plugins_still_run(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn failed_attempts_leave_no_writes_and_completions_commit_theirs() {
                let Some((store, _guard)) = $make else { return };
                super::failed_attempts_leave_no_writes_and_completions_commit_theirs(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_increments_of_one_entry_lose_no_update() {
                let Some((store, _guard)) = $make else { return };
                super::concurrent_increments_of_one_entry_lose_no_update(store).await;
            }
        }
    };
}

suite!(memory_store, Some((Arc::new(MemoryStore::new()) as Arc<dyn Store>, ())));
suite!(sled_store, sled());
suite!(postgres_store, common::postgres::store().await);

fn sled() -> Option<(Arc<dyn Store>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    Some((Arc::new(SledStore::open(dir.path()).unwrap()), dir))
}

async fn an_attempt_reads_committed_state_plus_its_own_writes(store: Arc<dyn Store>) {
    let cache = cache(Limits::default(), store.clone()).await;
    commit(&store, vec![(key("testkit", "c", "alice"), Some(StateValue::Json("1".into())))]).await;
    let v = store.state_get(&key("testkit", "c", "alice")).await.unwrap().unwrap().version;
    let ops = json!([
        {"get": ["c", "alice"]},
        {"set": ["c", "alice", 2]},
        {"get": ["c", "alice"]},
        {"get": ["c", "bob"]},
        {"set_bytes": ["c", "blob", "hi"]},
        {"get": ["c", "blob"]},
        {"delete": ["c", "alice"]},
        {"get": ["c", "alice"]},
    ]);
    let (seen, changes) = attempt(&cache, &store, "testkit", ops, "ok").await.unwrap();
    assert_eq!(seen[0], json!({"json": 1, "version": v}));
    assert_eq!(seen[2], json!({"json": 2, "version": 0}), "own writes read back at version 0");
    assert_eq!(seen[3], Value::Null);
    assert_eq!(seen[5], json!({"bytes": "hi", "version": 0}));
    assert_eq!(seen[7], Value::Null, "own delete");
    let mut reads = changes.reads.clone();
    reads.sort();
    assert_eq!(reads, [(key("testkit", "c", "alice"), v), (key("testkit", "c", "bob"), 0)]);
    assert_eq!(
        changes.writes,
        [(key("testkit", "c", "alice"), None), (key("testkit", "c", "blob"), Some(StateValue::Bytes(b"hi".to_vec())))]
    );
    // Nothing is written until the store commits the changes.
    assert_eq!(store.state_get(&key("testkit", "c", "alice")).await.unwrap().unwrap().version, v);
}

async fn compare_and_set_checks_the_version_the_attempt_sees(store: Arc<dyn Store>) {
    let cache = cache(Limits::default(), store.clone()).await;
    commit(&store, vec![(key("testkit", "c", "k"), Some(StateValue::Json("\"a\"".into())))]).await;
    let v = store.state_get(&key("testkit", "c", "k")).await.unwrap().unwrap().version;
    let ops = json!([
        {"cas": ["c", "k", v + 1, "wrong base"]},
        {"cas": ["c", "k", null, "must be absent"]},
        {"cas": ["c", "k", v, "b"]},
        {"cas": ["c", "k", 0, "c"]},
        {"cas": ["c", "new", null, "created"]},
        {"cas": ["c", "new", 0, null]},
        {"get": ["c", "k"]},
    ]);
    let (seen, changes) = attempt(&cache, &store, "testkit", ops, "ok").await.unwrap();
    assert_eq!(seen, json!([false, false, true, true, true, true, {"json": "c", "version": 0}]));
    assert_eq!(
        changes.writes,
        [(key("testkit", "c", "k"), Some(StateValue::Json("\"c\"".into()))), (key("testkit", "c", "new"), None)]
    );
}

async fn plugins_cannot_see_each_others_state(store: Arc<dyn Store>) {
    let cache = cache(Limits::default(), store.clone()).await;
    commit(&store, vec![(key("testkit", "c", "secret"), Some(StateValue::Json("42".into())))]).await;
    let (seen, changes) =
        attempt(&cache, &store, "other", json!([{"get": ["c", "secret"]}, {"set": ["c", "secret", 0]}]), "ok")
            .await
            .unwrap();
    assert_eq!(seen[0], Value::Null);
    assert_eq!(changes.writes[0].0.plugin, name("other"), "writes land in the writer's own namespace");
    assert_eq!(changes.reads[0].0.plugin, name("other"));
}

async fn bad_keys_values_and_sizes_are_refused_to_the_plugin(store: Arc<dyn Store>) {
    let limits = Limits {
        state: StateLimits { max_value_bytes: 16, max_writes: 2, max_write_bytes: 1 << 20, max_reads: 3 },
        ..Limits::default()
    };
    let cache = cache(limits, store.clone()).await;
    let long_key = "k".repeat(513);
    let ops = json!([
        {"set": ["c", "", 1]},
        {"set": ["c", "a\u{0}b", 1]},
        {"get": ["c", long_key]},
        {"set_raw": ["c", "k", "{not json"]},
        {"set": ["c", "k", "a value longer than sixteen bytes"]},
        {"set": ["c", "w1", 1]},
        {"set": ["c", "w2", 2]},
        {"set": ["c", "w3", 3]},
        {"set": ["c", "w1", 4]},
        {"get": ["c", "r1"]}, {"get": ["c", "r2"]}, {"get": ["c", "r3"]}, {"get": ["c", "r4"]},
    ]);
    let (seen, changes) = attempt(&cache, &store, "testkit", ops, "ok").await.unwrap();
    let error = |i: usize| seen[i]["error"].as_str().unwrap_or_default().to_string();
    assert!(error(0).contains("Invalid") && error(0).contains("empty"), "{}", error(0));
    assert!(error(1).contains("NUL"), "{}", error(1));
    assert!(error(2).contains("longer than 512"), "{}", error(2));
    assert!(error(3).contains("not JSON"), "{}", error(3));
    assert!(error(4).contains("Limit") && error(4).contains("exceeds the limit of 16 bytes"), "{}", error(4));
    assert_eq!((seen[5].clone(), seen[6].clone()), (Value::Null, Value::Null));
    assert!(error(7).contains("more than 2 entries written"), "{}", error(7));
    assert_eq!(seen[8], Value::Null, "rewriting an entry already written is not a new write");
    assert!(error(12).contains("more than 3 entries read"), "{}", error(12));
    assert_eq!(changes.writes.len(), 2);
}

async fn without_a_store_state_calls_answer_unavailable_and_0_1_plugins_still_run(store: Arc<dyn Store>) {
    let cache = cache(Limits::default(), store.clone()).await;
    let pre = cache.get(&"testkit@1.0.0".parse().unwrap()).await.unwrap();
    let call = |input: Value| Call {
        side: Side::Execute,
        execution_id: "e".into(),
        saga: "s".into(),
        step: "step".into(),
        attempt: 1,
        idempotency_key: "e/step".into(),
        execution_key: None,
        deadline_unix_ms: 0,
        timeout: Duration::from_secs(2),
        input: json!({ "input": input, "results": {} }).to_string(),
        state: None,
        config: Default::default(),
        http: Default::default(),
    };
    let out = cache.runtime().invoke(&pre, call(json!({"state": {"step": [{"get": ["c", "k"]}]}}))).await.unwrap();
    assert!(out.output.contains("Unavailable"), "{}", out.output);

    // A component built against saga:plugin@0.1.0 (no state interface) uploads and runs.
    let legacy: PluginRef = "legacy@0.1.0".parse().unwrap();
    cache.upload(legacy.name.clone(), legacy.version.clone(), wasm("legacy_v0_1"), 0).await.unwrap();
    let pre = cache.get(&legacy).await.unwrap();
    assert_eq!(pre.world(), "saga:plugin@0.1.0");
    let out = cache.runtime().invoke(&pre, call(json!({}))).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out.output).unwrap(),
        json!({"world": "0.1.0", "step": "step", "attempt": 1})
    );
    assert!(out.effects.is_empty());
}

/// An orchestrator over `store` with `testkit` uploaded and a saga of `steps`, each retried
/// up to `attempts` times, 1 ms apart.
async fn saga(store: Arc<dyn Store>, steps: &[&str], attempts: u32) -> (Arc<Orchestrator>, SagaName) {
    let runtime = Runtime::new(Limits { max_instances: 32, ..Limits::default() }).unwrap();
    let plugins = Arc::new(PluginCache::new(runtime, store.clone()));
    let orch = Orchestrator::new(store, plugins, Arc::new(SystemClock), OrchestratorConfig::default());
    orch.plugins()
        .upload(name("testkit"), sagahost::domain::PluginVersion::parse("1.0.0").unwrap(), wasm("testkit"), 0)
        .await
        .unwrap();
    let retry = json!({"max_attempts": attempts, "initial_backoff_ms": 1, "multiplier": 1.5, "max_backoff_ms": 20});
    let steps: Vec<_> = steps
        .iter()
        .map(|s| json!({"name": s, "plugin": "testkit@1.0.0", "timeout_ms": 500, "retry": retry}))
        .collect();
    let saga = SagaName::parse("stateful").unwrap();
    orch.put_definition(saga.clone(), json!({ "steps": steps }).to_string().as_bytes()).await.unwrap();
    (orch, saga)
}

async fn run(orch: &Orchestrator, saga: &SagaName, input: Value) -> sagahost::domain::Execution {
    let started = orch.start(saga, input, None).await.unwrap();
    orch.wait_terminal(started.id, Duration::from_secs(30)).await.unwrap().expect("terminal")
}

async fn counter(store: &Arc<dyn Store>, k: &str) -> Option<Value> {
    let entry = store.state_get(&key("testkit", "c", k)).await.unwrap()?;
    let StateValue::Json(text) = entry.value else { panic!("bytes") };
    Some(serde_json::from_str(&text).unwrap())
}

async fn failed_attempts_leave_no_writes_and_completions_commit_theirs(store: Arc<dyn Store>) {
    let (orch, saga) = saga(store.clone(), &["a", "b"], 3).await;
    let writes = |k: &str| json!([{"set": ["c", k, "written"]}]);
    // Every way an attempt can fail after writing: none of its writes are kept.
    for (i, behavior) in ["permanent", "trap", "loop", "retryable", "huge_output", "not_json"].iter().enumerate() {
        let k = format!("failed-{i}");
        let exec = run(&orch, &saga, json!({"state": {"a": writes(&k)}, "behaviors": {"a": behavior}})).await;
        assert_eq!(exec.status, ExecutionStatus::Compensated, "{behavior}");
        assert_eq!(counter(&store, &k).await, None, "{behavior} left a write behind");
    }
    // A retried step: only the successful attempt's read-modify-write counts.
    let exec =
        run(&orch, &saga, json!({"state": {"a": [{"add": ["c", "tries", 1]}]}, "behaviors": {"a": "fail_until:3"}}))
            .await;
    assert_eq!(exec.status, ExecutionStatus::Completed);
    assert_eq!(counter(&store, "tries").await, Some(json!(1)));
    // A compensation's writes commit with its completion: step a writes, b fails, a's
    // compensation overwrites.
    let input = json!({
        "state": {"a": writes("undo-me")},
        "compensation_state": {"a": [{"set": ["c", "undo-me", "undone"]}]},
        "behaviors": {"b": "permanent"},
    });
    assert_eq!(run(&orch, &saga, input).await.status, ExecutionStatus::Compensated);
    assert_eq!(counter(&store, "undo-me").await, Some(json!("undone")));
}

async fn concurrent_increments_of_one_entry_lose_no_update(store: Arc<dyn Store>) {
    let (orch, saga) = saga(store.clone(), &["a"], 200).await;
    let input = json!({"state": {"a": [{"add": ["c", "n", 1]}]}});
    let runs = (0..60).map(|_| run(&orch, &saga, input.clone()));
    let views = futures::future::join_all(runs).await;
    assert!(views.iter().all(|v| v.status == ExecutionStatus::Completed));
    assert_eq!(counter(&store, "n").await, Some(json!(60)), "every increment counted once");
    let mut conflicts = 0;
    for v in &views {
        for r in orch.events(v.id, 0).await.unwrap() {
            if let Event::StepFailed { error, .. } = r.event {
                assert_eq!(error.kind, FailureKind::Conflict, "{error:?}");
                conflicts += 1;
            }
        }
    }
    eprintln!("60 concurrent increments: {conflicts} attempts rejected with a state conflict and retried");
}
