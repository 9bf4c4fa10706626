//! Identifiers as newtypes, so that an execution id is never confused with a saga name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The id of one execution; also the correlation id every step sees.
///
/// UUIDv7, so ids sort by creation time: listing "newest first" is a reverse key scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct ExecutionId(Uuid);

impl ExecutionId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The 16 bytes used in storage keys.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Rebuilds an id from its storage bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }
}

impl Default for ExecutionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ExecutionId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Why a name, version, reference or status was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    /// A saga, step or plugin name breaking the name rule.
    #[error(
        "{what} {name:?} is not a valid name (1-64 characters of A-Z a-z 0-9 _ - ., starting with a letter or digit)"
    )]
    Name {
        /// Which kind of name.
        what: &'static str,
        /// The text given.
        name: String,
    },
    /// Not semver.
    #[error("plugin version {0:?} is not semver (MAJOR.MINOR.PATCH)")]
    Version(String),
    /// A plugin reference without `@`.
    #[error("plugin reference {0:?} must be written name@version")]
    PluginRef(String),
    /// Not one of the execution statuses.
    #[error("unknown status {0:?} (one of running, compensating, completed, compensated, failed)")]
    Status(String),
}

/// Checks a user-chosen name (saga, step or plugin): 1–64 characters of `[A-Za-z0-9_.-]`,
/// starting with a letter or digit. Names appear in URLs and storage keys, so they stay plain.
pub fn check_name(what: &'static str, name: &str) -> Result<(), InvalidId> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 64 || !ok_chars || !ok_start {
        return Err(InvalidId::Name { what, name: name.to_owned() });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            /// Validates and wraps a name.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                check_name($what, s).map(|()| Self(s.to_owned()))
            }
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The name of a saga definition.
    SagaName,
    "saga name"
);
name_type!(
    /// The name of a step within a saga definition.
    StepName,
    "step name"
);
name_type!(
    /// The name of a plugin (without its version).
    PluginName,
    "plugin name"
);

/// A plugin version: semver text such as `1.0.0` or `2.1.0-beta.1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct PluginVersion(String);

impl PluginVersion {
    /// Validates `MAJOR.MINOR.PATCH` with an optional `-pre` / `+build` suffix.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let bad = || InvalidId::Version(s.to_owned());
        let core = s.split(['-', '+']).next().unwrap_or("");
        let parts: Vec<&str> = core.split('.').collect();
        let numeric = parts.len() == 3
            && parts.iter().all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()));
        let suffix_ok = s[core.len()..].chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.'));
        if !numeric || !suffix_ok || s.len() > 64 {
            return Err(bad());
        }
        Ok(Self(s.to_owned()))
    }
    /// The version as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PluginVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PluginVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A reference to one uploaded plugin, written `name@version` in definitions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginRef {
    /// Plugin name.
    pub name: PluginName,
    /// Plugin version.
    pub version: PluginVersion,
}

impl FromStr for PluginRef {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        let (name, version) = s.split_once('@').ok_or_else(|| InvalidId::PluginRef(s.to_owned()))?;
        Ok(Self { name: PluginName::parse(name)?, version: PluginVersion::parse(version)? })
    }
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl Serialize for PluginRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PluginRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Written `name@version` in JSON.
impl utoipa::PartialSchema for PluginRef {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("a plugin reference, name@version"))
            .examples([serde_json::json!("payment@1.0.0")])
            .into()
    }
}

impl utoipa::ToSchema for PluginRef {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(SagaName::parse("order-saga_1.v2").is_ok());
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(SagaName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn plugin_refs_parse_and_print() {
        let r: PluginRef = "concert@1.0.0".parse().unwrap();
        assert_eq!(r.to_string(), "concert@1.0.0");
        assert!("concert@1.0.0-rc.1+b7".parse::<PluginRef>().is_ok());
        for bad in ["concert", "concert@1.0", "concert@x.y.z", "@1.0.0", "c@1.0.0 "] {
            assert!(bad.parse::<PluginRef>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn execution_ids_round_trip() {
        let id = ExecutionId::new();
        assert_eq!(id.to_string().parse::<ExecutionId>().unwrap(), id);
        assert_eq!(ExecutionId::from_bytes(*id.as_bytes()), id);
    }
}
