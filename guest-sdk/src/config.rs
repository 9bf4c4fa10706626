//! The step's named configuration values (the `config` object of its definition,
//! docs/definitions.md "Configuration"), read through the standard `wasi:config/store`.
//!
//! Both sides of a step (execute and compensate) see the same values; a step without `config`
//! has none. Values are stored and shown in plain text: never put a secret in them.
//!
//! ```no_run
//! use saga_guest::{StepError, config};
//!
//! fn gateway() -> Result<String, StepError> {
//!     // A step without `gateway_url` in its config fails for good: only a new definition helps.
//!     Ok(config::require("gateway_url")?)
//! }
//! ```

use std::fmt;

use crate::StepError;

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "config-reader", generate_all });
}

use bindings::wasi::config::store;

/// Why a configuration value could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The step's definition has no value of this name.
    Missing(String),
    /// The host could not answer.
    Unavailable(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(name) => write!(f, "the step's config has no value {name:?}"),
            Self::Unavailable(m) => write!(f, "config unavailable: {m}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// `?` in a step: a missing value is permanent (the definition must change), a host that
/// could not answer is worth a retry.
impl From<ConfigError> for StepError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Missing(_) => StepError::permanent(e),
            ConfigError::Unavailable(_) => StepError::retryable(e),
        }
    }
}

fn unavailable(e: store::Error) -> ConfigError {
    ConfigError::Unavailable(match e {
        store::Error::Upstream(m) | store::Error::Io(m) => m,
    })
}

/// The value named `name`, or `None` when the step's config has none.
pub fn get(name: &str) -> Result<Option<String>, ConfigError> {
    store::get(name).map_err(unavailable)
}

/// The value named `name`; [`ConfigError::Missing`] when the step's config has none.
pub fn require(name: &str) -> Result<String, ConfigError> {
    get(name)?.ok_or_else(|| ConfigError::Missing(name.to_owned()))
}

/// Every value of the step's config, as (name, value) pairs.
pub fn all() -> Result<Vec<(String, String)>, ConfigError> {
    store::get_all().map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_value_is_permanent_an_unavailable_host_retryable() {
        let missing = StepError::from(ConfigError::Missing("gateway_url".into()));
        assert_eq!(missing, StepError::permanent("the step's config has no value \"gateway_url\""));
        assert!(matches!(StepError::from(ConfigError::Unavailable("down".into())), StepError::Retryable(_)));
    }
}
