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
    async fn create(
        &self,
        id: ExecutionId,
        saga: SagaName,
        first: EventRecord,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let mut inner = self.lock();
        if let Some(key) = &idempotency
            && let Some(existing) = inner.idempotency.get(key)
        {
            return Ok(Created::Existing(*existing));
        }
        check_sequence(0, std::slice::from_ref(&first))?;
        if inner.streams.contains_key(&id) {
            return Err(StoreError::Conflict { id, expected: 0, actual: inner.summaries[&id].version });
        }
        inner.summaries.insert(id, ExecutionSummary::new(id, saga, &first));
        inner.streams.insert(id, vec![first]);
        if let Some(key) = idempotency {
            inner.idempotency.insert(key, id);
        }
        Ok(Created::New)
    }

    async fn append(&self, id: ExecutionId, expected: u64, records: Vec<EventRecord>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let summary = inner.summaries.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        if summary.version != expected {
            return Err(StoreError::Conflict { id, expected, actual: summary.version });
        }
        check_sequence(expected, &records)?;
        summary.advance(&records);
        inner.streams.get_mut(&id).expect("stream beside summary").extend(records);
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
