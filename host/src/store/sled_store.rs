//! The sled backend. Reads go straight to sled (on the blocking pool); every write goes to
//! one writer thread that applies whatever has queued up as a single atomic batch, flushes
//! once, and then answers all its callers: group commit. Being the only writer also makes its
//! version checks race-free.
//!
//! Only that thread ever flushes: concurrent `flush_async` hangs in sled 0.34.7 (issue #1308).
//!
//! sled 0.34 does not recover from a failed write (a full or read-only disk leaves it hanging
//! or failing until reopened), so the writer checks the file system before every group and
//! refuses the group with `Unavailable` while less than the configured reserve is free. The
//! affected requests fail with 503; nothing reaches sled, and writes resume once space returns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use super::keys;
use super::*;

/// Most writes merged into one batch: bounds the latency a large group adds to its first caller.
const MAX_GROUP: usize = 4_096;

/// Free space kept on the store's disk by default.
pub const DEFAULT_RESERVE_BYTES: u64 = 64 << 20;

/// Refuses writes before the disk refuses them to sled.
struct DiskGuard {
    dir: PathBuf,
    reserve_bytes: u64,
}

impl DiskGuard {
    /// `Err` when a group of about `bytes` must not be written now.
    fn check(&self, bytes: u64) -> Result<(), StoreError> {
        let st = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| unavailable(format!("cannot inspect the data directory: {e}")))?;
        if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
            return Err(unavailable("the data directory is on a read-only file system"));
        }
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        // sled writes a batch to its log and later to segments: count it twice.
        if free < self.reserve_bytes + 2 * bytes {
            return Err(unavailable(format!(
                "disk almost full: {} MiB free, the store keeps {} MiB in reserve",
                free >> 20,
                self.reserve_bytes >> 20
            )));
        }
        Ok(())
    }
}

type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

enum Write {
    Create {
        id: ExecutionId,
        saga: SagaName,
        records: Vec<EventRecord>,
        idem: Option<IdempotencyKey>,
        reply: oneshot::Sender<Result<Created, StoreError>>,
    },
    Append {
        id: ExecutionId,
        expected: u64,
        records: Vec<EventRecord>,
        state: StateChanges,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    PutPlugin {
        meta: PluginMeta,
        bytes: Vec<u8>,
        artifact: Option<(String, Vec<u8>)>,
        reply: oneshot::Sender<Result<PluginPut, StoreError>>,
    },
    PutArtifact {
        key: String,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    PutDefinition {
        name: SagaName,
        definition: SagaDefinition,
        at: u64,
        reply: oneshot::Sender<Result<(StoredDefinition, DefinitionPut), StoreError>>,
    },
}

/// Group-commit statistics, for benchmarks and metrics.
#[derive(Default, Debug)]
pub struct CommitStats {
    /// Batches committed (one flush each).
    pub batches: AtomicU64,
    /// Writes committed in those batches.
    pub writes: AtomicU64,
}

/// The production store: one sled tree in a data directory.
pub struct SledStore {
    db: sled::Db,
    tx: mpsc::Sender<Write>,
    stats: Arc<CommitStats>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store types serialize")
}

impl SledStore {
    /// Opens (or creates) the store in `dir` and starts its writer thread, keeping the
    /// default free-space reserve.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_reserve(dir, DEFAULT_RESERVE_BYTES)
    }

    /// Opens the store, refusing writes while less than `reserve_bytes` are free on its disk.
    pub fn open_with_reserve(dir: &Path, reserve_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open().map_err(unavailable)?;
        let guard = DiskGuard { dir: dir.to_path_buf(), reserve_bytes };
        let state_clock = match db.get(keys::state_clock()).map_err(unavailable)? {
            Some(v) => StateValue::stored_version(&v).map_err(StoreError::Corrupt)?,
            None => 0,
        };
        let (tx, rx) = mpsc::channel(MAX_GROUP * 4);
        let stats = Arc::new(CommitStats::default());
        let (wdb, wstats) = (db.clone(), stats.clone());
        std::thread::Builder::new()
            .name("sled-writer".into())
            .spawn(move || writer(wdb, rx, &wstats, &guard, state_clock))
            .map_err(unavailable)?;
        Ok(Self { db, tx, stats })
    }

    /// Group-commit counters.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.stats
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Write,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| unavailable("store writer has stopped"))?;
        rx.await.map_err(|_| unavailable("store writer has stopped"))?
    }

    async fn read_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&sled::Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(unavailable)?
    }
}

fn get<T: DeserializeOwned>(db: &sled::Db, key: &[u8]) -> Result<Option<T>, StoreError> {
    db.get(key).map_err(unavailable)?.map(|v| decode(&v)).transpose()
}

/// The records of one write to a stream: a JSON array, or a single record (one-record writes,
/// and every write of stores from before writes were grouped).
fn decode_write<T: DeserializeOwned>(v: &[u8]) -> Result<Vec<T>, StoreError> {
    if v.first() == Some(&b'[') { decode(v) } else { Ok(vec![decode(v)?]) }
}

/// The time stamps of a record, read without decoding its event.
#[derive(serde::Deserialize)]
struct Stamp {
    at: u64,
}

/// A stream's summary as of its last write. The stored summary is rewritten only when the
/// status changes (one sled key less per append); version and update time come from the
/// stream's last event key, which holds the records of its last write.
fn current_summary(db: &sled::Db, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
    let Some(mut summary) = get::<ExecutionSummary>(db, &keys::summary(id))? else {
        return Ok(None);
    };
    let events = keys::events_of(id);
    if let Some(kv) = db.range(events.clone()..keys::prefix_end(&events)).next_back() {
        let (k, v) = kv.map_err(unavailable)?;
        let seq = keys::event_seq(&k).ok_or_else(|| StoreError::Corrupt("event key".into()))?;
        if seq > summary.version {
            let last = decode_write::<Stamp>(&v)?.pop();
            summary.version = seq;
            summary.updated_at = last.ok_or_else(|| StoreError::Corrupt("empty write".into()))?.at;
        }
    }
    Ok(Some(summary))
}

fn scan_ids(
    db: &sled::Db,
    prefix: &[u8],
    after: Option<ExecutionId>,
) -> impl Iterator<Item = Result<ExecutionId, StoreError>> {
    let end = match after {
        Some(id) => [prefix, id.as_bytes()].concat(),
        None => keys::prefix_end(prefix),
    };
    db.range(prefix.to_vec()..end).rev().map(|kv| {
        kv.map_err(unavailable)
            .and_then(|(k, _)| keys::trailing_id(&k).ok_or_else(|| StoreError::Corrupt("index key".into())))
    })
}

#[async_trait]
impl EventStore for SledStore {
    async fn create_with(
        &self,
        id: ExecutionId,
        saga: SagaName,
        records: Vec<EventRecord>,
        idem: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        self.write(|reply| Write::Create { id, saga, records, idem, reply }).await
    }

    async fn append_with_state(
        &self,
        id: ExecutionId,
        expected: u64,
        records: Vec<EventRecord>,
        state: StateChanges,
    ) -> Result<(), StoreError> {
        self.write(|reply| Write::Append { id, expected, records, state, reply }).await
    }

    async fn read(&self, id: ExecutionId, after: u64) -> Result<Vec<EventRecord>, StoreError> {
        self.read_with(move |db| {
            let mut records = Vec::new();
            for kv in db.range(keys::event(id, after.saturating_add(1))..keys::prefix_end(&keys::events_of(id))) {
                let (_, v) = kv.map_err(unavailable)?;
                records.extend(decode_write::<EventRecord>(&v)?.into_iter().filter(|r| r.seq > after));
            }
            if records.is_empty() && !db.contains_key(keys::summary(id)).map_err(unavailable)? {
                return Err(StoreError::NotFound(id));
            }
            Ok(records)
        })
        .await
    }

    async fn summary(&self, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
        self.read_with(move |db| current_summary(db, id)).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ExecutionSummary>, StoreError> {
        let filter = filter.clone();
        self.read_with(move |db| {
            let prefix = match (&filter.saga, filter.status) {
                (Some(saga), _) => keys::saga_index(saga),
                (None, Some(status)) => keys::status_index(status),
                (None, None) => keys::summaries(),
            };
            let mut out = Vec::new();
            for id in scan_ids(db, &prefix, filter.after) {
                if out.len() >= filter.limit {
                    break;
                }
                let Some(s) = current_summary(db, id?)? else {
                    continue;
                };
                if filter.status.is_none_or(|st| st == s.status) {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError> {
        self.read_with(|db| {
            [ExecutionStatus::Running, ExecutionStatus::Compensating]
                .into_iter()
                .flat_map(|s| scan_ids(db, &keys::status_index(s), None).collect::<Vec<_>>())
                .collect()
        })
        .await
    }
}

#[async_trait]
impl CatalogStore for SledStore {
    async fn put_plugin(
        &self,
        meta: PluginMeta,
        bytes: Vec<u8>,
        artifact: Option<(String, Vec<u8>)>,
    ) -> Result<PluginPut, StoreError> {
        self.write(|reply| Write::PutPlugin { meta, bytes, artifact, reply }).await
    }

    async fn plugin(&self, name: &PluginName, version: &PluginVersion) -> Result<Option<PluginMeta>, StoreError> {
        let key = keys::plugin(name, version);
        self.read_with(move |db| get(db, &key)).await
    }

    async fn plugins(&self) -> Result<Vec<PluginMeta>, StoreError> {
        self.read_with(|db| {
            db.scan_prefix(keys::plugins()).map(|kv| kv.map_err(unavailable).and_then(|(_, v)| decode(&v))).collect()
        })
        .await
    }

    async fn plugin_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = keys::blob(digest);
        self.read_with(move |db| Ok(db.get(key).map_err(unavailable)?.map(|v| v.to_vec()))).await
    }

    async fn artifact(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = keys::artifact(key);
        self.read_with(move |db| Ok(db.get(key).map_err(unavailable)?.map(|v| v.to_vec()))).await
    }

    async fn put_artifact(&self, key: String, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.write(|reply| Write::PutArtifact { key, bytes, reply }).await
    }

    async fn put_definition(
        &self,
        name: SagaName,
        definition: SagaDefinition,
        at: u64,
    ) -> Result<(StoredDefinition, DefinitionPut), StoreError> {
        self.write(|reply| Write::PutDefinition { name, definition, at, reply }).await
    }

    async fn definition(&self, name: &SagaName, version: Option<u64>) -> Result<Option<StoredDefinition>, StoreError> {
        let name = name.clone();
        self.read_with(move |db| match version {
            Some(v) => get(db, &keys::definition(&name, v)),
            None => latest_definition(db, &name),
        })
        .await
    }

    async fn definitions(&self) -> Result<Vec<StoredDefinition>, StoreError> {
        self.read_with(|db| {
            let mut latest: Vec<StoredDefinition> = Vec::new();
            for kv in db.scan_prefix(keys::definitions()) {
                let d: StoredDefinition = decode(&kv.map_err(unavailable)?.1)?;
                match latest.last_mut() {
                    Some(last) if last.name == d.name => *last = d,
                    _ => latest.push(d),
                }
            }
            Ok(latest)
        })
        .await
    }
}

#[async_trait]
impl StateStore for SledStore {
    async fn state_get(&self, key: &StateKey) -> Result<Option<StateEntry>, StoreError> {
        let key = keys::state(key);
        self.read_with(move |db| {
            db.get(key).map_err(unavailable)?.map(|v| StateValue::decode(&v).map_err(StoreError::Corrupt)).transpose()
        })
        .await
    }

    async fn state_list(
        &self,
        plugin: &PluginName,
        collection: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(StateKey, StateEntry)>, StoreError> {
        let (plugin, prefix) = (plugin.clone(), prefix.to_owned());
        let mut scan = keys::state_of(&plugin, collection);
        if collection.is_some() {
            scan.extend_from_slice(prefix.as_bytes());
        }
        self.read_with(move |db| {
            let mut out = Vec::new();
            for kv in db.scan_prefix(scan) {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = kv.map_err(unavailable)?;
                let key = keys::parse_state(&plugin, &k).ok_or_else(|| StoreError::Corrupt("state key".into()))?;
                if key.key.starts_with(&prefix) {
                    out.push((key, StateValue::decode(&v).map_err(StoreError::Corrupt)?));
                }
            }
            Ok(out)
        })
        .await
    }
}

fn latest_definition(db: &sled::Db, name: &SagaName) -> Result<Option<StoredDefinition>, StoreError> {
    db.scan_prefix(keys::definitions_of(name))
        .next_back()
        .transpose()
        .map_err(unavailable)?
        .map(|(_, v)| decode(&v))
        .transpose()
}

/// The writer's view of one group: the batch being built plus what earlier writes of the
/// same group changed, so that later writes in the group see them.
struct Group<'a> {
    db: &'a sled::Db,
    batch: sled::Batch,
    /// Stream heads: kept across groups (the writer is the only writer, so they stay true),
    /// so that an append does not read and decode its summary from sled. Dropped when a
    /// commit fails, pruned when a stream ends.
    summaries: &'a mut HashMap<ExecutionId, Option<ExecutionSummary>>,
    idempotency: HashMap<Vec<u8>, ExecutionId>,
    plugins: HashMap<Vec<u8>, PluginMeta>,
    definitions: HashMap<SagaName, StoredDefinition>,
    /// State versions written in this group (0: deleted), so later writes check against them.
    state: HashMap<Vec<u8>, u64>,
    /// The state version counter (kept across groups; persisted with every group that moves it).
    state_clock: &'a mut u64,
    /// Whether this group moved the counter.
    clock_moved: bool,
    /// Bytes staged so far.
    bytes: u64,
    /// Streams that reached a terminal status in this group (their heads leave the cache).
    ended: Vec<ExecutionId>,
}

impl Group<'_> {
    fn put(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += (key.len() + value.len()) as u64;
        self.batch.insert(key, value);
    }

    fn summary(&mut self, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
        if let Some(s) = self.summaries.get(&id) {
            return Ok(s.clone());
        }
        let s = current_summary(self.db, id)?;
        if let Some(found) = &s {
            self.summaries.insert(id, Some(found.clone()));
        }
        Ok(s)
    }

    /// Caches the stream's new head; writes it (and moves the status index) only when the
    /// status changed, see [`current_summary`].
    fn put_summary(&mut self, old: Option<ExecutionStatus>, s: ExecutionSummary) {
        if old != Some(s.status) {
            if let Some(old) = old {
                self.batch.remove(keys::by_status(old, s.id));
            }
            self.put(keys::by_status(s.status, s.id), &[]);
            self.put(keys::summary(s.id), encode(&s));
        }
        if s.status.is_terminal() {
            self.ended.push(s.id);
        }
        self.summaries.insert(s.id, Some(s));
    }

    /// One key per write (the sled writer's cost is per key), named by its last record.
    fn insert_records(&mut self, id: ExecutionId, records: &[EventRecord]) {
        match records {
            [] => {}
            [one] => self.put(keys::event(id, one.seq), encode(one)),
            [.., last] => self.put(keys::event(id, last.seq), encode(&records)),
        }
    }

    fn create(
        &mut self,
        id: ExecutionId,
        saga: SagaName,
        records: Vec<EventRecord>,
        idem: Option<IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let idem_key = idem.as_ref().map(|k| keys::idempotency(&k.saga, &k.key));
        if let Some(k) = &idem_key {
            if let Some(existing) = self.idempotency.get(k) {
                return Ok(Created::Existing(*existing));
            }
            if let Some(v) = self.db.get(k).map_err(unavailable)? {
                let bytes: [u8; 16] =
                    v.as_ref().try_into().map_err(|_| StoreError::Corrupt("idempotency value".into()))?;
                return Ok(Created::Existing(ExecutionId::from_bytes(bytes)));
            }
        }
        check_sequence(0, &records)?;
        if let Some(existing) = self.summary(id)? {
            return Err(StoreError::Conflict { id, expected: 0, actual: existing.version });
        }
        self.put(keys::by_saga(&saga, id), &[]);
        if let Some(k) = idem_key {
            self.put(k.clone(), id.as_bytes());
            self.idempotency.insert(k, id);
        }
        let mut summary = ExecutionSummary::new(id, saga, &records[0]);
        summary.advance(&records[1..]);
        self.insert_records(id, &records);
        self.put_summary(None, summary);
        Ok(Created::New)
    }

    /// The committed version of a state entry as of this point in the group (0: absent).
    fn state_version(&self, key: &[u8]) -> Result<u64, StoreError> {
        if let Some(v) = self.state.get(key) {
            return Ok(*v);
        }
        match self.db.get(key).map_err(unavailable)? {
            Some(v) => StateValue::stored_version(&v).map_err(StoreError::Corrupt),
            None => Ok(0),
        }
    }

    fn append(
        &mut self,
        id: ExecutionId,
        expected: u64,
        records: Vec<EventRecord>,
        state: StateChanges,
    ) -> Result<(), StoreError> {
        let mut summary = self.summary(id)?.ok_or(StoreError::NotFound(id))?;
        if summary.version != expected {
            return Err(StoreError::Conflict { id, expected, actual: summary.version });
        }
        check_sequence(expected, &records)?;
        super::state::check_reads(&state.reads, |k| self.state_version(&keys::state(k)))?;
        for (key, value) in state.writes {
            let key = keys::state(&key);
            match value {
                Some(value) => {
                    *self.state_clock += 1;
                    self.clock_moved = true;
                    self.state.insert(key.clone(), *self.state_clock);
                    self.put(key, value.encode(*self.state_clock));
                }
                None => {
                    self.state.insert(key.clone(), 0);
                    self.batch.remove(key);
                }
            }
        }
        let old = summary.status;
        summary.advance(&records);
        self.insert_records(id, &records);
        self.put_summary(Some(old), summary);
        Ok(())
    }

    fn put_plugin(
        &mut self,
        meta: PluginMeta,
        bytes: Vec<u8>,
        artifact: Option<(String, Vec<u8>)>,
    ) -> Result<PluginPut, StoreError> {
        let key = keys::plugin(&meta.name, &meta.version);
        let existing = match self.plugins.get(&key) {
            Some(m) => Some(m.clone()),
            None => get::<PluginMeta>(self.db, &key)?,
        };
        if let Some(existing) = existing {
            return Ok(if existing.digest == meta.digest {
                PluginPut::Unchanged(existing)
            } else {
                PluginPut::Conflict(existing)
            });
        }
        self.put(keys::blob(&meta.digest), bytes);
        if let Some((k, a)) = artifact {
            self.put(keys::artifact(&k), a);
        }
        self.put(key.clone(), encode(&meta));
        self.plugins.insert(key, meta);
        Ok(PluginPut::Created)
    }

    fn put_definition(
        &mut self,
        name: SagaName,
        definition: SagaDefinition,
        at: u64,
    ) -> Result<(StoredDefinition, DefinitionPut), StoreError> {
        let latest = match self.definitions.get(&name) {
            Some(d) => Some(d.clone()),
            None => latest_definition(self.db, &name)?,
        };
        let (version, put) = match latest {
            Some(d) if d.definition == definition => return Ok((d, DefinitionPut::Unchanged)),
            Some(d) => (d.version + 1, DefinitionPut::Replaced),
            None => (1, DefinitionPut::Created),
        };
        let stored = StoredDefinition { name: name.clone(), version, created_at: at, definition };
        self.batch.insert(keys::definition(&name, version), encode(&stored));
        self.definitions.insert(name, stored.clone());
        Ok((stored, put))
    }

    /// Stages one write; the returned closure answers its caller once the group is committed.
    fn stage(&mut self, w: Write) -> Finish {
        fn finish<T: Send + 'static>(
            result: Result<T, StoreError>,
            reply: oneshot::Sender<Result<T, StoreError>>,
        ) -> Finish {
            Box::new(move |commit| {
                // Failed writes staged nothing, so they answer with their own error.
                let answer = match (result, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Ok(_), Err(e)) | (Err(e), _) => Err(e),
                };
                let _ = reply.send(answer);
            })
        }
        match w {
            Write::Create { id, saga, records, idem, reply } => finish(self.create(id, saga, records, idem), reply),
            Write::Append { id, expected, records, state, reply } => {
                finish(self.append(id, expected, records, state), reply)
            }
            Write::PutPlugin { meta, bytes, artifact, reply } => finish(self.put_plugin(meta, bytes, artifact), reply),
            Write::PutArtifact { key, bytes, reply } => {
                self.put(keys::artifact(&key), bytes);
                finish(Ok(()), reply)
            }
            Write::PutDefinition { name, definition, at, reply } => {
                finish(self.put_definition(name, definition, at), reply)
            }
        }
    }
}

fn writer(db: sled::Db, mut rx: mpsc::Receiver<Write>, stats: &CommitStats, guard: &DiskGuard, mut state_clock: u64) {
    let mut heads: HashMap<ExecutionId, Option<ExecutionSummary>> = HashMap::new();

    while let Some(first) = rx.blocking_recv() {
        let mut group = Group {
            db: &db,
            batch: sled::Batch::default(),
            summaries: &mut heads,
            idempotency: HashMap::new(),
            plugins: HashMap::new(),
            definitions: HashMap::new(),
            state: HashMap::new(),
            state_clock: &mut state_clock,
            clock_moved: false,
            bytes: 0,
            ended: Vec::new(),
        };
        let mut finishers = vec![group.stage(first)];
        while finishers.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(w) => finishers.push(group.stage(w)),
                Err(_) => break,
            }
        }
        if group.clock_moved {
            let clock = group.state_clock.to_be_bytes();
            group.put(keys::state_clock(), &clock);
        }
        let batch = std::mem::take(&mut group.batch);
        let ended = std::mem::take(&mut group.ended);
        let commit_started = std::time::Instant::now();
        let commit = guard.check(group.bytes).and_then(|()| {
            db.apply_batch(batch).and_then(|()| db.flush().map(drop)).map_err(|e| {
                tracing::error!(error = %e, "store commit failed");
                unavailable(e)
            })
        });
        if let Err(e) = &commit {
            tracing::warn!(error = %e, writes = finishers.len(), "store refused a group of writes");
            // The cached heads include this group's unapplied writes: start again from sled.
            heads.clear();
        } else {
            for id in ended {
                heads.remove(&id);
            }
        }
        let m = crate::metrics::metrics();
        m.store_batch_writes.observe(finishers.len() as f64);
        crate::metrics::observe(&m.store_commit_seconds, commit_started.elapsed());
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.writes.fetch_add(finishers.len() as u64, Ordering::Relaxed);
        for f in finishers {
            f(commit.clone());
        }
    }
}
