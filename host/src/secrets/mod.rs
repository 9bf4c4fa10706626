//! Secrets (docs/secrets.md): named values the operator stores with `PUT /v1/secrets/{name}`
//! and steps reference by name (`"secrets": ["gateway_key"]`); plugins read them through
//! `wasi:config/store` like `config` values. No route ever answers a value. Values are sealed
//! at rest when the host has a key ([`seal`]), and redacted from whatever an attempt hands
//! back to the host ([`redact`]).
//!
//! A stored record is `format (1 byte) ‖ updated_at_ms (8 bytes, big-endian) ‖ body`: the body
//! is the value's UTF-8 text (format 0, no key) or `nonce ‖ ciphertext ‖ tag` (format 1).

pub mod redact;
pub mod seal;

use std::sync::Arc;

pub use redact::Redactor;
pub use seal::{KeyFormatError, SealKey};

use crate::store::{SecretStore, StoreError};

/// Shortest value: shorter ones could not be redacted without mangling unrelated text.
pub const MIN_VALUE_BYTES: usize = 8;
/// Longest value (a PEM private key fits).
pub const MAX_VALUE_BYTES: usize = 16 << 10;
/// Most secrets a host stores.
pub const MAX_SECRETS: usize = 1_000;

const PLAIN: u8 = 0;
const SEALED: u8 = 1;
const HEADER_BYTES: usize = 9;

/// A secret's value, held in memory only while an attempt needs it. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// The value itself: for the sandbox's `wasi:config/store` and the redactor, nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(..)")
    }
}

/// What operators see of a secret: never its value.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// When its value was last stored (unix ms).
    pub updated_at: u64,
    /// Whether it is sealed at rest (stored while the host had a key).
    pub encrypted: bool,
}

/// Why a secret could not be stored or read. No message ever holds a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Not a valid name.
    #[error("secret name {0:?} is not 1-128 characters of A-Z a-z 0-9 _ - .")]
    BadName(String),
    /// Not a valid value.
    #[error("a secret's value is UTF-8 text of {MIN_VALUE_BYTES} to {MAX_VALUE_BYTES} bytes")]
    BadValue,
    /// The host holds as many secrets as it may.
    #[error("the host holds {MAX_SECRETS} secrets, its limit: delete one first")]
    TooMany,
    /// No secret of that name.
    #[error("secret {0:?} is not stored (PUT /v1/secrets/{0})")]
    Missing(String),
    /// Sealed, and this host has no key.
    #[error(
        "secret {0:?} is encrypted and this host has no key to open it: start it with the key it was stored under \
         (--secret-key-file or SAGAHOST_SECRET_KEY)"
    )]
    NoKey(String),
    /// Sealed under another key, or altered.
    #[error(
        "secret {0:?} does not open with this host's key: it was stored under another key, or its record was altered"
    )]
    WrongKey(String),
    /// Not a record this host writes.
    #[error("secret {0:?} has an unreadable record")]
    Corrupt(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `name` is a valid secret (or `config`) name: 1-128 characters of `A-Z a-z 0-9 _ - .`.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// What [`Vault::open_all`] found at start.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Secrets stored sealed.
    pub sealed: usize,
    /// Secrets stored in clear (the host has no key).
    pub plain: usize,
    /// Secrets that were in clear and are now sealed (the host was given a key).
    pub resealed: usize,
}

/// The host's secrets: the store's records, sealed and opened with the host's key.
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn SecretStore>,
    key: Option<SealKey>,
}

impl Vault {
    /// Secrets in `store`, sealed with `key` when there is one.
    pub fn new(store: Arc<dyn SecretStore>, key: Option<SealKey>) -> Self {
        Self { store, key }
    }

    /// Whether values are sealed at rest.
    pub fn encrypts(&self) -> bool {
        self.key.is_some()
    }

    /// Stores `value` under `name`; `true` when the name was new.
    pub async fn put(&self, name: &str, value: &str, now_ms: u64) -> Result<(bool, SecretInfo), SecretError> {
        if !valid_name(name) {
            return Err(SecretError::BadName(name.to_owned()));
        }
        if !(MIN_VALUE_BYTES..=MAX_VALUE_BYTES).contains(&value.len()) {
            return Err(SecretError::BadValue);
        }
        if self.store.secret(name).await?.is_none() && self.store.secrets().await?.len() >= MAX_SECRETS {
            return Err(SecretError::TooMany);
        }
        let record = self.record(name, value, now_ms);
        let created = self.store.secret_put(name.to_owned(), record).await?;
        Ok((created, SecretInfo { name: name.to_owned(), updated_at: now_ms, encrypted: self.encrypts() }))
    }

    /// Removes `name`; `false` when there was none.
    pub async fn delete(&self, name: &str) -> Result<bool, SecretError> {
        if !valid_name(name) {
            return Err(SecretError::BadName(name.to_owned()));
        }
        Ok(self.store.secret_delete(name.to_owned()).await?)
    }

    /// Every secret, by name, without values.
    pub async fn list(&self) -> Result<Vec<SecretInfo>, SecretError> {
        self.store.secrets().await?.iter().map(|(name, record)| header(name, record)).collect()
    }

    /// Whether `name` is stored.
    pub async fn exists(&self, name: &str) -> Result<bool, SecretError> {
        Ok(self.store.secret(name).await?.is_some())
    }

    /// The values of `names`, for one attempt.
    pub async fn resolve(&self, names: &[String]) -> Result<Vec<(String, SecretValue)>, SecretError> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let record = self.store.secret(name).await?.ok_or_else(|| SecretError::Missing(name.clone()))?;
            out.push((name.clone(), self.open(name, &record)?));
        }
        Ok(out)
    }

    /// Checks at start that every stored secret opens with this host's key (or lack of one),
    /// and seals those stored in clear when there is now a key. An error names the first
    /// secret that does not open: the host must not start and fail steps one by one.
    pub async fn open_all(&self) -> Result<OpenReport, SecretError> {
        let mut report = OpenReport::default();
        for (name, record) in self.store.secrets().await? {
            let info = header(&name, &record)?;
            let value = self.open(&name, &record)?;
            match (info.encrypted, self.key.is_some()) {
                (true, _) => report.sealed += 1,
                (false, false) => report.plain += 1,
                (false, true) => {
                    let sealed = self.record(&name, value.expose(), info.updated_at);
                    self.store.secret_put(name, sealed).await?;
                    report.resealed += 1;
                }
            }
        }
        Ok(report)
    }

    fn record(&self, name: &str, value: &str, now_ms: u64) -> Vec<u8> {
        let format = if self.key.is_some() { SEALED } else { PLAIN };
        let mut record = Vec::with_capacity(HEADER_BYTES + value.len() + 40);
        record.push(format);
        record.extend_from_slice(&now_ms.to_be_bytes());
        match &self.key {
            Some(key) => {
                let sealed = key.seal(&aad(name, &record), value.as_bytes());
                record.extend_from_slice(&sealed);
            }
            None => record.extend_from_slice(value.as_bytes()),
        }
        record
    }

    fn open(&self, name: &str, record: &[u8]) -> Result<SecretValue, SecretError> {
        let info = header(name, record)?;
        let (head, body) = record.split_at(HEADER_BYTES);
        let plain = match (info.encrypted, &self.key) {
            (false, _) => body.to_vec(),
            (true, None) => return Err(SecretError::NoKey(name.to_owned())),
            (true, Some(key)) => {
                key.open(&aad(name, head), body).ok_or_else(|| SecretError::WrongKey(name.to_owned()))?
            }
        };
        String::from_utf8(plain).map(SecretValue).map_err(|_| SecretError::Corrupt(name.to_owned()))
    }
}

fn header(name: &str, record: &[u8]) -> Result<SecretInfo, SecretError> {
    let corrupt = || SecretError::Corrupt(name.to_owned());
    let encrypted = match record.first() {
        Some(&PLAIN) => false,
        Some(&SEALED) => true,
        _ => return Err(corrupt()),
    };
    let at = record.get(1..HEADER_BYTES).ok_or_else(corrupt)?;
    let updated_at = u64::from_be_bytes(at.try_into().map_err(|_| corrupt())?);
    Ok(SecretInfo { name: name.to_owned(), updated_at, encrypted })
}

/// Binds a sealed value to its name and header: a record copied under another name, or with
/// its header changed, does not open.
fn aad(name: &str, header: &[u8]) -> Vec<u8> {
    [b"sagahost secret v1\0".as_slice(), name.as_bytes(), &[0], header].concat()
}

#[cfg(test)]
mod tests;
