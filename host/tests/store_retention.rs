//! The retention part of the store contract, run against every backend (sled, PostgreSQL when
//! `SAGAHOST_TEST_POSTGRES_URL` is set, in-memory): the index of ended executions, removal by
//! its rule, and forgetting idempotency keys.

mod common {
    pub mod postgres;
}

use std::sync::Arc;

use sagahost::domain::{Event, EventRecord, ExecutionId, ExecutionStatus, PluginName, SagaName, StepName};
use sagahost::store::{
    Created, Effects, Ended, IdempotencyKey, ListFilter, MemoryStore, QuarantineEntry, Removal, SledStore, StateKey,
    StateValue, Store, StoreError,
};
use serde_json::json;

fn saga(name: &str) -> SagaName {
    SagaName::parse(name).unwrap()
}

fn started(saga_name: &str, at: u64, idempotency_key: Option<&str>, key: Option<&str>) -> EventRecord {
    EventRecord {
        seq: 1,
        at,
        event: Event::ExecutionStarted {
            saga: saga(saga_name),
            definition_version: 1,
            input: json!({}),
            deadline_unix_ms: None,
            idempotency_key: idempotency_key.map(Into::into),
            key: key.map(Into::into),
        },
    }
}

/// An execution of `saga_name` started at `at` that completed at `ended` after one step.
async fn ended(store: &dyn Store, saga_name: &str, at: u64, end: u64, idem: Option<&str>) -> ExecutionId {
    let id = ExecutionId::new();
    let key = idem.map(|k| IdempotencyKey { saga: saga(saga_name), key: k.into(), fingerprint: [1; 32] });
    let created = store.create(id, saga(saga_name), started(saga_name, at, idem, Some("order-1")), key).await;
    assert_eq!(created.unwrap(), Created::New);
    let step = Event::StepStarted { step: StepName::parse("a").unwrap(), attempt: 1 };
    store.append(id, 1, vec![EventRecord { seq: 2, at: at + 1, event: step }]).await.unwrap();
    store.append(id, 2, vec![EventRecord { seq: 3, at: end, event: Event::ExecutionCompleted }]).await.unwrap();
    id
}

macro_rules! retention_contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn ended_executions_are_indexed_by_end_and_removed_by_the_rule() {
                let Some((store, _guard)) = $make else { return };
                removal(&*store).await;
            }

            #[tokio::test]
            async fn resumed_quarantined_and_later_recorded_executions_are_not_removed() {
                let Some((store, _guard)) = $make else { return };
                not_removed(&*store).await;
            }

            #[tokio::test]
            async fn idempotency_keys_are_forgotten_by_their_own_window() {
                let Some((store, _guard)) = $make else { return };
                forgetting(&*store).await;
            }
        }
    };
}

fn memory() -> Option<(Arc<dyn Store>, ())> {
    Some((Arc::new(MemoryStore::new()), ()))
}

fn sled() -> Option<(Arc<dyn Store>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    Some((Arc::new(SledStore::open(dir.path()).unwrap()), dir))
}

retention_contract!(memory_store, memory());
retention_contract!(sled_store, sled());
retention_contract!(postgres_store, common::postgres::store().await);

async fn removal(store: &dyn Store) {
    let early = ended(store, "r", 100, 200, None).await;
    let late = ended(store, "r", 150, 300, None).await;
    let running = ExecutionId::new();
    store.create(running, saga("r"), started("r", 120, None, None), None).await.unwrap();
    // Plugin state is never retention's.
    let entry = StateKey::new(PluginName::parse("bank").unwrap(), "accounts", "a").unwrap();
    let effects = Effects { writes: vec![(entry.clone(), Some(StateValue::Json("1".into())))], ..Effects::default() };
    let step = Event::StepStarted { step: StepName::parse("a").unwrap(), attempt: 1 };
    store.append_with_state(running, 1, vec![EventRecord { seq: 2, at: 130, event: step }], effects).await.unwrap();

    let until_200 = store.ended(200, None, 10).await.unwrap();
    assert_eq!(until_200, vec![Ended { at: 200, id: early, saga: saga("r") }]);
    let all = store.ended(u64::MAX, None, 10).await.unwrap();
    assert_eq!(all.iter().map(|e| (e.at, e.id)).collect::<Vec<_>>(), vec![(200, early), (300, late)]);
    assert_eq!(store.ended(u64::MAX, Some((200, early)), 10).await.unwrap(), all[1..].to_vec());
    assert_eq!(store.ended(u64::MAX, None, 1).await.unwrap(), all[..1].to_vec());

    // Cutoff 250: `early` goes, `late` (ended at 300) stays.
    let removals = store.remove(all.iter().map(|e| (e.clone(), 250)).collect()).await.unwrap();
    assert_eq!(removals, vec![Removal::Removed, Removal::Kept]);
    assert_eq!(store.summary(early).await.unwrap(), None);
    assert!(matches!(store.read(early, 0).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.ended(u64::MAX, None, 10).await.unwrap(), all[1..].to_vec());
    let listed = |filter: ListFilter| async move {
        store.list(&ListFilter { limit: 10, ..filter }).await.unwrap().iter().map(|s| s.id).collect::<Vec<_>>()
    };
    assert_eq!(listed(ListFilter::default()).await, vec![running, late]);
    assert_eq!(listed(ListFilter { saga: Some(saga("r")), ..ListFilter::default() }).await, vec![running, late]);
    let done = ListFilter { status: Some(ExecutionStatus::Completed), ..ListFilter::default() };
    assert_eq!(listed(done).await, vec![late]);
    assert_eq!(listed(ListFilter { key: Some("order-1".into()), ..ListFilter::default() }).await, vec![late]);
    assert_eq!(store.state_get(&entry).await.unwrap().map(|e| e.value), Some(StateValue::Json("1".into())));
    assert_eq!(store.unfinished().await.unwrap(), vec![running]);

    // Removing again finds nothing: the entry is gone; a stale copy of it is only dropped.
    let again = store.remove(vec![(all[0].clone(), u64::MAX)]).await.unwrap();
    assert_eq!(again, vec![Removal::Dropped]);
    assert_eq!(store.remove(vec![(all[1].clone(), 300)]).await.unwrap(), vec![Removal::Removed]);
    assert!(store.ended(u64::MAX, None, 10).await.unwrap().is_empty());
}

async fn not_removed(store: &dyn Store) {
    // Resumed after it failed: its entry names nothing to remove until it ends again.
    let resumed = ExecutionId::new();
    store.create(resumed, saga("n"), started("n", 10, None, None), None).await.unwrap();
    let failed = Event::ExecutionFailed { reason: "x".into() };
    store.append(resumed, 1, vec![EventRecord { seq: 2, at: 20, event: failed }]).await.unwrap();
    store.append(resumed, 2, vec![EventRecord { seq: 3, at: 30, event: Event::ResumeRequested }]).await.unwrap();
    let entries = store.ended(u64::MAX, None, 10).await.unwrap();
    assert_eq!(entries.iter().map(|e| (e.at, e.id)).collect::<Vec<_>>(), vec![(20, resumed)]);
    assert_eq!(store.remove(vec![(entries[0].clone(), u64::MAX)]).await.unwrap(), vec![Removal::Dropped]);
    assert!(store.summary(resumed).await.unwrap().is_some());
    // It ends again: a new entry, and removal takes the whole stream.
    let compensated = EventRecord { seq: 4, at: 40, event: Event::ExecutionCompensated };
    store.append(resumed, 3, vec![compensated]).await.unwrap();
    let entries = store.ended(u64::MAX, None, 10).await.unwrap();
    assert_eq!(entries.iter().map(|e| (e.at, e.id)).collect::<Vec<_>>(), vec![(40, resumed)]);
    assert_eq!(store.remove(vec![(entries[0].clone(), 39)]).await.unwrap(), vec![Removal::Kept]);
    assert_eq!(store.remove(vec![(entries[0].clone(), 40)]).await.unwrap(), vec![Removal::Removed]);
    assert_eq!(store.summary(resumed).await.unwrap(), None);

    // Quarantined: left for an operator, whatever its age.
    let odd = ended(store, "n", 50, 60, None).await;
    store.quarantine(QuarantineEntry { id: odd, reason: "unreadable".into(), at: 70 }).await.unwrap();
    let entries = store.ended(u64::MAX, None, 10).await.unwrap();
    assert_eq!(store.remove(vec![(entries[0].clone(), u64::MAX)]).await.unwrap(), vec![Removal::Dropped]);
    assert!(store.summary(odd).await.unwrap().is_some());
    assert!(store.quarantined(odd).await.unwrap().is_some());
    assert!(store.ended(u64::MAX, None, 10).await.unwrap().is_empty());
}

async fn forgetting(store: &dyn Store) {
    let key = |k: &str| IdempotencyKey { saga: saga("f"), key: k.into(), fingerprint: [1; 32] };
    let old = ended(store, "f", 100, 110, Some("k-old")).await;
    let new = ended(store, "f", 500, 510, Some("k-new")).await;
    let made = store.keys_made(100, 10).await.unwrap();
    assert_eq!(made.iter().map(|m| (m.at, m.key.as_str(), m.id)).collect::<Vec<_>>(), vec![(100, "k-old", old)]);
    assert_eq!(store.keys_made(u64::MAX, 1).await.unwrap(), made);
    assert_eq!(store.forget_keys(made.clone()).await.unwrap(), 1);
    assert_eq!(store.idempotency(&key("k-old")).await.unwrap(), None);
    assert_eq!(store.idempotency(&key("k-new")).await.unwrap(), Some((new, Some([1; 32]))));
    assert!(store.summary(old).await.unwrap().is_some(), "the execution stays: only its key is forgotten");
    // The key is free again: a trigger with it starts a new execution.
    let again = ExecutionId::new();
    let created = store.create(again, saga("f"), started("f", 600, Some("k-old"), None), Some(key("k-old"))).await;
    assert_eq!(created.unwrap(), Created::New);
    // The stale entry of the first use does not forget the second.
    assert_eq!(store.forget_keys(made).await.unwrap(), 0);
    assert_eq!(store.idempotency(&key("k-old")).await.unwrap(), Some((again, Some([1; 32]))));
    let left = store.keys_made(u64::MAX, 10).await.unwrap();
    assert_eq!(left.iter().map(|m| m.id).collect::<Vec<_>>(), vec![new, again]);
}
