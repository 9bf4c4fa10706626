//! The writer thread: every write goes through it. It stages whatever has queued up into one
//! [`Commit`] (the rules of [`crate::store::commit`]), turns the mutations into one sled batch,
//! applies and flushes it once, and then answers all its callers: group commit. Being the only
//! writer also makes the rules' reads race-free.
//!
//! Only this thread ever flushes: concurrent `flush_async` hangs in sled 0.34.7 (issue #1308).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::disk_guard::DiskGuard;
use super::reads::{current_summary, encode, get, latest_definition};
use super::{CommitStats, unavailable};
use crate::domain::subscription::cursor_name;
use crate::domain::{EventRecord, ExecutionId, PluginName, PluginVersion, SagaDefinition, SagaName};
use crate::store::commit::{Commit, KeyRecord, Mutation, Snapshot};
use crate::store::{
    Created, DefinitionPut, Effects, ExecutionSummary, IdempotencyKey, PluginMeta, PluginPut, QuarantineEntry,
    StateKey, StateValue, StoreError, StoredDefinition, keys,
};

/// Most writes merged into one batch: bounds the latency a large group adds to its first caller.
pub(super) const MAX_GROUP: usize = 4_096;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write request, answered once its group is durable.
pub(super) enum Write {
    Create {
        id: ExecutionId,
        saga: SagaName,
        records: Vec<EventRecord>,
        idem: Option<IdempotencyKey>,
        reply: Reply<Created>,
    },
    Append {
        id: ExecutionId,
        expected: u64,
        records: Vec<EventRecord>,
        state: Effects,
        reply: Reply<()>,
    },
    PutPlugin {
        meta: PluginMeta,
        bytes: Vec<u8>,
        artifact: Option<(String, Vec<u8>)>,
        reply: Reply<PluginPut>,
    },
    PutArtifact {
        key: String,
        bytes: Vec<u8>,
        reply: Reply<()>,
    },
    PutDefinition {
        name: SagaName,
        definition: SagaDefinition,
        at: u64,
        reply: Reply<(StoredDefinition, DefinitionPut)>,
    },
    Quarantine {
        entry: QuarantineEntry,
        reply: Reply<()>,
    },
    PutSecret {
        name: String,
        record: Vec<u8>,
        reply: Reply<bool>,
    },
    DeleteSecret {
        name: String,
        reply: Reply<bool>,
    },
    Publish {
        event: crate::domain::TopicEvent,
        reply: Reply<(u64, bool)>,
    },
    SetCursor {
        name: String,
        seq: u64,
        reply: Reply<()>,
    },
    /// Any other write: stages itself and answers its caller (see `SledStore::commit`).
    Staged(Stage),
}

/// What the rules read, straight from sled; stream heads are cached across groups (this
/// thread is the only writer, so they stay true) so that an append does not read and decode
/// its summary.
pub(super) struct SledSnapshot<'a> {
    db: &'a sled::Db,
    heads: &'a mut HashMap<ExecutionId, ExecutionSummary>,
}

impl Snapshot for SledSnapshot<'_> {
    fn summary(&mut self, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
        if let Some(s) = self.heads.get(&id) {
            return Ok(Some(s.clone()));
        }
        let found = current_summary(self.db, id)?;
        if let Some(s) = &found {
            self.heads.insert(id, s.clone());
        }
        Ok(found)
    }

    /// `id ‖ fingerprint`, or only `id` for records written before fingerprints were kept.
    fn idempotency(&mut self, key: &IdempotencyKey) -> Result<Option<KeyRecord>, StoreError> {
        super::reads::idempotency(self.db, key)
    }

    fn state_version(&mut self, key: &StateKey) -> Result<u64, StoreError> {
        match self.db.get(keys::state(key)).map_err(unavailable)? {
            Some(v) => StateValue::stored_version(&v),
            None => Ok(0),
        }
    }

    fn plugin(&mut self, name: &PluginName, version: &PluginVersion) -> Result<Option<PluginMeta>, StoreError> {
        get(self.db, &keys::plugin(name, version))
    }

    fn latest_definition(&mut self, name: &SagaName) -> Result<Option<StoredDefinition>, StoreError> {
        latest_definition(self.db, name)
    }

    fn secret_exists(&mut self, name: &str) -> Result<bool, StoreError> {
        self.db.contains_key(keys::secret(name)).map_err(unavailable)
    }

    fn topic_event_seq(&mut self, id: &str) -> Result<Option<u64>, StoreError> {
        match self.db.get(keys::topic_event_id(id)).map_err(unavailable)? {
            Some(v) => Ok(Some(u64::from_be_bytes(
                v.as_ref().try_into().map_err(|_| StoreError::Corrupt("topic event id".into()))?,
            ))),
            None => Ok(None),
        }
    }

    fn subscription_exists(&mut self, name: &str) -> Result<bool, StoreError> {
        self.db.contains_key(keys::subscription(name)).map_err(unavailable)
    }

    fn dead_letter_seqs(&mut self, name: &str) -> Result<Vec<u64>, StoreError> {
        self.db
            .scan_prefix(keys::dead_letters_of(name))
            .keys()
            .map(|k| {
                keys::event_seq(&k.map_err(unavailable)?).ok_or_else(|| StoreError::Corrupt("dead letter key".into()))
            })
            .collect()
    }
}

pub(super) type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A write that stages itself into the group's commit and returns how to answer its caller.
pub(super) type Stage = Box<dyn for<'a, 'b> FnOnce(&'b mut Commit<SledSnapshot<'a>>) -> Finish + Send>;

/// Answers `reply` with `result` once the group it was staged in is committed.
pub(super) fn finish<T: Send + 'static>(result: Result<T, StoreError>, reply: Reply<T>) -> Finish {
    Box::new(move |committed| {
        // Failed writes staged nothing, so they answer with their own error.
        let answer = match (result, committed) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) | (Err(e), _) => Err(e),
        };
        let _ = reply.send(answer);
    })
}

/// Stages one write; the returned closure answers its caller once the group is committed.
fn stage(commit: &mut Commit<SledSnapshot<'_>>, w: Write) -> Finish {
    match w {
        Write::Create { id, saga, records, idem, reply } => finish(commit.create(id, saga, records, idem), reply),
        Write::Append { id, expected, records, state, reply } => {
            finish(commit.append(id, expected, records, state), reply)
        }
        Write::PutPlugin { meta, bytes, artifact, reply } => finish(commit.put_plugin(meta, bytes, artifact), reply),
        Write::PutArtifact { key, bytes, reply } => {
            commit.put_artifact(key, bytes);
            finish(Ok(()), reply)
        }
        Write::PutDefinition { name, definition, at, reply } => {
            finish(commit.put_definition(name, definition, at), reply)
        }
        Write::Quarantine { entry, reply } => finish(commit.quarantine(entry), reply),
        Write::PutSecret { name, record, reply } => finish(commit.put_secret(name, record), reply),
        Write::DeleteSecret { name, reply } => finish(commit.delete_secret(name), reply),
        Write::Publish { event, reply } => finish(commit.publish(event), reply),
        Write::SetCursor { name, seq, reply } => {
            commit.set_cursor(name, seq);
            finish(Ok(()), reply)
        }
        Write::Staged(f) => f(commit),
    }
}

/// A group's mutations as one sled batch, and its size in bytes.
#[derive(Default)]
struct Batch {
    batch: sled::Batch,
    bytes: u64,
}

impl Batch {
    fn put(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += (key.len() + value.len()) as u64;
        self.batch.insert(key, value);
    }

    fn add(&mut self, m: &Mutation) {
        match m {
            Mutation::NewStream { id, saga, key } => {
                self.put(keys::by_saga(saga, *id), &[]);
                if let Some(k) = key {
                    self.put(keys::by_key(k, *id), &[]);
                }
            }
            // One key per write (the sled writer's cost is per key), named by its last record.
            Mutation::Records { id, records } => match records.as_slice() {
                [] => {}
                [one] => self.put(keys::event(*id, one.seq), encode(one)),
                [.., last] => self.put(keys::event(*id, last.seq), encode(records)),
            },
            // The stored summary is written only when the status changes: version and update
            // time are read from the stream's last event key (see `reads::current_summary`).
            Mutation::Head { summary, previous } => {
                if *previous != Some(summary.status) {
                    if let Some(old) = previous {
                        self.batch.remove(keys::by_status(*old, summary.id));
                    }
                    self.put(keys::by_status(summary.status, summary.id), &[]);
                    self.put(keys::summary(summary.id), encode(summary));
                }
            }
            Mutation::Idempotency { key, id } => {
                self.put(keys::idempotency(&key.saga, &key.key), [&id.as_bytes()[..], &key.fingerprint].concat())
            }
            Mutation::StateSet { key, value, version } => self.put(keys::state(key), value.encode(*version)),
            Mutation::StateDelete { key } => self.batch.remove(keys::state(key)),
            Mutation::StateClock(clock) => self.put(keys::state_clock(), &clock.to_be_bytes()),
            Mutation::Plugin { meta, bytes, artifact } => {
                self.put(keys::blob(&meta.digest), bytes.as_slice());
                if let Some((k, a)) = artifact {
                    self.put(keys::artifact(k), a.as_slice());
                }
                self.put(keys::plugin(&meta.name, &meta.version), encode(meta));
            }
            Mutation::Artifact { key, bytes } => self.put(keys::artifact(key), bytes.as_slice()),
            Mutation::Definition(d) => self.put(keys::definition(&d.name, d.version), encode(d)),
            Mutation::Quarantine(entry) => self.put(keys::quarantine(entry.id), encode(entry)),
            Mutation::Secret { name, record: Some(record) } => self.put(keys::secret(name), record.as_slice()),
            Mutation::Secret { name, record: None } => self.batch.remove(keys::secret(name)),
            Mutation::TopicEvent { seq, event } => {
                self.put(keys::topic_event_id(&event.id), &seq.to_be_bytes());
                if let Some(key) = &event.key {
                    self.put(keys::topic_event_by_key(key, *seq), &[]);
                }
                self.put(keys::topic_event(*seq), encode(event));
            }
            Mutation::Cursor { name, seq } => self.put(keys::cursor(name), &seq.to_be_bytes()),
            Mutation::Subscription { name, record: Some(sub) } => self.put(keys::subscription(name), encode(sub)),
            Mutation::Subscription { name, record: None } => {
                self.batch.remove(keys::subscription(name));
                self.batch.remove(keys::cursor(&cursor_name(name)));
            }
            Mutation::DeadLetter { subscription, seq, record: Some(letter) } => {
                self.put(keys::dead_letter(subscription, *seq), encode(letter))
            }
            Mutation::DeadLetter { subscription, seq, record: None } => {
                self.batch.remove(keys::dead_letter(subscription, *seq))
            }
        }
    }
}

/// The writer thread's loop, until every sender is gone.
pub(super) fn run(
    db: sled::Db,
    mut rx: mpsc::Receiver<Write>,
    stats: &CommitStats,
    guard: &DiskGuard,
    mut state_clock: u64,
) {
    let mut heads: HashMap<ExecutionId, ExecutionSummary> = HashMap::new();
    while let Some(first) = rx.blocking_recv() {
        let mut commit = Commit::new(SledSnapshot { db: &db, heads: &mut heads }, state_clock);
        let mut finishers = vec![stage(&mut commit, first)];
        while finishers.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(w) => finishers.push(stage(&mut commit, w)),
                Err(_) => break,
            }
        }
        let (mutations, clock) = commit.finish();
        let mut batch = Batch::default();
        for m in &mutations {
            batch.add(m);
        }
        let started = std::time::Instant::now();
        let committed = if mutations.is_empty() {
            Ok(())
        } else {
            guard.check(batch.bytes).and_then(|()| {
                db.apply_batch(batch.batch).and_then(|()| db.flush().map(drop)).map_err(|e| {
                    tracing::error!(error = %e, "store commit failed");
                    unavailable(e)
                })
            })
        };
        match &committed {
            Ok(()) => {
                state_clock = clock;
                // The cache holds committed heads only: bring it up to this group.
                for m in mutations {
                    if let Mutation::Head { summary, .. } = m {
                        if summary.status.is_terminal() {
                            heads.remove(&summary.id);
                        } else {
                            heads.insert(summary.id, summary);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, writes = finishers.len(), "store refused a group of writes"),
        }
        let m = crate::metrics::metrics();
        m.store_batch_writes.observe(finishers.len() as f64);
        crate::metrics::observe(&m.store_commit_seconds, started.elapsed());
        m.store_commit_max_us.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.writes.fetch_add(finishers.len() as u64, Ordering::Relaxed);
        for f in finishers {
            f(committed.clone());
        }
    }
}
