//! Reading sled: values by key, a stream's current head, index scans.

use serde::de::DeserializeOwned;

use super::unavailable;
use crate::domain::{ExecutionId, SagaName};
use crate::store::commit::KeyRecord;
use crate::store::kv::{self, decode};
use crate::store::{ExecutionSummary, IdempotencyKey, StoreError, StoredDefinition, keys};

pub(super) fn get<T: DeserializeOwned>(db: &sled::Db, key: &[u8]) -> Result<Option<T>, StoreError> {
    db.get(key).map_err(unavailable)?.map(|v| decode(&v)).transpose()
}

/// A stream's summary as of its last write (see [`kv::current_summary`]).
pub(super) fn current_summary(db: &sled::Db, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
    let Some(stored) = db.get(keys::summary(id)).map_err(unavailable)? else {
        return Ok(None);
    };
    let events = keys::events_of(id);
    let last = db.range(events.clone()..keys::prefix_end(&events)).next_back().transpose().map_err(unavailable)?;
    kv::current_summary(Some(&stored), last.as_ref().map(|(k, v)| (&k[..], &v[..])))
}

/// Ids of an index, newest first, older than `after` when given.
pub(super) fn scan_ids(
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

pub(super) fn latest_definition(db: &sled::Db, name: &SagaName) -> Result<Option<StoredDefinition>, StoreError> {
    db.scan_prefix(keys::definitions_of(name))
        .next_back()
        .transpose()
        .map_err(unavailable)?
        .map(|(_, v)| decode(&v))
        .transpose()
}

/// The execution an idempotency key created, and its request's fingerprint.
pub(super) fn idempotency(db: &sled::Db, key: &IdempotencyKey) -> Result<Option<KeyRecord>, StoreError> {
    db.get(keys::idempotency(&key.saga, &key.key)).map_err(unavailable)?.map(|v| kv::decode_idempotency(&v)).transpose()
}
