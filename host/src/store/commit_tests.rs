//! The commit rules alone, over a model snapshot: given what is committed, when these writes
//! are staged, then these mutations (or this refusal).

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::domain::Event;

/// Committed data as plain maps; applies mutations the way any backend must.
#[derive(Default)]
struct Model {
    streams: BTreeMap<ExecutionId, Vec<EventRecord>>,
    heads: BTreeMap<ExecutionId, ExecutionSummary>,
    idem: HashMap<String, (ExecutionId, [u8; 32])>,
    state: BTreeMap<StateKey, u64>,
    clock: u64,
    quarantine: Vec<ExecutionId>,
    owners: HashMap<ExecutionId, HostId>,
    /// Hosts whose lease lapsed (every other host's is live).
    lapsed: HashSet<HostId>,
}

impl Snapshot for &Model {
    fn summary(&mut self, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
        Ok(self.heads.get(&id).cloned())
    }
    fn idempotency(&mut self, key: &IdempotencyKey) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.idem.get(&key.key).map(|(id, f)| (*id, Some(*f))))
    }
    fn state_version(&mut self, key: &StateKey) -> Result<u64, StoreError> {
        Ok(self.state.get(key).copied().unwrap_or(0))
    }
    fn plugin(&mut self, _: &PluginName, _: &PluginVersion) -> Result<Option<PluginMeta>, StoreError> {
        Ok(None)
    }
    fn latest_definition(&mut self, _: &SagaName) -> Result<Option<StoredDefinition>, StoreError> {
        Ok(None)
    }
    fn secret_exists(&mut self, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    fn topic_event_seq(&mut self, _: &str) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    fn subscription_exists(&mut self, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    fn dead_letter_seqs(&mut self, _: &str) -> Result<Vec<u64>, StoreError> {
        Ok(Vec::new())
    }
    fn writes(&mut self, id: ExecutionId) -> Result<Vec<u64>, StoreError> {
        Ok(self.streams.get(&id).map(|s| s.iter().map(|r| r.seq).collect()).unwrap_or_default())
    }
    fn quarantined(&mut self, id: ExecutionId) -> Result<bool, StoreError> {
        Ok(self.quarantine.contains(&id))
    }
    fn owner(&mut self, id: ExecutionId) -> Result<Option<HostId>, StoreError> {
        Ok(self.owners.get(&id).copied())
    }
    fn live(&mut self, host: HostId) -> Result<bool, StoreError> {
        Ok(!self.lapsed.contains(&host))
    }
}

impl Model {
    fn apply(&mut self, mutations: Vec<Mutation>, clock: u64) {
        self.clock = clock;
        for m in mutations {
            match m {
                Mutation::NewStream { id, .. } => assert!(self.streams.insert(id, Vec::new()).is_none()),
                Mutation::Records { id, records } => self.streams.get_mut(&id).expect("stream").extend(records),
                Mutation::Head { summary, .. } => {
                    self.heads.insert(summary.id, summary);
                }
                Mutation::Idempotency { key, id, .. } => {
                    self.idem.insert(key.key, (id, key.fingerprint));
                }
                Mutation::Removed { summary, .. } => {
                    self.streams.remove(&summary.id);
                    self.heads.remove(&summary.id);
                }
                Mutation::KeyForgotten { key, record: true } => {
                    self.idem.remove(&key.key);
                }
                Mutation::Unended { .. } | Mutation::KeyForgotten { .. } => {}
                Mutation::StateSet { key, version, .. } => {
                    let before = self.state.insert(key, version).unwrap_or(0);
                    assert!(version > before, "a state version moves forward");
                }
                Mutation::StateDelete { key } => {
                    self.state.remove(&key);
                }
                Mutation::StateClock(c) => assert_eq!(c, clock),
                Mutation::Quarantine(e) => self.quarantine.push(e.id),
                Mutation::Owner { id, host: Some(h) } => {
                    self.owners.insert(id, h);
                }
                Mutation::Owner { id, host: None } => {
                    self.owners.remove(&id);
                }
                Mutation::Plugin { .. }
                | Mutation::Artifact { .. }
                | Mutation::Definition(_)
                | Mutation::Secret { .. }
                | Mutation::TopicEvent { .. }
                | Mutation::Cursor { .. }
                | Mutation::Subscription { .. }
                | Mutation::DeadLetter { .. } => {}
            }
        }
    }

    fn stage<T>(&mut self, f: impl FnOnce(&mut Commit<&Model>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.stage_as(None, f)
    }

    /// Stages as `host` of a shared store (`None`: a store of one host).
    fn stage_as<T>(
        &mut self,
        host: Option<HostId>,
        f: impl FnOnce(&mut Commit<&Model>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = Commit::new(&*self, self.clock);
        if let Some(h) = host {
            c = c.for_host(h);
        }
        let r = f(&mut c);
        let (mutations, clock) = c.finish();
        self.apply(mutations, clock);
        r
    }
}

fn saga() -> SagaName {
    SagaName::parse("s").unwrap()
}

fn started(seq: u64) -> EventRecord {
    let event = Event::ExecutionStarted {
        saga: saga(),
        definition_version: 1,
        input: serde_json::Value::Null,
        deadline_unix_ms: None,
        idempotency_key: None,
        key: None,
    };
    EventRecord { seq, at: seq, event }
}

fn record(seq: u64) -> EventRecord {
    EventRecord { seq, at: seq, event: Event::CancelRequested }
}

fn records(after: u64, n: u64) -> Vec<EventRecord> {
    (after + 1..=after + n).map(record).collect()
}

fn key(k: &str) -> StateKey {
    StateKey::new(PluginName::parse("p").unwrap(), "c", k).unwrap()
}

fn idem(k: &str) -> IdempotencyKey {
    idem_for(k, 1)
}

fn idem_for(k: &str, request: u8) -> IdempotencyKey {
    IdempotencyKey { saga: saga(), key: k.into(), fingerprint: [request; 32] }
}

#[test]
fn a_stale_append_is_refused_and_stages_nothing() {
    let mut m = Model::default();
    let id = ExecutionId::new();
    m.stage(|c| c.create(id, saga(), vec![started(1)], None)).unwrap();
    m.stage(|c| c.append(id, 1, records(1, 2), Effects::default())).unwrap();
    let stale = m.stage(|c| c.append(id, 1, records(1, 1), Effects::default()));
    assert_eq!(stale, Err(StoreError::Conflict { id, expected: 1, actual: 3 }));
    assert_eq!(m.streams[&id].len(), 3);
    assert_eq!(m.heads[&id].version, 3);
}

#[test]
fn gaps_and_empty_appends_are_refused() {
    let mut m = Model::default();
    let id = ExecutionId::new();
    assert_eq!(m.stage(|c| c.create(id, saga(), vec![started(2)], None)), Err(StoreError::BadSequence(1)));
    m.stage(|c| c.create(id, saga(), vec![started(1)], None)).unwrap();
    assert_eq!(m.stage(|c| c.append(id, 1, vec![record(3)], Effects::default())), Err(StoreError::BadSequence(2)));
    assert_eq!(m.stage(|c| c.append(id, 1, vec![], Effects::default())), Err(StoreError::BadSequence(2)));
    let other = ExecutionId::new();
    assert_eq!(m.stage(|c| c.append(other, 0, records(0, 1), Effects::default())), Err(StoreError::NotFound(other)));
}

#[test]
fn an_idempotency_key_returns_the_first_execution_even_within_one_group() {
    let mut m = Model::default();
    let (a, b) = (ExecutionId::new(), ExecutionId::new());
    let both = m.stage(|c| {
        let first = c.create(a, saga(), vec![started(1)], Some(idem("k")))?;
        let second = c.create(b, saga(), vec![started(1)], Some(idem("k")))?;
        Ok((first, second))
    });
    assert_eq!(both, Ok((Created::New, Created::Existing(a))));
    assert!(!m.streams.contains_key(&b));
    assert_eq!(m.stage(|c| c.create(b, saga(), vec![started(1)], Some(idem("k")))), Ok(Created::Existing(a)));
    // The same key with another request: refused, naming the first execution, nothing created.
    assert_eq!(m.stage(|c| c.create(b, saga(), vec![started(1)], Some(idem_for("k", 2)))), Ok(Created::KeyReused(a)));
    assert!(!m.streams.contains_key(&b));
}

#[test]
fn a_read_set_that_moved_refuses_the_whole_append() {
    let mut m = Model::default();
    let (a, b) = (ExecutionId::new(), ExecutionId::new());
    m.stage(|c| c.create(a, saga(), vec![started(1)], None)).unwrap();
    m.stage(|c| c.create(b, saga(), vec![started(1)], None)).unwrap();
    let write = |read: u64| Effects {
        reads: vec![(key("x"), read)],
        writes: vec![(key("x"), Some(StateValue::Json("1".into())))],
        events: Vec::new(),
    };
    // Both read x absent; in one group the first commits, the second sees its write.
    let both = m.stage(|c| Ok((c.append(a, 1, records(1, 1), write(0)), c.append(b, 1, records(1, 1), write(0)))));
    let (first, second) = both.unwrap();
    assert_eq!(first, Ok(()));
    assert_eq!(second, Err(StoreError::StateConflict { key: key("x").to_string(), read: 0, now: 1 }));
    assert_eq!((m.heads[&a].version, m.heads[&b].version), (2, 1));
    assert_eq!(m.state[&key("x")], 1);
    // Deleting and writing again gives a new version: versions are never reused.
    let delete = Effects { reads: vec![(key("x"), 1)], writes: vec![(key("x"), None)], events: Vec::new() };
    m.stage(|c| c.append(b, 1, records(1, 1), delete)).unwrap();
    m.stage(|c| c.append(a, 2, records(2, 1), write(0))).unwrap();
    assert_eq!(m.state[&key("x")], 2);
    assert_eq!(m.clock, 2);
}

#[test]
fn status_changes_name_the_previous_status() {
    let mut m = Model::default();
    let id = ExecutionId::new();
    let mut c = Commit::new(&m, 0);
    c.create(id, saga(), vec![started(1)], None).unwrap();
    c.append(id, 1, vec![EventRecord { seq: 2, at: 2, event: Event::ExecutionCompleted }], Effects::default()).unwrap();
    let (mutations, _) = c.finish();
    let heads: Vec<_> = mutations
        .iter()
        .filter_map(|m| match m {
            Mutation::Head { summary, previous } => Some((*previous, summary.status, summary.version)),
            _ => None,
        })
        .collect();
    use ExecutionStatus::*;
    assert_eq!(heads, vec![(None, Running, 1), (Some(Running), Completed, 2)]);
    m.apply(mutations, 0);
}

#[test]
fn a_removed_execution_is_gone_for_the_rest_of_its_commit_and_a_forgotten_key_is_free() {
    let mut m = Model::default();
    let id = ExecutionId::new();
    m.stage(|c| c.create(id, saga(), vec![started(1)], Some(idem("k")))).unwrap();
    let done = EventRecord { seq: 2, at: 2, event: Event::ExecutionCompleted };
    m.stage(|c| c.append(id, 1, vec![done], Effects::default())).unwrap();
    let entry = crate::store::Ended { at: 2, id, saga: saga() };
    let made = crate::store::MadeKey { at: 1, saga: saga(), key: "k".into(), id };
    let again = ExecutionId::new();
    m.stage(|c| {
        assert_eq!(c.remove(&entry, 1)?, crate::store::Removal::Kept, "ended after the cutoff");
        assert_eq!(c.remove(&entry, 2)?, crate::store::Removal::Removed);
        assert_eq!(c.append(id, 2, records(2, 1), Effects::default()), Err(StoreError::NotFound(id)));
        assert_eq!(c.remove(&entry, 2)?, crate::store::Removal::Dropped, "removed once");
        assert!(c.forget_key(made.clone())?);
        assert!(!c.forget_key(made.clone())?, "forgotten once");
        assert_eq!(c.create(again, saga(), vec![started(1)], Some(idem("k")))?, Created::New);
        Ok(())
    })
    .unwrap();
    assert!(!m.streams.contains_key(&id));
    assert_eq!(m.idem.get("k").map(|(i, _)| *i), Some(again));
}

#[test]
fn quarantine_lists_an_unfinished_execution_as_failed() {
    let mut m = Model::default();
    let id = ExecutionId::new();
    m.stage(|c| c.create(id, saga(), vec![started(1)], None)).unwrap();
    m.stage(|c| c.quarantine(QuarantineEntry { id, reason: "bad".into(), at: 5 })).unwrap();
    assert_eq!(m.heads[&id].status, ExecutionStatus::Failed);
    assert_eq!(m.heads[&id].version, 1);
    assert_eq!(m.quarantine, vec![id]);
}

/// One write of a random interleaving.
#[derive(Clone, Debug)]
enum Op {
    Create {
        stream: usize,
    },
    /// Append to `stream` at its version minus `stale` (0: current), reading `reads` keys (at
    /// their current version, or at an outdated one when the flag is set) and writing `writes`
    /// (set, or delete when the flag is set).
    Append {
        stream: usize,
        stale: u64,
        n: u64,
        reads: Vec<(usize, bool)>,
        writes: Vec<(usize, bool)>,
    },
    /// Make the group so far durable and start a new one.
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..4usize).prop_map(|stream| Op::Create { stream }),
        6 => (0..4usize, prop_oneof![3 => Just(0u64), 1 => 1..3u64], 1..4u64,
              proptest::collection::vec((0..3usize, proptest::bool::weighted(0.1)), 0..3),
              proptest::collection::vec((0..3usize, any::<bool>()), 0..3))
            .prop_map(|(stream, stale, n, reads, writes)| Op::Append { stream, stale, n, reads, writes }),
        2 => Just(Op::Flush),
    ]
}

proptest! {
    /// Any interleaving of creates and appends, grouped any way into commits, keeps every
    /// stream gapless with its head at its last record; an append is accepted exactly when
    /// its expected version and its read set are current; state versions never repeat.
    #[test]
    fn any_interleaving_keeps_versions_and_sequences_gapless(ops in proptest::collection::vec(op(), 1..80)) {
        let ids: Vec<ExecutionId> = (0..4).map(|_| ExecutionId::new()).collect();
        let mut m = Model::default();
        // The oracle: what each stream's version and each key's version must be.
        let mut versions: HashMap<usize, u64> = HashMap::new();
        let mut state: HashMap<usize, u64> = HashMap::new();
        let mut clock = 0u64;
        let mut seen_versions = std::collections::HashSet::new();
        let mut pending: Vec<Op> = Vec::new();
        for op in ops.into_iter().chain([Op::Flush]) {
            if !matches!(op, Op::Flush) {
                pending.push(op);
                continue;
            }
            // Stage the group against the committed model, checking each answer.
            let mut c = Commit::new(&m, m.clock);
            for op in pending.drain(..) {
                match op {
                    Op::Create { stream } => {
                        let r = c.create(ids[stream], saga(), vec![started(1)], None);
                        match versions.entry(stream) {
                            std::collections::hash_map::Entry::Occupied(_) => {
                                prop_assert!(matches!(r, Err(StoreError::Conflict { .. })), "{r:?}")
                            }
                            std::collections::hash_map::Entry::Vacant(v) => {
                                prop_assert_eq!(r, Ok(Created::New));
                                v.insert(1);
                            }
                        }
                    }
                    Op::Append { stream, stale, n, reads, writes } => {
                        let current = versions.get(&stream).copied();
                        let expected = current.unwrap_or(0).saturating_sub(stale);
                        let changes = Effects {
                            reads: reads.iter().map(|(k, outdated)| {
                                (key(&k.to_string()), state.get(k).copied().unwrap_or(0) + u64::from(*outdated))
                            }).collect(),
                            writes: writes.iter().map(|(k, del)| {
                                (key(&k.to_string()), (!del).then(|| StateValue::Json("0".into())))
                            }).collect(),
                            events: Vec::new(),
                        };
                        let r = c.append(ids[stream], expected, records(expected, n), changes);
                        match current {
                            None => prop_assert_eq!(r, Err(StoreError::NotFound(ids[stream]))),
                            Some(v) if v != expected => prop_assert!(matches!(r, Err(StoreError::Conflict { .. })), "{r:?}"),
                            Some(_) if reads.iter().any(|r| r.1) => {
                                prop_assert!(matches!(r, Err(StoreError::StateConflict { .. })), "{r:?}")
                            }
                            Some(_) => {
                                prop_assert_eq!(r, Ok(()));
                                versions.insert(stream, expected + n);
                                // Later writes of a key win; deletes set it absent.
                                for (k, del) in writes {
                                    if del {
                                        state.insert(k, 0);
                                    } else {
                                        clock += 1;
                                        state.insert(k, clock);
                                    }
                                }
                            }
                        }
                    }
                    Op::Flush => unreachable!(),
                }
            }
            let (mutations, new_clock) = c.finish();
            for mu in &mutations {
                if let Mutation::StateSet { version, .. } = mu {
                    prop_assert!(seen_versions.insert(*version), "version {version} reused");
                }
            }
            m.apply(mutations, new_clock);
            prop_assert_eq!(m.clock, clock);
        }
        for (stream, version) in &versions {
            let id = ids[*stream];
            let seqs: Vec<u64> = m.streams[&id].iter().map(|r| r.seq).collect();
            prop_assert_eq!(seqs, (1..=*version).collect::<Vec<_>>());
            prop_assert_eq!(m.heads[&id].version, *version);
        }
        for (k, v) in &state {
            prop_assert_eq!(m.state.get(&key(&k.to_string())).copied().unwrap_or(0), *v);
        }
    }
}

/// A worker's dead letters staged in the same group as the subscription's delete (and before
/// it) are removed with it: none survive to come back under a subscription of the same name.
#[test]
fn a_delete_removes_the_dead_letters_staged_before_it_in_the_same_commit() {
    use crate::domain::subscription::{DeadLetter, StartAt, parse_subscription};
    let model = Model::default();
    let mut c = Commit::new(&model, 0);
    let (sub, _) = parse_subscription("s", br#"{"topics": ["*"], "webhook": {"url": "http://h"}}"#, 0).unwrap();
    c.put_subscription(sub, StartAt::Start).unwrap();
    let letter = DeadLetter {
        seq: 7,
        event_id: "e".into(),
        topic: "T".into(),
        attempts: 1,
        error: "down".into(),
        at: 0,
        redrive: false,
    };
    assert!(c.dead_letters("s".into(), vec![(7, Some(letter))], Some(7)).unwrap());
    assert!(c.delete_subscription("s".into()).unwrap());
    let (mutations, _) = c.finish();
    let last_letter = mutations.iter().rposition(|m| matches!(m, Mutation::DeadLetter { seq: 7, .. }));
    assert!(
        matches!(mutations[last_letter.unwrap()], Mutation::DeadLetter { record: None, .. }),
        "the letter's removal comes after it: {mutations:?}"
    );
}

#[test]
fn in_a_shared_store_only_the_lease_holder_drives_and_a_lapsed_holder_is_fenced() {
    let mut m = Model::default();
    let (a, b) = (HostId::now_v7(), HostId::now_v7());
    let id = ExecutionId::new();
    m.stage_as(Some(a), |c| c.create(id, saga(), vec![started(1)], None)).unwrap();
    assert_eq!(m.owners.get(&id), Some(&a), "the creating host holds it");
    assert_eq!(
        m.stage_as(Some(b), |c| c.drive(id, 1, records(1, 1), Effects::default())),
        Err(StoreError::NotOwner(id))
    );
    assert_eq!(m.stage_as(Some(b), |c| c.claim(id)), Ok(Claim::Theirs(a)));
    // Commands are recorded by any host, with the version check.
    m.stage_as(Some(b), |c| c.append(id, 1, records(1, 1), Effects::default())).unwrap();
    m.stage_as(Some(a), |c| c.drive(id, 2, records(2, 1), Effects::default())).unwrap();
    // A's lease lapses: B takes the execution; A can neither record nor take anything.
    m.lapsed.insert(a);
    assert_eq!(m.stage_as(Some(b), |c| c.claim(id)), Ok(Claim::Mine));
    assert_eq!(m.owners.get(&id), Some(&b));
    assert_eq!(
        m.stage_as(Some(a), |c| c.drive(id, 3, records(3, 1), Effects::default())),
        Err(StoreError::NotOwner(id))
    );
    let lapsed = m.stage_as(Some(a), |c| c.claim(id));
    assert!(matches!(lapsed, Err(StoreError::Unavailable(_))), "a lapsed host waits for its renewal: {lapsed:?}");
    let created = m.stage_as(Some(a), |c| c.create(ExecutionId::new(), saga(), vec![started(1)], None));
    assert!(matches!(created, Err(StoreError::Unavailable(_))), "and starts nothing meanwhile: {created:?}");
    assert_eq!(m.heads[&id].version, 3, "the fenced append staged nothing");
    // The end of the execution releases its lease.
    let done = EventRecord { seq: 4, at: 4, event: Event::ExecutionCompleted };
    m.stage_as(Some(b), |c| c.drive(id, 3, vec![done], Effects::default())).unwrap();
    assert_eq!(m.owners.get(&id), None);
}

#[test]
fn a_store_of_one_host_has_no_leases() {
    let mut m = Model::default();
    let id = ExecutionId::new();
    m.stage(|c| c.create(id, saga(), vec![started(1)], None)).unwrap();
    assert_eq!(m.stage(|c| c.claim(id)), Ok(Claim::Mine));
    m.stage(|c| c.drive(id, 1, records(1, 1), Effects::default())).unwrap();
    assert!(m.owners.is_empty());
}

#[test]
fn a_host_whose_own_lease_lapsed_waits_and_keeps_what_nobody_adopted() {
    let mut m = Model::default();
    let a = HostId::now_v7();
    let id = ExecutionId::new();
    m.stage_as(Some(a), |c| c.create(id, saga(), vec![started(1)], None)).unwrap();
    m.lapsed.insert(a);
    let waiting = m.stage_as(Some(a), |c| c.drive(id, 1, records(1, 1), Effects::default()));
    assert!(matches!(waiting, Err(StoreError::Unavailable(_))), "retried, not dropped: {waiting:?}");
    m.lapsed.remove(&a);
    m.stage_as(Some(a), |c| c.drive(id, 1, records(1, 1), Effects::default())).unwrap();
}

#[test]
fn a_resumed_execution_is_held_by_the_host_that_resumed_it() {
    let mut m = Model::default();
    let (a, b) = (HostId::now_v7(), HostId::now_v7());
    let id = ExecutionId::new();
    m.stage_as(Some(a), |c| c.create(id, saga(), vec![started(1)], None)).unwrap();
    let failed = EventRecord { seq: 2, at: 2, event: Event::ExecutionFailed { reason: "x".into() } };
    m.stage_as(Some(a), |c| c.drive(id, 1, vec![failed], Effects::default())).unwrap();
    assert_eq!(m.owners.get(&id), None);
    let resumed = EventRecord { seq: 3, at: 3, event: Event::ResumeRequested };
    m.stage_as(Some(b), |c| c.append(id, 2, vec![resumed], Effects::default())).unwrap();
    assert_eq!(m.owners.get(&id), Some(&b));
}
