//! Secrets at rest: XChaCha20-Poly1305 under the operator's key (`serve --secret-key-file`
//! or `SAGAHOST_SECRET_KEY`), a fresh random 192-bit nonce per value, and associated data
//! that binds each sealed value to its name and record header, so that a value copied under
//! another name (or with another header) does not open.

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};

/// Nonce length of XChaCha20-Poly1305.
const NONCE_BYTES: usize = 24;

/// The key secrets are sealed with. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SealKey(XChaCha20Poly1305);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// Why a key was refused; never contains the text it was given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the secret key must be 64 hexadecimal characters (32 random bytes), for example from \
     `openssl rand -hex 32`"
)]
pub struct KeyFormatError;

impl SealKey {
    /// A key from its text: 64 hexadecimal characters, surrounding whitespace ignored.
    pub fn parse(text: &str) -> Result<Self, KeyFormatError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyFormatError)?;
        if bytes.len() != 32 {
            return Err(KeyFormatError);
        }
        XChaCha20Poly1305::new_from_slice(&bytes).map(Self).map_err(|_| KeyFormatError)
    }

    /// `nonce ‖ ciphertext ‖ tag` of `plain`, authenticated together with `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self.0.encrypt(&nonce, Payload { msg: plain, aad }).expect("encryption of a bounded value");
        [nonce.as_slice(), &sealed].concat()
    }

    /// The plain text of what [`SealKey::seal`] made with this key and `aad`; `None` when the
    /// key, the associated data or any byte differs.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        self.0.decrypt(nonce.into(), Payload { msg: body, aad }).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_associated_data() {
        let key = SealKey::parse(KEY).unwrap();
        let sealed = key.seal(b"name", b"hunter2-hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "the plain text is not in the sealed bytes");
        assert_eq!(key.open(b"name", &sealed).as_deref(), Some(&b"hunter2-hunter2"[..]));
        assert_eq!(key.open(b"other", &sealed), None, "bound to its associated data");
        let other = SealKey::parse(&KEY.replace("1f", "ff")).unwrap();
        assert_eq!(other.open(b"name", &sealed), None, "another key does not open it");
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 1;
            assert_eq!(key.open(b"name", &tampered), None, "byte {i} flipped");
        }
        assert_eq!(key.open(b"name", &sealed[..10]), None);
        assert_ne!(key.seal(b"name", b"x"), key.seal(b"name", b"x"), "a fresh nonce each time");
    }

    #[test]
    fn keys_must_be_32_bytes_of_hex() {
        assert!(SealKey::parse(&format!("  {KEY}\n")).is_ok());
        for bad in ["", "00", &KEY[..62], &format!("{KEY}00"), &KEY.replace('0', "g"), "correct horse battery staple"] {
            assert_eq!(SealKey::parse(bad).unwrap_err(), KeyFormatError, "{bad:?}");
        }
        assert_eq!(format!("{:?}", SealKey::parse(KEY).unwrap()), "SealKey(..)");
    }
}
