//! Plugin state: durable key-value entries private to a plugin name, grouped into collections.
//!
//! An attempt reads committed entries and buffers its writes; the driver hands the reads (with
//! the versions seen) and the writes to the store together with the attempt's completion event,
//! and the store commits all of it in one batch only if every entry read is still at the version
//! seen. Versions come from one store-wide counter, so they are never reused: a key deleted and
//! written again has a new version, and an equal version always means an equal value.

use serde::Serialize;

use super::StoreError;
use crate::domain::PluginName;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest collection name, in bytes.
pub const MAX_COLLECTION_BYTES: usize = 128;

/// Where an entry lives: plugin namespace, collection, key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    /// The plugin whose namespace holds the entry.
    pub plugin: PluginName,
    /// Collection within the namespace (may be empty).
    pub collection: String,
    /// Key within the collection.
    pub key: String,
}

impl StateKey {
    /// A key, if `collection` and `key` are allowed: a non-empty key of at most
    /// [`MAX_KEY_BYTES`], a collection of at most [`MAX_COLLECTION_BYTES`], no NUL bytes (they
    /// separate the parts in storage).
    pub fn new(plugin: PluginName, collection: &str, key: &str) -> Result<Self, InvalidStateKey> {
        Self::check(collection, key)?;
        Ok(Self { plugin, collection: collection.into(), key: key.into() })
    }

    /// Whether `collection` and `key` are allowed (see [`StateKey::new`]), without building a key.
    pub fn check(collection: &str, key: &str) -> Result<(), InvalidStateKey> {
        if key.is_empty() {
            return Err(InvalidStateKey::EmptyKey);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(InvalidStateKey::KeyTooLong(key.len()));
        }
        if collection.len() > MAX_COLLECTION_BYTES {
            return Err(InvalidStateKey::CollectionTooLong(collection.len()));
        }
        if key.contains('\0') || collection.contains('\0') {
            return Err(InvalidStateKey::Nul);
        }
        Ok(())
    }
}

/// Why a state key or collection name is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStateKey {
    /// The key is empty.
    #[error("a key must not be empty")]
    EmptyKey,
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("key of {0} bytes is longer than {MAX_KEY_BYTES} bytes")]
    KeyTooLong(usize),
    /// The collection name is longer than [`MAX_COLLECTION_BYTES`].
    #[error("collection name of {0} bytes is longer than {MAX_COLLECTION_BYTES} bytes")]
    CollectionTooLong(usize),
    /// A NUL byte, which separates the parts in storage.
    #[error("keys and collection names must not contain NUL")]
    Nul,
}

impl std::fmt::Display for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.plugin, self.collection, self.key)
    }
}

/// A stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateValue {
    /// JSON text (valid JSON: checked when a plugin sets it).
    Json(String),
    /// Opaque bytes.
    Bytes(Vec<u8>),
}

impl StateValue {
    /// Size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Json(s) => s.len(),
            Self::Bytes(b) => b.len(),
        }
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stored form: `version (u64 big-endian) ‖ tag ‖ data`.
    pub fn encode(&self, version: u64) -> Vec<u8> {
        let (tag, data) = match self {
            Self::Json(s) => (b'j', s.as_bytes()),
            Self::Bytes(b) => (b'b', b.as_slice()),
        };
        let mut out = Vec::with_capacity(9 + data.len());
        out.extend_from_slice(&version.to_be_bytes());
        out.push(tag);
        out.extend_from_slice(data);
        out
    }

    /// Reads the stored form back.
    pub fn decode(bytes: &[u8]) -> Result<StateEntry, StoreError> {
        let version = Self::stored_version(bytes)?;
        let value = match bytes.get(8) {
            Some(b'j') => Self::Json(
                String::from_utf8(bytes[9..].to_vec())
                    .map_err(|e| StoreError::Corrupt(format!("state entry is not UTF-8: {e}")))?,
            ),
            Some(b'b') => Self::Bytes(bytes[9..].to_vec()),
            Some(t) => return Err(StoreError::Corrupt(format!("unknown state value tag {t}"))),
            None => return Err(StoreError::Corrupt("state entry too short".into())),
        };
        Ok(StateEntry { value, version })
    }

    /// The version stored in front of an encoded value, without decoding the value.
    pub fn stored_version(bytes: &[u8]) -> Result<u64, StoreError> {
        bytes
            .get(..8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| StoreError::Corrupt("state entry too short".into()))
    }
}

/// A committed value and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateEntry {
    /// The value.
    pub value: StateValue,
    /// Store-wide commit counter at the write (from 1; never reused).
    pub version: u64,
}

/// What an attempt changes besides its own stream, committed with its completion event or not
/// at all: the plugin state it read and wants written, and the events it emitted (an outbox).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effects {
    /// Entries read, with the version seen (0: absent). Each must still be at that version.
    pub reads: Vec<(StateKey, u64)>,
    /// Entries to set (`Some`) or delete (`None`).
    pub writes: Vec<(StateKey, Option<StateValue>)>,
    /// Events for the topic log.
    pub events: Vec<crate::domain::TopicEvent>,
}

impl Effects {
    /// Whether there is nothing to check or write.
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.writes.is_empty() && self.events.is_empty()
    }
}

/// One entry as operators see it (`GET /v1/plugins/{name}/state`).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StateItem {
    /// Collection.
    pub collection: String,
    /// Key.
    pub key: String,
    /// Version.
    pub version: u64,
    /// The value, when it is JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub json: Option<serde_json::Value>,
    /// The value, base64, when it is bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_base64: Option<String>,
}

impl StateItem {
    /// The operator's view of an entry.
    pub fn new(key: &StateKey, entry: &StateEntry) -> Self {
        use base64::Engine as _;
        let (json, bytes_base64) = match &entry.value {
            StateValue::Json(text) => (Some(serde_json::from_str(text).unwrap_or(serde_json::Value::Null)), None),
            StateValue::Bytes(b) => (None, Some(base64::engine::general_purpose::STANDARD.encode(b))),
        };
        Self { collection: key.collection.clone(), key: key.key.clone(), version: entry.version, json, bytes_base64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> PluginName {
        PluginName::parse("bank").unwrap()
    }

    #[test]
    fn values_round_trip_with_their_version() {
        for v in [StateValue::Json("{\"a\":1}".into()), StateValue::Bytes(vec![0, 255, 7]), StateValue::Bytes(vec![])] {
            let stored = v.encode(42);
            assert_eq!(StateValue::stored_version(&stored), Ok(42));
            assert_eq!(StateValue::decode(&stored), Ok(StateEntry { value: v, version: 42 }));
        }
        assert!(StateValue::decode(b"short").is_err());
        assert!(StateValue::decode(&[0, 0, 0, 0, 0, 0, 0, 1, b'x']).is_err());
    }

    #[test]
    fn keys_refuse_what_storage_cannot_separate() {
        assert!(StateKey::new(plugin(), "accounts", "alice").is_ok());
        assert!(StateKey::new(plugin(), "", "alice").is_ok());
        assert!(StateKey::new(plugin(), "accounts", "").is_err());
        assert!(StateKey::new(plugin(), "accounts", "a\0b").is_err());
        assert!(StateKey::new(plugin(), "a\0", "b").is_err());
        assert!(StateKey::new(plugin(), "accounts", &"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(StateKey::new(plugin(), &"c".repeat(MAX_COLLECTION_BYTES + 1), "k").is_err());
    }
}
