//! Reading sled: decoding stored values, a stream's current head, index scans.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::unavailable;
use crate::domain::{ExecutionId, SagaName};
use crate::store::commit::KeyRecord;
use crate::store::{ExecutionSummary, IdempotencyKey, StoreError, StoredDefinition, keys};

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store types serialize")
}

pub(super) fn get<T: DeserializeOwned>(db: &sled::Db, key: &[u8]) -> Result<Option<T>, StoreError> {
    db.get(key).map_err(unavailable)?.map(|v| decode(&v)).transpose()
}

/// The records of one write to a stream: a JSON array, or a single record (one-record writes,
/// and every write of stores from before writes were grouped).
pub(super) fn decode_write<T: DeserializeOwned>(v: &[u8]) -> Result<Vec<T>, StoreError> {
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
pub(super) fn current_summary(db: &sled::Db, id: ExecutionId) -> Result<Option<ExecutionSummary>, StoreError> {
    let Some(mut summary) = get::<ExecutionSummary>(db, &keys::summary(id))? else {
        return Ok(None);
    };
    let events = keys::events_of(id);
    if let Some(kv) = db.range(events.clone()..keys::prefix_end(&events)).next_back() {
        let (k, v) = kv.map_err(unavailable)?;
        let seq = keys::event_seq(&k).ok_or_else(|| StoreError::Corrupt("event key".into()))?;
        if seq > summary.version {
            summary.version = seq;
            // A write that does not decode is reported by whoever reads the events; the head
            // stays listable (and can be quarantined) with the last time known.
            if let Some(last) = decode_write::<Stamp>(&v).ok().and_then(|mut w| w.pop()) {
                summary.updated_at = last.at;
            }
        }
    }
    Ok(Some(summary))
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
    let Some(v) = db.get(keys::idempotency(&key.saga, &key.key)).map_err(unavailable)? else {
        return Ok(None);
    };
    let corrupt = || StoreError::Corrupt("idempotency value".into());
    let id = ExecutionId::from_bytes(v.get(..16).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
    let fingerprint = match v.len() {
        16 => None,
        48 => Some(v[16..].try_into().map_err(|_| corrupt())?),
        _ => return Err(corrupt()),
    };
    Ok(Some((id, fingerprint)))
}
