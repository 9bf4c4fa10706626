//! The runtime on real plugins: the `testkit` plugin built by `build.rs` plays every part —
//! success, failures, traps, runaway loops, memory bombs, huge outputs, sandbox escapes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sagahost::domain::{FailureKind, PluginName, PluginRef, PluginVersion, Side, StepFailure};
use sagahost::runtime::{Call, Limits, PluginCache, Runtime, StepConfig, UploadError};
use sagahost::secrets::SecretValue;
use sagahost::store::{MemoryStore, SledStore, Store};
use serde_json::{Value, json};

const PLUGIN_DIR: &str = env!("SAGAHOST_PLUGIN_DIR");

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(format!("{PLUGIN_DIR}/{name}.wasm")).unwrap()
}

fn testkit_ref() -> PluginRef {
    "testkit@1.0.0".parse().unwrap()
}

async fn cache_with_testkit(limits: Limits, store: Arc<dyn Store>) -> PluginCache {
    let cache = PluginCache::new(Runtime::new(limits).unwrap(), store);
    let r = testkit_ref();
    cache.upload(r.name, r.version, wasm("testkit"), 0).await.unwrap();
    cache
}

fn call(behavior: &str, side: Side, timeout_ms: u64) -> Call {
    let table = if side == Side::Execute { "behaviors" } else { "compensations" };
    Call {
        side,
        execution_id: "exec-1".into(),
        saga: "s".into(),
        step: "step".into(),
        attempt: 1,
        idempotency_key: "exec-1/step".into(),
        execution_key: None,
        deadline_unix_ms: 0,
        timeout: Duration::from_millis(timeout_ms),
        input: json!({ "input": { table: { "step": behavior } }, "results": {} }).to_string(),
        state: None,
        config: Default::default(),
        http: Default::default(),
    }
}

async fn run(cache: &PluginCache, behavior: &str) -> Result<Value, StepFailure> {
    let pre = cache.get(&testkit_ref()).await.unwrap();
    let text = cache.runtime().invoke(&pre, call(behavior, Side::Execute, 2_000)).await?.output;
    Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn default_cache() -> PluginCache {
    cache_with_testkit(Limits { max_instances: 16, ..Limits::default() }, Arc::new(MemoryStore::new())).await
}

fn assert_kind(r: Result<Value, StepFailure>, kind: FailureKind, needle: &str) {
    let e = r.expect_err("should fail");
    assert_eq!(e.kind, kind, "{e:?}");
    assert!(e.message.contains(needle), "{needle:?} not in {:?}", e.message);
}

#[tokio::test]
async fn execute_and_compensate_see_the_context() {
    let cache = default_cache().await;
    let out = run(&cache, "ok").await.unwrap();
    assert_eq!(out["execution_id"], "exec-1");
    assert_eq!(out["idempotency_key"], "exec-1/step");
    assert_eq!(out["side"], "execute");
    let pre = cache.get(&testkit_ref()).await.unwrap();
    let undo = cache.runtime().invoke(&pre, call("ok", Side::Compensate, 2_000)).await.unwrap();
    assert!(undo.output.contains("\"side\":\"compensate\""));
}

/// A value that spans lines and holds quotes (JSON-escaped in the result) is still redacted.
#[tokio::test]
async fn secret_values_are_redacted_from_results_and_failure_messages() {
    let cache = default_cache().await;
    let pre = cache.get(&testkit_ref()).await.unwrap();
    let secret = "-----BEGIN KEY-----\nAbC \"quoted\" 123\n-----END KEY-----";
    let with_secret = |behavior: &str| Call {
        config: StepConfig {
            values: [("plain".to_owned(), "not secret".to_owned())].into(),
            secrets: vec![("tls_key".into(), SecretValue::from(secret.to_owned()))],
        },
        ..call(behavior, Side::Execute, 2_000)
    };
    let done = cache.runtime().invoke(&pre, with_secret("leak:tls_key")).await.unwrap();
    assert!(!done.output.contains("AbC"), "{}", done.output);
    let out: Value = serde_json::from_str(&done.output).unwrap();
    assert_eq!(out["echo"], "[REDACTED:tls_key]");
    assert_eq!(out["sentence"], "the key is [REDACTED:tls_key].");
    assert_eq!(out["[REDACTED:tls_key]"], "as a key");
    let plain = cache.runtime().invoke(&pre, with_secret("config:plain")).await.unwrap();
    assert_eq!(plain.output, r#"{"config":"not secret"}"#, "config values beside secrets, untouched");
    let failed = cache.runtime().invoke(&pre, with_secret("leak_fail:tls_key")).await.unwrap_err();
    assert_eq!(failed.message, "refusing, the value is [REDACTED:tls_key]");
}

/// Pooled slots are reused (and only the pages a guest dirtied may be reset): no attempt may
/// see memory an earlier one wrote.
#[tokio::test]
async fn every_attempt_starts_from_fresh_memory() {
    let cache =
        cache_with_testkit(Limits { max_instances: 2, ..Limits::default() }, Arc::new(MemoryStore::new())).await;
    for round in 0..5 {
        let attempts = (0..8).map(|_| run(&cache, "residue"));
        for out in futures::future::join_all(attempts).await {
            let out = out.unwrap();
            assert_eq!(out, json!({ "dirty_bytes": 0, "generation": 7 }), "round {round}");
        }
    }
}

#[tokio::test]
async fn plugin_errors_keep_their_kind() {
    let cache = default_cache().await;
    assert_kind(run(&cache, "permanent").await, FailureKind::Permanent, "said no");
    assert_kind(run(&cache, "retryable").await, FailureKind::Retryable, "temporarily unavailable");
}

#[tokio::test]
async fn a_tight_loop_is_interrupted_at_its_timeout() {
    let cache = default_cache().await;
    let pre = cache.get(&testkit_ref()).await.unwrap();
    let started = Instant::now();
    let r = cache.runtime().invoke(&pre, call("loop", Side::Execute, 200)).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, FailureKind::Timeout);
    assert!(e.message.contains("200 ms"), "{}", e.message);
    // Not a timing assertion on speed: only that the loop did not run on unbounded.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn traps_panics_and_stack_overflows_are_step_failures() {
    let cache = default_cache().await;
    assert_kind(run(&cache, "trap").await, FailureKind::Trap, "trapped");
    assert_kind(run(&cache, "panic").await, FailureKind::Trap, "trapped");
    assert_kind(run(&cache, "panic").await, FailureKind::Trap, "plugin panicked: testkit was told to panic");
    assert_kind(run(&cache, "stack_overflow").await, FailureKind::Trap, "trapped");
    // The runtime is unharmed.
    assert!(run(&cache, "ok").await.is_ok());
}

#[tokio::test]
async fn memory_and_output_limits_name_the_limit() {
    let limits =
        Limits { max_instances: 8, max_memory_bytes: 16 << 20, max_output_bytes: 64 << 10, ..Limits::default() };
    let cache = cache_with_testkit(limits, Arc::new(MemoryStore::new())).await;
    assert_kind(run(&cache, "oom").await, FailureKind::Limit, "memory limit of 16 MiB");
    assert_kind(run(&cache, "huge_output").await, FailureKind::Limit, "output limit of 65536 bytes");
    assert!(run(&cache, "ok").await.is_ok());
}

#[tokio::test]
async fn a_log_flood_is_stopped_as_a_limit_failure() {
    let cache = default_cache().await;
    assert_kind(run(&cache, "log_flood").await, FailureKind::Limit, "log limit exceeded (1000 lines");
    assert!(run(&cache, "ok").await.is_ok());
}

#[tokio::test]
async fn the_sandbox_has_no_files_environment_or_network() {
    let cache = default_cache().await;
    let files = run(&cache, "read_file").await.unwrap();
    assert!(files["read_file"].as_str().unwrap().starts_with("Err"), "{files}");
    let env = run(&cache, "read_env").await.unwrap();
    assert_eq!(env["env_vars"], 0);
    let net = run(&cache, "open_socket").await.unwrap();
    assert!(net["open_socket"].as_str().unwrap().starts_with("Err"), "{net}");
}

#[tokio::test]
async fn uploads_are_validated_before_anything_is_stored() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache =
        PluginCache::new(Runtime::new(Limits { max_instances: 4, ..Limits::default() }).unwrap(), store.clone());
    let name = || PluginName::parse("p").unwrap();
    let v = |s: &str| PluginVersion::parse(s).unwrap();
    let empty_core_module = b"\0asm\x01\0\0\0".to_vec();
    let real = wasm("order");
    let truncated = real[..real.len() / 2].to_vec();
    for (bytes, why) in [(b"garbage".to_vec(), "garbage"), (empty_core_module, "core module"), (truncated, "truncated")]
    {
        let r = cache.upload(name(), v("1.0.0"), bytes, 0).await;
        assert!(matches!(r, Err(UploadError::Invalid(_))), "{why}: {r:?}");
    }
    for (plugin, needle) in [("wrong_world", "saga:plugin/step"), ("extra_import", "saga:plugin/vault")] {
        match cache.upload(name(), v("1.0.0"), wasm(plugin), 0).await {
            Err(UploadError::Invalid(reason)) => {
                assert!(reason.to_string().contains(needle), "{plugin}: {needle:?} not in {reason:?}")
            }
            other => panic!("{plugin} accepted: {other:?}"),
        }
    }
    assert!(store.plugins().await.unwrap().is_empty(), "nothing half-stored");
    let (meta, created) = cache.upload(name(), v("1.0.0"), real.clone(), 0).await.unwrap();
    assert!(created);
    assert_eq!(meta.size, real.len() as u64);
    let (_, created_again) = cache.upload(name(), v("1.0.0"), real, 0).await.unwrap();
    assert!(!created_again, "same bytes again");
    let other = cache.upload(name(), v("1.0.0"), wasm("payment"), 0).await;
    assert!(matches!(other, Err(UploadError::Conflict(_))));
    let big = Limits { max_instances: 4, max_plugin_bytes: 1_000, ..Limits::default() };
    let small_cache = PluginCache::new(Runtime::new(big).unwrap(), store);
    let too_large = small_cache.upload(name(), v("2.0.0"), wasm("order"), 0).await;
    assert!(matches!(too_large, Err(UploadError::TooLarge { .. })));
}

#[tokio::test]
async fn a_restarted_host_loads_the_stored_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let limits = Limits { max_instances: 4, ..Limits::default() };
    cache_with_testkit(limits.clone(), store.clone()).await;
    // A new cache (as after a restart) over the same store runs the plugin without its bytes
    // being compiled again: the artifact was stored at upload.
    let fresh = PluginCache::new(Runtime::new(limits).unwrap(), store.clone());
    let digest = sagahost::runtime::digest_of(&wasm("testkit"));
    let key = format!("{digest}-{}", fresh.runtime().engine_fingerprint());
    assert!(store.artifact(&key).await.unwrap().is_some(), "artifact stored under digest and engine");
    assert!(run(&fresh, "ok").await.is_ok());
}

#[tokio::test]
async fn the_compiled_plugin_cache_keeps_its_bound_and_reloads_what_it_evicted() {
    let limits = Limits { max_instances: 4, max_cached_plugins: 1, ..Limits::default() };
    let cache = cache_with_testkit(limits, Arc::new(MemoryStore::new())).await;
    let testkit = testkit_ref();
    let other = PluginRef { name: testkit.name.clone(), version: PluginVersion::parse("2.0.0").unwrap() };
    cache.upload(other.name.clone(), other.version.clone(), wasm("testkit"), 0).await.unwrap();
    assert_eq!(cache.len(), 1, "the upload of 2.0.0 evicted 1.0.0");
    assert!(cache.get(&other).await.is_ok());
    // 1.0.0 is loaded again from its stored artifact, evicting 2.0.0.
    assert!(run(&cache, "ok").await.is_ok());
    assert_eq!(cache.len(), 1);
    assert!(cache.get(&other).await.is_ok());
    assert_eq!(cache.len(), 1);
}
