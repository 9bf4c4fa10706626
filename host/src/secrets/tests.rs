use super::*;
use crate::store::MemoryStore;

const KEY: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn key(text: &str) -> Option<SealKey> {
    Some(SealKey::parse(text).unwrap())
}

#[tokio::test]
async fn values_are_stored_sealed_and_only_read_back_with_the_key() {
    let store = Arc::new(MemoryStore::new());
    let vault = Vault::new(store.clone(), key(KEY));
    let (created, info) = vault.put("gateway_key", "sk_live_0123456789", 5).await.unwrap();
    assert!(created);
    assert_eq!(info, SecretInfo { name: "gateway_key".into(), updated_at: 5, encrypted: true });
    assert!(!vault.put("gateway_key", "sk_live_9876543210", 6).await.unwrap().0, "replaced, not created");
    let record = store.secret("gateway_key").await.unwrap().unwrap();
    assert!(!record.windows(8).any(|w| w == b"sk_live_"), "sealed at rest");
    let values = vault.resolve(&["gateway_key".into()]).await.unwrap();
    assert_eq!(values[0].1.expose(), "sk_live_9876543210");
    assert_eq!(format!("{:?}", values[0].1), "SecretValue(..)");
    assert_eq!(vault.list().await.unwrap()[0].updated_at, 6);

    let no_key = Vault::new(store.clone(), None);
    assert!(matches!(no_key.resolve(&["gateway_key".into()]).await, Err(SecretError::NoKey(_))));
    assert!(matches!(no_key.open_all().await, Err(SecretError::NoKey(_))));
    let other = Vault::new(store.clone(), key(&KEY.replace("f0", "00")));
    assert!(matches!(other.open_all().await, Err(SecretError::WrongKey(_))));

    // A record copied under another name does not open.
    store.secret_put("copy".into(), record).await.unwrap();
    assert!(matches!(vault.resolve(&["copy".into()]).await, Err(SecretError::WrongKey(_))));
}

#[tokio::test]
async fn without_a_key_values_are_in_clear_until_a_key_seals_them() {
    let store = Arc::new(MemoryStore::new());
    let plain = Vault::new(store.clone(), None);
    plain.put("token", "plain-value-123", 1).await.unwrap();
    assert!(!plain.list().await.unwrap()[0].encrypted);
    assert_eq!(plain.open_all().await.unwrap(), OpenReport { plain: 1, ..Default::default() });

    let sealed = Vault::new(store.clone(), key(KEY));
    assert_eq!(sealed.open_all().await.unwrap(), OpenReport { resealed: 1, ..Default::default() });
    assert_eq!(sealed.open_all().await.unwrap(), OpenReport { sealed: 1, ..Default::default() });
    let info = &sealed.list().await.unwrap()[0];
    assert!(info.encrypted);
    assert_eq!(info.updated_at, 1, "sealing keeps the time the value was stored");
    assert_eq!(sealed.resolve(&["token".into()]).await.unwrap()[0].1.expose(), "plain-value-123");
}

#[tokio::test]
async fn bad_names_values_and_missing_secrets_are_refused_without_echoing_values() {
    let vault = Vault::new(Arc::new(MemoryStore::new()), key(KEY));
    for bad in ["", "has space", "slash/name", &"n".repeat(129), "nul\0"] {
        assert!(matches!(vault.put(bad, "long-enough-value", 1).await, Err(SecretError::BadName(_))), "{bad:?}");
    }
    for bad in ["short", &"v".repeat(MAX_VALUE_BYTES + 1)] {
        let e = vault.put("name", bad, 1).await.unwrap_err();
        assert!(matches!(e, SecretError::BadValue));
        assert!(!e.to_string().contains(bad));
    }
    let e = vault.resolve(&["absent".into()]).await.unwrap_err();
    assert_eq!(e.to_string(), "secret \"absent\" is not stored (PUT /v1/secrets/absent)");
    assert!(!vault.delete("absent").await.unwrap());
    vault.put("present", "present-value", 1).await.unwrap();
    assert!(vault.delete("present").await.unwrap());
    assert!(vault.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn corrupt_records_are_named() {
    let store = Arc::new(MemoryStore::new());
    store.secret_put("broken".into(), vec![7, 1, 2]).await.unwrap();
    let vault = Vault::new(store, None);
    assert!(matches!(vault.open_all().await, Err(SecretError::Corrupt(n)) if n == "broken"));
}
