//! Durable state private to this plugin: typed (serde) entries in named collections.
//!
//! Every entry has a version. Reads see what is committed plus this attempt's own writes;
//! writes are buffered and committed by the host together with the step's completion, all or
//! nothing: a failed, trapped or timed-out attempt leaves no write behind. If an entry the
//! attempt read was changed by another execution before the commit, the attempt fails with a
//! `conflict` and runs again under the step's retry policy, so a read-modify-write like the one
//! below never loses an update.
//!
//! ```no_run
//! use saga_guest::state::{self, Versioned};
//! use saga_guest::StepError;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Account { balance: u64 }
//!
//! fn withdraw(account: &str, amount: u64) -> Result<u64, StepError> {
//!     let accounts = state::collection("accounts");
//!     let Some(Versioned { value: mut acct, .. }) = accounts.get::<Account>(account)? else {
//!         return Err(StepError::permanent(format!("no account {account}")));
//!     };
//!     if acct.balance < amount {
//!         return Err(StepError::permanent("insufficient balance"));
//!     }
//!     acct.balance -= amount;
//!     accounts.set(account, &acct)?;
//!     Ok(acct.balance)
//! }
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StepError;
use crate::bindings::saga::plugin::state::{self as wit, Value};

/// A value and the version it was committed at (0: written by this attempt, not committed yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version: pass it to [`Collection::compare_and_set`].
    pub version: u64,
}

/// Why a state call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateError {
    /// The key or collection name is not allowed (empty key, too long, NUL byte).
    Invalid(String),
    /// A size limit would be exceeded (value size, writes or bytes per attempt).
    Limit(String),
    /// The host could not read its store.
    Unavailable(String),
    /// The stored entry is not what the caller asked for (other JSON, or bytes).
    Decode(String),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(m) => write!(f, "invalid state key: {m}"),
            Self::Limit(m) => write!(f, "state limit: {m}"),
            Self::Unavailable(m) => write!(f, "state unavailable: {m}"),
            Self::Decode(m) => write!(f, "state entry cannot be read: {m}"),
        }
    }
}

impl std::error::Error for StateError {}

/// `?` in a step: an unavailable store is worth a retry, anything else is not.
impl From<StateError> for StepError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Unavailable(_) => StepError::retryable(e),
            _ => StepError::permanent(e),
        }
    }
}

impl From<wit::StateError> for StateError {
    fn from(e: wit::StateError) -> Self {
        match e {
            wit::StateError::Invalid(m) => Self::Invalid(m),
            wit::StateError::Limit(m) => Self::Limit(m),
            wit::StateError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

/// A named group of entries in this plugin's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collection {
    name: String,
}

/// The collection called `name` (created by its first write).
pub fn collection(name: &str) -> Collection {
    Collection { name: name.to_owned() }
}

fn to_json<T: Serialize>(value: &T) -> Result<Value, StateError> {
    serde_json::to_string(value).map(Value::Json).map_err(|e| StateError::Decode(e.to_string()))
}

impl Collection {
    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn raw(&self, key: &str) -> Result<Option<(Value, u64)>, StateError> {
        Ok(wit::get(&self.name, key)?.map(|e| (e.value, e.version)))
    }

    /// The JSON entry under `key`, decoded as `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>, StateError> {
        let Some((value, version)) = self.raw(key)? else { return Ok(None) };
        let Value::Json(text) = value else {
            return Err(StateError::Decode(format!("{}/{key} holds bytes, not JSON", self.name)));
        };
        let value = serde_json::from_str(&text).map_err(|e| StateError::Decode(format!("{}/{key}: {e}", self.name)))?;
        Ok(Some(Versioned { value, version }))
    }

    /// The bytes entry under `key`.
    pub fn get_bytes(&self, key: &str) -> Result<Option<Versioned<Vec<u8>>>, StateError> {
        let Some((value, version)) = self.raw(key)? else { return Ok(None) };
        match value {
            Value::Bytes(value) => Ok(Some(Versioned { value, version })),
            Value::Json(_) => Err(StateError::Decode(format!("{}/{key} holds JSON, not bytes", self.name))),
        }
    }

    /// Sets `key` to `value` (as JSON) when the attempt commits.
    pub fn set<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StateError> {
        Ok(wit::set(&self.name, key, &to_json(value)?)?)
    }

    /// Sets `key` to `bytes` when the attempt commits.
    pub fn set_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), StateError> {
        Ok(wit::set(&self.name, key, &Value::Bytes(bytes.to_vec()))?)
    }

    /// Removes `key` when the attempt commits.
    pub fn delete(&self, key: &str) -> Result<(), StateError> {
        Ok(wit::delete(&self.name, key)?)
    }

    /// Sets `key` to `value` (removes it when `None`) only if its version is `expected`
    /// (`None`: only if absent). `false`, changing nothing, when it is not.
    pub fn compare_and_set<T: Serialize>(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Option<&T>,
    ) -> Result<bool, StateError> {
        let value = value.map(to_json).transpose()?;
        Ok(wit::compare_and_set(&self.name, key, expected, value.as_ref())?)
    }
}
