//! The sled store's online backup: writes made while the scan runs end up in the copy, which
//! reads back exactly as the store does at the end.

use sagahost::domain::{Event, EventRecord, ExecutionId, SagaName};
use sagahost::store::{EventStore, ListFilter, Restore, SledStore};
use serde_json::json;

fn started(at: u64) -> EventRecord {
    let event = Event::ExecutionStarted {
        saga: SagaName::parse("b").unwrap(),
        definition_version: 1,
        input: json!({"at": at}),
        deadline_unix_ms: None,
        idempotency_key: None,
        key: None,
    };
    EventRecord { seq: 1, at, event }
}

async fn create(store: &SledStore, n: u64) -> Vec<ExecutionId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = ExecutionId::new();
        store.create(id, SagaName::parse("b").unwrap(), started(i), None).await.unwrap();
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_during_the_scan_are_in_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("live")).unwrap();
    // Enough pairs that the scan waits for its reader (4 chunks of 1,024 are buffered).
    let before = create(&store, 3_000).await;
    let mut chunks = store.backup().await.unwrap();
    assert!(store.backup().await.is_err(), "one backup at a time");
    let first = chunks.recv().await.unwrap().unwrap();
    // While the scan is stopped mid-way: end some executions, start others.
    for id in before.iter().step_by(10) {
        store.append(*id, 1, vec![EventRecord { seq: 2, at: 9, event: Event::ExecutionCompleted }]).await.unwrap();
    }
    let during = create(&store, 200).await;
    let mut restore = Restore::create(&dir.path().join("copy")).unwrap();
    restore.apply(first).unwrap();
    while let Some(chunk) = chunks.recv().await {
        restore.apply(chunk.unwrap()).unwrap();
    }
    restore.finish().unwrap();
    assert!(store.backup().await.is_ok(), "the next backup may start once one is done");

    let copy = SledStore::open(&dir.path().join("copy")).unwrap();
    let all = ListFilter { limit: 10_000, ..ListFilter::default() };
    let (live, copied) = (store.list(&all).await.unwrap(), copy.list(&all).await.unwrap());
    assert_eq!(copied.len(), 3_200);
    assert_eq!(copied, live);
    for id in before.iter().step_by(10).chain(&during) {
        assert_eq!(copy.read(*id, 0).await.unwrap(), store.read(*id, 0).await.unwrap());
    }
}
