//! The key-value layout both durable backends share: sled keeps it in one tree, PostgreSQL in
//! one table (`sagahost_kv`), byte for byte the same, so that a data directory moves to a
//! database by copying its pairs (`sagahost migrate`).
//!
//! Here live what the two have in common: how a [`Mutation`] becomes puts and removes
//! ([`ops`]), how stored values decode, and the [`Snapshot`] the commit rules read through,
//! written once over three primitive reads ([`KvRead`]).

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::commit::{KeyRecord, Mutation, Snapshot};
use super::{
    ExecutionSummary, HostId, IdempotencyKey, PluginMeta, StateKey, StateValue, StoreError, StoredDefinition, keys,
};
use crate::domain::subscription::cursor_name;
use crate::domain::{ExecutionId, PluginName, PluginVersion, SagaName};

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store types serialize")
}

/// The records of one write to a stream: a JSON array, or a single record (one-record writes,
/// and every write of stores from before writes were grouped).
pub(super) fn decode_write<T: DeserializeOwned>(v: &[u8]) -> Result<Vec<T>, StoreError> {
    if v.first() == Some(&b'[') { decode(v) } else { Ok(vec![decode(v)?]) }
}

/// A big-endian `u64` value (cursors, topic event seqs, the state clock).
pub(super) fn decode_u64(v: &[u8], what: &str) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| StoreError::Corrupt(format!("{what} value")))?))
}

/// The time stamps of a record, read without decoding its event.
#[derive(serde::Deserialize)]
struct Stamp {
    at: u64,
}

/// A stream's summary as of its last write, from its stored summary (rewritten only when the
/// status changes: one key less per append) and its last event key `(key, value)`, which
/// names the version and holds the records of the last write.
pub(super) fn current_summary(
    stored: Option<&[u8]>,
    last_event: Option<(&[u8], &[u8])>,
) -> Result<Option<ExecutionSummary>, StoreError> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let mut summary: ExecutionSummary = decode(stored)?;
    if let Some((k, v)) = last_event {
        let seq = keys::event_seq(k).ok_or_else(|| StoreError::Corrupt("event key".into()))?;
        if seq > summary.version {
            summary.version = seq;
            // A write that does not decode is reported by whoever reads the events; the head
            // stays listable (and can be quarantined) with the last time known.
            if let Some(last) = decode_write::<Stamp>(v).ok().and_then(|mut w| w.pop()) {
                summary.updated_at = last.at;
            }
        }
    }
    Ok(Some(summary))
}

/// An idempotency record: `id ‖ fingerprint`, or only `id` for records written before
/// fingerprints were kept.
pub(super) fn decode_idempotency(v: &[u8]) -> Result<KeyRecord, StoreError> {
    let corrupt = || StoreError::Corrupt("idempotency value".into());
    let id = ExecutionId::from_bytes(v.get(..16).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
    let fingerprint = match v.len() {
        16 => None,
        48 => Some(v[16..].try_into().map_err(|_| corrupt())?),
        _ => return Err(corrupt()),
    };
    Ok((id, fingerprint))
}

/// A stored key and its value.
pub(super) type Pair = (Vec<u8>, Vec<u8>);

/// One change to the key-value layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    Put(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

/// The puts and removes that make `m` durable, in order.
pub(super) fn ops(m: &Mutation, out: &mut impl FnMut(Op)) {
    let mut put = |k: Vec<u8>, v: Vec<u8>| out(Op::Put(k, v));
    match m {
        Mutation::NewStream { id, saga, key } => {
            put(keys::by_saga(saga, *id), Vec::new());
            if let Some(k) = key {
                put(keys::by_key(k, *id), Vec::new());
            }
        }
        // One key per write (a store's cost is per key), named by its last record.
        Mutation::Records { id, records } => match records.as_slice() {
            [] => {}
            [one] => put(keys::event(*id, one.seq), encode(one)),
            [.., last] => put(keys::event(*id, last.seq), encode(records)),
        },
        // The stored summary is written only when the status changes: version and update
        // time are read from the stream's last event key (see `current_summary`).
        Mutation::Head { summary, previous } => {
            if *previous != Some(summary.status) {
                put(keys::by_status(summary.status, summary.id), Vec::new());
                put(keys::summary(summary.id), encode(summary));
                if summary.status.is_terminal() {
                    put(keys::ended(summary.updated_at, summary.id), summary.saga.as_str().as_bytes().to_vec());
                }
                if let Some(old) = previous {
                    out(Op::Remove(keys::by_status(*old, summary.id)));
                }
            }
        }
        Mutation::Idempotency { key, id, at } => {
            put(keys::idempotency(&key.saga, &key.key), [&id.as_bytes()[..], &key.fingerprint].concat());
            put(keys::key_made(*at, &key.saga, &key.key), id.as_bytes().to_vec());
        }
        Mutation::Removed { summary, writes, ended } => {
            let id = summary.id;
            let mut remove = |k: Vec<u8>| out(Op::Remove(k));
            for seq in writes {
                remove(keys::event(id, *seq));
            }
            remove(keys::summary(id));
            remove(keys::by_status(summary.status, id));
            remove(keys::by_saga(&summary.saga, id));
            if let Some(k) = &summary.key {
                remove(keys::by_key(k, id));
            }
            for at in ended {
                remove(keys::ended(*at, id));
            }
        }
        Mutation::Unended { at, id } => out(Op::Remove(keys::ended(*at, *id))),
        Mutation::KeyForgotten { key, record } => {
            out(Op::Remove(keys::key_made(key.at, &key.saga, &key.key)));
            if *record {
                out(Op::Remove(keys::idempotency(&key.saga, &key.key)));
            }
        }
        Mutation::StateSet { key, value, version } => put(keys::state(key), value.encode(*version)),
        Mutation::StateDelete { key } => out(Op::Remove(keys::state(key))),
        Mutation::StateClock(clock) => put(keys::state_clock(), clock.to_be_bytes().to_vec()),
        Mutation::Plugin { meta, bytes, artifact } => {
            put(keys::blob(&meta.digest), bytes.clone());
            if let Some((k, a)) = artifact {
                put(keys::artifact(k), a.clone());
            }
            put(keys::plugin(&meta.name, &meta.version), encode(meta));
        }
        Mutation::Artifact { key, bytes } => put(keys::artifact(key), bytes.clone()),
        Mutation::Definition(d) => put(keys::definition(&d.name, d.version), encode(d)),
        Mutation::Quarantine(entry) => put(keys::quarantine(entry.id), encode(entry)),
        Mutation::Secret { name, record: Some(record) } => put(keys::secret(name), record.clone()),
        Mutation::Secret { name, record: None } => out(Op::Remove(keys::secret(name))),
        Mutation::TopicEvent { seq, event } => {
            put(keys::topic_event_id(&event.id), seq.to_be_bytes().to_vec());
            if let Some(key) = &event.key {
                put(keys::topic_event_by_key(key, *seq), Vec::new());
            }
            put(keys::topic_event(*seq), encode(event));
        }
        Mutation::Cursor { name, seq } => put(keys::cursor(name), seq.to_be_bytes().to_vec()),
        Mutation::Subscription { name, record: Some(sub) } => put(keys::subscription(name), encode(sub)),
        Mutation::Subscription { name, record: None } => {
            out(Op::Remove(keys::subscription(name)));
            out(Op::Remove(keys::cursor(&cursor_name(name))));
        }
        Mutation::DeadLetter { subscription, seq, record: Some(letter) } => {
            put(keys::dead_letter(subscription, *seq), encode(letter))
        }
        Mutation::DeadLetter { subscription, seq, record: None } => {
            out(Op::Remove(keys::dead_letter(subscription, *seq)))
        }
        // Leases live outside the key-value layout (PostgreSQL's `sagahost_owners`).
        Mutation::Owner { .. } => {}
    }
}

/// What a backend reads for the commit rules: its committed pairs.
pub(super) trait KvRead {
    /// The value under `key`.
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The last pair whose key starts with `prefix`.
    fn last(&mut self, prefix: &[u8]) -> Result<Option<Pair>, StoreError>;
    /// Every key starting with `prefix`, in order.
    fn keys(&mut self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError>;
    /// A shared store: the host holding an execution's lease.
    fn owner(&mut self, _id: ExecutionId) -> Result<Option<HostId>, StoreError> {
        Ok(None)
    }
    /// A shared store: whether `host`'s lease is live.
    fn live(&mut self, _host: HostId) -> Result<bool, StoreError> {
        Ok(true)
    }
}

/// The commit rules' [`Snapshot`] over a backend's [`KvRead`], with a cache of stream heads
/// that outlives one commit when the backend can keep it true (the sled writer, being the
/// only writer, can).
pub(super) struct KvSnapshot<'a, R> {
    pub(super) kv: R,
    pub(super) heads: &'a mut HashMap<ExecutionId, ExecutionSummary>,
}

impl<R: KvRead> Snapshot for KvSnapshot<'_, R> {
    fn summary(&mut self, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
        if let Some(s) = self.heads.get(&id) {
            return Ok(Some(s.clone()));
        }
        let stored = self.kv.get(&keys::summary(id))?;
        if stored.is_none() {
            return Ok(None);
        }
        let last = self.kv.last(&keys::events_of(id))?;
        let found = current_summary(stored.as_deref(), last.as_ref().map(|(k, v)| (&k[..], &v[..])))?;
        // Only unfinished streams are kept: they are the ones written again, and there are at
        // most as many as executions driven (`--max-active-executions`).
        if let Some(s) = found.as_ref().filter(|s| !s.status.is_terminal()) {
            self.heads.insert(id, s.clone());
        }
        Ok(found)
    }

    fn idempotency(&mut self, key: &IdempotencyKey) -> Result<Option<KeyRecord>, StoreError> {
        self.kv.get(&keys::idempotency(&key.saga, &key.key))?.map(|v| decode_idempotency(&v)).transpose()
    }

    fn state_version(&mut self, key: &StateKey) -> Result<u64, StoreError> {
        match self.kv.get(&keys::state(key))? {
            Some(v) => StateValue::stored_version(&v),
            None => Ok(0),
        }
    }

    fn plugin(&mut self, name: &PluginName, version: &PluginVersion) -> Result<Option<PluginMeta>, StoreError> {
        self.kv.get(&keys::plugin(name, version))?.map(|v| decode(&v)).transpose()
    }

    fn latest_definition(&mut self, name: &SagaName) -> Result<Option<StoredDefinition>, StoreError> {
        self.kv.last(&keys::definitions_of(name))?.map(|(_, v)| decode(&v)).transpose()
    }

    fn secret_exists(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self.kv.get(&keys::secret(name))?.is_some())
    }

    fn topic_event_seq(&mut self, id: &str) -> Result<Option<u64>, StoreError> {
        self.kv.get(&keys::topic_event_id(id))?.map(|v| decode_u64(&v, "topic event id")).transpose()
    }

    fn subscription_exists(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self.kv.get(&keys::subscription(name))?.is_some())
    }

    fn writes(&mut self, id: ExecutionId) -> Result<Vec<u64>, StoreError> {
        self.kv
            .keys(&keys::events_of(id))?
            .iter()
            .map(|k| keys::event_seq(k).ok_or_else(|| StoreError::Corrupt("event key".into())))
            .collect()
    }

    fn quarantined(&mut self, id: ExecutionId) -> Result<bool, StoreError> {
        Ok(self.kv.get(&keys::quarantine(id))?.is_some())
    }

    fn owner(&mut self, id: ExecutionId) -> Result<Option<HostId>, StoreError> {
        self.kv.owner(id)
    }

    fn live(&mut self, host: HostId) -> Result<bool, StoreError> {
        self.kv.live(host)
    }

    fn dead_letter_seqs(&mut self, name: &str) -> Result<Vec<u64>, StoreError> {
        self.kv
            .keys(&keys::dead_letters_of(name))?
            .iter()
            .map(|k| keys::event_seq(k).ok_or_else(|| StoreError::Corrupt("dead letter key".into())))
            .collect()
    }
}

/// An entry of the index of ended executions, from its key and value.
pub(super) fn decode_ended(k: &[u8], v: &[u8]) -> Result<super::Ended, StoreError> {
    let corrupt = || StoreError::Corrupt("ended index entry".into());
    let (at, id) = keys::parse_ended(k).ok_or_else(corrupt)?;
    let saga = SagaName::parse(std::str::from_utf8(v).map_err(|_| corrupt())?).map_err(|_| corrupt())?;
    Ok(super::Ended { at, id, saga })
}

/// An entry of the time index of idempotency keys, from its key and value.
pub(super) fn decode_key_made(k: &[u8], v: &[u8]) -> Result<super::MadeKey, StoreError> {
    let corrupt = || StoreError::Corrupt("idempotency key index entry".into());
    let (at, saga, key) = keys::parse_key_made(k).ok_or_else(corrupt)?;
    let id = ExecutionId::from_bytes(v.try_into().map_err(|_| corrupt())?);
    Ok(super::MadeKey { at, saga, key, id })
}

/// Where a page of [`super::EventStore::ended`] starts: just after `after`, or at the start.
pub(super) fn ended_from(after: Option<(u64, ExecutionId)>) -> Vec<u8> {
    match after {
        Some((at, id)) => [keys::ended(at, id), vec![0]].concat(),
        None => keys::ended_all(),
    }
}
