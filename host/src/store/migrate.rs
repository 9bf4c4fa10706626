//! `sagahost migrate --from <dir> --to postgres://…`: moves a sled data directory into an empty
//! PostgreSQL store. Both keep the same key-value layout (`store/kv.rs`), so the move is a copy
//! of every pair, in key order, in one transaction: the database gets all of it or nothing.

use std::path::Path;

use tokio::sync::mpsc;

use super::{PgStore, PostgresConfig, StoreError};

/// Pairs per insert.
const CHUNK_PAIRS: usize = 1_000;
/// Bytes per insert, at most (one pair larger than this goes alone).
const CHUNK_BYTES: usize = 8 << 20;

/// A chunk of pairs on its way from sled to the database.
pub(super) type Chunk = Vec<(Vec<u8>, Vec<u8>)>;

/// What a migration copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// Key-value pairs.
    pub pairs: u64,
    /// Their keys' and values' bytes.
    pub bytes: u64,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Copies the sled store in `dir` into the (empty) PostgreSQL store `to`, creating its schema.
pub async fn sled_to_postgres(dir: &Path, to: &PostgresConfig) -> Result<Migrated, StoreError> {
    // sled creates a database wherever it is opened: never here.
    if !dir.join("conf").is_file() || !dir.join("db").is_file() {
        return Err(StoreError::Unavailable(format!("{} holds no sagahost data directory", dir.display())));
    }
    let path = dir.to_path_buf();
    let db = tokio::task::spawn_blocking(move || ::sled::Config::new().path(&path).open())
        .await
        .map_err(unavailable)?
        .map_err(|e| unavailable(format!("opening {} (is a host running on it?): {e}", dir.display())))?;
    let store = PgStore::open(to).await?;
    let (tx, rx) = mpsc::channel::<Result<Chunk, StoreError>>(4);
    let reader = tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for kv in db.iter() {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return tx.blocking_send(Err(unavailable(e))).map_err(drop),
            };
            bytes += k.len() + v.len();
            chunk.push((k.to_vec(), v.to_vec()));
            if chunk.len() >= CHUNK_PAIRS || bytes >= CHUNK_BYTES {
                tx.blocking_send(Ok(std::mem::take(&mut chunk))).map_err(drop)?;
                bytes = 0;
            }
        }
        if !chunk.is_empty() {
            tx.blocking_send(Ok(chunk)).map_err(drop)?;
        }
        Ok(())
    });
    let copied = store.import(rx).await;
    let _ = reader.await;
    copied
}
