//! The sled backend: one sled tree in a data directory. Reads go straight to sled (on the
//! blocking pool); every write goes to one writer thread ([`writer`]) that commits whatever
//! has queued up as one atomic batch with one flush (group commit), after the disk guard
//! ([`disk_guard`]) has checked that the disk can take it.
//!
//! sled's flush ends with `fdatasync` of its log (vendored change 3, `vendor/README.md`), so a
//! write is answered only once it would survive a power loss (docs/operations.md#durability).

mod backup;
mod disk_guard;
mod reads;
mod writer;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

pub use backup::{MAX_CAPTURE_BYTES, Restore};
pub use disk_guard::DEFAULT_RESERVE_BYTES;

/// The page cache sled keeps in memory unless told otherwise (sled's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: u64 = 128 << 20;
use disk_guard::DiskGuard;
use reads::{current_summary, get, latest_definition, scan_ids};

use super::group::Writer;
use super::keys;
use super::kv::{self, decode, decode_u64, decode_write};
use super::*;

/// The embedded store: one sled tree in a data directory.
pub struct SledStore {
    db: ::sled::Db,
    writer: Writer,
    stats: Arc<CommitStats>,
    capture: backup::Capture,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SledStore {
    /// Opens (or creates) the store in `dir` and starts its writer thread, keeping the
    /// default free-space reserve and cache size.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, DEFAULT_RESERVE_BYTES, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store, refusing writes while less than `reserve_bytes` are free on its disk,
    /// with a page cache of about `cache_bytes`.
    pub fn open_with(dir: &Path, reserve_bytes: u64, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = ::sled::Config::new().path(dir).cache_capacity(cache_bytes).open().map_err(unavailable)?;
        let guard = DiskGuard { dir: dir.to_path_buf(), reserve_bytes };
        let state_clock = match db.get(keys::state_clock()).map_err(unavailable)? {
            Some(v) => StateValue::stored_version(&v)?,
            None => 0,
        };
        let (writer, rx) = Writer::new();
        let stats = Arc::new(CommitStats::default());
        let (wdb, wstats, capture) = (db.clone(), stats.clone(), backup::Capture::default());
        let wcapture = capture.clone();
        std::thread::Builder::new()
            .name("sled-writer".into())
            .spawn(move || writer::run(wdb, rx, &wstats, &guard, &wcapture, state_clock))
            .map_err(unavailable)?;
        Ok(Self { db, writer, stats, capture })
    }

    /// Group-commit counters.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.stats
    }

    async fn read_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&::sled::Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(unavailable)?
    }
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
        self.writer.create(id, saga, records, idem).await
    }

    async fn append_with_state(
        &self,
        id: ExecutionId,
        expected: u64,
        records: Vec<EventRecord>,
        state: Effects,
    ) -> Result<(), StoreError> {
        self.writer.append(id, expected, records, state, false).await
    }

    async fn idempotency(&self, key: &IdempotencyKey) -> Result<Option<commit::KeyRecord>, StoreError> {
        let key = key.clone();
        self.read_with(move |db| reads::idempotency(db, &key)).await
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
            let prefix = match (&filter.key, &filter.saga, filter.status) {
                (Some(key), _, _) => keys::key_index(key),
                (None, Some(saga), _) => keys::saga_index(saga),
                (None, None, Some(status)) => keys::status_index(status),
                (None, None, None) => keys::summaries(),
            };
            let mut out = Vec::new();
            for id in scan_ids(db, &prefix, filter.after) {
                if out.len() >= filter.limit {
                    break;
                }
                let Some(s) = current_summary(db, id?)? else {
                    continue;
                };
                if filter.status.is_none_or(|st| st == s.status) && filter.saga.as_ref().is_none_or(|g| *g == s.saga) {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError> {
        self.read_with(|db| {
            // One scan of the (short) quarantine list, not one lookup per unfinished execution.
            let quarantined = scan_ids(db, &keys::quarantined(), None).collect::<Result<HashSet<_>, _>>()?;
            let mut ids = Vec::new();
            for status in [ExecutionStatus::Running, ExecutionStatus::Compensating] {
                for id in scan_ids(db, &keys::status_index(status), None) {
                    let id = id?;
                    if !quarantined.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            Ok(ids)
        })
        .await
    }

    async fn quarantine(&self, entry: QuarantineEntry) -> Result<(), StoreError> {
        self.writer.quarantine(entry).await
    }

    async fn ended(
        &self,
        until: u64,
        after: Option<(u64, ExecutionId)>,
        limit: usize,
    ) -> Result<Vec<Ended>, StoreError> {
        self.read_with(move |db| {
            db.range(kv::ended_from(after)..keys::ended_until(until))
                .take(limit)
                .map(|pair| pair.map_err(unavailable).and_then(|(k, v)| kv::decode_ended(&k, &v)))
                .collect()
        })
        .await
    }

    async fn remove(&self, entries: Vec<(Ended, u64)>) -> Result<Vec<Removal>, StoreError> {
        self.writer.remove(entries).await
    }

    async fn keys_made(&self, until: u64, limit: usize) -> Result<Vec<MadeKey>, StoreError> {
        self.read_with(move |db| {
            db.range(keys::keys_made()..keys::keys_made_until(until))
                .take(limit)
                .map(|pair| pair.map_err(unavailable).and_then(|(k, v)| kv::decode_key_made(&k, &v)))
                .collect()
        })
        .await
    }

    async fn forget_keys(&self, made: Vec<MadeKey>) -> Result<usize, StoreError> {
        self.writer.forget_keys(made).await
    }

    async fn backup(&self) -> Result<super::backup::Chunks, StoreError> {
        self.capture.start()?;
        // Let the writer finish the group it may be committing: every later one keeps a copy.
        if let Err(e) = self.writer.commit(super::group::Needs::default(), |_| Ok(())).await {
            self.capture.take();
            return Err(e);
        }
        Ok(backup::scan(self.db.clone(), self.capture.clone()))
    }

    async fn quarantined(&self, id: ExecutionId) -> Result<Option<QuarantineEntry>, StoreError> {
        self.read_with(move |db| get(db, &keys::quarantine(id))).await
    }

    async fn quarantine_list(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.read_with(|db| {
            db.scan_prefix(keys::quarantined())
                .map(|kv| kv.map_err(unavailable).and_then(|(_, v)| decode(&v)))
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
        self.writer.put_plugin(meta, bytes, artifact).await
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
        self.writer.put_artifact(key, bytes).await
    }

    async fn put_definition(
        &self,
        name: SagaName,
        definition: SagaDefinition,
        at: u64,
    ) -> Result<(StoredDefinition, DefinitionPut), StoreError> {
        self.writer.put_definition(name, definition, at).await
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
impl TopicStore for SledStore {
    async fn publish(&self, event: crate::domain::TopicEvent) -> Result<(u64, bool), StoreError> {
        self.writer.publish(event).await
    }

    async fn topic_events(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, crate::domain::TopicEvent)>, StoreError> {
        self.read_with(move |db| {
            let start = keys::topic_event(after.saturating_add(1));
            let end = keys::prefix_end(&keys::topic_events());
            let mut out = Vec::new();
            for kv in db.range(start..end).take(limit) {
                let (k, v) = kv.map_err(unavailable)?;
                let seq = keys::event_seq(&k).ok_or_else(|| StoreError::Corrupt("topic event key".into()))?;
                out.push((seq, decode(&v)?));
            }
            Ok(out)
        })
        .await
    }

    async fn topic_events_by_key(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Vec<(u64, crate::domain::TopicEvent)>, StoreError> {
        let prefix = keys::topic_events_by_key(key);
        self.read_with(move |db| {
            let mut out = Vec::new();
            for k in db.scan_prefix(&prefix).keys().rev().take(limit) {
                let k = k.map_err(unavailable)?;
                let seq = keys::event_seq(&k).ok_or_else(|| StoreError::Corrupt("topic key index".into()))?;
                let v = db.get(keys::topic_event(seq)).map_err(unavailable)?;
                out.push((
                    seq,
                    decode(
                        &v.ok_or_else(|| StoreError::Corrupt(format!("topic event {seq} is indexed but missing")))?,
                    )?,
                ));
            }
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        let key = keys::cursor(name);
        self.read_with(move |db| match db.get(key).map_err(unavailable)? {
            Some(v) => decode_u64(&v, "cursor"),
            None => Ok(0),
        })
        .await
    }

    async fn set_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.writer.set_cursor(name, seq).await
    }
}

#[async_trait]
impl SubscriptionStore for SledStore {
    async fn subscription_put(&self, sub: Subscription, start: StartAt) -> Result<bool, StoreError> {
        self.writer.put_subscription(sub, start).await
    }

    async fn subscription_delete(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.writer.delete_subscription(name).await
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        self.read_with(|db| {
            db.scan_prefix(keys::subscriptions()).values().map(|v| decode(&v.map_err(unavailable)?)).collect()
        })
        .await
    }

    async fn dead_letters_write(
        &self,
        name: &str,
        letters: Vec<(u64, Option<DeadLetter>)>,
        cursor: Option<u64>,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.writer.dead_letters(name, letters, cursor).await
    }

    async fn dead_letters(&self, name: &str, after: u64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let (start, end) =
            (keys::dead_letter(name, after.saturating_add(1)), keys::prefix_end(&keys::dead_letters_of(name)));
        self.read_with(move |db| {
            db.range(start..end).values().take(limit).map(|v| decode(&v.map_err(unavailable)?)).collect()
        })
        .await
    }
}

#[async_trait]
impl SecretStore for SledStore {
    async fn secret_put(&self, name: String, record: Vec<u8>) -> Result<bool, StoreError> {
        self.writer.put_secret(name, record).await
    }

    async fn secret_delete(&self, name: String) -> Result<bool, StoreError> {
        self.writer.delete_secret(name).await
    }

    async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = keys::secret(name);
        self.read_with(move |db| Ok(db.get(key).map_err(unavailable)?.map(|v| v.to_vec()))).await
    }

    async fn secrets(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.read_with(|db| {
            let prefix = keys::secrets();
            db.scan_prefix(&prefix)
                .map(|kv| {
                    let (k, v) = kv.map_err(unavailable)?;
                    let name = String::from_utf8(k[prefix.len()..].to_vec())
                        .map_err(|_| StoreError::Corrupt("secret name".into()))?;
                    Ok((name, v.to_vec()))
                })
                .collect()
        })
        .await
    }
}

#[async_trait]
impl StateStore for SledStore {
    async fn state_get(&self, key: &StateKey) -> Result<Option<StateEntry>, StoreError> {
        let key = keys::state(key);
        self.read_with(move |db| db.get(key).map_err(unavailable)?.map(|v| StateValue::decode(&v)).transpose()).await
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
                    out.push((key, StateValue::decode(&v)?));
                }
            }
            Ok(out)
        })
        .await
    }
}
