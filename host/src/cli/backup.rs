//! `sagahost backup DIR`: reads a running host's `GET /v1/backup` into a new sled data
//! directory, which `sagahost serve --data-dir DIR` starts on (docs/operations.md#backups).

use std::path::Path;

use anyhow::Context;

use super::client::Client;
use crate::store::Restore;
use crate::store::backup::Decoder;

/// Writes the host's backup into `dir` (which must not exist or be empty); the records
/// written. A failed backup leaves no directory behind (when this created it).
pub async fn run(client: &Client, dir: &Path) -> anyhow::Result<u64> {
    let created = !dir.exists();
    let result = write(client, dir).await;
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

async fn write(client: &Client, dir: &Path) -> anyhow::Result<u64> {
    let mut restore = Restore::create(dir).with_context(|| format!("creating the backup in {}", dir.display()))?;
    let mut decoder = Decoder::default();
    client
        .backup(|bytes| {
            let records = decoder.feed(bytes)?;
            restore.apply(records)?;
            Ok(())
        })
        .await?;
    let count = decoder.finish()?;
    restore.finish().with_context(|| format!("writing the backup in {}", dir.display()))?;
    Ok(count)
}
