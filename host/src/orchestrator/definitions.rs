//! The definition cache: every definition version this process read or wrote, and the
//! latest version of each saga, so that neither a trigger nor a driver reads definitions
//! from the store more than once.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::{Orchestrator, OrchestratorError};
use crate::domain::DefinitionError;
use crate::domain::definition::parse_definition;
use crate::domain::{SagaDefinition, SagaName};
use crate::store::{DefinitionPut, StoredDefinition};
use crate::sync::lock;

/// Definition versions kept in memory, least recently used evicted first (an evicted one is
/// read from the store again when needed).
pub const CACHED_DEFINITION_VERSIONS: usize = 1_024;

/// Definitions by `(saga, version)` (at most [`CACHED_DEFINITION_VERSIONS`]), and the latest
/// of each saga.
pub(super) struct DefinitionCache {
    versions: Mutex<LruCache<(SagaName, u64), Arc<SagaDefinition>>>,
    /// The latest version of each saga, so that a trigger reads nothing from the store (only
    /// this process writes definitions unless the store is shared).
    latest: Mutex<HashMap<SagaName, (u64, Arc<SagaDefinition>)>>,
}

impl Default for DefinitionCache {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(CACHED_DEFINITION_VERSIONS).expect("not zero");
        Self { versions: Mutex::new(LruCache::new(capacity)), latest: Mutex::default() }
    }
}

impl DefinitionCache {
    /// Keeps a stored version, as the latest of its saga unless a later one is known.
    fn remember(&self, saga: &SagaName, version: u64, definition: &SagaDefinition) -> Arc<SagaDefinition> {
        let d = Arc::new(definition.clone());
        lock(&self.versions).get_or_insert((saga.clone(), version), || d.clone());
        let mut latest = lock(&self.latest);
        let entry = latest.entry(saga.clone()).or_insert_with(|| (version, d.clone()));
        if entry.0 < version {
            *entry = (version, d.clone());
        }
        d
    }

    /// The latest version of `saga` this process knows.
    fn latest(&self, saga: &SagaName) -> Option<(u64, Arc<SagaDefinition>)> {
        lock(&self.latest).get(saga).cloned()
    }

    /// One version, if known.
    fn version(&self, saga: &SagaName, version: u64) -> Option<Arc<SagaDefinition>> {
        lock(&self.versions).get(&(saga.clone(), version)).cloned()
    }

    /// Keeps one version read from the store (without making it the latest).
    fn insert_version(&self, saga: SagaName, version: u64, definition: SagaDefinition) -> Arc<SagaDefinition> {
        let d = Arc::new(definition);
        lock(&self.versions).put((saga, version), d.clone());
        d
    }
}

impl Orchestrator {
    /// Validates and stores a definition.
    pub async fn put_definition(
        &self,
        name: SagaName,
        json: &[u8],
    ) -> Result<(StoredDefinition, DefinitionPut), OrchestratorError> {
        crate::domain::json::check(json).map_err(|e| DefinitionError::Malformed(e.to_string()))?;
        let uploaded = self.store.plugins().await?;
        let definition = parse_definition(json, &self.config.definition_limits, |r| {
            uploaded.iter().any(|p| p.name == r.name && p.version == r.version)
        })?;
        self.check_secrets_stored(&definition).await?;
        let at = self.now_ms();
        // The cache must learn every stored version, even if the caller goes away meanwhile:
        // triggers read the latest version from it.
        self.detached(move |me| async move {
            let (stored, put) = me.store.put_definition(name, definition, at).await?;
            me.definitions.remember(&stored.name, stored.version, &stored.definition);
            Ok((stored, put))
        })
        .await
    }

    /// Refuses a definition naming a secret that is not stored: a typo shows now, not as a
    /// failing step later.
    async fn check_secrets_stored(&self, definition: &SagaDefinition) -> Result<(), OrchestratorError> {
        let stored: Vec<String> = self.secrets.list().await?.into_iter().map(|s| s.name).collect();
        let missing: Vec<String> = definition
            .steps
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.secrets.iter().map(move |n| (i, n)))
            .filter(|(_, n)| !stored.contains(n))
            .map(|(i, n)| format!("steps[{i}].secrets: secret {n:?} is not stored (PUT /v1/secrets/{n} first)"))
            .collect();
        if missing.is_empty() { Ok(()) } else { Err(DefinitionError::Invalid(missing).into()) }
    }

    /// The latest version of a saga: from memory, unless another process may have changed it.
    pub(super) async fn latest_definition(
        &self,
        saga: &SagaName,
    ) -> Result<(u64, Arc<SagaDefinition>), OrchestratorError> {
        if !self.config.shared_store
            && let Some(found) = self.definitions.latest(saga)
        {
            return Ok(found);
        }
        let stored =
            self.store.definition(saga, None).await?.ok_or_else(|| OrchestratorError::UnknownSaga(saga.clone()))?;
        let d = self.definitions.remember(&stored.name, stored.version, &stored.definition);
        Ok((stored.version, d))
    }

    /// A definition version, from memory or the store.
    pub async fn definition(&self, saga: &SagaName, version: u64) -> Result<Arc<SagaDefinition>, OrchestratorError> {
        if let Some(d) = self.definitions.version(saga, version) {
            return Ok(d);
        }
        let stored = self
            .store
            .definition(saga, Some(version))
            .await?
            .ok_or_else(|| OrchestratorError::UnknownSaga(saga.clone()))?;
        Ok(self.definitions.insert_version(saga.clone(), version, stored.definition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(deadline_ms: u64) -> SagaDefinition {
        SagaDefinition { deadline_ms: Some(deadline_ms), retain_ms: None, steps: Vec::new(), triggers: Vec::new() }
    }

    #[test]
    fn the_latest_version_is_the_highest_remembered_whatever_the_order() {
        let cache = DefinitionCache::default();
        let saga = SagaName::parse("s").unwrap();
        assert!(cache.latest(&saga).is_none());
        cache.remember(&saga, 2, &definition(20));
        cache.remember(&saga, 1, &definition(10));
        assert_eq!(cache.latest(&saga).map(|(v, d)| (v, d.deadline_ms)), Some((2, Some(20))));
        assert_eq!(cache.version(&saga, 1).and_then(|d| d.deadline_ms), Some(10));
        // A version read by a driver does not become the latest.
        cache.insert_version(saga.clone(), 3, definition(30));
        assert_eq!(cache.latest(&saga).map(|(v, _)| v), Some(2));
        assert_eq!(cache.version(&saga, 3).and_then(|d| d.deadline_ms), Some(30));
    }

    #[test]
    fn versions_past_the_bound_evict_the_least_recently_used_but_never_the_latest() {
        let cache = DefinitionCache::default();
        let saga = SagaName::parse("s").unwrap();
        for v in 1..=CACHED_DEFINITION_VERSIONS as u64 {
            cache.remember(&saga, v, &definition(v));
        }
        assert!(cache.version(&saga, 1).is_some(), "version 1 is now the most recently used");
        cache.remember(&saga, 5_000, &definition(5_000));
        assert!(cache.version(&saga, 2).is_none(), "the least recently used went");
        assert!(cache.version(&saga, 1).is_some());
        assert_eq!(lock(&cache.versions).len(), CACHED_DEFINITION_VERSIONS);
        assert_eq!(cache.latest(&saga).map(|(v, _)| v), Some(5_000));
    }
}
