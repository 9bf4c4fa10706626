//! The `state` interface inside one attempt: reads see committed entries plus the attempt's own
//! writes; writes are only buffered. What the attempt read (with the versions seen) and wants
//! written leaves with its result as [`Effects`], for the store to commit with the
//! attempt's completion event or not at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::StepData;
use crate::domain::PluginName;
use crate::store::{Effects, StateEntry, StateKey, StateStore, StateValue};

/// Whose namespace an attempt works in, and where committed entries are read from.
#[derive(Clone)]
pub struct StateScope {
    /// The plugin running: its name is the namespace.
    pub plugin: PluginName,
    /// Committed state.
    pub store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for StateScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateScope").field("plugin", &self.plugin).finish_non_exhaustive()
    }
}

/// Per-attempt bounds on state use; exceeding one is a `limit` error the plugin sees.
#[derive(Clone, Debug)]
pub struct StateLimits {
    /// Largest value.
    pub max_value_bytes: usize,
    /// Distinct entries an attempt may write (or delete).
    pub max_writes: usize,
    /// Bytes an attempt may write in all.
    pub max_write_bytes: usize,
    /// Distinct entries an attempt may read.
    pub max_reads: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        Self { max_value_bytes: 1 << 20, max_writes: 1_000, max_write_bytes: 4 << 20, max_reads: 10_000 }
    }
}

type Name = (String, String);

/// Why a state call was refused (each world's `state-error`).
pub enum Refused {
    /// The collection or key is not allowed, or the value is not valid.
    Invalid(String),
    /// A size limit would be exceeded.
    Limit(String),
    /// The store could not be read.
    Unavailable(String),
}

/// One attempt's view of its plugin's state.
pub struct StateSession {
    scope: Option<StateScope>,
    limits: StateLimits,
    /// Committed entries as first read (`None`: absent). Later reads see the same: reads are
    /// repeatable within an attempt, and each is checked again at commit.
    seen: HashMap<Name, Option<StateEntry>>,
    /// Buffered writes (`None`: delete).
    writes: BTreeMap<Name, Option<StateValue>>,
    write_bytes: usize,
}

impl StateSession {
    /// A session in `scope` (`None`: this attempt has no state; calls answer `unavailable`).
    pub fn new(scope: Option<StateScope>, limits: StateLimits) -> Self {
        Self { scope, limits, seen: HashMap::new(), writes: BTreeMap::new(), write_bytes: 0 }
    }

    /// What the attempt read and wrote, for the commit.
    pub fn into_changes(self) -> Effects {
        let Some(scope) = self.scope else { return Effects::default() };
        let key = |(c, k): Name| StateKey { plugin: scope.plugin.clone(), collection: c, key: k };
        Effects {
            reads: self.seen.into_iter().map(|(n, e)| (key(n), e.map_or(0, |e| e.version))).collect(),
            writes: self.writes.into_iter().map(|(n, v)| (key(n), v)).collect(),
            events: Vec::new(),
        }
    }

    /// The scope, if `collection` and `key` may be used in it.
    fn check(&self, collection: &str, key: &str) -> Result<&StateScope, Refused> {
        let scope = self.scope.as_ref().ok_or_else(|| Refused::Unavailable("this attempt has no state".into()))?;
        StateKey::check(collection, key).map_err(|e| Refused::Invalid(e.to_string()))?;
        Ok(scope)
    }

    /// The committed entry, read once per attempt.
    async fn committed(&mut self, collection: &str, key: &str) -> Result<Option<StateEntry>, Refused> {
        let name = (collection.to_owned(), key.to_owned());
        if let Some(entry) = self.seen.get(&name) {
            return Ok(entry.clone());
        }
        let scope = self.check(collection, key)?;
        if self.seen.len() >= self.limits.max_reads {
            return Err(Refused::Limit(format!("more than {} entries read in one attempt", self.limits.max_reads)));
        }
        let k = StateKey { plugin: scope.plugin.clone(), collection: name.0.clone(), key: name.1.clone() };
        let entry = scope.store.state_get(&k).await.map_err(|e| Refused::Unavailable(e.to_string()))?;
        self.seen.insert(name, entry.clone());
        Ok(entry)
    }

    /// The entry as this attempt sees it: its own write (version 0) or the committed one.
    async fn current(&mut self, collection: &str, key: &str) -> Result<Option<StateEntry>, Refused> {
        self.check(collection, key)?;
        match self.writes.get(&(collection.to_owned(), key.to_owned())) {
            Some(own) => Ok(own.clone().map(|value| StateEntry { value, version: 0 })),
            None => self.committed(collection, key).await,
        }
    }

    /// Stages `value` if the entry is at `expected` (`None`: absent): whether it was.
    async fn compare_and_set(
        &mut self,
        collection: &str,
        key: &str,
        expected: Option<u64>,
        value: Option<StateValue>,
    ) -> Result<bool, Refused> {
        if self.current(collection, key).await?.map(|e| e.version) != expected {
            return Ok(false);
        }
        self.stage(collection, key, value).map(|()| true)
    }

    fn stage(&mut self, collection: &str, key: &str, value: Option<StateValue>) -> Result<(), Refused> {
        self.check(collection, key)?;
        let size = value.as_ref().map_or(0, StateValue::len);
        if size > self.limits.max_value_bytes {
            return Err(Refused::Limit(format!(
                "value of {size} bytes exceeds the limit of {} bytes",
                self.limits.max_value_bytes
            )));
        }
        if let Some(StateValue::Json(text)) = &value {
            crate::domain::json::check(text.as_bytes()).map_err(|e| Refused::Invalid(format!("value refused: {e}")))?;
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                return Err(Refused::Invalid(format!("value is not JSON: {e}")));
            }
        }
        let name = (collection.to_owned(), key.to_owned());
        if !self.writes.contains_key(&name) && self.writes.len() >= self.limits.max_writes {
            return Err(Refused::Limit(format!("more than {} entries written in one attempt", self.limits.max_writes)));
        }
        let bytes = self.write_bytes + size + key.len() + collection.len();
        if bytes > self.limits.max_write_bytes {
            return Err(Refused::Limit(format!(
                "writes of more than {} bytes in one attempt",
                self.limits.max_write_bytes
            )));
        }
        self.write_bytes = bytes;
        self.writes.insert(name, value);
        Ok(())
    }
}

/// Implements a world's `state` interface over [`StateSession`], converting its types.
macro_rules! state_interface {
    ($world:ident) => {
        impl super::bindings::$world::saga::plugin::state::Host for StepData {
            async fn get(
                &mut self,
                collection: String,
                key: String,
            ) -> wasmtime::Result<Result<Option<$world::Entry>, $world::StateError>> {
                Ok(self.state.current(&collection, &key).await.map(|e| e.map($world::to_wit)).map_err($world::error))
            }

            async fn set(
                &mut self,
                collection: String,
                key: String,
                value: $world::Value,
            ) -> wasmtime::Result<Result<(), $world::StateError>> {
                Ok(self.state.stage(&collection, &key, Some($world::from_wit(value))).map_err($world::error))
            }

            async fn delete(
                &mut self,
                collection: String,
                key: String,
            ) -> wasmtime::Result<Result<(), $world::StateError>> {
                Ok(self.state.stage(&collection, &key, None).map_err($world::error))
            }

            async fn compare_and_set(
                &mut self,
                collection: String,
                key: String,
                expected_version: Option<u64>,
                value: Option<$world::Value>,
            ) -> wasmtime::Result<Result<bool, $world::StateError>> {
                Ok(self
                    .state
                    .compare_and_set(&collection, &key, expected_version, value.map($world::from_wit))
                    .await
                    .map_err($world::error))
            }
        }

        mod $world {
            pub use super::super::bindings::$world::saga::plugin::state::{Entry, StateError, Value};
            use super::{Refused, StateEntry, StateValue};

            pub fn from_wit(v: Value) -> StateValue {
                match v {
                    Value::Json(s) => StateValue::Json(s),
                    Value::Bytes(b) => StateValue::Bytes(b),
                }
            }

            pub fn to_wit(e: StateEntry) -> Entry {
                let value = match e.value {
                    StateValue::Json(s) => Value::Json(s),
                    StateValue::Bytes(b) => Value::Bytes(b),
                };
                Entry { value, version: e.version }
            }

            pub fn error(e: Refused) -> StateError {
                match e {
                    Refused::Invalid(m) => StateError::Invalid(m),
                    Refused::Limit(m) => StateError::Limit(m),
                    Refused::Unavailable(m) => StateError::Unavailable(m),
                }
            }
        }
    };
}

state_interface!(current);
state_interface!(v0_2);
