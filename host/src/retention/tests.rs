//! The sweeper over the in-memory store, with time passed in.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::domain::{Event, EventRecord, ExecutionId, SagaDefinition};
use crate::store::{CatalogStore, Created, EventStore, IdempotencyKey, MemoryStore};

const MIN: u64 = 60_000;

fn saga(name: &str) -> SagaName {
    SagaName::parse(name).unwrap()
}

/// An execution of `name` that started at `start` and completed at `end` (0: still running).
async fn execution(store: &MemoryStore, name: &str, start: u64, end: u64, idem: Option<&str>) -> ExecutionId {
    let id = ExecutionId::new();
    let started = Event::ExecutionStarted {
        saga: saga(name),
        definition_version: 1,
        input: json!({"n": 1}),
        deadline_unix_ms: None,
        idempotency_key: idem.map(Into::into),
        key: None,
    };
    let key = idem.map(|k| IdempotencyKey { saga: saga(name), key: k.into(), fingerprint: [0; 32] });
    let first = EventRecord { seq: 1, at: start, event: started };
    assert_eq!(store.create(id, saga(name), first, key).await.unwrap(), Created::New);
    if end > 0 {
        store.append(id, 1, vec![EventRecord { seq: 2, at: end, event: Event::ExecutionCompleted }]).await.unwrap();
    }
    id
}

fn config(retain_min: u64) -> RetentionConfig {
    RetentionConfig {
        retain: Some(Duration::from_millis(retain_min * MIN)),
        idempotency_window: Duration::from_millis(1_000 * MIN),
        archive: None,
    }
}

#[tokio::test]
async fn ended_executions_go_once_their_retention_has_passed_and_nothing_else_does() {
    let store = MemoryStore::new();
    let old = execution(&store, "s", MIN, 2 * MIN, None).await;
    let young = execution(&store, "s", MIN, 9 * MIN, None).await;
    let running = execution(&store, "s", MIN, 0, None).await;
    // Retention 5 min at minute 10: ended at 2 goes, ended at 9 stays.
    let swept = sweep(&store, &config(5), 10 * MIN).await.unwrap();
    assert_eq!(swept, Swept { removed: 1, ..Swept::default() });
    assert_eq!(store.summary(old).await.unwrap(), None);
    assert!(store.summary(young).await.unwrap().is_some());
    assert!(store.summary(running).await.unwrap().is_some());
    // Forever keeps everything.
    let forever = RetentionConfig { retain: None, ..config(5) };
    assert_eq!(sweep(&store, &forever, 100 * MIN).await.unwrap(), Swept::default());
    assert_eq!(sweep(&store, &config(5), 14 * MIN).await.unwrap().removed, 1);
    assert!(store.summary(running).await.unwrap().is_some());
}

#[tokio::test]
async fn a_sagas_retain_ms_overrides_the_hosts() {
    let store = MemoryStore::new();
    let def = |retain_ms| SagaDefinition { deadline_ms: None, retain_ms, steps: Vec::new(), triggers: Vec::new() };
    store.put_definition(saga("short"), def(Some(MIN)), 0).await.unwrap();
    store.put_definition(saga("long"), def(Some(60 * MIN)), 0).await.unwrap();
    let short = execution(&store, "short", MIN, 2 * MIN, None).await;
    let long = execution(&store, "long", MIN, 2 * MIN, None).await;
    let plain = execution(&store, "plain", MIN, 2 * MIN, None).await;
    // Host: 10 min. At minute 5 only `short` (1 min) is due.
    assert_eq!(sweep(&store, &config(10), 5 * MIN).await.unwrap().removed, 1);
    assert_eq!(store.summary(short).await.unwrap(), None);
    // At minute 20 the host's 10 min have passed for `plain`, not `long`'s 60.
    assert_eq!(sweep(&store, &config(10), 20 * MIN).await.unwrap().removed, 1);
    assert_eq!(store.summary(plain).await.unwrap(), None);
    assert!(store.summary(long).await.unwrap().is_some());
    assert_eq!(sweep(&store, &config(10), 62 * MIN).await.unwrap().removed, 1);
}

#[tokio::test]
async fn removed_executions_are_archived_first_one_line_per_event() {
    let store = MemoryStore::new();
    let dir = tempfile::tempdir().unwrap();
    let a = execution(&store, "s", MIN, 2 * MIN, None).await;
    let b = execution(&store, "t", MIN, 3 * MIN, None).await;
    let kept = execution(&store, "s", MIN, 50 * MIN, None).await;
    let config = RetentionConfig { archive: Some(dir.path().join("archive")), ..config(5) };
    let swept = sweep(&store, &config, 10 * MIN).await.unwrap();
    assert_eq!(swept, Swept { removed: 2, archived: 4, keys: 0 });
    let files: Vec<_> = std::fs::read_dir(dir.path().join("archive")).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "one file per batch, no temporary left");
    let text = std::fs::read_to_string(files[0].path()).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let shown: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["execution"].as_str().unwrap(),
                l["saga"].as_str().unwrap(),
                l["seq"].as_u64().unwrap(),
                l["type"].as_str().unwrap(),
            )
        })
        .collect();
    let (a, b) = (a.to_string(), b.to_string());
    assert_eq!(
        shown,
        [
            (a.as_str(), "s", 1, "execution_started"),
            (a.as_str(), "s", 2, "execution_completed"),
            (b.as_str(), "t", 1, "execution_started"),
            (b.as_str(), "t", 2, "execution_completed")
        ]
    );
    assert_eq!(lines[0]["input"], json!({"n": 1}));
    assert!(store.summary(kept).await.unwrap().is_some());
}

#[tokio::test]
async fn an_unwritable_archive_removes_nothing() {
    let store = MemoryStore::new();
    let file = tempfile::NamedTempFile::new().unwrap();
    let id = execution(&store, "s", MIN, 2 * MIN, None).await;
    let config = RetentionConfig { archive: Some(file.path().join("under-a-file")), ..config(5) };
    assert!(sweep(&store, &config, 10 * MIN).await.is_err());
    assert!(store.summary(id).await.unwrap().is_some(), "not archived, so not removed");
}

#[tokio::test]
async fn idempotency_keys_are_forgotten_after_their_window_executions_kept() {
    let store = MemoryStore::new();
    let first = execution(&store, "s", MIN, 2 * MIN, Some("k")).await;
    let window = RetentionConfig { idempotency_window: Duration::from_millis(3 * MIN), ..config(100) };
    assert_eq!(sweep(&store, &window, 3 * MIN).await.unwrap(), Swept::default());
    assert_eq!(sweep(&store, &window, 4 * MIN).await.unwrap(), Swept { keys: 1, ..Swept::default() });
    assert!(store.summary(first).await.unwrap().is_some());
    let key = IdempotencyKey { saga: saga("s"), key: "k".into(), fingerprint: [0; 32] };
    assert_eq!(store.idempotency(&key).await.unwrap(), None);
}

#[test]
fn sweeps_come_every_quarter_of_the_shortest_retention_within_bounds() {
    let every = |retain: Option<u64>, window: u64| {
        interval(&RetentionConfig {
            retain: retain.map(Duration::from_secs),
            idempotency_window: Duration::from_secs(window),
            archive: None,
        })
    };
    assert_eq!(every(Some(120), 86_400), Duration::from_secs(30));
    assert_eq!(every(Some(7 * 86_400), 86_400), MAX_INTERVAL);
    assert_eq!(every(None, 86_400), MAX_INTERVAL);
    assert_eq!(every(Some(1), 86_400), MIN_INTERVAL);
    assert_eq!(every(None, 8), Duration::from_secs(2));
}
