//! Durable storage: event streams (one per execution) with optimistic concurrency, their
//! indexes, and the catalog of plugins and saga definitions.
//!
//! Three backends implement the same traits and pass the same contract suite
//! (`tests/store_contract.rs`): [`SledStore`] embedded (the default), [`PgStore`] shared by
//! several hosts, and [`MemoryStore`] for tests. All follow the commit rules of [`commit`],
//! which is the only place they are written; the two durable ones keep the same key-value
//! layout (`store/kv.rs`, `store/keys.rs`) and commit in groups (`store/group.rs`).

pub mod backup;
pub mod commit;
mod group;
mod keys;
mod kv;
mod memory;
pub mod migrate;
mod postgres;
mod sled;
mod state;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::subscription::{DeadLetter, StartAt, Subscription, cursor_name};
use crate::domain::{EventRecord, ExecutionId, ExecutionStatus, PluginName, PluginVersion, SagaDefinition, SagaName};

pub use memory::MemoryStore;
pub use postgres::{PgStore, PostgresConfig, SCHEMA_VERSION};
pub use sled::{DEFAULT_CACHE_BYTES, DEFAULT_RESERVE_BYTES, MAX_CAPTURE_BYTES, Restore, SledStore};
pub use state::{
    Effects, InvalidStateKey, MAX_COLLECTION_BYTES, MAX_KEY_BYTES, StateEntry, StateItem, StateKey, StateValue,
};

/// Group-commit statistics, for benchmarks and metrics.
#[derive(Default, Debug)]
pub struct CommitStats {
    /// Groups committed (one durable write each).
    pub batches: std::sync::atomic::AtomicU64,
    /// Writes committed in those groups.
    pub writes: std::sync::atomic::AtomicU64,
}

/// Counts a group of `writes` whose durable write took `took`, in `stats` and the metrics.
fn observe_commit(stats: &CommitStats, writes: usize, took: std::time::Duration) {
    use std::sync::atomic::Ordering;
    let m = crate::metrics::metrics();
    m.store_batch_writes.observe(writes as f64);
    crate::metrics::observe(&m.store_commit_seconds, took);
    m.store_commit_max_us.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.writes.fetch_add(writes as u64, Ordering::Relaxed);
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The stream is not at the expected version: someone else appended first. Re-read and decide again.
    #[error("version conflict on {id}: expected {expected}, stream is at {actual}")]
    Conflict {
        /// The stream.
        id: ExecutionId,
        /// The version the caller based its decision on.
        expected: u64,
        /// The version the stream is at.
        actual: u64,
    },
    /// An entry the attempt read changed before its commit: nothing was written. The attempt
    /// is recorded as failed (kind `conflict`) and retried under the step's policy.
    #[error("state conflict on {key}: read at version {read}, now at version {now}")]
    StateConflict {
        /// The entry (`plugin:collection/key`).
        key: String,
        /// The version the attempt saw (0: absent).
        read: u64,
        /// The version committed since (0: deleted).
        now: u64,
    },
    /// The stream does not exist.
    #[error("execution {0} not found")]
    NotFound(ExecutionId),
    /// A shared store: another host holds the execution's lease (or this host's lease has
    /// lapsed), so this host may not record for it. The driver lets the execution go.
    #[error("execution {0} is driven by another host")]
    NotOwner(ExecutionId),
    /// The records handed to `append` are not numbered right after `expected`.
    #[error("records must be numbered from {0} without gaps")]
    BadSequence(u64),
    /// The storage itself failed (disk full, unwritable, closed). Retryable by callers.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying cannot help: the data itself is wrong (corrupt), or the operation
    /// is refused for what it asks (conflicts, missing streams, bad sequences). Only
    /// [`StoreError::Unavailable`] heals by waiting.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Unavailable(_))
    }
}

/// A host sharing a store with others (docs/postgres.md, "Several hosts").
pub type HostId = uuid::Uuid;

/// Who drives an execution, as [`EventStore::claim`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This host: it held the lease, or has just taken it.
    Mine,
    /// Another host, whose lease is live.
    Theirs(HostId),
}

/// An execution set aside because its stored stream can no longer be read (or folded): the
/// host does not drive it, lists it as `failed`, and answers for it with this reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuarantineEntry {
    /// The execution.
    pub id: ExecutionId,
    /// What is wrong with its stream.
    pub reason: String,
    /// When it was set aside (unix ms).
    pub at: u64,
}

/// The head of one execution's stream, kept beside it for listings and version checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionSummary {
    /// The execution.
    pub id: ExecutionId,
    /// Its definition name.
    pub saga: SagaName,
    /// Its business key, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Current status.
    pub status: ExecutionStatus,
    /// `seq` of the last event.
    pub version: u64,
    /// When it started.
    pub created_at: u64,
    /// When its last event was recorded.
    pub updated_at: u64,
}

impl ExecutionSummary {
    /// The summary of a stream whose first record is `first` (an `execution_started`).
    pub fn new(id: ExecutionId, saga: SagaName, first: &EventRecord) -> Self {
        let key = match &first.event {
            crate::domain::Event::ExecutionStarted { key, .. } => key.clone(),
            _ => None,
        };
        Self {
            id,
            saga,
            key,
            status: ExecutionStatus::Running,
            version: first.seq,
            created_at: first.at,
            updated_at: first.at,
        }
    }

    /// Moves the summary past `records`.
    pub fn advance(&mut self, records: &[EventRecord]) {
        for r in records {
            if let Some(s) = r.event.status_after() {
                self.status = s;
            }
            self.version = r.seq;
            self.updated_at = r.at;
        }
    }
}

/// A trigger's idempotency key, scoped to its saga, with the fingerprint of the request it
/// came with: the same key with another request is refused instead of answered with the
/// first execution (docs/api.md, "Idempotency-Key").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The saga triggered.
    pub saga: SagaName,
    /// The client's key.
    pub key: String,
    /// SHA-256 of the request the key came with (its input, as stored).
    pub fingerprint: [u8; 32],
}

/// What `create` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// A new stream was created.
    New,
    /// The idempotency key was already used with the same request: here is the first execution.
    Existing(ExecutionId),
    /// The idempotency key was already used with another request (by this execution):
    /// nothing was created.
    KeyReused(ExecutionId),
}

/// An ended execution, as the index of ended executions finds it (retention).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// When it ended (its terminal event, unix ms).
    pub at: u64,
    /// The execution.
    pub id: ExecutionId,
    /// Its saga.
    pub saga: SagaName,
}

/// An idempotency key, by the time it was first used (retention).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MadeKey {
    /// When the execution it created started (unix ms).
    pub at: u64,
    /// The saga triggered.
    pub saga: SagaName,
    /// The client's key.
    pub key: String,
    /// The execution it created.
    pub id: ExecutionId,
}

/// What retention did with one entry of the index of ended executions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The execution is gone: records, head, indexes.
    Removed,
    /// Recorded for after the cutoff: kept, and looked at again later.
    Kept,
    /// The entry named nothing to remove (resumed, gone or quarantined): only it went.
    Dropped,
}

/// Which executions to list (newest first).
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only this saga.
    pub saga: Option<SagaName>,
    /// Only this status.
    pub status: Option<ExecutionStatus>,
    /// Only executions with this business key.
    pub key: Option<String>,
    /// Only executions older than this one (the previous page's last id).
    pub after: Option<ExecutionId>,
    /// At most this many.
    pub limit: usize,
}

/// Event streams.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Creates a stream with its first record, unless `idempotency` was used before.
    async fn create(
        &self,
        id: ExecutionId,
        saga: SagaName,
        first: EventRecord,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        self.create_with(id, saga, vec![first], idempotency).await
    }

    /// Creates a stream with `records` (numbered from 1, the first an `execution_started`),
    /// unless `idempotency` was used before: one durable write for an execution's start and
    /// whatever follows it at once (its first step's start).
    async fn create_with(
        &self,
        id: ExecutionId,
        saga: SagaName,
        records: Vec<EventRecord>,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError>;

    /// The execution an idempotency key created and the fingerprint of its request, if the
    /// key was used.
    async fn idempotency(&self, key: &IdempotencyKey) -> Result<Option<commit::KeyRecord>, StoreError>;

    /// Appends `records` (numbered from `expected + 1`) if the stream is at `expected`.
    /// Returns once they are durable.
    async fn append(&self, id: ExecutionId, expected: u64, records: Vec<EventRecord>) -> Result<(), StoreError> {
        self.append_with_state(id, expected, records, Effects::default()).await
    }

    /// The driver's append: like [`append`](Self::append), and in the same atomic commit
    /// applies `state.writes`, provided every entry in `state.reads` is still at the version
    /// read (else [`StoreError::StateConflict`] and nothing is written). A shared store also
    /// checks that this host holds the execution's lease (else [`StoreError::NotOwner`]).
    async fn append_with_state(
        &self,
        id: ExecutionId,
        expected: u64,
        records: Vec<EventRecord>,
        state: Effects,
    ) -> Result<(), StoreError>;

    /// The records of a stream with `seq > after`, in order. `NotFound` when there is no stream.
    async fn read(&self, id: ExecutionId, after: u64) -> Result<Vec<EventRecord>, StoreError>;

    /// The stream's summary.
    async fn summary(&self, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError>;

    /// Executions matching `filter`, newest first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<ExecutionSummary>, StoreError>;

    /// Every execution the host must drive (running or compensating), except quarantined ones.
    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError>;

    /// Sets an execution aside (see [`QuarantineEntry`]); listed as `failed` from then on
    /// when its head can be read. Quarantining it again replaces the entry.
    async fn quarantine(&self, entry: QuarantineEntry) -> Result<(), StoreError>;

    /// The quarantine entry of an execution.
    async fn quarantined(&self, id: ExecutionId) -> Result<Option<QuarantineEntry>, StoreError>;

    /// Every quarantined execution, by id.
    async fn quarantine_list(&self) -> Result<Vec<QuarantineEntry>, StoreError>;

    /// Retention: up to `limit` ended executions, in the order they ended, that ended at or
    /// before `until`, after the entry `after` (`(at, id)` of the previous page's last).
    async fn ended(
        &self,
        until: u64,
        after: Option<(u64, ExecutionId)>,
        limit: usize,
    ) -> Result<Vec<Ended>, StoreError>;

    /// Retention: removes each entry's execution unless it was recorded for after its
    /// cutoff (the rule of [`commit::Commit::remove`]), in one commit.
    async fn remove(&self, entries: Vec<(Ended, u64)>) -> Result<Vec<Removal>, StoreError>;

    /// Retention: up to `limit` idempotency keys first used at or before `until`, oldest first.
    async fn keys_made(&self, until: u64, limit: usize) -> Result<Vec<MadeKey>, StoreError>;

    /// Retention: forgets these idempotency keys (their windows have passed), in one commit;
    /// how many records went.
    async fn forget_keys(&self, keys: Vec<MadeKey>) -> Result<usize, StoreError>;

    /// A consistent copy of every pair stored, taken while writes go on: records to apply in
    /// order to an empty store (docs/operations.md#backups).
    async fn backup(&self) -> Result<backup::Chunks, StoreError> {
        Err(StoreError::Unavailable("this store has no online backup".into()))
    }

    /// Whether the store answers now (a database round trip for PostgreSQL; embedded stores
    /// always answer).
    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Takes the lease of an unfinished execution for this host unless another live host
    /// holds it. A store of one host answers [`Claim::Mine`].
    async fn claim(&self, _id: ExecutionId) -> Result<Claim, StoreError> {
        Ok(Claim::Mine)
    }

    /// A shared store: how often [`adopt`](Self::adopt) should run. `None`: one host only.
    fn shared(&self) -> Option<std::time::Duration> {
        None
    }

    /// A shared store: takes the leases of executions whose host's lease lapsed (and, at
    /// `startup`, of unfinished executions no host holds); the executions taken.
    async fn adopt(&self, _startup: bool) -> Result<Vec<ExecutionId>, StoreError> {
        Ok(Vec::new())
    }

    /// A shared store: tells `host` to look at `id` (someone recorded for it elsewhere).
    async fn wake(&self, _host: HostId, _id: ExecutionId) -> Result<(), StoreError> {
        Ok(())
    }

    /// A shared store: whether it is this host's turn to deliver the subscriptions (one host
    /// at a time does). `None`: always (a store of one host).
    fn delivery_turn(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }

    /// A shared store: the executions other hosts asked this one to look at (taken once).
    fn wakeups(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ExecutionId>> {
        None
    }
}

/// An uploaded plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginMeta {
    /// Name.
    pub name: PluginName,
    /// Version.
    pub version: PluginVersion,
    /// SHA-256 of the bytes, hex.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was uploaded.
    pub uploaded_at: u64,
}

/// What `put_plugin` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginPut {
    /// Stored.
    Created,
    /// The same bytes were already stored under this version.
    Unchanged(PluginMeta),
    /// Other bytes are stored under this version.
    Conflict(PluginMeta),
}

/// A stored definition version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredDefinition {
    /// Saga name.
    pub name: SagaName,
    /// Version, from 1.
    pub version: u64,
    /// When this version was stored.
    pub created_at: u64,
    /// The definition.
    pub definition: SagaDefinition,
}

/// What `put_definition` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefinitionPut {
    /// First version of this saga.
    Created,
    /// A new version replaced the previous one.
    Replaced,
    /// Identical to the latest version: nothing stored.
    Unchanged,
}

/// Plugins, their precompiled artifacts, and saga definitions.
#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    /// Stores a plugin's metadata and bytes, plus its precompiled artifact, all or nothing.
    async fn put_plugin(
        &self,
        meta: PluginMeta,
        bytes: Vec<u8>,
        artifact: Option<(String, Vec<u8>)>,
    ) -> Result<PluginPut, StoreError>;

    /// One plugin.
    async fn plugin(&self, name: &PluginName, version: &PluginVersion) -> Result<Option<PluginMeta>, StoreError>;

    /// Every plugin, by name then version.
    async fn plugins(&self) -> Result<Vec<PluginMeta>, StoreError>;

    /// A plugin's bytes, by digest.
    async fn plugin_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// A precompiled artifact.
    async fn artifact(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a precompiled artifact (after an engine upgrade made the old one unusable).
    async fn put_artifact(&self, key: String, bytes: Vec<u8>) -> Result<(), StoreError>;

    /// Stores a new version of a definition (unless identical to the latest).
    async fn put_definition(
        &self,
        name: SagaName,
        definition: SagaDefinition,
        at: u64,
    ) -> Result<(StoredDefinition, DefinitionPut), StoreError>;

    /// A definition version; `None` for the latest.
    async fn definition(&self, name: &SagaName, version: Option<u64>) -> Result<Option<StoredDefinition>, StoreError>;

    /// The latest version of every definition, by name.
    async fn definitions(&self) -> Result<Vec<StoredDefinition>, StoreError>;
}

/// Plugins' durable state (written only through [`EventStore::append_with_state`]).
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The committed entry under `key`.
    async fn state_get(&self, key: &StateKey) -> Result<Option<StateEntry>, StoreError>;

    /// Up to `limit` entries of `plugin`'s namespace, by collection then key: only `collection`
    /// when given, only keys starting with `prefix`.
    async fn state_list(
        &self,
        plugin: &PluginName,
        collection: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(StateKey, StateEntry)>, StoreError>;
}

/// Secrets, as the records `crate::secrets` makes of them (sealed when the host has a key).
/// The store never interprets a record.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Stores `record` under `name`; `true` when the name was new.
    async fn secret_put(&self, name: String, record: Vec<u8>) -> Result<bool, StoreError>;

    /// Removes the secret `name`; `false` when there was none.
    async fn secret_delete(&self, name: String) -> Result<bool, StoreError>;

    /// The record stored under `name`.
    async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every secret's name and record, by name.
    async fn secrets(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

/// The host's topic log (docs/topics.md): events in the order they were recorded, each id
/// once, and the named cursors of those who read it.
#[async_trait]
pub trait TopicStore: Send + Sync + 'static {
    /// Appends `event` unless an event with its id is in the log: its `seq`, and whether it
    /// is new (`false`: the first event with that id, which is kept as it was).
    async fn publish(&self, event: crate::domain::TopicEvent) -> Result<(u64, bool), StoreError>;

    /// Up to `limit` events with a `seq` above `after`, in order.
    async fn topic_events(&self, after: u64, limit: usize)
    -> Result<Vec<(u64, crate::domain::TopicEvent)>, StoreError>;

    /// The newest `limit` events with this key, in log order.
    async fn topic_events_by_key(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Vec<(u64, crate::domain::TopicEvent)>, StoreError>;

    /// The named cursor (0 when never moved).
    async fn cursor(&self, name: &str) -> Result<u64, StoreError>;

    /// Moves the named cursor to `seq`.
    async fn set_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError>;
}

/// Subscriptions (docs/subscriptions.md) and their dead letters. A subscription's cursor in the
/// topic log is the [`TopicStore`] cursor named by [`cursor_name`].
#[async_trait]
pub trait SubscriptionStore: Send + Sync + 'static {
    /// Stores `sub` (a new one's cursor starts where `start` says); `true` when it is new.
    async fn subscription_put(&self, sub: Subscription, start: StartAt) -> Result<bool, StoreError>;

    /// Removes a subscription with its cursor and dead letters; `false` when there was none.
    async fn subscription_delete(&self, name: &str) -> Result<bool, StoreError>;

    /// Every subscription, by name.
    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError>;

    /// Stores (`Some`) or removes (`None`) dead letters of subscription `name`, by `seq`, and
    /// moves its cursor to `cursor` if given, in one commit; `false` (nothing written) when the
    /// subscription is gone.
    async fn dead_letters_write(
        &self,
        name: &str,
        letters: Vec<(u64, Option<DeadLetter>)>,
        cursor: Option<u64>,
    ) -> Result<bool, StoreError>;

    /// Up to `limit` dead letters of subscription `name` with a `seq` above `after`, in order.
    async fn dead_letters(&self, name: &str, after: u64, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
}

/// Everything the host stores.
pub trait Store: EventStore + CatalogStore + StateStore + SecretStore + TopicStore + SubscriptionStore {}
impl<T: EventStore + CatalogStore + StateStore + SecretStore + TopicStore + SubscriptionStore> Store for T {}
