//! An in-memory store for tests: the same contract as [`super::SledStore`], nothing durable.
//! Writes follow the rules of [`super::commit`] and apply its mutations to maps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::commit::{Commit, KeyRecord, Mutation, Snapshot};
use super::*;

#[derive(Default)]
struct Inner {
    streams: HashMap<ExecutionId, Vec<EventRecord>>,
    summaries: BTreeMap<ExecutionId, ExecutionSummary>,
    idempotency: HashMap<(SagaName, String), (ExecutionId, [u8; 32])>,
    plugins: BTreeMap<(PluginName, PluginVersion), PluginMeta>,
    blobs: HashMap<String, Vec<u8>>,
    artifacts: HashMap<String, Vec<u8>>,
    definitions: BTreeMap<(SagaName, u64), StoredDefinition>,
    state: BTreeMap<StateKey, StateEntry>,
    state_clock: u64,
    quarantine: BTreeMap<ExecutionId, QuarantineEntry>,
    secrets: BTreeMap<String, Vec<u8>>,
    topic_log: BTreeMap<u64, crate::domain::TopicEvent>,
    topic_ids: HashMap<String, u64>,
    cursors: HashMap<String, u64>,
    subscriptions: BTreeMap<String, Subscription>,
    dead_letters: BTreeMap<(String, u64), DeadLetter>,
    ended: BTreeMap<(u64, ExecutionId), SagaName>,
    keys_made: BTreeMap<(u64, SagaName, String), ExecutionId>,
}

impl Snapshot for &mut Inner {
    fn summary(&mut self, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
        Ok(self.summaries.get(&id).cloned())
    }

    fn idempotency(&mut self, key: &IdempotencyKey) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.idempotency.get(&(key.saga.clone(), key.key.clone())).map(|(id, f)| (*id, Some(*f))))
    }

    fn state_version(&mut self, key: &StateKey) -> Result<u64, StoreError> {
        Ok(self.state.get(key).map_or(0, |e| e.version))
    }

    fn plugin(&mut self, name: &PluginName, version: &PluginVersion) -> Result<Option<PluginMeta>, StoreError> {
        Ok(self.plugins.get(&(name.clone(), version.clone())).cloned())
    }

    fn latest_definition(&mut self, name: &SagaName) -> Result<Option<StoredDefinition>, StoreError> {
        Ok(self.definitions.range((name.clone(), 0)..=(name.clone(), u64::MAX)).next_back().map(|(_, d)| d.clone()))
    }

    fn secret_exists(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self.secrets.contains_key(name))
    }

    fn topic_event_seq(&mut self, id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.topic_ids.get(id).copied())
    }

    fn subscription_exists(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self.subscriptions.contains_key(name))
    }

    fn dead_letter_seqs(&mut self, name: &str) -> Result<Vec<u64>, StoreError> {
        Ok(self.letters_of(name).map(|(seq, _)| seq).collect())
    }

    fn writes(&mut self, id: ExecutionId) -> Result<Vec<u64>, StoreError> {
        Ok(self.streams.get(&id).map(|s| s.iter().map(|r| r.seq).collect()).unwrap_or_default())
    }

    fn quarantined(&mut self, id: ExecutionId) -> Result<bool, StoreError> {
        Ok(self.quarantine.contains_key(&id))
    }
}

impl Inner {
    fn letters_of(&self, name: &str) -> impl Iterator<Item = (u64, &DeadLetter)> {
        self.dead_letters.range((name.to_owned(), 0)..=(name.to_owned(), u64::MAX)).map(|((_, seq), l)| (*seq, l))
    }

    /// Stages one write with the commit rules and applies what it answers.
    fn commit<T>(
        &mut self,
        stage: impl FnOnce(&mut Commit<&mut Inner>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let clock = self.state_clock;
        let mut commit = Commit::new(&mut *self, clock);
        let answer = stage(&mut commit)?;
        let (mutations, clock) = commit.finish();
        self.state_clock = clock;
        for m in mutations {
            self.apply(m);
        }
        Ok(answer)
    }

    fn apply(&mut self, m: Mutation) {
        match m {
            Mutation::NewStream { id, .. } => {
                self.streams.insert(id, Vec::new());
            }
            Mutation::Records { id, records } => self.streams.entry(id).or_default().extend(records),
            Mutation::Head { summary, previous } => {
                if summary.status.is_terminal() && previous != Some(summary.status) {
                    self.ended.insert((summary.updated_at, summary.id), summary.saga.clone());
                }
                self.summaries.insert(summary.id, summary);
            }
            Mutation::Idempotency { key, id, at } => {
                self.keys_made.insert((at, key.saga.clone(), key.key.clone()), id);
                self.idempotency.insert((key.saga, key.key), (id, key.fingerprint));
            }
            Mutation::Removed { summary, ended, .. } => {
                self.streams.remove(&summary.id);
                self.summaries.remove(&summary.id);
                for at in ended {
                    self.ended.remove(&(at, summary.id));
                }
            }
            Mutation::Unended { at, id } => {
                self.ended.remove(&(at, id));
            }
            Mutation::KeyForgotten { key, record } => {
                self.keys_made.remove(&(key.at, key.saga.clone(), key.key.clone()));
                if record {
                    self.idempotency.remove(&(key.saga, key.key));
                }
            }
            Mutation::StateSet { key, value, version } => {
                self.state.insert(key, StateEntry { value, version });
            }
            Mutation::StateDelete { key } => {
                self.state.remove(&key);
            }
            Mutation::StateClock(_) | Mutation::Owner { .. } => {}
            Mutation::Plugin { meta, bytes, artifact } => {
                self.blobs.insert(meta.digest.clone(), bytes);
                if let Some((k, a)) = artifact {
                    self.artifacts.insert(k, a);
                }
                self.plugins.insert((meta.name.clone(), meta.version.clone()), meta);
            }
            Mutation::Artifact { key, bytes } => {
                self.artifacts.insert(key, bytes);
            }
            Mutation::Definition(d) => {
                self.definitions.insert((d.name.clone(), d.version), d);
            }
            Mutation::Quarantine(entry) => {
                self.quarantine.insert(entry.id, entry);
            }
            Mutation::Secret { name, record: Some(record) } => {
                self.secrets.insert(name, record);
            }
            Mutation::Secret { name, record: None } => {
                self.secrets.remove(&name);
            }
            Mutation::TopicEvent { seq, event } => {
                self.topic_ids.insert(event.id.clone(), seq);
                self.topic_log.insert(seq, event);
            }
            Mutation::Cursor { name, seq } => {
                self.cursors.insert(name, seq);
            }
            Mutation::Subscription { name, record: Some(sub) } => {
                self.subscriptions.insert(name, sub);
            }
            Mutation::Subscription { name, record: None } => {
                self.cursors.remove(&cursor_name(&name));
                self.subscriptions.remove(&name);
            }
            Mutation::DeadLetter { subscription, seq, record: Some(letter) } => {
                self.dead_letters.insert((subscription, seq), letter);
            }
            Mutation::DeadLetter { subscription, seq, record: None } => {
                self.dead_letters.remove(&(subscription, seq));
            }
        }
    }
}

/// Keeps everything in a mutex-guarded map.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn create_with(
        &self,
        id: ExecutionId,
        saga: SagaName,
        records: Vec<EventRecord>,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        self.lock().commit(|c| c.create(id, saga, records, idempotency))
    }

    async fn append_with_state(
        &self,
        id: ExecutionId,
        expected: u64,
        records: Vec<EventRecord>,
        state: Effects,
    ) -> Result<(), StoreError> {
        self.lock().commit(|c| c.append(id, expected, records, state))
    }

    async fn idempotency(&self, key: &IdempotencyKey) -> Result<Option<KeyRecord>, StoreError> {
        (&mut *self.lock()).idempotency(key)
    }

    async fn read(&self, id: ExecutionId, after: u64) -> Result<Vec<EventRecord>, StoreError> {
        let inner = self.lock();
        let stream = inner.streams.get(&id).ok_or(StoreError::NotFound(id))?;
        Ok(stream.iter().filter(|r| r.seq > after).cloned().collect())
    }

    async fn summary(&self, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
        Ok(self.lock().summaries.get(&id).cloned())
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ExecutionSummary>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .summaries
            .values()
            .rev()
            .filter(|s| filter.after.is_none_or(|after| s.id < after))
            .filter(|s| filter.saga.as_ref().is_none_or(|saga| &s.saga == saga))
            .filter(|s| filter.key.is_none() || s.key == filter.key)
            .filter(|s| filter.status.is_none_or(|status| s.status == status))
            .take(filter.limit)
            .cloned()
            .collect())
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .summaries
            .values()
            .filter(|s| !s.status.is_terminal() && !inner.quarantine.contains_key(&s.id))
            .map(|s| s.id)
            .collect())
    }

    async fn quarantine(&self, entry: QuarantineEntry) -> Result<(), StoreError> {
        self.lock().commit(|c| c.quarantine(entry))
    }

    async fn quarantined(&self, id: ExecutionId) -> Result<Option<QuarantineEntry>, StoreError> {
        Ok(self.lock().quarantine.get(&id).cloned())
    }

    async fn ended(
        &self,
        until: u64,
        after: Option<(u64, ExecutionId)>,
        limit: usize,
    ) -> Result<Vec<Ended>, StoreError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        Ok(self
            .lock()
            .ended
            .range((from, Unbounded))
            .take_while(|((at, _), _)| *at <= until)
            .take(limit)
            .map(|((at, id), saga)| Ended { at: *at, id: *id, saga: saga.clone() })
            .collect())
    }

    async fn remove(&self, entries: Vec<(Ended, u64)>) -> Result<Vec<Removal>, StoreError> {
        self.lock().commit(|c| c.remove_all(&entries))
    }

    async fn keys_made(&self, until: u64, limit: usize) -> Result<Vec<MadeKey>, StoreError> {
        Ok(self
            .lock()
            .keys_made
            .iter()
            .take_while(|((at, _, _), _)| *at <= until)
            .take(limit)
            .map(|((at, saga, key), id)| MadeKey { at: *at, saga: saga.clone(), key: key.clone(), id: *id })
            .collect())
    }

    async fn forget_keys(&self, made: Vec<MadeKey>) -> Result<usize, StoreError> {
        self.lock().commit(|c| c.forget_keys(made))
    }

    async fn quarantine_list(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        Ok(self.lock().quarantine.values().cloned().collect())
    }
}

#[async_trait]
impl CatalogStore for MemoryStore {
    async fn put_plugin(
        &self,
        meta: PluginMeta,
        bytes: Vec<u8>,
        artifact: Option<(String, Vec<u8>)>,
    ) -> Result<PluginPut, StoreError> {
        self.lock().commit(|c| c.put_plugin(meta, bytes, artifact))
    }

    async fn plugin(&self, name: &PluginName, version: &PluginVersion) -> Result<Option<PluginMeta>, StoreError> {
        Ok(self.lock().plugins.get(&(name.clone(), version.clone())).cloned())
    }

    async fn plugins(&self) -> Result<Vec<PluginMeta>, StoreError> {
        Ok(self.lock().plugins.values().cloned().collect())
    }

    async fn plugin_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().blobs.get(digest).cloned())
    }

    async fn artifact(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().artifacts.get(key).cloned())
    }

    async fn put_artifact(&self, key: String, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.lock().commit(|c| {
            c.put_artifact(key, bytes);
            Ok(())
        })
    }

    async fn put_definition(
        &self,
        name: SagaName,
        definition: SagaDefinition,
        at: u64,
    ) -> Result<(StoredDefinition, DefinitionPut), StoreError> {
        self.lock().commit(|c| c.put_definition(name, definition, at))
    }

    async fn definition(&self, name: &SagaName, version: Option<u64>) -> Result<Option<StoredDefinition>, StoreError> {
        let mut inner = self.lock();
        match version {
            Some(v) => Ok(inner.definitions.get(&(name.clone(), v)).cloned()),
            None => (&mut *inner).latest_definition(name),
        }
    }

    async fn definitions(&self) -> Result<Vec<StoredDefinition>, StoreError> {
        let inner = self.lock();
        let mut latest: BTreeMap<&SagaName, &StoredDefinition> = BTreeMap::new();
        for ((name, _), d) in &inner.definitions {
            latest.insert(name, d);
        }
        Ok(latest.into_values().cloned().collect())
    }
}

#[async_trait]
impl TopicStore for MemoryStore {
    async fn publish(&self, event: crate::domain::TopicEvent) -> Result<(u64, bool), StoreError> {
        self.lock().commit(|c| c.publish(event))
    }

    async fn topic_events(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, crate::domain::TopicEvent)>, StoreError> {
        let inner = self.lock();
        Ok(inner.topic_log.range(after.saturating_add(1)..).take(limit).map(|(s, e)| (*s, e.clone())).collect())
    }

    async fn topic_events_by_key(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Vec<(u64, crate::domain::TopicEvent)>, StoreError> {
        let inner = self.lock();
        let mut found: Vec<_> = inner
            .topic_log
            .iter()
            .rev()
            .filter(|(_, e)| e.key.as_deref() == Some(key))
            .take(limit)
            .map(|(s, e)| (*s, e.clone()))
            .collect();
        found.reverse();
        Ok(found)
    }

    async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self.lock().cursors.get(name).copied().unwrap_or(0))
    }

    async fn set_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        self.lock().commit(|c| {
            c.set_cursor(name.to_owned(), seq);
            Ok(())
        })
    }
}

#[async_trait]
impl SubscriptionStore for MemoryStore {
    async fn subscription_put(&self, sub: Subscription, start: StartAt) -> Result<bool, StoreError> {
        self.lock().commit(|c| c.put_subscription(sub, start))
    }

    async fn subscription_delete(&self, name: &str) -> Result<bool, StoreError> {
        self.lock().commit(|c| c.delete_subscription(name.to_owned()))
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        Ok(self.lock().subscriptions.values().cloned().collect())
    }

    async fn dead_letters_write(
        &self,
        name: &str,
        letters: Vec<(u64, Option<DeadLetter>)>,
        cursor: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.lock().commit(|c| c.dead_letters(name.to_owned(), letters, cursor))
    }

    async fn dead_letters(&self, name: &str, after: u64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let inner = self.lock();
        Ok(inner.letters_of(name).filter(|(seq, _)| *seq > after).take(limit).map(|(_, l)| l.clone()).collect())
    }
}

#[async_trait]
impl SecretStore for MemoryStore {
    async fn secret_put(&self, name: String, record: Vec<u8>) -> Result<bool, StoreError> {
        self.lock().commit(|c| c.put_secret(name, record))
    }

    async fn secret_delete(&self, name: String) -> Result<bool, StoreError> {
        self.lock().commit(|c| c.delete_secret(name))
    }

    async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().secrets.get(name).cloned())
    }

    async fn secrets(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self.lock().secrets.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn state_get(&self, key: &StateKey) -> Result<Option<StateEntry>, StoreError> {
        Ok(self.lock().state.get(key).cloned())
    }

    async fn state_list(
        &self,
        plugin: &PluginName,
        collection: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(StateKey, StateEntry)>, StoreError> {
        Ok(self
            .lock()
            .state
            .iter()
            .filter(|(k, _)| &k.plugin == plugin && collection.is_none_or(|c| k.collection == c))
            .filter(|(k, _)| k.key.starts_with(prefix))
            .take(limit)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect())
    }
}
