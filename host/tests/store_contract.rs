//! The store contract: one suite, run against every backend (sled, PostgreSQL when
//! `SAGAHOST_TEST_POSTGRES_URL` is set, and in-memory), plus a model-based property test of
//! appends against a plain `BTreeMap`.

mod common {
    pub mod postgres;
}

use std::collections::BTreeMap;
use std::sync::Arc;

use common::postgres::Scratch;
use proptest::prelude::*;
use sagahost::domain::definition::{DefinitionLimits, parse_definition};
use sagahost::domain::{
    Event, EventRecord, ExecutionId, ExecutionStatus, PluginName, PluginVersion, SagaName, StepName,
};
use sagahost::store::{
    Claim, Created, DefinitionPut, Effects, EventStore, IdempotencyKey, ListFilter, MemoryStore, PgStore, PluginMeta,
    PluginPut, PostgresConfig, QuarantineEntry, SledStore, StateKey, StateStore, StateValue, Store, StoreError,
};
use serde_json::json;

fn saga(name: &str) -> SagaName {
    SagaName::parse(name).unwrap()
}

fn started(saga_name: &str) -> EventRecord {
    EventRecord {
        seq: 1,
        at: 10,
        event: Event::ExecutionStarted {
            saga: saga(saga_name),
            definition_version: 1,
            input: json!({}),
            deadline_unix_ms: None,
            idempotency_key: None,
            key: None,
        },
    }
}

fn step_started(seq: u64) -> EventRecord {
    EventRecord { seq, at: 20 + seq, event: Event::StepStarted { step: StepName::parse("a").unwrap(), attempt: 1 } }
}

fn at(seq: u64, event: Event) -> EventRecord {
    EventRecord { seq, at: 20 + seq, event }
}

async fn new_execution(store: &dyn Store, saga_name: &str) -> ExecutionId {
    let id = ExecutionId::new();
    assert_eq!(store.create(id, saga(saga_name), started(saga_name), None).await.unwrap(), Created::New);
    id
}

/// Runs every contract test against the store `make` returns.
macro_rules! contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn appends_at_the_expected_version_and_reads_back_in_order() {
                let Some((store, _guard)) = $make else { return };
                appends_at_the_expected_version(&*store).await;
            }

            #[tokio::test]
            async fn rejects_conflicting_and_gapped_appends() {
                let Some((store, _guard)) = $make else { return };
                rejects_conflicts(&*store).await;
            }

            #[tokio::test]
            async fn concurrent_writers_at_one_version_one_wins() {
                let Some((store, _guard)) = $make else { return };
                one_of_two_writers_wins(store).await;
            }

            #[tokio::test]
            async fn idempotency_keys_return_the_first_execution() {
                let Some((store, _guard)) = $make else { return };
                idempotency(&*store).await;
            }

            #[tokio::test]
            async fn status_indexes_list_and_page_newest_first() {
                let Some((store, _guard)) = $make else { return };
                listing(&*store).await;
            }

            #[tokio::test]
            async fn plugins_are_immutable_per_version() {
                let Some((store, _guard)) = $make else { return };
                plugins(&*store).await;
            }

            #[tokio::test]
            async fn definitions_are_versioned() {
                let Some((store, _guard)) = $make else { return };
                definitions(&*store).await;
            }

            #[tokio::test]
            async fn state_commits_with_the_append_or_not_at_all() {
                let Some((store, _guard)) = $make else { return };
                state_commits_with_the_append(&*store).await;
            }

            #[tokio::test]
            async fn state_versions_are_never_reused_and_namespaces_list_apart() {
                let Some((store, _guard)) = $make else { return };
                state_versions_and_listing(&*store).await;
            }

            #[tokio::test]
            async fn concurrent_read_modify_writes_of_one_entry_one_wins() {
                let Some((store, _guard)) = $make else { return };
                one_of_two_state_writers_wins(store).await;
            }

            #[tokio::test]
            async fn quarantined_executions_are_listed_failed_and_not_driven() {
                let Some((store, _guard)) = $make else { return };
                quarantine(&*store).await;
            }

            #[tokio::test]
            async fn the_topic_log_keeps_each_id_once_in_order_with_its_cursors() {
                let Some((store, _guard)) = $make else { return };
                topic_log(store).await;
            }

            #[tokio::test]
            async fn executions_are_listed_by_business_key() {
                let Some((store, _guard)) = $make else { return };
                business_keys(&*store).await;
            }

            #[tokio::test]
            async fn secret_records_are_stored_replaced_listed_and_deleted() {
                let Some((store, _guard)) = $make else { return };
                secret_records(store).await;
            }

            #[tokio::test]
            async fn subscriptions_keep_their_cursor_and_dead_letters_until_deleted() {
                let Some((store, _guard)) = $make else { return };
                subscriptions(store).await;
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

contract!(memory_store, memory());
contract!(sled_store, sled());
contract!(postgres_store, common::postgres::store().await);

async fn appends_at_the_expected_version(store: &dyn Store) {
    let id = new_execution(store, "s").await;
    store.append(id, 1, vec![step_started(2), at(3, Event::ExecutionCompleted)]).await.unwrap();
    let all = store.read(id, 0).await.unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[2].event, Event::ExecutionCompleted);
    assert_eq!(store.read(id, 2).await.unwrap().len(), 1, "read after a sequence number");
    let summary = store.summary(id).await.unwrap().unwrap();
    assert_eq!((summary.version, summary.status), (3, ExecutionStatus::Completed));
    assert!(matches!(store.read(ExecutionId::new(), 0).await, Err(StoreError::NotFound(_))));

    // Writes of several records (a create with the first step's start, appends of three and
    // of one): a read after any sequence number returns exactly the later records.
    let id = ExecutionId::new();
    let created = store.create_with(id, saga("s"), vec![started("s"), step_started(2)], None).await.unwrap();
    assert_eq!(created, Created::New);
    store.append(id, 2, vec![step_started(3), step_started(4), step_started(5)]).await.unwrap();
    store.append(id, 5, vec![step_started(6)]).await.unwrap();
    // Appends that keep the status still move the summary's version and update time.
    let s = store.summary(id).await.unwrap().unwrap();
    assert_eq!((s.version, s.updated_at, s.created_at, s.status), (6, 26, 10, ExecutionStatus::Running));
    let listed = store.list(&ListFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(listed.iter().find(|l| l.id == id), Some(&s));
    for after in 0..=6 {
        let seqs: Vec<u64> = store.read(id, after).await.unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (after + 1..=6).collect::<Vec<_>>(), "read after {after}");
    }
}

async fn rejects_conflicts(store: &dyn Store) {
    let id = new_execution(store, "s").await;
    store.append(id, 1, vec![step_started(2)]).await.unwrap();
    let stale = store.append(id, 1, vec![step_started(2)]).await;
    assert!(matches!(stale, Err(StoreError::Conflict { expected: 1, actual: 2, .. })), "{stale:?}");
    let gap = store.append(id, 2, vec![step_started(4)]).await;
    assert!(matches!(gap, Err(StoreError::BadSequence(3))), "{gap:?}");
    let missing = store.append(ExecutionId::new(), 0, vec![step_started(1)]).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
    assert_eq!(store.read(id, 0).await.unwrap().len(), 2, "nothing from the rejected appends");
    let dup = store.create(id, saga("s"), started("s"), None).await;
    assert!(matches!(dup, Err(StoreError::Conflict { .. })), "a stream is created once");
}

async fn one_of_two_writers_wins(store: Arc<dyn Store>) {
    for _ in 0..20 {
        let id = new_execution(&*store, "s").await;
        let a = {
            let store = store.clone();
            tokio::spawn(async move { store.append(id, 1, vec![at(2, Event::CancelRequested)]).await })
        };
        let b = {
            let store = store.clone();
            tokio::spawn(async move { store.append(id, 1, vec![step_started(2)]).await })
        };
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert!(a.is_ok() != b.is_ok(), "exactly one wins: {a:?} {b:?}");
        let loser = if a.is_ok() { b } else { a };
        assert!(matches!(loser, Err(StoreError::Conflict { expected: 1, actual: 2, .. })));
        assert_eq!(store.read(id, 0).await.unwrap().len(), 2, "nothing merged");
    }
}

async fn idempotency(store: &dyn Store) {
    let key = |k: &str, s: &str| Some(IdempotencyKey { saga: saga(s), key: k.into(), fingerprint: [7; 32] });
    let first = ExecutionId::new();
    assert_eq!(store.create(first, saga("s"), started("s"), key("k1", "s")).await.unwrap(), Created::New);
    let again = store.create(ExecutionId::new(), saga("s"), started("s"), key("k1", "s")).await.unwrap();
    assert_eq!(again, Created::Existing(first));
    let other_request = Some(IdempotencyKey { saga: saga("s"), key: "k1".into(), fingerprint: [8; 32] });
    let reused = store.create(ExecutionId::new(), saga("s"), started("s"), other_request).await.unwrap();
    assert_eq!(reused, Created::KeyReused(first), "the same key with another request is refused");
    let other_saga = store.create(ExecutionId::new(), saga("t"), started("t"), key("k1", "t")).await.unwrap();
    assert_eq!(other_saga, Created::New, "keys are scoped to their saga");
    assert_eq!(store.idempotency(&key("k1", "s").unwrap()).await.unwrap(), Some((first, Some([7; 32]))));
    assert_eq!(store.idempotency(&key("k2", "s").unwrap()).await.unwrap(), None);
}

async fn listing(store: &dyn Store) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = new_execution(store, if i % 2 == 0 { "even" } else { "odd" }).await;
        ids.push(id);
    }
    store
        .append(
            ids[0],
            1,
            vec![at(2, Event::CompensationStarted { reason: "x".into() }), at(3, Event::ExecutionCompensated)],
        )
        .await
        .unwrap();
    store.append(ids[1], 1, vec![at(2, Event::CompensationStarted { reason: "x".into() })]).await.unwrap();
    let all = store.list(&ListFilter { limit: 10, ..Default::default() }).await.unwrap();
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    assert_eq!(all.iter().map(|s| s.id).collect::<Vec<_>>(), newest_first);
    let even = store.list(&ListFilter { saga: Some(saga("even")), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(even.iter().map(|s| s.id).collect::<Vec<_>>(), [ids[4], ids[2], ids[0]]);
    let compensated = store
        .list(&ListFilter { status: Some(ExecutionStatus::Compensated), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(compensated.iter().map(|s| s.id).collect::<Vec<_>>(), [ids[0]]);
    let even_running = store
        .list(&ListFilter {
            saga: Some(saga("even")),
            status: Some(ExecutionStatus::Running),
            limit: 10,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(even_running.iter().map(|s| s.id).collect::<Vec<_>>(), [ids[4], ids[2]]);
    let page1 = store.list(&ListFilter { limit: 2, ..Default::default() }).await.unwrap();
    let page2 = store.list(&ListFilter { limit: 2, after: Some(page1[1].id), ..Default::default() }).await.unwrap();
    assert_eq!(page2.iter().map(|s| s.id).collect::<Vec<_>>(), [ids[2], ids[1]]);
    let mut unfinished = store.unfinished().await.unwrap();
    unfinished.sort();
    let mut expected = vec![ids[1], ids[2], ids[3], ids[4]];
    expected.sort();
    assert_eq!(unfinished, expected, "running and compensating, not terminal");
}

async fn plugins(store: &dyn Store) {
    let meta = |digest: &str| PluginMeta {
        name: PluginName::parse("pay").unwrap(),
        version: PluginVersion::parse("1.0.0").unwrap(),
        digest: digest.into(),
        size: 3,
        uploaded_at: 1,
    };
    let put = store.put_plugin(meta("aa"), b"abc".to_vec(), Some(("aa-e".into(), b"compiled".to_vec()))).await.unwrap();
    assert_eq!(put, PluginPut::Created);
    assert!(matches!(store.put_plugin(meta("aa"), b"abc".to_vec(), None).await.unwrap(), PluginPut::Unchanged(_)));
    assert!(
        matches!(store.put_plugin(meta("bb"), b"xyz".to_vec(), None).await.unwrap(), PluginPut::Conflict(m) if m.digest == "aa")
    );
    assert_eq!(store.plugin_bytes("aa").await.unwrap().unwrap(), b"abc");
    assert_eq!(store.plugin_bytes("bb").await.unwrap(), None, "nothing of the refused upload stored");
    assert_eq!(store.artifact("aa-e").await.unwrap().unwrap(), b"compiled");
    assert_eq!(store.plugins().await.unwrap(), vec![meta("aa")]);
}

async fn definitions(store: &dyn Store) {
    let def = |timeout: u64| {
        let json = json!({"steps": [{"name": "a", "plugin": "p@1.0.0", "timeout_ms": timeout}]});
        parse_definition(json.to_string().as_bytes(), &DefinitionLimits::default(), |_| true).unwrap()
    };
    let (v1, put) = store.put_definition(saga("s"), def(10), 1).await.unwrap();
    assert_eq!((v1.version, put), (1, DefinitionPut::Created));
    let (same, put) = store.put_definition(saga("s"), def(10), 2).await.unwrap();
    assert_eq!((same.version, put), (1, DefinitionPut::Unchanged));
    let (v2, put) = store.put_definition(saga("s"), def(20), 3).await.unwrap();
    assert_eq!((v2.version, put), (2, DefinitionPut::Replaced));
    assert_eq!(store.definition(&saga("s"), None).await.unwrap().unwrap().version, 2);
    assert_eq!(store.definition(&saga("s"), Some(1)).await.unwrap().unwrap().definition, def(10));
    store.put_definition(saga("t"), def(5), 4).await.unwrap();
    let latest: Vec<_> =
        store.definitions().await.unwrap().into_iter().map(|d| (d.name.to_string(), d.version)).collect();
    assert_eq!(latest, [("s".to_string(), 2), ("t".to_string(), 1)]);
}

async fn quarantine(store: &dyn Store) {
    let (bad, good, done) =
        (new_execution(store, "q").await, new_execution(store, "q").await, new_execution(store, "q").await);
    store.append(done, 1, vec![at(2, Event::ExecutionCompleted)]).await.unwrap();
    assert_eq!(store.quarantined(bad).await.unwrap(), None);
    let entry = QuarantineEntry { id: bad, reason: "event 2 does not decode".into(), at: 99 };
    store.quarantine(entry.clone()).await.unwrap();
    assert_eq!(store.quarantined(bad).await.unwrap(), Some(entry.clone()));
    assert_eq!(store.quarantine_list().await.unwrap(), vec![entry.clone()]);
    assert_eq!(store.unfinished().await.unwrap(), vec![good]);
    let bad_summary = store.summary(bad).await.unwrap().unwrap();
    assert_eq!((bad_summary.status, bad_summary.version), (ExecutionStatus::Failed, 1));
    let failed = ListFilter { status: Some(ExecutionStatus::Failed), limit: 10, ..ListFilter::default() };
    assert_eq!(store.list(&failed).await.unwrap().iter().map(|s| s.id).collect::<Vec<_>>(), vec![bad]);
    // A terminal execution keeps its status; the entry is still recorded.
    let done_entry = QuarantineEntry { id: done, reason: "unreadable".into(), at: 100 };
    store.quarantine(done_entry.clone()).await.unwrap();
    assert_eq!(store.summary(done).await.unwrap().unwrap().status, ExecutionStatus::Completed);
    let mut all = vec![entry, done_entry];
    all.sort_by_key(|e| e.id);
    assert_eq!(store.quarantine_list().await.unwrap(), all);
}

fn skey(plugin: &str, collection: &str, key: &str) -> StateKey {
    StateKey::new(PluginName::parse(plugin).unwrap(), collection, key).unwrap()
}

fn json_value(v: serde_json::Value) -> StateValue {
    StateValue::Json(v.to_string())
}

fn writes(entries: &[(&StateKey, Option<StateValue>)]) -> Effects {
    Effects {
        reads: vec![],
        writes: entries.iter().map(|(k, v)| ((*k).clone(), v.clone())).collect(),
        events: Vec::new(),
    }
}

async fn state_commits_with_the_append(store: &dyn Store) {
    let id = new_execution(store, "s").await;
    let alice = skey("bank", "accounts", "alice");
    assert_eq!(store.state_get(&alice).await.unwrap(), None);
    store
        .append_with_state(id, 1, vec![step_started(2)], writes(&[(&alice, Some(json_value(json!(100))))]))
        .await
        .unwrap();
    let entry = store.state_get(&alice).await.unwrap().unwrap();
    assert_eq!(entry.value, json_value(json!(100)));
    assert!(entry.version > 0);

    // A read that is no longer current: neither the events nor the writes are stored.
    let stale = Effects {
        reads: vec![(alice.clone(), entry.version - 1)],
        writes: vec![(alice.clone(), Some(json_value(json!(0))))],
        events: Vec::new(),
    };
    let err = store.append_with_state(id, 2, vec![step_started(3)], stale).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::StateConflict { key, read, now } if key == "bank:accounts/alice" && *read == entry.version - 1 && *now == entry.version),
        "{err:?}"
    );
    assert_eq!(store.read(id, 0).await.unwrap().len(), 2);
    assert_eq!(store.state_get(&alice).await.unwrap(), Some(entry.clone()));

    // A read of an absent entry conflicts once it exists.
    let bob = skey("bank", "accounts", "bob");
    store.append_with_state(id, 2, vec![step_started(3)], writes(&[(&bob, Some(json_value(json!(1))))])).await.unwrap();
    let absent = Effects { reads: vec![(bob.clone(), 0)], writes: vec![], events: Vec::new() };
    assert!(matches!(
        store.append_with_state(id, 3, vec![step_started(4)], absent).await,
        Err(StoreError::StateConflict { read: 0, .. })
    ));

    // A stream conflict writes no state either.
    let err = store.append_with_state(id, 1, vec![step_started(2)], writes(&[(&alice, None)])).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(store.state_get(&alice).await.unwrap(), Some(entry.clone()));

    // Current reads pass; a delete removes the entry.
    let current = Effects {
        reads: vec![(alice.clone(), entry.version)],
        writes: vec![(alice.clone(), None)],
        events: Vec::new(),
    };
    store.append_with_state(id, 3, vec![step_started(4)], current).await.unwrap();
    assert_eq!(store.state_get(&alice).await.unwrap(), None);
    assert_eq!(store.read(id, 0).await.unwrap().len(), 4);
}

async fn state_versions_and_listing(store: &dyn Store) {
    let id = new_execution(store, "s").await;
    let k = skey("bank", "accounts", "alice");
    let bytes = StateValue::Bytes(vec![0, 1, 2]);
    store.append_with_state(id, 1, vec![step_started(2)], writes(&[(&k, Some(bytes.clone()))])).await.unwrap();
    let v1 = store.state_get(&k).await.unwrap().unwrap().version;
    store.append_with_state(id, 2, vec![step_started(3)], writes(&[(&k, None)])).await.unwrap();
    store.append_with_state(id, 3, vec![step_started(4)], writes(&[(&k, Some(bytes.clone()))])).await.unwrap();
    let v2 = store.state_get(&k).await.unwrap().unwrap();
    assert_eq!(v2.value, bytes);
    assert!(v2.version > v1, "deleted and written again: a new version ({} after {v1})", v2.version);

    let other = [
        skey("bank", "accounts", "bob"),
        skey("bank", "accounts", "alicia"),
        skey("bank", "transfers", "alice-1"),
        skey("bankx", "accounts", "alice"),
        skey("shop", "accounts", "alice"),
    ];
    let staged: Vec<_> = other.iter().map(|k| (k, Some(json_value(json!(k.key))))).collect();
    store.append_with_state(id, 4, vec![step_started(5)], writes(&staged)).await.unwrap();
    let bank = PluginName::parse("bank").unwrap();
    let names = |found: Vec<(StateKey, sagahost::store::StateEntry)>| {
        found.into_iter().map(|(k, _)| format!("{}/{}", k.collection, k.key)).collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.state_list(&bank, None, "", 100).await.unwrap()),
        ["accounts/alice", "accounts/alicia", "accounts/bob", "transfers/alice-1"]
    );
    assert_eq!(
        names(store.state_list(&bank, Some("accounts"), "ali", 100).await.unwrap()),
        ["accounts/alice", "accounts/alicia"]
    );
    assert_eq!(
        names(store.state_list(&bank, None, "alice", 100).await.unwrap()),
        ["accounts/alice", "transfers/alice-1"]
    );
    assert_eq!(names(store.state_list(&bank, Some("accounts"), "", 1).await.unwrap()), ["accounts/alice"]);
    assert!(store.state_list(&bank, Some("nothing"), "", 100).await.unwrap().is_empty());
}

/// Two read-modify-writes of one counter based on the same version: exactly one commits.
async fn one_of_two_state_writers_wins(store: Arc<dyn Store>) {
    let counter = skey("bank", "counters", "c");
    let (a, b) = (new_execution(&*store, "s").await, new_execution(&*store, "s").await);
    let change = |n: i64| Effects {
        reads: vec![(counter.clone(), 0)],
        writes: vec![(counter.clone(), Some(json_value(json!(n))))],
        events: Vec::new(),
    };
    let (ra, rb) = tokio::join!(
        store.append_with_state(a, 1, vec![step_started(2)], change(1)),
        store.append_with_state(b, 1, vec![step_started(2)], change(2)),
    );
    assert!(ra.is_ok() != rb.is_ok(), "exactly one wins: {ra:?} {rb:?}");
    let loser = if ra.is_ok() { (b, rb) } else { (a, ra) };
    assert!(matches!(loser.1, Err(StoreError::StateConflict { .. })));
    assert_eq!(store.read(loser.0, 0).await.unwrap().len(), 1, "the loser's events were not stored");
}

async fn topic_log(store: Arc<dyn Store>) {
    let event = |id: &str| sagahost::domain::TopicEvent {
        id: id.into(),
        topic: "OrderCreated".into(),
        key: Some("o-1".into()),
        payload: json!({"id": id}),
        at: 5,
        source: None,
    };
    let (a, new_a) = store.publish(event("a")).await.unwrap();
    let (b, new_b) = store.publish(event("b")).await.unwrap();
    assert!(new_a && new_b && a < b, "{a} {b}");
    let mut changed = event("a");
    changed.payload = json!("another body");
    assert_eq!(store.publish(changed).await.unwrap(), (a, false), "an id is recorded once, as first sent");
    // Concurrent publishes of one new id: one is new, both answer its seq.
    let (x, y) = tokio::join!(store.publish(event("c")), store.publish(event("c")));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!((x.0, x.1 ^ y.1), (y.0, true));
    let log = store.topic_events(0, 10).await.unwrap();
    let ids: Vec<&str> = log.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(log[0].1, event("a"));
    assert_eq!(store.topic_events(a, 1).await.unwrap()[0].1.id, "b");
    assert!(store.topic_events(x.0, 10).await.unwrap().is_empty());
    assert_eq!(store.cursor("dispatch").await.unwrap(), 0);
    store.set_cursor("dispatch", b).await.unwrap();
    assert_eq!((store.cursor("dispatch").await.unwrap(), store.cursor("other").await.unwrap()), (b, 0));

    // The outbox: a step's events are recorded with its events, in order, or not at all.
    let id = ExecutionId::new();
    store.create(id, saga("s"), started("s"), None).await.unwrap();
    let emitted = |ids: &[&str]| Effects { events: ids.iter().map(|i| event(i)).collect(), ..Effects::default() };
    let stale = store.append_with_state(id, 0, vec![step_started(2)], emitted(&["d"])).await;
    assert!(matches!(stale, Err(StoreError::Conflict { .. })), "{stale:?}");
    assert_eq!(store.topic_events(x.0, 10).await.unwrap(), vec![], "a refused append records no event");
    store.append_with_state(id, 1, vec![step_started(2)], emitted(&["d", "a", "e"])).await.unwrap();
    let log = store.topic_events(x.0, 10).await.unwrap();
    let ids: Vec<&str> = log.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids, ["d", "e"], "in order; an id already in the log is skipped");
    assert!(log[0].0 < log[1].0);
}

async fn business_keys(store: &dyn Store) {
    let mut ids = Vec::new();
    for (saga_name, key) in [("s", Some("order-1")), ("t", Some("order-1")), ("s", Some("order-2")), ("s", None)] {
        let id = ExecutionId::new();
        let mut first = started(saga_name);
        if let Event::ExecutionStarted { key: k, .. } = &mut first.event {
            *k = key.map(str::to_owned);
        }
        store.create(id, saga(saga_name), first, None).await.unwrap();
        ids.push(id);
    }
    let list = |key: &str, saga_name: Option<&str>| ListFilter {
        key: Some(key.to_owned()),
        saga: saga_name.map(saga),
        limit: 10,
        ..ListFilter::default()
    };
    let found: Vec<_> = store.list(&list("order-1", None)).await.unwrap().iter().map(|s| s.id).collect();
    assert_eq!(found, [ids[1], ids[0]], "newest first");
    let page = store.list(&list("order-1", Some("s"))).await.unwrap();
    assert_eq!((page.len(), page[0].id, page[0].key.as_deref()), (1, ids[0], Some("order-1")));
    assert!(store.list(&list("order-3", None)).await.unwrap().is_empty());
    assert_eq!(store.summary(ids[3]).await.unwrap().unwrap().key, None);
}

async fn secret_records(store: Arc<dyn Store>) {
    assert!(store.secret_put("b".into(), vec![1, 2]).await.unwrap(), "new");
    assert!(!store.secret_put("b".into(), vec![3]).await.unwrap(), "replaced");
    assert!(store.secret_put("a".into(), vec![0; 40]).await.unwrap());
    assert_eq!(store.secret("b").await.unwrap(), Some(vec![3]));
    assert_eq!(store.secret("c").await.unwrap(), None);
    assert_eq!(store.secrets().await.unwrap(), vec![("a".into(), vec![0; 40]), ("b".into(), vec![3])]);
    // Concurrent puts of one new name: exactly one is told it created it.
    let (x, y) = tokio::join!(store.secret_put("n".into(), vec![1]), store.secret_put("n".into(), vec![2]));
    assert_eq!([x.unwrap(), y.unwrap()].iter().filter(|c| **c).count(), 1);
    assert!(store.secret_delete("b".into()).await.unwrap());
    assert!(!store.secret_delete("b".into()).await.unwrap(), "already gone");
    assert_eq!(store.secret("b").await.unwrap(), None);
    assert_eq!(store.secrets().await.unwrap().len(), 2);
}

#[tokio::test]
async fn sled_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let store = SledStore::open(dir.path()).unwrap();
        id = new_execution(&store, "s").await;
        let k = skey("bank", "accounts", "alice");
        store
            .append_with_state(id, 1, vec![step_started(2)], writes(&[(&k, Some(json_value(json!(7))))]))
            .await
            .unwrap();
    }
    // The writer thread lets go of the database once the store is dropped.
    let store = loop {
        match SledStore::open(dir.path()) {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    assert_eq!(store.read(id, 0).await.unwrap().len(), 2);
    assert_eq!(store.unfinished().await.unwrap(), vec![id]);
    let s = store.summary(id).await.unwrap().unwrap();
    assert_eq!((s.version, s.updated_at, s.status), (2, 22, ExecutionStatus::Running));
    // State and its version counter survive too: versions continue, never reused.
    let k = skey("bank", "accounts", "alice");
    let before = store.state_get(&k).await.unwrap().unwrap();
    assert_eq!(before.value, json_value(json!(7)));
    store.append_with_state(id, 2, vec![step_started(3)], writes(&[(&k, Some(json_value(json!(8))))])).await.unwrap();
    assert!(store.state_get(&k).await.unwrap().unwrap().version > before.version);
    assert!(matches!(store.append(id, 1, vec![step_started(2)]).await, Err(StoreError::Conflict { .. })));
}

#[tokio::test]
async fn group_commit_merges_concurrent_appends_into_few_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = new_execution(&*store, "s").await;
            store.append(id, 1, vec![step_started(2)]).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = store.commit_stats();
    let (batches, writes) = (
        stats.batches.load(std::sync::atomic::Ordering::Relaxed),
        stats.writes.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert_eq!(writes, 400);
    assert!(batches < writes, "{batches} flushes for {writes} writes: no grouping at all");
}

/// One operation of the model-based test: append `n` events at `expected` to stream `s`.
#[derive(Debug, Clone)]
struct Op {
    stream: usize,
    expected_offset: i64,
    n: u64,
}

fn op() -> impl Strategy<Value = Op> {
    (0usize..3, -2i64..=1, 1u64..4).prop_map(|(stream, expected_offset, n)| Op { stream, expected_offset, n })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Any sequence of appends, right or wrong, leaves both stores agreeing with a model
    /// that accepts exactly the appends made at the current version.
    #[test]
    fn stores_agree_with_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (sled, _dir) = sled().expect("sled is always there");
            for store in [Arc::new(MemoryStore::new()) as Arc<dyn Store>, sled] {
                let ids: Vec<ExecutionId> = {
                    let mut v = Vec::new();
                    for _ in 0..3 { v.push(new_execution(&*store, "m").await); }
                    v
                };
                let mut model: BTreeMap<usize, u64> = (0..3).map(|i| (i, 1)).collect();
                for o in &ops {
                    let head = model[&o.stream];
                    let expected = (head as i64 + o.expected_offset).max(0) as u64;
                    let records: Vec<_> = (expected + 1..=expected + o.n).map(step_started).collect();
                    let result = store.append(ids[o.stream], expected, records).await;
                    if expected == head {
                        prop_assert!(result.is_ok(), "{result:?}");
                        model.insert(o.stream, head + o.n);
                    } else {
                        let conflict = matches!(result, Err(StoreError::Conflict { .. }));
                        prop_assert!(conflict, "{result:?}");
                    }
                }
                for (i, id) in ids.iter().enumerate() {
                    let seqs: Vec<u64> = store.read(*id, 0).await.unwrap().iter().map(|r| r.seq).collect();
                    prop_assert_eq!(seqs, (1..=model[&i]).collect::<Vec<_>>());
                }
            }
            Ok(())
        })?;
    }
}

async fn subscriptions(store: Arc<dyn Store>) {
    use sagahost::domain::subscription::{DeadLetter, StartAt, cursor_name, parse_subscription};
    let sub = |name: &str| {
        let doc = br#"{"topics": ["*"], "webhook": {"url": "http://127.0.0.1:9/hook"}}"#;
        parse_subscription(name, doc, 1).unwrap().0
    };
    let event = |id: &str| sagahost::domain::TopicEvent {
        id: id.into(),
        topic: "T".into(),
        key: None,
        payload: json!({}),
        at: 1,
        source: None,
    };
    let (first, _) = store.publish(event("before")).await.unwrap();
    // A new subscription starts after the log's end ("now") or at its start.
    assert!(store.subscription_put(sub("now"), StartAt::Now).await.unwrap());
    assert!(store.subscription_put(sub("all"), StartAt::Start).await.unwrap());
    let now = store.cursor(&cursor_name("now")).await.unwrap();
    assert!(now >= first, "{now} {first}");
    assert!(store.topic_events(now, 10).await.unwrap().is_empty(), "nothing before its creation");
    assert_eq!(store.cursor(&cursor_name("all")).await.unwrap(), 0);
    let (later, _) = store.publish(event("after")).await.unwrap();
    assert!(later > now);
    // Replacing keeps the cursor.
    store.set_cursor(&cursor_name("now"), later).await.unwrap();
    assert!(!store.subscription_put(sub("now"), StartAt::Start).await.unwrap(), "replaced");
    assert_eq!(store.cursor(&cursor_name("now")).await.unwrap(), later);
    let names: Vec<String> = store.subscriptions().await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["all", "now"]);

    // Dead letters and the cursor move in one write, in seq order; removal by seq.
    let letter = |seq: u64, id: &str| DeadLetter {
        seq,
        event_id: id.into(),
        topic: "T".into(),
        attempts: 3,
        error: "503".into(),
        at: 9,
        redrive: false,
    };
    let letters = vec![(later, Some(letter(later, "after"))), (first, Some(letter(first, "before")))];
    assert!(store.dead_letters_write("all", letters, Some(later)).await.unwrap());
    assert_eq!(store.cursor(&cursor_name("all")).await.unwrap(), later);
    let listed = store.dead_letters("all", 0, 10).await.unwrap();
    assert_eq!(listed, [letter(first, "before"), letter(later, "after")]);
    assert_eq!(store.dead_letters("all", first, 10).await.unwrap(), [letter(later, "after")]);
    assert_eq!(store.dead_letters("all", 0, 1).await.unwrap().len(), 1);
    assert!(store.dead_letters("now", 0, 10).await.unwrap().is_empty(), "letters are per subscription");
    store.dead_letters_write("all", vec![(first, None)], None).await.unwrap();
    assert_eq!(store.dead_letters("all", 0, 10).await.unwrap(), [letter(later, "after")]);

    // Deleting removes the cursor and the letters; writes for a deleted one are refused.
    assert!(store.subscription_delete("all").await.unwrap());
    assert!(!store.subscription_delete("all").await.unwrap());
    assert_eq!(store.cursor(&cursor_name("all")).await.unwrap(), 0);
    assert!(store.dead_letters("all", 0, 10).await.unwrap().is_empty());
    assert!(!store.dead_letters_write("all", vec![(first, Some(letter(first, "x")))], None).await.unwrap());
    assert!(store.dead_letters("all", 0, 10).await.unwrap().is_empty());
    // A subscription made again under the name starts afresh.
    assert!(store.subscription_put(sub("all"), StartAt::Now).await.unwrap());
    assert!(store.cursor(&cursor_name("all")).await.unwrap() >= later);
}

#[tokio::test]
async fn postgres_hosts_sharing_a_database_see_each_others_writes_and_conflict() {
    let Some(scratch) = Scratch::new().await else { return };
    let config = PostgresConfig::new(&scratch.url);
    let (a, b) = (PgStore::open(&config).await.unwrap(), PgStore::open(&config).await.unwrap());
    let id = new_execution(&a, "s").await;
    // B reads A's stream, and of two appends at one version from two hosts exactly one lands.
    assert_eq!(b.read(id, 0).await.unwrap().len(), 1);
    for round in 0..20u64 {
        let v = 1 + round;
        let (x, y) =
            tokio::join!(a.append(id, v, vec![step_started(v + 1)]), b.append(id, v, vec![step_started(v + 1)]));
        assert!(x.is_ok() != y.is_ok(), "round {round}: {x:?} {y:?}");
        assert!(matches!(x.err().or(y.err()), Some(StoreError::Conflict { .. })));
    }
    let records = a.read(id, 0).await.unwrap();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=21).collect::<Vec<_>>());
    // The state clock is shared: versions from both hosts never repeat.
    let k = skey("bank", "accounts", "alice");
    a.append_with_state(id, 21, vec![step_started(22)], writes(&[(&k, Some(json_value(json!(1))))])).await.unwrap();
    let first = b.state_get(&k).await.unwrap().unwrap().version;
    let theirs = new_execution(&b, "s").await;
    b.append_with_state(theirs, 1, vec![step_started(2)], writes(&[(&k, Some(json_value(json!(2))))])).await.unwrap();
    assert!(a.state_get(&k).await.unwrap().unwrap().version > first);
}

#[tokio::test]
async fn postgres_keeps_everything_across_reopen_and_refuses_a_newer_schema() {
    let Some(scratch) = Scratch::new().await else { return };
    let config = PostgresConfig::new(&scratch.url);
    let id = {
        let store = PgStore::open(&config).await.unwrap();
        let id = new_execution(&store, "s").await;
        store.append(id, 1, vec![step_started(2)]).await.unwrap();
        id
    };
    let store = PgStore::open(&config).await.unwrap();
    assert_eq!(store.read(id, 0).await.unwrap().len(), 2);
    assert_eq!(store.unfinished().await.unwrap(), vec![id]);
    let newer = sagahost::store::SCHEMA_VERSION + 1;
    scratch.client().await.execute("INSERT INTO sagahost_schema (version) VALUES ($1)", &[&newer]).await.unwrap();
    let refused = PgStore::open(&config).await.err().expect("a newer schema is refused");
    assert!(refused.to_string().contains("newer than this host knows"), "{refused}");
}

#[tokio::test]
async fn postgres_refuses_a_url_that_is_not_one_and_a_server_that_is_not_there() {
    let not_a_url = PgStore::open(&PostgresConfig::new("postgres://[::1")).await.err().unwrap();
    assert!(matches!(not_a_url, StoreError::Unavailable(_)), "{not_a_url}");
    let mut config = PostgresConfig::new("postgres://sagahost:secret@127.0.0.1:1/nothing");
    config.connect_timeout = std::time::Duration::from_secs(2);
    let refused = PgStore::open(&config).await.err().unwrap();
    assert!(matches!(refused, StoreError::Unavailable(_)), "{refused}");
    assert!(!refused.to_string().contains("secret"), "the password is never printed: {refused}");
}

#[tokio::test]
async fn postgres_leases_fence_a_host_whose_lease_lapsed_and_its_executions_are_adopted() {
    let Some(scratch) = Scratch::new().await else { return };
    let mut config = PostgresConfig::new(&scratch.url);
    // No renewal during the test: the lease is lapsed by hand, as a paused host's would.
    config.lease = std::time::Duration::from_secs(600);
    let (a, b) = (PgStore::open(&config).await.unwrap(), PgStore::open(&config).await.unwrap());
    let id = new_execution(&a, "s").await;
    // A created it, so A drives it: B's driver may not record for it, and learns who does.
    assert_eq!(b.claim(id).await.unwrap(), Claim::Theirs(a.host_id()));
    assert_eq!(a.claim(id).await.unwrap(), Claim::Mine);
    let fenced = b.append_with_state(id, 1, vec![step_started(2)], Effects::default()).await;
    assert!(matches!(fenced, Err(StoreError::NotOwner(_))), "{fenced:?}");
    // A command (cancel, signal) is recorded from any host; the version check still holds.
    b.append(id, 1, vec![step_started(2)]).await.unwrap();
    a.append_with_state(id, 2, vec![step_started(3)], Effects::default()).await.unwrap();
    assert!(b.adopt(false).await.unwrap().is_empty(), "A's lease is live: nothing to adopt");

    // A stops renewing (paused, cut off): once its lease lapsed, B adopts its executions, and
    // A's late append is refused even though its stream version is right.
    let admin = scratch.client().await;
    admin
        .execute("UPDATE sagahost_hosts SET until = now() - interval '1 second' WHERE id = $1", &[&a.host_id()])
        .await
        .unwrap();
    assert_eq!(b.adopt(false).await.unwrap(), vec![id]);
    let late = a.append_with_state(id, 3, vec![step_started(4)], Effects::default()).await;
    assert!(matches!(late, Err(StoreError::NotOwner(_))), "{late:?}");
    assert!(matches!(a.claim(id).await, Err(StoreError::Unavailable(_))), "a lapsed host takes nothing");
    b.append_with_state(id, 3, vec![step_started(4)], Effects::default()).await.unwrap();

    // An execution that ends gives its lease back.
    let done = at(5, Event::ExecutionCompleted);
    b.append_with_state(id, 4, vec![done], Effects::default()).await.unwrap();
    let held: i64 = admin.query_one("SELECT count(*) FROM sagahost_owners", &[]).await.unwrap().get(0);
    assert_eq!(held, 0);
    assert_eq!(b.summary(id).await.unwrap().unwrap().status, ExecutionStatus::Completed);
}

#[tokio::test]
async fn postgres_a_starting_host_adopts_unfinished_executions_nobody_holds() {
    let Some(scratch) = Scratch::new().await else { return };
    let config = PostgresConfig::new(&scratch.url);
    let a = PgStore::open(&config).await.unwrap();
    let (running, finished) = (new_execution(&a, "s").await, new_execution(&a, "s").await);
    a.append_with_state(finished, 1, vec![at(2, Event::ExecutionCompleted)], Effects::default()).await.unwrap();
    // As after `sagahost migrate`: no leases at all.
    scratch.client().await.execute("DELETE FROM sagahost_owners", &[]).await.unwrap();
    let b = PgStore::open(&config).await.unwrap();
    assert_eq!(b.adopt(true).await.unwrap(), vec![running], "only the unfinished one");
    assert_eq!(a.claim(running).await.unwrap(), Claim::Theirs(b.host_id()));
}
