//! The archive and export format (docs/operations.md#archive-format): NDJSON, one line per
//! event, each an event record (`seq`, `at`, `type` and its fields, as the API shows them)
//! with its execution's `execution` id and `saga` name added.
//!
//! The sweeper writes each batch it removes as one file, made durable before the removal is
//! committed: a crash between the two leaves the batch archived and still stored, and the
//! next sweep archives it again (in another file). Lines are told apart by `execution` and
//! `seq`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::domain::{EventRecord, ExecutionId, SagaName};
use crate::store::{Ended, Store, StoreError};

/// Appends one line per record of execution `id` of `saga` to `out`.
pub fn lines(id: ExecutionId, saga: &SagaName, records: &[EventRecord], out: &mut Vec<u8>) {
    for r in records {
        let mut line = serde_json::to_value(r).expect("records serialize");
        if let Some(fields) = line.as_object_mut() {
            fields.insert("execution".into(), id.to_string().into());
            fields.insert("saga".into(), saga.as_str().into());
        }
        serde_json::to_writer(&mut *out, &line).expect("values serialize");
        out.push(b'\n');
    }
}

/// The lines of an ended execution that ended at or before `cutoff` (empty when it is gone,
/// has not ended, or was recorded for after `cutoff`: retention keeps those).
pub async fn ended_lines(store: &dyn Store, entry: &Ended, cutoff: u64) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    match store.summary(entry.id).await? {
        Some(s) if s.status.is_terminal() && s.updated_at <= cutoff => {}
        _ => return Ok(out),
    }
    match store.read(entry.id, 0).await {
        Ok(records) => lines(entry.id, &entry.saga, &records, &mut out),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// Archives a batch about to be removed as one file in `dir`; the events written.
pub async fn write(store: &dyn Store, dir: &Path, due: &[(Ended, u64)], now: u64) -> anyhow::Result<u64> {
    let mut out = Vec::new();
    for (entry, cutoff) in due {
        out.extend(ended_lines(store, entry, *cutoff).await?);
    }
    if out.is_empty() {
        return Ok(0);
    }
    let events = out.iter().filter(|b| **b == b'\n').count() as u64;
    let name = format!("executions-{now}-{}.ndjson", due[0].0.id);
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || durable_file(&dir, &name, &out))
        .await?
        .context("writing the retention archive")?;
    Ok(events)
}

/// Writes `bytes` to `dir/name` so that the file is whole and durable or absent: a temporary
/// file, synced, renamed into place, and the directory synced.
fn durable_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}
