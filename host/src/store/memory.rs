//! An in-memory store for tests: the same contract as [`super::SledStore`], nothing durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;

#[derive(Default)]
struct Inner {
    streams: HashMap<ExecutionId, Vec<EventRecord>>,
    summaries: BTreeMap<ExecutionId, ExecutionSummary>,
    idempotency: HashMap<IdempotencyKey, ExecutionId>,
    plugins: BTreeMap<(PluginName, PluginVersion), PluginMeta>,
    blobs: HashMap<String, Vec<u8>>,
    artifacts: HashMap<String, Vec<u8>>,
    definitions: BTreeMap<(SagaName, u64), StoredDefinition>,
    state: BTreeMap<StateKey, StateEntry>,
    state_clock: u64,
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
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let mut inner = self.lock();
        if let Some(key) = &idempotency
            && let Some(existing) = inner.idempotency.get(key)
        {
            return Ok(Created::Existing(*existing));
        }
        check_sequence(0, &records)?;
        if inner.streams.contains_key(&id) {
            return Err(StoreError::Conflict { id, expected: 0, actual: inner.summaries[&id].version });
        }
        let mut summary = ExecutionSummary::new(id, saga, &records[0]);
        summary.advance(&records[1..]);
        inner.summaries.insert(id, summary);
        inner.streams.insert(id, records);
        if let Some(key) = idempotency {
            inner.idempotency.insert(key, id);
        }
        Ok(Created::New)
    }

    async fn append_with_state(
        &self,
        id: ExecutionId,
        expected: u64,
        records: Vec<EventRecord>,
        state: StateChanges,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let summary = inner.summaries.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        if summary.version != expected {
            return Err(StoreError::Conflict { id, expected, actual: summary.version });
        }
        check_sequence(expected, &records)?;
        state::check_reads(&state.reads, |k| Ok(inner.state.get(k).map_or(0, |e| e.version)))?;
        summary.advance(&records);
        inner.streams.get_mut(&id).expect("stream beside summary").extend(records);
        for (key, value) in state.writes {
            match value {
                Some(value) => {
                    inner.state_clock += 1;
                    inner.state.insert(key, StateEntry { value, version: inner.state_clock });
                }
                None => {
                    inner.state.remove(&key);
                }
            }
        }
        Ok(())
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
            .filter(|s| filter.status.is_none_or(|status| s.status == status))
            .take(filter.limit)
            .cloned()
            .collect())
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError> {
        Ok(self.lock().summaries.values().filter(|s| !s.status.is_terminal()).map(|s| s.id).collect())
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
        let mut inner = self.lock();
        let key = (meta.name.clone(), meta.version.clone());
        if let Some(existing) = inner.plugins.get(&key) {
            return Ok(if existing.digest == meta.digest {
                PluginPut::Unchanged(existing.clone())
            } else {
                PluginPut::Conflict(existing.clone())
            });
        }
        inner.blobs.insert(meta.digest.clone(), bytes);
        if let Some((k, a)) = artifact {
            inner.artifacts.insert(k, a);
        }
        inner.plugins.insert(key, meta);
        Ok(PluginPut::Created)
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
        self.lock().artifacts.insert(key, bytes);
        Ok(())
    }

    async fn put_definition(
        &self,
        name: SagaName,
        definition: SagaDefinition,
        at: u64,
    ) -> Result<(StoredDefinition, DefinitionPut), StoreError> {
        let mut inner = self.lock();
        let latest = inner.definitions.range((name.clone(), 0)..=(name.clone(), u64::MAX)).next_back();
        let (version, put) = match latest {
            Some((_, d)) if d.definition == definition => {
                return Ok((d.clone(), DefinitionPut::Unchanged));
            }
            Some((_, d)) => (d.version + 1, DefinitionPut::Replaced),
            None => (1, DefinitionPut::Created),
        };
        let stored = StoredDefinition { name: name.clone(), version, created_at: at, definition };
        inner.definitions.insert((name, version), stored.clone());
        Ok((stored, put))
    }

    async fn definition(&self, name: &SagaName, version: Option<u64>) -> Result<Option<StoredDefinition>, StoreError> {
        let inner = self.lock();
        let mut range = inner.definitions.range((name.clone(), 0)..=(name.clone(), u64::MAX));
        Ok(match version {
            Some(v) => range.find(|(k, _)| k.1 == v).map(|(_, d)| d.clone()),
            None => range.next_back().map(|(_, d)| d.clone()),
        })
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
