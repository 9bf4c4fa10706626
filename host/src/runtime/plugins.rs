//! Plugins: upload (validate, compile once, store bytes and artifact together) and a cache
//! of pre-instantiated components, filled from stored artifacts so restarts do not recompile.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use sha2::{Digest, Sha256};

use super::{CompileError, PluginPre, Runtime};
use crate::domain::{PluginName, PluginRef, PluginVersion};
use crate::store::{PluginMeta, PluginPut, Store, StoreError};
use crate::sync::lock;

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Larger than the configured plugin size limit.
    #[error("plugin is {size} bytes; the limit is {max} bytes")]
    TooLarge {
        /// Upload size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Not a valid component of the plugin world.
    #[error("not a valid saga plugin component: {0}")]
    Invalid(#[source] CompileError),
    /// Other bytes are already stored under this name and version.
    #[error("plugin {}@{} already exists with digest {}", .0.name, .0.version, .0.digest)]
    Conflict(PluginMeta),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a plugin could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No such plugin was uploaded.
    #[error("plugin {0} has not been uploaded")]
    NotFound(PluginRef),
    /// Its stored bytes no longer compile (should not happen: they were validated on upload).
    #[error("plugin {0} cannot be loaded: {1}")]
    Invalid(PluginRef, #[source] CompileError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// SHA-256 of plugin bytes, hex.
pub fn digest_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Ready-to-instantiate plugins by reference: at most [`super::Limits::max_cached_plugins`]
/// (`--max-cached-plugins`), the least recently used evicted first.
pub struct PluginCache {
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    loaded: Mutex<LruCache<PluginRef, PluginPre>>,
}

impl PluginCache {
    /// An empty cache over `store`.
    pub fn new(runtime: Arc<Runtime>, store: Arc<dyn Store>) -> Self {
        let capacity = NonZeroUsize::new(runtime.limits().max_cached_plugins).unwrap_or(NonZeroUsize::MIN);
        Self { runtime, store, loaded: Mutex::new(LruCache::new(capacity)) }
    }

    /// How many compiled plugins are in memory.
    pub fn len(&self) -> usize {
        lock(&self.loaded).len()
    }

    /// Whether no compiled plugin is in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The runtime plugins run in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    fn artifact_key(&self, digest: &str) -> String {
        format!("{digest}-{}", self.runtime.engine_fingerprint())
    }

    fn cached(&self, r: &PluginRef) -> Option<PluginPre> {
        lock(&self.loaded).get(r).cloned()
    }

    fn remember(&self, r: PluginRef, pre: PluginPre) {
        lock(&self.loaded).put(r, pre);
    }

    /// Validates, compiles and stores a plugin. Returns its metadata and whether it is new
    /// (`false`: the same bytes were already stored under this version).
    pub async fn upload(
        &self,
        name: PluginName,
        version: PluginVersion,
        bytes: Vec<u8>,
        now: u64,
    ) -> Result<(PluginMeta, bool), UploadError> {
        let max = self.runtime.limits().max_plugin_bytes;
        if bytes.len() > max {
            return Err(UploadError::TooLarge { size: bytes.len(), max });
        }
        let digest = digest_of(&bytes);
        if let Some(existing) = self.store.plugin(&name, &version).await? {
            return if existing.digest == digest {
                Ok((existing, false))
            } else {
                Err(UploadError::Conflict(existing))
            };
        }
        let (bytes, compiled) = compile_off_thread(self.runtime.clone(), bytes).await;
        let (artifact, pre) = compiled.map_err(UploadError::Invalid)?;
        let meta = PluginMeta { name, version, digest: digest.clone(), size: bytes.len() as u64, uploaded_at: now };
        let key = self.artifact_key(&digest);
        match self.store.put_plugin(meta.clone(), bytes, Some((key, artifact))).await? {
            PluginPut::Created => {
                self.remember(PluginRef { name: meta.name.clone(), version: meta.version.clone() }, pre);
                Ok((meta, true))
            }
            PluginPut::Unchanged(existing) => Ok((existing, false)),
            PluginPut::Conflict(existing) => Err(UploadError::Conflict(existing)),
        }
    }

    /// The plugin ready to instantiate: from memory, else from its stored artifact, else
    /// compiled from its stored bytes (and the artifact stored for next time).
    pub async fn get(&self, r: &PluginRef) -> Result<PluginPre, LoadError> {
        if let Some(pre) = self.cached(r) {
            return Ok(pre);
        }
        let meta = self.store.plugin(&r.name, &r.version).await?.ok_or_else(|| LoadError::NotFound(r.clone()))?;
        let key = self.artifact_key(&meta.digest);
        let runtime = self.runtime.clone();
        let pre = match self.store.artifact(&key).await? {
            Some(artifact) => tokio::task::spawn_blocking(move || runtime.load_artifact(&artifact).map(|(_, pre)| pre))
                .await
                .map_err(|e| LoadError::Invalid(r.clone(), e.into()))?
                .map_err(|e| LoadError::Invalid(r.clone(), e))?,
            None => {
                let bytes =
                    self.store.plugin_bytes(&meta.digest).await?.ok_or_else(|| LoadError::NotFound(r.clone()))?;
                let (_, compiled) = compile_off_thread(runtime, bytes).await;
                let (artifact, pre) = compiled.map_err(|e| LoadError::Invalid(r.clone(), e))?;
                self.store.put_artifact(key, artifact).await?;
                pre
            }
        };
        self.remember(r.clone(), pre.clone());
        Ok(pre)
    }
}

/// Validates and compiles on the blocking pool. Gives the bytes back together with the
/// artifact to store and the plugin ready to instantiate (or the reason it is not a plugin).
async fn compile_off_thread(
    runtime: Arc<Runtime>,
    bytes: Vec<u8>,
) -> (Vec<u8>, Result<(Vec<u8>, PluginPre), CompileError>) {
    let compiled = tokio::task::spawn_blocking(move || {
        let compiled = runtime
            .compile(&bytes)
            .and_then(|(component, pre)| component.serialize().map(|a| (a, pre)).map_err(CompileError::wasm));
        (bytes, compiled)
    })
    .await;
    compiled.unwrap_or_else(|e| (Vec::new(), Err(e.into())))
}
